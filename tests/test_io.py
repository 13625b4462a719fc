import json
import os

import pytest

from alignment.base.io import JsonlAppender, atomic_open, read_json, read_jsonl, stable_hash, write_json, write_jsonl


def test_atomic_open_success_writes_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "out.txt"
    with atomic_open(p) as f:
        f.write("hello")
    assert p.read_text() == "hello"
    assert os.listdir(p.parent) == ["out.txt"]


def test_atomic_open_exception_leaves_no_file_and_no_temp(tmp_path):
    p = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert not p.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_open_exception_keeps_previous_content(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(p) as f:
            f.write("new")
            raise KeyboardInterrupt
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_json_roundtrip(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert read_json(tmp_path / "a.json") == {"a": [1, 2], "b": 1}


def test_read_jsonl_whole_lines_and_torn_tail(tmp_path):
    p = tmp_path / "x.jsonl"
    write_jsonl(p, [{"i": 0}, {"i": 1, "s": "é"}])
    assert read_jsonl(p) == [{"i": 0}, {"i": 1, "s": "é"}]
    with open(p, "a", encoding="utf-8") as f:
        f.write('{"i": 2, "s": "tor')
    assert read_jsonl(p) == [{"i": 0}, {"i": 1, "s": "é"}]


def test_appender_truncates_torn_line_then_appends(tmp_path):
    p = tmp_path / "log.jsonl"
    good = json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n"
    p.write_text(good + '{"step": 3, "lo', encoding="utf-8")
    app = JsonlAppender(p)
    assert app.records == [{"step": 1}, {"step": 2}]
    assert p.read_text(encoding="utf-8") == good  # torn tail cut on open
    app.extend([{"step": 3}, {"step": 4}])
    assert read_jsonl(p) == [{"step": i} for i in range(1, 5)]
    assert app.records == [{"step": i} for i in range(1, 5)]
    assert JsonlAppender(p).records == app.records


def test_appender_new_file_and_keep(tmp_path):
    p = tmp_path / "d" / "log.jsonl"
    app = JsonlAppender(p)
    assert app.records == [] and not p.exists()
    app.extend([{"a": 1}, {"a": 2}, {"a": 3}])
    app.keep([{"a": 1}])
    assert read_jsonl(p) == [{"a": 1}] and app.records == [{"a": 1}]
    app.extend([{"a": 9}])
    assert read_jsonl(p) == [{"a": 1}, {"a": 9}]


def test_stable_hash_deterministic_and_sensitive():
    a = {"x": 1, "y": [1, 2], "z": {"q": "w"}}
    b = {"z": {"q": "w"}, "y": [1, 2], "x": 1}  # same content, other key order
    assert stable_hash(a) == stable_hash(b)
    assert len(stable_hash(a)) == 12 and len(stable_hash(a, n=20)) == 20
    assert stable_hash(a) != stable_hash({**a, "x": 2})
    assert stable_hash(a) != stable_hash({**a, "y": [2, 1]})
    assert stable_hash({"beta": 0.1}) != stable_hash({"beta": 0.10000001})


# ---- cached: the one cache helper ----------------------------------------------------------------
from alignment.base.io import CacheMismatch, cached, meta_path  # noqa: E402


def _builder(log, text="built"):
    def build(part):
        log.append(part.name)
        part.write_text(text)
    return build


def test_cached_builds_once_writes_meta_after_and_leaves_no_part(tmp_path):
    art, log = tmp_path / "a.txt", []
    assert cached(art, {"x": 1}, _builder(log)) is True
    assert art.read_text() == "built" and read_json(meta_path(art))["deps"] == {"x": 1}
    assert cached(art, {"x": 1}, _builder(log)) is False and len(log) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.meta.json"]
    assert log[0] == f".a.txt.{stable_hash({'x': 1})}.part"  # the part is named after the deps


def test_cached_mismatch_names_the_changed_key_and_keeps_the_artifact(tmp_path):
    art = tmp_path / "a.txt"
    cached(art, {"x": 1, "y": 2}, _builder([]))
    with pytest.raises(CacheMismatch, match=r"changed: y\). use another dir"):
        cached(art, {"x": 1, "y": 3}, _builder([]), hint="use another dir")
    assert art.read_text() == "built"
    assert cached(art, {"x": 1, "y": 3}, _builder([], "new"), on_mismatch="rebuild") is True
    assert art.read_text() == "new" and read_json(meta_path(art))["deps"] == {"x": 1, "y": 3}


def test_cached_crash_in_build_publishes_nothing_and_resumes_from_its_part(tmp_path):
    art = tmp_path / "a.txt"

    def crash(part):
        part.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached(art, {"x": 1}, crash)
    assert not art.exists() and not meta_path(art).exists()
    seen = []

    def resume(part):
        seen.append(part.read_text())  # the same config finds its own partial work
        part.write_text("whole")

    cached(art, {"x": 1}, resume)
    assert seen == ["half"] and art.read_text() == "whole"


def test_cached_ignores_other_configs_parts_and_removes_them(tmp_path):
    art = tmp_path / "a.txt"
    with pytest.raises(KeyboardInterrupt):
        cached(art, {"x": 1}, lambda part: (part.write_text("half of x=1"), (_ for _ in ()).throw(KeyboardInterrupt)))
    seen = []
    cached(art, {"x": 2}, lambda part: (seen.append(part.exists()), part.write_text("x=2")))
    assert seen == [False] and art.read_text() == "x=2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.meta.json"]


def test_cached_never_trusts_an_artifact_without_a_current_meta(tmp_path):
    """No meta (a crash between publish and meta), or a meta of the older kit that wrote it before
    the artifact existed: the artifact is rebuilt, never trusted."""
    art = tmp_path / "a.txt"
    art.write_text("partial from an old run")
    write_json(meta_path(art), {"hash": stable_hash({"x": 1}), "deps": {"x": 1}})  # no "format"
    assert cached(art, {"x": 1}, _builder([])) is True and art.read_text() == "built"
    meta_path(art).unlink()
    assert cached(art, {"x": 1}, _builder([], "again")) is True and art.read_text() == "again"


def test_cached_directories(tmp_path):
    from alignment.base.io import part_dir

    art = tmp_path / "model"

    def build(part):
        (part_dir(part) / "w.bin").write_bytes(b"1")

    cached(art, {"r": 1}, build)
    cached(art, {"r": 2}, lambda part: (part_dir(part) / "w.bin").write_bytes(b"2"), on_mismatch="rebuild")
    assert (art / "w.bin").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.meta.json"]


def _slow_build_in_child(art, log):
    import time as _t

    def build(part):
        with open(log, "a") as f:
            f.write("built\n")
        _t.sleep(0.3)
        part.write_text("x")

    cached(art, {"x": 1}, build)


def test_cached_builds_once_when_two_processes_ask_at_the_same_time(tmp_path):
    import multiprocessing as mp

    art, log = tmp_path / "a.txt", tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_slow_build_in_child, args=(art, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "built\n" and art.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.meta.json", "log"]


def _build_after_failed_holder(art, log, fail):
    import time as _t

    def build(part):
        with open(log, "a") as f:
            f.write("start\n")
        _t.sleep(0.3)
        if fail:
            raise RuntimeError("the first holder fails")
        part.write_text("x")

    try:
        cached(art, {"x": 1}, build)
    except RuntimeError:
        pass


def test_cached_lock_holds_when_the_first_builder_fails(tmp_path):
    """The first holder fails (and removes its lock file); of the two waiters only one may build."""
    import multiprocessing as mp
    import time as _t

    art, log = tmp_path / "a.txt", tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_build_after_failed_holder, args=(art, log, fail)) for fail in (True, False, False)]
    procs[0].start()
    _t.sleep(0.1)
    procs[1].start()  # waits on the first holder's lock file, which it removes when it fails (~0.3 s)
    _t.sleep(0.35)
    procs[2].start()  # arrives while the second builds: must wait for it, not lock a fresh file
    for p in procs:
        p.join(30)
    assert log.read_text() == "start\nstart\n"  # the failed one, then exactly one waiter
    assert art.read_text() == "x"


def test_a_failed_build_leaves_no_empty_part_but_keeps_work_to_resume(tmp_path):
    from alignment.base.io import cached, part_dir, part_path

    art = tmp_path / "model"

    def fails_at_once(part):
        part_dir(part)  # made its directory, wrote nothing
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        cached(art, {"v": 1}, fails_at_once)
    assert not part_path(art, {"v": 1}).exists() and not art.exists()

    def fails_after_work(part):
        (part_dir(part) / "ckpt.pt").write_bytes(b"step 3")
        raise RuntimeError("killed later")

    with pytest.raises(RuntimeError):
        cached(art, {"v": 1}, fails_after_work)
    assert (part_path(art, {"v": 1}) / "ckpt.pt").read_bytes() == b"step 3"  # kept: the rerun resumes from it


def test_cached_records_when_and_how_long_a_build_took(tmp_path):
    """The meta says when the artifact was built and how long its build took (from `started` when the
    build ran before the call, as a collective one does); a meta without those fields (an earlier
    version's) is still a valid cache entry, and reads as built earlier."""
    import time
    from datetime import datetime

    from alignment.base.io import build_record
    from alignment.run.stagecache import built_before, duration, reused_line

    art, t0 = tmp_path / "a.txt", time.time()
    assert cached(art, {"x": 1}, lambda part: (time.sleep(0.2), part.write_text("x"))) is True
    rec = build_record(art)
    built = datetime.fromisoformat(rec["built_at"]).timestamp()
    assert 0.2 <= rec["build_seconds"] <= built - t0 + 1e-3 and t0 < built <= time.time()
    assert read_json(meta_path(art))["deps"] == {"x": 1}  # the cache key is unchanged
    assert not built_before(art, t0) and built_before(art, time.time())
    when = datetime.fromtimestamp(built).strftime("%Y-%m-%d %H:%M")
    assert reused_line("probe", art) == f"probe: built {when} in {rec['build_seconds']:.1f} s, reused"

    older = {k: v for k, v in read_json(meta_path(art)).items() if k not in ("built_at", "build_seconds")}
    write_json(meta_path(art), older)
    assert cached(art, {"x": 1}, lambda part: pytest.fail("rebuilt")) is False  # still fresh
    assert build_record(art) == {} and built_before(art, t0)
    assert reused_line("probe", art) == "probe: built earlier, reused"

    other = tmp_path / "b.txt"
    cached(other, {"x": 1}, lambda part: part.write_text("y"), started=time.time() - 90)  # built before the call
    assert 90 <= build_record(other)["build_seconds"] < 100
    assert [duration(s) for s in (42, 792, 9000)] == ["42.0 s", "13.2 min", "2.5 h"]
