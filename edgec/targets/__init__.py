"""Target profiles: built-in TOML files, the user's own (``~/.edgec/targets``) and ``host`` detection."""

from __future__ import annotations

import os
from pathlib import Path

from edgec.errors import TargetError
from edgec.settings import HOST_PROFILE, edgec_home
from edgec.targets.profile import TargetProfile, profile_from_dict

__all__ = ["TargetProfile", "list_profiles", "load_profile", "power_model", "user_targets_dir"]

PROFILES_DIR = Path(__file__).parent / "profiles"
HOST = HOST_PROFILE


def user_targets_dir() -> Path:
    return edgec_home() / "targets"


def _toml_load(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise TargetError(f"{path}: cannot read profile ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: not valid TOML ({exc})") from None


def _builtin_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _user_names() -> list[str]:
    folder = user_targets_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def list_profiles() -> list[str]:
    """Every name ``load_profile`` accepts: built-ins, ``host`` and the user's own."""
    return sorted({*_builtin_names(), HOST, *_user_names()})


def _resolve(name_or_path: str) -> Path | None:
    candidate = Path(name_or_path)
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise TargetError(f"{candidate}: profile file not found")
        return candidate
    user = user_targets_dir() / f"{name_or_path}.toml"
    if user.is_file():
        return user
    builtin = PROFILES_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    return None


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "measured":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_data(name_or_path: str, seen: tuple[str, ...]) -> tuple[dict, str]:
    if name_or_path in seen:
        raise TargetError(f"profile {name_or_path!r}: base chain loops ({' -> '.join((*seen, name_or_path))})")
    if name_or_path == HOST and _resolve(HOST) is None:
        from edgec.targets.host import detect_host

        data, path = detect_host(), Path("host (detected)")
    else:
        path = _resolve(name_or_path)
        if path is None:
            raise TargetError(f"unknown target {name_or_path!r}; known targets: {', '.join(list_profiles())} "
                              "(or give a path to a .toml profile)")
        data = _toml_load(path)
    base = data.get("base")
    if base:
        if not isinstance(base, str):
            raise TargetError(f"{path}: base: expected a profile name or path, got {base!r}")
        if not os.path.isabs(base) and (base.endswith(".toml") or os.sep in base):
            base = str(path.parent / base)
        base_data, _ = _load_data(base, (*seen, name_or_path))
        base_data.pop("name", None)
        base_description = base_data.pop("description", "")
        data = _merge(base_data, data)
        data.setdefault("description", f"extends {base}: {base_description}")
    return data, str(path)


def load_profile(name_or_path: str) -> TargetProfile:
    """Load a profile by built-in name, user name (``~/.edgec/targets/NAME.toml``), ``host`` or file path."""
    data, source = _load_data(str(name_or_path), ())
    data.setdefault("name", Path(str(name_or_path)).stem)
    return profile_from_dict(data, source)


def power_model(name_or_path: str) -> tuple[float, float] | None:
    """(idle_watts, active_watts) of a profile's power model, or None when it has none."""
    power = load_profile(name_or_path).power
    return (power.idle_watts, power.active_watts) if power.active_watts > 0 else None
