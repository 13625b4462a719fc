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
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="K=V",
                    help="overrides such as dpo.beta=0.05 sample.n_samples=8")
    ap.add_argument("--losses", default="reverse_kl,forward_kl,js,alpha,chi2,hellinger,jeffrey,ipo",
                    help="sweep: comma-separated losses")
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
    if args.stage == "sft":
        from .sft import run_sft

        print(json.dumps(run_sft(cfg), indent=2, default=str))
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
        "train": lambda: {"policy": str(pipe.train())},
        "eval": lambda: [pipe.evaluate("sft")] + [pipe.evaluate(d.name, d) for d in sorted((pipe.dir / "policies").glob("*"))
                                                   if (d / "model" / "config.json").exists()],
        "run": lambda: experiments.level1(pipe),
        "lr-lesson": lambda: experiments.lr_lesson(pipe),
        "sweep": lambda: experiments.sweep(pipe, tuple(args.losses.split(",")), floats(args.betas),
                                           tuple(int(s) for s in args.seeds.split(",")), floats(args.alphas)),
    }
    result = actions[args.stage]()
    report(args.stage, result, pipe)
    return 0


def report(stage: str, result, pipe) -> None:
    if stage == "run":
        print("\n" + result["table"])
        for r in result["rows"][1:]:
            print(f"{r['model']}: reward gain vs SFT {r['reward_gain']:+.3f} "
                  f"(95% CI {r['gain_ci_lo']:+.3f} .. {r['gain_ci_hi']:+.3f})")
        for ex in result["examples"][:2]:  # side by side: the same held-out prompt, one sample each
            print(f"\nprompt: {ex['prompt']!r}")
            for model, text in ex.items():
                if model != "prompt":
                    print(f"  {model:>26}: {text[:140]}")
    elif stage == "sweep":
        for s in result["summary"]:
            print(f"{s['label']:>12} beta={s['beta']:<5g} reward {s['eval/reward_mean'][0]:+.3f}±{s['eval/reward_mean'][1]:.3f} "
                  f"token_H {s['eval/token_entropy'][0]:.3f} KL {s['eval/kl_to_ref'][0]:.3f} "
                  f"ref_ppl {s['eval/ref_perplexity'][0]:.1f}")
    else:
        print(json.dumps(result, indent=2, default=str)[:4000])
    print(f"\nresults: {pipe.dir.resolve()}")
    if (pipe.dir / "plots").exists():
        print(f"plots:   {(pipe.dir / 'plots').resolve()}")
    if pipe.cfg.track.mode == "offline" and (pipe.dir / "wandb").exists():
        print(f"wandb:   {(pipe.dir / 'wandb').resolve()}  (offline; upload with `wandb sync {pipe.dir / 'wandb'}/offline-run-*`)")
