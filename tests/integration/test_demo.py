"""`edgec demo` (what `make demo` runs) works end to end: bundles made, verified, benchmarked, reported."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_compiles_verifies_benchmarks_and_reports(tmp_path):
    code, stdout, stderr = run_cli(["demo", "--workdir", str(tmp_path / "demo"), "--runs", "5", "--json"])
    assert code == 0, stderr
    doc = json.loads(stdout)
    labels = {b["label"]: b for b in doc["bundles"]}
    assert set(labels) == {"linreg rpi4", "linreg host", "cnn rpi4", "cnn host"}
    assert all(b["verified"] and b["max_rel_diff"] <= 1e-4 for b in doc["bundles"])
    assert labels["cnn host"]["format"] == "onnx" and labels["cnn host"]["bench"]["p50_ms"] > 0
    power = labels["cnn host"]["bench"]["power"]
    assert power["measured"] is False or power["source"] != "estimated"
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "cnn-host" in report or "tiny_mobilenet" in report
