"""The sampler seam: which module draws the completions (`sample.backend`), and what it returns.

A backend is a module with
`draw(source, tokenizer, prompts, n, cfg, stop_ids, keys, max_new_tokens) -> Draws`:
`prompts` are P token-id lists, `keys` one counter-based stream key per completion (`decode.row_keys`,
P*N prompt-major: row r must draw from `decode.uniforms(keys, t)[r]` to give every backend's tokens),
`source` the loaded model (`torch.nn.Module`), or, where the module sets `TAKES_REF = True`, a
`models.ModelRef` (path or hub id, LoRA adapter, dtype) that the backend loads itself: an out-of-process
sampler (vLLM, a server, another GPU) needs nothing else. A new backend is one module and one line in
`SAMPLERS` (its name becomes a valid `sample.backend`).
"""
from __future__ import annotations

from typing import NamedTuple

# sample.backend -> the module that draws (imported when first used)
SAMPLERS: dict[str, str] = {"fast": "alignment.steps.decode", "generate": "alignment.steps.hf_generate"}


class Draws(NamedTuple):
    """What a sampler drew, P*N rows (prompt-major), and the distribution that drew it (None where
    the backend does not report it: evaluation then re-scores the draws with a forward pass)."""
    tokens: list[list[int]]            # each ends at its stop token (kept) or at max_new_tokens
    logps: list[list[float]] | None    # log q(token_t | <t) of each drawn token under the sampling distribution
    entropy: list[float] | None        # mean over the row's steps of H(q(. | <t)), the sampler's predictive entropy
