"""Display helpers for `Alignment Methods.ipynb`: tables, examples side by side, PNGs, and
sentences computed from results. No pipeline logic lives here; every number shown comes from
the dicts that `alignment.experiments` returns (or the JSON files it writes).
"""
from __future__ import annotations

import os
import platform

GAIN_COLS = [("reward_gain", "gain_vs_sft"), ("gain_ci_lo", "gain_ci_lo"), ("gain_ci_hi", "gain_ci_hi")]
SWEEP_COLS = [("eval/reward_mean", "reward"), ("eval/token_entropy", "token_H"),
              ("eval/predictive_entropy", "pred_H"), ("eval/distinct_2", "distinct_2"),
              ("eval/kl_to_ref", "KL"), ("eval/ref_perplexity", "ref_ppl")]


# ---- environment ------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """What produced the outputs: CPU model, cores, torch threads, GPU (if any), versions."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__}


def hardware_note(size: str, extra: str = "") -> str:
    h = hardware()
    dev = f"GPU {h['gpu']}" if h["gpu"] != "none" else "CPU only"
    note = (f"Outputs produced at SIZE={size!r} on {dev}: {h['cpu']}, {h['cpu_cores']} cores "
            f"({h['torch_threads']} torch threads), {h['os']}, Python {h['python']}, torch {h['torch']}.")
    return note + (f" {extra}" if extra else "")


def quiet_notebook() -> None:
    """Keep the notebook's outputs readable: no per-file 'Loading weights' bars from transformers
    (our own sampling bars stay), no tqdm warning when ipywidgets is missing (text bars are used)."""
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import pandas as pd

        pd.set_option("display.max_colwidth", 120)  # show whole completions in tables
        pd.set_option("display.width", 200)
    except ImportError:
        pass


# ---- rendering ---------------------------------------------------------------------------------
def _md_cell(x) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x).replace("|", "\\|").replace("\n", "⏎")


def markdown_table(rows: list[dict], cols: list[str] | None = None) -> str:
    """A Markdown table from a list of dicts (columns in first-seen order unless given)."""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(_md_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


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


def results_rows(rows: list[dict], extra: tuple[str, ...] = ()) -> list[dict]:
    """Evaluation rows (as from `pipe.evaluate` / `experiments.level1`) -> short column names,
    with the gain vs SFT and its CI where present."""
    from .evaluate import TABLE_COLS  # lazy: importing alignment.notebook stays light

    out = []
    for r in rows:
        row = {"model": r["model"]}
        row.update({k: (f"{r[k]:g}" if k == "lr" else r[k]) for k in extra if k in r})  # lr: no rounding to 0
        row.update({c: r[k] for k, c in TABLE_COLS})
        row.update({c: r[k] for k, c in GAIN_COLS if k in r})
        if "significant" in r:
            row["CI>0"] = bool(r["significant"])
        out.append(row)
    return out


def results_frame(rows: list[dict], extra: tuple[str, ...] = ()):
    return frame(results_rows(rows, extra), index="model")


def examples_markdown(examples: list[dict]) -> str:
    """`level1(...)["examples"]`: one row per held-out prompt, one column per model."""
    return markdown_table(examples)


def sweep_rows(summary: list[dict]) -> list[dict]:
    """`sweep(...)["summary"]` -> one row per (divergence, beta): 'mean ± std' over seeds."""
    out = []
    for s in summary:
        row = {"loss": s["label"], "beta": s["beta"], "seeds": s["n_seeds"]}
        for k, c in SWEEP_COLS:
            m, sd = s[k]
            row[c] = f"{m:.3f} ± {sd:.3f}" if s["n_seeds"] > 1 else f"{m:.3f}"
        out.append(row)
    return sorted(out, key=lambda r: -float(r["reward"].split()[0]))


def show_png(path) -> None:
    """Embed a PNG written by `alignment.plots` in the cell output."""
    from IPython.display import Image, display

    display(Image(filename=str(path)))


def show_md(text: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(text))


# ---- sentences computed from results -----------------------------------------------------------
def _fmt_ci(r: dict) -> str:
    return f"{r['reward_gain']:+.3f} (95% CI {r['gain_ci_lo']:+.3f} .. {r['gain_ci_hi']:+.3f})"


def _delta(new: float, old: float) -> str:
    return f"{old:.3f} → {new:.3f} ({new - old:+.3f})"


def ordering_sentences(result: dict) -> list[str]:
    """Wang et al. expect reverse KL: highest reward, lowest entropy; forward KL: the opposite.
    One sentence per beta, with the numbers, saying whether this run agrees."""
    if not result["ordering"]:
        return ["The ordering check needs both reverse_kl and forward_kl in SWEEP_LOSSES; it was not run."]
    out = []
    for beta, chk in result["ordering"].items():
        at = {s["label"]: s for s in result["summary"] if str(s["beta"]) == beta}
        rk, fk = at["reverse_kl"], at["forward_kl"]
        r = (rk["eval/reward_mean"][0], fk["eval/reward_mean"][0])
        h = (rk["eval/token_entropy"][0], fk["eval/token_entropy"][0])
        agree = chk["reward_reverse_gt_forward"] and chk["entropy_reverse_lt_forward"]
        verdict = ("agrees with" if agree else
                   "partly agrees with" if (chk["reward_reverse_gt_forward"] or chk["entropy_reverse_lt_forward"])
                   else "disagrees with")
        out.append(
            f"β={beta}: reward reverse KL {r[0]:+.3f} vs forward KL {r[1]:+.3f} "
            f"({'reverse higher, as expected' if chk['reward_reverse_gt_forward'] else 'reverse not higher, unexpected'}); "
            f"token entropy {h[0]:.3f} vs {h[1]:.3f} "
            f"({'reverse lower, as expected' if chk['entropy_reverse_lt_forward'] else 'reverse not lower, unexpected'}). "
            f"This run {verdict} the expected ordering of Wang et al. (2023).")
    return out


def lr_sentence(rows: list[dict], sft: dict) -> str:
    """The learning-rate lesson in one computed sentence per lr."""
    parts = []
    for r in sorted(rows, key=lambda r: -r["lr"]):
        parts.append(f"lr={r['lr']:g}: reward gain {_fmt_ci(r)}, ref perplexity "
                     f"{_delta(r['eval/ref_perplexity'], sft['eval/ref_perplexity'])}, token entropy "
                     f"{_delta(r['eval/token_entropy'], sft['eval/token_entropy'])}, KL {r['eval/kl_to_ref']:.3f}")
    return "; ".join(parts) + "."


STILL_KL = 0.1  # nats: below this a policy has barely left the reference (smoke-sized runs)


def conclusions(level1: dict, sweep: dict | None = None, sweep_gains: dict | None = None,
                lr_rows: list[dict] | None = None) -> str:
    """Markdown conclusions built only from the results (no typed-in numbers).

    `sweep_gains`: {run model name: experiments.compare_to_sft(...)} for the sweep's runs.
    """
    sft = level1["rows"][0]
    trained = level1["rows"][1:]
    best = max(trained, key=lambda r: r["eval/reward_mean"])
    lines = ["**Level 1** (best-vs-worst pairs): " + "; ".join(
        f"`{r['model']}` reward {r['eval/reward_mean']:+.3f} vs SFT {sft['eval/reward_mean']:+.3f}, gain {_fmt_ci(r)}"
        f" — the CI {'excludes' if r['gain_ci_lo'] > 0 else 'does not exclude'} 0" for r in trained) + "."]
    verdict = ("above SFT" if best["reward_gain"] > 0 else "yet still not above SFT, so no Level 1 loss improved "
               "the mean reward in this run")
    lines.append(
        f"`{best['model']}` reached the highest reward of the Level 1 losses ({verdict}). Its changes vs SFT: "
        f"token entropy {_delta(best['eval/token_entropy'], sft['eval/token_entropy'])}, predictive entropy "
        f"{_delta(best['eval/predictive_entropy'], sft['eval/predictive_entropy'])}, KL(π‖π_ref) "
        f"{best['eval/kl_to_ref']:.3f}, reference perplexity "
        f"{_delta(best['eval/ref_perplexity'], sft['eval/ref_perplexity'])}.")
    moved = max(abs(r["eval/kl_to_ref"]) for r in trained)
    if moved < STILL_KL:
        lines.append(f"At this size the Level 1 policies barely moved from the reference (largest |KL| "
                     f"{moved:.3f} nats < {STILL_KL:g}), so their reward differences are mostly sampling noise; "
                     "use a larger SIZE (more pairs and steps) for conclusions about the losses.")
    if lr_rows:
        lines.append("**Learning rate**: " + lr_sentence(lr_rows, sft))
    if sweep and sweep["summary"]:
        ssft = sweep["sft"]
        top = max(sweep["summary"], key=lambda s: s["eval/reward_mean"][0])
        low = min(sweep["summary"], key=lambda s: s["eval/reward_mean"][0])
        m = lambda s, k: s[k][0]  # noqa: E731  (mean over seeds)
        lines.append(
            f"**Sweep** ({len(sweep['summary'])} settings, {len(sweep['runs'])} runs): the highest mean reward "
            f"was `{top['label']}` (β={top['beta']:g}, {top['n_seeds']} seed(s)) at {m(top, 'eval/reward_mean'):+.3f} "
            f"vs SFT {ssft['eval/reward_mean']:+.3f}; the lowest was `{low['label']}` at {m(low, 'eval/reward_mean'):+.3f}. "
            f"`{top['label']}` vs SFT: token entropy {_delta(m(top, 'eval/token_entropy'), ssft['eval/token_entropy'])}, "
            f"KL {m(top, 'eval/kl_to_ref'):.3f}, reference perplexity "
            f"{_delta(m(top, 'eval/ref_perplexity'), ssft['eval/ref_perplexity'])}.")
        sweep_moved = max(abs(s["eval/kl_to_ref"][0]) for s in sweep["summary"])
        if sweep_moved < STILL_KL:
            lines.append(f"The sweep's policies also stayed close to the reference (largest mean |KL| {sweep_moved:.3f} "
                         f"nats < {STILL_KL:g}): read this ranking as noise, not as a property of the divergences.")
        if sweep_gains:
            runs = [r for r in sweep["runs"] if r["label"] == top["label"] and r["beta"] == top["beta"]]
            sig = [sweep_gains[r["model"]] for r in runs if r["model"] in sweep_gains]
            n_sig = sum(g["gain_ci_lo"] > 0 for g in sig)
            lines.append(f"Its reward gain over SFT has a 95% CI above 0 in {n_sig} of {len(sig)} seed(s) ("
                         + "; ".join(_fmt_ci(g) for g in sig) + ").")
        lines.extend(ordering_sentences(sweep))
    n_eval = sft["n_samples"]
    lines.append(f"All numbers come from {n_eval} held-out samples per model; at small sizes the CIs are wide "
                 "and a difference between losses is only meaningful where the CIs (and seeds) separate.")
    return "\n\n".join(lines)
