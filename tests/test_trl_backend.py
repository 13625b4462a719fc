"""trl backend: trains, logs trl's metrics, and its first-step loss equals our native loss.

Offline and tiny: a byte-level BPE tokenizer trained here on a few sentences and a random
2-layer GPT-2 (n_embd=32). Parity tests use a reference model initialized with another seed,
so policy != reference and the loss is not the trivial log 2.
"""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch

pytest.importorskip("trl")

from alignment.config import DPOConfig  # noqa: E402
from alignment.base.io import read_jsonl  # noqa: E402
from alignment.steps.logprobs import collate, model_logps  # noqa: E402
from alignment.steps.losses import compute_loss  # noqa: E402
from alignment.steps.dpo import reference_logps  # noqa: E402
from alignment.steps.trl_backend import train_dpo_trl, trl_loss_args  # noqa: E402

EOS = "<|endoftext|>"
TEXT = [
    "The movie was wonderful and the acting was great.",
    "I hated this film, the plot was boring and slow.",
    "A charming story with lovely music and a warm heart.",
    "Terrible pacing, awful dialogue, and a dull ending.",
    "One of the best films of the year, truly moving.",
    "The worst movie I have seen in a long time.",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def _model(tokenizer, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def data(tokenizer):
    """8 pairs over 4 prompts; completions of mixed lengths, some ending with a real EOS."""
    rng = random.Random(0)
    eos, V = tokenizer.eos_token_id, len(tokenizer)
    prompt_ids = {f"p{i}": tokenizer(TEXT[i])["input_ids"][:5] for i in range(4)}
    pairs = []
    for k in range(8):
        pid = f"p{k % 4}"
        comps = []
        for j in range(2):
            ids = [rng.randrange(V) for _ in range(rng.randint(3, 9))]
            ids = [t if t != eos else 1 for t in ids]
            if (k + j) % 2 == 0:
                ids.append(eos)  # a finished sample
            comps.append(ids)
        pairs.append({"prompt_id": pid, "prompt": tokenizer.decode(prompt_ids[pid]),
                      "chosen": tokenizer.decode(comps[0], skip_special_tokens=True),
                      "rejected": tokenizer.decode(comps[1], skip_special_tokens=True),
                      "chosen_ids": comps[0], "rejected_ids": comps[1]})
    return pairs, prompt_ids


class _Tracker:
    def __init__(self):
        self.logged = []

    def log(self, metrics, step=None):
        self.logged.append((step, metrics))


def _native_first_loss(policy, ref, pairs, prompt_ids, cfg, pad_id):
    """Our loss on one batch holding every pair (order-free: the loss is a mean over pairs)."""
    rc, rr = reference_logps(ref, pairs, prompt_ids, pad_id)
    prompts = [prompt_ids[p["prompt_id"]] for p in pairs] * 2
    comps = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
    with torch.no_grad():
        lp = model_logps(policy, collate(prompts, comps, pad_id))
    pc, pr = lp[: len(pairs)], lp[len(pairs):]
    out = compute_loss(cfg.loss, pc, pr, rc, rr, cfg.beta, cfg.alpha)
    return {"loss": out.losses.mean().item(),
            "rewards/margins": (out.chosen_rewards - out.rejected_rewards).mean().item(),
            "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}


def test_trains_and_logs(tokenizer, data, tmp_path):
    pairs, prompt_ids = data
    model = _model(tokenizer, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DPOConfig(loss="sigmoid", beta=0.1, lr=1e-2, epochs=2, batch_size=8, warmup_ratio=0.0, seed=0)
    tracker = _Tracker()
    logs = train_dpo_trl(model, None, tokenizer, pairs, prompt_ids, cfg, tmp_path, tracker=tracker)
    assert [r["step"] for r in logs] == [1, 2]
    for k in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
              "logps/chosen", "lr", "grad_norm"):
        assert all(math.isfinite(r[k]) for r in logs), k
    assert any(abs(r["rewards/margins"]) > 0 for r in logs[1:])  # policy moved away from the reference
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert read_jsonl(tmp_path / "train_log.jsonl") == logs
    assert [s for s, _ in tracker.logged] == [1, 2] and "train/rewards/margins" in tracker.logged[0][1]
    assert "forward" not in model.__dict__  # trl's fused-LM-head patch is undone


@pytest.mark.parametrize("loss", ["sigmoid", "js"])
def test_first_step_loss_matches_native(tokenizer, data, tmp_path, loss):
    pairs, prompt_ids = data
    policy0, ref = _model(tokenizer, 0), _model(tokenizer, 1)  # ref != policy: loss is not log 2
    cfg = DPOConfig(loss=loss, beta=2.0, lr=1e-3, epochs=1, batch_size=len(pairs), seed=0)
    native = _native_first_loss(policy0, ref, pairs, prompt_ids, cfg, tokenizer.pad_token_id)
    assert abs(native["loss"] - math.log(2)) > 1e-3
    logs = train_dpo_trl(copy.deepcopy(policy0), ref, tokenizer, pairs, prompt_ids, cfg, tmp_path,
                         precompute_ref=True)
    first = logs[0]
    for k, v in native.items():
        assert first[k] == pytest.approx(v, rel=1e-4, abs=1e-5), (k, first[k], v)


def test_loss_mapping():
    assert trl_loss_args(DPOConfig(loss="js")) == {"loss_type": ["sigmoid"], "f_divergence_type": "js_divergence"}
    a = trl_loss_args(DPOConfig(loss="alpha", alpha=0.3))
    assert a["f_divergence_type"] == "alpha_divergence" and a["f_alpha_divergence_coef"] == pytest.approx(0.7)
    assert trl_loss_args(DPOConfig(loss="hinge"))["loss_type"] == ["hinge"]
    for name in ("chi2", "hellinger", "jeffrey"):
        with pytest.raises(ValueError, match="backend=native"):
            trl_loss_args(DPOConfig(loss=name))


def test_eos_and_ids_kept_as_ours(tokenizer, data, tmp_path):
    """Ids path: trl trains on exactly our ids (EOS only where the sample finished). trl's own text
    path appends one EOS to every completion, including unfinished ones."""
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    from alignment.steps.trl_backend import _dataset, _trainer_class

    pairs, prompt_ids = data
    eos = tokenizer.eos_token_id
    args = TrlDPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, max_length=None,
                        activation_checkpointing=False)
    policy = _model(tokenizer, 0)
    ours = _trainer_class()(model=copy.deepcopy(policy), ref_model=copy.deepcopy(policy), args=args,
                            train_dataset=_dataset(pairs, prompt_ids, True), processing_class=tokenizer)
    for p, ex in zip(pairs, ours.train_dataset):
        assert ex["prompt_ids"] == prompt_ids[p["prompt_id"]]
        assert (ex["chosen_ids"], ex["rejected_ids"]) == (p["chosen_ids"], p["rejected_ids"])
    batch = ours.data_collator([ours.train_dataset[0]])
    assert batch["completion_mask"].sum().item() == len(pairs[0]["chosen_ids"]) + len(pairs[0]["rejected_ids"])
    text = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(policy), args=args,
                      train_dataset=_dataset(pairs, prompt_ids, False), processing_class=tokenizer)
    for ex in text.train_dataset:
        assert ex["chosen_ids"][-1] == eos and ex["chosen_ids"][-2:] != [eos, eos]
    assert any(p["chosen_ids"][-1] != eos for p in pairs)  # ...though some of ours never finished


def test_text_path_runs(tokenizer, data, tmp_path):
    pairs, prompt_ids = data
    cfg = DPOConfig(loss="sigmoid", lr=1e-3, epochs=1, batch_size=8)
    logs = train_dpo_trl(_model(tokenizer, 0), None, tokenizer, pairs, prompt_ids, cfg, tmp_path,
                         precompute_ref=False, tokenized=False)
    # one step whose loss is taken before the update, with the reference a copy of the policy: every
    # implicit reward is 0, so the sigmoid loss is exactly -log sigmoid(0) = log 2
    assert len(logs) == 1 and logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)


@pytest.mark.parametrize("every, scored", [(0, [3]), (2, [2, 3])])
def test_held_out_pairs_scored_as_the_native_loop_does(tokenizer, data, tmp_path, every, scored):
    """held_out: trl's eval_dataset, scored every dpo.eval_every steps and after the last (0: the last
    only, not trl's default of every logging step); eval_* in the step's record, eval/* to the tracker."""
    pairs, prompt_ids = data
    cfg = DPOConfig(loss="sigmoid", beta=0.1, lr=1e-2, epochs=1, batch_size=2, warmup_ratio=0.0, seed=0,
                    eval_every=every)
    tracker = _Tracker()
    logs = train_dpo_trl(_model(tokenizer, 0), None, tokenizer, pairs[:6], prompt_ids, cfg, tmp_path,
                         tracker=tracker, held_out=pairs[6:])
    assert [r["step"] for r in logs] == [1, 2, 3]
    assert [r["step"] for r in logs if "eval_loss" in r] == scored
    assert all(0 <= r["eval_rewards/accuracies"] <= 1 for r in logs if "eval_loss" in r)
    assert not any(k.endswith(("runtime", "per_second")) for r in logs for k in r)
    assert [s for s, m in tracker.logged if "eval/loss" in m] == scored
