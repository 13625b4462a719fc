"""The shared benchmark harness: sizes, result rows, interleaved timing, machine info, results file.

Nothing here imports transformers or the models; sections (`bench_*.py`) do the measuring.
Every Markdown table goes through `alignment.study.markdown.markdown_table`.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from alignment.base.io import atomic_open
from alignment.base.machine import hardware
from alignment.study.markdown import markdown_table

# set by run.main() before transformers is imported: never reach a hub, no progress bars
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
       "TRANSFORMERS_VERBOSITY": "error"}

SECTIONS = ("sampling", "scoring", "training", "lora", "scale")
RESULT_COLS = ["step", "baseline", "ours", "ratio"]
SCALE_COLS = ["scan", "N", "prompts", "sequences", "tokens", "time (s)", "ms / token",
              "peak RSS while sampling (MiB)", "RSS before sampling (MiB)", "peak incl. model load (MiB)",
              "JSONL (KiB)"]


@dataclass(frozen=True)
class Sizes:
    prompts: int = 16          # sampling prompts
    n: int = 4                 # samples per prompt
    new: int = 32              # new tokens per sample
    rounds: int = 2            # interleaved timing rounds for sampling (best kept)
    micro_rows: int = 256      # categorical micro-benchmark rows (vocab 49152)
    micro_reps: int = 10
    texts: int = 512           # reward texts
    score_rounds: int = 3
    pairs: int = 32            # DPO pairs (+ one warm-up batch)
    dpo_batch: int = 8
    scale_n: tuple = (2, 4, 8)
    scale_prompts: tuple = (8, 32, 80)   # 10x range: peak RSS must stay flat (samples stream to disk)
    scale_fixed_n: int = 4
    scale_fixed_prompts: int = 16


FULL = Sizes()
QUICK = Sizes(prompts=4, n=2, new=8, rounds=1, micro_rows=64, micro_reps=3, texts=64, score_rounds=1,
              pairs=8, dpo_batch=4, scale_n=(2, 4), scale_prompts=(4, 8), scale_fixed_n=2, scale_fixed_prompts=4)


@dataclass
class Row:
    step: str
    baseline: str
    ours: str
    ratio: float | None  # how many times faster ours is (> 1: ours faster); None = not measurable

    def cells(self) -> dict:
        return {"step": self.step, "baseline": self.baseline, "ours": self.ours, "ratio": fmt_ratio(self.ratio)}


@dataclass
class Report:
    sizes: Sizes
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scale: list[dict] = field(default_factory=list)  # one dict per scale-table row (see scale_rows)
    ceiling: list[dict] = field(default_factory=list)  # one dict per compute-ceiling row (see `ceiling_row`)

    def add(self, step: str, baseline: str, ours: str, ratio: float | None) -> None:
        self.rows.append(Row(step, baseline, ours, ratio))
        log(f"RESULT {step}: {baseline} vs {ours} -> {fmt_ratio(ratio)}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(f"note: {text}")


# ---- small helpers ------------------------------------------------------------------------------
def run_worker(flag: str, spec: dict) -> dict:
    """One measurement in a fresh `python -m benchmarks.run <flag> SPEC` subprocess (clean memory
    high-water mark); its result dict, the JSON on the last line of its stdout."""
    import json
    import subprocess

    res = subprocess.run([sys.executable, "-m", "benchmarks.run", flag, json.dumps(spec)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if res.returncode != 0:
        raise RuntimeError(f"worker {flag} {spec} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def speedup(baseline_time: float, ours_time: float) -> float | None:
    """How many times faster ours is (> 1: ours faster); None where ours took no measurable time."""
    return baseline_time / ours_time if ours_time > 0 else None


def fmt_ratio(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None and math.isfinite(ratio) and ratio > 0 else "n/a"


def interleaved(rounds: int, variants: dict[str, Callable], once: tuple = ()) -> dict[str, list[tuple]]:
    """Run each variant once per round, order alternating per round; {name: [(seconds, result)]}.
    Variants in `once` (very slow baselines) only run in the first round."""
    out = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            if r > 0 and k in once:
                continue
            t0 = time.perf_counter()
            res = variants[k]()
            out[k].append((time.perf_counter() - t0, res))
            log(f"  round {r + 1}/{rounds} {k}: {out[k][-1][0]:.2f}s")
    return out


def count_new(ids, stops: set[int]) -> int:
    """Generated tokens up to and including the first stop token."""
    for i, t in enumerate(ids):
        if int(t) in stops:
            return i + 1
    return len(ids)


def dtype_name(dtype) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(str(dtype).replace("torch.", ""), str(dtype))


def mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# ---- compute ceiling ----------------------------------------------------------------------------
CEILING_COLS = ["what", "rate", "GFLOP per unit", "achieved GFLOP/s", "GEMM ceiling GFLOP/s", "fraction of ceiling"]
_GEMM: dict = {}


def gemm_rate(dtype, device) -> float:
    """FLOP/s of a square matmul in `dtype` on `device`, best of 5 (n = 1024 on CPU, 4096 on GPU),
    measured once per process: the machine's practical compute ceiling for dense layers."""
    import torch

    key = (str(dtype), str(device))
    if key not in _GEMM:
        n = 4096 if device.type == "cuda" else 1024
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        best = float("inf")
        for _ in range(6):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        _GEMM[key] = 2 * n**3 / best
    return _GEMM[key]


def matmul_flops_per_token(model) -> int:
    """≈ FLOPs of one token through `model`'s dense layers: 2 x (unique parameters - the input
    embedding + the output projection, which is a matmul even when tied). Attention over the short
    contexts here (≤ ~50 tokens) adds ~1 % and is left out."""
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return 2 * (n - model.get_input_embeddings().weight.numel() + (out.weight.numel() if out is not None else 0))


def ceiling_row(what: str, units_per_s: float, unit: str, flops_per_unit: float, dtype, device) -> dict:
    """One compute-ceiling row: achieved FLOP/s = rate x FLOPs per unit, against the GEMM rate in the
    same dtype measured in the same run."""
    gemm = gemm_rate(dtype, device)
    achieved = units_per_s * flops_per_unit
    return {"what": what, "rate": f"{units_per_s:.1f} {unit}/s", "GFLOP per unit": f"{flops_per_unit / 1e9:.3g}",
            "achieved GFLOP/s": f"{achieved / 1e9:.1f}",
            "GEMM ceiling GFLOP/s": f"{gemm / 1e9:.1f} ({dtype_name(dtype)})", "fraction of ceiling": f"{achieved / gemm:.1%}"}


# ---- machine and results file -------------------------------------------------------------------
def machine_info() -> dict:
    """`alignment.base.machine.hardware()` plus what matters for benchmarks: usable cores, load, versions,
    the sampling dtype `auto` resolves to on this machine."""
    import transformers

    from alignment.assets.models import pick_device, sampling_dtype

    info = hardware()
    info["cores usable (affinity)"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    info["load average at start (1/5/15 min)"] = loadavg()
    info["transformers"] = transformers.__version__
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError as e:
        info["trl"] = f"unavailable ({e})"
    dev = pick_device()
    info[f"sampling dtype auto ({dev.type})"] = dtype_name(sampling_dtype("auto", dev))
    return info


def scale_rows(scale: list[dict]) -> list[dict]:
    """Raw scale measurements (bytes, seconds) -> the scale table's cells."""
    return [{"scan": r["scan"], "N": r["n"], "prompts": r["prompts"], "sequences": r["sequences"],
             "tokens": r["tokens"], "time (s)": f"{r['time_s']:.2f}",
             "ms / token": f"{1000 * r['time_s'] / max(1, r['tokens']):.1f}",
             "peak RSS while sampling (MiB)": mib(r.get("rss_peak_sampling")),
             "RSS before sampling (MiB)": mib(r.get("rss_before")),
             "peak incl. model load (MiB)": mib(r.get("load_peak")),
             "JSONL (KiB)": f"{r['file_bytes'] / 1024:.0f}"} for r in scale]


def results_table(rep: Report) -> str:
    return markdown_table([r.cells() for r in rep.rows], RESULT_COLS)


def write_results(path: Path, info: dict, rep: Report, command: str, elapsed: float, header: list[str]) -> None:
    """The results file, written atomically: command and wall time, machine, results, scale, notes."""
    info = dict(info, **{"load average at end (1/5/15 min)": loadavg()})
    lines = ["# Benchmarks", "",
             f"`{command}` — {elapsed / 60:.1f} min. ratio = how many times faster ours is (> 1: ours faster). "
             "Best of interleaved rounds after a warm-up; absolute numbers depend on machine load.", "",
             *[f"{h}\n" for h in header], "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Results", "", results_table(rep), ""]
    if rep.scale:
        lines += ["## Scale (ours, `sample_to_file`, one subprocess per size)", "",
                  markdown_table(scale_rows(rep.scale), SCALE_COLS), ""]
    if rep.ceiling:
        lines += ["## Compute ceiling (achieved FLOP/s ÷ a GEMM measured in the same run, same dtype)", "",
                  markdown_table(rep.ceiling, CEILING_COLS), ""]
    if rep.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
