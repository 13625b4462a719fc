"""LoRA vs full fine-tuning for DPO: step time, peak RSS of the training process and saved size,
full `train_dpo` vs `train_dpo` on `add_lora(model, r=16, alpha=32)` (adapters on every linear layer
of attention and MLP), on the same sample-shaped pairs as the training section, fp32 policy.

Each variant runs in a fresh subprocess (`python -m benchmarks.run --_lora-worker SPEC`, see
`worker`): load, reference log-probs, reset VmHWM, then one warm-up step and the timed steps,
then `save_pretrained` into a tmp dir (the whole model for full, the adapter only for LoRA).
"""
from __future__ import annotations

import gc
import tempfile
from pathlib import Path

from benchmarks.bench_scale import _proc_status, _reset_peak_rss, _rss_poller
from benchmarks.harness import run_worker, Report, Sizes, log, speedup

LORA_R, LORA_ALPHA = 16, 32.0
VARIANTS = {"full": 0, "lora": LORA_R}  # name -> lora_r (0 = full fine-tuning)


def _peak_during(fn):
    """(fn(), peak RSS in bytes while it ran, exact?): VmHWM after a reset, else a 5 ms psutil poll."""
    exact = _reset_peak_rss() and _proc_status("VmHWM") is not None
    th, done, peak = (None, None, [None]) if exact else _rss_poller(_proc_status("VmRSS"))
    if th:
        th.start()
    try:
        res = fn()
    finally:
        if th:
            done.set()
            th.join()
    return res, (_proc_status("VmHWM") if exact else peak[0]), exact


def _dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def worker(spec: dict) -> dict:
    """One variant in this (fresh) process: step time, peak RSS of training, bytes saved."""
    import torch

    from alignment.config import DPOConfig
    from alignment.assets.models import add_lora
    from alignment.steps.dpo import reference_logps, train_dpo
    from benchmarks.bench_training import StepClock, make_pairs
    from benchmarks.context import Ctx

    torch.set_num_threads(spec["threads"])
    ctx, B, r = Ctx(**spec["ctx"]), spec["batch"], spec["lora_r"]
    pairs, pids = make_pairs(Sizes(pairs=spec["pairs"], dpo_batch=B), ctx)
    run_pairs = pairs[:B] + pairs  # one warm-up batch + the timed pairs, as in the training section
    pad = ctx.tok.pad_token_id
    model = ctx.lm(torch.float32, train=not r)
    model.eval()
    ref = reference_logps(model, run_pairs, pids, pad)  # (B+P,), (B+P,); identical for both variants
    if r:
        model = add_lora(model, r, spec["lora_alpha"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    dcfg = DPOConfig(batch_size=B, epochs=1, lora_r=r, lora_alpha=spec["lora_alpha"])
    clock = StepClock()
    with tempfile.TemporaryDirectory() as d:
        gc.collect()
        load_peak, before = _proc_status("VmHWM"), _proc_status("VmRSS")
        _, peak, exact = _peak_during(lambda: train_dpo(model, run_pairs, pids, ref, dcfg, pad, Path(d) / "train",
                                                         tracker=clock))
        model.save_pretrained(Path(d) / "model")  # the adapter only, for LoRA
        saved = _dir_bytes(Path(d) / "model")
    return {"step_s": clock.step_time(), "steps": len(clock.t), "peak": peak, "exact": exact, "before": before,
            "load_peak": load_peak, "saved": saved, "trainable": trainable, "total": total}


def measure(spec: dict) -> dict:
    """One variant in a fresh subprocess (`--_lora-worker`)."""
    return run_worker("--_lora-worker", spec)


def mb(b: int | None) -> str:
    """MiB with enough digits for the tiny quick models' few-KiB adapters."""
    if b is None:
        return "n/a"
    v = b / 2**20
    return f"{v:.0f} MiB" if v >= 100 else f"{v:.1f} MiB" if v >= 1 else f"{v:.3f} MiB"


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def _add(r: dict) -> int | None:
    return r["peak"] - r["before"] if r["peak"] is not None and r["before"] is not None else None


def run(S: Sizes, ctx, rep: Report) -> None:
    import torch

    B = S.dpo_batch
    res = {}
    for name, r in VARIANTS.items():
        log(f"lora: {name} fine-tuning (subprocess), {S.pairs} pairs (+{B} warm-up), batch {B}")
        res[name] = measure({"lora_r": r, "lora_alpha": LORA_ALPHA, "pairs": S.pairs, "batch": B,
                             "threads": torch.get_num_threads(), "ctx": ctx.spec()})
        log(f"  {name}: {res[name]['step_s']:.2f} s/step, peak {mb(res[name]['peak'])}, "
            f"saved {mb(res[name]['saved'])}")
    f, lo = res["full"], res["lora"]
    tag = f"full vs LoRA r={LORA_R}"
    rep.add(f"DPO step time (batch {B} pairs, fp32): {tag} (alpha {LORA_ALPHA:g}, all linear layers)",
            f"{f['step_s']:.3g} s/step", f"{lo['step_s']:.3g} s/step", speedup(f["step_s"], lo["step_s"]))
    rep.add(f"peak RSS of the DPO training process: {tag}", mb(f["peak"]), mb(lo["peak"]),
            _ratio(f["peak"], lo["peak"]))
    rep.add(f"saved size (save_pretrained: whole policy vs adapter only): {tag}", mb(f["saved"]), mb(lo["saved"]),
            _ratio(f["saved"], lo["saved"]))
    how = ("VmHWM, reset (/proc/self/clear_refs) after model load and the reference pass, read after train_dpo: "
           "exact" if f["exact"] and lo["exact"] else "max of a 5 ms psutil RSS poll during train_dpo")
    rep.note(f"lora: fp32 policy ({ctx.describe()}), the training section's {S.pairs} sample-shaped pairs, batch "
             f"{B}, 1 warm-up step then {f['steps'] - 1} timed steps; LoRA = alignment.assets.models.add_lora(r={LORA_R}, "
             f"alpha={LORA_ALPHA:g}) on every attention and MLP linear layer: {lo['trainable']:,} trainable of "
             f"{lo['total']:,} parameters (full: {f['trainable']:,}). One fresh subprocess per variant, run one "
             f"after the other (full first). ratio for memory and size = full / LoRA (how many times smaller). "
             f"Peak RSS = {how}; it includes the resident weights and the process itself (RSS before training: full "
             f"{mb(f['before'])}, LoRA {mb(lo['before'])}; peak incl. model load and reference pass: full "
             f"{mb(f['load_peak'])}, LoRA {mb(lo['load_peak'])}; so training added {mb(_add(f))} vs {mb(_add(lo))}: "
             f"full keeps AdamW's two fp32 moments of every weight, LoRA only of the adapters but stores extra "
             f"activations for backward, per adapted layer). In the Pipeline, full fine-tuning also keeps the "
             f"reference model loaded beside the policy, and so does LoRA (its adapters sit on a copy of the start "
             f"policy), which this per-variant measurement does not include. Saved size = every file save_pretrained wrote.")
