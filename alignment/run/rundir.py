"""One run directory: where every artifact lives, what it is called, and which config made it.

    run_dir/manifest.json        config hash + library versions (+ other configs that used the dir)
    run_dir/config.json          the config that created it
    run_dir/prompts.json         train/eval prompts
    run_dir/samples.jsonl        N samples per train prompt (streamed, resumable)
    run_dir/rewards.json         one reward per sample
    run_dir/pairs.jsonl          preference pairs             run_dir/pairs_stats.json  their statistics
    run_dir/ref_logps.pt         the reference's log-probs of every pair
    run_dir/draws/seed<k>/       training seed k's own prompts.json (train only), samples, rewards,
                                 pairs and ref_logps (`data.per_seed`; the files above then hold none)
    run_dir/policies/<name>/     a trained policy (model/, train_log.jsonl)   `policy_name`
    run_dir/eval/<name>/         one evaluation (samples, scored, metrics)    `eval_name`
    run_dir/<experiment>.json    an experiment's result (level1, lr_lesson, sweep)
    run_dir/timings.json         each command's wall time by stage and machine (a log, not a cached artifact)
    run_dir/plots/<name>.png     run_dir/wandb/   (offline wandb runs)
Nobody else joins run-dir paths.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import platform
from pathlib import Path
from typing import NamedTuple

from ..config import Config
from ..base.io import CacheMismatch, meta_path, read_json, read_jsonl, stable_hash, write_json

START = "sft"  # the start policy's evaluation name
HUMAN = "human"  # the real reviews' own continuations of the eval prompts
FILES = {"manifest": "manifest.json", "config": "config.json", "prompts": "prompts.json",
         "samples": "samples.jsonl", "rewards": "rewards.json", "pairs": "pairs.jsonl",
         "pairs_stats": "pairs_stats.json", "ref_logps": "ref_logps.pt", "plots": "plots", "wandb": "wandb",
         "policies": "policies", "evals": "eval"}


class RunDirMismatch(CacheMismatch):
    """An artifact in run_dir was made with a different config."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where everything of one run dir lives."""
    root: Path

    def __getattr__(self, name: str) -> Path:  # prompts, samples, rewards, pairs, ... (see FILES)
        if name in FILES:
            return self.root / FILES[name]
        raise AttributeError(name)

    def policy(self, name: str) -> Path:
        return self.policies / name

    def eval(self, name: str) -> Path:
        return self.evals / name

    def draw(self, seed: int | None) -> "RunPaths":
        """Where training seed `seed`'s own data lives (`data.per_seed`); None: the run dir's shared data."""
        return self if seed is None else RunPaths(self.root / "draws" / f"seed{seed}")

    def plot(self, name: str) -> Path:
        return self.plots / f"{name}.png"

    def result(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def other_config(self, config_hash: str) -> Path:
        return self.root / f"config.{config_hash}.json"


COST_FILE = "cost.json"  # in a policy dir: {train_seconds, tokens_drawn} of the build that trained it


class Policy(NamedTuple):
    name: str          # e.g. sigmoid-b0.1-lr5e-05-s0
    dir: Path          # run_dir/policies/<name>; the weights are in dir/"model"
    log: list[dict]    # train_log.jsonl records
    seed: int          # its dpo.seed (its evaluations draw with it by default)
    hash: str          # its cache hash: what its evaluations record they evaluated
    dpo: dict          # the dpo settings that trained it (the hashed fields of its record)


def read_policy(policy_dir: Path) -> Policy:
    """A finished policy dir as a `Policy` (name, dir, training log; seed, hash and dpo settings from its record)."""
    meta = read_json(meta_path(policy_dir))
    dpo = meta["deps"]["dpo"]
    log = read_jsonl(policy_dir / "train_log.jsonl")
    return Policy(policy_dir.name, policy_dir, log, dpo["seed"], meta["hash"], dpo)


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "datasets", "wandb", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_manifest(paths: RunPaths, cfg: Config) -> None:
    """Record the config that created the run dir; later invocations with other configs (a sweep's
    dpo overrides, a refused mismatch) are listed, never overwrite it."""
    h = stable_hash(cfg.to_dict())
    if not paths.manifest.exists():
        write_json(paths.config, cfg.to_dict())
        write_json(paths.manifest, {"config_hash": h, "versions": library_versions(), "other_configs": []})
        return
    manifest = read_json(paths.manifest)
    manifest.setdefault("other_configs", [])  # manifests written before this field existed
    if h != manifest["config_hash"] and h not in manifest["other_configs"]:
        manifest["other_configs"].append(h)
        write_json(paths.other_config(h), cfg.to_dict())
        write_json(paths.manifest, manifest)


def policy_name(dpo) -> str:
    """e.g. sigmoid-b0.1-lr5e-06-s0, alpha0.3-b0.1-lr5e-06-s0, hinge-trl-b0.1-lr1e-05-s1, sigmoid-lora8-b0.1-lr1e-4-s0,
    online4-sigmoid-lora16-b0.1-lr0.001-s0 (dpo.method=online, 4 rounds), rloo-lora16-b0.1-lr0.001-s0,
    rloo-prefix-lora16-b0.3-lr0.001-s0 (dpo.credit=prefix; rloo-prefix0.5-... with dpo.credit_lambda=0.5;
    rloo-prefix0.5-xkl-... with dpo.kl=exact; rloo-lq-... with dpo.reward_shape=log_quantile); -e3 before the seed when dpo.epochs is 3 (nothing for 1)."""
    loss = f"alpha{dpo.alpha:g}" if dpo.loss == "alpha" else dpo.loss
    credit = "" if dpo.credit == "sequence" else f"-{dpo.credit}" + ("" if dpo.credit_lambda == 1 else f"{dpo.credit_lambda:g}")
    kl = ("-xkl" if dpo.kl == "exact" else "") + ("-lq" if dpo.reward_shape == "log_quantile" else "")
    method = {"online": f"online{dpo.rounds}-{loss}", "rloo": f"rloo{credit}{kl}"}.get(dpo.method, loss)  # rloo uses no loss
    backend = "-trl" if dpo.backend == "trl" else ""
    lora = f"-lora{dpo.lora_r}" if dpo.lora_r else ""
    epochs = "" if dpo.epochs == 1 else f"-e{dpo.epochs}"
    return f"{method}{backend}{lora}-b{dpo.beta:g}-lr{dpo.lr:g}{epochs}-s{dpo.seed}"


def eval_name(policy: str | None, seed: int, n_samples: int | None = None) -> str:
    """The eval dir of a trained policy (its name) or of the start policy under evaluation seed
    `seed` ("sft" for 0, "sft-e<seed>" for others); "-n<k>" when `n_samples` overrides eval.n_samples."""
    name = policy or (START if seed == 0 else f"{START}-e{seed}")
    return name + ("" if n_samples is None else f"-n{n_samples}")
