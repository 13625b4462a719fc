"""The data stages of one run directory, each one cached call returning its artifact: prompts ->
samples -> rewards -> pairs (+ the reference's log-probs of them). Each training seed trains on its
own draw of train prompts (`data.per_seed`; files under `run_dir/draws/seed<k>/`, `draw_of`), all
seeds share the evaluation prompts. With own preference pairs (`pairs.source`, `alignment.steps.ownpairs`)
the prompts and pairs come from them: no training samples are drawn or scored.

The work of each stage lives in the module of its name (`data`, `sampling`, `reward`, `pairs`,
`dpo.reference_logps`); this module names, caches and orders them (`alignment.run.stagecache`).
"""
from __future__ import annotations

import torch

from ..config import Config, ConfigError
from ..steps.data import build_prompts
from ..base.distributed import Dist
from ..base.io import atomic_open, read_json, read_jsonl, write_json, write_jsonl
from ..steps.ownpairs import OwnPairs, pair_prompts, pair_records
from ..steps.pairs import build_pairs
from ..steps.reward import score_records
from .rundir import RunPaths
from .runmodels import RunModels
from ..steps.sampling import in_prompt_order, sample_to_file
from .stagecache import StageCache
from ..base.timing import StageTimes
from ..steps.dpo import reference_logps


def draw_key(draw: int | None) -> dict:
    """The cache-key entry of a stage built from training seed `draw`'s own data (none for the shared draw)."""
    return {} if draw is None else {"draw": draw}


class DataStages:
    """prompts, samples, rewards, pairs, ref_logps of one run dir, each by training seed (None:
    dpo.seed); each builds its artifact only if missing. `own_pairs`: `pairs.source`'s pairs, once
    `Pipeline.prepare` has read them."""

    def __init__(self, cfg: Config, paths: RunPaths, models: RunModels, cache: StageCache, times: StageTimes,
                 dist: Dist):
        self.cfg, self.paths, self.models, self.cache, self.times, self.dist = cfg, paths, models, cache, times, dist
        self.own_pairs: OwnPairs | None = None

    def draw_of(self, seed: int | None) -> int | None:
        """The data draw that training seed `seed` (None: dpo.seed) trains on: its own under
        `data.per_seed`, else the run dir's shared one (None; always so with own pairs)."""
        if not self.cfg.data.per_seed or self.cfg.pairs.source:
            return None
        return self.cfg.dpo.seed if seed is None else seed

    def prompts(self, seed: int | None = None) -> dict[str, list[dict]]:
        """{"train", "eval"} prompt records: the eval prompts (every seed's), and the train prompts of
        training seed `seed`'s draw (`draw_of`); or own pairs' prompts (`pairs.source`)."""
        with self.times("I/O"):
            draw, tok, own = self.draw_of(seed), self.models.tokenizer, self.own_pairs
            with self.cache.building(self.paths.prompts, "prompts") as part:
                if part is not None:
                    built = pair_prompts(own, tok) if own is not None else build_prompts(self.cfg.data, tok)
                    # per seed (`draw`): the eval prompts only, each seed's train prompts are its own draw's
                    write_json(part, built if draw is None else {"train": [], "eval": built["eval"]})
            out = read_json(self.paths.prompts)
            if draw is None:
                return out
            mine = self.paths.draw(draw).prompts
            with self.cache.building(mine, "prompts", draw=draw) as part:
                if part is not None:
                    write_json(part, {"train": build_prompts(self.cfg.data, tok, draw)["train"]})
            return {"train": read_json(mine)["train"], "eval": out["eval"]}

    def samples(self, seed: int | None = None) -> list[dict]:
        """N samples per train prompt of seed `seed`'s draw; streamed to the part file, so a killed run resumes there."""
        if self.cfg.pairs.source:
            raise ConfigError(f"pairs.source={self.cfg.pairs.source!r} gives the preference pairs, so no training "
                              "samples are drawn or scored; run the pairs, train or run stage, or set pairs.source= "
                              "(empty) to build pairs from the start policy's samples")
        with self.times("I/O"):
            draw, m = self.draw_of(seed), self.models
            prompts = self.prompts(seed)["train"]  # a draw's own prompt ids seed its own sampling streams
            path = self.paths.draw(draw).samples
            with self.cache.building(path, "samples", **draw_key(draw)) as part:
                if part is not None:
                    sample_to_file(part, m.load_policy(dtype=m.sample_dtype), m.tokenizer, prompts,
                                   self.cfg.sample.n_samples, self.cfg.sample, m.stop_ids,
                                   desc="sampling train prompts", dist=self.dist)
            return in_prompt_order(read_jsonl(path), prompts)

    def rewards(self, seed: int | None = None) -> list[float]:
        with self.times("I/O"):
            recs, draw = self.samples(seed), self.draw_of(seed)
            path = self.paths.draw(draw).rewards
            with self.cache.building(path, "rewards", **draw_key(draw)) as part:
                if part is not None:
                    scores = score_records(self.models.sharded(self.models.reward), recs, self.cfg.reward.score_prompt)
                    if self.dist.main:
                        write_json(part, scores)
            return read_json(path)

    def pairs(self, seed: int | None = None) -> tuple[list[dict], dict]:
        """(pairs, stats) of seed `seed`'s draw: its scored samples of each prompt paired by
        `pairs.strategy`, or own pairs tokenized (`pairs.source`; no rewards)."""
        with self.times("I/O"):
            draw, p = self.draw_of(seed), self.cfg.pairs
            P = self.paths.draw(draw)
            with self.cache.building(P.pairs, "pairs", **draw_key(draw)) as part:
                if part is not None:
                    own = self.own_pairs
                    pairs, stats = (pair_records(own, self.prompts()["train"], self.models.tokenizer) if own is not None
                                    else build_pairs(self.samples(seed), self.rewards(seed), p.strategy, p.min_margin,
                                                     p.seed))
                    if self.dist.main:
                        write_json(P.pairs_stats, stats)
                        write_jsonl(part, pairs)
            return read_jsonl(P.pairs), read_json(P.pairs_stats)

    def train_prompt_ids(self, seed: int | None = None) -> dict[str, list[int]]:
        return {p["id"]: p["ids"] for p in self.prompts(seed)["train"]}

    def ref_logps(self, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,), (P,) the reference's log-probs of the chosen and rejected completions of `pairs(seed)`."""
        with self.times("I/O"):
            pairs, draw, m = self.pairs(seed)[0], self.draw_of(seed), self.models
            path = self.paths.draw(draw).ref_logps
            with self.cache.building(path, "reference log-probs", **draw_key(draw)) as part:
                if part is not None:
                    ch, rj = reference_logps(m.ref_model, pairs, self.train_prompt_ids(seed), m.tokenizer.pad_token_id,
                                             dist=self.dist)
                    if self.dist.main:
                        with atomic_open(part, "wb") as f:
                            torch.save({"chosen": ch, "rejected": rj}, f)
            d = torch.load(path, weights_only=True)
            return d["chosen"], d["rejected"]
