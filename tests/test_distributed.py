"""More than one process (`alignment.base.distributed`): how work is split by batches (pure), and two
real processes over gloo under `accelerate launch` — one DPO step's gradients equal the one-process
step's on the same global batch, and a whole Level 1 run writes the same artifacts as one process."""
import json
import os
import random
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from alignment.base.distributed import Dist, chunks, map_batches, rank_items
from alignment.base.io import read_json, read_jsonl
from alignment.steps.reward import length_batches
from alignment.steps.sampling import _batches
from alignment.steps.train import rank_share

ROOT = Path(__file__).resolve().parents[1]


def test_rank_share_splits_a_micro_batch_by_weight():
    assert rank_share([0, 1, 2, 3, 4], Dist(0, 2)) == ([0, 1, 2], 0.6)
    assert rank_share([0, 1, 2, 3, 4], Dist(1, 2)) == ([3, 4], 0.4)
    assert rank_share([7], Dist(1, 2)) == ([7], 0.0)  # nothing left: runs an example with weight 0
    assert rank_share([7, 8], Dist(0, 1)) == ([7, 8], 1.0)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n,size", [(1, 4), (10, 4), (12, 4), (13, 5), (7, 1)])
def test_a_ranks_items_re_form_exactly_its_batches(world, n, size):
    """The sampler's and the scorers' batchers, given one rank's items, cut the batches that rank
    was given: same members, so the same padding, seeds and draws as in one process."""
    rng = random.Random(n * 10 + size)
    prompts = [{"id": f"p{i}", "ids": [1] * rng.randint(1, 4)} for i in range(n)]
    texts = ["x" * rng.randint(1, 5) for _ in range(n)]  # ties in length: the sort must be stable
    pos = {p["id"]: i for i, p in enumerate(prompts)}
    cases = [
        ([[pos[p["id"]] for p in b] for b in _batches(prompts, size)],
         lambda idx: [[pos[p["id"]] for p in b] for b in _batches([prompts[i] for i in idx], size)]),
        (length_batches(texts, size),
         lambda idx: [[idx[j] for j in b] for b in length_batches([texts[i] for i in idx], size)]),
        (chunks(n, size), lambda idx: [[idx[j] for j in b] for b in chunks(len(idx), size)]),
    ]
    for batches, rebatch in cases:
        seen = []
        for r in range(world):
            mine = rank_items(batches, Dist(r, world))
            assert rebatch(mine) == [b for k, b in enumerate(batches) if k % world == r]
            seen += mine
        assert sorted(seen) == list(range(n))


@dataclass(frozen=True)
class _Echo(Dist):
    """A rank without a process group: the other ranks' parts of `n` items come back as zeros."""
    n: int = 0

    def gather(self, obj):
        idx, vals = obj
        rest = [i for i in range(self.n) if i not in set(idx)]
        return [obj, (rest, [0.0] * len(rest))]

    def agree(self, obj):  # every rank plans the same batches: rank 0's plan is this one's
        return obj


class _Recorder:
    batch_size = 4

    def __init__(self):
        self.calls = []

    def batches(self, texts, rows=None):  # a model scorer's batch plan, as ClassifierReward/EmbeddingReward have
        return length_batches(texts, rows or self.batch_size)

    def score(self, texts, rows=None):
        self.calls.append((list(texts), rows))
        return torch.zeros(len(texts))


@pytest.mark.parametrize("rank", [0, 1])
def test_sharded_scorer_gives_each_rank_exactly_its_scorer_batches(rank):
    from alignment.base.distributed import ShardedScorer

    texts = [f"t{i}" + "x" * (i * 7 % 5) for i in range(11)]
    inner = _Recorder()
    ShardedScorer(inner, _Echo(rank, 2, n=len(texts))).score(texts)
    ((got, rows),) = inner.calls
    assert rows is None  # a fixed batch size: the scorer's own
    want = [b for k, b in enumerate(length_batches(texts, 4)) if k % 2 == rank]
    assert [[got[j] for j in b] for b in length_batches(got, 4)] == [[texts[i] for i in b] for b in want]


def test_sharded_scorer_gives_every_rank_rank_0s_automatic_batch_size():
    """A model scorer with an automatic batch size (0) plans and scores one call with rank 0's choice (`Dist.agree`)."""
    from alignment.base.distributed import ShardedScorer

    class Auto(_Recorder):
        batch_size = 0

        def rows(self):  # this rank's own choice, e.g. from its free memory
            return 3

    class Rank1(_Echo):
        def agree(self, obj):  # rank 0 chose 5
            return 5

    inner = Auto()
    ShardedScorer(inner, Rank1(1, 2, n=11)).score([f"t{i}" for i in range(11)])
    assert [(len(c), rows) for c, rows in inner.calls] == [(5, 5)]  # rank 1's share: the second batch of 5, scored as 5
    assert inner.batch_size == 0  # never changed: automatic again for the next call (its free memory then)


def test_map_batches_in_one_process_is_the_function():
    assert map_batches(lambda xs: [x * 2 for x in xs], [1, 2, 3], chunks(3, 2), Dist()) == [2, 4, 6]
    assert Dist().map(lambda xs: [x * 2 for x in xs], [1, 2, 3], 2) == [2, 4, 6]


# ---- two real processes (gloo) --------------------------------------------------------------------

def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], tmp_path: Path, n: int = 2) -> subprocess.CompletedProcess:
    """`accelerate launch` with n processes: its torchrun launcher (`--multi_gpu`); gloo on CPUs."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def test_ddp_step_gradients_match_one_process(tmp_path, tiny_gpt2_dir):
    sys.path.insert(0, str(Path(__file__).parent))
    from ddp_step import step_grads

    out = tmp_path / "grads.pt"
    launch([str(ROOT / "tests" / "ddp_step.py"), str(tiny_gpt2_dir), str(out)], tmp_path)
    one, one_mets = step_grads(str(tiny_gpt2_dir), Dist())
    assert one_mets.pop("allreduces") == 0
    for r in range(2):
        got = torch.load(f"{out}.rank{r}", weights_only=True)
        assert got["world"] == 2 and set(got["grads"]) == set(one)
        assert got["allreduces"] == 1, "one all-reduce per optimizer step (no_sync on the first micro-batch)"
        for k, g in one.items():
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-5, atol=1e-8, msg=k)
        assert got["metrics"] == pytest.approx(one_mets, rel=1e-6)


def _canon(recs: list[dict]) -> list[dict]:
    return sorted(recs, key=lambda r: (r["prompt_id"], r["sample"]))


def test_two_process_level1_writes_the_one_process_artifacts(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                             reviews_csv):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_pipeline_e2e import tiny_cfg

    from alignment.run import experiments
    from alignment.run.pipeline import Pipeline

    # sampling: one batch (8 prompts each) in one process; scoring: batches of 4 texts over
    # both ranks; evaluation log-probs: 18 records = 2 batches of 16 + 2; DPO: 3 pairs per step (2 + 1)
    over = {"dpo.batch_size": 3, "sample.batch_size": 24, "reward.batch_size": 4, "data.n_eval_prompts": 6,
            "eval.n_samples": 3, "data.per_seed": False,  # one shared draw: its files at the run dir's top
            "dpo.precision": "fp32"}  # bf16 autocast would round a 2-way split's partial sums differently
    one = Pipeline(tiny_cfg(tmp_path / "one", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv, **over))
    experiments.level1(one)
    # two processes at another decode batch (1 prompt per batch: both ranks sample): the same draws, each
    # completion from its own stream
    cfg = tiny_cfg(tmp_path / "two", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv, **{**over, "sample.batch_size": 4})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    res = launch(["-m", "alignment", "run", "--config", str(tmp_path / "two.yaml")], tmp_path)
    assert res.stdout.count("reward gain vs SFT") == 2  # one report (rank 0): sigmoid and hinge once each
    assert "ran on:  2 processes (gloo)" in res.stdout
    a, b = one.dir, tmp_path / "two"
    assert read_json(a / "prompts.json") == read_json(b / "prompts.json")
    sa, sb = read_jsonl(a / "samples.jsonl"), read_jsonl(b / "samples.jsonl")
    floats = ("sample_logps", "sample_entropy")  # the sampler's own log q and entropy: its batch's float order
    assert [{k: v for k, v in r.items() if k not in floats} for r in sb] == \
        [{k: v for k, v in r.items() if k not in floats} for r in sa]  # the same draws, in the same order
    assert len(sa) > 0 and all("sample_logps" in r for r in sa)
    for ra, rb in zip(sa, sb):  # (on some CPUs a batch of 4 rounds otherwise than one of 24)
        assert rb["sample_logps"] == pytest.approx(ra["sample_logps"], abs=1e-4)
        assert rb["sample_entropy"] == pytest.approx(ra["sample_entropy"], rel=1e-4, abs=1e-6)
    assert read_json(a / "rewards.json") == read_json(b / "rewards.json")  # same batches, same scores
    assert read_jsonl(a / "pairs.jsonl") == read_jsonl(b / "pairs.jsonl")
    ra, rb = torch.load(a / "ref_logps.pt"), torch.load(b / "ref_logps.pt")
    assert torch.equal(ra["chosen"], rb["chosen"]) and torch.equal(ra["rejected"], rb["rejected"])
    assert read_jsonl(a / "eval" / "human" / "scored.jsonl") == read_jsonl(b / "eval" / "human" / "scored.jsonl")
    assert not list(b.rglob("*.rank*of*")), "shards are removed once merged"
    for pol in ("sigmoid-b0.1-lr0.001-s0", "hinge-b0.1-lr0.001-s0"):
        la, lb = (read_jsonl(d / "policies" / pol / "train_log.jsonl") for d in (a, b))
        assert len(la) == len(lb) > 1
        for ra, rb in zip(la, lb):
            assert rb == pytest.approx(ra, rel=1e-4, abs=1e-6)  # DDP: the same steps (float order aside)
        for name in ("sft", pol):
            sa, sb = (_canon(read_jsonl(d / "eval" / name / "scored.jsonl")) for d in (a, b))
            assert [r["completion_ids"] for r in sa] == [r["completion_ids"] for r in sb]
            for ra, rb in zip(sa, sb):
                for k in ("reward", "judge", "on_topic", "ref_logp", "logp", "pred_entropy", "kl_cv"):
                    assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    ma, mb = (read_json(d / "level1.json")["rows"] for d in (a, b))
    assert [r["model"] for r in ma] == [r["model"] for r in mb]
    assert mb[1]["eval/reward_mean"] == pytest.approx(ma[1]["eval/reward_mean"], rel=1e-4, abs=1e-5)



def _kill_launch_mid_sampling(run: Path, args: list[str]) -> list[Path]:
    """Launch `args` with 2 processes (slowed per batch), SIGKILL the whole launch once both ranks
    wrote a batch; return the shards it left."""
    import signal
    import time

    import psutil
    from test_reliability import N_PROMPTS, N_SAMPLES, cli_env, complete_lines

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_port()), *args]
    env = {**cli_env(ALIGNMENT_DEBUG_STEP_DELAY="0.2"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = lambda: sorted(run.glob(".samples.jsonl.*.part.rank*of2"))  # noqa: E731
    deadline = time.monotonic() + 300
    while not (len(shards()) == 2 and all(complete_lines(p) >= N_SAMPLES for p in shards())):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # torchrun starts each worker in its own session: kill the launcher and every descendant, as a
    # preempted machine would, and wait until none is left writing
    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)
    proc.wait()
    proc.stderr.close()
    assert not (run / "samples.jsonl").exists()
    done = sum(complete_lines(p) for p in shards())
    assert N_SAMPLES * 2 <= done < N_PROMPTS * N_SAMPLES, "the kill must land mid-sampling"
    return shards()


def test_killed_two_process_sampling_resumes_to_the_one_process_samples(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                        reviews_csv):
    """SIGKILL to the whole launch mid-sampling leaves each rank's shard; a relaunch — with 3
    processes, another size — keeps their batches and samples the rest, and the merged samples
    equal one process's (40 one-prompt batches)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_reliability import N_PROMPTS, N_SAMPLES, overrides

    from alignment.config import load_config
    from alignment.run.pipeline import Pipeline

    files = (tiny_gpt2_dir, tiny_classifier_dir, reviews_csv)
    want = Pipeline(load_config(overrides=overrides(tmp_path / "one", *files))).data.samples()
    run = tmp_path / "two"
    args = ["-m", "alignment", "sample", "--set", *(f"{k}={v}" for k, v in overrides(run, *files).items())]
    shards = _kill_launch_mid_sampling(run, args)

    # mark one kept record: if the relaunch re-sampled its batch, the new shard's copy would replace it
    first = shards[0]  # rank0of2: sorts before every shard of the relaunch
    lines = first.read_text().splitlines(keepends=True)
    marked = json.loads(lines[0])
    lines[0] = json.dumps({**marked, "completion": "kept from the killed launch"}) + "\n"
    first.write_text("".join(lines))
    launch(args, tmp_path, n=3)
    got = read_jsonl(run / "samples.jsonl")
    key = (marked["prompt_id"], marked["sample"])
    assert [r["completion"] for r in got if (r["prompt_id"], r["sample"]) == key] == ["kept from the killed launch"]
    assert _canon([r for r in got if (r["prompt_id"], r["sample"]) != key]) == \
           _canon([r for r in want if (r["prompt_id"], r["sample"]) != key]) and len(got) == N_PROMPTS * N_SAMPLES
    assert not list(run.rglob("*.rank*of*"))

    # a kill after the merge but before the shards went: the rerun publishes the merge, removes them
    part = run / f".samples.jsonl.{read_json(run / 'samples.jsonl.meta.json')['hash']}.part"
    (run / "samples.jsonl").rename(part)
    (run / "samples.jsonl.meta.json").unlink()
    for r in range(2):
        Path(f"{part}.rank{r}of2").write_text('{"prompt_id": "stale"}\n')
    launch(args, tmp_path)
    assert read_jsonl(run / "samples.jsonl") == got
    assert not list(run.rglob("*.rank*of*"))


def test_a_rank0_only_build_may_not_call_a_stage(tmp_path, monkeypatch):
    from alignment.base import distributed

    monkeypatch.setattr(distributed, "_RANK0_BUILD", ["prompts.json"])
    with pytest.raises(RuntimeError, match="rank-0-only build of prompts.json entered the stage that makes"):
        with distributed.building_on_ranks(tmp_path / "x.json", {"a": 1}, Dist(0, 2), collective=True):
            pass
    for enter in (Dist(0, 2).barrier, lambda: Dist(0, 2).gather(1), lambda: Dist(0, 2).agree(1)):
        with pytest.raises(RuntimeError, match="rank-0-only build of prompts.json entered"):
            enter()


def test_one_process_resumes_a_killed_launch_keeping_its_batches(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                 reviews_csv, monkeypatch):
    """The same kill, then `Pipeline.data.samples()` in one process: it samples only the batches no shard
    holds, and the merged samples equal an uninterrupted one-process run's."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_reliability import overrides

    from alignment.steps import sampling
    from alignment.config import load_config
    from alignment.run.pipeline import Pipeline

    files = (tiny_gpt2_dir, tiny_classifier_dir, reviews_csv)
    want = Pipeline(load_config(overrides=overrides(tmp_path / "one", *files))).data.samples()
    run = tmp_path / "two"
    args = ["-m", "alignment", "sample", "--set", *(f"{k}={v}" for k, v in overrides(run, *files).items())]
    kept = {r["prompt_id"] for p in _kill_launch_mid_sampling(run, args) for r in read_jsonl(p)}
    drawn, inner = [], sampling.sample_records

    def spy(model, tokenizer, prompts, *a, **kw):
        drawn.extend(p["id"] for p in prompts)
        return inner(model, tokenizer, prompts, *a, **kw)

    monkeypatch.setattr(sampling, "sample_records", spy)
    got = Pipeline(load_config(overrides=overrides(run, *files))).data.samples()
    assert drawn and not kept & set(drawn), "the killed launch's batches are kept, not drawn again"
    assert _canon(got) == _canon(want)
    assert not list(run.rglob("*.rank*of*"))


def test_model_scorers_expose_the_batches_they_score():
    """ShardedScorer splits a scorer's own batch plan: the model scorers must publish it."""
    from alignment.steps.reward import ClassifierReward, EmbeddingReward

    assert callable(ClassifierReward.batches) and callable(EmbeddingReward.batches)
