"""DPO on the package's one training loop (`alignment.steps.train.train_loop`): the reference log-probs,
computed once per pair (not two forwards per step); held-out pairs scored as training goes (trl's eval
metrics); any loss from `alignment.steps.losses.LOSSES` with chosen and rejected in one forward; trl's metric
names; one policy trained into its directory by full fine-tuning or LoRA adapters on a copy of the start policy, with
the native loop or trl's DPOTrainer (`trl_backend.py`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

import torch

from ..config import DPOConfig
from ..base.distributed import Dist
from ..base.io import write_json
from ..base.machine import auto_forward_rows
from .logprobs import batched_logps, collate, completion_token_stats, model_logps
from .losses import compute_loss
from ..assets.models import add_lora, train_autocast
from .train import COUNTS, LoopConfig, done_training, train_loop
from .trl_backend import train_dpo_trl


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
    rows = dist.map(lambda sub: list(zip(*(t.tolist() for t in both(sub)))), pairs, batch_size)
    return torch.tensor([c for c, _ in rows]), torch.tensor([r for _, r in rows])


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


def dpo_loop_config(cfg: DPOConfig, dev: torch.device, label: str = "") -> LoopConfig:
    """The training loop's settings from the `dpo` section; `label` names the progress bar ("" = "dpo")."""
    return LoopConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                      warmup_ratio=cfg.warmup_ratio, final_lr_ratio=cfg.final_lr_ratio,
                      max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, save_every=cfg.save_every,
                      save_minutes=cfg.save_minutes, disable_dropout=True,
                      autocast=train_autocast(cfg.precision, dev), desc="dpo", eval_every=cfg.eval_every,
                      label=label)


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

    def evaluate(m):
        return held_out_metrics(m, held_out[0], prompt_ids, held_out[1], cfg, pad_id)

    records = train_loop(model, len(pairs), loss_fn, dpo_loop_config(cfg, dev), out_dir, tracker, dist,
                         evaluate=evaluate if held_out and held_out[0] else None).records
    if dist.main:
        write_json(Path(out_dir) / "train_summary.json", records[-1] if records else {})
    return records


@contextlib.contextmanager
def policy_to_train(models, cfg: DPOConfig):
    """The model one policy trains, in a context: a fresh copy of the start policy (full fine-tuning), or
    LoRA adapters (`dpo.lora_r`) on a fresh copy, whose frozen base is the reference while it trains
    (`reference_of`). The run's reference model (`models.ref_model`) is never touched. `models`: the run's
    `RunModels`."""
    if not cfg.lora_r:
        yield models.load_policy(train=True)
        return
    base = models.load_policy()
    torch.manual_seed(cfg.seed)  # the adapters' random init, whatever the process did before
    yield add_lora(base, cfg.lora_r, cfg.lora_alpha)


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
