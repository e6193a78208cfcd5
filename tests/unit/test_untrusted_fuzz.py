"""Fuzzing what strangers send: manifest JSON (``Bundle``) and ``agent serve`` request lines.

Bounded (deadline and max_examples; well under 30 s together). The property: every input ends as a typed
EdgecError or a normal answer, never an internal error (exit 70), never a hang, memory bounded.
"""

from __future__ import annotations

import io
import json
import resource
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec.bundle import MANIFEST_NAME, Bundle
from edgec.device_agent.serve import MAX_REQUEST_BYTES, serve
from edgec.errors import BundleError
from edgec.manifest import is_plain_name

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=150, deadline=2000, database=None,  # no .hypothesis/ left in the checkout
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
_json = st.recursive(_scalars, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)
_paths = st.sampled_from(["model.onnx", "../outside/model.onnx", "/etc/passwd", "a/../../b", "", ".", "m\\x.onnx",
                          "reference/inputs.npz", "model.onnx.zlib"]) | st.text(max_size=12)
_sha = st.sampled_from(["0" * 64, "../../x", "A" * 64, ""]) | st.text(max_size=70)


@st.composite
def manifests(draw):
    """Manifests near the real shape, with any field replaced by anything."""
    files = draw(st.dictionaries(_paths, st.fixed_dictionaries({"sha256": _sha, "size": _scalars | st.integers()})
                                 | _json, max_size=3))
    manifest = {"schema_version": 1, "format": draw(st.sampled_from(["onnx", "tflite"]) | _scalars),
                "model_file": draw(_paths | _scalars), "files": files,
                "io": draw(st.fixed_dictionaries({"inputs": st.lists(_json, max_size=2),
                                                  "outputs": st.lists(_json, max_size=2)}) | _json),
                "reference": draw(st.fixed_dictionaries({"inputs": _paths, "outputs": _paths, "rtol": _scalars,
                                                         "atol": _scalars}) | _json)}
    if draw(st.booleans()):
        manifest["model_encoding"] = draw(st.fixed_dictionaries({"codec": st.just("zlib"), "file": _paths,
                                                                 "sha256": _sha, "size": _scalars}) | _json)
    for key in draw(st.lists(st.sampled_from(sorted(manifest)), max_size=2)):
        manifest[key] = draw(_json)
    return manifest


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@FUZZ
@given(manifest=manifests())
def test_any_manifest_is_a_bundle_error_or_a_bundle(manifest, tmp_path):
    bundle_dir = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest, allow_nan=True))
    for rel in manifest["files"] if isinstance(manifest.get("files"), dict) else ():
        if is_plain_name(rel) and rel != MANIFEST_NAME:  # the files exist, so reads and hashes happen
            try:
                (bundle_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (bundle_dir / rel).write_bytes(b"x")
            except OSError:  # "a" and "a/b" both named: the second cannot exist
                pass
    try:
        bundle = Bundle(bundle_dir)
        bundle.check_files()
        bundle.reference()
        bundle.model_bytes()
    except BundleError:
        pass


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
                                  '"' + "x" * (17 << 20) + '"'])
def test_deep_or_huge_manifest_is_a_bundle_error(text, tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(BundleError, match=r"manifest\.json"):
        Bundle(tmp_path)


_ops = st.sampled_from(["check", "load", "bench", "nope", None, 3]) | st.text(max_size=6)
_requests = st.fixed_dictionaries({"id": _scalars, "op": _ops}, optional={
    "bundle": _paths | _scalars, "threads": _scalars, "runs": _scalars, "warmup": _scalars, "duration_s": _scalars,
    "power": _scalars, "power_model": _json, "sysfs_root": _scalars}) | _json  # no power_command: it runs
_lines = _requests.map(lambda r: json.dumps(r, allow_nan=True)) | st.text(max_size=50) | st.sampled_from(
    ["[" * 100_000, "{" * 50 + "}" * 50, "x" * (MAX_REQUEST_BYTES + 10)])


@FUZZ
@given(lines=st.lists(_lines, min_size=1, max_size=5))
def test_serve_answers_every_request_without_internal_errors(lines, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative bundle paths resolve in an empty directory
    before = _peak_rss_mb()  # the worker's peak so far (other tests may have loaded TensorFlow or torch)
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    out = io.StringIO()
    serve(io.StringIO(text), out)
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(answers) == sum(1 for line in lines if line.strip())
    for answer in answers:
        assert answer["ok"] or answer["error"]["exit_code"] != 70, answer
    assert _peak_rss_mb() - before < 512


def test_an_absurd_declared_size_is_never_a_read_length(tmp_path):
    from edgec.bundle import manifest_bytes

    (tmp_path / "model.onnx").write_bytes(b"x")
    files = {"model.onnx": {"sha256": "0" * 64, "size": 2**70}, "r.npz": {"sha256": "0" * 64, "size": 10**12}}
    (tmp_path / "r.npz").write_bytes(b"x")
    (tmp_path / MANIFEST_NAME).write_bytes(manifest_bytes({
        "schema_version": 1, "format": "onnx", "model_file": "model.onnx", "files": files,
        "io": {"inputs": [], "outputs": []}, "reference": {"inputs": "r.npz", "outputs": "r.npz", "rtol": 0,
                                                           "atol": 0}}))
    bundle = Bundle(tmp_path)
    for call in (bundle.model_bytes, bundle.reference, bundle.check_files):
        with pytest.raises(BundleError, match="sha256 does not match"):
            call()
