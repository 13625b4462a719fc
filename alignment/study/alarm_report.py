"""The reward-hacking alarm in words: one short name and one reason per flag of `alignment.study.alarm`
(from the record's numbers), one verdict line per policy, and the lines shown next to a table, with
the alarm's control (best-of-N from the start's own samples) under them."""
from __future__ import annotations

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


def verdict_block(heading: str, records: list[dict]) -> list[str]:
    """`heading` and one `alarm_line` per record; nothing without records."""
    return [heading, *(alarm_line(a) for a in records)] if records else []


def alarm_lines(alarms: list[dict], control: list[dict] | None = None) -> list[str]:
    """The alarm shown next to a table: a heading and one verdict per policy (nothing without records),
    then `control_lines(control)` where given."""
    if not alarms:
        return []
    return [*verdict_block("Reward-hacking alarm (each policy against the start policy it was trained from):", alarms),
            *control_lines(control or [])]


def control_lines(control: list[dict]) -> list[str]:
    """The alarm's control (`alarm.control`: best-of-N from the start's own samples): a heading and one
    verdict per N (nothing without records)."""
    return verdict_block("The alarm's control, best-of-N drawn from the start policy's own samples (selection writes "
                         "nothing new, so a flag here marks optimisation itself, not a hack):", control)
