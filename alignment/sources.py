"""Where models, data and scorers come from: the built-in names, what each model/data field of the config
takes (`SOURCES`: built-in names, a hub id, a local path, or more), and the check of a value against it, so a
typo fails before anything builds instead of as a hub download error minutes later. Imports nothing of
alignment; `config` validates with it and is where the rest of the package reads the built-in names."""
from __future__ import annotations

import difflib
import os
from typing import NamedTuple

OFFLINE = "offline"  # the embedded default: real pretrained assets shipped in PyPI packages
PYTHON_REWARD = "python:"  # reward.model prefix: a `score(texts) -> Tensor` function passed from Python
OFFLINE_SFT = "offline-sft"  # the offline start policy: SmolLM2-135M tuned on reviews by the SFT stage (`alignment.steps.sft`)
OFFLINE_FT = "offline-ft"  # the offline judge fine-tuned end to end (top layers of all-mpnet-base-v2, `alignment.assets.judge_ft`)
BUILT_IN = (OFFLINE, OFFLINE_SFT, OFFLINE_FT, "vader", "imdb")  # every built-in model/data name, in any field
NEAR = 0.75  # difflib ratio from which a name is read as a misspelt built-in name (ofline, vadr, imbd)


class Source(NamedTuple):
    """What one model/data field takes: its built-in names, an example hub id and local path, and
    what else it takes ('' = none, python:<name>)."""
    named: tuple[str, ...]
    hub: str
    local: str
    more: str = ""


SOURCES = {
    "model.policy": Source((OFFLINE_SFT, OFFLINE), "lvwerra/gpt2-imdb", "./my-model"),
    "model.ref": Source((OFFLINE_SFT, OFFLINE), "lvwerra/gpt2-imdb", "./my-model", "'' (the same as model.policy)"),
    "data.source": Source((OFFLINE, "imdb"), "stanfordnlp/imdb", "./reviews.csv (.csv, .jsonl or .txt)"),
    "reward.model": Source((OFFLINE, "vader"), "lvwerra/distilbert-imdb", "./my-reward",
                           f"{PYTHON_REWARD}<name> (a function passed as Pipeline(cfg, reward=fn))"),
    "eval.judge": Source((OFFLINE_FT, OFFLINE, "vader"), "siebert/sentiment-roberta-large-english", "./my-judge",
                         "'' (none)"),
    "eval.topic_judge": Source((OFFLINE,), "org/name (a classifier whose positive class means on-topic)",
                               "./my-topic-classifier", "'' (none)"),
    "sft.base": Source((OFFLINE,), "lvwerra/gpt2-imdb", "./my-model"),
}
OPTIONAL = ("model.ref", "eval.judge", "eval.topic_judge")  # the fields of SOURCES that may be "" (none)


def meant(value: str, named: tuple[str, ...]) -> str | None:
    """The built-in name a bare name that is no built-in name of its field was most likely meant as,
    "" for a name no hub id can be (`x:y`), else None (a hub id such as gpt2 or imdb)."""
    low = value.lower()
    ratios = {n: difflib.SequenceMatcher(None, low, n).ratio() for n in named}
    best = max(ratios, key=ratios.get)
    near = ratios[best] >= NEAR or low in BUILT_IN or low.startswith((OFFLINE, "vader"))
    return best if near else "" if ":" in value else None


def _looks_local(value: str, suffixes: tuple[str, ...]) -> bool:
    """Starts with . / ~, or has 2+ slashes, or ends in one of `suffixes`: a path, never a hub id."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or os.path.splitext(value)[1] in suffixes


def source_problem(name: str, value: str) -> str | None:
    """What is wrong with a model/data field's value (None: nothing): it must be one of its built-in
    names, "" where the field is `OPTIONAL`, `python:<name>` for the reward, an existing local path, or a hub id (org/name, or a bare name such as gpt2 that is no
    misspelt built-in name).

    Anything that looks like a path must exist, and a bare name close to a built-in one
    (offline-reward, Vader, ofline) is refused.
    """
    src = SOURCES[name]
    if name == "reward.model" and value.startswith(PYTHON_REWARD):
        return None if len(value) > len(PYTHON_REWARD) else (
            f"{name}={value!r} is invalid: name the function after {PYTHON_REWARD!r} (e.g. {PYTHON_REWARD}my-sentiment): "
            "the name keys the cache")
    if value in src.named or (not value and name in OPTIONAL) or os.path.exists(os.path.expanduser(value)):
        return None
    builtin = " or ".join(src.named) if len(src.named) < 3 else f"{', '.join(src.named[:-1])} or {src.named[-1]}"
    takes = (f"a built-in name ({builtin}), a hub id such as {src.hub}, or a local path that exists such as "
             f"{src.local}{f'; or {src.more}' if src.more else ''}")
    if not value or _looks_local(value, (".csv", ".jsonl", ".txt", ".json", ".gguf", ".safetensors")):
        return (f"{name}={value!r} is invalid: {'this local path does not exist' if value else 'empty'}; "
                f"{name} takes {takes}")
    guess = None if "/" in value else meant(value, src.named)
    if guess is None:
        return None
    hint = f"; did you mean {guess}?" if guess else "."
    return f"{name}={value!r} is not a name {name} knows{hint} It takes {takes}"


def pairs_source_problem(value: str) -> str | None:
    """What is wrong with pairs.source (None: nothing): "", a hub dataset name, or a local file that
    exists (what is in it is checked by `ownpairs.read_pairs`, before any model loads)."""
    if not value or os.path.exists(os.path.expanduser(value)):
        return None
    if not _looks_local(value, (".csv", ".jsonl", ".json", ".txt", ".parquet")):
        return None
    return (f"pairs.source={value!r} is invalid: this file does not exist; give the path of a .jsonl or .csv file "
            "with text columns prompt, chosen, rejected, or a hub dataset name (e.g. trl-lib/ultrafeedback_binarized)")
