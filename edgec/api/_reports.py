"""Stored results: reading them (``edgec results``) and the one way ``edgec report``, ``edgec sweep`` and
``edgec demo`` write a page of them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgec.bundle import Bundle
from edgec.deploy.results import ResultsStore
from edgec.errors import ResultsError
from edgec.report import collect, render_compile_report, render_results_report, write_report
from edgec.report.data import ReportData
from edgec.report.regression import LatencyChange
from edgec.report.results_page import latency_changes

__all__ = ["ResultsReport", "compare_runs", "compile_report", "results_report", "stored_run", "stored_runs"]


def compile_report(bundle: str | os.PathLike | Bundle, path: str | os.PathLike) -> Path:
    """Write one bundle's compile report as an HTML page at ``path`` (atomically); returns the path."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    write_report(path, render_compile_report(bundle))
    return Path(path)


@dataclass
class ResultsReport:
    """The page written, what it shows, and each (bundle, device)'s latest run against the one before it."""

    path: Path
    data: ReportData
    changes: dict[tuple[str, str], LatencyChange] = field(default_factory=dict)

    @property
    def regressions(self) -> list[tuple[tuple[str, str], LatencyChange]]:
        return [(key, change) for key, change in self.changes.items() if change.flagged]


def results_report(out: str | os.PathLike, *, results: str | os.PathLike | None = None, bundles=(), devices=(),
                   title: str = "edgec benchmark report", min_change: float = 0.05,
                   sweep: list[dict] | None = None) -> ResultsReport:
    """Write the HTML report of the runs in ``results`` (default ``~/.edgec/results.db``), filtered by bundle
    ids/paths and device names. ``sweep``: the outcome of every variant of a sweep, shown even when no run was
    stored (nothing compiled)."""
    with ResultsStore(results) as store:
        try:
            if sweep is not None and not bundles:  # nothing compiled: not every run in the store
                raise ResultsError("no bundle")
            data = collect(store, tuple(bundles), tuple(devices))
        except ResultsError:
            if sweep is None:
                raise
            data = ReportData(runs=[], bundles={}, results_path=str(store.path))
    data.title, data.min_change, data.sweep = title, min_change, sweep
    path = write_report(out, render_results_report(data))
    return ResultsReport(path, data, latency_changes(data))


def stored_runs(results: str | os.PathLike | None = None, *, limit: int = 50, device: str | None = None,
                bundle: str | None = None, farm_run: str | None = None) -> list[dict]:
    """Newest first: one row per device outcome (result or error)."""
    with ResultsStore(results) as store:
        return store.list(limit=limit, device=device, bundle=bundle, farm_run=farm_run)


def stored_run(run_id: int, results: str | os.PathLike | None = None) -> dict:
    """Everything stored for one run, its BenchResult document included."""
    with ResultsStore(results) as store:
        return store.get(run_id)


def delete_run(run_id: int, results: str | os.PathLike | None = None) -> None:
    """Remove one stored run (a bad or unwanted result); ResultsError when there is no such run."""
    with ResultsStore(results) as store:
        store.delete(run_id)


def compare_runs(base_id: int, other_id: int, results: str | os.PathLike | None = None) -> dict:
    """Latency figures of ``other_id`` against ``base_id`` (ratio > 1: slower)."""
    with ResultsStore(results) as store:
        return store.compare(base_id, other_id)
