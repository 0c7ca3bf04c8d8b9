"""The package's layout holds: small modules, no import circle, no private name shared across
modules, every public import path kept, and every public class in the generated reference."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import json
import pkgutil
import sys
from pathlib import Path

import pytest

import airflow_provider_tts

PACKAGE = Path(airflow_provider_tts.__file__).parent
ROOT = PACKAGE.parent
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Every module of the package outside the emulator, by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "emulator" in rel.parts:
            continue
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        found[".".join(parts)] = path
    return found


def _module_level_imports(name: str, path: Path) -> list[ast.ImportFrom | ast.Import]:
    """Imports run when the module is imported: top level and plain ``if``/``try`` blocks, never
    ``if TYPE_CHECKING:`` and never inside a function."""
    found: list[ast.ImportFrom | ast.Import] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)

    walk(ast.parse(path.read_text()).body)
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_module_is_over_500_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_circle() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _module_level_imports(name, path):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            source = _absolute(name, node, path.name == "__init__.py")
            targets.add(source)
            targets.update(f"{source}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                # A package importing its own submodules is how a package exposes them: not a circle.
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in itertools.pairwise(cycle)):
                    pytest.fail("import circle: " + " -> ".join(cycle))
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_private_name_is_imported_from_another_module() -> None:
    shared = []
    for name, path in _modules().items():
        for node in _module_level_imports(name, path):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(name, node, path.name == "__init__.py")
                if source.startswith("airflow_provider_tts"):
                    shared += [
                        f"{name}: {alias.name} from {source}"
                        for alias in node.names
                        if alias.name.startswith("_") and not alias.name.startswith("__")
                    ]
    assert not shared, shared


def test_every_public_name_keeps_its_import_path() -> None:
    """tests/public_names.json: every public module-level name of 0.1 and of the 0.2 development
    line before the modules were split, by the module it was imported from."""
    before: dict[str, list[str]] = json.loads((Path(__file__).parent / "public_names.json").read_text())
    missing = []
    for module_name, names in before.items():
        module = importlib.import_module(module_name)
        missing += [f"{module_name}.{n}" for n in names if not hasattr(module, n)]
    assert not missing, missing


def test_the_documented_import_lines_work() -> None:
    from airflow_provider_tts.hooks.tts import TtsHook, TtsTaskStatus  # noqa: F401
    from airflow_provider_tts.operators.tts import (  # noqa: F401
        CambTtsStreamToStorageOperator,
        TtsAudioToStorageOperator,
        TtsSubmitOperator,
    )
    from airflow_provider_tts.sensors.tts import TtsTaskSensor  # noqa: F401
    from airflow_provider_tts.triggers.tts import TtsTaskTrigger  # noqa: F401


def _split(spec: str) -> tuple[str, str]:
    module, _, name = spec.partition(":")
    return module, name


def test_every_public_class_is_in_the_reference() -> None:
    """Operators, sensors, triggers and hooks a DAG author can use are all documented."""
    from airflow.sdk import BaseOperator
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_tts.compat import BaseHook  # airflow.sdk has it from 3.1 on

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(ROOT / "tools"))
    documented = {
        getattr(importlib.import_module(spec.split(":")[0]), spec.split(":")[1]) for spec in gen_reference.PUBLIC
    }
    public = set()
    for info in pkgutil.walk_packages([str(PACKAGE)], "airflow_provider_tts."):
        if ".emulator" in info.name:
            continue
        module = importlib.import_module(info.name)
        for obj_name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and not obj_name.startswith("_")
                and obj.__module__.startswith("airflow_provider_tts")
                and obj.__module__ != "airflow_provider_tts.compat"  # Airflow's own names, shimmed
                and issubclass(obj, BaseOperator | BaseTrigger | BaseHook)
                and not obj.__name__.endswith(("Phase", "Mixin", "Output", "ForTestRuns"))
            ):
                public.add(obj)
    undocumented = sorted(f"{c.__module__}.{c.__name__}" for c in public - documented)
    assert not undocumented, f"public classes missing from tools/gen_reference.py PUBLIC: {undocumented}"
