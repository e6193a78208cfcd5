"""TFLite bundles end to end: Keras and PyTorch sources, fp32 / fp16 / INT8, layouts, verify, reproducibility.

Every compile is real (tf2onnx / torch.onnx, onnx2tf, TFLiteConverter, LiteRT). Compiled bundles are built once
per module and shared by the tests that look at them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgec import api
from edgec.bundle import Bundle
from edgec.runtimes import litert

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("tflite-bundles")]

TINY = "edgec.examples.torch_models:tiny_mobilenet"
TINY_SHAPE = {"x": [1, 3, 32, 32]}


def _compile(source, out, **options):
    return api.compile(str(source), out, force=True, **options)


def _run_bundle(bundle: Bundle, inputs_in_model_layout: list) -> list:
    session = litert.load(bundle.model_path, threads=1)
    return session.run(inputs_in_model_layout)


def _to_model(bundle: Bundle, arrays: list) -> list:
    """What a user of the bundle does with source-layout float data: permute, quantize with the io signature."""
    fed = []
    for meta, array in zip(bundle.inputs, arrays):
        array = array.transpose(meta["permutation"])
        quant = meta.get("quantization")
        if quant:
            info = np.iinfo(np.dtype(meta["dtype"]))
            array = np.clip(np.round(array / quant["scale"] + quant["zero_point"]), info.min, info.max)
        fed.append(array.astype(meta["dtype"]))
    return fed


def _from_model(meta: dict, array: np.ndarray) -> np.ndarray:
    quant = meta.get("quantization")
    if quant:
        array = (array.astype(np.float32) - quant["zero_point"]) * quant["scale"]
    return array.transpose(np.argsort(meta["permutation"]))


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def tiny_calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "tiny.npz"
    np.savez(path, x=np.random.default_rng(3).standard_normal((48, 3, 32, 32)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def keras_calibration(tmp_path_factory, keras_cnn_file):
    import keras

    # The Keras front-end names the input after the Keras input layer (its name depends on what Keras built
    # before it in the process that saved it).
    name = keras.models.load_model(keras_cnn_file, compile=False).inputs[0].name.split(":")[0]
    path = tmp_path_factory.mktemp("calib") / "keras.npz"
    np.savez(path, **{name: np.random.default_rng(4).standard_normal((48, 16, 16, 3)).astype(np.float32)})
    return path


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory, tiny_calibration):
    out = tmp_path_factory.mktemp("tiny")
    return {
        "fp32": _compile(TINY, out / "fp32", target="rpi4", input_shapes=TINY_SHAPE, quantize="none"),
        # fp16 on a target with fp16 arithmetic (the quantization policy refuses it on the Pi 4).
        "fp16": _compile(TINY, out / "fp16", target="rpi5", input_shapes=TINY_SHAPE, quantize="fp16"),
        "int8": _compile(TINY, out / "int8", target="rpi4", input_shapes=TINY_SHAPE, quantize="int8",
                         calibration=str(tiny_calibration)),
    }


@pytest.fixture(scope="module")
def keras_bundles(tmp_path_factory, keras_cnn_file, keras_calibration):
    out = tmp_path_factory.mktemp("kcnn")
    return {
        "fp32": _compile(keras_cnn_file, out / "fp32", target="rpi4", quantize="none"),
        "fp16": _compile(keras_cnn_file, out / "fp16", target="android-arm64", quantize="fp16"),
        "int8": _compile(keras_cnn_file, out / "int8", target="rpi4", quantize="int8",
                         calibration=str(keras_calibration)),
    }


def test_seed_linear_regression_h5_matches_keras(seed_h5, tmp_path):
    import keras

    bundle = _compile(seed_h5, tmp_path / "lr", target="rpi4")  # the profile's format: tflite
    assert bundle.format == "tflite" and bundle.model_path.name == "model.tflite"
    assert bundle.manifest["report"]["tflite"]["variant"] == "fp32"  # int8 default, no calibration: kept float
    x = np.linspace(-3, 3, 7, dtype=np.float32).reshape(-1, 1)
    want = keras.models.load_model(seed_h5, compile=False)(x).numpy()
    got = _run_bundle(bundle, [x])[0]  # a batch of 7 through the batch-1 model
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert api.verify_bundle(bundle.path)["ok"]


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
def test_tiny_mobilenet_variants(tiny_bundles, variant):
    import torch

    from edgec.examples.torch_models import tiny_mobilenet

    bundle = tiny_bundles[variant]
    report = bundle.manifest["report"]["tflite"]
    assert report["variant"] == variant and report["converter"].startswith("onnx2tf")
    x = np.random.default_rng(11).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = tiny_mobilenet()(torch.from_numpy(x)).numpy()
    got = _from_model(bundle.outputs[0], _run_bundle(bundle, _to_model(bundle, [x]))[0])
    meta = bundle.inputs[0]
    assert meta["layout"] == "NHWC" and meta["source_layout"] == "NCHW" and meta["shape"] == [1, 32, 32, 3]
    if variant == "fp32":
        assert _rel(got, want) <= 1e-4
    elif variant == "fp16":
        assert _rel(got, want) <= 1e-2
    else:
        assert meta["dtype"] == "int8" and "quantization" in meta  # the rpi4 profile's tflite_io_dtype
        assert _rel(got, want) <= 0.1
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.75
        assert report["calibration_samples"] > 0
        assert bundle.manifest["report"]["accuracy"]["measured"]
    assert api.verify_bundle(bundle.path)["ok"]


def test_tiny_mobilenet_sizes(tiny_bundles):
    sizes = {k: b.model_path.stat().st_size for k, b in tiny_bundles.items()}
    assert sizes["fp16"] < 0.7 * sizes["fp32"]
    # A tiny net: per-channel quantization parameters and metadata weigh a lot; larger nets get ~4x.
    assert sizes["int8"] < 0.7 * sizes["fp32"]


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
def test_keras_cnn_variants(keras_bundles, keras_cnn_file, variant):
    import keras

    bundle = keras_bundles[variant]
    assert bundle.manifest["report"]["tflite"]["converter"] == "tf.lite.TFLiteConverter"
    x = np.random.default_rng(12).standard_normal((3, 16, 16, 3)).astype(np.float32)
    want = keras.models.load_model(keras_cnn_file, compile=False)(x).numpy()
    assert bundle.inputs[0]["layout"] == "NHWC" and bundle.inputs[0]["permutation"] == [0, 1, 2, 3]
    got = _from_model(bundle.outputs[0], _run_bundle(bundle, _to_model(bundle, [x]))[0])
    limit = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}[variant]
    assert _rel(got, want) <= limit
    assert api.verify_bundle(bundle.path)["ok"]


@pytest.mark.parametrize("io_dtype", ["uint8", "float32"])
def test_io_dtype_as_the_profile_says(keras_cnn_file, keras_calibration, tmp_path, io_dtype):
    import keras

    profile = tmp_path / "pi-io.toml"
    profile.write_text(f'base = "rpi4"\nname = "pi-io"\n[quantization]\ntflite_io_dtype = "{io_dtype}"\n')
    bundle = _compile(keras_cnn_file, tmp_path / "b", target=str(profile), quantize="int8",
                      calibration=str(keras_calibration))
    assert [m["dtype"] for m in bundle.inputs + bundle.outputs] == [io_dtype, io_dtype]
    assert ("quantization" in bundle.inputs[0]) == (io_dtype != "float32")
    x = np.random.default_rng(13).standard_normal((3, 16, 16, 3)).astype(np.float32)
    got = _from_model(bundle.outputs[0], _run_bundle(bundle, _to_model(bundle, [x]))[0])
    # Loose: this checks the I/O plumbing (a wrong scale or zero point is off by far more), not int8 accuracy.
    assert _rel(got, keras.models.load_model(keras_cnn_file, compile=False)(x).numpy()) <= 0.25
    assert api.verify_bundle(bundle.path)["ok"]


def test_int8_without_calibration_is_refused(keras_cnn_file, tmp_path):
    from edgec.errors import UsageError

    with pytest.raises(UsageError, match="calibration"):
        _compile(keras_cnn_file, tmp_path / "x", target="rpi4", quantize="int8")
    assert not (tmp_path / "x").exists()


def test_same_inputs_give_a_byte_identical_bundle(keras_cnn_file, keras_calibration, tmp_path):
    """Two fresh processes (the Keras front-end numbers TF graph names per process, so a second compile in one
    process is not the same input)."""
    import subprocess
    import sys

    ids = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "edgec", "compile", str(keras_cnn_file), "-t", "rpi4", "--quantize", "int8",
               "--calibration", str(keras_calibration), "-o", str(tmp_path / name)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ids.append(Bundle(tmp_path / name).bundle_id)
    assert (tmp_path / "a" / "model.tflite").read_bytes() == (tmp_path / "b" / "model.tflite").read_bytes()
    assert ids[0] == ids[1]


def test_format_override_and_manifest(keras_cnn_file, tmp_path):
    bundle = _compile(keras_cnn_file, tmp_path / "onnx", target="rpi4", format="onnx", quantize="none")
    assert bundle.format == "onnx"
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert manifest["runtime"]["name"] == "onnxruntime"


def test_digits_cnn_int8_loses_at_most_one_point(tmp_path):
    import torch

    from edgec.examples.data import digits, write_npz
    from edgec.examples.torch_models import digits_cnn, train_classifier

    (x_train, y_train), (x_test, y_test) = digits("nchw")
    model = train_classifier(digits_cnn(), x_train, y_train, epochs=15)
    source = tmp_path / "digits.pt2"
    program = torch.export.export(model, (torch.from_numpy(x_train[:2]),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, source)
    calib = write_npz(tmp_path / "calib.npz", {"x": x_train[:200]})
    evaluation = write_npz(tmp_path / "eval.npz", {"x": x_test}, labels=y_test)
    bundle = _compile(source, tmp_path / "digits", target="rpi4", quantize="int8", calibration=str(calib),
                      eval_data=str(evaluation))
    with torch.no_grad():
        float_acc = 100 * float(np.mean(model(torch.from_numpy(x_test)).numpy().argmax(1) == y_test))
    got = _run_bundle(bundle, _to_model(bundle, [x_test]))[0]
    int8_acc = 100 * float(np.mean(got.argmax(1) == y_test))
    assert float_acc > 90
    assert float_acc - int8_acc <= 1.0, (float_acc, int8_acc)
    accuracy = bundle.manifest["report"]["accuracy"]
    assert accuracy["metric"] == "top-1 accuracy" and accuracy["drop"] <= 1.0


def test_keras_model_with_two_inputs_and_two_outputs(tmp_path):
    """TFLite orders tensors its own way: the signature map puts every array back under its IR name."""
    import keras

    keras.utils.set_random_seed(1)
    flat = keras.Input((8,), name="flat")
    image = keras.Input((4, 4, 2), name="image")
    joined = keras.layers.Concatenate()([flat, keras.layers.Flatten()(keras.layers.Conv2D(3, 3)(image))])
    first = keras.layers.Dense(3, name="first")(joined)
    second = keras.layers.Dense(5, name="second")(keras.layers.ReLU()(joined))
    model = keras.Model([flat, image], [first, second])
    model.save(tmp_path / "multi.keras")
    bundle = _compile(tmp_path / "multi.keras", tmp_path / "b", target="rpi4", quantize="none")
    assert [m["name"] for m in bundle.inputs] in (["flat", "image"], ["image", "flat"])
    rng = np.random.default_rng(2)
    arrays = {"flat": rng.standard_normal((1, 8)).astype(np.float32),
              "image": rng.standard_normal((1, 4, 4, 2)).astype(np.float32)}
    got = _run_bundle(bundle, [arrays[m["name"]] for m in bundle.inputs])
    want = dict(zip(["first", "second"], (o.numpy() for o in model([arrays["flat"], arrays["image"]]))))
    assert sorted(m["name"] for m in bundle.outputs) == ["first", "second"]
    for meta, array in zip(bundle.outputs, got):
        assert array.shape == want[meta["name"]].shape
        assert _rel(array, want[meta["name"]]) <= 1e-5
    assert api.verify_bundle(bundle.path)["ok"]


def test_keras_source_whose_ir_a_stage_changed_goes_through_onnx2tf(keras_cnn_file, tmp_path):
    """A pruning/compression stage hands the emitter a new IR: that IR ships, NHWC inputs stay NHWC."""
    import keras

    from edgec import ir as edgec_ir
    from edgec.compiler.emit.tflite import emit_tflite
    from edgec.compiler.frontends import lower
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.state import CompileState
    from edgec.targets import load_profile

    source = lower(str(keras_cnn_file))
    changed = edgec_ir.from_proto(edgec_ir.to_proto(source.model))  # stands in for a stage's new model
    name = source.input_names[0]
    x = np.random.default_rng(8).standard_normal((2, 16, 16, 3)).astype(np.float32)
    options = CompileOptions(target="rpi4", format="tflite", quantize="none")
    state = CompileState(options, load_profile("rpi4"), "tflite", {}, float_model=source.model, input_sets=[[x]])
    emitted = emit_tflite(changed, source, tmp_path, state.profile, options, state)
    assert emitted.settings["converter"].startswith("onnx2tf")
    meta = emitted.io["inputs"][0]
    assert meta["name"] == name and meta["layout"] == "NHWC" and meta["permutation"] == [0, 1, 2, 3]
    got = emitted.from_model(emitted.runner(emitted.to_model([x])))[0]
    want = keras.models.load_model(keras_cnn_file, compile=False)(x).numpy()
    assert _rel(got, want) <= 1e-4


def test_savedmodel_source(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.export(str(tmp_path / "saved"), verbose=False)
    bundle = _compile(tmp_path / "saved", tmp_path / "b", target="rpi4", quantize="none")
    assert bundle.manifest["report"]["tflite"]["converter"] == "tf.lite.TFLiteConverter"
    x = np.random.default_rng(9).standard_normal((1, 6)).astype(np.float32)
    assert _rel(_run_bundle(bundle, [x])[0], model(x).numpy()) <= 1e-5
