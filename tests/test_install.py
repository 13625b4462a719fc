"""pyproject.toml installs what requirements.txt pins: the same package names (runtime as
`dependencies`, the test and notebook tools as the `dev` extra), ranges the pinned versions satisfy,
and an `alignment` command that points at a callable. Nothing is installed or built here."""
from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

import alignment

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    """The normalised distribution name of a requirement line (`PyYAML>=6.0` -> `pyyaml`)."""
    return re.split(r"[<>=!~;\[\s]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, tuple[str, str]]:
    """{name: (version, section)} of requirements.txt, section = the `# runtime` / `# dev` heading above it."""
    pins, section = {}, None
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("# runtime") or line.startswith("# dev"):
            section = line[2:].split(":")[0].split()[0]
        elif line.strip() and not line.startswith("#"):
            req = line.split("#")[0].strip()
            pins[_name(req)] = (req.split("==")[1], section)
    return pins


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _satisfies(version: str, spec: str) -> bool:
    """Whether `version` meets every `>=`/`<` clause of `spec` (the only operators pyproject.toml uses)."""
    v = _version(version)
    for clause in spec.split(","):
        op, bound = re.match(r"\s*(>=|<)\s*(\S+)", clause).groups()
        b = _version(bound)
        width = max(len(v), len(b))
        vv, bb = v + (0,) * (width - len(v)), b + (0,) * (width - len(b))
        if (op == ">=" and vv < bb) or (op == "<" and vv >= bb):
            return False
    return True


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _specs(reqs: list[str]) -> dict[str, str]:
    return {_name(r): r[len(re.match(r"[A-Za-z0-9_.-]+", r).group()):] for r in reqs}


def test_pyproject_names_what_requirements_pins(project):
    pins = _pins()
    runtime, dev = _specs(project["dependencies"]), _specs(project["optional-dependencies"]["dev"])
    assert set(runtime) == {n for n, (_, s) in pins.items() if s == "runtime"}
    assert set(dev) == {n for n, (_, s) in pins.items() if s == "dev"}
    assert not set(runtime) & set(dev)
    assert {"torch", "transformers", "trl", "pyyaml", "pytest", "papermill"} <= set(pins)  # the parse found them


def test_the_pinned_versions_meet_the_ranges(project):
    pins = _pins()
    specs = {**_specs(project["dependencies"]), **_specs(project["optional-dependencies"]["dev"])}
    bad = {n: (pins[n][0], spec) for n, spec in specs.items() if not _satisfies(pins[n][0], spec)}
    assert bad == {}
    assert all(spec for spec in specs.values())  # every package has a range


def test_range_check_can_fail():
    assert _satisfies("2.13.0", ">=2.4") and _satisfies("5.24.0", ">=5.24,<6")
    assert not _satisfies("6.0.1", ">=5.24,<6") and not _satisfies("2.3.9", ">=2.4")


def test_metadata_and_the_console_script(project):
    assert project["name"] == "alignment" and project["requires-python"] == ">=3.10"
    assert project["dynamic"] == ["version"] and re.fullmatch(r"\d+\.\d+\.\d+", alignment.__version__)
    module, func = project["scripts"]["alignment"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    packages = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert packages["packages"]["find"]["include"] == ["alignment*"]
