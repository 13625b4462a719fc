import math

import numpy as np
import pytest
import torch

from alignment.metrics import (
    bootstrap_ci,
    bootstrap_diff_ci,
    distinct_n,
    mean_predictive_entropy,
    perplexity,
    sequence_kl_estimate,
    summarize_rewards,
    unigram_token_entropy,
)


# ---- token entropy


def test_unigram_entropy_two_equiprobable_tokens():
    assert unigram_token_entropy([[0, 1], [0, 1]]) == pytest.approx(math.log(2))


def test_unigram_entropy_single_token_is_zero():
    assert unigram_token_entropy([[5, 5, 5]]) == pytest.approx(0.0)


def test_unigram_entropy_pools_across_texts():
    # pooled counts {1: 2, 2: 1, 3: 1} -> p = (1/2, 1/4, 1/4)
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert unigram_token_entropy([[1, 2], [1, 3]]) == pytest.approx(expected)


def test_unigram_entropy_empty_raises():
    with pytest.raises(ValueError):
        unigram_token_entropy([])
    with pytest.raises(ValueError):
        unigram_token_entropy([[], []])


# ---- distinct-n


def test_distinct_1_and_2():
    seqs = [[1, 2, 1, 2]]
    assert distinct_n(seqs, 1) == pytest.approx(2 / 4)
    # bigrams (1,2),(2,1),(1,2) -> 2 unique / 3
    assert distinct_n(seqs, 2) == pytest.approx(2 / 3)


def test_distinct_2_pooled_no_cross_boundary():
    # bigrams: (1,2) and (1,2) -> 1/2 ; (2,1) across boundary must not be counted
    assert distinct_n([[1, 2], [1, 2]], 2) == pytest.approx(0.5)
    assert distinct_n([[1, 2, 3], [4, 5]], 2) == pytest.approx(1.0)


def test_distinct_no_ngrams_is_zero():
    assert distinct_n([[1], [2]], 2) == 0.0
    assert distinct_n([], 1) == 0.0


# ---- predictive entropy


def test_predictive_entropy_uniform_is_log_v():
    V = 7
    logits = torch.zeros(2, 3, V)  # (B, T, V)
    mask = torch.ones(2, 3)
    out = mean_predictive_entropy(logits, mask)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), math.log(V)), atol=1e-6)


def test_predictive_entropy_peaked_is_near_zero():
    logits = torch.zeros(1, 4, 5)
    logits[..., 2] = 100.0
    out = mean_predictive_entropy(logits, torch.ones(1, 4, dtype=torch.bool))
    assert out.item() == pytest.approx(0.0, abs=1e-6)


def test_predictive_entropy_mask_respected():
    V = 4
    logits = torch.zeros(1, 4, V)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    base = mean_predictive_entropy(logits, mask)
    garbage = logits.clone()
    garbage[0, 2] = torch.tensor([1e4, -1e4, float("inf"), float("nan")])
    garbage[0, 3] = torch.randn(V) * 50
    out = mean_predictive_entropy(garbage, mask)
    assert torch.allclose(out, base)
    assert out.item() == pytest.approx(math.log(V), abs=1e-6)


def test_predictive_entropy_half_precision_input():
    logits = torch.zeros(1, 2, 3, dtype=torch.bfloat16)
    out = mean_predictive_entropy(logits, torch.ones(1, 2))
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(math.log(3), abs=1e-5)


# ---- KL / perplexity


def test_sequence_kl_estimate():
    pol = torch.tensor([-1.0, -2.0, -3.0])
    ref = torch.tensor([-2.0, -2.0, -6.0])
    assert sequence_kl_estimate(pol, ref) == pytest.approx((1 + 0 + 3) / 3)
    assert sequence_kl_estimate(pol, pol) == 0.0


def test_perplexity():
    # total logp = -(2 ln2 + 2 ln2) over 4 tokens -> ppl = 2
    lp = torch.tensor([-2 * math.log(2), -2 * math.log(2)])
    n = torch.tensor([2, 2])
    assert perplexity(lp, n) == pytest.approx(2.0)
    # corpus-level pooling: ppl = exp(6/3)
    assert perplexity(torch.tensor([-1.0, -5.0]), torch.tensor([1, 2])) == pytest.approx(math.exp(2.0))


# ---- bootstrap


def test_bootstrap_ci_contains_mean_and_deterministic():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, size=200)
    p, lo, hi = bootstrap_ci(x, seed=5)
    assert p == pytest.approx(x.mean())
    assert lo < p < hi
    assert bootstrap_ci(x, seed=5) == (p, lo, hi)


def test_bootstrap_ci_narrows_with_more_data():
    rng = np.random.default_rng(2)
    small = rng.normal(size=20)
    big = rng.normal(size=2000)
    _, lo_s, hi_s = bootstrap_ci(small)
    _, lo_b, hi_b = bootstrap_ci(big)
    assert (hi_b - lo_b) < (hi_s - lo_s) / 3


def test_bootstrap_ci_custom_stat():
    p, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 100.0], stat=np.median)
    assert p == pytest.approx(2.5)
    assert lo <= p <= hi


def test_bootstrap_diff_ci_separated_excludes_zero():
    rng = np.random.default_rng(3)
    a = rng.normal(1.0, 0.5, size=100)
    b = rng.normal(0.0, 0.5, size=100)
    d, lo, hi = bootstrap_diff_ci(a, b)
    assert d == pytest.approx(a.mean() - b.mean())
    assert 0.0 < lo < d < hi


def test_bootstrap_diff_ci_identical_includes_zero():
    x = np.random.default_rng(4).normal(size=100)
    d, lo, hi = bootstrap_diff_ci(x, x.copy())
    assert d == 0.0
    assert lo < 0.0 < hi
    assert bootstrap_diff_ci(x, x.copy()) == (d, lo, hi)


# ---- summaries / NaN handling


def test_summarize_rewards():
    s = summarize_rewards([1.0, 2.0, 3.0, 4.0])
    assert set(s) == {"mean", "median", "std", "ci_lo", "ci_hi", "n"}
    assert s["mean"] == pytest.approx(2.5)
    assert s["median"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert s["n"] == 4
    assert s["ci_lo"] <= s["mean"] <= s["ci_hi"]


def test_nan_rewards_raise_with_count():
    with pytest.raises(ValueError, match="2 NaN"):
        summarize_rewards([1.0, float("nan"), 2.0, float("nan")])
    with pytest.raises(ValueError, match="1 NaN"):
        bootstrap_ci([float("nan"), 1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_diff_ci([1.0, 2.0], torch.tensor([float("nan")]))


# ---- paired, prompt-clustered bootstrap and Holm ------------------------------------------------
from alignment.metrics import holm, paired_prompt_bootstrap, prompt_bootstrap  # noqa: E402


def test_paired_bootstrap_hand_computed():
    # prompt p: policy - start = 0 on both samples; prompt q: + 2. Resampling 2 prompts gives a
    # mean difference of 0 (qq never drawn: 1/4), 1 (1/2) or 2 (1/4): the 95% CI is [0, 2].
    a, b = [1.0, 1.0, 5.0, 5.0], [1.0, 1.0, 3.0, 3.0]
    res = paired_prompt_bootstrap(a, ["p", "p", "q", "q"], b, ["p", "p", "q", "q"], n_boot=4000)
    assert res["diff"] == 1.0 and res["n_prompts"] == 2
    assert (res["lo"], res["hi"]) == (0.0, 2.0)
    # every prompt gains exactly 1: no uncertainty left once the pairing is used
    same = paired_prompt_bootstrap([2.0, 3.0, 7.0], ["x", "y", "z"], [1.0, 2.0, 6.0], ["x", "y", "z"], n_boot=500)
    assert (same["diff"], same["lo"], same["hi"]) == pytest.approx((1.0, 1.0, 1.0)) and same["p"] == pytest.approx(1 / 500)


def test_paired_bootstrap_is_narrower_than_unpaired_when_prompts_dominate():
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 2.0, 40)  # strong per-prompt effect, shared by both models
    pids = [f"p{i}" for i in range(40) for _ in range(4)]
    start = np.repeat(prompt_effect, 4) + rng.normal(0, 0.3, 160)
    policy = np.repeat(prompt_effect, 4) + 0.3 + rng.normal(0, 0.3, 160)
    paired = paired_prompt_bootstrap(policy, pids, start, pids)
    d, lo, hi = bootstrap_diff_ci(policy, start)
    assert paired["hi"] - paired["lo"] < 0.5 * (hi - lo)
    assert paired["lo"] > 0 and lo < 0  # the pairing finds the gain the unpaired CI cannot
    assert paired["diff"] == pytest.approx(d)


def test_paired_bootstrap_clusters_samples_of_a_prompt():
    """4 identical samples per prompt carry the information of 1: the CI must not shrink by 2x."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, 30), rng.normal(0, 1, 30)
    ids = [f"p{i}" for i in range(30)]
    one = paired_prompt_bootstrap(x, ids, y, ids, seed=3)
    four = paired_prompt_bootstrap(np.repeat(x, 4), [i for i in ids for _ in range(4)],
                                   np.repeat(y, 4), [i for i in ids for _ in range(4)], seed=3)
    assert four["hi"] - four["lo"] == pytest.approx(one["hi"] - one["lo"], rel=1e-9)


def test_paired_bootstrap_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        paired_prompt_bootstrap([1.0], ["a"], [1.0], ["b"])


def test_holm_by_hand():
    # sorted p: 0.01 (x3) = 0.03, 0.02 (x2) = 0.04, 0.04 (x1) = 0.04 (monotone), back in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_prompt_bootstrap_clusters_samples_of_a_prompt():
    """4 identical samples per prompt carry the information of one: the prompt-clustered CI is
    the CI of the prompt means (2x wider than resampling the 4n samples as if independent)."""
    import numpy as np

    from alignment.metrics import bootstrap_ci, prompt_bootstrap

    rng = np.random.default_rng(0)
    per_prompt = rng.normal(size=50)
    x = np.repeat(per_prompt, 4)
    pids = [f"p{i}" for i in range(50) for _ in range(4)]
    b = prompt_bootstrap(x, pids, n_boot=4000)
    assert b["mean"] == pytest.approx(per_prompt.mean()) and b["n_prompts"] == 50
    _, lo, hi = bootstrap_ci(per_prompt, n_boot=4000)
    assert b["hi"] - b["lo"] == pytest.approx(hi - lo, rel=0.1)  # = the prompt means' CI
    _, lo_s, hi_s = bootstrap_ci(x, n_boot=4000)
    assert (b["hi"] - b["lo"]) > 1.7 * (hi_s - lo_s)  # the naive CI is ~sqrt(4) = 2x too narrow
    with pytest.raises(ValueError, match="one prompt id per value"):
        prompt_bootstrap(x, pids[:-1])


def test_weighted_prompt_bootstrap_and_entropy_ci():
    """A ratio (e.g. perplexity's tokens-weighted NLL) and the pooled unigram entropy, resampled by prompt."""
    from alignment.metrics import prompt_bootstrap, prompt_bootstrap_entropy, unigram_token_entropy

    # per-token NLL 1.0 on a 3-token sample and 4.0 on a 1-token sample: weighted mean (3*1 + 1*4) / 4
    b = prompt_bootstrap([1.0, 4.0], ["a", "b"], n_boot=500, weights=[3.0, 1.0])
    assert b["mean"] == pytest.approx(7 / 4) and 1.0 <= b["lo"] <= b["hi"] <= 4.0
    same = prompt_bootstrap([2.0, 2.0, 2.0], ["a", "a", "b"], n_boot=200)
    assert same["lo"] == same["hi"] == 2.0  # no spread, no width
    ids = [[1, 2], [1, 2], [3, 4], [3, 4]]
    e = prompt_bootstrap_entropy(ids, ["a", "a", "b", "b"], n_boot=500)
    assert e["mean"] == pytest.approx(unigram_token_entropy(ids)) == pytest.approx(np.log(4))
    assert e["lo"] < e["mean"] < e["hi"]  # bias-corrected: the resamples' downward bias is removed
    rng = np.random.default_rng(1)  # realistic sizes: the interval contains the estimate
    big = [list(rng.integers(0, 3000, size=32)) for _ in range(256)]
    pids = [f"p{i // 4}" for i in range(256)]
    e = prompt_bootstrap_entropy(big, pids, n_boot=300)
    assert e["lo"] <= e["mean"] <= e["hi"] and e["mean"] == pytest.approx(unigram_token_entropy(big))
    # groups (seeds): the mean of per-group entropies, not the entropy of the pooled mixture
    two = [[1, 1], [2, 2]]
    g = prompt_bootstrap_entropy(two, ["a", "a"], groups=[0, 1], n_boot=50)
    assert g["mean"] == 0.0 and unigram_token_entropy(two) == pytest.approx(np.log(2))
    assert prompt_bootstrap_entropy([[], []], ["a", "b"]) == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    flat = prompt_bootstrap_entropy([[1, 2], [1, 2]], ["a", "b"], n_boot=200)
    assert flat["lo"] == pytest.approx(flat["hi"]) == pytest.approx(np.log(2))


def test_hierarchical_bootstrap_resamples_seeds_too():
    from alignment.metrics import hierarchical_weights

    # one prompt, two seeds with means 0 and 2: replicates draw seed weights (2,0), (1,1), (0,2) with
    # probabilities 1/4, 1/2, 1/4 -> means 0, 1, 2: the 95 % CI is [0, 2]
    b = prompt_bootstrap([0.0, 0.0, 2.0, 2.0], ["p", "p", "p", "p"], n_boot=4000, seeds=[0, 0, 1, 1])
    assert b["mean"] == 1.0 and b["lo"] == 0.0 and b["hi"] == 2.0
    # one seed: exactly the prompt bootstrap's draws
    rng = np.random.default_rng(3)
    x, pids = rng.normal(size=40).tolist(), [f"p{i % 10}" for i in range(40)]
    assert prompt_bootstrap(x, pids, n_boot=300) == prompt_bootstrap(x, pids, n_boot=300, seeds=[7] * 40)
    w = hierarchical_weights(10, 3, 50)
    assert w.shape == (50, 3, 10) and np.allclose(w.sum((1, 2)), 30)
    # seeds that disagree (training variance) widen the CI; prompts alone do not see it
    seeds = [i // 20 for i in range(60)]
    y = [0.5 * s + v for s, v in zip(seeds, rng.normal(0, 0.1, 60))]
    p3 = [f"p{i % 20}" for i in range(60)]
    narrow, wide = prompt_bootstrap(y, p3, n_boot=500), prompt_bootstrap(y, p3, n_boot=500, seeds=seeds)
    assert (wide["hi"] - wide["lo"]) > 3 * (narrow["hi"] - narrow["lo"])


def test_paired_bootstrap_pairs_seeds():
    """Policy seed s vs start seed s: a seed-level shift common to both cancels in the paired diff."""
    rng = np.random.default_rng(0)
    seeds = [i // 20 for i in range(60)]
    pids = [f"p{i % 20}" for i in range(60)]
    start = [2.0 * s + v for s, v in zip(seeds, rng.normal(0, 0.1, 60))]
    pol = [x + 0.3 for x in start]
    b = paired_prompt_bootstrap(pol, pids, start, pids, n_boot=500, a_seeds=seeds, b_seeds=seeds)
    assert b["diff"] == pytest.approx(0.3) and b["hi"] - b["lo"] < 1e-9 and b["n_seeds"] == 3
    with pytest.raises(ValueError, match="same seeds"):
        paired_prompt_bootstrap(pol, pids, start, pids, a_seeds=seeds, b_seeds=[0] * 60)
