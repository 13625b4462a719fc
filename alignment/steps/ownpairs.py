"""Preference pairs of one's own (`pairs.source`), in trl's format: a local `.jsonl` / `.csv` file,
or a hub dataset's train split, with text columns `prompt`, `chosen` and `rejected` (`chosen` and
`rejected` are completions of `prompt`, as trl's DPOTrainer takes them).

`read_pairs` reads and checks them before anything loads (each problem is one `PairsError` naming
`pairs.source`, the line and the fix; rows with chosen == rejected are dropped and counted) and
holds out the `data.n_eval_prompts` prompts of lowest stable hash (by normalised text, so two spellings
of one prompt stay together): none of their pairs is trained on, and they are the evaluation prompts.
`pair_prompts` and `pair_records` tokenize the rest into the prompt and pair records the package's
own pairs have (`alignment.steps.pairs`), without rewards. `OwnPairs.identity` (a hash of the rows) keys every
artifact of the run dir (`StageCache`), so a changed file never meets an old run's artifacts.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

from ..config import Config
from ..assets.corpus import bucket, normalize
from .data import DataError, jsonl_rows
from ..base.io import stable_hash
from ..base.optional import datasets

FIELD = "pairs.source"
COLUMNS = ("prompt", "chosen", "rejected")
FORMAT = "text columns prompt, chosen, rejected (trl's preference format)"


class PairsError(DataError):
    """`pairs.source` cannot give preference pairs; the message names the field, what is wrong and the fix."""


class OwnPairs(NamedTuple):
    train: list[dict]        # {prompt, chosen, rejected} of the training prompts, in source order
    eval_prompts: list[str]  # the held-out prompts (lowest hash first): evaluated on, never trained on
    stats: dict              # source, rows, dropped_identical, n_pairs, n_prompts, eval_prompts, held_out_pairs
    identity: str            # hash of every kept row: keys the run dir's artifacts


def _error(source: str, what: str, fix: str) -> PairsError:
    return PairsError(f"{FIELD}={source!r} {what}; {fix}")


def _file_rows(source: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line, row) of a local .jsonl / .csv file (UTF-8, a BOM allowed), and its columns."""
    p = Path(source).expanduser()
    if not p.is_file() or p.suffix not in (".jsonl", ".csv"):
        raise _error(source, "is not a .jsonl or .csv file", f"give one with {FORMAT}")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _error(source, f"is not UTF-8 (byte {e.start})", "re-encode the file as UTF-8") from None
    if p.suffix == ".jsonl":
        try:
            rows = jsonl_rows(text, source, FIELD)
        except DataError as e:  # a line that is not a JSON object: its message, as this module's error
            raise PairsError(str(e)) from None
        return rows, list(rows[0][1]) if rows else []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = [(reader.line_num, row) for row in reader]
    return rows, list(reader.fieldnames or [])


def _hub_rows(source: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """(row number, row) of a hub dataset's train split, and its columns (as `data.source` reads the hub)."""
    ds = datasets().load_dataset(source, split="train")
    return [(i + 1, dict(row)) for i, row in enumerate(ds)], list(ds.column_names)


def _checked(source: str, rows: list[tuple[int, dict]], columns: list[str], where: str) -> tuple[list[dict], int]:
    """The rows as {prompt, chosen, rejected} texts, without those whose chosen == rejected (their
    count returned); a missing column, an empty or non-text value raises."""
    if not rows:
        raise _error(source, "holds no pairs", f"give one row per pair, with {FORMAT}")
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise _error(source, f"has no {', '.join(missing)} column{'s' * (len(missing) > 1)} (columns: {columns})",
                     f"give {FORMAT}")
    kept, same, empty = [], 0, []
    for n, row in rows:
        vals = {c: row.get(c) for c in COLUMNS}
        other = next((c for c, v in vals.items() if v is not None and not isinstance(v, str)), None)
        if other:
            raise _error(source, f"{where} {n}: {other} is a {type(vals[other]).__name__}, not text",
                         f"give plain text (conversational message lists are not read): {FORMAT}")
        blank = [c for c, v in vals.items() if not (v or "").strip()]
        if blank:
            empty.append(f"{where} {n} ({', '.join(blank)})")
        elif vals["chosen"] == vals["rejected"]:
            same += 1
        else:
            kept.append(vals)
    if empty:
        raise _error(source, f"has {len(empty)} row(s) with an empty prompt, chosen or rejected (first: {empty[0]})",
                     "fill in or remove those rows")
    if not kept:
        raise _error(source, f"has chosen == rejected in every row ({same})",
                     "a pair needs two different completions of its prompt")
    return kept, same


def _held_out(rows: list[dict], n_eval: int) -> dict[str, str]:
    """{normalised prompt: its first text} of the `n_eval` prompts of lowest stable hash: which ones
    depends on the prompt texts alone, never on a seed or the row order."""
    first: dict[str, str] = {}
    for r in rows:
        first.setdefault(normalize(r["prompt"]), r["prompt"])
    keys = sorted(first, key=lambda k: (bucket("pairs eval " + k), k))[:n_eval]
    return {k: first[k] for k in keys}


def read_pairs(cfg: Config) -> OwnPairs:
    """`pairs.source` read, checked and split: every problem raises one `PairsError` before any model loads."""
    source, n_eval, batch = cfg.pairs.source, cfg.data.n_eval_prompts, cfg.dpo.batch_size
    local = Path(source).expanduser().exists()
    rows, same = _checked(source, *(_file_rows(source) if local else _hub_rows(source)), "line" if local else "row")
    held = _held_out(rows, n_eval)
    n_prompts = len({normalize(r["prompt"]) for r in rows})
    if n_prompts <= n_eval:
        raise _error(source, f"has {n_prompts} distinct prompts, and data.n_eval_prompts={n_eval} of them are held out "
                             "for evaluation, leaving none to train on", "lower data.n_eval_prompts or add pairs")
    train = [r for r in rows if normalize(r["prompt"]) not in held]
    if len(train) < batch:
        raise _error(source, f"leaves {len(train)} training pairs ({len(rows) + same} rows, {same} with chosen == "
                             f"rejected, {len(rows) - len(train)} on the {n_eval} held-out prompts), fewer than "
                             f"dpo.batch_size={batch}", "add pairs, or lower dpo.batch_size or data.n_eval_prompts")
    stats = {"source": source, "rows": len(rows) + same, "dropped_identical": same, "n_pairs": len(train),
             "n_prompts": len({r["prompt"] for r in train}), "eval_prompts": len(held),
             "held_out_pairs": len(rows) - len(train)}
    return OwnPairs(train, list(held.values()), stats, stable_hash(rows))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_ids(tokenizer, prompt_ids: list[int], prompt: str, completion: str) -> list[int]:
    """`completion`'s tokens after `prompt`, as trl takes them: prompt + completion tokenized together,
    the completion being what follows the prompt's own tokens (tokenized alone where the two merge
    across the boundary), then EOS."""
    full = _ids(tokenizer, prompt + completion)
    ids = full[len(prompt_ids):] if full[:len(prompt_ids)] == prompt_ids else _ids(tokenizer, completion)
    return ids + ([] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id])


def pair_prompts(own: OwnPairs, tokenizer) -> dict[str, list[dict]]:
    """prompts.json from the pairs: {"train": each training prompt once, "eval": the held-out ones},
    records {id, text, ids} as `data.build_prompts` makes them (no review behind them)."""
    texts = {"eval": own.eval_prompts, "train": list(dict.fromkeys(r["prompt"] for r in own.train))}
    out = {split: [{"id": f"{split}{i}", "text": t, "ids": _ids(tokenizer, t)} for i, t in enumerate(ts)]
           for split, ts in texts.items()}
    s = own.stats
    print(f"pairs: {s['n_pairs']} pairs on {s['n_prompts']} training prompts from {FIELD}={s['source']!r}; "
          f"{s['eval_prompts']} prompts held out for evaluation ({s['held_out_pairs']} pairs not trained on), "
          f"{s['dropped_identical']} rows with chosen == rejected dropped", flush=True)
    return out


def pair_records(own: OwnPairs, train_prompts: list[dict], tokenizer) -> tuple[list[dict], dict]:
    """(pairs, stats): the training rows as the package's pair records, {prompt_id, prompt, chosen,
    rejected, chosen_ids, rejected_ids} with the reward fields None (no reward ranked them)."""
    by_text = {p["text"]: p for p in train_prompts}
    pairs = []
    for r in own.train:
        p = by_text[r["prompt"]]
        pairs.append({"prompt_id": p["id"], **r,
                      "chosen_ids": completion_ids(tokenizer, p["ids"], r["prompt"], r["chosen"]),
                      "rejected_ids": completion_ids(tokenizer, p["ids"], r["prompt"], r["rejected"]),
                      "chosen_reward": None, "rejected_reward": None, "margin": None})
    return pairs, own.stats
