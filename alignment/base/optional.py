"""The heavy optional dependencies, in one place: each is imported on first use only, so a run
that never needs it (no LoRA, no wandb, no trl backend, no hub dataset, no plot) never pays its
import time. Every other import of the package sits at the top of its module.

    peft        LoRA adapters (`dpo.lora_r`, `sft.lora_r`)           `alignment.assets.models`
    trl         `dpo.backend=trl` (and transformers' Trainer callbacks)  `alignment.steps.trl_backend`
    datasets    hub review datasets (`data.source=imdb`), trl's input `alignment.steps.data`, `trl_backend`
    wandb       `track.mode` online/offline                           `alignment.base.tracking`
    gguf        read by transformers when the offline SmolLM2 GGUF is converted (`alignment.assets.offline`)
    matplotlib  the plots                                             `alignment.study.plots`
    accelerate  more than one process (`accelerate launch`)           `alignment.base.distributed`
"""
from __future__ import annotations

import importlib
from types import ModuleType

HEAVY = ("peft", "trl", "datasets", "wandb", "gguf", "matplotlib", "accelerate")


def _load(name: str) -> ModuleType:
    return importlib.import_module(name)


def peft() -> ModuleType:
    return _load("peft")


def trl() -> ModuleType:
    return _load("trl")


def trainer_callbacks() -> ModuleType:
    """transformers.trainer_callback: importing it loads the Trainer, and with it peft and accelerate."""
    return _load("transformers.trainer_callback")


def datasets() -> ModuleType:
    return _load("datasets")


def wandb() -> ModuleType:
    return _load("wandb")


def accelerate() -> ModuleType:
    return _load("accelerate")


def pyplot() -> ModuleType:
    """matplotlib.pyplot, headless (the Agg backend where no display is set)."""
    return _load("matplotlib.pyplot")
