"""Command line: `python -m alignment <stage> [--preset P] [--config F.yaml] [--set k=v ...]`.

Stages build on each other and are cached in the run dir, so `python -m alignment train`
after `sample` reuses the samples, and any stage resumes after an interrupt.

  assets     fetch the offline assets (models, reviews) and build the reward and judge heads, once
  prompts    train/eval prompts          sample   N samples per train prompt
  score      reward of every sample      pairs    preference pairs
  train      one DPO policy (dpo.*)      eval     the start policy and every trained one
  run        Level 1: sigmoid vs hinge vs the start policy, table + plots + examples
  lr-lesson  the seed's lr 1e-3 next to dpo.lr     sweep   Level 2/3: divergences x betas x seeds
  sft        tune the start policy on review text (model.policy=offline-sft loads it)
"""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, load_config
from .presets import PRESETS, SWEEP_ALPHAS, SWEEP_BETAS, SWEEP_LOSSES, SWEEP_SEEDS

STAGES = ["assets", "prompts", "sample", "score", "pairs", "train", "eval", "run", "lr-lesson", "sweep", "sft"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m alignment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", choices=STAGES, help="what to run (run = the whole Level 1)")
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS), help="named sizes (alignment/presets.py)")
    ap.add_argument("--config", default=None, help="YAML file with {section: {field: value}}")
    ap.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="K=V",
                    help="overrides such as dpo.beta=0.05 sample.n_samples=8 (repeatable: --set a=1 --set b=2)")
    ap.add_argument("--losses", default=None, help=f"sweep: comma-separated losses (default {','.join(SWEEP_LOSSES)})")
    ap.add_argument("--betas", default=None, help=f"sweep: comma-separated betas (default {_csv(SWEEP_BETAS)})")
    ap.add_argument("--seeds", default=None, help=f"sweep: comma-separated seeds (default {_csv(SWEEP_SEEDS)})")
    ap.add_argument("--alphas", default=None, help=f"sweep: alphas for loss=alpha (default {_csv(SWEEP_ALPHAS)})")
    return ap


def _csv(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def parse_args(argv: list[str] | None):
    """argparse, plus the stage found where a greedy `--set a=1 train` swallowed it."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.stage is None:
        stray = [o for o in args.overrides if "=" not in o and o in STAGES]
        if not stray:
            ap.error(f"a stage is required: one of {', '.join(STAGES)}")
        args.stage = stray[0]
        args.overrides = [o for o in args.overrides if o != stray[0]]
    return args


def sweep_grid(args) -> dict:
    """The sweep's axes from the command line (defaults: experiments' constants)."""
    def parse(text, kind, default, name):
        try:
            return tuple(kind(x) for x in text.split(",")) if text else default
        except ValueError:
            raise ConfigError(f"--{name}={text!r} is not a comma-separated list of {kind.__name__}s") from None

    return {"losses": parse(args.losses, str, SWEEP_LOSSES, "losses"), "betas": parse(args.betas, float, SWEEP_BETAS, "betas"),
            "seeds": parse(args.seeds, int, SWEEP_SEEDS, "seeds"), "alphas": parse(args.alphas, float, SWEEP_ALPHAS, "alphas")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, args.preset)
        grid = sweep_grid(args)
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from .assets import AssetError
    from .data import DataError
    from .rundir import RunDirMismatch
    from .reward import RewardError

    from .distributed import shutdown

    try:
        return run_stage(args, cfg, grid)
    except ConfigError as e:  # e.g. a sweep setting that fails the dpo rules
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (RunDirMismatch, DataError, RewardError, AssetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # a user-fixable problem: one line, no traceback
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is saved in the run dir; rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        shutdown()  # under `accelerate launch`: a clean exit for every rank


def run_stage(args, cfg, grid: dict) -> int:
    if args.stage == "assets":
        from .assets import ensure_all
        from .reward import load_judge, load_reward, load_topic_judge

        paths = ensure_all()
        scorers = {"reward": load_reward(cfg.reward), "judge": load_judge(cfg.eval.judge, cfg.reward),
                   "on-topic judge": load_topic_judge(cfg.eval.topic_judge, cfg.reward)}
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
        for name, scorer in scorers.items():
            print(f"{name}:", getattr(scorer, "metrics", {}))
        return 0
    from . import experiments
    from .pipeline import Pipeline

    pipe = Pipeline(cfg)
    if args.stage != "sft":
        pipe.prepare()  # the SFT start policy and the scorer heads (built once, announced), the scorers
    actions = {
        "prompts": lambda: {k: len(v) for k, v in pipe.prompts().items()},
        "sample": lambda: {"samples": len(pipe.samples())},
        "score": lambda: {"rewards": len(pipe.rewards())},
        "pairs": lambda: pipe.pairs()[1],
        "train": lambda: {"policy": str(pipe.train().dir)},
        "eval": lambda: [pipe.evaluate().metrics] + [pipe.evaluate(p).metrics for p in pipe.policies()],
        "run": lambda: experiments.level1(pipe),
        "lr-lesson": lambda: experiments.lr_lesson(pipe),
        "sweep": lambda: experiments.sweep(pipe, **grid),
        "sft": pipe.sft,
    }
    result = actions[args.stage]()
    if pipe.dist.main:  # under `accelerate launch`, one report
        print(render(args.stage, result))
        print(where(pipe))
    return 0


def render(stage: str, result) -> str:
    """What a stage prints: the report module's tables and lines, or the result as JSON."""
    from . import report

    if stage == "run":
        lines = ["", result["table"], "", "95 % CIs, bootstrap over prompts:", "", result["ci_table"], "",
                 *(report.gain_line(r) for r in report.trained_rows(result["rows"]))]
        for ex in result["examples"][:2]:  # side by side: the same held-out prompt, one sample each
            lines.append(f"\nprompt: {ex['prompt']!r}")
            lines += [f"  {model:>26}: {text[:140]}" for model, text in ex.items() if model != "prompt"]
        return "\n".join(lines)
    if stage == "lr-lesson":
        return "\n".join(["", report.markdown_table(report.results_rows(result["rows"], extra=("lr",))),
                          report.lr_sentence(result["rows"], result["start"])])
    if stage == "sweep":
        return "\n".join(["", report.markdown_table(report.frontier_rows(result["points"])), "",
                          *report.sweep_lines(result), "", "Matched-KL comparisons (reward):",
                          *result["verdicts"]])
    if stage == "sft":
        return json.dumps({k: v for k, v in result.items() if k != "train_loss"}, indent=2, default=str)
    return json.dumps(result, indent=2, default=str)


def where(pipe) -> str:
    P = pipe.paths
    lines = [f"\nresults: {P.root.resolve()}"]
    if P.plots.exists():
        lines.append(f"plots:   {P.plots.resolve()}")
    if pipe.cfg.track.mode == "offline" and P.wandb.exists():
        lines.append(f"wandb:   {P.wandb.resolve()}  (offline; upload with `wandb sync {P.wandb}/offline-run-*`)")
    if pipe.dist.world > 1:
        import torch.distributed as td

        lines.append(f"ran on:  {pipe.dist.world} processes ({td.get_backend()}), work split by batches")
    return "\n".join(lines)
