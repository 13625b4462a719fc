"""A reward written in Python (`reward.model=python:<name>`, `Pipeline(cfg, reward=fn)`): it scores
the samples and builds the pairs, keys the cache by its name, and every misuse names the fix."""
import pytest
import torch

from alignment.config import ConfigError, load_config
from alignment.run.pipeline import Pipeline
from alignment.steps.reward import FunctionReward, RewardError

from test_pipeline_e2e import tiny_cfg


def exclamations(texts: list[str]) -> torch.Tensor:
    """A toy sentiment: the share of characters that are vowels, plus one per "!"."""
    return torch.tensor([sum(c in "aeiou" for c in t) / max(len(t), 1) + t.count("!") for t in texts])


def test_a_python_reward_scores_the_samples_and_builds_the_pairs(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                 reviews_csv):
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, "python:vowels", reviews_csv,
                   **{"eval.topic_judge": str(tiny_classifier_dir), "reward.batch_size": 2})
    pipe = Pipeline(cfg, reward=exclamations)
    pipe.prepare()
    samples, rewards = pipe.data.samples(), pipe.data.rewards()
    texts = [s["prompt"] + s["completion"] for s in samples]  # reward.score_prompt=True
    assert torch.tensor(rewards).tolist() == pytest.approx(exclamations(texts).tolist())
    pairs, stats = pipe.data.pairs()
    assert stats["n_pairs"] == len(pairs) > 0
    for p in pairs:  # best vs worst of each prompt, by the function's scores
        assert p["margin"] == pytest.approx(p["chosen_reward"] - p["rejected_reward"]) and p["margin"] >= 0


def test_the_function_must_be_named_and_passed(tmp_path, tiny_gpt2_dir, reviews_csv):
    with pytest.raises(ConfigError, match="name the function after 'python:'"):
        load_config(overrides={"reward.model": "python:"})
    named = tiny_cfg(tmp_path / "a", tiny_gpt2_dir, "python:vowels", reviews_csv, **{"eval.topic_judge": ""})
    with pytest.raises(RewardError, match=r"Pipeline\(cfg, reward=fn\)"):
        Pipeline(named).models.reward
    other = tiny_cfg(tmp_path / "b", tiny_gpt2_dir, "vader", reviews_csv, **{"eval.topic_judge": "", "eval.judge": ""})
    with pytest.raises(RewardError, match="set reward.model='python:<name>'"):
        Pipeline(other, reward=exclamations).models.reward


def test_a_function_that_miscounts_or_returns_nan_is_refused():
    texts = ["good", "bad", "fine"]
    assert FunctionReward(lambda ts: [1.0] * len(ts), "python:ones", batch_size=2).score(texts).tolist() == [1.0] * 3
    with pytest.raises(RewardError, match="returned 2 scores for 3 texts"):
        FunctionReward(lambda ts: [1.0, 2.0], "python:two", batch_size=8).score(texts)
    with pytest.raises(RewardError, match="NaN/inf"):
        FunctionReward(lambda ts: [float("nan")] * len(ts), "python:nan").score(texts)
