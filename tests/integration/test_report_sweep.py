"""``edgec sweep`` (compile variants, score them on the host, benchmark locally, store, report) and
``edgec compile --report``, through the command line, checked against the results database and the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgec.bundle import Bundle
from edgec.cli import cli
from edgec.deploy.results import ResultsStore
from edgec.report import render_compile_report
from edgec.report.html import fmt
from edgec.report.layers import layer_sizes
from tests.support.html_tables import Tables
from tests.support.models import mlp_onnx

pytestmark = pytest.mark.xdist_group("report_sweep")


@pytest.fixture(scope="module", autouse=True)
def edgec_home(tmp_path_factory):
    """Agent builds go to a temporary EDGEC_HOME, never the real ~/.edgec."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEC_HOME", str(tmp_path_factory.mktemp("edgec_home")))
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small MLP, calibration samples, and evaluation samples labelled with the float model's own answers
    (so fp32 scores 100% and a quantized variant shows its real loss)."""
    import onnxruntime as ort

    tmp = tmp_path_factory.mktemp("sweep")
    path = mlp_onnx(tmp / "mlp.onnx", 64, 3)
    rng = np.random.default_rng(1)
    calib, evaluation = rng.random((64, 64), dtype=np.float32), rng.random((200, 64), dtype=np.float32)
    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": evaluation})[0]
    np.savez(tmp / "calib.npz", x=calib)
    np.savez(tmp / "eval.npz", x=evaluation, labels=logits.argmax(axis=1))
    return tmp


def sweep(model, variants: str, out: str, target: str = "host"):
    return CliRunner().invoke(cli, [
        "sweep", str(model / "mlp.onnx"), "--target", target, "--format", "onnx", "--input-shape", "x=1x64",
        "--variants", variants, "--calibration", str(model / "calib.npz"), "--eval-data", str(model / "eval.npz"),
        "--max-accuracy-drop", "50", "--runs", "30", "--warmup", "3", "--idle", "0", "--workdir", str(model / "bundles"),
        "--results", str(model / "results.db"), "-o", str(model / out), "--json"])


def test_a_sweep_compiles_scores_benchmarks_and_reports_every_variant(model):
    done = sweep(model, "fp32,int8,int4,int8+tflite,int4+tflite", "sweep.html")
    doc = json.loads(done.output)
    outcomes = {o["label"]: o for o in doc["outcomes"]}
    assert list(outcomes) == ["fp32", "int8", "int4", "int8+tflite", "int4+tflite"]
    # The int8 TFLite model takes int8 inputs: scored through its recorded scale/zero point, it agrees with
    # the float model about as well as the ONNX int8 variant does.
    tflite = outcomes["int8+tflite"]
    assert tflite["status"] == "ok" and tflite["metrics"]["accuracy"] >= 80
    # TFLite cannot carry int4: that variant fails, with its reason, and the others still run.
    assert outcomes["int4+tflite"]["status"] == "compile failed" and "int4" in outcomes["int4+tflite"]["error"]
    assert done.exit_code == 8
    assert outcomes["fp32"]["status"] == "ok" and outcomes["fp32"]["metrics"]["accuracy"] == 100.0
    html = (model / "sweep.html").read_text()
    tables = Tables(html)
    sweep_rows = {cells[0]: cells for _, cells in next(t for t in tables.tables if t[0][1][0] == "variant"
                                                       and "status" in t[0][1])[1:]}
    summary, _details = tables.find("bundle", "Device local")
    with ResultsStore(model / "results.db") as store:
        for label, outcome in outcomes.items():
            row = sweep_rows[label]
            if outcome["status"] != "ok":
                assert row[2].startswith(outcome["status"]) and outcome["error"][:60] in row[2]
                continue
            stored = store.get(outcome["run_id"])
            assert stored["bundle_id"] == outcome["bundle_id"] and stored["result"]["sweep"]["label"] == label
            assert stored["result"]["manifest"]["report"]["size"]["model_bytes"] > 0
            assert row[3] == outcome["bundle_id"][:12] and row[6] == fmt(outcome["metrics"].get("accuracy"), ".2f")
            p50 = summary[0][1].index("p50 ms")
            cells = next(c for _, c in summary[1:] if c[0].startswith(label + " "))
            assert float(cells[p50]) == pytest.approx(stored["result"]["latency_ms"]["p50"], rel=5e-4)
    assert "<h3>mlp on local</h3>" in html  # the variants' accuracy/latency/size plot and Pareto table


def test_a_second_sweep_is_compared_with_the_first(model):
    # A fixed profile: the "host" profile's hash and storage estimate follow this machine's free disk space,
    # so its bundles are not reproducible (reported to the lead).
    first = sweep(model, "fp32", "first.html", "x86-avx2")
    second = sweep(model, "fp32", "second.html", "x86-avx2")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    ids = {json.loads(r.output)["outcomes"][0]["bundle_id"] for r in (first, second)}
    assert len(ids) == 1  # the same inputs compile to the same bundle, so its runs line up
    compare = next(t for t in Tables((model / "second.html").read_text()).tables
                   if t[0][1][:2] == ["bundle", "device"] and "verdict" in t[0][1])
    assert any(ids.pop()[:12] in cells[0] for _, cells in compare[1:])


def test_compile_report_shows_passes_layers_sizes_and_unknown_sections(model):
    out = model / "compile.html"
    bundle_dir = model / "int8.bundle"
    done = CliRunner().invoke(cli, ["compile", str(model / "mlp.onnx"), "--target", "host", "--format", "onnx",
                                    "--input-shape", "x=1x64", "--quantize", "int8", "--calibration",
                                    str(model / "calib.npz"), "--eval-data", str(model / "eval.npz"),
                                    "--max-accuracy-drop", "50", "-o",
                                    str(bundle_dir), "--report", str(out)])
    assert done.exit_code == 0, done.output
    html, bundle = out.read_text(), Bundle(bundle_dir)
    for record in bundle.manifest["passes"]:
        assert f"<b>{record['name']}</b>" in html
        for note in record["notes"]:
            assert note.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") \
                .replace("'", "&#x27;") in html
    layers = layer_sizes(bundle.model_path, "onnx")
    assert {r["op"] for r in layers} >= {"Gemm"} or {r["op"] for r in layers} >= {"MatMul"}
    for layer in layers:
        assert f"<td>{layer['layer']}</td>" in html and f"{layer['bytes'] / 1024:.1f} KiB" in html
    for key in bundle.manifest["report"]:
        if key not in ("verification", "size", "source_notes"):
            assert f'id="report-{key}"' in html
    # A section a future stage adds to the report still shows, as a table.
    bundle.manifest["report"]["future_stage"] = {"layers": [{"node": "fc1", "decision": "kept", "why": "tiny"}]}
    again = render_compile_report(bundle)
    assert 'id="report-future_stage"' in again and "<td>fc1</td>" in again and "<th>decision</th>" in again


def test_the_digits_example_files_feed_a_sweep(tmp_path):
    from edgec.examples.digits_files import write_digits_files

    paths = write_digits_files(tmp_path, epochs=1)
    with np.load(paths["eval"]) as data:
        assert data["x"].shape[1:] == (1, 8, 8) and data["labels"].shape == (len(data["x"]),)
    done = CliRunner().invoke(cli, ["sweep", str(paths["model"]), "--target", "x86-avx2", "--variants", "fp32",
                                    "--eval-data", str(paths["eval"]), "--runs", "5", "--idle", "0", "--workdir",
                                    str(tmp_path / "b"), "--results", str(tmp_path / "r.db"), "-o",
                                    str(tmp_path / "r.html"), "--json"])
    assert done.exit_code == 0, done.output
    accuracy = json.loads(done.output)["outcomes"][0]["metrics"]["accuracy"]
    # The fp32 variant scores what the source model scores on the same data, computed here with onnxruntime; one
    # epoch reaches ~95% (untrained: ~11%, chance on 10 classes), so 50 marks a model that learned.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(paths["model"]))
    with np.load(paths["eval"]) as data:
        predicted = [session.run(None, {"x": x[None]})[0].argmax() for x in data["x"]]
        expected = 100 * float(np.mean(np.array(predicted) == data["labels"]))
    assert accuracy == pytest.approx(expected, abs=0.2) and expected > 50


def test_compile_report_of_a_tflite_bundle_lists_its_int8_layers(model):
    out = model / "tflite.html"
    done = CliRunner().invoke(cli, ["compile", str(model / "mlp.onnx"), "--target", "rpi4", "--format", "tflite",
                                    "--input-shape", "x=1x64", "--quantize", "int8", "--calibration",
                                    str(model / "calib.npz"), "--max-accuracy-drop", "50", "-o",
                                    str(model / "int8.tflite.bundle"), "--report", str(out)])
    assert done.exit_code == 0, done.output
    layers = layer_sizes(Bundle(model / "int8.tflite.bundle").model_path, "tflite")
    assert [r["op"] for r in layers] == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert all("int8" in r["dtypes"] for r in layers)
    html = out.read_text()
    assert all(f"<td>{r['layer']}</td>" in html for r in layers) and 'id="report-tflite"' in html


def test_evaluation_data_that_does_not_fit_leaves_accuracy_unmeasured_with_the_reason(model, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((8, 32), np.float32), labels=np.zeros(8, np.int64))
    done = CliRunner().invoke(cli, ["sweep", str(model / "mlp.onnx"), "--target", "x86-avx2", "--variants", "fp32",
                                    "--input-shape", "x=1x64", "--eval-data", str(tmp_path / "wrong.npz"), "--runs",
                                    "5", "--idle", "0", "--workdir", str(tmp_path / "b"), "--results",
                                    str(tmp_path / "r.db"), "-o", str(tmp_path / "r.html"), "--json"])
    (outcome,) = json.loads(done.output)["outcomes"]
    assert done.exit_code == 0 and outcome["status"] == "ok" and "accuracy" not in outcome["metrics"]
    assert outcome["metrics"]["accuracy_error"] == (
        f"{tmp_path / 'wrong.npz'}: samples of input 'x' have shape [8, 32], the model takes ['?', 64] (samples on "
        "the first axis); write the .npz for this model's input")
    assert "not measured" in (tmp_path / "r.html").read_text()
