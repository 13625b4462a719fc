"""On-policy methods (`dpo.method`): online (iterative) DPO and RLOO on tiny models with a Python
reward, through the pipeline; RLOO's loss on hand-written tensors; and the config's refusals."""
import math
import os
from pathlib import Path
from statistics import NormalDist

import pytest
import torch
from safetensors.torch import load_file

from alignment.config import ConfigError, load_config
from alignment.run.pipeline import check_training, method_settings
from alignment.base.io import read_json, read_jsonl
from alignment.steps.logprobs import position_kls
from alignment.steps.online import (LogQuantileReward, prefix_rewards, rloo_loss, rloo_prefix_loss, round_shares,
                                    shaped_reward, to_go, trained_prompts)
from alignment.run.pipeline import Pipeline

from test_pipeline_e2e import tiny_cfg


def vowels(texts: list[str]) -> torch.Tensor:
    """A toy reward with spread: the share of vowels among a text's characters."""
    return torch.tensor([sum(c in "aeiou" for c in t) / max(len(t), 1) for t in texts])


def test_rloo_loss_closed_form():
    logps = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)  # 2 prompts x 2 completions
    ref = torch.tensor([-1.5, -2.0, -3.0, -3.0])
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    loss, m = rloo_loss(logps, ref, r, n=2, beta=0.5)
    # R = r - 0.5 (logp - ref) = [0.75, 0, 2, 2.5]; leave-one-out A = [0.75, -0.75, -0.5, 0.5]
    adv = torch.tensor([0.75, -0.75, -0.5, 0.5])
    assert loss.item() == pytest.approx(-(adv * logps.detach()).mean().item())
    loss.backward()
    assert torch.allclose(logps.grad, -adv / 4)
    assert m["objective/kl"] == pytest.approx((0.5 + 0 + 0 - 1.0) / 4)
    assert m["objective/scores"] == pytest.approx(1.25)
    with pytest.raises(ValueError, match="sample.n_samples >= 2"):
        rloo_loss(logps, ref, r, n=1, beta=0.5)


def test_prefix_credit_goes_to_the_token_that_moved_the_reward():
    """1 prompt x 2 completions of 2 tokens, β 0: the first completion's reward (1) arrived with its first
    token (prefix reward 0 before it, 1 after); the second's never moved (0). All credit goes to token 0,
    where the two differ; token 1 changed nothing and keeps its log-prob (sequence credit would push both)."""
    logps = torch.zeros(2, 2, requires_grad=True)
    valid = torch.ones(2, 2, dtype=torch.bool)
    loss, _ = rloo_prefix_loss(logps, torch.zeros(2, 2), valid, torch.tensor([1.0, 0.0]),
                               torch.tensor([[0.0, 1.0], [0.0, 0.0]]), n=2, beta=0.0)
    loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-0.5, 0.0], [0.5, 0.0]]))


def test_prefix_credit_closed_form_with_kl_lambda_and_lengths():
    """β 0.5, lam 0.5; completion 0 has 3 tokens, completion 1 two (its third position is padding).
    Rewards 2 and 0; prefix rewards [0, 1, 1] and [0, 0]; log-ratios [0.2, 0, 0.4] and [0, 0.2]."""
    logps = torch.tensor([[0.2, 0.0, 0.4], [0.0, 0.2, 9.0]], requires_grad=True)  # 9, -5, 7: padding, never read
    valid = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    loss, m = rloo_prefix_loss(logps, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -5.0]]), valid, torch.tensor([2.0, 0.0]),
                               torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 7.0]]), n=2, beta=0.5, lam=0.5)
    # reward gains: [1, 0, 1] and [0, 0]; per-token terms gain - 0.5 * log-ratio: [0.9, 0, 0.8], [0, -0.1]
    # returns with lam 0.5: [0.9 + 0.5*0 + 0.25*0.8, 0 + 0.5*0.8, 0.8] = [1.1, 0.4, 0.8]; [0 - 0.05, -0.1, 0]
    # leave-one-out by position: [1.15, 0.5, 0.8] and [-1.15, -0.5, (padding) 0]
    adv = torch.tensor([[1.15, 0.5, 0.8], [-1.15, -0.5, 0.0]])
    loss.backward()
    assert torch.allclose(logps.grad, -adv / 2, atol=1e-6)
    assert loss.item() == pytest.approx(-(adv * logps.detach() * valid).sum().item() / 2)
    assert m["objective/kl"] == pytest.approx((0.6 + 0.2) / 2) and m["objective/scores"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sample.n_samples >= 2"):
        rloo_prefix_loss(logps, torch.zeros(2, 3), valid, torch.zeros(2), torch.zeros(2, 3), n=1, beta=0.5)


def test_position_kls_closed_form():
    """Two rows, vocabulary 2, a prompt token then completions of 2 and 1 tokens (the mask says which
    positions predict a completion token). Row 0's first completion position: π = (1/2, 1/2), π_ref =
    (1/4, 3/4): KL = ½·log 2 + ½·log(2/3); its second: π = π_ref, KL 0."""
    logits = torch.zeros(2, 4, 2)  # (B, T, V): positions 0..2 predict tokens 1..3
    ref = torch.zeros(2, 4, 2)
    ref[0, 0] = torch.tensor([0.0, math.log(3)])  # π_ref = (1/4, 3/4) where row 0 predicts its first completion token
    ref[1, 0] = torch.tensor([math.log(3), 0.0])  # (3/4, 1/4) for row 1's only one
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]])
    kl, valid = position_kls(logits.requires_grad_(True), ref, mask)
    want = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert torch.allclose(kl, torch.tensor([[want, 0.0], [want, 0.0]]), atol=1e-6)
    assert valid.tolist() == [[True, True], [True, False]]
    kl[valid].sum().backward()
    assert logits.grad[0, 0].abs().sum() > 0 and logits.grad[0, 2].abs().sum() == 0  # past the completion: none


def test_exact_kl_enters_the_loss_and_the_later_tokens_returns():
    """β 0.5, lam 1, equal rewards and a flat prefix (no reward credit): 1 prompt x 2 completions of 2 tokens,
    exact KLs [0.2, 0.4] and [0, 0.6]. Token t's return is -β·(the KLs after it): [-0.2, 0] and [-0.3, 0];
    leave-one-out: [0.1, 0] and [-0.1, 0]. The KLs' own gradient is β / (completions) at every position."""
    logps = torch.zeros(2, 2, requires_grad=True)
    exact = torch.tensor([[0.2, 0.4], [0.0, 0.6]], requires_grad=True)
    valid = torch.ones(2, 2, dtype=torch.bool)
    loss, m = rloo_prefix_loss(logps, torch.full((2, 2), 9.0), valid, torch.tensor([1.0, 1.0]),
                               torch.ones(2, 2), n=2, beta=0.5, exact_kl=exact)  # ref log-probs 9: never read
    loss.backward()
    assert torch.allclose(logps.grad, -torch.tensor([[0.1, 0.0], [-0.1, 0.0]]) / 2, atol=1e-6)
    assert torch.allclose(exact.grad, torch.full((2, 2), 0.25))
    assert loss.item() == pytest.approx(0.5 * 0.6) and m["objective/kl"] == pytest.approx(0.6)
    seq_lp = torch.tensor([-1.0, -2.0], requires_grad=True)  # sequence credit: R = r - β·Σ KL, plus β·mean Σ KL
    seq_kl = torch.tensor([0.6, 0.2], requires_grad=True)
    loss, m = rloo_loss(seq_lp, torch.tensor([5.0, 5.0]), torch.tensor([1.0, 1.0]), n=2, beta=0.5, exact_kl=seq_kl)
    loss.backward()  # R = [0.7, 0.9]: A = [-0.2, 0.2]
    assert torch.allclose(seq_lp.grad, torch.tensor([0.1, -0.1])) and torch.allclose(seq_kl.grad, torch.tensor([0.25, 0.25]))
    assert m["objective/kl"] == pytest.approx(0.4)


def test_prefix_credit_with_a_flat_prefix_is_rloo_token_by_token():
    """With the prefix rewards constant (nothing to tell the tokens apart), lam 1 and β 0, every token of a
    completion gets rloo_loss's advantage for the whole completion: the same gradient, token by token."""
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6, generator=g)  # 2 prompts x 3 completions
    valid = torch.ones(6, 4, dtype=torch.bool)
    tok = torch.randn(6, 4, generator=g).requires_grad_(True)
    rloo_prefix_loss(tok, torch.zeros(6, 4), valid, r, torch.full((6, 4), 0.3), n=3, beta=0.0)[0].backward()
    seq = tok.detach().sum(1).requires_grad_(True)
    rloo_loss(seq, torch.zeros(6), r, n=3, beta=0.0)[0].backward()
    assert torch.allclose(tok.grad, seq.grad[:, None].expand(6, 4), atol=1e-6)


def test_log_quantile_reward_is_log_of_the_start_policys_reward_cdf():
    class Fixed:
        label = "fixed"

        def score(self, texts):
            return torch.tensor([float(t) for t in texts])
    q = LogQuantileReward(Fixed(), [3.0, 0.0, 2.0, 1.0])
    # F(r) = (#{start <= r} + 1/2) / 5: below all 0.1, between 1 and 2 0.5, equal to 2 (three at or below) 0.7, above 0.9
    assert torch.allclose(q.score(["-9", "1.5", "2", "9"]), torch.log(torch.tensor([0.1, 0.5, 0.7, 0.9])))
    assert q.label == "log-quantile of fixed"
    assert shaped_reward(q.reward, "raw", None) is q.reward
    with pytest.raises(ValueError, match="dpo.reward_shape=log_quantile"):
        shaped_reward(q.reward, "log_quantile", [])
    with pytest.raises(ValueError, match=r"reward is NaN/inf for 1 text\(s\), first index 1: 'nan'"):  # never the top quantile
        q.score(["1", "nan"])


def test_to_go_and_prefix_rewards():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert to_go(x).tolist() == [[6.0, 5.0, 3.0]] and to_go(x, 0.0).tolist() == [[1.0, 2.0, 3.0]]
    assert to_go(x, 0.5).tolist() == [[1 + 1 + 0.75, 2 + 1.5, 3.0]]

    class Letters:  # token id k decodes to the k-th letter
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(97 + i) for i in ids)

    class CountA:
        def score(self, texts):
            return torch.tensor([float(t.count("a")) for t in texts])

    recs = [{"prompt": "x", "completion_ids": [0, 1, 0]}, {"prompt": "a", "completion_ids": [1]}]
    # record 0: "x", "xa", "xab" before its tokens; record 1: "a" (the prompt is scored) and padding
    assert prefix_rewards(CountA(), recs, Letters()).tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert prefix_rewards(CountA(), recs, Letters(), score_prompt=False).tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_round_shares_and_trained_prompts():
    ps = [{"id": f"p{i}"} for i in range(5)]
    assert [[p["id"] for p in s] for s in round_shares(ps, 2)] == [["p0", "p1", "p2"], ["p3", "p4"]]
    assert sum(len(s) for s in round_shares(ps, 4)) == 5
    with pytest.raises(ValueError, match="dpo.rounds=6"):
        round_shares(ps, 6)
    assert [p["id"] for p in trained_prompts(ps, 0.25)] == ["p0", "p1", "p2", "p3"]  # floor(1.25) held out


def _changed(tiny_gpt2_dir, policy_dir) -> list[str]:
    before = load_file(os.path.join(tiny_gpt2_dir, "model.safetensors"))
    after = load_file(str(policy_dir / "model" / "model.safetensors"))
    return [k for k in before if k in after and not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("method", ["online", "rloo"])
def test_on_policy_methods_train_lora_adapters_against_the_frozen_base(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                       reviews_csv, method):
    """With LoRA the reference is the policy's own base with its adapters off: the reference log-probs the
    methods read are the start policy's (checked against a separately loaded start policy)."""
    from alignment.steps import dpo
    from alignment.steps.logprobs import batched_logps
    from alignment.assets.models import load_causal_lm
    seen = []
    real = dpo.reference_of

    def spy(model, models, cfg):
        ctx = real(model, models, cfg)

        class Checked:
            def __enter__(self):
                ref = ctx.__enter__()
                start = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))
                probe = ([[5, 6, 7]], [[8, 9, 10]])
                seen.append(torch.allclose(batched_logps(ref, *probe, 0), batched_logps(start, *probe, 0), atol=1e-5))
                return ref

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)
        return Checked()

    import alignment.steps.online as online
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, "python:vowels", reviews_csv,
                   **{"eval.topic_judge": str(tiny_classifier_dir), "data.n_train_prompts": 8, "dpo.method": method,
                      "dpo.rounds": 2, "dpo.batch_size": 2, "dpo.lora_r": 2, "dpo.lr": 1e-2})
    pipe = Pipeline(cfg, reward=vowels)
    pipe.prepare()
    online.reference_of, saved = spy, online.reference_of
    try:
        policy = pipe.train()
    finally:
        online.reference_of = saved
    assert seen and all(seen), "the LoRA reference is not the start policy"
    assert (policy.dir / "model" / "adapter_config.json").exists()
    assert not any("lora" in n for n, _ in pipe.models.ref_model.named_parameters()), "adapters left on the reference"


@pytest.mark.parametrize("method", ["online", "rloo", "rloo-prefix", "rloo-xkl", "rloo-lq", "rloo-prefix-lq"])
def test_on_policy_methods_train_through_the_pipeline(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                                                      method):
    credit = {"dpo.credit": "prefix", "dpo.credit_lambda": 0.9} if method == "rloo-prefix" else {}
    credit = {"dpo.kl": "exact"} if method == "rloo-xkl" else credit
    credit = {"dpo.reward_shape": "log_quantile"} if method == "rloo-lq" else credit
    if method == "rloo-prefix-lq":
        credit = {"dpo.credit": "prefix", "dpo.credit_lambda": 0.9, "dpo.reward_shape": "log_quantile"}
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, "python:vowels", reviews_csv,
                   **{"eval.topic_judge": str(tiny_classifier_dir), "data.n_train_prompts": 8, "pairs.held_out": 0.25,
                      "dpo.method": method.split("-")[0], "dpo.rounds": 2, "dpo.batch_size": 2, **credit})
    import alignment.steps.online as online
    pipe = Pipeline(cfg, reward=vowels)
    pipe.prepare()
    scored, real = [], online.prefix_rewards

    def spy(reward, recs, *a, **k):
        out = real(reward, recs, *a, **k)
        scored.append((len(recs), out))
        return out
    online.prefix_rewards = spy
    try:
        policy = pipe.train()
    finally:
        online.prefix_rewards = real
    assert policy.name == {"online": "online2-sigmoid-b0.1-lr0.001-s0", "rloo": "rloo-b0.1-lr0.001-s0",
                           "rloo-prefix": "rloo-prefix0.9-b0.1-lr0.001-s0", "rloo-xkl": "rloo-xkl-b0.1-lr0.001-s0",
                           "rloo-lq": "rloo-lq-b0.1-lr0.001-s0", "rloo-prefix-lq": "rloo-prefix0.9-lq-b0.1-lr0.001-s0"}[method]
    # per-token credit scores every step's draws' prefixes (2 prompts x sample.n_samples 3), with a spread to credit
    assert [n for n, _ in scored] == ([6, 6, 6] if method in ("rloo-prefix", "rloo-prefix-lq") else [])
    assert all(p.std() > 0 for _, p in scored)
    if method == "rloo-prefix-lq":  # the prefixes' potentials are log-quantiles too (0 past a completion's end)
        assert all(p.max() <= 0 and p.min() < 0 for _, p in scored)
    assert _changed(tiny_gpt2_dir, policy.dir), f"{method} did not change any parameter"
    log = read_jsonl(policy.dir / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, len(log) + 1)) and all(math.isfinite(r["loss"]) for r in log)
    if method == "online":  # 6 trained prompts in 2 rounds of 3, each its own fresh samples from the policy so far
        rounds = [read_jsonl(policy.dir / f"round{k}" / "samples.jsonl") for k in range(2)]
        assert [len({r["prompt_id"] for r in rs}) for rs in rounds] == [3, 3]
        assert {r["round"] for r in log} == {0, 1}
        assert read_json(policy.dir / "round1" / "pairs_stats.json")["n_prompts"] == 3
    else:  # 6 prompts, 2 a step: 3 steps, each scored on its own draws
        assert len(log) == 3 and all("objective/kl" in r and "objective/scores" in r for r in log)
    if method.endswith("-lq"):  # trained on log-quantiles under the start policy's rewards of its draw: all < 0
        start = read_json(pipe.data.paths.draw(0).rewards)
        assert len(start) == 8 * 3 and all(r["objective/scores"] < 0 for r in log)
        assert all(r["reward"] >= 0 for r in pipe.evaluate(policy).scored)  # evaluated on the raw reward (vowels' share)
    else:
        assert not pipe.data.paths.draw(0).samples.exists(), "on-policy methods draw no start-policy samples"
    again = pipe.train()  # cached
    assert again.dir == policy.dir and again.hash == policy.hash


@pytest.mark.parametrize("credit,accum", [("sequence", 1), ("prefix", 1), ("sequence", 2)])
def test_rloo_interrupted_resumes_to_the_uninterrupted_policy(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                                                               monkeypatch, credit, accum):
    """Ctrl-C in RLOO's third step keeps the two steps done (a checkpoint); the rerun draws what the uninterrupted
    run drew from there (its micro-batches' seeds count over the whole run): the same adapters, log and cost."""
    import alignment.steps.online as online

    def cfg(run):
        return tiny_cfg(tmp_path / run, tiny_gpt2_dir, "python:vowels", reviews_csv,
                        **{"eval.topic_judge": str(tiny_classifier_dir), "data.n_train_prompts": 8, "pairs.held_out": 0.25,
                           "dpo.method": "rloo", "dpo.credit": credit, "dpo.batch_size": 2, "dpo.lora_r": 2,
                           "dpo.lr": 1e-2, "dpo.epochs": 2, "dpo.grad_accum": accum})

    def trained(run):
        pipe = Pipeline(cfg(run), reward=vowels)
        pipe.prepare()
        return pipe.train()

    straight = trained("a")
    real, calls = online.draw_and_score, []

    def stop_third(*a, **k):  # with 2 micro-batches a step: the first micro-batch of the second step
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(online, "draw_and_score", stop_third)
    with pytest.raises(KeyboardInterrupt):
        trained("b")
    monkeypatch.setattr(online, "draw_and_score", real)
    resumed = trained("b")
    assert read_jsonl(resumed.dir / "train_log.jsonl") == read_jsonl(straight.dir / "train_log.jsonl")
    assert [r["tokens_drawn"] for r in read_jsonl(resumed.dir / "train_log.jsonl")][-1] == \
        read_json(straight.dir / "cost.json")["tokens_drawn"] == read_json(resumed.dir / "cost.json")["tokens_drawn"]
    a, b = (load_file(str(p.dir / "model" / "adapter_model.safetensors")) for p in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_on_policy_methods_are_refused_where_they_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="dpo.method"):
        load_config(overrides={"dpo.method": "online", "dpo.backend": "trl"})
    with pytest.raises(ConfigError, match="dpo.method"):
        load_config(overrides={"dpo.method": "ppo"})
    with pytest.raises(ConfigError, match="distill"):
        load_config(overrides={"dpo.loss": "distill", "dpo.backend": "trl"})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    own = load_config(overrides={"pairs.source": str(pairs)})
    for key, value in (("method", "rloo"), ("loss", "distill")):
        dpo = type(own.dpo)(**{**own.dpo.__dict__, key: value})
        with pytest.raises(ConfigError, match="pairs.source"):
            check_training(own, dpo)


def test_a_method_names_and_keys_only_the_settings_it_reads():
    from alignment.run.rundir import policy_name
    cfg = load_config(overrides={"dpo.rounds": 8, "dpo.loss": "hinge"})
    assert method_settings(cfg.dpo).rounds == 4  # offline DPO has no rounds
    rloo = method_settings(type(cfg.dpo)(**{**cfg.dpo.__dict__, "method": "rloo", "alpha": 0.3}))
    assert (rloo.loss, rloo.alpha, rloo.rounds) == ("sigmoid", 0.5, 4) and policy_name(rloo) == "rloo-b0.1-lr5e-05-s0"
    assert method_settings(type(cfg.dpo)(**{**cfg.dpo.__dict__, "credit": "prefix"})).credit == "sequence"  # not rloo
    flat = method_settings(type(rloo)(**{**rloo.__dict__, "credit_lambda": 0.5}))
    assert flat.credit_lambda == 1.0 and policy_name(flat) == "rloo-b0.1-lr5e-05-s0"  # lambda needs prefix credit
    prefix = method_settings(type(rloo)(**{**rloo.__dict__, "credit": "prefix", "credit_lambda": 0.5}))
    assert policy_name(prefix) == "rloo-prefix0.5-b0.1-lr5e-05-s0"
    exact = method_settings(type(prefix)(**{**prefix.__dict__, "kl": "exact"}))
    assert policy_name(exact) == "rloo-prefix0.5-xkl-b0.1-lr5e-05-s0"
    assert policy_name(type(exact)(**{**exact.__dict__, "epochs": 3})) == "rloo-prefix0.5-xkl-b0.1-lr5e-05-e3-s0"
    assert method_settings(type(cfg.dpo)(**{**cfg.dpo.__dict__, "kl": "exact"})).kl == "sampled"  # not rloo
    lq = method_settings(type(rloo)(**{**rloo.__dict__, "reward_shape": "log_quantile"}))
    assert policy_name(lq) == "rloo-lq-b0.1-lr5e-05-s0"
    assert method_settings(type(cfg.dpo)(**{**cfg.dpo.__dict__, "reward_shape": "log_quantile"})).reward_shape == "raw"
    with pytest.raises(ConfigError, match="sample.temperature"):
        check_training(load_config(overrides={"sample.temperature": 0.7}), rloo)
    with pytest.raises(ConfigError, match="dpo.rounds=300"):
        check_training(cfg, type(cfg.dpo)(**{**cfg.dpo.__dict__, "method": "online", "rounds": 300}))


def test_offline_keys_are_unchanged_by_the_method_fields():
    """`dpo.method` and `dpo.rounds` key the caches only when set: the default config's dpo key has neither."""
    from alignment.config import section_deps
    cfg = load_config()
    assert not {"method", "rounds", "credit", "credit_lambda", "kl", "reward_shape"} & set(section_deps(cfg, "dpo")["dpo"])
    cfg = load_config(overrides={"dpo.method": "online"})
    assert section_deps(cfg, "dpo")["dpo"]["method"] == "online"


def test_level3_traces_every_method_against_best_of_n(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    from alignment.run import experiments
    from alignment.study.console import render
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, "python:vowels", reviews_csv,
                   **{"eval.topic_judge": str(tiny_classifier_dir), "data.n_train_prompts": 8, "dpo.rounds": 2,
                      "dpo.batch_size": 2, "eval.n_samples": 2})
    res = experiments.level3(Pipeline(cfg, reward=vowels), betas=(0.3,), seeds=(0,), best_of_n=(1, 2, 4, 16))
    methods = ["dpo", "distill", "online-dpo", "rloo", "rloo-prefix", "rloo-prefix-long", "vbon"]
    # 16 start samples per prompt carry the optimum: the methods that maximise reward - β·KL get their climb toward it
    assert [r["label"] for r in res["objective_progress"]] == ["distill", "rloo", "rloo-prefix", "rloo-prefix-long"]
    assert all(r["optimal_gain"] > 0 for r in res["objective_progress"])
    assert [r["label"] for r in res["runs"]] == methods
    assert [r.get("method", "offline") for r in res["runs"]] == ["offline", "offline", "online", "rloo", "rloo", "rloo", "rloo"]
    assert res["runs"][-2]["credit"] == "prefix" and res["runs"][-2]["model"].startswith("rloo-prefix0.5-xkl-")
    assert res["runs"][-1]["model"].startswith("rloo-prefix0.5-lq-")  # vbon
    for r in res["runs"]:  # what each policy cost when it was trained: on-policy methods draw their own tokens
        assert r["cost"]["train_seconds"] > 0
        assert (r["cost"]["tokens_drawn"] > 0) == (r["label"] in ("online-dpo", "rloo", "rloo-prefix", "rloo-prefix-long", "vbon")), r
    assert list(res["draw_tokens"]) == ["0"] and res["draw_tokens"]["0"] > 0  # the offline methods' shared draw
    assert res["draw_seconds"]["0"] > 0  # built before any policy, so no policy's cost includes it
    assert {p["label"] for p in res["points"]} >= {*methods, "best-of-N"}
    assert [d["label"] for d in res["diagnosis"]] == methods
    assert {e["model"] for e in res["examples"]} == {"sft", *(f"{m}@0.3" for m in methods)}  # texts to read
    # the evaluation scores each completion after another prompt too, so the prompt-relevance rule has numbers
    assert all(a["prompt_relevance"] is not None and a["start_prompt_relevance"] is not None for a in res["alarm"])
    # the judge rule's honest rate is fitted once, on the start's best-of-N pool, for every point
    assert len({a["selection_slope"] for a in res["alarm"]}) == 1 and res["alarm"][0]["selection_slope"] is not None
    # the control: best-of-2 and -4 from the start's 16 samples per prompt, 2 per prompt as the start has (best-of-16 would need 32)
    assert [(c["label"], c["n"], c["model"]) for c in res["alarm_control"]] == [("best-of-N", 2, "best-of-2"),
                                                                                 ("best-of-N", 4, "best-of-4")]
    assert "The alarm's control, best-of-N drawn from the start policy's own samples" in render("level3", res)
    for d in res["diagnosis"]:
        assert sum(b["kl"] for b in d["by_position"]) == pytest.approx(d["kl"])
    assert read_json(Path(cfg.run_dir) / "level3.json")["grid"]["methods"] == methods
    text = render("level3", res)
    assert "built once, and the log-quantile RLOO measures its rewards' quantiles against that draw's):" in text
    assert "**Level 3** (7 runs" in text and "| `rloo-prefix` β=0.3 |" in text and "tokens drawn / policy" in text and "`rloo` β=0.3" in text
    from alignment.study.results_page import level3_brief
    brief = level3_brief(res)
    assert brief.startswith("Level 3 (7 methods along β, one seed (0)") and all(f"`{m}`" in brief for m in methods)
    assert " 70 % of best-of-N's gain with the judge agreeing and the alarm silent: " in brief
    assert "How far the methods that maximise reward − β·KL climbed toward the best value of it at their β" in text
    # what of best-of-N's reward gain the judge's view accounts for: best-of-N picked by the judge, N 2 .. 16
    assert [r["n"] for r in res["judge_selected"]["by_n"]] == [2, 4, 16]
    assert -1 <= res["judge_selected"]["within_prompt_corr"] <= 1
    assert "Best-of-N picked by the judge instead of the reward buys " in text


def test_judge_selected_line_puts_the_points_beside_the_judges_pick():
    from alignment.study.level3_report import judge_selected_line
    assert judge_selected_line({}) == ""
    level3 = {"judge_selected": {"within_prompt_corr": 0.54, "by_n": [
        {"n": 4, "kl": 0.64, "share": 0.57, "share_lo": 0.4, "share_hi": 0.7},
        {"n": 16, "kl": 1.84, "share": 0.59, "share_lo": 0.45, "share_hi": 0.72}]},
        "gain_fractions": [{"label": "rloo", "beta": 0.5, "field": "reward", "frac_bon": 0.56},
                           {"label": "rloo", "beta": 0.5, "field": "judge", "frac_bon": 0.93},
                           {"label": "dpo", "beta": 0.5, "field": "reward", "frac_bon": 0.25},
                           {"label": "dpo", "beta": 0.5, "field": "judge", "frac_bon": None}]}
    line = judge_selected_line(level3)
    assert "That is how much of best-of-N's reward gain the judge's own ranking of the same samples recovers." in line
    assert line.startswith("Best-of-N picked by the judge instead of the reward buys 57–59 % of the reward gain")
    assert "N=4 57 % (40..70), N=16 59 % (45..72); 95 % CI): within a prompt the two scorers correlate at 0.54." in line
    assert line.endswith("The trained points reach 56 % of best-of-N's reward gain and 93 % of its judge gain, each at its own KL.")


def test_a_method_with_a_minimum_beta_trains_only_at_or_above_it(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                   reviews_csv, capsys):
    from alignment.presets import method_betas
    from alignment.run import experiments
    assert method_betas(("dpo", "rloo-prefix-long"), (0.1, 0.3, 1.0)) == {"dpo": (0.1, 0.3, 1.0),
                                                                         "rloo-prefix-long": (0.3, 1.0)}
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, "python:vowels", reviews_csv,
                   **{"eval.topic_judge": str(tiny_classifier_dir), "data.n_train_prompts": 8, "dpo.batch_size": 2,
                      "eval.n_samples": 2})
    pipe = Pipeline(cfg, reward=vowels)
    res = experiments.level3(pipe, methods=("dpo", "rloo-prefix-long"), betas=(0.1, 0.3), seeds=(0,), best_of_n=(1, 2))
    assert [(r["label"], r["beta"]) for r in res["runs"]] == [("dpo", 0.1), ("dpo", 0.3), ("rloo-prefix-long", 0.3)]
    long = res["runs"][-1]  # three passes with the exact KL: its name says both
    assert long["model"] == "rloo-prefix0.5-xkl-b0.3-lr0.001-e3-s0" and long["kl"] == "exact" and long["epochs"] == 3
    assert res["grid"]["method_betas"] == {"dpo": [0.1, 0.3], "rloo-prefix-long": [0.3]}
    res = experiments.level3(pipe, methods=("dpo", "rloo-prefix-long"), betas=(0.1,), seeds=(0,), best_of_n=(1, 2))
    assert res["grid"]["methods"] == ["dpo"] and "method_betas" not in res["grid"]  # cached dpo; the long one left out
    assert "rloo-prefix-long trains only at β >= 0.3" in capsys.readouterr().out


def test_goal_line_says_whether_a_method_closes_the_gap():
    from alignment.study.level3_report import goal_line

    def frac(label, beta, field, f, lo=0.5, hi=0.9):
        return {"label": label, "beta": beta, "field": field, "kl": 1.0, "frac_bon": f, "frac_bon_lo": lo,
                "frac_bon_hi": hi}
    base = {"runs": [{"label": "rloo", "method": "rloo"}, {"label": "dpo"}],
            "diagnosis": [{"label": "dpo", "sentiment": {"share_of_kl": 0.1}},
                          {"label": "rloo", "sentiment": {"share_of_kl": 0.3}}]}
    met = {**base, "gain_fractions": [frac("rloo", 0.1, "reward", 0.8), frac("rloo", 0.1, "judge", 0.75),
                                      frac("dpo", 0.1, "reward", 0.2)],
           "alarm": [{"label": "rloo", "beta": 0.1, "flags": []}]}
    assert goal_line(met) == ("Goal met: `rloo` β=0.1 (80 % (50..90 %) of best-of-N's reward gain at KL 1.00), the judge "
                              "agreeing, the alarm silent; a 95 % CI that includes 70 % says the point may as well fall short.")
    sure = {**met, "gain_fractions": [frac("rloo", 0.1, "reward", 0.8, lo=0.72), frac("rloo", 0.1, "judge", 0.75)]}
    assert goal_line(sure).endswith("the judge agreeing, the alarm silent.")
    from alignment.study.results_page import goal_brief, level3_brief
    assert goal_brief(met).endswith("alarm silent: `rloo` β 0.1.")
    hacked = {**met, "alarm": [{"label": "rloo", "beta": 0.1, "flags": ["repetition"]}]}
    judged = {**met, "gain_fractions": [frac("rloo", 0.1, "reward", 0.8), frac("rloo", 0.1, "judge", 0.4)]}
    brief = level3_brief({**hacked, "grid": {"methods": ["rloo", "dpo"], "seeds": [0]}})
    assert "`rloo` 80 % (50..90 %) at β 0.1, KL 1.00, judge 75 %, alarm: repetition;" in brief
    for case in (hacked, judged):  # an alarm, or a judge that does not agree: not met
        assert goal_brief(case).endswith("alarm silent: no point.")
        line = goal_line(case)
        assert line.startswith("No point reaches 70 %") and "`rloo` β=0.1's 80 %" in line
        assert "sentiment words (over its β): `dpo` 10 %, `rloo` 30 %" in line


def test_kl_lines_say_where_each_point_spent_its_kl_and_when():
    from alignment.study.level3_report import kl_lines

    def diag(label, training, kl=2.0):
        return {"label": label, "beta": 0.3, "kl": kl, "training": training,
                "sentiment": {"share_of_kl": 0.5, "share_of_tokens": 0.1},
                "by_position": [{"from": 0, "kl": 0.5}, {"from": 8, "kl": 1.5}]}
    rl = {"steps": 48, "draws_reward_first": 0.2, "draws_reward_last": 1.5, "draws_kl_first": 0.3,
          "draws_kl_last": 3.3, "draws_kl_reached_at": 9}
    offline = {"logps_chosen_first": -10.0, "logps_chosen_last": -11.0, "logps_rejected_first": -12.0,
               "logps_rejected_last": -14.0, "held_out_from": 4, "held_out_to": 16, "held_out_accuracy": 0.6,
               "train_accuracy": 0.7}
    lines = kl_lines({"diagnosis": [diag("rloo", rl), diag("dpo", offline), diag("distill", {}, kl=0.0)]})
    assert lines[0].startswith("Where each point's KL goes") and lines[1] == lines[3] == ""
    table = lines[2].splitlines()
    assert table[0] == ("| point | KL, first seed (nats) | on sentiment words | in the first 8 tokens | held-out pairs: "
                        "chosen, rejected log-prob; accuracy | own draws' reward, first → last quarter | own draws' KL, "
                        "first → last quarter (90 % by step) |")
    assert table[2] == "| `rloo` β=0.3 | 2.00 | 50% (10% of tokens) | 25% | – | 0.20 → 1.50 | 0.30 → 3.30 (9 of 48) |"
    assert table[3] == ("| `dpo` β=0.3 | 2.00 | 50% (10% of tokens) | 25% | steps 4→16: -10.0 → -11.0, -12.0 → -14.0; "
                        "0.60 (train 0.70) | – | – |")
    assert table[4] == "| `distill` β=0.3 | 0.00 | – | – | – | – | – |"  # no KL: no shares
    never = {**rl, "draws_kl_reached_at": None}  # a KL that never reached 90 % of its end level still shows its trend
    grid = {"grid": {"methods": ["dpo", "rloo"]},
            "diagnosis": [diag("rloo", never), {**diag("dpo", offline), "beta": 0.1}, {**diag("dpo", offline), "beta": 1.0}]}
    rows = kl_lines(grid)[2].splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| `dpo` β=1", "| `dpo` β=0.1", "| `rloo` β=0.3"]  # grid order, β falling
    assert rows[2].endswith("| – | 0.20 → 1.50 | 0.30 → 3.30 (– of 48) |")
    assert kl_lines({}) == []


def test_goal_line_says_what_size_would_tell_a_shortfall():
    from alignment.study.level3_report import size_line

    def frac(beta, f, lo, hi):
        return {"label": "rloo", "beta": beta, "field": "reward", "kl": 1.0, "frac_bon": f, "frac_bon_lo": lo,
                "frac_bon_hi": hi}
    alarm = [{"label": "rloo", "beta": b, "flags": []} for b in (0.3, 1.0)]
    # 60 % with an upper side of 20 points: SE 0.2 / 1.96; a 10-point gap detected at 80 % power (2.80 SE, two-sided)
    # needs the SE to shrink by 0.1 / (2.80 · 0.2 / 1.96), i.e. n to grow by (2.80 · 0.2 / 1.96 / 0.1)² ≈ 8.2
    wide = {"gain_fractions": [frac(0.3, 0.6, 0.45, 0.8), frac(1.0, 0.5, 0.3, 0.65)], "alarm": alarm}
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    times = (z * 0.2 / NormalDist().inv_cdf(0.975) / 0.1) ** 2
    assert f"{times:.1f}" == "8.2"
    assert size_line(wide) == ("Whether the best point below 70 % without an alarm, `rloo` β=0.3's 60 % (45..80 %), falls "
                               "short of it cannot be told at this size: telling a 10-point gap at 80 % power would take "
                               "about 8.2× the seeds and 8.2× the prompts (a CI narrows as 1/√n). ")
    at_goal = {**wide, "gain_fractions": [frac(0.3, 0.6, 0.5, 0.7)]}  # the CI just reaches the goal: still told apart
    assert "about 2.0× the seeds" in size_line(at_goal)  # (2.80 / 1.96)² ≈ 2.04
    narrow = {**wide, "gain_fractions": [frac(0.3, 0.6, 0.55, 0.66)]}
    assert size_line(narrow) == ("Of the points below 70 % without an alarm, the best, `rloo` β=0.3's 60 % (55..66 %), "
                                 "falls short at this size: its 95 % CI lies below 70 %. ")
    hacked = {**wide, "alarm": [{"label": "rloo", "beta": 0.3, "flags": ["repetition"]}, alarm[1]]}
    assert size_line(hacked).startswith("Of the points below 70 % without an alarm, the best, `rloo` β=1's 50 % (30..65 %)")
    above = {**wide, "gain_fractions": [frac(0.3, 0.75, 0.6, 0.9), frac(1.0, 0.5, 0.3, 0.65)]}  # at the goal: not sized
    assert "`rloo` β=1's 50 %" in size_line(above)
    assert size_line({**wide, "alarm": []}) == ""  # no quiet point: nothing to size


def test_progress_is_measured_for_the_methods_that_maximise_the_objective():
    from alignment.config import load_config
    from alignment.run.frontiers import maximises_objective
    from alignment.presets import LEVEL3_METHODS
    from alignment.study.level3_report import progress_line

    cfg = load_config(preset="smoke")
    assert [m for m, over in LEVEL3_METHODS.items() if maximises_objective(over, cfg)] == [
        "distill", "rloo", "rloo-prefix", "rloo-prefix-long"]
    assert not maximises_objective({"loss": "hinge"}, cfg) and maximises_objective({"method": "online", "loss": "distill"}, cfg)
    assert not maximises_objective({"method": "rloo", "reward_shape": "log_quantile"}, cfg)  # vbon: E[log F(r)] - β·KL
    row = {"label": "rloo", "beta": 0.5, "kl": 1.0, "objective_gain": 0.2, "optimal_gain": 0.8, "optimum_kl": 1.5,
           "kl_cap": 2.08, "progress": 0.25, "progress_lo": 0.1, "progress_hi": 0.4, "why": None}
    far = {**row, "beta": 0.1, "optimum_kl": 3.1, "progress": None, "progress_lo": None, "progress_hi": None, "why": "beyond"}
    flat = {**far, "beta": 1.0, "why": "no gain"}
    line = progress_line({"objective_progress": [row, far, flat]})
    assert line.endswith("`rloo` β=0.5: 25 % (10..40 %), J +0.20 of the best +0.80; `rloo` β=0.1: not read (π_β needs "
                         "KL 3.10, more than the start's samples per prompt estimate it at, 2.08); `rloo` β=1: not read "
                         "(the best objective gains nothing over the start).")
    assert progress_line({}) == ""
    from alignment.study.results_page import progress_brief
    assert progress_brief({"objective_progress": [row, far]}) == (
        " Toward the best reward − β·KL at their own β, the methods that maximise it climb at most 25 % (10..40 %) of "
        "the way (`rloo` β 0.5), far from the policy their objective asks for.")
    assert progress_brief({"objective_progress": [{**row, "progress": 0.8, "progress_hi": 0.95}]}).endswith(
        "80 % (10..95 %) of the way (`rloo` β 0.5).")
    assert progress_brief({"objective_progress": [far]}) == ""
