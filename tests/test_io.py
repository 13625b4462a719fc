import json
import os

import pytest

from alignment.io import JsonlAppender, atomic_open, read_json, read_jsonl, stable_hash, write_json, write_jsonl


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
