"""The agent zipapp: content-hash name, reproducible bytes, only device-side code, and a light import."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest

from edgec.device_agent import build_zipapp

pytestmark = pytest.mark.unit
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_name_is_the_content_hash_and_rebuilds_identically(tmp_path):
    first = build_zipapp(tmp_path / "a")
    second = build_zipapp(tmp_path / "b")
    data = first.read_bytes()
    assert first.name == f"edgec-agent-{hashlib.sha256(data).hexdigest()[:16]}.pyz"
    assert second.name == first.name and second.read_bytes() == data
    assert build_zipapp(tmp_path / "a") == first  # reused, not rewritten
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.name]  # no temporary left behind


def test_holds_only_device_side_code(tmp_path):
    names = zipfile.ZipFile(build_zipapp(tmp_path)).namelist()
    assert "__main__.py" in names and "edgec/device_agent/cli.py" in names
    assert "edgec/runtimes/litert.py" in names and "edgec/runtimes/onnxruntime.py" in names
    allowed = ("edgec/__init__.py", "edgec/errors.py", "edgec/registry.py", "edgec/bundle.py", "edgec/compare.py",
               "edgec/manifest.py", "edgec/runtimes/", "edgec/device_agent/")
    assert all(n == "__main__.py" or n.startswith(allowed) for n in names), names
    assert not any("compiler" in n or "__pycache__" in n for n in names)


def test_info_from_the_zipapp_reports_its_own_hash(tmp_path):
    agent = build_zipapp(tmp_path)
    done = subprocess.run([sys.executable, str(agent), "info"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["schema_version"] == 1 and info["agent_version"] == agent.name[len("edgec-agent-"):-4]
    assert info["runtimes"]["onnxruntime"] and set(info["runtimes"]) == {"onnxruntime", "litert"}
    assert str(tmp_path) in info["free_disk_bytes"]


def test_agent_version_from_source_matches_the_built_archive(tmp_path):
    """The version edgec expects on a device (from source) is the hash of the file it ships, and the version the
    shipped file reports about itself (from inside the archive, another code path)."""
    from edgec.device_agent import agent_version

    agent = build_zipapp(tmp_path)
    on_disk = hashlib.sha256(agent.read_bytes()).hexdigest()[:16]
    done = subprocess.run([sys.executable, str(agent), "info"], capture_output=True, text=True, cwd=tmp_path)
    assert agent_version() == on_disk == json.loads(done.stdout)["agent_version"]


def test_bad_command_line_is_a_json_usage_error(tmp_path):
    agent = build_zipapp(tmp_path)
    for argv, code in ((["bench", str(tmp_path), "--runs", "0"], 2), (["frobnicate"], 2), (["check", str(tmp_path)], 6)):
        done = subprocess.run([sys.executable, str(agent), *argv], capture_output=True, text=True)
        assert done.returncode == code, (argv, done.stdout, done.stderr)
        error = json.loads(done.stdout)["error"]
        assert error["exit_code"] == code and "\n" not in error["message"]


def test_importing_the_agent_loads_no_heavy_framework():
    code = """
import json, sys
import edgec.device_agent, edgec.device_agent.cli, edgec.device_agent.bench, edgec.device_agent.serve
import edgec.device_agent.power, edgec.device_agent.table, edgec.device_agent.client
import edgec.runtimes.onnxruntime, edgec.runtimes.litert
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras', 'onnx', 'click')
                        or m.startswith('edgec.compiler'))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
