"""Sampling completions of prompts, as plain records streamed to JSONL.

The seam (`alignment.steps.samplers`): a sampler backend is a module with `draw(source, tokenizer, prompts,
n, cfg, stop_ids, keys, max_new_tokens) -> Draws`, registered in `samplers.SAMPLERS` under the name
`sample.backend` takes: `fast` (`alignment.steps.decode`, our KV-cache decoder: the default) and
`generate` (`alignment.steps.hf_generate`, HF `model.generate`). `source` is the loaded model, or its
`models.ModelRef` for a backend that loads models itself (`TAKES_REF`). A new backend is one new module and
one line in `SAMPLERS`.

Around it: prompts are length-bucketed into batches; each completion draws from its own counter-based
stream, keyed by the run seed, its prompt id and its sample index (`decode.row_keys`), so the draws do
not depend on the batch size, the order of the prompts, the number of processes or the backend (up to
the numerics of the logits); `sample_to_file` streams records prompt by prompt and resumes after an
interrupt without redoing finished prompts; under several processes each rank samples its share of the
batches (`alignment.base.distributed`) into its own shard.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from . import decode
from .samplers import SAMPLERS
from ..assets.models import model_ref
from ..config import SampleConfig
from ..base.distributed import Dist, remove_shards, shard_path, shards_of
from ..base.io import JsonlAppender, debug_delay, read_jsonl, write_jsonl
from ..base.machine import auto_decode_rows, free_device_memory, say_once
from ..base.timing import bars_off


def backend(name: str):
    """The module registered for `sample.backend=name` (`samplers.SAMPLERS`: a module path, or a module)."""
    mod = SAMPLERS[name]
    return importlib.import_module(mod) if isinstance(mod, str) else mod


def draw_source(mod, model, name: str):
    """(the backend that draws, what it draws from): `mod` with `model` itself, or with the model's `ModelRef`
    where `mod` loads models itself (`TAKES_REF`). A model with no saved copy (a policy while it trains: the
    on-policy methods) is drawn in-process by the fast backend instead, from the same streams, said once."""
    if not getattr(mod, "TAKES_REF", False):
        return mod, model
    ref = model_ref(model)
    if ref is None:
        say_once(f"sample.backend={name}: a model with no saved copy to load (a policy while it trains) is drawn "
                 "in-process by the fast backend (the same counter-based streams, so the same tokens)")
        return decode, model
    return mod, ref


def _batches(prompts: list[dict], per_batch: int) -> Iterator[list[dict]]:
    """Length-bucketed batches: prompts sorted by token length, so padding stays minimal."""
    ordered = sorted(prompts, key=lambda p: (len(p["ids"]), p["id"]))
    for i in range(0, len(ordered), per_batch):
        yield ordered[i : i + per_batch]


def decode_rows(model, cfg: SampleConfig, prompts: list[dict], max_new: int) -> int:
    """Sequences per decode batch: `sample.batch_size`, or where it is 0 (auto) `machine.auto_decode_rows`
    at the longest prompt plus `max_new` tokens, announced once per distinct choice. The draws do not
    depend on it (each completion has its own stream), only the speed and the memory."""
    if cfg.batch_size:
        return cfg.batch_size
    param = next(model.parameters())
    rows, why = auto_decode_rows(model.config, param.element_size(), param.device.type,
                                 max((len(p["ids"]) for p in prompts), default=0) + max_new,
                                 free_device_memory(param.device))
    say_once(f"sample.batch_size=0 (auto): {why}")
    return rows


def _per_batch(rows: int, n: int) -> int:
    """Prompts per decode batch: all n samples of a prompt decode together (one shared prefill)."""
    return max(1, rows // n)


def sample_records(model, tokenizer, prompts: list[dict], n: int, cfg: SampleConfig,
                   stop_ids: list[int], done: set[str] = frozenset(), desc: str = "sampling",
                   max_new_tokens: int | None = None, quiet: bool = False) -> Iterator[list[dict]]:
    """Yield, batch by batch, records {prompt_id, sample, prompt, completion, completion_ids,
    finished, sample_logps, sample_entropy} for prompts not in `done` (the last two: the sampling
    distribution's own per-token log-probs and mean predictive entropy; not with backend=generate)."""
    todo = [p for p in prompts if p["id"] not in done]
    max_new = max_new_tokens or cfg.max_new_tokens
    per_batch = _per_batch(decode_rows(model, cfg, todo, max_new), n)
    mod, source = draw_source(backend(cfg.backend), model, cfg.backend) if todo else (None, model)
    bar = tqdm(total=len(todo) * n, desc=desc, unit="seq", leave=False, disable=quiet or bars_off())
    for batch in _batches(todo, per_batch):
        keys = decode.row_keys(cfg.seed, [p["id"] for p in batch], n)  # (len(batch) * n,)
        draws = mod.draw(source, tokenizer, [p["ids"] for p in batch], n, cfg, stop_ids, keys, max_new)
        recs = []
        for j, c in enumerate(draws.tokens):
            p = batch[j // n]
            finished = bool(c) and c[-1] in stop_ids
            text_ids = c[:-1] if finished else c
            recs.append({"prompt_id": p["id"], "sample": j % n, "prompt": p["text"],
                         "completion": tokenizer.decode(text_ids, skip_special_tokens=True),
                         "completion_ids": c, "finished": finished})
            if draws.logps is not None:  # the sampler's own log q per token and mean predictive entropy
                recs[-1].update(sample_logps=[round(x, 6) for x in draws.logps[j]], sample_entropy=draws.entropy[j])
        bar.update(len(recs))
        yield recs
    bar.close()


def sample_to_file(path, model, tokenizer, prompts: list[dict], n: int, cfg: SampleConfig,
                   stop_ids: list[int], desc: str = "sampling", max_new_tokens: int | None = None,
                   dist: Dist = Dist()) -> list[dict]:
    """Stream samples to `path` (JSONL); prompts already complete there are skipped (resume).
    Several processes (`dist`, every rank calls this): the batches not yet in any shard are dealt
    out (k-th to rank k % world), rank r streams its own into `<path>.rank<r>of<w>` (resumable,
    also by a later launch of another size: a completion's draws depend only on its own key), rank 0
    merges every shard into `path` in the order one process writes; every rank returns all records."""
    path = Path(path)
    if dist.world == 1 and not shards_of(path):
        return _stream(path, model, tokenizer, prompts, n, cfg, stop_ids, desc, max_new_tokens)
    # several processes, or one resuming a killed launch's shards (then every call below is local)
    merged = dist.main and path.exists() and len(done_prompts(read_jsonl(path), n)) == len(prompts)
    if not dist.agree(merged):
        # rank 0's batch size: one batching for all ranks (with batch_size=0, from rank 0's free memory)
        rows = dist.agree(decode_rows(model, cfg, prompts, max_new_tokens or cfg.max_new_tokens))
        batches = list(_batches(prompts, _per_batch(rows, n)))
        flat = [p for b in batches for p in b]  # one process's file order
        pos = {p["id"]: i for i, p in enumerate(flat)}
        done = dist.agree(done_prompts(_shard_records(path, pos), n) if dist.main else None)
        todo = [b for b in batches if not all(p["id"] in done for p in b)]
        mine = [p for k, b in enumerate(todo) if k % dist.world == dist.rank for p in b if p["id"] not in done]
        label = f"{desc} (rank 0's share of {dist.world})" if dist.world > 1 else desc  # one bar: rank 0's
        _stream(shard_path(path, dist), model, tokenizer, mine, n, dataclasses.replace(cfg, batch_size=rows), stop_ids,
                label, max_new_tokens, quiet=not dist.main)
        dist.barrier()
        if dist.main:
            recs = _shard_records(path, pos)
            if len(done_prompts(recs, n)) < len(prompts):
                raise RuntimeError(f"merging the sampling shards of {path} left prompts without their {n} samples; "
                                   "delete the shard files and rerun")
            write_jsonl(path, sorted(recs, key=lambda r: (pos[r["prompt_id"]], r["sample"])))
    dist.barrier()
    if dist.main:
        remove_shards(path)
    return in_prompt_order(read_jsonl(path), prompts)


def _shard_records(path: Path, pos: dict[str, int]) -> list[dict]:
    """The records in every shard of `path` (any launch size; a rank without a batch wrote none),
    of known prompts, one per (prompt, sample)."""
    recs = {(r["prompt_id"], r["sample"]): r for p in shards_of(path) for r in read_jsonl(p) if r["prompt_id"] in pos}
    return list(recs.values())


def _stream(path, model, tokenizer, prompts: list[dict], n: int, cfg: SampleConfig, stop_ids: list[int],
            desc: str, max_new_tokens: int | None, quiet: bool = False) -> list[dict]:
    app = JsonlAppender(path)
    done = done_prompts(app.records, n)
    if any(r["prompt_id"] not in done for r in app.records):  # partial prompts (not via extend, but be safe)
        app.records = [r for r in app.records if r["prompt_id"] in done]
    for recs in sample_records(model, tokenizer, prompts, n, cfg, stop_ids, done, desc, max_new_tokens, quiet):
        app.extend(recs)
        debug_delay()
    return in_prompt_order(app.records, prompts)


def in_prompt_order(records: list[dict], prompts: list[dict]) -> list[dict]:
    """Records of `prompts` sorted by (prompt position, sample index): the order rewards align to."""
    order = {p["id"]: i for i, p in enumerate(prompts)}
    return sorted((r for r in records if r["prompt_id"] in order), key=lambda r: (order[r["prompt_id"]], r["sample"]))


def done_prompts(records: list[dict], n: int) -> set[str]:
    """Ids of prompts that already have at least n samples among `records`."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["prompt_id"]] = counts.get(r["prompt_id"], 0) + 1
    return {pid for pid, c in counts.items() if c >= n}
