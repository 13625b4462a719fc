"""Reviews -> prompts, with a held-out split that never leaks into training.

A prompt is the first `k` policy tokens of a review (the seed used k=8 GPT-2 tokens of IMDB
reviews). Eval prompts come only from the source's eval pool (the hub's test split, or a fixed
hash share of the reviews: `split_pool`), train prompts and SFT text only from its train pool,
so no config can make an eval prompt's review a training text; a train prompt whose text equals
an eval prompt is dropped as well. The offline pool holds only texts that no scorer trains on
(`alignment.assets.corpus`).
"""
from __future__ import annotations

import csv
import io
import json
import random
import warnings
from pathlib import Path

from ..config import OFFLINE, DataConfig
from ..assets.corpus import Review, bucket, offline_reviews
from ..base.optional import datasets


class DataError(ValueError):
    """The review data cannot give the prompts asked for; the message says which field to change."""


def _read_text(p: Path, path: str) -> str:
    """The file as text; bytes that are not UTF-8 become U+FFFD (dropped with the rest of the
    cleaning, `filter_reviews`), and a warning says how many."""
    raw = p.read_bytes()  # decoded here, not by open(): no newline translation, csv sees the file as written
    try:
        return raw.decode("utf-8")  # the common case: one pass
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
    warnings.warn(f"data.source={path!r}: {bad} byte sequence(s) are not UTF-8 and are dropped; "
                  "re-encode the file as UTF-8 to keep them", stacklevel=3)
    return text


def jsonl_rows(text: str, path: str, field: str = "data.source") -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line; a line that is not a JSON object raises one
    `DataError` naming `field`, the file and the line."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{field}={path!r} line {n} is not valid JSON ({e.msg}); one object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{field}={path!r} line {n} is not a JSON object; one object per line")
        rows.append((n, row))
    return rows


def file_reviews(path: str) -> list[Review]:
    """A local .csv/.jsonl (a `text` column, optional `label`) or .txt (one review per line), UTF-8.
    A file that cannot give reviews (a malformed JSON line, no `text` column, no rows) raises one
    `DataError` naming the file, the line and the fix; bytes that are not UTF-8 are dropped, with a warning."""
    p = Path(path).expanduser()
    if p.suffix not in (".txt", ".jsonl", ".csv"):
        raise DataError(f"data.source={path!r}: use a .csv, .jsonl or .txt file")
    text = _read_text(p, path)
    if p.suffix == ".txt":
        out = [Review(f"{p.stem}{i}", t.strip()) for i, t in enumerate(text.splitlines()) if t.strip()]
    else:
        rows = ([r for _, r in jsonl_rows(text, path)] if p.suffix == ".jsonl"
                else list(csv.DictReader(io.StringIO(text, newline=""))))
        if rows and "text" not in rows[0]:
            raise DataError(f"data.source={path!r} has no `text` column (columns: {sorted(rows[0])})")
        out = [Review(str(r.get("id", f"{p.stem}{i}")), str(r["text"]),
                      None if r.get("label") in (None, "") else int(r["label"])) for i, r in enumerate(rows)]
    if not out:
        raise DataError(f"data.source={path!r} holds no reviews")
    return out


def check_source(cfg: DataConfig) -> None:
    """Read a local `data.source` file once, so a file that cannot give reviews fails with its
    `DataError` before any model loads or trains (the hub and the offline corpus are read later)."""
    if cfg.source != OFFLINE and Path(cfg.source).expanduser().exists():
        file_reviews(cfg.source)


def hub_reviews(name: str, split: str) -> list[Review]:
    """A hub dataset with `text` (and `label`) columns, e.g. imdb train/test."""
    ds = datasets().load_dataset(name, split=split)
    return [Review(f"{name}-{split}-{i}", r["text"], r.get("label")) for i, r in enumerate(ds)]


def filter_reviews(reviews: list[Review], cfg: DataConfig) -> list[Review]:
    """Reviews whose cleaned text (no `<br />`, no replacement characters) is longer than
    `data.min_chars` and shorter than `data.max_chars` (0: no limit)."""
    keep = []
    for r in reviews:
        text = r.text.replace("<br />", " ").replace("\ufffd", "").strip()
        if len(text) > cfg.min_chars and (cfg.max_chars == 0 or len(text) < cfg.max_chars):
            keep.append(Review(r.id, text, r.label))
    return keep


def review_texts(cfg: DataConfig, ids: set[str]) -> dict[str, str]:
    """The (filtered) texts of the reviews with these ids: what their prompts were cut from."""
    out = {}
    for pool in review_pools(cfg).values():
        out.update({r.id: r.text for r in filter_reviews([r for r in pool if r.id in ids], cfg)})
    missing = ids - set(out)
    if missing:
        raise DataError(f"{len(missing)} prompt source reviews (e.g. {sorted(missing)[0]!r}) are no longer in "
                        f"data.source={cfg.source!r}; rebuild the prompts in a new run_dir")
    return out


def make_prompt(tokenizer, text: str, k: int) -> list[int] | None:
    """First k tokens of `text` (no special tokens); None if the review is shorter than k+1 tokens."""
    ids = tokenizer(text[: 40 * (k + 2)], add_special_tokens=False)["input_ids"]
    return ids[:k] if len(ids) > k else None


EVAL_SHARE = 0.25  # sources without their own test split: this share of reviews (by text hash) is eval-only


def split_pool(reviews: list[Review]) -> dict[str, list[Review]]:
    """{"train", "eval"} by a fixed hash of each review's text: no config (sizes, seeds) can move a
    review between them, so an eval prompt's source is never SFT or DPO training text."""
    out: dict[str, list[Review]] = {"train": [], "eval": []}
    for r in reviews:
        out["eval" if bucket("eval split " + r.text) < EVAL_SHARE else "train"].append(r)
    return out


def review_pools(cfg: DataConfig) -> dict[str, list[Review]]:
    """The reviews behind `data.source`, as {"train": [...], "eval": [...]}: the source's own
    splits (hub train/test), else `split_pool`. Eval prompts come only from "eval"; SFT text and
    training prompts only from "train"."""
    if cfg.source == OFFLINE:
        return split_pool(offline_reviews())
    if cfg.source == "imdb":
        return {"train": hub_reviews("imdb", "train"), "eval": hub_reviews("imdb", "test")}
    if Path(cfg.source).expanduser().exists():
        return split_pool(file_reviews(cfg.source))
    return {"train": hub_reviews(cfg.source, "train"), "eval": hub_reviews(cfg.source, "test")}


def build_prompts(cfg: DataConfig, tokenizer, draw: int | None = None) -> dict[str, list[dict]]:
    """Return {"train": [...], "eval": [...]} prompt records {id, review_id, text, ids, label}.
    The eval prompts depend on `data.seed` only. The train prompts: `draw` None, the shared draw
    (the same shuffle, continued); `draw` k, training seed k's own draw (`data.per_seed`): the train
    pool shuffled by (data.seed, k), ids "s<k>-train<i>", so seeds see independent draws of the pool."""
    pools = review_pools(cfg)
    rng = random.Random(cfg.seed)
    need = {"eval": cfg.n_eval_prompts, "train": cfg.n_train_prompts}
    out: dict[str, list[dict]] = {"eval": [], "train": []}
    seen: set[str] = set()
    kept = {}
    for split in ("eval", "train"):  # eval first: its texts are reserved
        pool = filter_reviews(pools[split], cfg)
        kept[split] = (len(pool), len(pools[split]))
        (random.Random(f"data.seed={cfg.seed} draw={draw}") if split == "train" and draw is not None else rng).shuffle(pool)
        used = {r["review_id"] for r in out["eval"]}
        prefix = split if split == "eval" or draw is None else f"s{draw}-train"
        for r in pool:
            if len(out[split]) == need[split]:
                break
            ids = None if r.id in used else make_prompt(tokenizer, r.text, cfg.prompt_tokens)
            text = tokenizer.decode(ids) if ids else ""
            if ids and text.strip() and text not in seen:
                seen.add(text)
                out[split].append({"id": f"{prefix}{len(out[split])}", "review_id": r.id,
                                   "text": text, "ids": ids, "label": r.label})
        if len(out[split]) < need[split]:
            raise DataError(
                f"only {len(out[split])} {split} prompts could be built from data.source={cfg.source!r} "
                f"(need data.n_{split}_prompts={need[split]}, reviews must be > data.min_chars="
                f"{cfg.min_chars} chars and longer than data.prompt_tokens={cfg.prompt_tokens} tokens); "
                f"lower the count or relax the length filters")
    limits = f"{cfg.min_chars} < chars" + (f" < {cfg.max_chars}" if cfg.max_chars else "")
    which = "" if draw is None else f" (seed {draw}'s draw)"
    print(f"prompts: {len(out['train'])} train{which}, {len(out['eval'])} eval, each the first data.prompt_tokens="
          f"{cfg.prompt_tokens} tokens of a review; the length filter ({limits}: data.min_chars/max_chars) kept "
          + ", ".join(f"{k} of {n} {split} reviews" for split, (k, n) in kept.items()), flush=True)
    return out
