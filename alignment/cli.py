"""Command line: `python -m alignment <stage> [--preset P] [--config F.yaml] [--set K=V ...]`.

One sub-command per stage (`python -m alignment <stage> --help` shows its own help; the words and their
parsing live in `alignment.argv`), each with the common config flags (`--preset`, `--config`, `--set`,
`--print-config`); `fields` lists the config fields, `config` prints the resolved config, `results`
renders the committed results. `main` loads the config, checks the models' names, and runs the stage.
"""
from __future__ import annotations

import difflib
import os
import signal
import sys
import threading

import torch.distributed as td
import yaml

from .argv import CONFIG, FIELDS, JUDGE_CHECK, JUDGE_SELECT, PROG, RESULTS, parse_args
from .study import console
from .run import experiments, judge_check, judge_select, publish
from .assets.offline import AssetError, ensure_all
from .config import SECTIONS, ConfigError, field_docs, field_names, load_config
from .steps.data import DataError
from .base.distributed import shutdown
from .base.machine import hardware
from .run.pipeline import Pipeline
from .run.rundir import RunDirMismatch
from .run.stagecache import offline_prerequisites
from .presets import LEVEL3_BEST_OF_N, LEVEL3_BETAS, LEVEL3_METHODS, SWEEP_ALPHAS, SWEEP_BEST_OF_N, SWEEP_BETAS, SWEEP_LOSSES, SWEEP_SEEDS, axes_flags
from .steps.reward import RewardError, ensure_head, load_judge, load_reward, load_topic_judge
from .base.timing import log_command


def sweep_grid(args) -> dict:
    """The sweep's axes from the command line (defaults: experiments' constants)."""
    def parse(text, kind, default, name):
        try:
            return tuple(kind(x) for x in text.split(",")) if text else default
        except ValueError:
            raise ConfigError(f"--{name}={text!r} is not a comma-separated list of {kind.__name__}s") from None

    get = lambda name: getattr(args, name, None)  # noqa: E731  (only `sweep` and `level3` have these flags)
    if getattr(args, "stage", None) == "level3":
        grid = {"methods": parse(get("methods"), str, tuple(LEVEL3_METHODS), "methods"),
                "betas": parse(get("betas"), float, LEVEL3_BETAS, "betas")}
        unknown = [m for m in grid["methods"] if m not in LEVEL3_METHODS]
        if unknown:
            raise ConfigError(f"--methods: unknown {unknown}; choose from {','.join(LEVEL3_METHODS)}")
    else:
        grid = {"losses": parse(get("losses"), str, SWEEP_LOSSES, "losses"),
                "betas": parse(get("betas"), float, SWEEP_BETAS, "betas")}
    grid.update(seeds=parse(get("seeds"), int, SWEEP_SEEDS, "seeds"))
    if "losses" in grid:
        grid.update(alphas=parse(get("alphas"), float, SWEEP_ALPHAS, "alphas"))
    bon = LEVEL3_BEST_OF_N if "methods" in grid else SWEEP_BEST_OF_N
    grid.update(best_of_n=parse(get("best_of_n"), int, bon, "best-of-n"))
    if min(grid["best_of_n"]) < 1:
        raise ConfigError(f"--best-of-n={get('best_of_n')!r}: each N must be >= 1 (e.g. --best-of-n 1,2,4,8,16,32,64)")
    return grid


def fields_text(sections: list[str] | None = None) -> str:
    """Every config field as `section.field  default  one-line doc` (only `sections`' when given)."""
    cfg, docs = load_config(), field_docs()
    names = [n for n in field_names() if not sections or n.split(".")[0] in sections]

    def value(name):
        v = cfg
        for part in name.split("."):
            v = getattr(v, part)
        return '""' if v == "" else str(v)

    w_name, w_value = max(len(n) for n in names), max(len(value(n)) for n in names)
    return "\n".join(f"{n:<{w_name}}  {value(n):<{w_value}}  {docs.get(n, '')}".rstrip() for n in names)


def config_yaml(cfg, args, grid: dict) -> str:
    """The resolved config as YAML that `--config` reads back (the sweep's axes as a comment)."""
    sources = " <- ".join(["defaults", *([f"preset {args.preset}"] if args.preset else []),
                           *([args.config] if args.config else []), *(["--set"] if args.overrides else [])])
    lines = [f"# {PROG} {args.stage}: resolved config ({sources})",
             yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False).rstrip()]
    if args.stage in ("sweep", "level3"):
        lines.append(f"# {args.stage} axes: " + axes_flags(grid))
    return "\n".join(lines)


def emit(text: str) -> int:
    """Print `text` (a listing); a reader that stops early (`| head`) ends it quietly, not with a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage == FIELDS:
        for s in args.sections:
            if s not in SECTIONS and s != "run_dir":
                close = difflib.get_close_matches(s, SECTIONS, n=1)
                hint = f"did you mean {close[0]}?" if close else f"choose from {', '.join(SECTIONS)}"
                print(f"error: unknown section {s}; {hint}", file=sys.stderr)
                return 2
        return emit(fields_text(args.sections))
    if args.stage == RESULTS:
        try:
            publish.collect(publish.RESULTS_DIR, args.level1, args.sweep, args.level3)
            print("\n".join(f"wrote {p}" for p in publish.write()))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.stage in (JUDGE_CHECK, JUDGE_SELECT):  # commands on the scorers, outside any run's config
        try:
            (judge_check if args.stage == JUDGE_CHECK else judge_select).main(
                [args.eval_dir] if args.stage == JUDGE_CHECK else [args.out])
        except (AssetError, RewardError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted: rerun the same command (scorers it already built are kept)", file=sys.stderr)
            return 130
        return 0
    try:
        cfg = load_config(args.config, args.overrides, args.preset)
        grid = sweep_grid(args)
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.stage == CONFIG or args.print_config:
        return emit(config_yaml(cfg, args, grid))
    # a kill ends a command as Ctrl-C does; not where SIGTERM was ignored or taken by the caller, nor off the main thread
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    previous, interrupted = signal.signal(signal.SIGTERM, _interrupt) if ours else None, False
    try:
        return run_stage(args, cfg, grid)
    except ConfigError as e:  # e.g. a sweep setting that fails the dpo rules
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (RunDirMismatch, DataError, RewardError, AssetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # a user-fixable problem: one line, no traceback
        return 2
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: finished work is saved in the run dir; rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if ours:
            signal.signal(signal.SIGTERM, previous)
        shutdown(meet=not interrupted)  # under `accelerate launch`: a clean exit for every rank


INTERRUPTED = "interrupted (Ctrl-C or a kill): what it built is kept, and a rerun resumes from it"


def _interrupt(signum, frame) -> None:
    """SIGTERM (a kill, a job scheduler's stop) as KeyboardInterrupt: checkpoints and the timings log are kept."""
    raise KeyboardInterrupt


# The stages that are experiments (Level 1, the learning-rate check, Level 2's sweep, Level 3): each one call of
# the pipeline, and whether it takes the command line's grid (--losses/--methods, --betas, --seeds, ...)
EXPERIMENTS = {"run": (experiments.level1, False), "lr-lesson": (experiments.lr_lesson, False),
               "sweep": (experiments.sweep, True), "level3": (experiments.level3, True)}


def run_stage(args, cfg, grid: dict) -> int:
    if args.stage == "assets":
        paths = ensure_all()
        for kind in offline_prerequisites(cfg)[1]:  # the offline scorer heads this config names, trained once
            ensure_head(kind)
        scorers = {"reward": load_reward(cfg.reward), "judge": load_judge(cfg.eval.judge, cfg.reward),
                   "on-topic judge": load_topic_judge(cfg.eval.topic_judge, cfg.reward)}
        print(console.render("assets", {"paths": {k: str(v) for k, v in paths.items()},
                                       "scorers": {k: getattr(s, "metrics", {}) for k, s in scorers.items()}}))
        return 0
    pipe = Pipeline(cfg)
    summaries = {  # the data stages and one policy: what each prints
        "prompts": lambda: {k: len(v) for k, v in pipe.data.prompts().items()},
        "sample": lambda: {"samples": len(pipe.data.samples())},
        "score": lambda: {"rewards": len(pipe.data.rewards())},
        "pairs": lambda: pipe.data.pairs()[1],
        "train": lambda: {"policy": str(pipe.train().dir)},
        "eval": lambda: [pipe.evaluate().metrics] + [pipe.evaluate(p).metrics for p in pipe.policies()],
        "sft": pipe.sft,
    }
    try:
        if args.stage != "sft":  # the SFT start policy and the offline heads (built once, announced); scorers to score
            pipe.prepare(load_scorers=args.stage in ("score", "eval", *EXPERIMENTS))
        if args.stage in EXPERIMENTS:
            experiment, gridded = EXPERIMENTS[args.stage]
            result = experiment(pipe, **(grid if gridded else {}))
        else:
            result = summaries[args.stage]()
    except KeyboardInterrupt:  # Ctrl-C or a kill: the time spent is logged too, then the work saved is resumed by a rerun
        if pipe.dist.main:
            log_command(pipe.paths.result("timings"), args.stage, pipe.times.rows(), hardware(), pipe.dist.world,
                        note=INTERRUPTED)
        raise
    if pipe.dist.main:  # under `accelerate launch`, one report
        print(console.render(args.stage, result))
        print(console.stage_times(pipe.times.rows()))
        log_command(pipe.paths.result("timings"), args.stage, pipe.times.rows(), hardware(), pipe.dist.world)
        print(where(pipe))
    return 0


def where(pipe) -> str:
    """`console.where_text` for this pipeline's run dir (its plots and offline wandb run where they exist)."""
    P = pipe.paths
    offline = pipe.cfg.track.mode == "offline" and P.wandb.exists()
    return console.where_text(str(P.root.resolve()), plots=str(P.plots.resolve()) if P.plots.exists() else None,
                             wandb=str(P.wandb.resolve()) if offline else None, wandb_dir=str(P.wandb),
                             processes=pipe.dist.world, backend=td.get_backend() if pipe.dist.world > 1 else None)
