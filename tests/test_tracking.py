"""What wandb receives: every evaluation as one run, made when it is built (metrics with their 95 %
CIs in the summary, the first samples as a table), every trained policy's settings in its runs'
config, trl's metric names on the native loop, one group per experiment, tags, the results tables
and the SFT build; and what a reused stage prints. A recording tracker stands in for wandb (the kit's
tracker factory pointed at it) on a tiny Level 1 + lr lesson + sweep; one real offline wandb run is
read back from what wandb wrote under run_dir/wandb."""
from __future__ import annotations

import importlib.util
import json
import re
import struct
import time
from datetime import datetime
from pathlib import Path

import pytest

from alignment.run import experiments, pipeline
from alignment.steps import sft
from alignment.base import tracking
from alignment.config import load_config
from alignment.base.io import meta_path, read_json, read_jsonl
from alignment.run.stagecache import duration
from alignment.base.tracking import ci_name, evaluation_summary, run_tags, sample_rows
from alignment.base.tracking import tracked as wandb_keys

from test_pipeline_e2e import tiny_cfg

COLUMNS = ["prompt", "completion", "reward", "judge", "on_topic"]
WITH_CI = ("eval/token_entropy", "eval/kl_to_ref", "eval/ref_perplexity", "eval/judge_mean", "eval/on_topic")


class Recorded:
    """One fake wandb run: everything the kit told it."""

    def __init__(self, name, group, job_type, config, tags):
        self.name, self.group, self.job_type, self.config, self.tags = name, group, job_type, config, tags
        self.summary_, self.tables, self.images, self.logs, self.finished = {}, {}, [], [], False

    def log(self, metrics, step=None):
        self.logs.append((step, metrics))

    def summary(self, metrics):
        self.summary_.update(metrics)

    def log_image(self, key, path):
        self.images.append(key)

    def log_table(self, key, columns, rows):
        self.tables[key] = (columns, rows)

    def log_scatter(self, key, columns, rows, x, y, title):
        self.tables[key] = (columns, rows)
        self.charts = {**getattr(self, "charts", {}), key: (x, y)}

    def log_model(self, path):
        self.models = getattr(self, "models", []) + [sorted(p.name for p in Path(path).iterdir())]

    def finish(self):
        self.finished = True


def recording(made: list):
    """A stand-in for `tracking.make_tracker` that appends a `Recorded` run to `made`."""
    def factory(cfg, name, run_dir, group=None, job_type=None, config=None, tags=None):
        made.append(Recorded(name, group, job_type, cfg.to_dict() if config is None else config, tags))
        return made[-1]
    return factory


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """Level 1 (sigmoid), the lr lesson (dpo.lr and 5e-3) and a one-family sweep (β 0.1 and 1) in one
    run dir, with every wandb run recorded: (pipeline, runs, level1, lr lesson, sweep)."""
    cfg = tiny_cfg(tmp_path_factory.mktemp("tracked") / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                   **{"data.n_eval_prompts": 5})  # 5 prompts x 16 best-of-N draws: more samples than a table shows
    made = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking, "make_tracker", recording(made))
        pipe = pipeline.Pipeline(cfg)
        level1 = experiments.level1(pipe, losses=("sigmoid",))
        lr = experiments.lr_lesson(pipe, lrs=(1e-3, 5e-3))
        sweep = experiments.sweep(pipe, ("sigmoid",), (0.1, 1.0), (0,), (0.5,), (1, 2, 4, 8, 16))
    return pipe, made, level1, lr, sweep


def runs_of(made, group: str, job_type: str) -> dict[str, Recorded]:
    """The recorded runs of one group and job type, by name."""
    return {r.name: r for r in made if r.group == group and r.job_type == job_type}


def test_ci_bounds_are_named_after_their_metric():
    m = {"eval/reward_mean": 1.0, "eval/reward_ci_lo": 0.5, "eval/reward_ci_hi": 1.5, "eval/kl_to_ref": None,
         "eval/kl_to_ref_ci_lo": None, "eval/on_topic": 0.25, "eval/on_topic_ci_hi": 0.5, "model": "sft",
         "eval/judge_mean": 0.1, "eval/judge_mean_ci_lo": -0.2, "eval/mean_length_ci_lo": 3.0}
    assert ci_name("eval/reward_ci_lo", m) == "eval/reward_mean_lo"
    assert ci_name("eval/mean_length_ci_lo", m) == "eval/mean_length_lo"  # its metric absent: the plain name
    assert evaluation_summary(m) == {"eval/reward_mean": 1.0, "eval/reward_mean_lo": 0.5, "eval/reward_mean_hi": 1.5,
                                     "eval/on_topic": 0.25, "eval/on_topic_hi": 0.5, "model": "sft",
                                     "eval/judge_mean": 0.1, "eval/judge_mean_lo": -0.2, "eval/mean_length_lo": 3.0}
    scored = [{"prompt": f"p{i}", "completion": "c", "reward": float(i), "on_topic": 1.0} for i in range(5)]
    assert sample_rows(scored, limit=2) == [["p0", "c", 0.0, None, 1.0], ["p1", "c", 1.0, None, 1.0]]


def test_every_evaluation_is_one_run_with_its_metrics_and_samples(tracked):
    """The lr lesson and the sweep evaluate the start policy and Level 1's policy again: found cached,
    they make no second run; each evaluation's one run is in the group of the experiment that built it."""
    pipe, made, *_ = tracked
    p = pipe.dir.name
    want = {"level1": {"sft", "sigmoid-b0.1-lr0.001-s0", "human"},
            "lr_lesson": {"sigmoid-b0.1-lr0.005-s0"},
            "sweep": {"sft-n16", "sigmoid-b1-lr0.001-s0"}}
    names = [r.name for r in made if r.job_type == "eval"]
    assert len(names) == len(set(names)) == 6  # one run per evaluation, however often it was asked for
    for exp, names in want.items():
        runs = runs_of(made, f"{p}-{exp}", "eval")
        assert set(runs) == {f"{p}-eval-{n}" for n in names}, exp
        for name in names:
            run, d = runs[f"{p}-eval-{name}"], pipe.paths.eval(name)
            stored, scored = read_json(d / "metrics.json"), read_jsonl(d / "scored.jsonl")
            s = run.summary_
            assert s["model"] == stored["model"] and run.config["model"] == stored["model"] and run.finished
            assert (s["eval/reward_mean"], s["eval/reward_mean_lo"], s["eval/reward_mean_hi"]) == (
                stored["eval/reward_mean"], stored["eval/reward_ci_lo"], stored["eval/reward_ci_hi"])
            assert s["eval/distinct_2"] == stored["eval/distinct_2"] and not any("_ci_" in k for k in s)
            for k in WITH_CI:
                if stored[k] is None:  # the human row: no model drew its texts, so no KL
                    assert name == "human" and k == "eval/kl_to_ref" and k not in s
                else:
                    assert (s[k], s[f"{k}_lo"], s[f"{k}_hi"]) == (stored[k], stored[f"{k}_ci_lo"], stored[f"{k}_ci_hi"])
            cols, rows = run.tables["eval/samples"]
            assert cols == COLUMNS and len(rows) == min(64, len(scored))
            assert rows == [[r["prompt"], r["completion"], r["reward"], r["judge"], r["on_topic"]] for r in scored[:64]]
    assert len(read_jsonl(pipe.paths.eval("sft-n16") / "scored.jsonl")) == 80  # the table shows its first 64


def test_sweep_runs_carry_their_settings_and_their_evaluation(tracked):
    pipe, made, _, _, sweep = tracked
    p = pipe.dir.name
    evals = {r.name: r for r in made if r.job_type == "eval"}
    for row in sweep["runs"]:
        run = evals[f"{p}-eval-{row['model']}"]
        assert {k: run.config[k] for k in ("loss", "beta", "alpha", "seed", "lr")} == {
            "loss": row["loss"], "beta": row["beta"], "alpha": row["alpha"], "seed": row["seed"], "lr": 1e-3}
        assert run.config["dpo"]["beta"] == row["beta"] and run.config["eval_seed"] == 0
        assert (run.summary_["eval/reward_mean"], run.summary_["eval/kl_to_ref"]) == (
            row["eval/reward_mean"], row["eval/kl_to_ref"])
    start = evals[f"{p}-eval-sft-n16"]  # the start policy: no policy settings, 16 draws per prompt
    assert "beta" not in start.config and "dpo" not in start.config and start.config["eval_n_samples"] == 16
    trained = runs_of(made, f"{p}-sweep", "train")  # only β = 1 was trained here (β = 0.1: Level 1's, cached)
    assert list(trained) == [f"{p}-train-sigmoid-b1-lr0.001-s0"]
    run = trained[f"{p}-train-sigmoid-b1-lr0.001-s0"]
    assert (run.config["beta"], run.config["dpo"]["beta"], run.config["lr"]) == (1.0, 1.0, 1e-3) and run.finished
    log = read_jsonl(pipe.paths.policy("sigmoid-b1-lr0.001-s0") / "train_log.jsonl")
    assert [(s, m["train/loss"]) for s, m in run.logs] == [(r["step"], r["loss"]) for r in log]
    assert [(m["train/global_step"], m["train/learning_rate"]) for _, m in run.logs] == [
        (r["step"], r["lr"]) for r in log]
    results = next(r for r in made if r.job_type == "results" and r.name == f"{p}-sweep")
    assert results.charts == {"sweep/frontier_reward_vs_kl": ("kl", "reward"), "sweep/frontier_judge_vs_kl": ("kl", "judge")}
    cols, rows = results.tables["sweep/frontier_reward_vs_kl"]
    assert cols == ["label", "beta", "n", "kl", "reward"] and len(rows) == len(sweep["points"])
    assert {r[0] for r in rows} == {q["label"] for q in sweep["points"]} and "best-of-N" in {r[0] for r in rows}
    lr_run = runs_of(made, f"{p}-lr_lesson", "train")[f"{p}-train-sigmoid-b0.1-lr0.005-s0"]
    assert lr_run.config["lr"] == 5e-3 and lr_run.config["dpo"]["lr"] == 5e-3


# trl 1.16's DPOTrainer, checked against trl/trainer/dpo_trainer.py (`compute_loss`'s "Log the metrics" block,
# lines 1535-1601: `self._metrics[mode][...]`), without aux_loss (MoE router loss only)
TRL_DPO_METRICS = {"entropy", "num_tokens", "logits/chosen", "logits/rejected", "mean_token_accuracy",
                   "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                   "logps/chosen", "logps/rejected"}
TRAINER_LOGS = {"loss", "grad_norm", "learning_rate", "epoch"}  # transformers' Trainer: _maybe_log_save_evaluate, log


def trl_dpo_keys() -> set[str]:
    """What trl's DPOTrainer logs per training step: the metrics its `compute_loss` records, read from
    the installed trl's source (so a new one shows up here), and what transformers' Trainer adds."""
    src = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "trainer" / "dpo_trainer.py"
    keys = set(re.findall(r'self\._metrics\[mode\]\["([^"]+)"\]', src.read_text())) - {"aux_loss"}
    assert keys >= TRL_DPO_METRICS, TRL_DPO_METRICS - keys  # the source still logs what was checked by hand
    return keys | TRAINER_LOGS


def test_the_native_loop_shows_wandb_trls_dpo_metrics(tracked):
    """What wandb gets from the native loop ⊇ what trl's DPOTrainer gives it through transformers'
    WandbCallback: train/<key> for each of trl's keys, on the train/global_step axis; the run dir's
    train_log.jsonl keeps its own names (lr)."""
    pipe, made, *_ = tracked
    want = {f"train/{k}" for k in trl_dpo_keys()} | {"train/global_step"}
    (run,) = [r for r in made if r.name.endswith("-train-sigmoid-b1-lr0.001-s0")]
    steps = [m for _, m in run.logs if "train/loss" in m]
    assert steps and all(want <= set(m) for m in steps), want - set(steps[0])
    log = read_jsonl(pipe.paths.policy("sigmoid-b1-lr0.001-s0") / "train_log.jsonl")
    assert all("lr" in r and "learning_rate" not in r for r in log)
    assert [m["train/num_tokens"] for m in steps] == [r["num_tokens"] for r in log]
    for m in steps:
        assert 0.0 <= m["train/mean_token_accuracy"] <= 1.0 and m["train/entropy"] > 0
    assert wandb_keys({"step": 3, "lr": 1e-3, "loss": 0.5, "logits/chosen": -1.0, "eval_loss": 0.7}) == {
        "train/global_step": 3, "train/learning_rate": 1e-3, "train/loss": 0.5, "train/logits/chosen": -1.0,
        "eval/loss": 0.7}


def test_trained_models_are_offered_to_their_training_run(tracked):
    """Each training run is handed its policy's model/ directory once it is saved (uploaded with track.log_models)."""
    pipe, made, *_ = tracked
    (run,) = [r for r in made if r.name.endswith("-train-sigmoid-b1-lr0.001-s0")]
    (files,) = run.models
    assert "model.safetensors" in files and "config.json" in files
    assert all(not getattr(r, "models", None) for r in made if r.job_type == "eval")


def test_log_models_uploads_only_when_asked(tmp_path, monkeypatch):
    """WandbTracker.log_model makes a model artifact of the directory under track.log_models, else nothing."""
    logged = []

    class FakeArtifact:
        def __init__(self, name, type):
            self.name, self.type, self.dirs = name, type, []

        def add_dir(self, path):
            self.dirs.append(path)

    class Run:
        dir, name = str(tmp_path), "run-train-p s0"

        def define_metric(self, *a, **k):
            pass

        def log_artifact(self, art):
            logged.append((art.name, art.type, art.dirs))

    class FakeWandb:
        Artifact = FakeArtifact

        @staticmethod
        def init(**kw):
            return Run()

    monkeypatch.setattr(tracking.optional, "wandb", lambda: FakeWandb)
    for flag in (False, True):
        cfg = load_config(overrides={"track.mode": "offline", "track.log_models": flag, "run_dir": str(tmp_path)})
        tracking.make_tracker(cfg, "probe", str(tmp_path), job_type="train").log_model(tmp_path / "model")
    assert logged == [("run-train-p-s0", "model", [str(tmp_path / "model")])]


def test_runs_are_tagged(tracked):
    pipe, made, *_ = tracked
    p = pipe.dir.name
    (train,) = [r for r in made if r.name == f"{p}-train-sigmoid-b1-lr0.001-s0"]
    assert train.tags == ["run_dir:run", "job:train", "experiment:sweep", "loss:sigmoid"]
    (start,) = [r for r in made if r.name == f"{p}-eval-sft"]
    assert start.tags == ["run_dir:run", "job:eval", "experiment:level1"]  # the start policy: no loss
    assert all(r.tags and r.tags[0] == "run_dir:run" and f"job:{r.job_type}" in r.tags for r in made)
    assert run_tags("runs/smoke", "results", None, {"loss": "ipo"}) == ["preset:smoke", "job:results", "loss:ipo"]
    assert run_tags("runs/smoke", None, None, {"loss": "x" * 80})[-1] == "loss:" + "x" * 59  # wandb's 64


def test_each_experiment_logs_its_results_tables(tracked):
    pipe, made, level1, lr, sweep = tracked
    p = pipe.dir.name
    (l1,) = runs_of(made, f"{p}-level1", "results").values()
    cols, rows = l1.tables["level1/results"]
    assert [r[cols.index("model")] for r in rows] == [r["model"] for r in level1["rows"]]
    assert [r[cols.index("eval/reward_mean")] for r in rows] == [r["eval/reward_mean"] for r in level1["rows"]]
    assert len(l1.tables["level1/per_seed"][1]) == len(level1["per_seed"]) == 1
    assert l1.images == ["level1/level1_rewards", "level1/level1_training", "level1/pair_margins"]
    (lr_run,) = runs_of(made, f"{p}-lr_lesson", "results").values()
    cols, rows = lr_run.tables["lr_lesson/results"]
    assert [r[cols.index("lr")] for r in rows] == [1e-3, 5e-3] == [r["lr"] for r in lr["rows"]]
    assert [r[cols.index("reward_gain")] for r in rows] == [r["reward_gain"] for r in lr["rows"]]
    (sw,) = runs_of(made, f"{p}-sweep", "results").values()
    cols, rows = sw.tables["sweep/runs"]
    assert [(r[cols.index("beta")], r[cols.index("eval/kl_to_ref")]) for r in rows] == [
        (r["beta"], r["eval/kl_to_ref"]) for r in sweep["runs"]]
    assert len(sw.tables["sweep/results"][1]) == len(sweep["points"]) and all(r.finished for r in made)


def test_the_sft_build_logs_its_summary_and_samples(tmp_path, tiny_gpt2_dir, reviews_csv, monkeypatch, capsys):
    made = []
    monkeypatch.setattr(tracking, "make_tracker", recording(made))
    cfg = load_config(overrides={
        "data.source": reviews_csv, "sft.base": tiny_gpt2_dir, "sft.out": str(tmp_path / "sft"), "sft.n_reviews": 8,
        "sft.n_eval_reviews": 4, "sft.max_tokens": 24, "sft.batch_size": 4, "sft.n_sample_prompts": 3,
        "track.run_name": "probe", "track.mode": "disabled", "run_dir": str(tmp_path / "run")})
    pipe = pipeline.Pipeline(cfg)
    m = pipe.sft()
    assert pipe.times.seconds["SFT"] > 0  # the build is charged to its stage, not lost (`sft` prints it)
    (run,) = made
    assert (run.name, run.group, run.job_type) == ("probe-sft", "probe", "sft")
    assert {k: run.summary_[k] for k in ("ppl_before", "ppl_after", "steps")} == {
        k: m[k] for k in ("ppl_before", "ppl_after", "steps")}
    cols, rows = run.tables["sft/samples"]
    assert cols == ["prompt", "before", "after"] and len(rows) == 3
    pairs = zip(m["samples_before"], m["samples_after"])
    assert rows == [[b["prompt"], b["completion"], a["completion"]] for b, a in pairs]
    assert [s for s, x in run.logs if "train/loss" in x] == list(range(1, m["steps"] + 1)) and run.finished
    assert sft.run_sft(cfg, recording(made)) == m and len(made) == 1  # cached: nothing built, nothing logged
    capsys.readouterr()
    assert pipe.sft() == m and len(made) == 1  # found built: announced with when and how long it took
    rec = read_json(meta_path(sft.sft_out_dir(cfg)))
    when = datetime.fromisoformat(rec["built_at"]).strftime("%Y-%m-%d %H:%M")
    assert capsys.readouterr().out == f"SFT start policy: built {when} in {duration(rec['build_seconds'])}, reused\n"


# ---- a real offline wandb run, read back ----------------------------------------------------------
def wandb_records(path: Path) -> list:
    """The records of an offline run's `.wandb` file (a LevelDB-style log of protobuf `Record`s)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the block's end
            pos += block - pos % block
            continue
        if pos + 7 + n > len(data):  # a record still being written
            break
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a full record, or the last fragment of one
            out.append(pb.Record.FromString(buf))
            buf = b""
    return out


def offline_run(path: Path) -> dict | None:
    """An offline run's name, group, job type, tags, config, summary (last value of each key), history
    keys and step axes (`define_metric`: glob -> step metric); None until its file is written to the
    end (its exit record)."""
    run, summary, history, axes, kinds = None, {}, set(), {}, []
    for rec in wandb_records(path):
        kinds.append(rec.WhichOneof("record_type"))
        if kinds[-1] == "run":
            run = rec.run
        elif kinds[-1] == "summary":
            summary.update({u.key: json.loads(u.value_json) for u in rec.summary.update if u.key})
        elif kinds[-1] == "history":
            history |= {"/".join(i.nested_key) or i.key for i in rec.history.item}
        elif kinds[-1] == "metric":
            axes[rec.metric.glob_name or rec.metric.name] = rec.metric.step_metric
    if run is None or "exit" not in kinds:
        return None
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    return {"name": run.display_name, "group": run.run_group, "job_type": run.job_type, "tags": list(run.tags),
            "config": config, "summary": summary, "history": history, "axes": axes, "dir": path.parent}


def offline_runs(wandb_dir: Path, n: int, timeout: float = 60.0) -> dict[str, dict]:
    """The `n` offline runs under `wandb_dir` by name, once each is written to the end (wandb's writer
    may flush a moment after `finish()` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [offline_run(p) for p in sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))]
        if (len(runs) == n and None not in runs) or time.monotonic() > deadline:
            assert len(runs) == n and None not in runs, f"{len(runs)} runs, complete: {[r is not None for r in runs]}"
            return {r["name"]: r for r in runs}
        time.sleep(0.2)


def test_a_rerun_that_changes_nothing_makes_no_wandb_run(tracked, monkeypatch):
    """Level 1 and the learning-rate check again on the same run dir: every stage is cached, the results
    equal the stored ones, so no run at all (no training, evaluation or results run) is made."""
    pipe, _, level1, lr, _ = tracked
    made = []
    monkeypatch.setattr(tracking, "make_tracker", recording(made))
    again = pipeline.Pipeline(pipe.cfg)
    assert experiments.level1(again, losses=("sigmoid",)) == level1
    assert experiments.lr_lesson(again, lrs=(1e-3, 5e-3)) == lr
    assert made == []
    Path(again.paths.result("level1")).write_text("{}")  # a result the run dir does not hold: logged again
    experiments.level1(again, losses=("sigmoid",))
    assert [(r.job_type, r.name.rsplit("-", 1)[-1]) for r in made] == [("results", "level1")]


def test_a_real_offline_run_holds_the_evaluation(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                                                  monkeypatch, capsys):
    """A real offline wandb dir: one run per training and one per evaluation, however often they are
    asked for (a rerun finds them cached, says when each was built, and makes no run)."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                   **{"track.mode": "offline", "track.run_name": "probe"})
    pipe = pipeline.Pipeline(cfg)
    stored = pipe.evaluate(pipe.train(beta=0.5)).metrics
    capsys.readouterr()
    again = pipeline.Pipeline(cfg)  # the rerun: a new process's pipeline on the same run dir
    for _ in range(2):
        assert again.evaluate(again.train(beta=0.5)).metrics == stored
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["policy sigmoid-b0.5-lr0.001-s0",
                                                      "evaluation sigmoid-b0.5-lr0.001-s0"]  # once each
    name = "sigmoid-b0.5-lr0.001-s0"
    for line, d in zip(lines, (pipe.paths.policy(name), pipe.paths.eval(name))):
        rec = read_json(meta_path(d))
        when = datetime.fromisoformat(rec["built_at"]).strftime("%Y-%m-%d %H:%M")
        assert line.endswith(f": built {when} in {duration(rec['build_seconds'])}, reused") and rec["build_seconds"] > 0
    runs = offline_runs(pipe.dir / "wandb", 2)
    assert set(runs) == {"probe-train-sigmoid-b0.5-lr0.001-s0", "probe-eval-sigmoid-b0.5-lr0.001-s0"}
    ev, tr = runs["probe-eval-sigmoid-b0.5-lr0.001-s0"], runs["probe-train-sigmoid-b0.5-lr0.001-s0"]
    assert (ev["group"], ev["job_type"]) == ("probe", "eval")
    assert ev["tags"] == ["run_dir:run", "job:eval", "loss:sigmoid"] and tr["tags"] == ["run_dir:run", "job:train",
                                                                                         "loss:sigmoid"]
    assert tr["axes"] == {"train/global_step": "", "train/*": "train/global_step", "eval/*": "train/global_step"}
    assert ev["axes"] == {"train/global_step": "", "train/*": "train/global_step"}
    assert {f"train/{k}" for k in trl_dpo_keys()} | {"train/global_step"} <= tr["history"]
    assert {k: ev["config"][k] for k in ("loss", "beta", "lr", "seed", "model")} == {
        "loss": "sigmoid", "beta": 0.5, "lr": 1e-3, "seed": 0, "model": "sigmoid-b0.5-lr0.001-s0"}
    s = ev["summary"]
    for k in ("eval/reward_mean", "eval/token_entropy", "eval/kl_to_ref", "eval/ref_perplexity", "eval/distinct_2"):
        assert s[k] == pytest.approx(stored[k], rel=1e-12), k
    assert (s["eval/reward_mean_lo"], s["eval/kl_to_ref_hi"]) == pytest.approx(
        (stored["eval/reward_ci_lo"], stored["eval/kl_to_ref_ci_hi"]), rel=1e-12)
    (table,) = (ev["dir"] / "files" / "media" / "table" / "eval").glob("samples_*.table.json")
    scored = read_jsonl(pipe.paths.eval("sigmoid-b0.5-lr0.001-s0") / "scored.jsonl")
    t = read_json(table)
    assert t["columns"] == COLUMNS
    assert [row[:3] for row in t["data"]] == [[r["prompt"], r["completion"], r["reward"]] for r in scored]
    assert runs["probe-train-sigmoid-b0.5-lr0.001-s0"]["config"]["beta"] == 0.5
