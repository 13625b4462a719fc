"""alignment: preference alignment (DPO and its variants) of small LMs on movie reviews, with an honest
measure of what it costs in diversity and drift.

The names a notebook or a scratch cell uses, importable from here (each loads its module on first use,
so `import alignment` stays light):

- settings and the pipeline: `load_config`, `Pipeline` (`pipe.prepare()`, `pipe.data.samples()`,
  `pipe.train(loss=..., beta=...)`, `pipe.evaluate(policy)`), `level1`, `sweep`, `level3`;
- the steps on plain records and tensors: `sample_records`, `score_records`, `build_pairs`, `LOSSES`,
  `compute_loss`, `train_dpo`, `evaluate_model`;
- the study: `compare_to_start` (paired bootstrap gains), `bon_curve`, `optimum_curve`, `plots`.

A loss on hand-made per-sequence log-probs (chosen and rejected, policy and reference), as in a cell:

>>> import torch
>>> from alignment import compute_loss
>>> out = compute_loss("sigmoid", torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
...                    torch.tensor([-2.0]), beta=0.5)
>>> round(out.losses.item(), 4), out.chosen_rewards.item(), out.rejected_rewards.item()
(0.3133, 0.5, -0.5)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {  # name -> the module that defines it
    "load_config": "config", "Pipeline": "pipeline", "level1": "experiments", "sweep": "experiments",
    "level3": "experiments", "sample_records": "sampling", "score_records": "reward", "build_pairs": "pairs",
    "LOSSES": "losses", "compute_loss": "losses", "train_dpo": "train", "evaluate_model": "evaluate",
    "compare_to_start": "stats", "bon_curve": "frontier", "optimum_curve": "frontier", "plots": None,
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The public names, each imported from its module when first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment' has no attribute {name!r}; public names: {', '.join(__all__)}")
    module = _EXPORTS[name]
    if module is None:  # a module itself (plots)
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{module}", __name__), name)
