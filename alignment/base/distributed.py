"""More than one process, on accelerate (which trl is built on); one process is the default.

    accelerate launch --multi_gpu --num_processes 2 -m alignment run --preset default

(`--multi_gpu` is accelerate's name for its torchrun launcher; without GPUs the processes talk
over gloo on the CPU, with them over NCCL, one GPU per process.) Each stage then splits its work
by rank, and every rank calls the same stages in the same order:

- sampling, scoring and evaluation are split by **batches** — batch k of the one-process run goes
  to rank k % world — so every batch has the same members, padding and seed as in one process:
  the same draws and the same scores. Each rank streams its samples to its own shard file beside
  the artifact's part (`<part>.rank<r>of<w>`), so a killed run resumes: the batches already in any
  shard (of a launch of any size) are kept, the rest dealt out again; rank 0 merges them in the
  order one process writes, removes the shards, and publishes the artifact.
- DPO training is DDP (`accelerate`'s `prepare_model`): each optimizer step's global batch is
  split across ranks and each rank's loss weighted by its share, so the averaged gradient is the
  one-process gradient of the same global batch; rank 0 alone writes logs, checkpoints, weights.
  (The SFT start policy lives in the asset cache and is trained by one process: build it first,
  `python -m alignment sft`, or the first rank to take its lock does.)
- the reference log-probs, pairs and the human row are split or computed alike on every rank and
  written by rank 0; only the prompts are built by rank 0 alone while the others wait (such a
  rank-0 build may not call a stage: `building_on_ranks` refuses, since the others would never
  enter its collectives). Plots, JSON results and wandb: rank 0.

Process management is accelerate's/torchrun's; this module only asks who we are, splits work, and
gathers results (`torch.distributed` object collectives).
"""
from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from .io import CacheMismatch, building, cache_state, part_path, stale_message
from .optional import accelerate


@dataclass(frozen=True)
class Dist:
    """Who this process is. `Dist()` = one process (every method is then a no-op or identity)."""
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        """Shard-file suffix: each rank of each launch size streams to its own file."""
        return f"rank{self.rank}of{self.world}"

    def barrier(self) -> None:
        if self.world > 1:
            _not_in_rank0_build("a barrier")
            torch.distributed.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        _not_in_rank0_build("a gather")
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def map(self, fn: Callable[[list], Sequence], items: list, batch_size: int) -> list:
        """`fn(items)`, one result per item, with the items cut in batches of `batch_size` dealt out rank by
        rank and gathered (`map_batches`): the batch mapper a step is handed with its `dist`. In one process
        it is `list(fn(items))`."""
        return map_batches(fn, items, chunks(len(items), batch_size), self)

    def agree(self, obj):
        """Rank 0's `obj` on every rank: decisions (is it built? is it stale?) taken once, so no
        rank takes another branch because the file system changed between two looks."""
        if self.world == 1:
            return obj
        _not_in_rank0_build("a broadcast")
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks, in rank order (the same floats on every rank)."""
        if self.world == 1:
            return list(values)
        return [sum(col) for col in zip(*self.gather(list(values)))]


@lru_cache(maxsize=1)
def current() -> Dist:
    """This process's place in a launch: `WORLD_SIZE` > 1 (set by `accelerate launch`/torchrun)
    initialises the process group through accelerate (gloo without CUDA, NCCL with it). Ranks wait
    at barriers while others finish larger shards: the collective timeout is hours, not minutes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    for engine in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() in ("1", "true"):
            raise RuntimeError(f"accelerate is configured for {engine} (ACCELERATE_USE_{engine}); alignment trains with "
                               "DDP: launch with `accelerate launch --multi_gpu ...` and no FSDP/DeepSpeed config")
    # PartialState also makes this rank's GPU the current CUDA device, so "cuda" means it from here on
    state = accelerate().PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=6))
    return Dist(state.process_index, state.num_processes)


def shutdown(meet: bool = True) -> None:
    """Take this process's part of the launch's process group down before it exits: a process that
    exits with gloo's threads still up can abort in teardown ("terminate called without an active
    exception", exit -6), and torchrun then reports the whole launch as failed. The ranks first meet
    at a barrier (none tears down while another still talks to it), and unreachable DDP wrappers are
    collected, so no reducer keeps gloo's work objects alive into interpreter shutdown. `meet=False`
    (an interrupted rank: the others may be inside a training step's collectives) skips the barrier."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if meet:
            torch.distributed.barrier()
        gc.collect()
        torch.distributed.destroy_process_group()


def rank_items(batches: Sequence[Sequence[int]], dist: Dist) -> list[int]:
    """The item indices of this rank's batches (batch k -> rank k % world), ascending. Given to the
    same batcher in this order, they re-form exactly those batches: batchers here sort stably (or
    keep order) and cut full batches, and only the globally last batch can be short."""
    return sorted(i for k, b in enumerate(batches) if k % dist.world == dist.rank for i in b)


def map_batches(fn: Callable[[list], Sequence], items: list, batches: Sequence[Sequence[int]], dist: Dist) -> list:
    """`fn(items)` (one result per item) computed rank by rank over `batches` and gathered: every
    rank gets the full list in item order, equal to `list(fn(items))` in one process."""
    if dist.world == 1:
        return list(fn(items))
    idx = rank_items(batches, dist)
    mine = list(fn([items[i] for i in idx])) if idx else []
    out: list = [None] * len(items)
    for ix, vals in dist.gather((idx, mine)):
        for i, v in zip(ix, vals):
            out[i] = v
    return out


def chunks(n: int, size: int) -> list[list[int]]:
    """Batches of an order-keeping batcher: [0..size), [size..2size), ..."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


class ShardedScorer:
    """A scorer (`score(texts) -> Tensor`) whose texts are split across ranks by its own batches
    (`scorer.batches(texts)`, what a model scorer runs; contiguous chunks for batch-free scorers like
    VADER) and gathered, so each text is scored in the batch it would have had in one process. A model
    scorer with an automatic batch size (0) plans and scores with rank 0's choice, passed as `rows`
    (`batches(texts, rows)`, `score(texts, rows)`): nothing of the scorer is changed."""

    def __init__(self, scorer, dist: Dist):
        self.inner, self.dist = scorer, dist
        self.metrics = getattr(scorer, "metrics", {})

    def score(self, texts: list[str]) -> torch.Tensor:
        plan = getattr(self.inner, "batches", None)  # a model scorer's own (length-sorted) batches
        if plan is None:
            batches = chunks(len(texts), max(1, -(-len(texts) // self.dist.world)))
            return self._map(texts, batches)
        if getattr(self.inner, "batch_size", None) == 0 and hasattr(self.inner, "rows"):
            rows = self.dist.agree(self.inner.rows())  # automatic: rank 0's choice (its free memory) on every rank
            return self._map(texts, plan(texts, rows), lambda sub: self.inner.score(sub, rows))
        return self._map(texts, plan(texts))

    def _map(self, texts: list[str], batches, score=None) -> torch.Tensor:
        score = score or self.inner.score
        vals = map_batches(lambda sub: score(sub).tolist(), texts, batches, self.dist)
        return torch.tensor(vals, dtype=torch.float32)


def shard_path(part: str | os.PathLike, dist: Dist) -> Path:
    return Path(f"{part}.{dist.tag}")


def shards_of(part: str | os.PathLike) -> list[Path]:
    """Every rank's shard of `part`, of launches of any size, sorted by name."""
    part = Path(part)
    return sorted(part.parent.glob(f"{part.name}.rank*of*"))


def remove_shards(part: str | os.PathLike) -> None:
    """Every rank's shard of `part` (any world size): called once the artifact is published."""
    for p in shards_of(part):
        p.unlink(missing_ok=True)


_RANK0_BUILD: list[str] = []  # the artifact a rank-0-only build is making, while it runs


def _not_in_rank0_build(what: str) -> None:
    if _RANK0_BUILD:
        raise RuntimeError(f"the rank-0-only build of {_RANK0_BUILD[-1]} entered {what}: the other ranks would "
                           "never join it. Make that build collective.")


@contextmanager
def building_on_ranks(artifact: str | os.PathLike, deps: dict, dist: Dist, collective: bool,
                      hint: str = "") -> Iterator[Path | None]:
    """`io.building` for every rank of a launch (each enters it, in the same order); the block's `part`
    is None where it has nothing to do. A *collective* block runs on every rank with the same part path
    — it splits its own work, may call stages, and writes the part on rank 0 only —; any other runs on
    rank 0 while the others wait (their `part` is None), and must not call a stage. Rank 0 decides
    whether to build, and publishes (where another launch in the same run dir published the artifact while a
    collective block ran, that one stands and this block's part is left unused)."""
    if dist.world == 1:
        with building(artifact, deps, hint=hint) as part:
            yield part
        return
    _not_in_rank0_build(f"the stage that makes {artifact}")
    dist.barrier()
    state, stale = dist.agree((cache_state(artifact, deps), stale_message(artifact, deps, hint)) if dist.main else None)
    if state == "fresh":
        yield None
        return
    if stale:
        raise CacheMismatch(stale)  # on every rank alike
    part, started = part_path(artifact, deps), time.time()
    if collective:
        yield part
        dist.barrier()
    if dist.main:  # publishes the part every rank wrote; or builds it alone, then publishes
        _RANK0_BUILD.append(str(artifact))
        try:
            with building(artifact, deps, hint=hint, started=started) as mine:  # the meta times the whole build
                if not collective:
                    yield mine
        finally:
            _RANK0_BUILD.pop()
        remove_shards(part)  # a merge a kill cut short left them; none otherwise
    elif not collective:
        yield None
    dist.barrier()
