import csv

import pytest

from alignment.config import DataConfig
from conftest import make_reviews
from alignment.assets.corpus import detokenize
from alignment.steps.data import DataError, build_prompts, file_reviews, make_prompt


def _cfg(source, **kw):
    kw = {"prompt_tokens": 8, "min_chars": 200, "n_train_prompts": 30, "n_eval_prompts": 10, **kw}
    return DataConfig(source=str(source), **kw)


def test_build_prompts_counts_lengths_and_fields(reviews_csv, tiny_tokenizer):
    out = build_prompts(_cfg(reviews_csv), tiny_tokenizer)
    assert len(out["train"]) == 30 and len(out["eval"]) == 10
    for split in ("train", "eval"):
        ids = [p["id"] for p in out[split]]
        assert ids == [f"{split}{i}" for i in range(len(ids))]
        for p in out[split]:
            assert len(p["ids"]) == 8
            assert p["text"] == tiny_tokenizer.decode(p["ids"])
            assert p["label"] in (0, 1)


def test_prompt_is_prefix_of_review(reviews_csv, tiny_tokenizer):
    reviews = {r.id: r.text for r in file_reviews(reviews_csv)}
    out = build_prompts(_cfg(reviews_csv, prompt_tokens=5), tiny_tokenizer)
    for p in out["train"] + out["eval"]:
        assert len(p["ids"]) == 5
        full = tiny_tokenizer(reviews[p["review_id"]], add_special_tokens=False)["input_ids"]
        assert full[:5] == p["ids"]


def test_train_eval_disjoint_by_review_and_text(reviews_csv, tiny_tokenizer):
    out = build_prompts(_cfg(reviews_csv, n_train_prompts=35, n_eval_prompts=10), tiny_tokenizer)
    tr, ev = out["train"], out["eval"]
    assert not {p["review_id"] for p in tr} & {p["review_id"] for p in ev}
    assert not {p["text"] for p in tr} & {p["text"] for p in ev}
    assert len({p["text"] for p in tr + ev}) == len(tr) + len(ev)  # no duplicate prompt text at all


def test_duplicate_prompt_text_goes_to_one_split_only(tmp_path, tiny_tokenizer):
    # 40 reviews that all open with the same 8 tokens: only one prompt can ever be built.
    path = tmp_path / "dup.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        for i in range(40):
            w.writerow([f"This movie was a delight from start to finish, take {i}. " * 5])
    cfg = _cfg(path, n_train_prompts=1, n_eval_prompts=1, prompt_tokens=4)
    with pytest.raises(DataError, match="data.n_train_prompts=1"):  # eval reserved the only text
        build_prompts(cfg, tiny_tokenizer)


def test_deterministic_for_a_seed(reviews_csv, tiny_tokenizer):
    a = build_prompts(_cfg(reviews_csv, seed=3), tiny_tokenizer)
    b = build_prompts(_cfg(reviews_csv, seed=3), tiny_tokenizer)
    c = build_prompts(_cfg(reviews_csv, seed=4), tiny_tokenizer)
    assert a == b
    assert [p["review_id"] for p in a["eval"]] != [p["review_id"] for p in c["eval"]]


def test_too_few_reviews_names_the_field(reviews_csv, tiny_tokenizer):
    with pytest.raises(DataError) as ei:
        build_prompts(_cfg(reviews_csv, n_train_prompts=100, n_eval_prompts=10), tiny_tokenizer)
    msg = str(ei.value)
    assert "data.n_train_prompts=100" in msg and "train" in msg
    with pytest.raises(DataError, match="data.n_eval_prompts=61"):
        build_prompts(_cfg(reviews_csv, n_train_prompts=1, n_eval_prompts=61), tiny_tokenizer)


def test_min_max_chars_filter(reviews_csv, tiny_tokenizer):
    # every fixture review is 250-400 chars: min_chars=400 leaves none
    with pytest.raises(DataError, match="data.min_chars=400"):
        build_prompts(_cfg(reviews_csv, min_chars=400), tiny_tokenizer)
    with pytest.raises(DataError):
        build_prompts(_cfg(reviews_csv, min_chars=0, max_chars=100), tiny_tokenizer)


@pytest.mark.parametrize("text,expect", [
    ("it 's good , really .", "it's good, really."),
    ("i did n't like it ; the ending ( sadly ) was weak !", "i didn't like it; the ending (sadly) was weak!"),
    ("they 're great , we 've seen it , i 'm sure you 'll agree", "they're great, we've seen it, i'm sure you'll agree"),
    ("  costs $ 5   at 50 % off ?  ", "costs $5 at 50% off?"),
])
def test_detokenize(text, expect):
    assert detokenize(text) == expect


def test_short_reviews_are_skipped(tmp_path, tiny_tokenizer):
    path = tmp_path / "mixed.csv"
    rows = [{"id": f"short{i}", "text": ["Great.", "Bad film!", "Meh", "Loved it"][i % 4]} for i in range(20)]
    rows += [{"id": f"long{i}", "text": t} for i, (t, _) in enumerate(make_reviews(10))]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["id", "text"])
        w.writeheader()
        w.writerows(rows)
    out = build_prompts(_cfg(path, min_chars=0, n_train_prompts=5, n_eval_prompts=4), tiny_tokenizer)
    used = {p["review_id"] for p in out["train"] + out["eval"]}
    # 10 long reviews give 9 distinct 8-token prompts (reviews 0 and 1 share "This movie w")
    assert used <= {f"long{i}" for i in range(10)} and len(used) == 9
    assert all(len(p["ids"]) == 8 for p in out["train"] + out["eval"])
    assert make_prompt(tiny_tokenizer, "Great.", 8) is None
    with pytest.raises(DataError):
        build_prompts(_cfg(path, min_chars=0, n_train_prompts=6, n_eval_prompts=4), tiny_tokenizer)


def test_non_utf8_txt_source(tmp_path, tiny_tokenizer):
    path = tmp_path / "reviews.txt"
    lines = [t for t, _ in make_reviews(30)]
    blob = b"\n".join(l.encode() for l in lines)
    blob = blob.replace(b"This movie", b"This \xff\xfe movie").replace(b"acting", b"act\xe9ing")
    path.write_bytes(blob + b"\n\xc3\n")
    reviews = file_reviews(str(path))
    assert len(reviews) == 31  # the lone bad byte is its own (short) line
    out = build_prompts(_cfg(path, n_train_prompts=6, n_eval_prompts=4), tiny_tokenizer)
    for p in out["train"] + out["eval"]:
        assert "\ufffd" not in p["text"] and len(p["ids"]) == 8


def test_jsonl_source_and_bad_sources(tmp_path, tiny_tokenizer):
    import json

    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "label": l}) for t, l in make_reviews(10)) + "\n")
    revs = file_reviews(str(p))
    assert len(revs) == 10 and {r.label for r in revs} == {0, 1}
    bad = tmp_path / "r.tsv"
    bad.write_text("x")
    with pytest.raises(DataError, match="data.source"):
        file_reviews(str(bad))
    nocol = tmp_path / "n.csv"
    nocol.write_text("review,label\nhello,1\n")
    with pytest.raises(DataError, match="text"):
        file_reviews(str(nocol))


def test_bad_files_give_one_clear_error(tmp_path):
    import json

    broken = tmp_path / "b.jsonl"
    broken.write_text(json.dumps({"text": "fine review"}) + "\n{\"text\": \"cut off\n")
    with pytest.raises(DataError, match=r"b\.jsonl' line 2 is not valid JSON"):
        file_reviews(str(broken))
    arr = tmp_path / "a.jsonl"
    arr.write_text('["text"]\n')
    with pytest.raises(DataError, match="line 1 is not a JSON object"):
        file_reviews(str(arr))
    for name, body in (("e.csv", "text,label\n"), ("e.txt", "\n  \n"), ("e.jsonl", "")):
        (tmp_path / name).write_text(body)
        with pytest.raises(DataError, match="holds no reviews"):
            file_reviews(str(tmp_path / name))


def test_non_utf8_bytes_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes("caf\u00e9 is fine \ufffd kept\n".encode() + b"bad \xff\xfe bytes\n")
    with pytest.warns(UserWarning, match="2 byte sequence"):
        revs = file_reviews(str(path))
    assert [r.text for r in revs] == ["caf\u00e9 is fine \ufffd kept", "bad \ufffd\ufffd bytes"]


def test_a_bad_data_file_fails_before_anything_is_built(tmp_path, monkeypatch):
    """`prepare` reads a local data.source first: the SFT start policy (offline-sft) is never
    started, and no part file or directory is left in the asset cache or the run dir."""
    from alignment import cli

    monkeypatch.setattr("alignment.run.pipeline.run_sft", lambda *a, **k: pytest.fail("built before the data was read"))
    bad = tmp_path / "reviews.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNMENT_CACHE", str(cache))
    assert cli.main(["prompts", "--set", f"data.source={bad}", f"run_dir={tmp_path / 'run'}", "track.mode=disabled"]) == 2
    left = [p for root in (cache, tmp_path / "run") if root.exists() for p in root.rglob("*") if ".part" in p.name]
    assert left == []


def test_each_seed_draws_its_own_train_prompts(reviews_csv, tiny_tokenizer):
    """draw k: the train pool shuffled by (data.seed, k); the eval prompts are the shared draw's, no
    train text is an eval text, and draw None is the shared draw."""
    cfg = _cfg(reviews_csv, n_train_prompts=10, n_eval_prompts=10)
    shared, d0, d1 = (build_prompts(cfg, tiny_tokenizer, draw) for draw in (None, 0, 1))
    assert shared["eval"] == d0["eval"] == d1["eval"]
    texts = [[p["text"] for p in d["train"]] for d in (shared, d0, d1)]
    assert texts[0] != texts[1] != texts[2] and all(len(t) == 10 for t in texts)
    eval_texts = {p["text"] for p in shared["eval"]}
    assert not eval_texts & (set(texts[1]) | set(texts[2]))
    assert [p["id"] for p in d1["train"]][:2] == ["s1-train0", "s1-train1"] and shared["train"][0]["id"] == "train0"
    assert build_prompts(cfg, tiny_tokenizer, 1) == d1  # seeded: the same draw again
