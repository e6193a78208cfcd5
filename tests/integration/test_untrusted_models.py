"""Model files are untrusted: constructs that run code are refused (exit 3, one line naming --trust-source) and
their payload never runs; ``--trust-source`` lets it run; code specs are taken only when written as such."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgec.cli import main
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def hostile_dir(tmp_path_factory) -> Path:
    """Hostile Keras and SavedModel files (built in a subprocess: it imports tf_keras), payloads not yet run."""
    out = tmp_path_factory.mktemp("hostile")
    subprocess.run([sys.executable, str(HERE / "hostile_models.py"), str(out), str(out / "MARKER")], check=True,
                   capture_output=True, timeout=600)
    assert not (out / "MARKER").exists()
    return out


def _refused(argv, capsys, *, code=3, match=()):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == code, (exit_info.value.code, err)
    assert len(lines) == 1 and lines[0].startswith("edgec: error: "), err
    assert "Traceback" not in out + err
    for text in match:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name, what", [
    ("lambda_tfkeras.h5", "Lambda"),  # the reproduction: keras_version 2.x picked tf_keras
    ("lambda_keras3.h5", "Lambda"),
    ("lambda_keras3.keras", "Lambda"),
    ("custom_module.keras", "payload_module"),  # a custom object Keras would import
    ("write_file_savedmodel", "WriteFile"),
])
def test_code_carrying_keras_and_savedmodel_are_refused(name, what, hostile_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(hostile_dir)  # payload_module.py is importable from here
    before = sorted(p.name for p in hostile_dir.iterdir())
    line = _refused(["compile", str(hostile_dir / name), "-o", str(tmp_path / "out"), "--format", "onnx"], capsys,
                    match=[name, what, "--trust-source"])
    assert "runs code" in line or "run code" in line
    assert not (hostile_dir / "MARKER").exists()
    assert sorted(p.name for p in hostile_dir.iterdir()) == before and not list(tmp_path.iterdir())


def test_trust_source_lets_the_lambda_run(hostile_dir, tmp_path):
    marker = hostile_dir / "MARKER"
    code, _, err = run_cli(["compile", str(hostile_dir / "lambda_tfkeras.h5"), "-o", str(tmp_path / "out"),
                            "--format", "onnx", "--trust-source"])
    try:
        assert code == 0, err
        assert marker.exists()  # the flag is what let it run: the refusal above is not a broken loader
    finally:
        marker.unlink(missing_ok=True)


def _payload_pickle(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    return pickle.dumps(Payload())


def _rewrite(src: Path, dst: Path, change) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    change(members)
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def _member(members: dict, suffix: str) -> str:
    return next(n for n in members if n.endswith(suffix))


def _use_pickle_weight(members, payload):  # the reproduction
    config_name = _member(members, "model_weights_config.json")
    config = json.loads(members[config_name])
    fqn = next(iter(config["config"]))
    config["config"][fqn]["use_pickle"] = True
    members[config_name] = json.dumps(config).encode()
    members[_member(members, "data/weights/" + config["config"][fqn]["path_name"])] = payload


def _pickled_sample_inputs(members, payload):  # torch retries a failed weights_only load with a full unpickle
    members[_member(members, "data/sample_inputs/model.pt")] = payload


def _opaque_constant(members, payload):  # constants named opaque_* are pickle.loads'ed
    config_name = _member(members, "model_constants_config.json")
    root = config_name[:-len("data/constants/model_constants_config.json")]
    members[config_name] = json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                        "use_pickle": True, "tensor_meta": None}}}).encode()
    members[root + "data/constants/opaque_obj_0"] = payload


def _legacy_weights(members, payload):  # a legacy weights file goes through the weights_only fallback too
    config_name = _member(members, "model_weights_config.json")
    members[config_name[:-len("model_weights_config.json")] + "model.pt"] = payload


@pytest.mark.parametrize("change", [_use_pickle_weight, _pickled_sample_inputs, _opaque_constant, _legacy_weights])
def test_pickles_in_pt2_archives_are_refused(change, tiny_mobilenet_pt2, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = _rewrite(tiny_mobilenet_pt2, tmp_path / "evil.pt2", lambda m: change(m, _payload_pickle(marker)))
    _refused(["compile", str(evil), "-o", str(tmp_path / "out"), "--format", "onnx"], capsys,
             match=["evil.pt2", "--trust-source"])
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt2"]


def test_torchscript_with_a_pickled_extra_file_does_not_run_it(tmp_path, capsys):
    import torch

    marker = tmp_path / "MARKER"
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    path = tmp_path / "extra.ts"
    torch.jit.save(module, str(path), _extra_files={"payload.pkl": _payload_pickle(marker)})
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", str(path), "-o", str(tmp_path / "out"), "--format", "onnx", "--input-shape", "input=1x4",
              "--json"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert not marker.exists()


def test_a_missing_calibration_path_never_imports_code(tmp_path, capsys, monkeypatch, tiny_mobilenet_onnx):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "calib.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w').write('ran')\n")
    _refused(["compile", str(tiny_mobilenet_onnx), "-o", str(tmp_path / "out"), "--format", "onnx", "--quantize",
              "int8", "--calibration", "calib:2024.npz"], capsys, match=["calib:2024.npz", "no such file"])
    assert not (tmp_path / "MARKER").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.py"]


def test_help_says_which_sources_run_code():
    code, out, _ = run_cli(["compile", "--help"])
    assert code == 0 and "--trust-source" in out and "module:function" in out and "runs" in out


def test_good_models_still_load(seed_h5, keras_cnn_file, tiny_mobilenet_pt2):
    from edgec.compiler.frontends import lower

    for path in (seed_h5, keras_cnn_file, tiny_mobilenet_pt2):
        assert lower(str(path)).model.graph.outputs, path


@pytest.mark.parametrize("location", ["../secret.bin", "ABSOLUTE"])
def test_onnx_external_data_outside_the_model_directory_is_refused(location, tmp_path, capsys):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"S" * 32)
    weight = numpy_helper.from_array(np.zeros(8, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", str(secret) if location == "ABSOLUTE" else location), ("length", "32")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])], [weight])
    (tmp_path / "m").mkdir()
    model = tmp_path / "m" / "model.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    assert onnx.load(str(model), load_external_data=False).graph.initializer[0].external_data
    line = _refused(["compile", str(model), "-o", str(tmp_path / "out"), "--format", "onnx"], capsys,
                    match=["model.onnx"])
    assert "outside" in line or "absolute path" in line  # onnx's own check, kept as the reason
    assert not (tmp_path / "out").exists() and "SSSS" not in line
