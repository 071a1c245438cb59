"""The import layers, read from the source with `ast` (nothing is imported): errors at the bottom, then
datamodules, then tasks, then the runner; no project import inside a function to dodge a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("datamodules", "tasks", "visionlab", "benchmarks")


def imports(path: Path) -> list[tuple[str, bool]]:
    """Each module `path` imports and whether the import is inside a function (the project uses no
    relative imports; a relative one is refused so that it cannot slip past these checks)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for inner in ast.walk(node)
        if inner is not node
    }
    found = []
    for node in ast.walk(tree):
        inside = id(node) in in_function
        if isinstance(node, ast.Import):
            found += [(alias.name, inside) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: a relative import"
            # `from visionlab import runner` imports visionlab.runner
            found += [(str(node.module), inside), *((f"{node.module}.{a.name}", inside) for a in node.names)]
    return found


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _is(module: str, name: str) -> bool:
    return module == name or module.startswith(f"{name}.")


@pytest.mark.parametrize("folder", ["datamodules", "tasks"])
def test_lower_layers_do_not_import_upper_ones(folder: str) -> None:
    forbidden = ("tasks", "visionlab.runner") if folder == "datamodules" else ("visionlab.runner",)
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _sources(folder)
        for module, _ in imports(path)
        if any(_is(module, name) for name in forbidden)
    ]
    assert not wrong


def test_errors_import_nothing_of_the_project() -> None:
    wrong = [m for m, _ in imports(ROOT / "visionlab" / "errors.py") if any(_is(m, p) for p in PROJECT)]
    assert not wrong


@pytest.mark.parametrize("folder", ["datamodules", "tasks"])
def test_no_project_import_inside_a_function(folder: str) -> None:
    """Lazy imports there are of heavy or optional packages only (scipy.io, rich)."""
    wrong = [
        f"{path.relative_to(ROOT)} imports {module} inside a function"
        for path in _sources(folder)
        for module, inside in imports(path)
        if inside and any(_is(module, p) for p in PROJECT)
    ]
    assert not wrong


def test_the_checks_see_a_wrong_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("import visionlab.errors\n\n\ndef f():\n    from visionlab import runner\n")
    assert {("visionlab.errors", False), ("visionlab.runner", True)} <= set(imports(source))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_project_imports_have_no_cycle() -> None:
    """Module-level imports between the project's modules form no cycle (a package counts as its
    `__init__`; `from pkg import name` counts as importing pkg.name when that is a module)."""
    paths = [p for folder in PROJECT for p in _sources(folder)]
    modules = {_module_name(p): p for p in paths}
    def edges(name: str, path: Path) -> set[str]:
        found = {m for m, inside in imports(path) if not inside and m in modules and m != name}
        # `from pkg import sub` of a module under pkg needs pkg only as the namespace Python is
        # already initialising: not an edge to pkg/__init__
        return {m for m in found if not name.startswith(f"{m}.")}

    graph = {name: edges(name, path) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*trail, name, target]
            if target not in state and (cycle := visit(target, [*trail, name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle)
