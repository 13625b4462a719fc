"""Gains over the start policy: a trained policy's evaluation against the start's on the same held-out
prompts (reward, judge, on-topic; KL and entropy, what training costs), paired per prompt and seed,
with p-values and Holm over the policies compared (`alignment.study.stats` holds the procedures).
Level 1's table (`versus_start`) and every frontier point's gain (`compare_to_start`) come from here."""
from __future__ import annotations

from typing import Callable

from .stats import check_p_floor, holm, paired_entropy_bootstrap, paired_prompt_bootstrap

GAINS = (("reward", "reward_gain", "gain"), ("judge", "judge_gain", "judge_gain"),
         ("on_topic", "on_topic_gain", "on_topic_gain"))  # (scored field, gain key, CI/p prefix)
DRIFTS = ("kl_diff", "pred_entropy_diff", "token_entropy_diff")  # what training costs: key = CI/p prefix


def _per_sample_drift(r: dict) -> dict[str, float]:
    return {"kl_diff": r["logp"] - r["ref_logp"], "pred_entropy_diff": r["pred_entropy"]}


def compare_drift(scored: list[dict], start: list[dict], n_boot: int, tokens: Callable[[dict], list[int]]) -> dict:
    """Paired differences (same prompts, seed s with seed s) in what training costs: the per-sample
    KL term log π(y) − log π_ref(y), the predictive entropy and the token entropy (`tokens`: a
    record's content tokens). Needs the sampler's log-probs: {} for the human row.
    Returns {<key>, <key>_ci_lo, <key>_ci_hi, <key>_p} per key in `DRIFTS`."""
    if scored[0].get("logp") is None or start[0].get("logp") is None:
        return {}
    seeds = lambda recs: [r.get("seed_index", 0) for r in recs]  # noqa: E731
    pids = lambda recs: [r["prompt_id"] for r in recs]  # noqa: E731
    out = {}
    for key in DRIFTS[:2]:
        b = paired_prompt_bootstrap([_per_sample_drift(r)[key] for r in scored], pids(scored),
                                    [_per_sample_drift(r)[key] for r in start], pids(start), n_boot=n_boot,
                                    a_seeds=seeds(scored), b_seeds=seeds(start))
        out.update({key: b["diff"], f"{key}_ci_lo": b["lo"], f"{key}_ci_hi": b["hi"], f"{key}_p": b["p"]})
    h = paired_entropy_bootstrap([tokens(r) for r in scored], pids(scored), seeds(scored),
                                 [tokens(r) for r in start], pids(start), seeds(start), n_boot=n_boot)
    key = DRIFTS[2]
    return {**out, key: h["diff"], f"{key}_ci_lo": h["lo"], f"{key}_ci_hi": h["hi"], f"{key}_p": h["p"]}


def compare_to_start(scored: list[dict], start: list[dict], n_boot: int,
                     tokens: Callable[[dict], list[int]] | None = None) -> dict:
    """Differences policy - start policy on the same held-out prompts, for the reward, the judge
    and on_topic (where scored): a paired bootstrap over prompts (all samples of a prompt, of both
    models, move together) and, for pooled seeds, over seeds (seed s of the policy with the start
    under seed s's draws), with its p-value. `scored`, `start`: annotated sample records (prompt_id,
    the fields, optional seed_index). Returns {<gain key>, <prefix>_ci_lo, <prefix>_ci_hi, <prefix>_p};
    with `tokens` (a record's content tokens) also `compare_drift`'s KL and entropy differences."""
    out = {}
    for field, key, pre in GAINS:
        if field not in scored[0] or field not in start[0]:
            continue
        b = paired_prompt_bootstrap([r[field] for r in scored], [r["prompt_id"] for r in scored],
                                    [r[field] for r in start], [r["prompt_id"] for r in start],
                                    n_boot=n_boot, a_seeds=[r.get("seed_index", 0) for r in scored],
                                    b_seeds=[r.get("seed_index", 0) for r in start])
        out.update({key: b["diff"], f"{pre}_ci_lo": b["lo"], f"{pre}_ci_hi": b["hi"], f"{pre}_p": b["p"]})
    return {**out, **(compare_drift(scored, start, n_boot, tokens) if tokens else {})}


def with_holm(rows: list[dict]) -> list[dict]:
    """Copies of `rows` (each with `compare_to_start`'s keys) with each gain p-value adjusted (Holm,
    per metric, `<prefix>_p_holm`) for the number of policies compared with the start."""
    rows = [dict(r) for r in rows]
    for pre in [pre for _, _, pre in GAINS] + list(DRIFTS):
        if rows and all(f"{pre}_p" in r for r in rows):
            for r, p in zip(rows, holm([r[f"{pre}_p"] for r in rows])):
                r[f"{pre}_p_holm"] = p
    return rows


def versus_start(start: dict, runs: dict[str, dict], n_boot: int,
                 tokens: Callable[[dict], list[int]] | None = None) -> tuple[list[dict], list[dict]]:
    """Level 1's comparisons. `start`: {"metrics", "scored"} of the start policy (seeds pooled);
    `runs`: {name: {"metrics", "scored"}} of each trained model (seeds pooled; seed s paired with the
    start under seed s's draws). Returns (rows: the start's metrics, then each run's with its gains
    over the start, Holm over the runs; between: every pair of runs, a - b, Holm over the pairs). With
    `tokens` (a record's content tokens) both also hold the paired KL and entropy differences."""
    check_p_floor(n_boot, len(runs))
    rows = with_holm([{**r["metrics"], **compare_to_start(r["scored"], start["scored"], n_boot, tokens)}
                      for r in runs.values()])
    names = list(runs)
    between = with_holm([{"a": a, "b": b, **compare_to_start(runs[a]["scored"], runs[b]["scored"], n_boot, tokens)}
                         for i, a in enumerate(names) for b in names[i + 1:]])
    return [start["metrics"], *rows], between
