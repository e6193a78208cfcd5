from __future__ import annotations

import pytest

from edgec.compiler.frontends import parse_input_shapes
from edgec.errors import UsageError

pytestmark = pytest.mark.unit


def test_parses_repeated_shapes():
    assert parse_input_shapes(["x=1x3x224x224", "mask=1x10"]) == {"x": [1, 3, 224, 224], "mask": [1, 10]}


@pytest.mark.parametrize("bad", ["x", "x=", "x=1,3,224", "=1x3", "x=1x0x3", "x=1xax3"])
def test_malformed_shapes_say_the_expected_form(bad):
    with pytest.raises(UsageError, match=r"NAME=DxDxD|positive"):
        parse_input_shapes([bad])


def test_duplicate_name_is_refused():
    with pytest.raises(UsageError, match="given twice"):
        parse_input_shapes(["x=1x2", "x=1x3"])


@pytest.mark.parametrize("text", ["x=Nx3x640x640", "x=-1x3x640x640", "x=?x3x640x640", "x=nx3x640x640"])
def test_n_minus_one_and_question_mark_leave_a_dimension_dynamic(text):
    assert parse_input_shapes([text]) == {"x": [None, 3, 640, 640]}


def test_a_bare_shape_is_for_the_one_input():
    from edgec.compiler.frontends import ONLY_INPUT, resolve_input_shapes

    shapes = parse_input_shapes(["1x3xNxN"])
    assert shapes == {ONLY_INPUT: [1, 3, None, None]}
    assert resolve_input_shapes(shapes, ["images"], "m.onnx") == {"images": [1, 3, None, None]}
    with pytest.raises(UsageError, match="needs a one-input model; this one has inputs a, b"):
        resolve_input_shapes(shapes, ["a", "b"], "m.onnx")
    with pytest.raises(UsageError, match="name every input"):
        parse_input_shapes(["1x3", "y=1x3"])


def test_a_shape_for_an_input_the_model_lacks_lists_the_real_ones():
    from edgec.compiler.frontends import resolve_input_shapes

    with pytest.raises(UsageError, match=r"names 'image', but the model's inputs are input, state, sr"):
        resolve_input_shapes({"image": [1, 3]}, ["input", "state", "sr"], "vad.onnx")


@pytest.mark.parametrize("dims, example", [
    ([None, 3, None, None], "x=1x3x224x224"),    # a text detector: batch 1, image sides
    ([None, None, None, 3], "x=1x224x224x3"),    # channels last
    ([1, 3, 48, None], "x=1x3x48x224"),          # a recogniser of variable width keeps its fixed dims
    ([None, None], "x=1x128"),                   # audio samples
])
def test_shape_hints_are_usable_examples(dims, example):
    from edgec.compiler.frontends import shape_hint

    assert shape_hint("x", dims) == f"--input-shape {example}"
    assert shape_hint("x", dims, only_input=True) == f"--input-shape {example.partition('=')[2]}"


def test_a_model_with_every_input_dynamic_gets_one_line_naming_each_with_an_example():
    from edgec.compiler.inputs import generate_inputs

    inputs = [{"name": "x", "shape": [None, 3, None, None], "dtype": "float32"},
              {"name": "k", "shape": [None, 4], "dtype": "float32"}]
    with pytest.raises(UsageError) as caught:
        generate_inputs(inputs, {})
    message = str(caught.value)
    assert "\n" not in message and "'x' ['N', 3, 'N', 'N']" in message
    assert "--input-shape x=1x3x224x224" in message and "--calibration" in message and "'k'" not in message
    assert [a.shape for a in generate_inputs(inputs, {"x": [1, 3, 64, 32]})] == [(1, 3, 64, 32), (1, 4)]
