"""DPO training, trl backend: the same pairs trained with `trl.DPOTrainer` (trl 1.16).

`train_dpo_trl(...)` is a drop-in for `alignment.steps.dpo.train_dpo`: same pairs, same metric names
(trl's own: loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies,
logps/chosen, logps/rejected, plus trl extras such as entropy and logits/*), same
`out_dir/train_log.jsonl` and `train_summary.json`, same `tracker.log({"train/<k>": v}, step)`.

What trl 1.16 does with the data, and why we bypass its tokenization (trl/trainer/dpo_trainer.py):

* `DPOTrainer._prepare_dataset` always starts from *text*: it appends ``tokenizer.eos_token`` to every
  `chosen`/`rejected` string that does not already end with it, then re-tokenizes ``prompt`` and
  ``prompt + completion`` and splits at their common prefix. There is no public way to hand it
  pre-tokenized ``prompt_ids/chosen_ids/rejected_ids`` (the maintainers declined it, trl#2368).
  For our sampled completions that would (a) add an EOS to completions that were cut at
  ``max_new_tokens`` and never generated one, and (b) re-tokenize decoded text, which often gives
  different ids than the ones sampled (BPE merges across the prompt/completion boundary,
  non-canonical sampled tokenizations), so the trl run would train on other sequences than native.
* Its collator (`DataCollatorForPreference`) only concatenates ``prompt_ids + chosen_ids`` (no EOS
  added, no BOS added), right-pads with the pad id and builds a ``completion_mask`` from the lengths,
  never from token values; exactly our `alignment.steps.logprobs.collate`.

So by default (`tokenized=True`) we pass our own ids and skip `_prepare_dataset` for a dataset that
already has the three id columns (a 4-line override of a private hook; trl calls it from `__init__`
only). Our completion ids end with EOS exactly when the sample finished, and trl keeps them as they
are: no second EOS, no EOS on a truncated sample. `tokenized=False` uses trl's own text path
(`prompt`, `chosen`, `rejected` strings) for comparison; there trl appends one EOS to *every*
completion (our strings are decoded with the EOS stripped, so no completion gets two).

Reference model: with `ref_model=None`, trl 1.16 either computes the precomputed reference
log-probs with the policy itself before training (`precompute_ref_log_probs=True`, correct and no
copy needed) or, without precompute, *reloads* a model from ``config._name_or_path``, which for an
in-memory policy (fine-tuned, or a random test model) is the wrong model or fails. We therefore
pass an explicit `copy.deepcopy(model)` whenever trl would need one.

Known differences from the native loop (documented, not bugs):
  * learning-rate schedule: HF linear warmup from 0 (the first step has lr 0 when warmup > 0) then
    linear decay to 0; native warms up from lr/warm and decays to `dpo.final_lr_ratio` of lr
    (trl ignores that field).
  * checkpoints: none (`save_strategy="no"`), so a killed trl run trains again from the start;
    `dpo.save_minutes` / `dpo.save_every` are the native loop's.
  * loss "ipo": trl divides each log-ratio by its completion length; ours uses summed log-probs.
  * trl's f-divergence scores are unclamped; ours clamp exp() exponents at 80 (same values below).
  * dropout: both disable it (trl in both models, restored on return here; native in the policy).
  * LoRA (`dpo.lora_r`) is native-only (a config rule says so).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from pathlib import Path

import torch

from ..config import DPOConfig
from ..base.io import write_json, write_jsonl
from .losses import validate_alpha
from ..base.optional import datasets, trainer_callbacks, trl
from ..base.tracking import tracked

# trl 1.16 DPOConfig.loss_type values (dpo_config.py / the dispatch in DPOTrainer._compute_loss).
TRL_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
# Our f-DPO names -> trl's f_divergence_type (used with loss_type="sigmoid").
TRL_F_DIVERGENCES: dict[str, str] = {
    "reverse_kl": "reverse_kl", "forward_kl": "forward_kl", "js": "js_divergence", "alpha": "alpha_divergence",
}
# Per-step keys of trl's logs that we rename to the native backend's names.
_RENAME = {"learning_rate": "lr"}


def trl_loss_args(cfg: DPOConfig) -> dict:
    """trl DPOConfig kwargs for `cfg.loss`: loss_type, f_divergence_type, f_alpha_divergence_coef.

    trl's alpha-divergence uses f′(t) = (t^(a−1) − 1)/(a−1) (dpo_trainer.py, `alpha_divergence` branch);
    with a = 1 − α that is our (1 − u^(−α))/α, so ``f_alpha_divergence_coef = 1 − cfg.alpha``."""
    if cfg.loss in TRL_F_DIVERGENCES:
        out = {"loss_type": ["sigmoid"], "f_divergence_type": TRL_F_DIVERGENCES[cfg.loss]}
        if cfg.loss == "alpha":
            out["f_alpha_divergence_coef"] = 1.0 - validate_alpha(cfg.alpha)
        return out
    if cfg.loss in TRL_LOSS_TYPES:
        if cfg.loss == "ipo":
            warnings.warn("dpo.loss=ipo with dpo.backend=trl: trl length-normalises the log-ratios "
                          "(per-token average); the native ipo uses summed log-probs", stacklevel=3)
        return {"loss_type": [cfg.loss], "f_divergence_type": "reverse_kl"}
    raise ValueError(f"dpo.loss={cfg.loss!r} is not available in trl (its loss types: {list(TRL_LOSS_TYPES)}; "
                     f"its f-divergences: {sorted(TRL_F_DIVERGENCES)}); use dpo.backend=native for it")


def _trainer_class():
    DPOTrainer = trl().DPOTrainer

    class _PreTokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer that keeps a dataset's own prompt_ids/chosen_ids/rejected_ids (no re-tokenization,
        no EOS appended); any other dataset goes through trl's text preprocessing unchanged."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names or ()):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    if not callable(getattr(DPOTrainer, "_prepare_dataset", None)):
        raise RuntimeError("this trl version has no DPOTrainer._prepare_dataset hook; call train_dpo_trl with "
                           "tokenized=False (text pairs) or use dpo.backend=native")
    return _PreTokenizedDPOTrainer


def _make_callback(tracker, records: list[dict]):
    class _Forward(trainer_callbacks().TrainerCallback):
        """Collect trl's per-step logs (and forward them to our tracker as train/<key>)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "eval_loss" in logs:  # held-out evaluation: joins the step's record
                _merge_eval(records, logs, tracker)
                return
            if not logs or "loss" not in logs or "train_runtime" in logs:  # end-of-train summary: not a step
                return
            rec = {_RENAME.get(k, k): (float(v) if isinstance(v, (int, float)) else v) for k, v in logs.items()}
            rec["step"] = int(state.global_step)
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"DPO loss became {rec['loss']} at step {rec['step']}; "
                                         "lower dpo.lr or dpo.beta")
            records.append(rec)
            if tracker is not None:
                tracker.log(tracked(rec), step=rec["step"])

    return _Forward()


def _merge_eval(records: list[dict], logs: dict, tracker) -> None:
    """trl's eval log (eval_loss, eval_rewards/..., eval_runtime ...) into the last step's record, as
    the native loop records held-out metrics; to the tracker as eval/<metric>."""
    ev = {_RENAME.get(k, k): float(v) for k, v in logs.items()
          if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))}
    if records:
        records[-1].update(ev)
    if tracker is not None and records:
        tracker.log(tracked(ev), step=records[-1]["step"])


def _dataset(pairs: list[dict], prompt_ids: dict[str, list[int]], tokenized: bool):
    Dataset = datasets().Dataset
    if tokenized:
        return Dataset.from_dict({
            "prompt_ids": [list(map(int, prompt_ids[p["prompt_id"]])) for p in pairs],
            "chosen_ids": [list(map(int, p["chosen_ids"])) for p in pairs],
            "rejected_ids": [list(map(int, p["rejected_ids"])) for p in pairs],
        })
    return Dataset.from_dict({k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")})


def _snapshot(models) -> list:
    """What trl mutates on a model instance: `forward` (fused LM head patch) and Dropout p."""
    out = []
    for m in models:
        if m is None:
            continue
        drop = [(mod, mod.p) for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
        out.append((m, "forward" in m.__dict__, m.__dict__.get("forward"), drop))
    return out


def _restore(snap: list) -> None:
    for m, had_fwd, fwd, drop in snap:
        if had_fwd:
            m.forward = fwd
        else:
            m.__dict__.pop("forward", None)  # back to the class's forward
        for mod, p in drop:
            mod.p = p


def train_dpo_trl(model, ref_model_or_None, tokenizer, pairs: list[dict], prompt_ids: dict[str, list[int]],
                  cfg: DPOConfig, out_dir, tracker=None, precompute_ref: bool = True,
                  tokenized: bool = True, held_out: list[dict] | None = None) -> list[dict]:
    """Train `model` in place with trl's DPOTrainer on `pairs`; returns the per-step log records.

    `ref_model_or_None`: the reference model (kept frozen); None = the starting policy (trl uses the
    policy itself for precomputed reference log-probs, else we pass a deep copy). `tokenized`: feed
    our token ids (default, exact same sequences as the native backend) or trl's text path.
    `held_out`: pairs trl evaluates every `cfg.eval_every` steps (its eval_dataset; eval_* metrics in
    the step's record). Writes out_dir/train_log.jsonl and out_dir/train_summary.json."""
    if not pairs:
        raise ValueError("train_dpo_trl: no preference pairs")
    loss_args = trl_loss_args(cfg)  # raises for losses trl does not have, before any work
    if not 0.0 <= cfg.warmup_ratio < 1.0:  # transformers 5 reads warmup_steps < 1 as a ratio
        raise ValueError(f"dpo.warmup_ratio={cfg.warmup_ratio!r} must be in [0, 1)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    on_cpu = not torch.cuda.is_available() or next(model.parameters()).device.type == "cpu"
    ref = _frozen_reference(model, ref_model_or_None, precompute_ref)
    args = _trl_args(cfg, out_dir, on_cpu, bool(held_out), precompute_ref, loss_args)
    records: list[dict] = []
    snap = _snapshot([model, ref])
    try:
        cls = _trainer_class() if tokenized else trl().DPOTrainer
        trainer = cls(model=model, ref_model=ref, args=args, train_dataset=_dataset(pairs, prompt_ids, tokenized),
                      eval_dataset=_dataset(held_out, prompt_ids, tokenized) if held_out else None,
                      processing_class=tokenizer, callbacks=[_make_callback(tracker, records)])
        trainer.remove_callback(trainer_callbacks().PrinterCallback)  # with disable_tqdm it would print every log dict
        trainer.train()
        if held_out and (not records or "eval_loss" not in records[-1]):  # after the last step, as the native loop
            trainer.evaluate()  # its log reaches the callback, which merges it into the last record
    finally:
        _restore(snap)
        model.eval()
    last = dict(records[-1]) if records else {}
    write_jsonl(out_dir / "train_log.jsonl", records)
    write_json(out_dir / "train_summary.json", last)
    return records


def _frozen_reference(model, ref, precompute_ref: bool):
    """The reference trl gets, frozen: None for the starting policy itself (trl refuses the same object, and
    precomputes its log-probs from the policy before training), or a deep copy of the policy when nothing is
    precomputed (trl would reload `config._name_or_path` from disk/hub: wrong for an in-memory policy)."""
    if ref is model:
        ref = None
    if ref is None and not precompute_ref:
        ref = copy.deepcopy(model)
    if ref is not None:
        ref.eval()
        ref.requires_grad_(False)
    return ref


def _trl_args(cfg: DPOConfig, out_dir: Path, on_cpu: bool, held_out: bool, precompute_ref: bool, loss_args: dict):
    """trl's DPOConfig with the native loop's settings (schedule, clipping, no weight decay, seeds)."""
    TrlDPOConfig = trl().DPOConfig
    # trl defaults gradient checkpointing on; transformers 5 renamed it activation_checkpointing
    ckpt_field = ("activation_checkpointing" if "activation_checkpointing" in
                  {f.name for f in dataclasses.fields(TrlDPOConfig)} else "gradient_checkpointing")
    return TrlDPOConfig(
        output_dir=str(out_dir),
        beta=cfg.beta,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_grad_norm=cfg.max_grad_norm,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps (transformers 5)
        lr_scheduler_type="linear",
        weight_decay=0.0,               # as native
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=on_cpu,
        bf16=not on_cpu and torch.cuda.is_bf16_supported(),
        fp16=False,
        report_to="none",
        save_strategy="no",
        eval_strategy="steps" if held_out and cfg.eval_every else "no",  # 0: after the last step only (below)
        eval_steps=cfg.eval_every or None,
        per_device_eval_batch_size=32,
        logging_steps=1,
        disable_tqdm=True,
        max_length=None,                # never truncate: sequences are prompt + <= max_new_tokens
        precompute_ref_log_probs=precompute_ref,
        precompute_ref_batch_size=16,   # native reference_logps: 16 on a CPU, from free memory on a GPU
        dataloader_num_workers=0,
        **{ckpt_field: False},
        **loss_args,
    )
