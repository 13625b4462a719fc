"""Everything the package *shows*, in one place for the CLI, the notebook, the README and the benchmarks:
Markdown tables, the "gain vs start" line, example generations side by side, the machine description,
and the sentences of the conclusions, computed from results (never typed in); the frontiers' sentences
are `frontier_report`'s, the alarm's `alarm_report`'s, RESULTS.md's and the README block's `results_page`'s;
`console` puts them together as each CLI stage prints them.

Pure functions over the plain dicts that `alignment.run.experiments` returns (the result JSONs hold data
only; every table and sentence is built here); no models, no I/O but `hardware_note`'s look at the
machine. The decisions and numbers behind the words — ALPHA, the verdicts, the detectable
difference — come from `alignment.study.stats`; the alarm's flags from `alignment.study.alarm`.
"""
from __future__ import annotations

from ..base.machine import hardware
from .frontier_report import sweep_lines
from .markdown import markdown_table
from .stats import ALPHA, detectable_difference, distinguishable, verdict

# (metric key in an evaluation row, short column name)
TABLE_COLS = [("eval/reward_mean", "reward"), ("eval/reward_ci_lo", "ci_lo"), ("eval/reward_ci_hi", "ci_hi"),
              ("eval/judge_mean", "judge"), ("eval/on_topic", "on_topic"),
              ("eval/token_entropy", "token_H"), ("eval/predictive_entropy", "pred_H"),
              ("eval/distinct_2", "distinct_2"), ("eval/kl_to_ref", "KL"), ("eval/ref_perplexity", "ref_ppl")]
GAIN_COLS = [("reward_gain", "gain_vs_sft"), ("gain_ci_lo", "gain_ci_lo"), ("gain_ci_hi", "gain_ci_hi"),
             ("gain_p_holm", "p_holm"), ("judge_gain", "judge_gain"), ("judge_gain_ci_lo", "judge_ci_lo"),
             ("judge_gain_ci_hi", "judge_ci_hi"), ("judge_gain_p_holm", "judge_p_holm"),
             ("on_topic_gain", "on_topic_gain")]
STILL_KL = 0.1  # nats: below this a policy has barely left the reference (smoke-sized runs)


# ---- tables -----------------------------------------------------------------------------------
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
    predictive and token entropy (`gains.compare_drift`; Holm over the policies)."""
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


# ---- the machine --------------------------------------------------------------------------------
def hardware_note(size: str, extra: str = "") -> str:
    """One sentence on what produced a run's outputs (`machine.hardware`), plus `extra`."""
    h = hardware()
    dev = f"GPU {h['gpu']}" if h["gpu"] != "none" else "CPU only"
    bf16 = "with" if h["cpu_native_bf16"] else "without"
    note = (f"Outputs produced at SIZE={size!r} on {dev}: {h['cpu']} ({bf16} native bf16), {h['cpu_cores']} cores "
            f"({h['torch_threads']} torch threads), {h['os']}, Python {h['python']}, torch {h['torch']}.")
    return note + (f" {extra}" if extra else "")
