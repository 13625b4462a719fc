"""Per-sequence log-probs of completions, in two explicit steps.

1. `collate`: prompt + completion ids -> right-padded `input_ids`, `attention_mask` and a
   `completion_mask` that marks exactly the completion tokens (never derived from token
   values: GPT-2's pad token *is* its EOS, and a completion may end with a real EOS).
2. `token_logps` -> (B, T-1) log p(token_t | <t) aligned with `labels = input_ids[:, 1:]`,
   then `sequence_logps` masks and sums.

Worked example (pad id 0, which is also EOS): prompt [5, 6], completions [7, 0] (ends with a
real EOS) and [8]:

    input_ids       = [[5, 6, 7, 0],   [5, 6, 8, 0]]
    attention_mask  = [[1, 1, 1, 1],   [1, 1, 1, 0]]
    completion_mask = [[0, 0, 1, 1],   [0, 0, 1, 0]]   # the real EOS counts, the pad does not

and the shifted mask used with the (B, T-1) token log-probs is completion_mask[:, 1:].
"""
from __future__ import annotations

import torch


def collate(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad prompt+completion pairs; see the module docstring for a worked example."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    width = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width), dtype=torch.long)
    comp = torch.zeros((B, width), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attn[i, : len(p) + len(c)] = 1
        comp[i, len(p) : len(p) + len(c)] = 1
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}  # each (B, T)


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | ...) from logits (B, T, V) -> (B, T-1), in float32."""
    logits = logits[:, :-1].float()  # (B, T-1, V)
    labels = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    return torch.gather(logits.log_softmax(-1), 2, labels).squeeze(-1)  # (B, T-1)


def sequence_logps(tok_logps: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of completion-token log-probs: (B, T-1), (B, T) -> (B,)."""
    return (tok_logps * completion_mask[:, 1:].to(tok_logps.dtype)).sum(-1)


def completion_tokens(tok_logps: torch.Tensor, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The completion tokens' values of (B, T-1) token log-probs, left-aligned: (B, L) values and (B, L)
    valid, L the longest completion. In the module docstring's example, (B, T-1) log-probs
    [[a, b, c], [d, e, f]] give [[b, c], [e, 0]] and valid [[1, 1], [1, 0]]."""
    assert not completion_mask[:, 0].any(), "a completion token needs a prompt token before it"
    mask = completion_mask[:, 1:].to(tok_logps.device).bool()  # (B, T-1)
    lengths = mask.sum(1)  # (B,)
    L = int(lengths.max()) if len(lengths) else 0
    valid = torch.arange(L, device=mask.device)[None, :] < lengths[:, None]  # (B, L)
    out = tok_logps.new_zeros(valid.shape)
    out[valid] = tok_logps[mask]  # row-major on both sides: each row's completion tokens in order
    return out, valid


def position_kls(logits: torch.Tensor, ref_logits: torch.Tensor, completion_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact next-token KL(π‖π_ref) = Σ_v π(v)·(log π(v) - log π_ref(v)) at every position that predicts a
    completion token, from the policy's and the reference's (B, T, V) logits: (B, L) left-aligned as
    `completion_tokens` gives them, and (B, L) valid. Differentiable through `logits`. E.g. π = (1/2, 1/2)
    and π_ref = (1/4, 3/4) at a position give (1/2)·log 2 + (1/2)·log(2/3) = 0.1438."""
    mask = completion_mask[:, 1:].to(logits.device).bool()  # (B, T-1), aligned with logits[:, :-1]
    logp = logits[:, :-1][mask].float().log_softmax(-1)  # (N, V): only the N positions that predict a completion token
    ref = ref_logits[:, :-1].to(logits.device)[mask].float().log_softmax(-1)  # (N, V)
    kl = logits.new_zeros(mask.shape, dtype=torch.float32)  # (B, T-1)
    kl[mask] = (logp.exp() * (logp - ref)).sum(-1)
    return completion_tokens(kl, completion_mask)


def model_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Forward `model` on a collated batch (right-padded, positions from the attention mask): (B, T, V).
    No KV cache is kept (nothing decodes after it: only memory)."""
    dev = next(model.parameters()).device
    ids, attn = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits  # (B, T, V)


def model_token_logps(model, batch: dict[str, torch.Tensor], return_logits: bool = False):
    """Forward `model` on a collated batch; returns (B, T-1) token log-probs aligned with
    input_ids[:, 1:] (and the (B, T, V) logits when asked, for predictive entropy)."""
    logits = model_logits(model, batch)  # (B, T, V)
    tok = token_logps(logits, batch["input_ids"].to(logits.device))  # (B, T-1)
    return (tok, logits) if return_logits else tok


def model_logps(model, batch: dict[str, torch.Tensor], return_logits: bool = False):
    """Forward `model` on a collated batch; returns (B,) summed completion log-probs
    (and the (B, T, V) logits when asked)."""
    tok, logits = model_token_logps(model, batch, return_logits=True)
    lp = sequence_logps(tok, batch["completion_mask"].to(tok.device))
    return (lp, logits) if return_logits else lp


@torch.no_grad()
def completion_token_stats(logits: torch.Tensor, batch: dict[str, torch.Tensor], chunk: int = 1024
                           ) -> dict[str, torch.Tensor]:
    """What trl's trainers log per completion token, from the logits (B, T, V) that predict it (the N
    tokens `completion_mask` marks, row-major): `row` (N,) its row, `mean_logit` (N,) the mean logit over
    the vocabulary, `entropy` (N,) of the next-token distribution, `top1` (N,) whether the token is its
    argmax; and `num_tokens` (), the batch's prompt + completion tokens. Computed `chunk` tokens at a time."""
    mask = batch["completion_mask"][:, 1:].to(logits.device).bool()  # (B, T-1), aligned with logits[:, :-1]
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]  # (N,)
    picked, labels = logits[:, :-1][mask], batch["input_ids"][:, 1:].to(logits.device)[mask]  # (N, V), (N,)
    mean_logit, entropy, top1 = [], [], []
    for i in range(0, len(labels), chunk):
        x = picked[i : i + chunk].float()  # (n, V)
        logp = x.log_softmax(-1)
        mean_logit.append(x.mean(-1))
        entropy.append(-(logp.exp() * logp).sum(-1))
        top1.append(x.argmax(-1) == labels[i : i + chunk])
    cat = lambda xs, dtype: torch.cat(xs) if xs else torch.zeros(0, dtype=dtype, device=logits.device)  # noqa: E731
    return {"row": rows, "mean_logit": cat(mean_logit, torch.float32), "entropy": cat(entropy, torch.float32),
            "top1": cat(top1, torch.bool), "num_tokens": batch["attention_mask"].sum()}


@torch.no_grad()
def batched_logps(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                  batch_size: int = 16) -> torch.Tensor:
    """(N,) summed completion log-probs for many pairs, without gradients (reference model)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        out.append(model_logps(model, collate(prompts[i : i + batch_size], completions[i : i + batch_size], pad_id)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
