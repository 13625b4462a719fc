"""Pure evaluation metrics for the DPO sentiment-alignment kit.

Everything here is a pure function of its inputs: no model loading, no I/O,
no global state. Diversity metrics work on token-id lists; drift metrics work
on log-probabilities or logits (torch); statistics work on numpy arrays.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "unigram_token_entropy",
    "distinct_n",
    "mean_predictive_entropy",
    "sequence_kl_estimate",
    "kl_control_variate",
    "perplexity",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "summarize_rewards",
    "paired_prompt_bootstrap",
    "prompt_bootstrap",
    "prompt_bootstrap_entropy",
    "hierarchical_weights",
    "holm",
]


# --------------------------------------------------------------------------- diversity


def unigram_token_entropy(token_ids: list[list[int]]) -> float:
    """Shannon entropy (nats) of the pooled unigram distribution of completion tokens.

    H = -sum_w p(w) log p(w), where p(w) = count(w) / N and counts are pooled over
    all tokens of all texts (N = total token count). This is the "token entropy"
    diversity metric: a policy that collapses onto a few tokens scores low.

    Raises ValueError if there are no tokens at all.
    """
    counts = Counter(tok for seq in token_ids for tok in seq)
    total = sum(counts.values())
    if total == 0:
        raise ValueError("unigram_token_entropy: no tokens in input")
    p = np.fromiter(counts.values(), dtype=np.float64) / total
    return float(-(p * np.log(p)).sum())


def distinct_n(token_ids: list[list[int]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams, pooled over texts.

    N-grams never cross text boundaries. Returns 0.0 if no text has >= n tokens.
    """
    if n < 1:
        raise ValueError(f"distinct_n: n must be >= 1, got {n}")
    ngrams: list[tuple[int, ...]] = []
    for seq in token_ids:
        seq = list(seq)
        ngrams.extend(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))
    if not ngrams:
        return 0.0
    return len(set(ngrams)) / len(ngrams)


# --------------------------------------------------------------------------- drift


def mean_predictive_entropy(logits: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence mean predictive entropy of the policy over masked positions.

    For each position t, H_t = -sum_v p_t(v) log p_t(v) with p_t = softmax(logits[:, t]).
    Returns (B,) with sum_t mask_t H_t / sum_t mask_t (the f-DPO paper's "entropy").
    Computed in float32 via log_softmax; masked-out positions contribute nothing even
    if their logits are non-finite. Rows with an all-zero mask give 0.
    """
    if logits.dim() != 3 or mask.shape != logits.shape[:2]:
        raise ValueError(
            f"mean_predictive_entropy: expected logits (B, T, V) and mask (B, T), "
            f"got {tuple(logits.shape)} and {tuple(mask.shape)}"
        )
    m = mask.to(torch.float32)  # (B, T)
    keep = m > 0  # (B, T)
    # Replace masked positions by zeros so inf/nan there cannot leak through 0 * nan.
    safe = torch.where(keep.unsqueeze(-1), logits.to(torch.float32), 0.0)  # (B, T, V)
    logp = torch.log_softmax(safe, dim=-1)  # (B, T, V)
    ent = torch.special.entr(logp.exp()).sum(dim=-1)  # (B, T); entr(0) = 0: filtered (-inf) logits add nothing
    ent = torch.where(keep, ent, 0.0) * m  # (B, T)
    return ent.sum(dim=-1) / m.sum(dim=-1).clamp_min(1e-12)  # (B,)


def sequence_kl_estimate(policy_logps: Tensor, ref_logps: Tensor) -> float:
    """Monte-Carlo estimate of sequence-level KL(pi || pi_ref).

    With y_i ~ pi, KL ≈ (1/B) sum_i [log pi(y_i) - log pi_ref(y_i)]. Inputs are (B,)
    summed completion log-probs under the policy and the reference, for samples from
    the policy. Unbiased, but single estimates can be negative for small B.
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 1:
        raise ValueError(
            f"sequence_kl_estimate: expected two (B,) tensors, got "
            f"{tuple(policy_logps.shape)} and {tuple(ref_logps.shape)}"
        )
    if policy_logps.numel() == 0:
        raise ValueError("sequence_kl_estimate: empty input")
    diff = policy_logps.double() - ref_logps.double()  # (B,)
    return float(diff.mean())


def kl_control_variate(q_logps: Tensor, p_logps: Tensor) -> Tensor:
    """One sample's KL(q || p) term with a control variate: sum_t (r_t - 1) - log r_t, where
    r_t = p(y_t | y_<t) / q(y_t | y_<t) for tokens y_t ~ q. Since E_q[r_t - 1 | y_<t] = 0, its
    mean is the same KL as the plain sum_t -log r_t (`sequence_kl_estimate`), every term is >= 0,
    and it varies less while q and p are close (Schulman's k3, applied per token). (T,), (T,) -> ()."""
    if q_logps.shape != p_logps.shape or q_logps.dim() != 1:
        raise ValueError(f"kl_control_variate: expected two (T,) tensors, got {tuple(q_logps.shape)} "
                         f"and {tuple(p_logps.shape)}")
    log_r = p_logps.double() - q_logps.double()  # (T,)
    return (torch.expm1(log_r) - log_r).sum()


def perplexity(token_logps_sum: Tensor, n_tokens: Tensor) -> float:
    """Corpus-level perplexity exp(-sum_i logp_i / sum_i n_i).

    token_logps_sum: (B,) summed token log-probs per sequence; n_tokens: (B,) token
    counts. Tokens are pooled across sequences (not a mean of per-sequence ppl).
    """
    total = float(n_tokens.double().sum())
    if total <= 0:
        raise ValueError("perplexity: total token count must be positive")
    return float(np.exp(-float(token_logps_sum.double().sum()) / total))


# --------------------------------------------------------------------------- statistics


def _as_clean_array(values: Sequence[float] | np.ndarray | Tensor, name: str) -> np.ndarray:
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
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0 * 100.0


def bootstrap_ci(
    values,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    stat: Callable[[np.ndarray], float] = np.mean,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI: (stat(values), lo, hi).

    Draws n_boot resamples of size n with replacement (numpy default_rng(seed),
    so deterministic per seed), applies `stat` to each, and takes the
    (1-level)/2 and (1+level)/2 percentiles.
    """
    x = _as_clean_array(values, "bootstrap_ci")
    alpha_pct = _check_level(level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (n_boot, n)
    stats = np.array([stat(x[row]) for row in idx], dtype=np.float64)
    lo, hi = np.percentile(stats, [alpha_pct, 100.0 - alpha_pct])
    return float(stat(x)), float(lo), float(hi)


def bootstrap_diff_ci(
    a, b, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b) for two independent samples.

    Each sample is resampled independently with replacement. Returns
    (mean(a) - mean(b), lo, hi); "a beats b" is supported when lo > 0.
    """
    xa = _as_clean_array(a, "bootstrap_diff_ci(a)")
    xb = _as_clean_array(b, "bootstrap_diff_ci(b)")
    alpha_pct = _check_level(level)
    rng = np.random.default_rng(seed)
    ma = xa[rng.integers(0, xa.size, size=(n_boot, xa.size))].mean(axis=1)  # (n_boot,)
    mb = xb[rng.integers(0, xb.size, size=(n_boot, xb.size))].mean(axis=1)  # (n_boot,)
    lo, hi = np.percentile(ma - mb, [alpha_pct, 100.0 - alpha_pct])
    return float(xa.mean() - xb.mean()), float(lo), float(hi)


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
    wp = np.random.default_rng(seed).multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot)
    ws = (np.ones((n_boot, 1)) if n_seeds == 1 else
          np.random.default_rng(seed + 1).multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot))
    return ws.astype(np.float64)[:, :, None] * wp.astype(np.float64)[:, None, :]


def _cell_sums(x: np.ndarray, ip: np.ndarray, iseed: np.ndarray, S: int, P: int) -> tuple[np.ndarray, np.ndarray]:
    flat = iseed * P + ip
    return (np.bincount(flat, x, S * P).reshape(S, P), np.bincount(flat, minlength=S * P).reshape(S, P).astype(np.float64))


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
    Returns {diff, lo, hi, p, n_prompts, n_seeds}; p = two-sided bootstrap p-value of "diff = 0"
    (2 x the smaller tail, at least 1/n_boot: so a Holm correction over m comparisons cannot go
    below m/n_boot — use n_boot >= 20 m).
    """
    xa, xb = _as_clean_array(a, "paired_prompt_bootstrap(a)"), _as_clean_array(b, "paired_prompt_bootstrap(b)")
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
    (sum_a, n_a), (sum_b, n_b) = _cell_sums(xa, ia, sa, S, P), _cell_sums(xb, ib, sb, S, P)  # (S, P) each
    alpha_pct = _check_level(level)
    w = hierarchical_weights(P, S, n_boot, seed)  # (n_boot, S, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (np.einsum("bsp,sp->b", w, sum_a) / np.einsum("bsp,sp->b", w, n_a)
                - np.einsum("bsp,sp->b", w, sum_b) / np.einsum("bsp,sp->b", w, n_b))  # (n_boot,)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.percentile(boot, [alpha_pct, 100.0 - alpha_pct])
    p = min(1.0, max(2 * min((boot <= 0).mean(), (boot >= 0).mean()), 1.0 / n_boot))
    return {"diff": float(xa.mean() - xb.mean()), "lo": float(lo), "hi": float(hi), "p": float(p), "n_prompts": P,
            "n_seeds": S}


def prompt_bootstrap(x, prompts, n_boot: int = 1000, level: float = 0.95, seed: int = 0, weights=None,
                     seeds=None) -> dict:
    """Prompt-clustered bootstrap CI of mean(x) (or of the weighted mean sum(w x) / sum(w)): `x[i]`
    is a per-sample value on prompt `prompts[i]`; prompts are resampled with all their samples
    (samples of one prompt are correlated, so resampling samples would make the CI too narrow).
    With `seeds` (a seed index per value) seeds are resampled too (`hierarchical_weights`).
    Returns {mean, lo, hi, n_prompts}."""
    xs = _as_clean_array(x, "prompt_bootstrap")
    if len(prompts) != xs.size:
        raise ValueError("prompt_bootstrap: one prompt id per value is needed")
    w = np.ones_like(xs) if weights is None else _as_clean_array(weights, "prompt_bootstrap(weights)")
    ip, iseed, index, S = _cells(prompts, seeds)
    P = len(index)
    (sums, _), (n, _) = _cell_sums(w * xs, ip, iseed, S, P), _cell_sums(w, ip, iseed, S, P)
    draws = hierarchical_weights(P, S, n_boot, seed)  # (n_boot, S, P)
    alpha_pct = _check_level(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.einsum("bsp,sp->b", draws, sums) / np.einsum("bsp,sp->b", draws, n)  # (n_boot,)
    lo, hi = np.nanpercentile(boot, [alpha_pct, 100.0 - alpha_pct])
    return {"mean": float((w * xs).sum() / w.sum()), "lo": float(lo), "hi": float(hi), "n_prompts": P}


def prompt_bootstrap_entropy(token_ids: list[list[int]], prompts, groups=None, n_boot: int = 1000,
                             level: float = 0.95, seed: int = 0, chunk: int = 128) -> dict:
    """`unigram_token_entropy` with a prompt-clustered bootstrap CI. With `groups` (e.g. the seed of
    each sample) the statistic is the mean over groups of each group's entropy (pooling several
    policies' tokens would inflate it), and every resample draws the same prompts for every group.

    The interval is bias-corrected: [q_lo - b, q_hi - b] with b = mean(resamples) - H. A resample
    repeats prompts and so never adds token types, which biases a plug-in entropy down by more than
    its spread at our sizes: a plain percentile interval would exclude the estimate itself.
    Returns {mean (the estimate), lo, hi}; all zeros when there are no tokens at all."""
    if len(prompts) != len(token_ids):
        raise ValueError("prompt_bootstrap_entropy: one prompt id per token list is needed")
    groups = [0] * len(token_ids) if groups is None else list(groups)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(t for seq in token_ids for t in seq))}
    if not vocab:
        return {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    ix, _, index, _ = _cells(prompts, None)
    draws = hierarchical_weights(len(index), 1, n_boot, seed)[:, 0, :]  # (n_boot, P): prompts only
    names = sorted(set(groups))
    counts = np.zeros((len(names), draws.shape[1], len(vocab)))  # (G, P, U) token counts per group and prompt
    for g, c, seq in zip(groups, ix, token_ids):
        np.add.at(counts[names.index(g), c], [vocab[t] for t in seq], 1.0)

    def entropy(pooled: np.ndarray) -> np.ndarray:  # (..., U) counts -> (...,) nats; log N - sum c log c / N
        n = pooled.sum(-1)
        clogc = np.where(pooled > 0, pooled * np.log(np.where(pooled > 0, pooled, 1.0)), 0.0).sum(-1)
        return np.where(n > 0, np.log(np.maximum(n, 1e-300)) - clogc / np.maximum(n, 1e-300), 0.0)

    estimate = float(entropy(counts.sum(1)).mean())  # (G,) -> mean over groups
    boot = np.concatenate([entropy(np.einsum("bp,gpu->bgu", draws[i : i + chunk], counts)).mean(1)
                           for i in range(0, n_boot, chunk)])  # (n_boot,)
    alpha_pct = _check_level(level)
    q_lo, q_hi = np.percentile(boot, [alpha_pct, 100.0 - alpha_pct])
    bias = float(boot.mean()) - estimate
    return {"mean": estimate, "lo": float(q_lo - bias), "hi": float(q_hi - bias)}


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


def summarize_rewards(rewards, n_boot: int = 1000) -> dict:
    """Summary of a reward sample: mean, median, std (ddof=0), 95% bootstrap CI of the mean, n.

    Raises ValueError if any reward is NaN (message names the NaN count).
    """
    x = _as_clean_array(rewards, "summarize_rewards")
    mean, lo, hi = bootstrap_ci(x, n_boot=n_boot)
    return {
        "mean": mean,
        "median": float(np.median(x)),
        "std": float(x.std()),
        "ci_lo": lo,
        "ci_hi": hi,
        "n": int(x.size),
    }
