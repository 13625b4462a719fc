"""Display helpers for `Alignment Methods.ipynb` (IPython only): DataFrames, PNGs, Markdown, and
quiet outputs. What is shown — tables, lines, computed sentences — comes from `alignment.report`,
the same module the CLI prints with; no pipeline logic lives here.
"""
from __future__ import annotations

import os

from .io import atomic_open
from .report import markdown_table, results_rows


def quiet_notebook() -> None:
    """Keep the notebook's outputs clean: no progress bars (ours and transformers' would leave
    fragments in the saved outputs), no tqdm warning when ipywidgets is missing."""
    import warnings

    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm when a bar is created
    warnings.filterwarnings("ignore", message="IProgress not found")
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
    except ImportError:
        pass


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


def show_png(path) -> None:
    """Embed a PNG written by `alignment.plots` in the cell output."""
    from IPython.display import Image, display

    display(Image(filename=str(path)))


def show_md(text: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(text))


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
    run_dir = Path(path).parent / str(params.get("RUN_DIR", f"runs/notebook-{params.get('SIZE', 'smoke')}"))
    reused = run_dir.exists()  # cached artifacts of an earlier execution make this one faster
    t0 = time.time()
    NotebookClient(nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(Path(path).parent)}},
                   env={**os.environ, "TQDM_DISABLE": "1"}).execute()
    wall = time.time() - t0
    note = next(_cell_text(c) for c in nb.cells if "run-note" in c.metadata.get("tags", [])).splitlines()[0]
    head = nb.cells[0].source
    text = (f"{NOTE_START}\n**The outputs below** were produced by `alignment.notebook.publish` with "
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


if __name__ == "__main__":  # python -m alignment.notebook "Alignment Methods.ipynb" SIZE=default ...
    import ast
    import sys

    nb_path, *assigns = sys.argv[1:]
    values = {k: ast.literal_eval(v) if v[:1] in "([{'\"0123456789-" or v in ("True", "False", "None") else v
              for k, v in (a.split("=", 1) for a in assigns)}
    print(f"executed in {publish(nb_path, values) / 60:.1f} min")
