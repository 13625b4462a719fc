"""Command line: `python -m alignment <stage> [--preset P] [--config F.yaml] [--set k=v ...]`.

Stages build on each other and are cached in the run dir, so `python -m alignment train`
after `sample` reuses the samples, and any stage resumes after an interrupt.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_config

STAGES = ["assets", "prompts", "sample", "score", "pairs", "train", "eval", "run", "lr-lesson", "sweep", "sft"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m alignment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=STAGES, help="what to run (run = the whole Level 1)")
    ap.add_argument("--preset", default=None, help="smoke | default | full | hub")
    ap.add_argument("--config", default=None, help="YAML file with {section: {field: value}}")
    ap.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="K=V",
                    help="overrides such as dpo.beta=0.05 sample.n_samples=8 (repeatable: --set a=1 --set b=2)")
    ap.add_argument("--losses", default=None, help="sweep: comma-separated losses (default: experiments.SWEEP_LOSSES)")
    ap.add_argument("--betas", default="0.1", help="sweep: comma-separated betas")
    ap.add_argument("--seeds", default="0,1", help="sweep: comma-separated seeds")
    ap.add_argument("--alphas", default="0.3,0.5,0.7", help="sweep: alpha values for loss=alpha")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, args.preset)
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from .assets import AssetError
    from .data import DataError
    from .pipeline import RunDirMismatch
    from .reward import RewardError

    try:
        return run_stage(args, cfg)
    except (RunDirMismatch, DataError, RewardError, AssetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # a user-fixable problem: one line, no traceback
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is saved in the run dir; rerun the same command to resume",
              file=sys.stderr)
        return 130


def run_stage(args, cfg) -> int:
    if args.stage == "assets":
        from .assets import ensure_all
        from .reward import load_reward

        paths = ensure_all()
        reward = load_reward(cfg.reward)
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
        print("offline reward:", getattr(reward, "metrics", {}))
        return 0
    from . import experiments
    from .pipeline import Pipeline

    pipe = Pipeline(cfg)
    floats = lambda s: tuple(float(x) for x in s.split(","))  # noqa: E731
    actions = {
        "prompts": lambda: {k: len(v) for k, v in pipe.prompts().items()},
        "sample": lambda: {"samples": len(pipe.samples())},
        "score": lambda: {"rewards": len(pipe.rewards())},
        "pairs": lambda: pipe.pairs()[1],
        "train": lambda: {"policy": str(pipe.train().dir)},
        "eval": lambda: [pipe.evaluate().metrics] + [pipe.evaluate(p).metrics for p in pipe.policies()],
        "run": lambda: experiments.level1(pipe),
        "lr-lesson": lambda: experiments.lr_lesson(pipe),
        "sweep": lambda: experiments.sweep(
            pipe, tuple(args.losses.split(",")) if args.losses else experiments.SWEEP_LOSSES, floats(args.betas),
            tuple(int(s) for s in args.seeds.split(",")), floats(args.alphas)),
        "sft": pipe.sft,
    }
    result = actions[args.stage]()
    print(render(args.stage, result))
    print(where(pipe))
    return 0


def render(stage: str, result) -> str:
    """What a stage prints: the report module's tables and lines, or the result as JSON."""
    from . import report

    if stage == "run":
        lines = ["", result["table"], *(report.gain_line(r) for r in result["rows"][1:])]
        for ex in result["examples"][:2]:  # side by side: the same held-out prompt, one sample each
            lines.append(f"\nprompt: {ex['prompt']!r}")
            lines += [f"  {model:>26}: {text[:140]}" for model, text in ex.items() if model != "prompt"]
        return "\n".join(lines)
    if stage == "lr-lesson":
        return "\n".join(["", report.markdown_table(report.results_rows(result["rows"], extra=("lr",))),
                          report.lr_sentence(result["rows"], result["start"])])
    if stage == "sweep":
        return "\n" + report.markdown_table(report.sweep_rows(result["summary"])) + "\n\n" + \
            "\n".join(report.ordering_sentences(result))
    return json.dumps(result, indent=2, default=str)[:4000]


def where(pipe) -> str:
    P = pipe.paths
    lines = [f"\nresults: {P.root.resolve()}"]
    if P.plots.exists():
        lines.append(f"plots:   {P.plots.resolve()}")
    if pipe.cfg.track.mode == "offline" and P.wandb.exists():
        lines.append(f"wandb:   {P.wandb.resolve()}  (offline; upload with `wandb sync {P.wandb}/offline-run-*`)")
    return "\n".join(lines)
