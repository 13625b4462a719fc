import math
import random

import pytest
import torch

from alignment.config import DPOConfig
from alignment.base.io import read_json, read_jsonl
from alignment.assets.models import load_causal_lm
from alignment.steps.logprobs import collate, completion_token_stats
from alignment.steps.dpo import reference_logps, step_metrics, train_dpo
from alignment.steps.train import done_training, lr_at

PAD = 0


def _pairs(n=8, seed=0):
    rng = random.Random(seed)
    prompts = {f"p{i}": [rng.randrange(1, 400) for _ in range(rng.randint(2, 6))] for i in range(n)}
    pairs = []
    for i in range(n):
        ch = [rng.randrange(1, 400) for _ in range(rng.randint(1, 6))]
        rj = [rng.randrange(1, 400) for _ in range(rng.randint(1, 6))]
        if i % 3 == 0:
            ch.append(PAD)  # a real EOS (== pad id) at the end of a completion
        pairs.append({"prompt_id": f"p{i}", "chosen_ids": ch, "rejected_ids": rj})
    return pairs, prompts


def _load(path):
    return load_causal_lm(path, torch.float32, torch.device("cpu"), train=True)


@pytest.fixture(scope="module")
def data(tiny_gpt2_dir):
    pairs, prompts = _pairs()
    ref_model = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))
    ref = reference_logps(ref_model, pairs, prompts, PAD, batch_size=3)
    return pairs, prompts, ref


def test_reference_logps_shapes(data):
    pairs, _, (ch, rj) = data
    assert ch.shape == rj.shape == (len(pairs),)
    assert torch.isfinite(ch).all() and (ch < 0).all() and (rj < 0).all()


def test_train_dpo_updates_and_logs(tiny_gpt2_dir, data, tmp_path):
    pairs, prompts, ref = data
    model = _load(tiny_gpt2_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DPOConfig(lr=1e-3, batch_size=4, epochs=2, warmup_ratio=0.25)
    log = train_dpo(model, pairs, prompts, ref, cfg, PAD, tmp_path)
    assert len(log) == 4 and [r["step"] for r in log] == [1, 2, 3, 4]
    keys = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected", "grad_norm", "lr", "epoch", "step"}
    for r in log:
        assert keys <= set(r) and all(math.isfinite(r[k]) for k in keys)
        assert 0.0 <= r["rewards/accuracies"] <= 1.0
        assert r["rewards/margins"] == pytest.approx(r["rewards/chosen"] - r["rewards/rejected"], abs=1e-6)
    # warmup 0.25 of 4 steps = 1 step, then linear decay towards 10 % of lr (written out by hand)
    assert [r["lr"] for r in log] == pytest.approx([1e-3, 1e-3, 1e-3 * (1 - 0.9 / 3), 1e-3 * (1 - 0.9 * 2 / 3)])
    assert log[-1]["epoch"] == pytest.approx(2.0)
    # trl's num_tokens: prompt + completion tokens of both sides, summed over the steps so far
    # (after an epoch, every pair once)
    per_epoch = sum(2 * len(prompts[p["prompt_id"]]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
    assert [log[1]["num_tokens"], log[3]["num_tokens"]] == [per_epoch, 2 * per_epoch]
    assert log[0]["num_tokens"] < log[1]["num_tokens"] < log[2]["num_tokens"] < log[3]["num_tokens"]
    for r in log:
        assert 0.0 <= r["mean_token_accuracy"] <= 1.0 and 0.0 < r["entropy"] <= math.log(model.config.vocab_size)
        assert math.isfinite(r["logits/chosen"]) and math.isfinite(r["logits/rejected"])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and any("h.0" in k for k in changed)
    assert not model.training
    assert read_jsonl(tmp_path / "train_log.jsonl") == log
    assert read_json(tmp_path / "train_summary.json") == log[-1]
    assert not (tmp_path / "ckpt.pt").exists()
    # training on these pairs raises the chosen-vs-rejected margin
    assert log[-1]["rewards/margins"] > log[0]["rewards/margins"]


def test_first_step_loss_is_log2_when_policy_equals_ref(tiny_gpt2_dir, data, tmp_path):
    """Before the first update the policy *is* the reference: implicit rewards 0, loss log 2.
    (The checkpoint has GPT-2's default dropout 0.1, so this also checks training runs the
    policy without dropout, as the reference log-probs were computed.)"""
    pairs, prompts, ref = data
    model = _load(tiny_gpt2_dir)
    assert model.config.resid_pdrop > 0
    log = train_dpo(model, pairs, prompts, ref, DPOConfig(lr=1e-12, batch_size=8, epochs=1, precision="fp32"), PAD, tmp_path)
    first = log[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
    assert first["logps/chosen"] == pytest.approx(ref[0].mean().item(), abs=1e-4)


class _InterruptAt:
    def __init__(self, step):
        self.step, self.seen = step, []

    def log(self, metrics, step=None):
        self.seen.append(step)
        if step == self.step:
            raise KeyboardInterrupt


def test_trls_token_metrics_by_hand():
    """One pair, vocab 2: chosen [0, 1], rejected [1] after prompt [1]. The logits predicting the three
    completion tokens: [2, 0] (chosen's 0: the argmax), [0, 0] (chosen's 1: a tie, argmax 0), [1, 3]
    (rejected's 1: the argmax); each position's vocabulary-mean logit is 1, 0, 2."""
    from types import SimpleNamespace

    batch = collate([[1], [1]], [[0, 1], [1]], pad_id=0)  # input_ids [[1, 0, 1], [1, 1, 0]]
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [9.0, 9.0]], [[1.0, 3.0], [100.0, -100.0], [9.0, 9.0]]])
    st = completion_token_stats(logits, batch, chunk=2)  # two chunks: the chunking joins them in order
    q = torch.sigmoid(torch.tensor(2.0)).item()
    h = -(q * math.log(q) + (1 - q) * math.log(1 - q))  # the entropy of softmax([2, 0]) and of softmax([1, 3])
    assert st["row"].tolist() == [0, 0, 1] and st["mean_logit"].tolist() == [1.0, 0.0, 2.0]
    assert st["entropy"].tolist() == pytest.approx([h, math.log(2), h]) and st["top1"].tolist() == [True, False, True]
    assert int(st["num_tokens"]) == 5  # attention mask: 3 + 2
    out = SimpleNamespace(losses=torch.tensor([0.5]), chosen_rewards=torch.tensor([0.2]),
                          rejected_rewards=torch.tensor([-0.1]))
    m = step_metrics(out, torch.tensor([-3.0]), torch.tensor([-2.0]), st)
    assert {k: m[k] for k in ("logits/chosen", "logits/rejected", "mean_token_accuracy", "num_tokens")} == {
        "logits/chosen": 0.5, "logits/rejected": 2.0, "mean_token_accuracy": 0.5, "num_tokens": 5}
    assert m["entropy"] == pytest.approx((2 * h + math.log(2)) / 3)
    assert set(step_metrics(out, torch.tensor([-3.0]), torch.tensor([-2.0]))) == {
        "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
        "logps/rejected"}  # without the batch's token stats: the pair-level metrics only


def test_lr_schedule_by_hand():
    """The one schedule of DPO and SFT, against values written out by hand."""
    dpo = [lr_at(s, 10, 1.0, 0.1, 0.1) for s in range(10)]  # warm = 1 step, decay towards 10 %
    assert dpo[0] == 1.0 and dpo[1] == 1.0
    assert dpo[5] == pytest.approx(1 - 0.9 * 4 / 9) and dpo[9] == pytest.approx(0.2)
    sft = [lr_at(s, 10, 2.0, 0.3, 0.0) for s in range(10)]  # warm = 3 steps, decay towards 0
    assert sft[:4] == pytest.approx([2 / 3, 4 / 3, 2.0, 2.0])
    assert sft[9] == pytest.approx(2.0 / 7) and all(a > b for a, b in zip(sft[3:], sft[4:]))
    assert lr_at(0, 1, 1.0, 0.1, 0.0) == 1.0  # one step: warmup ends on it


@pytest.mark.parametrize("grad_accum, cadence", [(1, {"save_every": 1}), (2, {"save_every": 1}),
                                                (1, {"save_minutes": 1e-9})])  # time-based: after every step
def test_resume_after_interrupt_matches_uninterrupted(tiny_gpt2_dir, data, tmp_path, grad_accum, cadence, capsys):
    """Interrupted once step 2 is logged (before its own save: the interrupt keeps it), resumed in a fresh
    model: the same weights, train log and summary, to the bit (same order, optimizer state, schedule and RNG)."""
    pairs, prompts, ref = data
    cfg = DPOConfig(lr=1e-3, batch_size=2, epochs=2, grad_accum=grad_accum, warmup_ratio=0.2,
                    **{"save_minutes": 0, **cadence})
    n_steps = 8 // grad_accum

    straight = _load(tiny_gpt2_dir)
    full_log = train_dpo(straight, pairs, prompts, ref, cfg, PAD, tmp_path / "a")

    out = tmp_path / "b"
    first = _load(tiny_gpt2_dir)
    tracker = _InterruptAt(2)
    with pytest.raises(KeyboardInterrupt):
        train_dpo(first, pairs, prompts, ref, cfg, PAD, out, tracker=tracker)
    assert tracker.seen == [1, 2]
    assert (out / "ckpt.pt").exists()
    capsys.readouterr()

    resumed = _load(tiny_gpt2_dir)  # a fresh process: weights come from the checkpoint
    log = train_dpo(resumed, pairs, prompts, ref, cfg, PAD, out, tracker=_InterruptAt(-1))
    assert f"resuming dpo from step 2 of {n_steps} (checkpoint {out / 'ckpt.pt'})" in capsys.readouterr().out
    assert [r["step"] for r in log] == list(range(1, n_steps + 1))
    assert log == full_log
    for name in ("train_log.jsonl", "train_summary.json"):
        assert (out / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert (out / "ckpt.pt").exists()  # the final checkpoint stays until the caller's output is saved
    done_training(out)
    assert not (out / "ckpt.pt").exists()


def test_bf16_autocast_matches_fp32_within_tolerance(tiny_gpt2_dir, data, tmp_path):
    """dpo.precision=bf16: forwards under bf16 autocast, fp32 master weights. The first step's loss
    (before any update) agrees with fp32 to bf16 precision, and training runs and moves the weights."""
    import dataclasses

    pairs, prompts, ref = data
    cfg = DPOConfig(lr=1e-3, batch_size=4, epochs=1, warmup_ratio=0.25, precision="fp32")
    fp32 = train_dpo(_load(tiny_gpt2_dir), pairs, prompts, ref, cfg, PAD, tmp_path / "a")
    model = _load(tiny_gpt2_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bf16 = train_dpo(model, pairs, prompts, ref, dataclasses.replace(cfg, precision="bf16"), PAD, tmp_path / "b")
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=2e-2, abs=2e-3)
    assert bf16[0]["loss"] != fp32[0]["loss"]  # it really ran in bf16
    assert all(math.isfinite(r["loss"]) for r in bf16)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())  # master weights stay fp32
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_train_autocast_choice():
    from alignment.base.machine import cpu_has_bf16
    from alignment.assets.models import train_autocast

    cpu = torch.device("cpu")
    assert train_autocast("bf16", cpu) and not train_autocast("fp32", cpu)
    assert train_autocast("auto", cpu) == cpu_has_bf16()  # emulated bf16 would be slower than fp32


def test_held_out_split_by_prompt_worked_example():
    """The docstring's example: prompts a, a, b, c and share 0.34 -> floor(1.02) = 1 prompt, the last
    (c), is held out with its reference log-probs; a's two pairs and b's train."""
    from alignment.steps.dpo import held_out_split

    pairs = [{"prompt_id": k, "i": i} for i, k in enumerate("aabc")]
    ref = (torch.tensor([-1.0, -2.0, -3.0, -4.0]), torch.tensor([-5.0, -6.0, -7.0, -8.0]))
    d = held_out_split(pairs, ref, 0.34)
    assert [p["i"] for p in d.pairs] == [0, 1, 2] and [p["i"] for p in d.held_out] == [3]
    assert d.ref[0].tolist() == [-1.0, -2.0, -3.0] and d.held_out_ref[1].tolist() == [-8.0]
    assert held_out_split(pairs, ref, 0.2).held_out == []  # floor(0.6) = 0 prompts
    d = held_out_split(pairs, ref, 0.5)  # floor(1.5) = 1 prompt
    assert [p["prompt_id"] for p in d.held_out] == ["c"]
    with pytest.raises(ValueError, match="pairs.held_out"):  # nothing left to train on
        held_out_split(pairs, ref, 1.0)


def test_eval_due_steps():
    from alignment.steps.train import eval_due

    assert [s for s in range(1, 29) if eval_due(s, 28, 7)] == [7, 14, 21, 28]
    assert [s for s in range(1, 11) if eval_due(s, 10, 0)] == [10]
    assert [s for s in range(1, 6) if eval_due(s, 5, 2)] == [2, 4, 5]


def test_held_out_pairs_are_scored_not_trained(tiny_gpt2_dir, data, tmp_path):
    """train_dpo(held_out=...): held-out metrics at steps 2 and 3 (eval_every 2, 3 steps), equal to
    `held_out_metrics` of the trained model, and training on the rest is what it is without them."""
    from alignment.steps.dpo import held_out_metrics, held_out_split

    pairs, prompts, ref = data
    d = held_out_split(pairs, ref, 0.25)
    assert d.held_out and d.pairs
    cfg = DPOConfig(lr=1e-3, batch_size=4, epochs=1, eval_every=2, precision="fp32")
    plain = train_dpo(_load(tiny_gpt2_dir), d.pairs, prompts, d.ref, cfg, PAD, tmp_path / "a")
    model = _load(tiny_gpt2_dir)
    log = train_dpo(model, d.pairs, prompts, d.ref, cfg, PAD, tmp_path / "b", held_out=(d.held_out, d.held_out_ref))
    steps = [r["step"] for r in log if "eval_loss" in r]
    assert steps == [s for s in range(1, len(log) + 1) if s % 2 == 0 or s == len(log)]
    assert [{k: v for k, v in r.items() if not k.startswith("eval_")} for r in log] == plain  # scoring changes nothing
    with torch.no_grad():
        again = held_out_metrics(model.eval(), d.held_out, prompts, d.held_out_ref, cfg, PAD)
    assert again == pytest.approx({k: v for k, v in log[-1].items() if k.startswith("eval_")}, abs=1e-6)
    assert 0 <= again["eval_rewards/accuracies"] <= 1
