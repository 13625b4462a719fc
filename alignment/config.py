"""Flat, validated configs: one dataclass per stage, composed into `Config`.

`asdict(cfg)` is what goes to wandb and into the run directory's manifest. Load from YAML
with `load_config(path, overrides=["dpo.beta=0.05", ...])`; every field is validated before
any model is loaded, and a bad value raises `ConfigError` naming the field, the value and
what is allowed (an unknown field: the closest one). Each field's trailing comment is its one-line
doc, read at run time by `field_docs` (`python -m alignment fields` lists them).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import os
import tokenize
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .sources import OFFLINE, OFFLINE_FT, OFFLINE_SFT, SOURCES, pairs_source_problem, source_problem
from .sources import PYTHON_REWARD  # noqa: F401 (the package reads every built-in name through config)
from .steps.losses import LOSSES, VALUE_LOSSES, validate_alpha
from .steps.pairs import STRATEGIES
from .steps.samplers import SAMPLERS
from .presets import PRESETS


class ConfigError(ValueError):
    """A config field has a bad value. The message names the field, the value and the fix."""


def rule(default, *, choices=None, check=None, why: str = "", hashed: bool = True):
    """A config field with its validation declared once, on the field.

    `choices`: the allowed values (a tuple, or a zero-argument callable returning them, for
    registries such as the losses); `check`: a predicate on the value with `why` saying what is
    allowed; `hashed` (True, False or "if_set"): `hashed=False`: the field changes no artifact (where things go, how they are shown),
    or keys the caches its own way (`pairs.source`: by its rows' hash, only when set), so it is left
    out of the config hash that caches are keyed by; `hashed="if_set"`: the field keys the caches only
    when it differs from its default (a method added beside the default one: artifacts of the default
    keep their keys).
    """
    return field(default=default, metadata={"choices": choices, "check": check, "why": why, "hashed": hashed})


def _registry(table: dict):
    """Choices from a registry (the losses, the pair strategies), read when a config is checked."""
    return lambda: tuple(sorted(table))


_DTYPES = ("auto", "float32", "bfloat16")
_pos = dict(check=lambda v: v > 0, why="must be > 0")
_nonneg = dict(check=lambda v: v >= 0, why="must be >= 0")
_unit_open = dict(check=lambda v: 0 < v < 1, why="must be in (0, 1)")
_frac = dict(check=lambda v: 0 <= v <= 1, why="must be in [0, 1]")


@dataclass
class ModelConfig:
    policy: str = OFFLINE_SFT  # start policy: "offline-sft" (SmolLM2-135M tuned on reviews by the `sft` stage, built once as the first step of a run), "offline" (the raw instruct model), a hub name or local dir
    ref: str = ""              # reference model for DPO/KL; "" = same as the starting policy
    dtype: str = rule("auto", choices=_DTYPES)  # sampling dtype: auto (bf16 on GPU/bf16-capable CPU), float32, bfloat16


@dataclass
class DataConfig:
    source: str = OFFLINE      # "offline" (Pang&Lee + Rotten Tomatoes reviews), "imdb" (hub), or a .csv/.jsonl/.txt path
    prompt_tokens: int = rule(8, **_pos)      # prompt = first k policy tokens of a review
    min_chars: int = rule(200, **_nonneg)     # keep reviews longer than this (the assignment notebook's filter)
    max_chars: int = rule(0, **_nonneg)       # keep reviews shorter than this; 0 = no upper bound (the assignment notebook used 512 on IMDB)
    n_train_prompts: int = rule(256, **_pos)  # train prompts per draw (their samples make the preference pairs)
    n_eval_prompts: int = rule(96, **_pos)    # held-out prompts for evaluation (disjoint from train, by review)
    seed: int = 0              # shuffling seed for the train/eval split
    per_seed: bool = True      # each training seed (dpo.seed) draws its own train prompts from the pool, so its own samples and pairs; false: every seed trains on one shared draw


@dataclass
class SampleConfig:
    n_samples: int = rule(4, check=lambda v: v >= 2, why="must be >= 2 to form a pair")  # completions per train prompt (N)
    max_new_tokens: int = rule(32, **_pos)  # completion length cap
    temperature: float = rule(1.0, **_pos)  # softmax temperature
    top_k: int = rule(0, check=lambda v: v >= 0, why="must be >= 0 (0 = off)")  # top-k filter; 0 = off (pure sampling, the assignment notebook's setting)
    top_p: float = rule(1.0, check=lambda v: 0 < v <= 1, why="must be in (0, 1]")  # nucleus (top-p) filter; 1.0 = off
    batch_size: int = rule(64, **_nonneg, hashed=False)  # sequences per decode batch, 0 = auto (from free GPU memory; 64 on a CPU): speed only, each completion draws from its own counter-based stream
    backend: str = rule("fast", choices=_registry(SAMPLERS))  # a name in alignment.steps.samplers.SAMPLERS: "fast" (our KV-cache loop), "generate" (HF model.generate), or yours
    seed: int = 0              # sampling seed (each completion's stream is keyed by it, its prompt id and its sample index)


@dataclass
class RewardConfig:
    model: str = OFFLINE       # "offline" (MiniLM sentiment classifier), "vader", a hub name or local dir, or "python:<name>" (a function passed as Pipeline(cfg, reward=fn); <name> keys the cache)
    batch_size: int = rule(64, **_nonneg)  # texts per scoring batch (reward, judges), 0 = auto (from free GPU memory; 64 on a CPU)
    max_length: int = rule(256, **_pos)    # reward tokenizer truncation
    score_prompt: bool = True  # score prompt + completion (True) or the completion alone
    dtype: str = rule("auto", choices=_DTYPES)  # scoring dtype: auto (bf16 on GPU / bf16-capable CPU), float32, bfloat16


@dataclass
class PairConfig:
    strategy: str = rule("max_min", choices=_registry(STRATEGIES))  # which samples of a prompt pair up: max_min | all_pairs | adjacent | random
    min_margin: float = rule(0.0, **_nonneg)  # drop pairs whose reward gap is <= this
    seed: int = 0              # seed for the random strategy
    held_out: float = rule(0.125, check=lambda v: 0 <= v < 1, why="must be in [0, 1)")  # share of each draw's train prompts whose pairs are held out of training (their loss and accuracy are logged as it goes)
    source: str = rule("", hashed=False)  # "" = pairs built from the start policy's scored samples; or your own pairs (trl's format): a .jsonl/.csv file or hub dataset with text columns prompt, chosen, rejected


@dataclass
class DPOConfig:
    loss: str = rule("sigmoid", choices=_registry(LOSSES))  # a name in alignment.steps.losses.LOSSES (sigmoid, hinge, ipo, forward_kl, js, alpha, ...)
    beta: float = rule(0.1, **_pos)   # KL-constraint strength
    alpha: float = 0.5         # alpha-divergence parameter, paper convention, in (0, 1) (checked when loss=alpha)
    lr: float = rule(5e-5, check=lambda v: 0 < v < 1,  # learning rate
                     why="must be in (0, 1); the default 5e-05 suits the CPU default's 28 steps, 5e-6..1e-5 longer runs, "
                         "and the assignment notebook's 1e-3 makes word salad")
    epochs: int = rule(1, **_pos)      # passes over the pairs (one: no pair is seen twice, so held-out accuracy tracks train accuracy); rloo: over the prompts
    batch_size: int = rule(8, **_pos)  # pairs per micro-batch; rloo: prompts per micro-batch (each with sample.n_samples draws)
    grad_accum: int = rule(1, **_pos)  # micro-batches per optimizer step
    max_grad_norm: float = rule(1.0, **_pos)  # gradient clipping
    warmup_ratio: float = rule(0.1, **_frac)  # linear warmup fraction of the optimizer steps
    final_lr_ratio: float = rule(0.1, **_frac)  # linear decay towards this fraction of lr
    backend: str = rule("native", choices=("native", "trl"))  # "native" (our loop, precomputed reference) or "trl" (trl.DPOTrainer)
    precision: str = rule("auto", choices=("fp32", "bf16", "auto"))  # training math: fp32, bf16 autocast (fp32 master weights), auto = bf16 on native-bf16 CPUs (about 2x faster there), else fp32 (on CUDA too: faster at these sizes)
    lora_r: int = rule(0, **_nonneg)        # LoRA rank (peft); 0 = full fine-tuning. LoRA saves an adapter (MBs), not the model
    lora_alpha: float = rule(16.0, **_pos)  # LoRA scale alpha (the update is alpha/r * B A)
    seed: int = 0              # init/shuffle seed
    save_minutes: float = rule(10.0, **_nonneg, hashed=False)  # resumable checkpoint whenever this many minutes passed since the last (the latest kept, deleted once the policy is saved), and on Ctrl-C or a kill (SIGTERM) at the last whole step: a rerun resumes there; 0 = off
    save_every: int = rule(0, **_nonneg, hashed=False)  # also checkpoint every k optimizer steps and after the last (0 = by time only)
    eval_every: int = rule(7, **_nonneg, hashed=False)  # score the held-out pairs (pairs.held_out) every k optimizer steps and after the last (0 = after the last only)
    method: str = rule("offline", choices=("offline", "online", "rloo"), hashed="if_set")  # offline: one pass over pairs of the start policy's samples; online: dpo.rounds rounds, each on fresh pairs sampled and scored from the policy so far (iterative DPO); rloo: on-policy RL, reward - beta * KL with a leave-one-out baseline over sample.n_samples draws per prompt
    rounds: int = rule(4, **_pos, hashed="if_set")  # online: rounds, each on its share of the draw's train prompts
    credit: str = rule("sequence", choices=("sequence", "prefix"), hashed="if_set")  # rloo: sequence = every token of a draw shares its completion's advantage; prefix = each token earns the reward gained from it on (the reward model also scores every prefix), against the same position's leave-one-out mean
    credit_lambda: float = rule(1.0, **_frac, hashed="if_set")  # rloo with credit=prefix: weight lambda^k on what the reward gains k tokens later (1: all of it, unbiased; below 1: less variance, credit biased towards the next tokens)
    reward_shape: str = rule("raw", choices=("raw", "log_quantile"), hashed="if_set")  # rloo: the reward it maximises: raw = the reward model's score; log_quantile = log F(r), F the start policy's reward distribution on this draw's train prompts, pooled (vBoN, Amini et al. 2024: with each prompt's own F, the optimum at beta = 1/(N-1) is best-of-N's distribution)
    kl: str = rule("sampled", choices=("sampled", "exact"), hashed="if_set")  # rloo: the KL term per token: sampled = the drawn token's log-ratio log(pi/pi_ref) (trl's); exact = the whole next-token KL(pi || pi_ref) over the vocabulary at each position (Rao-Blackwellised: the same expectation, less variance)


@dataclass
class EvalConfig:
    n_samples: int = rule(4, **_pos)        # fresh samples per held-out prompt, for every model evaluated
    max_new_tokens: int = rule(32, **_pos)  # completion length cap (the training samples' by default)
    n_boot: int = rule(1000, check=lambda v: v >= 10, why="must be >= 10")  # bootstrap resamples for every CI
    n_examples: int = rule(4, **_nonneg, hashed=False)  # example generations shown side by side
    judge: str = OFFLINE_FT     # independent sentiment judge, never used in training: "offline-ft" (mpnet with its top 6 layers fine-tuned on data disjoint from the reward's; built once, ~5 min), "offline" (a linear head on frozen mpnet: cheaper, errors more like the reward's), "vader", a hub id or local dir, "" = none
    topic_judge: str = OFFLINE  # on-topic judge ("part of a movie review?"): "offline" (MiniLM head), a classifier whose positive class means on-topic, "" = none
    n_seeds: int = rule(5, **_pos, hashed=False)  # Level 1 seeds dpo.seed, dpo.seed+1, ...: each varies its training data (data.per_seed), the training order and the evaluation draws
    human_row: bool = rule(True, hashed=False)  # also evaluate the real reviews' own continuations of the eval prompts


@dataclass
class TrackConfig:
    mode: str = rule("offline", choices=("offline", "online", "disabled"), hashed=False)  # wandb mode: offline (no account), online, disabled
    project: str = rule("alignment", hashed=False)  # wandb project
    run_name: str = rule("", hashed=False)          # prefix of the wandb run and group names; "" = the run dir's name
    log_models: bool = rule(False, hashed=False)    # also upload each trained model (a policy's or the SFT's model/) as a wandb model artifact of its training run: ~513 MB per full model, MBs per LoRA adapter


@dataclass
class SFTConfig:
    base: str = OFFLINE        # model to fine-tune on reviews ("offline" = SmolLM2-135M-Instruct, or hub id/path)
    out: str = rule("", hashed=False)  # output dir; "" = the cache's SmolLM2-135M-reviews-sft-<config hash> (what model.policy=offline-sft loads)
    n_reviews: int = rule(800, **_pos)     # training reviews (the source's train pool only: never an eval prompt's review)
    n_eval_reviews: int = rule(64, **_pos) # held-out reviews for perplexity before/after
    max_tokens: int = rule(64, check=lambda v: v > 8, why="must be > 8")  # tokens per training window
    windows: int = rule(1, **_pos)         # consecutive windows of max_tokens taken from each review's start
    epochs: int = rule(1, **_pos)          # passes over the reviews
    lr: float = rule(3e-4, **_unit_open)   # AdamW learning rate
    batch_size: int = rule(8, **_pos)      # reviews per optimizer step
    warmup_ratio: float = rule(0.1, **_frac)    # linear warmup fraction of the steps
    final_lr_ratio: float = rule(0.0, **_frac)  # linear decay towards this fraction of lr (0: to zero)
    max_grad_norm: float = rule(1.0, **_pos)    # gradient clipping
    precision: str = rule("auto", choices=("fp32", "bf16", "auto"))  # training math, as dpo.precision (auto: bf16 where native)
    lora_r: int = rule(0, **_nonneg)            # LoRA rank; 0 = full fine-tuning (the saved model is merged either way)
    lora_alpha: float = rule(16.0, **_pos)      # LoRA scale alpha
    save_minutes: float = rule(10.0, **_nonneg, hashed=False)  # resumable checkpoint whenever this many minutes passed since the last, as dpo.save_minutes (0 = off)
    save_every: int = rule(0, **_nonneg, hashed=False)  # also checkpoint every k steps and after the last (0 = by time only)
    n_sample_prompts: int = rule(3, **_nonneg)  # fixed held-out prompts continued before/after, by eye
    sample_new_tokens: int = rule(40, **_pos)   # length of the before/after continuations
    seed: int = 0              # shuffle / sampling seed


@dataclass
class Config:
    run_dir: str = rule("runs/default", hashed=False)  # everything of a run lands here; unset, runs/<preset> (runs/default without one)
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


SECTIONS = tuple(f.name for f in fields(Config) if f.name != "run_dir")


def field_names() -> list[str]:
    """Every settable field as it is named on the command line: run_dir, model.policy, ..., sft.seed."""
    return ["run_dir"] + [f"{s}.{f.name}" for s in SECTIONS for f in fields(getattr(Config(), s))]


@functools.lru_cache(maxsize=None)
def field_docs() -> dict[str, str]:
    """{"section.field": its one-line doc}: the trailing comments on the fields above, read once from
    this file (a field spread over several lines: its comments joined)."""
    src = Path(__file__).read_text(encoding="utf-8")
    lines = iter(src.splitlines(keepends=True))
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(lambda: next(lines, "")) if t.type == tokenize.COMMENT}
    classes = {node.name: node for node in ast.parse(src).body if isinstance(node, ast.ClassDef)}
    prefixes = {Config.__name__: ""} | {type(getattr(Config(), s)).__name__: f"{s}." for s in SECTIONS}
    docs = {}
    for cls, prefix in prefixes.items():
        for node in classes[cls].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                text = " ".join(comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments)
                docs[prefix + node.target.id] = text
    return {name: docs[name] for name in field_names() if name in docs}


def _suggest(key: str) -> list[str]:
    """The fields a misspelt `key` most likely meant: the section and the field each corrected
    (dop.bta -> dpo.beta), else the fields of that name in other sections (beta -> dpo.beta), else
    the closest full name."""
    names, sections = field_names(), {"": ["run_dir", *SECTIONS]}
    sections.update({s: [n.split(".", 1)[1] for n in names if n.startswith(f"{s}.")] for s in SECTIONS})
    section, _, attr = key.rpartition(".")
    elsewhere = [n for n in names if n.rpartition(".")[2] == attr]
    if section and section not in sections:
        section = next(iter(difflib.get_close_matches(section, SECTIONS, n=1)), None)
    if section is not None and not (section == "" and elsewhere):
        close = [attr] if attr in sections[section] else difflib.get_close_matches(attr, sections[section], n=1)
        if close:
            return [f"{section}.{close[0]}" if section else close[0]]
    return elsewhere[:3] or difflib.get_close_matches(key, names, n=1)


def unknown_field(key: str) -> ConfigError:
    """The error for a field that does not exist, with the closest ones (`did you mean dpo.beta?`)."""
    guess = _suggest(key)
    hint = (f"did you mean {', '.join(guess[:-1])}{' or ' if len(guess) > 1 else ''}{guess[-1]}?" if guess else
            "`python -m alignment fields` lists them")
    return ConfigError(f"unknown field {key}; {hint}")


def section_deps(cfg: Config, *sections: str) -> dict:
    """{section: {field: value}} of the hashed fields: what a cached artifact depends on (an "if_set"
    field only where it differs from its default)."""
    def keyed(f, value) -> bool:
        hashed = f.metadata.get("hashed", True)
        return hashed is True or (hashed == "if_set" and value != f.default)

    return {s: {f.name: getattr(getattr(cfg, s), f.name) for f in fields(getattr(cfg, s))
                if keyed(f, getattr(getattr(cfg, s), f.name))} for s in sections}


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


def _flatten(items: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"dpo": {"beta": 0.05}} (a YAML file) -> {"dpo.beta": 0.05} (as on the command line)."""
    out = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def apply_overrides(cfg: Config, items: dict[str, Any]) -> Config:
    """Set dotted fields, e.g. {"dpo.beta": "0.05", "run_dir": "runs/x"} or nested {"dpo": {"beta": 0.05}};
    unknown keys raise, naming the closest field."""
    for key, value in _flatten(items).items():
        section, _, attr = key.rpartition(".")
        target = getattr(cfg, section, None) if section else cfg  # unknown section -> ConfigError below
        if not dataclasses.is_dataclass(target) or attr not in {f.name for f in fields(target)}:
            raise unknown_field(key)
        f = next(f for f in fields(target) if f.name == attr)
        if dataclasses.is_dataclass(getattr(target, attr)):
            raise ConfigError(f"{key} is a section; set its fields as {key}.<field>=...")
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
    """Defaults <- preset <- YAML file <- overrides, then `validate`. A preset's run dir is
    runs/<preset> (runs/default without one) unless the YAML file or an override sets run_dir."""
    cfg = Config()
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"preset={preset!r} is unknown; choose one of {sorted(PRESETS)}")
        apply_overrides(cfg, {"run_dir": f"runs/{preset}", **PRESETS[preset]})
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            items = yaml.safe_load(f) or {}
        if not isinstance(items, dict):
            raise ConfigError(f"config file {path!r} must hold {{section: {{field: value}}}}, e.g. {{dpo: {{beta: 0.05}}}}")
        try:
            apply_overrides(cfg, items)
        except ConfigError as e:
            raise ConfigError(f"{e} (in {path})") from None
    if overrides:
        apply_overrides(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    validate(cfg)
    return cfg


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


def _check_rules(section: str, obj) -> None:
    """The rules declared on the fields of one section (`rule(...)`)."""
    for f in fields(obj):
        v, meta = getattr(obj, f.name), f.metadata
        name = f"{section}.{f.name}" if section else f.name
        choices = meta.get("choices")
        if choices is not None:
            allowed = choices() if callable(choices) else choices
            _check(v in allowed, name, v, f"choose one of {list(allowed)}")
        if meta.get("check") is not None:
            _check(meta["check"](v), name, v, meta["why"])


def check_section(section: str, obj) -> None:
    """The rules of one section, and its cross-field checks (also for a section derived by
    `dataclasses.replace`, e.g. a sweep's DPO settings)."""
    _check_rules(section, obj)
    if section == "dpo":
        _check(obj.lora_r == 0 or obj.backend == "native", "dpo.lora_r", obj.lora_r,
               "LoRA trains with the native backend only; set dpo.backend=native or dpo.lora_r=0")
        _check(obj.method == "offline" or obj.backend == "native", "dpo.method", obj.method,
               "on-policy methods train with the native backend; set dpo.backend=native")
        _check(obj.loss not in VALUE_LOSSES or obj.backend == "native", "dpo.loss", obj.loss,
               "reward distillation trains with the native backend; set dpo.backend=native")
        if obj.loss == "alpha":
            try:
                validate_alpha(obj.alpha)
            except ValueError as e:  # surface as ConfigError like every other field
                raise ConfigError(str(e)) from None
    if section == "data":
        _check(obj.max_chars == 0 or obj.max_chars > obj.min_chars, "data.max_chars", obj.max_chars,
               "must be 0 (no limit) or greater than data.min_chars")


def validate(cfg: Config) -> None:
    """Raise ConfigError for the first bad field, before any model or data is loaded."""
    for s in SECTIONS:
        check_section(s, getattr(cfg, s))
    _check(cfg.reward.model != OFFLINE_FT, "reward.model", cfg.reward.model,
           f"{OFFLINE_FT} is the fine-tuned evaluation judge (eval.judge), not a training reward; use offline or vader")
    _check(cfg.eval.topic_judge != "vader", "eval.topic_judge", cfg.eval.topic_judge,
           "VADER scores sentiment, not topic; use offline, a topic classifier, or '' (none)")
    for name in SOURCES:
        section, attr = name.split(".")
        value = getattr(getattr(cfg, section), attr)
        if problem := source_problem(name, value):
            raise ConfigError(problem)
    _check(cfg.dpo.lora_r == 0 or cfg.model.ref in ("", cfg.model.policy), "dpo.lora_r", cfg.dpo.lora_r,
           "LoRA trains adapters on the reference's base: leave model.ref empty (= model.policy) or set dpo.lora_r=0")
    if problem := pairs_source_problem(cfg.pairs.source):
        raise ConfigError(problem)
    _check(cfg.eval.judge in ("", OFFLINE, OFFLINE_FT) or cfg.eval.judge != cfg.reward.model, "eval.judge", cfg.eval.judge,
           "the judge must not be the training reward (reward.model) itself: it would not be independent; "
           "use another scorer or '' (none)")
