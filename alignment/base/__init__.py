"""Plumbing every layer may use: atomic files and caches (`io`), the heavy optional imports (`optional`),
the hardware (`machine`), wall time (`timing`), ranks and batch splits (`distributed`), wandb or a no-op
(`tracking`), training checkpoints (`checkpoint`). Imports nothing else of alignment but `presets`."""
