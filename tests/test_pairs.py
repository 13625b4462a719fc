import math
import random

import pytest

from alignment.steps.pairs import STRATEGIES, adjacent, all_pairs, build_pairs, max_min, random_pairs

R = [0.1, 0.9, 0.5, 0.3]


def _records(rewards_by_prompt: dict[str, list[float]]):
    recs, rewards = [], []
    for pid, rs in rewards_by_prompt.items():
        for j, r in enumerate(rs):
            recs.append({"prompt_id": pid, "sample": j, "prompt": f"P{pid}", "completion": f"{pid}-c{j}",
                         "completion_ids": [j + 1, 0], "finished": True})
            rewards.append(r)
    return recs, rewards


def test_max_min():
    assert max_min(R, random.Random(0)) == [(1, 0)]


def test_all_pairs():
    pairs = all_pairs(R, random.Random(0))
    assert len(pairs) == 6
    assert {frozenset(p) for p in pairs} == {frozenset((i, j)) for i in range(4) for j in range(i + 1, 4)}
    assert all(R[a] > R[b] for a, b in pairs)


def test_adjacent():
    assert adjacent(R, random.Random(0)) == [(1, 2), (2, 3), (3, 0)]


@pytest.mark.parametrize("seed", range(5))
def test_random_pairs(seed):
    pairs = random_pairs(R, random.Random(seed))
    assert len(pairs) == 2
    used = [i for p in pairs for i in p]
    assert sorted(used) == [0, 1, 2, 3]  # disjoint, covering all samples
    assert all(R[a] > R[b] for a, b in pairs)


def test_random_pairs_seeded_through_build_pairs():
    recs, rew = _records({f"p{i}": [0.1 * ((i * 7 + j * 3) % 10) for j in range(6)] for i in range(8)})
    a, _ = build_pairs(recs, rew, "random", seed=1)
    b, _ = build_pairs(recs, rew, "random", seed=1)
    c, _ = build_pairs(recs, rew, "random", seed=2)
    assert a == b and a != c


def test_build_pairs_records_and_stats():
    recs, rew = _records({"a": R, "b": [1.0, -1.0]})
    pairs, stats = build_pairs(recs, rew, "max_min")
    assert len(pairs) == 2
    p = pairs[0]
    assert p["prompt_id"] == "a" and p["prompt"] == "Pa"
    assert p["chosen"] == "a-c1" and p["rejected"] == "a-c0"
    assert p["chosen_ids"] == [2, 0] and p["rejected_ids"] == [1, 0]
    assert p["chosen_reward"] == 0.9 and p["rejected_reward"] == 0.1
    assert p["margin"] == pytest.approx(0.8)
    assert pairs[1]["chosen"] == "b-c0" and pairs[1]["margin"] == 2.0
    assert stats["n_prompts"] == 2 and stats["n_pairs"] == 2 and stats["prompts_all_tied"] == 0
    assert stats["margin_mean"] == pytest.approx(1.4) and stats["margin_min"] == pytest.approx(0.8)


def test_min_margin_drops_pairs():
    recs, rew = _records({"a": R})
    pairs, stats = build_pairs(recs, rew, "all_pairs", min_margin=0.3)
    # gaps: .8 .4 .2 | .4 .6 | .2  -> two pairs of gap 0.2 are dropped
    assert len(pairs) == 4 and stats["pairs_below_margin"] == 2
    assert all(p["margin"] > 0.3 for p in pairs)
    pairs, stats = build_pairs(recs, rew, "adjacent", min_margin=0.3)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a-c1", "a-c2")]
    assert stats["pairs_below_margin"] == 2


def test_ties_within_prompt_never_become_pairs():
    recs, rew = _records({"a": [0.5, 0.5, 0.2]})
    pairs, _ = build_pairs(recs, rew, "all_pairs")
    assert len(pairs) == 2 and all(p["margin"] > 0 for p in pairs)


def test_all_tied_prompt_counted_not_crashing():
    recs, rew = _records({"a": R, "tied": [0.4, 0.4, 0.4, 0.4], "b": [0.0, 1.0, 0.5, 0.2]})
    pairs, stats = build_pairs(recs, rew, "max_min")
    assert {p["prompt_id"] for p in pairs} == {"a", "b"}
    assert stats["prompts_all_tied"] == 1 and stats["n_prompts"] == 3 and stats["n_pairs"] == 2


def test_all_prompts_tied_raises():
    recs, rew = _records({"a": [0.3, 0.3], "b": [0.1, 0.1]})
    with pytest.raises(ValueError, match=r"pairs\.min_margin"):
        build_pairs(recs, rew, "max_min")
    recs, rew = _records({"a": [0.3, 0.35]})
    with pytest.raises(ValueError, match=r"pairs\.min_margin=0\.1"):
        build_pairs(recs, rew, "all_pairs", min_margin=0.1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_reward_names_sample_and_prompt(bad):
    recs, rew = _records({"a": R, "b": [0.2, 0.4, 0.6]})
    rew[5] = bad
    with pytest.raises(ValueError) as ei:
        build_pairs(recs, rew, "max_min")
    msg = str(ei.value)
    assert "sample 5" in msg and "prompt b" in msg


def test_unknown_strategy_and_length_mismatch():
    recs, rew = _records({"a": R})
    with pytest.raises(ValueError) as ei:
        build_pairs(recs, rew, "best_of_n")
    assert "best_of_n" in str(ei.value) and all(s in str(ei.value) for s in STRATEGIES)
    with pytest.raises(ValueError, match="4 samples but 3 rewards"):
        build_pairs(recs, rew[:3], "max_min")
