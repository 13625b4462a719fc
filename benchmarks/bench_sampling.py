"""Sampling: the original notebook's loop (HF text-generation pipeline per prompt), batched `model.generate` and
ours (`sample_records`, backend fast) on the same prompts, N and new-token budget.

`generate` and ours are compared in the same dtype: fp32, and again in the sampling dtype `auto`
where that is lower precision (bf16 on a CPU with native bf16 or on CUDA), one row each. tokens/s
counts generated tokens up to and including a stop token. Plus torch.multinomial vs `categorical`.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import pipeline

from alignment.config import SampleConfig
from alignment.assets.models import pick_device, sampling_dtype, stop_token_ids
from alignment.steps.decode import categorical, left_pad
from alignment.steps.sampling import sample_records
from benchmarks.harness import (Report, Sizes, ceiling_row, count_new, dtype_name, interleaved, log,
                                matmul_flops_per_token, speedup)

VOCAB = 49152  # SmolLM2's vocabulary: the width of the categorical micro-benchmark's rows


def make_variants(ctx, models: dict, cfg: SampleConfig, stops: set[int], per_batch: int) -> dict[str, Callable]:
    """{name: fn(max_new, prompts) -> generated tokens}; `models`: {dtype name: model}, fp32 first.
    Every variant gets the same `per_batch` prompts (per_batch * N sequences) per call."""
    tok, N = ctx.tok, cfg.n_samples
    pipe = pipeline("text-generation", model=models["fp32"], tokenizer=tok)

    def batches(ps):
        return [ps[i : i + per_batch] for i in range(0, len(ps), per_batch)]

    def run_pipeline(t, ps):
        """As the seed did: a list of prompt strings, no batch_size (one prompt at a time, N sequences each)."""
        n_tok = 0
        for b in batches(ps):
            texts = [p["text"] for p in b]
            outs = pipe(texts, num_return_sequences=N, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=t,
                        return_tensors=True)
            for text, out in zip(texts, outs):
                plen = len(tok(text, add_special_tokens=False)["input_ids"])  # the pipeline's own encoding
                n_tok += sum(count_new(list(o["generated_token_ids"])[plen:], stops) for o in out)
        return n_tok

    def run_generate(model):  # plain batched `model.generate` (pure sampling), its new tokens up to the first stop
        def run(t, ps):
            n_tok = 0
            for b in batches(ps):
                ids, attn = left_pad([p["ids"] for p in b], tok.pad_token_id)
                out = model.generate(input_ids=ids, attention_mask=attn, do_sample=True, top_k=0, top_p=1.0,
                                     max_new_tokens=t, num_return_sequences=N, pad_token_id=tok.pad_token_id)
                n_tok += sum(count_new(row, stops) for row in out[:, ids.size(1):].tolist())
            return n_tok
        return run

    def run_ours(model):
        return lambda t, ps: sum(len(r["completion_ids"]) for recs in
                                 sample_records(model, tok, ps, N, cfg, sorted(stops), max_new_tokens=t) for r in recs)

    variants = {"pipeline fp32": run_pipeline}
    for name, model in models.items():
        variants[f"generate {name}"] = run_generate(model)
        variants[f"ours {name}"] = run_ours(model)
    return variants


def time_variants(S: Sizes, variants: dict[str, Callable], prompts: list[dict], per_batch: int) -> dict:
    """Warm each variant up once (4 new tokens, one batch), then best-of-rounds interleaved;
    returns {name: [generated tokens per round]} and {name: best tokens/s}."""
    for k, fn in variants.items():
        log(f"  warm-up {k}")
        fn(min(4, S.new), prompts[:1] if k.startswith("pipeline") else prompts[:per_batch])
    timed = {k: (lambda fn=fn: fn(S.new, prompts)) for k, fn in variants.items()}
    res = interleaved(S.rounds, timed, once=("pipeline fp32",))
    return {k: [n for _, n in v] for k, v in res.items()}, {k: max(n / s for s, n in v) for k, v in res.items()}


def run(S: Sizes, ctx, rep: Report) -> None:
    dev = pick_device()
    tok, prompts, N, T = ctx.tok, ctx.prompts(S.prompts), S.n, S.new
    auto = sampling_dtype("auto", dev)
    low = dtype_name(auto) if auto != torch.float32 else None  # a second, same-dtype pair in this dtype
    log(f"sampling: {len(prompts)} prompts x N={N} x {T} new tokens on {dev}, fp32{' and ' + low if low else ''}")
    models = {"fp32": ctx.lm(torch.float32)}
    if low:
        models[low] = ctx.lm(auto)
    stops = set(stop_token_ids(tok, models["fp32"]))
    cfg = SampleConfig(n_samples=N, max_new_tokens=T, backend="fast")
    per_batch = max(1, cfg.batch_size // N)
    toks, rate = time_variants(S, make_variants(ctx, models, cfg, stops, per_batch), prompts, per_batch)
    size = f"{len(prompts)}x{N}x{T}"

    def add(step: str, base: str, ours: str) -> None:
        rep.add(f"sampling {size} {step}", f"{rate[base]:.1f} tok/s ({base})", f"{rate[ours]:.1f} tok/s ({ours})",
                rate[ours] / rate[base])

    add("fp32: notebook loop (HF pipeline per prompt) vs ours", "pipeline fp32", "ours fp32")
    add("fp32: batched model.generate vs ours", "generate fp32", "ours fp32")
    if low:
        add(f"{low}: batched model.generate vs ours", f"generate {low}", f"ours {low}")
        add(f"notebook loop fp32 vs ours {low} (sampling dtype auto, what a run gets)", "pipeline fp32", f"ours {low}")
        add(f"ours fp32 vs ours {low} (dtype only)", "ours fp32", f"ours {low}")
    flops = matmul_flops_per_token(models["fp32"])
    for name, model in models.items():
        for who in ("generate", "ours"):
            rep.ceiling.append(ceiling_row(f"sampling, {who} {name} (decode, {per_batch * N} sequences per batch)",
                                           rate[f"{who} {name}"], "tok", flops, next(model.parameters()).dtype, dev))
    per = min(per_batch, len(prompts))
    rep.note(f"sampling: {len(prompts)} prompts (build_prompts, 8 tokens; {ctx.describe()}) on {dev}, N={N}, "
             f"max_new_tokens={T}, {per} prompts ({per * N} sequences) per call for every variant; pure sampling "
             f"(top_k=0, top_p=1, T=1); `generate` and ours compared in the same dtype (fp32"
             f"{', and ' + low + ' = the sampling dtype auto here' if low else '; auto is fp32 here'}). "
             "Generated tokens per round: " + "; ".join(f"{k}: {v}" for k, v in toks.items())
             + f". Best of {S.rounds} interleaved round(s) after one warm-up each (the pipeline, slowest by far, runs "
             "in the first round only). The pipeline is called as the seed did (a list of prompt strings, no "
             "batch_size: one prompt at a time, N sequences each); `return_tensors=True` only to count its tokens.")
    del models
    bench_categorical(S, rep)


def bench_categorical(S: Sizes, rep: Report) -> None:
    """One categorical draw per row of a (rows, VOCAB) probability matrix: multinomial vs ours."""
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(S.micro_rows, VOCAB, generator=g).softmax(-1)  # (rows, V)
    fns = {"torch.multinomial": lambda: torch.multinomial(probs, 1, generator=g),
           "categorical": lambda: categorical(probs, torch.rand(S.micro_rows, generator=g))}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(S.micro_reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    tm, tc = min(times["torch.multinomial"]), min(times["categorical"])
    rep.add(f"categorical draw ({S.micro_rows}x{VOCAB} probs): torch.multinomial vs alignment.steps.decode.categorical",
            f"{1000 * tm:.2f} ms", f"{1000 * tc:.2f} ms", speedup(tm, tc))
