"""onnxruntime behind the Runtime protocol."""

from __future__ import annotations

import functools

from edgec.errors import BundleError, RuntimeMissingError

__all__ = ["INSTALL_HINT", "OnnxSession", "available", "load", "package", "version"]

INSTALL_HINT = "python3 -m pip install onnxruntime numpy"


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeMissingError(f"onnxruntime is not installed here; install it with: {INSTALL_HINT}") from None
    return onnxruntime


def available() -> bool:
    try:
        _ort()
    except RuntimeMissingError:
        return False
    return True


def version() -> str:
    return _ort().__version__


def package() -> str:
    """The pip package that provides this runtime."""
    return "onnxruntime"


class OnnxSession:
    """One loaded model. ``run`` takes a list of arrays in input order and returns a list in output order."""

    def __init__(self, path, threads: int | None = None, name: str | None = None, spinning: bool = True):
        """``path``: the model file, or its bytes (what a bundle hands over after checking them), then called
        ``name`` in errors. ``spinning=False``: intra-op threads sleep as soon as a run ends instead of spinning
        for the next one (a service between requests; measured with 2 threads on 2 loaded cores, a 32 MB MLP
        behind a socket: 2.1 -> 1.5 ms of CPU a request)."""
        ort = _ort()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors; name the file and its reason
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = name or ("the model" if isinstance(path, bytes) else path)
            raise BundleError(f"{where}: onnxruntime cannot load this model: {first}") from exc
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: list) -> list:
        return self._session.run(None, dict(zip(self.input_names, inputs)))

    def bind(self, inputs: list):
        """A zero-argument call running ``inputs``: what a benchmark's timed loop calls, with nothing rebuilt."""
        return functools.partial(self._session.run, None, dict(zip(self.input_names, inputs)))


def load(path, threads: int | None = None, name: str | None = None, spinning: bool = True) -> OnnxSession:
    return OnnxSession(path, threads, name, spinning)
