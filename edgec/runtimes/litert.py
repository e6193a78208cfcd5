"""LiteRT (TensorFlow Lite) behind the Runtime protocol: ``load(path, threads) -> LiteRTSession``.

The interpreter comes from the first package that imports: ``ai_edge_litert`` (the maintained one),
``tflite_runtime`` (older boards), then ``tensorflow.lite`` (only when TensorFlow is all a device has; it is the
one case where this module imports TensorFlow). XNNPACK stays on: the interpreter's default op resolver applies
it to the float and int8 operators it supports.

Importable on the device: Python 3.9 syntax, no edgec.compiler, torch or TensorFlow at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile

from edgec.errors import BundleError, RuntimeMissingError

__all__ = ["INSTALL_HINT", "LiteRTSession", "available", "load", "package", "version"]

INSTALL_HINT = "python3 -m pip install ai-edge-litert numpy"

# (import name, how to get the Interpreter class from it), in order of preference.
_PROVIDERS = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)
_found: tuple | None = None


def _interpreter_module():
    """(module holding ``Interpreter``, its pip package name), cached."""
    global _found
    if _found is not None:
        return _found
    reasons = []
    for module_name, pip_name in _PROVIDERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            reasons.append(f"{pip_name}: {exc}")
            continue
        # tensorflow.lite exposes Interpreter directly; the others in their interpreter module.
        if hasattr(module, "Interpreter"):
            _found = (module, pip_name)
            return _found
    raise RuntimeMissingError(
        f"no TFLite runtime is installed here (tried ai-edge-litert, tflite-runtime, tensorflow); "
        f"install one with: {INSTALL_HINT}"
    )


def available() -> bool:
    try:
        _interpreter_module()
    except RuntimeMissingError:
        return False
    return True


def package() -> str:
    """The pip package that provides the interpreter here (``ai-edge-litert``, ``tflite-runtime`` or ``tensorflow``)."""
    return _interpreter_module()[1]


def version() -> str:
    module = _interpreter_module()[0]
    top = importlib.import_module(module.__name__.split(".")[0])
    return str(getattr(top, "__version__", "unknown"))


@contextlib.contextmanager
def _without_delegate_notice():
    """Drop the "INFO: Created TensorFlow Lite XNNPACK delegate" line that LiteRT's C++ prints on stderr when it
    applies XNNPACK (it cannot be turned off from Python); anything else it writes there is passed on."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedding application): leave it alone
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not line.startswith(b"INFO: Created TensorFlow Lite XNNPACK delegate")]
            if kept:
                os.write(2, b"".join(kept))


class LiteRTSession:
    """One loaded .tflite model. ``run`` takes arrays in input order and returns arrays in output order."""

    def __init__(self, path, threads: int | None = None, name: str | None = None):
        """``path``: the model file, or its bytes (what a bundle hands over after checking them), then called
        ``name`` in errors."""
        module, pip_name = _interpreter_module()
        source = {"model_content": path} if isinstance(path, bytes) else {"model_path": str(path)}
        self.package = pip_name
        self._where = name or ("the model" if isinstance(path, bytes) else str(path))
        try:
            self._interp = module.Interpreter(**source, num_threads=int(threads) if threads else None)
            with _without_delegate_notice():
                self._interp.allocate_tensors()
        except ImportError as exc:  # tflite-runtime 2.14 imports beside numpy 2 but fails here (_ARRAY_API)
            raise RuntimeMissingError(f"{pip_name} is installed but cannot run here ({exc}); "
                                      f"install the maintained runtime with: {INSTALL_HINT}") from exc
        except (ValueError, RuntimeError) as exc:  # the interpreter's own errors for unreadable models / ops
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = name or ("the model" if isinstance(path, bytes) else path)
            raise BundleError(f"{where}: {pip_name} cannot load this model: {first}") from exc
        self._inputs = self._interp.get_input_details()
        self._outputs = self._interp.get_output_details()
        self.input_names = [d["name"] for d in self._inputs]
        self.output_names = [d["name"] for d in self._outputs]
        self._shapes = [tuple(int(n) for n in d["shape"]) for d in self._inputs]
        # The default op resolver applies XNNPACK; BUILTIN_WITHOUT_DEFAULT_DELEGATES is never used here.
        self.xnnpack = True

    def run(self, inputs: list) -> list:
        interp = self._interp
        if self._batch_of_ones(inputs):
            # A model converted with batch 1 (edgec's TFLite bundles are) fed a batch: resizing it would break
            # reshapes baked for batch 1, so run it sample by sample.
            import numpy as np

            parts = [self.run([a[k:k + 1] for a in inputs]) for k in range(inputs[0].shape[0])]
            return [np.concatenate(outs) for outs in zip(*parts)]
        try:
            if [a.shape for a in inputs] != self._shapes:
                self._resize(inputs)
            for detail, array in zip(self._inputs, inputs):
                interp.set_tensor(detail["index"], array)
            interp.invoke()
        except RuntimeError as exc:  # XNNPACK refusing a shape, a kernel failing: this model cannot run here
            raise self._cannot_run(inputs, exc) from exc
        return [interp.get_tensor(d["index"]) for d in self._outputs]

    def _cannot_run(self, inputs: list, exc: Exception) -> BundleError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join("x".join(str(n) for n in a.shape) for a in inputs)
        return BundleError(f"{self._where}: {self.package} cannot run this model on inputs of shape {shapes}: {first}")

    def _batch_of_ones(self, inputs: list) -> bool:
        """True when every input has a fixed batch of 1 in the model and the arrays carry n > 1 samples."""
        if not inputs or len(inputs) != len(self._inputs):
            return False
        for detail, array in zip(self._inputs, inputs):
            signature = detail.get("shape_signature", detail["shape"])
            if len(signature) == 0 or int(signature[0]) != 1 or array.ndim != len(signature) or array.shape[0] < 2:
                return False
            if tuple(array.shape[1:]) != tuple(int(n) for n in detail["shape"][1:]):
                return False
        return True

    def bind(self, inputs: list):
        """A zero-argument call running ``inputs``: what a benchmark's timed loop calls, shapes settled once."""
        if [a.shape for a in inputs] != self._shapes:
            try:
                self._resize(inputs)
            except RuntimeError as exc:
                raise self._cannot_run(inputs, exc) from exc
        interp, pairs = self._interp, [(d["index"], a) for d, a in zip(self._inputs, inputs)]
        set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
        outputs = [d["index"] for d in self._outputs]

        def call():
            for index, array in pairs:
                set_tensor(index, array)
            invoke()
            return [get_tensor(index) for index in outputs]

        return call

    def _resize(self, inputs: list) -> None:
        """A dynamic dimension: resize every input, then allocate once (allocation clears set tensors)."""
        interp = self._interp
        for detail, array in zip(self._inputs, inputs):
            interp.resize_tensor_input(detail["index"], list(array.shape))
        interp.allocate_tensors()
        self._inputs = interp.get_input_details()
        self._outputs = interp.get_output_details()
        self._shapes = [tuple(int(n) for n in d["shape"]) for d in self._inputs]


def load(path, threads: int | None = None, name: str | None = None, spinning: bool = True) -> LiteRTSession:
    """``spinning`` is accepted for the common protocol; LiteRT's Python API has no such setting."""
    return LiteRTSession(path, threads, name)
