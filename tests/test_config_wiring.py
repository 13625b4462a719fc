"""Config as one source of truth: every field is validated by the rule declared on it, changes the
hash of the artifacts that depend on it (unless declared `hashed=False`), and is actually read by
the code that should use it during a real (tiny) run; a repeated `--set` keeps every override."""
from __future__ import annotations

import dataclasses
import sys

import pytest

from alignment import cli
from alignment.run import experiments
from alignment.config import SECTIONS, Config, ConfigError, load_config, section_deps
from alignment.base.io import read_json, stable_hash
from alignment.run.pipeline import Pipeline

# fields that change no artifact, and why (declared with rule(..., hashed=False) in config.py)
NOT_HASHED = {"track.mode", "track.project", "track.run_name", "track.log_models",  # where tracking goes, what it uploads
              "dpo.save_every", "sft.save_every", "dpo.save_minutes", "sft.save_minutes",  # checkpoint cadence: same result
              "dpo.eval_every",  # how often the held-out pairs are scored: the same weights, more or fewer log entries
              "eval.n_examples",  # how many examples are shown
              "eval.human_row",  # whether the human row is added (its own artifact; no model's result changes)
              "eval.n_seeds",  # how many seeds Level 1 runs (each seed's policy and evaluation is its own artifact)
              "sft.out",  # where the SFT model is written
              "sample.batch_size",  # how many sequences decode at once: each completion draws from its own stream
              "pairs.source"}  # when set, keys every artifact by its rows' hash (top-level `pairs_source`), not its name


def all_fields() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(Config(), s))]


class _Reads:
    """Records which config fields code outside alignment.config reads (asdict/replace/hash excluded)."""
    fields: set[str] = set()


def _recording(section: str, obj):
    cls = type(obj)

    def getattribute(self, attr):
        if attr in names:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("alignment.") and caller != "alignment.config":
                _Reads.fields.add(f"{section}.{attr}")
        return object.__getattribute__(self, attr)

    names = {f.name for f in dataclasses.fields(cls)}
    sub = dataclasses.dataclass(type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": getattribute}))
    return sub(**dataclasses.asdict(obj))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """A tiny Level 1 + lr lesson + a LoRA policy + SFT (LoRA) on local models, with every config
    read recorded; returns (fields read, the deps of every artifact's .meta.json)."""
    tmp = tmp_path_factory.mktemp("wiring")
    o = {"run_dir": str(tmp / "run"), "model.policy": tiny_gpt2_dir, "reward.model": tiny_classifier_dir,
         "data.source": reviews_csv, "data.n_train_prompts": 4, "data.n_eval_prompts": 3, "data.prompt_tokens": 4,
         "sample.n_samples": 2, "sample.max_new_tokens": 6, "eval.n_samples": 2, "eval.max_new_tokens": 6,
         "eval.n_boot": 20, "dpo.batch_size": 4, "dpo.epochs": 1, "dpo.lr": 1e-3, "track.mode": "disabled",
         "sft.base": tiny_gpt2_dir, "sft.out": str(tmp / "sft"), "sft.n_reviews": 8, "sft.n_eval_reviews": 4,
         "sft.max_tokens": 24, "sft.batch_size": 4, "sft.lora_r": 2, "eval.n_seeds": 1,
         "eval.judge": "vader", "eval.topic_judge": tiny_classifier_dir}
    cfg = load_config(overrides=o)
    for s in SECTIONS:
        setattr(cfg, s, _recording(s, getattr(cfg, s)))
    _Reads.fields = set()
    pipe = Pipeline(cfg)
    experiments.level1(pipe, losses=("sigmoid",))
    experiments.lr_lesson(pipe, lrs=(1e-3,))
    pipe.train(lora_r=2)  # the LoRA fields are read when LoRA is on (SFT above runs with it)
    pipe.train(method="online", rounds=2)  # dpo.method and dpo.rounds key a policy only when set (hashed="if_set")
    pipe.train(method="rloo", credit="prefix", credit_lambda=0.5, kl="exact")  # so do dpo.credit, credit_lambda, kl
    pipe.train(method="rloo", reward_shape="log_quantile")  # and dpo.reward_shape
    pipe.sft()
    cfg.track.mode = "offline"  # the tracker reads project/run_name only when it is on
    pipe.trackers("probe").finish()
    metas = [read_json(m)["deps"] for m in tmp.rglob("*.meta.json")]
    return set(_Reads.fields), metas


@pytest.mark.parametrize("name", all_fields())
def test_every_field_keys_the_artifacts_that_depend_on_it(real_run, name):
    """What the pipeline really hashes (the .meta.json deps of a real run): every field is in some
    artifact's key, so changing it rebuilds instead of silently reusing a stale result; only the
    fields declared hashed=False are in none."""
    _, metas = real_run
    section, attr = name.split(".")
    keyed = [m for m in metas if attr in m.get(section, {})]
    if name in NOT_HASHED:
        assert not keyed, f"{name} must not invalidate artifacts"
    else:
        assert keyed, f"{name} is in no artifact's hash: changing it would silently reuse stale results"
        cfg = Config()
        before = stable_hash(section_deps(cfg, section))
        setattr(getattr(cfg, section), attr, _changed(getattr(getattr(cfg, section), attr)))
        assert stable_hash(section_deps(cfg, section)) != before


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return value + "-x"


def test_a_dpo_setting_retrains_but_never_resamples(real_run):
    _, metas = real_run
    assert all("dpo" not in m for m in metas if "eval" in m or ("pairs" in m and "policy" not in m and "dpo" not in m))
    assert any("dpo" in m for m in metas)


def test_every_field_is_read_by_the_code_of_a_real_run(real_run):
    """Every field of every section is read by the code during a real run (a field nobody reads
    is a setting that silently does nothing)."""
    reads, _ = real_run
    missing = set(all_fields()) - reads
    assert not missing, f"fields no code reads during a run: {sorted(missing)}"


@pytest.mark.parametrize("overrides, field", [
    ({"dpo.grad_accum": 0}, "dpo.grad_accum"), ({"dpo.batch_size": 0}, "dpo.batch_size"),
    ({"sft.max_tokens": 4}, "sft.max_tokens"), ({"sft.n_reviews": 0}, "sft.n_reviews"),
    ({"eval.n_boot": 1}, "eval.n_boot"), ({"model.dtype": "fp8"}, "model.dtype"),
    ({"sample.top_p": 1.5}, "sample.top_p"), ({"dpo.final_lr_ratio": 2.0}, "dpo.final_lr_ratio")])
def test_error_names_the_field_that_is_wrong(overrides, field):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert str(e.value).startswith(f"{field}="), str(e.value)


def test_lr_hint_matches_the_default():
    cfg = Config()
    why = next(f for f in dataclasses.fields(cfg.dpo) if f.name == "lr").metadata["why"]
    assert f"{cfg.dpo.lr:g}" in why  # the hint names the default it ships with


def test_set_is_repeatable_and_takes_several_values(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run_stage", lambda args, cfg, grid: seen.update(cfg=cfg) or 0)
    assert cli.main(["--set", "dpo.loss=hinge", "pairs", "--set", f"run_dir={tmp_path}", "dpo.beta=0.2",
                     "--set", "sample.n_samples=3"]) == 0
    cfg = seen["cfg"]
    assert (cfg.dpo.loss, cfg.run_dir, cfg.dpo.beta, cfg.sample.n_samples) == ("hinge", str(tmp_path), 0.2, 3)


def test_sweep_settings_get_the_config_checks(tmp_path):
    pipe = Pipeline(load_config(overrides={"run_dir": str(tmp_path / "r"), "track.mode": "disabled"}))
    with pytest.raises(ConfigError, match="dpo.alpha"):
        pipe.train(loss="alpha", alpha=1.5)  # before any model is loaded
    with pytest.raises(ConfigError, match=r"^dpo\.beta="):
        pipe.train(beta=-1.0)
