"""Reports people read: static, self-contained HTML pages with plots (matplotlib SVG embedded as data: URIs).

* ``render_results_report(collect(store, ...))``: benchmark results from the results database (``edgec report``,
  ``edgec sweep``): summary per device and bundle, latency CDFs, accuracy/latency/size of the variants of one
  model with the Pareto front, power and energy, comparison with the previous run, conditions of each run.
* ``render_compile_report(bundle)``: one bundle's compile report (``edgec compile --report``).
* ``write_report(path, html)``: written atomically.

Submodules import matplotlib only when a plot is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["collect", "render_compile_report", "render_results_report", "write_report"]


def collect(store, bundles=(), devices=()):
    from edgec.report.data import collect as _collect

    return _collect(store, tuple(bundles), tuple(devices))


def render_results_report(data) -> str:
    from edgec.report.results_page import render_results_report as _render

    return _render(data)


def render_compile_report(bundle) -> str:
    from edgec.report.compile_page import render_compile_report as _render

    return _render(bundle)


def write_report(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written page."""
    from edgec.errors import InputError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write the report ({exc.strerror or exc}); choose another -o PATH") from None
    return path
