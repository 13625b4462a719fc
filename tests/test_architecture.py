"""The package's import graph stays a clean stack (ARCHITECTURE.md): no cycles, kit imports at
module top, no private names across modules, heavy optional dependencies only via
`alignment.optional`. Read from the source with `ast`, so a violation fails here, not in review."""
from __future__ import annotations

import ast
from pathlib import Path

from alignment.optional import HEAVY

PKG = Path(__file__).resolve().parents[1] / "alignment"


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PKG.glob("*.py"))}


def _kit_imports(tree: ast.Module):
    """(node, imported module, names, at module top?) for every `from . import` / `from .x import`."""
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [a.name for a in node.names]
            targets = [node.module] if node.module else names
            for t in targets:
                yield node, t, (names if node.module else []), id(node) in top


def graph() -> dict[str, set[str]]:
    return {m: {t for _, t, _, _ in _kit_imports(tree)} for m, tree in _modules().items()}


def test_kit_imports_sit_at_module_top():
    inner = [f"{m}.py:{node.lineno} imports .{t}" for m, tree in _modules().items()
             for node, t, _, at_top in _kit_imports(tree) if not at_top]
    assert inner == []


def test_no_import_cycles():
    g, state, cycles = graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(g.get(m, ())):
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_cycle_detection_finds_a_cycle():
    """The check above on a graph with a known cycle (so it cannot pass vacuously)."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    seen, found = set(), []

    def visit(m, path):
        for t in g[m]:
            if t in path:
                found.append(path[path.index(t):] + [t])
            elif t not in seen:
                seen.add(t)
                visit(t, path + [t])

    visit("a", ["a"])
    assert found == [["a", "b", "c", "a"]]


def test_no_private_names_imported_across_modules():
    private = [f"{m}.py:{node.lineno} imports {t}.{n}" for m, tree in _modules().items()
               for node, t, names, _ in _kit_imports(tree) for n in names if n.startswith("_")]
    assert private == []


def test_heavy_optional_dependencies_only_through_optional():
    bad = []
    for m, tree in _modules().items():
        if m == "optional":
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            bad += [f"{m}.py:{node.lineno} imports {n}" for n in names if n.split(".")[0] in HEAVY]
    assert bad == []
