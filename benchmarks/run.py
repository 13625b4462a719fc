"""Side-by-side speed benchmarks: the original notebook's / library baselines vs this kit, same process,
same model, same prompts, same number of new tokens. From the repo root:

    python -m benchmarks.run                      # full run (~12 min on 2 idle cores)
    python -m benchmarks.run --quick              # tiny random models and sizes: checks that everything runs
    python -m benchmarks.run --only sampling,scoring,training,lora,scale
    python -m benchmarks.run --threads 1          # pin torch intra-op threads (see below)

Sections (one module each, `benchmarks/bench_<section>.py`, each with `run(S, ctx, rep)`)
  sampling  HF text-generation pipeline per prompt (the original notebook's loop, fp32), batched `model.generate`
            and ours (`sample_records`, backend fast), generate vs ours in the same dtype: fp32, and
            the sampling dtype auto where it is lower precision (bf16). Plus multinomial vs `categorical`.
  scoring   naive encoder+head vs `EmbeddingReward.score`; HF text-classification pipeline (the original notebook's
            sentiment pipe) vs `ClassifierReward` on the same sequence classifier.
  training  steps/s of native `train_dpo` (precomputed reference log-probs) vs trl's DPOTrainer
            (`train_dpo_trl(precompute_ref=False)`: a reference forward every step).
  lora      full fine-tuning vs LoRA (r=16, alpha=32, every linear layer, `add_lora`) under `train_dpo`:
            step time, peak RSS of the training process and save_pretrained size (whole policy vs
            adapter), one fresh subprocess per variant so memory peaks do not mix.
  scale     sampling time and peak RSS as N and the prompt count grow, `sample_to_file` streaming to a
            tmp file, one subprocess per size so memory peaks do not mix.

Timing: every variant is warmed up once; baseline and ours run interleaved for R rounds and the best
round is reported (the machine may be shared: the best round is the least disturbed). Nothing here
asserts on absolute times. The full run uses the real offline assets (`python -m alignment assets`);
--quick builds tiny random-init models from configs in a tmp dir (no download; its numbers are not
meaningful). Results go to stdout and, atomically, to benchmarks/results.md (full run, all sections),
benchmarks/results-partial.md (--only), benchmarks/results-quick.md (--quick, git-ignored) or --out.

Threads: on a machine shared with other busy processes, torch's default of one OpenMP thread per core
can be 10-20x slower than 1 thread (threads wait at every op's barrier for a core); `--threads 1`
avoids that. Machine info in the report records the thread count and load.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python benchmarks/run.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (ENV, FULL, QUICK, SECTIONS, Report, log, machine_info,  # noqa: E402
                                results_table, write_results)

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random models and sizes: checks that everything runs")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--out", default="", help="results file (default: benchmarks/results.md for a full run of every "
                                              "section, results-quick.md for --quick, else results-partial.md)")
    ap.add_argument("--_scale-worker", dest="scale_worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--_lora-worker", dest="lora_worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    return args


def out_path(args) -> Path:
    if args.out:
        return Path(args.out)
    if args.quick:
        return HERE / "results-quick.md"
    return HERE / ("results.md" if set(args.sections) == set(SECTIONS) else "results-partial.md")


def command(args) -> str:
    return ("python -m benchmarks.run" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only
            else "") + (f" --threads {args.threads}" if args.threads else ""))


def run_sections(args, S, ctx) -> tuple[Report, float]:
    rep = Report(S)
    t0 = time.time()
    for name in SECTIONS:
        if name in args.sections:
            t1 = time.time()
            importlib.import_module(f"benchmarks.bench_{name}").run(S, ctx, rep)
            log(f"{name} done in {time.time() - t1:.0f}s")
    return rep, time.time() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    for k, v in ENV.items():  # before transformers (and tqdm) are imported
        os.environ.setdefault(k, v)
    if args.scale_worker:
        from benchmarks.bench_scale import worker

        print(json.dumps(worker(json.loads(args.scale_worker))), flush=True)
        return 0
    if args.lora_worker:
        from benchmarks.bench_lora import worker

        print(json.dumps(worker(json.loads(args.lora_worker))), flush=True)
        return 0
    import torch
    import transformers

    from benchmarks.context import Ctx, tiny_ctx

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print("\n".join(f"- {k}: {v}" for k, v in info.items()), flush=True)
    if os.getloadavg()[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        log(f"warning: load average {os.getloadavg()[0]:.1f} > {os.cpu_count()} cores with "
            f"{torch.get_num_threads()} torch threads: timings will be noisy and slow; consider --threads 1")
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as tmp:
        ctx = tiny_ctx(tmp) if args.quick else Ctx()
        rep, elapsed = run_sections(args, QUICK if args.quick else FULL, ctx)
    if args.threads:
        rep.notes.insert(0, f"torch intra-op threads pinned to {torch.get_num_threads()} (--threads): on a machine "
                            "shared with other busy processes, one OpenMP thread per core makes every op wait at a "
                            "barrier for a free core (10-20x slower here); 1 thread gives meaningful numbers under "
                            "load.")
    header = [f"Quick mode ({ctx.describe()}, tiny sizes): it checks that every section runs; its timings and "
              "ratios are not meaningful."] if args.quick else []
    out = out_path(args)
    print("\n" + results_table(rep), flush=True)
    write_results(out, info, rep, command(args), elapsed, header)
    print(f"\nwrote {out} ({elapsed / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
