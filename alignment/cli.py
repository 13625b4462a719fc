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
import sys

import torch.distributed as td

from . import experiments, report
from .assets import AssetError, ensure_all
from .config import ConfigError, load_config
from .data import DataError
from .distributed import shutdown
from .io import write_json
from .pipeline import Pipeline
from .rundir import RunDirMismatch
from .presets import PRESETS, SWEEP_ALPHAS, SWEEP_BETAS, SWEEP_LOSSES, SWEEP_SEEDS
from .reward import RewardError, load_judge, load_reward, load_topic_judge

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
        paths = ensure_all()
        scorers = {"reward": load_reward(cfg.reward), "judge": load_judge(cfg.eval.judge, cfg.reward),
                   "on-topic judge": load_topic_judge(cfg.eval.topic_judge, cfg.reward)}
        print(report.render("assets", {"paths": {k: str(v) for k, v in paths.items()},
                                       "scorers": {k: getattr(s, "metrics", {}) for k, s in scorers.items()}}))
        return 0
    pipe = Pipeline(cfg)
    if args.stage != "sft":  # the SFT start policy and the offline heads (built once, announced); scorers to score
        pipe.prepare(load_scorers=args.stage in ("score", "eval", "run", "lr-lesson", "sweep"))
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
        print(report.render(args.stage, result))
        print(report.stage_times(pipe.times.rows()))
        write_json(pipe.paths.result("timings"), {"stage": args.stage, "rows": pipe.times.rows()})
        print(where(pipe))
    return 0


def where(pipe) -> str:
    """`report.where_text` for this pipeline's run dir (its plots and offline wandb run where they exist)."""
    P = pipe.paths
    offline = pipe.cfg.track.mode == "offline" and P.wandb.exists()
    return report.where_text(str(P.root.resolve()), plots=str(P.plots.resolve()) if P.plots.exists() else None,
                             wandb=str(P.wandb.resolve()) if offline else None, wandb_dir=str(P.wandb),
                             processes=pipe.dist.world, backend=td.get_backend() if pipe.dist.world > 1 else None)
