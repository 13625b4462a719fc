"""Train the offline reward's head once: logistic regression on sentence embeddings of the
bundled labelled movie-review snippets (VADER's 10,605 human-scored snippets + 12,808 Rotten
Tomatoes fresh/rotten snippets), 80/20 split by seed 0. Held-out accuracy is reported next to a
baseline scorer's (VADER) on the same texts; `head/metrics.json` records both.

Depends on no scorer class: `alignment.reward` hands in the embedder and the baseline, so the
dependency runs one way (reward -> reward_train).
"""
from __future__ import annotations

import bz2
import csv
import random
from pathlib import Path
from typing import Callable

import torch

from .io import part_dir, write_json

Scorer = Callable[[list[str]], torch.Tensor]


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


def train_head(out_dir: Path, embed: Scorer, baseline: Scorer, seed: int = 0) -> dict:
    """Fit the head on `embed(texts)` (n, D) and write head.safetensors + metrics.json into
    `out_dir` (a part dir of `io.cached`); `baseline(texts)` (n,) is scored on the same held-out texts."""
    from safetensors.torch import save_file

    data = labelled_snippets()
    random.Random(seed).shuffle(data)
    n_test = len(data) // 5
    test, train = data[:n_test], data[n_test:]
    n_val = len(train) // 8
    x_tr, x_te = embed([t for t, _ in train]).clone(), embed([t for t, _ in test]).clone()
    y_tr, y_te = torch.tensor([l for _, l in train]), torch.tensor([l for _, l in test])
    val_acc = {l2: accuracy(x_tr[:n_val] @ h["weight"] + h["bias"], y_tr[:n_val])
               for l2 in (1e-4, 1e-3, 1e-2) for h in [fit_logistic(x_tr[n_val:], y_tr[n_val:], l2)]}
    l2 = max(val_acc, key=val_acc.get)
    head = fit_logistic(x_tr, y_tr, l2)
    metrics = {"n_train": len(train), "n_test": len(test), "l2": l2,
               "test_accuracy": accuracy(x_te @ head["weight"] + head["bias"], y_te),
               "vader_test_accuracy": accuracy(baseline([t for t, _ in test]), y_te),
               "sources": "VADER movieReviewSnippets (|score|>=0.5) + Rotten Tomatoes fresh/rotten"}
    out_dir = part_dir(out_dir)
    save_file(head, str(out_dir / "head.safetensors"))
    write_json(out_dir / "metrics.json", metrics)
    return metrics
