"""The KL-regularised optimum π_β ∝ π_ref·exp(r/β) estimated from the start policy's samples, against
its closed form on a categorical reference; it bounds best-of-N at matched KL; each trained point's
share of best-of-N's and of the optimum's gain at its own KL, and how the report and plots show them."""
import math

import numpy as np
import pytest

from alignment.study import frontier as F
from alignment.study import optimum as O
from alignment.study import plots
from alignment.study import results_page
from alignment.study.frontier_report import gain_fraction_lines, sweep_lines
from alignment.study.stats import SharedBootstrap

P_REF = np.array([0.4, 0.25, 0.15, 0.12, 0.08])  # a reference over 5 outcomes
REWARD = np.array([0.0, 0.5, 1.0, 1.5, 2.5])


def _exact(beta: float) -> tuple[float, float]:
    """KL(π_β || π_ref) and E_β[r] of π_β ∝ π_ref·exp(r/β) on the categorical reference."""
    pi = P_REF * np.exp(REWARD / beta)
    pi /= pi.sum()
    return float(pi @ np.log(pi / P_REF)), float(pi @ REWARD)


def _categorical(q: np.ndarray, n_prompts: int, n: int, seed: int = 0) -> list[dict]:
    """n samples per (seed, prompt) from the sampler q, with logp = log q and ref_logp = log π_ref."""
    rng = np.random.default_rng(seed)
    return [{"prompt_id": f"p{g}", "seed_index": s, "reward": float(REWARD[k]), "judge": -float(REWARD[k]),
             "logp": math.log(q[k]), "ref_logp": math.log(P_REF[k])}
            for s in (0, 1) for g in range(n_prompts) for k in rng.choice(len(q), n, p=q)]


def _gaussian(n_prompts: int, n: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"prompt_id": f"p{g}", "reward": float(x), "logp": -1.0, "ref_logp": -1.0}
            for g in range(n_prompts) for x in rng.normal(0.0, 1.0, n)]


@pytest.mark.parametrize("q", [P_REF, np.full(5, 0.2)], ids=["sampled from pi_ref", "sampled from uniform q"])
def test_optimum_matches_the_closed_form_on_a_categorical_reference(q):
    """Self-normalised weights over 256 samples per (seed, prompt), 2 x 100 of them: KL and E[r]
    within 3 % / 0.03 of the exact values; a sampler q != π_ref is corrected for (weights and KL).
    The tolerance excludes the usual slips: weights exp(r·β) (the exact values at 1/β) and
    KL = log N + H(w) (> log 256)."""
    recs = _categorical(q, 100, 256)
    boot = SharedBootstrap([r["prompt_id"] for r in recs], 20, n_seeds=2)
    betas = (2.0, 0.7, 0.3)
    curve = O.optimum_curve(recs, boot, ("reward", "judge", "pred_entropy"), betas)
    assert [p["beta"] for p in curve] == [math.inf, *betas] and "pred_entropy" not in curve[0]
    assert curve[0]["kl"][0] == pytest.approx(0.0, abs=0.005)  # β = ∞: π_ref itself
    assert curve[0]["reward"][0] == pytest.approx(P_REF @ REWARD, abs=0.02)
    for p in curve[1:]:
        kl, reward = _exact(p["beta"])
        assert p["kl"][0] == pytest.approx(kl, rel=0.03)
        assert p["reward"][0] == pytest.approx(reward, abs=0.03) and p["judge"][0] == pytest.approx(-p["reward"][0])
        slip_kl, slip_reward = _exact(1 / p["beta"])  # what exp(r·β) weights would estimate
        assert abs(slip_kl - kl) > 0.03 * kl + 0.01 and abs(slip_reward - reward) > 0.06
        assert p["kl"][1:].std() > 0  # bootstrapped over seeds x prompts
    kls = [p["kl"][0] for p in curve]
    assert kls == sorted(kls) and max(kls) < math.log(256)


def test_the_beta_grid_spans_kl_from_005_to_the_cap():
    """β values log-spaced from the optimum at KL 0.05 to the one at log(N/8) (2.08 nats for N = 64);
    a discrete reference that cannot get that far stops at 90 % of all weight on its best outcome;
    8 samples per prompt carry no optimum at all."""
    recs = _gaussian(100, 64)
    betas = O.optimum_betas(recs)
    assert len(betas) == O.OPT_K and list(betas) == sorted(betas, reverse=True)
    assert np.allclose(np.diff(np.log(betas)), np.log(betas[1] / betas[0]))  # log-spaced
    assert O.optimum_kl_cap(recs) == pytest.approx(math.log(64 / 8))
    curve = O.optimum_curve(recs, SharedBootstrap([f"p{g}" for g in range(100)], 5), ("reward",))
    assert curve[1]["kl"][0] == pytest.approx(O.OPT_KL_LO, rel=1e-3)
    assert curve[-1]["kl"][0] == pytest.approx(math.log(8), rel=1e-3)
    best = -math.log(P_REF[-1])  # KL of all weight on the best outcome
    top = O.optimum_curve(_categorical(P_REF, 30, 512), SharedBootstrap([f"p{g}" for g in range(30)], 5, n_seeds=2),
                          ("reward",))[-1]
    assert best < O.optimum_kl_cap(_categorical(P_REF, 2, 512)) and top["kl"][0] == pytest.approx(0.9 * best, rel=0.05)
    assert O.optimum_betas(_gaussian(10, 8)) == () and O.optimum_curve(_gaussian(10, 8), None, ("reward",)) == []


def test_the_optimum_is_above_best_of_n_at_best_of_ns_kl():
    """N(0, 1) rewards: π_β is N(1/β, 1), E[r] = sqrt(2 KL), above best-of-n at every KL (at n = 4:
    1.13 vs 1.03); estimated from the same 64 samples per prompt, the optimum stays above best-of-n
    at each n whose KL it reaches, and not above the true optimum (self-normalising is biased low)."""
    recs = _gaussian(400, 64)
    boot = SharedBootstrap([f"p{g}" for g in range(400)], 50)
    bon, opt = F.bon_curve(recs, boot, ("reward",)), O.optimum_curve(recs, boot, ("reward",))
    reached = [b for b in bon[1:] if b["kl"][0] <= opt[-1]["kl"][0]]
    assert [b["n"] for b in reached] == [2, 4, 8, 16]
    for b in reached:
        above = F.interpolate(opt, "reward", b["kl"][0])[0] - b["reward"][0]
        exact = math.sqrt(2 * b["kl"][0]) - b["reward"][0]  # the true optimum above best-of-n's estimate
        assert 0.03 < above < exact + 0.02, b["n"]


def _const(x: float, n: int = 201) -> np.ndarray:
    return np.full(n, x)


def _hand_curves():
    """A start at reward 0, judge 0; `rkl` points at KL 1 (reward 0.3, judge 0.2) and KL 5; best-of-N
    from (0, 0) to (4, 1) in reward and flat in judge; the optimum from (0, 0) to (2.25, 1.5). Curves are
    read linearly in √KL: at KL 1, best-of-N 0.5 and the optimum 1.0."""
    start = {"beta": math.inf, "kl": _const(0.0), "reward": _const(0.0), "judge": _const(0.0)}
    curves = {"rkl": [start, {"beta": 1.0, "kl": _const(1.0), "reward": _const(0.3), "judge": _const(0.2)},
                      {"beta": 0.1, "kl": _const(5.0), "reward": _const(0.9), "judge": _const(0.4)}]}
    bon = [{"n": n, "kl": _const(k), "reward": _const(r), "judge": _const(0.0)} for n, k, r in ((1, 0.0, 0.0), (64, 4.0, 1.0))]
    opt = [{"beta": b, "kl": _const(k), "reward": _const(r), "judge": _const(r)}
           for b, k, r in ((math.inf, 0.0, 0.0), (0.5, 2.25, 1.5))]
    return curves, bon, opt


def test_gain_fractions_at_the_points_own_kl():
    curves, bon, opt = _hand_curves()
    rows = {(r["label"], r["beta"], r["field"]): r for r in F.gain_fractions(curves, bon, opt)}
    near = rows[("rkl", 1.0, "reward")]
    assert near["frac_bon"] == pytest.approx(0.6) and near["frac_opt"] == pytest.approx(0.3)  # 0.3 / 0.5, 0.3 / 1.0
    assert near["frac_bon_lo"] == pytest.approx(0.6) and near["valid_bon"] == 1.0 and near["kl_max_bon"] == 4.0
    far = rows[("rkl", 0.1, "reward")]  # KL 5: beyond both
    assert far["frac_bon"] is None and far["frac_opt"] is None and far["valid_bon"] == 0.0 and far["kl"] == 5.0
    assert far["why_bon"] == far["why_opt"] == "beyond" and near["why_bon"] is None
    flat = rows[("rkl", 1.0, "judge")]  # best-of-N gains nothing on the judge: no share of it
    assert flat["frac_bon"] is None and flat["why_bon"] == "no gain" and flat["frac_opt"] == pytest.approx(0.2)
    # best-of-N's gain is taken from its own start (best-of-1: other samples of the start policy)
    shifted = [{**b, "reward": b["reward"] + 0.1} for b in bon]
    assert F.gain_fractions(curves, shifted, opt, ("reward",))[0]["frac_bon"] == pytest.approx(0.6)
    late = [{**b, "kl": b["kl"] + 1.5} for b in bon]  # best-of-N starting at KL 1.5: the point lies below it
    rows = F.gain_fractions(curves, late, [], ("reward",))
    assert rows[0]["why_bon"] == "below" and rows[0]["why_opt"] == "no curve" and rows[0]["kl_max_opt"] is None
    # per draw, best-of-N (√KL / 2 here) is read at that draw's KL of the point: draws past KL 4 do not count
    kl = np.linspace(1.0, 5.0, 201)
    point = {"kl": kl, "reward": 0.4 * np.sqrt(kl)}
    frac = F.gain_fraction(point, curves["rkl"][0], bon, "reward")
    assert np.allclose(frac[kl <= 4.0], 0.8) and np.isnan(frac[kl > 4.0]).all()
    curves["rkl"][1] = {"beta": 1.0, "kl": kl, "reward": 0.4 * np.sqrt(kl)}
    row = next(r for r in F.gain_fractions(curves, bon, opt, ("reward",)) if r["beta"] == 1.0)
    assert row["valid_bon"] == pytest.approx(150 / 200) and row["frac_bon"] == pytest.approx(0.8)


def test_report_says_each_points_share_or_why_not():
    curves, bon, opt = _hand_curves()
    pts = F.point_table({**curves, F.BON: bon, O.OPTIMUM: opt})
    sweep = {"points": pts, "gain_fractions": F.gain_fractions(curves, bon, opt), "read_along": F.READ_ALONG,
             "optimum": {"label": O.OPTIMUM, "kl_cap": 2.5, "n_samples": 64, "min_samples": 8}}
    lines = gain_fraction_lines(sweep)
    assert lines[0].startswith("The `KL-optimal` curve")
    assert "64 samples per prompt, up to KL 2.25 (as far as the samples' rewards reach below its cap 2.50)" in lines[0]
    at_cap = gain_fraction_lines({**sweep, "optimum": {**sweep["optimum"], "kl_cap": 2.25}})[0]
    assert "up to KL 2.25 (beyond it the weights would rest on fewer than 8 samples per prompt)" in at_cap
    assert lines[1] == ("Each point's gain over the start as a share of best-of-N's and of the optimum's at the point's "
                        "own KL (curves read linearly in √KL between their points; 95 % CI over seeds × prompts; "
                        "\"beyond (x)\": the point lies past the curve's largest KL, x):")
    table = lines[3].splitlines()
    assert table[0] == ("| point | KL | reward, of best-of-N's | reward, of the optimum's | judge, of best-of-N's | "
                        "judge, of the optimum's |")
    assert table[2] == "| `rkl` β=1 | 1.00 | 60 % (60..60 %) | 30 % (30..30 %) | no gain at this KL | 20 % (20..20 %) |"
    assert table[3] == "| `rkl` β=0.1 | 5.00 | beyond (4.00) | beyond (2.25) | beyond (4.00) | beyond (2.25) |"
    alone = gain_fraction_lines({"points": pts, "gain_fractions": F.gain_fractions(curves, bon, [])})
    assert alone[0].startswith("Each point's gain over the start as a share of best-of-N's at the point's own KL")
    assert alone[2].splitlines()[3] == "| `rkl` β=0.1 | 5.00 | beyond (4.00) | beyond (4.00) |"  # no optimum: no column
    assert "(curves read linearly in KL between" in alone[0]  # a result that does not say √KL was read in KL
    part = {"label": "rkl", "beta": 1.0, "field": "reward", "kl": 1.0, "frac_bon": 0.5, "frac_bon_lo": 0.4,
            "frac_bon_hi": 0.6, "valid_bon": 0.985}  # a CI over 98.5 % of the draws: floored, never "99%"
    assert "| 50 % (40..60 %; 98% of draws) |" in gain_fraction_lines({"points": pts, "gain_fractions": [part]})[2]
    # a sweep.json without the optimum (older results) says nothing about it
    assert gain_fraction_lines({"points": pts[:3]}) == []
    base = {"points": pts, "runs": [{}], "wall_minutes": 1.0, "matched_kl": [], "comparisons": [],
            "grid": {"losses": ["rkl"], "betas": [1.0, 0.1], "seeds": [0], "alphas": [0.5]}}
    text = "\n".join(sweep_lines({**base, **sweep}))
    assert "0 of 1 pairs compared" in text and "| `rkl` β=1 | 1.00 | 60 %" in text  # the bound is not a pair
    old = "\n".join(sweep_lines({**base, "points": [p for p in pts if p["label"] != O.OPTIMUM]}))
    assert "0 of 1 pairs compared" in old and "KL-optimal" not in old and "share of" not in old
    brief = results_page._frontier_brief({**sweep, "comparisons": []})
    assert "(1 divergence curves along β" in brief


def test_the_frontier_plots_draw_the_optimum_on_kl_axes(tmp_path, monkeypatch):
    curves, bon, opt = _hand_curves()
    for c in (*curves.values(), bon):
        for p in c:
            p["pred_entropy"] = _const(1.0)
    pts = F.point_table({**curves, F.BON: bon, O.OPTIMUM: opt})
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    for x, y in (("kl", "reward"), ("kl", "judge"), ("pred_entropy", "reward")):
        plots.frontier(pts, x, y, tmp_path / f"{y}_{x}.png")
    labels = [[ln.get_label() for ln in fig.axes[0].get_lines()] for fig in figs]
    assert all(any(lab.startswith(O.OPTIMUM) for lab in ls) for ls in labels[:2])
    assert not any(lab.startswith(O.OPTIMUM) for lab in labels[2])  # no predictive entropy for the optimum
    line = next(ln for ln in figs[0].axes[0].get_lines() if ln.get_label().startswith(O.OPTIMUM))
    assert line.get_linestyle() == "--" and list(line.get_xdata()) == [0.0, 2.25]
    assert [fig.axes[0].get_xscale() for fig in figs] == ["function", "function", "linear"]  # KL on a √ scale
    monkeypatch.undo()
    assert plots.frontier(pts, "kl", "reward", tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.parametrize("q", [P_REF, np.full(5, 0.2)], ids=["sampled from pi_ref", "sampled from uniform q"])
def test_the_best_objective_matches_its_closed_form(q):
    """J*(β) - J(π_ref) = β·log E_ref[exp(r/β)] - E_ref[r], from 256 samples per (seed, prompt) within 0.02 of
    the exact value (β·log E_ref[exp(r·β)], the slip, is 0.19 / 0.46 away at β 2 / 0.7)."""
    recs = _categorical(q, 100, 256)
    boot = SharedBootstrap([r["prompt_id"] for r in recs], 20, n_seeds=2)
    for beta in (2.0, 0.7):
        exact = beta * math.log(P_REF @ np.exp(REWARD / beta)) - P_REF @ REWARD
        gain, kl = O.optimal_objective(recs, boot, beta)
        assert gain[0] == pytest.approx(exact, abs=0.02)
        assert kl == pytest.approx(_exact(beta)[0], rel=0.03) and gain[1:].std() > 0
    two = [{"prompt_id": "p", "reward": x, "logp": -0.7, "ref_logp": -0.7} for x in (0.0, 1.0)]
    assert O.optimal_objective(two, SharedBootstrap(["p"], 3), 1.0)[0][0] == pytest.approx(0.1201, abs=1e-4)


@pytest.mark.parametrize("q", [P_REF, np.full(5, 0.2)], ids=["sampled from pi_ref", "sampled from uniform q"])
def test_progress_is_one_at_the_optimum_zero_at_the_start(q):
    """A point that *is* π_β (the optimum curve's own point, estimated from the same samples) has progress
    exactly 1, even when the sampler is not π_ref; the start policy 0 (its own small KL counted: a start
    whose KL is 0.3 nats costs β·0.3 of its J); a point that bought reward with twice the KL π_β spends
    is below 1 by that KL's price."""
    recs = _categorical(q, 100, 256)
    boot = SharedBootstrap([r["prompt_id"] for r in recs], 20, n_seeds=2)
    opt = O.optimum_curve(recs, boot, ("reward",), (1.0,))  # [π_ref, π_1]
    assert opt[0]["kl"][0] == 0.0  # β = ∞: the weights are π_ref's, KL exactly 0
    dear = {**opt[1], "kl": 2 * opt[1]["kl"]}
    drifted = {**opt[0], "kl": opt[0]["kl"] + 0.3}  # a start 0.3 nats off π_ref, trained to π_1 plus that drift
    rows = O.objective_progress({"tilt": opt, "dear": [opt[0], dear], "start": [opt[0], {**opt[0], "beta": 1.0}],
                                 "drift": [drifted, {**opt[1], "kl": opt[1]["kl"] + 0.3}]}, recs, boot)
    got = {r["label"]: r for r in rows}
    assert got["tilt"]["progress"] == pytest.approx(1.0, abs=1e-9)
    assert got["tilt"]["progress_lo"] == pytest.approx(1.0) and got["tilt"]["progress_hi"] == pytest.approx(1.0)
    assert got["start"]["progress"] == pytest.approx(0.0, abs=1e-9)
    assert got["drift"]["progress"] == pytest.approx(1.0, abs=1e-9)  # both paid the same 0.3 nats
    want = 1 - float(opt[1]["kl"][0]) / got["dear"]["optimal_gain"]  # J drops by β·KL(π_1)
    assert got["dear"]["progress"] == pytest.approx(want, abs=1e-9) and got["dear"]["why"] is None


def test_progress_is_not_read_beyond_the_cap_or_without_a_gain():
    gauss = _gaussian(10, 64)  # N(0, 1) rewards, 64 per prompt: π_0.05 needs more KL than log(64 / 16)
    g_boot = SharedBootstrap([r["prompt_id"] for r in gauss], 5)
    g_opt = O.optimum_curve(gauss, g_boot, ("reward",), (1.0,))
    assert O.optimum_kl_cap(gauss, O.OBJ_MIN_ESS) == pytest.approx(math.log(64 / 16))
    far = O.objective_progress({"x": [g_opt[0], {**g_opt[1], "beta": 0.05}]}, gauss, g_boot)[0]
    assert far["progress"] is None and far["why"] == "beyond" and far["optimum_kl"] > far["kl_cap"]
    near = O.objective_progress({"x": g_opt}, gauss, g_boot)[0]  # π_1: KL ~0.4, well inside
    assert near["why"] is None and near["progress"] == pytest.approx(1.0)
    flat = [{**r, "reward": 0.5} for r in gauss]  # every sample the same reward: nothing to gain
    flat_opt = [{**p, "reward": np.full_like(p["reward"], 0.5)} for p in g_opt]
    none = O.objective_progress({"x": flat_opt}, flat, g_boot)[0]
    assert none["progress"] is None and none["why"] == "no gain" and none["progress_lo"] is None
