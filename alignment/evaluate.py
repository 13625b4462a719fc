"""Honest evaluation on held-out prompts: every model is scored on its *own fresh samples*.

For each model: reward (mean/median, bootstrap CI), the assignment's unigram token entropy,
the f-DPO paper's mean per-token predictive entropy, distinct-1/2, a sequence-level
KL(pi || pi_ref) estimate from the samples, and perplexity under the reference model (fluency:
word salad shows up here even when reward and entropy both go up).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from .config import Config
from .io import write_json, write_jsonl
from .logprobs import collate, model_logps
from .metrics import (distinct_n, mean_predictive_entropy, perplexity, sequence_kl_estimate,
                      summarize_rewards, unigram_token_entropy)
from .reward import score_records
from .sampling import sample_to_file


def content_ids(rec: dict, stop_ids: list[int]) -> list[int]:
    """Completion tokens without the final stop token (diversity counts words, not EOS)."""
    ids = rec["completion_ids"]
    return ids[:-1] if ids and ids[-1] in stop_ids else ids


@torch.no_grad()
def logps_and_entropy(model, ref_model, prompt_ids: dict[str, list[int]], recs: list[dict], pad_id: int,
                      batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Per-sample policy/ref log-probs (N,), predictive entropy (N,), token counts (N,)."""
    out = {"policy": [], "ref": [], "entropy": [], "n_tokens": []}
    for i in range(0, len(recs), batch_size):
        chunk = recs[i : i + batch_size]
        batch = collate([prompt_ids[r["prompt_id"]] for r in chunk], [r["completion_ids"] for r in chunk], pad_id)
        lp, logits = model_logps(model, batch, return_logits=True)  # (b,), (b, T, V)
        mask = batch["completion_mask"][:, 1:].to(logits.device)  # predicts tokens 1..T-1
        out["entropy"].append(mean_predictive_entropy(logits[:, :-1], mask).cpu())
        out["policy"].append(lp.float().cpu())
        out["ref"].append(lp.float().cpu() if ref_model is None else model_logps(ref_model, batch).float().cpu())
        out["n_tokens"].append(batch["completion_mask"].sum(-1))
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate_model(name: str, model, ref_model, tokenizer, reward, prompts: list[dict], cfg: Config,
                   stop_ids: list[int], out_dir: str | Path, sample_dtype=None) -> dict:
    """Sample cfg.eval.n_samples per held-out prompt from `model`, score, measure; writes out_dir
    (samples.jsonl streamed, so a killed evaluation resumes; the pipeline caches the whole dir).

    `ref_model=None` means the model *is* the reference (the SFT baseline): KL is then 0.
    """
    out_dir = Path(out_dir)
    sampler = model
    if sample_dtype is not None and sample_dtype != next(model.parameters()).dtype:
        sampler = copy.deepcopy(model).to(sample_dtype)
    scfg = dataclasses.replace(cfg.sample, seed=cfg.sample.seed + 10_000)  # eval draws differ from train
    recs = sample_to_file(out_dir / "samples.jsonl", sampler, tokenizer, prompts, cfg.eval.n_samples,
                          scfg, stop_ids, desc=f"eval {name}", max_new_tokens=cfg.eval.max_new_tokens)
    del sampler
    rewards = score_records(reward, recs, cfg.reward.score_prompt)
    pids = {p["id"]: p["ids"] for p in prompts}
    lp = logps_and_entropy(model, ref_model, pids, recs, tokenizer.pad_token_id)
    ids = [content_ids(r, stop_ids) for r in recs]
    rs = summarize_rewards(rewards, n_boot=cfg.eval.n_boot)
    metrics = {
        "model": name, "n_samples": len(recs),
        "eval/reward_mean": rs["mean"], "eval/reward_median": rs["median"], "eval/reward_std": rs["std"],
        "eval/reward_ci_lo": rs["ci_lo"], "eval/reward_ci_hi": rs["ci_hi"],
        "eval/token_entropy": unigram_token_entropy([i for i in ids if i] or [[0]]),
        "eval/predictive_entropy": lp["entropy"].mean().item(),
        "eval/distinct_1": distinct_n(ids, 1), "eval/distinct_2": distinct_n(ids, 2),
        "eval/kl_to_ref": sequence_kl_estimate(lp["policy"], lp["ref"]),
        "eval/ref_perplexity": perplexity(lp["ref"], lp["n_tokens"]),
        "eval/mean_length": lp["n_tokens"].float().mean().item(),
        "eval/finished_frac": sum(r["finished"] for r in recs) / len(recs),
    }
    write_jsonl(out_dir / "scored.jsonl", [{**r, "reward": x} for r, x in zip(recs, rewards)])
    write_json(out_dir / "rewards.json", rewards)
    write_json(out_dir / "metrics.json", metrics)
    return metrics
