"""The frontiers in words (Level 2's sweep, and what Level 3 shares with it): the sweep's conclusions,
one line per compared metric with its distinguishable matched-KL comparisons (Holm) and the smallest
difference they detect, each point's share of best-of-N's and of the optimum's gain, one sentence per
comparison. Pure functions over the result dicts; the decisions and numbers behind the words come from
`alignment.study.stats`."""
from __future__ import annotations

import math

from .markdown import markdown_table
from .stats import NOT_DISTINGUISHABLE, detectable_difference, verdict

SHOW_MAX = 8  # distinguishable comparisons listed per metric in the conclusions (all are in sweep.json)


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
    if "matched_reward" in sweep:  # the f-DPO paper's axis: diversity at the same reward
        bent = sweep.get("non_monotone_reward") or []
        lines.append("At matched reward (the reward–diversity axis of Wang et al. 2023; each pair at 3 rewards inside "
                     "both curves' trained ranges, Holm-corrected separately from the matched-KL comparisons"
                     + (f"; reward does not rise along β for {', '.join(f'`{c}`' for c in bent)}, so those are not "
                        "compared" if bent else "") + "): "
                     + comparison_line(sweep["matched_reward"], "pred_entropy", "sweep.json", x="reward"))
    return lines + gain_fraction_lines(sweep)


def comparison_line(comparisons: list[dict], field: str, source: str, x: str = "kl") -> str:
    """How many matched-KL (or matched-`x`) comparisons of `field` are distinguishable (Holm), the first
    `SHOW_MAX` of them with their numbers (the rest are in `source`), and the smallest difference they detect."""
    rows = [c for c in comparisons if c["field"] == field]
    axis = "KL" if x == "kl" else x
    if not rows:
        return f"{field}: no pair of curves reaches a common {axis} in 99 % of the draws; nothing compared."
    sig = [c for c in rows if c["verdict"] != NOT_DISTINGUISHABLE]
    shown = "; ".join(f"{c['a']} {c['verdict']} than {c['b']} at {axis} {c[x]:.2f} ({c['diff']:+.3f}, "
                      f"{c['lo']:+.3f}..{c['hi']:+.3f})" for c in sig[:SHOW_MAX])
    more = f"; and {len(sig) - SHOW_MAX} more ({source})" if len(sig) > SHOW_MAX else ""
    return (f"{field}: {len(sig)} of {len(rows)} pairwise comparisons distinguishable (Holm)"
            + (f": {shown}{more}" if sig else "; none is distinguishable at this size") + ". " + detectable_text(rows))


def gain_fraction_lines(sweep: dict) -> list[str]:
    """The KL-optimal curve in one sentence, and a table with a row per trained point and a column per field
    and reference curve: the point's share of best-of-N's and of the optimum's gain over the start at the
    point's own KL (`sweep["gain_fractions"]`; nothing for a sweep without them), read between the reference
    curve's points as the result says it was (`read_along`: √KL; a result without it, linearly in KL)."""
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
    if not rows:
        return lines
    axis = "√KL" if sweep.get("read_along") == "sqrt_kl" else "KL"  # results computed before √KL: linear in KL
    refs = [("bon", "best-of-N")] + ([("opt", "the optimum")] if opt else [])
    table: dict[tuple, dict] = {}
    for r in rows:
        row = table.setdefault((r["label"], r["beta"]), {"point": f"`{r['label']}` β={r['beta']:g}",
                                                        "KL": f"{r['kl']:.2f}"})
        row.update({f"{r['field']}, of {name}'s": _fraction_cell(r, ref) for ref, name in refs})
    lines += ["Each point's gain over the start as a share of best-of-N's" + (" and of the optimum's" if opt else "")
              + f" at the point's own KL (curves read linearly in {axis} between their points; 95 % CI over seeds × "
              "prompts; \"beyond (x)\": the point lies past the curve's largest KL, x):", "",
              markdown_table(list(table.values())), ""]
    return lines


def _fraction_cell(r: dict, ref: str) -> str:
    """One point's share of a reference curve's gain (`frontier.gain_fractions` row, `ref` in bon / opt), or why none."""
    f, why = r[f"frac_{ref}"], r.get(f"why_{ref}")
    if f is None:
        return {"beyond": f"beyond ({r[f'kl_max_{ref}'] or 0:.2f})", "below": "below its smallest KL"}.get(
            why, "no gain at this KL")
    valid, lo, hi = r[f"valid_{ref}"], r[f"frac_{ref}_lo"], r[f"frac_{ref}_hi"]
    if lo is None:
        return f"{100 * f:.0f} % (no bootstrap draw reaches it)"
    draws = "" if valid >= 0.99 else f"; {math.floor(100 * valid)}% of draws"  # floored: never "99%" for 98.5 %
    return f"{100 * f:.0f} % ({100 * lo:.0f}..{100 * hi:.0f} %{draws})"


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
