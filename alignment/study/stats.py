"""Every statistical procedure of the package: bootstrap confidence intervals, the paired comparisons
behind "gain over the start" (applied to evaluations by `alignment.study.gains`) and "curve a vs curve b",
their p-values, Holm's correction, the verdict, and the power of a comparison. Pure functions of numpy
arrays and plain records.

Conventions, shared by every caller:

- **CIs** are percentile bootstrap intervals (95 % unless `level` says otherwise). Samples of one
  prompt are correlated (they share the prompt, and the reward scores it), so the bootstraps resample
  *prompts* with all their samples; with several seeds they resample seeds too (`hierarchical_weights`).
- **p-values** come from one function, `bootstrap_p`: two-sided, add-one,
  p = min(1, 2 min((1 + #{d <= 0}) / (B + 1), (1 + #{d >= 0}) / (B + 1))) over the B finite draws d
  of a difference. It is never 0: its floor is 2 / (B + 1), so Holm over m comparisons cannot go
  below 2m / (B + 1) — size B >= 100 m for a floor of 0.02.
- **Verdicts** (`verdict`): "higher" / "lower" when the (Holm-adjusted) p is below `ALPHA` and the
  CI excludes 0 on that side, else "not distinguishable at this size".
- **Power** (`detectable_difference`): the smallest true difference a comparison detects 80 % of the
  time at `ALPHA`, read off its CI's width.
"""
from __future__ import annotations

import math
import warnings
from statistics import NormalDist
from typing import Sequence

import numpy as np
from torch import Tensor

__all__ = [
    "ALPHA", "POWER", "MDE_Z", "NOT_DISTINGUISHABLE",
    "as_clean_array", "hierarchical_weights", "cell_sums",
    "bootstrap_p", "paired_prompt_bootstrap", "prompt_bootstrap", "prompt_bootstrap_entropy", "holm",
    "SharedBootstrap", "summary", "check_p_floor", "distinguishable",
    "verdict", "detectable_difference", "phi", "paired_phi_gap",
]

ALPHA = 0.05  # family-wise error rate of the "distinguishable" verdicts
POWER = 0.80  # the power at which the smallest detectable difference is stated
MDE_Z = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)  # 2.80: one comparison, no correction
NOT_DISTINGUISHABLE = "not distinguishable at this size"


# --------------------------------------------------------------------------- clustered bootstraps


def as_clean_array(values: Sequence[float] | np.ndarray | Tensor, name: str) -> np.ndarray:
    """1-D float64 array; raise ValueError on empty input or NaNs (with the NaN count)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name}: empty input")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"{name}: input contains {n_nan} NaN value(s) out of {arr.size}")
    return arr


def _check_level(level: float) -> float:
    """The lower percentile (in %) of a central `level` interval."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0 * 100.0


def _cells(prompts, seeds, P_index: dict | None = None) -> tuple[np.ndarray, np.ndarray, dict, int]:
    """(prompt index, seed index) per value, the prompt index map and the number of seeds."""
    index = P_index or {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    seeds = [0] * len(prompts) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError("bootstrap: one seed index per value is needed")
    s_index = {s: i for i, s in enumerate(sorted(set(seeds)))}
    return (np.array([index[p] for p in prompts], dtype=np.int64), np.array([s_index[s] for s in seeds], dtype=np.int64),
            index, len(s_index))


def hierarchical_weights(n_prompts: int, n_seeds: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, S, P) bootstrap weight of each (seed, prompt) cell: prompts resampled with replacement
    (multinomial counts) and, when there are several seeds, seeds too (independently): a CI over seeds
    x prompts, so training-run variance enters it, not only evaluation noise. One seed: the plain prompt
    bootstrap (the same draws). Caveat: with 3 seeds the seed part is coarse (10 distinct multisets; a
    percentile bootstrap shrinks the seed variance by (S-1)/S) and under-covers when seed and prompt
    variance are comparable (~0.85 for a nominal 0.95 in a simulation); more seeds fix that, not the method."""
    ws, wp = crossed_weights(n_prompts, n_seeds, n_boot, seed)
    return ws[:, :, None] * wp[:, None, :]  # (n_boot, S, P)


def crossed_weights(n_prompts: int, n_seeds: int, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two factors of `hierarchical_weights`: (n_boot, S) seed and (n_boot, P) prompt multinomial
    counts (seeds all 1 when there is one)."""
    wp = np.random.default_rng(seed).multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot)
    ws = (np.ones((n_boot, 1)) if n_seeds == 1 else
          np.random.default_rng(seed + 1).multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot))
    return ws.astype(np.float64), wp.astype(np.float64)


def cell_sums(x: np.ndarray, ip: np.ndarray, iseed: np.ndarray, S: int, P: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, P) sum of `x` and (S, P) number of values per (seed, prompt) cell; `ip`, `iseed`: (N,) indices."""
    flat = iseed * P + ip
    return (np.bincount(flat, x, S * P).reshape(S, P), np.bincount(flat, minlength=S * P).reshape(S, P).astype(np.float64))


def bootstrap_p(draws) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" from (B,) resampled differences d:
    min(1, 2 min((1 + #{d <= 0}) / (B + 1), (1 + #{d >= 0}) / (B + 1))) over the finite draws. The
    add-one form counts the observed data as one more draw, so p is never 0: its floor is 2 / (B + 1),
    and Holm over m comparisons cannot go below 2m / (B + 1)."""
    d = np.asarray(draws, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("bootstrap_p: no finite bootstrap draw")
    return float(min(1.0, 2 * min((1 + (d <= 0).sum()) / (d.size + 1), (1 + (d >= 0).sum()) / (d.size + 1))))


def paired_prompt_bootstrap(a, a_prompts, b, b_prompts, n_boot: int = 1000, level: float = 0.95,
                            seed: int = 0, a_seeds=None, b_seeds=None) -> dict:
    """Paired, prompt-clustered bootstrap of mean(a) - mean(b).

    `a[i]` is a per-sample value (e.g. a reward) of one model on prompt `a_prompts[i]`, `b` the
    same for another model on the *same* prompts (any number of samples per prompt). Samples of
    one prompt are correlated (they share the prompt, and the reward scores it), and both models
    see the same prompts: so we resample *prompts* with replacement, and each resampled prompt
    brings all its samples of both models. Statistic per resample: (sum of a over the drawn
    prompts' samples / their count) - (the same for b). With `a_seeds`/`b_seeds` (a seed index per
    value; seed s of a is paired with seed s of b, e.g. a policy trained with seed s and the start
    evaluated under the same draws) seeds are resampled too (`hierarchical_weights`).
    Returns {diff, lo, hi, p, n_prompts, n_seeds}; p = `bootstrap_p` of the resampled differences
    (two-sided, at least 2 / (B + 1) for B finite draws: so a Holm correction over m comparisons
    cannot go below 2m / (B + 1) — use n_boot >= 100 m for a floor of 0.02).
    """
    xa, xb = as_clean_array(a, "paired_prompt_bootstrap(a)"), as_clean_array(b, "paired_prompt_bootstrap(b)")
    if len(a_prompts) != xa.size or len(b_prompts) != xb.size:
        raise ValueError("paired_prompt_bootstrap: one prompt id per value is needed")
    prompts = sorted(set(a_prompts))
    if set(b_prompts) != set(prompts):
        raise ValueError("paired_prompt_bootstrap: both models must be evaluated on the same prompts")
    if set([0] if a_seeds is None else list(a_seeds)) != set([0] if b_seeds is None else list(b_seeds)):
        raise ValueError("paired_prompt_bootstrap: both models must be evaluated under the same seeds")
    ia, sa, index, S = _cells(a_prompts, a_seeds, {p: i for i, p in enumerate(prompts)})
    ib, sb, _, _ = _cells(b_prompts, b_seeds, index)
    P = len(prompts)
    (sum_a, n_a), (sum_b, n_b) = cell_sums(xa, ia, sa, S, P), cell_sums(xb, ib, sb, S, P)  # (S, P) each
    alpha_pct = _check_level(level)
    w = hierarchical_weights(P, S, n_boot, seed)  # (n_boot, S, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (np.einsum("bsp,sp->b", w, sum_a) / np.einsum("bsp,sp->b", w, n_a)
                - np.einsum("bsp,sp->b", w, sum_b) / np.einsum("bsp,sp->b", w, n_b))  # (n_boot,)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.percentile(boot, [alpha_pct, 100.0 - alpha_pct])
    return {"diff": float(xa.mean() - xb.mean()), "lo": float(lo), "hi": float(hi), "p": bootstrap_p(boot),
            "n_prompts": P, "n_seeds": S}


def prompt_bootstrap(x, prompts, n_boot: int = 1000, level: float = 0.95, seed: int = 0, weights=None,
                     seeds=None) -> dict:
    """Prompt-clustered bootstrap CI of mean(x) (or of the weighted mean sum(w x) / sum(w)): `x[i]`
    is a per-sample value on prompt `prompts[i]`; prompts are resampled with all their samples
    (samples of one prompt are correlated, so resampling samples would make the CI too narrow).
    With `seeds` (a seed index per value) seeds are resampled too (`hierarchical_weights`).
    Returns {mean, lo, hi, n_prompts}."""
    xs = as_clean_array(x, "prompt_bootstrap")
    if len(prompts) != xs.size:
        raise ValueError("prompt_bootstrap: one prompt id per value is needed")
    w = np.ones_like(xs) if weights is None else as_clean_array(weights, "prompt_bootstrap(weights)")
    ip, iseed, index, S = _cells(prompts, seeds)
    P = len(index)
    (sums, _), (n, _) = cell_sums(w * xs, ip, iseed, S, P), cell_sums(w, ip, iseed, S, P)  # (S, P) each
    draws = hierarchical_weights(P, S, n_boot, seed)  # (n_boot, S, P)
    alpha_pct = _check_level(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.einsum("bsp,sp->b", draws, sums) / np.einsum("bsp,sp->b", draws, n)  # (n_boot,)
    lo, hi = np.nanpercentile(boot, [alpha_pct, 100.0 - alpha_pct])
    return {"mean": float((w * xs).sum() / w.sum()), "lo": float(lo), "hi": float(hi), "n_prompts": P}


def _clogc(c: np.ndarray) -> np.ndarray:
    """c log c elementwise, 0 at c = 0."""
    return np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0)


def _clogc_table(max_count: int) -> np.ndarray:
    """(max_count + 1,) `_clogc` of the integers 0..max_count: the same values, looked up."""
    return _clogc(np.arange(max_count + 1, dtype=np.float64))


def _entropy(pooled: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """(..., U) token counts -> (...,) plug-in entropy in nats: log N - sum c log c / N (0 without
    tokens). `table` (`_clogc_table`): the counts are integers up to its length - 1."""
    n = pooled.sum(-1)
    clogc = (_clogc(pooled) if table is None else table[pooled.astype(np.intp)]).sum(-1)
    return np.where(n > 0, np.log(np.maximum(n, 1e-300)) - clogc / np.maximum(n, 1e-300), 0.0)


def _entropy_draws(token_ids: list[list[int]], prompts, groups, n_boot: int, seed: int, chunk: int,
                   P_index: dict | None = None) -> tuple[float, np.ndarray]:
    """(estimate, (n_boot,) resampled statistic) of the mean over groups of each group's token entropy:
    prompts resampled (the same draws in every group) and, with several groups (seeds), groups too."""
    groups = [0] * len(token_ids) if groups is None else list(groups)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(t for seq in token_ids for t in seq))}
    if not vocab:
        return 0.0, np.zeros(n_boot)
    ix, _, index, _ = _cells(prompts, None, P_index)
    names = sorted(set(groups))
    ws, wp = crossed_weights(len(index), len(names), n_boot, seed)  # (n_boot, G), (n_boot, P)
    counts = np.zeros((len(names), len(index), len(vocab)))  # (G, P, U) token counts per group and prompt
    for g, c, seq in zip(groups, ix, token_ids):
        np.add.at(counts[names.index(g), c], [vocab[t] for t in seq], 1.0)
    estimate = float(_entropy(counts.sum(1)).mean())  # (G,) -> mean over groups
    # (b, P) @ (G, P, U) -> (G, b, U) resampled counts, one GEMM per group; they are integers (exact
    # in float64), so c log c is looked up in a table rather than computed for every cell
    resampled = (np.matmul(wp[i : i + chunk], counts) for i in range(0, n_boot, chunk))
    per_group = np.concatenate([_entropy(c, _clogc_table(int(c.max()))) for c in resampled], axis=1)  # (G, n_boot)
    return estimate, (ws * per_group.T).sum(1) / ws.sum(1)  # (n_boot,) seed-weighted mean over groups


def prompt_bootstrap_entropy(token_ids: list[list[int]], prompts, groups=None, n_boot: int = 1000,
                             level: float = 0.95, seed: int = 0, chunk: int = 128) -> dict:
    """`metrics.unigram_token_entropy` with a prompt-clustered bootstrap CI. With `groups` (the seed
    of each sample) the statistic is the mean over groups of each group's entropy (pooling several
    policies' tokens would inflate it); every resample draws the same prompts for every group and
    resamples the groups too (seeds × prompts, as `hierarchical_weights`).

    The interval is bias-corrected: [q_lo - b, q_hi - b] with b = mean(resamples) - H. A resample
    repeats prompts and so never adds token types, which biases a plug-in entropy down by more than
    its spread at our sizes: a plain percentile interval would exclude the estimate itself.
    Returns {mean (the estimate), lo, hi}; all zeros when there are no tokens at all."""
    if len(prompts) != len(token_ids):
        raise ValueError("prompt_bootstrap_entropy: one prompt id per token list is needed")
    estimate, boot = _entropy_draws(token_ids, prompts, groups, n_boot, seed, chunk)
    if not any(token_ids):
        return {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    alpha_pct = _check_level(level)
    q_lo, q_hi = np.percentile(boot, [alpha_pct, 100.0 - alpha_pct])
    bias = float(boot.mean()) - estimate
    return {"mean": estimate, "lo": float(q_lo - bias), "hi": float(q_hi - bias)}


def paired_entropy_bootstrap(a_ids: list[list[int]], a_prompts, a_groups, b_ids: list[list[int]], b_prompts,
                             b_groups, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap of H(a) - H(b), the token entropy (`prompt_bootstrap_entropy`'s statistic) of
    two models on the same prompts under the same seeds: every resample draws the same prompts and
    seeds for both; bias-corrected the same way. Returns {diff, lo, hi, p} (`bootstrap_p`)."""
    prompts = sorted(set(a_prompts))
    if set(b_prompts) != set(prompts) or set(a_groups or [0]) != set(b_groups or [0]):
        raise ValueError("paired_entropy_bootstrap: both models must be evaluated on the same prompts and seeds")
    index = {p: i for i, p in enumerate(prompts)}
    ea, ba = _entropy_draws(a_ids, a_prompts, a_groups, n_boot, seed, 128, index)
    eb, bb = _entropy_draws(b_ids, b_prompts, b_groups, n_boot, seed, 128, index)
    d = ba - bb
    d = d - (float(d.mean()) - (ea - eb))  # bias-corrected draws
    alpha_pct = _check_level(level)
    lo, hi = np.percentile(d, [alpha_pct, 100.0 - alpha_pct])
    return {"diff": ea - eb, "lo": float(lo), "hi": float(hi), "p": bootstrap_p(d)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): controls the family-wise error
    rate when several policies are each compared with the start policy."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- one bootstrap for many curves


class SharedBootstrap:
    """One bootstrap shared by every curve: `mean(recs, f)` -> (n_boot + 1,) the point estimate
    (index 0) and the resampled means of per-sample values f(rec). Prompts are resampled with all
    their samples and, with several seeds, seeds too (`seed_index` k of every curve is the same
    training/evaluation seed): the same draws for every model, so differences are paired. The draws
    are `hierarchical_weights(P, n_seeds, n_boot, seed)` over the sorted prompt ids: the same as
    `paired_prompt_bootstrap`'s for the same prompts, seeds, n_boot and seed."""

    def __init__(self, prompt_ids: list[str], n_boot: int, seed: int = 0, n_seeds: int = 1):
        self.index = {p: i for i, p in enumerate(sorted(set(prompt_ids)))}
        P, self.S = len(self.index), n_seeds
        draws = hierarchical_weights(P, n_seeds, n_boot, seed)  # (n_boot, S, P)
        self.w = np.concatenate([np.ones((1, n_seeds, P)), draws]).reshape(n_boot + 1, n_seeds * P)

    def mean(self, recs: list[dict], f) -> np.ndarray:
        """(n_boot + 1,) mean of f(rec) over `recs` (records with prompt_id, optional seed_index)."""
        P = len(self.index)
        ix = np.array([r.get("seed_index", 0) * P + self.index[r["prompt_id"]] for r in recs])
        x = np.array([f(r) for r in recs], dtype=np.float64)
        return (self.w @ np.bincount(ix, x, self.S * P)) / (self.w @ np.bincount(ix, minlength=self.S * P))


def summary(b: np.ndarray) -> dict:
    """(n_boot + 1,) estimate and draws (as from `SharedBootstrap.mean`) -> {mean, lo, hi}: the
    estimate and the 95 % percentile interval of the draws (NaN draws ignored)."""
    lo, hi = np.nanpercentile(b[1:], [2.5, 97.5])
    return {"mean": float(b[0]), "lo": float(lo), "hi": float(hi)}


def check_p_floor(n_boot: int, family: int, field: str = "eval.n_boot") -> None:
    """Warn when `n_boot` resamples cannot call anything distinguishable: a bootstrap p-value is at
    least 2 / (B + 1) (`bootstrap_p`), so after Holm over `family` comparisons at least
    2 family / (B + 1), which must stay below ALPHA."""
    if family and 2 * family / (n_boot + 1) >= ALPHA:
        need = math.ceil(2 * family / ALPHA)
        warnings.warn(f"{field}={n_boot}: with Holm over {family} comparison(s) no p-value can fall below "
                      f"{ALPHA:g} (the smallest is 2 x {family} / ({n_boot} + 1)); use {field} >= {need}",
                      stacklevel=2)



# --------------------------------------------------------------------------- decisions and power


def distinguishable(lo: float, hi: float, p: float | None = None) -> bool:
    """Whether a difference is called different from 0: its (Holm-adjusted) p-value is below ALPHA
    and its CI excludes 0; without a p-value, the CI alone. (With `bootstrap_p` and a 95 % CI of the
    same draws, p < 0.05 already implies the CI excludes 0.)"""
    return (p is None or p < ALPHA) and (lo > 0 or hi < 0)


def verdict(lo: float, hi: float, p_holm: float) -> str:
    """'higher' / 'lower' (Holm-adjusted p < ALPHA and the CI excludes 0) or not distinguishable."""
    if not distinguishable(lo, hi, p_holm):
        return NOT_DISTINGUISHABLE
    return "higher" if lo > 0 else "lower"


def detectable_difference(lo: float, hi: float, family: int = 1) -> float:
    """The smallest true difference detected with 80 % power (`POWER`) by a comparison whose 95 % CI
    is [lo, hi] and which is judged, two-sided, after Holm over `family` comparisons: z_{1 - ALPHA/(2
    family)} + z_{POWER} standard errors (Holm's first step is Bonferroni's, so this is the bound for
    the hardest-judged member; 2.80 for one comparison, 3.08 for two), the SE read off the CI
    (width / 3.92)."""
    z = NormalDist().inv_cdf(1 - ALPHA / (2 * family)) + NormalDist().inv_cdf(POWER)
    return z * ((hi - lo) / (2 * NormalDist().inv_cdf(0.975)))


# --------------------------------------------------------------------------- agreement of two classifiers' errors


def _weighted_phi(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,) phi of 0/1 arrays `a`, `b` (n,) under each row of weights `w` (B, n); NaN where one is constant."""
    n = w.sum(1)
    pa, pb, pab = w @ a / n, w @ b / n, w @ (a * b) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pab - pa * pb) / np.sqrt(pa * (1 - pa) * pb * (1 - pb))


def phi(a, b) -> float:
    """Phi coefficient (Pearson r) of two 0/1 indicators, e.g. two scorers' errors on the same rows
    (1: the same rows wrong, 0: unrelated); 0.0 where either is constant."""
    x, y = as_clean_array(a, "phi(a)"), as_clean_array(b, "phi(b)")
    r = _weighted_phi(np.ones((1, x.size)), x, y)[0]
    return float(r) if np.isfinite(r) else 0.0


def paired_phi_gap(ref, a, b, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """phi(a, ref) - phi(b, ref) for 0/1 error indicators on the same rows (e.g. two judges' errors
    against the reward's), with a percentile bootstrap CI and `bootstrap_p` over resampled rows (the
    same draws for both). Returns {diff, lo, hi, p}."""
    r, x, y = (as_clean_array(v, "paired_phi_gap") for v in (ref, a, b))
    w = np.random.default_rng(seed).multinomial(r.size, np.full(r.size, 1.0 / r.size), size=n_boot).astype(np.float64)
    boot = _weighted_phi(w, x, r) - _weighted_phi(w, y, r)
    boot = boot[np.isfinite(boot)]
    alpha_pct = _check_level(level)
    lo, hi = np.percentile(boot, [alpha_pct, 100.0 - alpha_pct])
    return {"diff": phi(x, r) - phi(y, r), "lo": float(lo), "hi": float(hi), "p": bootstrap_p(boot)}
