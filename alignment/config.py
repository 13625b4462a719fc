"""Flat, validated configs: one dataclass per stage, composed into `Config`.

`asdict(cfg)` is what goes to wandb and into the run directory's manifest. Load from YAML
with `load_config(path, overrides=["dpo.beta=0.05", ...])`; every field is validated before
any model is loaded, and a bad value raises `ConfigError` naming the field, the value and
what is allowed.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

OFFLINE = "offline"  # the embedded default: real pretrained assets shipped in PyPI packages


class ConfigError(ValueError):
    """A config field has a bad value. The message names the field, the value and the fix."""


@dataclass
class ModelConfig:
    policy: str = OFFLINE      # "offline" (SmolLM2-135M from PyPI), "offline-sft" (after `sft`), a hub name or local dir
    ref: str = ""              # reference model for DPO/KL; "" = same as the starting policy
    dtype: str = "auto"        # sampling dtype: auto (bf16 on GPU/bf16-capable CPU), float32, bfloat16


@dataclass
class DataConfig:
    source: str = OFFLINE      # "offline" (Pang&Lee + Rotten Tomatoes reviews), "imdb" (hub), or a .csv/.jsonl/.txt path
    prompt_tokens: int = 8     # prompt = first k policy tokens of a review
    min_chars: int = 200       # keep reviews longer than this (the seed's filter)
    max_chars: int = 0         # and shorter than this; 0 = no upper bound (the seed used 512 on IMDB)
    n_train_prompts: int = 128 # prompts used to build preference pairs
    n_eval_prompts: int = 64   # held-out prompts for evaluation (disjoint from train, by review)
    seed: int = 0              # shuffling seed for the train/eval split


@dataclass
class SampleConfig:
    n_samples: int = 4         # completions per train prompt (N)
    max_new_tokens: int = 32   # completion length cap
    temperature: float = 1.0   # softmax temperature
    top_k: int = 0             # 0 = off (pure sampling, the seed's setting)
    top_p: float = 1.0         # 1.0 = off
    batch_size: int = 64       # sequences per decode batch
    backend: str = "fast"      # "fast" (our KV-cache loop) or "generate" (HF model.generate)
    seed: int = 0              # sampling seed (per-prompt generators derive from it)


@dataclass
class RewardConfig:
    model: str = OFFLINE       # "offline" (MiniLM sentiment classifier), "vader", a hub name or local dir
    batch_size: int = 64       # texts per scoring batch
    max_length: int = 256      # reward tokenizer truncation
    score_prompt: bool = True  # score prompt + completion (True) or the completion alone
    dtype: str = "auto"        # auto (bf16 on GPU / bf16-capable CPU), float32, bfloat16


@dataclass
class PairConfig:
    strategy: str = "max_min"  # max_min | all_pairs | adjacent | random
    min_margin: float = 0.0    # drop pairs whose reward gap is <= this
    seed: int = 0              # seed for the random strategy


@dataclass
class DPOConfig:
    loss: str = "sigmoid"      # a name in alignment.losses.LOSSES (sigmoid, hinge, ipo, forward_kl, js, alpha, ...)
    beta: float = 0.1          # KL-constraint strength
    alpha: float = 0.5         # alpha-divergence parameter, paper convention, in (0, 1)
    lr: float = 5e-5           # learning rate: 5e-5 for the CPU default's 32 steps; 5e-6..1e-5 for longer runs (the seed's 1e-3 makes word salad)
    epochs: int = 2            # passes over the pairs
    batch_size: int = 8        # pairs per optimizer step (before accumulation)
    grad_accum: int = 1        # micro-batches per optimizer step
    max_grad_norm: float = 1.0 # gradient clipping
    warmup_ratio: float = 0.1  # linear warmup fraction
    backend: str = "native"    # "native" (our loop, precomputed reference) or "trl" (trl.DPOTrainer)
    seed: int = 0              # init/shuffle seed
    save_every: int = 0        # checkpoint every k optimizer steps for resume (0 = off)


@dataclass
class EvalConfig:
    n_samples: int = 4         # fresh samples per held-out prompt, for every model evaluated
    max_new_tokens: int = 32   # same cap as training samples by default
    n_boot: int = 1000         # bootstrap resamples for confidence intervals
    n_examples: int = 4        # example generations shown side by side


@dataclass
class TrackConfig:
    mode: str = "offline"      # wandb mode: offline (no account), online, disabled
    project: str = "alignment" # wandb project
    run_name: str = ""         # wandb run name; "" = the run dir's name


@dataclass
class SFTConfig:
    base: str = OFFLINE        # model to fine-tune on reviews ("offline" = SmolLM2-135M-Instruct, or hub id/path)
    out: str = ""              # output dir; "" = the cache's SmolLM2-135M-reviews-sft (what model.policy=offline-sft loads)
    n_reviews: int = 300       # training reviews (train split only: eval prompts' reviews are excluded)
    n_eval_reviews: int = 64   # held-out reviews for perplexity before/after
    max_tokens: int = 128      # truncate each review to this many tokens
    epochs: int = 1            # passes over the reviews
    lr: float = 5e-5           # AdamW learning rate
    batch_size: int = 8        # reviews per optimizer step
    seed: int = 0              # shuffle / sampling seed


@dataclass
class Config:
    run_dir: str = "runs/default"  # everything of a run lands here
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(name: str, typ: Any, value: Any) -> Any:
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ) if isinstance(typ, str) else typ
    if typ is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")
    try:
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a valid {typ.__name__}") from None


def apply_overrides(cfg: Config, items: dict[str, Any]) -> Config:
    """Set dotted fields, e.g. {"dpo.beta": "0.05", "run_dir": "runs/x"}; unknown keys raise."""
    for key, value in items.items():
        section, _, attr = key.rpartition(".")
        target = getattr(cfg, section, None) if section else cfg  # unknown section -> ConfigError below
        if not dataclasses.is_dataclass(target) or attr not in {f.name for f in fields(target)}:
            raise ConfigError(f"unknown config field {key!r}; see alignment/config.py for the fields")
        f = next(f for f in fields(target) if f.name == attr)
        if dataclasses.is_dataclass(getattr(target, attr)):
            if not isinstance(value, dict):
                raise ConfigError(f"{key} is a section; set its fields as {key}.<field>=...")
            apply_overrides(cfg, {f"{key}.{k}": v for k, v in value.items()})
        else:
            setattr(target, attr, _coerce(key, f.type, value))
    return cfg


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"override {p!r} must look like section.field=value, e.g. dpo.beta=0.05")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_config(path: str | None = None, overrides: list[str] | dict | None = None,
                preset: str | None = None) -> Config:
    """Defaults <- preset <- YAML file <- overrides, then `validate`."""
    from .presets import PRESETS

    cfg = Config()
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"preset={preset!r} is unknown; choose one of {sorted(PRESETS)}")
        apply_overrides(cfg, PRESETS[preset])
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            apply_overrides(cfg, yaml.safe_load(f) or {})
    if overrides:
        apply_overrides(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    validate(cfg)
    return cfg


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


def _check_source(name: str, value: str, named: tuple[str, ...]) -> None:
    """A model/data source is a known name, an existing local path, or a hub id (name or org/name).

    Anything that looks like a path (starts with . / ~, or has 2+ slashes, or a file suffix)
    must exist, so a typo fails here instead of as a hub download error later.
    """
    if value in named or os.path.exists(os.path.expanduser(value)):
        return
    looks_local = value.startswith((".", "/", "~")) or value.count("/") > 1 or \
        os.path.splitext(value)[1] in (".csv", ".jsonl", ".txt", ".json", ".gguf", ".safetensors")
    if looks_local or not value:
        raise ConfigError(f"{name}={value!r} is invalid: this local path does not exist; fix the path "
                          f"or use one of {list(named)} or a hub id such as lvwerra/gpt2-imdb")


def validate(cfg: Config) -> None:
    """Raise ConfigError for the first bad field, before any model or data is loaded."""
    from .losses import LOSSES, validate_alpha
    from .pairs import STRATEGIES

    _check_source("model.policy", cfg.model.policy, (OFFLINE, "offline-sft"))
    if cfg.model.ref:
        _check_source("model.ref", cfg.model.ref, (OFFLINE, "offline-sft"))
    _check(cfg.model.dtype in ("auto", "float32", "bfloat16"), "model.dtype", cfg.model.dtype,
           "use auto, float32 or bfloat16")
    _check_source("data.source", cfg.data.source, (OFFLINE, "imdb"))
    d = cfg.data
    _check(d.prompt_tokens > 0, "data.prompt_tokens", d.prompt_tokens, "must be > 0")
    _check(d.min_chars >= 0, "data.min_chars", d.min_chars, "must be >= 0")
    _check(d.max_chars == 0 or d.max_chars > d.min_chars, "data.max_chars", d.max_chars,
           "must be 0 (no limit) or greater than data.min_chars")
    _check(d.n_train_prompts > 0, "data.n_train_prompts", d.n_train_prompts, "must be > 0")
    _check(d.n_eval_prompts > 0, "data.n_eval_prompts", d.n_eval_prompts, "must be > 0")
    s = cfg.sample
    _check(s.n_samples >= 2, "sample.n_samples", s.n_samples, "must be >= 2 to form a pair")
    _check(s.max_new_tokens > 0, "sample.max_new_tokens", s.max_new_tokens, "must be > 0")
    _check(s.temperature > 0, "sample.temperature", s.temperature, "must be > 0")
    _check(s.top_k >= 0, "sample.top_k", s.top_k, "must be >= 0 (0 = off)")
    _check(0 < s.top_p <= 1, "sample.top_p", s.top_p, "must be in (0, 1]")
    _check(s.batch_size > 0, "sample.batch_size", s.batch_size, "must be > 0")
    _check(s.backend in ("fast", "generate"), "sample.backend", s.backend, "use fast or generate")
    _check_source("reward.model", cfg.reward.model, (OFFLINE, "vader"))
    _check(cfg.reward.dtype in ("auto", "float32", "bfloat16"), "reward.dtype", cfg.reward.dtype,
           "use auto, float32 or bfloat16")
    _check(cfg.reward.batch_size > 0, "reward.batch_size", cfg.reward.batch_size, "must be > 0")
    _check(cfg.pairs.strategy in STRATEGIES, "pairs.strategy", cfg.pairs.strategy,
           f"choose one of {sorted(STRATEGIES)}")
    _check(cfg.pairs.min_margin >= 0, "pairs.min_margin", cfg.pairs.min_margin, "must be >= 0")
    p = cfg.dpo
    _check(p.loss in LOSSES, "dpo.loss", p.loss, f"choose one of {sorted(LOSSES)}")
    if p.loss == "alpha":
        try:
            validate_alpha(p.alpha)
        except ValueError as e:  # surface as ConfigError like every other field
            raise ConfigError(str(e)) from None
    _check(p.beta > 0, "dpo.beta", p.beta, "must be > 0")
    _check(0 < p.lr < 1, "dpo.lr", p.lr, "must be in (0, 1); 1e-6..1e-5 is sane for DPO")
    _check(p.epochs > 0, "dpo.epochs", p.epochs, "must be > 0")
    _check(p.batch_size > 0 and p.grad_accum > 0, "dpo.batch_size", p.batch_size, "must be > 0")
    _check(p.backend in ("native", "trl"), "dpo.backend", p.backend, "use native or trl")
    _check(cfg.eval.n_samples > 0, "eval.n_samples", cfg.eval.n_samples, "must be > 0")
    _check(cfg.sft.n_reviews > 0 and cfg.sft.max_tokens > 8, "sft.n_reviews", cfg.sft.n_reviews,
           "sft.n_reviews must be > 0 and sft.max_tokens > 8")
    _check(0 < cfg.sft.lr < 1, "sft.lr", cfg.sft.lr, "must be in (0, 1)")
    _check(cfg.track.mode in ("offline", "online", "disabled"), "track.mode", cfg.track.mode,
           "use offline, online or disabled")
