"""The pipeline as cached, resumable stages over one run directory (`alignment.run.rundir` names its
files): prompts -> samples -> rewards -> pairs (+ reference log-probs) -> trained policies ->
evaluations. Each stage is one call that returns its artifact, building it only if missing
(`alignment.run.stagecache`: keyed by the config it depends on; a run dir never mixes configs). The
models come from `alignment.run.runmodels`; the work of each stage lives in the module of its name.

The data stages (prompts to reference log-probs, per training seed's draw) are `Pipeline.data`
(`alignment.run.datastages`); this module holds the stages around them. The SFT start policy and the
offline scorer heads are stages of their own that every run builds first (`prepare`), each cached
outside the run dir (the asset cache) and announced when built. A stage a user waits on that is found
built (the SFT start policy, the heads, a trained policy, an evaluation) prints when it was built and
how long that took (`StageCache.announce`).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from torch import Tensor

from ..config import Config, ConfigError, DPOConfig, check_section, section_deps
from ..steps.losses import VALUE_LOSSES
from ..steps.data import check_source, review_texts
from .datastages import DataStages, draw_key
from ..base.checkpoint import saved_progress
from ..base.distributed import current
from ..steps.evaluate import EVAL_VERSION, Evaluation, evaluate_human, evaluate_model, load_evaluation
from ..base.io import meta_path, part_dir, write_json
from ..steps.online import trained_prompts, train_on_policy
from ..steps.ownpairs import read_pairs
from ..steps.reward import FT_JUDGE, ensure_head, head_dir, offline_head_hash
from .rundir import COST_FILE, HUMAN, START, Policy, RunPaths, eval_name, policy_name, read_policy, write_manifest
from .runmodels import RunModels
from ..steps.sft import run_sft, sft_hash, sft_out_dir
from .stagecache import StageCache, built_before, offline_prerequisites
from ..base.timing import StageTimes
from ..base.tracking import RunTrackers, run_config
from ..steps.dpo import held_out_split, train_policy


def method_settings(dpo: DPOConfig) -> DPOConfig:
    """`dpo` with the fields its method does not read set to their defaults (`dpo.rounds` outside online DPO;
    `dpo.loss` and `dpo.alpha` for RLOO; `dpo.credit`, `dpo.kl` and `dpo.reward_shape` outside RLOO, `dpo.credit_lambda` without prefix
    credit), so a policy's name and cache key name only what trained it."""
    defaults = DPOConfig()
    if dpo.method != "online":
        dpo = dataclasses.replace(dpo, rounds=defaults.rounds)
    if dpo.method == "rloo":
        dpo = dataclasses.replace(dpo, loss=defaults.loss, alpha=defaults.alpha)
    if dpo.method != "rloo":
        dpo = dataclasses.replace(dpo, credit=defaults.credit, kl=defaults.kl, reward_shape=defaults.reward_shape)
    if dpo.credit != "prefix":
        dpo = dataclasses.replace(dpo, credit_lambda=defaults.credit_lambda)
    return dpo


def check_training(cfg: Config, dpo: DPOConfig, world: int = 1) -> None:
    """The checks of one policy's DPO settings (`cfg.dpo` with a sweep's overrides) in this run:
    the section's rules, LoRA's need for the policy as its own reference, trl's single process, and
    what the on-policy methods need (a reward model, one process, RLOO's draws from π itself, enough
    prompts for online DPO's rounds)."""
    check_section("dpo", dpo)
    if dpo.lora_r and cfg.model.ref not in ("", cfg.model.policy):
        raise ConfigError(f"dpo.lora_r={dpo.lora_r} trains adapters on the reference's base, so it needs "
                          f"model.ref empty or equal to model.policy (got model.ref={cfg.model.ref!r})")
    s = cfg.sample
    if dpo.method == "rloo" and (s.temperature != 1.0 or s.top_k or s.top_p < 1.0):
        raise ConfigError(f"dpo.method=rloo's policy gradient and KL term assume samples from the policy itself; "
                          f"sample.temperature={s.temperature}, sample.top_k={s.top_k}, sample.top_p={s.top_p} change "
                          "them: use temperature 1, top_k 0, top_p 1")
    trained = cfg.data.n_train_prompts - int(cfg.pairs.held_out * cfg.data.n_train_prompts)
    if dpo.method == "online" and dpo.rounds > trained:
        raise ConfigError(f"dpo.rounds={dpo.rounds} is more than the {trained} prompts online DPO trains on "
                          "(data.n_train_prompts less the pairs.held_out share); lower dpo.rounds")
    if dpo.method != "offline" and (cfg.pairs.source or world > 1):
        raise ConfigError(f"dpo.method={dpo.method} samples and scores its own completions in one process, so it "
                          "needs a reward model (pairs.source empty) and no `accelerate launch`; use dpo.method=offline")
    if dpo.loss in VALUE_LOSSES and cfg.pairs.source:
        raise ConfigError(f"dpo.loss={dpo.loss} regresses on the pairs' reward margins, and pairs.source gives labels "
                          "only; use dpo.loss=sigmoid")
    if dpo.backend == "trl" and world > 1:
        raise ConfigError(f"dpo.backend=trl under {world} processes is not supported (its trainer would write "
                          "from every rank); use dpo.backend=native, which trains with DDP")


class Pipeline:
    """One run directory's stages; each returns its artifact, building it only if missing. `data`:
    the data stages (`pipe.data.samples(seed)`, ...); `trackers`: its wandb runs (`RunTrackers`);
    `times`: where this process's wall time went, by stage kind. `reward`: a Python reward function,
    `score(texts) -> Tensor` of one score per text, used when `reward.model` is "python:<name>"."""

    def __init__(self, cfg: Config, reward: Callable[[list[str]], Tensor] | None = None):
        self.cfg, self.paths = cfg, RunPaths(Path(cfg.run_dir))
        self.dir = self.paths.root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dist = current()  # this process's rank in an `accelerate launch` (one process: rank 0 of 1)
        self.times = StageTimes()
        self.models = RunModels(cfg, self.dist, self.times, reward)
        self.cache = StageCache(cfg, self.dir, self.dist, self.times)
        self.data = DataStages(cfg, self.paths, self.models, self.cache, self.times, self.dist)
        self.trackers = RunTrackers(cfg, self.dir, self.dist.main)
        if self.dist.main:
            write_manifest(self.paths, cfg)

    def prepare(self, load_scorers: bool = True) -> None:
        """The stages every run needs first, outside the run dir: the SFT start policy (when a model
        is `offline-sft`) and the offline scorer heads, each built once (announced) or found in the
        asset cache, and recorded for the cache keys (`StageCache.record`); then the scorers load
        (`load_scorers`), so one that cannot fails before any work. Cheap once done."""
        sft, heads = offline_prerequisites(self.cfg)
        with self.times("setup"):
            if self.cache.identities is None:
                check_source(self.cfg.data)  # a bad data file fails here, before anything is built
                ids = {}
                if self.cfg.pairs.source:  # so does a bad pairs file
                    self.data.own_pairs = read_pairs(self.cfg)
                    ids["pairs_source"] = self.data.own_pairs.identity
                if sft:
                    self.sft()
                    ids["offline_sft"] = sft_hash(self.cfg)
                for kind in heads:
                    since = time.time()
                    ensure_head(kind)
                    if built_before(head_dir(kind), since):
                        self.cache.announce("fine-tuned judge" if kind == FT_JUDGE else f"offline {kind} head",
                                            head_dir(kind))
                    ids[f"{kind}_head"] = offline_head_hash(kind)
                self.cache.record(ids)
            if load_scorers:
                self.models.scorers  # noqa: B018

    def sft(self) -> dict:
        """The SFT stage: the start policy tuned on train-split reviews (see `alignment.steps.sft`); its wall
        time (building, or finding it built) is charged to the stage "SFT"; found built, it is announced."""
        with self.times("SFT"):
            since = time.time()
            metrics = run_sft(self.cfg, self.trackers.make)  # under a launch, the rank that takes the cache's lock
            if built_before(sft_out_dir(self.cfg), since):
                self.cache.announce("SFT start policy", sft_out_dir(self.cfg))
            return metrics

    # ---- training and evaluation ---------------------------------------------------------------
    def policy_settings(self, **overrides) -> DPOConfig:
        """cfg.dpo updated by `overrides` as one policy trains with it (`method_settings`), checked as the
        config's own settings are (`check_training`; a sweep or Level 3 checks every point's settings so before it trains)."""
        dpo = method_settings(dataclasses.replace(self.cfg.dpo, **overrides))
        check_training(self.cfg, dpo, self.dist.world)
        return dpo

    def train(self, **overrides) -> Policy:
        """Train one policy with cfg.dpo updated by `overrides` (loss, beta, lr, alpha, seed...).
        Cached by name and config hash; resumes from its last checkpoint after an interrupt."""
        with self.times("I/O"):
            dpo = self.policy_settings(**overrides)
            name, cfg = policy_name(dpo), dataclasses.replace(self.cfg, dpo=dpo)
            out = self.paths.policy(name)
            deps = {"dpo": section_deps(cfg, "dpo")["dpo"], **draw_key(self.data.draw_of(dpo.seed))}
            with self.cache.building(out, "policy", what=f"policy {name}", **deps) as part:
                if part is not None:
                    tracker = self.trackers(f"train-{name}", "train",
                                            run_config(self.cfg.to_dict(), dataclasses.asdict(dpo), model=name))
                    # resumed: the training loops' seconds in earlier calls (online DPO's rounds: in their own dirs)
                    before = sum(saved_progress(d)[1] for d in (part_dir(part), *part_dir(part).glob("round*")))
                    if dpo.method == "offline":  # the seed's shared draw (samples to reference log-probs) is its
                        # own stage, not this policy's cost
                        data = held_out_split(self.data.pairs(dpo.seed)[0], self.data.ref_logps(dpo.seed),
                                              self.cfg.pairs.held_out)
                        t0, tokens = time.time(), 0
                        train_policy(self.models, data, self.data.train_prompt_ids(dpo.seed), dpo, part_dir(part),
                                     tracker, self.dist)
                    else:  # on-policy: draws its own samples from the policy as it trains
                        prompts = trained_prompts(self.data.prompts(dpo.seed)["train"], self.cfg.pairs.held_out)
                        start = self.data.rewards(dpo.seed) if dpo.reward_shape != "raw" else None  # the seed's
                        t0 = time.time()  # shared draw, built once: not this policy's cost (as for offline DPO)
                        tokens = train_on_policy(self.models, prompts, self.cfg, dpo, part_dir(part), tracker, start)
                    if self.dist.main:
                        write_json(part_dir(part) / COST_FILE, {"train_seconds": before + time.time() - t0,
                                                               "tokens_drawn": tokens})
            return read_policy(out)

    def evaluate(self, policy: Policy | None = None, seed: int | None = None,
                 n_samples: int | None = None) -> Evaluation:
        """Held-out metrics of the start policy (`policy=None`) or a trained one, each on its own
        fresh samples. `seed` picks the evaluation draws (sample.seed + 10_000 + seed): by default a
        trained policy's own training seed, and `dpo.seed` for the start policy, which is evaluated
        under each seed its trained policies used (`rundir.eval_name`). `n_samples` overrides
        eval.n_samples (e.g. 64 draws of the start policy for best-of-N). An evaluation is logged to a
        wandb run of its own when it is built (`RunTrackers.evaluation`); found built, it is announced."""
        with self.times("I/O"):
            seed = seed if seed is not None else (policy.seed if policy else self.cfg.dpo.seed)
            name, m = (policy.name if policy else START), self.models
            cfg = self.cfg if n_samples is None else dataclasses.replace(
                self.cfg, eval=dataclasses.replace(self.cfg.eval, n_samples=n_samples))
            out = self.paths.eval(eval_name(policy and policy.name, seed, n_samples))
            extra = {} if n_samples is None else {"eval_n_samples": n_samples}
            with self.cache.building(out, "evaluation", what=f"evaluation {out.name}", policy=policy and policy.hash,
                                     eval_seed=seed, evaluation=EVAL_VERSION, **extra) as part:
                if part is not None:
                    model, ref = (m.ref_model, None) if policy is None else (m.load_trained(policy.dir), m.ref_model)
                    evaluate_model(name, model, ref, m.tokenizer, m.sharded_scorers(), self.data.prompts()["eval"],
                                   cfg, m.stop_ids, part_dir(part), sample_dtype=m.sample_dtype, seed=seed,
                                   dist=self.dist)
            ev = load_evaluation(out, self.cfg.eval.n_boot)
            if part is not None and self.dist.main:  # one wandb run per evaluation: a cached one was logged when built
                self.trackers.evaluation(out.name, ev.metrics, ev.scored, policy and policy.dpo, eval_seed=seed,
                                         eval_n_samples=cfg.eval.n_samples)
            return ev

    def evaluate_human(self) -> Evaluation:
        """The human row: the eval prompts' source reviews' own continuations, same token budget."""
        if self.cfg.pairs.source:
            raise ConfigError(f"the human row continues the eval prompts' reviews, and the prompts of "
                              f"pairs.source={self.cfg.pairs.source!r} have none; set eval.human_row=false")
        with self.times("I/O"):
            out, m = self.paths.eval(HUMAN), self.models
            with self.cache.building(out, "human row", what=f"evaluation {HUMAN}", human=1) as part:
                if part is not None:
                    prompts = self.data.prompts()["eval"]
                    texts = review_texts(self.cfg.data, {p["review_id"] for p in prompts})
                    evaluate_human(HUMAN, m.ref_model, m.tokenizer, m.sharded_scorers(), prompts, texts, self.cfg,
                                   part_dir(part), dist=self.dist)
            ev = load_evaluation(out, self.cfg.eval.n_boot)
            if part is not None and self.dist.main:  # one wandb run per evaluation, made when it is built
                self.trackers.evaluation(HUMAN, ev.metrics, ev.scored)
            return ev

    def policies(self) -> list[Policy]:
        """The trained policies of this run dir (finished ones only)."""
        dirs = sorted(d for d in self.paths.policies.glob("*") if d.is_dir() and meta_path(d).exists())
        dirs = self.dist.agree(dirs)  # every rank iterates the same list
        return [read_policy(d) for d in dirs]
