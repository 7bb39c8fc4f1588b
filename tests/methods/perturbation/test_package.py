"""The perturbation subpackage: its modules import each other without a cycle, and the
methods keep their registered names."""

from __future__ import annotations

import ast
from pathlib import Path

import mindlens
from mindlens.methods import perturbation

PACKAGE = Path(perturbation.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Module -> sibling modules it imports (``from .x import ...``, ``from . import x``)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= ({node.module.split(".")[0]} if node.module else
                         {alias.name for alias in node.names})
        graph[path.stem] = deps - {"__init__"}
    return graph


def test_no_import_cycle_between_the_modules():
    graph = _imports()
    assert graph["incremental_ops"] >= {"patched"} and "incremental" not in \
        graph["incremental_ops"]

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    cycles = [m for m in graph if m != "__init__" and m in reachable(m)]
    assert cycles == []


def test_registered_names_and_order_unchanged():
    names = mindlens.methods.names()
    assert names.index("occlusion") + 1 == names.index("area_occlusion")
    assert mindlens.methods.get("occlusion") is perturbation.Occlusion
    assert mindlens.methods.get("area_occlusion") is perturbation.AreaOcclusion
