"""The statistics (`alignment.study.stats`) against hand-computed cases: percentile and prompt-clustered
bootstraps, the seeds x prompts draws, the one p-value convention (shared by the paired gains and
the frontier comparisons), Holm, the shared bootstrap, the gains over the start, verdicts, power."""
import math

import numpy as np
import pytest
import torch

from alignment.study import frontier as F
from alignment.study.metrics import unigram_token_entropy
from alignment.study.stats import (
    ALPHA,
    MDE_Z,
    NOT_DISTINGUISHABLE,
    SharedBootstrap,
    as_clean_array,
    bootstrap_p,
    detectable_difference,
    distinguishable,
    hierarchical_weights,
    holm,
    paired_prompt_bootstrap,
    prompt_bootstrap,
    prompt_bootstrap_entropy,
    summary,
    verdict,
)
from alignment.study.gains import compare_to_start, with_holm


# ---- naive references (samples resampled as if independent): what the clustered CIs must beat


def _naive_ci(x, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    draws = x[np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))].mean(1)
    return tuple(np.percentile(draws, [2.5, 97.5]))


def _unpaired_diff_ci(a, b, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)
    db = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(1)
    return tuple(np.percentile(da - db, [2.5, 97.5]))


def test_nan_values_raise_with_count():
    with pytest.raises(ValueError, match="2 NaN"):
        as_clean_array([1.0, float("nan"), 2.0, float("nan")], "x")
    with pytest.raises(ValueError, match="1 NaN"):
        prompt_bootstrap([float("nan"), 1.0], ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        paired_prompt_bootstrap([1.0, 2.0], ["a", "b"], torch.tensor([float("nan"), 0.0]), ["a", "b"])


# ---- paired, prompt-clustered bootstrap and Holm ------------------------------------------------


def test_paired_bootstrap_hand_computed():
    # prompt p: policy - start = 0 on both samples; prompt q: + 2. Resampling 2 prompts gives a
    # mean difference of 0 (q never drawn: 1/4), 1 (1/2) or 2 (1/4): the 95% CI is [0, 2].
    a, b = [1.0, 1.0, 5.0, 5.0], [1.0, 1.0, 3.0, 3.0]
    B = 4000
    res = paired_prompt_bootstrap(a, ["p", "p", "q", "q"], b, ["p", "p", "q", "q"], n_boot=B)
    assert res["diff"] == 1.0 and res["n_prompts"] == 2
    assert (res["lo"], res["hi"]) == (0.0, 2.0)
    # p: k draws never pick q (difference 0 <= 0), every draw is >= 0: 2 (1 + k) / (B + 1), about 1/2
    k = int((hierarchical_weights(2, 1, B)[:, 0, 1] == 0).sum())
    assert res["p"] == pytest.approx(2 * (1 + k) / (B + 1)) and res["p"] == pytest.approx(0.5, abs=0.03)
    # every prompt gains exactly 1: no uncertainty left once the pairing is used; no draw <= 0, so p is
    # the floor 2 (1 + 0) / (B + 1)
    same = paired_prompt_bootstrap([2.0, 3.0, 7.0], ["x", "y", "z"], [1.0, 2.0, 6.0], ["x", "y", "z"], n_boot=500)
    assert (same["diff"], same["lo"], same["hi"]) == pytest.approx((1.0, 1.0, 1.0)) and same["p"] == pytest.approx(2 / 501)


def test_paired_bootstrap_is_narrower_than_unpaired_when_prompts_dominate():
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 2.0, 40)  # strong per-prompt effect, shared by both models
    pids = [f"p{i}" for i in range(40) for _ in range(4)]
    start = np.repeat(prompt_effect, 4) + rng.normal(0, 0.3, 160)
    policy = np.repeat(prompt_effect, 4) + 0.3 + rng.normal(0, 0.3, 160)
    paired = paired_prompt_bootstrap(policy, pids, start, pids)
    lo, hi = _unpaired_diff_ci(policy, start)
    assert paired["hi"] - paired["lo"] < 0.5 * (hi - lo)
    assert paired["lo"] > 0 and lo < 0  # the pairing finds the gain the unpaired CI cannot
    assert paired["diff"] == pytest.approx(policy.mean() - start.mean())


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
    rng = np.random.default_rng(0)
    per_prompt = rng.normal(size=50)
    x = np.repeat(per_prompt, 4)
    pids = [f"p{i}" for i in range(50) for _ in range(4)]
    b = prompt_bootstrap(x, pids, n_boot=4000)
    assert b["mean"] == pytest.approx(per_prompt.mean()) and b["n_prompts"] == 50
    lo, hi = _naive_ci(per_prompt, n_boot=4000)
    assert b["hi"] - b["lo"] == pytest.approx(hi - lo, rel=0.1)  # = the prompt means' CI
    lo_s, hi_s = _naive_ci(x, n_boot=4000)
    assert (b["hi"] - b["lo"]) > 1.7 * (hi_s - lo_s)  # the naive CI is ~sqrt(4) = 2x too narrow
    with pytest.raises(ValueError, match="one prompt id per value"):
        prompt_bootstrap(x, pids[:-1])


def test_weighted_prompt_bootstrap_and_entropy_ci():
    """A ratio (e.g. perplexity's tokens-weighted NLL) and the pooled unigram entropy, resampled by prompt."""
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


# ---- the one p-value ----------------------------------------------------------------------------


def test_bootstrap_p_by_hand():
    # B = 9 draws, none <= 0: 2 (1 + 0) / 10
    assert bootstrap_p(np.arange(1.0, 10.0)) == pytest.approx(0.2)
    # B = 9 draws, k = 2 of them <= 0 (7 >= 0): 2 (1 + 2) / 10
    assert bootstrap_p([-2.0, -1.0, 1, 2, 3, 4, 5, 6, 7]) == pytest.approx(0.6)
    # the other tail: 3 of the 9 draws are >= 0 (a draw of exactly 0 counts in both tails): 2 (1 + 3) / 10
    assert bootstrap_p([0.0, 1.0, 2.0, -1, -2, -3, -4, -5, -6]) == pytest.approx(0.8)
    # non-finite draws are left out: B = 4 finite, 1 <= 0: 2 (1 + 1) / 5
    assert bootstrap_p([1.0, 2.0, 3.0, float("nan"), float("-inf"), -1.0]) == pytest.approx(0.8)
    # all draws 0: both tails are every draw; capped at 1
    assert bootstrap_p(np.zeros(5)) == 1.0
    with pytest.raises(ValueError, match="no finite"):
        bootstrap_p([float("nan")])


def test_paired_bootstrap_and_frontier_comparison_give_the_same_p():
    """The same prompts, n_boot and seed give the same draws (`hierarchical_weights`) to the paired
    gain and to the shared bootstrap of the frontier: the same differences, the same p — computed
    here by hand from the draws, with the one convention."""
    rng = np.random.default_rng(5)
    prompts = [f"p{i}" for i in range(6)]
    ra, rb = rng.normal(0.2, 1.0, 6), rng.normal(0.0, 1.0, 6)
    B = 300
    paired = paired_prompt_bootstrap(ra, prompts, rb, prompts, n_boot=B)
    start = [{"prompt_id": p, "logp": 0.0, "ref_logp": 0.0, "reward": 0.0} for p in prompts]
    pts = {f"{name}@1.0": [{"prompt_id": p, "logp": 1.0, "ref_logp": 0.0, "reward": float(v)} for p, v in zip(prompts, r)]
           for name, r in (("a", ra), ("b", rb))}
    curves = F.curve_points(pts, start, SharedBootstrap(prompts, B), ("reward",))
    (row,) = F.matched_kl_comparisons(curves, [1.0], ("reward",))
    assert (row["a"], row["b"]) == ("a", "b")
    w = hierarchical_weights(6, 1, B)[:, 0, :]  # (B, P) prompt counts of each draw
    d = w @ (ra - rb) / w.sum(1)  # (B,) the drawn mean differences
    assert np.abs(d).min() > 1e-9  # no draw on the fence: the tails are unambiguous
    want = 2 * min(1 + (d <= 0).sum(), 1 + (d >= 0).sum()) / (B + 1)
    assert 2 / (B + 1) < want < 1  # both tails matter here, not the floor
    assert paired["p"] == row["p"] == pytest.approx(want)
    assert paired["diff"] == pytest.approx(row["diff"])


# ---- the shared bootstrap of the frontier ----------------------------------------------------------


def test_shared_bootstrap_by_hand():
    boot = SharedBootstrap(["b", "a", "a"], n_boot=50, n_seeds=2)
    w = hierarchical_weights(2, 2, 50)  # (B, S, P), prompts sorted: a, b
    recs = [{"prompt_id": "a", "seed_index": 0, "x": 1.0}, {"prompt_id": "a", "seed_index": 0, "x": 3.0},
            {"prompt_id": "b", "seed_index": 0, "x": 10.0}, {"prompt_id": "a", "seed_index": 1, "x": 5.0},
            {"prompt_id": "b", "seed_index": 1, "x": 7.0}]
    m = boot.mean(recs, lambda r: r["x"])
    assert m.shape == (51,) and m[0] == pytest.approx(26 / 5)  # index 0: the plain mean
    sums, counts = np.array([[4.0, 10.0], [5.0, 7.0]]), np.array([[2.0, 1.0], [1.0, 1.0]])  # (S, P)
    want = (w * sums).sum((1, 2)) / (w * counts).sum((1, 2))
    assert m[1:] == pytest.approx(want)
    s = summary(m)
    assert s["mean"] == m[0] and (s["lo"], s["hi"]) == pytest.approx(tuple(np.percentile(want, [2.5, 97.5])))


# ---- gains over the start, decisions, power -------------------------------------------------------


def test_compare_to_start_and_holm_by_hand():
    """Every sample gains exactly +1 reward and -0.5 judge, on_topic is unchanged: gains +1 / -0.5 with
    zero-width CIs and p at the floor 2 / (B + 1); on_topic 0 with p 1 (every draw is 0)."""
    B = 199
    start = [{"prompt_id": f"p{i}", "seed_index": s, "reward": 0.1 * i + s, "judge": -0.2 * i, "on_topic": float(i % 2)}
             for i in range(5) for s in range(2) for _ in range(3)]
    pol = [{**r, "reward": r["reward"] + 1.0, "judge": r["judge"] - 0.5} for r in start]
    g = compare_to_start(pol, start, B)
    assert g["reward_gain"] == pytest.approx(1.0) and (g["gain_ci_lo"], g["gain_ci_hi"]) == pytest.approx((1.0, 1.0))
    assert g["judge_gain"] == pytest.approx(-0.5) and g["judge_gain_ci_hi"] == pytest.approx(-0.5)
    assert g["gain_p"] == g["judge_gain_p"] == pytest.approx(2 / 200)
    assert g["on_topic_gain"] == 0.0 and g["on_topic_gain_p"] == 1.0
    assert "judge_gain" not in compare_to_start([{k: v for k, v in r.items() if k != "judge"} for r in pol], start, B)
    # Holm over two policies: both at 2 x (2 / 200); the third metric stays 1
    rows = with_holm([g, dict(g)])
    assert [r["gain_p_holm"] for r in rows] == pytest.approx([4 / 200, 4 / 200])
    assert [r["on_topic_gain_p_holm"] for r in rows] == [1.0, 1.0] and "gain_p_holm" not in g


def test_verdict_rules():
    assert verdict(0.1, 0.3, 0.01) == "higher"
    assert verdict(-0.3, -0.1, 0.01) == "lower"
    assert verdict(0.1, 0.3, 0.2) == NOT_DISTINGUISHABLE  # Holm
    assert verdict(-0.1, 0.3, 0.01) == NOT_DISTINGUISHABLE
    assert verdict(0.1, 0.3, ALPHA) == NOT_DISTINGUISHABLE  # strictly below ALPHA
    assert distinguishable(0.1, 0.3) and distinguishable(-0.3, -0.1) and not distinguishable(-0.1, 0.3)
    assert not distinguishable(0.1, 0.3, 0.06) and distinguishable(0.1, 0.3, 0.04)


@pytest.mark.parametrize("family", [1, 2, 5])
def test_detectable_difference_is_detected_80_percent_of_the_time_after_holm(family):
    """Simulated: estimates ~ N(true difference, SE) with the true difference set to the detectable
    one; judged two-sided at ALPHA / family (Holm's first step), 80 % are distinguishable."""
    se = 0.05
    lo, hi = -1.959964 * se, 1.959964 * se  # a 95 % CI of that SE
    d = detectable_difference(lo, hi, family)
    est = np.random.default_rng(family).normal(d, se, 400_000)
    z_crit = {1: 1.959964, 2: 2.241403, 5: 2.575829}[family]  # z_{1 - 0.05 / (2 family)}, from tables
    assert (np.abs(est) / se > z_crit).mean() == pytest.approx(0.80, abs=0.003)
    assert MDE_Z == pytest.approx(2.80, abs=0.005) and d / se == pytest.approx(z_crit + 0.841621, abs=1e-4)

def test_as_clean_array():
    assert as_clean_array(torch.tensor([[1.0, 2.0]]), "x").tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="x: empty"):
        as_clean_array([], "x")
    with pytest.raises(ValueError, match="x: input contains 1 NaN value"):
        as_clean_array([1.0, math.nan, 2.0], "x")


def test_entropy_from_the_clogc_table_equals_the_direct_formula():
    """The bootstrap's resampled counts are integers, so c log c is looked up: bit-identical values."""
    from alignment.study.stats import _clogc_table, _entropy
    counts = np.random.default_rng(0).integers(0, 40, size=(3, 5, 17)).astype(np.float64)
    counts[0, 0] = 0.0  # a resample without tokens: entropy 0
    got = _entropy(counts, _clogc_table(int(counts.max())))
    assert np.array_equal(got, _entropy(counts)) and got[0, 0] == 0.0
    c = np.array([2.0, 1.0, 1.0])
    assert got.shape == (3, 5) and _entropy(c, _clogc_table(2)) == pytest.approx(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25)))


def test_too_few_resamples_for_holm_warns_with_the_fix():
    from alignment.study.stats import check_p_floor
    with pytest.warns(UserWarning, match=r"eval.n_boot=50: with Holm over 2 .* use eval.n_boot >= 80"):
        check_p_floor(50, 2)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_p_floor(80, 2)  # 4 / 81 < 0.05: no warning


def test_paired_entropy_difference_is_the_difference_of_the_entropies_and_detects_a_collapse():
    from alignment.study.stats import paired_entropy_bootstrap
    rng = np.random.default_rng(0)
    prompts = [f"p{i // 2}" for i in range(80)]
    groups = [i % 2 for i in range(80)]
    rich = [list(rng.integers(0, 200, size=12)) for _ in range(80)]
    poor = [list(rng.integers(0, 8, size=12)) for _ in range(80)]
    h = paired_entropy_bootstrap(rich, prompts, groups, poor, prompts, groups, n_boot=400)
    per = lambda ids: np.mean([unigram_token_entropy([s for s, g in zip(ids, groups) if g == k]) for k in (0, 1)])  # noqa: E731
    assert h["diff"] == pytest.approx(per(rich) - per(poor), abs=1e-12)
    assert h["lo"] > 1.0 and h["p"] == pytest.approx(2 / 401)  # ~log(200) - log(8) nats, every draw > 0
    same = paired_entropy_bootstrap(rich, prompts, groups, rich, prompts, groups, n_boot=400)
    assert same["diff"] == 0.0 and same["lo"] == pytest.approx(0.0, abs=1e-12) and same["p"] == 1.0
    with pytest.raises(ValueError, match="same prompts and seeds"):
        paired_entropy_bootstrap(rich, prompts, groups, poor, prompts, [0] * 80, n_boot=10)


def test_token_entropy_ci_resamples_seeds_too():
    """Two seeds with very different entropies: the seed-level resampling widens the CI well beyond
    the prompts-only interval (one seed's draws alone)."""
    from alignment.study.stats import prompt_bootstrap_entropy
    rng = np.random.default_rng(1)
    prompts = [f"p{i % 30}" for i in range(120)]
    groups = [0] * 60 + [1] * 60
    ids = [list(rng.integers(0, 300 if g else 20, size=10)) for g in groups]
    both = prompt_bootstrap_entropy(ids, prompts, groups, n_boot=400)
    one = prompt_bootstrap_entropy(ids[:60], prompts[:60], None, n_boot=400)
    assert both["hi"] - both["lo"] > 5 * (one["hi"] - one["lo"])
