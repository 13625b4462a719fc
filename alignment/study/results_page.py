"""RESULTS.md and the README's results block in words, from the loaded `results/` files alone (`render`,
`headline`): every number in them comes from a committed result; `alignment.run.publish` copies the files in
and writes the pages. The sections use the study's tables and sentences (`report`, `frontier_report`,
`level3_report`, `alarm_report`); the `*_brief` functions are the README's one-line versions."""
from __future__ import annotations

from . import alarm_report, console, frontier_report, report
from . import frontier as F
from .level3_report import GOAL, goal_points, level3_lines
from .markdown import markdown_table
from .stats import NOT_DISTINGUISHABLE, detectable_difference

DOC = "RESULTS.md"
MARKS = ("<!-- results:start -->", "<!-- results:end -->")
OFFLINE_BASE = "SmolLM2-135M-Instruct"  # what sft.base="offline" fine-tunes
SCORER_NAMES = {"reward": "reward (offline, MiniLM head)", "judge": "linear-head judge (offline)",
                "judge_ft": "fine-tuned judge (offline-ft, the default)", "topic": "on-topic judge (offline)"}


def _machine(h: dict) -> str:
    dev = f"GPU {h['gpu']}" if h.get("gpu", "none") != "none" else "CPU only"
    bf16 = "with" if h.get("cpu_native_bf16") else "without"
    return (f"{dev}: {h['cpu']} ({bf16} native bf16), {h['cpu_cores']} cores, {h['torch_threads']} torch "
            f"thread(s), torch {h['torch']}, {h['date'][:10]}")


def _minutes(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:.0f} s"


def cost_lines(log: list[dict]) -> list[str]:
    """What each command that built a run dir cost (`timing.log_command` entries), and where the
    longest one's wall time went."""
    if not log:
        return []
    lines = ["Wall time, command by command (a cached rerun only reads what the first one built):", ""]
    lines += [f"- `{c['stage']}`: {_minutes(c['seconds'])} on {_machine(c['hardware'])}"
              + (f" ({c['note']})" if c.get("note") else "") for c in log]
    longest = max(log, key=lambda c: c["seconds"])
    return lines + [console.stage_times(longest["rows"]).replace("this process", f"`{longest['stage']}`")]


def _alarm(result: dict) -> list[str]:
    """The reward-hacking alarm's verdicts as a list, then a blank line (nothing without records)."""
    lines = alarm_report.alarm_lines(result.get("alarm", []))
    control = alarm_report.control_lines(result.get("alarm_control") or []) if lines else []
    return [sub for part in (lines, control) if part
            for sub in (part[0], "", *(f"- {line}" for line in part[1:]), "")]


def _setup(cfg: dict, level1: dict) -> str:
    d, s, e, p = cfg["data"], cfg["sample"], cfg["eval"], cfg["dpo"]
    adapt = f"LoRA r={p['lora_r']}" if p["lora_r"] else "full fine-tuning"
    ps = level1["pairs"]
    source, n_pairs, held = cfg.get("pairs", {}).get("source"), ps["n_pairs"], ps.get("n_held_out", 0)
    per_seed = "per seed its own draw of " if ps.get("per_seed") else ""
    pairs = (f"{n_pairs} pairs of `{source}`" if source else f"{per_seed}{d['n_train_prompts']} training prompts × "
             f"{s['n_samples']} samples → {n_pairs} pairs ({ps['strategy']})")
    held_text = f", {held} of them held out of training" if held else ""
    return (f"Start policy `{cfg['model']['policy']}`; {pairs}{held_text}; DPO β={p['beta']:g}, "
            f"lr {p['lr']:g}, {p['epochs']} epoch(s), batch {p['batch_size']}, precision {p['precision']}{' (bf16 autocast on a CPU with native bf16, else fp32)' if p['precision'] == 'auto' else ''}, {adapt}; "
            f"evaluation on {d['n_eval_prompts']} held-out prompts × {e['n_samples']} samples × "
            f"{len(level1['seeds'])} seeds (each seed its own training run and draws), judge `{e['judge']}`, "
            f"{e['n_boot']} bootstrap resamples over seeds × prompts.")


def _level1_section(r: dict) -> list[str]:
    level1, cfg = r["level1"], r["level1.config"]
    return ["## Level 1: DPO (sigmoid) and SLiC (hinge) against the start policy", "",
            "`make run` (preset `default`). " + _setup(cfg, level1), "",
            "![Reward of each model's held-out samples](results/level1_rewards.png)", "",
            "Every metric with its 95 % CI (bootstrap over seeds × prompts):", "",
            report.ci_table(level1["rows"]), "",
            *[f"- {report.gain_line(row)}" for row in report.trained_rows(level1["rows"])], "",
            *_alarm(level1), report.conclusions(level1), "",
            "Side by side, sample 0 of each model on the first held-out prompts (reward in brackets):", "",
            markdown_table(report.examples_rows(level1["examples"])), "",
            "![Training curves](results/level1_training.png)", "",
            *cost_lines(r.get("level1.timings", []))]


def _lr_section(r: dict) -> list[str]:
    lr = r.get("lr_lesson")
    if not lr:
        return []
    return ["## The learning rate", "",
            "The learning-rate check, `python -m alignment lr-lesson` on the Level 1 run dir: seed 0's pairs, the sigmoid "
            "loss at the assignment notebook's lr 1e-3 next to the default one (seed 0; the start row is that seed's "
            "draws).", "",
            report.ci_table([lr["start"], *lr["rows"]]), "",
            *[f"- {report.gain_line(row)}" for row in lr["rows"]], "",
            report.lr_sentence(lr["rows"], lr["start"]), "", *_alarm(lr),
            markdown_table(report.examples_rows(lr["examples"])), ""]


def _frontier_section(r: dict, name: str, title: str, what: str, lines) -> list[str]:
    """A frontier study's section (`name`: sweep, level3): its two KL plots, its generated lines (`lines(result)`:
    the conclusions first), then every point's table, the alarm and what it cost; or how to produce it (`what`:
    its name in words)."""
    head, result = [f"## {title}", ""], r.get(name)
    if not result:
        return head + [f"No {what} result is committed: `make {name}`, then "
                       f"`python -m alignment results --{name} runs/{name}` renders it here.", ""]
    prefix = F.plot_prefix(name)
    return head + [f"![Reward against KL](results/{prefix}_reward_vs_kl.png)", "",
                   f"![Judge against KL](results/{prefix}_judge_vs_kl.png)", "", *_paragraphs(lines(result)),
                   "Every point (each pools its seeds; 95 % CIs over seeds × prompts):", "",
                   markdown_table(report.frontier_rows(result["points"])), "", *_alarm(result),
                   *cost_lines(r.get(f"{name}.timings", [])), ""]


def _paragraphs(lines: list[str]) -> list[str]:
    """Generated lines as Markdown paragraphs: a blank line after each, never two in a row."""
    out: list[str] = []
    for line in lines:
        out += [line, ""] if line else ([] if out and out[-1] == "" else [""])
    return out


def _sweep_section(r: dict) -> list[str]:
    limit = " and the KL-optimal limit" if r.get("sweep", {}).get("optimum") else ""
    return _frontier_section(r, "sweep", f"Level 2: divergences along β, with best-of-N{limit}", "sweep",
                             frontier_report.sweep_lines)


def _level3_section(r: dict) -> list[str]:
    return _frontier_section(r, "level3", "Level 3: what buys reward per nat of KL", "Level 3", level3_lines)


def _assets_section(r: dict) -> list[str]:
    sft, scorers = r.get("sft"), r.get("scorers", {})
    out = []
    if sft:
        out += ["## The start policy", "",
                f"SFT of `{OFFLINE_BASE if sft['base'] == 'offline' else sft['base']}` on {sft['n_train_reviews']} training reviews ({sft['n_train_tokens']} tokens, "
                f"{sft['steps']} steps, {_minutes(sft['seconds'])} on {sft['threads']} CPU threads): perplexity on "
                f"{sft['n_eval_reviews']} held-out reviews {sft['ppl_before']:.1f} → {sft['ppl_after']:.1f}.", "",
                markdown_table([{"prompt": a["prompt"], "before": b["completion"], "after": a["completion"]}
                                       for a, b in zip(sft["samples_after"], sft["samples_before"])]), ""]
    if scorers:
        named = {**scorers, **({"judge_ft": r["judge_ft"]} if r.get("judge_ft") else {})}
        out += ["## The scorers", "", "Held-out accuracy on labelled snippets never used to fit them:", "",
                markdown_table([{"scorer": SCORER_NAMES.get(k, k), "what": m["sources"], "train": m["n_train"],
                                        "test": m["n_test"], "accuracy": m["test_accuracy"],
                                        "VADER": m.get("vader_test_accuracy")} for k, m in named.items()]), ""]
    return out + _selection_lines(r.get("judge_selection"))


def _selection_lines(sel: dict | None) -> list[str]:
    """How the fine-tuned judge's recipe was chosen (`python -m alignment judge-select`), if measured."""
    if not sel or "judge" not in sel:
        return []
    def recipe(r):
        return f"top {r['layers']} layers, {r['epochs']} epoch{'s' * (r['epochs'] != 1)}, lr {r['lr']:g}"
    tried = ", ".join(f"{c['validation_accuracy']:.3f} ({recipe(c['recipe'])})" for c in sel["candidates"])
    j = sel["judge"]
    lo, hi = j["test_accuracy_ci"]
    return [f"The fine-tuned judge's recipe was chosen on a validation split of its own training rows "
            f"({sel['n_validation']} of {sel['n_fit'] + sel['n_validation']}, by a fixed hash; "
            f"`python -m alignment judge-select`): validation accuracy {tried}; chosen: "
            f"{recipe(sel['candidates'][sel['chosen']]['recipe'])}. Trained so on all {j['n_train']} rows, its accuracy "
            f"on the {j['n_test']} test snippets (not used by this choice) is {j['test_accuracy']:.3f} "
            f"(95 % Wilson CI {lo:.3f}..{hi:.3f}).", ""]


def _independence_section(r: dict) -> list[str]:
    ind, ft = r.get("judge_independence"), r.get("judge_ft")
    if not ind:
        return []
    rows = []
    for name, m in ind["scorers"].items():
        v, d = m.get("vs_reward", {}), m["degenerate"]
        rows.append({"scorer": SCORER_NAMES.get(name, name), "accuracy": m["accuracy"], "agrees with reward": v.get("sign_agreement"),
                     "if errors independent": v.get("agreement_if_independent"), "error phi": v.get("error_phi"),
                     "P(wrong, given reward wrong)": v.get("p_wrong_given_ref_wrong"),
                     "mean on start": d["start (SFT)"], "on lr 5e-5": d["healthy (lr 5e-5)"],
                     "on word salad (lr 1e-3)": d["word salad (lr 1e-3)"], "shuffled accuracy": m["shuffled_accuracy"]})
    gap = ind["error_phi_gaps"].get("judge - judge_ft")
    recipe = ft["recipe"] if ft else {}
    return ["## How independent the judges are of the reward", "",
            "`python -m alignment judge-check runs/default/eval`: the reward, the linear-head judge (`eval.judge=offline`: "
            "a logistic head on frozen all-mpnet-base-v2) and the fine-tuned judge (`eval.judge=offline-ft`, the default: "
            f"all-mpnet-base-v2 with its top {recipe.get('layers', '?')} layers fine-tuned, built in "
            f"{_minutes(ft['build_s']) if ft else '?'}) on the held-out labelled snippets (accuracy, agreement and "
            "the correlation of their errors with the reward's), on the samples of Level 1 and of the learning-rate check "
            "(mean score), "
            "and on the snippets with their words shuffled.", "",
            markdown_table(rows), "",
            *([f"Error phi, linear-head judge minus fine-tuned judge: {gap['diff']:+.3f} (95% CI {gap['lo']:+.3f} .. "
               f"{gap['hi']:+.3f}, paired bootstrap over snippets). The tables above use the fine-tuned judge.", ""]
              if gap else [])]


def render(r: dict) -> str:
    """RESULTS.md from the loaded `results/` files (`publish.load`): every number comes from them."""
    versions = r.get("level1.manifest", {}).get("versions", {})
    lines = ["# Results", "",
             "Rendered by `python -m alignment results` from the files in [`results/`](results/); "
             "`tests/test_results.py` checks that this page equals that rendering. Offline default models and "
             "data (see the README); numbers from another machine differ in the last digits.", "",
             *_level1_section(r), "", *_lr_section(r), *_sweep_section(r), *_level3_section(r), *_assets_section(r),
             *_independence_section(r)]
    if versions:
        lines += ["## Software", "", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def _short_setup(cfg: dict, level1: dict) -> str:
    """Level 1's sizes in one sentence, linked to the full setup in RESULTS.md."""
    d, e = cfg["data"], cfg["eval"]
    return (f"Level 1 on the offline default models: {len(level1['seeds'])} seeds (each its own training prompts, "
            f"pairs and run), {d['n_eval_prompts']} held-out prompts × {e['n_samples']} samples per model, "
            f"judge `{e['judge']}`; reward and judge with 95 % CIs over seeds × prompts ([setup and every CI]({DOC})).")


def _gain_brief(row: dict) -> str:
    """`model` over SFT: reward +x (95% CI lo .. hi), judge +y (...); 'not distinguishable from 0' where so."""
    def part(name, v, lo, hi, sig):
        return f"{name} {v:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f})" + ("" if sig else ", not distinguishable from 0")

    out = [part("reward", row["reward_gain"], row["gain_ci_lo"], row["gain_ci_hi"], report.excludes_zero(row))]
    if "judge_gain" in row:
        out.append(part("judge", row["judge_gain"], row["judge_gain_ci_lo"], row["judge_gain_ci_hi"],
                        report.judge_excludes_zero(row)))
    return f"`{row['model']}` over SFT: " + ", ".join(out)


def _between_brief(d: dict, family: int) -> str:
    """Level 1's question, answered: the two losses' paired reward difference with its CI, its verdict,
    and the smallest difference this size detects."""
    sig = report.excludes_zero(d)
    mde = detectable_difference(d["gain_ci_lo"], d["gain_ci_hi"], family)
    return (f"`{d['a']}` − `{d['b']}` (same prompts and draws): reward {d['reward_gain']:+.3f} (95% CI "
            f"{d['gain_ci_lo']:+.3f} .. {d['gain_ci_hi']:+.3f}), "
            + ("distinguishable" if sig else f"not distinguishable at this size (differences under about {mde:.2f} "
                                             "go undetected)"))


def _alarm_brief(records: list[dict]) -> str:
    """'none for a, b' or 'a: reward outruns the judge, ...' (the flags' short names) for one table."""
    flagged = [a for a in records if a["flags"]]
    clean = [a["model"] for a in records if not a["flags"]]
    parts = ([f"none for {', '.join(f'`{m}`' for m in clean)}"] if clean else []) + [
        f"`{a['model']}`: " + ", ".join(alarm_report.ALARM_NAMES.get(f, f) for f in a["flags"]) for a in flagged]
    return "; ".join(parts)


def _frontier_brief(sweep: dict) -> str:
    """How best-of-N and the divergence curves compare at matched KL, counted from the comparisons: a
    curve counts as below best-of-N only where every KL value it was compared at says so."""
    bon, counts = F.BON, []
    for field in ("reward", "judge"):
        rows = [c for c in sweep["comparisons"] if c["field"] == field and bon in (c["a"], c["b"])]
        by_curve: dict[str, list[bool]] = {}
        for c in rows:
            above = c["verdict"] != NOT_DISTINGUISHABLE and (c["verdict"] == "lower") == (c["b"] == bon)
            by_curve.setdefault(c["a"] if c["b"] == bon else c["b"], []).append(above)
        counts.append(f"{sum(all(v) for v in by_curve.values())} of the {len(by_curve)}")
    n_div = len({p["label"] for p in sweep["points"]} - {bon, sweep.get("optimum", {}).get("label")})
    n_max = max((p["n"] for p in sweep["points"] if p["label"] == bon), default=0)
    among = [c for c in sweep["comparisons"] if c["field"] in ("reward", "judge") and bon not in (c["a"], c["b"])]
    sig = sum(c["verdict"] != NOT_DISTINGUISHABLE for c in among)
    return (f"Level 2 ({n_div} divergence curves along β, seeds pooled; best-of-N from the start policy, N ≤ "
            f"{n_max}): at matched KL, best-of-N is above {counts[0]} curves it overlaps on the reward and {counts[1]} "
            f"on the judge; among the curves {sig} of {len(among)} reward and judge comparisons are "
            "distinguishable (paired, Holm-corrected).")


def level3_brief(level3: dict) -> str:
    """Level 3 in two sentences: per method the largest share of best-of-N's reward gain it reaches at its
    own KL (`frontier.gain_fractions`) with the judge's share there; for the method with the largest, its
    CI, β, KL and any alarm at that point; whether a point meets the goal (`level3_report.goal_points`)."""
    rows = level3.get("gain_fractions") or []
    flags = {(a["label"], a["beta"]): a["flags"] for a in level3.get("alarm", [])}
    best = {}
    for method in level3["grid"]["methods"]:
        mine = [r for r in rows if r["label"] == method and r["field"] == "reward" and r["frac_bon"] is not None]
        best[method] = max(mine, key=lambda r: r["frac_bon"]) if mine else None
    top = max((m for m in best if best[m]), key=lambda m: best[m]["frac_bon"], default=None)
    parts = []
    for method, b in best.items():
        if b is None:
            parts.append(f"`{method}` no point inside best-of-N's KL range")
            continue
        judge = next((r for r in rows if r["label"] == method and r["field"] == "judge" and r["beta"] == b["beta"]), None)
        jt = f"judge {100 * judge['frac_bon']:.0f} %" if judge and judge["frac_bon"] is not None else ""
        if method != top:
            parts.append(f"`{method}` {100 * b['frac_bon']:.0f} %" + (f" ({jt})" if jt else ""))
            continue
        ci = f" ({100 * b['frac_bon_lo']:.0f}..{100 * b['frac_bon_hi']:.0f} %)" if b["frac_bon_lo"] is not None else ""
        alarm = flags.get((method, b["beta"]))
        parts.append(f"`{method}` {100 * b['frac_bon']:.0f} %{ci} at β {b['beta']:g}, KL {b['kl']:.2f}"
                     + (f", {jt}" if jt else "") + (f", alarm: {', '.join(alarm)}" if alarm else ""))
    seeds = level3["grid"]["seeds"]
    pooled = f"seeds {', '.join(map(str, seeds))} pooled" if len(seeds) > 1 else f"one seed ({seeds[0]})"
    return (f"Level 3 ({len(level3['grid']['methods'])} methods along β, {pooled}; [more]({DOC}#level-3-what-buys-reward-per-nat-of-kl)): "
            "the largest share of best-of-N's reward gain each reaches at its own KL: " + "; ".join(parts) + ". "
            + goal_brief(level3) + progress_brief(level3))


def progress_brief(level3: dict) -> str:
    """The furthest any point climbed toward the best objective at its β (`optimum.objective_progress`), or ""."""
    rows = [r for r in level3.get("objective_progress") or [] if r["progress"] is not None]
    if not rows:
        return ""
    top = max(rows, key=lambda r: r["progress"])
    ci = "" if top["progress_lo"] is None else f" ({100 * top['progress_lo']:.0f}..{100 * top['progress_hi']:.0f} %)"
    far = top["progress_hi"] is not None and top["progress_hi"] < 0.5
    return (f" Toward the best reward − β·KL at their own β, the methods that maximise it climb at most "
            f"{100 * top['progress']:.0f} %{ci} of the way (`{top['label']}` β {top['beta']:g})"
            + (", far from the policy their objective asks for." if far else "."))


def goal_brief(level3: dict) -> str:
    """Whether a Level 3 point reaches `GOAL` of best-of-N's reward gain, the judge agreeing, the alarm silent."""
    met = goal_points(level3)
    head = f"{100 * GOAL:.0f} % of best-of-N's gain with the judge agreeing and the alarm silent: "
    return head + (", ".join(f"`{r['label']}` β {r['beta']:g}" for r in met) if met else "no point") + "."


def headline(r: dict) -> str:
    """The README's results block: Level 1's main columns, each loss's gains, the reward-hacking alarm
    (with the learning-rate check's), the frontiers in one sentence; linked to RESULTS.md."""
    level1, cfg = r["level1"], r["level1.config"]
    cols = ["model", "reward", "judge", "KL", "ref_ppl"]  # KL and perplexity without their CIs (RESULTS.md has them)
    rows = [{"model": ci["model"], "reward": ci["reward"], "judge": ci["judge"], "KL": row.get("eval/kl_to_ref"),
             "ref_ppl": row.get("eval/ref_perplexity")} for ci, row in zip(report.ci_rows(level1["rows"]), level1["rows"])]
    lr = [{**a, "model": f"{a['model'].split('-')[0]} at lr {a['lr']:g} (learning-rate check)"}
          for a in r.get("lr_lesson", {}).get("alarm", [])]
    alarm = _alarm_brief(level1.get("alarm", []) + lr)
    return "\n".join([MARKS[0], _short_setup(cfg, level1), "", markdown_table(rows, cols), "",
                      *[f"- {_gain_brief(row)}" for row in report.trained_rows(level1["rows"])],
                      *[f"- {_between_brief(d, len(level1['between_losses']))}" for d in level1.get("between_losses", [])],
                      f"- Reward-hacking alarm: {alarm}.",
                      *([f"- {_frontier_brief(r['sweep'])}"] if r.get("sweep", {}).get("comparisons") else []),
                      *([f"- {level3_brief(r['level3'])}"] if r.get("level3") else []), "",
                      f"Everything else (power, seeds, the losses against each other, examples, the frontiers, the "
                      f"scorers, wall times): [{DOC}]({DOC}).", MARKS[1]])
