"""Load policies, reference models and tokenizers from one name: offline default, hub id or path; and
the `ModelRef` of each loaded model (where its weights come from), for samplers that load models themselves."""
from __future__ import annotations

import copy
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .offline import smollm2_dir
from ..config import OFFLINE, OFFLINE_SFT
from ..base.machine import cpu_has_bf16, dtype_name
from ..base.optional import peft


def resolve_policy(name: str) -> str:
    """Map config names to something `from_pretrained` takes: offline -> cached SmolLM2 dir.
    `offline-sft` is the SFT stage's output, which depends on the sft config: a run resolves it
    (`alignment.steps.sft.sft_out_dir(cfg)`) before it loads anything."""
    if name == OFFLINE:
        return str(smollm2_dir())
    if name == OFFLINE_SFT:
        raise FileNotFoundError(f"{OFFLINE_SFT!r} is the SFT stage's model and depends on the sft config: load "
                                "alignment.steps.sft.sft_out_dir(cfg) (built by `python -m alignment sft`), or use a Pipeline")
    p = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not p.exists():
        raise FileNotFoundError(f"model path {name!r} does not exist; fix model.policy / model.ref")
    return str(p) if p.exists() else name


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sampling_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPU; on CPU bf16 only where the CPU has native bf16 matmul (else it is slower)."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def train_autocast(precision: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: `bf16`, or `auto` on a CPU with native bf16
    (avx512_bf16/amx_bf16: a 135M-parameter DPO step about 2x faster than fp32; emulated bf16 is
    several times slower). On CUDA `auto` keeps fp32: at these model sizes autocast's casts cost more
    than they save (GPT-2-small, 16 pairs per step on an H200: 4.8 vs 21.7 steps/s)."""
    if precision == "bf16":
        return True
    return precision == "auto" and device.type == "cpu" and sampling_dtype("auto", device) == torch.bfloat16


def load_tokenizer(name: str):
    """Tokenizer with a pad token (GPT-2 has none: we reuse EOS; masks never come from values)."""
    tok = AutoTokenizer.from_pretrained(resolve_policy(name))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


class ModelRef(NamedTuple):
    """Where a loaded model's weights come from: `path` (a local dir or hub id) in fp32, plus the LoRA adapter
    at `adapter` merged in (or ""), then cast to `dtype` (a torch dtype's name). `load` rebuilds the same
    weights in any process: what a sampler backend with `TAKES_REF` (`steps.samplers`) receives."""
    path: str
    adapter: str = ""
    dtype: str = "float32"

    def load(self, device: torch.device | None = None):
        model = load_causal_lm(self.path, torch.float32, device)
        if self.adapter:
            model = load_adapter(model, self.adapter)
        return cast_model(model, getattr(torch, self.dtype))


_REFS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # frozen loaded model -> its ModelRef


def model_ref(model) -> ModelRef | None:
    """The `ModelRef` of a model loaded frozen by `load_causal_lm` / `load_adapter` / `cast_model`; None for
    a model loaded to train or wrapped with adapters (its weights are not those of any saved model)."""
    return _REFS.get(model)


def _where(name: str | Path) -> str:
    """A local directory as an absolute path (a sampler elsewhere loads the same files); a hub id as it is."""
    return str(Path(name).resolve()) if Path(name).is_dir() else str(name)


def cast_model(model, dtype: torch.dtype):
    """`model` in `dtype`: itself if it already is, else a copy; an fp32 model's `ModelRef` follows with the new
    dtype (a cast from fp32 is what `ModelRef.load` repeats; one from a rounded dtype is not, and keeps none)."""
    if next(model.parameters()).dtype == dtype:
        return model
    out = copy.deepcopy(model).to(dtype)
    ref = model_ref(model)
    if ref is not None and ref.dtype == "float32":
        _REFS[out] = ref._replace(dtype=dtype_name(dtype))
    return out


def load_causal_lm(name: str, dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                   train: bool = False):
    model = AutoModelForCausalLM.from_pretrained(resolve_policy(name), dtype=dtype)
    model.to(device or pick_device())
    model.train(train)
    if not train:
        model.requires_grad_(False)
        _REFS[model] = ModelRef(_where(resolve_policy(name)), "", dtype_name(dtype))
    return model


# LoRA target modules by architecture (`config.model_type`): every linear map of attention and MLP.
LORA_TARGETS = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # Conv1D layers (fan_in_fan_out)
}


def add_lora(model, r: int, alpha: float):
    """Wrap `model` in LoRA adapters of rank r (peft) on its architecture's target modules; only
    the adapters train. The base weights stay frozen, so the reference is the base itself
    (`with model.disable_adapter(): ...`) and saving writes the adapter only (MBs)."""
    kind = model.config.model_type
    if kind not in LORA_TARGETS:
        raise ValueError(f"LoRA (dpo.lora_r / sft.lora_r) knows the target modules of {sorted(LORA_TARGETS)}, "
                         f"not {kind!r}; use full fine-tuning (lora_r=0) or add it to models.LORA_TARGETS")
    cfg = peft().LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS[kind]),
                     fan_in_fan_out=kind == "gpt2", task_type="CAUSAL_LM")
    with _quiet_peft():
        return peft().get_peft_model(model, cfg)


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps or loads adapters: no
    FutureWarning for that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def load_adapter(base, path: str | Path):
    """Base model + the LoRA adapter saved at `path`, merged into plain weights (fast to sample)."""
    base_ref = model_ref(base)
    with _quiet_peft():
        model = peft().PeftModel.from_pretrained(base, str(path)).merge_and_unload()  # `base` itself, merged in place
    model.requires_grad_(False)
    _REFS.pop(model, None)
    if base_ref is not None and not base_ref.adapter and base_ref.dtype == "float32":  # what ModelRef.load repeats
        _REFS[model] = base_ref._replace(adapter=_where(path))
    return model.eval()


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS ids that end a completion: the tokenizer's EOS, the generation config's, <|endoftext|>."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        ids.add(vocab["<|endoftext|>"])
    return sorted(i for i in ids if i is not None)
