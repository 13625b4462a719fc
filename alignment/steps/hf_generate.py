"""The `sample.backend=generate` sampler: HF `model.generate` on left-padded prompts, as a
baseline for the fast decoder (`alignment.steps.decode`) and for models it does not handle. It reports
no per-token log-probs (`Draws.logps` None): evaluation re-scores its draws with a forward pass that
applies the same temperature/top-k/top-p. Its draws are the fast decoder's: `CounterDraw`, a logits
processor, filters the logits as `decode` does and keeps only the token that the row's counter-based
uniform picks (`decode.uniforms`), so `generate`'s own sampling has one choice and torch's global
generator decides nothing. `generate` runs under a fresh generation config: the model's own settings
(repetition penalty, minimum length, suppressed tokens) would change the logits, so they do not apply."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ..config import SampleConfig
from .decode import categorical, filter_logits, left_pad, uniforms
from .samplers import Draws


class CounterDraw(LogitsProcessor):
    """Row r's next token at step t: `decode.categorical` of softmax(filter_logits(scores / temperature))
    at `decode.uniforms(keys, t)[r]`; every other token is masked to -inf. `prompt_len`: the left-padded
    prompt width, so t = input_ids' width - prompt_len."""

    def __init__(self, keys: np.ndarray, prompt_len: int, cfg: SampleConfig):
        self.keys, self.prompt_len, self.cfg = keys, prompt_len, cfg

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = filter_logits(scores.float() / self.cfg.temperature, self.cfg.top_k, self.cfg.top_p).log_softmax(-1)  # (B, V)
        u = torch.from_numpy(uniforms(self.keys, input_ids.size(1) - self.prompt_len))  # (B,)
        tok = categorical(logp.exp(), u)  # (B,)
        return torch.full_like(scores, float("-inf")).scatter_(1, tok[:, None], 0.0)


@contextmanager
def _generation_config(model, gen: GenerationConfig):
    """`gen` as the model's generation config for the block (a PEFT model's base model's): `generate` fills
    every setting a passed config leaves unset from the model's own, so only a swap keeps the model's
    repetition penalty or minimum length from changing the logits."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved, target.generation_config = target.generation_config, gen
    try:
        yield
    finally:
        target.generation_config = saved


def generate_tokens(model, tokenizer, prompts: list[list[int]], n: int, cfg: SampleConfig, stop_ids: list[int],
                    max_new: int, keys: np.ndarray) -> list[list[int]]:
    """HF `generate` on left-padded prompts (num_return_sequences=n, rows prompt-major like `keys`), each
    row's tokens picked by `CounterDraw` (generate's own temperature, top-k and top-p off: it applies them),
    each row cut after its first stop token (kept)."""
    dev = next(model.parameters()).device
    ids, attn = left_pad(prompts, tokenizer.pad_token_id)
    if len(keys) != len(prompts) * n:
        raise ValueError(f"generate: {len(keys)} row keys for {len(prompts) * n} rows (prompts x n)")
    gen = GenerationConfig(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=max_new,
                           num_return_sequences=n, pad_token_id=tokenizer.pad_token_id, eos_token_id=list(stop_ids))
    with _generation_config(model, gen):
        out = model.generate(input_ids=ids.to(dev), attention_mask=attn.to(dev),
                             logits_processor=LogitsProcessorList([CounterDraw(keys, ids.size(1), cfg)]))
    stops, res = set(stop_ids), []
    for row in out[:, ids.size(1):].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        res.append(row[:cut])
    return res


def draw(model, tokenizer, prompts: list[list[int]], n: int, cfg: SampleConfig, stop_ids: list[int],
         keys: np.ndarray, max_new_tokens: int | None = None) -> Draws:
    """The generate backend (`generate_tokens`), under a fork of torch's global generator: `generate`'s own
    multinomial draw (of the one token `CounterDraw` left) still consumes it, the caller's state stays."""
    with torch.random.fork_rng():
        return Draws(generate_tokens(model, tokenizer, prompts, n, cfg, stop_ids, max_new_tokens or cfg.max_new_tokens,
                                     keys), None, None)
