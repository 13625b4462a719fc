"""alignment: preference alignment (DPO and its variants) of small LMs on movie reviews, with an honest
measure of what it costs in diversity and drift.

The package's folders are its design (`ARCHITECTURE.md`): `steps/` (what a notebook cell calls: data,
sampling, reward, pairs, losses, training, evaluation), `study/` (every number and sentence: metrics,
statistics, frontiers, the alarm, tables, plots), `run/` (the pipeline, its stage cache and run dir, the
experiments), `assets/` (the offline models, reviews, scorer heads and judge), `base/` (files, ranks,
timing, tracking), with the settings (`config.py`, `presets.py`, `sources.py`) and the command line
(`cli.py`, `argv.py`) beside them.

The names a notebook or a scratch cell uses, importable from here (each loads its module on first use,
so `import alignment` stays light):

- settings and the pipeline: `load_config`, `Pipeline` (`pipe.prepare()`, `pipe.data.samples()`,
  `pipe.train(loss=..., beta=...)`, `pipe.evaluate(policy)`), `level1`, `sweep`, `level3`;
- the steps on plain records and tensors: `sample_records`, `score_records`, `build_pairs`, `LOSSES`,
  `compute_loss`, `train_dpo`, `evaluate_model`, `load_adapter` (a saved LoRA policy merged into its base);
- the study: `compare_to_start` (paired bootstrap gains), `bon_curve`, `optimum_curve`, `plots`; the
  modules `experiments` and `presets`.

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

_EXPORTS = {  # name -> the module that defines it (a module itself where the name is the module's)
    "load_config": "config", "Pipeline": "run.pipeline", "level1": "run.experiments", "sweep": "run.experiments",
    "level3": "run.experiments", "sample_records": "steps.sampling", "score_records": "steps.reward",
    "build_pairs": "steps.pairs", "LOSSES": "steps.losses", "compute_loss": "steps.losses",
    "train_dpo": "steps.dpo", "evaluate_model": "steps.evaluate", "load_adapter": "assets.models",
    "compare_to_start": "study.gains", "bon_curve": "study.frontier", "optimum_curve": "study.optimum",
    "plots": "study.plots", "experiments": "run.experiments", "presets": "presets",
}
__all__ = sorted(_EXPORTS)


def __dir__() -> list[str]:
    """The public names too (loaded on first use), for tab completion and `dir(alignment)`."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    """The public names, each imported from its module when first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment' has no attribute {name!r}; public names: {', '.join(__all__)}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
