"""Where a policy's KL goes: per-token log-ratios log π(y_t|x, y_<t) − log π_ref(y_t|x, y_<t) on the policy's
own samples, summed by position and by token class (sentiment-bearing words vs the rest), and what its
training log says about the pairs (chosen and rejected log-probs over training, train vs held-out
accuracy). KL(π‖π_ref) is the expectation, under π, of the summed log-ratios, so these sums split this
estimate of it exactly (fp32 forwards of the policy and the reference on the policy's samples; the
evaluation's `eval/kl_to_ref` uses the sampler's own log q instead; a single token's term can be negative).
"""
from __future__ import annotations

import math

import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from .logprobs import collate, model_token_logps

SENTIMENT_MIN = 1.0  # |VADER valence| at or above which a word counts as sentiment-bearing
POSITION_BINS = (0, 4, 8, 16, 32)  # completion positions summed together: [0, 4), [4, 8), [8, 16), [16, 32), 32+


@torch.no_grad()
def token_log_ratios(model, ref_model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                     batch_size: int = 16) -> list[list[float]]:
    """Per completion token, log π − log π_ref (fp32 forwards), one list per completion."""
    out = []
    for i in range(0, len(prompts), batch_size):
        batch = collate(prompts[i:i + batch_size], completions[i:i + batch_size], pad_id)
        diff = model_token_logps(model, batch).float().cpu() - model_token_logps(ref_model, batch).float().cpu()  # (b, T-1)
        mask = batch["completion_mask"][:, 1:].bool()  # (b, T-1)
        out += [diff[j][mask[j]].tolist() for j in range(diff.size(0))]
    return out


def vader_lexicon() -> dict[str, float]:
    """VADER's word -> valence (-4..4) lexicon (Hutto & Gilbert 2014), shipped inside its package."""
    return dict(SentimentIntensityAnalyzer().lexicon)


def sentiment_token_ids(tokenizer, lexicon: dict[str, float], min_valence: float = SENTIMENT_MIN) -> set[int]:
    """Ids of the tokens that spell a whole sentiment-bearing word (|valence| >= `min_valence`), with or
    without a leading space: a word split into several tokens is not counted (its pieces carry little alone)."""
    words = {w.lower() for w, v in lexicon.items() if abs(v) >= min_valence and w.isalpha()}
    ids = set()
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid]).strip().lower()
        if text in words:
            ids.add(tid)
    return ids


def kl_split(ratios: list[list[float]], completions: list[list[int]], sentiment_ids: set[int],
             bins: tuple[int, ...] = POSITION_BINS) -> dict:
    """The mean summed log-ratio per sample (the KL estimate) split by position bin and by token class:
    {kl, by_position: [{from, to, kl, share}], sentiment: {kl, share_of_kl, share_of_tokens}}."""
    n = max(len(ratios), 1)
    total = sum(sum(r) for r in ratios) / n
    edges = list(bins) + [math.inf]
    by_pos = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        part = sum(x for r in ratios for t, x in enumerate(r) if lo <= t < hi) / n
        by_pos.append({"from": lo, "to": None if hi == math.inf else hi, "kl": part,
                       "share": part / total if total else None})
    sent = sum(x for r, c in zip(ratios, completions) for x, tid in zip(r, c) if tid in sentiment_ids) / n
    n_tok = sum(len(c) for c in completions)
    n_sent = sum(tid in sentiment_ids for c in completions for tid in c)
    return {"kl": total, "by_position": by_pos,
            "sentiment": {"kl": sent, "share_of_kl": sent / total if total else None,
                          "share_of_tokens": n_sent / n_tok if n_tok else None}}


def draws_reward(log: list[dict]) -> tuple[float | None, float | None]:
    """An on-policy training log's own draws' mean reward over its first and last quarter of steps (at least
    one step each; RLOO's `objective/scores`, online DPO's `round_reward_mean`): still rising at the end means
    the policy had not converged. (None, None) for offline logs or under two steps."""
    xs = [r.get("objective/scores", r.get("round_reward_mean")) for r in log]
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None, None
    k = max(1, len(xs) // 4)
    return sum(xs[:k]) / k, sum(xs[-k:]) / k


def draws_kl(log: list[dict]) -> dict:
    """An RL training log's KL to the reference on its own draws (`objective/kl`, nats per completion): the
    mean over its first and last quarter of logged steps, and the first logged step (its `step`) whose 3-step
    running mean reaches 90 % of the last quarter's (early = the KL was spent before the reward was learnt;
    None if none does or the last quarter's is not positive). All None for logs without it or under two steps."""
    recs = [r for r in log if r.get("objective/kl") is not None]
    out = dict.fromkeys(("draws_kl_first", "draws_kl_last", "draws_kl_reached_at"))
    if len(recs) < 2:
        return out
    xs, k = [r["objective/kl"] for r in recs], max(1, len(recs) // 4)
    first, last = sum(xs[:k]) / k, sum(xs[-k:]) / k
    running = [sum(xs[max(0, i - 2): i + 1]) / len(xs[max(0, i - 2): i + 1]) for i in range(len(xs))]
    reached = next((recs[i].get("step", i + 1) for i, x in enumerate(running) if x >= 0.9 * last), None) if last > 0 else None
    return {"draws_kl_first": first, "draws_kl_last": last, "draws_kl_reached_at": reached}


def training_story(log: list[dict]) -> dict:
    """From a training log: the held-out pairs' chosen and rejected log-probs (the same pairs each time)
    at their first and last scoring (both falling is the known failure: probability mass leaves the chosen
    completions too), `held_out_from`/`held_out_to` the steps they were scored at, the last train and
    held-out implicit-reward accuracies, and an on-policy method's draws' reward early and late
    (`draws_reward`) and an RL method's KL on them (`draws_kl`). Missing keys (on-policy methods, no held-out pairs; offline methods) give None."""
    def at(rec, key):
        return rec.get(key) if rec else None

    scored = [r for r in log if "eval_logps/chosen" in r]
    first, held = (scored[0], scored[-1]) if scored else (None, None)
    last = log[-1] if log else None
    return {"logps_chosen_first": at(first, "eval_logps/chosen"), "logps_chosen_last": at(held, "eval_logps/chosen"),
            "logps_rejected_first": at(first, "eval_logps/rejected"), "logps_rejected_last": at(held, "eval_logps/rejected"),
            "held_out_from": at(first, "step"), "held_out_to": at(held, "step"),
            "train_accuracy": at(last, "rewards/accuracies"), "held_out_accuracy": at(held, "eval_rewards/accuracies"),
            "steps": last["step"] if last else 0, **dict(zip(("draws_reward_first", "draws_reward_last"), draws_reward(log))),
            **draws_kl(log)}
