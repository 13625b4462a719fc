"""On-policy drift estimates: the sampler returns log q of the distribution that drew, KL to
the reference is estimated from those, and the control-variate estimator has the same mean
with less spread. Tiny local models; closed forms where there are any."""
import copy
import math

import pytest
import torch

import alignment.steps.decode as D
import alignment.steps.sampling as S
from alignment.steps import evaluate
from alignment.config import SampleConfig
from alignment.steps.logprobs import batched_logps
from alignment.study.metrics import kl_control_variate
from alignment.assets.models import load_causal_lm
from alignment.study.stats import prompt_bootstrap

PROMPTS = [[52, 72, 265, 285], [80, 81], [100, 120, 140, 160, 180, 200, 220], [7]]
STOPS = list(range(0, 400, 10))
SCALE = 0.05  # lm_head perturbation: KL ~0.3 nats per sample, samples of a prompt still differ


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir):
    return load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))


def _prompts(k: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"id": f"p{i}", "text": "", "ids": torch.randint(1, 399, (2 + i % 5,), generator=g).tolist()}
            for i in range(k)]


def _draw(model, prompts, n, seed, max_new=8):
    cfg = SampleConfig(max_new_tokens=max_new, seed=seed, batch_size=64)

    class Tok:  # decode is all sample_records needs from a tokenizer here
        pad_token_id = 0

        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    return [r for batch in S.sample_records(model, Tok, prompts, n, cfg, STOPS) for r in batch]


def _kl_ci(lp, prompts_of):
    x = (lp["policy"] - lp["ref"]).tolist()
    return prompt_bootstrap(x, prompts_of, n_boot=400)


def test_kl_control_variate_closed_form():
    q, p = torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.0 + math.log(2)])  # r = (1, 2)
    assert kl_control_variate(q, p).item() == pytest.approx((2 - 1) - math.log(2))
    assert kl_control_variate(q, q).item() == 0.0
    with pytest.raises(ValueError, match="kl_control_variate"):
        kl_control_variate(q, p[:1])


def test_sampler_logps_match_a_direct_forward(gpt2):
    """The sampler's own log q per token and predictive entropy equal a fresh fp32 forward of the
    same model on the drawn tokens (the fallback path for records without them)."""
    cfg = SampleConfig(max_new_tokens=7)
    d = D.draw_batch(gpt2, PROMPTS, 3, cfg, STOPS, 0, D.row_keys(0, [str(i) for i in range(len(PROMPTS))], 3))
    prompts = [p for p in PROMPTS for _ in range(3)]
    direct = batched_logps(gpt2, prompts, d.tokens, 0)
    assert torch.allclose(torch.tensor([sum(x) for x in d.logps]), direct, atol=1e-4)
    assert all(len(lp) == len(t) for lp, t in zip(d.logps, d.tokens))
    recs = [{"prompt_id": str(i // 3), "completion_ids": t} for i, t in enumerate(d.tokens)]
    pids = {str(i): p for i, p in enumerate(PROMPTS)}
    forward = evaluate.logps_and_entropy(gpt2, gpt2, pids, recs, 0)  # no sample_logps: forward of the sampler
    assert torch.allclose(forward["entropy"].float(), torch.tensor(d.entropy), atol=1e-4)
    assert torch.allclose(forward["policy"].float(), direct, atol=1e-4)


def test_kl_of_a_model_to_itself_is_zero_within_its_ci(gpt2):
    prompts = _prompts(16)
    recs = _draw(gpt2, prompts, 4, seed=3)
    assert all("sample_logps" in r for r in recs)
    lp = evaluate.logps_and_entropy(gpt2, gpt2, {p["id"]: p["ids"] for p in prompts}, recs, 0)
    b = _kl_ci(lp, [r["prompt_id"] for r in recs])
    assert b["lo"] <= 0.0 <= b["hi"] and abs(b["mean"]) < 1e-4
    assert lp["kl_cv"].abs().max().item() < 1e-6  # every r_t = 1


def test_the_start_policy_is_its_own_reference_without_a_second_forward(gpt2, monkeypatch):
    """Evaluating the start policy (the sampler is the reference, same dtype): the reference's log-probs are the
    sampler's own from the records, within 1e-4 nats of a forward's, the KL exactly 0, and no reference forward
    runs (only the other-prompt one); records without them still get the forward."""
    prompts = _prompts(6)
    recs = _draw(gpt2, prompts, 3, seed=4)
    pids = {p["id"]: p["ids"] for p in prompts}
    other = {p["id"]: prompts[(k + 1) % len(prompts)]["ids"] for k, p in enumerate(prompts)}
    forward = evaluate.logps_and_entropy(gpt2, gpt2, pids, recs, 0, other_ids=other)
    calls = []
    real = evaluate.model_token_logps
    monkeypatch.setattr(evaluate, "model_token_logps", lambda m, b, **kw: calls.append(1) or real(m, b, **kw))
    own = evaluate.logps_and_entropy(gpt2, gpt2, pids, recs, 0, batch_size=4, other_ids=other, sampler_is_ref=True)
    assert len(calls) == 5  # 18 records in batches of 4: the other-prompt forward only
    assert torch.equal(own["ref"], own["policy"]) and torch.equal(own["kl_cv"], torch.zeros(len(recs), dtype=torch.float64))
    assert torch.allclose(own["ref"], forward["ref"], rtol=0, atol=1e-4)
    assert torch.allclose(own["ref_other"], forward["ref_other"], atol=1e-9)
    bare = [{k: v for k, v in r.items() if k not in ("sample_logps", "sample_entropy")} for r in recs]
    calls.clear()
    evaluate.logps_and_entropy(gpt2, gpt2, pids, bare, 0, batch_size=4, sampler_is_ref=True)
    assert len(calls) == 5  # no log-probs in the records: the reference forward runs


def test_only_the_start_drawn_by_itself_in_process_reuses_its_draws_log_probs(gpt2):
    bf16 = copy.deepcopy(gpt2).to(torch.bfloat16)
    assert evaluate.reuses_draw_logps(gpt2, gpt2, None, "fast")
    assert not evaluate.reuses_draw_logps(bf16, gpt2, None, "fast")  # drawn in another dtype than the reference's
    assert not evaluate.reuses_draw_logps(gpt2, gpt2, bf16, "fast")  # a trained policy: its reference is another
    assert not evaluate.reuses_draw_logps(gpt2, gpt2, None, "vllm")  # another engine's log-probs


def test_bf16_and_fp32_draws_estimate_the_same_kl(gpt2):
    """A policy that moved away from the reference: KL estimated from bf16 draws (bf16 log q) and
    from fp32 draws (fp32 log q), on different draws, agree within their CIs; the control-variate
    estimator agrees with the plain one and spreads less."""
    torch.manual_seed(0)
    policy = copy.deepcopy(gpt2)
    with torch.no_grad():
        policy.lm_head.weight.add_(SCALE * torch.randn_like(policy.lm_head.weight))
    prompts = _prompts(32)
    pids = {p["id"]: p["ids"] for p in prompts}
    est = {}
    for dtype, seed in ((torch.float32, 5), (torch.bfloat16, 6)):
        sampler = copy.deepcopy(policy).to(dtype)
        recs = _draw(sampler, prompts, 8, seed=seed)
        lp = evaluate.logps_and_entropy(sampler, gpt2, pids, recs, 0)
        est[dtype] = (_kl_ci(lp, [r["prompt_id"] for r in recs]), lp)
    (b32, lp32), (b16, _) = est[torch.float32], est[torch.bfloat16]
    assert b32["mean"] > 0.2  # the policy really moved
    half = math.hypot((b32["hi"] - b32["lo"]) / 2, (b16["hi"] - b16["lo"]) / 2)  # 95 % CI of the difference
    assert abs(b32["mean"] - b16["mean"]) < half * 3.29 / 1.96  # widened to 99.9 %: other CPUs draw other samples
    k1, k3 = (lp32["policy"] - lp32["ref"]), lp32["kl_cv"]
    assert abs(k1.mean() - k3.mean()) < (b32["hi"] - b32["lo"]) / 2
    assert k3.std() < k1.std() and (k3 >= 0).all()


def test_filtered_sampling_log_q_is_the_filtered_distribution_and_drops_the_cv(gpt2):
    """With temperature and top-k the sampler's log q is that of the tempered, truncated
    distribution; the forward fallback (records without sample_logps) computes the same, and the
    control-variate KL is not reported (q lacks full support, so E_q[r - 1] != 0)."""
    cfg = SampleConfig(max_new_tokens=6, temperature=0.7, top_k=20)
    d = D.draw_batch(gpt2, PROMPTS, 2, cfg, STOPS, 0, D.row_keys(2, [str(i) for i in range(len(PROMPTS))], 2))
    recs = [{"prompt_id": str(i // 2), "completion_ids": t} for i, t in enumerate(d.tokens)]
    pids = {str(i): p for i, p in enumerate(PROMPTS)}
    lp = evaluate.logps_and_entropy(gpt2, gpt2, pids, recs, 0, sample_cfg=cfg)
    assert torch.allclose(lp["policy"].float(), torch.tensor([sum(x) for x in d.logps]), atol=1e-4)
    assert torch.allclose(lp["entropy"].float(), torch.tensor(d.entropy), atol=1e-4)
    assert lp["kl_cv"] is None
    plain = evaluate.logps_and_entropy(gpt2, gpt2, pids, recs, 0)  # T=1, no top-k: another distribution
    assert not torch.allclose(plain["policy"], lp["policy"])
