"""The frontiers both Level 2 and Level 3 draw (`frontier_study`): every family x β x seed trained and evaluated
(`train_points`), their statistics against best-of-N and the KL-optimal limit (`frontier_statistics`), and for
Level 3 what each policy cost and where its KL went; plus the pieces every experiment shares: one trained
policy's table row (`trained_row`) and the result file and its results run in wandb (`publish_result`)."""
from __future__ import annotations

import time
from pathlib import Path

from ..base.io import build_record, read_json, write_json
from ..config import ConfigError
from ..presets import uses_start_draw
from ..steps.diagnose import kl_split, sentiment_token_ids, token_log_ratios, training_story, vader_lexicon
from ..steps.evaluate import Evaluation, pooled
from ..steps.losses import VALUE_LOSSES
from ..study import frontier as F
from ..study import optimum as O
from ..study import plots
from ..study.alarm import assess, control as alarm_control
from ..study.metrics import content_of
from ..study.report import example_records
from ..study.gains import compare_to_start, with_holm
from ..study.stats import SharedBootstrap
from .pipeline import Pipeline
from .rundir import COST_FILE, START, Policy

EXAMPLE_PROMPTS = 2  # Level 3 stores sample 0 of this many held-out prompts for every point (its first seed)
FRONTIER_CHARTS = (("kl", "reward"), ("kl", "judge"))  # the frontiers logged as native wandb charts


def trained_row(pipe: Pipeline, start: Evaluation, **overrides) -> tuple[dict, Evaluation, Policy]:
    """Train one policy (cfg.dpo + overrides), evaluate it with its seed's evaluation draws:
    (its table row with the gain vs `start` — the start policy evaluated with the same seed —,
    its evaluation, the policy)."""
    policy = pipe.train(**overrides)
    ev = pipe.evaluate(policy, seed=overrides.get("seed", pipe.cfg.dpo.seed))
    with pipe.times("statistics"):
        gains = compare_to_start(ev.scored, start.scored, pipe.cfg.eval.n_boot, tokens=content_of)
    return {**ev.metrics, **gains}, ev, policy


def shared_draws(pipe: Pipeline, seeds: tuple[int, ...]) -> dict:
    """Build each seed's start-policy draw (samples, rewards, pairs, reference log-probs) that the offline
    methods (and the log-quantile RLOO) share, before any policy trains, and say what it cost: {draw_tokens,
    draw_seconds} by seed (the seconds of the builds this or an earlier call recorded)."""
    tokens, seconds = {}, {}
    for s in seeds:
        pipe.data.ref_logps(s)
        P = pipe.paths.draw(pipe.data.draw_of(s))
        tokens[str(s)] = sum(len(r["completion_ids"]) for r in pipe.data.samples(s))
        parts = [build_record(a).get("build_seconds") for a in (P.samples, P.rewards, P.pairs, P.ref_logps)]
        seconds[str(s)] = None if None in parts else sum(parts)
    return {"draw_tokens": tokens, "draw_seconds": seconds}


def kl_diagnoses(pipe: Pipeline, firsts: dict[str, tuple[Policy, Evaluation]]) -> list[dict]:
    """Per point ("label@beta": its first seed's policy and evaluation), where its KL goes
    (`diagnose.kl_split` of its own evaluation samples) and its training log's story (`diagnose.training_story`)."""
    m = pipe.models
    ids = {p["id"]: p["ids"] for p in pipe.data.prompts()["eval"]}
    sentiment = sentiment_token_ids(m.tokenizer, vader_lexicon())
    out = []
    for key, (policy, ev) in firsts.items():
        label, beta = key.rsplit("@", 1)
        comps = [r["completion_ids"] for r in ev.scored]
        ratios = token_log_ratios(m.load_trained(policy.dir), m.ref_model, [ids[r["prompt_id"]] for r in ev.scored],
                                  comps, m.tokenizer.pad_token_id)
        out.append({"label": label, "beta": float(beta), "policy": policy.name,
                    **kl_split(ratios, comps, sentiment), "training": training_story(policy.log)})
    return out


def policy_cost(policy: Policy) -> dict:
    """What training `policy` cost when it was built: {train_seconds, tokens_drawn} (its own draws: 0 for
    offline methods, which train on the seed's shared start-policy draw)."""
    path = policy.dir / COST_FILE
    return read_json(path) if path.exists() else {"train_seconds": None, "tokens_drawn": None}


def frontier_study(pipe: Pipeline, name: str, families: dict[str, dict], betas: dict[str, tuple[float, ...]],
                   seeds: tuple[int, ...], best_of_n: tuple[int, ...], grid: dict, with_cost: bool = False) -> dict:
    """Every family (a label and its `dpo.*` overrides) x its β (`betas`: {label: its β values}) x seed trained and
    evaluated with its seed's draws (`train_points`), then its statistics (`frontier_statistics`): one point per
    (family, β) pooling its seeds, one curve per family from the start policy (β -> ∞), best-of-N, the KL-optimal
    bound, matched-KL (and matched-reward) comparisons, gains, shares of best-of-N's gain, the alarm;
    `with_cost`: each run's training cost (`policy_cost`), where each point's KL goes and its texts.
    Writes `<name>.json` and the frontier plots."""
    if not best_of_n or min(best_of_n) < 1:
        raise ConfigError(f"{name}: best_of_n={best_of_n!r} needs N values >= 1 (e.g. --best-of-n 1,2,4,8,16,32,64)")
    for label, over in families.items():  # every point's settings checked before hours of training
        for beta in betas[label]:
            pipe.policy_settings(**over, beta=beta)
    t0 = time.time()
    pipe.prepare()  # the SFT start policy and the scorers first: one that cannot load fails before any work
    starts = {seed: pipe.evaluate(seed=seed) for seed in seeds}  # each seed's runs vs the start's same draws
    bon = pooled("best-of-N", [pipe.evaluate(seed=s, n_samples=max(best_of_n)) for s in seeds], pipe.cfg.eval.n_boot,
                 measure=False)
    offline = any(uses_start_draw(over) for over in families.values())
    draws = shared_draws(pipe, seeds) if with_cost and offline else {}
    runs, seed_evals, firsts = train_points(pipe, families, betas, seeds, starts, with_cost)
    with pipe.times("statistics"):  # pooled start, curves, matched-KL comparisons, gains
        stats = frontier_statistics(pipe, seed_evals, starts, bon, families, best_of_n, len(seeds))
    P = pipe.paths
    files = [plots.frontier(stats["points"], x, y, P.plot(f"{F.plot_prefix(name)}_{y}_vs_{x}"))
             for x, y in (("kl", "reward"), ("kl", "judge"), ("pred_entropy", "reward"))]
    result = {"runs": runs, **stats, "grid": grid, "wall_minutes": (time.time() - t0) / 60,
              "plots": [str(f) for f in files], **draws}
    if with_cost:  # Level 3: where each point's KL goes, on its first seed's policy (`diagnose`), and its texts
        with pipe.times("diagnosis"):
            result["diagnosis"] = kl_diagnoses(pipe, firsts)
        result["examples"] = example_records({START: starts[seeds[0]].scored, **{k: ev.scored for k, (_, ev)
                                                                                 in firsts.items()}}, EXAMPLE_PROMPTS)
    publish_result(pipe, name, result, {"results": stats["points"], "runs": runs}, files, charts=FRONTIER_CHARTS)
    return result


def train_points(pipe: Pipeline, families: dict[str, dict], betas: dict[str, tuple[float, ...]],
                 seeds: tuple[int, ...], starts: dict, with_cost: bool) -> tuple[list[dict], dict, dict]:
    """Train and evaluate every family x β x seed (`trained_row`): (run rows, {"label@β": its seeds'
    evaluations}, {"label@β": (first seed's policy, its evaluation)})."""
    runs, seed_evals, firsts = [], {}, {}
    for label, over in families.items():
        extra = {k: v for k, v in over.items() if k not in ("loss", "alpha")}
        for beta in betas[label]:
            evs = []
            for seed in seeds:
                row, ev, policy = trained_row(pipe, starts[seed], **over, beta=beta, seed=seed)
                runs.append({**row, "loss": over.get("loss", pipe.cfg.dpo.loss), "label": label,
                             "alpha": over.get("alpha", pipe.cfg.dpo.alpha), **extra, "beta": beta, "seed": seed,
                             **({"cost": policy_cost(policy)} if with_cost else {})})
                evs.append(ev)
                firsts.setdefault(f"{label}@{beta!r}", (policy, ev))
            seed_evals[f"{label}@{beta!r}"] = evs  # one evaluation per entry of `seeds`, in its order
    return runs, seed_evals, firsts


def frontier_statistics(pipe: Pipeline, seed_evals: dict[str, list[Evaluation]], starts: dict, bon: Evaluation,
                        families: dict[str, dict], best_of_n: tuple[int, ...], n_seeds: int) -> dict:
    """The frontiers' numbers: the curves (each point pools its seeds) with best-of-N and the KL-optimal curve
    π_ref·exp(r/β) reweighting best-of-N's samples (`optimum.optimum_curve`: a bound, drawn and tabulated, not
    compared), matched-KL comparisons of every pair of the other curves and predictive entropy at matched
    reward, each point's gain over the start (Holm over the points), the share of best-of-N's and of the
    optimum's gain it reaches at its KL (`frontier.gain_fractions`), how far the methods that maximise
    reward - β·KL climbed toward its best value (`optimum.objective_progress`), how much of best-of-N's
    reward gain best-of-N picked by the judge buys (`frontier.judge_selected`), and each point's alarm record.
    `n_seeds`: the evaluations per point (the bootstrap resamples seeds as well as prompts)."""
    n_boot0 = pipe.cfg.eval.n_boot
    points = {k: pooled(k.rsplit("@", 1)[0], evs, n_boot0, measure=False) for k, evs in seed_evals.items()}
    start = pooled(START, list(starts.values()), n_boot0)
    fields = ("reward", "judge", "on_topic", "pred_entropy")
    n_curves = len({k.rsplit("@", 1)[0] for k in points}) + 1  # + best-of-N
    # Holm p-value floors (stats.bootstrap_p): the smallest p is 2/(B+1), so Holm over m cannot go below 2m/(B+1)
    n_boot = max(n_boot0, 100 * F.n_comparisons(n_curves, 3), 100 * len(points))
    boot = SharedBootstrap([r["prompt_id"] for r in start.scored], n_boot, n_seeds=n_seeds)
    curves = F.curve_points({k: ev.scored for k, ev in points.items()}, start.scored, boot, fields)
    ns = tuple(sorted(set(best_of_n)))
    with_bon = {**curves, F.BON: F.bon_curve(bon.scored, boot, fields, ns)}
    optimum, fractions, optimum_entry = optimum_parts(bon.scored, curves, with_bon[F.BON], boot, fields, max(best_of_n))
    progress = O.objective_progress({k: c for k, c in curves.items() if maximises_objective(families[k], pipe.cfg)},
                                    bon.scored, boot) if optimum else []
    gains = with_holm([{"label": k.rsplit("@", 1)[0], "beta": float(k.rsplit("@", 1)[1]),
                        **compare_to_start(ev.scored, start.scored, n_boot)} for k, ev in points.items()])
    return {"points": F.point_table({**with_bon, **optimum}), "gains": gains,
            "alarm": point_alarms(seed_evals, start, n_boot0, n_boot, bon.scored),
            "alarm_control": alarm_control(bon.scored, start.metrics, start.scored, best_of_n, n_boot0, n_boot),
            "start": start.metrics,
            "matched_kl": F.matched_kl_grid({k: c for k, c in curves.items() if F.monotone(c)} or curves),
            "comparisons": F.matched_kl_comparisons(with_bon, None, ("reward", "judge", "pred_entropy")),
            "matched_reward": F.matched_kl_comparisons(curves, None, ("pred_entropy",), x="reward"),
            "n_boot": n_boot, "gain_fractions": fractions, "read_along": F.READ_ALONG, **({"objective_progress": progress} if progress else {}),
            **optimum_entry,
            **({"judge_selected": js} if (js := F.judge_selected(bon.scored, boot, ns)) else {}),
            "non_monotone": [c for c, pts in with_bon.items() if not F.monotone(pts)],
            "non_monotone_reward": [c for c, pts in curves.items() if not F.monotone(pts, "reward")]}


def maximises_objective(over: dict, cfg) -> bool:
    """Whether a family's training maximises E[r] - β·KL (RLOO; reward distillation, whose minimiser is π_β):
    its climb toward the best objective at its β is measured (`optimum.objective_progress`). DPO's pairs
    carry only which completion won, so its optimum tilts by a fitted preference, not by the reward; RLOO on a
    reshaped reward (`dpo.reward_shape`, e.g. vBoN's log-quantile) maximises another objective."""
    if over.get("method") == "rloo":
        return over.get("reward_shape", cfg.dpo.reward_shape) == "raw"
    return over.get("loss", cfg.dpo.loss) in VALUE_LOSSES


def optimum_parts(bon_scored: list[dict], curves: dict[str, list[dict]], bon: list[dict], boot: SharedBootstrap,
                  fields: tuple[str, ...], n_samples: int) -> tuple[dict, list[dict], dict]:
    """The KL-optimal curve from the start's best-of-N samples ({OPTIMUM: curve}, {} when their N
    cannot carry it), each trained point's share of best-of-N's and the optimum's gain at its KL
    (`frontier.gain_fractions`), and the result's "optimum" entry ({} without the curve). The
    optimum is a bound: it joins the plots and the point table, never the matched-KL comparisons."""
    opt = O.optimum_curve(bon_scored, boot, fields)
    entry = {"label": O.OPTIMUM, "kl_cap": O.optimum_kl_cap(bon_scored), "n_samples": n_samples,
             "min_samples": O.OPT_MIN_ESS}
    return ({O.OPTIMUM: opt} if opt else {}), F.gain_fractions(curves, bon, opt), ({"optimum": entry} if opt else {})


def point_alarms(seed_evals: dict[str, list[Evaluation]], start: Evaluation, n_boot0: int, n_boot: int,
                 selection: list[dict]) -> list[dict]:
    """The alarm record (`alarm.assess`) of each sweep point ("label@beta": its seeds pooled and
    measured with `n_boot0` resamples) against the pooled start; the gap bootstrap uses `n_boot`, its
    reward-judge slope the start's best-of-N pool `selection`."""
    out = []
    for key, evs in seed_evals.items():
        label, beta = key.rsplit("@", 1)
        ev = pooled(label, evs, n_boot0)
        out.append({"label": label, "beta": float(beta),
                    **assess(ev.metrics, ev.scored, start.metrics, start.scored, n_boot, selection)})
    return out


def publish_result(pipe: Pipeline, name: str, result: dict, tables: dict[str, list[dict]], images: list[Path],
                   charts: tuple[tuple[str, str], ...] = ()) -> None:
    """Write the experiment's `<name>.json` and log its results run (job type results; no-op when tracking
    is off): each of `tables` as `<name>/<key>` (one column per scalar field), its plots, and each (x, y) of
    `charts` as a native chart of the "results" table's points. A rerun whose result is the one the run dir
    holds (its wall time aside: everything came from the cache) makes no second results run. Rank 0 only."""
    if not pipe.dist.main:
        return
    path = pipe.paths.result(name)
    old = read_json(path) if path.exists() else None
    write_json(path, result)
    if old is not None and _without_time(old) == _without_time(read_json(path)):
        return
    tr = pipe.trackers(name, "results")
    try:
        for key, rows in tables.items():
            cols = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float, str, bool))})
            tr.log_table(f"{name}/{key}", cols, [[r.get(c) for c in cols] for r in rows])
        for img in images:
            tr.log_image(f"{name}/{Path(img).stem}", str(img))
        for x, y in charts:  # e.g. the frontiers as wandb charts
            cols = ["label", "beta", "n", x, y]
            rows = [[p["label"], p.get("beta"), p.get("n"), p[x], p[y]] for p in tables["results"] if p.get(y) is not None]
            tr.log_scatter(f"{name}/frontier_{y}_vs_{x}", cols, rows, x, y, f"{name}: {y} against {x} (each curve's label)")
    finally:
        tr.finish()


def _without_time(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "wall_minutes"}
