"""Train the offline reward once: all-MiniLM-L6-v2 embeddings + logistic regression on the
bundled labelled movie-review snippets (VADER's 10,605 human-scored snippets + 12,808 Rotten
Tomatoes fresh/rotten snippets), 80/20 split by seed 0. Held-out accuracy is reported next to
VADER's on the same texts; `head/metrics.json` records both.
"""
from __future__ import annotations

import bz2
import csv
import random
import tempfile
from pathlib import Path

import torch

from .config import RewardConfig
from .io import read_json, write_json


def labelled_snippets() -> list[tuple[str, int]]:
    from .assets import review_files

    files = review_files()
    out = []
    with open(files["vader_snippets"], encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == 3 and abs(float(parts[1])) >= 0.5:  # drop near-neutral snippets
                out.append((parts[2], int(float(parts[1]) > 0)))
    with bz2.open(files["rotten_tomatoes"], "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] in ("fresh", "rotten") and row["text"].strip():
                out.append((row["text"].strip(), int(row["category"] == "fresh")))
    return out


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 200) -> dict:
    """L2-regularised logistic regression by LBFGS.  x (n, D), y (n,) in {0, 1}."""
    w = torch.zeros(x.size(1), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y.float()) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"weight": w.detach(), "bias": b.detach()}


def accuracy(scores: torch.Tensor, y: torch.Tensor, threshold: float = 0.0) -> float:
    return ((scores > threshold).long() == y).float().mean().item()


def train_head(out_dir: Path, seed: int = 0) -> dict:
    from safetensors.torch import save_file

    from .assets import minilm_dir
    from .reward import EmbeddingReward, VaderReward

    data = labelled_snippets()
    random.Random(seed).shuffle(data)
    n_test = len(data) // 5
    test, train = data[:n_test], data[n_test:]
    n_val = len(train) // 8
    enc = EmbeddingReward(minilm_dir(), {"weight": torch.zeros(1), "bias": torch.zeros(())}, batch_size=128)
    x_tr, x_te = enc.embed([t for t, _ in train]).clone(), enc.embed([t for t, _ in test]).clone()
    y_tr, y_te = torch.tensor([l for _, l in train]), torch.tensor([l for _, l in test])
    val_acc = {l2: accuracy(x_tr[:n_val] @ h["weight"] + h["bias"], y_tr[:n_val])
               for l2 in (1e-4, 1e-3, 1e-2) for h in [fit_logistic(x_tr[n_val:], y_tr[n_val:], l2)]}
    l2 = max(val_acc, key=val_acc.get)
    head = fit_logistic(x_tr, y_tr, l2)
    vader = VaderReward().score([t for t, _ in test])
    metrics = {"n_train": len(train), "n_test": len(test), "l2": l2,
               "test_accuracy": accuracy(x_te @ head["weight"] + head["bias"], y_te),
               "vader_test_accuracy": accuracy(vader, y_te),
               "sources": "VADER movieReviewSnippets (|score|>=0.5) + Rotten Tomatoes fresh/rotten"}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent))
    save_file(head, str(tmp / "head.safetensors"))
    write_json(tmp / "metrics.json", metrics)
    if not out_dir.exists():
        tmp.rename(out_dir)
    return metrics


def offline_reward(cfg: RewardConfig):
    """The offline default reward, training its head on first use (~1-2 min on 2 CPU cores)."""
    from safetensors.torch import load_file

    from .assets import cache_root, minilm_dir
    from .reward import EmbeddingReward

    head_dir = cache_root() / "models" / "minilm-sentiment-head"
    if not (head_dir / "head.safetensors").exists():
        print("training the offline reward head (once) ...", flush=True)
        print(train_head(head_dir), flush=True)
    reward = EmbeddingReward(minilm_dir(), load_file(str(head_dir / "head.safetensors")),
                             cfg.batch_size, cfg.max_length, dtype=cfg.dtype)
    reward.metrics = read_json(head_dir / "metrics.json")
    return reward
