"""Caching of a run dir's stages: each artifact is built once per config, keyed by the config
sections it depends on and by *which* weights its models' names stood for — the SFT start policy
behind `offline-sft`, the trained heads behind `offline` scorers — read from their cache records.
Computing a key never builds anything: the run's first step (`Pipeline.prepare`) builds those.
Under several processes every rank calls the same stages (`distributed.cached_on_ranks`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .config import OFFLINE, OFFLINE_SFT, Config, section_deps
from .distributed import Dist, cached_on_ranks
from .io import CacheMismatch
from .reward import CORPUS_VERSION, offline_head_hash
from .rundir import RunDirMismatch
from .sft import sft_hash


class StageCache:
    """`cache(artifact, sections, build, collective=False, **extra)` builds `artifact` once per
    (model + data + `sections` config, identities, `extra`); True when it was built now."""

    def __init__(self, cfg: Config, root: Path, dist: Dist = Dist()):
        self.cfg, self.root, self.dist = cfg, root, dist

    def model_identity(self) -> dict:
        """The SFT model behind `offline-sft` depends on the sft config: results made from another
        one must not be reused."""
        if OFFLINE_SFT not in {self.cfg.model.policy, self.cfg.model.ref}:
            return {}
        return {"offline_sft": sft_hash(self.cfg)}

    def scorer_identity(self, sections: tuple[str, ...]) -> dict:
        """Which trained head an `offline` scorer name stood for (its cache hash: corpus roles,
        encoder, embedding dtype), and the corpus partition behind the offline prompts, so a run dir
        never mixes results of two different heads or pools."""
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

    def __call__(self, artifact: Path, sections: tuple[str, ...], build: Callable[[Path], object],
                 collective: bool = False, **extra) -> bool:
        """A `collective` build runs on every rank (splits its work, writes on rank 0 only, may call
        stages); any other build runs on rank 0 alone and must not call a stage."""
        deps = {**section_deps(self.cfg, "model", "data", *sections), **self.model_identity(),
                **self.scorer_identity(sections), **extra}
        try:
            return cached_on_ranks(artifact, deps, build, self.dist, collective,
                                   hint=f"Use a new run_dir (e.g. run_dir={self.root}-2) "
                                        f"or delete {artifact} and its .meta.json.")
        except CacheMismatch as e:  # the run-dir flavour of the error, for the CLI and tests
            raise RunDirMismatch(str(e)) from None
