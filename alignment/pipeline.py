"""The pipeline as cached, resumable stages over one run directory.

    run_dir/manifest.json        config hash + library versions
    run_dir/prompts.json         train/eval prompts            (model.policy tokenizer, data)
    run_dir/samples.jsonl        N samples per train prompt    (+ sample)   streamed, resumable
    run_dir/rewards.json         one reward per sample         (+ reward)
    run_dir/pairs.jsonl          preference pairs + stats      (+ pairs)
    run_dir/policies/<name>/     trained policy, train_log     (+ dpo)
    run_dir/eval/<name>/         held-out samples + metrics    (+ eval)
Each artifact has a `<artifact>.meta.json` with the hash of the config it depends on; a run
dir never mixes results from different configs (it raises and says what to do).
"""
from __future__ import annotations

import dataclasses
import platform
from functools import cached_property
from pathlib import Path

import torch

from .config import Config
from .io import read_json, read_jsonl, stable_hash, write_json, write_jsonl


class RunDirMismatch(RuntimeError):
    """An artifact in run_dir was made with a different config."""


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "datasets", "wandb", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class Pipeline:
    """One run directory's stages; each returns its artifact, building it only if missing."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # The manifest records the config that created the run dir; later invocations with other
        # configs (a sweep's dpo overrides, a refused mismatch) are listed, never overwrite it.
        h = stable_hash(cfg.to_dict())
        path = self.dir / "manifest.json"
        if not path.exists():
            write_json(self.dir / "config.json", cfg.to_dict())
            write_json(path, {"config_hash": h, "versions": library_versions(), "other_configs": []})
            return
        manifest = read_json(path)
        manifest.setdefault("other_configs", [])  # manifests written before this field existed
        if h != manifest["config_hash"] and h not in manifest["other_configs"]:
            manifest["other_configs"].append(h)
            write_json(self.dir / f"config.{h}.json", cfg.to_dict())
            write_json(path, manifest)

    # ---- config fingerprints -------------------------------------------------------------
    def _deps(self, *sections: str) -> dict:
        c = self.cfg.to_dict()
        return {s: c[s] for s in ("model", "data", *sections)}

    def _check(self, artifact: Path, deps: dict) -> bool:
        """True if `artifact` exists for this config; raise if it exists for another one."""
        meta = artifact.with_name(artifact.name + ".meta.json")
        if meta.exists():
            old = read_json(meta)
            if old["hash"] != stable_hash(deps):
                changed = sorted(k for k in deps if old["deps"].get(k) != deps[k])
                raise RunDirMismatch(
                    f"{artifact} was made with a different config (changed: {', '.join(changed)}). "
                    f"Use a new run_dir (e.g. run_dir={self.dir}-2) or delete {artifact} and its .meta.json.")
            return artifact.exists()
        write_json(meta, {"hash": stable_hash(deps), "deps": deps})
        return False

    # ---- lazily loaded models --------------------------------------------------------------
    @cached_property
    def tokenizer(self):
        from .models import load_tokenizer

        return load_tokenizer(self.cfg.model.policy)

    @cached_property
    def device(self):
        from .models import pick_device

        return pick_device()

    @cached_property
    def sample_dtype(self):
        from .models import sampling_dtype

        return sampling_dtype(self.cfg.model.dtype, self.device)

    @cached_property
    def reward(self):
        from .reward import load_reward

        return load_reward(self.cfg.reward)

    def load_policy(self, name: str | None = None, dtype=torch.float32, train: bool = False):
        from .models import load_causal_lm

        return load_causal_lm(name or self.cfg.model.policy, dtype, self.device, train=train)

    @cached_property
    def ref_model(self):
        return self.load_policy(self.cfg.model.ref or self.cfg.model.policy)

    @cached_property
    def stop_ids(self) -> list[int]:
        from .models import stop_token_ids

        return stop_token_ids(self.tokenizer, self.ref_model)

    # ---- stages -----------------------------------------------------------------------------
    def prompts(self) -> dict[str, list[dict]]:
        from .data import build_prompts

        path = self.dir / "prompts.json"
        if not self._check(path, self._deps()):
            write_json(path, build_prompts(self.cfg.data, self.tokenizer))
        return read_json(path)

    def samples(self) -> list[dict]:
        from .sampling import completed_samples, sample_to_file

        path = self.dir / "samples.jsonl"
        prompts = self.prompts()["train"]
        self._check(path, self._deps("sample"))  # resumes a partial file with the same config
        done = completed_samples(path, prompts, self.cfg.sample.n_samples)
        if done is not None:  # complete: no model load
            return done
        model = self.load_policy(dtype=self.sample_dtype)
        recs = sample_to_file(path, model, self.tokenizer, prompts, self.cfg.sample.n_samples,
                              self.cfg.sample, self.stop_ids, desc="sampling train prompts")
        del model
        return recs

    def rewards(self) -> list[float]:
        from .reward import score_records

        path = self.dir / "rewards.json"
        recs = self.samples()
        if not self._check(path, self._deps("sample", "reward")):
            write_json(path, score_records(self.reward, recs, self.cfg.reward.score_prompt))
        return read_json(path)

    def pairs(self) -> tuple[list[dict], dict]:
        from .pairs import build_pairs

        path = self.dir / "pairs.jsonl"
        if not self._check(path, self._deps("sample", "reward", "pairs")):
            p = self.cfg.pairs
            pairs, stats = build_pairs(self.samples(), self.rewards(), p.strategy, p.min_margin, p.seed)
            write_json(self.dir / "pairs_stats.json", stats)
            write_jsonl(path, pairs)
        return read_jsonl(path), read_json(self.dir / "pairs_stats.json")

    def ref_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        from .train import reference_logps

        path = self.dir / "ref_logps.pt"
        pairs, _ = self.pairs()
        if not self._check(path, self._deps("sample", "reward", "pairs")):
            pids = {p["id"]: p["ids"] for p in self.prompts()["train"]}
            ch, rj = reference_logps(self.ref_model, pairs, pids, self.tokenizer.pad_token_id)
            tmp = path.with_suffix(".tmp")
            torch.save({"chosen": ch, "rejected": rj}, tmp)
            tmp.replace(path)
        d = torch.load(path, weights_only=True)
        return d["chosen"], d["rejected"]

    # ---- training and evaluation ------------------------------------------------------------
    def train(self, **overrides) -> Path:
        """Train one policy with cfg.dpo updated by `overrides` (loss, beta, lr, alpha, seed...);
        returns its directory. Cached by name and config hash."""
        dpo = dataclasses.replace(self.cfg.dpo, **overrides)
        name = policy_name(dpo)
        out = self.dir / "policies" / name
        done = out / "model" / "config.json"
        deps = {**self._deps("sample", "reward", "pairs"), "dpo": dataclasses.asdict(dpo)}
        if self._check(out / "model", deps) and done.exists():
            return out
        pairs, _ = self.pairs()
        ref = self.ref_logps()
        pids = {p["id"]: p["ids"] for p in self.prompts()["train"]}
        model = self.load_policy(train=True)
        tracker = self._tracker(f"train-{name}", group="train")
        try:
            if dpo.backend == "trl":
                from .trl_backend import train_dpo_trl

                train_dpo_trl(model, self.ref_model, self.tokenizer, pairs, pids, dpo, out, tracker)
            else:
                from .train import train_dpo

                train_dpo(model, pairs, pids, ref, dpo, self.tokenizer.pad_token_id, out, tracker,
                          save_every=self.cfg.dpo.save_every)
        finally:
            tracker.finish()
        model.save_pretrained(out / "model.tmp")
        self.tokenizer.save_pretrained(out / "model.tmp")
        if (out / "model").exists():
            import shutil

            shutil.rmtree(out / "model")
        (out / "model.tmp").rename(out / "model")
        return out

    def evaluate(self, name: str, policy_dir: Path | None = None) -> dict:
        """Held-out metrics of the start policy (`policy_dir=None`, name e.g. "sft") or a trained one."""
        from .evaluate import evaluate_model

        out = self.dir / "eval" / name
        if self._check(out / "metrics.json", {**self._deps("sample", "reward", "eval"),
                                              "policy": str(policy_dir)}):
            return read_json(out / "metrics.json")
        prompts = self.prompts()["eval"]
        if policy_dir is None:
            model, ref = self.ref_model, None
        else:
            model, ref = self.load_policy(str(Path(policy_dir) / "model")), self.ref_model
        return evaluate_model(name, model, ref, self.tokenizer, self.reward, prompts, self.cfg,
                              self.stop_ids, out, sample_dtype=self.sample_dtype)

    def _tracker(self, name: str, group: str | None = None):
        from .tracking import make_tracker

        return make_tracker(self.cfg, f"{self.dir.name}-{name}", str(self.dir), group=group)


def policy_name(dpo) -> str:
    """e.g. sigmoid-b0.1-lr5e-06-s0, alpha0.3-b0.1-lr5e-06-s0, hinge-trl-b0.1-lr1e-05-s1."""
    loss = f"alpha{dpo.alpha:g}" if dpo.loss == "alpha" else dpo.loss
    backend = "-trl" if dpo.backend == "trl" else ""
    return f"{loss}{backend}-b{dpo.beta:g}-lr{dpo.lr:g}-s{dpo.seed}"
