"""``import edgec.cli`` and ``edgec --help`` stay light: no torch, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_cli_does_not_import_frameworks():
    loaded = _modules_after("import edgec.cli")
    assert "edgec.cli" in loaded
    assert not {"torch", "tensorflow", "keras", "onnx2tf", "tf2onnx"} & loaded


def test_help_and_targets_do_not_import_frameworks():
    loaded = _modules_after("import sys\nfrom edgec.cli import cli\n"
                            "cli.main(['targets', 'list', '--json'], standalone_mode=False)")
    assert not {"torch", "tensorflow"} & loaded


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "edgec", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("compile", "inspect", "verify", "targets"):
        assert command in out
