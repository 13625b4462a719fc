"""Preference pairs from scored samples. A strategy maps one prompt's N (reward, record)
samples to (chosen, rejected) index pairs; pick one from `STRATEGIES` by name.

Ties: a pair needs chosen reward > rejected reward + min_margin; a prompt whose samples all
tie yields no pair and is counted in the stats (never a crash, never a 50/50 coin-flip label).
"""
from __future__ import annotations

import itertools
import random
from typing import Callable

import numpy as np

Strategy = Callable[[list[float], random.Random], list[tuple[int, int]]]


def max_min(r: list[float], rng: random.Random) -> list[tuple[int, int]]:
    """Best sample vs worst sample (one pair per prompt), as the assignment notebook paired them."""
    return [(int(np.argmax(r)), int(np.argmin(r)))]


def all_pairs(r: list[float], rng: random.Random) -> list[tuple[int, int]]:
    """Every ordered pair, N choose 2 per prompt (the DPO paper's IMDB setup)."""
    return [(i, j) if r[i] >= r[j] else (j, i) for i, j in itertools.combinations(range(len(r)), 2)]


def adjacent(r: list[float], rng: random.Random) -> list[tuple[int, int]]:
    """Neighbours in reward order (N-1 pairs): hard pairs with small margins."""
    order = sorted(range(len(r)), key=lambda i: r[i], reverse=True)
    return list(zip(order[:-1], order[1:]))


def random_pairs(r: list[float], rng: random.Random) -> list[tuple[int, int]]:
    """N/2 disjoint random pairs, the better one chosen."""
    idx = list(range(len(r)))
    rng.shuffle(idx)
    return [(i, j) if r[i] >= r[j] else (j, i) for i, j in zip(idx[0::2], idx[1::2])]


STRATEGIES: dict[str, Strategy] = {"max_min": max_min, "all_pairs": all_pairs,
                                   "adjacent": adjacent, "random": random_pairs}


def build_pairs(records: list[dict], rewards: list[float], strategy: str = "max_min",
                min_margin: float = 0.0, seed: int = 0) -> tuple[list[dict], dict]:
    """Group scored samples by prompt and build pairs; returns (pairs, stats).

    A pair record: {prompt_id, prompt, chosen, rejected, chosen_ids, rejected_ids,
    chosen_reward, rejected_reward, margin}.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"pairs.strategy={strategy!r} is unknown; choose one of {sorted(STRATEGIES)}")
    if len(records) != len(rewards):
        raise ValueError(f"{len(records)} samples but {len(rewards)} rewards")
    bad = [i for i, x in enumerate(rewards) if not np.isfinite(x)]
    if bad:
        raise ValueError(f"reward of sample {bad[0]} (prompt {records[bad[0]]['prompt_id']}) is {rewards[bad[0]]}; "
                         "rescore: NaN/inf rewards cannot rank samples")
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(rec["prompt_id"], []).append(i)
    rng = random.Random(seed)
    pairs, tied, dropped = [], 0, 0
    for pid, idx in groups.items():
        r = [rewards[i] for i in idx]
        if max(r) - min(r) <= min_margin:
            tied += 1
            continue
        for a, b in STRATEGIES[strategy](r, rng):
            if r[a] - r[b] <= min_margin:
                dropped += 1
                continue
            c, j = records[idx[a]], records[idx[b]]
            pairs.append({"prompt_id": pid, "prompt": c["prompt"], "chosen": c["completion"],
                          "rejected": j["completion"], "chosen_ids": c["completion_ids"],
                          "rejected_ids": j["completion_ids"], "chosen_reward": r[a],
                          "rejected_reward": r[b], "margin": r[a] - r[b]})
    margins = np.array([p["margin"] for p in pairs]) if pairs else np.zeros(0)
    stats = {"n_prompts": len(groups), "n_pairs": len(pairs), "prompts_all_tied": tied,
             "pairs_below_margin": dropped, "strategy": strategy, "min_margin": min_margin,
             "margin_mean": float(margins.mean()) if pairs else 0.0,
             "margin_median": float(np.median(margins)) if pairs else 0.0,
             "margin_min": float(margins.min()) if pairs else 0.0}
    if not pairs:
        raise ValueError(f"no preference pairs: all {len(groups)} prompts have tied rewards (within "
                         f"pairs.min_margin={min_margin}); lower pairs.min_margin or raise sample.n_samples")
    return pairs, stats
