"""Target profiles: built-ins load, strict schema, inheritance, host detection, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgec.errors import TargetError
from edgec.targets import list_profiles, load_profile
from edgec.targets.host import read_cpu_flags

pytestmark = pytest.mark.unit

BUILTIN = ["rpi4", "rpi5", "jetson-orin-nano", "x86-avx2", "x86-avx512-vnni", "android-arm64"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profiles_load_with_every_section(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.cpu.cores > 0 and profile.memory.ram_mb > 0
    assert profile.runtime.preferred in profile.runtime.available
    assert profile.power.active_watts >= profile.power.idle_watts > 0
    assert len(profile.sha256) == 64


def test_board_facts_that_drive_decisions():
    rpi4, rpi5 = load_profile("rpi4"), load_profile("rpi5")
    assert not rpi4.cpu.has("dotprod") and not rpi4.quantization.fp16_arithmetic
    assert rpi5.cpu.has("dotprod") and rpi5.quantization.fp16_arithmetic
    assert rpi4.runtime.format == "tflite"
    assert load_profile("x86-avx2").quantization.reduce_range is True
    assert load_profile("x86-avx512-vnni").quantization.reduce_range is False


def test_list_includes_builtins_and_host():
    names = list_profiles()
    assert set(BUILTIN) <= set(names) and "host" in names


def test_host_is_detected_from_this_machine():
    """Against /proc/cpuinfo read here, not through the detector's own parser."""
    host = load_profile("host")
    fields = [line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines()]
    model = next((v.strip() for k, _, v in fields if k.strip() == "model name"), None)
    flags = set(next((v for k, _, v in fields if k.strip() in ("flags", "Features")), "").split())
    if model:
        assert host.cpu.model == model
    for spellings, feature in ((["avx2"], "avx2"), (["fma"], "fma"), (["avx512f"], "avx512f"),
                               (["avx512_vnni", "avx512vnni"], "avx512_vnni"), (["asimd"], "asimd"),
                               (["asimddp"], "dotprod")):
        assert (feature in host.cpu.isa_features) == bool(flags.intersection(spellings)), (feature, sorted(flags))
    assert host.cpu.cores == len(os.sched_getaffinity(0))
    assert host.base in BUILTIN
    assert host.memory.ram_mb > 256


@pytest.mark.parametrize("text, features", [
    ("Processor\t: ARMv7\nmodel name\t: Cortex-A72\nFeatures\t: fp asimd evtstrm crc32 cpuid\n",
     {"asimd", "neon", "crc32"}),
    ("model name\t: Cortex-A76\nFeatures\t: fp asimd asimdhp asimddp crc32\n",
     {"asimd", "neon", "fp16", "dotprod", "crc32"}),
    ("model name\t: Xeon\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni\n",
     {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}),
])
def test_cpu_flags_map_to_profile_features(tmp_path, text, features):
    (tmp_path / "cpuinfo").write_text(text)
    model, found = read_cpu_flags(str(tmp_path / "cpuinfo"))
    assert found == features and model == text.split("model name\t: ")[1].split("\n")[0]


def _write(tmp_path, text, name="board.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_user_profile_extends_a_builtin(tmp_path):
    path = _write(tmp_path, 'name = "myboard"\nbase = "rpi4"\n[memory]\nram_mb = 1024\n')
    profile = load_profile(str(path))
    assert profile.memory.ram_mb == 1024
    assert profile.memory.storage_mb == load_profile("rpi4").memory.storage_mb
    assert profile.cpu.model == "Cortex-A72" and profile.base == "rpi4"


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, 'base = "rpi4"\n[cpu]\ncoress = 4\n')
    with pytest.raises(TargetError, match=r"board\.toml.*cpu\.coress"):
        load_profile(str(path))


def test_wrong_type_names_file_and_key(tmp_path):
    path = _write(tmp_path, 'base = "rpi4"\n[memory]\nram_mb = "lots"\n')
    with pytest.raises(TargetError, match=r"board\.toml.*memory\.ram_mb.*integer"):
        load_profile(str(path))


def test_bad_enum_value_lists_choices(tmp_path):
    path = _write(tmp_path, 'base = "rpi4"\n[runtime]\nformat = "coreml"\n')
    with pytest.raises(TargetError, match=r"runtime\.format.*coreml.*onnx"):
        load_profile(str(path))


def test_invalid_toml_and_base_loop(tmp_path):
    with pytest.raises(TargetError, match="not valid TOML"):
        load_profile(str(_write(tmp_path, "name = [")))
    a = _write(tmp_path, f'base = "{tmp_path / "b.toml"}"\n', "a.toml")
    _write(tmp_path, f'base = "{a}"\n', "b.toml")
    with pytest.raises(TargetError, match="loops"):
        load_profile(str(a))


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match=r"unknown target 'nope'.*rpi4"):
        load_profile("nope")


def test_missing_required_section(tmp_path):
    path = _write(tmp_path, 'name = "x"\ndescription = "no cpu"\n')
    with pytest.raises(TargetError, match="missing key 'cpu'"):
        load_profile(str(path))
