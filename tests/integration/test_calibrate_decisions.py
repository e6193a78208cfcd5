"""Choices made from measured tables, through a real compile: `--quantize auto` follows the measured precision
speeds (int8 slower than fp32, as on ARM boards without dot-product, keeps float), and the report says which
figures decided."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.measured_tables import kernel_row as _kernel
from tests.measured_tables import measured_doc

pytestmark = [pytest.mark.integration]

SHAPE = (1, 32, 32, 32)


@pytest.fixture
def net(tmp_path):
    from edgec.targets.microbench import KernelSpec, float_model

    path = tmp_path / "convs.onnx"
    onnx.save(float_model(KernelSpec("conv3x3", SHAPE, repeat=3)), path)  # 57 MMACs: past auto_min_macs
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).uniform(-1, 1, (16, *SHAPE[1:])).astype(np.float32))
    return path, tmp_path / "calib.npz"


def _board(tmp_path, monkeypatch, name, int8_ms):
    from edgec.targets import load_profile
    from edgec.targets.overlay import build_overlay, write_overlay

    monkeypatch.setenv("EDGEC_HOME", str(tmp_path / "home"))
    doc = measured_doc([_kernel("conv3x3", "fp32", shape=SHAPE, ms=0.08),
                        _kernel("conv3x3", "int8", shape=SHAPE, ms=int8_ms)])
    write_overlay(build_overlay(name, "x86-avx512-vnni", doc), tmp_path / "home" / "targets")
    return load_profile(name)


@pytest.mark.parametrize("int8_ms, chosen", [(0.16, "none"), (0.03, "int8")])
def test_quantize_auto_follows_the_measured_speeds(tmp_path, monkeypatch, net, int8_ms, chosen):
    from edgec import api

    source, calib = net
    _board(tmp_path, monkeypatch, f"board-{chosen}", int8_ms)
    bundle = api.compile(str(source), tmp_path / "out.bundle", target=f"board-{chosen}", quantize="auto",
                         calibration=str(calib))
    report = bundle.manifest["report"]
    quantization = report["quantization"]
    assert quantization["precision"] == chosen
    assert "measured on testboard" in quantization["reason"]
    assert f"int8 {3 * int8_ms + 0.004:.3g} ms" in quantization["reason"]
    assert report["estimate"]["decisions"]["precision"]["measured_choice"] == chosen
    assert (bundle.manifest["passes"][-1]["name"], bool(report["quantization"].get("nodes"))) == (
        "emit-onnx", chosen == "int8")
