"""Tests for alignment.steps.losses.

Expected values are written from the formulas in u = π/π_ref space with the `math` module (not via
the log-space code under test). The trl parity tests call trl 1.16's own loss code:
`DPOTrainer._compute_loss` is invoked unbound with a SimpleNamespace `self` and a stub model that
returns the given per-sequence log-probs (one completion token per sequence, reference log-probs
passed precomputed), so trl's f-divergence / sigmoid / hinge / ipo branches run unmodified.
"""
from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignment.steps.losses import (
    F_DIVERGENCES,
    LOSSES,
    VALUE_LOSSES,
    LossOutput,
    compute_loss,
    get_loss,
    validate_alpha,
)

# Three pairs: (policy_chosen, policy_rejected, ref_chosen, ref_rejected) summed log-probs.
PC, PR, RC, RR = [-1.0, -2.0, -4.0], [-3.0, -1.0, -2.5], [-1.5, -2.5, -3.0], [-2.0, -1.5, -3.0]
R_W = [p - r for p, r in zip(PC, RC)]  # log u_w = [0.5, 0.5, -1.0]
R_L = [p - r for p, r in zip(PR, RR)]  # log u_l = [-1.0, 0.5, 0.5]
BETA, ALPHA = 0.5, 0.3
MARGIN = [2.0, 0.0, -1.0]  # reward margins r_c - r_r, for the losses that read them (VALUE_LOSSES)


def t(xs, dtype=torch.float32, grad=False):
    return torch.tensor(xs, dtype=dtype, requires_grad=grad)


def nll(x: float) -> float:  # -log σ(x)
    return math.log1p(math.exp(-x))


# f′(u) written directly in u-space, as in Wang et al. 2023 / textbook definitions.
F_PRIME_U = {
    "reverse_kl": lambda u, a: math.log(u) + 1.0,
    "forward_kl": lambda u, a: -1.0 / u,
    "js": lambda u, a: math.log(2.0 * u / (1.0 + u)),
    "alpha": lambda u, a: (1.0 - u ** (-a)) / a,
    "chi2": lambda u, a: 2.0 * (u - 1.0),
    "hellinger": lambda u, a: 1.0 - u ** -0.5,
    "jeffrey": lambda u, a: (u - 1.0) / u + math.log(u),  # d/du (u-1)log u
}


def margin_of(name, n=3):
    return t(MARGIN[:n]) if name in VALUE_LOSSES else None


def run(name, beta=BETA, alpha=ALPHA, **kw) -> LossOutput:
    return compute_loss(name, t(PC, **kw), t(PR, **kw), t(RC, **kw), t(RR, **kw), beta, alpha, margin=margin_of(name))


def test_registry_contents():
    assert set(LOSSES) == {"sigmoid", "hinge", "ipo", "distill", *F_PRIME_U}
    assert VALUE_LOSSES == {"distill"}
    assert set(F_DIVERGENCES) == set(F_PRIME_U) and "sigmoid" not in F_DIVERGENCES
    assert all(get_loss(n) is LOSSES[n] for n in LOSSES)


def test_sigmoid_hinge_ipo_closed_form():
    logits = [w - l for w, l in zip(R_W, R_L)]  # [1.5, 0.0, -1.5]
    out = run("sigmoid")
    assert torch.allclose(out.losses, t([nll(BETA * z) for z in logits]), atol=1e-6)
    assert torch.allclose(out.losses[1], t(math.log(2.0)))
    # hinge: relu(1 - 0.5*z) -> [0.25, 1, 1.75]
    assert torch.allclose(run("hinge").losses, t([0.25, 1.0, 1.75]))
    # ipo: (z - 1/(2*0.5))^2 = (z - 1)^2 -> [0.25, 1, 6.25]
    assert torch.allclose(run("ipo").losses, t([0.25, 1.0, 6.25]))


@pytest.mark.parametrize("name", sorted(F_PRIME_U))
def test_f_dpo_closed_form(name):
    fp = F_PRIME_U[name]
    expected = [
        nll(BETA * (fp(math.exp(w), ALPHA) - fp(math.exp(l), ALPHA))) for w, l in zip(R_W, R_L)
    ]
    out = run(name)
    assert out.losses.shape == (3,)
    assert torch.allclose(out.losses, t(expected), atol=1e-6), (out.losses, expected)
    assert torch.allclose(out.losses[1], t(math.log(2.0)))  # u_w == u_l -> log 2


def test_hand_numbers():
    # forward KL, pair 0: u_w = e^0.5, u_l = e^-1: logits = 0.5*(e^1 - e^-0.5) = 1.0558756
    assert math.isclose(run("forward_kl").losses[0].item(), nll(1.0558756), rel_tol=1e-5)
    # chi2, pair 2: u_w = e^-1, u_l = e^0.5: logits = 0.5*2*(e^-1 - e^0.5) = -1.2808418
    assert math.isclose(run("chi2").losses[2].item(), nll(-1.2808418), rel_tol=1e-5)


def test_sigmoid_equals_reverse_kl():
    assert torch.allclose(run("sigmoid").losses, run("reverse_kl").losses, atol=1e-6)


def test_alpha_limits():
    assert torch.allclose(run("alpha", alpha=1e-4).losses, run("reverse_kl").losses, atol=1e-4)
    assert torch.allclose(run("alpha", alpha=1 - 1e-4).losses, run("forward_kl").losses, atol=1e-4)


def test_hellinger_is_half_beta_alpha_half():
    assert torch.allclose(run("hellinger").losses, run("alpha", beta=BETA / 2, alpha=0.5).losses)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_log_ratios_finite_float32(name):
    combos = [(90.0, -90.0), (-90.0, 90.0), (90.0, 90.0), (-90.0, -90.0), (-90.0, 0.0), (0.0, 90.0)]
    pc = t([c[0] for c in combos], grad=True)
    pr = t([c[1] for c in combos], grad=True)
    zeros = torch.zeros(len(combos))
    out = compute_loss(name, pc, pr, zeros, zeros, 0.1, 0.5, margin=t([1.0] * len(combos)) if name in VALUE_LOSSES else None)
    assert torch.isfinite(out.losses).all(), out.losses
    out.losses.sum().backward()
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rewards_detached_and_values(name):
    args = [t(x, grad=True) for x in (PC, PR, RC, RR)]
    out = compute_loss(name, *args, BETA, ALPHA, margin=margin_of(name))
    assert out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert torch.allclose(out.chosen_rewards, t([BETA * r for r in R_W]))
    assert torch.allclose(out.rejected_rewards, t([BETA * r for r in R_L]))


def test_low_precision_inputs_upcast():
    out = run("forward_kl", dtype=torch.bfloat16)
    assert out.losses.dtype == torch.float32 and torch.isfinite(out.losses).all()


def test_unknown_loss_message():
    with pytest.raises(ValueError) as e:
        get_loss("nope")
    msg = str(e.value)
    assert "dpo.loss" in msg and "'nope'" in msg and str(sorted(LOSSES)) in msg
    with pytest.raises(ValueError, match="dpo.loss"):
        compute_loss("kl", *(t(PC),) * 4, BETA)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan"), "x", None])
def test_bad_alpha(bad):
    with pytest.raises(ValueError, match="dpo.alpha"):
        validate_alpha(bad)


def test_alpha_validation_in_loss():
    assert validate_alpha(0.5) == 0.5
    with pytest.raises(ValueError, match="dpo.alpha"):
        run("alpha", alpha=1.0)
    run("forward_kl", alpha=1.0)  # alpha is ignored by the other losses


def test_distill_closed_form():
    # (β·(log u_w − log u_l) − margin)²: β 0.5, log-ratio differences [1.5, 0, −1.5], margins [2, 0, −1]
    # -> [(0.75 − 2)², 0, (−0.75 + 1)²] = [1.5625, 0, 0.0625]
    assert torch.allclose(run("distill").losses, t([1.5625, 0.0, 0.0625]))
    with pytest.raises(ValueError, match="margins"):
        compute_loss("distill", t(PC), t(PR), t(RC), t(RR), BETA)


def test_distill_minimiser_is_the_kl_optimum():
    """Fitted over every pair of one prompt's samples, β·log(π/π_ref) recovers the rewards up to a constant:
    the log-ratio of π_β ∝ π_ref·exp(r/β) on those samples (a free log-ratio per sample, plain gradient descent)."""
    r, beta = torch.tensor([1.0, -0.5, 2.0, 0.0]), 0.5
    logratio = torch.zeros(4, requires_grad=True)
    i, j = torch.triu_indices(4, 4, 1)
    opt = torch.optim.SGD([logratio], lr=0.5)
    for _ in range(500):
        loss = compute_loss("distill", logratio[i], logratio[j], torch.zeros(6), torch.zeros(6), beta,
                            margin=r[i] - r[j]).losses.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fitted = beta * logratio.detach()
    assert torch.allclose(fitted - fitted.mean(), r - r.mean(), atol=1e-4)
    assert not torch.allclose(logratio.detach() - logratio.detach().mean(), r - r.mean(), atol=1e-2)  # β matters


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        compute_loss("sigmoid", t(PC), t(PR[:2]), t(RC), t(RR), BETA)


# ---- parity with trl 1.16 -----------------------------------------------------------------------
# (ours name, ours alpha, trl loss_type, trl f_divergence_type, trl f_alpha_divergence_coef)
TRL_CASES = [
    ("sigmoid", 0.5, "sigmoid", "reverse_kl", 0.5),
    ("hinge", 0.5, "hinge", "reverse_kl", 0.5),
    ("ipo", 0.5, "ipo", "reverse_kl", 0.5),  # equal only because each completion is 1 token long
    ("reverse_kl", 0.5, "sigmoid", "reverse_kl", 0.5),
    ("forward_kl", 0.5, "sigmoid", "forward_kl", 0.5),
    ("js", 0.5, "sigmoid", "js_divergence", 0.5),
    ("alpha", 0.3, "sigmoid", "alpha_divergence", 0.7),  # trl coef = 1 - paper alpha
    ("alpha", 0.8, "sigmoid", "alpha_divergence", 0.2),
]


def _trl_loss(pair, loss_type, f_div, coef, beta):
    """Run trl's DPOTrainer._compute_loss on one pair; return (loss, chosen reward, rejected reward)."""
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    pc, pr, rc, rr = pair
    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=False), accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type=f_div, f_alpha_divergence_coef=coef,
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=0.0, use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
        args=SimpleNamespace(),
    )
    logps = torch.tensor([[pc], [pr]])  # (2, 1): batch is [chosen, rejected], one completion token

    def model(**kw):
        z = torch.zeros(2, 1)
        return SimpleNamespace(log_probs=logps, entropy=z, mean_logits=z, is_top1=z.bool())

    inputs = {
        "input_ids": torch.zeros(2, 2, dtype=torch.long), "attention_mask": torch.ones(2, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1], [0, 1]]),
        "ref_chosen_logps": torch.tensor([rc]), "ref_rejected_logps": torch.tensor([rr]),
    }
    loss = dpo_trainer.DPOTrainer._compute_loss(fake_self, model, inputs, False)
    m = fake_self._metrics["eval"]
    return loss.item(), m["rewards/chosen"][-1], m["rewards/rejected"][-1]


@pytest.mark.parametrize("case", TRL_CASES, ids=lambda c: f"{c[0]}-a{c[1]}")
def test_parity_with_trl(case):
    name, alpha, loss_type, f_div, coef = case
    out = run(name, alpha=alpha)
    for i, pair in enumerate(zip(PC, PR, RC, RR)):
        trl_loss, trl_cr, trl_rr = _trl_loss(pair, loss_type, f_div, coef, BETA)
        assert math.isclose(out.losses[i].item(), trl_loss, rel_tol=1e-5, abs_tol=1e-6), (i, trl_loss)
        assert math.isclose(out.chosen_rewards[i].item(), trl_cr, abs_tol=1e-6)
        assert math.isclose(out.rejected_rewards[i].item(), trl_rr, abs_tol=1e-6)
