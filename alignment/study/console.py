"""What `python -m alignment <stage>` prints: each stage's result in `report`'s tables and sentences,
with the reward-hacking alarm next to every table, where the wall time went, and where the outputs went."""
from __future__ import annotations

import json

from .alarm_report import alarm_lines
from .frontier_report import sweep_lines, verdict_lines
from .markdown import markdown_table
from .report import (ci_table, examples_rows, frontier_rows, gain_line, lr_sentence, results_rows,
                     results_table, trained_rows)
from .level3_report import level3_lines


def _alarm(result: dict) -> list[str]:
    """`alarm_report.alarm_lines` of a result's alarm records after a blank line (nothing without any)."""
    lines = alarm_lines(result.get("alarm", []), result.get("alarm_control"))
    return ["", *lines] if lines else []


def render(stage: str, result) -> str:
    """What `python -m alignment <stage>` prints for its result: `report`'s tables and lines, each table
    followed by the reward-hacking alarm where the result has one (run, lr-lesson, sweep), the asset
    paths and scorer accuracies (assets: {"paths", "scorers"}), or the result as JSON."""
    if stage == "run":
        rows = result["rows"]
        lines = ["", results_table(rows), "", "95 % CIs, bootstrap over seeds × prompts:", "", ci_table(rows), "",
                 *(gain_line(r) for r in trained_rows(rows)), *_alarm(result)]
        for ex in examples_rows(result["examples"])[:2]:  # side by side: the same held-out prompt, one sample each
            lines.append(f"\nprompt: {ex['prompt']!r}")
            lines += [f"  {model:>26}: {text[:140]}" for model, text in ex.items() if model != "prompt"]
        return "\n".join(lines)
    if stage == "lr-lesson":
        return "\n".join(["", markdown_table(results_rows(result["rows"], extra=("lr",))),
                          lr_sentence(result["rows"], result["start"]), *_alarm(result)])
    if stage == "sweep":
        return "\n".join(["", markdown_table(frontier_rows(result["points"])), *_alarm(result), "",
                          *sweep_lines(result), "", "Matched-KL comparisons (reward):",
                          *verdict_lines(result["comparisons"])])
    if stage == "level3":
        return "\n".join(["", markdown_table(frontier_rows(result["points"])), *_alarm(result), "",
                          *level3_lines(result), "", "Matched-KL comparisons (reward):",
                          *verdict_lines(result["comparisons"])])
    if stage == "assets":
        return "\n".join([json.dumps(result["paths"], indent=2),
                          *(f"{name}: {metrics}" for name, metrics in result["scorers"].items())])
    if stage == "sft":
        return json.dumps({k: v for k, v in result.items() if k != "train_loss"}, indent=2, default=str)
    return json.dumps(result, indent=2, default=str)


def stage_times(rows: list[dict]) -> str:
    """The table a stage ends with: where its wall time went, by stage kind (`timing.StageTimes`;
    cached artifacts cost only their I/O)."""
    total = sum(r["seconds"] for r in rows)
    body = [{"stage": r["stage"], "seconds": f"{r['seconds']:.1f}", "share": f"{r['share']:.0%}"} for r in rows]
    return "\n".join(["", f"wall time by stage ({total:.1f} s in all, this process):", "",
                      markdown_table(body + [{"stage": "total", "seconds": f"{total:.1f}", "share": "100%"}],
                                     ["stage", "seconds", "share"])])


def where_text(results: str, plots: str | None = None, wandb: str | None = None, wandb_dir: str | None = None,
               processes: int = 1, backend: str | None = None) -> str:
    """Where a run's outputs went: the run dir, its plots and offline wandb run (when there are any:
    `wandb` the resolved path, `wandb_dir` the one to pass to `wandb sync`), and the processes it ran on."""
    lines = [f"\nresults: {results}"]
    if plots:
        lines.append(f"plots:   {plots}")
    if wandb:
        lines.append(f"wandb:   {wandb}  (offline; upload with `wandb sync {wandb_dir}/offline-run-*`)")
    if processes > 1:
        lines.append(f"ran on:  {processes} processes ({backend}), work split by batches")
    return "\n".join(lines)
