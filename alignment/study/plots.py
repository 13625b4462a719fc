"""Matplotlib figures written as PNG (headless-safe), returned as paths for wandb/notebook."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base.distributed import current
from .frontier import BON, root_kl
from .optimum import OPTIMUM
from ..base.io import atomic_open
from ..base.optional import pyplot  # matplotlib: headless, it falls back to Agg without a display


def _save(fig, path: Path) -> Path:
    if current().main:  # under several processes, rank 0 writes the figures
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return Path(path)


def reward_hist(rewards: dict[str, list[float]], path: Path) -> Path:
    """Held-out reward distributions, one histogram per model (SFT first; the human row has one
    text per prompt, the models several: densities, so the areas compare)."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for name, r in rewards.items():
        ax.hist(r, bins=30, alpha=0.45, label=name, density=True)
    ax.set(xlabel="reward (held-out prompts, own samples)", ylabel="density",
           title="Reward of the start policy, the trained policies and the reviews' own continuations")
    ax.legend()
    return _save(fig, path)


def sample_reward_hist(rewards: list[float], path: Path) -> Path:
    """The reward of every training sample (N per train prompt, from the start policy), with its
    mean: the spread the preference pairs are cut from."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.hist(rewards, bins=30, color="tab:blue")
    mean = sum(rewards) / max(len(rewards), 1)
    ax.axvline(mean, color="black", ls="--", lw=1, label=f"mean {mean:+.2f}")
    ax.set(xlabel="reward (train prompts, start policy's samples)", ylabel="samples",
           title=f"Reward of the {len(rewards)} training samples")
    ax.legend()
    return _save(fig, path)


def margin_hist(margins: list[float], path: Path) -> Path:
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.hist(margins, bins=30, color="tab:purple")
    ax.set(xlabel="reward(chosen) - reward(rejected)", ylabel="pairs", title="Preference-pair margins")
    return _save(fig, path)


def training_curves(logs: dict[str, list[dict]], path: Path) -> Path:
    """Loss, margins and accuracies per step (train_log records), one colour per policy family (its
    name without the seed, e.g. sigmoid-b0.1-lr5e-05), averaged over its seeds: the training batches'
    (solid) and, where logged, the held-out pairs' (dashed with dots, eval_*), which no policy trains on."""
    keys = ["loss", "rewards/margins", "rewards/accuracies"]
    families: dict[str, list[list[dict]]] = {}
    for name, log in logs.items():
        families.setdefault(name.rsplit("-s", 1)[0] if "-s" in name else name, []).append(log)
    fig, axes = pyplot().subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for i, (family, runs) in enumerate(families.items()):
        color, n = pyplot().get_cmap("tab10")(i % 10), f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        for ax, k in zip(axes, keys):
            for key, style, label in ((k, "-", "training batches"), (f"eval_{k}", "o--", "held-out pairs")):
                steps, means = _mean_by_step(runs, key)
                if steps:
                    ax.plot(steps, means, style, color=color, ms=3, lw=1.2, label=f"{family}{n}: {label}")
            ax.set(title=k, xlabel="step")
    axes[-1].legend(fontsize=6, loc="lower right")
    return _save(fig, path)


def _mean_by_step(runs: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """The steps at which `key` is logged, and its mean over the runs that logged it there."""
    at: dict[int, list[float]] = {}
    for log in runs:
        for r in log:
            if key in r:
                at.setdefault(r["step"], []).append(r[key])
    steps = sorted(at)
    return steps, [sum(at[s]) / len(at[s]) for s in steps]


AXES = {"kl": "KL(q || π_ref) per completion (nats; q = the sampling distribution, on-policy)", "reward": "mean reward (training proxy)",
        "judge": "mean judge score (never trained on)", "pred_entropy": "mean predictive entropy (nats)"}


def frontier(points: list[dict], x: str, y: str, path: Path) -> Path:
    """One curve per divergence through its β values (from the start policy at β = ∞), best-of-N
    dashed, error bars = 95 % bootstrap CIs over seeds x prompts (seeds pooled in each point); the
    KL-optimal curve (where `points` has it, on KL axes) a grey dashed line with its 95 % band.
    `points`: frontier.point_table rows."""
    fig, ax = pyplot().subplots(figsize=(7, 4.8))
    cmap = pyplot().get_cmap("tab10")
    labels = list(dict.fromkeys(p["label"] for p in points))
    for i, lab in enumerate(labels):
        pts = [p for p in points if p["label"] == lab and p.get(x) is not None and p.get(y) is not None]
        if not pts:
            continue
        if lab == OPTIMUM:
            _optimum_line(ax, sorted(pts, key=lambda p: -p["beta"]), x, y)
            continue
        bon = lab == BON
        pts.sort(key=lambda p: p["n"] if bon else -p["beta"])  # along the curve's parameter: start (β = ∞) first
        err = {k: [[p[k] - p[f"{k}_lo"] for p in pts], [p[f"{k}_hi"] - p[k] for p in pts]] for k in (x, y)}
        ax.errorbar([p[x] for p in pts], [p[y] for p in pts], xerr=err[x], yerr=err[y], capsize=2,
                    fmt="s--" if bon else "o-", color="black" if bon else cmap(i % 10), label=lab, ms=4, lw=1.2)
        for p in pts:
            tag = (f"N={p['n']}" if bon else (f"β={p['beta']:g}" if p["beta"] not in (None, float("inf")) else ""))
            if tag:
                ax.annotate(tag, (p[x], p[y]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if x == "kl":  # a √ scale: straight segments are how the curves are read between points (`frontier.interpolate`)
        ax.set_xscale("function", functions=(root_kl, lambda v: np.sign(v) * np.square(v)))
    ax.set(xlabel=AXES.get(x, x) + (" (√ scale)" if x == "kl" else ""), ylabel=AXES.get(y, y),
           title=f"{y} vs {x}: frontiers over β (95 % CI over seeds × prompts)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _optimum_line(ax, pts: list[dict], x: str, y: str) -> None:
    """The KL-optimal curve (points from β = ∞ down): a dashed line through its estimates and the
    band of its `y` CIs — a bound on every curve at its KL, so no markers or β tags."""
    xs, ys = [p[x] for p in pts], [p[y] for p in pts]
    ax.fill_between(xs, [p[f"{y}_lo"] for p in pts], [p[f"{y}_hi"] for p in pts], color="grey", alpha=0.2, lw=0)
    ax.plot(xs, ys, "--", color="grey", lw=1.5, label=f"{OPTIMUM} (π_ref·exp(r/β), bound)")
