"""Which recipe fine-tunes the judge, chosen on a validation split: `python -m alignment judge-select [OUT]`

Each recipe in `CANDIDATES` fine-tunes all-mpnet-base-v2 on 80 % of the `judge` role's snippets and is
scored on the other 20 % (`select_recipe`, a fixed hash split). The most accurate one must be
`reward.FT_RECIPE`, the recipe every run builds (trained on all the judge's rows); the held-out `test`
snippets measure only that judge, once, with a 95 % Wilson interval. Writes OUT
(default results/judge_selection.json), which `tests/test_judge_ft.py` holds `FT_RECIPE` to. About 25 min on 2
CPU cores without native bf16 (three builds: 8, 11 and 5 min measured, the first two sharing the cores).
"""
from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..assets import offline as assets
from ..assets.corpus import bucket, snippets_by_role
from ..assets.judge_ft import JudgeBuildError, Recipe, fine_tune
from ..assets.reward_train import Rows
from ..assets.models import pick_device, sampling_dtype
from ..base.io import read_json, write_json
from ..base.machine import dtype_name, hardware
from ..steps.reward import FT_RECIPE, ensure_ft_judge

VALIDATION_SHARE = 0.2  # of the judge's training rows held out to choose its recipe (`select_recipe`)


def validation_split(rows: Rows, share: float = VALIDATION_SHARE) -> tuple[Rows, Rows]:
    """(fit, validation): a fixed hash of each text puts about `share` of `rows` in validation, so no
    size, seed or recipe moves a row; recipes are compared there, never on the test rows."""
    fit: Rows = []
    val: Rows = []
    for row in rows:
        (val if bucket("judge validation " + row[0]) < share else fit).append(row)
    return fit, val


def select_recipe(encoder_dir: str | Path, rows: Rows, candidates: tuple[Recipe, ...],
                  device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> dict:
    """Fine-tune each candidate on the fit part of `rows` (`validation_split`) and score the validation part:
    {"candidates": [{recipe, validation_accuracy, frozen_head_validation_accuracy, seconds}], "chosen": the
    index of the most accurate (the first on ties), "n_fit", "n_validation"}. Test rows are no input: they
    measure only the recipe chosen here, trained on all of `rows` (`build_judge`)."""
    fit, val = validation_split(rows)
    if not candidates or len(fit) < 2 or len(val) < 2:
        raise JudgeBuildError(f"cannot choose among {len(candidates)} recipes on {len(fit)} fit and {len(val)} "
                              f"validation rows: give at least one recipe and more labelled rows")
    found = []
    for recipe in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            m = fine_tune(Path(tmp), encoder_dir, fit, val, recipe, "recipe selection", device, dtype)
        found.append({"recipe": asdict(recipe), "validation_accuracy": m["test_accuracy"],
                      "frozen_head_validation_accuracy": m["frozen_head_test_accuracy"], "seconds": m["build_s"]})
        print(f"judge recipe {asdict(recipe)}: validation accuracy {m['test_accuracy']:.3f} "
              f"({m['build_s']:.0f} s)", flush=True)
    best = max(range(len(found)), key=lambda i: (found[i]["validation_accuracy"], -i))
    return {"candidates": found, "chosen": best, "n_fit": len(fit), "n_validation": len(val),
            "validation_share": VALIDATION_SHARE, "autocast": dtype_name(dtype)}


# The recipes compared: the top 2, 3 or 6 of mpnet's 12 layers tuned (more layers, more time).
CANDIDATES = (Recipe(layers=2, epochs=1, lr=1e-4, head_lr=1e-3, batch_size=32, max_length=128),
              Recipe(layers=3, epochs=2, lr=1e-4, head_lr=1e-3, batch_size=32, max_length=128),
              Recipe(layers=6, epochs=1, lr=1e-4, head_lr=1e-3, batch_size=32, max_length=128))


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion `p` seen on `n` rows: (0.9, 100) -> (0.826, 0.945)."""
    if n < 1:
        raise ValueError(f"wilson: a proportion needs n >= 1 rows, got {n}")
    mid, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)


def main(argv: list[str]) -> dict:
    """Compare the candidates and write OUT; if the winner is `FT_RECIPE`, also the built judge's test accuracy,
    else exit non-zero saying which recipe to set (the comparison stays written)."""
    out = argv[0] if argv else "results/judge_selection.json"
    dev = pick_device()
    dtype = torch.bfloat16 if sampling_dtype("auto", dev) == torch.bfloat16 else None
    rows = [(s.text, s.label) for s in snippets_by_role()["judge"]]
    res = {**select_recipe(assets.mpnet_dir(), rows, CANDIDATES, dev, dtype), "hardware": hardware()}
    chosen = res["candidates"][res["chosen"]]["recipe"]
    res["chosen_is_ft_recipe"] = chosen == asdict(FT_RECIPE)
    if not res["chosen_is_ft_recipe"]:
        write_json(out, res)
        raise SystemExit(f"the validation split chose {chosen}, not reward.FT_RECIPE = {asdict(FT_RECIPE)}: set "
                         f"FT_RECIPE to the chosen recipe (every run then rebuilds the judge once) and rerun; {out} "
                         "holds the comparison")
    judge = read_json(ensure_ft_judge() / "metrics.json")
    lo, hi = wilson(judge["test_accuracy"], judge["n_test"])
    res["judge"] = {"recipe": judge["recipe"], "n_train": judge["n_train"], "n_test": judge["n_test"],
                    "test_accuracy": judge["test_accuracy"], "test_accuracy_ci": [lo, hi]}
    write_json(out, res)
    print(f"chosen on {res['n_validation']} validation rows: {chosen}; the judge built with it (all "
          f"{judge['n_train']} rows): test accuracy {judge['test_accuracy']:.3f} (95 % CI {lo:.3f}..{hi:.3f}, "
          f"{judge['n_test']} rows) -> {out}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
