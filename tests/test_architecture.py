"""The package's import graph stays a clean stack (ARCHITECTURE.md): no cycles, kit imports at
module top, no private names across modules, heavy optional dependencies only via
`alignment.optional`. Read from the source with `ast`, so a violation fails here, not in review."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
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


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of `g` closes, as [a, b, ..., a]."""
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

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
    return cycles


def test_no_import_cycles():
    assert find_cycles(graph()) == []


def test_cycle_detection_finds_a_cycle():
    """The check above on graphs with known cycles (so it cannot pass vacuously)."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def documented_floors() -> dict[str, int]:
    """ARCHITECTURE.md's table: | floor | `module`, `module` | what |."""
    floors = {}
    text = (PKG.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            for name in re.findall(r"`([a-z_0-9]+)`", cells[1]):
                floors[name] = int(cells[0])
    return floors


def test_every_import_points_to_a_lower_floor_of_architecture_md():
    floors, g = documented_floors(), graph()
    modules = set(g) - {"__init__", "__main__"}
    assert modules - set(floors) == set(), "modules missing from ARCHITECTURE.md"
    assert set(floors) - modules == set(), "ARCHITECTURE.md lists modules that do not exist"
    upward = [f"{m} (floor {floors[m]}) imports {t} (floor {floors[t]})" for m in modules for t in g[m]
              if t in floors and floors[t] >= floors[m]]
    assert upward == []


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


def test_importing_the_cli_loads_no_heavy_optional_dependency():
    """What `python -m alignment --help` (and every rank of a launch) pays at start: no peft,
    trl, wandb, ... until a run needs them (transformers' Trainer would pull in peft and accelerate)."""
    code = "import sys, alignment.cli; print(sorted(m for m in sys.argv[1:] if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code, *HEAVY, "transformers.trainer"], capture_output=True,
                         text=True, check=True, cwd=PKG.parent).stdout.strip()
    assert out == "[]"
