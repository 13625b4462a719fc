"""The one training loop, and DPO on top of it.

`train_loop` owns everything a stage's training shares: the seeded batch order, the learning-rate
schedule, gradient accumulation and clipping, the finite-loss check, `train_log.jsonl`, tracking,
and checkpoints (`alignment.base.checkpoint`: by default at most one per 10 minutes, the latest kept)
that resume mid-run with the same data order and RNG state. A stage passes a
*loss closure* `loss_fn(model, indices) -> (loss, metrics)` over a micro-batch of example indices
(the loop hands in the model to call: under several processes, its DDP wrapper): DPO
(`train_dpo`, below) and SFT (`alignment.steps.sft`) are each one closure.

Under `accelerate launch` (`alignment.base.distributed`, `dist.world` > 1) DPO's loop is DDP through
accelerate (SFT passes no `dist`: one process trains it): each micro-batch of the one-process run is split across ranks and each rank's loss
weighted by its share, so the gradient DDP averages equals the one-process gradient of that
micro-batch; logged metrics are the same weighted means; rank 0 alone writes log and checkpoints.

DPO here uses precomputed reference log-probs (one reference forward per pair, not two per step),
any loss from `alignment.steps.losses.LOSSES`, and chosen+rejected in one forward. The trl backend lives
in `trl_backend.py`.
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

from ..base.checkpoint import CKPT, checkpoint_due, load_checkpoint, remove_checkpoint, remove_torn_writes, save_checkpoint
from ..config import DPOConfig
from ..base.distributed import Dist, chunks, map_batches
from ..base.io import JsonlAppender, debug_delay, read_jsonl, write_json
from ..base.machine import auto_forward_rows
from .logprobs import batched_logps, collate, completion_token_stats, model_logps
from .losses import compute_loss
from ..assets.models import add_lora, train_autocast
from ..base.optional import accelerate
from ..base.timing import bars_off
from ..base.tracking import tracked
from .trl_backend import train_dpo_trl

COUNTS = ("num_tokens",)  # closure metrics summed over a step's micro-batches and ranks, then over steps (trl's)
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
    desc: str                   # the stage: progress bar label, and the config section errors name
    eval_every: int = 0         # call the loop's `evaluate` every k optimizer steps and after the last (0: after the last only)


def reference_logps(ref_model, pairs: list[dict], prompt_ids: dict[str, list[int]], pad_id: int,
                    batch_size: int = 0, dist: Dist = Dist()) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,), (P,) reference log-probs of chosen and rejected completions, computed once (under
    several processes split by batches and gathered: the same values), `batch_size` pairs per forward
    (0: from free GPU memory, `machine.auto_forward_rows`; 16 on a CPU)."""
    longest = max((len(prompt_ids[p["prompt_id"]]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs),
                  default=1)
    batch_size = dist.agree(batch_size or auto_forward_rows(ref_model, longest, "reference log-probs batch", vocab=True))
    def both(sub: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompt_ids[p["prompt_id"]] for p in sub]
        return (batched_logps(ref_model, prompts, [p["chosen_ids"] for p in sub], pad_id, batch_size),
                batched_logps(ref_model, prompts, [p["rejected_ids"] for p in sub], pad_id, batch_size))

    if dist.world == 1:
        return both(pairs)
    rows = map_batches(lambda sub: list(zip(*(t.tolist() for t in both(sub)))), pairs, chunks(len(pairs), batch_size),
                       dist)
    return torch.tensor([c for c, _ in rows]), torch.tensor([r for _, r in rows])


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
        with contextlib.nullcontext() if sync else net.no_sync():
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
    """Train `model` in place; returns the per-step log records, the seconds over all sessions
    and the step this session resumed from. `evaluate(model) -> metrics` (e.g. held-out pairs'
    `eval_loss`, `eval_rewards/accuracies`), when given, runs without gradients at `eval_due` steps;
    its metrics join that step's record (and go to the tracker as `eval/<name>`, trl's charts).

    Writes out_dir/train_log.jsonl (one record per optimizer step: the closure's metrics + step,
    epoch, grad_norm, lr) and out_dir/ckpt.pt when `checkpoint_due` (`save_minutes`, `save_every`);
    a later call with the same out_dir resumes from that checkpoint (same order, same RNG, same
    result; after the last step it only reloads the weights). The caller removes ckpt.pt once its
    own work after training (saving, evaluating) is written, so a kill in between never retrains.
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
    bar = tqdm(total=len(steps), initial=start, desc=cfg.desc, unit="step", leave=False,
               disable=not dist.main or bars_off())
    for step in range(start, len(steps)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, len(steps), cfg.lr, cfg.warmup_ratio, cfg.final_lr_ratio)
        rec = _one_step(net, steps, step, loss_fn, cfg.autocast, next(model.parameters()).device, dist)
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        rec.update({"step": step + 1, "epoch": (step + 1) / len(steps) * cfg.epochs,
                    "grad_norm": gn, "lr": opt.param_groups[0]["lr"]})
        for k in COUNTS:  # a running total over the steps so far (across resumes: the log holds them)
            if k in rec:
                rec[k] = int(rec[k] + (log.records[-1].get(k, 0) if log.records else 0))
        if not math.isfinite(rec["loss"]):
            raise FloatingPointError(f"{cfg.desc} loss became {rec['loss']} at step {step + 1}; lower {cfg.desc}.lr"
                                     + (" or dpo.beta" if cfg.desc == "dpo" else ""))
        if evaluate is not None and eval_due(step + 1, len(steps), cfg.eval_every):
            rec.update(_held_out(model, evaluate, cfg.autocast))
        log.extend([rec])
        bar.update(1)
        debug_delay()
        if tracker is not None:
            tracker.log(tracked(rec), step=step + 1)
        since_save = time.time() - last_save
        if dist.main and checkpoint_due(step + 1, len(steps), cfg.save_every, cfg.save_minutes, since_save):
            save_checkpoint(out_dir, model, opt, step + 1, seconds + time.time() - t0)
            last_save = time.time()
    bar.close()
    model.eval()
    return LoopResult(log.records, seconds + time.time() - t0, start)


def _held_out(model, evaluate, autocast: bool) -> dict[str, float]:
    """`evaluate(model)`'s metrics, computed in eval mode without gradients (no RNG is drawn: dropout
    is off in DPO, so a resumed run replays the same numbers); the model is left in train mode."""
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16,
                                             enabled=autocast):
            return evaluate(model)
    finally:
        model.train()


def step_metrics(out, pc: torch.Tensor, pr: torch.Tensor, tokens: dict | None = None) -> dict[str, float]:
    """trl's DPOTrainer metrics under its names: rewards/*, logps/*; with `tokens` (the batch's
    `completion_token_stats`, chosen rows first) logits/chosen, logits/rejected, entropy,
    mean_token_accuracy and the batch's num_tokens."""
    m = {"loss": out.losses.mean().item(),
         "rewards/chosen": out.chosen_rewards.mean().item(),
         "rewards/rejected": out.rejected_rewards.mean().item(),
         "rewards/margins": (out.chosen_rewards - out.rejected_rewards).mean().item(),
         "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float().mean().item(),
         "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}
    if tokens is not None:
        chosen = tokens["row"] < len(pc)
        mean = lambda x: x.float().mean().item() if len(x) else 0.0  # noqa: E731  (trl: 0.0 without tokens)
        m.update({"logits/chosen": mean(tokens["mean_logit"][chosen]),
                  "logits/rejected": mean(tokens["mean_logit"][~chosen]), "entropy": mean(tokens["entropy"]), "mean_token_accuracy": mean(tokens["top1"][chosen]),
                  "num_tokens": int(tokens["num_tokens"])})
    return m


def dpo_loop_config(cfg: DPOConfig, dev: torch.device) -> LoopConfig:
    return LoopConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                      warmup_ratio=cfg.warmup_ratio, final_lr_ratio=cfg.final_lr_ratio,
                      max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, save_every=cfg.save_every,
                      save_minutes=cfg.save_minutes, disable_dropout=True,
                      autocast=train_autocast(cfg.precision, dev), desc="dpo", eval_every=cfg.eval_every)


class PairData(NamedTuple):
    """A draw's preference pairs split for training: the pairs trained on and the held-out ones,
    each with the reference's (chosen, rejected) log-probs, (P,) and (H,)."""
    pairs: list[dict]
    ref: tuple[torch.Tensor, torch.Tensor]
    held_out: list[dict]
    held_out_ref: tuple[torch.Tensor, torch.Tensor]


def held_out_prompts(pairs: list[dict], share: float) -> set[str]:
    """The prompt ids whose pairs are held out: the last floor(share x #prompts) in pair order."""
    order = list(dict.fromkeys(p["prompt_id"] for p in pairs))
    n = int(share * len(order))
    return set(order[len(order) - n:]) if n else set()


def held_out_split(pairs: list[dict], ref: tuple[torch.Tensor, torch.Tensor], share: float) -> PairData:
    """Hold out the pairs of the last floor(share x #prompts) prompts, in the order the pairs list
    them (a draw's prompts are a random sample, so these are too); by prompt, so a prompt's pairs
    are all trained on or all held out. E.g. prompts a, a, b, c (one pair each but a's two) and
    share 0.34: floor(1.02) = 1 prompt, c, is held out; a, a, b train."""
    held = held_out_prompts(pairs, share)
    tr = [i for i, p in enumerate(pairs) if p["prompt_id"] not in held]
    ho = [i for i, p in enumerate(pairs) if p["prompt_id"] in held]
    if not tr:
        raise ValueError(f"pairs.held_out={share} leaves no pair to train on; lower it or add train prompts")
    return PairData([pairs[i] for i in tr], (ref[0][tr], ref[1][tr]), [pairs[i] for i in ho], (ref[0][ho], ref[1][ho]))


def pair_loss(net, batch: list[dict], prompt_ids: dict[str, list[int]], ref: tuple[torch.Tensor, torch.Tensor],
              cfg: DPOConfig, pad_id: int):
    """`cfg.loss` over `batch` (chosen and rejected in one forward; `ref`: their reference
    log-probs, (b,) each): (the loss output, policy chosen log-probs (b,), rejected (b,), the
    batch's `completion_token_stats`, chosen rows first)."""
    dev = next(net.parameters()).device
    prompts = [prompt_ids[p["prompt_id"]] for p in batch] * 2
    comps = [p["chosen_ids"] for p in batch] + [p["rejected_ids"] for p in batch]
    collated = collate(prompts, comps, pad_id)
    lp, logits = model_logps(net, collated, return_logits=True)  # (2b,), (2b, T, V)
    pc, pr = lp[: len(batch)], lp[len(batch):]  # (b,), (b,)
    margin = pair_margins(batch)  # (b,) or None (own pairs carry no rewards)
    out = compute_loss(cfg.loss, pc, pr, ref[0].to(dev), ref[1].to(dev), cfg.beta, cfg.alpha, margin=margin)
    return out, pc, pr, completion_token_stats(logits.detach(), collated)


def pair_margins(batch: list[dict]) -> torch.Tensor | None:
    """(b,) the pairs' reward margins r_chosen - r_rejected, or None when a pair has none (`pairs.source`)."""
    if any(p.get("margin") is None for p in batch):
        return None
    return torch.tensor([float(p["margin"]) for p in batch], dtype=torch.float32)


def held_out_metrics(model, pairs: list[dict], prompt_ids: dict[str, list[int]], ref: tuple[torch.Tensor, torch.Tensor],
                     cfg: DPOConfig, pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """trl's eval metrics over held-out `pairs`: eval_loss, eval_rewards/{chosen,rejected,margins,accuracies},
    eval_logps/{chosen,rejected}, eval_logits/{chosen,rejected}, eval_entropy, eval_mean_token_accuracy,
    each the mean over the pairs' batches."""
    sums: dict[str, float] = {}
    for i in range(0, len(pairs), batch_size):
        idx = list(range(i, min(i + batch_size, len(pairs))))
        out, pc, pr, tokens = pair_loss(model, [pairs[j] for j in idx], prompt_ids, (ref[0][idx], ref[1][idx]), cfg,
                                        pad_id)
        for k, v in step_metrics(out, pc, pr, tokens).items():
            if k not in COUNTS:  # trained tokens: a training count only
                sums[k] = sums.get(k, 0.0) + v * len(idx)
    return {f"eval_{k}": v / len(pairs) for k, v in sums.items()}


def train_dpo(model, pairs: list[dict], prompt_ids: dict[str, list[int]], ref: tuple[torch.Tensor, torch.Tensor],
              cfg: DPOConfig, pad_id: int, out_dir: str | Path, tracker=None, dist: Dist = Dist(),
              held_out: tuple[list[dict], tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[dict]:
    """Train `model` in place on `pairs` with loss `cfg.loss`; logs to out_dir/train_log.jsonl and
    the tracker, writes out_dir/train_summary.json. `held_out`: (pairs, their reference log-probs),
    scored every `cfg.eval_every` steps and after the last (`held_out_metrics`). Resumes from
    out_dir/ckpt.pt (same config assumed: the pipeline keys out_dir by the config hash)."""
    dev = next(model.parameters()).device

    def loss_fn(net, mb: list[int]):
        out, pc, pr, tokens = pair_loss(net, [pairs[i] for i in mb], prompt_ids, (ref[0][mb], ref[1][mb]), cfg, pad_id)
        return out.losses.mean(), step_metrics(out, pc.detach(), pr.detach(), tokens)

    evaluate = None
    if held_out and held_out[0]:
        def evaluate(m):
            return held_out_metrics(m, held_out[0], prompt_ids, held_out[1], cfg, pad_id)

    records = train_loop(model, len(pairs), loss_fn, dpo_loop_config(cfg, dev), out_dir, tracker, dist,
                         evaluate=evaluate).records
    if dist.main:
        write_json(Path(out_dir) / "train_summary.json", records[-1] if records else {})
    return records


def done_training(out_dir: str | Path) -> None:
    """The builder's last step: training's output is saved, the checkpoint is no longer needed."""
    remove_checkpoint(out_dir)


@contextlib.contextmanager
def policy_to_train(models, cfg: DPOConfig):
    """The model one policy trains, in a context: a fresh copy of the start policy (full fine-tuning),
    or LoRA adapters on the reference itself (`dpo.lora_r`: its frozen base *is* the reference, no
    copy). `models`: the run's `RunModels`; on exit the reference is handed back without adapters,
    in eval mode."""
    if cfg.lora_r:
        torch.manual_seed(cfg.seed)  # the adapters' random init, whatever the process did before
        model = add_lora(models.ref_model, cfg.lora_r, cfg.lora_alpha)
    else:
        model = models.load_policy(train=True)
    try:
        yield model
    finally:
        if cfg.lora_r:  # hand the reference back without its adapters, in eval mode
            models.ref_model = model.unload()
            models.ref_model.requires_grad_(False)
            models.ref_model.eval()


@contextlib.contextmanager
def reference_of(model, models, cfg: DPOConfig):
    """A context whose value is the reference while `model` trains: the LoRA model itself with its
    adapters off (`dpo.lora_r`; peft's `disable_adapter` yields nothing), else the run's reference model."""
    if cfg.lora_r:
        with model.disable_adapter():
            yield model
    else:
        yield models.ref_model


def save_policy(model, tokenizer, out: Path, dist: Dist = Dist()) -> None:
    """out/model (the adapter only, for LoRA) and its tokenizer; then the checkpoint goes."""
    if dist.main:
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        done_training(out)


def train_policy(models, data: PairData, prompt_ids: dict[str, list[int]], cfg: DPOConfig, out: Path, tracker,
                 dist: Dist = Dist()) -> None:
    """Train one policy on `data.pairs` into `out` (model/, train_log.jsonl, train_summary.json),
    scoring `data.held_out` as it goes (`policy_to_train`: full fine-tuning or LoRA); the native loop
    or trl's DPOTrainer (`dpo.backend`). `models`: the run's `RunModels`. Finishes `tracker`."""
    tok = models.tokenizer
    try:
        with policy_to_train(models, cfg) as model:
            if cfg.backend == "trl":
                train_dpo_trl(model, models.ref_model, tok, data.pairs, prompt_ids, cfg, out, tracker,
                              held_out=data.held_out)
            else:
                train_dpo(model, data.pairs, prompt_ids, data.ref, cfg, tok.pad_token_id, out, tracker, dist=dist,
                          held_out=(data.held_out, data.held_out_ref))
            save_policy(model, tok, out, dist)
        tracker.log_model(Path(out) / "model")
    finally:
        tracker.finish()
