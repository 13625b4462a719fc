"""Frontier statistics on hand-made samples: the best-of-N KL formula and order-statistic
weights, interpolation at matched KL, paired comparisons and their verdicts."""
import math
from itertools import combinations, product

import numpy as np
import pytest

from alignment.study import frontier as F
from alignment.study.frontier_report import verdict_lines
from alignment.study.stats import SharedBootstrap


def test_bon_kl_is_the_kl_of_the_best_of_n_order_statistic():
    """With continuous rewards, the reward's CDF value of best-of-n is the max of n uniforms (density
    n u^(n-1) on [0, 1]; π's is 1), and KL is unchanged by that bijection: integrate it numerically."""
    u = (np.arange(400_000) + 0.5) / 400_000  # midpoints on [0, 1]
    for n in (1, 2, 3, 5) + F.BON_NS:
        log_q = math.log(n) + (n - 1) * np.log(u)
        assert F.bon_kl(n) == pytest.approx(float(np.mean(np.exp(log_q) * log_q)), abs=1e-5), n
    assert all(F.bon_kl(a) < F.bon_kl(b) for a, b in zip(F.BON_NS, F.BON_NS[1:]))
    with pytest.raises(ValueError, match="n must be >= 1"):
        F.bon_kl(0)


def test_bon_kl_matches_a_simulated_best_of_n():
    """Monte Carlo: a policy with continuous, distinct rewards (a small categorical, each category's
    reward spread uniformly over overlapping ranges); best-of-n simulated by drawing n samples and
    keeping the highest reward; KL(best-of-n || π) estimated from the two samples' counts in 100 bins
    of equal π mass (binning loses < 0.002 nats here; Monte Carlo SE ~0.004)."""
    rng = np.random.default_rng(0)
    w, offset = np.array([0.5, 0.3, 0.2]), np.array([0.0, 0.4, 1.5])

    def draw(shape):
        return offset[rng.choice(3, size=shape, p=w)] + rng.random(shape)

    n_draws, bins = 200_000, 100
    for n in (2, 4, 16):
        ref = draw(n_draws)
        edges = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
        best = draw((n_draws, n)).max(axis=1)
        q = np.bincount(np.searchsorted(edges, best), minlength=bins) / n_draws
        p = np.bincount(np.searchsorted(edges, ref), minlength=bins) / n_draws
        kl = float((q[q > 0] * np.log(q[q > 0] / p[q > 0])).sum())
        assert kl == pytest.approx(F.bon_kl(n), abs=0.02), n


def _enumerated_best_of_n(pi: np.ndarray, reward: np.ndarray, n: int) -> np.ndarray:
    """The exact best-of-n distribution of a categorical policy: every ordered n-tuple of outcomes
    with its probability, credited to its highest-reward outcome."""
    q = np.zeros(len(pi))
    for t in product(range(len(pi)), repeat=n):
        q[max(t, key=lambda i: reward[i])] += float(np.prod(pi[list(t)]))
    return q


def test_bon_kl_bounds_the_exact_kl_of_best_of_n_on_a_categorical_policy():
    """Exact enumeration on a 3-outcome policy (distinct rewards), its outcomes then split into k equally
    likely ones with distinct rewards: best of 1 is π itself (KL 0); for n >= 2 the KL stays strictly
    below log n - (n-1)/n (each atom is a block of tied continuous rewards) and rises to it as the atoms
    shrink (within 0.01 at k = 4)."""
    pi0 = np.array([0.5, 0.3, 0.2])
    for n in (1, 2, 3, 4):
        kls = []
        for k in (1, 2, 4):
            pi = np.repeat(pi0 / k, k)
            reward = np.random.default_rng(k).permutation(len(pi)).astype(float)  # distinct, in no particular order
            q = _enumerated_best_of_n(pi, reward, n)
            assert q.sum() == pytest.approx(1.0)
            kls.append(float((q[q > 0] * np.log(q[q > 0] / pi[q > 0])).sum()))
        if n == 1:
            assert kls == pytest.approx([0.0, 0.0, 0.0], abs=1e-12) and F.bon_kl(1) == 0.0
        else:
            assert 0 < kls[0] < kls[1] < kls[2] < F.bon_kl(n) < kls[2] + 0.01, (n, kls)


def test_bon_weights_are_the_exact_best_of_n_expectation():
    vals = np.array([1.0, 5.0, 2.0, 7.0])  # sorted by reward: 1, 2, 5, 7
    for n in (1, 2, 3, 4):
        w = F.bon_weights(4, n)
        assert w.sum() == pytest.approx(1.0)
        subsets = list(combinations(sorted(vals), n))  # every n-subset equally likely: its max
        assert w @ np.sort(vals) == pytest.approx(np.mean([max(s) for s in subsets]))
    with pytest.raises(ValueError):
        F.bon_weights(3, 4)


def test_best_of_n_values_pick_by_reward_and_carry_the_judge():
    recs = [{"prompt_id": "a", "reward": r, "judge": j} for r, j in ((0.0, 10.0), (1.0, 20.0))]
    one = F.best_of_n_values(recs, 1, ("reward", "judge"))[0]
    two = F.best_of_n_values(recs, 2, ("reward", "judge"))[0]
    assert one["reward"] == 0.5 and one["judge"] == 15.0  # best of 1 = a random sample
    assert two["reward"] == 1.0 and two["judge"] == 20.0  # the judge of the reward's pick


def test_judge_selected_share_of_best_of_n_closed_form():
    """Best-of-2 picked by the judge: a judge that reverses the reward buys -1x the reward's gain, one that agrees
    with it 1x; with 4 samples the judge's pick of 2 is worked out by hand."""
    boot = SharedBootstrap(["a"], 50)
    flip = F.judge_selected([{"prompt_id": "a", "reward": r, "judge": j} for r, j in ((0.0, 1.0), (1.0, 0.0))], boot, (1, 2, 4))
    assert [r["n"] for r in flip["by_n"]] == [2] and flip["by_n"][0]["share"] == pytest.approx(-1.0)  # n 4 > 2 samples
    assert flip["within_prompt_corr"] == pytest.approx(-1.0) and flip["by_n"][0]["kl"] == pytest.approx(F.bon_kl(2))
    same = F.judge_selected([{"prompt_id": "a", "reward": r, "judge": 3 * r} for r in (0.0, 1.0)], boot, (2,))
    assert same["by_n"][0]["share"] == pytest.approx(1.0) and same["within_prompt_corr"] == pytest.approx(1.0)
    # rewards 0,1,2,3; judge ranks them 1,0,3,2 (it swaps neighbours). Best of 2 of 4 by reward: the i-th lowest wins
    # with C(i,1)/C(4,2) = 0,1,2,3 /6 -> E = (1+4+9)/6 = 14/6; by the judge the winners' rewards (in judge order 1,0,3,2)
    # get the same weights: (0 + 2*3 + 3*2)/6 = 12/6. Mean 1.5: shares (12/6 - 1.5) / (14/6 - 1.5) = 0.6
    swap = [{"prompt_id": "a", "reward": float(r), "judge": j} for r, j in ((0, 1.0), (1, 0.0), (2, 3.0), (3, 2.0))]
    assert F.judge_selected(swap, SharedBootstrap(["a"], 50), (2,))["by_n"][0]["share"] == pytest.approx(0.6)
    assert F.judge_selected([{"prompt_id": "a", "reward": 0.0}], boot, (2,)) is None  # no judge scores
    # two prompts, one whose judge agrees (share 1) and one whose judge reverses (share -1), equal gains: 0 overall,
    # and the bootstrap draws resample the prompts, so the 95 % interval spans both
    two = [{**r, "prompt_id": "b"} for r in swap] + [{"prompt_id": "c", "reward": float(r), "judge": float(-r)} for r in range(4)]
    row = F.judge_selected(two, SharedBootstrap(["b", "c"], 200), (2,))["by_n"][0]
    assert row["share"] == pytest.approx((0.6 - 1) / 2) and row["share_lo"] < row["share"] < row["share_hi"]
    assert row["share_lo"] == pytest.approx(-1.0) and row["share_hi"] == pytest.approx(0.6)


def _recs(pid_vals: dict[str, list[tuple[float, float]]]) -> list[dict]:
    """{prompt: [(kl, reward) per sample]} -> annotated-like records (logp - ref_logp = kl)."""
    return [{"prompt_id": p, "logp": kl, "ref_logp": 0.0, "reward": r} for p, xs in pid_vals.items() for kl, r in xs]


def test_interpolate_linear_in_root_kl_and_nan_outside():
    boot = SharedBootstrap(["a", "b"], n_boot=20)
    start = _recs({"a": [(0.0, 0.0)], "b": [(0.0, 0.0)]})
    far = _recs({"a": [(2.0, 1.0)], "b": [(2.0, 1.0)]})
    curve = F.curve_points({"x@0.1": far}, start, boot, ("reward",))["x"]
    assert [p["beta"] for p in curve] == [math.inf, 0.1]
    y = F.interpolate(curve, "reward", 0.5)  # √0.5 is half of √2: half the gain (linear in KL: a quarter)
    assert y[0] == pytest.approx(0.5) and np.allclose(y, 0.5)
    assert np.isnan(F.interpolate(curve, "reward", 3.0)).all()
    # a start whose own KL is not 0 (bf16 sampling): √ of the KL above it
    lifted = [{**p, "kl": p["kl"] + 0.04} for p in curve]
    assert F.interpolate(lifted, "reward", 0.04 + 0.5)[0] == pytest.approx(0.5)
    assert F.interpolate(curve, "kl", 0.5, x="reward")[0] == pytest.approx(1.0)  # at a matched reward: linear in it


def test_matched_kl_grid_inside_every_trained_range():
    """The grid lies inside the KL range each curve has *trained* points on (not on the straight
    segment from the shared start), at the centres of equal log-spaced bins."""
    boot = SharedBootstrap(["a"], n_boot=5)
    start = _recs({"a": [(0.0, 0.0)]})
    curves = F.curve_points({"x@1.0": _recs({"a": [(1.0, 0.1)]}), "x@0.1": _recs({"a": [(4.0, 0.5)]}),
                             "y@1.0": _recs({"a": [(0.5, 0.1)]}), "y@0.1": _recs({"a": [(2.0, 0.3)]})},
                            start, boot, ("reward",))
    grid = F.matched_kl_grid(curves)
    assert grid == pytest.approx([1.0 * 2 ** (1 / 6), 2 ** 0.5, 2 ** (5 / 6)]) and grid == sorted(grid)
    assert F.trained_range(curves["y"]) == (0.5, 2.0)
    assert F.matched_kl_grid({"x": curves["x"][:2], "y": curves["y"][:2]}) == []  # one trained point each
    # a curve that crosses a KL twice is not monotone (reported, never interpolated)
    bent = F.curve_points({"z@1.0": _recs({"a": [(3.0, 0.1)]}), "z@0.1": _recs({"a": [(2.0, 0.3)]})},
                          start, boot, ("reward",))["z"]
    assert not F.monotone(bent) and F.monotone(curves["x"])


def _two_beta_curves(prompts, level, shifts: dict[str, float], n_boot: int):
    boot = SharedBootstrap(prompts, n_boot=n_boot)
    start = _recs({p: [(0.0, level[p])] for p in prompts})
    pts = {}
    for name, shift in shifts.items():
        pts[f"{name}@1.0"] = _recs({p: [(1.0, level[p] + 0.2 + shift / 2)] for p in prompts})
        pts[f"{name}@0.1"] = _recs({p: [(3.0, level[p] + 0.6 + shift)] for p in prompts})
    return F.curve_points(pts, start, boot, ("reward",))


def test_matched_kl_comparison_is_paired_and_says_higher_lower_or_not_distinguishable():
    """Curves with the same KL per prompt; 'hi' has reward +shift on every prompt, 'same' equals
    the base: a paired comparison finds 'higher' with a tiny CI and 'not distinguishable' for
    identical curves, though prompts differ a lot (an unpaired CI would be wide)."""
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(40)]
    level = {p: rng.normal(0, 2.0) for p in prompts}  # large between-prompt spread
    curves = _two_beta_curves(prompts, level, {"base": 0.0, "same": 0.0, "hi": 0.3}, 400)
    rows = F.matched_kl_comparisons(curves, [2.0], ("reward",))
    by = {(r["a"], r["b"]): r for r in rows}
    hb = by.get(("hi", "base")) or by[("base", "hi")]
    sign = 1 if ("hi", "base") in by else -1
    t = (math.sqrt(2) - 1) / (math.sqrt(3) - 1)  # KL 2 between KL 1 (β 1: +0.15) and KL 3 (β 0.1: +0.3), in √KL
    assert sign * hb["diff"] == pytest.approx(0.15 + 0.15 * t)
    assert hb["hi"] - hb["lo"] < 1e-9 and hb["verdict"] == ("higher" if sign > 0 else "lower")
    assert hb["p"] == pytest.approx(2 / 401)  # no draw of the difference on the other side of 0: the floor
    same = by.get(("base", "same")) or by[("same", "base")]
    assert same["diff"] == 0.0 and same["verdict"] == "not distinguishable at this size"
    assert same["p"] == 1.0  # every draw is exactly 0: both tails hold all 400, 2 x 401/401 capped at 1
    # the same curves, each on its own bootstrap draws (no pairing): the prompt spread swamps the +0.225
    hi_alone = F.curve_points({"hi@1.0": _recs({p: [(1.0, level[p] + 0.2 + 0.15)] for p in prompts}),
                               "hi@0.1": _recs({p: [(3.0, level[p] + 0.6 + 0.3)] for p in prompts})},
                              _recs({p: [(0.0, level[p])] for p in prompts}), SharedBootstrap(prompts, 400, seed=1),
                              ("reward",))["hi"]
    unpaired = F.interpolate(hi_alone, "reward", 2.0) - F.interpolate(curves["base"], "reward", 2.0)
    lo, hi = np.percentile(unpaired[1:], [2.5, 97.5])
    assert unpaired[0] == pytest.approx(0.15 + 0.15 * t) and lo < 0 < hi and hi - lo > 100 * (hb["hi"] - hb["lo"] + 1e-12)
    assert all("p_holm" in r for r in rows) and len(rows) == 3
    lines = verdict_lines(rows)
    assert len(lines) == 3 and all("at KL 2.00" in ln for ln in lines)
    assert F.matched_kl_comparisons(curves, [0.5], ("reward",)) == []  # below every trained point: no comparison


def test_a_clear_difference_survives_holm_at_the_sweeps_family_size():
    """7 curves x 3 grid KLs = 63 comparisons: with n_boot = 100 x 63 (what the sweep uses) a large,
    noisy effect is still called 'higher' (with n_boot = 1000 the p floor alone, 2 x 63/1001 after
    Holm, would forbid it)."""
    rng = np.random.default_rng(1)
    prompts = [f"p{i}" for i in range(32)]
    level = {p: rng.normal(0, 1.0) for p in prompts}
    names = {f"c{k}": 0.0 for k in range(6)}
    names["c6"] = 1.0
    m = F.n_comparisons(7, 3)
    curves = _two_beta_curves(prompts, level, names, 100 * m)
    for c in curves.values():  # per-prompt noise so the CIs are not degenerate
        for p in c[1:]:
            p["reward"] = p["reward"] + rng.normal(0, 0.05, p["reward"].shape)
    rows = F.matched_kl_comparisons(curves, [1.2, 1.7, 2.4], ("reward",))
    assert len(rows) == m
    big = [r for r in rows if "c6" in (r["a"], r["b"])]
    assert all(r["verdict"] in ("higher", "lower") for r in big)
    assert all(r["p"] >= 2 / (100 * m + 1) for r in rows)


def test_bon_curve_from_start_samples():
    boot = SharedBootstrap(["a", "b"], n_boot=10)
    start = [{"prompt_id": p, "reward": float(i), "judge": float(-i), "seed_index": 0, "pred_entropy": 3.0,
              "logp": -10.0 - 0.01 * i, "ref_logp": -10.0} for p in ("a", "b") for i in range(16)]
    curve = F.bon_curve(start, boot, ("reward", "judge", "pred_entropy"))
    assert [p["n"] for p in curve] == [1, 2, 4, 8, 16]  # the default N values up to the 16 samples per prompt
    assert curve[0]["reward"][0] == pytest.approx(7.5) and curve[-1]["reward"][0] == pytest.approx(15.0)
    assert curve[-1]["judge"][0] == pytest.approx(-15.0) and "pred_entropy" not in curve[0]
    # KL to the reference = bon_kl + the chosen sample's own log q - log p (here -0.01 * its rank)
    assert curve[2]["kl"][0] == pytest.approx(F.bon_kl(4) - 0.01 * float(F.bon_weights(16, 4) @ np.arange(16)))
    assert curve[0]["kl"][0] == pytest.approx(-0.075)  # best of 1: the start's own mean log-ratio
    table = F.point_table({F.BON: curve})
    assert table[0]["label"] == F.BON and table[0]["n"] == 1 and "reward_lo" in table[0]


def test_family_labels():
    assert F.family_label("alpha", 0.3) == "alpha=0.3"
    assert F.family_label("reverse_kl", 0.5) == "reverse_kl"
    assert "heuristic" in F.family_label("chi2", 0.5)


def test_per_pair_kl_values_reach_best_of_n():
    """grid=None: each pair is compared inside the overlap of its own trained ranges, so a
    best-of-N curve (N <= 16: KL <= 1.82) is compared with a divergence curve reaching 1..5 nats at KL
    values in [1, 1.82], and two curves that do not overlap are not compared at all."""
    boot = SharedBootstrap(["a", "b"], n_boot=200)
    start = _recs({"a": [(0.0, 0.0)], "b": [(0.0, 0.1)]})
    pts = {"pol@1.0": _recs({"a": [(1.0, 0.2)], "b": [(1.0, 0.3)]}),
           "pol@0.1": _recs({"a": [(5.0, 0.9)], "b": [(5.0, 1.0)]}),
           "far@1.0": _recs({"a": [(6.0, 0.9)], "b": [(6.0, 1.0)]}),
           "far@0.1": _recs({"a": [(9.0, 1.2)], "b": [(9.0, 1.3)]})}
    curves = F.curve_points(pts, start, boot, ("reward",))
    curves["bon"] = [{"n": n, "kl": np.full(201, F.bon_kl(n)), "reward": np.full(201, 0.1 + 0.2 * i)}
                     for i, n in enumerate((1, 2, 4, 8, 16))]
    rows = F.matched_kl_comparisons(curves, None, ("reward",))
    assert {(r["a"], r["b"]) for r in rows} == {("pol", "bon")}  # far overlaps neither
    assert len(rows) == 3 and all(1.0 <= r["kl"] <= F.bon_kl(16) for r in rows)


def test_diversity_is_compared_at_matched_reward():
    """Two curves reach the same rewards at different KL, one keeping more entropy: matched on reward the
    entropy gap is the same at every reward (+0.5, paired, 'higher'), whatever their KL; on the KL axis
    the same rows would mix reward and diversity."""
    prompts = [f"p{i}" for i in range(20)]
    boot = SharedBootstrap(prompts, n_boot=200)

    def recs(kl, reward, ent):
        return [{"prompt_id": p, "logp": kl, "ref_logp": 0.0, "reward": reward + 0.01 * i, "pred_entropy": ent}
                for i, p in enumerate(prompts)]
    start = recs(0.0, 0.0, 4.0)
    pts = {"wide@1.0": recs(0.5, 0.2, 4.0), "wide@0.1": recs(2.0, 1.0, 3.6),
           "narrow@1.0": recs(1.0, 0.2, 3.5), "narrow@0.1": recs(4.0, 1.0, 3.1)}
    curves = F.curve_points(pts, start, boot, ("reward", "pred_entropy"))
    rows = F.matched_kl_comparisons(curves, None, ("pred_entropy",), x="reward")
    assert len(rows) == 3 and all(r["x"] == "reward" and "kl" not in r for r in rows)
    assert [r["reward"] for r in rows] == pytest.approx([0.2 + 0.8 / 6 + 0.095, 0.2 + 0.4 + 0.095, 0.2 + 4 / 6 + 0.095])
    for r in rows:
        sign = 1 if r["a"] == "wide" else -1
        assert sign * r["diff"] == pytest.approx(0.5) and r["verdict"] == ("higher" if sign > 0 else "lower")
    from alignment.study.frontier_report import comparison_line
    line = comparison_line(rows, "pred_entropy", "sweep.json", x="reward")
    assert line.startswith("pred_entropy: 3 of 3 pairwise comparisons distinguishable (Holm)") and " at reward 0." in line
    assert F.matched_kl_grid(curves, x="reward") == pytest.approx([r["reward"] for r in rows])
