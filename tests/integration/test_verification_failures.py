"""Verification fires: a pass that damages a weight stops the compile with the numbers, ``--rtol``/``--atol``
decide how much difference a compile accepts, and a runtime whose outputs differ from the bundle's reference fails the
reference check beyond the bundle's tolerance and passes within it.

The damaging pass and the perturbed runtime exist only here (monkeypatched into the pipeline and the agent's
runtime loader); nothing in edgec's shipped code knows about them. The same reference check against a really
different runtime (arm64 onnxruntime under qemu) is in tests/farm/test_arm64_board.py.
"""

from __future__ import annotations

import re

import numpy as np
import onnx_ir as ir
import pytest

from edgec import api
from edgec.compare import FLOAT_ATOL, FLOAT_RTOL
from edgec.compiler import pipeline
from edgec.compiler.passes import EdgecPass, const
from edgec.errors import BundleError, VerificationError
from edgec.examples.onnx_models import onnx_mlp

pytestmark = pytest.mark.integration

NUMBERS = re.compile(r"output 'y' differs from the source model \(max abs diff (\S+), relative (\S+), (\S+)x the "
                     r"allowed difference; allowed: \|a-b\| <= (\S+) \+ (\S+)\*\|ref\|\)")


class ScaleFirstWeight(EdgecPass):
    """Multiplies the first layer's weight matrix by ``factor``: on the bias-free ReLU MLP every output scales by
    it, so the relative error verification must find is exactly ``factor - 1``."""

    name = "scale-first-weight"

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        # The simplifier renames initializers (w0 -> m0_weight); the first layer's still sorts first.
        weight = model.graph.initializers[min(n for n, v in model.graph.initializers.items() if const(v).ndim == 2)]
        weight.const_value = ir.tensor(const(weight) * np.float32(self.factor), name=weight.name)
        return ir.passes.PassResult(model, True)


@pytest.fixture
def damaging_pass(monkeypatch):
    """Factory: from now on the float passes end with ``ScaleFirstWeight(factor)``."""
    original = pipeline.build_float_passes

    def install(factor: float) -> None:
        monkeypatch.setattr(pipeline, "build_float_passes",
                            lambda profile, options: [*original(profile, options), ScaleFirstWeight(factor)])

    return install


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return onnx_mlp(tmp_path_factory.mktemp("verify") / "mlp.onnx", width=32, depth=2)


def test_a_pass_that_damages_a_weight_stops_the_compile_with_the_numbers(mlp, tmp_path, damaging_pass, capsys):
    from edgec.cli import main

    damaging_pass(1.5)
    out = tmp_path / "damaged.bundle"
    with pytest.raises(SystemExit) as exit_:
        main(["compile", str(mlp), "--target", "host", "-o", str(out)])
    assert exit_.value.code == VerificationError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgec: error: float passes: ") and len(err.splitlines()) == 1, err
    max_abs, rel, worst, atol, rtol = (float(v) for v in NUMBERS.search(err).groups())
    assert rel == pytest.approx(0.5, rel=1e-2) and max_abs > 0 and worst > 1
    assert (atol, rtol) == (FLOAT_ATOL, FLOAT_RTOL)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_rtol_decides_whether_a_small_difference_passes(mlp, tmp_path, damaging_pass):
    damaging_pass(1.003)  # 3e-3 relative: beyond the default rtol 1e-3, within 1e-2
    with pytest.raises(VerificationError) as failed:
        api.compile(str(mlp), tmp_path / "strict.bundle", target="host")
    _, rel, worst, _, rtol = (float(v) for v in NUMBERS.search(str(failed.value)).groups())
    assert rel == pytest.approx(3e-3, rel=2e-2) and rtol == FLOAT_RTOL and worst > 1
    assert not (tmp_path / "strict.bundle").exists()

    bundle = api.compile(str(mlp), tmp_path / "loose.bundle", target="host", rtol=1e-2)
    checks = {c["stage"]: c for c in bundle.manifest["report"]["verification"]}
    assert checks["front-end"]["max_rel_diff"] < 1e-6
    for stage in ("float passes", "emitted onnx"):
        assert checks[stage]["max_rel_diff"] == pytest.approx(3e-3, rel=2e-2)
        assert checks[stage]["tolerance"] == 1e-2


class PerturbedRuntime:
    """The onnxruntime module with every output multiplied by ``1 + rel``: a device whose kernels differ."""

    def __init__(self, real, rel: float):
        self.real, self.rel = real, rel

    def __getattr__(self, name):
        return getattr(self.real, name)

    def load(self, model, threads=None, name=None, **options):  # options: the runtime's own (spinning)
        session = self.real.load(model, threads=threads, name=name, **options)
        real_run, factor = session.run, np.float32(1 + self.rel)
        session.run = lambda feeds: [np.asarray(o) * factor for o in real_run(feeds)]
        return session


@pytest.fixture(scope="module")
def float_bundle(mlp, tmp_path_factory):
    return api.compile(str(mlp), tmp_path_factory.mktemp("ref") / "mlp.bundle", target="host")


@pytest.mark.parametrize("times_rtol", [3.0, 0.3])
def test_a_runtime_that_differs_fails_the_reference_check_beyond_tolerance_only(float_bundle, monkeypatch,
                                                                                  times_rtol):
    import edgec.runtimes
    from edgec.api import _bundles as api_bundles
    from edgec.device_agent import bench

    ref = float_bundle.manifest["reference"]
    assert ref["rtol"] == pipeline.FLOAT_REFERENCE_RTOL
    rel = times_rtol * ref["rtol"]
    real = edgec.runtimes.load_runtime
    perturbed = lambda name: PerturbedRuntime(real(name), rel)  # noqa: E731
    monkeypatch.setattr(bench, "load_runtime", perturbed)
    monkeypatch.setattr(edgec.runtimes, "load_runtime", perturbed)
    monkeypatch.setattr(api_bundles, "load_runtime", perturbed)  # `edgec verify` imported it by name
    if times_rtol > 1:
        with pytest.raises(BundleError, match=r"output 'y' does not match the bundle's reference on this device "
                                              r"\(max abs diff \S+, relative (\S+), \S+x the allowed difference\)") as failed:
            bench.check_bundle(float_bundle.path)
        assert float(re.search(r"relative (\S+),", str(failed.value)).group(1)) == pytest.approx(rel, rel=2e-2)
        with pytest.raises(BundleError, match="no longer matches the reference"):
            api.verify_bundle(float_bundle.path)
    else:
        (record,) = bench.check_bundle(float_bundle.path)["outputs"]
        assert record["ok"] and record["rel_diff"] == pytest.approx(rel, rel=2e-2)
        (record,) = api.verify_bundle(float_bundle.path)["outputs"]
        assert record["ok"] and record["rel_diff"] == pytest.approx(rel, rel=2e-2)
