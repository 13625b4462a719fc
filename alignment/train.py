"""DPO training, native backend: precomputed reference log-probs (one forward per pair, not
two per step), any loss from `alignment.losses.LOSSES`, chosen+rejected in one forward,
checkpoints that resume mid-run. The trl backend lives in `trl_backend.py`.
"""
from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import torch

from .config import DPOConfig
from .io import JsonlAppender, debug_delay, write_json
from .logprobs import batched_logps, collate, model_logps
from .losses import compute_loss


def reference_logps(ref_model, pairs: list[dict], prompt_ids: dict[str, list[int]], pad_id: int,
                    batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,), (P,) reference log-probs of chosen and rejected completions, computed once."""
    prompts = [prompt_ids[p["prompt_id"]] for p in pairs]
    ch = batched_logps(ref_model, prompts, [p["chosen_ids"] for p in pairs], pad_id, batch_size)
    rj = batched_logps(ref_model, prompts, [p["rejected_ids"] for p in pairs], pad_id, batch_size)
    return ch, rj


def epoch_batches(n: int, epochs: int, batch_size: int, seed: int) -> list[list[int]]:
    """Every batch's example indices for the whole run, fixed up front (seeded shuffle per
    epoch), so a resumed run replays exactly the same order."""
    order = []
    for ep in range(epochs):
        idx = list(range(n))
        random.Random(seed * 1000 + ep).shuffle(idx)
        order += [idx[i : i + batch_size] for i in range(0, n, batch_size)]
    return order


def lr_at(step: int, total: int, cfg: DPOConfig) -> float:
    """Linear warmup over warmup_ratio of the steps, then linear decay to 10% of lr."""
    warm = max(1, int(round(cfg.warmup_ratio * total)))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * (1.0 - 0.9 * (step - warm) / max(1, total - warm))


def step_metrics(out, pc: torch.Tensor, pr: torch.Tensor) -> dict[str, float]:
    """The field's metric names (trl's): rewards/*, logps/*."""
    return {"loss": out.losses.mean().item(),
            "rewards/chosen": out.chosen_rewards.mean().item(),
            "rewards/rejected": out.rejected_rewards.mean().item(),
            "rewards/margins": (out.chosen_rewards - out.rejected_rewards).mean().item(),
            "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float().mean().item(),
            "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}


def _save_ckpt(path: Path, model, opt, step: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp / "state.pt")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def train_dpo(model, pairs: list[dict], prompt_ids: dict[str, list[int]], ref: tuple[torch.Tensor, torch.Tensor],
              cfg: DPOConfig, pad_id: int, out_dir: str | Path, tracker=None, save_every: int = 0) -> list[dict]:
    """Train `model` in place on `pairs`; logs to out_dir/train_log.jsonl and the tracker.

    Resumes from out_dir/ckpt if a previous run was interrupted (same config assumed: the
    pipeline checks the config hash before calling this)."""
    out_dir = Path(out_dir)
    dev = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    order = epoch_batches(len(pairs), cfg.epochs, cfg.batch_size, cfg.seed)
    steps = [order[i : i + cfg.grad_accum] for i in range(0, len(order), cfg.grad_accum)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    start = 0
    ckpt = out_dir / "ckpt"
    if (ckpt / "state.pt").exists():
        state = torch.load(ckpt / "state.pt", map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    log = JsonlAppender(out_dir / "train_log.jsonl")
    if any(r["step"] > start for r in log.records):
        log.keep([r for r in log.records if r["step"] <= start])
    model.train()
    for m in model.modules():  # no dropout (as trl's disable_dropout): the reference logps were
        if isinstance(m, torch.nn.Dropout):  # computed without it, and resume must replay exactly
            m.p = 0.0
    for step in range(start, len(steps)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, len(steps), cfg)
        mets = []
        for mb in steps[step]:
            batch = [pairs[i] for i in mb]
            prompts = [prompt_ids[p["prompt_id"]] for p in batch] * 2
            comps = [p["chosen_ids"] for p in batch] + [p["rejected_ids"] for p in batch]
            lp = model_logps(model, collate(prompts, comps, pad_id))  # (2b,)
            pc, pr = lp[: len(batch)], lp[len(batch):]  # (b,), (b,)
            rc, rr = ref[0][mb].to(dev), ref[1][mb].to(dev)
            out = compute_loss(cfg.loss, pc, pr, rc, rr, cfg.beta, cfg.alpha)
            (out.losses.mean() / len(steps[step])).backward()
            mets.append(step_metrics(out, pc.detach(), pr.detach()))
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        rec = {k: sum(m[k] for m in mets) / len(mets) for k in mets[0]}
        rec.update({"step": step + 1, "epoch": (step + 1) / len(steps) * cfg.epochs,
                    "grad_norm": gn, "lr": opt.param_groups[0]["lr"]})
        if not math.isfinite(rec["loss"]):
            raise FloatingPointError(f"DPO loss became {rec['loss']} at step {step + 1}; lower dpo.lr or dpo.beta")
        log.extend([rec])
        debug_delay()
        if tracker is not None:
            tracker.log({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=step + 1)
        if save_every and (step + 1) % save_every == 0 and step + 1 < len(steps):
            _save_ckpt(ckpt, model, opt, step + 1)
    model.eval()
    shutil.rmtree(ckpt, ignore_errors=True)
    write_json(out_dir / "train_summary.json", log.records[-1] if log.records else {})
    return log.records
