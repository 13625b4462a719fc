"""SFT stage on a tiny random GPT-2 (conftest fixtures): split hygiene, masks, training,
caching, atomic output and resume after an interrupt. Offline, a few seconds."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from alignment.steps.logprobs import collate
import torch

from alignment.steps import sft
from alignment.config import load_config
from alignment.steps.data import build_prompts, review_pools
from alignment.base.io import read_json
from alignment.run.pipeline import Pipeline


def _cfg(source, base, out, run_dir, **extra):
    sets = {"data.source": source, "data.n_eval_prompts": 8, "data.n_train_prompts": 8,
            "sft.base": base, "sft.out": out, "sft.n_reviews": 24, "sft.n_eval_reviews": 8,
            "sft.max_tokens": 48, "sft.batch_size": 4, "sft.lr": 5e-3, "sft.epochs": 2,
            "track.mode": "disabled", "run_dir": str(run_dir)}
    sets.update(extra)
    return load_config(overrides=sets)


@pytest.fixture(scope="module")
def trained(reviews_csv, tiny_gpt2_dir, tmp_path_factory):
    """One uninterrupted run to the default output (the isolated ALIGNMENT_CACHE)."""
    cfg = _cfg(reviews_csv, tiny_gpt2_dir, "", tmp_path_factory.mktemp("run"))
    return cfg, sft.run_sft(cfg)


def test_splits_exclude_eval_prompt_reviews(reviews_csv, tiny_gpt2_dir, tiny_tokenizer, tmp_path):
    cfg = _cfg(reviews_csv, tiny_gpt2_dir, str(tmp_path / "o"), tmp_path)
    train, held = sft.sft_splits(cfg)
    eval_pool = {r.id for r in review_pools(cfg.data)["eval"]}
    assert len(train) == 24 and len(held) == 8
    train_ids, held_ids = {r.id for r in train}, {r.id for r in held}
    assert not train_ids & eval_pool and not train_ids & held_ids  # never an eval-pool review
    assert not {r.text for r in train} & {r.text for r in held}
    for n_eval, seed in ((8, 0), (10, 3)):  # whatever the prompt counts and seeds: no eval prompt's review
        d = dataclasses.replace(cfg.data, n_eval_prompts=n_eval, seed=seed)
        assert not train_ids & {r["review_id"] for r in build_prompts(d, tiny_tokenizer)["eval"]}
    assert sft.sft_splits(cfg)[0] == train  # seeded, deterministic


def test_eos_and_masks_come_from_lengths(tiny_tokenizer, tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    eos = tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.pad_token_id == eos  # the case value-derived masks get wrong
    short, long_ = sft.encode_reviews(tiny_tokenizer, ["A fine film.", "The plot is excellent, really. " * 10], 20)
    assert short[-1] == eos and len(long_) == 20 and long_[-1] != eos  # cut reviews get no fake stop
    ids = tiny_tokenizer("The plot is excellent, really. " * 3, add_special_tokens=False)["input_ids"]
    w = sft.encode_reviews(tiny_tokenizer, ["The plot is excellent, really. " * 3], 8, windows=50)
    # consecutive, EOS where the review ends (a lone EOS window has no target, so it is not kept)
    assert sum(w, []) == (ids + [eos] if len(ids) % 8 else ids) and all(len(c) == 8 for c in w[:-1])
    w2 = sft.encode_reviews(tiny_tokenizer, ["The plot is excellent, really. " * 3], 8, windows=2)
    assert w2 == [ids[:8], ids[8:16]] and eos not in w2[1]  # cut at the limit: no EOS
    batch = collate([[], []], [short, long_], eos)  # what batch_nll pads with
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask.sum().item() == len(short) + len(long_) and ids[0, len(short) - 1] == eos
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    _, n = sft.batch_nll(model, [short, long_], eos)
    assert n == len(short) - 1 + len(long_) - 1  # the real EOS is a target, pads are not


def test_sft_trains_saves_and_excludes_eval(trained, tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.assets.offline import cache_root

    cfg, m = trained
    out = sft.sft_out_dir(cfg)
    assert out.parent == cache_root() / "models" and out.name.startswith(sft.DEFAULT_NAME + "-")
    assert m["out"] == str(out)
    pipe = Pipeline(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, policy="offline-sft")))
    assert pipe.models.source("offline-sft") == str(out)  # what the pipeline loads (built: no retraining)
    assert sft.sft_hash(cfg) == read_json(out.with_name(out.name + ".meta.json"))["hash"]  # what its artifacts record
    assert (out / "sft_metrics.json").exists() and out.with_name(out.name + ".meta.json").exists()
    assert not (out / "ckpt.pt").exists() and not list(out.parent.glob(f".{out.name}.*.part"))
    AutoTokenizer.from_pretrained(out)
    new = AutoModelForCausalLM.from_pretrained(out).state_dict()
    old = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).state_dict()
    assert any(not torch.equal(new[k], old[k]) for k in old)
    assert m["ppl_after"] < m["ppl_before"]
    assert m["steps"] == 12 == len(m["train_loss"]) and m["n_train_reviews"] == 24 and m["n_eval_reviews"] == 8
    assert len(m["samples_before"]) == 3 == len(m["samples_after"])
    assert [s["prompt"] for s in m["samples_before"]] == [s["prompt"] for s in m["samples_after"]]


class _Tracker:
    """Records the SFT training steps it is told about; raises KeyboardInterrupt at `stop`."""

    def __init__(self, stop: int = -1):
        self.stop, self.seen = stop, []

    def __call__(self, name, group=None):  # the make_tracker factory
        return self

    def log(self, metrics, step=None):
        if "train/loss" in metrics:
            self.seen.append(step)
            if step == self.stop:
                raise KeyboardInterrupt

    def summary(self, metrics):
        pass

    def log_table(self, key, columns, rows):
        pass

    def log_model(self, path):
        self.model_files = sorted(p.name for p in path.iterdir())

    def finish(self):
        pass


def test_cached_call_does_not_retrain(trained):
    cfg, m = trained
    tracker = _Tracker()
    assert sft.run_sft(cfg, tracker) == m
    assert tracker.seen == []


def test_resume_after_interrupt(trained, reviews_csv, tiny_gpt2_dir, tmp_path, capsys):
    _, full = trained
    cfg = _cfg(reviews_csv, tiny_gpt2_dir, str(tmp_path / "model"), tmp_path, **{"sft.save_every": 4})
    with pytest.raises(KeyboardInterrupt):
        sft.run_sft(cfg, _Tracker(stop=6))
    parts = list(tmp_path.glob(".model.*.part"))
    assert not (tmp_path / "model").exists() and len(parts) == 1 and (parts[0] / "ckpt.pt").exists()

    capsys.readouterr()
    tracker = _Tracker()
    m = sft.run_sft(cfg, tracker)
    # stopped once step 6 was logged (checkpoints every 4 steps): the interrupt itself kept step 6
    assert f"resuming sft from step 6 of 12 (checkpoint {parts[0] / 'ckpt.pt'})" in capsys.readouterr().out
    assert tracker.seen == list(range(7, 13)) and m["resumed_from_step"] == 6
    assert "model.safetensors" in tracker.model_files  # the tracker is offered the finished model (track.log_models)
    assert not parts[0].exists() and (tmp_path / "model" / "model.safetensors").exists()
    # Same schedule, optimizer state and RNG (dropout is on in SFT): the uninterrupted run's bytes.
    for k in ("train_loss", "ppl_after", "samples_after"):
        assert m[k] == full[k], k
    got, want = tmp_path / "model" / "model.safetensors", Path(full["out"]) / "model.safetensors"
    assert got.read_bytes() == want.read_bytes()


def test_killed_after_metrics_publishes_without_the_checkpoint(trained, reviews_csv, tiny_gpt2_dir, tmp_path):
    """A kill between writing sft_metrics.json and publishing: the next call publishes the finished
    part as it is, without retraining and without the (large) checkpoint."""
    import shutil

    from alignment.base.io import stable_hash

    _, full = trained
    cfg = _cfg(reviews_csv, tiny_gpt2_dir, str(tmp_path / "model"), tmp_path)
    part = tmp_path / f".model.{stable_hash(sft.sft_deps(cfg))}.part"
    shutil.copytree(full["out"], part)
    (part / "ckpt.pt").write_bytes(b"a big checkpoint")
    (part / "before.json").write_text("{}")
    tracker = _Tracker()
    m = sft.run_sft(cfg, tracker)
    assert tracker.seen == [] and m["train_loss"] == full["train_loss"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(p.name for p in Path(full["out"]).iterdir())


def test_prepare_builds_the_start_policy_and_cache_keys_only_read_it(trained, tiny_classifier_dir, monkeypatch):
    cfg, _ = trained  # model.policy = offline-sft (the default); its SFT model is built
    cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, model=tiny_classifier_dir),
                              eval=dataclasses.replace(cfg.eval, judge="", topic_judge=""))
    monkeypatch.setattr("alignment.run.pipeline.run_sft", lambda *a, **k: pytest.fail("a cache key must not build"))
    pipe = Pipeline(cfg)
    with pytest.raises(RuntimeError, match=r"Pipeline\.prepare\(\) first"):
        pipe.data.prompts()  # its key names the SFT model, which this pipeline has not prepared
    monkeypatch.undo()
    pipe.prepare(load_scorers=False)
    assert pipe.cache.identities == {"offline_sft": sft.sft_hash(cfg)} == pipe.cache.model_identity()
    assert pipe.data.prompts()["eval"]  # now the stages run
