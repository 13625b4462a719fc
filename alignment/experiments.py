"""The assignment's experiments on top of `Pipeline`: Level 1 (sigmoid vs hinge vs SFT),
the learning-rate lesson, and the Level 2/3 divergence sweep. Each returns plain dicts and
writes results.json / results.md / plots under the run dir."""
from __future__ import annotations

from pathlib import Path

from .evaluate import examples_table, results_table
from .io import read_json, write_json
from .metrics import bootstrap_diff_ci, mean_std_over_seeds
from .pipeline import Pipeline, policy_name

SFT = "sft"


def compare_to_sft(pipe: Pipeline, name: str) -> dict:
    """Reward difference policy - SFT on held-out prompts, with a bootstrap CI."""
    a = read_json(pipe.dir / "eval" / name / "rewards.json")
    b = read_json(pipe.dir / "eval" / SFT / "rewards.json")
    d, lo, hi = bootstrap_diff_ci(a, b, n_boot=pipe.cfg.eval.n_boot)
    return {"reward_gain": d, "gain_ci_lo": lo, "gain_ci_hi": hi, "significant": lo > 0}


def level1(pipe: Pipeline, losses: tuple[str, ...] = ("sigmoid", "hinge")) -> dict:
    """SFT baseline + one policy per loss, all evaluated on their own held-out samples."""
    from . import plots

    _, stats = pipe.pairs()
    rows = [pipe.evaluate(SFT)]
    for loss in losses:
        d = pipe.train(loss=loss)
        m = pipe.evaluate(d.name, d)
        rows.append({**m, **compare_to_sft(pipe, d.name)})
    dirs = {r["model"]: pipe.dir / "eval" / r["model"] for r in rows}
    plot_dir = pipe.dir / "plots"
    files = [plots.reward_hist(dirs, plot_dir / "level1_rewards.png"),
             plots.training_curves({r["model"]: pipe.dir / "policies" / r["model"] for r in rows[1:]},
                                   plot_dir / "level1_training.png"),
             plots.margin_hist(pipe.dir / "pairs.jsonl", plot_dir / "pair_margins.png")]
    result = {"pairs": stats, "rows": rows, "table": results_table(rows),
              "examples": examples_table(dirs, pipe.cfg.eval.n_examples), "plots": [str(f) for f in files]}
    write_json(pipe.dir / "level1.json", result)
    _log_summary(pipe, "level1", rows, files)
    return result


def lr_lesson(pipe: Pipeline, lrs: tuple[float, ...] = (1e-3, 5e-6), loss: str = "sigmoid") -> list[dict]:
    """The seed's lr 1e-3 next to a sane lr: reward may rise while ref perplexity explodes."""
    rows = []
    for lr in lrs:
        d = pipe.train(loss=loss, lr=lr)
        rows.append({**pipe.evaluate(d.name, d), "lr": lr, **compare_to_sft(pipe, d.name)})
    write_json(pipe.dir / "lr_lesson.json", rows)
    return rows


def sweep(pipe: Pipeline, losses: tuple[str, ...], betas: tuple[float, ...], seeds: tuple[int, ...],
          alphas: tuple[float, ...] = (0.3, 0.5, 0.7)) -> dict:
    """Every (divergence, beta, seed) on the same pairs; one point per run, mean/std per setting."""
    from . import plots

    pipe.evaluate(SFT)
    runs = []
    for loss in losses:
        for alpha in (alphas if loss == "alpha" else (pipe.cfg.dpo.alpha,)):
            for beta in betas:
                for seed in seeds:
                    d = pipe.train(loss=loss, beta=beta, alpha=alpha, seed=seed)
                    m = pipe.evaluate(d.name, d)
                    label = f"alpha={alpha:g}" if loss == "alpha" else loss
                    runs.append({**m, **compare_to_sft(pipe, d.name), "loss": loss, "label": label,
                                 "alpha": alpha, "beta": beta, "seed": seed})
    keys = ["eval/reward_mean", "eval/token_entropy", "eval/predictive_entropy", "eval/kl_to_ref",
            "eval/ref_perplexity", "eval/distinct_2"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["label"], r["beta"]), []).append(r)
    summary = [{"label": lab, "beta": beta, "n_seeds": len(rs), **{k: list(v) for k, v in mean_std_over_seeds(rs, keys).items()}}
               for (lab, beta), rs in groups.items()]
    sft = read_json(pipe.dir / "eval" / SFT / "metrics.json")
    files = [plots.tradeoff(summary, sft, "eval/token_entropy", pipe.dir / "plots" / "sweep_reward_vs_entropy.png"),
             plots.tradeoff(summary, sft, "eval/predictive_entropy", pipe.dir / "plots" / "sweep_reward_vs_pred_entropy.png"),
             plots.tradeoff(summary, sft, "eval/kl_to_ref", pipe.dir / "plots" / "sweep_reward_vs_kl.png")]
    result = {"runs": runs, "summary": summary, "sft": sft, "ordering": ordering_check(summary),
              "plots": [str(f) for f in files]}
    write_json(pipe.dir / "sweep.json", result)
    _log_summary(pipe, "sweep", runs, files)
    return result


def ordering_check(summary: list[dict]) -> dict:
    """Wang et al.'s expected ordering: reverse KL has the highest reward and lowest entropy,
    forward KL the opposite. Reports whether our runs agree, per beta."""
    out = {}
    for beta in sorted({s["beta"] for s in summary}):
        at = {s["label"]: s for s in summary if s["beta"] == beta}
        if "reverse_kl" in at and "forward_kl" in at:
            rk, fk = at["reverse_kl"], at["forward_kl"]
            out[str(beta)] = {
                "reward_reverse_gt_forward": rk["eval/reward_mean"][0] > fk["eval/reward_mean"][0],
                "entropy_reverse_lt_forward": rk["eval/token_entropy"][0] < fk["eval/token_entropy"][0]}
    return out


def _log_summary(pipe: Pipeline, name: str, rows: list[dict], images: list[Path]) -> None:
    """One wandb run per experiment with its table and plots (no-op when tracking is off)."""
    tr = pipe._tracker(name, group="eval")
    try:
        cols = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float, str, bool))})
        tr.log_table(f"{name}/results", cols, [[r.get(c) for c in cols] for r in rows])
        for img in images:
            tr.log_image(f"{name}/{Path(img).stem}", str(img))
    finally:
        tr.finish()
