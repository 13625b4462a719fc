"""Where the KL goes (`alignment.steps.diagnose`): the split on hand-written log-ratios, the per-token log-ratios
against a direct sequence computation on a tiny model, and the training log's story."""
import copy

import pytest
import torch

from alignment.steps.diagnose import kl_split, sentiment_token_ids, token_log_ratios, training_story
from alignment.steps.logprobs import batched_logps
from alignment.assets.models import load_causal_lm


def test_kl_split_closed_form():
    ratios = [[0.5, 0.1, 0.2, 0.0, 1.0], [0.3, -0.1]]  # two samples, 5 and 2 tokens
    comps = [[7, 1, 7, 2, 3], [1, 7]]
    out = kl_split(ratios, comps, {7}, bins=(0, 2, 4))
    assert out["kl"] == pytest.approx((1.8 + 0.2) / 2)
    assert [b["kl"] for b in out["by_position"]] == pytest.approx([(0.6 + 0.2) / 2, 0.2 / 2, 1.0 / 2])
    assert [b["to"] for b in out["by_position"]] == [2, 4, None]
    assert sum(b["share"] for b in out["by_position"]) == pytest.approx(1.0)
    assert out["sentiment"]["kl"] == pytest.approx((0.5 + 0.2 - 0.1) / 2)  # the three 7s
    assert out["sentiment"]["share_of_tokens"] == pytest.approx(3 / 7)
    assert out["sentiment"]["share_of_kl"] == pytest.approx(0.3 / 1.0)


def test_token_log_ratios_sum_to_the_sequence_log_ratio(tiny_gpt2_dir):
    ref = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))
    pol = copy.deepcopy(ref)
    with torch.no_grad():
        pol.lm_head.weight.add_(0.05 * torch.randn_like(pol.lm_head.weight, generator=torch.Generator().manual_seed(0)))
    prompts, comps = [[5, 6, 7], [9]], [[11, 12, 0], [13, 14, 15, 16]]
    ratios = token_log_ratios(pol, ref, prompts, comps, pad_id=0)
    assert [len(r) for r in ratios] == [3, 4]
    direct = batched_logps(pol, prompts, comps, 0) - batched_logps(ref, prompts, comps, 0)
    assert [sum(r) for r in ratios] == pytest.approx(direct.tolist(), abs=1e-4)
    assert any(abs(x) > 1e-3 for r in ratios for x in r)  # the perturbation shows


def test_sentiment_token_ids_are_whole_words(tiny_tokenizer):
    words = sorted({w for w in (tiny_tokenizer.decode([i]).strip().lower() for i in range(len(tiny_tokenizer)))
                    if w.isalpha() and len(w) >= 3})
    strong, weak = words[:2]  # two whole-word tokens of the tiny vocabulary
    ids = sentiment_token_ids(tiny_tokenizer, {strong: 3.1, weak: 0.9, ":)": 2.0})
    assert ids and {tiny_tokenizer.decode([i]).strip().lower() for i in ids} == {strong}  # weak: below the bar


def test_training_story():
    log = [{"step": 1, "logps/chosen": -1.0, "rewards/accuracies": 0.5},
           {"step": 2, "logps/chosen": -2.0, "eval_logps/chosen": -40.0, "eval_logps/rejected": -41.0,
            "eval_rewards/accuracies": 0.55, "rewards/accuracies": 0.6},
           {"step": 3, "logps/chosen": -3.0, "rewards/accuracies": 0.7},
           {"step": 4, "logps/chosen": -4.0, "eval_logps/chosen": -45.0, "eval_logps/rejected": -50.0,
            "eval_rewards/accuracies": 0.6, "rewards/accuracies": 0.75}]
    s = training_story(log)  # the held-out pairs' log-probs (the same pairs at steps 2 and 4), not the batches'
    assert (s["logps_chosen_first"], s["logps_chosen_last"], s["held_out_from"], s["held_out_to"]) == (-40.0, -45.0, 2, 4)
    assert (s["logps_rejected_first"], s["logps_rejected_last"]) == (-41.0, -50.0)
    assert (s["train_accuracy"], s["held_out_accuracy"], s["steps"]) == (0.75, 0.6, 4)
    assert training_story([{"step": 1, "loss": 0.3}])["logps_chosen_first"] is None
    assert s["draws_reward_first"] is None  # offline: no draws of its own


def test_training_story_of_an_on_policy_log_says_whether_its_reward_still_rose():
    rloo = [{"step": i, "objective/scores": x} for i, x in enumerate([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4], 1)]
    s = training_story(rloo)  # first quarter: steps 1-2, last quarter: steps 7-8
    assert (s["draws_reward_first"], s["draws_reward_last"]) == pytest.approx((0.1, 1.3))
    online = [{"step": i, "round_reward_mean": x} for i, x in enumerate([0.5, 0.5, 0.9, 0.9], 1)]
    assert (training_story(online)["draws_reward_first"], training_story(online)["draws_reward_last"]) == (0.5, 0.9)
    assert training_story(rloo[:1])["draws_reward_first"] is None  # one step: no trend
    assert (training_story(rloo[:3])["draws_reward_first"], training_story(rloo[:3])["draws_reward_last"]) == (0.0, 0.4)
    assert s["draws_kl_reached_at"] is None  # no KL in the log


def test_training_story_says_when_an_rl_policy_spent_its_kl():
    # KL per step 0, 3, 3, 3, 2, 2, 2, 2: last quarter (steps 7-8) 2.0, first (1-2) 1.5; running 3-step means
    # 0, 1.5, 2.0, ... : step 3's 2.0 is the first at or above 90 % of 2.0
    kl = [0.0, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0]
    s = training_story([{"step": i, "objective/scores": 0.1, "objective/kl": x} for i, x in enumerate(kl, 1)])
    assert (s["draws_kl_first"], s["draws_kl_last"], s["draws_kl_reached_at"]) == pytest.approx((1.5, 2.0, 3))
    rising = training_story([{"step": i, "objective/kl": 0.5 * i} for i in range(1, 9)])  # 0.5 .. 4: last quarter 3.75
    assert rising["draws_kl_reached_at"] == 8  # running means 3.0, 3.5 at steps 7, 8: only step 8's reaches 3.375
    assert training_story([{"step": 1, "objective/kl": 1.0}])["draws_kl_first"] is None  # one step: no trend
    resumed = [{"step": i + 10, "objective/kl": x} for i, x in enumerate(kl, 1)]  # a log that starts at step 11
    assert training_story(resumed)["draws_kl_reached_at"] == 13  # the record's own step, not its position
    falling = training_story([{"step": i, "objective/kl": -0.1} for i in range(1, 5)])  # estimator noise below 0
    assert falling["draws_kl_last"] == pytest.approx(-0.1) and falling["draws_kl_reached_at"] is None
