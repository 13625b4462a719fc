"""The one training loop.

`train_loop` owns everything a stage's training shares: the seeded batch order, the learning-rate
schedule, gradient accumulation and clipping, the finite-loss check, `train_log.jsonl`, tracking,
and checkpoints (`alignment.base.checkpoint`: by default at most one per 10 minutes, the latest kept,
and one at the last whole step when Ctrl-C or a kill stops it) that resume mid-run with the same data
order and RNG state. A stage passes a
*loss closure* `loss_fn(model, indices) -> (loss, metrics)` over a micro-batch of example indices
(the loop hands in the model to call: under several processes, its DDP wrapper): DPO
(`alignment.steps.dpo.train_dpo`) and SFT (`alignment.steps.sft`) are each one closure.

Under `accelerate launch` (`alignment.base.distributed`, `dist.world` > 1) DPO's loop is DDP through
accelerate (SFT passes no `dist`: one process trains it): each micro-batch of the one-process run is split across ranks and each rank's loss
weighted by its share, so the gradient DDP averages equals the one-process gradient of that
micro-batch; logged metrics are the same weighted means; rank 0 alone writes log and checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from ..base.checkpoint import (CKPT, checkpoint_due, load_checkpoint, remove_checkpoint, remove_torn_writes, rng_states,
                               save_checkpoint)
from ..base.distributed import Dist
from ..base.io import JsonlAppender, debug_delay, read_jsonl
from ..base.optional import accelerate
from ..base.timing import bars_off, quiet_bars
from ..base.tracking import tracked

COUNTS = ("num_tokens", "tokens_drawn")  # closure metrics summed over a step's micro-batches and ranks, then over steps
LossFn = Callable[[torch.nn.Module, list[int]], tuple[torch.Tensor, dict[str, float]]]


class LoopResult(NamedTuple):
    records: list[dict]   # train_log.jsonl: one record per optimizer step, all sessions
    seconds: float        # wall time of the loop over all sessions
    resumed_from: int     # the step this session started at (0: not resumed)


@dataclass
class LoopConfig:
    """What `train_loop` needs; each stage fills it from its own config section."""
    lr: float                   # peak learning rate (AdamW, no weight decay)
    epochs: int                 # passes over the examples
    batch_size: int             # examples per micro-batch
    grad_accum: int             # micro-batches per optimizer step
    warmup_ratio: float         # linear warmup fraction of the optimizer steps
    final_lr_ratio: float       # the schedule decays linearly to this fraction of lr
    max_grad_norm: float        # gradient clipping
    seed: int                   # batch order and torch RNG
    save_every: int             # resumable checkpoint every k optimizer steps and after the last (0 = off)
    save_minutes: float         # resumable checkpoint once this many minutes passed since the last (0 = off)
    disable_dropout: bool       # DPO: the reference log-probs were computed without dropout
    autocast: bool              # bf16 autocast for the forward passes (fp32 weights, optimizer and loss)
    desc: str                   # the config section errors name (and the progress bar's label unless `label`)
    eval_every: int = 0         # call the loop's `evaluate` every k optimizer steps and after the last (0: after the last only)
    label: str = ""             # the progress bar's label, when it is not `desc` (RLOO trains under the dpo section)


def epoch_batches(n: int, epochs: int, batch_size: int, seed: int) -> list[list[int]]:
    """Every batch's example indices for the whole run, fixed up front (seeded shuffle per
    epoch), so a resumed run replays exactly the same order."""
    order = []
    for ep in range(epochs):
        idx = list(range(n))
        random.Random(seed * 1000 + ep).shuffle(idx)
        order += [idx[i : i + batch_size] for i in range(0, n, batch_size)]
    return order


def lr_at(step: int, total: int, lr: float, warmup_ratio: float, final_lr_ratio: float) -> float:
    """Linear warmup over warmup_ratio of the steps (from lr/warm), then linear decay that would
    reach final_lr_ratio * lr one step after the last."""
    warm = max(1, int(round(warmup_ratio * total)))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * (1.0 - (1.0 - final_lr_ratio) * (step - warm) / max(1, total - warm))


def rank_share(mb: list[int], dist: Dist) -> tuple[list[int], float]:
    """This rank's contiguous part of a global micro-batch and its weight |part| / |mb|. A rank
    left without examples (|mb| < world) runs the first one with weight 0: DDP needs every rank's
    backward. E.g. mb [0..4], 2 ranks: ([0, 1, 2], 0.6) and ([3, 4], 0.4)."""
    if dist.world == 1:
        return mb, 1.0
    size = -(-len(mb) // dist.world)
    mine = mb[dist.rank * size : (dist.rank + 1) * size]
    return (mine, len(mine) / len(mb)) if mine else (mb[:1], 0.0)


def _one_step(net, steps: list[list[list[int]]], step: int, loss_fn: LossFn, autocast: bool, dev,
              dist: Dist) -> dict[str, float]:
    """Forward/backward every micro-batch of optimizer step `step`; their mean metrics (over ranks too)."""
    mets, weights = [], []
    for k, mb in enumerate(steps[step]):
        mine, w = rank_share(mb, dist)
        # DDP: accumulate locally, all-reduce once, with the step's last micro-batch
        sync = k == len(steps[step]) - 1 or not isinstance(net, torch.nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if sync else net.no_sync(), quiet_bars():  # the step bar is the bar
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                loss, m = loss_fn(net, mine)
            # DDP averages over ranks: weight w * world makes that average the micro-batch mean's gradient
            # (one process: w * world = 1.0, and the arithmetic is exactly the plain loss / accumulation)
            (loss * (w * dist.world) / len(steps[step])).backward()
        mets.append(m)
        weights.append(w)
    keys = list(mets[0])
    sums = dist.all_sum([sum((1.0 if k in COUNTS else w) * m[k] for m, w in zip(mets, weights) if w)
                         for k in keys])  # w 0: not counted
    return {k: v if k in COUNTS else v / len(mets) for k, v in zip(keys, sums)}


class _ReadOnlyLog:
    """A rank > 0's view of train_log.jsonl (rank 0 writes it)."""

    def __init__(self, path: Path):
        self.records = read_jsonl(path) if path.exists() else []

    def keep(self, records: list[dict]) -> None:
        self.records = list(records)

    def extend(self, records: list[dict]) -> None:
        self.records.extend(records)


def _step_record(rec: dict, step: int, n_steps: int, cfg: LoopConfig, grad_norm: float, lr: float,
                 before: list[dict]) -> dict:
    """One optimizer step's log record: the closure's metrics with the step, epoch, gradient norm and lr, the
    `COUNTS` as running totals over the steps so far (`before`: the log until now, across resumes)."""
    rec = {**rec, "step": step + 1, "epoch": (step + 1) / n_steps * cfg.epochs, "grad_norm": grad_norm, "lr": lr}
    for k in COUNTS:
        if k in rec:
            rec[k] = int(rec[k] + (before[-1].get(k, 0) if before else 0))
    if not math.isfinite(rec["loss"]):
        raise FloatingPointError(f"{cfg.desc} loss became {rec['loss']} at step {step + 1}; lower {cfg.desc}.lr"
                                 + (" or dpo.beta" if cfg.desc == "dpo" else ""))
    return rec


def _wrap(model, dist: Dist):
    """The module the closure calls: `model`, or its DDP wrapper from accelerate."""
    if dist.world == 1:
        return model
    # precision and compilation are the loop's (dpo.precision), never the launch's or the user's accelerate config
    acc = accelerate().Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no", dynamo_backend="no")
    return acc.prepare_model(model, device_placement=False)


def _resume(out_dir: Path, model, opt, desc: str, n_steps: int, dist: Dist):
    """(step, seconds so far, train log up to that step) from out_dir's checkpoint, loaded into
    `model` and `opt`, with a line saying so; (0, 0.0, the log emptied) without one."""
    if dist.main:
        remove_torn_writes(out_dir)
    start, seconds = load_checkpoint(out_dir, model, opt)
    if start and dist.main:
        print(f"resuming {desc} from step {start} of {n_steps} (checkpoint {out_dir / CKPT})", flush=True)
    log = JsonlAppender(out_dir / "train_log.jsonl") if dist.main else _ReadOnlyLog(out_dir / "train_log.jsonl")
    if any(r["step"] > start for r in log.records):
        log.keep([r for r in log.records if r["step"] <= start])
    return start, seconds, log


def eval_due(step: int, total: int, every: int) -> bool:
    """Whether held-out metrics are computed after optimizer step `step` (1-based) of `total`:
    every `every` steps and after the last (`every` 0: the last only). E.g. 28 steps, every 7:
    steps 7, 14, 21, 28."""
    return step == total or (every > 0 and step % every == 0)


def train_loop(model, n_examples: int, loss_fn: LossFn, cfg: LoopConfig, out_dir: str | Path,
               tracker=None, dist: Dist = Dist(), evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
               ) -> LoopResult:
    """Train `model` in place; returns the per-step log records, the seconds over all sessions and the step
    this session resumed from. `evaluate(model) -> metrics` (e.g. held-out pairs' `eval_loss`), when given, runs
    without gradients at `eval_due` steps; its metrics join that step's record (and the tracker's `eval/<name>`).

    Writes out_dir/train_log.jsonl (one record per optimizer step: the closure's metrics + step, epoch,
    grad_norm, lr) and out_dir/ckpt.pt when `checkpoint_due` (`save_minutes`, `save_every`), and, with either
    on, at the last whole step when Ctrl-C or a kill stops the loop (not between an optimizer step and its
    logged record: then the last checkpoint stands); a later call with the same out_dir resumes from that
    checkpoint (same order, same RNG, same result; after the last step it only reloads the weights). The
    caller removes ckpt.pt once its own work after training (saving, evaluating) is written.
    """
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    order = epoch_batches(n_examples, cfg.epochs, cfg.batch_size, cfg.seed)
    steps = [order[i : i + cfg.grad_accum] for i in range(0, len(order), cfg.grad_accum)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    start, seconds, log = _resume(out_dir, model, opt, cfg.desc, len(steps), dist)
    model.train()
    if cfg.disable_dropout:  # as trl's disable_dropout; resume must replay exactly
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    net = _wrap(model, dist)
    t0 = last_save = time.time()
    bar = tqdm(total=len(steps), initial=start, desc=cfg.label or cfg.desc, unit="step", leave=False,
               disable=not dist.main or bars_off())
    done, saved, stepping = start, start, False  # steps complete, checkpointed; an optimizer step not yet logged
    rng, at_done = rng_states(), seconds  # the RNG states and the loop's seconds right after step `done`
    try:
        for step in range(start, len(steps)):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, len(steps), cfg.lr, cfg.warmup_ratio, cfg.final_lr_ratio)
            rec = _one_step(net, steps, step, loss_fn, cfg.autocast, next(model.parameters()).device, dist)
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item()
            stepping = True  # from here until its record is logged the weights are ahead of `done`
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec = _step_record(rec, step, len(steps), cfg, gn, opt.param_groups[0]["lr"], log.records)
            if evaluate is not None and eval_due(step + 1, len(steps), cfg.eval_every):
                rec.update(_held_out(model, evaluate, cfg.autocast))
            log.extend([rec])
            done, rng, at_done, stepping = step + 1, rng_states(), seconds + time.time() - t0, False
            bar.update(1)
            debug_delay()
            if tracker is not None:
                tracker.log(tracked(rec), step=step + 1)
            since_save = time.time() - last_save
            if dist.main and checkpoint_due(step + 1, len(steps), cfg.save_every, cfg.save_minutes, since_save):
                save_checkpoint(out_dir, model, opt, done, at_done, rng)
                saved, last_save = done, time.time()
    except KeyboardInterrupt:  # Ctrl-C or a kill: with checkpoints on, the steps done so far are kept
        if dist.main and not stepping and done > saved and (cfg.save_minutes or cfg.save_every):
            save_checkpoint(out_dir, model, opt, done, at_done, rng)
        raise
    bar.close()
    model.eval()
    return LoopResult(log.records, seconds + time.time() - t0, start)


def _held_out(model, evaluate, autocast: bool) -> dict[str, float]:
    """`evaluate(model)`'s metrics, computed in eval mode without gradients (no RNG is drawn: dropout
    is off in DPO, so a resumed run replays the same numbers); the model is left in train mode."""
    model.eval()
    try:
        with torch.no_grad(), quiet_bars(), torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16,
                                             enabled=autocast):
            return evaluate(model)
    finally:
        model.train()


def done_training(out_dir: str | Path) -> None:
    """The builder's last step: training's output is saved, the checkpoint is no longer needed."""
    remove_checkpoint(out_dir)
