"""Pure evaluation metrics for the DPO sentiment-alignment kit, and the metrics of one evaluation.

Everything here is a pure function of its inputs: no model loading, no I/O,
no global state. Diversity metrics work on token-id lists; drift metrics work
on log-probabilities or logits (torch). `metrics_of` turns one model's annotated
samples (`evaluate.annotate` records) into its metrics dict, with CIs from `stats`.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
from torch import Tensor

from .stats import prompt_bootstrap, prompt_bootstrap_entropy

METRICS_VERSION = 2  # bump when `metrics_of` changes what it computes: cached evaluations are re-measured on load

__all__ = [
    "METRICS_VERSION",
    "unigram_token_entropy",
    "distinct_n",
    "mean_predictive_entropy",
    "sequence_kl_estimate",
    "kl_control_variate",
    "perplexity",
    "content_of",
    "metrics_of",
    "drift_cis",
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


# --------------------------------------------------------------------------- one evaluation


def _with_ci(key: str, values: list[float], pids: list[str], n_boot: int, ci: str | None = None, seeds=None) -> dict:
    """{key: mean, <ci>_ci_lo, <ci>_ci_hi} (ci defaults to key) from a bootstrap over prompts (and
    seeds, when the samples come from several)."""
    b = prompt_bootstrap(values, pids, n_boot=n_boot, seeds=seeds)
    return {key: b["mean"], f"{ci or key}_ci_lo": b["lo"], f"{ci or key}_ci_hi": b["hi"]}


def content_of(rec: dict) -> list[int]:
    """Completion tokens without the stop token a finished sample (or a human row that ended) carries."""
    ids = rec["completion_ids"]
    return ids[:-1] if rec["finished"] and ids else ids


def _per_group(stat, ids: list[list[int]], groups: list[int]) -> float:
    """Mean over groups (seeds) of a pooled-count statistic: pooling several policies' samples into
    one count would make a mixture look more diverse than each policy is."""
    names = sorted(set(groups))
    return sum(stat([i for i, g in zip(ids, groups) if g == n]) for n in names) / len(names)


def _token_entropy(ids: list[list[int]]) -> float:
    """`unigram_token_entropy` of the non-empty completions (0 when every completion is empty)."""
    return unigram_token_entropy([i for i in ids if i] or [[0]])


def metrics_of(name: str, scored: list[dict], n_boot: int) -> dict:
    """The metrics dict of one model's annotated samples, or of several evaluations of it pooled
    (records tagged `seed_index`): averages pool the samples; token entropy and distinct-n are
    per seed, averaged; CIs resample seeds and prompts (`stats.hierarchical_weights`; token entropy:
    prompts within each seed)."""
    pids = [r["prompt_id"] for r in scored]
    ids = [content_of(r) for r in scored]
    groups = [r.get("seed_index", 0) for r in scored]
    rewards = [r["reward"] for r in scored]
    on_policy = scored[0]["logp"] is not None
    lp = {"ref": torch.tensor([r["ref_logp"] for r in scored], dtype=torch.float64),  # each (N,) or None
          "n_tokens": torch.tensor([r["n_tokens"] for r in scored]),
          "policy": torch.tensor([r["logp"] for r in scored], dtype=torch.float64) if on_policy else None,
          "entropy": torch.tensor([r["pred_entropy"] for r in scored], dtype=torch.float64) if on_policy else None,
          "kl_cv": torch.tensor([r["kl_cv"] for r in scored], dtype=torch.float64)
          if on_policy and scored[0].get("kl_cv") is not None else None}
    metrics = {
        "model": name, "n_samples": len(scored), "n_prompts": len(set(pids)),
        **_with_ci("eval/reward_mean", rewards, pids, n_boot, ci="eval/reward", seeds=groups),
        "eval/reward_median": float(np.median(rewards)), "eval/reward_std": float(np.std(rewards)),
        "eval/token_entropy": _per_group(_token_entropy, ids, groups),
        "eval/predictive_entropy": lp["entropy"].mean().item() if on_policy else None,
        "eval/distinct_1": _per_group(lambda x: distinct_n(x, 1), ids, groups),
        "eval/distinct_2": _per_group(lambda x: distinct_n(x, 2), ids, groups),
        "eval/kl_to_ref": sequence_kl_estimate(lp["policy"], lp["ref"]) if on_policy else None,
        "eval/kl_to_ref_cv": lp["kl_cv"].mean().item() if lp["kl_cv"] is not None else None,
        "eval/kl_to_ref_std": (lp["policy"] - lp["ref"]).std().item() if on_policy else None,
        "eval/kl_to_ref_cv_std": lp["kl_cv"].std().item() if lp["kl_cv"] is not None else None,
        "eval/ref_perplexity": perplexity(lp["ref"], lp["n_tokens"]),
        "eval/mean_length": lp["n_tokens"].float().mean().item(),
        "eval/finished_frac": sum(r["finished"] for r in scored) / len(scored),
    }
    for field, key in (("judge", "eval/judge_mean"), ("on_topic", "eval/on_topic")):
        if field in scored[0]:
            metrics.update(_with_ci(key, [r[field] for r in scored], pids, n_boot, seeds=groups))
    metrics.update(drift_cis(ids, lp, pids, n_boot, groups))
    return metrics


def drift_cis(ids: list[list[int]], lp: dict, pids: list[str], n_boot: int, groups: list[int]) -> dict:
    """Prompt-clustered 95 % CIs of token entropy, predictive entropy, KL, ref perplexity and mean
    length (`<metric>_ci_lo/hi`). Distinct-n has none: a bootstrap draws prompts with repetition,
    and repeated n-grams are exactly what distinct-n counts as a loss of diversity.
    `lp`: (N,) tensors "ref", "n_tokens" and "policy", "entropy", "kl_cv" (None when not measured);
    `ids`, `pids`, `groups`: one entry per sample (content tokens, prompt id, seed index)."""
    n = lp["n_tokens"].double()  # (N,)
    nll = -lp["ref"].double()  # (N,)
    out = {}
    h = prompt_bootstrap_entropy(ids, pids, groups, n_boot=n_boot)
    out["eval/token_entropy_ci_lo"], out["eval/token_entropy_ci_hi"] = h["lo"], h["hi"]
    ppl = prompt_bootstrap((nll / n.clamp(min=1)).tolist(), pids, n_boot=n_boot, weights=n.tolist(), seeds=groups)
    out["eval/ref_perplexity_ci_lo"], out["eval/ref_perplexity_ci_hi"] = math.exp(ppl["lo"]), math.exp(ppl["hi"])
    per_sample = {"eval/mean_length": n}
    if lp["policy"] is not None:
        per_sample["eval/kl_to_ref"] = lp["policy"].double() - lp["ref"].double()
        per_sample["eval/predictive_entropy"] = lp["entropy"].double()
    if lp.get("kl_cv") is not None:
        per_sample["eval/kl_to_ref_cv"] = lp["kl_cv"]
    for key, x in per_sample.items():
        b = prompt_bootstrap(x.tolist(), pids, n_boot=n_boot, seeds=groups)
        out[f"{key}_ci_lo"], out[f"{key}_ci_hi"] = b["lo"], b["hi"]
    return out
