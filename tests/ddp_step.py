"""One DPO optimizer step's gradients, run under `accelerate launch` by test_distributed.py
(and in one process by the test itself): `python tests/ddp_step.py MODEL_DIR OUT.pt`."""
import sys

import torch

from alignment.base.distributed import Dist, current, shutdown
from alignment.steps.logprobs import collate, model_logps
from alignment.steps.losses import compute_loss
from alignment.assets.models import load_causal_lm
from alignment.steps.train import _one_step, _wrap

# 5 pairs in one global micro-batch, 2 micro-batches per step: 2 ranks split 3/2 (unequal shares);
# the second micro-batch [5] leaves rank 1 with a weight-0 example
PAIRS = [{"prompt": [5 + i, 9, 11], "chosen": [20 + i, 21, 22 + i], "rejected": [30 + 2 * i, 31]} for i in range(6)]
STEPS = [[[0, 1, 2, 3, 4], [5]]]


def step_grads(model_dir: str, dist: Dist) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    torch.manual_seed(0)
    model = load_causal_lm(model_dir, torch.float32, torch.device("cpu"), train=True).eval()  # no dropout
    ref = torch.tensor([-9.0 - 0.1 * i for i in range(6)]), torch.tensor([-7.0 - 0.2 * i for i in range(6)])

    def loss_fn(net, mb):
        b = [PAIRS[i] for i in mb]
        lp = model_logps(net, collate([p["prompt"] for p in b] * 2, [p["chosen"] for p in b] + [p["rejected"] for p in b], 0))
        out = compute_loss("sigmoid", lp[: len(b)], lp[len(b):], ref[0][mb], ref[1][mb], 0.1, 0.5)
        return out.losses.mean(), {"loss": out.losses.mean().item(), "logps/chosen": lp[: len(b)].mean().item()}

    net = _wrap(model, dist)
    if dist.world > 1:  # count DDP's gradient all-reduces (the tiny model is one bucket)
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting(state, bucket):
            mets_extra["allreduces"] += 1
            return allreduce_hook(None, bucket)

        net.register_comm_hook(None, counting)
    mets_extra = {"allreduces": 0}
    mets = _one_step(net, STEPS, 0, loss_fn, False, torch.device("cpu"), dist)
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, {**mets, **mets_extra}


if __name__ == "__main__":
    d = current()
    grads, mets = step_grads(sys.argv[1], d)
    torch.save({"grads": grads, "metrics": {k: v for k, v in mets.items() if k != "allreduces"}, "world": d.world,
                "allreduces": mets["allreduces"]}, f"{sys.argv[2]}.rank{d.rank}")
    shutdown()
