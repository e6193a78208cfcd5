"""Bad input: a clear one-line error naming the file, node or value; no traceback; nothing left behind."""

from __future__ import annotations

import pytest

from edgec.cli import main
from tests.conftest import TINY_MOBILENET

pytestmark = pytest.mark.integration


def _fails(argv, capsys, tmp_path, code=None, match=()):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code != 0 and (code is None or exit_info.value.code == code), (exit_info.value.code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgec: error: "), err
    assert "Traceback" not in err + out
    for text in match:
        assert text in lines[0], lines[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "out"], list(tmp_path.iterdir())
    return lines[0]


def test_missing_file(capsys, tmp_path):
    _fails(["compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out")], capsys, tmp_path, 3,
           ["nope.onnx", "no such file"])


def test_wrong_kind_of_file(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _fails(["compile", str(path), "-o", str(tmp_path / "out")], capsys, tmp_path, 3, ["notes.txt", "not a model"])


def test_corrupt_onnx(capsys, tmp_path, tiny_mobilenet_onnx):
    path = tmp_path / "broken.onnx"
    path.write_bytes(tiny_mobilenet_onnx.read_bytes()[:3000])
    _fails(["compile", str(path), "-o", str(tmp_path / "out")], capsys, tmp_path, 3, ["broken.onnx"])


def test_op_onnxruntime_cannot_run(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], name="fancy", domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    _fails(["compile", str(tmp_path / "custom.onnx"), "-o", str(tmp_path / "out")], capsys, tmp_path, 3,
           ["custom.onnx", "onnxruntime cannot run", "FancyOp"])


def test_unknown_standard_op_is_named(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Reluu", ["x"], ["y"], name="typo")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "typo.onnx"), )
    _fails(["compile", str(tmp_path / "typo.onnx"), "-o", str(tmp_path / "out")], capsys, tmp_path, 3,
           ["typo.onnx", "Reluu"])


def test_factory_that_raises(capsys, tmp_path):
    src = tmp_path / "nets.py"
    src.write_text("def build():\n    raise ValueError('no weights here')\n")
    _fails(["compile", f"{src}:build", "--input-shape", "x=1x3", "-o", str(tmp_path / "out")], capsys, tmp_path, 3,
           ["nets.py:build", "ValueError", "no weights here"])


def test_factory_returning_no_module(capsys, tmp_path):
    src = tmp_path / "nets.py"
    src.write_text("def build():\n    return 42\n")
    _fails(["compile", f"{src}:build", "--input-shape", "x=1x3", "-o", str(tmp_path / "out")], capsys, tmp_path, 3,
           ["returned int, not a torch.nn.Module"])


def test_missing_input_shape(capsys, tmp_path):
    _fails(["compile", TINY_MOBILENET, "-o", str(tmp_path / "out")], capsys, tmp_path, 2,
           ["no shape for input 'x'", "--input-shape x="])


def test_malformed_input_shape(capsys, tmp_path):
    _fails(["compile", TINY_MOBILENET, "--input-shape", "x=1,3,32,32", "-o", str(tmp_path / "out")], capsys,
           tmp_path, 2, ["1,3,32,32", "[NAME=]DxDxD"])


def test_unknown_target_lists_known(capsys, tmp_path, seed_h5):
    _fails(["compile", str(seed_h5), "-t", "rpi9", "-o", str(tmp_path / "out")], capsys, tmp_path, 4,
           ["rpi9", "rpi4", "x86-avx2"])


def test_profile_with_unknown_key(capsys, tmp_path, seed_h5):
    board = tmp_path / "board.toml"
    board.write_text('base = "rpi4"\n[power]\nidle_watt = 2\n')
    _fails(["compile", str(seed_h5), "-t", str(board), "-o", str(tmp_path / "out")], capsys, tmp_path, 4,
           ["board.toml", "power.idle_watt"])


def test_profile_with_wrong_type(capsys, tmp_path, seed_h5):
    board = tmp_path / "board.toml"
    board.write_text('base = "rpi4"\n[cpu]\ncores = "four"\n')
    _fails(["compile", str(seed_h5), "-t", str(board), "-o", str(tmp_path / "out")], capsys, tmp_path, 4,
           ["board.toml", "cpu.cores", "integer"])


def test_existing_output_needs_force(capsys, tmp_path, seed_h5):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", str(seed_h5), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "already exists" in err and "--force" in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_pickled_pt_is_refused(capsys, tmp_path):
    import torch

    from edgec.examples.torch_models import tiny_mobilenet

    torch.save(tiny_mobilenet(), tmp_path / "model.pt")
    line = _fails(["compile", str(tmp_path / "model.pt"), "-o", str(tmp_path / "out")], capsys, tmp_path, 3,
                  ["model.pt", "arbitrary code", "torch.export"])
    assert "refuses" in line


def test_tampered_bundle_fails_verify(capsys, tmp_path, seed_h5):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", str(seed_h5), "--format", "onnx", "-o", str(tmp_path / "b")])
    assert exit_info.value.code == 0
    capsys.readouterr()
    import onnx

    model = onnx.load(str(tmp_path / "b" / "model.onnx"))
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    onnx.save(model, str(tmp_path / "b" / "model.onnx"))
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 6 and "model.onnx: sha256 does not match" in err and "Traceback" not in err


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(Exception, match="no such file"):
        main(["--debug", "compile", str(tmp_path / "nope.onnx")])
