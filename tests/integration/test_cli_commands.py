"""The CLI end to end in a subprocess: JSON outputs, quiet when piped, python -m edgec."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_compile_json_inspect_verify(tmp_path, tiny_mobilenet_onnx):
    out = tmp_path / "bundle"
    code, stdout, stderr = run_cli(["compile", str(tiny_mobilenet_onnx), "-t", "x86-avx2", "-o", str(out), "--json"])
    assert code == 0, stderr
    assert stderr == ""  # no progress, no third-party noise when not on a terminal
    manifest = json.loads(stdout)
    assert manifest["path"] == str(out) and manifest["target"]["name"] == "x86-avx2"
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]

    code, stdout, _ = run_cli(["inspect", str(out), "--json"])
    assert code == 0 and json.loads(stdout)["bundle_id"] == manifest["bundle_id"]
    code, stdout, _ = run_cli(["inspect", str(out), "--explain"])
    assert code == 0 and "folded 16 BatchNormalization into Conv" in stdout
    code, stdout, _ = run_cli(["verify", str(out)])
    assert code == 0 and stdout.startswith("ok: ")


def test_targets_list_and_show_json():
    code, stdout, _ = run_cli(["targets", "list", "--json"])
    names = {t["name"] for t in json.loads(stdout)}
    assert code == 0 and {"rpi4", "rpi5", "host", "x86-avx2"} <= names
    code, stdout, _ = run_cli(["targets", "show", "rpi4", "--json"])
    shown = json.loads(stdout)
    assert code == 0 and shown["cpu"]["model"] == "Cortex-A72" and "dotprod" not in shown["cpu"]["isa_features"]
    code, stdout, _ = run_cli(["targets", "show", "rpi5"])
    assert code == 0 and "dotprod" in stdout and "[quantization]" in stdout
