"""Named sizes. `smoke`: whole pipeline in minutes on 2 CPU cores (CI, notebook check).
`default`: the CPU default behind `make run` (5 seeds). `sweep`: CPU-sized Level 2 frontiers (LoRA,
bf16 where native). `level3`: Level 3's methods at the sweep's size. `full`: a GPU-sized run. `hub`: the assignment notebook's hub models and IMDB data
(GPT-2; needs the Hugging Face hub and a GPU). A preset's run dir is runs/<preset> unless run_dir is set."""

PRESETS: dict[str, dict] = {
    "smoke": {
        "data.n_train_prompts": 8, "data.n_eval_prompts": 8,
        "sample.n_samples": 4, "sample.max_new_tokens": 16,
        "eval.n_samples": 2, "eval.max_new_tokens": 16, "eval.n_boot": 200, "eval.n_seeds": 1,
        "dpo.epochs": 1, "dpo.batch_size": 4, "eval.judge": "offline",  # the linear-head judge: no ~5-min judge build
        "sft.n_reviews": 16, "sft.n_eval_reviews": 8, "sft.max_tokens": 32, "sft.windows": 1,
        "sft.n_sample_prompts": 1, "sft.sample_new_tokens": 16,
    },
    "default": {},
    "sweep": {  # Level 2 frontiers on 2 CPU cores: 126 training pairs per seed, 16 steps per policy, LoRA
        # adapters (MBs per policy) under bf16 autocast where native; lr 1e-3 puts
        # β 3 .. 0.1 at KL ~0.6 .. ~3 nats (measured; lr 5e-4 gave only 0.3 .. 0.8, lr 2e-3 overshot to 3 .. 30)
        "data.n_train_prompts": 144, "data.n_eval_prompts": 32,
        "dpo.lora_r": 16, "dpo.lora_alpha": 32.0, "dpo.lr": 1e-3, "dpo.precision": "auto",
    },
    "full": {
        "data.n_train_prompts": 1400, "data.n_eval_prompts": 256, "data.min_chars": 60,
        "sample.n_samples": 8, "sample.max_new_tokens": 48, "sample.batch_size": 0, "reward.batch_size": 0,
        "pairs.strategy": "all_pairs",
        "eval.n_samples": 8, "eval.max_new_tokens": 48,
        "dpo.epochs": 1, "dpo.batch_size": 32, "dpo.lr": 5e-6,
    },
    "hub": {
        "model.policy": "lvwerra/gpt2-imdb", "reward.model": "lvwerra/distilbert-imdb",
        "eval.judge": "siebert/sentiment-roberta-large-english",  # the DPO paper's ground-truth reward
        "data.source": "imdb", "data.min_chars": 200, "data.max_chars": 512,
        "data.n_train_prompts": 1000, "data.n_eval_prompts": 256,
        "sample.n_samples": 4, "sample.max_new_tokens": 48, "sample.batch_size": 0, "reward.batch_size": 0,
        "eval.n_samples": 4, "eval.max_new_tokens": 48,
        "dpo.epochs": 2, "dpo.batch_size": 32, "dpo.lr": 5e-6,
    },
}

# The Level 2 sweep's default axes (`python -m alignment sweep`, `experiments.sweep`, the notebook):
# the f-DPO paper's divergences (α ∈ {0.3, 0.5, 0.7}; squared Hellinger at β is the α = 1/2 loss at β/2, so not
# repeated), each traced over log-spaced β × 3 seeds: β 3 gives every curve trained points at low KL, where
# best-of-N and the other curves can be compared in nearly every bootstrap draw. chi2 (outside f-DPO: a
# heuristic), jeffrey and ipo stay available as Level-3 extras (`--losses`).
SWEEP_LOSSES = ("reverse_kl", "forward_kl", "js", "alpha")
SWEEP_BETAS, SWEEP_SEEDS, SWEEP_ALPHAS = (0.1, 0.3, 1.0, 3.0), (0, 1, 2), (0.3, 0.5, 0.7)
# Best-of-N's N values, from max(N) start samples per evaluation prompt: N = 64 reaches KL ≈ 3.2 nats, about
# where the divergence curves end at β = 0.1 at the sweep preset's size, so they overlap best-of-N at matched KL.
SWEEP_BEST_OF_N = (1, 2, 4, 8, 16, 32, 64)
PRESETS["level3"] = dict(PRESETS["sweep"])  # Level 3 at the sweep's size and training settings, in runs/level3

# Level 3's methods (`python -m alignment level3`, `experiments.level3`): each one config choice on top of the
# run's settings (`dpo.*`), traced over β like the divergences: offline DPO (the baseline), reward distillation
# (the reward's value, not only its sign), iterative online DPO (fresh pairs from the policy being trained),
# RLOO (on-policy RL with a KL penalty, the method DPO is meant to replace), RLOO whose tokens each earn
# the reward gained from them on (the reward model scoring every prefix), and the same trained three passes
# with the exact per-position KL (`dpo.kl=exact`: with the drawn token's log-ratio, three passes drift off topic),
# and variational best-of-N (`dpo.reward_shape=log_quantile`: per-token RLOO on the log-quantile of the reward under
# the start policy, Amini et al. 2024; with each prompt's own F, β = 1/(N-1) would aim at best-of-N, β 0.3 at about
# best-of-4; here F is pooled over prompts and the credit is λ = 0.5's, so that is a rough guide, not the optimum).
LEVEL3_METHODS: dict[str, dict] = {
    "dpo": {"loss": "sigmoid"},
    "distill": {"loss": "distill"},
    "online-dpo": {"method": "online", "loss": "sigmoid"},
    "rloo": {"method": "rloo", "credit": "sequence"},
    "rloo-prefix": {"method": "rloo", "credit": "prefix", "credit_lambda": 0.5},
    "rloo-prefix-long": {"method": "rloo", "credit": "prefix", "credit_lambda": 0.5, "kl": "exact", "epochs": 3},
    "vbon": {"method": "rloo", "credit": "prefix", "credit_lambda": 0.5, "reward_shape": "log_quantile"},
}
LEVEL3_BETAS = (0.1, 0.3, 0.5, 1.0)
# A method trained only at β at or above its minimum: below it, it spends more KL than best-of-N's largest (where
# no share of its gain exists; measured at β 0.1: online DPO 4.1 nats, per-token RLOO 28, vBoN 5.2), for minutes of training
# per policy on 2 CPU cores (~20 for the three-pass one).
LEVEL3_MIN_BETA = {"online-dpo": 0.3, "rloo-prefix": 0.3, "rloo-prefix-long": 0.3, "vbon": 0.3}


def uses_start_draw(over: dict) -> bool:
    """Whether a method (its `LEVEL3_METHODS` overrides, or a result's run row) trains on its seed's start-policy
    draw: offline DPO (its pairs) and RLOO on the log-quantile of the reward (the draw's rewards are its F)."""
    return over.get("method", "offline") == "offline" or over.get("reward_shape", "raw") != "raw"


def method_betas(methods: tuple[str, ...], betas: tuple[float, ...]) -> dict[str, tuple[float, ...]]:
    """Each Level 3 method's β values: the run's `betas`, less those below the method's `LEVEL3_MIN_BETA`."""
    return {m: tuple(b for b in betas if b >= LEVEL3_MIN_BETA.get(m, float("-inf"))) for m in methods}
# Level 3's best-of-N reaches N = 128 (KL ≈ 3.9 nats): per-token credit at β = 0.3 spends about 3.3 nats,
# past best-of-64's 3.2, and a point beyond best-of-N's largest KL gets no share of its gain.
LEVEL3_BEST_OF_N = SWEEP_BEST_OF_N + (128,)
SWEEP_AXES = {"losses": SWEEP_LOSSES, "betas": SWEEP_BETAS, "seeds": SWEEP_SEEDS, "alphas": SWEEP_ALPHAS,
              "best_of_n": SWEEP_BEST_OF_N}


def axes_flags(grid: dict, changed_only: bool = False) -> str:
    """The sweep's axes as command-line flags: `--betas 0.1,1 --best-of-n 1,2,4` (only those that
    differ from `SWEEP_AXES` when `changed_only`)."""
    return " ".join(f"--{k.replace('_', '-')} " + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vs)
                    for k, vs in grid.items() if not (changed_only and tuple(vs) == tuple(SWEEP_AXES.get(k, ()))))

# The sweep's training settings (LoRA adapters, their lr, bf16 where native): what the `sweep` preset
# adds to the default. A sweep at another size keeps them, so it saves adapters of MBs instead of one
# full model per (divergence, β, seed) (72 of them for the axes above).
SWEEP_LORA = {k: v for k, v in PRESETS["sweep"].items() if k.startswith("dpo.")}


def sweep_settings(size: str, stage: str = "sweep") -> tuple[str, dict]:
    """(preset, overrides) of the Level 2 sweep (or Level 3, `stage="level3"`) that goes with a Level 1
    size: `default` -> the `sweep` (`level3`) preset (what `make sweep` / `make level3` runs); any other
    size -> that preset with `SWEEP_LORA`."""
    if size in ("default", stage):
        return stage, {}
    return size, dict(SWEEP_LORA)
