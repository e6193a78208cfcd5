"""What devices send back is checked on the way in and shown safely; one bad stored row breaks nothing.
Calibration data that are not what they claim are calibration errors (exit 3), not internal errors."""

from __future__ import annotations

import copy
import json
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgec import api
from edgec.cli import main
from edgec.deploy.results import ResultsStore
from edgec.device_agent.client import parse_output
from edgec.errors import DeviceError
from tests.support.agent import add_bundle as _bundle
from tests.support.agent import add_onnx as _onnx_add

pytestmark = pytest.mark.integration

OSC = "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: write the terminal's clipboard


@pytest.fixture(scope="module")
def real_doc(tmp_path_factory) -> dict:
    """A BenchResult from the real agent on a tiny bundle."""
    tmp = tmp_path_factory.mktemp("results")
    return api.bench(_bundle(tmp).resolve(), runs=5, warmup=1, idle_s=0.0, power="none").result


def _run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("field, value", [("power.energy_per_inference_j", "1"),
                                          ("conditions.before.freq_mhz", ["1500"]), ("latency_ms", None)])
def test_a_malformed_result_is_stored_as_an_error_of_that_run(field, value, real_doc, tmp_path):
    doc = copy.deepcopy(real_doc)
    *path, last = field.split(".")
    target = doc
    for key in path:
        target = target[key]
    target[last] = value
    with pytest.raises(DeviceError, match=field):
        parse_output(json.dumps(doc), 0, where="dev")
    with ResultsStore(tmp_path / "r.db") as store:
        run_id = store.record(bundle_id=doc["bundle_id"], device="dev", result=doc)
        run = store.get(run_id)
    assert run["status"] == "error" and run["error_type"] == "InvalidResult" and field in run["error_message"]
    assert "result" not in run


def _store_raw(db: Path, doc: dict, device: str) -> None:
    """A row as an older edgec (which did not check documents) or an edited database would hold it."""
    with ResultsStore(db) as store:
        run_id = store.record(bundle_id=doc["bundle_id"], device=device, result=copy.deepcopy(doc))
    bad = copy.deepcopy(doc)
    bad["power"]["energy_per_inference_j"] = "1"
    bad["latency_ms"]["mean"] = None
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET result_json = ? WHERE id = ?", (json.dumps(bad), run_id))


def test_reports_and_results_survive_a_bad_row_and_hostile_strings(real_doc, tmp_path, capsys):
    db = tmp_path / "r.db"
    good = copy.deepcopy(real_doc)
    good["conditions"]["os"]["hostname"] = f"pi{OSC}"
    with ResultsStore(db) as store:
        good_id = store.record(bundle_id=good["bundle_id"], device=f"pi{OSC} $\\alpha$ $x_$", result=good)
        store.record(bundle_id=good["bundle_id"], device="pi", error={"type": "DeviceError",
                                                                     "message": f"lost {OSC}"})
    _store_raw(db, real_doc, "legacy")
    code, out, err = _run(["report", "--results", str(db), "-o", str(tmp_path / "r.html")], capsys)
    assert code in (0, None), err
    html = (tmp_path / "r.html").read_text()
    assert "InvalidResult" in html and "\x1b" not in html and "$\\alpha$ $x_$" in html  # no math text
    code, out, err = _run(["results", "list", "--results", str(db)], capsys)
    assert code in (0, None) and "\x1b" not in out and "\\x1b]52" in out and "InvalidResult" not in out
    for run_id in (good_id, good_id + 2):
        code, out, err = _run(["results", "show", str(run_id), "--results", str(db)], capsys)
        assert code in (0, None) and "\x1b" not in out + err, err
    assert "not shown" in out and "latency_ms.mean" in out
    code, out, _ = _run(["results", "delete", str(good_id + 2), "--results", str(db)], capsys)
    assert code in (0, None) and f"deleted run {good_id + 2}" in out
    with ResultsStore(db) as store:
        assert [r["id"] for r in store.list()] == [good_id + 1, good_id]
    code, _, err = _run(["results", "delete", str(good_id + 2), "--results", str(db)], capsys)
    assert code == 9 and "no run with id" in err


def test_a_non_image_and_a_truncated_npz_are_calibration_errors(tmp_path, capsys):
    bundle_src = _onnx_add(tmp_path / "m.onnx", 1.0)
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_text("not a png")
    np.savez(tmp_path / "calib.npz", x=np.ones((16, 4), np.float32))
    with zipfile.ZipFile(tmp_path / "calib.npz") as src:
        member = src.read("x.npy")
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:  # a readable zip, a member cut short
        archive.writestr("x.npy", member[:len(member) - 40])
    for calibration, match in ((images, "not a readable image"), (tmp_path / "short.npz", "truncated")):
        code, _, err = _run(["compile", str(bundle_src), "-o", str(tmp_path / "out"), "--format", "onnx",
                               "--quantize", "int8", "--calibration", str(calibration)], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 3 and len(lines) == 1 and match in lines[0], err
        assert not (tmp_path / "out").exists()
