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
    assert not {"torch", "tensorflow", "keras", "onnx2tf", "tf2onnx", "ray"} & loaded


def test_commands_without_a_cluster_do_not_import_ray():
    """The cluster path is opt-in: parsing farm and sweep commands without --cluster never imports Ray."""
    loaded = _modules_after("import os\nos.environ.pop('EDGEC_CLUSTER', None)\nfrom edgec.cli import cli\n"
                            "for argv in (['farm', 'bench', '--help'], ['sweep', '--help'], ['farm', 'list', "
                            "'--inventory', '/nonexistent.toml']):\n"
                            "    try:\n        cli.main(argv, standalone_mode=False)\n"
                            "    except BaseException:\n        pass\n"
                            "import edgec.cluster, edgec.cluster.farm, edgec.api._sweep")
    assert "edgec.cluster.farm" in loaded
    assert "ray" not in loaded


def test_help_and_targets_do_not_import_frameworks():
    loaded = _modules_after("import sys\nfrom edgec.cli import cli\n"
                            "cli.main(['targets', 'list', '--json'], standalone_mode=False)")
    assert not {"torch", "tensorflow"} & loaded


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "edgec", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("compile", "inspect", "verify", "targets"):
        assert command in out
