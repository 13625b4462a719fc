"""The KL-regularised optimum π_β(y|x) ∝ π_ref(y|x)·exp(r(x,y)/β): the most reward any policy reaches at
its KL, and the best value of the objective E[r] - β·KL(π || π_ref) that RL with a KL penalty (RLOO) and
reward distillation maximise at their β. Both are estimated from the start policy's own samples (the
best-of-N draw, N per prompt) by self-normalised weights per (seed, prompt), valid well below KL log N
(`optimum_kl_cap`); bootstrapped over seeds × prompts like every curve (`stats.SharedBootstrap`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .stats import SharedBootstrap

OPTIMUM = "KL-optimal"  # π_β ∝ π_ref·exp(r/β): the most reward any policy gets at its KL (a bound, not compared)
OPT_KL_LO, OPT_K = 0.05, 10  # the optimum's β grid: OPT_K values, log-spaced from KL ~0.05 up to its cap
OPT_MIN_ESS = 8  # the optimum's KL cap keeps its weights on >= 8 samples per prompt (`optimum_kl_cap`)
OBJ_MIN_ESS = 16  # the best objective's (log of a mean of exp(r/β): biased low sooner) keeps them on >= 16


class _Samples(NamedTuple):
    """The start policy's samples per (seed, prompt), padded to the most samples M of any group."""
    keys: list[tuple]  # (G,) (seed_index, prompt_id)
    vals: dict[str, np.ndarray]  # field -> (G, M)
    log_ratio: np.ndarray  # (G, M) log q - log π_ref of each sample (q: the sampler)
    mask: np.ndarray  # (G, M) a sample, not padding


def _samples(start: list[dict], fields: tuple[str, ...]) -> _Samples:
    groups: dict[tuple, list[dict]] = {}
    for r in start:
        groups.setdefault((r.get("seed_index", 0), r["prompt_id"]), []).append(r)
    keys, M = list(groups), max(len(rs) for rs in groups.values())
    out = _Samples(keys, {f: np.zeros((len(keys), M)) for f in ("reward", *fields)}, np.zeros((len(keys), M)),
                   np.zeros((len(keys), M), dtype=bool))
    for g, k in enumerate(keys):
        rs = groups[k]
        out.mask[g, :len(rs)] = True
        out.log_ratio[g, :len(rs)] = [r["logp"] - r["ref_logp"] for r in rs]
        for f, a in out.vals.items():
            a[g, :len(rs)] = [r[f] for r in rs]
    return out


def _weights(s: _Samples, beta: float) -> np.ndarray:
    """(G, M) self-normalised weights of π_β on each group's samples, w ∝ exp(r/β + log π_ref - log q)
    (β = ∞: π_ref itself)."""
    logits = np.where(s.mask, s.vals["reward"] / beta - s.log_ratio, -np.inf)
    w = np.exp(logits - logits.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True)


def _tilt(s: _Samples, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(G, M) π_β's weights (`_weights`) and (G,) each group's KL(π_β || π_ref) = Σ w log(w / w0), w0 the
    weights at β = ∞ (π_ref's): exactly 0 at β = ∞, and log N - H(w) when the sampler is π_ref."""
    w, w0 = _weights(s, beta), _weights(s, math.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        return w, np.where(w > 0, w * (np.log(w) - np.log(w0)), 0.0).sum(1)


def optimum_kl_cap(start: list[dict], min_ess: int = OPT_MIN_ESS) -> float:
    """log(N / min_ess) for the fewest samples N of any (seed, prompt): where the weights still
    spread over exp H(w) = N·exp(-KL) >= min_ess samples (exact when the sampler is π_ref, close when q ≈ π_ref) (`OPT_MIN_ESS` for the curve, `OBJ_MIN_ESS`
    for the best objective). Self-normalised weights over N samples
    are biased as KL nears log N (all weight on the best sample: the estimate turns into best-of-N,
    below the true optimum); with N(0, 1) rewards and N = 64 it falls below best-of-N from KL ~2.5
    (log N - 1.7), so the curve stops at log(N / 8) (2.08 nats for N = 64)."""
    counts: dict[tuple, int] = {}
    for r in start:
        k = (r.get("seed_index", 0), r["prompt_id"])
        counts[k] = counts.get(k, 0) + 1
    return math.log(min(counts.values()) / min_ess)


def optimum_betas(start: list[dict], kl_lo: float = OPT_KL_LO, kl_hi: float | None = None,
                  k: int = OPT_K) -> tuple[float, ...]:
    """k β values, large to small, log-spaced between the β whose optimum (point estimate, mean over
    seeds and prompts) has KL `kl_lo` and the one at `kl_hi` (default `optimum_kl_cap`; at most 90 %
    of the KL of all weight on each group's best samples, where repeated samples cap it lower);
    () when the samples cannot reach `kl_lo` (too few samples, or equal rewards)."""
    s = _samples(start, ())
    scale = float(np.std(s.vals["reward"][s.mask])) or 1.0
    lo_b, hi_b = math.log(scale * 1e-4), math.log(scale * 1e4)

    def mean_kl(log_b: float) -> float:
        return float(_tilt(s, math.exp(log_b))[1].mean())

    kl_hi = min(optimum_kl_cap(start) if kl_hi is None else kl_hi, 0.9 * mean_kl(lo_b))
    if kl_hi <= kl_lo:
        return ()

    def solve(target: float) -> float:  # KL falls as β rises: bisect on log β
        a, b = lo_b, hi_b
        for _ in range(60):
            a, b = ((a + b) / 2, b) if mean_kl((a + b) / 2) > target else (a, (a + b) / 2)
        return math.exp((a + b) / 2)

    return tuple(float(b) for b in np.geomspace(solve(kl_lo), solve(kl_hi), k))


def optimum_curve(start: list[dict], boot: SharedBootstrap, fields: tuple[str, ...],
                  betas: tuple[float, ...] | None = None) -> list[dict]:
    """The KL-regularised optimum π_β(y|x) ∝ π_ref(y|x)·exp(r(x,y)/β), which maximises
    E[r] - β·KL(π || π_ref): the most reward any policy can reach at its KL. Estimated from the start
    policy's samples (the records `bon_curve` uses) by self-normalised importance weights per
    (seed, prompt), w ∝ exp(r/β + log π_ref - log q) — the log π_ref - log q term (ref_logp - logp)
    corrects for the sampler q (the start in its sampling dtype) not being exactly π_ref —;
    E_β[f] = Σ w f, KL(π_β || π_ref) = Σ w log(w / w0) (w0: π_ref's weights, `_tilt`), per (seed, prompt),
    then bootstrapped like every curve. Points like `bon_curve`'s: {beta, kl, <field>: (n_boot+1,)},
    from β = ∞ (π_ref) down through `betas` (default `optimum_betas`: KL ~0.05 up to
    `optimum_kl_cap` = log(N / 8), beyond which self-normalisation over N samples is biased low).
    [] when no β reaches KL 0.05 below the cap (N <= 8 samples per prompt)."""
    keep = tuple(f for f in fields if f in start[0] and start[0][f] is not None and f not in ("pred_entropy", "reward"))
    betas = optimum_betas(start) if betas is None else tuple(betas)
    if not betas:
        return []
    s, out = _samples(start, keep), []
    for beta in (math.inf, *sorted(betas, reverse=True)):
        w, kl = _tilt(s, beta)
        means = {f: (w * a).sum(1) for f, a in s.vals.items() if f in fields}  # (G,) E_β[f] per (seed, prompt)
        recs = [{"prompt_id": pid, "seed_index": seed, "opt_kl": kl[g], **{f: m[g] for f, m in means.items()}}
                for g, (seed, pid) in enumerate(s.keys)]
        out.append({"beta": beta, "kl": boot.mean(recs, lambda r: r["opt_kl"]),
                    **{f: boot.mean(recs, lambda r, f=f: r[f]) for f in means}})
    return out


def optimal_objective(start: list[dict], boot: SharedBootstrap, beta: float) -> tuple[np.ndarray, float]:
    """How much the best objective at `beta` beats the start policy's: (n_boot+1,) J*(β) - J(π_ref), with
    J*(β) = max_π E_π[r] - β·KL(π || π_ref) = β·log E_ref[exp(r/β)] and J(π_ref) = E_ref[r], per (seed,
    prompt) from the start's samples: π_β's E[r] - β·KL with `_tilt`'s weights and KL (the estimate
    `optimum_curve` draws; with w0 π_ref's weights it is exactly β·log Σ w0 exp(r/β)), bootstrapped; and π_β's
    KL (point estimate, mean over groups) to check against `optimum_kl_cap(start, OBJ_MIN_ESS)`. E.g.
    rewards (0, 1) under π_ref, β 1: log((1 + e) / 2) - 0.5 = 0.120."""
    s = _samples(start, ())
    r, w0 = s.vals["reward"], _weights(s, math.inf)  # (G, M), π_ref's weights on each group's samples
    w, kl = _tilt(s, beta)  # (G, M), (G,)
    gain = (w * r).sum(1) - beta * kl - (w0 * r).sum(1)  # (G,) >= 0 (Jensen)
    recs = [{"prompt_id": pid, "seed_index": seed, "gain": gain[g]} for g, (seed, pid) in enumerate(s.keys)]
    return boot.mean(recs, lambda x: x["gain"]), float(kl.mean())


def objective_progress(curves: dict[str, list[dict]], start: list[dict], boot: SharedBootstrap) -> list[dict]:
    """Per trained point of `curves` (methods that maximise E[r] - β·KL at their β: RLOO, reward
    distillation), how far it climbed toward the best objective at its β: (J - J_start) / (J*(β) - J(π_ref)),
    J = reward - β·KL of the point and of its curve's start (both measured on the evaluation draws), the
    denominator from the start's samples `start` (`optimal_objective`; the same prompts and seeds, paired by
    the shared bootstrap). 1: the KL-optimal policy π_β; 0: no better than the start (any reward it gained
    paid for in KL). Rows {label, beta, kl, objective_gain, optimal_gain, optimum_kl, progress, progress_lo,
    progress_hi (95 % interval of the draws), why}: progress None where it cannot be read, `why` "beyond"
    (π_β needs more KL than `optimum_kl_cap(start, OBJ_MIN_ESS)`: the estimate of J* is biased low there, so
    progress would read high; below the cap it is still a slight upper estimate) or "no gain" (J* - J(π_ref)
    <= 0: rewards that do not vary). CI bounds None when over 1 % of the draws have no gain."""
    cap, best, rows = optimum_kl_cap(start, OBJ_MIN_ESS), {}, []
    for label, pts in curves.items():
        for p in pts[1:]:
            beta = p["beta"]
            if beta not in best:
                best[beta] = optimal_objective(start, boot, beta)
            opt, opt_kl = best[beta]
            gain = p["reward"] - beta * p["kl"] - (pts[0]["reward"] - beta * pts[0]["kl"])  # (n_boot+1,)
            why = "beyond" if opt_kl > cap else "no gain" if not opt[0] > 0 else None
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(opt > 0, gain / opt, np.nan)
            ok = np.isfinite(frac[1:])
            lo, hi = np.percentile(frac[1:][ok], [2.5, 97.5]) if why is None and ok.mean() >= 0.99 else (None, None)
            rows.append({"label": label, "beta": beta, "kl": float(p["kl"][0]), "objective_gain": float(gain[0]),
                         "optimal_gain": float(opt[0]), "optimum_kl": opt_kl, "kl_cap": cap,
                         "progress": None if why else float(frac[0]), "progress_lo": None if lo is None else float(lo),
                         "progress_hi": None if hi is None else float(hi), "why": why})
    return rows
