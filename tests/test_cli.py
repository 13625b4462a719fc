"""The command line: one sub-parser per stage with its own help, an unknown stage or flag answered
with the closest one, flags of another stage refused with the stage that reads them, `--print-config`
and the `config` command, a preset's run dir, the `fields` listing and its docs, the did-you-mean for
a misspelt field, and config hashes that stay what cached run dirs were keyed by."""
from __future__ import annotations

import dataclasses

import re

import pytest
import yaml

from alignment import cli
from alignment.argv import COMMANDS, FIELDS, STAGE_INFO, STAGES, parse_args
from alignment.config import (SECTIONS, Config, ConfigError, apply_overrides, field_docs, field_names, load_config,
                              section_deps)
from alignment.base.io import stable_hash
from alignment.presets import LEVEL3_BETAS, PRESETS, SWEEP_BETAS
from alignment.steps.sft import sft_deps

SWEEP_FLAGS = ("--losses", "--betas", "--seeds", "--alphas", "--best-of-n")
LEVEL3_FLAGS = ("--betas", "--seeds", "--best-of-n")  # and --methods
COMMON_FLAGS = ("--preset", "--config", "--set", "--print-config")


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if a stage would run or a run dir would be opened."""
    def boom(*a, **k):
        raise AssertionError("a stage ran")
    monkeypatch.setattr(cli, "run_stage", boom)
    monkeypatch.setattr(cli, "Pipeline", boom)


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def fails(capsys, *argv: str) -> str:
    """stderr of a command that must exit 2 (argparse's SystemExit or main's return)."""
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    return capsys.readouterr().err


# ---- help ---------------------------------------------------------------------------------------
def test_top_level_help_lists_every_stage_with_one_line(capsys):
    out = help_of(capsys)
    for name, info in STAGE_INFO.items():
        assert re.search(rf"^    {re.escape(name)} +{re.escape(info.summary)}$", out, re.M), name
    assert f"    {FIELDS}" in out and "--help" in out


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_shows_its_own_flags(capsys, stage):
    out = help_of(capsys, stage)
    assert out.startswith(f"usage: python -m alignment {stage} ")
    assert STAGE_INFO[stage].writes.splitlines()[0] in out  # what it does and writes
    for flag in COMMON_FLAGS:
        assert flag in out
    for flag in SWEEP_FLAGS:
        assert (flag in out) == (stage == "sweep" or (stage == "level3" and flag in LEVEL3_FLAGS)), flag
    assert ("--methods" in out) == (stage == "level3")
    if stage == "sweep":  # with their defaults
        assert f"(default {','.join(f'{b:g}' for b in SWEEP_BETAS)})" in out
    if stage == "level3":
        assert f"(default {','.join(f'{b:g}' for b in LEVEL3_BETAS)})" in out and "dpo,distill,online-dpo,rloo" in out


def test_level3_flags_reach_level3(monkeypatch):
    args = parse_args(["level3", "--methods", "dpo,rloo", "--betas", "0.3", "--seeds", "1"])
    assert cli.sweep_grid(args) == {"methods": ("dpo", "rloo"), "betas": (0.3,), "seeds": (1,),
                                    "best_of_n": (1, 2, 4, 8, 16, 32, 64, 128)}
    with pytest.raises(ConfigError, match="--methods: unknown"):
        cli.sweep_grid(parse_args(["level3", "--methods", "ppo"]))


def test_run_and_sweep_help_differ(capsys):
    assert help_of(capsys, "run") != help_of(capsys, "sweep")


# ---- where the stage sits; flags of another stage -------------------------------------------------
@pytest.mark.parametrize("argv,stage,overrides,preset", [
    (["run", "--preset", "smoke", "--set", "run_dir=X"], "run", ["run_dir=X"], "smoke"),
    (["run", "--set", "a=1", "b=2", "--set", "c=3"], "run", ["a=1", "b=2", "c=3"], None),
    (["--set", "a=1", "train"], "train", ["a=1"], None),  # a greedy --set took the stage
    (["--set", "a=1", "b=2", "pairs", "--set", "c=3"], "pairs", ["a=1", "b=2", "c=3"], None),
    (["--preset", "sweep", "sweep"], "sweep", [], "sweep"),  # a preset named like a stage is its value
    (["--preset", "sweep", "--set", "a=1", "run"], "run", ["a=1"], "sweep"),
    (["--pre", "sweep", "run"], "run", [], "sweep"),  # an abbreviated one-value flag too
])
def test_the_stage_may_come_anywhere(argv, stage, overrides, preset):
    args = parse_args(argv)
    assert (args.stage, args.overrides, args.preset) == (stage, overrides, preset)


def test_config_value_named_like_a_stage_is_not_the_stage():
    args = parse_args(["--config", "run", "sweep", "--betas", "1"])
    assert (args.stage, args.config, args.betas) == ("sweep", "run", "1")


def test_a_stage_is_required(capsys):
    err = fails(capsys, "--set", "a=1")
    assert err.startswith("error: a stage is required\nstages: assets, prompts,") and "commands: fields, config" in err


@pytest.mark.parametrize("argv,word,guess", [
    (["runn"], "runn", "run"), (["swep", "--betas", "1"], "swep", "sweep"), (["--set", "a=1", "evl"], "evl", "eval"),
    (["--preset", "smoke", "reslts"], "reslts", "results"), (["lr-lesons"], "lr-lesons", "lr-lesson"),
    (["xyzzy"], "xyzzy", None),
])
def test_an_unknown_stage_names_the_closest_and_every_stage(capsys, nothing_runs, argv, word, guess):
    err = fails(capsys, *argv).splitlines()
    assert err[0] == f"error: unknown stage {word!r}" + (f"; did you mean {guess}?" if guess else "")
    assert err[1] == f"stages: {', '.join(STAGES)}"
    assert err[2] == "commands: fields, config, results, judge-check, judge-select" and "results" in COMMANDS


@pytest.mark.parametrize("argv,expect", [
    (["run", "--prest", "smoke"], "unknown flag --prest for run; did you mean --preset?"),
    (["run", "--print-confg"], "unknown flag --print-confg for run; did you mean --print-config?"),
    (["run", "--bettas", "1"], "unknown flag --bettas for run; did you mean --betas (a flag of python -m alignment sweep)?"),
    (["run", "--bogus"], "unknown flag --bogus for run"),
])
def test_an_unknown_flag_names_the_closest_and_the_stage_flags(capsys, nothing_runs, argv, expect):
    assert fails(capsys, *argv) == f"error: {expect}\nflags of run: --preset, --config, --set, --print-config, --help\n"


def test_abbreviations_and_stray_words(capsys, nothing_runs):
    assert parse_args(["run", "--print"]).print_config  # an unambiguous abbreviation stays allowed
    assert fails(capsys, "run", "dpo.beta=1") == ("error: dpo.beta=1 looks like a config override: "
                                                  "python -m alignment run --set dpo.beta=1\n")
    assert fails(capsys, "run", "foo").startswith("error: unexpected argument 'foo' for run: it takes flags only\n")


@pytest.mark.parametrize("stage,argv,expect", [
    ("run", ["--betas", "0.1"], "--betas is a sweep flag: python -m alignment sweep --betas 0.1"),
    ("train", ["--losses=hinge,ipo"], "--losses is a sweep flag: python -m alignment sweep --losses hinge,ipo"),
    ("eval", ["--set", "dpo.beta=1", "--seed", "3"], "--seeds is a sweep flag: python -m alignment sweep --seeds 3"),
    ("assets", ["--alphas"], "--alphas is a sweep flag: python -m alignment sweep --alphas ..."),
])
def test_a_flag_of_another_stage_names_that_stage(capsys, nothing_runs, stage, argv, expect):
    err = fails(capsys, stage, *argv)
    assert err == f"error: {expect}\n"  # one line


def test_sweep_flags_reach_the_sweep(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run_stage", lambda args, cfg, grid: seen.update(grid=grid) or 0)
    assert cli.main(["sweep", "--betas", "0.1,1", "--losses", "hinge", "--best-of-n", "1,8",
                     "--set", "track.mode=disabled"]) == 0
    assert seen["grid"]["betas"] == (0.1, 1.0) and seen["grid"]["losses"] == ("hinge",)
    assert seen["grid"]["best_of_n"] == (1, 8) and seen["grid"]["seeds"] == (0, 1, 2)


def test_a_flag_the_command_does_not_take(capsys, nothing_runs):
    assert fails(capsys, "fields", "--preset", "smoke") == "error: fields takes no --preset\nflags of fields: --help\n"


def test_the_judge_commands_reach_their_modules(capsys, monkeypatch, nothing_runs):
    seen = []
    monkeypatch.setattr(cli.judge_check, "main", lambda argv: seen.append(("check", argv)))
    monkeypatch.setattr(cli.judge_select, "main", lambda argv: seen.append(("select", argv)))
    assert cli.main(["judge-check", "runs/x/eval"]) == 0
    assert cli.main(["judge-select"]) == 0 and cli.main(["judge-select", "out.json"]) == 0
    assert seen == [("check", ["runs/x/eval"]), ("select", ["results/judge_selection.json"]), ("select", ["out.json"])]
    assert "EVAL_DIR" in fails(capsys, "judge-check")  # the eval dir is required
    out = help_of(capsys)
    assert "judge-check" in out and "judge-select" in out


def test_judge_check_names_what_an_eval_dir_lacks(tmp_path):
    with pytest.raises(SystemExit, match=r"usage: python -m alignment judge-check EVAL_DIR.*missing: .*sft\)"):
        cli.judge_check.main([str(tmp_path)])


# ---- --print-config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_print_config_runs_nothing_and_reads_back(tmp_path, capsys, nothing_runs, stage):
    run_dir = tmp_path / "run"
    argv = ["--preset", "smoke", "--set", f"run_dir={run_dir}", "dpo.beta=0.2", "sample.n_samples=3"]
    assert cli.main([stage, *argv, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert isinstance(yaml.safe_load(out), dict)
    saved = tmp_path / "printed.yaml"
    saved.write_text(out)
    assert load_config(str(saved)) == load_config(None, argv[3:], "smoke")
    assert load_config(str(saved)).dpo.beta == 0.2
    assert not run_dir.exists()  # no Pipeline, no run dir


def test_print_config_of_a_yaml_file(tmp_path, capsys, nothing_runs):
    y = tmp_path / "my.yaml"
    y.write_text("dpo:\n  loss: hinge\n")
    assert cli.main(["run", "--config", str(y), "--set", "dpo.beta=0.3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["dpo"]["loss"], printed["dpo"]["beta"]) == ("hinge", 0.3)


def test_print_config_of_a_sweep_shows_its_axes_and_checks_them(capsys, nothing_runs):
    assert cli.main(["sweep", "--betas", "0.1,1", "--print-config"]) == 0
    assert "# sweep axes: --losses reverse_kl,forward_kl,js,alpha --betas 0.1,1 " in capsys.readouterr().out
    assert "--betas='a,b' is not a comma-separated list" in fails(capsys, "sweep", "--betas", "a,b", "--print-config")


def test_print_config_still_validates(capsys, nothing_runs):
    assert "dpo.beta=-1.0 is invalid" in fails(capsys, "run", "--set", "dpo.beta=-1", "--print-config")


# ---- a preset's run dir; the config command -------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_names_its_run_dir(capsys, nothing_runs, preset):
    assert cli.main(["run", "--preset", preset, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run_dir"] == f"runs/{preset}"
    assert load_config(preset=preset).run_dir == f"runs/{preset}"
    assert load_config(preset=preset, overrides=["run_dir=runs/x"]).run_dir == "runs/x"  # an explicit one wins
    assert load_config().run_dir == "runs/default"


def test_a_yaml_run_dir_beats_the_preset_one(tmp_path):
    y = tmp_path / "my.yaml"
    y.write_text("run_dir: runs/mine\n")
    assert load_config(str(y), preset="hub").run_dir == "runs/mine"


def test_the_config_command_prints_what_print_config_does(tmp_path, capsys, nothing_runs):
    argv = ["--preset", "hub", "--set", "dpo.beta=0.2"]
    assert cli.main(["config", *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# python -m alignment config: resolved config (defaults <- preset hub <- --set)\n")
    assert cli.main(["run", *argv, "--print-config"]) == 0
    assert yaml.safe_load(out) == yaml.safe_load(capsys.readouterr().out) == load_config(None, argv[3:], "hub").to_dict()
    assert yaml.safe_load(out)["run_dir"] == "runs/hub"
    assert "eval.judge='offline-reward' is not a name eval.judge knows; did you mean offline-ft?" in \
        fails(capsys, "config", "--set", "eval.judge=offline-reward")


def test_the_config_command_loads_no_model_and_writes_nothing(tmp_path, capsys, monkeypatch, nothing_runs):
    import transformers

    def boom(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    assert cli.main(["config", "--preset", "smoke", "--set", f"run_dir={tmp_path / 'run'}"]) == 0
    assert "n_train_prompts: 8" in capsys.readouterr().out and not (tmp_path / "run").exists()


# ---- fields and their docs ----------------------------------------------------------------------------
def test_every_field_of_every_section_has_a_doc():
    expected = ["run_dir"] + [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(Config(), s))]
    assert field_names() == expected
    docs = field_docs()
    assert list(docs) == expected
    assert [n for n, d in docs.items() if len(d) < 8] == []  # a real sentence, not an empty comment


def test_fields_lists_name_default_and_doc(capsys):
    assert cli.main(["fields"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == field_names()
    beta = next(line for line in lines if line.startswith("dpo.beta "))
    assert beta.split()[1] == "0.1" and beta.endswith(field_docs()["dpo.beta"])
    ref = next(line for line in lines if line.startswith("model.ref "))
    assert ref.split()[1] == '""'  # an empty default is visible


def test_fields_of_one_section(capsys):
    assert cli.main(["fields", "dpo"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [n for n in field_names() if n.startswith("dpo.")]
    assert fails(capsys, "fields", "dop") == "error: unknown section dop; did you mean dpo?\n"


# ---- did you mean ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,guess", [
    ("dpo.bta", "dpo.beta"), ("dop.beta", "dpo.beta"), ("dop.bta", "dpo.beta"), ("samples.n_samples", "sample.n_samples"),
    ("beta", "dpo.beta"), ("run_dri", "run_dir"), ("dpo.n_samples", "sample.n_samples or eval.n_samples"),
])
def test_a_misspelt_field_suggests_the_closest(key, guess):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), {key: "1"})
    assert str(e.value) == f"unknown field {key}; did you mean {guess}?"


def test_no_close_field_points_to_the_listing():
    with pytest.raises(ConfigError, match=r"^unknown field xyz\.qqq; `python -m alignment fields` lists them$"):
        apply_overrides(Config(), {"xyz.qqq": "1"})


def test_a_misspelt_set_on_the_command_line(capsys, nothing_runs):
    assert fails(capsys, "run", "--set", "dpo.bta=0.1") == "config error: unknown field dpo.bta; did you mean dpo.beta?\n"


def test_a_bad_best_of_n_fails_before_anything_runs(capsys, nothing_runs):
    assert fails(capsys, "sweep", "--best-of-n", "0,4") == ("config error: --best-of-n='0,4': each N must be >= 1 "
                                                           "(e.g. --best-of-n 1,2,4,8,16,32,64)\n")
    assert "--best-of-n='4,x' is not a comma-separated list of ints" in fails(capsys, "sweep", "--best-of-n", "4,x")


@pytest.mark.parametrize("text,guess", [("dop:\n  beta: 0.1\n", "dop.beta; did you mean dpo.beta?"),
                                        ("dpo:\n  bta: 0.1\n", "dpo.bta; did you mean dpo.beta?")])
def test_a_misspelt_yaml_field_suggests_the_closest(tmp_path, text, guess):
    y = tmp_path / "my.yaml"
    y.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(y))
    assert str(e.value) == f"unknown field {guess} (in {y})"


def test_a_yaml_file_must_hold_sections(tmp_path):
    y = tmp_path / "list.yaml"
    y.write_text("- dpo.beta=1\n")
    with pytest.raises(ConfigError, match="must hold"):
        load_config(str(y))


# ---- the config hash (what cached run dirs and the SFT model's cache dir are keyed by) -----------------
# Per preset (None = no preset): stable_hash(cfg.to_dict()) (the run dir's manifest), stable_hash of
# section_deps over every section (the hashed fields that key each cached artifact), and
# stable_hash(sft_deps(cfg), 8) (the SFT start policy's cache dir). Changing field metadata or docs
# must leave all three as they are; a new default moves the first two (and is then recorded here), and
# the third, the SFT model's, has stayed the same since the SFT stage had its present fields: no
# setting outside `sft` and its data fields may rebuild the start policy.
# A preset's run dir (runs/<preset>, what `make` has always passed) is in the first (run_dir is not
# hashed into the other two); so are fields that key the caches only when set (`dpo.method`, `dpo.rounds`,
# `dpo.credit`, `dpo.credit_lambda`, `dpo.kl`, `dpo.reward_shape`) and fields that key none (`track.log_models`, `sample.batch_size`:
# each completion draws from its own stream, whatever the batch).
HASHES = {
    None: ("cdb58423cbbd", "52760dc80977", "dfdee80e"),
    "smoke": ("1358f3b3eb52", "77829f120cdd", "f948167c"),
    "default": ("cdb58423cbbd", "52760dc80977", "dfdee80e"),
    "sweep": ("ef023c69a52a", "28f8b56c0943", "dfdee80e"),
    "level3": ("0e4b3b2030c0", "28f8b56c0943", "dfdee80e"),  # the sweep's artifact keys: same data, same settings
    "full": ("3693de540abe", "6f920b9e558b", "6b4d2fde"),
    "hub": ("93c3b0972667", "94d3c0dda2ad", "1f4a485c"),
}


def test_every_preset_has_its_hashes():
    assert set(HASHES) == {None, *PRESETS}


@pytest.mark.parametrize("preset", list(HASHES))
def test_config_hashes_are_unchanged(preset):
    cfg = load_config(preset=preset)
    got = (stable_hash(cfg.to_dict()), stable_hash(section_deps(cfg, *SECTIONS)), stable_hash(sft_deps(cfg), 8))
    assert got == HASHES[preset]
    assert cfg.to_dict() == dataclasses.asdict(cfg)


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_an_interrupted_command_logs_its_time_and_says_how_to_resume(tmp_path, monkeypatch, capsys, how):
    """Ctrl-C or a kill (SIGTERM) mid-stage: exit 130 with the resume hint, and the run dir's timings log
    keeps the command's time so far, marked interrupted (a rerun adds its own entry)."""
    import os
    import signal
    from types import SimpleNamespace

    from alignment.base.io import read_json
    from alignment.base.timing import StageTimes
    from alignment.run.rundir import RunPaths

    def stop():
        with times("sampling"):
            if how == "kill":  # the handler raises: nothing after the kill runs
                os.kill(os.getpid(), signal.SIGTERM)
                pytest.fail("SIGTERM did not end the command")
            raise KeyboardInterrupt

    times = StageTimes()
    fake = SimpleNamespace(prepare=lambda **k: None, sft=None, times=times, dist=SimpleNamespace(main=True, world=1),
                           paths=RunPaths(tmp_path / "run"), data=SimpleNamespace(samples=stop))
    monkeypatch.setattr(cli, "Pipeline", lambda cfg: fake)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["sample", "--set", f"run_dir={tmp_path / 'run'}"]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    (entry,) = read_json(tmp_path / "run" / "timings.json")
    assert entry["stage"] == "sample" and entry["note"] == cli.INTERRUPTED and entry["rows"][0]["stage"] == "sampling"
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the caller's again
