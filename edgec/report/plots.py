"""Plots for the reports: matplotlib figures rendered to SVG, embedded in the page as ``data:`` URIs.

Rendering is deterministic (fixed SVG hash salt, no date metadata) so the same data give the same page. Text
stays text (``svg.fonttype = none``): smaller files, and the numbers on the axes can be found with Ctrl-F.
"""

from __future__ import annotations

import base64
import io

__all__ = ["energy_bars", "latency_cdf", "live_latency", "pareto_scatter", "size_bars", "svg_data_uri"]

# Colour-blind-safe cycle (matplotlib's tab10 minus red, which marks regressions).
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from edgec.errors import UsageError

        raise UsageError("reports draw their plots with matplotlib, which is not installed: "
                         "pip install 'edgec[report]' (or pip install matplotlib)") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # text.parse_math off: names from devices and manifests are plain text ("$x$" must not become math text)
    plt.rcParams.update({"text.parse_math": False, "svg.fonttype": "none", "svg.hashsalt": "edgec", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.prop_cycle": matplotlib.cycler(color=COLORS)})
    return plt


def svg_data_uri(fig) -> str:
    """Render and close ``fig``; a ``data:image/svg+xml;base64,...`` URI of it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "edgec"})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def latency_cdf(series: list[tuple[str, list[float]]], title: str) -> str:
    """Empirical CDFs of per-inference latency, one line per (label, samples ms)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    for label, samples in series:
        values = np.sort(np.asarray(samples, dtype=float))
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=label, linewidth=1.4)
    low = min((min(s) for _, s in series if len(s)), default=1.0)
    high = max((max(s) for _, s in series if len(s)), default=1.0)
    if low > 0 and high / low > 4:  # long tails: a log axis keeps the body of every distribution visible
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if high / low < 100 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency per inference (ms)")
    ax.set_ylabel("fraction of inferences")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.5, color="#999", linewidth=0.6, linestyle=":")
    ax.set_title(title)
    if series:
        ax.legend(fontsize=8, loc="lower right", frameon=False)
    return svg_data_uri(fig)


def _scatter_panel(ax, xs: list[float], ys: list[float], labels: list[str], front: set[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    names: dict[tuple, list[str]] = {}  # variants at the same spot share one annotation
    for k, label in enumerate(labels):
        on = k in front
        ax.scatter([xs[k]], [ys[k]], s=60 if on else 40, zorder=3, facecolors=COLORS[0] if on else "none",
                   edgecolors=COLORS[0] if on else "#777")
        names.setdefault((xs[k], ys[k]), []).append(label)
    for (x, y), group in names.items():
        ax.annotate(", ".join(group), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.margins(x=0.15, y=0.15)
    ordered = sorted((xs[k], ys[k]) for k in front)
    if len(ordered) > 1:
        ax.plot([x for x, _ in ordered], [y for _, y in ordered], color=COLORS[0], linewidth=1, linestyle="--",
                zorder=2, label="Pareto front")
        ax.legend(fontsize=8, loc="best", frameon=False)


def pareto_scatter(points: list[dict], front: set[int], accuracy_label: str | None, title: str) -> str:
    """Variants as points, front points filled and joined, the others hollow.

    ``points``: dicts with label, latency_ms, size_bytes and accuracy. With an ``accuracy_label``: two panels,
    accuracy against latency and against size; without: latency against size.
    """
    plt = _pyplot()
    labels = [p["label"] for p in points]
    latency = [p["latency_ms"] for p in points]
    size = [p["size_bytes"] / 1024 for p in points]
    if accuracy_label:
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharey=True)
        accuracy = [p["accuracy"] for p in points]
        _scatter_panel(axes[0], latency, accuracy, labels, front)
        _scatter_panel(axes[1], size, accuracy, labels, front)
        axes[0].set_xlabel("median latency (ms)")
        axes[1].set_xlabel("model size (KiB)")
        axes[0].set_ylabel(accuracy_label)
        if max(accuracy) - min(accuracy) < 1.0:  # equal accuracies: a readable band instead of a 0-wide axis
            axes[0].set_ylim(min(accuracy) - 1.0, max(accuracy) + 1.0)
    else:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        _scatter_panel(ax, size, latency, labels, front)
        ax.set_xlabel("model size (KiB)")
        ax.set_ylabel("median latency (ms)")
    fig.suptitle(title, fontsize=10)
    return svg_data_uri(fig)


def live_latency(times: list[float], p50: list, p99: list, baseline: float | None, events: list[tuple[float, str, bool]],
                 title: str) -> str:
    """Live p50/p99 (ms) over time (minutes from the first sample), the benchmark p99 as a dashed line, and
    rollouts as vertical lines: green when a bundle went live, red for a rollback."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    start = min([*times, *(t for t, _, _ in events)], default=0.0)
    minutes = [(t - start) / 60 for t in times]
    ax.plot(minutes, [v if v is not None else float("nan") for v in p99], marker=".", label="live p99")
    ax.plot(minutes, [v if v is not None else float("nan") for v in p50], marker=".", label="live p50")
    if baseline:
        ax.axhline(baseline, color="#7f7f7f", linestyle="--", linewidth=0.9, label="benchmark p99")
    for at, label, ok in events:
        ax.axvline((at - start) / 60, color=COLORS[2] if ok else "#d62728", linewidth=0.9)
        ax.annotate(label, ((at - start) / 60, 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                    va="top", ha="right")
    ax.set_xlabel("minutes")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return svg_data_uri(fig)


def energy_bars(rows: list[tuple[str, float, bool]], title: str) -> str:
    """Energy per inference (mJ) per (label, value, estimated); estimated bars are hatched and say so."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 0.5 + 0.38 * max(len(rows), 1)))
    labels = [f"{label} (estimated)" if estimated else label for label, _, estimated in rows]
    bars = ax.barh(range(len(rows)), [v for _, v, _ in rows], color=[COLORS[2]] * len(rows))
    for bar, (_, _, estimated) in zip(bars, rows):
        if estimated:
            bar.set_hatch("///")
            bar.set_facecolor("white")
            bar.set_edgecolor(COLORS[1])
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("energy per inference (mJ)")
    ax.set_title(title)
    return svg_data_uri(fig)


def size_bars(rows: list[tuple[str, int]], title: str) -> str:
    """Bytes of weights per layer (label, bytes), largest first."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 0.6 + 0.28 * max(len(rows), 1)))
    ax.barh(range(len(rows)), [b / 1024 for _, b in rows], color=COLORS[0])
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("weights (KiB)")
    ax.set_title(title)
    return svg_data_uri(fig)
