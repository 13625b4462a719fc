"""Own preference pairs (`pairs.source`, trl's prompt/chosen/rejected format): read and checked
before anything loads (one message per kind of bad file), held out by prompt hash, tokenized into
the kit's pair records, trained and evaluated by Level 1 end to end, and keyed in the cache by their
rows; an empty `pairs.source` leaves every cache key as it was."""
from __future__ import annotations

import csv
import json
import os
import random
import re
from pathlib import Path

import pytest
import torch
from conftest import NEGATIVE, POSITIVE
from safetensors.torch import load_file

from alignment import cli
from alignment.run import stagecache
from alignment.config import ConfigError, load_config
from alignment.base.io import read_json, read_jsonl
from alignment.steps.ownpairs import PairsError, read_pairs
from alignment.run.pipeline import Pipeline
from alignment.study.report import conclusions
from alignment.run.rundir import RunDirMismatch


def pair_rows() -> list[dict]:
    """24 pairs on 12 prompts (a positive sentence's opening; chosen: a positive sentence, rejected:
    a negative one), plus one row whose chosen == rejected."""
    rows = []
    for i in range(12):
        prompt = " ".join(POSITIVE[i].split()[:3])
        rows += [{"prompt": prompt, "chosen": " " + POSITIVE[j], "rejected": " " + NEGATIVE[j]} for j in (i, i + 12)]
    return rows + [{"prompt": "A plain", "chosen": " tie", "rejected": " tie"}]


def write_pairs(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def tiny_overrides(run_dir, policy, reward, source) -> dict:
    """Level 1 at tiny sizes on own pairs; data.source stays the offline corpus, which is never read
    (the asset cache is an empty tmp dir: reading it would fail)."""
    return {"run_dir": str(run_dir), "model.policy": policy, "reward.model": reward, "pairs.source": source,
            "data.n_eval_prompts": 4, "eval.n_samples": 2, "eval.max_new_tokens": 8, "eval.n_boot": 80,
            "eval.n_seeds": 1, "dpo.batch_size": 4, "dpo.epochs": 1, "dpo.lr": 1e-3, "track.mode": "disabled",
            "eval.judge": "vader", "eval.topic_judge": reward}


def set_flags(overrides: dict) -> list[str]:
    return ["--set", *(f"{k}={v}" for k, v in overrides.items())]


def own_cfg(tmp_path, source, **extra):
    return load_config(overrides={"pairs.source": source, "data.n_eval_prompts": 4, "dpo.batch_size": 4,
                                  "run_dir": str(tmp_path / "run"), **extra})


# ---- reading and checking -----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rows_are_read_split_by_prompt_and_counted(tmp_path, suffix):
    rows = pair_rows()
    own = read_pairs(own_cfg(tmp_path, write_pairs(tmp_path / f"p{suffix}", rows)))
    kept = rows[:-1]  # the chosen == rejected row is dropped
    assert own.stats == {"source": str(tmp_path / f"p{suffix}"), "rows": 25, "dropped_identical": 1, "n_pairs": 16,
                         "n_prompts": 8, "eval_prompts": 4, "held_out_pairs": 8}
    assert len(own.eval_prompts) == 4 and not set(own.eval_prompts) & {r["prompt"] for r in own.train}
    assert own.train == [r for r in kept if r["prompt"] not in own.eval_prompts]  # file order, every column text
    shuffled = read_pairs(own_cfg(tmp_path, write_pairs(tmp_path / f"q{suffix}", random.Random(1).sample(rows, 25))))
    assert sorted(shuffled.eval_prompts) == sorted(own.eval_prompts)  # by the prompts' hash, never their order


def test_a_hub_name_is_read_from_its_train_split(tmp_path, monkeypatch):
    """A name that is no local path goes to `datasets.load_dataset(name, split="train")` (the hub
    itself is out of reach here: a local Dataset stands in), with the same checks as a file."""
    from datasets import Dataset

    rows, asked = pair_rows(), []

    def load_dataset(name, split):
        asked.append((name, split))
        return Dataset.from_list([{**r, "id": i} for i, r in enumerate(rows)])

    hub = type("Datasets", (), {"load_dataset": staticmethod(load_dataset)})
    monkeypatch.setattr("alignment.steps.ownpairs.datasets", lambda: hub)
    own = read_pairs(own_cfg(tmp_path, "someone/pairs"))
    assert asked == [("someone/pairs", "train")] and own.stats["n_pairs"] == 16 and own.stats["dropped_identical"] == 1
    rows[3]["chosen"] = ""
    with pytest.raises(PairsError, match=r"^pairs\.source='someone/pairs' has 1 row\(s\) .* \(first: row 4 \(chosen\)\)"):
        read_pairs(own_cfg(tmp_path, "someone/pairs"))


def test_two_spellings_of_a_prompt_are_held_out_together(tmp_path):
    rows = pair_rows()[:-1]
    rows += [{**r, "prompt": r["prompt"].upper() + "!"} for r in rows]  # the same prompts, normalised
    own = read_pairs(own_cfg(tmp_path, write_pairs(tmp_path / "p.jsonl", rows)))
    held = {p.lower().rstrip("!") for p in own.eval_prompts}
    assert len(held) == 4 and not held & {r["prompt"].lower().rstrip("!") for r in own.train}


BAD = {  # name: (file name, content, what the message must say)
    "empty": ("p.jsonl", "\n\n", "holds no pairs"),
    "no columns": ("p.csv", "prompt,good,bad\na,b,c\n", r"has no chosen, rejected columns \(columns: \['prompt', "
                                                       r"'good', 'bad'\]\); give text columns prompt, chosen, rejected"),
    "bad json": ("p.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": "a",\n',
                 "line 3 is not valid JSON"),
    "not an object": ("p.jsonl", '["a", "b", "c"]\n', "line 1 is not a JSON object"),
    "empty cell": ("p.csv", "prompt,chosen,rejected\na,b,c\nd, ,f\ng,h,\n",
                   r"has 2 row\(s\) with an empty prompt, chosen or rejected \(first: line 3 \(chosen\)\); fill in"),
    "missing key": ("p.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n',
                    r"first: line 2 \(rejected\)"),
    "all identical": ("p.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "b"}\n' * 3,
                      r"chosen == rejected in every row \(3\); a pair needs two different completions"),
    "messages": ("p.jsonl", '{"prompt": [{"role": "user", "content": "hi"}], "chosen": "b", "rejected": "c"}\n',
                 "line 1: prompt is a list, not text; give plain text"),
    "not utf-8": ("p.csv", b"prompt,chosen,rejected\n\xff,b,c\n", "is not UTF-8 .*re-encode the file as UTF-8"),
    "suffix": ("p.txt", "prompt chosen rejected\n", "is not a .jsonl or .csv file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_one_message_naming_the_field_and_the_fix(tmp_path, case):
    name, content, says = BAD[case]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PairsError, match=rf"^pairs\.source='{re.escape(str(path))}'.*{says}"):
        read_pairs(own_cfg(tmp_path, str(path)))


def test_too_few_pairs_or_prompts_for_the_settings(tmp_path):
    source = write_pairs(tmp_path / "p.jsonl", pair_rows())
    with pytest.raises(PairsError, match=r"leaves 16 training pairs \(25 rows, 1 with chosen == rejected, 8 on the 4 "
                                         r"held-out prompts\), fewer than dpo.batch_size=32; add pairs, or lower"):
        read_pairs(own_cfg(tmp_path, source, **{"dpo.batch_size": 32}))
    with pytest.raises(PairsError, match=r"has 12 distinct prompts, and data.n_eval_prompts=12 .* leaving none"):
        read_pairs(own_cfg(tmp_path, source, **{"data.n_eval_prompts": 12}))


def test_a_missing_file_fails_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"^pairs\.source='.*nope\.jsonl' is invalid: this file does not exist; "
                                          r"give the path of a \.jsonl or \.csv file"):
        own_cfg(tmp_path, str(tmp_path / "nope.jsonl"))
    assert load_config(overrides={"pairs.source": "trl-lib/ultrafeedback_binarized"})  # a hub name passes


def test_a_bad_file_fails_before_any_model_loads(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b"}\n')
    (tmp_path / "model").mkdir()  # no model in it: loading it would fail
    argv = ["train", "--set", f"run_dir={tmp_path / 'run'}", f"pairs.source={path}", f"model.policy={tmp_path / 'model'}"]
    assert cli.main(argv) == 2  # the pairs file fails first
    err = capsys.readouterr().err
    assert err.startswith(f"error: pairs.source='{path}' has no rejected column") and "Traceback" not in err


def test_no_training_samples_and_no_human_row_with_own_pairs(tmp_path):
    pipe = Pipeline(own_cfg(tmp_path, write_pairs(tmp_path / "p.jsonl", pair_rows())))
    with pytest.raises(ConfigError, match="gives the preference pairs, so no training samples are drawn"):
        pipe.data.samples()
    with pytest.raises(ConfigError, match="set eval.human_row=false"):
        pipe.evaluate_human()


# ---- cache keys ---------------------------------------------------------------------------------
# The deps of each run-dir stage's key under the default config (the offline identities given fixed
# stand-ins; an evaluation's own extras left out): an empty pairs.source names nothing in them.
STAGE_OF = {"prompts.json": "prompts", "samples.jsonl": "samples", "rewards.json": "rewards",
            "pairs.jsonl": "pairs", "sft": "evaluation"}


def artifact_deps(cfg, identities: dict) -> dict[str, dict]:
    cache = stagecache.StageCache(cfg, Path("runs/keys"))
    cache.record({"offline_sft": "sft-id", "reward_head": "reward-id", "judge_head": "judge-id",
                  "topic_head": "topic-id", "judge_ft_head": "judge-ft-id", **identities})
    return {name: cache.deps(stage) for name, stage in STAGE_OF.items()}


def test_a_stage_takes_its_sections_from_the_table_only():
    cache = stagecache.StageCache(load_config(), Path("runs/keys"))
    assert stagecache.CACHED_STAGES["samples"].sections == ("sample",)
    with pytest.raises(TypeError, match="CACHED_STAGES"):
        cache.deps("samples", collective=False)
    with pytest.raises(TypeError, match="CACHED_STAGES"), cache.building(Path("runs/keys/samples.jsonl"), "samples",
                                                                         sections=("eval",)):
        pass


def test_an_empty_pairs_source_leaves_every_cache_key_unchanged(monkeypatch, tmp_path):
    deps = artifact_deps(load_config(), {})
    assert set(deps) == set(STAGE_OF) and not any("pairs_source" in d or "pairs_source" in str(d) for d in deps.values())
    source = write_pairs(tmp_path / "p.jsonl", pair_rows())
    own = artifact_deps(load_config(overrides={"pairs.source": source}), {"pairs_source": "rows-id"})
    for name, d in own.items():  # set: every artifact is keyed by the pairs' name and rows, nothing else moves
        assert d.pop("pairs_source") == {"source": source, "rows": "rows-id"} and d == deps[name], name


def test_a_changed_pairs_file_is_refused_in_the_same_run_dir(tmp_path, tiny_gpt2_dir, tiny_classifier_dir):
    source = write_pairs(tmp_path / "p.jsonl", pair_rows())
    cfg = load_config(overrides=tiny_overrides(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, source))
    pipe = Pipeline(cfg)
    pipe.prepare(load_scorers=False)
    pairs, _ = pipe.data.pairs()
    again = Pipeline(cfg)
    again.prepare(load_scorers=False)
    assert again.data.pairs()[0] == pairs  # the same file: read back from the cache
    rows = pair_rows()
    rows[0]["chosen"] = " A different ending."
    write_pairs(Path(source), rows)
    changed = Pipeline(cfg)
    changed.prepare(load_scorers=False)
    with pytest.raises(RunDirMismatch, match=r"pairs.jsonl was made with a different config \(changed: pairs_source\)"):
        changed.data.pairs()


# ---- end to end ---------------------------------------------------------------------------------
def test_level1_on_own_pairs_from_the_command_line(tmp_path, tiny_gpt2_dir, tiny_classifier_dir):
    """`run --set pairs.source=pairs.jsonl`: no training samples, pairs equal to the file's rows
    tokenized as trl does, both losses trained, every model evaluated on the held-out pair prompts."""
    source = write_pairs(tmp_path / "pairs.jsonl", pair_rows())
    overrides = tiny_overrides(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, source)
    assert cli.main(["run", *set_flags(overrides)]) == 0
    cfg, d = load_config(overrides=overrides), tmp_path / "run"
    res = read_json(d / "level1.json")
    assert conclusions(res).startswith(f"**Level 1** (the pairs of `{source}`): ")
    assert [r["model"] for r in res["rows"]] == ["sft", "sigmoid-b0.1-lr0.001-s0", "hinge-b0.1-lr0.001-s0"]
    assert not (d / "samples.jsonl").exists() and not (d / "rewards.json").exists()
    assert not (d / "eval" / "human").exists() and not (d / "plots" / "pair_margins.png").exists()
    assert res["pairs"]["n_pairs"] == 16 and res["pairs"]["source"] == source
    _check_pairs(d, cfg, tiny_gpt2_dir)
    before = load_file(os.path.join(tiny_gpt2_dir, "model.safetensors"))
    for name in ("sigmoid-b0.1-lr0.001-s0", "hinge-b0.1-lr0.001-s0"):
        after = load_file(str(d / "policies" / name / "model" / "model.safetensors"))
        assert any(not torch.equal(before[k], after[k]) for k in before if k in after), name
        assert len(read_jsonl(d / "policies" / name / "train_log.jsonl")) == 4  # 16 pairs, batches of 4
    prompts = read_json(d / "prompts.json")
    for name in ("sft", "sigmoid-b0.1-lr0.001-s0"):  # evaluated on the held-out prompts only
        scored = read_jsonl(d / "eval" / name / "scored.jsonl")
        assert {r["prompt_id"] for r in scored} == {p["id"] for p in prompts["eval"]}
        assert {r["prompt"] for r in scored} == set(read_pairs(cfg).eval_prompts)


def test_train_on_own_pairs_from_a_csv(tmp_path, tiny_gpt2_dir, tiny_classifier_dir):
    """`train --set pairs.source=pairs.csv`: the file's pairs, one policy trained."""
    source = write_pairs(tmp_path / "pairs.csv", pair_rows())
    overrides = tiny_overrides(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, source)
    assert cli.main(["train", *set_flags(overrides)]) == 0
    cfg, d = load_config(overrides=overrides), tmp_path / "run"
    assert (d / "policies" / "sigmoid-b0.1-lr0.001-s0" / "model" / "model.safetensors").exists()
    assert (d / "ref_logps.pt").exists() and not (d / "samples.jsonl").exists()
    _check_pairs(d, cfg, tiny_gpt2_dir)


def _check_pairs(d: Path, cfg, tokenizer_dir: str) -> None:
    """pairs.jsonl is the file's training rows, in order, tokenized as trl does (prompt + completion
    together, the completion after the prompt's tokens, then EOS); the eval prompts are in none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompts, pairs = read_json(d / "prompts.json"), read_jsonl(d / "pairs.jsonl")
    own = read_pairs(cfg)
    assert [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs] == own.train
    assert not {p["text"] for p in prompts["eval"]} & {p["prompt"] for p in pairs}
    assert [p["text"] for p in prompts["eval"]] == own.eval_prompts
    ids = {p["id"]: p["ids"] for p in prompts["train"]}
    for p in pairs:
        prompt_ids = tok(p["prompt"], add_special_tokens=False)["input_ids"]
        assert ids[p["prompt_id"]] == prompt_ids
        for side in ("chosen", "rejected"):
            full = tok(p["prompt"] + p[side], add_special_tokens=False)["input_ids"]
            assert full[:len(prompt_ids)] == prompt_ids  # these prompts end on a token boundary
            assert p[f"{side}_ids"] == full[len(prompt_ids):] + [tok.eos_token_id]
        assert p["margin"] is None and p["chosen_reward"] is None
