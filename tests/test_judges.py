"""The evaluation-only scorers: the human row's continuations, the judges' loading and errors."""
import pytest
import torch

from alignment.config import RewardConfig
from alignment.steps.data import make_prompt
from alignment.steps.evaluate import Scorers, human_records, score_all
from alignment.steps.reward import RewardError, load_judge, load_topic_judge


def test_human_row_is_the_reviews_own_continuation(tiny_tokenizer):
    tok = tiny_tokenizer
    long_text = "This movie was a delight from start to finish. I loved every minute of this film. " * 3
    short_text = "I loved every minute of this film."
    short = tok(short_text, add_special_tokens=False)["input_ids"]
    full = tok(long_text, add_special_tokens=False)["input_ids"]
    budget = len(short) - 2 + 1  # the short review ends inside the budget, the long one does not
    assert len(full) > 2 + budget
    texts = {"r1": long_text, "r2": short_text}
    prompts = []
    for i, (rid, t) in enumerate(texts.items()):
        ids = make_prompt(tok, t, 2)
        prompts.append({"id": f"eval{i}", "review_id": rid, "text": tok.decode(ids), "ids": ids})
    recs = human_records(prompts, texts, tok, max_new_tokens=budget, eos_id=tok.eos_token_id)
    assert recs[0]["completion_ids"] == full[2 : 2 + budget] and not recs[0]["finished"]  # cut, no EOS
    assert recs[0]["prompt"] + recs[0]["completion"] == tok.decode(full[: 2 + budget])
    # the review ends inside the budget: its rest, then EOS (as a model's sample ends with its stop token)
    assert recs[1]["completion_ids"] == short[2:] + [tok.eos_token_id] and recs[1]["finished"]
    assert [r["prompt_id"] for r in recs] == ["eval0", "eval1"] and all(r["sample"] == 0 for r in recs)
    # the rest is exactly the budget: no room for the stop token, so cut like a model's sample, not finished
    exact = human_records(prompts[1:], texts, tok, max_new_tokens=len(short) - 2, eos_id=tok.eos_token_id)[0]
    assert exact["completion_ids"] == short[2:] and not exact["finished"]


class _Const:
    def __init__(self, values):
        self.values = values

    def score(self, texts):
        return torch.tensor(self.values[: len(texts)], dtype=torch.float32)


def test_score_all_judges_and_on_topic():
    recs = [{"prompt": "p ", "completion": "a film"}, {"prompt": "p ", "completion": "  "},
            {"prompt": "p ", "completion": "the sale"}]
    out = score_all(Scorers(_Const([1.0, 2.0, 3.0]), _Const([0.5, -1.0, 0.0]), _Const([2.0, 5.0, -1.0])), recs)
    assert out == {"reward": [1.0, 2.0, 3.0], "judge": [0.5, -1.0, 0.0], "on_topic": [1.0, 0.0, 0.0]}  # empty: off
    assert set(score_all(Scorers(_Const([1.0, 2.0, 3.0])), recs)) == {"reward"}
    with pytest.raises(RewardError, match="NaN"):
        score_all(Scorers(_Const([1.0] * 3), _Const([float("nan")] * 3)), recs)


def test_judges_load_by_name_and_fail_clearly(tiny_classifier_dir, tmp_path):
    cfg = RewardConfig()
    assert load_judge("", cfg) is None and load_topic_judge("", cfg) is None
    j = load_judge(str(tiny_classifier_dir), cfg)
    assert j.score(["fine", "bad"]).shape == (2,)
    assert load_judge("vader", cfg).score(["great fun"]).item() > 0
    with pytest.raises(RewardError, match="eval.judge"):
        load_judge(str(tmp_path / "missing"), cfg)
    bad = tmp_path / "not_a_model"
    bad.mkdir()
    with pytest.raises(RewardError, match="eval.judge"):
        load_judge(str(bad), cfg)


def test_topic_judge_at_chance_is_refused(monkeypatch):
    import alignment.steps.reward as reward

    class Head(_Const):
        metrics = {"test_accuracy": 0.70, "test_positive_rate": 0.3}  # = always saying "off topic"

    monkeypatch.setattr(reward, "offline_head", lambda *a, **k: Head([0.0]))
    with pytest.raises(RewardError, match="eval.topic_judge=''"):
        load_topic_judge("offline", RewardConfig())
    Head.metrics = {"test_accuracy": 0.91, "test_positive_rate": 0.51}
    assert isinstance(load_topic_judge("offline", RewardConfig()), Head)


def test_topic_judge_errors_name_their_field(tmp_path):
    with pytest.raises(RewardError, match="eval.topic_judge="):
        load_topic_judge(str(tmp_path / "missing"), RewardConfig())


def test_train_head_fits_and_reports_held_out_accuracy(tmp_path):
    """A head on a toy embedder: words "good"/"bad" move one embedding axis. Accuracy on the
    held-out rows, the baseline's on the same rows, and the files the scorer loads."""
    from safetensors.torch import load_file

    from alignment.base.io import read_json
    from alignment.assets.reward_train import train_head

    def embed(texts):  # (n, 3): [#good - #bad, length, 1]
        return torch.tensor([[t.count("good") - t.count("bad"), len(t) / 10, 1.0] for t in texts])

    train = [(f"a good film {i}", 1) for i in range(20)] + [(f"a bad film {i}", 0) for i in range(20)]
    test = [("good good", 1), ("so bad", 0), ("bad", 0), ("good", 1)]
    baseline = lambda texts: torch.tensor([1.0 if "so" in t else -1.0 for t in texts])  # noqa: E731  (right on "bad" only)
    m = train_head(tmp_path, embed, train, test, baseline, sources="toy")
    assert m["test_accuracy"] == 1.0 and m["n_train"] == 40 and m["n_test"] == 4
    assert m["vader_test_accuracy"] == 0.25 and m["test_positive_rate"] == 0.5 and m["texts_per_s"] > 0
    head = load_file(str(tmp_path / "head.safetensors"))
    assert head["weight"].shape == (3,) and head["weight"][0] > 0  # "good" pushes the logit up
    assert read_json(tmp_path / "metrics.json") == m
    with pytest.raises(ValueError, match="no rows"):
        train_head(tmp_path, embed, train, [], sources="toy")
