"""The agent benchmarking real bundles: in-process, as a zipapp, in serve mode, and behind `edgec bench`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgec.device_agent import run_bench
from edgec.errors import UsageError
from tests.support.agent import compile_onnx_bundle, run_agent

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return compile_onnx_bundle(tmp_path_factory.mktemp("bench"), width=64)


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    from edgec.device_agent import build_zipapp

    return build_zipapp(tmp_path_factory.mktemp("agent"))


def put(root: Path, rel: str, value) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(f"{value}\n")
    os.replace(path.with_suffix(".tmp"), path)


def test_run_bench_document(bundle, tmp_path):
    doc = run_bench(bundle, {"runs": 50, "warmup": 5, "threads": 1, "idle_s": 0, "sysfs_root": str(tmp_path)})
    assert doc["schema_version"] == 1 and doc["kind"] == "edgec.bench_result" and len(doc["agent_version"]) == 16
    assert doc["bundle_id"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    lat = doc["latency_ms"]
    assert lat["count"] == 50 and 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["stdev"] >= 0
    assert doc["throughput_ips"] == pytest.approx(50 / doc["timing"]["window_s"])
    assert doc["timing"]["load_s"] > 0 and doc["timing"]["first_inference_s"] > 0
    assert doc["runtime"] == {"name": "onnxruntime", "version": doc["runtime"]["version"], "package": "onnxruntime",
                              "threads": 1}
    mem = doc["memory"]
    assert mem["rss_peak_bytes"] >= mem["rss_after_load_bytes"] > 0
    assert mem["rss_increase_bytes"] == mem["rss_peak_bytes"] - mem["rss_idle_bytes"]
    assert doc["power"]["source"] == "none" and doc["power"]["measured"] is False
    cond = doc["conditions"]
    assert cond["cpu"]["cores"] >= 1 and cond["python"]["version"] and cond["threads"] == 1
    assert set(cond["before"]) >= {"governor", "freq_mhz", "temperatures_c", "throttled", "loadavg"}
    assert doc["check"]["outputs"][0]["ok"] is True


def test_duration_mode_times_for_that_long(bundle, tmp_path):
    doc = run_bench(bundle, {"duration_s": 0.3, "warmup": 0, "idle_s": 0, "power": "none"})
    assert doc["latency_ms"]["count"] > 1 and doc["timing"]["window_s"] >= 0.3
    assert doc["settings"]["duration_s"] == 0.3


def test_zipapp_bench_with_fake_rapl_measures_its_power(agent, bundle, tmp_path):
    """A thread drives a RAPL counter at 12 W (wrapping every 2 J): idle and active power read ~12 W.

    The exact arithmetic is proven in tests/unit/test_power_energy.py; this is the path through the zipapp."""
    watts, max_uj = 12.0, 2_000_000
    put(tmp_path, "class/powercap/intel-rapl:0/name", "package-0")
    put(tmp_path, "class/powercap/intel-rapl:0/max_energy_range_uj", max_uj)
    put(tmp_path, "class/powercap/intel-rapl:0/energy_uj", 0)
    stop = threading.Event()

    def drive():
        start = time.monotonic()
        while not stop.wait(0.002):
            put(tmp_path, "class/powercap/intel-rapl:0/energy_uj", int((time.monotonic() - start) * watts * 1e6) % max_uj)

    writer = threading.Thread(target=drive, daemon=True)
    writer.start()
    try:
        code, doc = run_agent(agent, "bench", bundle, "--duration", "1.0", "--idle", "0.8",
                              "--sysfs-root", tmp_path, "--power-interval", "0.01")
    finally:
        stop.set()
        writer.join()
    assert code == 0, doc
    power = doc["power"]
    assert power["source"] == "rapl" and power["measured"] is True and power["status"] == "ok", power
    # the writer thread shares two busy cores with the agent: its stalls blur the edges, hence the margin
    assert power["idle_watts"] == pytest.approx(watts, rel=0.3)
    assert power["active_watts"] == pytest.approx(watts, rel=0.3)
    net = (power["active_watts"] - power["idle_watts"]) * power["window_s"] / doc["latency_ms"]["count"]
    assert power["energy_per_inference_j"] == pytest.approx(net, rel=1e-9, abs=1e-15)
    assert power["sampling_hz"] > 10 and power["samples"] > 5


def wait_until_read(path, limit_s: float = 60) -> None:
    """Returns once someone reads ``path``: its atime is set before its mtime, which a read updates (relatime)."""
    os.utime(path, (0, os.stat(path).st_mtime))
    deadline = time.monotonic() + limit_s
    while os.stat(path).st_atime == 0:
        assert time.monotonic() < deadline, f"nobody read {path} within {limit_s} s"
        time.sleep(0.01)


def test_zipapp_keeps_benchmarking_when_the_sensor_vanishes(agent, bundle, tmp_path):
    put(tmp_path, "class/hwmon/hwmon0/name", "ina219")
    put(tmp_path, "class/hwmon/hwmon0/power1_input", 4_000_000)
    proc = subprocess.Popen([sys.executable, str(agent), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        # load first (the slow part), so that the benchmark below starts sampling at once
        proc.stdin.write(json.dumps({"id": 1, "op": "load", "bundle": str(bundle)}) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["ok"]
        proc.stdin.write(json.dumps({"id": 2, "op": "bench", "bundle": str(bundle), "power": "hwmon", "idle_s": 2.0,
                                     "duration_s": 1.0, "sysfs_root": str(tmp_path)}) + "\n")
        proc.stdin.flush()
        sensor = tmp_path / "class/hwmon/hwmon0/power1_input"
        for _ in range(2):  # read twice by the agent: the source was found and is being sampled
            wait_until_read(sensor)
        os.remove(tmp_path / "class/hwmon/hwmon0/power1_input")  # the I2C sensor dropped off the bus
        answer = json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert answer["ok"], answer
    doc = answer["result"]
    assert doc["latency_ms"]["count"] > 0 and doc["timing"]["window_s"] >= 1.0
    assert doc["power"]["source"] == "hwmon:ina219" and doc["power"]["status"] == "lost"
    assert "power1_input" in doc["power"]["reason"] and doc["power"]["energy_per_inference_j"] is None


def test_estimated_power_is_labelled_not_measured(agent, bundle, tmp_path):
    code, doc = run_agent(agent, "bench", bundle, "--runs", "20", "--power", "estimated", "--power-model", "2.7,6.4",
                          "--idle", "0")
    assert code == 0 and doc["power"]["source"] == "estimated" and doc["power"]["measured"] is False
    assert doc["power"]["energy_per_inference_j"] == pytest.approx(3.7 * doc["power"]["window_s"] / 20)


def test_serve_loads_once_and_benchmarks_many_times(agent, bundle):
    proc = subprocess.Popen([sys.executable, str(agent), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)

    def ask(request) -> dict:
        proc.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    try:
        assert ask({"id": 1, "op": "info"})["result"]["runtimes"]["onnxruntime"]
        loaded = ask({"id": 2, "op": "load", "bundle": str(bundle)})
        assert loaded["ok"] and loaded["result"]["load_s"] > 0
        bench = {"op": "bench", "bundle": str(bundle), "runs": 30, "warmup": 2, "power": "none", "idle_s": 0}
        first, second = ask({"id": 3, **bench}), ask({"id": 4, **bench})
        assert first["id"] == 3 and second["id"] == 4 and first["ok"] and second["ok"]
        for answer in (first, second):
            assert answer["result"]["timing"]["session_reused"] is True
            assert answer["result"]["timing"]["load_s"] == loaded["result"]["load_s"]
            assert answer["result"]["latency_ms"]["count"] == 30
        bad = ask({"id": 5, **bench, "runs": 0})
        assert bad == {"id": 5, "ok": False, "error": {"type": "UsageError", "message": "--runs 0: must be >= 1",
                                                       "exit_code": 2}}
        assert ask("{not json")["error"]["type"] == "UsageError"
        assert ask({"id": 6, "op": "explode"})["error"]["message"].startswith("unknown op")
        assert ask({"id": 7, "op": "quit"}) == {"id": 7, "ok": True, "result": {}}
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def edgec(*argv, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEC_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "edgec", "bench", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_edgec_bench_prints_a_table_and_json(bundle, tmp_path):
    done = edgec(bundle, "--runs", "40", "--warmup", "2", "--idle", "0", "--threads", "1", home=tmp_path)
    assert done.returncode == 0, done.stderr
    for label in ("latency (ms)", "p50", "p99", "throughput", "memory", "power source", "none (not measured)", "cpu"):
        assert label in done.stdout
    done = edgec(bundle, "--runs", "40", "--idle", "0", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["latency_ms"]["count"] == 40 and doc["bundle"]["format"] == "onnx"
    assert list((tmp_path / "agent").glob("edgec-agent-*.pyz"))  # the zipapp, run as on a device


@pytest.mark.parametrize("argv, code, words", [
    (["--runs", "0"], 2, "--runs 0"),
    (["--warmup", "-3"], 2, "--warmup -3"),
    (["--duration", "-1"], 2, "--duration -1"),
    (["--power", "rapl", "--sysfs-root", "/nonexistent"], 2, "--power rapl"),
])
def test_edgec_bench_bad_input_is_one_line(bundle, tmp_path, argv, code, words):
    done = edgec(bundle, *argv, home=tmp_path)
    assert done.returncode == code and words in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_edgec_bench_missing_bundle(tmp_path):
    done = edgec(tmp_path / "nope.bundle", home=tmp_path)
    assert done.returncode == 3 and "nope.bundle" in done.stderr


def test_edgec_bench_power_from_meter_command_and_profile_model(bundle, tmp_path):
    meter = tmp_path / "meter.py"
    meter.write_text("print(4.25)\n")
    done = edgec(bundle, "--runs", "30", "--idle", "0.2", "--power", "command", "--power-command",
                 f"{sys.executable} {meter}", "--json", home=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # --json: machine-readable and quiet
    power = json.loads(done.stdout)["power"]
    assert power["source"] == "command" and power["measured"] is True
    assert power["idle_watts"] == pytest.approx(4.25) and power["active_watts"] == pytest.approx(4.25)
    from edgec.targets import power_model

    model = power_model("host")
    done = edgec(bundle, "--runs", "30", "--idle", "0", "--power", "estimated", home=tmp_path)
    if model is None:  # a host profile without a power model: said plainly, no made-up figure
        assert done.returncode == 2 and "--power-model" in done.stderr
        return
    idle_w, active_w = model
    assert done.returncode == 0, done.stderr
    assert "estimated (not measured)" in done.stdout and "ESTIMATED" in done.stdout
    assert f"{active_w:.2f} W" in done.stdout and f"{idle_w:.2f} W" in done.stdout


def test_api_bench_and_the_command_line_estimate_power_the_same_way(bundle, tmp_path, monkeypatch):
    """``api.bench(power="estimated")`` takes the host profile's model, as ``edgec bench --power estimated`` does
    (the API used to leave it to the agent, which refused: no model)."""
    from edgec import api
    from edgec.targets import power_model

    monkeypatch.setenv("EDGEC_HOME", str(tmp_path))
    model = power_model("host")
    done = edgec(bundle, "--runs", "5", "--warmup", "1", "--idle", "0", "--power", "estimated", "--json",
                 home=tmp_path)
    if model is None:  # both refuse the same way
        assert done.returncode == 2 and "--power-model" in done.stderr
        with pytest.raises(UsageError, match="--power-model"):
            api.bench(bundle, runs=5, warmup=1, idle_s=0, power="estimated")
        return
    cli_power = json.loads(done.stdout)["power"]
    api_power = api.bench(bundle, runs=5, warmup=1, idle_s=0, power="estimated").result["power"]
    for power in (cli_power, api_power):
        assert power["source"] == "estimated" and power["measured"] is False
        assert (power["idle_watts"], power["active_watts"]) == pytest.approx(model)


def test_serve_heartbeat_ends_a_request_whose_client_went_silent(agent, bundle):
    """`serve --heartbeat S`: a benchmark running S s with no line from the client (a link that died silently)
    ends the agent; a client that sends blank lines while it waits, or idles between requests, is served."""
    proc = subprocess.Popen([sys.executable, str(agent), "serve", "--heartbeat", "1.5"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    bench = {"op": "bench", "bundle": str(bundle), "duration_s": 3.0, "warmup": 2, "power": "none", "idle_s": 0}
    try:
        time.sleep(2.5)  # idle between requests longer than the heartbeat: no limit then
        proc.stdin.write(json.dumps({"id": 1, **bench}) + "\n")
        proc.stdin.flush()
        beats = threading.Event()

        def beat():
            while not beats.wait(0.3):
                proc.stdin.write("\n")
                proc.stdin.flush()

        beating = threading.Thread(target=beat)
        beating.start()
        try:
            answer = json.loads(proc.stdout.readline())  # 3 s benchmark, kept alive by blank lines
        finally:
            beats.set()
            beating.join()
        assert answer["ok"] and answer["result"]["timing"]["window_s"] >= 3.0
        proc.stdin.write(json.dumps({"id": 2, **bench, "duration_s": 30.0}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=20) == 129  # silent client: gone (after ~1.5 s), long before the 30 s benchmark
    finally:
        proc.kill()
        proc.wait()
