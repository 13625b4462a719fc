"""Levels 2 and 3 as frontiers, not points: per divergence a β sweep × seeds, traced as reward-vs-KL,
judge-vs-KL and reward-vs-predictive-entropy curves; a best-of-N baseline from the start policy's
own samples (Gao et al. 2023: the curve any alignment method must beat); and divergences compared
at *matched KL* — β is not comparable across f′ (Wang et al. 2023), so one shared β shows how far
each loss moves, not which trade-off is better.

The KL-optimal curve (`optimum`) bounds every curve; each trained point is placed against best-of-N
and it by the share of their gain it reaches at its own KL (`gain_fractions`).

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

from ..presets import SWEEP_BEST_OF_N
from .stats import SharedBootstrap, bootstrap_p, holm, summary, verdict

BON_NS = SWEEP_BEST_OF_N  # the N values of the best-of-N curve (those <= the samples per prompt)
BON = "best-of-N"
READ_ALONG = "sqrt_kl"  # how curves are read between their points (`interpolate`), recorded in each result
START_LABEL = "start"
LABEL_NOTES = {"chi2": "chi2 (outside f-DPO: heuristic)"}  # f′(0) finite: Z(x) does not cancel


def plot_prefix(study: str) -> str:
    """The file-name prefix of a frontier study's plots: `frontier` for the sweep, `<study>_frontier` else."""
    return "frontier" if study == "sweep" else f"{study}_frontier"


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


def best_of_n_values(scored: list[dict], n: int, fields: tuple[str, ...], by: str = "reward") -> list[dict]:
    """One record per (seed, prompt): the expected `fields` of the best-of-n (by the training
    reward, or the field `by`) among that prompt's samples of that seed, with its prompt_id (for the bootstrap)."""
    groups: dict[tuple, list[dict]] = {}
    for r in scored:
        groups.setdefault((r.get("seed_index", 0), r["prompt_id"]), []).append(r)
    out = []
    for (seed, pid), rs in groups.items():
        rs = sorted(rs, key=lambda r: r[by])
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


def judge_selected(start: list[dict], boot: SharedBootstrap, ns: tuple[int, ...]) -> dict | None:
    """What of best-of-n's reward gain the judge's view of the samples accounts for: per n >= 2, best-of-n
    picked by the judge instead of the reward, its reward gain over the start's mean as a share of the gain
    best-of-n picked by the reward buys (the same samples of `start`, the start policy's best-of-N draw; paired
    bootstrap draws), and the reward's correlation with the judge within a (seed, prompt) group. E.g. one prompt,
    rewards (0, 1), judge (1, 0): best-of-2 by the judge gains -0.5 where by the reward +0.5, share -1. None
    without judge scores. Rows {n, kl (best-of-n's `bon_kl`), share, share_lo, share_hi}; {"within_prompt_corr"
    (None when no group varies), "by_n"}."""
    if not start or "judge" not in start[0]:
        return None
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in start:
        groups.setdefault((r.get("seed_index", 0), r["prompt_id"]), []).append((r["reward"], r["judge"]))
    base = boot.mean(best_of_n_values(start, 1, ("reward",)), _value("reward"))  # (n_boot+1,) the start's mean
    m = min(len(g) for g in groups.values())
    rows = []
    for n in (n for n in ns if 2 <= n <= m):
        own = boot.mean(best_of_n_values(start, n, ("reward",)), _value("reward")) - base
        judged = boot.mean(best_of_n_values(start, n, ("reward",), by="judge"), _value("reward")) - base
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(own > 0, judged / own, np.nan)  # (n_boot+1,)
        ok = share[1:][np.isfinite(share[1:])]
        lo, hi = np.percentile(ok, [2.5, 97.5]) if len(ok) else (np.nan, np.nan)
        rows.append({"n": n, "kl": bon_kl(n), "share": _number(share[0]), "share_lo": _number(lo), "share_hi": _number(hi)})
    dev = [np.array(g) - np.mean(g, axis=0) for g in groups.values()]  # per group: (M, 2) centred
    d = np.concatenate(dev)
    norm = math.sqrt((d[:, 0] ** 2).sum() * (d[:, 1] ** 2).sum())
    corr = float((d[:, 0] * d[:, 1]).sum() / norm) if norm > 0 else None
    return {"within_prompt_corr": corr, "by_n": rows}


def gain_fraction(point: dict, start: dict, ref: list[dict], field: str) -> np.ndarray:
    """(n_boot+1,) (y_point - y_start) / (y_ref(KL_point) - y_ref(start)) per bootstrap draw: the
    share of `ref`'s gain a point reaches at its own KL, `ref` interpolated at the point's KL of that
    draw. Each gain is taken from its own curve's start: the point's from `start` (the start policy
    on the same draws as the point), `ref`'s from its first point where that is the start policy's
    samples (best-of-1, or the optimum at β = ∞; else from `start`). NaN where that draw of `ref`
    does not reach the KL or gains nothing there (<= 0)."""
    if not ref or not all(field in p for p in ref):
        return np.full(point["kl"].shape, np.nan)
    base = ref[0] if ref[0].get("n") == 1 or ref[0].get("beta") == math.inf else start
    den = interpolate(ref, field, point["kl"]) - base[field]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (point[field] - start[field]) / den, np.nan)


def _number(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _fraction_summary(name: str, frac: np.ndarray, kl: float, ref: list[dict]) -> dict:
    valid = ~np.isnan(frac[1:])
    lo, hi = np.percentile(frac[1:][valid], [2.5, 97.5]) if valid.any() else (math.nan, math.nan)
    kls = [float(p["kl"][0]) for p in ref]
    why = (None if not math.isnan(frac[0]) else "no curve" if not ref else "beyond" if kl > max(kls)
           else "below" if kl < min(kls) else "no gain")
    return {f"frac_{name}": _number(frac[0]), f"frac_{name}_lo": _number(lo), f"frac_{name}_hi": _number(hi),
            f"valid_{name}": float(valid.mean()), f"kl_max_{name}": max(kls, default=None), f"why_{name}": why}


def gain_fractions(curves: dict[str, list[dict]], bon: list[dict], opt: list[dict],
                   fields: tuple[str, ...] = ("reward", "judge")) -> list[dict]:
    """Per trained point (label, β; seeds pooled) and field: the share of best-of-N's (`frac_bon`) and
    of the optimum's (`frac_opt`) gain over the start it reaches at its own KL (`gain_fraction`), the
    95 % percentile interval of the valid draws (`_lo`, `_hi`), the share of valid draws (`valid_`)
    and the largest KL each reference curve reaches (`kl_max_`; point estimates). A fraction is None
    where its point estimate is not defined, `why_` says why: "beyond" / "below" the reference
    curve's KL range, "no gain" of it there (<= 0), "no curve" (no optimum); else `why_` is None."""
    rows = []
    for label, pts in curves.items():
        for p in pts[1:]:
            for field in (f for f in fields if f in p and f in pts[0]):
                row = {"label": label, "beta": p["beta"], "kl": float(p["kl"][0]), "field": field}
                for name, ref in (("bon", bon), ("opt", opt)):
                    row.update(_fraction_summary(name, gain_fraction(p, pts[0], ref, field), row["kl"], ref))
                rows.append(row)
    return rows


def root_kl(kl) -> np.ndarray:
    """√KL, signed (a bootstrap draw of a KL near its start may fall below it): the axis curves are read on."""
    kl = np.asarray(kl, dtype=float)
    return np.sign(kl) * np.sqrt(np.abs(kl))


def interpolate(curve: list[dict], field: str, at: float | np.ndarray, x: str = "kl") -> np.ndarray:
    """(n_boot+1,) the curve's `field` at KL = `at` (one KL, or (n_boot+1,) one per draw), linear in
    √(KL − KL_start) between consecutive points *in the curve's own order* (β from ∞ down, N up), per
    bootstrap draw, KL_start being the KL of the curve's first point where that is the start policy's
    samples (best-of-1, β = ∞; with bf16 sampling it is not 0); NaN where no segment of that draw spans
    `at`. √KL because best-of-N's and the optimum's reward gains grow about linearly in it (Gao et al.
    2023; a Gaussian reward tilted to KL k gains σ√(2k)): linear in KL, the chord from the start to
    best-of-2 (KL 0.19) would sit far below the curve and flatter every point under it. The plots draw
    KL on a √ scale, so their straight segments are these (from KL 0, near the start's KL). `x`: the axis matched on, KL unless another
    field is named (e.g. "reward": the value at a matched reward, linear in it)."""
    kl = np.stack([p[x] for p in curve], 1)  # (B, K)
    at = np.asarray(at, dtype=float)
    if x == "kl":
        first = curve[0]
        from_start = first.get("n") == 1 or first.get("beta") == math.inf
        start = np.broadcast_to(np.asarray(first["kl"] if from_start else 0.0, dtype=float), kl.shape[:1])  # (B,)
        kl, at = root_kl(kl - start[:, None]), root_kl(at - start)
    y = np.stack([p[field] for p in curve], 1)  # (B, K)
    out = np.full(kl.shape[0], np.nan)
    for k in range(kl.shape[1] - 1):
        x0, x1 = kl[:, k], kl[:, k + 1]
        hit = np.isnan(out) & (np.minimum(x0, x1) <= at) & (at <= np.maximum(x0, x1))
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(x1 != x0, (at - x0) / (x1 - x0), 0.0)
        out[hit] = (y[:, k] + t * (y[:, k + 1] - y[:, k]))[hit]
    return out


def monotone(curve: list[dict], x: str = "kl") -> bool:
    """Whether the curve's KL (point estimates; or the `x` field) rises along its parameter: only then is
    "the value at KL x" one number (a curve that crosses a KL twice is reported, not interpolated)."""
    kl = [p[x][0] for p in curve]
    return all(b >= a for a, b in zip(kl, kl[1:]))


def trained_range(curve: list[dict], x: str = "kl") -> tuple[float, float]:
    """The KL (or `x`) range a curve has *measured* points on both ends of: its trained points (β < ∞, or
    N >= 2), not the shared start it is drawn from — below its first trained point a curve is only
    the segment from the start, and differences there say nothing about the divergence."""
    kl = [p[x][0] for p in curve[1:]]
    return (min(kl), max(kl)) if kl else (math.inf, -math.inf)


def matched_kl_grid(curves: dict[str, list[dict]], k: int = 3, x: str = "kl") -> list[float]:
    """k KL values inside every curve's trained range: the centres of k equal log-spaced bins of the
    common range (point estimates); [] when the ranges do not overlap. Another axis `x` (a reward,
    which may be negative): equal linear bins."""
    lo = max(max(trained_range(c, x)[0], 1e-3) if x == "kl" else trained_range(c, x)[0] for c in curves.values())
    hi = min(trained_range(c, x)[1] for c in curves.values())
    if hi <= lo:
        return []
    edges = np.geomspace(lo, hi, 2 * k + 1) if x == "kl" else np.linspace(lo, hi, 2 * k + 1)
    return [float(x) for x in edges[1::2]]


def n_comparisons(n_curves: int, n_grid: int) -> int:
    """Comparisons per field (every pair at every grid KL): the Holm family size, for sizing n_boot."""
    return n_curves * (n_curves - 1) // 2 * n_grid


def _compare(a: list[dict], b: list[dict], field: str, kl: float, x: str = "kl") -> dict | None:
    """One paired comparison a - b of `field` at KL `kl` (or at `x` = `kl`), or None where it is not
    defined: `kl` outside either curve's trained range, or fewer than 99 % of the draws reach it."""
    if not all(trained_range(c, x)[0] <= kl <= trained_range(c, x)[1] for c in (a, b)):
        return None
    d = interpolate(a, field, kl, x) - interpolate(b, field, kl, x)
    valid = ~np.isnan(d[1:])
    if np.isnan(d[0]) or valid.mean() < 0.99:
        return None
    boot = d[1:][valid]  # (B,) the valid draws
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(d[0]), "lo": float(lo), "hi": float(hi), "p": bootstrap_p(boot), "boot_valid": float(valid.mean())}


def matched_kl_comparisons(curves: dict[str, list[dict]], grid: list[float] | None, fields: tuple[str, ...],
                           k: int = 3, x: str = "kl") -> list[dict]:
    """Every pair of (KL-monotone) curves at matched KL values, per field: the paired bootstrap
    difference a - b, its 95 % CI, p-value (`stats.bootstrap_p`, two-sided), Holm-adjusted p
    (per field, over all pairs and KL values) and the verdict for a. The KL values: `grid` where
    given (each used where it lies inside both trained ranges), else per pair `k` values inside the
    overlap of the two curves' trained ranges (`matched_kl_grid` of the pair) — so best-of-N, whose
    KL stops near log N - (N - 1)/N of its largest N (3.17 at N = 64), is still compared with every
    curve that overlaps it.
    Size n_boot >= 100 x `n_comparisons`: the p-value floor is 2 / (B + 1), so Holm over m cannot go
    below 2m / (B + 1) (0.02 at B = 100 m). `x`: match on another field instead of KL (e.g. "reward":
    diversity at matched reward, the f-DPO paper's axis); each row then holds its value under `x` and
    says `"x": x`."""
    ok = [c for c in curves if all(x in p for p in curves[c]) and monotone(curves[c], x)]
    rows = []
    for field in fields:
        block = []
        for a, b in combinations(ok, 2):
            if not all(field in p and x in p for p in curves[a] + curves[b]):
                continue
            for kl in (grid if grid is not None else matched_kl_grid({a: curves[a], b: curves[b]}, k, x)):
                r = _compare(curves[a], curves[b], field, kl, x)
                if r is not None:
                    block.append({"field": field, x: kl, "a": a, "b": b, **r, **({} if x == "kl" else {"x": x})})
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
