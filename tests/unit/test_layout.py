"""The house keeps its shape: rooms that say who owns what, modules of one job, no import cycle, one error base.

Read from the source with ``ast`` (nothing is imported but what the error
check needs), so every import counts: those at the top, those inside
functions, and those under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from pipeline.errors import ActionPipeError
from tests.conftest import REPO_ROOT

PACKAGES = ("pipeline", "engines", "tools")
MAX_MODULE_LINES = 500
MAX_TOP_LEVEL_MODULES = 12


def module_files() -> dict[str, Path]:
    """Every module of ours by dotted name (a package by its ``__init__``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that ``name`` imports, wherever in the file the import stands."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from a.b import name`: the module is a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_module_in_pipeline_is_over_500_lines():
    long = {str(p.relative_to(REPO_ROOT)): n for p in (REPO_ROOT / "pipeline").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_pipeline_top_level_holds_at_most_12_modules_the_rest_live_in_rooms():
    top = sorted(p.name for p in (REPO_ROOT / "pipeline").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_import_cycle_even_inside_functions_or_under_type_checking(graph):
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_engines_take_nothing_from_pipeline_but_the_error_base(graph):
    reaches = {f"{name} -> {target}" for name, targets in graph.items() if name.startswith("engines")
               for target in targets if target.startswith("pipeline") and target != "pipeline.errors"}
    assert reaches == set()


def test_stages_never_import_the_supervisor_or_the_web_servers(graph):
    """A stage process imports what its stage uses: the supervisor's side stays out of it."""
    reaches = {f"{name} -> {target}" for name, targets in graph.items() if name.startswith("pipeline.stages")
               for target in targets if target.startswith(("pipeline.supervision", "pipeline.web", "pipeline.cli",
                                                            "pipeline.api"))}
    assert reaches == set()


@pytest.mark.parametrize("package", PACKAGES)
def test_every_error_we_define_derives_from_the_one_base(package):
    orphans = []
    for name, path in module_files().items():
        if not name.startswith(package):
            continue
        defined = [node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)]
        if not defined:
            continue  # nothing to check (and a module run by another Python, such as the RTSP camera, stays unimported)
        module = importlib.import_module(name)
        for class_name in defined:
            cls = getattr(module, class_name, None)
            if inspect.isclass(cls) and issubclass(cls, BaseException) and not issubclass(cls, ActionPipeError):
                orphans.append(f"{name}.{class_name}")
    assert orphans == []


def test_every_name_imported_from_a_module_of_ours_is_there():
    """Imports inside functions run only when their function does: a name moved away breaks them late,
    in a stage process or a tool. Each is checked here, against the module it names."""
    modules = module_files()
    missing = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in modules:
                continue
            target = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(target, alias.name) and f"{node.module}.{alias.name}" not in modules:
                    missing.append(f"{name}: from {node.module} import {alias.name}")
    assert missing == []
