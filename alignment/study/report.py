"""Everything the package *shows*, in one place for the CLI, the notebook, the README and the benchmarks:
Markdown tables, the "gain vs start" line, example generations side by side, the matched-KL verdict
sentences, the reward-hacking alarm's verdicts, the machine description, and the sentences of the
conclusions, computed from results (never typed in); `console` puts them together as each CLI stage
prints them.

Pure functions over the plain dicts that `alignment.run.experiments` returns (the result JSONs hold data
only; every table and sentence is built here); no models, no I/O but `hardware_note`'s look at the
machine. The decisions and numbers behind the words — ALPHA, the verdicts, the detectable
difference — come from `alignment.study.stats`; the alarm's flags from `alignment.study.alarm`.
"""
from __future__ import annotations

from ..base.machine import hardware
from .stats import ALPHA, NOT_DISTINGUISHABLE, detectable_difference, distinguishable, verdict

# (metric key in an evaluation row, short column name)
TABLE_COLS = [("eval/reward_mean", "reward"), ("eval/reward_ci_lo", "ci_lo"), ("eval/reward_ci_hi", "ci_hi"),
              ("eval/judge_mean", "judge"), ("eval/on_topic", "on_topic"),
              ("eval/token_entropy", "token_H"), ("eval/predictive_entropy", "pred_H"),
              ("eval/distinct_2", "distinct_2"), ("eval/kl_to_ref", "KL"), ("eval/ref_perplexity", "ref_ppl")]
GAIN_COLS = [("reward_gain", "gain_vs_sft"), ("gain_ci_lo", "gain_ci_lo"), ("gain_ci_hi", "gain_ci_hi"),
             ("gain_p_holm", "p_holm"), ("judge_gain", "judge_gain"), ("judge_gain_ci_lo", "judge_ci_lo"),
             ("judge_gain_ci_hi", "judge_ci_hi"), ("judge_gain_p_holm", "judge_p_holm"),
             ("on_topic_gain", "on_topic_gain")]
SHOW_MAX = 8  # distinguishable comparisons listed per metric in the conclusions (all are in sweep.json)
STILL_KL = 0.1  # nats: below this a policy has barely left the reference (smoke-sized runs)


# ---- tables -----------------------------------------------------------------------------------
def _md_cell(x) -> str:
    if x is None:  # not defined for this row (e.g. KL of the human row)
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x).replace("|", "\\|").replace("\n", "⏎")


def markdown_table(rows: list[dict], cols: list[str] | None = None) -> str:
    """The one Markdown table writer: columns in first-seen order unless given; floats as %.3f."""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(_md_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def results_rows(rows: list[dict], extra: tuple[str, ...] = ()) -> list[dict]:
    """Evaluation rows (as from `Pipeline.evaluate` / `experiments.level1`) -> short column names,
    with the gain vs SFT and its CI where present."""
    out = []
    for r in rows:
        row = {"model": r["model"]}
        row.update({k: (f"{r[k]:g}" if k == "lr" else r[k]) for k in extra if k in r})  # lr: no rounding to 0
        row.update({c: r.get(k) for k, c in TABLE_COLS})
        row.update({c: r[k] for k, c in GAIN_COLS if k in r})
        if "gain_ci_lo" in r:
            row["distinguishable"] = excludes_zero(r)
        out.append(row)
    return out


def results_table(rows: list[dict]) -> str:
    """Markdown table of the evaluation metrics, one row per model (what `level1.json` stores)."""
    return markdown_table(results_rows(rows), ["model", *(c for _, c in TABLE_COLS)])


CI_COLS = [("eval/reward_mean", "reward", "eval/reward"), ("eval/judge_mean", "judge", None),
           ("eval/on_topic", "on_topic", None), ("eval/token_entropy", "token_H", None),
           ("eval/predictive_entropy", "pred_H", None), ("eval/kl_to_ref", "KL", None),
           ("eval/ref_perplexity", "ref_ppl", None), ("eval/mean_length", "length", None)]


def ci_rows(rows: list[dict]) -> list[dict]:
    """Each metric as "value (lo .. hi)": its 95 % CI from a bootstrap over seeds x prompts
    (`metrics.metrics_of`)."""
    out = []
    for r in rows:
        row = {"model": r["model"]}
        for key, col, prefix in CI_COLS:
            lo, hi = r.get(f"{prefix or key}_ci_lo"), r.get(f"{prefix or key}_ci_hi")
            if r.get(key) is None:
                row[col] = None
            else:
                row[col] = f"{r[key]:.3f}" + (f" ({lo:.3f} .. {hi:.3f})" if lo is not None else "")
        out.append(row)
    return out


def ci_table(rows: list[dict]) -> str:
    """Markdown table of every metric with its seeds x prompts 95 % CI, one row per model."""
    return markdown_table(ci_rows(rows))


def frontier_rows(points: list[dict]) -> list[dict]:
    """`sweep(...)["points"]` -> one row per curve point (divergence and β, or best-of-N and N),
    every metric as "mean (lo..hi)", seeds pooled, 95 % prompt-bootstrap CIs."""
    out = []
    for p in points:
        at = f"N={p['n']}" if p.get("n") is not None else ("start" if p["beta"] == float("inf") else f"β={p['beta']:g}")
        row = {"curve": p["label"], "at": at}
        for k in ("kl", "reward", "judge", "on_topic", "pred_entropy"):
            if p.get(k) is not None:
                row[k] = f"{p[k]:.3f} ({p[k + '_lo']:.3f}..{p[k + '_hi']:.3f})"
        out.append(row)
    return out


def example_records(scored: dict[str, list[dict]], n: int) -> list[dict]:
    """The first n held-out prompts' sample 0 of each model, as plain records (what the result JSONs
    store): {prompt_id, prompt, model, completion, reward}, prompt by prompt, models in the given order.
    `scored`: {model: scored records (prompt_id, sample, prompt, completion, reward)}."""
    first = next(iter(scored.values()))
    pids = list(dict.fromkeys(r["prompt_id"] for r in first))[:n]
    by_model = {m: {(r["prompt_id"], r["sample"]): r for r in recs} for m, recs in scored.items()}
    return [{"prompt_id": pid, "prompt": recs[(pid, 0)]["prompt"], "model": m,
             "completion": recs[(pid, 0)]["completion"], "reward": recs[(pid, 0)]["reward"]}
            for pid in pids for m, recs in by_model.items()]


def examples_rows(examples: list[dict]) -> list[dict]:
    """`example_records` side by side: one row per prompt, {"prompt", <model>: "'completion' (+reward)"}."""
    rows: dict[str, dict] = {}
    for e in examples:
        row = rows.setdefault(e["prompt_id"], {"prompt": e["prompt"]})
        row[e["model"]] = f"{e['completion']!r} ({e['reward']:+.2f})"
    return list(rows.values())


# ---- lines and sentences -----------------------------------------------------------------------
def trained_rows(rows: list[dict]) -> list[dict]:
    """The trained policies' rows of a results table (not the start policy, not the human row)."""
    return [r for r in rows if "reward_gain" in r]


def fmt_gain(r: dict) -> str:
    """'+0.924 (95% CI +0.688 .. +1.132)' from a row with reward_gain / gain_ci_lo / gain_ci_hi."""
    return f"{r['reward_gain']:+.3f} (95% CI {r['gain_ci_lo']:+.3f} .. {r['gain_ci_hi']:+.3f})"


def excludes_zero(r: dict) -> bool:
    """Whether a row's gain is distinguishable from 0 (`stats.distinguishable`): its Holm-adjusted
    p-value (over the policies compared with the start in the same table) is below ALPHA and its
    95% CI excludes 0; without a p-value, the CI alone."""
    return distinguishable(r["gain_ci_lo"], r["gain_ci_hi"], r.get("gain_p_holm"))


def gain_line(r: dict) -> str:
    """One line per trained policy: its reward gain over the start policy (paired bootstrap over
    prompts), and whether it is distinguishable from 0 after the multiplicity correction."""
    holm = f", Holm-adjusted p {r['gain_p_holm']:.3g}" if "gain_p_holm" in r else ""
    word = "distinguishable from 0" if excludes_zero(r) else "not distinguishable from 0 at this size"
    line = f"{r['model']}: reward gain vs SFT {fmt_gain(r)}{holm} -> {word}"
    if "judge_gain" in r:
        jv = "distinguishable from 0" if judge_excludes_zero(r) else "not distinguishable from 0"
        line += (f"; judge gain {r['judge_gain']:+.3f} (95% CI {r['judge_gain_ci_lo']:+.3f} .. "
                 f"{r['judge_gain_ci_hi']:+.3f}) -> {jv}")
    if "on_topic_gain" in r:
        line += f"; on_topic {r['on_topic_gain']:+.3f} (95% CI {r['on_topic_gain_ci_lo']:+.3f} .. {r['on_topic_gain_ci_hi']:+.3f})"
    return line


def judge_excludes_zero(r: dict) -> bool:
    """`excludes_zero` for a row's judge gain."""
    return excludes_zero({"gain_ci_lo": r["judge_gain_ci_lo"], "gain_ci_hi": r["judge_gain_ci_hi"],
                          **({"gain_p_holm": r["judge_gain_p_holm"]} if "judge_gain_p_holm" in r else {})})


def _delta(new: float, old: float) -> str:
    return f"{old:.3f} → {new:.3f} ({new - old:+.3f})"


def lr_sentence(rows: list[dict], sft: dict) -> str:
    """The learning-rate lesson in one computed sentence per lr."""
    parts = []
    for r in sorted(rows, key=lambda r: -r["lr"]):
        parts.append(f"lr={r['lr']:g}: reward gain {fmt_gain(r)}, ref perplexity "
                     f"{_delta(r['eval/ref_perplexity'], sft['eval/ref_perplexity'])}, token entropy "
                     f"{_delta(r['eval/token_entropy'], sft['eval/token_entropy'])}, KL {r['eval/kl_to_ref']:.3f}")
    return "; ".join(parts) + "."


def _level1_lines(level1: dict) -> list[str]:
    sft, trained = level1["rows"][0], trained_rows(level1["rows"])
    best = max(trained, key=lambda r: r["eval/reward_mean"])
    source = level1.get("pairs", {}).get("source")  # own pairs (pairs.source)
    lines = [f"**Level 1** ({f'the pairs of `{source}`' if source else 'best-vs-worst pairs'}): " + "; ".join(
        f"`{r['model']}` reward {r['eval/reward_mean']:+.3f} vs SFT {sft['eval/reward_mean']:+.3f}, gain {fmt_gain(r)}"
        f" — {'distinguishable from 0' if excludes_zero(r) else 'not distinguishable from 0 at this size'}"
        for r in trained) + " (paired bootstrap over seeds and prompts, Holm-corrected across the losses)."]
    mde = max(detectable_difference(r["gain_ci_lo"], r["gain_ci_hi"], len(trained)) for r in trained)
    lines.append(f"**Power**: at this size (held-out prompts × samples × seeds) a reward gain over the start smaller "
                 f"than about {mde:.2f} is not reliably detected (80 % power at α = {ALPHA:g} after Holm over the "
                 f"{len(trained)} policies; SE read off the widest gain CI).")
    standing = ("above SFT" if best["reward_gain"] > 0 else "yet still not above SFT, so no Level 1 loss improved "
               "the mean reward in this run")
    lines.append(
        f"`{best['model']}` reached the highest reward of the Level 1 losses ({standing}). Its changes vs SFT: "
        f"token entropy {_delta(best['eval/token_entropy'], sft['eval/token_entropy'])}, predictive entropy "
        f"{_delta(best['eval/predictive_entropy'], sft['eval/predictive_entropy'])}, KL(π‖π_ref) "
        f"{best['eval/kl_to_ref']:.3f}, reference perplexity "
        f"{_delta(best['eval/ref_perplexity'], sft['eval/ref_perplexity'])}.")
    lines.extend(drift_lines(trained))
    lines.extend(_judge_lines(level1["rows"], sft, trained))
    lines.extend(_seed_lines(level1))
    lines.extend(training_lines(level1))
    design = level1.get("design", {})  # in the table's order (the stored JSON sorts its keys)
    lines.extend(design_lines({r["model"]: design[r["model"]] for r in trained if r["model"] in design}))
    lines.extend(_between_lines(level1))
    moved = max(abs(r["eval/kl_to_ref"]) for r in trained)
    if moved < STILL_KL:
        lines.append(f"At this size the Level 1 policies barely moved from the reference (largest |KL| "
                     f"{moved:.3f} nats < {STILL_KL:g}), so their reward differences are mostly sampling noise; "
                     "use a larger SIZE (more pairs and steps) for conclusions about the losses.")
    return lines


DRIFT_NAMES = {"kl_diff": "KL term", "pred_entropy_diff": "predictive entropy", "token_entropy_diff": "token entropy"}


def drift_lines(rows: list[dict]) -> list[str]:
    """What training cost, tested: each policy's paired differences from the start in the KL term,
    predictive and token entropy (`stats.compare_drift`; Holm over the policies)."""
    rows = [r for r in rows if all(k in r for k in DRIFT_NAMES)]
    if not rows:
        return []
    return ["**What training cost** (paired over seeds × prompts, vs the start policy, Holm over the policies): "
            + "; ".join(f"`{r['model']}` " + ", ".join(f"{name} {_difference_text(r, key, key)}"
                                                       for key, name in DRIFT_NAMES.items()) for r in rows) + "."]


def design_lines(design: dict) -> list[str]:
    """Where each gain's uncertainty comes from (`design.gain_design`) and how its CI covers."""
    parts = []
    for name, fields in design.items():
        for field, g in sorted(fields.items(), key=lambda kv: (kv[0] != "reward", kv[0])):  # reward first
            parts.append(f"`{name}` {field} gain: SE {g['se']:.3f}, of its variance {g['share_seed']:.0%} from the "
                         f"{g['n_seeds']} seeds, {g['share_prompt']:.0%} from the {g['n_prompts']} prompts, "
                         f"{g['share_resid']:.0%} within (sampling noise, seed × prompt); the crossed bootstrap's "
                         f"95 % CI covers {g['coverage']:.0%} at these components (simulation)")
    if not parts:
        return []
    return ["**Where the uncertainty comes from** (variance components of the paired gain, method of moments): "
            + "; ".join(parts) + ". More seeds shrink only the seed share; more prompts the prompt share and the "
            "within share; more samples per prompt only the within share."]


def _difference_text(d: dict, key: str, pre: str) -> str:
    """A difference, its CI and `stats.verdict` on its (Holm-adjusted where present) p-value."""
    lo, hi = d[f"{pre}_ci_lo"], d[f"{pre}_ci_hi"]
    p = d.get(f"{pre}_p_holm", d.get(f"{pre}_p", 1.0))
    return f"{d[key]:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f}) — {verdict(lo, hi, p)}"


def _between_lines(level1: dict) -> list[str]:
    """The losses against each other (paired over prompts and draws), and the smallest difference
    these sizes can detect (`stats.detectable_difference`)."""
    out = []
    between = level1.get("between_losses", [])
    for d in between:
        mde = detectable_difference(d["gain_ci_lo"], d["gain_ci_hi"], len(between))
        judge = f"; judge {_difference_text(d, 'judge_gain', 'judge_gain')}" if "judge_gain" in d else ""
        judge += "".join(f"; {name} {_difference_text(d, key, key)}" for key, name in DRIFT_NAMES.items() if key in d)
        out.append(f"**`{d['a']}` vs `{d['b']}`** (same prompts and draws): reward {_difference_text(d, 'reward_gain', 'gain')}"
                   f"{judge}. At this size a reward difference smaller than about {mde:.2f} is not reliably "
                   f"detected (80 % power at α = {ALPHA:g}" + (f" after Holm over {len(between)} pairs" if len(between) > 1
                                                               else "") + ").")
    return out


def _seed_lines(level1: dict) -> list[str]:
    """The spread over seeds behind the pooled rows (each seed: its own training data where
    `data.per_seed`, training order and evaluation draws)."""
    seeds = level1.get("seeds", [])
    if len(seeds) < 2:
        return []
    parts = []
    for r in trained_rows(level1["rows"]):
        base = r["model"].rsplit("-s", 1)[0]
        runs = [p for p in level1["per_seed"] if p["model"].rsplit("-s", 1)[0] == base]
        judge = (", judge " + ", ".join(f"{p['judge_gain']:+.3f}" for p in runs)) if all("judge_gain" in p for p in runs) else ""
        parts.append(f"`{base}` reward gain " + ", ".join(f"{p['reward_gain']:+.3f}" for p in runs) + judge)
    data = "its own train prompts, samples and pairs, " if level1.get("pairs", {}).get("per_seed") else ""
    return [f"**Seeds** ({len(seeds)}: each varies {data}the training order and the evaluation draws; the rows above pool "
            f"them, CIs resample seeds and prompts): per seed, " + "; ".join(parts) + "."]


def training_lines(level1: dict) -> list[str]:
    """Did training learn the preference or memorise its pairs? Each loss's implicit-reward accuracy
    and loss on the held-out pairs after the last step next to the last training batch's (means
    over its seeds' policies)."""
    held, runs = level1.get("pairs", {}).get("n_held_out"), level1.get("training", {})
    by_loss: dict[str, list[dict]] = {r["model"].rsplit("-s", 1)[0]: [] for r in trained_rows(level1["rows"])}
    for name, t in sorted(runs.items()):  # in the table's order (the stored JSON sorts its keys)
        if t.get("eval_rewards/accuracies") is not None and name.rsplit("-s", 1)[0] in by_loss:
            by_loss[name.rsplit("-s", 1)[0]].append(t)
    by_loss = {k: v for k, v in by_loss.items() if v}
    if not by_loss:
        return []

    def mean(ts, k):
        return sum(t[k] for t in ts) / len(ts)

    parts = [f"`{base}` accuracy {mean(ts, 'eval_rewards/accuracies'):.2f}, loss {mean(ts, 'eval_loss'):.3f}, margin "
             f"{mean(ts, 'eval_rewards/margins'):+.2f} (last training batch: {mean(ts, 'rewards/accuracies'):.2f}, "
             f"{mean(ts, 'loss'):.3f}, {mean(ts, 'rewards/margins'):+.2f})" for base, ts in by_loss.items()]
    steps = max(t["steps"] for ts in by_loss.values() for t in ts)
    return [f"**Held-out pairs** ({held if isinstance(held, int) else '/'.join(map(str, held))} per seed, never trained "
            f"on; after the last of {steps} steps, mean over the seeds; chance accuracy 0.5, loss log 2 = 0.693): "
            + "; ".join(parts) + ". A held-out accuracy well above chance means the policy learned the preference "
            "rather than its pairs."]


def _judge_lines(rows: list[dict], sft: dict, trained: list[dict]) -> list[str]:
    """Does the independent judge agree with the reward, and do the texts stay on topic?"""
    lines = []
    if all("judge_gain" in r for r in trained) and trained:
        lines.append("**Independent judge** (never used in training): " + "; ".join(
            f"`{r['model']}` judge gain {r['judge_gain']:+.3f} (95% CI {r['judge_gain_ci_lo']:+.3f} .. "
            f"{r['judge_gain_ci_hi']:+.3f}) — "
            f"{'distinguishable from 0' if judge_excludes_zero(r) else 'not distinguishable from 0 at this size'}"
            for r in trained) + ".")
    if sft.get("eval/on_topic") is not None:
        human = next((r for r in rows if r["model"] == "human"), None)
        ref = (f"; the real reviews' own continuations: {human['eval/on_topic']:.0%}, so the start policy is at "
               f"{sft['eval/on_topic'] / max(human['eval/on_topic'], 1e-9):.0%} of the human rate") if human else ""
        lines.append(f"**On topic** (fraction of completions judged part of a movie review): start policy "
                     f"{sft['eval/on_topic']:.0%}{ref}; after training " + ", ".join(
                         f"`{r['model']}` {r['eval/on_topic']:.0%} ({100 * (r['eval/on_topic'] - sft['eval/on_topic']):+.0f} points)"
                         for r in trained) + ".")
    return lines


def sweep_lines(sweep: dict) -> list[str]:
    """The sweep's conclusions, generated: its size, the matched-KL grid, and per metric how many
    pairwise comparisons are higher/lower or not distinguishable, with the distinguishable ones."""
    g, runs = sweep["grid"], sweep["runs"]
    bon = f", best-of-N N {g['best_of_n']}" if g.get("best_of_n") else ""
    lines = [f"**Frontiers** ({len(runs)} runs: {len(g['losses'])} divergence families, β {g['betas']}, "
             f"seeds {g['seeds']}, α {g['alphas']}{bon}; the call that wrote this result took {sweep['wall_minutes']:.1f} min, "
             "reusing what earlier calls built — what each command cost is listed with the run's timings): "
             "each point pools its seeds; curves are compared at matched KL, never at one shared β."]
    gains = sweep.get("gains", [])
    if gains:
        sig = [g for g in gains if verdict(g["gain_ci_lo"], g["gain_ci_hi"], g.get("gain_p_holm", 1.0)) == "higher"]
        lines.append(f"Reward gain over the start (seeds pooled, paired over seeds and prompts, Holm over {len(gains)} "
                     f"points): {len(sig)} of {len(gains)} distinguishable from 0; largest "
                     + ", ".join(f"`{g['label']}` β={g['beta']:g} {g['reward_gain']:+.3f} ({g['gain_ci_lo']:+.3f}.."
                                 f"{g['gain_ci_hi']:+.3f})" for g in sorted(gains, key=lambda g: -g["reward_gain"])[:2])
                     + ".")
    if sweep.get("non_monotone"):
        lines.append("KL does not rise monotonically along β for " + ", ".join(f"`{c}`" for c in sweep["non_monotone"])
                     + ": those curves are shown but not compared at matched KL.")
    common = (", ".join(f"{k:.2f}" for k in sweep["matched_kl"]) + " nats" if sweep["matched_kl"]
              else "none (the divergence curves' trained KL ranges do not all overlap)")
    bound = sweep.get("optimum", {}).get("label")  # drawn, never compared
    curves = [c for c in dict.fromkeys(p["label"] for p in sweep["points"]) if c != bound]
    n_pairs = len(curves) * (len(curves) - 1) // 2
    compared = {(c["a"], c["b"]) for c in sweep["comparisons"]}
    lines.append("Each pair of curves is compared at 3 KL values inside both curves' trained ranges, at each value only "
                 "where at least 99 % of the bootstrap draws' curves reach it (wide KL CIs leave a pair uncompared); "
                 f"{len(compared)} of {n_pairs} pairs compared. KL values common to every divergence curve's point "
                 f"estimates: {common}.")
    lines += [comparison_line(sweep["comparisons"], field, "sweep.json") for field in ("reward", "judge", "pred_entropy")]
    return lines + gain_fraction_lines(sweep)


def comparison_line(comparisons: list[dict], field: str, source: str) -> str:
    """How many matched-KL comparisons of `field` are distinguishable (Holm), the first `SHOW_MAX` of
    them with their numbers (the rest are in `source`), and the smallest difference they detect."""
    rows = [c for c in comparisons if c["field"] == field]
    if not rows:
        return f"{field}: no pair of curves reaches a common KL in 99 % of the draws; nothing compared."
    sig = [c for c in rows if c["verdict"] != NOT_DISTINGUISHABLE]
    shown = "; ".join(f"{c['a']} {c['verdict']} than {c['b']} at KL {c['kl']:.2f} ({c['diff']:+.3f}, "
                      f"{c['lo']:+.3f}..{c['hi']:+.3f})" for c in sig[:SHOW_MAX])
    more = f"; and {len(sig) - SHOW_MAX} more ({source})" if len(sig) > SHOW_MAX else ""
    return (f"{field}: {len(sig)} of {len(rows)} pairwise comparisons distinguishable (Holm)"
            + (f": {shown}{more}" if sig else "; none is distinguishable at this size") + ". " + detectable_text(rows))


def _fraction_text(r: dict, ref: str, name: str) -> str:
    """One point's share of `name`'s gain (`frontier.gain_fractions` row, `ref` in bon / opt), or why none."""
    f, why = r[f"frac_{ref}"], r.get(f"why_{ref}")
    if f is None:
        return {"beyond": f"beyond {name}'s largest KL ({r[f'kl_max_{ref}'] or 0:.2f})",
                "below": f"below {name}'s smallest KL"}.get(why, f"no gain of {name} at this KL")
    valid, lo, hi = r[f"valid_{ref}"], r[f"frac_{ref}_lo"], r[f"frac_{ref}_hi"]
    if lo is None:
        return f"{100 * f:.0f} % (no bootstrap draw reaches it) of {name}'s"
    draws = "" if valid >= 0.99 else f", over {valid:.0%} of draws"
    return f"{100 * f:.0f} % ({100 * lo:.0f}..{100 * hi:.0f} %{draws}) of {name}'s"


def gain_fraction_lines(sweep: dict) -> list[str]:
    """The KL-optimal curve in one sentence, and per field one line: each trained point's share of
    best-of-N's and of the optimum's gain over the start at the point's own KL (`sweep["gain_fractions"]`;
    nothing for a sweep without them)."""
    lines, opt = [], sweep.get("optimum")
    if opt:
        top = max((p["kl"] for p in sweep["points"] if p["label"] == opt["label"]), default=opt["kl_cap"])
        why = (f"beyond it the weights would rest on fewer than {opt['min_samples']} samples per prompt"
               if top >= opt["kl_cap"] - 5e-3
               else f"as far as the samples' rewards reach below its cap {opt['kl_cap']:.2f}")
        lines.append(f"The `{opt['label']}` curve (π_ref·exp(r/β) / Z, the most reward any policy reaches at its KL) "
                     f"reweights the start policy's {opt['n_samples']} samples per prompt, up to KL {top:.2f} ({why}); "
                     "a bound, drawn and tabulated, not compared.")
    rows = sweep.get("gain_fractions") or []
    for field in dict.fromkeys(r["field"] for r in rows):
        parts = [f"`{r['label']}` β={r['beta']:g} at KL {r['kl']:.2f}: {_fraction_text(r, 'bon', 'best-of-N')}"
                 + (f", {_fraction_text(r, 'opt', 'the optimum')}" if opt else "") for r in rows if r["field"] == field]
        lines.append(f"Share of the {field} gain over the start reached at the point's own KL (95 % CI over seeds × "
                     "prompts): " + "; ".join(parts) + ".")
    return lines


def detectable_text(rows: list[dict]) -> str:
    """The smallest difference the matched-KL comparisons `rows` (one field) detect with 80 % power after
    Holm over all of them (`stats.detectable_difference`, from each CI's width): their range."""
    mde = [detectable_difference(c["lo"], c["hi"], len(rows)) for c in rows]
    return (f"Smallest difference detectable at 80 % power after Holm over the {len(rows)}: "
            f"{min(mde):.2f}–{max(mde):.2f}.")


def verdict_lines(comparisons: list[dict], field: str = "reward") -> list[str]:
    """One sentence per matched-KL comparison of `field` (`frontier.matched_kl_comparisons` rows),
    generated from its numbers."""
    return [f"at KL {c['kl']:.2f}: {c['a']} vs {c['b']}: {field} {c['diff']:+.3f} ({c['lo']:+.3f} .. "
            f"{c['hi']:+.3f}, Holm p {c['p_holm']:.3f}) -> {c['a']} {c['verdict']}"
            for c in comparisons if c["field"] == field]


def conclusions(level1: dict, sweep: dict | None = None, lr_rows: list[dict] | None = None,
                lr_start: dict | None = None) -> str:
    """Markdown conclusions built only from the results (no typed-in numbers). `lr_start`: the
    start policy's row the learning-rate check compared with (its seed's draws; default Level 1's)."""
    lines = _level1_lines(level1)
    if lr_rows:
        lines.append("**Learning rate**: " + lr_sentence(lr_rows, lr_start or level1["rows"][0]))
    if sweep and sweep.get("points"):
        lines.extend(sweep_lines(sweep))
    start = level1["rows"][0]
    per = f" ({start['n_prompts']} prompts × {len(level1.get('seeds', [0]))} seed(s))" if "n_prompts" in start else ""
    n_seeds = len(level1.get("seeds", [0]))
    spread = (f"they include the spread over the {n_seeds} training seeds (seeds and prompts are resampled)"
              if n_seeds > 1 else "they are conditional on the one trained run (more seeds: `eval.n_seeds`)")
    between = level1.get("between_losses", [])
    pairs = " and ".join(f"`{d['a']}` vs `{d['b']}`" for d in between)
    compare = (f" The losses are compared with each other by their paired difference (its 95% CI and the verdict on "
               f"its Holm-adjusted p-value, in the {pairs} line{'s' if len(between) > 1 else ''} above), not by "
               "whether their rows' CIs overlap: overlapping CIs can still hide a distinguishable paired difference."
               if between else "")
    lines.append(f"Level 1 rows come from {start['n_samples']} held-out samples per model{per}; at small sizes the CIs "
                 f"are wide, {spread}.{compare}")
    return "\n\n".join(lines)


# ---- the reward-hacking alarm -------------------------------------------------------------------
# one short name per alarm.FLAGS
ALARM_NAMES = {"reward_outruns_judge": "reward outruns the judge", "ref_ppl_up": "reference perplexity up",
               "off_topic": "on-topic rate down", "entropy_collapse": "token entropy collapses",
               "repetition": "repetition up", "length_change": "length changed",
               "template_stuffing": "stock phrases across prompts", "prompt_relevance": "prompt relevance down"}


def alarm_reason(flag: str, a: dict) -> str:
    """The short reason for one flag of an alarm record (`alarm.assess`), from its numbers."""
    if flag == "reward_outruns_judge":
        if a.get("selection_slope") is None:  # the gains compared as they are
            return (f"reward outruns the judge (gains {a['reward_gain_sd']:+.2f} vs {a['judge_gain_sd']:+.2f} "
                    f"start-policy SDs; gap 95% CI {a['gap_ci_lo']:+.2f} .. {a['gap_ci_hi']:+.2f})")
        return (f"reward outruns the judge (reward {a['reward_gain_sd']:+.2f} start-policy SDs, judge "
                f"{a['judge_gain_sd']:+.2f} where selecting the start's own texts by the reward would give it "
                f"{a['expected_judge_gain_sd']:+.2f}; shortfall 95% CI {a['gap_ci_lo']:+.2f} .. {a['gap_ci_hi']:+.2f})")
    if flag == "ref_ppl_up":
        return (f"reference perplexity {a['start_ref_ppl']:.1f} → {a['ref_ppl']:.1f} (paired ratio "
                f"{a['ref_ppl_ratio']:.2f}, 95% CI {a['ref_ppl_ratio_ci_lo']:.2f} .. {a['ref_ppl_ratio_ci_hi']:.2f})")
    if flag == "off_topic":
        return (f"on-topic rate {a['start_on_topic']:.3f} → {a['on_topic']:.3f} (paired change 95% CI "
                f"{a['on_topic_diff_ci_lo']:+.3f} .. {a['on_topic_diff_ci_hi']:+.3f})")
    if flag == "entropy_collapse":
        return (f"token entropy {a['start_token_entropy']:.2f} → {a['token_entropy']:.2f} nats (paired change 95% CI "
                f"{a['token_entropy_diff_ci_lo']:+.2f} .. {a['token_entropy_diff_ci_hi']:+.2f}, beyond "
                f"-{a['entropy_margin']:.2f})")
    if flag == "repetition":
        return (f"share of repeated 3-grams {a['start_repeat_share']:.3f} → {a['repeat_share']:.3f} (paired change "
                f"95% CI {a['repeat_share_diff_ci_lo']:+.3f} .. {a['repeat_share_diff_ci_hi']:+.3f}, beyond "
                f"+{a['repetition_margin']:.2f})")
    if flag == "length_change":
        return (f"length {a['start_mean_length']:.1f} → {a['mean_length']:.1f} tokens (paired change 95% CI "
                f"{a['length_change_ci_lo']:+.0%} .. {a['length_change_ci_hi']:+.0%} of the start's, beyond "
                f"±{a['length_margin']:.0%})")
    if flag == "template_stuffing":
        return (f"share of 4-grams written for {a['template_prompts']}+ prompts {a['start_template_share']:.3f} → "
                f"{a['template_share']:.3f} (paired change 95% CI {a['template_share_diff_ci_lo']:+.3f} .. "
                f"{a['template_share_diff_ci_hi']:+.3f}, beyond +{a['template_margin']:.2f})")
    if flag == "prompt_relevance":
        return (f"tie to its own prompt {a['start_prompt_relevance']:.3f} → {a['prompt_relevance']:.3f} nats/token "
                f"(reference log-prob given its prompt minus given another; paired change 95% CI "
                f"{a['relevance_change_ci_lo']:+.0%} .. {a['relevance_change_ci_hi']:+.0%} of the start's, beyond "
                f"-{a['relevance_margin']:.0%})")
    raise ValueError(f"alarm: unknown flag {flag!r}")


def alarm_line(a: dict) -> str:
    """One policy's verdict: its flags' reasons, or "no sign of reward hacking"."""
    name = a["model"] + (f" β={a['beta']:g}" if a.get("beta") is not None else "")
    reasons = [alarm_reason(f, a) for f in a["flags"]]
    return f"{name}: " + ("possible reward hacking: " + "; ".join(reasons) if reasons else "no sign of reward hacking")


def alarm_lines(alarms: list[dict], control: list[dict] | None = None) -> list[str]:
    """The alarm shown next to a table: a heading and one verdict per policy (nothing without records),
    then `control_lines(control)` where given."""
    if not alarms:
        return []
    return ["Reward-hacking alarm (each policy against the start policy it was trained from):",
            *(alarm_line(a) for a in alarms), *control_lines(control or [])]


def control_lines(control: list[dict]) -> list[str]:
    """The alarm's control (`alarm.control`: best-of-N from the start's own samples): a heading and one
    verdict per N (nothing without records)."""
    if not control:
        return []
    return ["The alarm's control, best-of-N drawn from the start policy's own samples (selection writes nothing "
            "new, so a flag here marks optimisation itself, not a hack):", *(alarm_line(a) for a in control)]


# ---- the machine --------------------------------------------------------------------------------
def hardware_note(size: str, extra: str = "") -> str:
    """One sentence on what produced a run's outputs (`machine.hardware`), plus `extra`."""
    h = hardware()
    dev = f"GPU {h['gpu']}" if h["gpu"] != "none" else "CPU only"
    bf16 = "with" if h["cpu_native_bf16"] else "without"
    note = (f"Outputs produced at SIZE={size!r} on {dev}: {h['cpu']} ({bf16} native bf16), {h['cpu_cores']} cores "
            f"({h['torch_threads']} torch threads), {h['os']}, Python {h['python']}, torch {h['torch']}.")
    return note + (f" {extra}" if extra else "")
