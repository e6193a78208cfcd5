"""The one registry style: duplicates rejected where they happen, lazy entries imported on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgec.errors import UsageError
from edgec.registry import Registry

pytestmark = pytest.mark.unit


def test_a_name_registered_twice_is_an_error_and_unknown_names_list_the_known_ones():
    things = Registry("thing")
    things.add("a", 1, help="first")

    @things.register("b")
    def b():
        return 2

    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        things.add("a", 3)
    with pytest.raises(ValueError, match="registered twice"):
        things.register("b")(lambda: None)
    assert things.get("a") == 1 and things.get("b") is b and things.info("a") == {"help": "first"}
    assert list(things) == ["a", "b"] and len(things) == 2 and "a" in things and "c" not in things
    with pytest.raises(UsageError, match=r"unknown thing 'c'; known: a, b"):
        things.get("c")


def test_lazy_entries_import_their_module_only_when_asked_for():
    code = ("import sys; from edgec.registry import Registry; r = Registry('x'); r.add('j', 'json.decoder:JSONDecoder');"
            "print('json.decoder' in sys.modules, r.reference('j')); r.get('j');"
            "print('json.decoder' in sys.modules, r.reference('j'), r.get('j').__name__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(p for p in sys.path if p)}).stdout.split("\n")
    assert out[0] == "False json.decoder:JSONDecoder" and out[1] == "True None JSONDecoder"


def test_commands_runtimes_and_emitters_use_it():
    from edgec.cli import COMMANDS
    from edgec.compiler.emit import EMITTERS, emitter_for
    from edgec.runtimes import RUNTIMES

    assert all(isinstance(r, Registry) for r in (COMMANDS, RUNTIMES, EMITTERS))
    assert set(EMITTERS) == {"onnx", "tflite"} and emitter_for("onnx").__name__ == "emit_onnx"
    with pytest.raises(UsageError, match="--format 'coreml': this edgec emits onnx, tflite"):
        emitter_for("coreml")
    assert {"bench", "compile", "farm", "sweep"} <= set(COMMANDS) and set(RUNTIMES) == {"litert", "onnxruntime"}


def test_stages_and_front_ends_use_it_with_one_signature_each():
    """Every kind ``detect_kind`` returns has a front-end, every stage in the pipeline's order is registered, and
    each entry takes the same arguments as its neighbours (resolved here: importing torch/TF is not needed for
    the signature, so only the module-level references are compared)."""
    import ast
    import inspect
    from pathlib import Path

    import edgec.compiler.frontends as frontends
    from edgec.compiler.stages import STAGE_ORDER, STAGES

    assert isinstance(frontends.FRONTENDS, Registry) and isinstance(STAGES, Registry)
    returned = {node.value.value for node in ast.walk(ast.parse(inspect.getsource(frontends)))
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)}
    assert returned - {"zip"} == set(frontends.FRONTENDS)  # "zip": an unknown archive, refused by detect_kind
    assert list(STAGE_ORDER) == ["compress", "quantize"] and set(STAGE_ORDER) == set(STAGES)

    def parameters(registry, name):
        reference = registry.reference(name)
        if reference is None:  # another test in this process already imported the entry
            return list(inspect.signature(registry.get(name)).parameters)
        module, _, function = reference.partition(":")
        path = Path(frontends.__file__).parents[3] / (module.replace(".", "/") + ".py")
        (node,) = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == function]
        return [a.arg for a in node.args.args]

    assert {tuple(parameters(frontends.FRONTENDS, k)) for k in frontends.FRONTENDS} == {
        ("spec", "kind", "input_shapes", "trust_source")}
    assert {(*parameters(STAGES, s)[:4], len(parameters(STAGES, s))) for s in STAGES} == {
        ("model", "source", "profile", "options", 5)}
