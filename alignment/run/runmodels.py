"""The models of one run, each loaded once on first use: the tokenizer, the reference (= start)
policy, trained policies, the reward and the evaluation judges. Names are resolved here:
`offline-sft` is this config's SFT model (`alignment.steps.sft`, built by the run's `sft` stage before any
model is loaded), every other name goes to `alignment.assets.models` as it is."""
from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path

import torch

from ..config import OFFLINE_SFT, Config
from ..base.distributed import Dist, ShardedScorer
from ..steps.evaluate import Scorers
from ..assets.models import is_adapter, load_adapter, load_causal_lm, load_tokenizer, pick_device, sampling_dtype, stop_token_ids
from ..steps.reward import load_judge, load_reward, load_topic_judge
from ..steps.sft import sft_out_dir
from ..base.timing import StageTimes


class RunModels:
    """Lazily loaded models of one run (`Pipeline.models`); loading counts as "model loading" in
    `times`. `reward_fn`: the reward when `reward.model` is "python:<name>" (`reward.FunctionReward`)."""

    def __init__(self, cfg: Config, dist: Dist = Dist(), times: StageTimes | None = None, reward_fn=None):
        self.cfg, self.dist, self.times = cfg, dist, times or StageTimes()
        self.reward_fn = reward_fn

    def source(self, name: str) -> str:
        """A model name as `from_pretrained` takes it: `offline-sft` -> this config's SFT model dir
        (it must be built: `Pipeline.prepare` runs the sft stage); others pass through."""
        if name != OFFLINE_SFT:
            return name
        out = sft_out_dir(self.cfg)
        if not out.exists():
            raise FileNotFoundError(f"model {OFFLINE_SFT!r}: the SFT start policy is not built at {out}; "
                                    "build it with `python -m alignment sft` (every run's first step does)")
        return str(out)

    @cached_property
    def tokenizer(self):
        with self.times("model loading"):
            return load_tokenizer(self.source(self.cfg.model.policy))

    @cached_property
    def device(self) -> torch.device:
        return pick_device()

    @cached_property
    def sample_dtype(self) -> torch.dtype:
        return sampling_dtype(self.cfg.model.dtype, self.device)

    def load_policy(self, name: str | None = None, dtype=torch.float32, train: bool = False):
        with self.times("model loading"):
            return load_causal_lm(self.source(name or self.cfg.model.policy), dtype, self.device, train=train)

    @cached_property
    def ref_model(self):
        """The reference policy (fp32, frozen): the start policy unless `model.ref` names another."""
        return self.load_policy(self.cfg.model.ref or self.cfg.model.policy)

    @cached_property
    def stop_ids(self) -> list[int]:
        return stop_token_ids(self.tokenizer, self.ref_model)

    def load_trained(self, policy_dir: Path):
        """A trained policy for evaluation: its weights, or the base + its LoRA adapter, merged."""
        path = Path(policy_dir) / "model"
        with self.times("model loading"):
            return load_adapter(self.load_policy(), path) if is_adapter(path) else self.load_policy(str(path))

    @cached_property
    def reward(self):
        with self.times("model loading"):
            return load_reward(self.cfg.reward, self.reward_fn)

    @cached_property
    def scorers(self) -> Scorers:
        """Reward + the evaluation-only judges (`eval.judge`, `eval.topic_judge`)."""
        e, r = self.cfg.eval, self.cfg.reward
        reward = self.reward
        with self.times("model loading"):
            return Scorers(reward, load_judge(e.judge, r), load_topic_judge(e.topic_judge, r), r.score_prompt)

    def sharded(self, scorer):
        """`scorer` with its batches split across ranks (itself in one process)."""
        return scorer if self.dist.world == 1 or scorer is None else ShardedScorer(scorer, self.dist)

    def sharded_scorers(self) -> Scorers:
        s = self.scorers
        return dataclasses.replace(s, reward=self.sharded(s.reward), judge=self.sharded(s.judge),
                                   topic=self.sharded(s.topic))
