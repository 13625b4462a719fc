import dataclasses

import pytest

from alignment.config import Config, ConfigError, apply_overrides, load_config, parse_overrides, validate
from alignment.sources import source_problem
from alignment.steps.losses import LOSSES
from alignment.steps.pairs import STRATEGIES
from alignment.presets import PRESETS


def test_defaults_validate():
    cfg = Config()
    validate(cfg)
    assert load_config() == cfg


def _bad(overrides: dict, field: str, value: str) -> ConfigError:
    cfg = Config()
    with pytest.raises(ConfigError) as ei:
        apply_overrides(cfg, overrides)
        validate(cfg)
    msg = str(ei.value)
    assert field in msg, msg
    assert value in msg, msg
    return ei.value


def test_unknown_loss_lists_allowed_names():
    err = _bad({"dpo.loss": "dpo_plus"}, "dpo.loss", "dpo_plus")
    for name in LOSSES:
        assert name in str(err)


@pytest.mark.parametrize("alpha", ["0", "1", "1.5", "-0.2"])
def test_alpha_out_of_range_with_alpha_loss(alpha):
    _bad({"dpo.loss": "alpha", "dpo.alpha": alpha}, "dpo.alpha", alpha)


def test_alpha_ignored_for_other_losses():
    cfg = apply_overrides(Config(), {"dpo.loss": "sigmoid", "dpo.alpha": "1.5"})
    validate(cfg)
    validate(apply_overrides(Config(), {"dpo.loss": "alpha", "dpo.alpha": "0.3"}))


@pytest.mark.parametrize("beta", ["0", "-0.1"])
def test_beta_must_be_positive(beta):
    _bad({"dpo.beta": beta}, "dpo.beta", beta)


@pytest.mark.parametrize("n", ["1", "0"])
def test_n_samples_at_least_two(n):
    _bad({"sample.n_samples": n}, "sample.n_samples", n)


@pytest.mark.parametrize("k", ["0", "-3"])
def test_prompt_tokens_positive(k):
    _bad({"data.prompt_tokens": k}, "data.prompt_tokens", k)


@pytest.mark.parametrize("field,value", [
    ("model.policy", "./nope/model"), ("model.ref", "./nope/model"), ("reward.model", "./nope/model"),
    ("data.source", "./nope/reviews.csv"), ("data.source", "nope.csv"), ("model.policy", "a/b/c"),
    ("model.policy", "~/nope/model"),
])
def test_missing_local_paths(field, value):
    _bad({field: value}, field, value)


def test_existing_local_paths_and_hub_ids_accepted(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("text\nx\n")
    cfg = apply_overrides(Config(), {"model.policy": str(tmp_path), "data.source": str(csv),
                                     "reward.model": "lvwerra/distilbert-imdb", "model.ref": "gpt2"})
    validate(cfg)


def test_unknown_pair_strategy():
    err = _bad({"pairs.strategy": "best_of"}, "pairs.strategy", "best_of")
    for name in STRATEGIES:
        assert name in str(err)


@pytest.mark.parametrize("key", ["dpo.nope", "nope", "nope.beta", "dpo.beta.x"])
def test_unknown_override_key(key):
    with pytest.raises(ConfigError) as ei:
        apply_overrides(Config(), {key: "1"})
    assert key in str(ei.value)


def test_section_override_needs_fields():
    with pytest.raises(ConfigError, match="dpo"):
        apply_overrides(Config(), {"dpo": "3"})


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_bad_bool(value):
    _bad({"reward.score_prompt": value}, "reward.score_prompt", value)


@pytest.mark.parametrize("value,expect", [("true", True), ("False", False), ("1", True), ("off", False)])
def test_good_bool(value, expect):
    assert apply_overrides(Config(), {"reward.score_prompt": value}).reward.score_prompt is expect


def test_bad_number():
    _bad({"dpo.beta": "abc"}, "dpo.beta", "abc")
    _bad({"sample.n_samples": "four"}, "sample.n_samples", "four")


def test_types_are_coerced():
    cfg = apply_overrides(Config(), {"dpo.beta": "0.05", "sample.n_samples": "8", "run_dir": "runs/x"})
    assert cfg.dpo.beta == 0.05 and isinstance(cfg.dpo.beta, float)
    assert cfg.sample.n_samples == 8 and isinstance(cfg.sample.n_samples, int)
    assert cfg.run_dir == "runs/x"


def test_parse_overrides():
    assert parse_overrides(["dpo.beta=0.05", " run_dir = a=b "]) == {"dpo.beta": "0.05", "run_dir": "a=b"}
    with pytest.raises(ConfigError, match="dpo.beta"):
        parse_overrides(["dpo.beta"])


def test_yaml_and_override_precedence(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("run_dir: runs/yaml\n"
                 "dpo:\n  lr: 2.0e-5\n  beta: 0.2\n"
                 "sample:\n  n_samples: 6\n")
    smoke = PRESETS["smoke"]
    cfg = load_config(str(y), overrides=["dpo.beta=0.3"], preset="smoke")
    assert cfg.dpo.beta == 0.3                          # override beats yaml
    assert cfg.dpo.lr == 2e-5                           # yaml beats preset (smoke sets 1e-5)
    assert cfg.sample.n_samples == 6                    # yaml beats preset
    assert cfg.dpo.batch_size == smoke["dpo.batch_size"]  # preset beats default
    assert cfg.sample.max_new_tokens == smoke["sample.max_new_tokens"]
    assert cfg.run_dir == "runs/yaml"
    assert cfg.dpo.epochs == smoke["dpo.epochs"]
    # dict overrides work the same way
    assert load_config(str(y), overrides={"dpo.lr": "3e-5"}).dpo.lr == 3e-5


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    y = tmp_path / "bad.yaml"
    y.write_text("dpo:\n  beta: -1\n")
    with pytest.raises(ConfigError, match="dpo.beta"):
        load_config(str(y))
    y.write_text("dpo:\n  betta: 1\n")
    with pytest.raises(ConfigError, match="dpo.betta"):
        load_config(str(y))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(str(empty)) == Config()


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset"):
        load_config(preset="huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    cfg = load_config(preset=name)
    for key, value in PRESETS[name].items():
        section, attr = key.split(".")
        assert getattr(getattr(cfg, section), attr) == value


def test_to_dict_roundtrip():
    cfg = load_config(preset="smoke", overrides={"dpo.lr": "1e-5"})
    d = cfg.to_dict()
    assert d["dpo"]["lr"] == 1e-5 and d["data"]["n_train_prompts"] == 8 and d == dataclasses.asdict(cfg)


def test_judges_must_be_independent_and_on_topic():
    from alignment.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="eval.judge='vader'.*not be the training reward"):
        load_config(overrides={"reward.model": "vader", "eval.judge": "vader"})
    with pytest.raises(ConfigError, match="eval.topic_judge='vader'.*sentiment, not topic"):
        load_config(overrides={"eval.topic_judge": "vader"})
    with pytest.raises(ConfigError, match="eval.judge='./nope'"):
        load_config(overrides={"eval.judge": "./nope"})
    cfg = load_config(overrides={"eval.judge": "", "eval.topic_judge": ""})  # none: allowed
    assert cfg.eval.judge == "" and load_config().eval.judge == "offline-ft"  # the fine-tuned judge != the offline reward head


# ---- model and data names: a misspelt built-in name fails at load, not as a hub download later ----------
@pytest.mark.parametrize("field,value,guess", [
    ("eval.judge", "offline-reward", "offline-ft"), ("eval.judge", "ofline", "offline"), ("reward.model", "Vader", "vader"),
    ("reward.model", "offline-sft", "offline"), ("model.policy", "offline_sft", "offline-sft"),
    ("model.ref", "offlne", "offline"), ("data.source", "imbd", "imdb"), ("eval.topic_judge", "offline-ft", "offline"),
    ("sft.base", "offline-sft", "offline"), ("eval.judge", "python:mine", None),
])
def test_a_misspelt_built_in_name_is_refused_with_what_the_field_takes(field, value, guess):
    from alignment.sources import SOURCES

    with pytest.raises(ConfigError) as ei:
        load_config(overrides={field: value})
    msg, src = str(ei.value), SOURCES[field]
    assert msg.startswith(f"{field}={value!r} is not a name {field} knows" + (f"; did you mean {guess}?" if guess else "."))
    assert all(name in msg for name in src.named) and src.hub in msg and src.local in msg
    assert ("'' (none)" in msg) == (field in ("eval.judge", "eval.topic_judge"))


@pytest.mark.parametrize("field,value", [
    ("model.policy", "gpt2"), ("model.policy", "distilgpt2"), ("model.ref", "HuggingFaceTB/SmolLM2-135M"),
    ("reward.model", "lvwerra/distilbert-imdb"), ("reward.model", "python:my-sentiment"), ("eval.judge", "roberta-base"),
    ("eval.judge", "siebert/sentiment-roberta-large-english"), ("eval.judge", ""), ("eval.topic_judge", ""),
    ("model.ref", ""), ("data.source", "rotten_tomatoes"), ("data.source", "stanfordnlp/imdb"), ("sft.base", "gpt2"),
    ("eval.judge", "offline/judge"),  # org/name: a hub id, whatever the org is called
])
def test_hub_ids_python_rewards_and_none_stay_allowed(field, value):
    load_config(overrides={field: value})
    assert source_problem(field, value) is None  # the check alone says the same


def test_a_bare_python_prefix_names_no_function():
    assert "name the function after 'python:'" in source_problem("reward.model", "python:")
    with pytest.raises(ConfigError, match="name the function after 'python:'"):
        load_config(overrides={"reward.model": "python:"})
    assert source_problem("model.policy", "python:fn") is not None  # only the reward takes a Python function


def test_an_existing_local_dir_is_allowed_whatever_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "offline-reward").mkdir()
    assert load_config(overrides={"eval.judge": "offline-reward"}).eval.judge == "offline-reward"
