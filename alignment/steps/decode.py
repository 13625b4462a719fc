"""Token-level sampling primitives and the fast sampler (`sample.backend=fast`): one prompt
prefill shared by its N samples, a hand-written KV-cache decode loop, cumsum+searchsorted
categorical sampling, finished rows dropped from the batch. For a batch of prompts [a b c] and
N=2 the decode batch is [a a b b c c]: `repeat_interleave` of the prefilled cache.

Counter-based draws: row r's token at step t is the inverse-CDF draw at the uniform
`uniforms(keys, t)[r]`, a hash of the row's key (`row_keys`: the run seed, the prompt id and the
sample index) and t. So a completion depends on nothing but its own key and the logits, never on
which batch, process, device or backend drew it, up to the numerics of the logits (a draw that sits on a
CDF boundary can flip where another padding width rounds the logits otherwise, as bf16 on a GPU may): the
batch size is a speed knob only.

The sampler seam (`alignment.steps.samplers`): a backend is a module with `draw(...) -> Draws` (this one,
`alignment.steps.hf_generate`), registered in `samplers.SAMPLERS`.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..config import SampleConfig
from .samplers import Draws

GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: 2^64 / the golden ratio
_M64 = (1 << 64) - 1


def row_keys(seed: int, prompt_ids: list[str], n: int) -> np.ndarray:
    """(P*N,) uint64 key of each decode row, prompt-major ([a a b b] for prompts a, b and N=2): the
    first 8 bytes of sha256("seed:prompt id:sample index")."""
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{p}:{s}".encode()).digest()[:8], "little")
                     for p in prompt_ids for s in range(n)], dtype=np.uint64)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function (Steele et al. 2014), elementwise on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(keys: np.ndarray, t: int) -> np.ndarray:
    """(B,) float32 uniforms on [0, 1) of step `t`, one per row key: the (t+1)-th output of the
    splitmix64 stream seeded with the key (its state after t+1 golden increments, mixed), cut to 24
    bits so that float32 holds it exactly. Key 0, t 0 -> 0xE220A8397B1DCDAF >> 40, over 2^24."""
    z = _mix(keys.astype(np.uint64) + np.uint64(((t + 1) * GOLDEN) & _M64))
    return ((z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24).astype(np.float32)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k / nucleus filtering (both off by default): masked entries become -inf.  # (B, V)"""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.scatter(-1, idx, sorted_logits.masked_fill(remove, float("-inf")))
    return logits


def categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one index per row of `probs` (B, V) by inverse CDF at the uniforms `u` (B,): the first index
    whose cumulative probability exceeds u x the row's total (cumsum + searchsorted, ~7x faster than
    torch.multinomial over a 50k vocabulary on CPU). A zero-probability token is never drawn, also where
    rounding puts u x total at the total (the last token with mass is taken)."""
    cdf = probs.float().cumsum(-1)  # (B, V)
    x = u.to(cdf.device, torch.float32)[:, None] * cdf[:, -1:]  # (B, 1)
    last = torch.searchsorted(cdf, cdf[:, -1:].contiguous(), right=False)  # (B, 1): the last token with mass
    return torch.minimum(torch.searchsorted(cdf, x, right=True), last).squeeze(1)  # (B,)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[[5, 6, 7], [8]] -> ids [[5, 6, 7], [p, p, 8]], mask [[1, 1, 1], [0, 0, 1]]."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


DRAWS = "counter-splitmix64"  # how a completion's tokens are drawn (`row_keys`, `uniforms`): part of the cache key of
# every artifact built from samples, so a run dir sampled another way is refused rather than mixed


def sample_batch(model, prompts: list[list[int]], n: int, cfg: SampleConfig, stop_ids: list[int],
                 pad_id: int, keys: np.ndarray, max_new_tokens: int | None = None) -> list[list[int]]:
    """N completions for each prompt, row r drawn from the stream of `keys[r]` (`row_keys`); returns P*N
    token lists (prompt-major), each ending at its stop token (kept, so DPO learns to stop) or at
    max_new_tokens."""
    return draw_batch(model, prompts, n, cfg, stop_ids, pad_id, keys, max_new_tokens).tokens


@torch.inference_mode()
def draw_batch(model, prompts: list[list[int]], n: int, cfg: SampleConfig, stop_ids: list[int],
               pad_id: int, keys: np.ndarray, max_new_tokens: int | None = None) -> Draws:
    """`sample_batch` with the sampler's own per-token log-probs and predictive entropies: the
    distribution that drew (model in its dtype, after temperature/top-k/top-p), so KL and entropy
    estimates are on-policy (no fp32 re-scoring of bf16 draws)."""
    dev = next(model.parameters()).device
    max_new = max_new_tokens or cfg.max_new_tokens
    ids, attn = left_pad(prompts, pad_id)  # (P, L)
    ids, attn = ids.to(dev), attn.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (P, L)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)  # (P, 1, V) logits
    cache = out.cache
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].float().repeat_interleave(n, 0)  # (B, V), B = P*N
    B, L = logits.size(0), attn.size(1)
    if len(keys) != B:
        raise ValueError(f"draw_batch: {len(keys)} row keys for {B} rows (prompts x n): one per completion (row_keys)")
    attn_full = torch.cat([attn.repeat_interleave(n, 0), attn.new_zeros(B, max_new)], dim=1)  # (B, L + max_new)
    next_pos = pos[:, -1:].repeat_interleave(n, 0) + 1  # (B, 1)
    # all bookkeeping stays on the device; the host syncs once per step (how many rows are still live)
    tokens = torch.full((B, max_new), pad_id, dtype=torch.long, device=dev)
    logq = torch.zeros((B, max_new), dtype=torch.float32, device=dev)  # log q of each drawn token
    ent = torch.zeros((B, max_new), dtype=torch.float32, device=dev)  # H(q_t) at each step
    lengths = torch.zeros(B, dtype=torch.long, device=dev)
    active = torch.arange(B, device=dev)
    stops = torch.tensor(stop_ids, device=dev)
    for t in range(max_new):
        logp = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p).log_softmax(-1)  # (A, V)
        probs = logp.exp()
        u = torch.from_numpy(uniforms(keys, t)).to(dev, non_blocking=True)[active]  # (A,) this step's, per live row
        tok = categorical(probs, u)  # (A,)
        tokens[active, t] = tok
        logq[active, t] = logp.gather(1, tok[:, None]).squeeze(1)
        ent[active, t] = torch.special.entr(probs).sum(-1)  # entr(0) = 0: filtered tokens add nothing
        lengths[active] = t + 1
        if t == max_new - 1:
            break
        idx = (~torch.isin(tok, stops)).nonzero().squeeze(1)  # live rows; the one host sync of the step
        if idx.numel() == 0:
            break
        if idx.numel() < tok.numel():  # drop finished rows: later steps only pay for live sequences
            cache.batch_select_indices(idx)
            active, tok, next_pos = active[idx], tok[idx], next_pos[idx]
        attn_full[active, L + t] = 1
        out = model(input_ids=tok[:, None], attention_mask=attn_full[active, : L + t + 1], position_ids=next_pos,
                    cache=cache, use_cache=True)
        logits = out.logits[:, -1].float()
        next_pos = next_pos + 1
    n_tok, tokens, logq, ent = lengths.tolist(), tokens.cpu(), logq.cpu(), ent.cpu()
    return Draws([tokens[i, :k].tolist() for i, k in enumerate(n_tok)], [logq[i, :k].tolist() for i, k in enumerate(n_tok)],
                 [ent[i, :k].mean().item() if k else 0.0 for i, k in enumerate(n_tok)])


def draw(model, tokenizer, prompts: list[list[int]], n: int, cfg: SampleConfig, stop_ids: list[int],
         keys: np.ndarray, max_new_tokens: int | None = None) -> Draws:
    """The fast backend: `draw_batch` with the tokenizer's pad id."""
    return draw_batch(model, prompts, n, cfg, stop_ids, tokenizer.pad_token_id, keys, max_new_tokens)
