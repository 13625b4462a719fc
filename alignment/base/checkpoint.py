"""Resumable training checkpoints: when to write one, what it holds, and where it lives.

A training stage keeps one checkpoint, `<out_dir>/ckpt.pt`: the weights training changes (every
trainable parameter; under LoRA the adapters alone, not the frozen base, which the rerun loads
again from disk), the optimizer state, the step, the wall time so far and the torch RNG states. It
is written to a temp file next to it and renamed over the previous one, so a kill at any moment
leaves either the previous complete checkpoint or the new one, never a half-written file. The batch
order needs nothing stored: it is a function of the seed (`train.epoch_batches`).

When (`checkpoint_due`): by wall time (`save_minutes`: at most one checkpoint per that many minutes,
so a run shorter than the interval writes none) and/or every `save_every` steps; and, with either on,
when Ctrl-C or a kill (SIGTERM) stops the loop, at its last whole step (`train.train_loop`: not while
an optimizer step is being logged, nor after the loop). A SIGKILL loses the work since the last one.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_open

CKPT = "ckpt.pt"


def checkpoint_due(done: int, total: int, save_every: int, save_minutes: float, since_save_s: float) -> bool:
    """Whether to checkpoint after `done` of `total` optimizer steps: every `save_every` steps and
    after the last one (save_every > 0), and whenever `save_minutes` have passed since this
    session's last checkpoint or its start (save_minutes > 0).

        save_every=4, total=10:  after steps 4, 8 and 10
        save_minutes=10:         after the first step that ends >= 10 min after the last checkpoint
    """
    by_steps = save_every > 0 and (done % save_every == 0 or done == total)
    by_time = save_minutes > 0 and since_save_s >= save_minutes * 60
    return by_steps or by_time


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights training changes: every trainable parameter by name (tied weights once).
    Full fine-tuning: all the weights; LoRA: the adapters only (MBs instead of the whole model)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def rng_states() -> dict[str, torch.Tensor]:
    """The torch RNG states a checkpoint holds (the CPU's; the GPU's where there is one)."""
    return {"rng": torch.get_rng_state(), **({"cuda_rng": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})}


def save_checkpoint(out_dir: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                    seconds: float, rng: dict[str, torch.Tensor] | None = None) -> None:
    """Replace out_dir/ckpt.pt, atomically, by the state after optimizer step `step`; `rng`: the RNG
    states right after that step (`rng_states()` then), when the save comes later (default: now)."""
    state = {"model": trainable_state(model), "opt": opt.state_dict(), "step": step, "seconds": seconds,
             **(rng or rng_states())}
    with atomic_open(Path(out_dir) / CKPT, "wb") as f:
        torch.save(state, f)


def saved_progress(out_dir: str | Path) -> tuple[int, float]:
    """(the optimizer step out_dir/ckpt.pt was saved after, the loop's seconds until then); (0, 0.0) without
    one. Read without loading its tensors."""
    path = Path(out_dir) / CKPT
    if not path.exists():
        return 0, 0.0
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)  # lazy: no tensor data read
    return int(state["step"]), float(state["seconds"])


def load_checkpoint(out_dir: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float]:
    """Restore weights, optimizer and RNG from out_dir/ckpt.pt; (step, seconds) it was saved at,
    or (0, 0.0) when there is none."""
    path = Path(out_dir) / CKPT
    if not path.exists():
        return 0, 0.0
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    _, unexpected = model.load_state_dict(state["model"], strict=False)  # frozen weights: from disk
    absent = sorted(set(trainable_state(model)) - set(state["model"]))
    if unexpected or absent:
        raise RuntimeError(f"{path} does not fit this model (unexpected {unexpected[:3]}, missing {absent[:3]}); "
                           "delete it to train from the start")
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"].cpu())
    return state["step"], state["seconds"]


def remove_torn_writes(out_dir: str | Path) -> None:
    """Delete the temp files a kill left mid-write of a checkpoint (`.ckpt.pt.*.tmp`; the last
    complete checkpoint stays)."""
    for p in Path(out_dir).glob(f".{CKPT}.*.tmp"):
        p.unlink(missing_ok=True)


def remove_checkpoint(out_dir: str | Path) -> None:
    """Delete out_dir/ckpt.pt and any torn write of one: the stage's output is saved."""
    (Path(out_dir) / CKPT).unlink(missing_ok=True)
    remove_torn_writes(out_dir)
