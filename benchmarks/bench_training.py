"""DPO training: steps/s of native `train_dpo` (precomputed reference log-probs) vs trl's
DPOTrainer through `alignment.steps.trl_backend.train_dpo_trl(precompute_ref=False)` (a reference
forward every step), on the same sample-shaped pairs, fp32 policy; and native fp32 vs native
bf16 autocast (`dpo.precision=bf16`).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from alignment.config import DPOConfig
from alignment.base.machine import cpu_has_bf16
from alignment.steps.dpo import reference_logps, train_dpo
from alignment.steps.trl_backend import train_dpo_trl
from benchmarks.harness import Report, Sizes, log, speedup


class StepClock:
    """A tracker that only timestamps each logged optimizer step (both backends log once per step)."""

    def __init__(self):
        self.t: list[float] = []

    def log(self, metrics, step=None):
        self.t.append(time.perf_counter())

    def step_time(self) -> float:
        return (self.t[-1] - self.t[0]) / (len(self.t) - 1)  # steps 2..k: the first one is the warm-up


def make_pairs(S: Sizes, ctx) -> tuple[list[dict], dict[str, list[int]]]:
    """Prompts; chosen = the review's next 32 tokens, rejected = the 32 after those (EOS ended on a
    quarter of them), i.e. sample-shaped pairs of real text. Also {prompt_id: prompt ids}."""
    tok = ctx.tok
    prompts = ctx.prompts(S.pairs)
    texts = {r.id: r.text for r in ctx.reviews()}
    eos = tok.eos_token_id
    pairs = []
    for i, p in enumerate(prompts):
        ids = tok(texts[p["review_id"]][:1200], add_special_tokens=False)["input_ids"]
        ch, rj = ids[8:40], ids[40:72] or ids[8:40]
        if i % 4 == 0:
            ch = ch[:-1] + [eos]
        if i % 4 == 1:
            rj = rj[:-1] + [eos]
        pairs.append({"prompt_id": p["id"], "prompt": p["text"], "chosen_ids": ch, "rejected_ids": rj,
                      "chosen": tok.decode(ch, skip_special_tokens=True),
                      "rejected": tok.decode(rj, skip_special_tokens=True)})
    return pairs, {p["id"]: p["ids"] for p in prompts}


def time_native(ctx, run_pairs: list[dict], B: int, pids: dict, dcfg: DPOConfig, out: Path) -> tuple:
    """(seconds per step, reference pass seconds for the timed pairs, whole-call seconds)."""
    pad = ctx.tok.pad_token_id
    model = ctx.lm(torch.float32, train=True)
    model.eval()
    ref_w = reference_logps(model, run_pairs[:B], pids, pad)  # warm-up of the reference pass; (B,), (B,)
    t0 = time.perf_counter()
    ref_t = reference_logps(model, run_pairs[B:], pids, pad)  # (P,), (P,)
    t_ref = time.perf_counter() - t0
    ref = (torch.cat([ref_w[0], ref_t[0]]), torch.cat([ref_w[1], ref_t[1]]))  # (B+P,), (B+P,) as run_pairs
    clock = StepClock()
    t0 = time.perf_counter()
    train_dpo(model, run_pairs, pids, ref, dcfg, pad, out, tracker=clock)
    return clock.step_time(), t_ref, time.perf_counter() - t0


def time_trl(ctx, run_pairs: list[dict], pids: dict, dcfg: DPOConfig, out: Path) -> tuple[StepClock, float]:
    """trl's DPOTrainer via our backend, reference model = a deep copy, forward every step."""
    model = ctx.lm(torch.float32, train=True)
    clock = StepClock()
    t0 = time.perf_counter()
    train_dpo_trl(model, None, ctx.tok, run_pairs, pids, dcfg, out, tracker=clock, precompute_ref=False)
    return clock, time.perf_counter() - t0


def run(S: Sizes, ctx, rep: Report) -> None:
    pairs, pids = make_pairs(S, ctx)
    B = S.dpo_batch
    run_pairs = pairs[:B] + pairs  # one warm-up batch + the timed pairs, both backends see the same list
    steps = len(pairs) // B
    dcfg = DPOConfig(batch_size=B, epochs=1)
    log(f"training: {len(pairs)} pairs (+{B} warm-up), batch {B}, {steps} timed steps per backend")
    with tempfile.TemporaryDirectory() as tmp:
        native, t_ref, wall_n = time_native(ctx, run_pairs, B, pids, dcfg, Path(tmp) / "native")
        log(f"  native: {native:.2f} s/step, reference pass {t_ref:.2f}s for {len(pairs)} pairs")
        bf16, _, _ = time_native(ctx, run_pairs, B, pids, dataclasses.replace(dcfg, precision="bf16"),
                                 Path(tmp) / "native-bf16")
        log(f"  native bf16 autocast: {bf16:.2f} s/step")
        clock_t, wall_t = time_trl(ctx, run_pairs, pids, dcfg, Path(tmp) / "trl")
    where = f"on {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else f"native bf16 CPU: {cpu_has_bf16()}"
    rep.add(f"DPO step (batch {B} pairs), native: fp32 vs bf16 autocast (dpo.precision=bf16; {where})", f"{1 / native:.3f} steps/s", f"{1 / bf16:.3f} steps/s", speedup(native, bf16))
    step = f"DPO training step (batch {B} pairs): trl DPOTrainer, reference forward every step, vs native train_dpo " \
           f"(precomputed reference)"
    if len(clock_t.t) < 2:
        rep.add(step, f"n/a ({len(clock_t.t)} steps logged by trl)", f"{1 / native:.3f} steps/s", None)
        return
    trl_s = clock_t.step_time()
    log(f"  trl: {trl_s:.2f} s/step")
    rep.add(step, f"{1 / trl_s:.3f} steps/s", f"{1 / native:.3f} steps/s", speedup(trl_s, native))
    rep.add(f"DPO training step (batch {B} pairs): trl DPOTrainer defaults (fp32) vs native with bf16 autocast "
            f"(dpo.precision=auto on a native-bf16 CPU or a GPU)", f"{1 / trl_s:.3f} steps/s", f"{1 / bf16:.3f} steps/s",
            speedup(trl_s, bf16))
    native_epoch = steps * native + t_ref
    rep.add(f"DPO epoch over {len(pairs)} pairs incl. reference log-probs: trl vs native + reference_logps",
            f"{1 / trl_s:.3f} steps/s", f"{steps / native_epoch:.3f} steps/s", speedup(steps * trl_s, native_epoch))
    rep.note(f"training: fp32 policy ({ctx.describe()}), {len(pairs)} sample-shaped pairs (prompts + 32-token "
             f"review-text completions), batch {B}, 1 warm-up step then {steps} timed steps in the same call "
             f"(timestamps of each step's log); native reference pass (reference_logps, no grad, batch 16 on a CPU, automatic on a GPU) took "
             f"{t_ref:.2f}s for {len(pairs)} pairs (once per run; amortised over epochs in real runs). trl path: "
             f"alignment.steps.trl_backend.train_dpo_trl(precompute_ref=False). Whole-call wall time incl. setup: "
             f"native {wall_n:.1f}s, trl {wall_t:.1f}s (trl also deep-copies the policy as its reference model).")
