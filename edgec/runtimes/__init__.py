"""Runtimes behind one protocol: ``load(model_path, threads) -> Session``; ``Session.run(feeds) -> outputs``.

Importable on the device: these modules never import edgec.compiler, torch or TensorFlow.
"""

from __future__ import annotations

from edgec.errors import UsageError
from edgec.registry import Registry

__all__ = ["RUNTIMES", "load_runtime", "runtime_for_format"]

# name -> module implementing ``available()``, ``version()``, ``load(path, threads, name=None, spinning=True)``
RUNTIMES = Registry("runtime")
RUNTIMES.add("onnxruntime", "edgec.runtimes.onnxruntime")
RUNTIMES.add("litert", "edgec.runtimes.litert")

_FORMAT_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert"}


def runtime_for_format(fmt: str) -> str:
    try:
        return _FORMAT_RUNTIME[fmt]
    except KeyError:
        raise UsageError(f"no runtime runs format {fmt!r}; known formats: {', '.join(sorted(_FORMAT_RUNTIME))}") from None


def load_runtime(name: str):
    """The runtime module called ``name``."""
    return RUNTIMES.get(name)
