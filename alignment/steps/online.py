"""On-policy training (`dpo.method`): each step or round draws fresh completions from the policy being
trained and scores them with the training reward; the reference stays the start policy.

- `online` — iterative DPO (Xiong et al. 2024; Guo et al. 2024, "Direct Language Model Alignment from
  Online AI Feedback"): the train prompts are split into `dpo.rounds` shares; round k samples
  `sample.n_samples` completions per prompt of its share from the policy after round k-1, scores them,
  pairs them (`pairs.strategy`) and takes one DPO pass (`dpo.loss`) over those pairs. Same prompts and
  samples in all as offline DPO: only who drew them differs.
- `rloo` — REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics"): per step
  `dpo.batch_size` prompts x `sample.n_samples` completions from the current policy, each scored
  R = r - β·log(π/π_ref) (the sequence's sampled KL term, as trl's RLOO), advantage
  A_i = R_i - mean_{j≠i} R_j, loss -mean(A · log π(y)). It maximises E[r] - β·KL(π‖π_ref): the objective
  whose optimum is π_β ∝ π_ref·exp(r/β).
  `dpo.credit=prefix` gives each token its own credit instead of its completion's: the reward model also
  scores every prefix of every draw, and token t earns what the reward gained from t on, r - r(prefix
  before t), less β times the KL from t on (the reward-to-go of potential-based shaping, Ng et al. 1999:
  the prefix's score is a baseline that depends only on what came before the token, so at
  `dpo.credit_lambda`=1 the gradient of E[r] - β·KL stays unbiased), against the same position's
  leave-one-out mean. `dpo.credit_lambda` < 1 weights the gains and log-ratios k tokens on by λ^k, as
  GAE's λ-return does (Schulman et al. 2016): less variance, but biased, since a partial review's score
  is not the expected score of its completions. A token after the completion's sentiment is settled
  earns about nothing, so its log-prob is left alone rather than pushed by the whole completion's advantage.
  `dpo.kl=exact` replaces each drawn token's log-ratio by the whole next-token KL(π‖π_ref) over the
  vocabulary at its position (Rao-Blackwellised, Amini et al. 2025, "Better Estimation of the KL Divergence
  Between Language Models"): the same expected KL with less variance. A position's KL depends only on
  the tokens before it, so it enters the loss directly (its gradient through the policy's logits) and
  the returns of the earlier tokens that led there; the sampled log-ratio's noise no longer moves the policy.
  `dpo.reward_shape=log_quantile` maximises log F(r) instead of r, F the start policy's reward distribution
  (`LogQuantileReward`; vBoN, Amini et al. 2024): with each prompt's own F, the optimum at β = 1/(N-1) is
  best-of-N's distribution; F here is pooled over the train prompts. With per-token credit the prefixes'
  log-quantiles are the potentials: at λ = 1 a draw's credits still sum to log F(r) - log F(r(prompt)).

Both use the prompts offline DPO trains on (a draw's train prompts less the held-out share,
`pairs.held_out`), the native training loop (`train.train_loop`) and one process.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..base.checkpoint import saved_progress
from ..config import Config, DPOConfig
from ..base.io import write_json, write_jsonl
from .logprobs import batched_logps, collate, completion_tokens, model_logps, model_token_logps, position_kls
from .pairs import build_pairs
from .reward import check_finite, score_records
from .sampling import in_prompt_order, sample_records
from ..base.tracking import tracked
from .dpo import dpo_loop_config, held_out_prompts, policy_to_train, reference_logps, reference_of, save_policy, train_dpo
from .train import LoopConfig, done_training, train_loop

ROUND_SEED = 7919  # round k of online DPO samples with sample.seed + ROUND_SEED * (k + 1) (+ dpo.seed's share)


def trained_prompts(prompts: list[dict], held_out: float) -> list[dict]:
    """The prompts offline DPO trains on: all but the held-out share (`train.held_out_prompts`, which holds
    out the same ones when every prompt has a pair)."""
    held = held_out_prompts([{"prompt_id": p["id"]} for p in prompts], held_out)
    return [p for p in prompts if p["id"] not in held]


def round_shares(prompts: list[dict], rounds: int) -> list[list[dict]]:
    """`rounds` contiguous shares of the prompts, sizes differing by at most one; e.g. 5 prompts, 2 rounds:
    [p0 p1 p2], [p3 p4]."""
    if rounds > len(prompts):
        raise ValueError(f"dpo.rounds={rounds} is more than the {len(prompts)} train prompts; lower dpo.rounds "
                         "or raise data.n_train_prompts")
    size, extra = divmod(len(prompts), rounds)
    out, i = [], 0
    for k in range(rounds):
        j = i + size + (k < extra)
        out.append(prompts[i:j])
        i = j
    return out


def draw_and_score(model, tokenizer, prompts: list[dict], cfg: Config, seed: int, stop_ids: list[int],
                   reward) -> tuple[list[dict], list[float]]:
    """`sample.n_samples` completions per prompt from `model` (in its current state) and their rewards."""
    sample = dataclasses.replace(cfg.sample, seed=seed)
    was_training = model.training
    model.eval()
    try:  # in the training model's own dtype, never under the training loop's autocast
        with torch.autocast(next(model.parameters()).device.type, enabled=False):
            recs = [r for batch in sample_records(model, tokenizer, prompts, sample.n_samples, sample, stop_ids,
                                                  quiet=True) for r in batch]
            recs = in_prompt_order(recs, prompts)
            return recs, score_records(reward, recs, cfg.reward.score_prompt)
    finally:
        model.train(was_training)


def online_dpo(model, models, reward, prompts: list[dict], cfg: Config, dpo: DPOConfig, out: Path,
               tracker) -> tuple[list[dict], int]:
    """Iterative DPO over `dpo.rounds` rounds (module docstring); writes out/round<k>/ (its samples,
    rewards, pairs, train log). Returns the rounds' train logs joined (steps, epochs and trained tokens
    counted across rounds) and the completion tokens drawn."""
    tok, log, step0, tokens0, drawn_total = models.tokenizer, [], 0, 0, 0
    for k, share in enumerate(round_shares(prompts, dpo.rounds)):
        rdir = out / f"round{k}"
        recs, rewards = draw_and_score(model, tok, share, cfg, cfg.sample.seed + ROUND_SEED * (k + 1) + dpo.seed,
                                       models.stop_ids, reward)
        pairs, stats = build_pairs(recs, rewards, cfg.pairs.strategy, cfg.pairs.min_margin, cfg.pairs.seed)
        ids = {p["id"]: p["ids"] for p in share}
        model.eval()
        with reference_of(model, models, dpo) as ref_model:
            ref = reference_logps(ref_model, pairs, ids, tok.pad_token_id)
        write_jsonl(rdir / "samples.jsonl", [{**r, "reward": x} for r, x in zip(recs, rewards)])
        write_json(rdir / "pairs_stats.json", stats)
        records = train_dpo(model, pairs, ids, ref, dataclasses.replace(dpo, seed=dpo.seed * 1000 + k),
                            tok.pad_token_id, rdir)
        done_training(rdir)  # the round's checkpoint, if it wrote one
        drawn = sum(len(r["completion_ids"]) for r in recs)
        drawn_total += drawn
        for r in records:
            rec = {**r, "step": step0 + r["step"], "epoch": k + r["epoch"], "round": k,
                   "round_reward_mean": sum(rewards) / len(rewards), "tokens_drawn": drawn_total,
                   **({"num_tokens": tokens0 + r["num_tokens"]} if "num_tokens" in r else {})}
            log.append(rec)
            if tracker is not None:
                tracker.log(tracked(rec), step=rec["step"])
        if records:
            step0, tokens0 = step0 + records[-1]["step"], tokens0 + records[-1].get("num_tokens", 0)
    return log, drawn_total


def rloo_loss(logps: torch.Tensor, ref_logps: torch.Tensor, rewards: torch.Tensor, n: int,
              beta: float, exact_kl: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """RLOO's loss over P prompts x n completions, prompt-major: logps (P*n,) with gradient, ref_logps and
    rewards (P*n,). R = r - β·(logp - ref_logp) (detached), A_i = R_i - mean_{j≠i} R_j, loss
    -mean(A·logp). E.g. n 2, β 0, rewards (1, 0): A = (1, -1), loss = -(logp_0 - logp_1)/2.
    `exact_kl` (P*n,) with gradient: each draw's summed exact per-position KL (`dpo.kl=exact`) stands in
    for its sampled log-ratio in R, and β·mean(exact_kl) joins the loss."""
    if n < 2:
        raise ValueError(f"dpo.method=rloo needs sample.n_samples >= 2 for its leave-one-out baseline, got {n}")
    kl = (logps.detach() - ref_logps if exact_kl is None else exact_kl.detach()).view(-1, n)  # (P, n)
    score = rewards.view(-1, n).to(kl.dtype) - beta * kl  # (P, n)
    adv = score - (score.sum(1, keepdim=True) - score) / (n - 1)  # (P, n) leave-one-out baseline
    loss = -(adv.flatten() * logps).mean() + (0.0 if exact_kl is None else beta * exact_kl.mean())
    return loss, {"loss": loss.item(), "objective/scores": rewards.float().mean().item(),
                  "objective/kl": kl.mean().item(), "objective/rlhf_reward": score.mean().item(),
                  "objective/non_score_reward": (-beta * kl).mean().item(), "advantage_abs": adv.abs().mean().item()}


def prefix_rewards(reward, records: list[dict], tokenizer, score_prompt: bool = True) -> torch.Tensor:
    """(B, L) the reward of every prefix of every completion, L the longest: [i, t] scores record i's
    prompt + its first t completion tokens (t = 0: the prompt alone), 0 past the completion's end. The
    potential each token's credit is measured from (`rloo_prefix_loss`); one scoring call for all."""
    L = max((len(r["completion_ids"]) for r in records), default=0)
    prefixes, where = [], []  # a finished draw's last token (EOS) is never inside a prefix
    for i, r in enumerate(records):
        for t in range(len(r["completion_ids"])):
            text = tokenizer.decode(r["completion_ids"][:t], skip_special_tokens=True)  # as `sampling` decodes
            prefixes.append({"prompt": r["prompt"], "completion": text})
            where.append((i, t))
    phi = torch.zeros((len(records), L))  # (B, L)
    for (i, t), v in zip(where, score_records(reward, prefixes, score_prompt) if prefixes else []):
        phi[i, t] = v
    return phi


def to_go(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """(B, L) -> (B, L) sums from each position on, later ones weighted lam^(u-t): e.g. [[1, 2, 3]] gives
    [[6, 5, 3]] at lam 1 and [[1, 2, 3]] at lam 0."""
    out, acc = torch.zeros_like(x), torch.zeros_like(x[:, 0])
    for t in range(x.shape[1] - 1, -1, -1):
        acc = x[:, t] + lam * acc
        out[:, t] = acc
    return out


def rloo_prefix_loss(logps: torch.Tensor, ref_logps: torch.Tensor, valid: torch.Tensor, rewards: torch.Tensor,
                     prefix: torch.Tensor, n: int, beta: float, lam: float = 1.0,
                     exact_kl: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """RLOO with each token's own credit (`dpo.credit=prefix`, module docstring) over P prompts x n
    completions, prompt-major: logps (B, L) per completion token with gradient, ref_logps (B, L), valid
    (B, L), rewards (B,), prefix (B, L) the reward before each token (`prefix_rewards`). Token t's return
    G_t = Σ_{u≥t} lam^(u-t)·(Δr_u - β·(logp_u - ref_u)), Δr_u the reward's change over token u (the last
    token's reaches r); A_t = G_t - mean_{j≠i} G_t of the same prompt; loss -mean_i Σ_t A_t·logp_t. At
    lam 1 and β 0, G_t = r - prefix_t; with a constant prefix and completions of equal length it is
    rloo_loss's gradient, token by token. A completion that ended counts as 0 at the later positions
    of the others' leave-one-out means (nothing more to earn). `exact_kl` (B, L) with gradient, the exact
    KL at each position (`dpo.kl=exact`): token t's return then holds the KLs of the positions after it,
    G_t = Σ_{u≥t} lam^(u-t)·Δr_u - β·Σ_{u>t} lam^(u-t)·KL_u, and β·mean_i Σ_t KL_t joins the loss."""
    if n < 2:
        raise ValueError(f"dpo.method=rloo needs sample.n_samples >= 2 for its leave-one-out baseline, got {n}")
    if valid.shape[1] == 0:  # every completion empty: nothing to credit
        return logps.sum() * 0.0, {"loss": 0.0, "objective/scores": rewards.float().mean().item(), "objective/kl": 0.0}
    v = valid.to(logps.dtype)
    kl = (logps.detach() - ref_logps if exact_kl is None else exact_kl.detach()) * v  # (B, L) per token
    last = (valid.sum(1) - 1).clamp(min=0)  # (B,)
    after = torch.cat([prefix[:, 1:], prefix[:, :1]], 1)  # (B, L) the reward after token t ...
    after[torch.arange(len(prefix)), last] = rewards.to(after.dtype)  # ... the whole completion's after its last
    gain = (after - prefix) * v  # (B, L)
    G = to_go(gain - beta * kl, lam) * v  # (B, L): to_go is linear, so one pass for both terms
    if exact_kl is not None:  # position t's own KL is not the token's doing: it enters the loss below
        G = G + beta * kl
    Gp = G.view(-1, n, G.shape[1])  # (P, n, L)
    adv = (Gp - (Gp.sum(1, keepdim=True) - Gp) / (n - 1)).view_as(G) * v  # (B, L) leave-one-out by position
    loss = -(adv * logps * v).sum(1).mean() + (0.0 if exact_kl is None else beta * (exact_kl * v).sum(1).mean())
    seq_kl = kl.sum(1)  # (B,)
    return loss, {"loss": loss.item(), "objective/scores": rewards.float().mean().item(),
                  "objective/kl": seq_kl.mean().item(),
                  "objective/rlhf_reward": (rewards.float() - beta * seq_kl).mean().item(),
                  "objective/non_score_reward": (-beta * seq_kl).mean().item(),
                  "advantage_abs": (adv.abs().sum() / v.sum().clamp(min=1)).item()}


def rloo(model, models, reward, prompts: list[dict], cfg: Config, dpo: DPOConfig, out: Path,
         tracker) -> tuple[list[dict], int]:
    """RLOO (module docstring) for `dpo.epochs` passes over `prompts`, `dpo.batch_size` prompts a
    micro-batch; writes out/train_log.jsonl and returns it and the completion tokens drawn. Micro-batch k
    (counted over the whole run) draws with seed sample.seed + ROUND_SEED·k + dpo.seed, so a run resumed from
    a checkpoint (`dpo.save_minutes`, or Ctrl-C) draws what the uninterrupted run would."""
    tok, n = models.tokenizer, cfg.sample.n_samples
    pad, calls = tok.pad_token_id, [saved_progress(out)[0] * dpo.grad_accum]  # micro-batches drawn so far, all sessions

    def loss_fn(net, mb: list[int]):
        batch = [prompts[i] for i in mb]
        calls[0] += 1
        seed = cfg.sample.seed + ROUND_SEED * calls[0] + dpo.seed
        recs, rewards = draw_and_score(net, tok, batch, cfg, seed, models.stop_ids, reward)
        ids = [p["ids"] for p in batch for _ in range(n)]
        comps = [r["completion_ids"] for r in recs]
        if dpo.credit == "prefix":
            loss, m = prefix_credit_step(net, models, reward, dpo, ids, recs, rewards, cfg.reward.score_prompt, n)
        elif dpo.kl == "exact":
            loss, m = exact_kl_step(net, models, dpo, collate(ids, comps, pad), rewards, n)
        else:
            with torch.no_grad(), reference_of(net, models, dpo) as ref_model:
                ref = batched_logps(ref_model, ids, comps, pad, batch_size=len(comps))  # (P*n,)
            logps = model_logps(net, collate(ids, comps, pad))  # (P*n,)
            loss, m = rloo_loss(logps, ref.to(logps.device), torch.tensor(rewards, device=logps.device), n, dpo.beta)
        return loss, {**m, "tokens_drawn": float(sum(len(c) for c in comps))}  # a count: the log keeps the running total

    loop: LoopConfig = dpo_loop_config(dpo, next(model.parameters()).device, label=f"rloo ({dpo.credit} credit)")
    records = train_loop(model, len(prompts), loss_fn, loop, out, tracker).records
    return records, int(records[-1]["tokens_drawn"]) if records else 0


def prefix_credit_step(net, models, reward, dpo: DPOConfig, ids: list[list[int]], recs: list[dict],
                       rewards: list[float], score_prompt: bool, n: int) -> tuple[torch.Tensor, dict[str, float]]:
    """One RLOO micro-batch with per-token credit: the draws' prefixes scored, the reference's and the
    policy's per-token log-probs, `rloo_prefix_loss`."""
    batch = collate(ids, [r["completion_ids"] for r in recs], models.tokenizer.pad_token_id)
    dev = next(net.parameters()).device
    with torch.autocast(dev.type, enabled=False):  # the prefixes in the precision the whole draws were scored in
        prefix = prefix_rewards(reward, recs, models.tokenizer, score_prompt)  # (B, L)
    logps, ref, valid, kl = token_terms(net, models, dpo, batch)
    return rloo_prefix_loss(logps, ref, valid, torch.tensor(rewards, device=dev), prefix.to(dev), n,
                            dpo.beta, dpo.credit_lambda, kl)


def token_terms(net, models, dpo: DPOConfig, batch: dict
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A collated batch's completion tokens, left-aligned (B, L): the policy's log-probs (with gradient), the
    reference's, valid, and the exact KL at each position (`dpo.kl=exact`; None for the sampled KL, and then
    neither model's logits are kept)."""
    exact, mask = dpo.kl == "exact", batch["completion_mask"]
    with torch.no_grad(), reference_of(net, models, dpo) as ref_model:
        ref_out = model_token_logps(ref_model, batch, return_logits=exact)
    out = model_token_logps(net, batch, return_logits=exact)
    (tok, logits), (ref_tok, ref_logits) = (out, ref_out) if exact else ((out, None), (ref_out, None))
    logps, valid = completion_tokens(tok, mask)  # (B, L)
    ref, _ = completion_tokens(ref_tok, mask)  # (B, L)
    kl = position_kls(logits, ref_logits, mask)[0] if exact else None  # (B, L)
    return logps, ref.to(logps.device), valid, kl


def exact_kl_step(net, models, dpo: DPOConfig, batch: dict, rewards: list[float], n: int
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """One RLOO micro-batch with sequence credit and the exact per-position KL (`dpo.kl=exact`)."""
    logps, ref, _, kl = token_terms(net, models, dpo, batch)  # (B, L), 0 past each completion's end
    return rloo_loss(logps.sum(1), ref.sum(1), torch.tensor(rewards, device=logps.device), n, dpo.beta, kl.sum(1))


TRAINERS = {"online": online_dpo, "rloo": rloo}  # dpo.method -> its trainer


class LogQuantileReward:
    """A reward scored as log F(r), F the start policy's reward distribution: `start` its rewards (one draw's
    train-prompt samples, pooled over prompts), F(r) = (#{start <= r} + 1/2) / (len(start) + 1), in (0, 1).
    E.g. start [0, 1, 2, 3]: r 1.5 -> log 0.5, r 9 -> log 0.9, r -9 -> log 0.1.
    vBoN (Amini et al. 2024, "Variational Best-of-N Alignment"): the optimum of E[log F(r)] - β·KL(π‖π_ref)
    is π_ref·F(r)^(1/β), which is best-of-N's own distribution at N = 1 + 1/β where F is the prompt's own (here
    pooled: a prompt's own F would need many start draws of it). Bounded above by 0: a draw far below the
    start's rewards costs more than one as far above earns, and outliers of the reward earn nothing extra."""

    def __init__(self, reward, start: list[float]):
        if not start:
            raise ValueError("dpo.reward_shape=log_quantile needs the start policy's rewards on the train prompts; "
                             "got none (an empty draw): raise data.n_train_prompts or use dpo.reward_shape=raw")
        self.reward, self.label = reward, f"log-quantile of {getattr(reward, 'label', 'the reward')}"
        self.start = torch.sort(torch.tensor(start, dtype=torch.float64)).values  # (M,)

    def score(self, texts: list[str]) -> torch.Tensor:
        r = check_finite(self.reward.score(texts), texts).to(torch.float64)  # (B,): a NaN is never the top quantile
        below = torch.searchsorted(self.start, r, right=True)  # (B,) #{start <= r}
        return torch.log((below + 0.5) / (len(self.start) + 1)).float()


def shaped_reward(reward, shape: str, start: list[float] | None):
    """The reward on-policy training maximises (`dpo.reward_shape`): `reward` itself (raw) or its
    log-quantile under the start policy's rewards `start` (`LogQuantileReward`)."""
    return reward if shape == "raw" else LogQuantileReward(reward, start or [])


def train_on_policy(models, prompts: list[dict], cfg: Config, dpo: DPOConfig, out: Path, tracker,
                    start_rewards: list[float] | None = None) -> int:
    """Train one policy with `dpo.method` (online or rloo) on `prompts` into `out` (model/, train_log.jsonl,
    train_summary.json), full fine-tuning or LoRA as `dpo.lora_r` says; returns the completion tokens it
    drew. `start_rewards`: the start policy's rewards on the train prompts, which `dpo.reward_shape` =
    log_quantile measures quantiles against. Finishes `tracker`."""
    try:
        reward = shaped_reward(models.reward, dpo.reward_shape, start_rewards)
        with policy_to_train(models, dpo) as model:
            log, drawn = TRAINERS[dpo.method](model, models, reward, prompts, cfg, dpo, Path(out), tracker)
            write_jsonl(Path(out) / "train_log.jsonl", log)  # rloo's loop wrote the same records
            write_json(Path(out) / "train_summary.json", log[-1] if log else {})
            save_policy(model, models.tokenizer, Path(out))
        tracker.log_model(Path(out) / "model")
        return drawn
    finally:
        tracker.finish()
