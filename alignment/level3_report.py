"""Level 3 in words, from `level3.json` alone: per method and β what it reached (KL, reward, judge, and the
share of best-of-N's gain at the same KL), what it cost (training seconds, tokens drawn), and where its KL went."""
from __future__ import annotations

from .report import detectable_text, gain_fraction_lines, markdown_table
from .stats import NOT_DISTINGUISHABLE


def cost_rows(level3: dict) -> list[dict]:
    """Per method: mean training seconds per policy and completion tokens drawn per policy (its own draws;
    offline methods also train on their seed's start-policy draw, counted once per seed)."""
    draw = level3.get("draw_tokens", {})
    per_seed = sum(draw.values()) / len(draw) if draw else 0.0
    out: dict[str, dict] = {}
    for r in level3["runs"]:
        c = r.get("cost") or {}
        row = out.setdefault(r["label"], {"method": r["label"], "policies": 0, "seconds": 0.0, "tokens": 0.0})
        row["policies"] += 1
        row["seconds"] += c.get("train_seconds") or 0.0
        row["tokens"] += c.get("tokens_drawn") or 0.0
    rows = []
    for row in out.values():
        n = row["policies"]
        own = row["tokens"] / n
        rows.append({"method": row["method"], "policies": n, "train s / policy": round(row["seconds"] / n, 1),
                     "tokens drawn / policy": round(own if own else per_seed)})
    return rows


def kl_lines(level3: dict) -> list[str]:
    """Where each point's KL goes (`diagnose.kl_split`, first seed): share on sentiment words and in the first
    8 completion tokens, and the training log's chosen/rejected log-probs."""
    lines = []
    for d in level3.get("diagnosis", []):
        s, pos = d["sentiment"], d["by_position"]
        early = sum(b["kl"] for b in pos if b["from"] < 8)
        share = f"{s['share_of_kl']:.0%}" if s["share_of_kl"] is not None else "–"
        t = d["training"]
        story = ""
        if t.get("logps_chosen_first") is not None:
            story = (f"; chosen log-prob {t['logps_chosen_first']:.1f} → {t['logps_chosen_last']:.1f}, rejected "
                     f"{t['logps_rejected_first']:.1f} → {t['logps_rejected_last']:.1f}")
        lines.append(f"`{d['label']}` β={d['beta']:g}: KL {d['kl']:.2f} nats per completion, {share} of it on sentiment "
                     f"words ({s['share_of_tokens']:.0%} of the tokens), {early / d['kl']:.0%} in the first 8 tokens"
                     f"{story}." if d["kl"] else f"`{d['label']}` β={d['beta']:g}: KL ≈ 0.")
    return lines


def level3_lines(level3: dict) -> list[str]:
    """Level 3's conclusions, generated: its size, each method's cost, the matched-KL verdicts against
    best-of-N and between methods, and where the KL goes."""
    g = level3["grid"]
    lines = [f"**Level 3** ({len(level3['runs'])} runs: methods {', '.join(g['methods'])}; β {g['betas']}; seeds "
             f"{g['seeds']}; best-of-N N {g['best_of_n']}): each point pools its seeds; curves are compared at matched KL.",
             markdown_table(cost_rows(level3)), *gain_fraction_lines(level3)]
    for field in ("reward", "judge"):
        rows = [c for c in level3["comparisons"] if c["field"] == field]
        sig = [c for c in rows if c["verdict"] != NOT_DISTINGUISHABLE]
        shown = "; ".join(f"{c['a']} {c['verdict']} than {c['b']} at KL {c['kl']:.2f} ({c['diff']:+.3f}, "
                          f"{c['lo']:+.3f}..{c['hi']:+.3f})" for c in sig)
        if not rows:
            lines.append(f"{field}: no pair of curves reaches a common KL in 99 % of the draws; nothing compared.")
            continue
        lines.append(f"{field}: {len(sig)} of {len(rows)} matched-KL comparisons distinguishable (Holm)"
                     + (f": {shown}" if sig else "; none is distinguishable at this size") + ". " + detectable_text(rows))
    return lines + kl_lines(level3)
