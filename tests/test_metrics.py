import math

import pytest
import torch

from alignment.study.metrics import (
    content_of,
    distinct_n,
    mean_predictive_entropy,
    metrics_of,
    perplexity,
    sequence_kl_estimate,
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


# ---- the metrics of one evaluation


def _scored(seed, pid, ids, finished, reward, logp=None, ref=-4.0, n=2, **kw):
    return {"prompt_id": pid, "seed_index": seed, "completion_ids": ids, "finished": finished, "reward": reward,
            "judge": -reward, "ref_logp": ref, "logp": logp, "pred_entropy": None if logp is None else 2.0 + seed,
            "kl_cv": None if logp is None else 0.5 * (seed + 1), "n_tokens": n, **kw}


def test_metrics_of_by_hand():
    """Two seeds x two prompts (EOS = 9): averages pool the samples, token entropy and distinct-n are
    per seed and averaged, every CI contains its estimate."""
    recs = [_scored(0, "a", [1, 2, 9], True, 1.0, logp=-3.0, ref=-4.0, n=3),
            _scored(0, "b", [3, 3], False, 2.0, logp=-2.0, ref=-4.0, n=2),
            _scored(1, "a", [1], False, 3.0, logp=-1.0, ref=-2.0, n=1),
            _scored(1, "b", [9], True, 4.0, logp=-1.0, ref=-1.0, n=1)]
    assert [content_of(r) for r in recs] == [[1, 2], [3, 3], [1], []]
    m = metrics_of("m", recs, n_boot=200)
    assert (m["model"], m["n_samples"], m["n_prompts"]) == ("m", 4, 2)
    assert m["eval/reward_mean"] == 2.5 and m["eval/reward_median"] == 2.5
    assert m["eval/reward_std"] == pytest.approx(math.sqrt(1.25)) and m["eval/judge_mean"] == -2.5
    # seed 0 pools tokens 1, 2, 3, 3 (p = 1/4, 1/4, 1/2); seed 1 only token 1 (entropy 0)
    assert m["eval/token_entropy"] == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.5)) / 2)
    assert m["eval/distinct_1"] == pytest.approx((3 / 4 + 1) / 2) and m["eval/distinct_2"] == pytest.approx((1 + 0) / 2)
    assert m["eval/kl_to_ref"] == pytest.approx((1 + 2 + 1 + 0) / 4) and m["eval/kl_to_ref_cv"] == pytest.approx(0.75)
    assert m["eval/predictive_entropy"] == pytest.approx(2.5) and m["eval/finished_frac"] == 0.5
    assert m["eval/ref_perplexity"] == pytest.approx(math.exp(11 / 7)) and m["eval/mean_length"] == pytest.approx(7 / 4)
    for key, ci in (("eval/reward_mean", "eval/reward"), ("eval/judge_mean", None), ("eval/kl_to_ref", None),
                    ("eval/ref_perplexity", None), ("eval/mean_length", None), ("eval/predictive_entropy", None)):
        assert m[f"{ci or key}_ci_lo"] <= m[key] <= m[f"{ci or key}_ci_hi"], key
    assert "eval/on_topic" not in m and "eval/distinct_2_ci_lo" not in m
    human = metrics_of("human", [_scored(0, p, [1, 2], False, 0.5) for p in "ab"], n_boot=50)
    assert human["eval/kl_to_ref"] is None and human["eval/predictive_entropy"] is None
    assert human["eval/kl_to_ref_cv"] is None and "eval/kl_to_ref_ci_lo" not in human
