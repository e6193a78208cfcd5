"""The onnx2tf guards: no network, the user's file untouched, quiet console, failures naming the node and op,
and the graph preparation that makes a real TF-"same"-padded PyTorch CNN convert.

The network test runs the compile in a fresh network namespace (``unshare -n``, or ``unshare -rn`` with user
namespaces): the only place where "no network" is a fact rather than a mock. Where neither is allowed the test
is skipped and says why; the in-process guard test below still runs.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgec import api
from edgec.errors import CompileError

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("tflite-guards")]


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _netns_prefix() -> list[str] | None:
    """A command prefix that runs its command without any network, or None when this machine forbids it."""
    if shutil.which("unshare") is None:
        return None
    probe = [sys.executable, "-c", "import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)"]
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            proc = subprocess.run([*prefix, *probe], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode != 0 and "Network is unreachable" in proc.stderr:
            return prefix
    return None


@pytest.fixture(scope="module")
def same_pad_onnx(tmp_path_factory):
    from edgec.examples.same_padding import export_same_pad_onnx

    return export_same_pad_onnx(tmp_path_factory.mktemp("samepad") / "same_pad.onnx")


def test_fixed_batch_rgb_image_model_converts_without_network(tmp_path):
    prefix = _netns_prefix()
    if prefix is None:
        pytest.skip("no network namespace available here (unshare -n / -rn refused)")
    out = tmp_path / "bundle"
    # A fixed batch-1 3-channel image input: the shape for which onnx2tf downloads its sample file.
    cmd = [*prefix, sys.executable, "-m", "edgec", "compile", "edgec.examples.torch_models:tiny_mobilenet",
           "--input-shape", "x=1x3x32x32", "-t", "rpi4", "--format", "tflite", "--quantize", "none", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.tflite").is_file()
    assert api.verify_bundle(out)["ok"]
    # onnx2tf's and TensorFlow's console output went to the compile log, not the terminal.
    for noise in ("onnx2tf", "XNNPACK", "\x1b["):
        assert noise not in proc.stderr and noise not in proc.stdout
    assert (out / "logs" / "compile.log").stat().st_size > 0
    assert not list(tmp_path.glob("calibration_image_sample_data*"))  # nothing left in the user's directory


def test_offline_guard_serves_the_sample_locally_and_refuses_downloads(tmp_path):
    from onnx2tf.utils import common_functions

    from edgec.compiler.emit import _onnx2tf

    saved = common_functions.requests
    with _onnx2tf.offline(tmp_path) as module:
        data = module.download_test_image_data()
        assert data.shape == (20, 128, 128, 3) and data.dtype == np.float32
        with pytest.raises(_onnx2tf.OfflineGuardError, match="without network access"):
            common_functions.requests.get("https://example.invalid/file.npy")
    assert common_functions.requests is saved


def _ort(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(None, {"x": x})[0]


def _rel(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def test_same_padding_cnn_plain_onnx2tf_fails(same_pad_onnx, tmp_path):
    import onnx2tf

    from edgec.runtimes import litert

    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    shutil.copy(same_pad_onnx, tmp_path / "model.onnx")
    # onnx2tf with its defaults, as a user would run it (dynamic batch: no sample download on this path).
    onnx2tf.convert(input_onnx_file_path=str(tmp_path / "model.onnx"), output_folder_path=str(tmp_path / "out"),
                    non_verbose=True)
    try:
        got = litert.load(tmp_path / "out" / "model_float32.tflite").run([x.transpose(0, 2, 3, 1)])[0]
        error = _rel(got, _ort(same_pad_onnx, x))
    except Exception:  # the interpreter cannot run what plain onnx2tf made of it (here: a Flex Conv2D)
        error = float("inf")
    assert error > 1e-2


def test_same_padding_cnn_converts_after_preparation(same_pad_onnx, tmp_path):
    """The emitter on the dynamic-batch ONNX as the front-end lowers it (the float passes are bypassed: see the
    next test)."""
    from edgec.compiler.emit.tflite import emit_tflite
    from edgec.compiler.frontends import lower
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.state import CompileState
    from edgec.compiler.verify import generate_inputs
    from edgec.targets import load_profile

    source = lower(str(same_pad_onnx))
    x = np.random.default_rng(6).standard_normal((3, 3, 32, 32)).astype(np.float32)
    options = CompileOptions(target="rpi4", format="tflite", quantize="none")
    state = CompileState(options, load_profile("rpi4"), "tflite", {}, float_model=source.model, input_sets=[
        generate_inputs([{"name": "x", "shape": [2, 3, 32, 32], "dtype": "float32"}], {})])
    emitted = emit_tflite(source.model, source, tmp_path, state.profile, options, state)
    got = emitted.from_model(emitted.runner(emitted.to_model([x])))[0]
    assert _rel(got, _ort(same_pad_onnx, x)) <= 1e-4
    assert emitted.io["inputs"][0]["layout"] == "NHWC" and emitted.io["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert any("fixed to 1" in n for n in emitted.notes)
    assert not any("changed the model's outputs" in n for n in emitted.notes)  # the ORT-folded graph slims fine


def test_same_padding_cnn_compiles_end_to_end(same_pad_onnx, tmp_path):
    # onnxslim's shape inference used to corrupt this graph's pad amounts; the simplify pass now checks outputs.
    bundle = api.compile(str(same_pad_onnx), tmp_path / "b", target="rpi4", format="tflite", quantize="none")
    assert bundle.format == "tflite"
    assert bundle.manifest["report"]["verification"][-1]["max_rel_diff"] <= 1e-4
    simplify = next(p for p in bundle.manifest["passes"] if p["name"] == "simplify")
    assert any("changed the outputs" in note for note in simplify["notes"]), simplify["notes"]


def test_onnx_source_file_is_never_touched(tiny_mobilenet_onnx, tmp_path):
    before = _sha(tiny_mobilenet_onnx)
    bundle = api.compile(str(tiny_mobilenet_onnx), tmp_path / "b", target="rpi4", format="tflite", quantize="none")
    assert _sha(tiny_mobilenet_onnx) == before  # onnx2tf simplifies the file it is given in place
    assert bundle.manifest["report"]["tflite"]["converter"].startswith("onnx2tf")
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = bundle.path / "model.tflite"
    from edgec.runtimes import litert

    assert _rel(litert.load(got).run([x.transpose(0, 2, 3, 1)])[0], _ort(tiny_mobilenet_onnx, x)) <= 1e-4


@pytest.fixture()
def unconvertible_onnx(tmp_path):
    """onnxruntime runs it (com.microsoft FusedMatMul); onnx2tf has no converter for that op."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx import helper as h

    weight = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [h.make_node("Relu", ["x"], ["r"], name="relu0"),
             h.make_node("FusedMatMul", ["r", "w"], ["m"], name="odd_fused_matmul", domain="com.microsoft",
                         alpha=1.0),
             h.make_node("Relu", ["m"], ["y"], name="relu1")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                         [numpy_helper.from_array(weight, "w")])
    path = tmp_path / "fused.onnx"
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18), h.make_opsetid("com.microsoft", 1)])
    onnx.save(model, path)
    return path


def test_conversion_failure_names_the_node_and_op(unconvertible_onnx, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(CompileError) as caught:
        api.compile(str(unconvertible_onnx), out, target="rpi4", format="tflite", quantize="none")
    message = str(caught.value)
    assert "odd_fused_matmul" in message and "FusedMatMul" in message and "--format onnx" in message
    assert "\n" not in message
    assert not out.exists()  # nothing half-written


class _Quant:
    def __init__(self, dynamic_range_ok: bool):
        self.dynamic_range_ok = dynamic_range_ok


class _Profile:
    def __init__(self, dynamic_range_ok: bool):
        self.name, self.source_file = "test-board", "test-board.toml"
        self.quantization = _Quant(dynamic_range_ok)


@pytest.mark.parametrize(("precision", "explicit", "data", "dynamic_ok", "variant"), [
    ("none", True, False, False, "fp32"),
    ("fp16", True, False, False, "fp16"),
    ("int8", True, True, False, "int8"),
    ("int8", False, False, True, "dynamic"),  # only where the profile says dynamic range is not slower
    ("int8", False, False, False, "fp32"),  # the profile's default without data: float, with a note
])
def test_variant_policy(precision, explicit, data, dynamic_ok, variant):
    from edgec.compiler.emit.tflite import choose_variant

    chosen, notes = choose_variant(precision, explicit, data, _Profile(dynamic_ok))
    assert chosen == variant
    assert bool(notes) == (variant in ("dynamic",) or (variant == "fp32" and precision == "int8"))


def test_variant_policy_refuses_what_tflite_cannot_do():
    from edgec.compiler.emit.tflite import choose_variant
    from edgec.errors import UsageError

    with pytest.raises(UsageError, match="dynamic_range_ok"):
        choose_variant("int8", True, False, _Profile(False))
    with pytest.raises(UsageError, match="--format onnx"):
        choose_variant("int4", True, True, _Profile(True))


def test_dynamic_range_variant_converts(tmp_path):
    """The dynamic-range flatbuffer: int8 weights, float I/O, close to float."""
    import tensorflow as tf

    from edgec.compiler.emit import _tflite_convert
    from edgec.runtimes import litert

    rng = np.random.default_rng(0)
    weight = tf.Variable(rng.standard_normal((64, 256)).astype(np.float32))
    module = tf.Module()
    module.weight = weight
    inputs = [{"name": "x", "shape": [1, 64], "dtype": "float32"}]
    holder = _tflite_convert.serving_function(lambda args: [tf.matmul(args[0], weight)], inputs, ["y"], module)
    sizes = {}
    for variant in ("fp32", "dynamic"):
        path = tmp_path / f"{variant}.tflite"
        path.write_bytes(_tflite_convert.convert_function(holder, variant, ["x"]))
        sizes[variant] = path.stat().st_size
    x = rng.standard_normal((1, 64)).astype(np.float32)
    got = litert.load(tmp_path / "dynamic.tflite").run([x])[0]
    want = x @ weight.numpy()
    assert got.dtype == np.float32
    assert float(np.max(np.abs(got - want)) / np.max(np.abs(want))) < 0.05
    assert sizes["dynamic"] < 0.5 * sizes["fp32"]
