"""Caching of a run dir's stages: each artifact is built once per config, keyed by the config
sections it depends on and by *which* weights its models' names stood for — the SFT start policy
behind `offline-sft`, the trained heads behind `offline` scorers (`offline_prerequisites`). The
run's first step (`Pipeline.prepare`) builds those and records their cache hashes here (`record`);
computing a key only reads that record, never builds. Own preference pairs (`pairs.source`) are
recorded there too, by the hash of their rows. Under several processes every rank calls the
same stages (`distributed.cached_on_ranks`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .config import OFFLINE, OFFLINE_FT, OFFLINE_SFT, Config, section_deps
from .distributed import Dist, cached_on_ranks
from .io import CacheMismatch
from .reward import CORPUS_VERSION, FT_JUDGE
from .rundir import RunDirMismatch

def offline_prerequisites(cfg: Config) -> tuple[bool, tuple[str, ...]]:
    """What a config's artifacts depend on beyond its sections: whether a model is the SFT start
    policy (`offline-sft`), and the offline scorer heads it names (reward, judge, topic; `judge_ft` for
    `eval.judge=offline-ft`)."""
    scorers = {"reward": cfg.reward.model, "judge": cfg.eval.judge, "topic": cfg.eval.topic_judge}  # head kind -> name
    heads = tuple(k for k, n in scorers.items() if n == OFFLINE) + ((FT_JUDGE,) if cfg.eval.judge == OFFLINE_FT else ())
    return OFFLINE_SFT in {cfg.model.policy, cfg.model.ref}, heads


class StageCache:
    """`cache(artifact, sections, build, collective=False, **extra)` builds `artifact` once per
    (model + data + `sections` config, identities, `extra`); True when it was built now."""

    def __init__(self, cfg: Config, root: Path, dist: Dist = Dist()):
        self.cfg, self.root, self.dist = cfg, root, dist
        self.identities: dict[str, str] | None = None  # set by `record` (Pipeline.prepare)

    def record(self, identities: dict[str, str]) -> None:
        """The cache hashes of the SFT start policy ("offline_sft") and the offline heads
        ("<kind>_head") this run built or found, as `Pipeline.prepare` left them."""
        self.identities = dict(identities)

    def _identity(self, key: str) -> str:
        if self.identities is None or key not in self.identities:
            raise RuntimeError(f"the run dir's cache keys name {key!r}, which is not prepared: call "
                               "Pipeline.prepare() first (it builds the SFT start policy and the offline scorer "
                               "heads, and reads pairs.source)")
        return self.identities[key]

    def model_identity(self) -> dict:
        """The SFT model behind `offline-sft` depends on the sft config: results made from another
        one must not be reused."""
        return {"offline_sft": self._identity("offline_sft")} if offline_prerequisites(self.cfg)[0] else {}

    def scorer_identity(self, sections: tuple[str, ...]) -> dict:
        """Which trained head an `offline` scorer name stood for (its cache hash: corpus roles,
        encoder, embedding dtype), and the corpus partition behind the offline prompts, so a run dir
        never mixes results of two different heads or pools."""
        out = {"corpus": CORPUS_VERSION} if self.cfg.data.source == OFFLINE else {}
        wanted = {"reward"} if "reward" in sections else set()  # head kinds the key names
        if "eval" in sections:
            wanted |= {"judge", FT_JUDGE, "topic"}
        for kind in offline_prerequisites(self.cfg)[1]:
            if kind in wanted:
                out[f"{kind}_head"] = self._identity(f"{kind}_head")
        return out

    def pairs_identity(self) -> dict:
        """Own preference pairs (`pairs.source`): their name and the hash of their rows as `prepare`
        read them. Every artifact depends on them (their prompts are the train and eval prompts), so a
        changed file never meets an old run's artifacts; nothing when the pairs are built from samples."""
        source = self.cfg.pairs.source
        return {"pairs_source": {"source": source, "rows": self._identity("pairs_source")}} if source else {}

    def __call__(self, artifact: Path, sections: tuple[str, ...], build: Callable[[Path], object],
                 collective: bool = False, **extra) -> bool:
        """A `collective` build runs on every rank (splits its work, writes on rank 0 only, may call
        stages); any other build runs on rank 0 alone and must not call a stage."""
        deps = {**section_deps(self.cfg, "model", "data", *sections), **self.model_identity(),
                **self.scorer_identity(sections), **self.pairs_identity(), **extra}
        try:
            return cached_on_ranks(artifact, deps, build, self.dist, collective,
                                   hint=f"Use a new run_dir (e.g. run_dir={self.root}-2) "
                                        f"or delete {artifact} and its .meta.json.")
        except CacheMismatch as e:  # the run-dir flavour of the error, for the CLI and tests
            raise RunDirMismatch(str(e)) from None
