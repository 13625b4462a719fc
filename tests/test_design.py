"""Variance components of a paired gain (closed-form tables) and the simulated coverage of the
crossed bootstrap's CI at a design."""
import numpy as np
import pytest

from alignment.study.design import cell_means, crossed_coverage, gain_design, variance_components


def test_components_of_additive_tables():
    seeds = np.array([-1.0, 0.0, 1.0])[:, None]  # var 1
    prompts = np.tile([-2.0, 2.0], 5)[None, :]   # var 40/9 (sample variance over 10 prompts)
    c = variance_components(seeds + prompts)  # no residual at all
    assert c["seed"] == pytest.approx(1.0) and c["prompt"] == pytest.approx(40 / 9) and c["resid"] == pytest.approx(0.0)
    se2 = 1.0 / 3 + 40 / 9 / 10
    assert c["se"] == pytest.approx(np.sqrt(se2)) and c["share_seed"] == pytest.approx(1 / 3 / se2)
    flat = variance_components(np.zeros((3, 10)))
    assert flat["se"] == 0.0 and flat["share_seed"] == 0.0


def test_components_recover_simulated_variances():
    rng = np.random.default_rng(0)
    S, P = 400, 300
    d = rng.normal(0, 1.0, (S, 1)) + rng.normal(0, 0.5, (1, P)) + rng.normal(0, 2.0, (S, P))
    c = variance_components(d)
    assert c["seed"] == pytest.approx(1.0, rel=0.2) and c["prompt"] == pytest.approx(0.25, rel=0.25)
    assert c["resid"] == pytest.approx(4.0, rel=0.05)


def test_coverage_is_nominal_without_seed_variance_and_low_when_three_seeds_dominate():
    assert 0.90 <= crossed_coverage(0.0, 1.0, 1.0, 3, 64, reps=300) <= 0.98
    assert crossed_coverage(1.0, 0.01, 0.01, 3, 64, reps=300) < 0.85  # 3 seeds: a coarse seed bootstrap


def test_gain_design_from_records():
    recs = lambda shift: [{"prompt_id": f"p{p}", "seed_index": s, "reward": shift + s + (p % 2) + 0.1 * k}  # noqa: E731
                          for s in range(3) for p in range(8) for k in range(2)]
    g = gain_design(recs(1.0), recs(0.0), reps=50)
    assert g["n_seeds"] == 3 and g["n_prompts"] == 8 and g["se"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="every seed"):
        cell_means([1.0, 2.0], ["a", "b"], [0, 1])
