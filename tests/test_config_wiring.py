"""Config as one source of truth: every field is validated by the rule declared on it, changes the
hash of the artifacts that depend on it (unless declared `hashed=False`), and is actually read by
the code that should use it during a real (tiny) run; a repeated `--set` keeps every override."""
from __future__ import annotations

import dataclasses
import sys

import pytest

from alignment import cli, experiments
from alignment.config import SECTIONS, Config, ConfigError, load_config, section_deps
from alignment.io import stable_hash
from alignment.pipeline import Pipeline

# the sections each artifact of a run dir is keyed by (what Pipeline passes to io.cached)
ARTIFACT_SECTIONS = {"prompts": (), "samples": ("sample",), "rewards": ("sample", "reward"),
                     "pairs": ("sample", "reward", "pairs"), "policy": ("sample", "reward", "pairs", "dpo"),
                     "eval": ("sample", "reward", "eval"), "sft": ("sft", "data")}
# fields that change no artifact, and why (declared with rule(..., hashed=False) in config.py)
NOT_HASHED = {"track.mode", "track.project", "track.run_name",  # where tracking goes
              "dpo.save_every", "sft.save_every",  # checkpoint cadence: same result, resumable
              "eval.n_examples",  # how many examples are shown
              "sft.out"}  # where the SFT model is written


def all_fields() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(Config(), s))]


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return value + "-x"


def _artifact_hashes(cfg: Config) -> dict[str, str]:
    return {a: stable_hash(section_deps(cfg, *(("model", "data") if a != "sft" else ()), *secs))
            for a, secs in ARTIFACT_SECTIONS.items()}


@pytest.mark.parametrize("name", all_fields())
def test_every_field_changes_the_hash_of_what_depends_on_it(name):
    cfg = Config()
    section, attr = name.split(".")
    before = _artifact_hashes(cfg)
    setattr(getattr(cfg, section), attr, _changed(getattr(getattr(cfg, section), attr)))
    after = _artifact_hashes(cfg)
    changed = {a for a in before if before[a] != after[a]}
    if name in NOT_HASHED:
        assert not changed, f"{name} must not invalidate artifacts"
    else:
        assert changed, f"{name} is in no artifact's hash: changing it would silently reuse stale results"
    if section == "dpo" and name not in NOT_HASHED:
        assert changed == {"policy"}, changed  # a DPO setting retrains, never resamples


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
    monkeypatch.setattr(cli, "run_stage", lambda args, cfg: seen.update(cfg=cfg) or 0)
    assert cli.main(["pairs", "--set", "dpo.loss=hinge", "--set", f"run_dir={tmp_path}", "dpo.beta=0.2",
                     "--set", "sample.n_samples=3"]) == 0
    cfg = seen["cfg"]
    assert (cfg.dpo.loss, cfg.run_dir, cfg.dpo.beta, cfg.sample.n_samples) == ("hinge", str(tmp_path), 0.2, 3)


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


def test_every_field_is_read_by_the_code_of_a_real_run(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """A tiny Level 1 + lr lesson + SFT on local models: every field of every section is read
    by the code (a field nobody reads is a setting that silently does nothing)."""
    o = {"run_dir": str(tmp_path / "run"), "model.policy": tiny_gpt2_dir, "reward.model": tiny_classifier_dir,
         "data.source": reviews_csv, "data.n_train_prompts": 4, "data.n_eval_prompts": 3, "data.prompt_tokens": 4,
         "sample.n_samples": 2, "sample.max_new_tokens": 6, "eval.n_samples": 2, "eval.max_new_tokens": 6,
         "eval.n_boot": 20, "dpo.batch_size": 4, "dpo.epochs": 1, "dpo.lr": 1e-3, "track.mode": "disabled",
         "sft.base": tiny_gpt2_dir, "sft.out": str(tmp_path / "sft"), "sft.n_reviews": 8, "sft.n_eval_reviews": 4,
         "sft.max_tokens": 24, "sft.batch_size": 4}
    cfg = load_config(overrides=o)
    for s in SECTIONS:
        setattr(cfg, s, _recording(s, getattr(cfg, s)))
    _Reads.fields = set()
    pipe = Pipeline(cfg)
    experiments.level1(pipe, losses=("sigmoid",))
    experiments.lr_lesson(pipe, lrs=(1e-3,))
    pipe.sft()
    cfg.track.mode = "offline"  # the tracker reads project/run_name only when it is on
    pipe.tracker("probe").finish()
    missing = set(all_fields()) - _Reads.fields
    assert not missing, f"fields no code reads during a run: {sorted(missing)}"
