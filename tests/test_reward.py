import pytest
import torch

from alignment.config import RewardConfig
from alignment.steps.reward import (ClassifierReward, RewardError, VaderReward, check_finite, load_reward,
                              positive_index, reward_texts, score_records)

TEXTS = [
    "A long and winding review that goes on and on about the acting, the music and the ending of the film.",
    "Great.",
    "This movie was really bad!!",
    "",
    "Mediocre at best, but the lead is charming enough.",
    "Bad.",
    "I loved every minute of this film, truly a wonderful surprise from start to finish.",
]


@pytest.fixture(scope="module")
def clf(tiny_classifier_dir):
    return ClassifierReward(tiny_classifier_dir, batch_size=3, max_length=64, device=torch.device("cpu"))


def test_classifier_scores_shape_finite_in_order(clf):
    scores = clf.score(TEXTS)
    assert scores.shape == (len(TEXTS),) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    one_by_one = torch.cat([clf.score([t]) if t else scores[i : i + 1] for i, t in enumerate(TEXTS)])
    assert torch.allclose(scores, one_by_one, atol=1e-5)
    assert len(set(one_by_one.tolist())) == len(TEXTS)  # distinct, so a permutation would show
    # reversed input -> reversed output
    assert torch.allclose(clf.score(TEXTS[::-1]), scores.flip(0), atol=1e-5)


@pytest.mark.xfail(strict=True, raises=RuntimeError,
                   reason="known limitation: with a tokenizer that adds no special tokens (GPT-2 style), "
                          "a scoring batch made only of empty texts encodes to width 0 and the model "
                          "forward fails; mixed with non-empty texts it is padded and works")
def test_classifier_batch_of_only_empty_texts(clf):
    clf.score(["", ""])


def test_classifier_uses_positive_logit(clf):
    assert clf.pos == 1
    enc = clf.tok(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        logit = clf.model(**enc).logits[0, 1]
    assert clf.score(TEXTS[:1])[0] == pytest.approx(logit.item(), abs=1e-5)


def test_classifier_truncates_long_texts(clf):
    long = " ".join(["the acting is superb"] * 200)  # far beyond max_length=64 tokens
    assert torch.isfinite(clf.score([long, "ok"])).all()


def test_load_reward_local_dir(tiny_classifier_dir):
    r = load_reward(RewardConfig(model=tiny_classifier_dir, batch_size=2))
    assert isinstance(r, ClassifierReward) and r.batch_size == 2
    with pytest.raises(RewardError, match="reward.model"):
        load_reward(RewardConfig(model="./nope/model"))
    assert isinstance(load_reward(RewardConfig(model="vader")), VaderReward)


@pytest.mark.parametrize("id2label,expect", [
    ({0: "NEGATIVE", 1: "POSITIVE"}, 1),
    ({0: "POSITIVE", 1: "NEGATIVE"}, 0),
    ({0: "LABEL_0", 1: "LABEL_1"}, 1),
    ({"0": "neg", "1": "pos"}, 1),
    ({0: "negative", 1: "neutral", 2: "positive"}, 2),
    ({0: "LABEL_0"}, 0),  # a scalar reward model: its one output
])
def test_positive_index(id2label, expect):
    assert positive_index(id2label) == expect


def test_positive_index_three_classes_without_pos():
    with pytest.raises(RewardError, match="positive class"):
        positive_index({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})


def test_vader_orders_sentiment():
    s = VaderReward().score(["this movie was really good!!", "this movie was really bad!!", ""])
    assert s.shape == (3,)
    assert s[0] > 0 > s[1]
    assert s[2] == 0.0
    assert (s.abs() <= 1).all()


def test_check_finite():
    ok = torch.tensor([0.0, 1.0])
    assert check_finite(ok, ["a", "b"]) is ok
    with pytest.raises(RewardError) as ei:
        check_finite(torch.tensor([0.0, 1.0, float("nan"), float("inf")]), ["a", "b", "the bad one", "d"])
    msg = str(ei.value)
    assert "index 2" in msg and "2 text(s)" in msg and "the bad one" in msg


def test_reward_texts_and_score_records():
    recs = [{"prompt": "This movie", "completion": " was great"},
            {"prompt": "I", "completion": ""}]
    assert reward_texts(recs, True) == ["This movie was great", "I"]
    assert reward_texts(recs, False) == [" was great", ""]
    scores = score_records(VaderReward(), recs, score_prompt=True)
    assert isinstance(scores, list) and len(scores) == 2 and scores[0] > 0


def test_a_scalar_reward_model_scores_with_its_one_output(tmp_path, tiny_tokenizer):
    """A reward model with num_labels=1 (trl's RewardTrainer saves these) is accepted: its score is
    its single logit, the same number a direct forward gives."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, pad_token_id=tiny_tokenizer.pad_token_id, num_labels=1)
    torch.manual_seed(1)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    texts = ["a lovely film", "dull and long, a waste"]
    got = load_reward(RewardConfig(model=str(tmp_path), dtype="float32")).score(texts)
    with torch.no_grad():
        want = [model(**tiny_tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_automatic_scoring_batch_is_the_cpu_default_and_scores_the_same(tiny_classifier_dir, capsys):
    """reward.batch_size=0 on a CPU scores 64 texts a batch, silently, and gives what a fixed size gives;
    a Python reward has no model to size, so it takes the same 64."""
    from alignment.steps.reward import FunctionReward

    auto = ClassifierReward(tiny_classifier_dir, batch_size=0, max_length=64, device=torch.device("cpu"))
    texts = [t for t in TEXTS if t] * 20  # 120 texts (a batch of empty texts alone is a known limitation)
    assert [len(b) for b in auto.batches(texts)] == [64, 56] and capsys.readouterr().out == ""
    fixed = ClassifierReward(tiny_classifier_dir, batch_size=5, max_length=64, device=torch.device("cpu"))
    assert torch.allclose(auto.score(texts), fixed.score(texts), atol=1e-5)
    assert FunctionReward(lambda t: torch.zeros(len(t)), "python:zeros", 0).batch_size == 64
    from alignment.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="reward.batch_size"):
        load_config(overrides={"reward.batch_size": -1})


def test_loading_an_offline_scorer_never_builds_it(tmp_path, monkeypatch):
    """`offline_head` / `offline_ft_judge` load what `ensure_head` built; a missing head is one clear error
    naming the command that builds it, and nothing is trained or written."""
    import alignment.steps.reward as reward
    from alignment.assets import offline

    monkeypatch.setattr(offline, "minilm_dir", lambda: pytest.fail("an encoder was fetched"))
    monkeypatch.setattr(offline, "mpnet_dir", lambda: pytest.fail("an encoder was fetched"))
    monkeypatch.setattr(reward, "head_dir", lambda kind: tmp_path / f"head-{kind}")
    monkeypatch.setattr(reward, "train_head", lambda *a, **k: pytest.fail("a load trained a head"))
    for kind in ("reward", "topic"):
        with pytest.raises(RewardError, match=rf"offline {kind} head is not built yet .*python -m alignment assets"):
            reward.offline_head(kind)
    with pytest.raises(RewardError, match="fine-tuned judge is not built yet"):
        reward.offline_ft_judge()
    assert list(tmp_path.iterdir()) == []
