"""Experiment tracking: wandb (offline by default, no account needed) or a no-op.

Call sites never branch on wandb: they call `tracker.log(...)` and the disabled tracker
does nothing. API keys are never written: we pass none and log only the config.

What a wandb run holds is decided here too: an evaluation's summary (`evaluation_summary`: every
metric under its `metrics.json` name, each 95 % CI as `<metric>_lo` / `<metric>_hi`), its samples
table (`sample_rows`), and a policy's settings at the top of its runs' config (`run_config`), so
wandb's scatter and parallel-coordinates panels can plot reward against KL over a sweep's runs; a
training step's metrics under the names transformers' WandbCallback gives trl's (`tracked`:
train/<metric>, eval/<metric>, train/global_step as the x axis); how a run dir's runs are named,
grouped and tagged (`RunTrackers`, `run_tags`).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import optional
from ..presets import PRESETS

HYPER = ("method", "loss", "beta", "alpha", "lr", "seed", "lora_r", "backend", "rounds", "credit", "credit_lambda", "kl")  # a policy's settings, top level of its config
SAMPLE_COLUMNS = ["prompt", "completion", "reward", "judge", "on_topic"]  # an evaluation's samples table
SAMPLE_ROWS = 64  # samples shown per evaluation: the first ones, in prompt order
WANDB_NAMES = {"lr": "learning_rate"}  # train_log.jsonl's names that wandb shows under trl's (transformers') names
STEP = "train/global_step"  # the x axis of the train/ and eval/ charts, as transformers' WandbCallback defines it
TRAINING_JOBS = ("train", "sft")  # job types whose eval/ metrics are logged per step (the others: a summary)


class NullTracker:
    """Tracker that records nothing (track.mode=disabled)."""

    dir = None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log one step's metrics (nothing here)."""

    def summary(self, metrics: dict[str, Any]) -> None:
        """Set the run's summary values (nothing here)."""

    def log_image(self, key: str, path: str) -> None:
        """Log a PNG (nothing here)."""

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """Log a table (nothing here)."""

    def log_scatter(self, key: str, columns: list[str], rows: list[list], x: str, y: str, title: str) -> None:
        """Log a native chart of column `y` against `x` of a table (nothing here)."""

    def log_model(self, path: str | Path) -> None:
        """Upload a trained model's directory as a model artifact, where track.log_models asks (nothing here)."""

    def finish(self) -> None:
        """Close the run (nothing here)."""


class WandbTracker(NullTracker):
    """A wandb run; offline mode writes under <run_dir>/wandb for a later `wandb sync`."""

    def __init__(self, config: dict, mode: str, project: str, name: str, run_dir: str, group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None, log_models: bool = False):
        wandb = optional.wandb()
        self.log_models = log_models
        os.makedirs(run_dir, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(project=project, name=name, config=config, mode=mode, dir=run_dir,
                              group=group, job_type=job_type, tags=tags, reinit="finish_previous")
        self.run.define_metric(STEP)  # trl's charts: every train/ (and a training run's eval/) metric over the step
        for prefix in ("train/*", "eval/*") if job_type in TRAINING_JOBS else ("train/*",):
            self.run.define_metric(prefix, step_metric=STEP, step_sync=True)
        self.dir = self.run.dir if mode != "disabled" else None

    def log(self, metrics, step=None):
        """Log one step's metrics to the run's history."""
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        """Set the run's summary values (one update)."""
        self.run.summary.update(metrics)

    def log_image(self, key, path):
        """Log a PNG as a wandb.Image."""
        self.run.log({key: self._wandb.Image(path)})

    def log_table(self, key, columns, rows):
        """Log a wandb.Table."""
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def log_scatter(self, key, columns, rows, x, y, title):
        """Log a wandb.Table as a native scatter chart (`wandb.plot.scatter`) of `y` against `x`."""
        table = self._wandb.Table(columns=columns, data=rows)
        self.run.log({key: self._wandb.plot.scatter(table, x, y, title=title)})

    def log_model(self, path):
        """With track.log_models: the directory `path` as a model artifact of this run, named after the run
        (e.g. default-train-sigmoid-b0.1-lr5e-05-s0; characters wandb refuses become "-")."""
        if self.log_models:
            art = self._wandb.Artifact(re.sub(r"[^\w.-]", "-", self.run.name), type="model")
            art.add_dir(str(path))
            self.run.log_artifact(art)

    def finish(self):
        """Close the run (offline: its files are complete for `wandb sync`)."""
        self.run.finish()


def make_tracker(cfg, name: str, run_dir: str, group: str | None = None, job_type: str | None = None,
                 config: dict | None = None, tags: list[str] | None = None):
    """The wandb run `name` (a no-op when track.mode=disabled); `config` is its config (default:
    the whole Config, asdict)."""
    if cfg.track.mode == "disabled":
        return NullTracker()
    return WandbTracker(cfg.to_dict() if config is None else config, cfg.track.mode, cfg.track.project, name,
                        run_dir, group, job_type, tags, cfg.track.log_models)


def run_tags(run_dir, job_type: str | None, experiment: str | None, config: dict) -> list[str]:
    """A wandb run's tags: its run dir (`preset:<name>` where the dir is named after a preset, as
    runs/<preset> is, else `run_dir:<name>`), `job:<type>`, `experiment:<name>`, and `loss:<name>` of
    the policy whose settings head its config (`run_config`); each at most 64 characters (wandb's limit)."""
    name = Path(run_dir).name
    tags = [f"preset:{name}" if name in PRESETS else f"run_dir:{name}"]
    tags += [f"job:{job_type}"] if job_type else []
    tags += [f"experiment:{experiment}"] if experiment else []
    tags += [f"loss:{config['loss']}"] if config.get("loss") is not None else []
    return [t[:64] for t in tags]


class RunTrackers:
    """The wandb runs of one run dir: `<prefix>-<name>`, grouped under `<prefix>-<experiment>` inside
    `grouped(experiment)` (`<prefix>` alone outside one), where `<prefix>` is track.run_name or the run
    dir's name. `main`: whether this process is rank 0 (the other ranks get no-op trackers)."""

    def __init__(self, cfg, run_dir, main: bool = True):
        self.cfg, self.run_dir, self.main = cfg, run_dir, main
        self.experiment: str | None = None  # the experiment whose runs are being made; None outside one

    def __call__(self, name: str, job_type: str | None = None, config: dict | None = None):
        """The tracker of one wandb run (rank 0's; a no-op on the other ranks); `config` defaults to the
        whole Config."""
        return self.make(name, job_type, config) if self.main else NullTracker()

    def make(self, name: str, job_type: str | None = None, config: dict | None = None):
        """As calling it, on any rank (a stage built by whichever rank takes its cache's lock: the SFT)."""
        prefix = self.cfg.track.run_name or Path(self.run_dir).name
        group = f"{prefix}-{self.experiment}" if self.experiment else prefix
        tags = run_tags(self.run_dir, job_type, self.experiment, self.cfg.to_dict() if config is None else config)
        return make_tracker(self.cfg, f"{prefix}-{name}", str(self.run_dir), group, job_type, config, tags)

    @contextmanager
    def grouped(self, experiment: str):
        """Inside, the wandb runs made through these trackers are grouped under `experiment`."""
        outer, self.experiment = self.experiment, experiment
        try:
            yield
        finally:
            self.experiment = outer

    def evaluation(self, name: str, metrics: dict, scored: list[dict], dpo: dict | None = None, **top) -> None:
        """The wandb run `eval-<name>` of one evaluation (job type eval), made once, when the evaluation
        is built (a cached one already has its run): its metrics and CIs in the summary, its first
        samples as a table (`log_evaluation`); its config carries the policy's dpo settings (`dpo`,
        none for the start policy and the human row) and `top` at the top level."""
        config = {k: v for k, v in self.cfg.to_dict().items() if k != "dpo" or dpo is not None}
        log_evaluation(self(f"eval-{name}", "eval", run_config(config, dpo, model=metrics["model"], **top)),
                       metrics, scored)


def tracked(rec: dict) -> dict:
    """A train_log record as wandb keys, as transformers' WandbCallback writes trl's logs:
    train/<metric> (`WANDB_NAMES`: lr as train/learning_rate), held-out eval_<metric> as
    eval/<metric>, and the optimizer step as train/global_step (`STEP`)."""
    out = {}
    for k, v in rec.items():
        if k == "step":
            out[STEP] = v
        elif k.startswith("eval_"):
            out[f"eval/{k[5:]}"] = v
        else:
            out[f"train/{WANDB_NAMES.get(k, k)}"] = v
    return out


def run_config(config: dict, dpo: dict | None = None, **top) -> dict:
    """A wandb run's config: `config` (the run's Config as a dict) with its `dpo` section replaced
    by a policy's own settings when given, and that policy's `HYPER` settings and `top` at the top
    level (where wandb's panels pick axes)."""
    out = dict(config)
    if dpo is not None:
        out["dpo"] = dict(dpo)
        out.update({k: dpo[k] for k in HYPER if k in dpo})
    out.update(top)
    return out


def ci_name(key: str, metrics: dict) -> str:
    """The summary name of a CI bound in `metrics`: `eval/kl_to_ref_ci_lo` -> `eval/kl_to_ref_lo`,
    `eval/reward_ci_hi` -> `eval/reward_mean_hi` (the metric it bounds, then _lo / _hi)."""
    base, side = key[: -len("_ci_lo")], key[-2:]
    metric = base if base in metrics or f"{base}_mean" not in metrics else f"{base}_mean"
    return f"{metric}_{side}"


def evaluation_summary(metrics: dict) -> dict:
    """One evaluation's metrics as a wandb summary: every value under its `metrics.json` name, each
    95 % CI bound renamed by `ci_name`; values not defined for this model (None) left out."""
    out = {}
    for key, value in metrics.items():
        if value is None or key == "metrics_version":
            continue
        out[ci_name(key, metrics) if key.endswith(("_ci_lo", "_ci_hi")) else key] = value
    return out


def sample_rows(scored: list[dict], limit: int = SAMPLE_ROWS) -> list[list]:
    """The first `limit` annotated samples as `SAMPLE_COLUMNS` rows (None where a judge is off)."""
    return [[r.get(c) for c in SAMPLE_COLUMNS] for r in scored[:limit]]


def log_evaluation(tracker, metrics: dict, scored: list[dict]) -> None:
    """Write one evaluation into its run and close it: `evaluation_summary` as the run's summary and
    the first samples as the `eval/samples` table."""
    try:
        tracker.summary(evaluation_summary(metrics))
        tracker.log_table("eval/samples", SAMPLE_COLUMNS, sample_rows(scored))
    finally:
        tracker.finish()
