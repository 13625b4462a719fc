"""The pipeline's steps, each usable alone on plain records and tensors: prompts (`data`), sampling (`sampling`;
the backends' seam `samplers`, the fast one `decode`, `hf_generate`), scorers (`reward`), pairs (`pairs`, `ownpairs`),
losses (`losses`, `logprobs`), training (the loop `train`; `dpo`, `trl_backend`, `online`, `sft`), evaluation
(`evaluate`, `diagnose`). Imports `base`, `assets`, `study`, `config` and `presets`."""
