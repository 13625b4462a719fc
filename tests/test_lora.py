"""LoRA (peft) as a training option: adapters on the architecture's linear maps, the frozen base
as the reference (no copy), adapter-only checkpoints, base + adapter for evaluation, SFT merged."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

from alignment.config import ConfigError, load_config
from alignment.steps.logprobs import batched_logps
from alignment.assets.models import add_lora, is_adapter, load_causal_lm
from alignment.run.pipeline import Pipeline
from alignment.steps import dpo


def _cfg(tmp_path, policy, reward, data, **extra):
    o = {"run_dir": str(tmp_path / "run"), "model.policy": policy, "reward.model": reward, "data.source": data,
         "data.n_train_prompts": 6, "data.n_eval_prompts": 3, "data.prompt_tokens": 4, "sample.n_samples": 3,
         "sample.max_new_tokens": 8, "eval.n_samples": 2, "eval.max_new_tokens": 8, "eval.n_boot": 20,
         "dpo.batch_size": 4, "dpo.epochs": 2, "dpo.lr": 1e-2, "dpo.lora_r": 4, "track.mode": "disabled",
         "eval.judge": "vader", "eval.topic_judge": reward}
    o.update(extra)
    return load_config(overrides=o)


def test_lora_starts_at_the_base_and_trains_only_adapters(tiny_gpt2_dir):
    base = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))
    want = batched_logps(base, [[5, 6, 7]], [[8, 9]], 0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = add_lora(base, r=4, alpha=8)
    assert not [w for w in seen if issubclass(w.category, FutureWarning)]  # peft's read of a deprecated property
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any(".c_attn." in n for n in trainable) and any(".c_fc." in n for n in trainable)
    assert torch.allclose(batched_logps(model, [[5, 6, 7]], [[8, 9]], 0), want)  # B = 0 at init


def test_pipeline_trains_an_adapter_and_evaluates_base_plus_adapter(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                     reviews_csv, monkeypatch):
    pipe = Pipeline(_cfg(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv))
    ref = pipe.models.ref_model
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    wrapped = []  # the adapters go on a copy of the start policy, never on the run's reference
    monkeypatch.setattr(dpo, "add_lora", lambda m, r, a: (wrapped.append(m is ref), add_lora(m, r, a))[1])
    policy = pipe.train()
    assert wrapped == [False] and pipe.models.ref_model is ref
    assert policy.name == "sigmoid-lora4-b0.1-lr0.01-e2-s0"
    saved = policy.dir / "model"
    assert is_adapter(saved) and not (saved / "model.safetensors").exists()
    adapter = load_file(str(saved / "adapter_model.safetensors"))
    n_adapter = sum(v.numel() for v in adapter.values())
    assert 0 < n_adapter < 0.2 * sum(v.numel() for v in before.values())
    # the reference is unchanged, frozen and in eval mode: it computes exactly what a freshly loaded base computes
    after = pipe.models.ref_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in pipe.models.ref_model.parameters()) and not pipe.models.ref_model.training
    fresh = load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))
    probe = ([[5, 6, 7], [8, 9]], [[10, 11], [12]])
    assert torch.equal(batched_logps(pipe.models.ref_model, *probe, 0), batched_logps(fresh, *probe, 0))
    ev = pipe.evaluate(policy)
    assert abs(ev.metrics["eval/kl_to_ref"]) > 1e-4  # base + adapter is not the base
    assert pipe.evaluate().metrics["model"] == "sft"


def test_lora_needs_the_native_backend_and_the_policy_as_reference(tiny_gpt2_dir):
    with pytest.raises(ConfigError, match=r"^dpo\.lora_r="):
        load_config(overrides={"dpo.lora_r": 8, "dpo.backend": "trl"})
    with pytest.raises(ConfigError, match=r"^dpo\.lora_r=.*model\.ref"):
        load_config(overrides={"dpo.lora_r": 8, "model.ref": tiny_gpt2_dir})


def test_lora_init_is_seeded(tiny_gpt2_dir):
    def adapters(seed):
        torch.manual_seed(seed)
        m = add_lora(load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu")), r=2, alpha=4)
        return {k: v for k, v in m.state_dict().items() if "lora_A" in k}

    a, b = adapters(0), adapters(0)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(next(iter(a.values())), next(iter(adapters(1).values())))


def test_sft_with_lora_saves_a_merged_model(tmp_path, tiny_gpt2_dir, reviews_csv):
    from transformers import AutoModelForCausalLM

    from alignment.steps.sft import run_sft

    cfg = load_config(overrides={
        "data.source": reviews_csv, "data.n_eval_prompts": 8, "data.n_train_prompts": 8, "sft.base": tiny_gpt2_dir,
        "sft.out": str(tmp_path / "sft"), "sft.n_reviews": 16, "sft.n_eval_reviews": 8, "sft.max_tokens": 32,
        "sft.batch_size": 4, "sft.lr": 1e-2, "sft.lora_r": 4, "track.mode": "disabled", "run_dir": str(tmp_path / "r")})
    m = run_sft(cfg)
    out = tmp_path / "sft"
    assert not is_adapter(out) and (out / "model.safetensors").exists()
    new = AutoModelForCausalLM.from_pretrained(out).state_dict()
    old = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).state_dict()
    assert new.keys() == old.keys() and any(not torch.equal(new[k], old[k]) for k in old)
    assert m["ppl_after"] < m["ppl_before"]
