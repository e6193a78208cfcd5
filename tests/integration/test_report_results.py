"""``edgec report`` from real results: small ONNX models compiled with edgec.api.compile, benchmarked with the
local agent (api.bench), stored in a real SQLite results store, rendered to HTML and read back; the page is then
opened in headless Chromium."""

from __future__ import annotations

import copy
import json
import random
import re
import shutil
import subprocess

import numpy as np
import pytest

from edgec import api
from edgec.deploy.results import ResultsStore
from edgec.device_agent.options import BenchOptions
from edgec.device_agent.stats import latency_stats
from edgec.errors import ResultsError
from edgec.report import collect, render_results_report, write_report
from edgec.report.data import BundleInfo, ReportData, Run, describe_precision
from tests.support.html_tables import Tables, records
from tests.support.models import mlp_onnx

pytestmark = pytest.mark.xdist_group("report_results")

OPTIONS = BenchOptions(runs=60, warmup=5, power="estimated", power_model=(2.0, 5.0), idle_s=0.1)
SECOND_DEVICE = "local-1thread"  # the same machine benchmarked with one runtime thread: a second stored device


@pytest.fixture(scope="module", autouse=True)
def edgec_home(tmp_path_factory):
    """Agent builds go to a temporary EDGEC_HOME, never the real ~/.edgec."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEC_HOME", str(tmp_path_factory.mktemp("edgec_home")))
        yield


def bench_docs(bundle, n: int, results=None, **overrides) -> list[dict]:
    """``n`` local benchmarks of ``bundle`` (stored in ``results`` when given, as ``edgec bench --results``)."""
    options = {**OPTIONS.as_dict(), "power_model": (2.0, 5.0), **overrides}
    return [api.bench(bundle.path, results=results, **options).result for _ in range(n)]


def with_samples(doc: dict, samples: list[float]) -> dict:
    """A copy of a real document whose latencies are ``samples`` (statistics recomputed the agent's way)."""
    out = copy.deepcopy(doc)
    out["latency_samples_ms"] = samples
    out["latency_ms"] = latency_stats([round(s * 1e6) for s in samples])
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three bundles (model A fp32 and int8, model B fp32), two real runs each on 'local', one on a second
    device, plus an injected regression (A fp32) and an injected within-noise run (B fp32)."""
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    np.savez(tmp / "calib.npz", x=rng.random((64, 64), dtype=np.float32))
    a, b = mlp_onnx(tmp / "mlp_a.onnx", 96, 1), mlp_onnx(tmp / "mlp_b.onnx", 24, 2)
    common = {"target": "host", "format": "onnx", "input_shapes": {"x": [1, 64]}}
    bundles = {"a_fp32": api.compile(str(a), tmp / "a_fp32", quantize="none", **common),
               "a_int8": api.compile(str(a), tmp / "a_int8", quantize="int8", calibration=str(tmp / "calib.npz"),
                                     **common),
               "b_fp32": api.compile(str(b), tmp / "b_fp32", quantize="none", **common)}
    db = tmp / "results.db"
    docs = {}
    for key, bundle in bundles.items():
        docs[key] = bench_docs(bundle, 2, results=db)
    with ResultsStore(db) as store:
        second = bench_docs(bundles["a_fp32"], 1, threads=1)[0]
        store.record(bundle_id=second["bundle_id"], device=SECOND_DEVICE, profile="host", result=second)
        last = docs["a_fp32"][-1]
        store.record(bundle_id=last["bundle_id"], device="local", profile="host",
                     result=with_samples(last, [s * 1.4 for s in last["latency_samples_ms"]]))
        last = docs["b_fp32"][-1]
        shuffled = list(last["latency_samples_ms"])
        random.Random(0).shuffle(shuffled)
        store.record(bundle_id=last["bundle_id"], device="local", profile="host", result=with_samples(last, shuffled))
        html = render_results_report(collect(store))
    path = write_report(tmp / "report.html", html)
    return {"tmp": tmp, "db": db, "bundles": bundles, "html": html, "path": path}


def latest_runs(db) -> dict:
    with ResultsStore(db) as store:
        rows = store.list(limit=1000)
        return {(r["bundle_id"], r["device"]): store.get(r["id"]) for r in reversed(rows) if r["status"] == "ok"}


def test_every_bundle_and_device_appears_with_the_numbers_in_the_database(world):
    tables = Tables(world["html"])
    latest = latest_runs(world["db"])
    assert {d for _, d in latest} == {"local", SECOND_DEVICE}
    for (bundle_id, device), run in latest.items():
        summary, details = tables.find("bundle", f"Device {device}")  # the figures, then the details table
        rows = [row for _, row in records(summary) if bundle_id[:12] in row["bundle"]]
        assert len(rows) == 1, (bundle_id, device)
        detail = [row for _, row in records(details) if bundle_id[:12] in row["bundle"]]
        row, more, lat = rows[0], detail[0], run["result"]["latency_ms"]
        assert more["latest run"].startswith(f"#{run['id']} ")
        # Four significant digits of the stored figures (read back as numbers, not formatted by the renderer).
        shown = [float(row["p50 ms"]), float(more["p90 ms"]), float(row["p99 ms"]), float(more["mean ms"]),
                 float(more["stdev ms"])]
        assert shown == pytest.approx([lat[k] for k in ("p50", "p90", "p99", "mean", "stdev")], rel=5e-4)
        assert row["inferences/s"] == f"{run['result']['throughput_ips']:.1f}"
        energy = run["result"]["power"]["energy_per_inference_j"] * 1000
        assert row["energy / inference"] == f"≈ {energy:.3f} mJ estimated"
        size = world["bundles"][next(k for k, b in world["bundles"].items() if b.bundle_id == bundle_id)]
        assert row["size"] == f"{size.manifest['report']['size']['model_bytes'] / 1024:.1f} KiB"
        assert row["format / precision"] == f"onnx / {describe_precision(size.manifest)}"
    assert world["html"].count('class="badge estimated"') >= 2 * len(latest)  # summary and power sections


def test_an_injected_regression_is_flagged_and_a_run_within_noise_is_not(world):
    compare = Tables(world["html"]).with_columns("bundle", "device", "verdict")
    verdicts = {(row["bundle"].split()[-1], row["device"]): (cls, row["verdict"]) for cls, row in compare}
    a, b = world["bundles"]["a_fp32"].bundle_id[:12], world["bundles"]["b_fp32"].bundle_id[:12]
    assert verdicts[(a, "local")] == ("bad", "regression")
    assert verdicts[(b, "local")][1] == "within noise" and verdicts[(b, "local")][0] != "bad"
    assert (a, SECOND_DEVICE) not in verdicts  # one run there: nothing to compare
    alert = re.search(r'<span class="badge regression">\d+ regression\(s\)</span>(.*?)</p>', world["html"]).group(1)
    assert "mlp_a onnx fp32 on local" in alert and "mlp_b" not in alert


def test_variants_of_one_model_share_a_plot_and_the_conditions_list_every_run(world):
    html = world["html"]
    assert "<h3>mlp_a on local</h3>" in html and "<h3>mlp_b on local</h3>" not in html  # B has one variant
    with ResultsStore(world["db"]) as store:
        ids = [r["id"] for r in store.list(limit=1000)]
    conditions = Tables(html).with_columns("run", "started (UTC)", "runtime")
    assert sorted(int(row["run"].lstrip("#")) for _, row in conditions) == sorted(ids)
    assert all("onnxruntime" in row["runtime"] for _, row in conditions)
    assert html.count("<img ") >= 3 and "data:image/svg+xml;base64," in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_the_pareto_front_is_marked_on_a_constructed_case():
    def run(k, p50):
        doc = {"latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "stdev": 0.0, "count": 3},
               "latency_samples_ms": [p50] * 3, "power": {}, "conditions": {}, "runtime": {}}
        return Run(k, "2026-01-01T00:00:00+00:00", f"{k:064x}", "pi", "rpi4", "ok", None, doc)

    # (label, accuracy, p50 ms, bytes): int8 beats fp32 on latency and size at equal accuracy; int4 is the
    # fastest and smallest; prune is smaller than int8 but slower and less accurate than int4 -> dominated.
    cases = [("fp32", 99.0, 6.0, 80000), ("int8", 99.0, 3.0, 25000), ("int4", 97.0, 2.0, 14000),
             ("prune30+int8", 96.0, 2.5, 20000), ("onnx-fp16", 99.5, 7.0, 40000)]
    runs = [run(k + 1, p50) for k, (_, _, p50, _) in enumerate(cases)]
    bundles = {r.bundle_id: BundleInfo(r.bundle_id, "net", label, "onnx", "rpi4", "x", size, "net|h",
                                       metrics={"accuracy": acc, "accuracy_metric": "top-1 accuracy (%)"})
               for r, (label, acc, _, size) in zip(runs, cases)}
    html = render_results_report(ReportData(runs=runs, bundles=bundles, results_path="mem"))
    marked = {row["variant"]: row["Pareto front"] for _, row in Tables(html).with_columns("variant", "Pareto front")}
    assert marked == {"fp32": "no", "int8": "yes", "int4": "yes", "prune30+int8": "no", "onnx-fp16": "yes"}


def test_measured_power_is_plain_estimated_power_is_marked_and_errors_show():
    def run(k, bundle, power, status="ok", error=None):
        doc = {"latency_ms": {"p50": 2.0, "p90": 2.0, "p99": 2.0, "mean": 2.0, "stdev": 0.0, "count": 3},
               "latency_samples_ms": [2.0] * 3, "power": power, "conditions": {}, "runtime": {}}
        return Run(k, "2026-01-01T00:00:00+00:00", bundle, "jetson", "jetson-orin-nano", status, error,
                   doc if status == "ok" else None)

    measured = {"source": "jetson:ina3221", "measured": True, "status": "ok", "idle_watts": 3.1,
                "active_watts": 7.4, "energy_per_inference_j": 0.0123}
    estimated = {"source": "estimated", "measured": False, "status": "estimated", "idle_watts": 2.0,
                 "active_watts": 5.0, "energy_per_inference_j": 0.0045}
    runs = [run(1, "a" * 64, measured), run(2, "b" * 64, estimated),
            run(3, "c" * 64, None, "error", "DeviceTimeoutError: jetson: no answer within 600 s")]
    bundles = {r.bundle_id: BundleInfo(r.bundle_id, "net", label, "tflite", "jetson", "int8", 1000, "net|h")
               for r, label in zip(runs, ("measured-variant", "estimated-variant", "broken-variant"))}
    html = render_results_report(ReportData(runs=runs, bundles=bundles, results_path="mem"))
    power = Tables(html).with_columns("device", "bundle", "source", "idle power")
    rows = {row["bundle"].split()[0]: row for _, row in power}
    columns = ("status", "idle power", "active power", "energy / inference")
    assert [rows["measured-variant"][c] for c in columns] == ["ok", "3.10 W", "7.40 W", "12.300 mJ"]
    assert [rows["estimated-variant"][c] for c in columns] == ["estimated", "≈ 2.00 W", "≈ 5.00 W", "≈ 4.500 mJ"]
    summary, _details = Tables(html).find("bundle", "Device jetson")
    broken = next(row for _, row in records(summary) if row["bundle"].startswith("broken-variant"))
    assert "error DeviceTimeoutError: jetson: no answer within 600 s" in broken.values()


def test_filters_and_the_command_line(world, tmp_path):
    from click.testing import CliRunner

    from edgec.cli import cli

    bundle = world["bundles"]["a_int8"]
    with ResultsStore(world["db"]) as store:
        only = collect(store, bundles=(str(bundle.path),), devices=("local",))
        assert set(only.bundles) == {bundle.bundle_id} and only.devices() == ["local"]
        assert collect(store, devices=(SECOND_DEVICE,)).devices() == [SECOND_DEVICE]
        with pytest.raises(ResultsError, match="no stored results match --device nowhere"):
            collect(store, devices=("nowhere",))
        assert render_results_report(collect(store)) == world["html"]  # same database, same page (byte for byte)
    out = tmp_path / "r.html"
    done = CliRunner().invoke(cli, ["report", "--results", str(world["db"]), "--bundle", bundle.bundle_id[:10],
                                    "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert bundle.bundle_id[:12] in out.read_text() and world["bundles"]["b_fp32"].bundle_id[:12] not in out.read_text()
    flagged = CliRunner().invoke(cli, ["report", "--results", str(world["db"]), "--fail-on-regression", "--json",
                                       "-o", str(out)])
    assert flagged.exit_code == 10
    comparisons = {(c["bundle_id"], c["device"]): c for c in json.loads(flagged.output)["comparisons"]}
    injected = comparisons[(world["bundles"]["a_fp32"].bundle_id, "local")]
    assert injected["flagged"] and injected["verdict"] == "regression" and 0.3 < injected["change"] < 0.5
    # The injected +40% is beyond the noise but under a 50% threshold: reported, not flagged.
    # (Only the injected pair is judged: the real runs beside it are two benches on a shared 2-core machine, which
    # can differ by more than 50% and be flagged rightly.)
    lenient = CliRunner().invoke(cli, ["report", "--results", str(world["db"]), "--min-change", "50", "--json",
                                       "-o", str(out)])
    assert lenient.exit_code == 0 and "below threshold" in out.read_text()
    comparisons = {(c["bundle_id"], c["device"]): c for c in json.loads(lenient.output)["comparisons"]}
    injected = comparisons[(world["bundles"]["a_fp32"].bundle_id, "local")]
    assert not injected["flagged"] and 0.3 < injected["change"] < 0.5
    bad = CliRunner().invoke(cli, ["report", "--results", str(world["db"]), "--bundle", "not-a-bundle", "-o", str(out)])
    assert bad.exit_code != 0 and "neither a bundle directory nor a bundle id" in str(bad.exception)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(browser: str, page, png, tmp_path) -> None:
    profile = tmp_path / f"profile-{png.stem}"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1200,6000",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)


def blank_svg(match) -> str:
    """An empty SVG with the width, height and viewBox of the plot in ``match`` (a base64 data URI payload)."""
    import base64

    svg = base64.b64decode(match.group(1)).decode()
    head = re.search(r"<svg [^>]*>", svg).group(0)
    attrs = " ".join(re.findall(r'(?:width|height|viewBox)="[^"]*"', head))
    empty = f'<svg xmlns="http://www.w3.org/2000/svg" {attrs}></svg>'.encode()
    return f'src="data:image/svg+xml;base64,{base64.b64encode(empty).decode()}"'


def coloured_pixels(png) -> int:
    """Pixels clearly coloured (not grey/white/black): the plot lines, points and bars, and a few badges."""
    from matplotlib.image import imread

    rgb = imread(str(png))[..., :3]
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 0.25).sum())


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (scripts/install-system.sh installs "
                                                 "Debian's chromium package; it needs root and apt)")
def test_the_page_renders_its_images_in_headless_chromium(world, tmp_path):
    browser = chromium()
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", world["path"].as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    assert "Summary per device and bundle" in dom and dom.count("<img ") == world["html"].count("<img ")
    # The control is the same page with every plot replaced by a blank image of the same size (same layout):
    # what the plots add must show in the pixels.
    blank = tmp_path / "blank-images.html"
    blank.write_text(re.sub(r'src="data:image/svg\+xml;base64,([^"]*)"', blank_svg, world["html"]))
    shots = {name: tmp_path / f"{name}.png" for name in ("report", "control")}
    screenshot(browser, world["path"], shots["report"], tmp_path)
    screenshot(browser, blank, shots["control"], tmp_path)
    with_plots, without = coloured_pixels(shots["report"]), coloured_pixels(shots["control"])
    assert with_plots > without + 5000, (with_plots, without)
    shutil.copy(shots["report"], world["tmp"] / "report-screenshot.png")
