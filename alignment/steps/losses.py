"""Preference-loss registry: DPO, SLiC hinge, IPO, f-divergence DPO (f-DPO) and reward distillation.

Every loss takes per-sequence summed log-probs, each of shape (B,):
``policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps``, plus ``beta``
and ``alpha`` (only the α-divergence uses ``alpha``) and returns ``LossOutput(losses, chosen_rewards,
rejected_rewards)``: per-example losses (B,) and the detached implicit rewards
``beta * (policy_logps - ref_logps)`` (B,) of Rafailov et al. 2023. The losses in ``VALUE_LOSSES``
(reward distillation) also take ``margin``, the pairs' reward differences r_c − r_r (B,): they use the
reward's value, not only which completion won.

f-DPO (Wang et al. 2023, "Beyond Reverse KL", arXiv:2309.16240):

    L = -log σ( β f′(u_w) − β f′(u_l) ),   u = π_θ(y|x) / π_ref(y|x),   r = log u

Every f′ below is written in terms of r, so nothing is ever exponentiated twice. Constant offsets in
f′ cancel in the difference. Numerics:
  * log-ratios are computed in at least float32 (fp16/bf16 inputs are upcast; outputs are float32);
  * the exponent of every exp/expm1 is clamped above at ``_EXP_MAX = 80`` (exp(80) ≈ 5.5e34 < float32
    max 3.4e38, leaving headroom for the chosen−rejected difference and β; trl clamps its α-divergence
    at the same 80). This only changes f′ where |f′| > 5e34. If one side clamps, the logit is still
    ≥ 5e34·β in magnitude, so the loss is saturated with the right sign; if *both* sides clamp (e.g.
    forward KL with r_w, r_l < −80) the difference collapses to 0 (loss log 2) — the unclamped value
    would be inf − inf = NaN. Past the clamp the gradient through that f′ is zero, not inf/NaN. For
    the α-divergence the bound is 80 + log α so expm1(·)/α stays ≤ e^80 even for tiny α. Result:
    losses and gradients stay finite for any finite r in float32 (tested at ±90) for β ≲ 1e3.

Convention note (trl 1.16, trl/trainer/dpo_trainer.py:1364-1378): trl's ``alpha_divergence`` uses
f′(t) = (t^(a−1) − 1)/(a−1) with ``a = f_alpha_divergence_coef``; that equals our (1 − u^(−α))/α with
α = 1 − a. So trl's coefficient is 1 − the paper's α (trl a→1 ⇒ reverse KL, paper α→0 ⇒ reverse KL).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LossOutput", "LOSSES", "F_DIVERGENCES", "get_loss", "compute_loss", "validate_alpha",
    "sigmoid_loss", "hinge_loss", "ipo_loss", "reverse_kl_loss", "forward_kl_loss", "js_loss",
    "alpha_loss", "chi2_loss", "hellinger_loss", "jeffrey_loss", "distill_loss", "VALUE_LOSSES",
]

_EXP_MAX = 80.0  # max exponent fed to exp/expm1; see module docstring


class LossOutput(NamedTuple):
    losses: Tensor  # (B,)
    chosen_rewards: Tensor  # (B,) detached
    rejected_rewards: Tensor  # (B,) detached


def validate_alpha(alpha) -> float:
    """Return ``float(alpha)``; raise ValueError naming ``dpo.alpha`` unless 0 < alpha < 1."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        a = math.nan
    if not 0.0 < a < 1.0:  # also rejects NaN
        raise ValueError(
            f"dpo.alpha must satisfy 0 < alpha < 1 (Wang et al. 2023 convention: alpha->0 is reverse KL, "
            f"alpha->1 is forward KL), got {alpha!r}"
        )
    return a


def _log_ratios(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> tuple[Tensor, Tensor]:
    """(log u_w, log u_l), each (B,), upcast to at least float32 before subtracting."""
    if not (pc.shape == pr.shape == rc.shape == rr.shape):
        raise ValueError(
            f"log-prob tensors must share one shape (B,), got {tuple(pc.shape)}, {tuple(pr.shape)}, "
            f"{tuple(rc.shape)}, {tuple(rr.shape)}"
        )
    dtype = torch.promote_types(pc.dtype, torch.float32)
    return pc.to(dtype) - rc.to(dtype), pr.to(dtype) - rr.to(dtype)  # (B,), (B,)


def _output(losses: Tensor, r_w: Tensor, r_l: Tensor, beta: float) -> LossOutput:
    return LossOutput(losses, beta * r_w.detach(), beta * r_l.detach())


# ---- f′ in log form: r = log u; each returns (B,) ------------------------------------------------
def _fp_reverse_kl(r: Tensor, alpha: float) -> Tensor:  # f(u) = u log u  -> f′ = log u + 1
    return r + 1.0


def _fp_forward_kl(r: Tensor, alpha: float) -> Tensor:  # f(u) = -log u  -> f′ = -1/u
    return -torch.exp((-r).clamp(max=_EXP_MAX))


def _fp_js(r: Tensor, alpha: float) -> Tensor:  # f′ = log(2u/(1+u)) = log 2 + r - softplus(r)
    return math.log(2.0) + F.logsigmoid(r)  # logsigmoid(r) == r - softplus(r), stable both ways


def _fp_alpha(r: Tensor, alpha: float) -> Tensor:  # f′ = (1 - u^-α)/α = -expm1(-α r)/α
    return -torch.expm1((-alpha * r).clamp(max=_EXP_MAX + math.log(alpha))) / alpha


def _fp_chi2(r: Tensor, alpha: float) -> Tensor:  # f(u) = (u-1)^2  -> f′ = 2(u - 1)
    return 2.0 * torch.expm1(r.clamp(max=_EXP_MAX))


def _fp_hellinger(r: Tensor, alpha: float) -> Tensor:  # f(u) = (√u - 1)^2  -> f′ = 1 - u^-1/2
    return -torch.expm1((-0.5 * r).clamp(max=_EXP_MAX))


def _fp_jeffrey(r: Tensor, alpha: float) -> Tensor:  # f(u) = (u-1) log u  -> f′ = log u + 1 - 1/u
    return r + 1.0 - torch.exp((-r).clamp(max=_EXP_MAX))


def _f_dpo(f_prime, pc, pr, rc, rr, beta: float, alpha: float) -> LossOutput:
    """-log σ(β f′(u_w) − β f′(u_l)) (Wang et al. 2023 f-DPO objective)."""
    r_w, r_l = _log_ratios(pc, pr, rc, rr)  # (B,), (B,)
    logits = beta * (f_prime(r_w, alpha) - f_prime(r_l, alpha))  # (B,)
    return _output(-F.logsigmoid(logits), r_w, r_l, beta)  # (B,)


# ---- Level 1: DPO vs SLiC hinge; Level 3: IPO ------------------------------------------------------
def sigmoid_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                 ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """Standard DPO (Rafailov et al. 2023, Eq. 7): -log σ(β[(π_c − ref_c) − (π_r − ref_r)]).

    Identical (up to rounding) to ``reverse_kl``; ``alpha`` is ignored."""
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps,
                           ref_chosen_logps, ref_rejected_logps)  # (B,), (B,)
    return _output(-F.logsigmoid(beta * (r_w - r_l)), r_w, r_l, beta)  # (B,)


def hinge_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
               ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """SLiC-HF hinge (Zhao et al. 2023, calibration loss with margin δ=1), in the DPO-reference form
    relu(1 − β·logits), logits = (π_c − ref_c) − (π_r − ref_r); ``alpha`` is ignored."""
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps,
                           ref_chosen_logps, ref_rejected_logps)  # (B,), (B,)
    return _output(torch.relu(1.0 - beta * (r_w - r_l)), r_w, r_l, beta)  # (B,)


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
             ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """IPO (Azar et al. 2023, Eq. 17 with τ = β): (logits − 1/(2β))²,
    logits = (π_c − ref_c) − (π_r − ref_r).

    As in the DPO reference implementation: summed, not length-normalised, log-probs (trl 1.16
    divides each log-ratio by its completion length first); ``alpha`` is ignored."""
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps,
                           ref_chosen_logps, ref_rejected_logps)  # (B,), (B,)
    return _output((r_w - r_l - 1.0 / (2.0 * beta)) ** 2, r_w, r_l, beta)  # (B,)


# ---- Level 2: f-DPO (Wang et al. 2023) ---------------------------------------------------------------
def reverse_kl_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                    ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO, reverse KL: f(u) = u log u, f′(u) = log u + 1 (Wang et al. 2023, Table 1); this is DPO."""
    return _f_dpo(_fp_reverse_kl, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, alpha)


def forward_kl_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                    ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO, forward KL: f(u) = −log u, f′(u) = −1/u = −exp(−r) (Wang et al. 2023, Table 1)."""
    return _f_dpo(_fp_forward_kl, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, alpha)


def js_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
            ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO, Jensen–Shannon (paper's form): f(u) = u log u − (u+1) log((u+1)/2),
    f′(u) = log(2u/(1+u)) = log 2 + r − softplus(r) (Wang et al. 2023, Table 1)."""
    return _f_dpo(_fp_js, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, alpha)


def alpha_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
               ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO, α-divergence: f(u) = (u^(1−α) − (1−α)u − α)/(α(α−1)), f′(u) = (1 − u^(−α))/α
    (Wang et al. 2023, Table 1; α∈(0,1), α→0 reverse KL, α→1 forward KL). trl's coef = 1 − α."""
    return _f_dpo(_fp_alpha, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, validate_alpha(alpha))


def chi2_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
              ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO with Pearson χ²: f(u) = (u−1)², f′(u) = 2(u−1) = 2·expm1(r).

    Extension beyond the paper's evaluated divergences: f′(0) = −2 is finite, so the KKT argument of
    Wang et al. 2023 no longer excludes π*(y|x) = 0; the loss form is still the f-DPO objective."""
    return _f_dpo(_fp_chi2, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, alpha)


def hellinger_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                   ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO with squared Hellinger: f(u) = (√u − 1)², f′(u) = 1 − u^(−1/2) = −expm1(−r/2).

    Equals the α-divergence at α = 1/2 with β halved (f′_α=½ = 2·f′_Hellinger)."""
    return _f_dpo(_fp_hellinger, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, alpha)


def jeffrey_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                 ref_rejected_logps, beta: float, alpha: float = 0.5) -> LossOutput:
    """f-DPO with Jeffreys (KL + reverse KL): f(u) = (u−1) log u, f′(u) = log u + 1 − 1/u
    = r + 1 − exp(−r), i.e. the sum of the reverse- and forward-KL f′ (Wang et al. 2023 form)."""
    return _f_dpo(_fp_jeffrey, policy_chosen_logps, policy_rejected_logps,
                  ref_chosen_logps, ref_rejected_logps, beta, alpha)


# ---- Level 3: the reward's value, not only its sign -------------------------------------------------
def distill_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                 ref_rejected_logps, beta: float, alpha: float = 0.5, margin: Tensor | None = None) -> LossOutput:
    """Reward distillation (Fisch et al. 2024, "Robust Preference Optimization through Reward Model
    Distillation", Eq. 7): (β·[(π_c − ref_c) − (π_r − ref_r)] − (r_c − r_r))², `margin` = r_c − r_r (B,).

    Its minimiser over all pairs of a prompt's samples is β·log(π/π_ref) = r + c(x): the KL-regularised
    optimum π_β ∝ π_ref·exp(r/β), on the sampled completions. ``alpha`` is ignored. E.g. β 1, log-ratios
    (0.5, −0.5), margin 2: (1 − 2)² = 1."""
    if margin is None:
        raise ValueError("dpo.loss=distill regresses on the pairs' reward margins (chosen_reward - rejected_reward), "
                         "and these pairs have none (pairs.source gives labels only); use dpo.loss=sigmoid")
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps,
                           ref_chosen_logps, ref_rejected_logps)  # (B,), (B,)
    target = margin.to(device=r_w.device, dtype=r_w.dtype)  # (B,)
    return _output((beta * (r_w - r_l) - target) ** 2, r_w, r_l, beta)  # (B,)


LossFn = Callable[..., LossOutput]

LOSSES: dict[str, LossFn] = {
    "sigmoid": sigmoid_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
    "reverse_kl": reverse_kl_loss,
    "forward_kl": forward_kl_loss,
    "js": js_loss,
    "alpha": alpha_loss,
    "chi2": chi2_loss,
    "hellinger": hellinger_loss,
    "jeffrey": jeffrey_loss,
    "distill": distill_loss,
}

# Losses that read the pairs' reward margins (`margin=`), not only which completion won.
VALUE_LOSSES: frozenset[str] = frozenset({"distill"})

# f-divergence DPO variants, for sweeps ("sigmoid" is left out: it is reverse_kl under another name).
F_DIVERGENCES: tuple[str, ...] = (
    "reverse_kl", "forward_kl", "js", "alpha", "chi2", "hellinger", "jeffrey",
)


def get_loss(name: str) -> LossFn:
    """Registry lookup; raises ValueError naming ``dpo.loss``, the bad value and the allowed names."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"dpo.loss must be one of {sorted(LOSSES)}, got {name!r}") from None


def compute_loss(name: str, pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float,
                 alpha: float = 0.5, margin: Tensor | None = None) -> LossOutput:
    """``get_loss(name)(pc, pr, rc, rr, beta, alpha)``; a `VALUE_LOSSES` loss also gets the pairs'
    reward margins (B,)."""
    fn = get_loss(name)
    return fn(pc, pr, rc, rr, beta, alpha, margin=margin) if name in VALUE_LOSSES else fn(pc, pr, rc, rr, beta, alpha)
