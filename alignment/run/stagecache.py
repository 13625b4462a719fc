"""Caching of a run dir's stages: each artifact is built once per config, keyed by the config
sections it depends on and by *which* weights its models' names stood for — the SFT start policy
behind `offline-sft`, the trained heads behind `offline` scorers (`offline_prerequisites`). The
run's first step (`Pipeline.prepare`) builds those and records their cache hashes here (`record`);
computing a key only reads that record, never builds. Own preference pairs (`pairs.source`) are
recorded there too, by the hash of their rows. Under several processes every rank calls the
same stages (`distributed.building_on_ranks`)."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple

from ..config import OFFLINE, OFFLINE_FT, OFFLINE_SFT, Config, section_deps
from ..base.distributed import Dist, building_on_ranks
from ..base.io import CacheMismatch, build_record
from ..base.timing import StageTimes
from ..steps.decode import DRAWS
from ..steps.reward import CORPUS_VERSION, FT_JUDGE
from .rundir import RunDirMismatch


class Stage(NamedTuple):
    """One cached stage of a run dir: what its key reads and how its build runs."""
    sections: tuple[str, ...]  # the config sections its cache key reads, beyond `model` and `data`
    kind: str | None  # the wall-time kind its block is charged to (`timing.StageTimes`); None: its parts charge their own
    collective: bool = True  # its build runs on every rank (splits its work, writes on rank 0 only); else on rank 0 alone


# Every cached stage of a run dir, the one place that says which config sections each stage's key reads (the SFT
# start policy and the scorer heads, cached outside the run dir, key their own sections: `sft.sft_deps`, `reward`).
CACHED_STAGES = {
    "prompts": Stage((), "prompts", collective=False),
    "samples": Stage(("sample",), "sampling"),
    "rewards": Stage(("sample", "reward"), "scoring"),
    "pairs": Stage(("sample", "reward", "pairs"), None),  # its build calls the samples and rewards stages
    "reference log-probs": Stage(("sample", "reward", "pairs"), "reference log-probs"),
    "policy": Stage(("sample", "reward", "pairs"), "training"),  # + the policy's own dpo settings (its `extra`)
    "evaluation": Stage(("sample", "reward", "eval"), "evaluation"),
    "human row": Stage(("reward", "eval"), "evaluation"),
}


def duration(seconds: float) -> str:
    """A build's length as people say it: 42.0 s, 13.2 min, 2.5 h."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def reused_line(what: str, artifact: str | Path) -> str:
    """What a reused artifact's announcement says, from its cache record (`io.build_record`): e.g.
    "SFT start policy: built 2026-12-05 14:03 in 13.2 min, reused" ("built earlier" for a record
    without the time)."""
    rec = build_record(artifact)
    if "built_at" not in rec:
        return f"{what}: built earlier, reused"
    when = datetime.fromisoformat(rec["built_at"]).strftime("%Y-%m-%d %H:%M")
    return f"{what}: built {when} in {duration(rec['build_seconds'])}, reused"


def built_before(artifact: str | Path, since: float) -> bool:
    """Whether `artifact`'s cache record says it was built before `since` (a `time.time()`), or
    predates the time being recorded: found, not built by what ran since."""
    rec = build_record(artifact)
    return "built_at" not in rec or datetime.fromisoformat(rec["built_at"]).timestamp() < since


def offline_prerequisites(cfg: Config) -> tuple[bool, tuple[str, ...]]:
    """What a config's artifacts depend on beyond its sections: whether a model is the SFT start
    policy (`offline-sft`), and the offline scorer heads it names (reward, judge, topic; `judge_ft` for
    `eval.judge=offline-ft`)."""
    scorers = {"reward": cfg.reward.model, "judge": cfg.eval.judge, "topic": cfg.eval.topic_judge}  # head kind -> name
    heads = tuple(k for k, n in scorers.items() if n == OFFLINE) + ((FT_JUDGE,) if cfg.eval.judge == OFFLINE_FT else ())
    return OFFLINE_SFT in {cfg.model.policy, cfg.model.ref}, heads


class StageCache:
    """`with cache.building(artifact, stage, **extra) as part:` builds `artifact` once per its key
    (`deps`: model + data + the sections `CACHED_STAGES[stage]` names, identities, `extra`), charging the
    block's wall time to the stage's kind in `times`."""

    def __init__(self, cfg: Config, root: Path, dist: Dist = Dist(), times: StageTimes | None = None):
        self.cfg, self.root, self.dist, self.times = cfg, root, dist, times
        self.identities: dict[str, str] | None = None  # set by `record` (Pipeline.prepare)
        self.announced: set[str] = set()  # artifacts whose reuse this process printed

    def announce(self, what: str, artifact: Path) -> None:
        """Print `reused_line` of an artifact found built (rank 0, once per artifact and process)."""
        if self.dist.main and str(artifact) not in self.announced:
            self.announced.add(str(artifact))
            print(reused_line(what, artifact), flush=True)

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

    def deps(self, stage: str, **extra) -> dict:
        """The cache key of a `stage` artifact: model and data, the sections `CACHED_STAGES[stage]` names, which
        SFT model, heads and own pairs the names stood for (as `record` left them), the draws' version where
        it samples, and `extra`. Reads only: computing a key never builds."""
        if {"sections", "collective"} & set(extra):  # they would silently enter the key: the stage's table entry says them
            raise TypeError(f"{stage}: sections and collective come from CACHED_STAGES[{stage!r}], not the call")
        sections = CACHED_STAGES[stage].sections
        return {**section_deps(self.cfg, "model", "data", *sections), **self.model_identity(),
                **self.scorer_identity(sections), **self.pairs_identity(),
                **({"draws": DRAWS} if "sample" in sections else {}), **extra}

    @contextmanager
    def building(self, artifact: Path, stage: str, what: str | None = None, **extra) -> Iterator[Path | None]:
        """A block that builds `artifact` once per `deps(stage, **extra)`::

            with cache.building(path, "rewards") as part:
                if part is not None:  # None: built already (or, under a launch, another rank's work)
                    write_json(part, score(...))

        The block's time is charged to the stage's kind. A collective stage's block runs on every rank
        (splits its work, writes on rank 0 only, may call stages); any other runs on rank 0 alone and must
        not call a stage. `what`: the name under which a reused artifact is announced (`announce`)."""
        kind, collective = CACHED_STAGES[stage].kind, CACHED_STAGES[stage].collective
        hint = f"Use a new run_dir (e.g. run_dir={self.root}-2) or delete {artifact} and its .meta.json."
        try:
            with building_on_ranks(artifact, self.deps(stage, **extra), self.dist, collective, hint=hint) as part:
                with self.times(kind) if part is not None and kind and self.times is not None else nullcontext():
                    yield part
        except CacheMismatch as e:  # the run-dir flavour of the error, for the CLI and tests
            raise RunDirMismatch(str(e)) from None
        if what and part is None:
            self.announce(what, artifact)
