"""``parse_source_spec``: the one reading of a model/data argument (path, file.py:function, module:function)."""

from __future__ import annotations

import pytest

from edgec.api import default_output
from edgec.source_spec import SourceSpec, parse_source_spec

pytestmark = pytest.mark.unit


def test_the_three_forms(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    assert parse_source_spec(model) == SourceSpec(str(model), "path", str(model))
    assert parse_source_spec("nets.py:build") == SourceSpec("nets.py:build", "file", "nets.py", "build")
    assert parse_source_spec("pkg.nets:tiny") == SourceSpec("pkg.nets:tiny", "module", "pkg.nets", "tiny")
    assert parse_source_spec("missing.onnx").kind == "path"
    assert parse_source_spec("a:b-c").kind == "path"  # not a function name
    assert parse_source_spec("bad module:f").kind == "path"


def test_an_existing_path_with_a_colon_is_a_path(tmp_path):
    odd = tmp_path / "run:3.onnx"
    odd.write_bytes(b"x")
    assert parse_source_spec(str(odd)).kind == "path"


def test_the_default_output_is_named_after_the_factory_or_the_file():
    assert default_output("edgec.examples.torch_models:tiny_mobilenet", "rpi4").name == "tiny_mobilenet-rpi4.bundle"
    assert default_output("models/net.onnx", "profiles/board.toml").name == "net-board.bundle"
