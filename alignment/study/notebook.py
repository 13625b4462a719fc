"""Display helpers for `Alignment Methods.ipynb` (IPython only): DataFrames, PNGs, Markdown, quiet
outputs, and the executor that publishes it. The tables and sentences the CLI also prints come from
`alignment.study.report`; the few only the notebook shows (the SFT summary, the scorers' accuracies, what
to run for a missing sweep) are built here from data. No pipeline logic lives here.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..base.io import atomic_open
from ..presets import axes_flags
from .markdown import markdown_table
from .report import GAIN_COLS, results_rows, trained_rows


def quiet_notebook() -> None:
    """Keep the notebook's outputs clean: no progress bars (ours and transformers' would leave
    fragments in the saved outputs), no tqdm warning when ipywidgets is missing, no deprecation
    notices, no file paths in warnings, whole tables."""
    import warnings

    os.environ["TQDM_DISABLE"] = "1"  # read by this package's progress bars when they are made (`timing.bars_off`)
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", category=FutureWarning)  # the libraries' deprecation notices
    warnings.formatwarning = _warning_line  # a warning without the path of the file that raised it
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        import pandas as pd

        pd.set_option("display.max_colwidth", 120)  # show whole completions in tables
        pd.set_option("display.width", 200)
        pd.set_option("display.max_columns", None)  # every column of a table, none hidden behind "..."
    except ImportError:
        pass


def _warning_line(message, category, *args, **kwargs) -> str:
    return f"{category.__name__}: {message}\n"


def frame(rows: list[dict], index: str | None = None, digits: int = 3):
    """A pandas DataFrame (rounded) when pandas is installed, else Markdown; for `display`."""
    try:
        import pandas as pd
    except ImportError:  # pandas comes with `datasets`, but do not depend on it
        from IPython.display import Markdown

        return Markdown(markdown_table(rows))
    df = pd.DataFrame(rows)
    if index and index in df:
        df = df.set_index(index)
    return df.round(digits)


def results_frame(rows: list[dict], extra: tuple[str, ...] = ()):
    return frame(results_rows(rows, extra), index="model")


def gains_frame(rows: list[dict], extra: tuple[str, ...] = ()):
    """The trained policies' paired gains over the start policy (reward, judge, on_topic), one row each."""
    keep = {"model", *extra, *(c for _, c in GAIN_COLS), "distinguishable"}
    return frame([{k: v for k, v in r.items() if k in keep} for r in results_rows(trained_rows(rows), extra)],
                 index="model")


def show_png(path) -> None:
    """Embed a PNG written by `alignment.study.plots` in the cell output."""
    from IPython.display import Image, display

    display(Image(filename=str(path)))


def show_md(text: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(text))


@contextmanager
def timed(what: str) -> Iterator[None]:
    """Print how long the block took: `<what> in 12.3 s` (or minutes)."""
    t0 = time.perf_counter()
    yield
    took = time.perf_counter() - t0
    print(f"{what} in {took:.1f} s" if took < 120 else f"{what} in {took / 60:.1f} min")


def shown_path(path) -> str:
    """A path for a saved output: relative to the working directory when under it, `~/...` under the
    home directory, else `.../<name>`; never a machine's absolute path."""
    if not Path(path).is_absolute() and ".." not in Path(path).parts:
        return str(Path(path))  # as the user wrote it (a symlinked run dir stays `runs/default`)
    p = Path(path).expanduser().resolve()
    for base, prefix in ((Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        if p.is_relative_to(base):
            return prefix + str(p.relative_to(base))
    return f".../{p.name}"


# ---- what only the notebook shows ---------------------------------------------------------------
def sft_summary(result: dict) -> str:
    """The SFT stage's result (`Pipeline.sft`) in one Markdown sentence."""
    resumed = f", resumed from step {result['resumed_from_step']}" if result.get("resumed_from_step") else ""
    return (f"**SFT start policy**: `{result['base']}` tuned on {result['n_train_reviews']} train-pool reviews "
            f"({result['n_train_tokens']} tokens, {result['steps']} steps, {result['seconds'] / 60:.1f} min on "
            f"{result['device']} with {result['threads']} thread(s){resumed}). Held-out review perplexity "
            f"{result['ppl_before']:.1f} before → **{result['ppl_after']:.1f}** after.")


def sft_samples(result: dict) -> list[dict]:
    """Held-out openings continued before and after SFT, one row per prompt."""
    return [{"prompt": b["prompt"], "before SFT": b["completion"], "after SFT": a["completion"]}
            for b, a in zip(result["samples_before"], result["samples_after"])]


def scorer_lines(scorers) -> list[str]:
    """One line per scorer (`RunModels.scorers`): the held-out accuracy its offline head recorded."""
    lines = []
    for name, scorer in (("reward (trains)", scorers.reward), ("judge (never trains)", scorers.judge),
                         ("on-topic judge", scorers.topic)):
        m = getattr(scorer, "metrics", None)
        if not m:
            lines.append(f"{name}: {'none' if scorer is None else 'no held-out accuracy recorded for this model'}")
            continue
        vader = f" (VADER on the same rows: {m['vader_test_accuracy']:.3f})" if "vader_test_accuracy" in m else ""
        lines.append(f"{name}: held-out accuracy {m['test_accuracy']:.3f}{vader} on {m['n_test']} texts sharing no "
                     f"normalised text with its {m['n_train']} training texts — {m['sources']}")
    return lines


def sweep_hint(run_dir, preset: str, overrides: dict, grid: dict, stage: str = "sweep") -> str:
    """What to run when a sweep's (or Level 3's, `stage="level3"`) result is missing: `make sweep` for the
    `sweep` preset in runs/sweep (`make level3` likewise), else the same on the command line; or
    RUN_SWEEP / RUN_LEVEL3 = True. `grid`: its axes."""
    axes = axes_flags(grid, changed_only=stage == "sweep")
    where = shown_path(run_dir)
    if preset == stage and where == f"runs/{stage}" and not overrides:
        cmd = f"make {stage}" + (f' ARGS="{axes}"' if axes and stage == "sweep" else "")
    else:
        sets = " ".join(f"{k}={v}" for k, v in {"run_dir": where, **overrides}.items())
        cmd = f"python -m alignment {stage} --preset {preset} --set {sets}" + (f" {axes}" if axes else "")
    return (f"No {stage} result in `{where}` yet, so this section shows nothing. Produce it with `{cmd}`, or set "
            f"`RUN_{stage.upper()} = True` in the parameters cell and run this cell again (finished runs are reused "
            "either way).")


def committed_note(result: dict, run_dir, stage: str = "sweep") -> str:
    """What a section shows when its result was read from the committed `results/` (`experiments.committed_result`):
    that file, and how to make one's own in `run_dir`; "" for a result of the run dir's own."""
    if not result.get("committed"):
        return ""
    return (f"`{shown_path(run_dir)}` holds no {stage} result of yours yet, so this section shows the committed one "
            f"(`{result['committed']}`, what `make {stage}` produced for the published results). `make {stage}` or "
            f"`RUN_{stage.upper()} = True` in the parameters cell builds yours.")


# ---- executing and publishing the notebook ------------------------------------------------------
NOTE_START, NOTE_END = "<!-- run-note -->", "<!-- /run-note -->"


def set_parameters(nb, params: dict) -> None:
    """Write `params` into the cell tagged `parameters` (each `NAME = value` line; comments kept),
    so the committed notebook shows the values that produced its outputs (no injected cell)."""
    import re

    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    src = cell.source
    for name, value in params.items():
        pat = re.compile(rf"^{name} = .*?(\s+#.*)?$", re.M)
        if not pat.search(src):
            raise KeyError(f"notebook parameter {name!r} is not in the parameters cell")
        src = pat.sub(lambda m: f"{name} = {value!r}" + (m.group(1) or ""), src, count=1)
    cell.source = src


def _cell_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def publish(path: str, params: dict, kernel: str = "python3", timeout: int = 7200) -> float:
    """Execute the notebook at `path` in place with `params`, clean (no progress-bar fragments,
    no injected-parameters cell), and write what produced the outputs — size, hardware, wall
    time — into its first cell between the run-note markers. Returns the wall time in seconds."""
    import time
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    set_parameters(nb, params)
    run_dir = Path(path).parent / str(params.get("RUN_DIR") or f"runs/{params.get('SIZE', 'default')}")
    reused = run_dir.exists()  # cached artifacts of an earlier execution make this one faster
    t0 = time.time()
    NotebookClient(nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(Path(path).parent)}},
                   env={**os.environ, "TQDM_DISABLE": "1"}, store_widget_state=False).execute()
    for key in ("widgets", "papermill"):  # no widget state, no record of another (e.g. smoke) execution
        nb.metadata.pop(key, None)
    wall = time.time() - t0
    note = next(_cell_text(c) for c in nb.cells if "run-note" in c.metadata.get("tags", [])).splitlines()[0]
    head = nb.cells[0].source
    text = (f"{NOTE_START}\n**The outputs below** were produced by `alignment.study.notebook.publish` with "
            f"{', '.join(f'{k}={v!r}' for k, v in params.items())} in **{wall / 60:.1f} min** of wall time"
            f"{f' (reusing the cached artifacts already in {run_dir.name}/)' if reused else ' (from scratch)'}. "
            f"{note}\n{NOTE_END}")
    if NOTE_START in head:
        head = head[: head.index(NOTE_START)] + text + head[head.index(NOTE_END) + len(NOTE_END):]
    else:
        head = head.rstrip() + "\n\n" + text
    nb.cells[0].source = head
    with atomic_open(path, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    return wall


if __name__ == "__main__":  # python -m alignment.study.notebook "Alignment Methods.ipynb" SIZE=default ...
    import ast
    import sys

    if len(sys.argv) < 2:
        raise SystemExit('usage: python -m alignment.study.notebook "Alignment Methods.ipynb" [SIZE=default NAME=VALUE ...]'
                         " (re-executes the notebook in place; `make notebook-publish` does this at the default size)")
    nb_path, *assigns = sys.argv[1:]
    values = {k: ast.literal_eval(v) if v[:1] in "([{'\"0123456789-" or v in ("True", "False", "None") else v
              for k, v in (a.split("=", 1) for a in assigns)}
    print(f"executed in {publish(nb_path, values) / 60:.1f} min")
