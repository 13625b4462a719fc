"""The published results: the small JSON files of the runs the README quotes, committed under
`results/`, and `RESULTS.md` rendered from them alone, so no number can drift from its source.

    python -m alignment results --level1 runs/default --sweep runs/sweep   # copy the runs' results in, render
    python -m alignment results                                            # render from results/ only

`collect` copies what a run dir holds (Level 1 and lr-lesson results, config, library versions,
the wall-time log with its machine, the statistics of the pairs it trained on, two figures), the
sweep's, and the SFT start policy's and the scorers' held-out numbers from the asset cache; `render`
builds the document from those files (`alignment.study.results_page`, where its words live); `headline` is
the short block the README carries between its `results:start` / `results:end` markers.
`tests/test_results.py` checks that the committed RESULTS.md and the README block equal their rendering.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..assets import offline as assets
from ..config import load_config
from ..base.io import read_json, write_json
from ..steps.reward import FT_JUDGE_DIR, HEADS, head_dir
from ..steps.sft import sft_out_dir
from ..study.results_page import DOC, MARKS, headline, render
from .rundir import RunPaths

RESULTS_DIR = "results"
FIGURES = {"level1": ("level1_rewards", "level1_training"), "sweep": ("frontier_reward_vs_kl", "frontier_judge_vs_kl"),
           "level3": ("level3_frontier_reward_vs_kl", "level3_frontier_judge_vs_kl")}
RUN_FILES = ("config", "manifest", "timings")


# ---- collecting ----------------------------------------------------------------------------------
def _copy_run(src: Path, dest: Path, name: str, results: tuple[str, ...]) -> None:
    """One run dir's result JSONs (without their local plot paths), its record files and figures,
    as `dest/<name>.<file>.json` and `dest/<figure>.png`."""
    paths = RunPaths(src)
    for res in results:
        if not paths.result(res).exists():
            raise FileNotFoundError(f"{paths.result(res)} is missing: run `python -m alignment "
                                    f"{res.replace('_', '-').replace('level1', 'run')}` on {src} first")
        data = read_json(paths.result(res))
        data.pop("plots", None)
        write_json(dest / f"{res}.json", data)
    for f in RUN_FILES:
        if paths.result(f).exists():
            data = read_json(paths.result(f))
            if f == "config":
                data.pop("run_dir", None)  # a local path, not part of the result
            write_json(dest / f"{name}.{f}.json", data)
    stats = pair_stats(src, read_json(paths.result(results[0])))
    if stats is not None:
        write_json(dest / f"{name}.pairs_stats.json", stats)
    for fig in FIGURES[name]:
        if paths.plot(fig).exists():
            shutil.copyfile(paths.plot(fig), dest / f"{fig}.png")


def pair_stats(src: Path, result: dict) -> dict | None:
    """The statistics of the pairs a run trained on: Level 1's own record of them ("pairs": each seed's
    draw), else, under `data.per_seed`, each seed's draws/seed<k>/pairs_stats.json (the seeds of the
    result's grid), else the shared draw's run_dir/pairs_stats.json; None where the run holds none.
    Under `data.per_seed` a run_dir/pairs_stats.json is not the run's (one left by a shared draw)."""
    if "pairs" in result:
        return result["pairs"]
    paths = RunPaths(src)
    cfg = load_config(overrides=read_json(paths.config)) if paths.config.exists() else None
    if cfg is None or not cfg.data.per_seed or cfg.pairs.source:
        return read_json(paths.pairs_stats) if paths.pairs_stats.exists() else None
    seeds = result.get("grid", {}).get("seeds", [])
    draws = {str(s): read_json(paths.draw(s).pairs_stats) for s in seeds if paths.draw(s).pairs_stats.exists()}
    if not draws:
        return None
    n = sorted({st["n_pairs"] for st in draws.values()})
    return {"per_seed": True, "n_pairs": n[0] if len(n) == 1 else [st["n_pairs"] for st in draws.values()],
            "draws": draws}


def collect(dest: str | Path, level1_dir: str | Path | None = None, sweep_dir: str | Path | None = None,
            level3_dir: str | Path | None = None) -> None:
    """Copy the published runs' results into `dest` (see the module doc): Level 1 and the learning-rate check
    from `level1_dir`, the sweep from `sweep_dir`, and, for the Level-1 run's config, the SFT start
    policy's and the offline scorers' own held-out numbers."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if level1_dir:
        _copy_run(Path(level1_dir), dest, "level1", ("level1", "lr_lesson"))
        cfg = load_config(overrides=read_json(RunPaths(Path(level1_dir)).config))
        sft = read_json(sft_out_dir(cfg) / "sft_metrics.json")
        write_json(dest / "sft.json", {k: v for k, v in sft.items() if k != "out"})
        write_json(dest / "scorers.json", {kind: read_json(head_dir(kind) / "metrics.json") for kind in HEADS})
        ft = assets.cache_root() / "models" / FT_JUDGE_DIR
        if (ft / "independence.json").exists():  # `python -m alignment judge-check` on this run's evaluations
            write_json(dest / "judge_independence.json",
                       {k: v for k, v in read_json(ft / "independence.json").items() if k != "eval_dir"})
            write_json(dest / "judge_ft.json", read_json(ft / "metrics.json"))
    if sweep_dir:
        _copy_run(Path(sweep_dir), dest, "sweep", ("sweep",))
    if level3_dir:
        _copy_run(Path(level3_dir), dest, "level3", ("level3",))


def load(src: str | Path) -> dict:
    """Every JSON file in `src` by its name without `.json` ({"level1": ..., "level1.config": ...})."""
    return {p.name[: -len(".json")]: read_json(p) for p in sorted(Path(src).glob("*.json"))}


def write(root: str | Path = ".") -> list[Path]:
    """Render `results/` into RESULTS.md and the README's marked block (in place); the files written."""
    root = Path(root)
    r = load(root / RESULTS_DIR)
    if "level1" not in r:
        raise FileNotFoundError(f"{root / RESULTS_DIR} holds no level1.json: pass --level1 RUN_DIR (a run dir "
                                "after `run` and `lr-lesson`)")
    (root / DOC).write_text(render(r), encoding="utf-8")
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    if MARKS[0] in text:
        pre, rest = text.split(MARKS[0], 1)
        readme.write_text(pre + headline(r) + rest.split(MARKS[1], 1)[1], encoding="utf-8")
    return [root / DOC, readme]
