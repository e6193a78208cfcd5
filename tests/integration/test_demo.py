"""`edgec demo` (what `make demo` runs) works end to end: bundles made, verified, benchmarked, reported."""

from __future__ import annotations

import json

import pytest

from edgec.bundle import Bundle
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
    if power["measured"]:  # a machine with a sensor (RAPL, hwmon ...): its figure, named
        assert power["source"] in ("jetson", "hwmon", "rapl", "battery") and power["energy_per_inference_j"] > 0
    else:  # no sensor (as on the project's CI machines): the host profile's estimate, labelled as one
        assert power["source"] == "estimated" and power["energy_per_inference_j"] > 0
    report = (tmp_path / "demo" / "report.html").read_text()
    benched = [b for b in doc["bundles"] if b.get("bench")]
    assert benched and all(Bundle(b["bundle"]).bundle_id[:12] in report for b in benched)
