"""benchmarks/run.py imports and its model-free helpers behave (the benchmark itself is run by hand)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_run", None)


def test_helpers(bench):
    assert bench.count_new([5, 6, 2, 2, 2], {2}) == 3
    assert bench.count_new([5, 6, 7], {2}) == 3
    assert bench.speedup(2.0, 1.0) == "2.00x"
    md = bench.table([bench.Row("a", "1 tok/s", "2 tok/s", "2.00x")])
    assert md.splitlines()[0] == "| step | baseline | ours | ratio |" and "| a | 1 tok/s | 2 tok/s | 2.00x |" in md
    calls = []
    res = bench.interleaved(2, {"slow": lambda: calls.append("slow"), "fast": lambda: calls.append("fast")},
                            once=("slow",))
    assert calls == ["slow", "fast", "fast"] and len(res["slow"]) == 1 and len(res["fast"]) == 2
    assert bench.QUICK.prompts <= bench.FULL.prompts


def test_bad_section_is_rejected(bench):
    with pytest.raises(SystemExit):
        bench.main(["--only", "nonsense"])
