"""The compile report of one bundle (``edgec compile --report``): passes, per-layer decisions, sizes, accuracy.

Everything comes from the manifest (``passes`` and ``report``) plus the model file for the size breakdown.
Report sections this module does not know are rendered generically, so keys that new compiler stages add to
``report`` show up without a change here.
"""

from __future__ import annotations

from edgec.report import plots
from edgec.report.data import describe_precision
from edgec.report.html import esc, figure, fmt, generic, page, table
from edgec.report.layers import layer_sizes

__all__ = ["render_compile_report"]

_KNOWN = {"verification", "size", "source_notes"}
# Sections shown first, in this order, when present; anything else follows alphabetically.
_FIRST = ("accuracy", "quantization", "pruning", "compression", "tflite")
_TOP_LAYERS = 25


def _overview(bundle) -> str:
    m = bundle.manifest
    size = (m.get("report") or {}).get("size") or {}
    model, float_bytes = size.get("model_bytes"), size.get("float_model_bytes")
    ratio = f" ({model / float_bytes:.2f}x the float model, {float_bytes / 1024:.1f} KiB)" \
        if model and float_bytes else ""
    src, target, runtime = m.get("source") or {}, m.get("target") or {}, m.get("runtime") or {}
    rows = [("bundle", f"<code>{esc(bundle.path)}</code>"), ("bundle id", f"<code>{esc(bundle.bundle_id)}</code>"),
            ("model", f"<code>{esc(m.get('model_file'))}</code>, {esc(m.get('format'))}, "
                      f"{esc(describe_precision(m))}"),
            ("size", f"{fmt(model / 1024 if model else None, '.1f', ' KiB')}{esc(ratio)}"),
            ("runtime", esc(f"{runtime.get('name')} (threads {runtime.get('threads') or 'default'})")),
            ("target", esc(f"{target.get('name')}: {target.get('description') or ''}")),
            ("source", esc(f"{src.get('path')} ({src.get('kind')}), sha256 {str(src.get('sha256'))[:16]}")),
            ("edgec", esc(m.get("edgec_version")))]
    io = [f"{esc(k[:-1])} <code>{esc(i['name'])}</code> {esc(i.get('dtype'))}"
          f"[{esc('x'.join('?' if d is None else str(d) for d in i.get('shape') or []))}] {esc(i.get('layout'))}"
          for k in ("inputs", "outputs") for i in (m.get("io") or {}).get(k, [])]
    rows.append(("io", "<br>".join(io)))
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _passes(manifest: dict) -> str:
    rows, classes = [], []
    for k, record in enumerate(manifest.get("passes") or []):
        nodes = (f"{record['nodes_before']} &rarr; {record['nodes_after']}"
                 if "nodes_before" in record and "nodes_after" in record else "")
        notes = "".join(f"<li>{esc(n)}</li>" for n in record.get("notes") or [])
        rows.append([str(k + 1), f"<b>{esc(record.get('name'))}</b>", "yes" if record.get("modified") else "no",
                     nodes, generic(record.get("settings") or {}) if record.get("settings") else "",
                     f"<ul>{notes}</ul>" if notes else ""])
        classes.append("")
    return ("<p>Every pass in the order it ran, whether it changed the model, and the reasons it gave (a layer left "
            "in float, a filter group not pruned, ...).</p>"
            + table(["#", "pass", "changed", "nodes", "settings", "notes and reasons"], rows, classes))


def _verification(report: dict) -> str:
    rows = [[esc(c.get("stage")), fmt(c.get("max_rel_diff"), ".2e"), fmt(c.get("max_abs_diff"), ".2e"),
             fmt(c.get("tolerance"), ".0e") if c.get("tolerance") is not None else "not failed on (quantized)",
             esc(c.get("samples"))] for c in report.get("verification") or []]
    return ("<p>Outputs of each stage against the source framework on the same generated inputs.</p>"
            + table(["stage", "max relative diff", "max abs diff", "tolerance", "samples"], rows,
                    numeric={1, 2, 3, 4}))


def _sizes(bundle) -> str:
    m = bundle.manifest
    files = [[f"<code>{esc(name)}</code>", f"{meta['size'] / 1024:.1f} KiB"]
             for name, meta in sorted((m.get("files") or {}).items())]
    out = "<h3>Files</h3>" + table(["file", "size"], files, numeric={1})
    layers = layer_sizes(bundle.model_path, m.get("format"))
    if not layers:
        return out + "<p class='meta'>No per-layer breakdown for this model format.</p>"
    total = sum(r["bytes"] for r in layers) or 1
    top = layers[:_TOP_LAYERS]
    uri = plots.size_bars([(f"{r['layer']} ({r['op']}, {'/'.join(r['dtypes'])})", r["bytes"]) for r in top],
                          "Weights by layer")
    rows = [[esc(r["layer"]), esc(r["op"]), esc("/".join(r["dtypes"])), str(r["parameters"]),
             f"{r['bytes'] / 1024:.1f} KiB", f"{100 * r['bytes'] / total:.1f}%"] for r in layers]
    caption = f"The {len(top)} largest of {len(layers)} layers holding weights." if len(layers) > len(top) else \
        "Every layer holding weights."
    return (out + "<h3>Weights by layer</h3>" + figure(uri, "weights by layer", caption)
            + "<details><summary>All layers</summary>"
            + table(["layer", "op", "weight dtype", "parameters", "bytes", "share"], rows, numeric={3, 4, 5})
            + "</details>")


def render_compile_report(bundle) -> str:
    """The compile report of ``bundle`` (an ``edgec.bundle.Bundle``) as one self-contained HTML page."""
    m = bundle.manifest
    report = m.get("report") or {}
    sections = [("overview", "Bundle", _overview(bundle))]
    extra = [k for k in _FIRST if k in report] + sorted(k for k in report if k not in _KNOWN and k not in _FIRST)
    for key in extra:
        value = report[key]
        summary = ""
        if isinstance(value, dict) and isinstance(value.get("summary"), str):
            summary, value = f"<p><b>{esc(value['summary'])}</b></p>", {k: v for k, v in value.items() if k != "summary"}
        sections.append((f"report-{key}", key.replace("_", " ").capitalize(), summary + generic(value)))
    sections += [("passes", "Passes", _passes(m)), ("sizes", "Size breakdown", _sizes(bundle)),
                 ("verification", "Verification", _verification(report))]
    if report.get("source_notes"):
        sections.append(("source-notes", "Notes from the front-end",
                         "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in report["source_notes"]) + "</ul>"))
    subtitle = (f"{esc(m.get('name'))} for {esc((m.get('target') or {}).get('name'))}, "
                f"{esc(m.get('format'))}; bundle <code>{esc(bundle.bundle_id[:16])}</code>")
    return page(f"edgec compile report: {m.get('name')}", subtitle, sections)
