"""The pipeline as cached, resumable stages over one run directory (`RunPaths` names every file).

    run_dir/manifest.json        config hash + library versions
    run_dir/prompts.json         train/eval prompts            (model.policy tokenizer, data)
    run_dir/samples.jsonl        N samples per train prompt    (+ sample)   streamed, resumable
    run_dir/rewards.json         one reward per sample         (+ reward)
    run_dir/pairs.jsonl          preference pairs + stats      (+ pairs)
    run_dir/policies/<name>/     trained policy, train_log     (+ dpo)
    run_dir/eval/<name>/         held-out samples + metrics    (+ eval)
Every artifact goes through `io.cached`: built under a temp name keyed by its config hash
(resumable there), renamed into place, then given a `<artifact>.meta.json`. A run dir never
mixes results from different configs (it raises and says what to do). The SFT stage caches its
model in the asset cache instead (`model.policy=offline-sft` loads it from there).
"""
from __future__ import annotations

import dataclasses
import platform
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import torch

from .config import OFFLINE, Config, ConfigError, check_section, section_deps
from .distributed import cached_on_ranks, current
from .io import CacheMismatch, meta_path, part_dir, read_json, read_jsonl, stable_hash, write_json, write_jsonl


class RunDirMismatch(CacheMismatch):
    """An artifact in run_dir was made with a different config."""


class Policy(NamedTuple):
    name: str          # e.g. sigmoid-b0.1-lr5e-05-s0
    dir: Path          # run_dir/policies/<name>; the weights are in dir/"model"
    log: list[dict]    # train_log.jsonl records


class Evaluation(NamedTuple):
    metrics: dict      # eval/* metrics of one model on its own held-out samples
    scored: list[dict] # those samples with their rewards, in prompt order


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where everything of one run dir lives; nobody else joins run-dir paths."""
    root: Path

    def __getattr__(self, name: str) -> Path:  # prompts, samples, rewards, pairs, ... (see FILES)
        if name in FILES:
            return self.root / FILES[name]
        raise AttributeError(name)

    def policy(self, name: str) -> Path:
        return self.policies / name

    def eval(self, name: str) -> Path:
        return self.evals / name

    def plot(self, name: str) -> Path:
        return self.plots / f"{name}.png"

    def result(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def other_config(self, config_hash: str) -> Path:
        return self.root / f"config.{config_hash}.json"


FILES = {"manifest": "manifest.json", "config": "config.json", "prompts": "prompts.json",
         "samples": "samples.jsonl", "rewards": "rewards.json", "pairs": "pairs.jsonl",
         "pairs_stats": "pairs_stats.json", "ref_logps": "ref_logps.pt", "plots": "plots", "wandb": "wandb",
         "policies": "policies", "evals": "eval"}
START = "sft"  # the start policy's evaluation name (the seed's "SFT baseline")
HUMAN = "human"  # the real reviews' own continuations of the eval prompts


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
        self.paths = RunPaths(Path(cfg.run_dir))
        self.dir = self.paths.root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dist = current()  # this process's rank in an `accelerate launch` (one process: rank 0 of 1)
        if self.dist.main:
            self._write_manifest(cfg)

    def _write_manifest(self, cfg: Config) -> None:
        # The manifest records the config that created the run dir; later invocations with other
        # configs (a sweep's dpo overrides, a refused mismatch) are listed, never overwrite it.
        h = stable_hash(cfg.to_dict())
        if not self.paths.manifest.exists():
            write_json(self.paths.config, cfg.to_dict())
            write_json(self.paths.manifest, {"config_hash": h, "versions": library_versions(), "other_configs": []})
            return
        manifest = read_json(self.paths.manifest)
        manifest.setdefault("other_configs", [])  # manifests written before this field existed
        if h != manifest["config_hash"] and h not in manifest["other_configs"]:
            manifest["other_configs"].append(h)
            write_json(self.paths.other_config(h), cfg.to_dict())
            write_json(self.paths.manifest, manifest)

    def model_source(self, name: str) -> str:
        """A model name as `from_pretrained` takes it: `offline-sft` is this config's SFT model
        (`alignment.sft`), trained on first use and cached in the asset cache; others pass through."""
        if name != "offline-sft":
            return name
        from .sft import sft_out_dir

        self.sft()
        return str(sft_out_dir(self.cfg))

    @property
    def _model_identity(self) -> dict:
        """Which weights a model *name* stood for when it is not fixed by the name: the SFT model
        behind `offline-sft` depends on the sft config, and results made from another one must not be reused."""
        names = {self.cfg.model.policy, self.cfg.model.ref}
        if "offline-sft" not in names:
            return {}
        return {"offline_sft": read_json(meta_path(self.model_source("offline-sft")))["hash"]}

    def _scorer_identity(self, sections: tuple[str, ...]) -> dict:
        """Which trained head an `offline` scorer name stood for (its cache hash: corpus roles,
        encoder, embedding dtype), and the corpus partition behind the offline prompts, so a run dir
        never mixes results of two different heads or pools."""
        from .reward import CORPUS_VERSION, offline_head_hash

        c, out = self.cfg, {}
        if c.data.source == OFFLINE:
            out["corpus"] = CORPUS_VERSION
        heads = {"reward": c.reward.model} if "reward" in sections else {}  # head kind -> scorer name
        if "eval" in sections:
            heads.update(judge=c.eval.judge, topic=c.eval.topic_judge)
        for kind, name in heads.items():
            if name == OFFLINE:
                out[f"{kind}_head"] = offline_head_hash(kind)
        return out

    def _cached(self, artifact: Path, sections: tuple[str, ...], build, collective: bool = False, **extra) -> bool:
        """Build `artifact` once per config. Under several processes (`alignment.distributed`) a
        `collective` build runs on every rank (splits its work, writes on rank 0 only, may call
        stages); any other build runs on rank 0 alone and must not call a stage."""
        deps = {**section_deps(self.cfg, "model", "data", *sections), **self._model_identity,
                **self._scorer_identity(sections), **extra}
        try:
            return cached_on_ranks(artifact, deps, build, self.dist, collective,
                                   hint=f"Use a new run_dir (e.g. run_dir={self.dir}-2) "
                                        f"or delete {artifact} and its .meta.json.")
        except CacheMismatch as e:  # the run-dir flavour of the error, for the CLI and tests
            raise RunDirMismatch(str(e)) from None

    # ---- lazily loaded models --------------------------------------------------------------
    @cached_property
    def tokenizer(self):
        from .models import load_tokenizer

        return load_tokenizer(self.model_source(self.cfg.model.policy))

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

    @cached_property
    def scorers(self):
        """Reward + the evaluation-only judges (`eval.judge`, `eval.topic_judge`). Load this before
        training (as `experiments.level1` does) so a judge that cannot load fails first."""
        from .evaluate import Scorers
        from .reward import load_judge, load_topic_judge

        e, r = self.cfg.eval, self.cfg.reward
        return Scorers(self.reward, load_judge(e.judge, r), load_topic_judge(e.topic_judge, r), r.score_prompt)

    def _sharded(self, scorer):
        """`scorer` with its batches split across ranks (itself in one process)."""
        from .distributed import ShardedScorer

        return scorer if self.dist.world == 1 or scorer is None else ShardedScorer(scorer, self.dist)

    def _sharded_scorers(self):
        s = self.scorers
        return dataclasses.replace(s, reward=self._sharded(s.reward), judge=self._sharded(s.judge),
                                   topic=self._sharded(s.topic))

    def load_policy(self, name: str | None = None, dtype=torch.float32, train: bool = False):
        from .models import load_causal_lm

        return load_causal_lm(self.model_source(name or self.cfg.model.policy), dtype, self.device, train=train)

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

        self._cached(self.paths.prompts, (), lambda part: write_json(part, build_prompts(self.cfg.data, self.tokenizer)))
        return read_json(self.paths.prompts)

    def samples(self) -> list[dict]:
        """N samples per train prompt; streamed to the part file, so a killed run resumes there."""
        from .sampling import in_prompt_order, sample_to_file

        prompts = self.prompts()["train"]

        def build(part):
            model = self.load_policy(dtype=self.sample_dtype)
            sample_to_file(part, model, self.tokenizer, prompts, self.cfg.sample.n_samples, self.cfg.sample,
                           self.stop_ids, desc="sampling train prompts", dist=self.dist)

        self._cached(self.paths.samples, ("sample",), build, collective=True)
        return in_prompt_order(read_jsonl(self.paths.samples), prompts)

    def rewards(self) -> list[float]:
        from .reward import score_records

        recs = self.samples()

        def build(part):
            scores = score_records(self._sharded(self.reward), recs, self.cfg.reward.score_prompt)
            if self.dist.main:
                write_json(part, scores)

        self._cached(self.paths.rewards, ("sample", "reward"), build, collective=True)
        return read_json(self.paths.rewards)

    def pairs(self) -> tuple[list[dict], dict]:
        from .pairs import build_pairs

        def build(part):
            p = self.cfg.pairs
            pairs, stats = build_pairs(self.samples(), self.rewards(), p.strategy, p.min_margin, p.seed)
            if self.dist.main:
                write_json(self.paths.pairs_stats, stats)
                write_jsonl(part, pairs)

        self._cached(self.paths.pairs, ("sample", "reward", "pairs"), build, collective=True)
        return read_jsonl(self.paths.pairs), read_json(self.paths.pairs_stats)

    def train_prompt_ids(self) -> dict[str, list[int]]:
        return {p["id"]: p["ids"] for p in self.prompts()["train"]}

    def ref_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        from .io import atomic_open
        from .train import reference_logps

        pairs, _ = self.pairs()

        def build(part):
            ch, rj = reference_logps(self.ref_model, pairs, self.train_prompt_ids(), self.tokenizer.pad_token_id,
                                     dist=self.dist)
            if self.dist.main:
                with atomic_open(part, "wb") as f:
                    torch.save({"chosen": ch, "rejected": rj}, f)

        self._cached(self.paths.ref_logps, ("sample", "reward", "pairs"), build, collective=True)
        d = torch.load(self.paths.ref_logps, weights_only=True)
        return d["chosen"], d["rejected"]

    def sft(self) -> dict:
        """The SFT stage: the start policy tuned on train-split reviews (see `alignment.sft`)."""
        from .sft import run_sft

        # under a launch, whichever rank takes the asset cache's lock trains it, and keeps its wandb run
        return run_sft(self.cfg, self._make_tracker)

    # ---- training and evaluation ------------------------------------------------------------
    def train(self, **overrides) -> Policy:
        """Train one policy with cfg.dpo updated by `overrides` (loss, beta, lr, alpha, seed...).
        Cached by name and config hash; resumes from its last checkpoint after an interrupt."""
        dpo = dataclasses.replace(self.cfg.dpo, **overrides)
        check_section("dpo", dpo)  # a sweep's settings get the same checks as the config's
        if dpo.lora_r and self.cfg.model.ref not in ("", self.cfg.model.policy):
            raise ConfigError(f"dpo.lora_r={dpo.lora_r} trains adapters on the reference's base, so it needs "
                              f"model.ref empty or equal to model.policy (got model.ref={self.cfg.model.ref!r})")
        if dpo.backend == "trl" and self.dist.world > 1:
            raise ConfigError(f"dpo.backend=trl under {self.dist.world} processes is not supported (its trainer "
                              "would write from every rank); use dpo.backend=native, which trains with DDP")
        name = policy_name(dpo)
        out = self.paths.policy(name)

        def build(part):
            self._train_into(part_dir(part), name, dpo)

        deps = {"dpo": section_deps(dataclasses.replace(self.cfg, dpo=dpo), "dpo")["dpo"]}
        self._cached(out, ("sample", "reward", "pairs"), build, collective=True, **deps)
        return Policy(name, out, read_jsonl(out / "train_log.jsonl"))

    def _train_into(self, part: Path, name: str, dpo) -> None:
        from .train import done_training

        pairs, _ = self.pairs()
        ref = self.ref_logps()
        tracker = self.tracker(f"train-{name}", group="train")
        if dpo.lora_r:  # adapters on the reference itself: its frozen base *is* the reference, no copy
            from .models import add_lora

            torch.manual_seed(dpo.seed)  # the adapters' random init, whatever the process did before
            model = add_lora(self.ref_model, dpo.lora_r, dpo.lora_alpha)
        else:
            model = self.load_policy(train=True)
        try:
            if dpo.backend == "trl":
                from .trl_backend import train_dpo_trl

                train_dpo_trl(model, self.ref_model, self.tokenizer, pairs, self.train_prompt_ids(), dpo, part, tracker)
            else:
                from .train import train_dpo

                train_dpo(model, pairs, self.train_prompt_ids(), ref, dpo, self.tokenizer.pad_token_id, part, tracker,
                          dist=self.dist)
            if self.dist.main:
                model.save_pretrained(part / "model")  # the adapter only, for LoRA
                self.tokenizer.save_pretrained(part / "model")
                done_training(part)
        finally:
            tracker.finish()
            if dpo.lora_r:  # hand the reference back without its adapters, in eval mode
                self.ref_model = model.unload()
                self.ref_model.requires_grad_(False)
                self.ref_model.eval()

    def load_trained(self, policy: Policy):
        """A trained policy for evaluation: its weights, or the base + its LoRA adapter, merged."""
        from .models import is_adapter, load_adapter

        path = policy.dir / "model"
        return load_adapter(self.load_policy(), path) if is_adapter(path) else self.load_policy(str(path))

    def evaluate(self, policy: Policy | None = None, seed: int | None = None,
                 n_samples: int | None = None) -> Evaluation:
        """Held-out metrics of the start policy (`policy=None`, named "sft") or a trained one,
        each on its own fresh samples. `seed` picks the evaluation draws (sample.seed + 10_000 +
        seed): by default a trained policy's own training seed (dpo.seed), and `dpo.seed` for the
        start policy; the start policy compared with a seed-s policy is evaluated with s too
        ("sft" for seed 0, "sft-e<s>" for others). `n_samples` overrides eval.n_samples (e.g. 16
        draws of the start policy for best-of-N; "-n<k>" is added to the eval dir's name)."""
        from .evaluate import EVAL_VERSION, evaluate_model

        if seed is None:
            seed = read_json(meta_path(policy.dir))["deps"]["dpo"]["seed"] if policy else self.cfg.dpo.seed
        name = policy.name if policy else START
        cfg = self.cfg if n_samples is None else dataclasses.replace(
            self.cfg, eval=dataclasses.replace(self.cfg.eval, n_samples=n_samples))
        tag = "" if n_samples is None else f"-n{n_samples}"
        out = self.paths.eval((name if policy or seed == 0 else f"{START}-e{seed}") + tag)

        def build(part):
            prompts = self.prompts()["eval"]
            if policy is None:
                model, ref = self.ref_model, None
            else:
                model, ref = self.load_trained(policy), self.ref_model
            evaluate_model(name, model, ref, self.tokenizer, self._sharded_scorers(), prompts, cfg, self.stop_ids,
                           part_dir(part), sample_dtype=self.sample_dtype, seed=seed, dist=self.dist)

        policy_hash = read_json(meta_path(policy.dir))["hash"] if policy else None
        extra = {} if n_samples is None else {"eval_n_samples": n_samples}
        self._cached(out, ("sample", "reward", "eval"), build, collective=True, policy=policy_hash,
                     eval_seed=seed, evaluation=EVAL_VERSION, **extra)
        return self._loaded_evaluation(name, out)

    def _loaded_evaluation(self, name: str, out: Path) -> Evaluation:
        """A cached evaluation: its annotated samples, and metrics recomputed from them (a pure
        function of the samples, so a cached evaluation is always measured by the current code)."""
        from .metrics import metrics_of

        scored = read_jsonl(out / "scored.jsonl")
        return Evaluation(metrics_of(name, scored, self.cfg.eval.n_boot), scored)

    def evaluate_human(self) -> Evaluation:
        """The human row: the eval prompts' source reviews' own continuations, same token budget."""
        from .data import review_texts
        from .evaluate import evaluate_human

        out = self.paths.eval(HUMAN)

        def build(part):
            prompts = self.prompts()["eval"]
            texts = review_texts(self.cfg.data, {p["review_id"] for p in prompts})
            evaluate_human(HUMAN, self.ref_model, self.tokenizer, self._sharded_scorers(), prompts, texts, self.cfg,
                           part_dir(part), dist=self.dist)

        self._cached(out, ("reward", "eval"), build, collective=True, human=1)
        return self._loaded_evaluation(HUMAN, out)

    def policies(self) -> list[Policy]:
        """The trained policies of this run dir (finished ones only)."""
        dirs = sorted(d for d in self.paths.policies.glob("*") if d.is_dir() and meta_path(d).exists())
        dirs = self.dist.agree(dirs)  # every rank iterates the same list
        return [Policy(d.name, d, read_jsonl(d / "train_log.jsonl")) for d in dirs]

    def tracker(self, name: str, group: str | None = None):
        from .tracking import NullTracker

        if not self.dist.main:  # one run per experiment in wandb: rank 0's
            return NullTracker()
        return self._make_tracker(name, group)

    def _make_tracker(self, name: str, group: str | None = None):
        from .tracking import make_tracker

        return make_tracker(self.cfg, f"{self.dir.name}-{name}", str(self.dir), group=group)


def policy_name(dpo) -> str:
    """e.g. sigmoid-b0.1-lr5e-06-s0, alpha0.3-b0.1-lr5e-06-s0, hinge-trl-b0.1-lr1e-05-s1, sigmoid-lora8-b0.1-lr1e-4-s0."""
    loss = f"alpha{dpo.alpha:g}" if dpo.loss == "alpha" else dpo.loss
    backend = "-trl" if dpo.backend == "trl" else ""
    lora = f"-lora{dpo.lora_r}" if dpo.lora_r else ""
    return f"{loss}{backend}{lora}-b{dpo.beta:g}-lr{dpo.lr:g}-s{dpo.seed}"
