"""Train a logistic head on frozen sentence embeddings: the offline reward, the independent
judge and the on-topic judge are all such heads, each on its own role of the deduplicated,
hash-partitioned corpora (`alignment.assets.corpus`). Held-out accuracy is measured on rows that share
no normalised text with the training rows, next to a baseline scorer's (VADER) where given;
`metrics.json` records both.

Depends on no scorer class: `alignment.steps.reward` hands in the embedder and the baseline, so the
dependency runs one way (reward -> reward_train).
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import torch

from ..base.io import part_dir, write_json

Scorer = Callable[[list[str]], torch.Tensor]
Rows = list[tuple[str, int]]  # (text, label in {0, 1})


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


def train_head(out_dir: Path, embed: Scorer, train: Rows, test: Rows, baseline: Scorer | None = None,
               sources: str = "", seed: int = 0) -> dict:
    """Fit the head on `embed(texts)` (n, D) of `train`, pick the L2 strength on a seeded eighth
    of it, and write head.safetensors + metrics.json into `out_dir` (a part dir of `io.cached`).
    Accuracy is measured on `test`; `baseline(texts)` (n,), if given, is scored on the same rows."""
    from safetensors.torch import save_file

    if not train or not test:
        raise ValueError(f"no rows to train ({len(train)}) or test ({len(test)}) the head on ({sources})")
    train = list(train)
    random.Random(seed).shuffle(train)
    n_val = len(train) // 8
    x_tr = embed([t for t, _ in train]).clone()
    t0 = time.perf_counter()
    x_te = embed([t for t, _ in test]).clone()
    texts_per_s = len(test) / (time.perf_counter() - t0)  # the encoder's speed on these snippets
    y_tr, y_te = torch.tensor([l for _, l in train]), torch.tensor([l for _, l in test])
    val_acc = {l2: accuracy(x_tr[:n_val] @ h["weight"] + h["bias"], y_tr[:n_val])
               for l2 in (1e-4, 1e-3, 1e-2) for h in [fit_logistic(x_tr[n_val:], y_tr[n_val:], l2)]}
    l2 = max(val_acc, key=val_acc.get)
    head = fit_logistic(x_tr, y_tr, l2)
    metrics = {"n_train": len(train), "n_test": len(test), "l2": l2,
               "test_accuracy": accuracy(x_te @ head["weight"] + head["bias"], y_te),
               "test_positive_rate": y_te.float().mean().item(), "texts_per_s": texts_per_s, "sources": sources}
    if baseline is not None:
        metrics["vader_test_accuracy"] = accuracy(baseline([t for t, _ in test]), y_te)
    out_dir = part_dir(out_dir)
    save_file(head, str(out_dir / "head.safetensors"))
    write_json(out_dir / "metrics.json", metrics)
    return metrics
