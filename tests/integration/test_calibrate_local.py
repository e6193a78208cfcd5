"""`edgec targets calibrate` on this machine (quick suite, real agent and onnxruntime), then estimates and
compile-time limits that read the overlay it wrote."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import threading
import time

import pytest

from edgec.targets import load_profile
from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("calibrate")]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("edgec_home")
        patch.setenv("EDGEC_HOME", str(home))
        yield home


WATTS = 12.0


@pytest.fixture(scope="module")
def calibrated(home, tmp_path_factory):
    """A quick calibration, with a fake RAPL counter (this machine has no power sensor) driven at 12 W."""
    sysfs = tmp_path_factory.mktemp("sysfs")
    rapl = sysfs / "class" / "powercap" / "intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "name").write_text("package-0\n")
    (rapl / "max_energy_range_uj").write_text("1000000000\n")
    stop = threading.Event()

    def drive():
        start = time.monotonic()
        while not stop.wait(0.002):
            (rapl / "energy_uj.tmp").write_text(f"{int((time.monotonic() - start) * WATTS * 1e6)}\n")
            os.replace(rapl / "energy_uj.tmp", rapl / "energy_uj")

    (rapl / "energy_uj").write_text("0\n")
    writer = threading.Thread(target=drive, daemon=True)
    writer.start()
    try:
        code, stdout, stderr = run_cli(["targets", "calibrate", "--quick", "--as", "testhost", "--json",
                                        "--sysfs-root", str(sysfs)])
    finally:
        stop.set()
        writer.join()
    assert code == 0, stderr
    return json.loads(stdout)


def test_calibrating_the_local_machine_writes_an_overlay_that_loads_as_a_target(home, calibrated):
    import onnxruntime

    from edgec.targets import load_profile
    from edgec.targets.host import detect_host

    path = home / "targets" / "testhost.toml"
    assert calibrated["path"] == str(path) and path.is_file()
    profile = load_profile("testhost")
    assert profile.source_file == str(path) and profile.base == detect_host()["base"]
    measured = profile.performance.measured
    assert measured.quick and measured.device == "local"
    assert measured.runtimes["onnxruntime"] == onnxruntime.__version__
    assert measured.device_identity["machine"] == platform.machine()
    ok = {(k.op, k.precision) for k in measured.kernels if k.status == "ok"}
    for op in ("conv1x1", "conv3x3", "dwconv", "gemm", "pool", "eltwise"):
        assert (op, "fp32") in ok
    assert {("conv3x3", "int8"), ("gemm", "int8"), ("conv3x3", "int8-dynamic")} <= ok
    # This machine has LiteRT and TensorFlow's converter: the .tflite versions ran through XNNPACK too.
    lite = {(k.op, k.precision) for k in measured.kernels if k.status == "ok" and k.runtime == "litert"}
    assert {("conv3x3", "fp32"), ("conv3x3", "int8"), ("gemm", "fp32")} <= lite
    assert set(measured.system.runtime_overhead_ms) == {"onnxruntime", "litert"}
    assert all(k.ms > 0 and k.spread >= 0 for k in measured.kernels if k.status == "ok")
    system = measured.system
    assert system.overhead_ms > 0 and 0 < system.bandwidth_gbps < 2000 and system.load_ms > 0
    assert len(system.thread_speedup) == len(__import__("os").sched_getaffinity(0))
    assert system.thread_speedup[0] == 1.0 and 1 <= system.threads == profile.threads
    assert system.memory_base_bytes > 0 and system.power_source == "rapl"
    # The writer thread shares two busy cores with the agent: its stalls blur the figure, hence the margin.
    assert system.active_watts == pytest.approx(WATTS, rel=0.3)
    code, stdout, _ = run_cli(["targets", "show", "testhost"])
    assert code == 0 and "testhost" in stdout
    code, stdout, _ = run_cli(["targets", "list", "--json"])
    assert "testhost" in {t["name"] for t in json.loads(stdout)}


def _faster_format(measured) -> str:
    table: dict = {}
    for k in measured.kernels:
        if k.status == "ok" and k.precision == "fp32":
            table.setdefault((k.op, tuple(k.shape)), {})[k.runtime] = k.ms
    logs = [math.log(v["litert"] / v["onnxruntime"]) for v in table.values() if len(v) == 2]
    assert logs, "calibration measured no fp32 kernel on both runtimes"
    return "onnx" if sum(logs) >= 0 else "tflite"


def test_estimate_and_compile_report_use_the_measured_tables(home, calibrated, tiny_mobilenet_onnx):
    out = home / "tiny.bundle"
    code, stdout, stderr = run_cli(["compile", str(tiny_mobilenet_onnx), "-t", "testhost", "-o", str(out), "--json",
                                    "--format", "onnx"])
    assert code == 0, stderr
    estimate = json.loads(stdout)["report"]["estimate"]
    assert estimate["limits"] == "fits RAM and storage" and estimate["op_counts"]["measured"] > 0
    decided = estimate["decisions"]["format"]
    assert decided["chosen"] == "onnx" and decided["reason"] == "--format onnx (given)"
    # Both runtimes were measured: the default format would be the one whose fp32 kernels are faster (geometric
    # mean of the per-kernel ratios, computed here from the measured table the overlay holds).
    assert decided["measured_choice"] == _faster_format(load_profile("testhost").performance.measured)
    precision = estimate["decisions"]["precision"]
    costs = dict((name, float(ms)) for name, ms in re.findall(r"([\w-]+) ([\d.e+-]+) ms", precision["reason"]))
    assert len(costs) >= 2 and precision["measured_choice"] == min(costs, key=costs.get), precision

    code, stdout, stderr = run_cli(["estimate", str(out), "--target", "testhost", "--json"])
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["latency_ms"] == pytest.approx(estimate["latency_ms"])
    assert "kernels measured on local" in report["latency_basis"]
    assert report["memory"]["peak_bytes"] > report["memory"]["weights_bytes"] > 0
    assert report["energy"]["basis"].startswith("measured power on local (rapl)")
    assert report["energy"]["joules"] == pytest.approx(report["energy"]["watts"] * report["latency_ms"] / 1000)
    code, stdout, _ = run_cli(["estimate", str(tiny_mobilenet_onnx), "--target", "rpi4"])
    assert code == 0 and "roofline only" in stdout and "energy" in stdout

    again = home / "tiny2.bundle"
    assert run_cli(["compile", str(tiny_mobilenet_onnx), "-t", "testhost", "-o", str(again), "--format", "onnx"])[0] == 0
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()  # reproducible


def _big_onnx(path):
    """One Gemm with a 1024x1024 float weight: 4 MB."""
    import onnx

    from edgec.targets.microbench import KernelSpec, float_model

    onnx.save(float_model(KernelSpec("gemm", (1, 1024), repeat=1)), path)
    return path


def test_a_model_larger_than_a_small_profiles_ram_is_refused(tmp_path):
    source = _big_onnx(tmp_path / "big.onnx")  # 4 MB of weights
    small = tmp_path / "small.toml"
    small.write_text('name = "small"\nbase = "x86-avx2"\n[memory]\nram_mb = 2\nstorage_mb = 64\n')
    out = tmp_path / "big.bundle"
    code, _, stderr = run_cli(["compile", str(source), "-t", str(small), "-o", str(out)])
    assert code == 5, stderr
    assert "needs an estimated 4.0 MB of RAM (weights 4.0 MB" in stderr and "has 2 MB" in stderr
    assert "memory.ram_mb" in stderr and "--ignore-limits" in stderr
    assert not out.exists() and not list(tmp_path.glob(".big.bundle*"))  # nothing half-written

    code, stdout, stderr = run_cli(["compile", str(source), "-t", str(small), "-o", str(out), "--ignore-limits",
                                    "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["report"]["estimate"]["limits"] == "not enforced (--ignore-limits)"

    tiny_disk = tmp_path / "disk.toml"
    tiny_disk.write_text('name = "disk"\nbase = "x86-avx2"\n[memory]\nram_mb = 1024\nstorage_mb = 2\n')
    code, _, stderr = run_cli(["compile", str(source), "-t", str(tiny_disk), "-o", str(tmp_path / "b2")])
    assert code == 5 and "MB of storage (memory.storage_mb" in stderr
