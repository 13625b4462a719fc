"""The pipeline as cached, resumable stages over one run directory (`alignment.rundir` names its
files): prompts -> samples -> rewards -> pairs (+ reference log-probs) -> trained policies ->
evaluations. Each stage is one call that returns its artifact, building it only if missing
(`alignment.stagecache`: keyed by the config it depends on; a run dir never mixes configs). The
models come from `alignment.runmodels`; the work of each stage lives in the module of its name.

The SFT start policy and the offline scorer heads are stages of their own that every run builds
first (`prepare`), each cached outside the run dir (the asset cache) and announced when built.

With own preference pairs (`pairs.source`, `alignment.ownpairs`) the prompts and pairs come from
them: no training samples are drawn or scored, and the held-out prompts are the evaluation prompts.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .config import Config, ConfigError, check_training, section_deps
from .data import build_prompts, check_source, review_texts
from .distributed import current
from .evaluate import EVAL_VERSION, Evaluation, evaluate_human, evaluate_model, load_evaluation
from .io import atomic_open, meta_path, part_dir, read_json, read_jsonl, write_json, write_jsonl
from .ownpairs import OwnPairs, pair_prompts, pair_records, read_pairs
from .pairs import build_pairs
from .reward import ensure_head, offline_head_hash, score_records
from .rundir import HUMAN, START, Policy, RunPaths, eval_name, policy_name, read_policy, write_manifest
from .runmodels import RunModels
from .sampling import in_prompt_order, sample_to_file
from .sft import run_sft, sft_hash
from .stagecache import StageCache, offline_prerequisites
from .timing import StageTimes, charged
from .tracking import NullTracker, log_evaluation, make_tracker, run_config
from .train import held_out_split, reference_logps, train_policy


_io = charged("I/O")  # a stage method's own time (checking and reading its cache) is I/O; its build is its kind


def _draw(draw: int | None) -> dict:
    """The cache-key entry of a stage built from training seed `draw`'s own data (none for the shared draw)."""
    return {} if draw is None else {"draw": draw}


class Pipeline:
    """One run directory's stages; each returns its artifact, building it only if missing.
    `times`: where this process's wall time went, by stage kind; `experiment`: the experiment whose
    wandb runs are being made (`grouped`), None outside one. `reward`: a Python reward function,
    `score(texts) -> Tensor` of one score per text, used when `reward.model` is "python:<name>"."""

    def __init__(self, cfg: Config, reward: Callable[[list[str]], Tensor] | None = None):
        self.cfg, self.paths = cfg, RunPaths(Path(cfg.run_dir))
        self.dir = self.paths.root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dist = current()  # this process's rank in an `accelerate launch` (one process: rank 0 of 1)
        self.times = StageTimes()
        self.models = RunModels(cfg, self.dist, self.times, reward)
        self.cache = StageCache(cfg, self.dir, self.dist)
        self.experiment: str | None = None
        self.own_pairs: OwnPairs | None = None  # `pairs.source`'s pairs, as `prepare` read them
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
                    self.own_pairs = read_pairs(self.cfg)
                    ids["pairs_source"] = self.own_pairs.identity
                if sft:
                    self.sft()
                    ids["offline_sft"] = sft_hash(self.cfg)
                for kind in heads:
                    ensure_head(kind)
                    ids[f"{kind}_head"] = offline_head_hash(kind)
                self.cache.record(ids)
            if load_scorers:
                self.models.scorers  # noqa: B018

    def sft(self) -> dict:
        """The SFT stage: the start policy tuned on train-split reviews (see `alignment.sft`)."""
        return run_sft(self.cfg, self._make_tracker)  # under a launch, the rank that takes the cache's lock

    # ---- data stages ---------------------------------------------------------------------------
    def draw_of(self, seed: int | None) -> int | None:
        """The data draw that training seed `seed` (None: dpo.seed) trains on: its own under
        `data.per_seed`, else the run dir's shared one (None; always so with own pairs)."""
        if not self.cfg.data.per_seed or self.cfg.pairs.source:
            return None
        return self.cfg.dpo.seed if seed is None else seed

    @_io
    def prompts(self, seed: int | None = None) -> dict[str, list[dict]]:
        """{"train", "eval"} prompt records: the eval prompts (every seed's), and the train prompts of
        training seed `seed`'s draw (`draw_of`); or own pairs' prompts (`pairs.source`)."""
        draw, tok = self.draw_of(seed), self.models.tokenizer

        def build(part):
            own = self.own_pairs
            built = pair_prompts(own, tok) if own is not None else build_prompts(self.cfg.data, tok)
            write_json(part, built if draw is None else {"train": [], "eval": built["eval"]})  # per seed: no shared draw

        self.cache(self.paths.prompts, (), self.times.wrap("prompts", build))
        out = read_json(self.paths.prompts)
        if draw is None:
            return out
        mine = self.paths.draw(draw).prompts
        self.cache(mine, (), self.times.wrap("prompts", lambda part: write_json(
            part, {"train": build_prompts(self.cfg.data, tok, draw)["train"]})), draw=draw)
        return {"train": read_json(mine)["train"], "eval": out["eval"]}

    @_io
    def samples(self, seed: int | None = None) -> list[dict]:
        """N samples per train prompt of seed `seed`'s draw; streamed to the part file, so a killed run resumes there."""
        if self.cfg.pairs.source:
            raise ConfigError(f"pairs.source={self.cfg.pairs.source!r} gives the preference pairs, so no training "
                              "samples are drawn or scored; run the pairs, train or run stage, or set pairs.source= "
                              "(empty) to build pairs from the start policy's samples")
        draw, m = self.draw_of(seed), self.models
        prompts = self.prompts(seed)["train"]  # a draw's own prompt ids seed its own sampling streams

        def build(part):
            sample_to_file(part, m.load_policy(dtype=m.sample_dtype), m.tokenizer, prompts, self.cfg.sample.n_samples,
                           self.cfg.sample, m.stop_ids, desc="sampling train prompts", dist=self.dist)

        path = self.paths.draw(draw).samples
        self.cache(path, ("sample",), self.times.wrap("sampling", build), collective=True, **_draw(draw))
        return in_prompt_order(read_jsonl(path), prompts)

    @_io
    def rewards(self, seed: int | None = None) -> list[float]:
        recs, draw = self.samples(seed), self.draw_of(seed)

        def build(part):
            scores = score_records(self.models.sharded(self.models.reward), recs, self.cfg.reward.score_prompt)
            if self.dist.main:
                write_json(part, scores)

        path = self.paths.draw(draw).rewards
        self.cache(path, ("sample", "reward"), self.times.wrap("scoring", build), collective=True, **_draw(draw))
        return read_json(path)

    @_io
    def pairs(self, seed: int | None = None) -> tuple[list[dict], dict]:
        """(pairs, stats) of seed `seed`'s draw: its scored samples of each prompt paired by
        `pairs.strategy`, or own pairs tokenized (`pairs.source`; no rewards)."""
        draw = self.draw_of(seed)
        P = self.paths.draw(draw)

        def build(part):
            p = self.cfg.pairs
            if self.own_pairs is not None:
                pairs, stats = pair_records(self.own_pairs, self.prompts()["train"], self.models.tokenizer)
            else:
                pairs, stats = build_pairs(self.samples(seed), self.rewards(seed), p.strategy, p.min_margin, p.seed)
            if self.dist.main:
                write_json(P.pairs_stats, stats)
                write_jsonl(part, pairs)

        self.cache(P.pairs, ("sample", "reward", "pairs"), build, collective=True, **_draw(draw))
        return read_jsonl(P.pairs), read_json(P.pairs_stats)

    def train_prompt_ids(self, seed: int | None = None) -> dict[str, list[int]]:
        return {p["id"]: p["ids"] for p in self.prompts(seed)["train"]}

    @_io
    def ref_logps(self, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,), (P,) the reference's log-probs of the chosen and rejected completions of `pairs(seed)`."""
        pairs, draw = self.pairs(seed)[0], self.draw_of(seed)

        def build(part):
            m = self.models
            ch, rj = reference_logps(m.ref_model, pairs, self.train_prompt_ids(seed), m.tokenizer.pad_token_id,
                                     dist=self.dist)
            if self.dist.main:
                with atomic_open(part, "wb") as f:
                    torch.save({"chosen": ch, "rejected": rj}, f)

        path = self.paths.draw(draw).ref_logps
        self.cache(path, ("sample", "reward", "pairs"), self.times.wrap("reference log-probs", build),
                   collective=True, **_draw(draw))
        d = torch.load(path, weights_only=True)
        return d["chosen"], d["rejected"]

    # ---- training and evaluation ---------------------------------------------------------------
    @_io
    def train(self, **overrides) -> Policy:
        """Train one policy with cfg.dpo updated by `overrides` (loss, beta, lr, alpha, seed...).
        Cached by name and config hash; resumes from its last checkpoint after an interrupt."""
        dpo = dataclasses.replace(self.cfg.dpo, **overrides)
        check_training(self.cfg, dpo, self.dist.world)  # a sweep's settings get the same checks as the config's
        name = policy_name(dpo)
        out = self.paths.policy(name)

        def build(part):
            pairs, ref = self.pairs(dpo.seed)[0], self.ref_logps(dpo.seed)
            data = held_out_split(pairs, ref, self.cfg.pairs.held_out)
            config = run_config(self.cfg.to_dict(), dataclasses.asdict(dpo), model=name)
            train_policy(self.models, data, self.train_prompt_ids(dpo.seed), dpo, part_dir(part),
                         self.tracker(f"train-{name}", "train", config), self.dist)

        deps = {"dpo": section_deps(dataclasses.replace(self.cfg, dpo=dpo), "dpo")["dpo"], **_draw(self.draw_of(dpo.seed))}
        self.cache(out, ("sample", "reward", "pairs"), self.times.wrap("training", build), collective=True, **deps)
        return read_policy(out)

    @_io
    def evaluate(self, policy: Policy | None = None, seed: int | None = None,
                 n_samples: int | None = None) -> Evaluation:
        """Held-out metrics of the start policy (`policy=None`) or a trained one, each on its own
        fresh samples. `seed` picks the evaluation draws (sample.seed + 10_000 + seed): by default a
        trained policy's own training seed, and `dpo.seed` for the start policy, which is evaluated
        under each seed its trained policies used (`rundir.eval_name`). `n_samples` overrides
        eval.n_samples (e.g. 16 draws of the start policy for best-of-N). Each call logs the evaluation
        to a wandb run of its own (`track_evaluation`)."""
        seed = seed if seed is not None else (policy.seed if policy else self.cfg.dpo.seed)
        name, m = (policy.name if policy else START), self.models
        cfg = self.cfg if n_samples is None else dataclasses.replace(
            self.cfg, eval=dataclasses.replace(self.cfg.eval, n_samples=n_samples))
        out = self.paths.eval(eval_name(policy and policy.name, seed, n_samples))

        def build(part):
            model, ref = (m.ref_model, None) if policy is None else (m.load_trained(policy.dir), m.ref_model)
            evaluate_model(name, model, ref, m.tokenizer, m.sharded_scorers(), self.prompts()["eval"], cfg, m.stop_ids,
                           part_dir(part), sample_dtype=m.sample_dtype, seed=seed, dist=self.dist)

        extra = {} if n_samples is None else {"eval_n_samples": n_samples}
        self.cache(out, ("sample", "reward", "eval"), self.times.wrap("evaluation", build), collective=True,
                   policy=policy and policy.hash, eval_seed=seed, evaluation=EVAL_VERSION, **extra)
        ev = load_evaluation(out, self.cfg.eval.n_boot)
        self.track_evaluation(out.name, ev, policy and policy.dpo, eval_seed=seed, eval_n_samples=cfg.eval.n_samples)
        return ev

    @_io
    def evaluate_human(self) -> Evaluation:
        """The human row: the eval prompts' source reviews' own continuations, same token budget."""
        if self.cfg.pairs.source:
            raise ConfigError(f"the human row continues the eval prompts' reviews, and the prompts of "
                              f"pairs.source={self.cfg.pairs.source!r} have none; set eval.human_row=false")
        out, m = self.paths.eval(HUMAN), self.models

        def build(part):
            prompts = self.prompts()["eval"]
            texts = review_texts(self.cfg.data, {p["review_id"] for p in prompts})
            evaluate_human(HUMAN, m.ref_model, m.tokenizer, m.sharded_scorers(), prompts, texts, self.cfg,
                           part_dir(part), dist=self.dist)

        self.cache(out, ("reward", "eval"), self.times.wrap("evaluation", build), collective=True, human=1)
        ev = load_evaluation(out, self.cfg.eval.n_boot)
        self.track_evaluation(HUMAN, ev)
        return ev

    def track_evaluation(self, name: str, ev: Evaluation, dpo: dict | None = None, **top) -> None:
        """One wandb run `eval-<name>` per evaluation (job type eval): its metrics and CIs in the
        summary, its first samples as a table; its config carries the policy's dpo settings (`dpo`,
        none for the start policy and the human row) and `top` at the top level."""
        config = {k: v for k, v in self.cfg.to_dict().items() if k != "dpo" or dpo is not None}
        tracker = self.tracker(f"eval-{name}", "eval", run_config(config, dpo, model=ev.metrics["model"], **top))
        log_evaluation(tracker, ev.metrics, ev.scored)

    def policies(self) -> list[Policy]:
        """The trained policies of this run dir (finished ones only)."""
        dirs = sorted(d for d in self.paths.policies.glob("*") if d.is_dir() and meta_path(d).exists())
        dirs = self.dist.agree(dirs)  # every rank iterates the same list
        return [read_policy(d) for d in dirs]

    @contextmanager
    def grouped(self, experiment: str):
        """Inside, the wandb runs this pipeline makes (training, evaluations, results) are grouped
        under `experiment`."""
        outer, self.experiment = self.experiment, experiment
        try:
            yield
        finally:
            self.experiment = outer

    def tracker(self, name: str, job_type: str | None = None, config: dict | None = None):
        """The tracker of one wandb run (rank 0's; a no-op on the other ranks): see `_make_tracker`."""
        return self._make_tracker(name, job_type, config) if self.dist.main else NullTracker()

    def _make_tracker(self, name: str, job_type: str | None = None, config: dict | None = None):
        """The wandb run `<prefix>-<name>` in the group `<prefix>-<experiment>` (`<prefix>` alone outside
        an experiment), where `<prefix>` is track.run_name or the run dir's name; `config` defaults to
        the whole Config."""
        prefix = self.cfg.track.run_name or self.dir.name
        group = f"{prefix}-{self.experiment}" if self.experiment else prefix
        return make_tracker(self.cfg, f"{prefix}-{name}", str(self.dir), group, job_type, config)

