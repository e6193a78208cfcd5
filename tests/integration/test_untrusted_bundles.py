"""A bundle is exactly its hashed files: paths confined to the bundle and covered by ``files``, bytes hashed and
loaded from one buffer, a private inflate cache re-verified by hash, bounded inflation and reference arrays."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgec import api
from edgec.bundle import MANIFEST_NAME, Bundle, manifest_bytes
from edgec.cli import main
from edgec.errors import BundleError
from tests.support.agent import add_bundle as _bundle
from tests.support.agent import add_onnx as _onnx_add
from tests.support.agent import rehash, run_agent

pytestmark = pytest.mark.integration


def _edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    change(manifest)
    (bundle / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))


def _cli_fails(argv, capsys, code: int, match=()) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == code, err
    assert len(lines) == 1 and lines[0].startswith("edgec: error: ") and "Traceback" not in out + err, err
    for text in match:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    from edgec.device_agent import build_zipapp

    return build_zipapp(tmp_path_factory.mktemp("agent"))


@pytest.mark.parametrize("where", ["../outside/model.onnx", "ABSOLUTE"])
def test_model_file_outside_the_bundle_is_refused_by_verify_and_agent(where, tmp_path, capsys, agent):
    bundle = _bundle(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(bundle / "model.onnx", outside / "model.onnx")
    target = str(outside / "model.onnx") if where == "ABSOLUTE" else where

    def point_outside(manifest):
        manifest["files"].pop("model.onnx")
        manifest["model_file"] = target

    _edit(bundle, point_outside)
    _cli_fails(["verify", str(bundle)], capsys, 6, ["model_file", "plain relative path"])
    code, doc = run_agent(agent, "check", bundle)
    assert code == 6 and doc["error"]["type"] == "BundleError" and "model_file" in doc["error"]["message"]


def test_reference_not_listed_in_files_is_refused(tmp_path, capsys):
    bundle = _bundle(tmp_path)
    _edit(bundle, lambda m: m["files"].pop("reference/outputs.npz"))
    (bundle / "reference/outputs.npz").unlink()
    _cli_fails(["verify", str(bundle)], capsys, 6, ["reference.outputs", "not listed in 'files'"])


def test_bundle_id_covers_the_model(tmp_path):
    bundle = _bundle(tmp_path)
    before = Bundle(bundle).bundle_id
    _onnx_add(bundle / "model.onnx", 2.0)
    with pytest.raises(BundleError, match="sha256 does not match"):
        api.verify_bundle(bundle)
    rehash(bundle)
    assert Bundle(bundle).bundle_id != before


def test_what_the_runtime_loads_is_the_bytes_that_were_hashed(tmp_path, monkeypatch):
    """The model is swapped on disk right after its bytes are hashed: what loads is the hashed buffer, never a path.

    The swap happens at a fixed point (inside the hash of the model's bytes), not by a racing thread, so every
    round tests the window between the hash check and the load.
    """
    import edgec.bundle as bundle_module
    from edgec.runtimes import onnxruntime as ort_runtime

    bundle = _bundle(tmp_path)
    good = (bundle / "model.onnx").read_bytes()
    evil = _onnx_add(tmp_path / "evil.onnx", 1.0 + 1e-3).read_bytes()
    want = Bundle(bundle).manifest["files"]["model.onnx"]["sha256"]
    loaded, real_load, real_hash = [], ort_runtime.load, bundle_module.sha256_bytes
    monkeypatch.setattr(ort_runtime, "load", lambda model, *a, **k: (loaded.append(model), real_load(model, *a, **k))[1])

    def put(data: bytes) -> None:
        (bundle / ".swap").write_bytes(data)
        os.replace(bundle / ".swap", bundle / "model.onnx")

    def hash_then_swap(data: bytes) -> str:
        digest = real_hash(data)
        if data == good:
            put(evil)
        return digest

    monkeypatch.setattr(bundle_module, "sha256_bytes", hash_then_swap)
    for _ in range(3):
        put(good)
        assert api.verify_bundle(bundle)["ok"] is True
        assert (bundle / "model.onnx").read_bytes() == evil  # the swap did happen after the hash
    assert len(loaded) >= 3 and all(isinstance(m, bytes) and hashlib.sha256(m).hexdigest() == want for m in loaded)


def _encoded_bundle(tmp_path: Path) -> Path:
    bundle = _bundle(tmp_path)
    raw = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx.zlib").write_bytes(zlib.compress(raw))
    (bundle / "model.onnx").unlink()

    def encode(manifest):
        manifest["files"].pop("model.onnx")
        manifest["files"]["model.onnx.zlib"] = {}
        manifest["model_encoding"] = {"codec": "zlib", "file": "model.onnx.zlib",
                                      "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}

    _edit(bundle, encode)
    rehash(bundle)
    return bundle


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A TMPDIR of the test's own (the inflate cache lives under it)."""
    root = tmp_path / "tmpdir"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_inflate_cache_is_private_and_reverified(tmp_path, private_tmp):
    bundle = _encoded_bundle(tmp_path)
    assert api.verify_bundle(bundle)["ok"]
    cache = next(private_tmp.iterdir())
    assert cache.stat().st_mode & 0o777 == 0o700 and cache.stat().st_uid == os.getuid()
    sha = Bundle(bundle).manifest["model_encoding"]["sha256"]
    planted = _onnx_add(tmp_path / "planted.onnx", 1.0 + 1e-3).read_bytes()
    assert len(planted) == len((cache / sha).read_bytes())
    (cache / sha).write_bytes(planted)  # same size, other model: re-verified by hash and replaced
    assert api.verify_bundle(bundle)["ok"]
    assert hashlib.sha256((cache / sha).read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("how", ["mode", "owner"])
def test_inflate_cache_of_another_user_is_refused(how, tmp_path, private_tmp, capsys):
    bundle = _encoded_bundle(tmp_path)
    cache = private_tmp / f"edgec-models-{os.getuid()}"
    cache.mkdir()
    if how == "mode":
        cache.chmod(0o777)
    elif os.getuid() == 0:
        os.chown(cache, 12345, 12345)
    else:
        pytest.skip("changing a directory's owner needs root")
    _cli_fails(["verify", str(bundle)], capsys, 6, ["model cache", "private"])


def test_encoding_sha_cannot_name_a_path(tmp_path, private_tmp, capsys):
    bundle = _encoded_bundle(tmp_path)
    _edit(bundle, lambda m: m["model_encoding"].update(sha256="../../escaped"))
    _cli_fails(["verify", str(bundle)], capsys, 6, ["model_encoding.sha256"])
    assert not (private_tmp.parent / "escaped").exists() and not list(private_tmp.iterdir())


def test_inflation_stops_at_the_declared_size(tmp_path, private_tmp, capsys):
    bundle = _encoded_bundle(tmp_path)
    (bundle / "model.onnx.zlib").write_bytes(zlib.compress(b"\0" * (58 << 20), 9))  # ~57 kB of zlib
    rehash(bundle)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _cli_fails(["verify", str(bundle)], capsys, 6, ["more than the declared"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 30 << 10  # KiB: far below 58 MB
    cache = private_tmp / f"edgec-models-{os.getuid()}"
    assert not cache.exists() or not list(cache.iterdir())


def _bomb_npz(path: Path, shape: tuple) -> None:
    """An .npz whose i0 header declares ``shape`` float32 but holds 16 bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("i0.npy", buf.getvalue() + b"\0" * 16)


def test_reference_header_is_checked_before_allocation(tmp_path, capsys, agent):
    bundle = _bundle(tmp_path)
    _bomb_npz(bundle / "reference/inputs.npz", (1, 1 << 30))
    rehash(bundle)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _cli_fails(["verify", str(bundle)], capsys, 6, ["inputs.npz", "shape"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 << 10
    code, doc = run_agent(agent, "check", bundle)
    assert code == 6 and "inputs.npz" in doc["error"]["message"]


@pytest.mark.parametrize("text", ['{"schema_version": 1, "format": "onnx", "model_file": 3, "io": "x", "files": [],'
                                  ' "reference": {}}', "[" * 200_000 + "]" * 200_000])
def test_wrong_typed_or_deep_manifest_is_a_bundle_error(text, tmp_path, capsys):
    (tmp_path / MANIFEST_NAME).write_text(text)
    _cli_fails(["verify", str(tmp_path)], capsys, 6, ["manifest.json"])
