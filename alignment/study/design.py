"""The experiment's design, measured from its own data: where the variance of a paired gain comes
from (seeds, prompts, the rest), what that says about sizes, and how well the crossed bootstrap's
95 % CI covers at those sizes and components (by simulation).

A Level-1 gain is the mean over seeds s and prompts p of d_sp = (mean reward of the policy's samples
on prompt p under seed s) - (the same for the start policy under seed s's draws). Model:

    d_sp = mu + a_s + b_p + r_sp,   a_s ~ (0, var_seed), b_p ~ (0, var_prompt), r_sp ~ (0, var_resid)

(crossed random effects; r holds the seed x prompt interaction and the sampling noise of K samples).
Then Var(mean d) = var_seed / S + var_prompt / P + var_resid / (S P): more prompts shrink the middle
term, more samples per prompt only the last, and only more seeds the first.
"""
from __future__ import annotations

import numpy as np

from .stats import hierarchical_weights


def cell_means(values, prompts, seeds) -> np.ndarray:
    """(S, P) mean of `values` per (seed, prompt) cell (seeds and prompts in sorted order); every
    cell must hold at least one value."""
    ps, ss = sorted(set(prompts)), sorted(set(seeds))
    ip, iseed = {p: i for i, p in enumerate(ps)}, {s: i for i, s in enumerate(ss)}
    sums, n = np.zeros((len(ss), len(ps))), np.zeros((len(ss), len(ps)))
    for v, p, s in zip(values, prompts, seeds):
        sums[iseed[s], ip[p]] += v
        n[iseed[s], ip[p]] += 1
    if (n == 0).any():
        raise ValueError("cell_means: every seed must have values on every prompt")
    return sums / n


def variance_components(d: np.ndarray) -> dict:
    """Method-of-moments (two-way random-effects ANOVA, one value per cell) components of an (S, P)
    table of paired differences, negative estimates set to 0, and the squared standard error of its
    grand mean split by source: {seed, prompt, resid, se, share_seed, share_prompt, share_resid}."""
    S, P = d.shape
    m, ms, mp = d.mean(), d.mean(1), d.mean(0)  # grand, (S,) seed means, (P,) prompt means
    resid = d - ms[:, None] - mp[None, :] + m
    ms_res = (resid ** 2).sum() / max((S - 1) * (P - 1), 1)
    var_seed = max(0.0, (P * ((ms - m) ** 2).sum() / max(S - 1, 1) - ms_res) / P) if S > 1 else 0.0
    var_prompt = max(0.0, (S * ((mp - m) ** 2).sum() / max(P - 1, 1) - ms_res) / S) if S > 1 else \
        float(((mp - m) ** 2).sum() / max(P - 1, 1))  # one seed: prompt and residual are not separable
    var_resid = float(ms_res) if S > 1 else 0.0
    parts = {"seed": var_seed / S, "prompt": var_prompt / P, "resid": var_resid / (S * P)}
    se2 = sum(parts.values())
    return {"seed": float(var_seed), "prompt": float(var_prompt), "resid": var_resid, "se": float(np.sqrt(se2)),
            **{f"share_{k}": float(v / se2 if se2 > 0 else 0.0) for k, v in parts.items()}}


def crossed_coverage(var_seed: float, var_prompt: float, var_resid: float, n_seeds: int, n_prompts: int,
                     reps: int = 400, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> float:
    """Share of `reps` simulated (S, P) tables (normal effects with these variances, true mean 0)
    whose crossed-bootstrap percentile CI of the mean (seeds x prompts, `hierarchical_weights`)
    contains 0: the CI's actual coverage at this design."""
    rng = np.random.default_rng(seed)
    w = hierarchical_weights(n_prompts, n_seeds, n_boot, seed + 7)  # (n_boot, S, P)
    wsum = w.sum((1, 2))  # (n_boot,)
    q = (1 - level) / 2 * 100
    hits = 0
    for _ in range(reps):
        d = (rng.normal(0, np.sqrt(var_seed), (n_seeds, 1)) + rng.normal(0, np.sqrt(var_prompt), (1, n_prompts))
             + rng.normal(0, np.sqrt(var_resid), (n_seeds, n_prompts)))
        boot = np.einsum("bsp,sp->b", w, d) / wsum
        lo, hi = np.percentile(boot, [q, 100 - q])
        hits += lo <= 0 <= hi
    return float(hits / reps)


def gain_design(scored: list[dict], start: list[dict], field: str = "reward", reps: int = 400) -> dict:
    """`variance_components` of a policy's paired gain over the start in `field` (records with
    prompt_id, seed_index and the field), plus the simulated coverage of its 95 % CI at this design."""
    key = lambda recs: ([r[field] for r in recs], [r["prompt_id"] for r in recs],  # noqa: E731
                        [r.get("seed_index", 0) for r in recs])
    d = cell_means(*key(scored)) - cell_means(*key(start))  # (S, P)
    comp = variance_components(d)
    cover = crossed_coverage(comp["seed"], comp["prompt"], comp["resid"], *d.shape, reps=reps)
    return {**comp, "n_seeds": d.shape[0], "n_prompts": d.shape[1], "coverage": cover}


def level1_design(runs: dict[str, list[dict]], start: list[dict], fields=("reward", "judge")) -> dict:
    """{policy name: {field: `gain_design`}} for every trained policy's pooled records (the fields
    the records carry)."""
    return {name: {f: gain_design(recs, start, f) for f in fields if f in recs[0] and f in start[0]}
            for name, recs in runs.items()}
