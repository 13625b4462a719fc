#!/usr/bin/env python
"""Side-by-side speed benchmarks: the seed's / library baselines vs this kit, same process,
same model, same real offline prompts, same number of new tokens.

    python benchmarks/run.py                      # full run (~10 min on 2 idle cores)
    python benchmarks/run.py --quick              # tiny sizes, checks that everything runs
    python benchmarks/run.py --only sampling,scoring,training,scale
    python benchmarks/run.py --threads 1          # pin torch intra-op threads (see below)

Sections
  sampling  HF text-generation pipeline per prompt (the seed's loop, fp32), batched
            `model.generate` (fp32, left padding) and ours (`sample_records`, backend fast) in
            fp32 and in the `sampling_dtype("auto")` dtype; tokens/s counts generated tokens
            (up to and including a stop token). Plus torch.multinomial vs `categorical`.
  scoring   naive encoder+head (batch 16, input order, plain forward with autograd on, fp32) vs
            `EmbeddingReward.score`; HF text-classification pipeline (the seed's sentiment pipe,
            batch 16) vs `ClassifierReward` on the same MiniLM sequence classifier.
  training  steps/s of native `train_dpo` (precomputed reference log-probs) vs trl's DPOTrainer
            (`train_dpo_trl(precompute_ref=False)`: a reference forward every step).
  scale     sampling time and peak RSS as N and the prompt count grow, `sample_to_file`
            streaming to a tmp file, one subprocess per size so memory peaks do not mix.

Timing: every variant is warmed up once; baseline and ours run interleaved for R rounds and
the best round is reported (the machine may be shared: the best round is the least disturbed).
Nothing here asserts on absolute times. Results go to stdout and, atomically, to
benchmarks/results.md (full run, all sections) or benchmarks/results-partial.md (--quick/--only).

Threads: on a machine shared with other busy processes, torch's default of one OpenMP thread
per core can be 10-20x slower than 1 thread (threads wait at every op's barrier for a core);
`--threads 1` avoids that. Machine info in the report records the thread count and load.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
       "TRANSFORMERS_VERBOSITY": "error"}  # set in main(), before transformers is imported

SECTIONS = ("sampling", "scoring", "training", "scale")


@dataclass
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
    ratio: str


@dataclass
class Report:
    sizes: Sizes
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scale: list[dict] = field(default_factory=list)

    def add(self, step: str, baseline: str, ours: str, ratio: str) -> None:
        self.rows.append(Row(step, baseline, ours, ratio))
        print(f"| {step} | {baseline} | {ours} | {ratio} |", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  - {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# small helpers

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def speedup(baseline_time: float, ours_time: float) -> str:
    """How many times faster ours is (> 1: ours faster)."""
    return f"{baseline_time / ours_time:.2f}x" if ours_time > 0 else "n/a"


def table(rows: list[Row]) -> str:
    lines = ["| step | baseline | ours | ratio |", "|---|---|---|---|"]
    lines += [f"| {r.step} | {r.baseline} | {r.ours} | {r.ratio} |" for r in rows]
    return "\n".join(lines)


def scale_table(rows: list[dict]) -> str:
    lines = ["| scan | N | prompts | sequences | tokens | time (s) | ms / token | peak RSS while sampling (MiB) "
             "| RSS before sampling (MiB) | peak incl. model load (MiB) | JSONL (KiB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scan']} | {r['n']} | {r['prompts']} | {r['sequences']} | {r['tokens']} | "
                     f"{r['time_s']:.2f} | {1000 * r['time_s'] / max(1, r['tokens']):.1f} | "
                     f"{_mib(r.get('rss_peak_sampling'))} | {_mib(r.get('rss_before'))} | {_mib(r.get('load_peak'))} | "
                     f"{r['file_bytes'] / 1024:.0f} |")
    return "\n".join(lines)


def _mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import torch
    import transformers

    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cores (os.cpu_count)": os.cpu_count(),
            "cores usable (affinity)": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a",
            "torch threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg())}
    try:
        import trl

        info["trl"] = trl.__version__
    except Exception as e:  # noqa: BLE001
        info["trl"] = f"unavailable ({type(e).__name__})"
    from alignment.models import sampling_dtype

    info["sampling dtype auto (cpu)"] = str(sampling_dtype("auto", torch.device("cpu"))).replace("torch.", "")
    return info


def interleaved(rounds: int, variants: dict, once: tuple = ()):
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


class Ctx:
    """Shared tokenizer and real offline prompts (build_prompts, train split)."""

    def __init__(self):
        self._tok = None
        self._prompts: list[dict] = []

    @property
    def tok(self):
        if self._tok is None:
            from alignment.models import load_tokenizer

            self._tok = load_tokenizer("offline")
        return self._tok

    def prompts(self, k: int) -> list[dict]:
        if len(self._prompts) < k:
            from alignment.config import DataConfig
            from alignment.data import build_prompts

            self._prompts = build_prompts(DataConfig(n_train_prompts=k, n_eval_prompts=1), self.tok)["train"]
        return self._prompts[:k]


# ---------------------------------------------------------------------------------------------
# 1. sampling

def bench_sampling(S: Sizes, ctx: Ctx, rep: Report) -> None:
    import torch
    from transformers import pipeline

    from alignment.config import SampleConfig
    from alignment.models import load_causal_lm, sampling_dtype, stop_token_ids
    from alignment.sampling import categorical, sample_records, sample_with_generate

    tok, prompts = ctx.tok, ctx.prompts(S.prompts)
    N, T = S.n, S.new
    log(f"sampling: {len(prompts)} prompts x N={N} x {T} new tokens")
    m32 = load_causal_lm("offline", torch.float32)
    auto = sampling_dtype("auto", torch.device("cpu"))
    mlow = load_causal_lm("offline", auto) if auto != torch.float32 else None
    auto_name = str(auto).replace("torch.", "")
    stops = set(stop_token_ids(tok, m32))
    cfg = SampleConfig(n_samples=N, max_new_tokens=T, backend="fast")
    per_batch = max(1, cfg.batch_size // N)  # same prompts per call for every variant
    batches = [prompts[i : i + per_batch] for i in range(0, len(prompts), per_batch)]
    pipe = pipeline("text-generation", model=m32, tokenizer=tok)

    def run_pipeline(t=T, bs=batches):
        n_tok = 0
        for b in bs:
            texts = [p["text"] for p in b]
            outs = pipe(texts, num_return_sequences=N, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=t,
                        return_tensors=True)
            for text, out in zip(texts, outs):
                plen = len(tok(text, add_special_tokens=False)["input_ids"])  # the pipeline's own encoding
                n_tok += sum(count_new(list(o["generated_token_ids"])[plen:], stops) for o in out)
        return n_tok

    def run_generate(t=T, bs=batches):
        return sum(len(c) for b in bs for c in sample_with_generate(m32, tok, [p["ids"] for p in b], N, cfg, t))

    def run_ours(model, t=T, ps=prompts):
        return sum(len(r["completion_ids"]) for recs in sample_records(model, tok, ps, N, cfg, sorted(stops),
                                                                       max_new_tokens=t) for r in recs)

    variants = {"pipeline fp32": run_pipeline, "generate fp32": run_generate,
                "ours fast fp32": lambda **kw: run_ours(m32, **kw)}
    if mlow is not None:
        variants[f"ours fast {auto_name}"] = lambda **kw: run_ours(mlow, **kw)
    warm = {"pipeline fp32": dict(t=min(4, T), bs=[batches[0][:1]]), "generate fp32": dict(t=min(4, T), bs=batches[:1]),
            "ours fast fp32": dict(t=min(4, T), ps=prompts[:per_batch]),
            f"ours fast {auto_name}": dict(t=min(4, T), ps=prompts[:per_batch])}
    for k, fn in variants.items():
        log(f"  warm-up {k}")
        fn(**warm[k])
    res = interleaved(S.rounds, variants, once=("pipeline fp32",))
    rate = {k: max(n / s for s, n in v) for k, v in res.items()}  # best round, tokens/s
    toks = {k: [n for _, n in v] for k, v in res.items()}
    best = f"ours fast {auto_name}" if mlow is not None else "ours fast fp32"
    size = f"{len(prompts)}x{N}x{T}"

    def tps(k):
        return f"{rate[k]:.1f} tok/s ({k})"

    rep.add(f"sampling {size}: seed loop (HF pipeline per prompt) vs ours", tps("pipeline fp32"), tps(best),
            f"{rate[best] / rate['pipeline fp32']:.2f}x")
    rep.add(f"sampling {size}: batched model.generate vs ours", tps("generate fp32"), tps(best),
            f"{rate[best] / rate['generate fp32']:.2f}x")
    if mlow is not None:
        rep.add(f"sampling {size}: pipeline vs ours, both fp32 (loop only)", tps("pipeline fp32"), tps("ours fast fp32"),
                f"{rate['ours fast fp32'] / rate['pipeline fp32']:.2f}x")
        rep.add(f"sampling {size}: generate vs ours, both fp32 (loop only)", tps("generate fp32"), tps("ours fast fp32"),
                f"{rate['ours fast fp32'] / rate['generate fp32']:.2f}x")
        rep.add(f"sampling {size}: ours fp32 vs ours {auto_name} (dtype only)", tps("ours fast fp32"), tps(best),
                f"{rate[best] / rate['ours fast fp32']:.2f}x")
    rep.note(f"sampling: {len(prompts)} real offline prompts (build_prompts, 8 tokens), N={N}, max_new_tokens={T}, "
             f"{min(per_batch, len(prompts))} prompts ({min(per_batch, len(prompts)) * N} sequences) per call for "
             f"every variant; pure sampling (top_k=0, top_p=1, T=1). Generated tokens per round: "
             + "; ".join(f"{k}: {v}" for k, v in toks.items())
             + f". Best of {S.rounds} interleaved round(s) after one warm-up each (the pipeline, slowest by far, "
             "runs in the first round only). The pipeline is called as the "
             "seed did (a list of prompt strings, no batch_size: one prompt at a time, N sequences each); "
             "`return_tensors=True` only to count its tokens exactly.")
    del pipe

    # micro-benchmark: one categorical draw per row of a (rows, vocab) probability matrix
    V = 49152
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(S.micro_rows, V, generator=g).softmax(-1)
    fns = {"torch.multinomial": lambda: torch.multinomial(probs, 1, generator=g),
           "categorical": lambda: categorical(probs, g)}
    times = {}
    for k, fn in fns.items():
        fn()
    for k in fns:
        times[k] = []
    for _ in range(S.micro_reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    tm, tc = min(times["torch.multinomial"]), min(times["categorical"])
    rep.add(f"categorical draw ({S.micro_rows}x{V} probs): torch.multinomial vs alignment.sampling.categorical",
            f"{1000 * tm:.2f} ms", f"{1000 * tc:.2f} ms", speedup(tm, tc))


# ---------------------------------------------------------------------------------------------
# 2. reward scoring

def reward_texts(S: Sizes, ctx: Ctx) -> list[str]:
    """Sample-like texts: the first 8 + k policy tokens of real offline reviews, k = 32 for 3/4 of
    them (samples that hit max_new_tokens) and 1..31 otherwise (samples that stopped early)."""
    from alignment.data import offline_reviews

    tok = ctx.tok
    rng = random.Random(0)
    reviews = [r.text for r in offline_reviews() if len(r.text) > 200]
    rng.shuffle(reviews)
    out = []
    for text in reviews[: S.texts]:
        ids = tok(text[:600], add_special_tokens=False)["input_ids"]
        k = 32 if rng.random() < 0.75 else rng.randint(1, 31)
        out.append(tok.decode(ids[: 8 + k]))
    return out


def bench_scoring(S: Sizes, ctx: Ctx, rep: Report) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from alignment.assets import minilm_dir
    from alignment.config import RewardConfig
    from alignment.reward import ClassifierReward, load_reward

    texts = reward_texts(S, ctx)
    log(f"scoring: {len(texts)} texts, mean {sum(map(len, texts)) / len(texts):.0f} chars")
    reward = load_reward(RewardConfig())  # EmbeddingReward, batch 64, length-sorted, inference_mode, dtype auto
    base = load_reward(RewardConfig(dtype="float32"))  # the same weights in fp32 for the naive baseline

    def naive(bs=16):
        """The same encoder + head, as a first version would: input order, plain forward (autograd on), fp32."""
        outs = []
        for i in range(0, len(texts), bs):
            enc = base.tok(texts[i : i + bs], padding=True, truncation=True, max_length=base.max_length,
                           return_tensors="pt")
            h = base.enc(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
            outs.append((e @ base.w + base.b).detach())
        return torch.cat(outs)

    def ours():
        return reward.score(texts)

    grad_on = any(p.requires_grad for p in base.enc.parameters())
    naive(), ours()
    res = interleaved(S.score_rounds, {"naive": naive, "EmbeddingReward.score": ours})
    tn, to = min(s for s, _ in res["naive"]), min(s for s, _ in res["EmbeddingReward.score"])
    diff = (res["naive"][0][1] - res["EmbeddingReward.score"][0][1]).abs().max().item()
    rep.add(f"reward scoring, {len(texts)} texts: naive encoder+head (bs 16, input order, grad on) vs EmbeddingReward.score "
            f"(bs {reward.batch_size}, length-sorted, inference_mode, {next(reward.enc.parameters()).dtype})",
            f"{len(texts) / tn:.1f} texts/s", f"{len(texts) / to:.1f} texts/s", speedup(tn, to))
    rep.note(f"scoring: {len(texts)} texts = first 8+k SmolLM2 tokens of real offline reviews (k=32 for 3/4, else 1-31), "
             f"mean {sum(map(len, texts)) / len(texts):.0f} chars; encoder params require grad: {grad_on}; "
             f"max |score difference| naive vs ours = {diff:.2e}; best of {S.score_rounds} interleaved rounds.")

    # the seed's sentiment pipeline vs ClassifierReward, on one MiniLM sequence classifier
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        clf = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
        clf.save_pretrained(d)
        AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(d)
        del clf
        cpipe = pipeline("text-classification", model=d, tokenizer=d)
        creward = ClassifierReward(d, batch_size=64, max_length=256, device=torch.device("cpu"), dtype="auto")
    pos_label = cpipe.model.config.id2label[creward.pos]

    def run_pipe():
        out = cpipe(texts, top_k=None, function_to_apply="none", batch_size=16, truncation=True)
        return torch.tensor([next(x["score"] for x in o if x["label"] == pos_label) for o in out])

    def run_clf():
        return creward.score(texts)

    run_pipe(), run_clf()
    res = interleaved(S.score_rounds, {"pipeline": run_pipe, "ClassifierReward": run_clf})
    tp, tc = min(s for s, _ in res["pipeline"]), min(s for s, _ in res["ClassifierReward"])
    diff = (res["pipeline"][0][1] - res["ClassifierReward"][0][1]).abs().max().item()
    rep.add(f"reward scoring, {len(texts)} texts: pipeline('text-classification', bs 16) vs ClassifierReward (bs 64)",
            f"{len(texts) / tp:.1f} texts/s", f"{len(texts) / tc:.1f} texts/s", speedup(tp, tc))
    rep.note(f"classifier: AutoModelForSequenceClassification from the MiniLM encoder dir, num_labels=2 (head seeded "
             f"randomly, saved once, both sides load the same files); pipeline kwargs as the seed's sentiment pipe "
             f"(top_k=None, function_to_apply='none', batch_size=16); max |logit difference| = {diff:.2e}.")


# ---------------------------------------------------------------------------------------------
# 3. DPO training

class StepClock:
    """A tracker that only timestamps each logged optimizer step (both backends log once per step)."""

    def __init__(self):
        self.t: list[float] = []

    def log(self, metrics, step=None):
        self.t.append(time.perf_counter())

    def step_time(self) -> float:
        return (self.t[-1] - self.t[0]) / (len(self.t) - 1)  # steps 2..k: the first one is the warm-up


def make_pairs(S: Sizes, ctx: Ctx) -> tuple[list[dict], dict[str, list[int]]]:
    """Real prompts; chosen = the review's next 32 tokens, rejected = the 32 after those (EOS ended on a
    quarter of them), i.e. sample-shaped pairs of real text."""
    from alignment.data import offline_reviews

    tok = ctx.tok
    prompts = ctx.prompts(S.pairs)
    texts = {r.id: r.text for r in offline_reviews()}
    eos = tok.eos_token_id
    pairs = []
    for i, p in enumerate(prompts):
        ids = tok(texts[p["review_id"]][:1200], add_special_tokens=False)["input_ids"]
        ch, rj = ids[8:40], ids[40:72] or ids[8:40]
        if i % 4 == 0:
            ch = ch[:-1] + [eos]
        if i % 4 == 1:
            rj = rj[:-1] + [eos]
        pairs.append({"prompt_id": p["id"], "prompt": p["text"], "chosen_ids": ch, "rejected_ids": rj,
                      "chosen": tok.decode(ch, skip_special_tokens=True),
                      "rejected": tok.decode(rj, skip_special_tokens=True)})
    return pairs, {p["id"]: p["ids"] for p in prompts}


def trl_direct(model, tok, pairs, dcfg, out_dir, clock):
    """Fallback when alignment.trl_backend is unusable: trl's DPOTrainer on text pairs, trl defaults."""
    import copy

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    class _Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and "train_runtime" not in logs:
                clock.log(logs, state.global_step)

    ds = Dataset.from_dict({k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")})
    args = TrlDPOConfig(output_dir=str(out_dir), beta=dcfg.beta, learning_rate=dcfg.lr, num_train_epochs=1,
                        per_device_train_batch_size=dcfg.batch_size, use_cpu=True, report_to="none",
                        save_strategy="no", logging_steps=1, disable_tqdm=True, precompute_ref_log_probs=False)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok,
               callbacks=[_Clock()]).train()


def bench_training(S: Sizes, ctx: Ctx, rep: Report) -> None:
    import torch

    from alignment.config import DPOConfig
    from alignment.models import load_causal_lm
    from alignment.train import reference_logps, train_dpo

    tok = ctx.tok
    pairs, pids = make_pairs(S, ctx)
    B = S.dpo_batch
    run = pairs[:B] + pairs  # one warm-up batch + the timed pairs, both backends see the same list
    steps = len(pairs) // B
    dcfg = DPOConfig(batch_size=B, epochs=1)
    pad = tok.pad_token_id
    log(f"training: {len(pairs)} pairs (+{B} warm-up), batch {B}, {steps} timed steps per backend")

    with tempfile.TemporaryDirectory() as tmp:
        model = load_causal_lm("offline", torch.float32, train=True)
        model.eval()
        ref_w = reference_logps(model, run[:B], pids, pad)  # warm-up of the reference pass
        t0 = time.perf_counter()
        ref_t = reference_logps(model, pairs, pids, pad)
        t_ref = time.perf_counter() - t0
        ref = (torch.cat([ref_w[0], ref_t[0]]), torch.cat([ref_w[1], ref_t[1]]))
        clock_n = StepClock()
        t0 = time.perf_counter()
        train_dpo(model, run, pids, ref, dcfg, pad, Path(tmp) / "native", tracker=clock_n)
        wall_n = time.perf_counter() - t0
        del model
        native = clock_n.step_time()
        log(f"  native: {native:.2f} s/step, reference pass {t_ref:.2f}s for {len(pairs)} pairs")

        model = load_causal_lm("offline", torch.float32, train=True)
        clock_t = StepClock()
        how, err = "alignment.trl_backend.train_dpo_trl(precompute_ref=False)", None
        t0 = time.perf_counter()
        try:
            from alignment.trl_backend import train_dpo_trl

            train_dpo_trl(model, None, tok, run, pids, dcfg, Path(tmp) / "trl", tracker=clock_t, precompute_ref=False)
        except Exception as e:  # noqa: BLE001 - the backend is being written concurrently; fall back
            err = f"{type(e).__name__}: {str(e)[:160]}"
            log(f"  trl_backend unusable ({err}); benchmarking trl.DPOTrainer directly")
            how = "trl.DPOTrainer directly (text pairs; trl_backend unusable: " + err.replace("|", "/") + ")"
            del model
            model = load_causal_lm("offline", torch.float32, train=True)
            clock_t = StepClock()
            t0 = time.perf_counter()
            try:
                trl_direct(model, tok, run, dcfg, Path(tmp) / "trl-direct", clock_t)
            except Exception as e2:  # noqa: BLE001
                rep.add(f"DPO training step (batch {B}): trl DPOTrainer vs native train_dpo",
                        f"failed: {type(e2).__name__}: {str(e2)[:100]}".replace("|", "/"), f"{1 / native:.3f} steps/s", "n/a")
                return
        wall_t = time.perf_counter() - t0
        del model
    if len(clock_t.t) < 2:
        rep.add(f"DPO training step (batch {B}): trl DPOTrainer vs native train_dpo",
                f"n/a ({len(clock_t.t)} steps logged by trl)", f"{1 / native:.3f} steps/s", "n/a")
        return
    trl_s = clock_t.step_time()
    log(f"  trl: {trl_s:.2f} s/step")
    rep.add(f"DPO training step (batch {B} pairs): trl DPOTrainer, reference forward every step, vs native train_dpo "
            f"(precomputed reference)", f"{1 / trl_s:.3f} steps/s", f"{1 / native:.3f} steps/s", speedup(trl_s, native))
    native_epoch = steps * native + t_ref
    rep.add(f"DPO epoch over {len(pairs)} pairs incl. reference log-probs: trl vs native + reference_logps",
            f"{steps / (steps * trl_s):.3f} steps/s", f"{steps / native_epoch:.3f} steps/s",
            speedup(steps * trl_s, native_epoch))
    rep.note(f"training: fp32 policy, {len(pairs)} sample-shaped pairs (real prompts, 32-token real-text completions), "
             f"batch {B}, 1 warm-up step then {steps} timed steps in the same call (timestamps of each step's log); "
             f"native reference pass (reference_logps, no grad, batch 16) took {t_ref:.2f}s for {len(pairs)} pairs "
             f"(once per run; amortised over epochs in real runs). trl path: {how}. Whole-call wall time incl. setup: "
             f"native {wall_n:.1f}s, trl {wall_t:.1f}s (trl also deep-copies the policy as its reference model).")


# ---------------------------------------------------------------------------------------------
# 4. scale (one subprocess per size)

def _proc_status(field: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes; None where there is no /proc."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so VmHWM = peak from now on."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def scale_worker(spec: dict) -> dict:
    """Load, warm up, then time `sample_to_file`; peak RSS of the sampling call alone (VmHWM after a
    reset; a 5 ms psutil poll where the reset is unavailable)."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from alignment.config import DataConfig, SampleConfig
    from alignment.data import build_prompts
    from alignment.models import load_causal_lm, load_tokenizer, sampling_dtype, stop_token_ids
    from alignment.sampling import sample_batch, sample_to_file

    try:
        import psutil

        proc = psutil.Process()
    except ImportError:
        proc = None
    tok = load_tokenizer("offline")
    prompts = build_prompts(DataConfig(n_train_prompts=spec["prompts"], n_eval_prompts=1), tok)["train"]
    model = load_causal_lm("offline", sampling_dtype("auto", torch.device("cpu")))
    stops = stop_token_ids(tok, model)
    cfg = SampleConfig(n_samples=spec["n"], max_new_tokens=spec["new"])
    sample_batch(model, [prompts[0]["ids"]], 2, cfg, stops, tok.pad_token_id, None, 4)  # warm-up
    load_peak = _proc_status("VmHWM")
    before = _proc_status("VmRSS") or (proc.memory_info().rss if proc else None)
    exact = _reset_peak_rss() and _proc_status("VmHWM") is not None
    peak = [before]
    stop = threading.Event()

    def poll():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    th = threading.Thread(target=poll, daemon=True) if (proc and not exact and before is not None) else None
    with tempfile.TemporaryDirectory() as d:
        if th:
            th.start()
        t0 = time.perf_counter()
        recs = sample_to_file(Path(d) / "samples.jsonl", model, tok, prompts, spec["n"], cfg, stops)
        dt = time.perf_counter() - t0
        stop.set()
        if th:
            th.join()
        file_bytes = (Path(d) / "samples.jsonl").stat().st_size
    if exact:
        peak[0] = _proc_status("VmHWM")
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"time_s": dt, "tokens": sum(len(r["completion_ids"]) for r in recs), "sequences": len(recs),
            "rss_before": before, "rss_peak_sampling": peak[0], "peak_exact": exact, "load_peak": load_peak,
            "ru_maxrss": ru, "file_bytes": file_bytes}


def bench_scale(S: Sizes, ctx: Ctx, rep: Report, threads: int) -> None:
    import torch

    configs = [("N", n, S.scale_fixed_prompts) for n in S.scale_n] + \
              [("prompts", S.scale_fixed_n, p) for p in S.scale_prompts]
    cache: dict[tuple, dict] = {}
    for scan, n, p in configs:
        if (n, p) not in cache:
            spec = {"n": n, "prompts": p, "new": S.new, "threads": threads or torch.get_num_threads()}
            log(f"scale: N={n}, prompts={p} (subprocess)")
            res = subprocess.run([sys.executable, __file__, "--_scale-worker", json.dumps(spec)],
                                 capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                raise RuntimeError(f"scale worker {spec} failed:\n{res.stderr[-2000:]}")
            cache[(n, p)] = json.loads(res.stdout.strip().splitlines()[-1])
        rep.scale.append({"scan": scan, "n": n, "prompts": p, **cache[(n, p)]})
    for scan, key in (("N", "n"), ("prompts", "prompts")):
        rows = [r for r in rep.scale if r["scan"] == scan]
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            rep.note(f"scale over {scan} ({a[key]} -> {b[key]}): sequences x{b['sequences'] / a['sequences']:.1f}, "
                     f"time x{b['time_s'] / a['time_s']:.2f}, ms/token {1000 * a['time_s'] / a['tokens']:.1f} -> "
                     f"{1000 * b['time_s'] / b['tokens']:.1f}, peak RSS while sampling "
                     f"{_mib(a['rss_peak_sampling'])} -> {_mib(b['rss_peak_sampling'])} MiB")
    r0 = rep.scale[0]
    how = ("VmHWM of the worker, reset (/proc/self/clear_refs) after model load and warm-up, read after the call: "
           "exact" if r0.get("peak_exact") else "max of a 5 ms psutil RSS poll during the call")
    rep.note(f"scale: {S.new} new tokens, sample.batch_size=64 sequences per decode batch (so 64 // N prompts per "
             f"batch), the sampling dtype auto, one fresh subprocess per size. Peak RSS while sampling = {how}. "
             f"getrusage ru_maxrss is not usable here: a child started by this (large) benchmark process reports the "
             f"parent's high-water mark ({_mib(r0['ru_maxrss'])} MiB in the first worker; Linux keeps the pre-exec "
             f"peak across exec), so the table shows /proc VmHWM instead.")
    print(scale_table(rep.scale), flush=True)


# ---------------------------------------------------------------------------------------------

def write_results(path: Path, info: dict, rep: Report, args, elapsed: float) -> None:
    from alignment.io import atomic_open

    import torch

    info = dict(info, **{"load average at end (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg())})
    if args.threads:
        rep.notes.insert(0, f"torch intra-op threads pinned to {torch.get_num_threads()} (--threads): on a machine shared "
                            "with other busy processes, one OpenMP thread per core makes every op wait at a barrier "
                            "for a free core (10-20x slower here); 1 thread gives meaningful numbers under load.")
    lines = ["# Benchmarks", "",
             f"`python benchmarks/run.py{' --quick' if args.quick else ''}"
             f"{' --only ' + args.only if args.only else ''}{f' --threads {args.threads}' if args.threads else ''}` "
             f"— {elapsed / 60:.1f} min. ratio = how many times faster ours is (> 1: ours faster). "
             "Best of interleaved rounds after a warm-up; absolute numbers depend on machine load.", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Results", "", table(rep.rows), ""]
    if rep.scale:
        lines += ["## Scale (ours, `sample_to_file`, one subprocess per size)", "", scale_table(rep.scale), ""]
    if rep.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that everything runs")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--out", default="", help="results file (default benchmarks/results.md for a full run "
                                              "of every section, else benchmarks/results-partial.md)")
    ap.add_argument("--_scale-worker", dest="scale_worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    if args.scale_worker:
        print(json.dumps(scale_worker(json.loads(args.scale_worker))), flush=True)
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; choose from {','.join(SECTIONS)}")

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    S = QUICK if args.quick else FULL
    full = not args.quick and set(only) == set(SECTIONS)
    out = Path(args.out) if args.out else Path(__file__).parent / ("results.md" if full else "results-partial.md")
    info = machine_info()
    for k, v in info.items():
        print(f"- {k}: {v}")
    if os.getloadavg()[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        log(f"warning: load average {os.getloadavg()[0]:.1f} > {os.cpu_count()} cores with "
            f"{torch.get_num_threads()} torch threads: timings will be noisy and slow; consider --threads 1")
    rep, ctx = Report(S), Ctx()
    print("\n| step | baseline | ours | ratio |\n|---|---|---|---|", flush=True)
    t0 = time.time()
    benches = {"sampling": bench_sampling, "scoring": bench_scoring, "training": bench_training,
               "scale": lambda S, ctx, rep: bench_scale(S, ctx, rep, args.threads)}
    for name in SECTIONS:
        if name in only:
            t1 = time.time()
            benches[name](S, ctx, rep)
            log(f"{name} done in {time.time() - t1:.0f}s")
    elapsed = time.time() - t0
    print("\n" + table(rep.rows))
    write_results(out, info, rep, args, elapsed)
    print(f"\nwrote {out} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
