"""Send third-party console output (TensorFlow, torch.onnx, onnx2tf, onnxslim) to a log file.

Those libraries print from C++ and Python alike, so the redirection is at the file-descriptor level.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

__all__ = ["captured_output"]


@contextlib.contextmanager
def captured_output(log_path: str | os.PathLike, enabled: bool = True):
    """Redirect fds 1 and 2 into ``log_path`` (appending) for the duration of the block."""
    if not enabled:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
