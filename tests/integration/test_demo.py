"""`edgec demo` (what `make demo` runs): a real model in float and int8 for host and rpi4, beside onnxruntime's
quantizer, verified, benchmarked, scored and reported in a page that fits a 1280-pixel window."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from edgec.bundle import Bundle
from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo") / "demo"
    code, stdout, stderr = run_cli(["demo", "--workdir", str(workdir), "--runs", "20", "--json"])
    assert code == 0, stderr
    return workdir, json.loads(stdout)


def test_demo_shows_int8_smaller_than_float_with_its_agreement(demo):
    _, doc = demo
    records = {b["label"]: b for b in doc["bundles"]}
    assert {"linreg rpi4", "linreg host", "fer host fp32", "fer host int8", "fer rpi4 fp32", "fer rpi4 int8",
            "fer host int8 (onnxruntime)"} == set(records)
    assert all(b["verified"] and b["p50_ms"] > 0 and b["p99_ms"] >= b["p50_ms"] for b in doc["bundles"])
    assert records["fer rpi4 int8"]["format"] == "tflite" and records["fer host int8"]["format"] == "onnx"
    for target in ("host", "rpi4"):
        fp32, int8 = records[f"fer {target} fp32"], records[f"fer {target} int8"]
        assert "int8" in int8["precision"] and int8["bytes"] < 0.5 * fp32["bytes"]
        assert fp32["agreement"] == 100.0 or target == "rpi4"  # the float reference is the host fp32 bundle
        assert int8["agreement"] is not None and 80.0 <= int8["agreement"] <= 100.0
        assert int8["agreement_samples"] == 200
    assert records["fer rpi4 fp32"]["agreement"] >= 99.0  # float TFLite keeps the float decisions
    peer = records["fer host int8 (onnxruntime)"]
    assert peer["agreement"] is not None and peer["bytes"] < 0.75 * records["fer host fp32"]["bytes"]
    power = records["fer host fp32"]["power"]
    if power["measured"]:  # a machine with a sensor (RAPL, hwmon ...): its figure, named
        assert power["source"] in ("jetson", "hwmon", "rapl", "battery") and power["energy_per_inference_j"] > 0
    else:  # no sensor (as on the project's CI machines): the host profile's estimate, labelled as one
        assert power["source"] == "estimated" and power["energy_per_inference_j"] > 0
    assert any("edgec compile" in c and "--calibration" in c for c in doc["next_commands"])
    assert any(c.startswith("edgec bench") and "--device" in c for c in doc["next_commands"])
    assert any(c.startswith("edgec report") for c in doc["next_commands"])


def test_report_puts_int8_on_the_pareto_front_with_its_accuracy(demo):
    workdir, doc = demo
    page = (workdir / "report.html").read_text()
    for b in doc["bundles"]:
        assert Bundle(b["bundle"]).bundle_id[:12] in page
    records = {b["label"]: b for b in doc["bundles"]}
    # The summary row of the host int8 bundle carries its agreement, as the console table does.
    row = re.search(r"<tr[^>]*><td><b>fer host int8</b>.*?</tr>", page, re.S).group(0)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert f"{records['fer host int8']['agreement']:.1f}" in cells
    # One Pareto table for the real model (the peer included); an int8 bundle of edgec's is on the front.
    (front,) = [t for t in re.findall(r"<table>.*?</table>", page, re.S) if "Pareto front" in t and "fer host" in t]
    rows = {re.sub(r"<[^>]+>", "", r[0]): r[-1] for r in
            (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", front, re.S))
            if r}
    assert {"fer host fp32", "fer host int8", "fer host int8 (onnxruntime)", "fer rpi4 int8"} <= set(rows)
    assert "yes" in (rows["fer host int8"], rows["fer rpi4 int8"])


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (scripts/install-system.sh)")
    return browser


def test_report_tables_fit_a_1280_pixel_window(demo, tmp_path):
    """Headless Chromium lays the page out 1280 pixels wide; no table may reach past the window's right edge."""
    workdir, _ = demo
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { let edge = 0; for (const t of "
              "document.querySelectorAll('table')) { edge = Math.max(edge, t.getBoundingClientRect().right); } "
              "document.body.setAttribute('data-edge', Math.ceil(edge)); "
              "document.body.setAttribute('data-tables', document.querySelectorAll('table').length); });</script>")
    probe.write_text((workdir / "report.html").read_text().replace("</body>", script + "</body>"))
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1280,2000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    edge = int(re.search(r'data-edge="(\d+)"', dom).group(1))
    assert int(re.search(r'data-tables="(\d+)"', dom).group(1)) >= 3
    assert 0 < edge <= 1280, f"the widest table ends at {edge} px"
    shot = tmp_path / "report.png"  # the screenshot a person would look at, kept with the test's files
    subprocess.run([browser, *flags, "--hide-scrollbars", f"--screenshot={shot}", probe.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000
