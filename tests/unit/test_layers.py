"""The import rules of DESIGN.md (principle 10), checked on the source: layers only point down, no package cycles,
and ``import edgec.cli`` stays light. A static AST scan of every module under ``edgec/``, imports inside functions
included (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "edgec"
HEAVY = ("torch", "tensorflow", "onnxruntime", "paramiko", "matplotlib", "ray")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``edgec.*`` module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
    return {name for name in found if name == "edgec" or name.startswith("edgec.")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _package(module: str) -> str:
    """The layer a module belongs to: ``edgec.deploy.ssh`` -> ``deploy``, ``edgec.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if (len(parts) > 1 and not parts[1].startswith("__")) or parts[1:] == ["__main__"] else "edgec"


# DESIGN.md principle 10, top to bottom: a package imports only from its own rank or below.
RANKS = {
    "__main__": 6, "cli": 6, "commands": 6,
    "api": 5, "cluster": 5,  # cluster drives api (compile) on its nodes; api never imports cluster
    "report": 4, "deploy": 4,
    "compiler": 3, "examples": 3,
    "targets": 2,
    "device_agent": 1, "runtimes": 1, "bundle": 1, "ir": 1,
    "edgec": 0, "errors": 0, "compare": 0, "manifest": 0, "settings": 0, "registry": 0, "source_spec": 0, "_capture": 0, "_progress": 0,
}


def _within(module: str, *packages: str) -> bool:
    return any(module == f"edgec.{p}" or module.startswith(f"edgec.{p}.") for p in packages)


def _violations(graph: dict[str, set[str]], importers, imported) -> list[str]:
    return sorted(f"{module} imports {name}" for module, names in graph.items() if importers(module)
                  for name in names if imported(name))


def test_nothing_below_the_command_line_imports_commands(graph):
    bad = _violations(graph, lambda m: not _within(m, "commands", "cli"), lambda n: _within(n, "commands"))
    assert not bad, "edgec.commands is the CLI skin; move what these need into edgec.api or below:\n" + \
        "\n".join(bad)


# What a command may import besides edgec.api: the cluster driver (api's peer), the error tree, settings,
# terminal helpers, and the agent's own result formatting/schema (what the device prints, the host prints too).
COMMANDS_MAY_IMPORT = ("api", "cluster", "commands", "errors", "settings", "registry", "_progress", "compare",
                       "device_agent")


def test_commands_reach_the_library_only_through_the_api(graph):
    """deploy, compiler, targets, report, bundle...: a command calls ``edgec.api`` for them."""
    bad = _violations(graph, lambda m: _within(m, "commands"),
                      lambda n: n not in ("edgec", "edgec.__version__") and not _within(n, *COMMANDS_MAY_IMPORT))
    assert not bad, "a command imports library code directly; route it through edgec.api:\n" + "\n".join(bad)


def test_targets_and_compiler_never_import_deploy(graph):
    bad = _violations(graph, lambda m: _within(m, "targets", "compiler"), lambda n: _within(n, "deploy"))
    assert not bad, "targets/compiler sit below deploy (hand them a runner instead):\n" + "\n".join(bad)


def test_the_device_agent_imports_nothing_of_the_host(graph):
    host_side = ("compiler", "deploy", "api", "commands", "cli", "report", "targets")
    bad = _violations(graph, lambda m: _within(m, "device_agent", "runtimes"), lambda n: _within(n, *host_side))
    assert not bad, "\n".join(bad)


def test_layers_only_point_down(graph):
    unranked = sorted({_package(m) for m in graph} - set(RANKS))
    assert not unranked, f"new top-level modules/packages need a place in RANKS (and DESIGN.md): {unranked}"
    bad = sorted(f"{module} ({_package(module)}) imports {name} ({_package(name)})"
                 for module, names in graph.items() for name in names
                 if RANKS[_package(name)] > RANKS[_package(module)])
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_no_import_cycles_between_packages(graph):
    edges: dict[str, set[str]] = {}
    for module, names in graph.items():
        if module == "edgec":  # the package's lazy re-exports of the API, not a layer
            continue
        edges.setdefault(_package(module), set()).update(
            _package(n) for n in names if n != "edgec" and _package(n) != _package(module))
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt):], node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "package import cycles:\n" + "\n".join(cycles)


def _test_module_imports(path: Path) -> list[str]:
    """The ``test_*`` modules ``path`` imports (``from test_x import``, ``tests.unit.test_x``, ``from .test_x``)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [node.module or ""] + [alias.name for alias in node.names if not node.module]
    return sorted(name for name in names if name and name.split(".")[-1].startswith("test_"))


def test_no_test_module_imports_another():
    """Shared test helpers live in tests/support/ (or a conftest/testbed module): a test module importing another
    runs or skips with it, and its fixtures register twice."""
    tests = PACKAGE.parent / "tests"
    bad = [f"{path.relative_to(tests)} imports {name}" for path in sorted(tests.rglob("*.py"))
           for name in _test_module_imports(path)]
    assert not bad, "move what these share into tests/support/:\n" + "\n".join(bad)


def test_the_test_module_scan_sees_imports_of_test_modules(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("from test_report_results import Tables\nimport tests.unit.test_x as x\n"
                      "from . import test_y\nfrom tests.support.html_tables import Tables\n")
    assert _test_module_imports(sample) == ["test_report_results", "test_y", "tests.unit.test_x"]


def test_the_scan_sees_real_imports(graph):
    """Guards the guards: the scan finds imports that exist, lazy ones included."""
    assert "edgec.api" in graph["edgec.commands.bench"] or "edgec.api" in {
        n.rsplit(".", 1)[0] for n in graph["edgec.commands.bench"]} | graph["edgec.commands.bench"]
    assert any(_within(n, "deploy") for n in graph["edgec.api._devices"])
    assert any(_within(n, "device_agent") for n in graph["edgec.targets.calibrate"])


def test_import_cli_loads_no_heavy_library():
    code = "import edgec.cli, sys; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "edgec.cli" in loaded
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


def test_the_api_loads_no_heavy_library_until_used():
    """``import edgec`` re-exports the API lazily; the API itself imports paramiko only for a remote device."""
    code = ("import edgec, sys; edgec.compile, edgec.bench, edgec.EdgecError; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "edgec.api" in loaded
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


def test_the_package_re_exports_the_whole_api_and_every_error():
    import edgec
    from edgec import api, errors

    assert set(api.__all__) | set(errors.__all__) <= set(edgec.__all__)
    assert edgec.bench is api.bench and edgec.EdgecError is errors.EdgecError
