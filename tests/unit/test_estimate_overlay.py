"""Profile overlays with [performance.measured]: written by calibration, validated on load (file and key named)."""

from __future__ import annotations

import copy

import pytest

from edgec.errors import DeviceError, TargetError, UsageError
from edgec.targets import list_profiles, load_profile
from edgec.targets.overlay import build_overlay, dump_toml, write_overlay
from tests.support.measured import measured_doc

pytestmark = pytest.mark.unit


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _write(folder, doc) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc['name']}.toml"
    path.write_text(dump_toml(doc))
    return str(path)


def test_overlay_round_trips_through_toml_and_loads_as_a_target(home):
    doc = build_overlay("myboard", "rpi4", measured_doc())
    path = write_overlay(doc, home / "targets")
    profile = load_profile("myboard")
    assert profile.source_file == str(path)
    assert profile.cpu.model == "Cortex-A72"  # from the base
    measured = profile.performance.measured
    assert measured.device == "testboard" and measured.system.threads == 4
    assert measured.system.thread_speedup == (1.0, 1.8, 2.5, 3.1)
    assert [k.op for k in measured.kernels] == ["conv3x3", "gemm"]
    assert measured.kernels[0].shape == (1, 16, 32, 32)
    assert "myboard" in list_profiles()


@pytest.mark.parametrize("mutate, key", [
    (lambda m: m["kernels"][1].__setitem__("ms", "fast"), "performance.measured.kernels[1].ms"),
    (lambda m: m.pop("system"), "performance.measured.system"),
    (lambda m: m["system"].pop("bandwidth_gbps"), "performance.measured.system.bandwidth_gbps"),
    (lambda m: m.__setitem__("kernels", "none"), "performance.measured.kernels"),
    (lambda m: m["kernels"][0].__setitem__("colour", "red"), "performance.measured.kernels[0].colour"),
    (lambda m: m["kernels"][0].__setitem__("status", "maybe"), "performance.measured.kernels[0].status"),
    (lambda m: m["kernels"][0].__setitem__("ms", -1.0), "performance.measured.kernels[0]"),
    (lambda m: m.__setitem__("schema", 2), "performance.measured.schema"),
    (lambda m: m.__setitem__("kernels", []), "performance.measured.kernels"),
])
def test_corrupt_or_missing_table_is_refused_with_file_and_key(home, mutate, key):
    measured = copy.deepcopy(measured_doc())
    mutate(measured)
    path = _write(home / "targets", build_overlay("broken", "rpi4", measured))
    with pytest.raises(TargetError) as info:
        load_profile("broken")
    message = str(info.value)
    assert path in message
    assert key in message


def test_write_overlay_refuses_an_invalid_document_and_keeps_the_old_file(home):
    good = write_overlay(build_overlay("board", "rpi4", measured_doc()), home / "targets")
    before = good.read_text()
    bad = measured_doc()
    bad["system"]["threads"] = 0
    with pytest.raises(TargetError, match="nothing written"):
        write_overlay(build_overlay("board", "rpi4", bad), home / "targets")
    assert good.read_text() == before
    assert sorted(p.name for p in (home / "targets").iterdir()) == ["board.toml"]


def test_a_profile_without_measured_tables_has_none(home):
    assert load_profile("rpi4").performance.measured is None


def test_dump_toml_writes_nested_tables_arrays_and_escapes(home):
    import tomllib

    data = {"a": 1, "s": 'quote " and \\ slash', "t": {"x": [1.5, 2.0], "u": {"b": True}},
            "rows": [{"k": "v"}, {"k": "w"}], "empty": {}}
    assert tomllib.loads(dump_toml(data)) == data


def _doc(p50, p90=None, fastest=None, runtime="onnxruntime"):
    p90 = p50 * 1.1 if p90 is None else p90
    return {"latency_ms": {"p50": p50, "p90": p90, "min": fastest or p50 * 0.95},
            "timing": {"load_s": 0.002}, "runtime": {"name": runtime}, "power": {"measured": False}}


def test_measured_tables_from_agent_answers_subtract_overhead_and_record_failures(home, tmp_path):
    from edgec.device_agent.client import parse_serve
    from edgec.targets.calibrate import CalibrationRun
    from edgec.targets.microbench import KernelSpec
    from edgec.targets.overlay import measured_tables

    results = [
        (KernelSpec("eltwise", (1, 1, 1, 1), repeat=1, purpose="overhead"), _doc(0.010)),
        (KernelSpec("eltwise", (1, 1, 1, 1), repeat=16, purpose="overhead"), _doc(0.025)),
        (KernelSpec("conv3x3", (1, 16, 32, 32), repeat=4), _doc(0.409)),
        # A preempted chain: its median is the neighbours'; 1.05 x its fastest run stands in.
        (KernelSpec("conv3x3", (1, 32, 32, 32), repeat=2), _doc(5.0, p90=9.0, fastest=0.4)),
        (KernelSpec("conv3x3", (1, 16, 32, 32), "fp16", repeat=4),
         {"error": {"type": "BundleError", "message": "onnxruntime cannot load this model: no fp16 Conv"}}),
    ]
    run = CalibrationRun(device="board", info={"cpu": {"cores": 2}, "runtimes": {"onnxruntime": "1.0"}},
                         results=results, quick=True, threads=2, speedup=[1.0, 1.9], notes=["n"])
    tables = measured_tables(run, tmp_path)
    system, kernels = tables["system"], tables["kernels"]
    assert system["node_overhead_ms"] == pytest.approx(0.001)
    assert system["overhead_ms"] == pytest.approx(0.009)
    assert kernels[0]["ms"] == pytest.approx((0.409 - 0.009) / 4)
    assert kernels[1]["ms"] == pytest.approx((1.05 * 0.4 - 0.009) / 2)
    assert kernels[2]["status"] == "unsupported" and "no fp16 Conv" in kernels[2]["note"]
    assert tables["system"]["thread_speedup"] == [1.0, 1.9] and "n" in tables["notes"]
    write_overlay(build_overlay("fromrun", "rpi4", tables), home / "targets")
    assert load_profile("fromrun").performance.measured.kernels[2].status == "unsupported"

    answers = '{"id": 0, "ok": true, "result": {"a": 1}}\n{"id": 1, "ok": false, "error": {"type": "X"}}\n'
    assert parse_serve(answers, 2, "dev") == [{"a": 1}, {"error": {"type": "X"}}]
    with pytest.raises(DeviceError, match="ended after 2 of 3 requests"):
        parse_serve(answers, 3, "dev")


def test_a_litert_only_device_gets_the_tflite_suite_and_its_own_overhead(home, tmp_path):
    from edgec.targets.calibrate import CalibrationRun, _runtimes
    from edgec.targets.microbench import KernelSpec, suite, thread_probes
    from edgec.targets.overlay import measured_tables

    runtimes, notes = _runtimes({"runtimes": {"onnxruntime": None, "litert": "2.3.0"}}, "pi")
    assert runtimes == ("litert",) and "no onnxruntime" in notes[0]
    specs = suite(quick=True, runtimes=runtimes)
    assert {s.runtime for s in specs} == {"litert"} and not [s for s in specs if s.purpose == "memory"]
    assert {s.op for s in specs if s.purpose == "kernel"} >= {"conv1x1", "conv3x3", "dwconv", "gemm", "pool"}
    assert {s.runtime for s in thread_probes(True, 2, "litert")} == {"litert"}
    with pytest.raises(UsageError, match="pi: no runtime the calibration suite can drive"):
        _runtimes({"runtimes": {}}, "pi")

    lite = dict(runtime="litert")
    results = [(KernelSpec("eltwise", (1, 1, 1, 1), repeat=1, purpose="overhead", **lite), _doc(0.002)),
               (KernelSpec("eltwise", (1, 1, 1, 1), repeat=16, purpose="overhead", **lite), _doc(0.0035)),
               (KernelSpec("conv3x3", (1, 16, 32, 32), repeat=4, **lite), _doc(0.2))]
    run = CalibrationRun(device="pi", info={}, results=results, quick=True, threads=4, speedup=[], notes=notes)
    tables = measured_tables(run, tmp_path)
    assert tables["system"]["runtime_overhead_ms"] == {"litert": pytest.approx(0.0019)}
    assert tables["kernels"][0]["runtime"] == "litert" and tables["kernels"][0]["ms"] == pytest.approx(0.198 / 4,
                                                                                                        rel=1e-3)
    assert "memory probes incomplete" in " ".join(tables["notes"])
    write_overlay(build_overlay("lite", "rpi4", tables), home / "targets")
    assert load_profile("lite").performance.measured.kernels[0].runtime == "litert"
