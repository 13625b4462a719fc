"""Resumable checkpoints (`alignment.base.checkpoint`): when one is due (by wall time and/or steps),
what it holds (the trainable weights only: LoRA's adapters, not the base), that a torn write
never counts, and that a LoRA run resumes to the uninterrupted weights. Tiny GPT-2, a few seconds;
the SIGKILL of a real CLI run is in test_reliability.py."""
from __future__ import annotations

import random

import pytest
import torch

from alignment.base.checkpoint import CKPT, checkpoint_due, trainable_state
from alignment.config import Config, DPOConfig
from alignment.assets.models import add_lora, load_causal_lm
from alignment.steps.dpo import reference_logps, train_dpo
from alignment.steps.train import done_training

PAD = 0


@pytest.fixture(scope="module")
def data(tiny_gpt2_dir):
    rng = random.Random(1)
    prompts = {f"p{i}": [rng.randrange(1, 400) for _ in range(4)] for i in range(6)}
    pairs = [{"prompt_id": f"p{i}", "chosen_ids": [rng.randrange(1, 400) for _ in range(3)],
              "rejected_ids": [rng.randrange(1, 400) for _ in range(4)]} for i in range(6)]
    ref = reference_logps(load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu")), pairs, prompts, PAD)
    return pairs, prompts, ref


def test_checkpoint_due_by_hand():
    due = lambda done, every=0, minutes=0.0, since=0.0: checkpoint_due(done, 10, every, minutes, since)  # noqa: E731
    assert [d for d in range(1, 11) if due(d, every=4)] == [4, 8, 10]  # and after the last step
    assert not any(due(d) for d in range(1, 11))  # both off: never
    assert not due(3, minutes=10, since=599.9) and due(3, minutes=10, since=600.0)
    assert not due(10, minutes=10, since=30.0)  # by time only: a short run (or tail) writes none
    assert due(5, every=4, minutes=10, since=600.0) and due(4, every=4, minutes=10, since=1.0)  # either rule


def test_defaults_checkpoint_by_time():
    """Both stages checkpoint every 10 minutes by default, not by steps: a CPU-sized run writes none."""
    cfg = Config()
    assert (cfg.dpo.save_minutes, cfg.dpo.save_every) == (10.0, 0)
    assert (cfg.sft.save_minutes, cfg.sft.save_every) == (10.0, 0)


def _lora(tiny_gpt2_dir):
    base = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"), train=True)
    torch.manual_seed(0)  # the adapters' init, as train_policy seeds it
    return add_lora(base, r=4, alpha=8)


class _StopAt:
    def __init__(self, step):
        self.step = step

    def log(self, metrics, step=None):
        if step == self.step:
            raise KeyboardInterrupt


def test_lora_checkpoint_holds_the_adapters_only_and_resumes_exactly(tiny_gpt2_dir, data, tmp_path):
    pairs, prompts, ref = data
    cfg = DPOConfig(lr=1e-2, batch_size=2, epochs=2, lora_r=4, save_every=1, save_minutes=0)
    straight = _lora(tiny_gpt2_dir)
    full_log = train_dpo(straight, pairs, prompts, ref, cfg, PAD, tmp_path / "a")

    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train_dpo(_lora(tiny_gpt2_dir), pairs, prompts, ref, cfg, PAD, out, tracker=_StopAt(3))
    state = torch.load(out / CKPT, weights_only=True)
    assert state["step"] == 3  # the interrupt came after step 3 was logged: kept, though step 3's own save never ran
    assert state["model"].keys() == trainable_state(straight).keys()
    assert state["model"] and all("lora_" in k for k in state["model"])  # no frozen base weight

    resumed = _lora(tiny_gpt2_dir)  # a fresh process: the base from disk, the adapters from the checkpoint
    assert train_dpo(resumed, pairs, prompts, ref, cfg, PAD, out) == full_log
    assert (out / "train_log.jsonl").read_bytes() == (tmp_path / "a" / "train_log.jsonl").read_bytes()
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_full_checkpoint_holds_each_weight_once_and_a_torn_write_never_counts(tiny_gpt2_dir, data, tmp_path):
    """Full fine-tuning: every parameter, a tied one once. A kill in the middle of writing a
    checkpoint leaves a temp file beside the last complete one: the rerun resumes from the complete
    one and removes the temp file; `done_training` removes both."""
    pairs, prompts, ref = data
    cfg = DPOConfig(lr=1e-3, batch_size=2, epochs=1, save_every=2, save_minutes=0)
    model = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"), train=True)
    with pytest.raises(KeyboardInterrupt):
        train_dpo(model, pairs, prompts, ref, cfg, PAD, tmp_path, tracker=_StopAt(3))
    state = torch.load(tmp_path / CKPT, weights_only=True)
    assert state["step"] == 3 and list(state["model"]) == [n for n, _ in model.named_parameters()]
    torn = tmp_path / f".{CKPT}.x1y2.tmp"
    torn.write_bytes(b"half a checkpoint")

    model = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"), train=True)
    log = train_dpo(model, pairs, prompts, ref, cfg, PAD, tmp_path)
    assert [r["step"] for r in log] == [1, 2, 3] and not torn.exists()
    torn.write_bytes(b"half a checkpoint")
    done_training(tmp_path)
    assert not (tmp_path / CKPT).exists() and not torn.exists()


def test_an_interrupt_keeps_the_steps_done_only_when_they_are_whole(tiny_gpt2_dir, data, tmp_path):
    """Ctrl-C (or a kill) keeps the steps completed so far, with checkpoints on, and resumes to the uninterrupted
    weights; one that lands between an optimizer step and its record (here: the held-out evaluation), when the
    weights are ahead of the last whole step, writes none (the last periodic checkpoint stands); with
    checkpoints off it writes none either."""
    pairs, prompts, ref = data
    cfg = DPOConfig(lr=1e-2, batch_size=2, epochs=2, lora_r=4, save_every=0, save_minutes=60)  # no save due in a test
    straight = _lora(tiny_gpt2_dir)
    full_log = train_dpo(straight, pairs, prompts, ref, cfg, PAD, tmp_path / "a")

    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train_dpo(_lora(tiny_gpt2_dir), pairs, prompts, ref, cfg, PAD, out, tracker=_StopAt(4))
    assert torch.load(out / CKPT, weights_only=True)["step"] == 4
    resumed = _lora(tiny_gpt2_dir)
    assert train_dpo(resumed, pairs, prompts, ref, cfg, PAD, out) == full_log
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k

    calls = []

    def evaluate(model):  # the held-out pass after step 2's optimizer step
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    from alignment.steps.train import LoopConfig, train_loop
    loop = LoopConfig(lr=1e-3, epochs=1, batch_size=2, grad_accum=1, max_grad_norm=1.0, warmup_ratio=0.0,
                      final_lr_ratio=1.0, autocast=False, save_every=0, save_minutes=60, eval_every=1, seed=0,
                      desc="test", disable_dropout=True)
    model = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"), train=True)
    loss = lambda net, mb: (sum(p.sum() for p in net.parameters() if p.requires_grad) * 0.0 + 1.0, {"loss": 1.0})  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        train_loop(model, 6, loss, loop, tmp_path / "c", evaluate=evaluate)
    assert not (tmp_path / "c" / CKPT).exists()  # the weights were a step ahead of the last whole step: none written

    with pytest.raises(KeyboardInterrupt):
        train_dpo(_lora(tiny_gpt2_dir), pairs, prompts, ref, DPOConfig(lr=1e-2, batch_size=2, lora_r=4, save_every=0,
                                                                      save_minutes=0), PAD, tmp_path / "d",
                  tracker=_StopAt(2))
    assert not (tmp_path / "d" / CKPT).exists()  # checkpoints off: none on an interrupt either
