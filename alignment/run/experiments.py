"""The assignment's experiments on top of `Pipeline`: Level 1 (sigmoid vs hinge vs SFT),
the learning-rate lesson, the Level 2 divergence sweep and Level 3. Each returns plain dicts and
writes its JSON result and plots under the run dir (`pipe.paths`); its wandb runs (training,
evaluations, results) share one group named after it (`experiment`)."""
from __future__ import annotations

from pathlib import Path

from ..study import frontier as F
from ..study import plots
from ..study.alarm import assess
from ..study.design import level1_design
from ..base.io import read_json
from ..config import ConfigError
from ..study.metrics import content_of
from ..steps.evaluate import Evaluation, pooled
from .frontiers import frontier_study, publish_result, trained_row
from . import publish
from .pipeline import Pipeline
from .rundir import START, Policy, RunPaths
from ..presets import LEVEL3_BEST_OF_N, LEVEL3_BETAS, LEVEL3_METHODS, LEVEL3_MIN_BETA, method_betas, SWEEP_ALPHAS, SWEEP_BEST_OF_N, SWEEP_BETAS, SWEEP_LOSSES, SWEEP_SEEDS  # noqa: F401 (SWEEP_LOSSES: the notebook's default)
from ..study.report import example_records
from ..study.gains import compare_to_start, versus_start, with_holm
from ..steps.dpo import held_out_prompts

LEVEL1_LOSSES = ("sigmoid", "hinge")
ORIGINAL_LR = 1e-3  # the assignment notebook's learning rate, shown next to the preset's in the learning-rate check


def rewards_of(ev: Evaluation) -> list[float]:
    return [r["reward"] for r in ev.scored]


def level1_seeds(cfg) -> tuple[int, ...]:
    """Level 1's seeds: dpo.seed, dpo.seed + 1, ... (`eval.n_seeds` of them)."""
    return tuple(cfg.dpo.seed + k for k in range(cfg.eval.n_seeds))


def seeds_name(policy_name: str, seeds: tuple[int, ...]) -> str:
    """sigmoid-b0.1-lr5e-05-s0 + seeds (0, 1, 2) -> sigmoid-b0.1-lr5e-05-s0-2; (0, 2) -> ...-s0_2;
    one seed: unchanged."""
    base = policy_name.rsplit("-s", 1)[0]
    if len(seeds) == 1:
        return f"{base}-s{seeds[0]}"
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{base}-s{seeds[0]}-{seeds[-1]}"
    return f"{base}-s" + "_".join(map(str, seeds))


def level1_train(pipe: Pipeline, losses: tuple[str, ...] = LEVEL1_LOSSES,
                 seeds: tuple[int, ...] | None = None) -> dict[str, list[Policy]]:
    """Level 1's training step: one policy per loss and seed, each on its seed's pairs (`DataStages.draw_of`),
    {loss: [policy per seed]} (each cached: `level1` after this trains nothing). Needs `pipe.prepare()` first."""
    seeds, policies = seeds or level1_seeds(pipe.cfg), {}
    for loss in losses:
        policies[loss] = []
        for s in seeds:
            policies[loss].append(pipe.train(loss=loss, seed=s))
    return policies


TRAINING_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "eval_loss", "eval_rewards/accuracies",
                 "eval_rewards/margins")


def training_summary(logs: dict[str, list[dict]]) -> dict[str, dict]:
    """{policy: its last logged value of each `TRAINING_KEYS` metric, and its steps}: the last
    training batch's and the held-out pairs' loss, margin and implicit-reward accuracy."""
    out = {}
    for name, log in logs.items():
        last = {k: next((r[k] for r in reversed(log) if k in r), None) for k in TRAINING_KEYS}
        out[name] = {**last, "steps": log[-1]["step"] if log else 0}
    return out


def pair_summary(pipe: Pipeline, seeds: tuple[int, ...]) -> tuple[list[dict], dict]:
    """Every pair the seeds train or hold out (each draw once), and their statistics: the first
    draw's strategy and settings, pairs and held-out pairs per draw, each draw's own statistics."""
    draws = {pipe.data.draw_of(s): s for s in seeds}  # one entry for a shared draw
    sets = {d: pipe.data.pairs(s) for d, s in draws.items()}
    pairs = [p for ps, _ in sets.values() for p in ps]
    first = next(iter(sets.values()))[1]
    held_ids = [held_out_prompts(ps, pipe.cfg.pairs.held_out) for ps, _ in sets.values()]
    held = [sum(p["prompt_id"] in ids for p in ps) for ids, (ps, _) in zip(held_ids, sets.values())]
    n = [st["n_pairs"] for _, st in sets.values()]
    return pairs, {**first, "per_seed": None not in draws, "n_pairs": n[0] if len(set(n)) == 1 else n,
                   "n_held_out": held[0] if len(set(held)) == 1 else held,
                   "draws": {str(d): st for d, (_, st) in sets.items() if d is not None}}


def training_logs(policies: dict[str, list[Policy]]) -> dict[str, list[dict]]:
    """{policy name: its training log} for `plots.training_curves`."""
    return {p.name: p.log for ps in policies.values() for p in ps}


def level1(pipe: Pipeline, losses: tuple[str, ...] = LEVEL1_LOSSES, seeds: tuple[int, ...] | None = None) -> dict:
    """The assignment's Level 1, stage by stage: per seed, draw train prompts (`data.per_seed`), sample
    N completions per prompt, score them, pair best with worst; train one policy per loss and seed
    on its seed's pairs (a share held out, `pairs.held_out`), evaluate every model (and the start
    policy under each seed's draws) on its own held-out samples, compare (each loss's seeds pooled,
    paired with the start over seeds x prompts; the losses with each other; the reward-hacking alarm
    of each loss, `alarm.assess`), report. The result (and level1.json) holds data only: rows, per-seed
    rows, the losses compared, the alarm records, example records;
    `report` builds the tables and sentences from it."""
    with pipe.trackers.grouped("level1"):  # its wandb runs, grouped under its name
        seeds, n_boot = seeds or level1_seeds(pipe.cfg), pipe.cfg.eval.n_boot
        pipe.prepare()  # the SFT start policy and the scorers first: one that cannot load fails before any work
        for s in seeds:  # each seed's draw (data.per_seed; else one shared draw): prompts, samples, rewards, pairs
            if not pipe.cfg.pairs.source:  # own pairs (pairs.source) are read, not built from scored samples
                pipe.data.samples(s)
                pipe.data.rewards(s)
        pairs, pair_stats = pair_summary(pipe, seeds)
        policies = level1_train(pipe, losses, seeds)
        starts = [pipe.evaluate(seed=s) for s in seeds]
        evals = {seeds_name(ps[0].name, seeds): [pipe.evaluate(p, seed=s) for p, s in zip(ps, seeds)]
                 for ps in policies.values()}
        human_row = pipe.cfg.eval.human_row and not pipe.cfg.pairs.source  # own pairs' prompts have no review behind them
        human = pipe.evaluate_human() if human_row else None
        with pipe.times("statistics"):
            start = pooled(START, starts, n_boot)
            runs = {name: pooled(name, evs, n_boot) for name, evs in evals.items()}
            rows, between = versus_start(start._asdict(), {n: {"metrics": {**e.metrics, "seeds": list(seeds)},
                                                               "scored": e.scored} for n, e in runs.items()}, n_boot,
                                        tokens=content_of)
            per_seed = [{**ev.metrics, **compare_to_start(ev.scored, st.scored, n_boot), "seed": s}
                        for evs in evals.values() for ev, st, s in zip(evs, starts, seeds)]
            design = level1_design({n: e.scored for n, e in runs.items()}, start.scored)
            alarm = [assess(e.metrics, e.scored, start.metrics, start.scored, n_boot) for e in runs.values()]
        shown = {START: start, **runs, **({human.metrics["model"]: human} if human else {})}
        logs = training_logs(policies)
        with pipe.times("I/O"):  # plots, level1.json, the wandb summary
            return _level1_report(pipe, rows + ([human.metrics] if human else []), per_seed, between, shown, logs,
                                  pairs, pair_stats, seeds, design, alarm)


def _level1_report(pipe: Pipeline, rows, per_seed, between, evals: dict[str, Evaluation], logs, pairs, pair_stats,
                   seeds, design: dict, alarm: list[dict]) -> dict:
    """Level 1's plots, level1.json and wandb summary; returns the result dict."""
    P = pipe.paths
    first = {m: [r for r in e.scored if r.get("seed_index", 0) == 0] for m, e in evals.items()}
    margins = [p["margin"] for p in pairs if p.get("margin") is not None]  # own pairs (pairs.source) have none
    files = [plots.reward_hist({m: rewards_of(e) for m, e in evals.items()}, P.plot("level1_rewards")),
             plots.training_curves(logs, P.plot("level1_training")),
             *([plots.margin_hist(margins, P.plot("pair_margins"))] if margins else [])]
    result = {"pairs": pair_stats, "rows": rows, "seeds": list(seeds), "per_seed": per_seed, "between_losses": between,
              "training": training_summary(logs),
              "design": design, "alarm": alarm, "examples": example_records(first, pipe.cfg.eval.n_examples),
              "plots": [str(f) for f in files]}
    publish_result(pipe, "level1", result, {"results": rows, "per_seed": per_seed}, files)
    return result


def lr_lesson_lrs(cfg) -> tuple[float, float]:
    """The learning-rate check's default: the assignment notebook's 1e-3 next to the config's `dpo.lr`."""
    return ORIGINAL_LR, cfg.dpo.lr


def lr_lesson(pipe: Pipeline, lrs: tuple[float, ...] | None = None, loss: str = "sigmoid") -> dict:
    """The assignment notebook's lr 1e-3 next to the preset's `dpo.lr` (default): reward may rise while the
    reference perplexity explodes. Returns (and writes lr_lesson.json) rows, the start row, each lr's
    reward-hacking alarm record (`alarm.assess`) and example records."""
    with pipe.trackers.grouped("lr_lesson"):  # its wandb runs, grouped under its name
        lrs = lrs or lr_lesson_lrs(pipe.cfg)
        pipe.prepare()  # the SFT start policy and the scorers first: one that cannot load fails before any work
        start = pipe.evaluate()
        rows, scored, alarm = [], {}, []
        for lr in lrs:
            row, ev, _ = trained_row(pipe, start, loss=loss, lr=lr)
            rows.append({**row, "lr": lr})
            scored[row["model"]] = ev.scored
            with pipe.times("statistics"):
                alarm.append({**assess(ev.metrics, ev.scored, start.metrics, start.scored, pipe.cfg.eval.n_boot), "lr": lr})
        result = {"rows": with_holm(rows), "start": start.metrics, "alarm": alarm,
                  "examples": example_records(scored, pipe.cfg.eval.n_examples)}
        publish_result(pipe, "lr_lesson", result, {"results": result["rows"]}, [])
        return result


def sweep(pipe: Pipeline, losses: tuple[str, ...] = SWEEP_LOSSES, betas: tuple[float, ...] = SWEEP_BETAS,
          seeds: tuple[int, ...] = SWEEP_SEEDS, alphas: tuple[float, ...] = SWEEP_ALPHAS,
          best_of_n: tuple[int, ...] = SWEEP_BEST_OF_N) -> dict:
    """Frontiers: every (divergence, β, seed) trained on its seed's pairs and evaluated with its
    seed's draws; per (divergence, β) one point pooling its seeds; per divergence a curve from the
    start policy (β -> ∞) through its β values; the best-of-N curve (N in `best_of_n`) from the start
    policy's own max(N) samples per prompt; every pair of curves compared at matched KL (paired
    bootstrap over seeds and prompts, Holm), each point's gain over the start (seeds pooled, Holm over
    the points) and its reward-hacking alarm (`alarm.assess`).
    Writes sweep.json (data only: `frontier_report.sweep_lines` / `verdict_lines`, `alarm_report.alarm_lines` say it in words),
    the frontier plots, and returns the same dict."""
    with pipe.trackers.grouped("sweep"):  # its wandb runs, grouped under its name
        families = {F.family_label(loss, alpha): {"loss": loss, "alpha": alpha}
                    for loss in losses for alpha in (alphas if loss == "alpha" else (pipe.cfg.dpo.alpha,))}
        grid = {"losses": list(losses), "betas": list(betas), "seeds": list(seeds), "alphas": list(alphas),
                "best_of_n": list(best_of_n)}
        return frontier_study(pipe, "sweep", families, {label: betas for label in families}, seeds, best_of_n, grid)


def level3(pipe: Pipeline, methods: tuple[str, ...] = tuple(LEVEL3_METHODS), betas: tuple[float, ...] = LEVEL3_BETAS,
           seeds: tuple[int, ...] = SWEEP_SEEDS, best_of_n: tuple[int, ...] = LEVEL3_BEST_OF_N) -> dict:
    """Level 3, what buys reward per nat of KL: every method of `LEVEL3_METHODS` x β x seed, traced as
    frontiers against best-of-N from the start policy's own samples, compared at matched KL as the sweep
    compares divergences (`frontier_study`). Writes level3.json and its plots."""
    with pipe.trackers.grouped("level3"):  # its wandb runs, grouped under its name
        unknown = [m for m in methods if m not in LEVEL3_METHODS]
        if unknown:
            raise ConfigError(f"level3: unknown method(s) {unknown}; choose from {list(LEVEL3_METHODS)}")
        per = method_betas(methods, betas)  # a method with a minimum β (`LEVEL3_MIN_BETA`) skips the β below it
        for m in (m for m in methods if not per[m]):
            print(f"level3: {m} trains only at β >= {LEVEL3_MIN_BETA[m]:g}: none of --betas {betas}; left out", flush=True)
        families = {m: {"alpha": pipe.cfg.dpo.alpha, **LEVEL3_METHODS[m]} for m in methods if per[m]}
        grid = {"methods": list(families), "betas": list(betas), "seeds": list(seeds), "best_of_n": list(best_of_n),
                **({"method_betas": {m: list(per[m]) for m in families}} if any(per[m] != betas for m in families) else {})}
        return frontier_study(pipe, "level3", families, {m: per[m] for m in families}, seeds, best_of_n, grid,
                              with_cost=True)


def sweep_result(cfg, run: bool, **grid) -> dict | None:
    """The Level 2 sweep of `cfg.run_dir`: run when `run` (its cached runs reused; `grid`: `sweep`'s
    axes), else the sweep.json saved there by an earlier run (its plots where they lie now), else, for
    `make sweep`'s own run dir, the committed one (`committed_result`), else None. Reading creates nothing."""
    return sweep(Pipeline(cfg), **grid) if run else saved_result(cfg, "sweep") or committed_result(cfg, "sweep")


def level3_result(cfg, run: bool, **grid) -> dict | None:
    """Level 3 of `cfg.run_dir`, as `sweep_result` (`grid`: `level3`'s axes)."""
    return level3(Pipeline(cfg), **grid) if run else saved_result(cfg, "level3") or committed_result(cfg, "level3")


def committed_result(cfg, name: str, root: str | Path = ".") -> dict | None:
    """For `make <name>`'s run dir (runs/<name>) without a result of its own: the committed
    `results/<name>.json` under `root` with its committed figures, marked `committed` (its path), so a notebook
    shows it and says so; None elsewhere (another size's run dir) or when none is committed."""
    src = Path(root) / publish.RESULTS_DIR / f"{name}.json"
    if Path(cfg.run_dir) != Path("runs") / name or not src.exists():
        return None
    figures = [Path(root) / publish.RESULTS_DIR / f"{fig}.png" for fig in publish.FIGURES[name]]
    return {**read_json(src), "plots": [str(f) for f in figures if f.exists()], "committed": str(src)}


def saved_result(cfg, name: str) -> dict | None:
    """The `<name>.json` an earlier run saved in `cfg.run_dir` (its plots where they lie now), or None."""
    paths = RunPaths(Path(cfg.run_dir))
    if not paths.result(name).exists():
        return None
    saved = read_json(paths.result(name))
    return {**saved, "plots": [str(paths.plot(Path(p).stem)) for p in saved["plots"]]}


