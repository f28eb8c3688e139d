"""The folder tree is the architecture: imports go one way and never in a circle.

Every import of our own modules counts, wherever it stands: module level,
inside a function, or under ``if TYPE_CHECKING:``. Layers, lowest first, and
what each may import (spec/architecture.md):

- shared vocabulary ``errors``, ``media_types``: nothing of ours;
- ``engine``: the vocabulary and itself;
- ``format``: the engine;
- ``edges``: format and engine;
- ``lifecycle``: edges, format and engine;
- ``cli``: everything below, and the public package (``from ommx_experiment import …``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "ommx_experiment"
SRC = Path(__file__).resolve().parents[2] / "src" / PKG
RANK = {"errors": 0, "media_types": 0, "engine": 1, "format": 2, "edges": 3, "lifecycle": 4, "cli": 5}
TOP_LEVEL = {"__init__", "__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of our modules that ``path`` imports (``from pkg import mod`` resolved to the module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PKG:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_belongs_to_a_layer() -> None:
    for module in _graph():
        layer = _layer(module)
        assert layer is None or layer in RANK or layer in TOP_LEVEL, f"{module} is in no layer"


def test_imports_never_go_up_a_layer() -> None:
    upward = []
    for module, targets in _graph().items():
        layer = _layer(module)
        if layer is None or layer in TOP_LEVEL:
            continue  # the package facade and `python -m` may import anything
        for target in targets:
            target_layer = _layer(target)
            if target_layer is None:  # `from ommx_experiment import X`: the public facade
                if layer != "cli":
                    upward.append(f"{module} -> {PKG} (public facade)")
                continue
            if target_layer in TOP_LEVEL or RANK[target_layer] > RANK[layer]:
                upward.append(f"{module} -> {target}")
            elif RANK[target_layer] == RANK[layer] == 0:
                upward.append(f"{module} -> {target} (vocabulary modules import nothing of ours)")
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # the package facade imports its layers lazily and cli imports the facade: not a cycle of layers
    cycles = [c for c in cycles if PKG not in c]
    assert cycles == []


@pytest.mark.parametrize("layer", sorted(set(RANK) - {"errors", "media_types"}))
def test_each_layer_says_what_it_owns_and_may_import(layer: str) -> None:
    doc = ast.get_docstring(ast.parse((SRC / layer / "__init__.py").read_text()))
    assert doc and "May import" in doc, f"{layer}/__init__.py must state what it owns and may import"


def test_checker_sees_a_planted_cycle(tmp_path: Path) -> None:
    """The checker itself can fail: resolve a known relative import shape."""
    graph = _graph()
    assert f"{PKG}.engine.blobstore" in graph[f"{PKG}.engine.registry"]
    assert f"{PKG}.engine.registry" not in graph[f"{PKG}.engine.blobstore"]
