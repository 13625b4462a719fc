"""Experiment tracking: wandb (offline by default, no account needed) or a no-op.

Call sites never branch on wandb: they call `tracker.log(...)` and the disabled tracker
does nothing. API keys are never written: we pass none and log only the config.
"""
from __future__ import annotations

import os
from typing import Any

from . import optional


class NullTracker:
    """Tracker that records nothing (track.mode=disabled)."""

    dir = None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_image(self, key: str, path: str) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    """A wandb run; offline mode writes under <run_dir>/wandb for a later `wandb sync`."""

    def __init__(self, config: dict, mode: str, project: str, name: str, run_dir: str, group: str | None = None):
        wandb = optional.wandb()
        os.makedirs(run_dir, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(project=project, name=name, config=config, mode=mode, dir=run_dir,
                              group=group, reinit="finish_previous")
        self.dir = self.run.dir if mode != "disabled" else None

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        for k, v in metrics.items():
            self.run.summary[k] = v

    def log_image(self, key, path):
        self.run.log({key: self._wandb.Image(path)})

    def log_table(self, key, columns, rows):
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def finish(self):
        self.run.finish()


def make_tracker(cfg, name: str, run_dir: str, group: str | None = None):
    """`cfg` is the whole Config; asdict(cfg) is logged as the run's config."""
    if cfg.track.mode == "disabled":
        return NullTracker()
    return WandbTracker(cfg.to_dict(), cfg.track.mode, cfg.track.project,
                        cfg.track.run_name or name, run_dir, group)
