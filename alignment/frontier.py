"""Level 2/3 as frontiers, not points: per divergence a β sweep × seeds, traced as reward-vs-KL,
judge-vs-KL and reward-vs-predictive-entropy curves; a best-of-N baseline from the start policy's
own samples (Gao et al. 2022: the curve any alignment method must beat); and divergences compared
at *matched KL* — β is not comparable across f′ (Wang et al. 2023), so one shared β shows how far
each loss moves, not which trade-off is better.

Statistics (from `stats`): every point pools its seeds; all models are evaluated on the same
held-out prompts, so one bootstrap draw of seeds x prompts (`stats.SharedBootstrap`) is applied to
every point at once — differences between curves are paired, and samples of one prompt move
together; p-values are `stats.bootstrap_p`, verdicts `stats.verdict`. Pure functions of annotated
samples (`evaluate.annotate` records), tested on hand-made cases.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from .presets import SWEEP_BEST_OF_N
from .stats import SharedBootstrap, bootstrap_p, holm, summary, verdict

BON_NS = SWEEP_BEST_OF_N  # the N values of the best-of-N curve (those <= the samples per prompt)
BON = "best-of-N"
START_LABEL = "start"
LABEL_NOTES = {"chi2": "chi2 (outside f-DPO: heuristic)"}  # f′(0) finite: Z(x) does not cancel


def family_label(loss: str, alpha: float) -> str:
    """reverse_kl, alpha=0.3, chi2 (outside f-DPO: heuristic), ..."""
    return f"alpha={alpha:g}" if loss == "alpha" else LABEL_NOTES.get(loss, loss)


def bon_kl(n: int) -> float:
    """KL(best-of-n || π) = log n - (n - 1)/n (Stiennon et al. 2020; an upper bound, exact without
    reward ties, Beirami et al. 2024)."""
    if n < 1:
        raise ValueError(f"bon_kl: n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def bon_weights(m: int, n: int) -> np.ndarray:
    """(m,) probabilities that the i-th smallest of m rewards is the best of n drawn from the m
    without replacement: C(i-1, n-1) / C(m, n). The expected best-of-n value from m >= n samples
    is these weights on the values sorted by reward (unbiased; uses all m samples)."""
    if not 1 <= n <= m:
        raise ValueError(f"bon_weights: need 1 <= n <= m, got n={n}, m={m}")
    return np.array([math.comb(i, n - 1) for i in range(m)], dtype=np.float64) / math.comb(m, n)


def best_of_n_values(scored: list[dict], n: int, fields: tuple[str, ...]) -> list[dict]:
    """One record per (seed, prompt): the expected `fields` of the best-of-n (by the training
    reward) among that prompt's samples of that seed, with its prompt_id (for the bootstrap)."""
    groups: dict[tuple, list[dict]] = {}
    for r in scored:
        groups.setdefault((r.get("seed_index", 0), r["prompt_id"]), []).append(r)
    out = []
    for (seed, pid), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["reward"])
        w = bon_weights(len(rs), n)
        out.append({"prompt_id": pid, "seed_index": seed,
                    **{f: float(w @ np.array([r[f] for r in rs], dtype=np.float64)) for f in fields}})
    return out


def _value(name: str):
    if name == "kl":
        return lambda r: r["logp"] - r["ref_logp"]
    return lambda r: r[name]


def curve_points(points: dict[str, list[dict]], start: list[dict], boot: SharedBootstrap, fields: tuple[str, ...]) -> dict:
    """{label: [point...]}: per trained point (label, β) its bootstrapped KL and `fields`; every
    curve starts at the start policy (β -> ∞). A point: {beta, kl, <field>: (n_boot+1,) arrays}."""
    def point(beta, recs):
        return {"beta": beta, "kl": boot.mean(recs, _value("kl")),
                **{f: boot.mean(recs, _value(f)) for f in fields if f in recs[0] and recs[0][f] is not None}}

    origin = point(math.inf, start)
    return {label: [origin] + [point(beta, recs) for beta, recs in sorted(pts, key=lambda x: -x[0])]
            for label, pts in _by_label(points).items()}


def _by_label(points: dict[str, list[dict]]) -> dict[str, list[tuple[float, list[dict]]]]:
    out: dict[str, list] = {}
    for key, recs in points.items():
        label, beta = key.rsplit("@", 1)
        out.setdefault(label, []).append((float(beta), recs))
    return out


def bon_curve(start: list[dict], boot: SharedBootstrap, fields: tuple[str, ...], ns: tuple[int, ...] = BON_NS) -> list[dict]:
    """Best-of-n for each n from the start policy's samples (q: the start in its sampling dtype):
    KL(BoN || π_ref) = KL(BoN || q) + E_BoN[log q - log π_ref] = bon_kl(n) + the best-of-n mean
    of the samples' own log-ratio (0 when q is π_ref; bf16 sampling makes it a little > 0), and
    bootstrapped fields. No predictive entropy: BoN is not a model with per-token distributions."""
    m = min(sum(1 for r in start if r["prompt_id"] == p and r.get("seed_index", 0) == s)
            for s, p in {(r.get("seed_index", 0), r["prompt_id"]) for r in start})
    start = [{**r, "log_ratio": r["logp"] - r["ref_logp"]} for r in start]
    keep = tuple(f for f in fields if f in start[0] and f != "pred_entropy")
    out = []
    for n in (n for n in ns if n <= m):
        vals = best_of_n_values(start, n, keep + ("log_ratio",))
        kl = bon_kl(n) + boot.mean(vals, _value("log_ratio"))
        out.append({"n": n, "kl": kl, **{f: boot.mean(vals, _value(f)) for f in keep}})
    return out


def interpolate(curve: list[dict], field: str, at: float) -> np.ndarray:
    """(n_boot+1,) the curve's `field` at KL = `at`, linear in KL between consecutive points *in the
    curve's own order* (β from ∞ down, N up: what the plots connect), per bootstrap draw; NaN where
    no segment of that draw spans `at`."""
    kl = np.stack([p["kl"] for p in curve], 1)  # (B, K)
    y = np.stack([p[field] for p in curve], 1)  # (B, K)
    out = np.full(kl.shape[0], np.nan)
    for k in range(kl.shape[1] - 1):
        x0, x1 = kl[:, k], kl[:, k + 1]
        hit = np.isnan(out) & (np.minimum(x0, x1) <= at) & (at <= np.maximum(x0, x1))
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(x1 != x0, (at - x0) / (x1 - x0), 0.0)
        out[hit] = (y[:, k] + t * (y[:, k + 1] - y[:, k]))[hit]
    return out


def monotone(curve: list[dict]) -> bool:
    """Whether the curve's KL (point estimates) rises along its parameter: only then is "the value at
    KL x" one number (a curve that crosses a KL twice is reported, not interpolated)."""
    kl = [p["kl"][0] for p in curve]
    return all(b >= a for a, b in zip(kl, kl[1:]))


def trained_range(curve: list[dict]) -> tuple[float, float]:
    """The KL range a curve has *measured* points on both ends of: its trained points (β < ∞, or
    N >= 2), not the shared start it is drawn from — below its first trained point a curve is only
    the straight line from the start, and differences there say nothing about the divergence."""
    kl = [p["kl"][0] for p in curve[1:]]
    return (min(kl), max(kl)) if kl else (math.inf, -math.inf)


def matched_kl_grid(curves: dict[str, list[dict]], k: int = 3) -> list[float]:
    """k KL values inside every curve's trained range: the centres of k equal log-spaced bins of the
    common range (point estimates); [] when the ranges do not overlap."""
    lo = max(max(trained_range(c)[0], 1e-3) for c in curves.values())
    hi = min(trained_range(c)[1] for c in curves.values())
    if hi <= lo:
        return []
    edges = np.geomspace(lo, hi, 2 * k + 1)
    return [float(x) for x in edges[1::2]]


def n_comparisons(n_curves: int, n_grid: int) -> int:
    """Comparisons per field (every pair at every grid KL): the Holm family size, for sizing n_boot."""
    return n_curves * (n_curves - 1) // 2 * n_grid


def _compare(a: list[dict], b: list[dict], field: str, kl: float) -> dict | None:
    """One paired comparison a - b of `field` at KL `kl`, or None where it is not defined: `kl`
    outside either curve's trained range, or fewer than 99 % of the draws reach it."""
    if not all(trained_range(c)[0] <= kl <= trained_range(c)[1] for c in (a, b)):
        return None
    d = interpolate(a, field, kl) - interpolate(b, field, kl)
    valid = ~np.isnan(d[1:])
    if np.isnan(d[0]) or valid.mean() < 0.99:
        return None
    boot = d[1:][valid]  # (B,) the valid draws
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(d[0]), "lo": float(lo), "hi": float(hi), "p": bootstrap_p(boot), "boot_valid": float(valid.mean())}


def matched_kl_comparisons(curves: dict[str, list[dict]], grid: list[float] | None, fields: tuple[str, ...],
                           k: int = 3) -> list[dict]:
    """Every pair of (KL-monotone) curves at matched KL values, per field: the paired bootstrap
    difference a - b, its 95 % CI, p-value (`stats.bootstrap_p`, two-sided), Holm-adjusted p
    (per field, over all pairs and KL values) and the verdict for a. The KL values: `grid` where
    given (each used where it lies inside both trained ranges), else per pair `k` values inside the
    overlap of the two curves' trained ranges (`matched_kl_grid` of the pair) — so best-of-N, whose
    KL stops near log N - (N - 1)/N of its largest N (3.17 at N = 64), is still compared with every
    curve that overlaps it.
    Size n_boot >= 100 x `n_comparisons`: the p-value floor is 2 / (B + 1), so Holm over m cannot go
    below 2m / (B + 1) (0.02 at B = 100 m)."""
    ok = [c for c in curves if monotone(curves[c])]
    rows = []
    for field in fields:
        block = []
        for a, b in combinations(ok, 2):
            if not all(field in p for p in curves[a] + curves[b]):
                continue
            for kl in (grid if grid is not None else matched_kl_grid({a: curves[a], b: curves[b]}, k)):
                r = _compare(curves[a], curves[b], field, kl)
                if r is not None:
                    block.append({"field": field, "kl": kl, "a": a, "b": b, **r})
        for r, ph in zip(block, holm([r["p"] for r in block])):
            r["p_holm"] = ph
            r["verdict"] = verdict(r["lo"], r["hi"], ph)
        rows += block
    return rows


def point_table(curves: dict[str, list[dict]]) -> list[dict]:
    """Plain rows (label, β or n, mean/lo/hi of KL and each field) for JSON, plots and tables."""
    rows = []
    for label, pts in curves.items():
        for p in pts:
            row = {"label": label, "beta": p.get("beta"), "n": p.get("n")}
            for k, v in p.items():
                if isinstance(v, np.ndarray):
                    s = summary(v)
                    row.update({k: s["mean"], f"{k}_lo": s["lo"], f"{k}_hi": s["hi"]})
            rows.append(row)
    return rows
