"""The published results: RESULTS.md and the README's results block are exactly what
`python -m alignment results` renders from the committed `results/` files (so no number in them can
drift from its source), and `collect` copies a run dir's results without local paths."""
import json
import shutil
from pathlib import Path

import pytest

from alignment.run import publish
from alignment.study import results_page
from alignment.cli import main
from alignment.base.io import read_json, write_json
from alignment.config import load_config
from alignment.steps.reward import HEADS, head_dir
from alignment.steps.sft import sft_out_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published() -> dict:
    return publish.load(ROOT / publish.RESULTS_DIR)


def test_results_md_is_the_rendering_of_the_committed_results(published):
    assert (ROOT / publish.DOC).read_text(encoding="utf-8") == publish.render(published), \
        "RESULTS.md differs from its rendering: run `python -m alignment results` and commit both"


def test_readme_results_block_is_the_rendering_of_the_committed_results(published):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(publish.MARKS[0]) == 1 and readme.count(publish.MARKS[1]) == 1
    block = publish.MARKS[0] + readme.split(publish.MARKS[0], 1)[1].split(publish.MARKS[1], 1)[0] + publish.MARKS[1]
    assert block == publish.headline(published)


def test_the_published_numbers_are_the_level1_results(published):
    """The headline's table cells are the stored rows' values (formatted), model by model."""
    block = publish.headline(published)
    for row in published["level1"]["rows"]:
        line = next(ln for ln in block.splitlines() if ln.startswith(f"| {row['model']} |"))
        assert f"{row['eval/reward_mean']:.3f} ({row['eval/reward_ci_lo']:.3f} .. {row['eval/reward_ci_hi']:.3f})" in line
    assert all(f"{r['reward_gain']:+.3f}" in block for r in published["level1"]["rows"] if "reward_gain" in r)


def test_every_figure_the_document_shows_is_committed(published):
    doc = publish.render(published)
    for name in [n for names in publish.FIGURES.values() for n in names]:
        if f"results/{name}.png" in doc:
            assert (ROOT / publish.RESULTS_DIR / f"{name}.png").exists(), name


def _fake_run(root: Path, level1: dict, config: dict) -> Path:
    run = root / "run"
    (run / "plots").mkdir(parents=True)
    write_json(run / "level1.json", {**level1, "plots": [str(run / "plots" / "level1_rewards.png")]})
    write_json(run / "lr_lesson.json", {"rows": [], "start": {}, "examples": [], "plots": ["/somewhere/x.png"]})
    write_json(run / "config.json", {**config, "run_dir": str(run)})
    write_json(run / "timings.json", [{"stage": "run", "seconds": 1.0, "processes": 1, "hardware": {}, "rows": []}])
    (run / "plots" / "level1_rewards.png").write_bytes(b"png")
    return run


def test_collect_copies_a_run_without_its_local_paths(tmp_path, monkeypatch, published):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    cfg = published["level1.config"]
    run = _fake_run(tmp_path, published["level1"], cfg)
    sft_dir = sft_out_dir(load_config(overrides=cfg))
    sft_dir.mkdir(parents=True)
    write_json(sft_dir / "sft_metrics.json", {"ppl_after": 44.7, "out": str(sft_dir)})
    for kind in HEADS:
        head_dir(kind).mkdir(parents=True, exist_ok=True)
        write_json(head_dir(kind) / "metrics.json", {"test_accuracy": 0.5})

    write_json(run / "pairs_stats.json", {"n_pairs": 128})  # left by a shared draw: not what the seeds trained on
    dest = tmp_path / "results"
    publish.collect(dest, run)
    assert read_json(dest / "level1.pairs_stats.json") == published["level1"]["pairs"]
    assert read_json(dest / "level1.json") == published["level1"]  # "plots" (local paths) dropped
    assert "run_dir" not in read_json(dest / "level1.config.json")
    assert read_json(dest / "sft.json") == {"ppl_after": 44.7}
    assert set(read_json(dest / "scorers.json")) == set(HEADS)
    assert (dest / "level1_rewards.png").read_bytes() == b"png"
    assert str(tmp_path) not in "".join(p.read_text() for p in dest.glob("*.json"))


def test_the_published_pair_statistics_are_those_the_seeds_trained_on(published):
    """Each seed's own draw (data.per_seed) paired best with worst: one pair per train prompt, none tied."""
    stats, cfg = published["level1.pairs_stats"], published["level1.config"]
    assert stats == published["level1"]["pairs"] and stats["per_seed"] is cfg["data"]["per_seed"] is True
    assert sorted(stats["draws"]) == [str(s) for s in published["level1"]["seeds"]] and len(stats["draws"]) == 5
    for st in stats["draws"].values():
        assert st["n_pairs"] == st["n_prompts"] == cfg["data"]["n_train_prompts"] == 256 and st["prompts_all_tied"] == 0
    assert stats["n_pairs"] == 256


@pytest.mark.parametrize("per_seed", [True, False])
def test_collect_takes_a_sweeps_pair_statistics_from_the_draws_it_trained_on(tmp_path, published, per_seed):
    """data.per_seed: each grid seed's draws/seed<k>/pairs_stats.json (a run_dir/pairs_stats.json is
    another draw's); else the shared draw's run_dir/pairs_stats.json."""
    run = tmp_path / "sweep"
    run.mkdir()
    write_json(run / "sweep.json", {"grid": {"seeds": [0, 1]}, "points": [], "plots": []})
    write_json(run / "config.json", {**published["sweep.config"], "run_dir": str(run), "data": {
        **published["sweep.config"]["data"], "per_seed": per_seed}})
    write_json(run / "pairs_stats.json", {"n_pairs": 128})
    for seed, n in ((0, 250), (1, 252), (2, 7)):  # seed 2: not in this sweep's grid
        write_json(run / "draws" / f"seed{seed}" / "pairs_stats.json", {"n_pairs": n})
    publish.collect(tmp_path / "results", sweep_dir=run)
    got = read_json(tmp_path / "results" / "sweep.pairs_stats.json")
    want = ({"per_seed": True, "n_pairs": [250, 252], "draws": {"0": {"n_pairs": 250}, "1": {"n_pairs": 252}}}
            if per_seed else {"n_pairs": 128})
    assert got == want


def test_results_command_renders_in_place_and_names_a_missing_run(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / publish.RESULTS_DIR, tmp_path / publish.RESULTS_DIR)
    readme = f"intro\n{publish.MARKS[0]}\nold numbers\n{publish.MARKS[1]}\noutro\n"
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["results"]) == 0
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "old numbers" not in text and text.startswith("intro\n") and text.endswith("\noutro\n")
    assert (tmp_path / publish.DOC).read_text(encoding="utf-8") == (ROOT / publish.DOC).read_text(encoding="utf-8")
    assert main(["results", "--level1", str(tmp_path / "nowhere")]) == 2
    assert "nowhere/level1.json is missing" in capsys.readouterr().err


def test_results_json_hold_data_only(published):
    """No Markdown and no local paths in the committed results."""
    for name, data in published.items():
        text = json.dumps(data)
        assert "/tmp/" not in text and "/root/" not in text and "/home/" not in text, name
        assert "| ---" not in text and "|---" not in text, name


def test_the_conclusions_do_not_depend_on_the_order_of_stored_keys(published):
    """A result read back from JSON has its keys sorted: the sentences follow the table's order."""
    from alignment.study.report import conclusions
    level1 = published["level1"]
    assert len(level1["design"]) > 1
    shuffled = {**level1, "design": dict(reversed(list(level1["design"].items())))}
    assert conclusions(shuffled) == conclusions(level1)
    assert conclusions(level1).index("`sigmoid") < conclusions(level1).index("`hinge")


def test_the_frontier_sentence_counts_what_the_comparisons_say():
    """Best-of-N above a curve whichever side of the pair it is on, and only where every KL value
    compared says so (a tie is not a win); entropy rows and pairs of divergences are counted apart."""
    from alignment.study.stats import NOT_DISTINGUISHABLE as ND

    def c(a, b, field, verdict):
        return {"a": a, "b": b, "field": field, "verdict": verdict}

    sweep = {"points": [{"label": "rkl"}, {"label": "fkl"}, {"label": "best-of-N", "n": 1},
                        {"label": "best-of-N", "n": 64}],
             "comparisons": [c("rkl", "best-of-N", "reward", "lower"), c("best-of-N", "fkl", "reward", "higher"),
                             c("rkl", "best-of-N", "judge", ND), c("fkl", "best-of-N", "judge", "lower"),
                             c("best-of-N", "rkl", "judge", "lower"),
                             c("rkl", "fkl", "reward", "higher"), c("rkl", "fkl", "judge", ND),
                             c("rkl", "fkl", "pred_entropy", "higher")]}
    text = results_page._frontier_brief(sweep)
    assert "2 divergence curves" in text and "N ≤ 64" in text
    # judge: rkl ties at one KL and is below at another -> not counted; fkl below -> counted
    assert "best-of-N is above 2 of the 2 curves it overlaps on the reward and 1 of the 2 on the judge" in text
    assert "among the curves 1 of 2 reward and judge comparisons are distinguishable" in text
