"""The package's import graph stays a clean stack (ARCHITECTURE.md): no cycles, kit imports at
module top, no private names across modules, heavy optional dependencies only via
`alignment.base.optional`. Read from the source with `ast`, so a violation fails here, not in review."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from alignment.base.optional import HEAVY

PKG = Path(__file__).resolve().parents[1] / "alignment"


def _name(path: Path) -> str:
    """A module's name under alignment: `config`, `steps.losses`, `run` (a folder's __init__)."""
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


MODULES = {_name(p) for p in PKG.rglob("*.py")}  # every module of the package, by its name under alignment


def _modules() -> dict[str, ast.Module]:
    return {_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PKG.rglob("*.py"))}


def _resolve(module: str, level: int, target: str | None) -> str:
    """The module a relative import in `module` names: `from ..study import stats` in steps.evaluate
    -> study (then its names), `from .decode import` in steps.sampling -> steps.decode."""
    package = module.split(".")[:-1] if not (PKG / module.replace(".", "/")).is_dir() else module.split(".")
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _kit_imports(tree: ast.Module, module: str):
    """(node, imported module, names, at module top?) for every relative import (`from .x import`,
    `from ..folder import x`): a name that is a module of the package counts as that module."""
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            names = [a.name for a in node.names]
            pkg = _resolve(module, node.level, node.module)
            subs = [f"{pkg}.{n}".lstrip(".") for n in names]
            if all(s in MODULES for s in subs):
                for t in subs:
                    yield node, t, [], id(node) in top
            else:
                yield node, pkg, names, id(node) in top


def graph() -> dict[str, set[str]]:
    return {m: {t for _, t, _, _ in _kit_imports(tree, m)} for m, tree in _modules().items()}


def test_kit_imports_sit_at_module_top():
    inner = [f"{m}:{node.lineno} imports {t}" for m, tree in _modules().items()
             for node, t, _, at_top in _kit_imports(tree, m) if not at_top]
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
    """ARCHITECTURE.md's table: | floor | `folder/module`, `module` | what |."""
    floors = {}
    text = (PKG.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            for name in re.findall(r"`([a-z_0-9/]+)`", cells[1]):
                floors[name.replace("/", ".")] = int(cells[0])
    return floors


def test_every_import_points_to_a_lower_floor_of_architecture_md():
    floors, g = documented_floors(), graph()
    modules = set(g) - {"__init__", "__main__"} - set(FOLDERS)
    assert modules - set(floors) == set(), "modules missing from ARCHITECTURE.md"
    assert set(floors) - modules == set(), "ARCHITECTURE.md lists modules that do not exist"
    upward = [f"{m} (floor {floors[m]}) imports {t} (floor {floors[t]})" for m in modules for t in g[m]
              if t in floors and floors[t] >= floors[m]]
    assert upward == []


# What each folder's modules may import (the folders' own __init__ docstrings say the same in words).
FOLDERS = {
    "base": {"base", "presets"},
    "assets": {"assets", "base", "config", "presets"},
    "study": {"study", "base", "presets"},
    "steps": {"steps", "assets", "study", "base", "config", "presets"},
    "run": {"run", "steps", "assets", "study", "base", "config", "presets"},
}


# What the settings beside the folders may import: the registries their choices are checked against.
TOP = {"config": {"presets", "sources", "steps.losses", "steps.pairs", "steps.samplers"}, "presets": set(), "sources": set()}


def folder_breaches(g: dict[str, set[str]]) -> list[str]:
    """Imports from a folder's module into a folder (or top-level module) it may not import, and imports of
    `config` or `presets` beyond `TOP`."""
    return [f"{m} imports {t}" for m in sorted(g) for t in sorted(g[m])
            if (m.split(".")[0] in FOLDERS and "." in m and t.split(".")[0] not in FOLDERS[m.split(".")[0]])
            or (m in TOP and t not in TOP[m])]


def test_folders_import_only_what_their_rule_allows():
    assert folder_breaches(graph()) == []
    assert folder_breaches({"study.stats": {"steps.train"}, "steps.train": {"study.stats"}}) == [
        "study.stats imports steps.train"]
    assert folder_breaches({"config": {"steps.losses", "steps.train"}}) == ["config imports steps.train"]


def test_every_folder_says_what_lives_there_and_what_it_may_import():
    for folder in FOLDERS:
        doc = ast.get_docstring(ast.parse((PKG / folder / "__init__.py").read_text(encoding="utf-8"))) or ""
        allowed = FOLDERS[folder] - {folder}
        assert "import" in doc.lower() and len(doc.splitlines()) <= 4, folder
        assert [a for a in sorted(allowed) if f"`{a}`" not in doc] == [], folder


def test_no_private_names_imported_across_modules():
    private = [f"{m}:{node.lineno} imports {t}.{n}" for m, tree in _modules().items()
               for node, t, names, _ in _kit_imports(tree, m) for n in names if n.startswith("_")]
    assert private == []


def test_heavy_optional_dependencies_only_through_optional():
    bad = []
    for m, tree in _modules().items():
        if m == "base.optional":
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
