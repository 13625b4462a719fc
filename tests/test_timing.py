"""Per-stage wall time: nested stages are exclusive, rows add up, order is the report's."""
import pytest

from alignment.study.console import stage_times
from alignment.base.timing import StageTimes


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_nested_stages_are_charged_exclusively():
    clock = Clock()
    times = StageTimes(clock)
    with times("I/O"):
        clock.t += 1.0              # 1 s of I/O
        with times("sampling"):
            clock.t += 5.0          # 5 s of sampling inside it
            with times("model loading"):
                clock.t += 2.0      # 2 s of loading inside sampling
        clock.t += 0.5              # back in I/O
    with times("sampling"):
        clock.t += 3.0
    assert dict(times.seconds) == {"I/O": 1.5, "sampling": 8.0, "model loading": 2.0}
    rows = times.rows()
    assert [r["stage"] for r in rows] == ["model loading", "sampling", "I/O"]
    assert sum(r["seconds"] for r in rows) == pytest.approx(clock.t)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_a_failing_stage_is_still_charged():
    clock = Clock()
    times = StageTimes(clock)
    with times("training"):
        clock.t += 4.0
    with pytest.raises(RuntimeError), times("evaluation"):
        clock.t += 1.5
        raise RuntimeError("killed")
    assert dict(times.seconds) == {"training": 4.0, "evaluation": 1.5}


def test_the_table_lists_every_stage_and_the_total():
    clock = Clock()
    times = StageTimes(clock)
    for name, dt in (("training", 6.0), ("statistics", 2.0)):
        with times(name):
            clock.t += dt
    text = stage_times(times.rows())
    assert "8.0 s in all" in text
    assert "| training | 6.0 | 75% |" in text and "| statistics | 2.0 | 25% |" in text and "| total | 8.0 | 100% |" in text


def test_a_slow_loop_shows_its_progress_and_a_quick_one_prints_nothing(monkeypatch, capsys):
    import time

    from alignment.base import timing

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    batches = [[0, 1, 2], [3, 4], [5]]
    assert list(timing.slow_bar(batches, 6, "scoring with judge", "text")) == batches  # under 10 s: quiet
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(timing, "SLOW_BAR_SECONDS", 0.05)
    for _ in timing.slow_bar(batches, 6, "scoring with judge", "text"):
        time.sleep(0.06)
    err = capsys.readouterr().err
    assert "scoring with judge" in err and "/6 [" in err and "text/s" in err  # count, rate, ETA
    with timing.quiet_bars():  # a training step's own scoring: the step bar is the bar
        for _ in timing.slow_bar(batches, 6, "scoring with judge", "text"):
            time.sleep(0.06)
    monkeypatch.setenv("RANK", "1")  # another process of a launch: rank 0's bar only
    for _ in timing.slow_bar(batches, 6, "scoring with judge", "text"):
        time.sleep(0.06)
    assert capsys.readouterr().err == ""
