"""The `sample.backend=generate` sampler: HF `model.generate` on left-padded prompts, as a
baseline for the fast decoder (`alignment.steps.decode`) and for models it does not handle. It reports
no per-token log-probs (`Draws.logps` None): evaluation re-scores its draws with a forward pass that
applies the same temperature/top-k/top-p. `generate` draws from torch's global generator: each
batch forks it and seeds it from the batch's own seed, so a batch's draws do not depend on what the
process ran before (training reseeds the global generator) and a resumed run draws the same."""
from __future__ import annotations

import torch

from ..config import SampleConfig
from .decode import Draws, left_pad


def generate_tokens(model, tokenizer, prompts: list[list[int]], n: int, cfg: SampleConfig,
                    max_new: int) -> list[list[int]]:
    """Baseline backend: HF `generate` on left-padded prompts (num_return_sequences=n)."""
    dev = next(model.parameters()).device
    ids, attn = left_pad(prompts, tokenizer.pad_token_id)
    out = model.generate(input_ids=ids.to(dev), attention_mask=attn.to(dev), do_sample=True,
                         top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
                         max_new_tokens=max_new, num_return_sequences=n,
                         pad_token_id=tokenizer.pad_token_id)
    stops = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                else [model.generation_config.eos_token_id, tokenizer.eos_token_id])
    res = []
    for row in out[:, ids.size(1):].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        res.append(row[:cut])
    return res


def draw(model, tokenizer, prompts: list[list[int]], n: int, cfg: SampleConfig, stop_ids: list[int],
         generator: torch.Generator | None = None, max_new_tokens: int | None = None) -> Draws:
    """The generate backend: the global generator forked and seeded from `generator`'s seed."""
    with torch.random.fork_rng():
        if generator is not None:
            torch.manual_seed(generator.initial_seed())
        return Draws(generate_tokens(model, tokenizer, prompts, n, cfg, max_new_tokens or cfg.max_new_tokens), None, None)
