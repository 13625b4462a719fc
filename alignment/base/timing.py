"""Where a run's wall time goes: seconds per stage kind (sampling, scoring, reference log-probs,
training, evaluation, statistics, model loading, prompts, the SFT build, setup, I/O), each second
counted once.

    times = StageTimes()
    with times("I/O"):              # reading a cached artifact ...
        with times("sampling"):     # ... whose build ran inside: its seconds go to sampling only
            ...
    times.rows()  ->  [{"stage": "sampling", "seconds": 12.1, "share": 0.93}, {"stage": "I/O", ...}]

Nested stages are exclusive (a parent is charged only for the time outside its children), so the
rows add up to the wall time spent inside any stage. One process's view: under several processes
each rank has its own (the report shows rank 0's).
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm.auto import tqdm

from .io import read_json, write_json

STAGES = ("setup", "SFT", "model loading", "prompts", "sampling", "scoring", "reference log-probs", "training",
          "evaluation", "statistics", "I/O")  # the order rows are shown in; other names follow


class StageTimes:
    """Exclusive wall-time accounting by stage name (see the module doc)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: list[list] = []  # [name, start, seconds spent in children] per open stage

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        frame = [name, self.clock(), 0.0]
        self._open.append(frame)
        try:
            yield
        finally:
            self._open.pop()
            total = self.clock() - frame[1]
            self.seconds[name] += total - frame[2]
            if self._open:
                self._open[-1][2] += total

    def rows(self) -> list[dict]:
        """{stage, seconds, share} per stage that took any time, in `STAGES` order, then the rest."""
        total = sum(self.seconds.values()) or 1.0
        names = [s for s in STAGES if s in self.seconds] + sorted(set(self.seconds) - set(STAGES))
        return [{"stage": s, "seconds": self.seconds[s], "share": self.seconds[s] / total} for s in names]


def bars_off() -> bool:
    """Whether progress bars are turned off: TQDM_DISABLE set (not "0"), read when a bar is made.
    (tqdm reads it only as a default at import, which an explicit `disable=` overrides.) The notebook
    sets it, so its saved outputs hold no bar fragments."""
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")


SLOW_BAR_SECONDS = 10.0  # a `slow_bar` shows once its loop has run this long
_QUIET: ContextVar[bool] = ContextVar("quiet_bars", default=False)


@contextmanager
def quiet_bars() -> Iterator[None]:
    """No `slow_bar` inside: a training step's own scoring and log-probs run under the step bar."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def slow_bar(batches: Iterable, total: int, desc: str, unit: str, size: Callable = len) -> Iterator:
    """`batches`, each counted `size(batch)` of `total` `unit`s on a progress bar (rate, ETA) that appears only
    once the loop has run `SLOW_BAR_SECONDS`: a long scoring or log-prob pass shows its progress, a short one
    prints nothing. Off with `bars_off`, inside `quiet_bars` and on every process of a launch but the first
    (`RANK` > 0), as the other bars."""
    off = bars_off() or _QUIET.get() or int(os.environ.get("RANK", "0")) > 0
    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, delay=SLOW_BAR_SECONDS, disable=off)
    try:
        for batch in batches:
            yield batch
            bar.update(size(batch))
    finally:
        bar.close()


def log_command(path, stage: str, rows: list[dict], hardware: dict, processes: int = 1, note: str = "") -> list[dict]:
    """Append one command's wall time by stage to the run dir's timings log (`timings.json`: a list,
    oldest first, one entry per command that ran in the dir, with the machine it ran on) and return
    the log. A cached rerun adds a short entry instead of hiding what the first run cost; an interrupted
    command its time so far, with `note` saying so (the rerun that resumes it adds its own)."""
    old = read_json(path) if Path(path).exists() else []
    log = old if isinstance(old, list) else [old]  # an older single-command record is kept as the first entry
    log.append({"stage": stage, "seconds": sum(r["seconds"] for r in rows), "processes": processes,
                "hardware": hardware, "rows": rows, **({"note": note} if note else {})})
    write_json(path, log)
    return log
