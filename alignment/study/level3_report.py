"""Level 3 in words, from `level3.json` alone: per method and β what it reached (KL, reward, judge, and the
share of best-of-N's gain at the same KL), what it cost (training seconds, tokens drawn), and where its KL went."""
from __future__ import annotations

from ..presets import uses_start_draw
from .frontier_report import comparison_line, gain_fraction_lines
from .markdown import markdown_table
from .stats import detectable_difference


def cost_rows(level3: dict) -> list[dict]:
    """Per method: mean training seconds per policy and completion tokens drawn per policy (its own draws;
    offline methods and the log-quantile RLOO also train on their seed's start-policy draw, counted once per seed)."""
    draw = level3.get("draw_tokens", {})
    shared = round(sum(draw.values()) / len(draw)) if draw else None
    out: dict[str, dict] = {}
    for r in level3["runs"]:
        c = r.get("cost") or {}
        row = out.setdefault(r["label"], {"method": r["label"], "shares_draw": uses_start_draw(r),
                                          "seconds": [], "tokens": []})
        if c.get("train_seconds") is not None:
            row["seconds"].append(c["train_seconds"])
            row["tokens"].append(c.get("tokens_drawn") or 0)
    return [{"method": r["method"], "policies": len(r["seconds"]),
             "train s / policy": round(sum(r["seconds"]) / len(r["seconds"]), 1) if r["seconds"] else None,
             "own tokens drawn / policy": round(sum(r["tokens"]) / len(r["tokens"])) if r["tokens"] else None,
             "shared start draw / seed": shared if r["shares_draw"] else None} for r in out.values()]


KL_COLS = ("point", "KL, first seed (nats)", "on sentiment words", "in the first 8 tokens",
           "held-out pairs: chosen, rejected log-prob; accuracy", "own draws' reward, first → last quarter",
           "own draws' KL, first → last quarter (90 % by step)")


def kl_lines(level3: dict) -> list[str]:
    """Where each point's KL goes (`diagnose.kl_split`, first seed) and what its training log says, as a table:
    the share on sentiment words and in the first 8 completion tokens; offline methods' held-out chosen and
    rejected log-probs and accuracy; on-policy methods' own draws' reward and KL, early and late."""
    rows = []
    for d in level3.get("diagnosis", []):
        s, pos, t = d["sentiment"], d["by_position"], d["training"]
        pct = lambda x: None if x is None else f"{x:.0%}"  # noqa: E731
        row = {KL_COLS[0]: f"`{d['label']}` β={d['beta']:g}", KL_COLS[1]: f"{d['kl']:.2f}"}
        if d["kl"]:
            row.update({KL_COLS[2]: f"{pct(s['share_of_kl']) or '–'} ({pct(s['share_of_tokens']) or '–'} of tokens)",
                        KL_COLS[3]: pct(sum(b["kl"] for b in pos if b["from"] < 8) / d["kl"])})
        if t.get("logps_chosen_first") is not None:
            row[KL_COLS[4]] = (
                f"steps {t['held_out_from']}→{t['held_out_to']}: {t['logps_chosen_first']:.1f} → {t['logps_chosen_last']:.1f}, "
                f"{t['logps_rejected_first']:.1f} → {t['logps_rejected_last']:.1f}; {t['held_out_accuracy']:.2f} "
                f"(train {t['train_accuracy']:.2f})")
        if t.get("draws_reward_first") is not None:
            row[KL_COLS[5]] = f"{t['draws_reward_first']:.2f} → {t['draws_reward_last']:.2f}"
        if t.get("draws_kl_first") is not None:
            at = t["draws_kl_reached_at"]
            row[KL_COLS[-1]] = (f"{t['draws_kl_first']:.2f} → {t['draws_kl_last']:.2f} "
                                f"({'–' if at is None else at} of {t['steps']})")
        rows.append(row)
    if not rows:
        return []
    order = list(level3.get("grid", {}).get("methods", []))  # the grid's methods, each along β descending (KL rising)
    rows = [row for _, row in sorted(zip(level3["diagnosis"], rows), key=lambda p: (
        order.index(p[0]["label"]) if p[0]["label"] in order else len(order), -p[0]["beta"]))]
    cols = [c for c in KL_COLS if any(c in r for r in rows)]
    return ["Where each point's KL goes (its first seed's policy on its own evaluation samples; KL ≈ 0 leaves the "
            "shares undefined) and what its training log says (held-out pairs for the offline methods, their own "
            "draws for the on-policy ones):", "", markdown_table([{c: r.get(c) for c in cols} for r in rows]), ""]


GOAL = 0.7  # the share of best-of-N's reward gain at matched KL that would count as closing the gap


def quiet_points(level3: dict) -> set[tuple]:
    """The (method, β) points whose reward-hacking alarm is silent."""
    return {(a["label"], a["beta"]) for a in level3.get("alarm", []) if not a["flags"]}


def goal_points(level3: dict, goal: float = GOAL) -> list[dict]:
    """The points (their reward `gain_fractions` rows) that reach `goal` of best-of-N's reward gain at their
    own KL with the judge's share as high and their alarm silent."""
    rows = {(r["label"], r["beta"], r["field"]): r for r in level3.get("gain_fractions") or []}
    quiet = quiet_points(level3)
    judge = lambda r: (rows.get((r["label"], r["beta"], "judge")) or {}).get("frac_bon")  # noqa: E731
    return [r for (_, _, f), r in rows.items() if f == "reward" and r["frac_bon"] is not None and r["frac_bon"] >= goal
            and (r["label"], r["beta"]) in quiet and judge(r) is not None and judge(r) >= goal]


BON_CONTEXT = ("Best-of-N is a demanding yardstick: Gao et al. (2023) found RL slower than best-of-N as a function of KL "
               "with much larger policies too, and best-of-N's KL, log N − (N−1)/N, is an upper bound on its true KL (Beirami et "
               "al. 2024), so every share of its gain read here is, if anything, generous.")


def goal_line(level3: dict, goal: float = GOAL) -> str:
    """Whether any point reaches `goal` of best-of-N's reward gain at its own KL with the judge's share as
    high and its alarm silent (`goal_points`); else the best reward share, and each method's share of KL
    on sentiment words."""
    reward = [r for r in level3.get("gain_fractions") or [] if r["field"] == "reward" and r["frac_bon"] is not None]
    if not reward:
        return "No trained point lies inside best-of-N's KL range: no share of its gain can be read."
    met = goal_points(level3, goal)
    if met:
        def ci(r):
            return "" if r["frac_bon_lo"] is None else f" ({100 * r['frac_bon_lo']:.0f}..{100 * r['frac_bon_hi']:.0f} %)"
        sure = all(r["frac_bon_lo"] is not None and r["frac_bon_lo"] >= goal for r in met)
        return ("Goal met: " + ", ".join(f"`{r['label']}` β={r['beta']:g} ({100 * r['frac_bon']:.0f} %{ci(r)} of best-of-N's "
                                         f"reward gain at KL {r['kl']:.2f})" for r in met)
                + ", the judge agreeing, the alarm silent"
                + ("" if sure else f"; a 95 % CI that includes {100 * goal:.0f} % says the point may as well fall short") + ".")
    best = max(reward, key=lambda r: r["frac_bon"])
    split = {}
    for d in level3.get("diagnosis", []):
        if d["sentiment"]["share_of_kl"] is not None:
            split.setdefault(d["label"], []).append(d["sentiment"]["share_of_kl"])
    why = ", ".join(f"`{k}` {100 * min(v):.0f}" + ("" if min(v) == max(v) else f"–{100 * max(v):.0f}") + " %"
                    for k, v in split.items())
    return (f"No point reaches {100 * goal:.0f} % of best-of-N's reward gain at its KL with the judge agreeing and the "
            f"alarm silent: the largest reward share is "
            f"`{best['label']}` β={best['beta']:g}'s {100 * best['frac_bon']:.0f} % ({100 * best['frac_bon_lo']:.0f}.."
            f"{100 * best['frac_bon_hi']:.0f} %) at KL {best['kl']:.2f}" + (f". The share of each method's KL on sentiment words (over its β): {why}." if why else ".")
            + " " + size_line(level3, goal) + BON_CONTEXT)


def size_line(level3: dict, goal: float = GOAL) -> str:
    """Whether the best point below `goal` with a silent alarm falls short of it at this size: its 95 % CI below
    the goal says so; else about how many times the seeds and the prompts would tell the gap at 80 % power
    (`stats.detectable_difference` of a CI as wide above the share as this one, shrinking as 1/√n). "" when no
    quiet point below the goal has a share with a CI."""
    quiet = quiet_points(level3)
    rows = [r for r in level3.get("gain_fractions") or [] if r["field"] == "reward" and r["frac_bon_hi"] is not None
            and r["frac_bon"] is not None and r["frac_bon"] < goal and (r["label"], r["beta"]) in quiet]
    if not rows:
        return ""
    r = max(rows, key=lambda r: r["frac_bon"])
    f, hi = r["frac_bon"], r["frac_bon_hi"]
    name = f"`{r['label']}` β={r['beta']:g}'s {100 * f:.0f} % ({100 * r['frac_bon_lo']:.0f}..{100 * hi:.0f} %)"
    if hi < goal:
        return (f"Of the points below {100 * goal:.0f} % without an alarm, the best, {name}, falls short at this size: "
                f"its 95 % CI lies below {100 * goal:.0f} %. ")
    times = (detectable_difference(2 * f - hi, hi) / (goal - f)) ** 2
    return (f"Whether the best point below {100 * goal:.0f} % without an alarm, {name}, falls short of it cannot be "
            f"told at this size: telling a {100 * (goal - f):.0f}-point gap at 80 % power would take about "
            f"{times:.1f}× the seeds and {times:.1f}× the prompts (a CI narrows as 1/√n). ")


def judge_selected_line(level3: dict) -> str:
    """What of best-of-N's reward gain the judge's view accounts for (`frontier.judge_selected`): best-of-N
    picked by the judge, its share of best-of-N's own reward gain over N, the scorers' within-prompt
    correlation, and the trained points' reward and judge shares beside it; "" without it."""
    js = level3.get("judge_selected") or {}
    rows = [r for r in js.get("by_n", []) if r["share"] is not None]
    if not rows:
        return ""
    pct = lambda xs: f"{100 * min(xs):.0f}" + ("" if len(xs) == 1 or round(100 * min(xs)) == round(100 * max(xs))  # noqa: E731
                                              else f"–{100 * max(xs):.0f}") + " %"
    cis = ", ".join(f"N={r['n']} {100 * r['share']:.0f} % ({100 * r['share_lo']:.0f}..{100 * r['share_hi']:.0f})"
                    for r in rows if r["share_lo"] is not None)
    corr = js.get("within_prompt_corr")
    line = (f"Best-of-N picked by the judge instead of the reward buys {pct([r['share'] for r in rows])} of the reward "
            f"gain best-of-N picked by the reward buys ({cis}; 95 % CI)"
            + ("" if corr is None else f": within a prompt the two scorers correlate at {corr:.2f}")
            + ". That is how much of best-of-N's reward gain the judge's own ranking of the same samples recovers.")
    fr = {(r["label"], r["beta"], r["field"]): r["frac_bon"] for r in level3.get("gain_fractions") or []
          if r["frac_bon"] is not None}
    both = [(v, fr[(k[0], k[1], "judge")]) for k, v in fr.items() if k[2] == "reward" and (k[0], k[1], "judge") in fr]
    if both:
        line += (f" The trained points reach {pct([a for a, _ in both])} of best-of-N's reward gain and "
                 f"{pct([b for _, b in both])} of its judge gain, each at its own KL.")
    return line


def progress_line(level3: dict) -> str:
    """How far each point of the methods that maximise reward - β·KL climbed toward the best objective at its
    β (`optimum.objective_progress`), or "" when the result has none."""
    rows = level3.get("objective_progress") or []
    if not rows:
        return ""

    def one(r):
        name = f"`{r['label']}` β={r['beta']:g}"
        if r["why"] == "beyond":
            return (f"{name}: not read (π_β needs KL {r['optimum_kl']:.2f}, more than the start's samples per prompt "
                    f"estimate it at, {r['kl_cap']:.2f})")
        if r["progress"] is None:
            return f"{name}: not read (the best objective gains nothing over the start)"
        ci = "" if r["progress_lo"] is None else f" ({100 * r['progress_lo']:.0f}..{100 * r['progress_hi']:.0f} %)"
        return (f"{name}: {100 * r['progress']:.0f} %{ci}, J +{r['objective_gain']:.2f} of the best "
                f"+{r['optimal_gain']:.2f}")
    return ("How far the methods that maximise reward − β·KL climbed toward the best value of it at their β "
            "(the gain in J = reward − β·KL over the start policy's J, as a share of the KL-optimal π_β's gain; "
            "0 % = the start, 100 % = π_β, above 100 % only by estimation error; 95 % CI over seeds × prompts; "
            "an upper estimate near the cap): " + "; ".join(one(r) for r in rows) + ".")


def example_lines(level3: dict) -> list[str]:
    """The stored texts (`examples`: sample 0 of the first held-out prompts, each point's first seed) as one
    row per model and a column per prompt, so a reader sees what each β and method writes."""
    ex = level3.get("examples") or []
    if not ex:
        return []
    prompts = list(dict.fromkeys(e["prompt"] for e in ex))
    rows: dict[str, dict] = {}
    for e in ex:
        label, _, beta = e["model"].rpartition("@")  # "rloo@0.3", or the start policy's name
        name = f"`{label}` β={float(beta):g}" if label else e["model"]
        rows.setdefault(name, {"model": name})[repr(e["prompt"])] = f"{e['completion']!r} ({e['reward']:+.2f})"
    return [f"What each point writes (sample 0 of {len(prompts)} held-out prompts, first seed; reward in brackets):",
            "", markdown_table(list(rows.values())), ""]


def level3_lines(level3: dict) -> list[str]:
    """Level 3's conclusions, generated: whether any point closes the gap (first), its size, each point's share
    of best-of-N's and the optimum's gain, how far each climbed toward its objective's best, what of best-of-N's
    gain the judge's view accounts for, the matched-KL verdicts between methods, where the KL goes, each
    method's cost and what the points write."""
    g = level3["grid"]
    lines = [goal_line(level3),
             f"**Level 3** ({len(level3['runs'])} runs: methods {', '.join(g['methods'])}; β {g['betas']}; seeds "
             f"{g['seeds']}; best-of-N N {g['best_of_n']}): each point pools its seeds; curves are compared at matched KL.",
             *gain_fraction_lines(level3), *filter(None, [progress_line(level3), judge_selected_line(level3)])]
    if level3.get("non_monotone"):
        lines.append("KL does not rise monotonically along β for " + ", ".join(f"`{c}`" for c in level3["non_monotone"])
                     + ": those curves are shown but not compared at matched KL.")
    lines += [comparison_line(level3["comparisons"], field, "level3.json") for field in ("reward", "judge")]
    lq = any(r.get("reward_shape", "raw") != "raw" for r in level3["runs"])
    cost = ["What each policy cost to train (its own sampling and scoring included; the offline methods train on "
            "their seed's shared start-policy draw, built once" + (", and the log-quantile RLOO measures its rewards' "
                                                                    "quantiles against that draw's" if lq else "")
            + "):", "", markdown_table(cost_rows(level3)), ""]
    return lines + kl_lines(level3) + cost + example_lines(level3)
