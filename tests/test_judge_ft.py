"""The fine-tuned judge (`alignment.assets.judge_ft`) at smoke size: a tiny BERT's top layer and head learn
the tiny corpus, it scores like the other scorers, its cache record is atomic and reused, and a
missing encoder fails with one message. The real build (all-mpnet-base-v2) is measured by
`python -m alignment judge-check`, not here."""
import json

import pytest
import torch
from conftest import CORPUS

from alignment.config import ConfigError, RewardConfig, load_config
from alignment.base.io import meta_path
from alignment.assets.judge_ft import JudgeBuildError, Recipe, build_judge, encoder_layers, top_only
from alignment.steps.reward import EmbeddingReward, load_judge
from alignment.run.stagecache import StageCache, offline_prerequisites

TINY = Recipe(layers=1, epochs=12, lr=3e-3, head_lr=3e-2, batch_size=16, max_length=32)


def _rows():
    """Train on 3 of every 4 corpus sentences, test on the rest."""
    return [r for i, r in enumerate(CORPUS) if i % 4], [r for i, r in enumerate(CORPUS) if not i % 4]


def _scorer(out):
    from safetensors.torch import load_file

    return EmbeddingReward(out / "encoder", load_file(str(out / "head.safetensors")), dtype="float32")


def test_tiny_judge_trains_scores_and_is_cached_once(tmp_path, tiny_classifier_dir, capsys):
    train, test = _rows()
    out = tmp_path / "judge-ft"
    assert build_judge(out, tiny_classifier_dir, train, test, TINY, sources="tiny") is True
    assert "fine-tuning the offline judge (once" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_train"] == len(train) and m["n_test"] == len(test)
    assert m["epochs"][-1]["loss"] < m["epochs"][0]["loss"]  # it learns ...
    assert m["epochs"][-1]["train_accuracy"] > 0.6  # ... its own rows, above chance
    assert json.loads(meta_path(out).read_text())["deps"]["recipe"]["layers"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no part or lock left behind
    scores = _scorer(out).score([t for t, _ in train] + ["", "word salad salad word"])
    assert scores.shape == (len(train) + 2,) and torch.isfinite(scores).all()
    y = torch.tensor([l for _, l in train])
    assert ((scores[: len(train)] > 0).long() == y).float().mean() > 0.6
    loss = torch.nn.functional.binary_cross_entropy_with_logits(scores[: len(train)], y.float()).item()
    assert loss < m["epochs"][0]["loss"]  # what was saved is the trained judge, not the warm start
    stamp = (out / "head.safetensors").stat().st_mtime_ns
    assert build_judge(out, tiny_classifier_dir, train, test, TINY, sources="tiny") is False  # reused
    assert (out / "head.safetensors").stat().st_mtime_ns == stamp and "fine-tuning" not in capsys.readouterr().out


def test_build_is_deterministic_and_tunes_only_the_top_layers(tmp_path, tiny_classifier_dir):
    from safetensors.torch import load_file
    from transformers import AutoModel

    train, test = _rows()
    small = Recipe(layers=1, epochs=2, lr=3e-3, head_lr=3e-2, batch_size=16, max_length=32, n_train=64)
    for name in ("a", "b"):
        build_judge(tmp_path / name, tiny_classifier_dir, train, test, small)
    a, b = (load_file(str(tmp_path / n / "encoder" / "model.safetensors")) for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded: the same bytes twice
    base = AutoModel.from_pretrained(tiny_classifier_dir).state_dict()
    changed = {k.split(".")[2] for k in a if "encoder.layer." in k and not torch.equal(a[k], base[k])}
    assert changed == {"1"} and all(torch.equal(a[k], base[k]) for k in a if "embeddings" in k)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["n_train"] == 64


def test_top_layers_on_cached_states_equal_the_full_model(tiny_classifier_dir, tiny_tokenizer):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_classifier_dir).eval()
    layers, emb = encoder_layers(model), model.embeddings
    enc = tiny_tokenizer(["a lovely film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model(**enc, output_hidden_states=True)
        with top_only(model, 1):
            top = model(inputs_embeds=full.hidden_states[1], attention_mask=enc["attention_mask"])
    assert torch.allclose(top.last_hidden_state, full.last_hidden_state, atol=1e-5)
    assert model.embeddings is emb and model.encoder.layer is layers  # put back as it was


def test_a_missing_encoder_fails_with_one_clear_error(tmp_path):
    with pytest.raises(JudgeBuildError, match="judge's encoder .*missing.*fix the path"):
        build_judge(tmp_path / "judge-ft", tmp_path / "no-such-encoder", *_rows(), TINY)
    assert list(tmp_path.iterdir()) == []  # nothing started


def test_offline_ft_is_a_judge_name_only(monkeypatch, tmp_path):
    import alignment.steps.reward as reward

    monkeypatch.setattr(reward, "offline_ft_judge", lambda *a, **k: "the fine-tuned judge")
    assert load_judge("offline-ft", RewardConfig()) == "the fine-tuned judge"
    cfg = load_config(overrides={"eval.judge": "offline-ft"})
    assert offline_prerequisites(cfg)[1] == ("reward", "topic", "judge_ft")  # its cache hash keys evaluations
    cache = StageCache(cfg, tmp_path)
    cache.record({"reward_head": "r", "topic_head": "t", "judge_ft_head": "f"})
    assert cache.scorer_identity(("eval",))["judge_ft_head"] == "f" and "judge_ft_head" not in cache.scorer_identity(("reward",))
    assert load_config().eval.judge == "offline-ft" and load_config(preset="smoke").eval.judge == "offline"
    with pytest.raises(ConfigError, match="reward.model='offline-ft'.*evaluation judge"):
        load_config(overrides={"reward.model": "offline-ft"})


class _Fixed:
    """A scorer with a fixed score per text."""

    def __init__(self, table):
        self.table = table

    def score(self, texts):
        return torch.tensor([self.table.get(t, 0.0) for t in texts])


def test_independence_measures():
    import random

    from alignment.run.judge_check import measure, shuffle_words, table, versus
    from alignment.study.stats import paired_phi_gap, phi

    a = torch.tensor([1, 0, 1, 0])
    assert phi(a, a) == pytest.approx(1) and phi(a, 1 - a) == pytest.approx(-1) and phi(a, torch.ones(4)) == 0.0
    ref, same, other = [1, 0, 1, 0] * 25, [1, 0, 1, 0] * 25, [1, 1, 0, 0] * 25
    g = paired_phi_gap(ref, same, other, n_boot=200)
    assert g["diff"] == pytest.approx(1.0) and 0 < g["lo"] <= g["hi"] and g["p"] < 0.05
    s = shuffle_words("one two three four five", random.Random(0))
    assert sorted(s.split()) == sorted("one two three four five".split())
    assert s == shuffle_words("one two three four five", random.Random(0))
    y = torch.tensor([1, 1, 0, 0])
    v = versus(torch.tensor([2.0, -1.0, -1.0, 1.0]), torch.tensor([1.0, -2.0, 1.0, -1.0]), y)
    assert v["sign_agreement"] == 0.5 and v["both_wrong"] == 0.25  # row 1 wrong for both; rows 2, 3 for one each
    assert v["agreement_if_independent"] == pytest.approx(0.5)  # both err half the time
    rows = [("good fun", 1), ("bad film", 0), ("so good", 1), ("so bad", 0)]
    ref = _Fixed({"good fun": 3.0, "bad film": -3.0, "so good": -1.0, "so bad": -1.0, "salad": 1.0})
    flat = _Fixed({"good fun": 1.0, "bad film": 1.0, "so good": 1.0, "so bad": 1.0})
    res = measure({"reward": ref, "judge": flat, "judge_ft": ref}, rows, {"salad": ["salad"]}, n_boot=50)
    r = res["scorers"]
    assert r["reward"]["accuracy"] == 0.75 and r["judge"]["accuracy"] == 0.5
    assert r["reward"]["degenerate"] == {"salad": 1.0} and r["judge_ft"]["vs_reward"]["error_phi"] == pytest.approx(1)
    assert list(res["error_phi_gaps"]) == ["judge - judge_ft"]
    out = table(res).splitlines()
    assert out[0].startswith("scorer | acc | agree") and out[-1].startswith("error phi with reward, judge - judge_ft")


def test_the_validation_split_is_fixed_disjoint_and_about_a_fifth():
    from alignment.run.judge_select import validation_split

    rows = [(f"review number {i}", i % 2) for i in range(1000)]
    fit, val = validation_split(rows)
    assert sorted(fit + val) == sorted(rows) and not set(fit) & set(val)
    assert 150 < len(val) < 250  # VALIDATION_SHARE 0.2 of 1000, by hash
    assert validation_split(list(reversed(rows)))[1] == list(reversed(val))  # a row's side is its text's, not its place
    assert validation_split(rows[:500])[1] == [r for r in val if r in rows[:500]]  # no size moves a row


def test_the_recipe_is_chosen_on_validation_rows_never_on_test(tmp_path, tiny_classifier_dir):
    import alignment.run.judge_select as jf

    rows = [r for i, r in enumerate(CORPUS) if i % 4]
    fit, val = jf.validation_split(rows)
    learns = Recipe(layers=1, epochs=3, lr=3e-3, head_lr=3e-2, batch_size=16, max_length=32)
    frozen = Recipe(layers=1, epochs=1, lr=0.0, head_lr=0.0, batch_size=16, max_length=32)
    res = jf.select_recipe(tiny_classifier_dir, rows, (frozen, learns))
    assert (res["n_fit"], res["n_validation"]) == (len(fit), len(val))
    accs = [c["validation_accuracy"] for c in res["candidates"]]
    assert res["chosen"] == accs.index(max(accs)) and [c["recipe"]["epochs"] for c in res["candidates"]] == [1, 3]
    build_judge(tmp_path / "j", tiny_classifier_dir, fit, val, learns)  # the same recipe, measured on val by hand
    assert json.loads((tmp_path / "j" / "metrics.json").read_text())["test_accuracy"] == accs[1]
    assert res["candidates"][0]["validation_accuracy"] == res["candidates"][0]["frozen_head_validation_accuracy"]
    with pytest.raises(JudgeBuildError, match="cannot choose among 0 recipes"):
        jf.select_recipe(tiny_classifier_dir, rows, ())


def test_the_wilson_interval_of_a_proportion():
    from alignment.run.judge_select import wilson

    lo, hi = wilson(0.9, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.826, 0.945)  # (0.9 + 0.0192 -+ 0.0619) / 1.0384
    lo, hi = wilson(1.0, 20)
    assert hi == pytest.approx(1.0) and round(lo, 3) == 0.839  # never above 1, unlike the normal interval
    with pytest.raises(ValueError, match="n >= 1"):
        wilson(0.5, 0)


def test_every_run_builds_the_recipe_the_validation_split_chose():
    """results/judge_selection.json is `python -m alignment judge-select`'s committed output."""
    from dataclasses import asdict
    from pathlib import Path

    from alignment.run.judge_select import CANDIDATES, wilson
    from alignment.steps.reward import FT_RECIPE

    sel = json.loads((Path(__file__).parent.parent / "results" / "judge_selection.json").read_text())
    assert [c["recipe"] for c in sel["candidates"]] == [asdict(c) for c in CANDIDATES]
    assert sel["candidates"][sel["chosen"]]["recipe"] == asdict(FT_RECIPE) == sel["judge"]["recipe"]
    assert max(c["validation_accuracy"] for c in sel["candidates"]) == sel["candidates"][sel["chosen"]]["validation_accuracy"]
    assert sel["chosen_is_ft_recipe"] is True
    assert sel["judge"]["test_accuracy_ci"] == list(wilson(sel["judge"]["test_accuracy"], sel["judge"]["n_test"]))


def test_the_results_page_says_how_the_recipe_was_chosen():
    from alignment.study.results_page import _selection_lines

    rec = {"layers": 6, "epochs": 1, "lr": 1e-4}
    sel = {"candidates": [{"recipe": {**rec, "layers": 2}, "validation_accuracy": 0.861},
                          {"recipe": rec, "validation_accuracy": 0.884}], "chosen": 1, "n_fit": 800, "n_validation": 200,
           "judge": {"n_train": 1000, "n_test": 400, "test_accuracy": 0.9, "test_accuracy_ci": [0.868, 0.925]}}
    line = _selection_lines(sel)[0]
    assert line.startswith("The fine-tuned judge's recipe was chosen on a validation split of its own training rows "
                           "(200 of 1000, by a fixed hash; `python -m alignment judge-select`): validation accuracy "
                           "0.861 (top 2 layers, 1 epoch, lr 0.0001), 0.884 (top 6 layers, 1 epoch, lr 0.0001); chosen: "
                           "top 6 layers, 1 epoch, lr 0.0001.")
    assert line.endswith("Trained so on all 1000 rows, its accuracy on the 400 test snippets (not used by this choice) "
                         "is 0.900 (95 % Wilson CI 0.868..0.925).")
    assert _selection_lines({k: v for k, v in sel.items() if k != "judge"}) == []  # a study that chose another recipe
