"""End-to-end smoke on tiny local models: every stage runs, parameters change, artifacts land,
a re-run reuses the cache, a changed config is refused, the CLI reports bad config cleanly,
and same seed + config gives identical pairs and metrics."""
import math
import os
import subprocess
import sys
from itertools import combinations

import pytest
import torch
from safetensors.torch import load_file

from alignment.study import console
from alignment.run import experiments
from alignment.study.alarm import FLAGS
from alignment.study.frontier_report import verdict_lines
from alignment.study.report import conclusions, results_table
from alignment.config import load_config
from alignment.base.io import meta_path, read_json, read_jsonl, stable_hash, write_json
from alignment.study.metrics import METRICS_VERSION
from alignment.run.pipeline import Pipeline
from alignment.run.rundir import RunDirMismatch
from alignment.study.stats import verdict


def tiny_cfg(run_dir, policy, reward, data, **extra):
    o = {"run_dir": str(run_dir), "model.policy": str(policy), "reward.model": str(reward),
         "data.source": str(data), "data.n_train_prompts": 6, "data.n_eval_prompts": 4,
         "data.prompt_tokens": 4, "sample.n_samples": 3, "sample.max_new_tokens": 8,
         "eval.n_samples": 2, "eval.max_new_tokens": 8, "eval.n_boot": 50, "eval.n_seeds": 1,
         "dpo.batch_size": 4, "dpo.epochs": 1, "dpo.lr": 1e-3, "track.mode": "disabled",
         "eval.judge": "vader", "eval.topic_judge": str(reward)}
    o.update(extra)
    return load_config(overrides=o)


@pytest.fixture
def cfg(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    return tiny_cfg(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv)


def test_level1_end_to_end(cfg, tiny_gpt2_dir):
    pipe = Pipeline(cfg)
    res = experiments.level1(pipe)
    d = pipe.dir
    own = d / "draws" / "seed0"  # seed 0's own draw (data.per_seed)
    for f in ["manifest.json", "config.json", "prompts.json", "draws/seed0/prompts.json", "draws/seed0/samples.jsonl",
              "draws/seed0/rewards.json", "draws/seed0/pairs.jsonl", "draws/seed0/pairs_stats.json", "level1.json",
              "plots/level1_rewards.png", "plots/pair_margins.png", "plots/level1_training.png"]:
        assert (d / f).exists(), f
    assert read_json(d / "prompts.json")["train"] == []  # no shared draw: each seed has its own
    assert [r["model"] for r in res["rows"]] == ["sft", "sigmoid-b0.1-lr0.001-s0", "hinge-b0.1-lr0.001-s0", "human"]
    before = load_file(os.path.join(tiny_gpt2_dir, "model.safetensors"))
    after = load_file(str(d / "policies" / "sigmoid-b0.1-lr0.001-s0" / "model" / "model.safetensors"))
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed, "DPO did not change any parameter"
    for r in res["rows"][:3]:
        for k in ["eval/reward_mean", "eval/token_entropy", "eval/predictive_entropy", "eval/kl_to_ref",
                  "eval/ref_perplexity", "eval/distinct_2", "eval/judge_mean", "eval/on_topic"]:
            assert math.isfinite(r[k]), k  # not NaN, not inf
        assert r["eval/reward_ci_lo"] <= r["eval/reward_mean"] <= r["eval/reward_ci_hi"]
        assert 0 <= r["eval/on_topic_ci_lo"] <= r["eval/on_topic"] <= r["eval/on_topic_ci_hi"] <= 1
        for k in ("eval/token_entropy", "eval/predictive_entropy", "eval/kl_to_ref", "eval/ref_perplexity",
                  "eval/mean_length"):  # every drift/diversity metric has its prompt-clustered CI
            assert math.isfinite(r[f"{k}_ci_lo"]) and r[f"{k}_ci_lo"] <= r[f"{k}_ci_hi"], k
    for r in res["rows"][1:3]:  # both judges' gains, paired over prompts
        assert r["judge_gain_ci_lo"] <= r["judge_gain"] <= r["judge_gain_ci_hi"] and "judge_gain_p_holm" in r
        assert "on_topic_gain" in r
    human = res["rows"][3]  # the reviews' own continuations: scored by every judge, no KL (no model drew them)
    assert human["eval/kl_to_ref"] is None and human["eval/predictive_entropy"] is None
    assert math.isfinite(human["eval/judge_mean"]) and math.isfinite(human["eval/ref_perplexity"])
    assert "table" not in res and "ci_table" not in res  # the result holds data; the report builds the tables
    table = results_table(res["rows"])
    assert "| human |" in table and "–" in table
    (cmp,) = res["between_losses"]  # the losses against each other, paired over prompts and draws
    assert cmp["a"].startswith("sigmoid") and cmp["b"].startswith("hinge")
    assert cmp["reward_gain"] == pytest.approx(res["rows"][1]["eval/reward_mean"] - res["rows"][2]["eval/reward_mean"])
    assert f"`{cmp['a']}` vs `{cmp['b']}`" in conclusions(res) and "80 % power" in conclusions(res)
    assert abs(res["rows"][1]["eval/kl_to_ref"]) > 1e-3  # lr 1e-3 moved the policy off its reference
    _check_alarm(res, "level1", [r["model"] for r in res["rows"][1:3]], console.render("run", res), d)
    lesson = experiments.lr_lesson(pipe, lrs=(1e-3,))  # the sigmoid policy above, read back from the cache
    _check_alarm(lesson, "lr_lesson", [res["rows"][1]["model"]], console.render("lr-lesson", lesson), d)
    n_pairs = len(read_jsonl(own / "pairs.jsonl"))  # one log line per step of 4 pairs (1 epoch; 6 prompts: none held out)
    assert len(read_jsonl(d / "policies" / "sigmoid-b0.1-lr0.001-s0" / "train_log.jsonl")) == math.ceil(n_pairs / 4)
    # held-out isolation: no eval prompt text in any training pair
    prompts = read_json(d / "prompts.json")
    eval_texts = {p["text"] for p in prompts["eval"]}
    assert not eval_texts & {p["prompt"] for p in read_jsonl(own / "pairs.jsonl")}
    assert "| sft |" in table
    assert read_json(d / "level1.json")["examples"] == res["examples"]  # plain records
    assert {e["model"] for e in res["examples"]} == {r["model"] for r in res["rows"]}
    # where the wall time went: every kind of work Level 1 did, once; a rerun only reads its cache
    built = {r["stage"]: r["seconds"] for r in pipe.times.rows()}
    assert {"setup", "prompts", "sampling", "scoring", "reference log-probs", "training", "evaluation", "statistics",
            "I/O", "model loading"} <= set(built) and all(v > 0 for v in built.values())
    again = Pipeline(cfg)
    experiments.level1(again)
    rerun = {r["stage"]: r["seconds"] for r in again.times.rows()}
    assert not {"sampling", "scoring", "reference log-probs", "training", "evaluation"} & set(rerun)


def _check_alarm(res: dict, name: str, models: list[str], text: str, run_dir) -> None:
    """A result's alarm records: one per trained policy, plain data in its JSON (numbers, names, flag
    names: no Markdown), each policy's verdict in the rendered output."""
    assert [a["model"] for a in res["alarm"]] == models
    assert read_json(run_dir / f"{name}.json")["alarm"] == res["alarm"]
    for a in res["alarm"]:
        assert set(a["flags"]) <= set(FLAGS)
        numbers = {k: v for k, v in a.items() if k not in ("model", "label", "flags")}
        assert all(v is None or isinstance(v, (int, float)) for v in numbers.values()), numbers
        assert math.isfinite(a["gap_sd"]) and a["gap_ci_lo"] <= a["gap_sd"] <= a["gap_ci_hi"]  # vader judge: a gap
        verdict_text = "no sign of reward hacking" if not a["flags"] else "possible reward hacking: "
        shown = a["model"] + (f" β={a['beta']:g}" if "beta" in a else "") + ": "
        assert any(line.startswith(shown + verdict_text) for line in text.splitlines()), shown
    assert "Reward-hacking alarm" in text


def _comparable_pairs(points: list[dict], non_monotone: list[str], bound: str | None) -> dict[frozenset, int]:
    """{pair of curves: number of fields both carry} for the pairs the sweep may compare: both KL-monotone,
    neither the bound, trained KL ranges (β < ∞ / N >= 2 point estimates, from 1e-3 up) overlapping."""
    curves: dict[str, list[dict]] = {}
    for p in points:
        curves.setdefault(p["label"], []).append(p)
    ranges = {c: (max(min(p["kl"] for p in pts[1:]), 1e-3), max(p["kl"] for p in pts[1:]))
              for c, pts in curves.items() if c != bound and c not in non_monotone and len(pts) > 1}
    fields = {c: {f for f in ("reward", "judge", "pred_entropy") if all(p.get(f) is not None for p in curves[c])}
              for c in ranges}
    return {frozenset((a, b)): len(fields[a] & fields[b]) for a, b in combinations(ranges, 2)
            if max(ranges[a][0], ranges[b][0]) < min(ranges[a][1], ranges[b][1])}


def test_the_notebooks_training_step_leaves_level1_unchanged(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """The notebook trains first (`level1_train`), then calls `level1`: the same level1.json and
    policies as `level1` alone (the CLI's `run`), and `level1` then trains nothing more."""
    alone = Pipeline(tiny_cfg(tmp_path / "alone", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv))
    experiments.level1(alone)
    steps = Pipeline(tiny_cfg(tmp_path / "steps", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv))
    steps.prepare()
    policies = experiments.level1_train(steps)
    assert [p.name for ps in policies.values() for p in ps] == ["sigmoid-b0.1-lr0.001-s0", "hinge-b0.1-lr0.001-s0"]
    trained = steps.times.seconds["training"]
    experiments.level1(steps)
    assert steps.times.seconds["training"] == trained
    a, b = read_json(alone.dir / "level1.json"), read_json(steps.dir / "level1.json")
    assert {k: v for k, v in a.items() if k != "plots"} == {k: v for k, v in b.items() if k != "plots"}
    for p in (p for ps in policies.values() for p in ps):
        for f in ("train_log.jsonl", "model/model.safetensors"):
            assert (alone.dir / "policies" / p.name / f).read_bytes() == (p.dir / f).read_bytes(), (p.name, f)


def test_rerun_uses_cache_and_refuses_other_config(cfg, tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    pipe = Pipeline(cfg)
    pairs1, _ = pipe.data.pairs()
    samples = pipe.paths.draw(0).samples
    mtime = samples.stat().st_mtime_ns
    pipe2 = Pipeline(cfg)
    assert pipe2.data.pairs()[0] == pairs1
    assert samples.stat().st_mtime_ns == mtime
    other = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv, **{"sample.temperature": 0.7})
    with pytest.raises(RunDirMismatch, match="sample"):
        Pipeline(other).data.samples()
    meta = read_json(meta_path(samples))  # samples drawn another way (no `draws` in their key) are refused, not mixed
    old = {k: v for k, v in meta["deps"].items() if k != "draws"}
    write_json(meta_path(samples), {**meta, "deps": old, "hash": stable_hash(old)})
    with pytest.raises(RunDirMismatch, match="draws"):
        Pipeline(cfg).data.samples()


def test_an_evaluation_is_measured_once_and_read_back(cfg):
    """metrics.json is what a cached evaluation shows; metrics of another `metrics_of` version (or
    none recorded) are re-measured from the stored samples."""
    pipe = Pipeline(cfg)
    first = pipe.evaluate()
    path = pipe.paths.eval("sft") / "metrics.json"
    stored = read_json(path)
    assert stored.pop("metrics_version") == METRICS_VERSION and stored == first.metrics
    write_json(path, {**stored, "eval/reward_mean": 123.0, "metrics_version": METRICS_VERSION})
    assert Pipeline(cfg).evaluate().metrics["eval/reward_mean"] == 123.0  # read back, not recomputed
    write_json(path, {**stored, "eval/reward_mean": 123.0, "metrics_version": METRICS_VERSION - 1})
    assert Pipeline(cfg).evaluate().metrics == first.metrics  # another version: re-measured


def test_same_seed_same_pairs_and_metrics(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    out = []
    for name in ("a", "b"):
        pipe = Pipeline(tiny_cfg(tmp_path / name, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv))
        out.append((pipe.data.pairs()[0], pipe.evaluate(pipe.train()).metrics))
    assert out[0][0] == out[1][0]
    m0, m1 = ({k: v for k, v in m.items() if k != "model"} for _, m in out)
    assert m0 == pytest.approx(m1, rel=1e-5, abs=1e-6)


def test_cli_bad_config_message():
    res = subprocess.run([sys.executable, "-m", "alignment", "pairs", "--set", "dpo.loss=bogus"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "dpo.loss='bogus'" in res.stderr and "sigmoid" in res.stderr
    assert "Traceback" not in res.stderr


def test_judge_never_enters_training(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """Changing the judge changes no training artifact: the pairs are reused as they are (their
    cache does not depend on eval.*), and a fresh run with another judge builds identical pairs
    and identical rewards, while the judge's own scores differ."""
    import shutil

    args = (tiny_gpt2_dir, tiny_classifier_dir, reviews_csv)
    judge = shutil.copytree(tiny_classifier_dir, tmp_path / "judge")  # another classifier (not the reward itself)
    pipe = Pipeline(tiny_cfg(tmp_path / "a", *args, **{"eval.judge": "vader"}))
    pairs, _ = pipe.data.pairs()
    ev = pipe.evaluate()
    stamp = pipe.paths.draw(0).pairs.stat().st_mtime_ns
    other = tiny_cfg(tmp_path / "a", *args, **{"eval.judge": str(judge)})
    assert Pipeline(other).data.pairs()[0] == pairs and pipe.paths.draw(0).pairs.stat().st_mtime_ns == stamp
    with pytest.raises(RunDirMismatch):  # the evaluation does depend on the judge
        Pipeline(other).evaluate()
    pipe_b = Pipeline(tiny_cfg(tmp_path / "b", *args, **{"eval.judge": str(judge)}))
    assert pipe_b.data.pairs()[0] == pairs
    ev_b = pipe_b.evaluate()
    assert [r["reward"] for r in ev_b.scored] == [r["reward"] for r in ev.scored]
    assert [r["judge"] for r in ev_b.scored] != [r["judge"] for r in ev.scored]


def test_level1_pools_seeds_that_vary_training_and_evaluation(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """eval.n_seeds=2: each loss trains with dpo.seed 0 and 1, each on its seed's own draw of train
    prompts, samples and pairs (a third of the prompts held out: their pairs are scored during
    training, never trained on), each policy is evaluated with its seed's draws against the start
    policy's same draws; the row pools both seeds' samples."""
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                   **{"eval.n_seeds": 2, "eval.human_row": False, "eval.judge": "vader", "pairs.held_out": 0.34})
    pipe = Pipeline(cfg)
    res = experiments.level1(pipe, losses=("sigmoid",))
    train = {s: [p["text"] for p in pipe.data.prompts(s)["train"]] for s in (0, 1)}
    assert train[0] != train[1] and pipe.data.prompts(0)["eval"] == pipe.data.prompts(1)["eval"]  # own draws, one eval set
    assert [p["chosen"] for p in pipe.data.pairs(0)[0]] != [p["chosen"] for p in pipe.data.pairs(1)[0]]
    log = read_jsonl(pipe.dir / "policies" / "sigmoid-b0.1-lr0.001-s1" / "train_log.jsonl")
    # floor(0.34 x 6) = 2 prompts held out: 4 pairs train in one step of 4, then the held-out pairs are scored
    assert len(log) == 1 and "eval_rewards/accuracies" in log[-1] and "eval_loss" in log[-1]
    assert res["pairs"]["n_held_out"] == 2 and res["pairs"]["per_seed"]
    t = res["training"]["sigmoid-b0.1-lr0.001-s1"]
    assert t["eval_rewards/accuracies"] == log[-1]["eval_rewards/accuracies"] and t["steps"] == 1
    assert [r["model"] for r in res["rows"]] == ["sft", "sigmoid-b0.1-lr0.001-s0-1"] and res["seeds"] == [0, 1]
    start_0, start_1 = pipe.evaluate(seed=0), pipe.evaluate(seed=1)
    assert [r["completion"] for r in start_0.scored] != [r["completion"] for r in start_1.scored]  # other draws
    assert (pipe.dir / "eval" / "sft-e1").is_dir() and (pipe.dir / "policies" / "sigmoid-b0.1-lr0.001-s1").is_dir()
    row = res["rows"][1]
    n_eval = cfg.data.n_eval_prompts * cfg.eval.n_samples
    assert row["n_samples"] == 2 * n_eval and res["rows"][0]["n_samples"] == 2 * n_eval
    pooled_mean = sum(r["eval/reward_mean"] for r in res["per_seed"]) / 2  # equal sample counts per seed
    assert row["eval/reward_mean"] == pytest.approx(pooled_mean, abs=1e-6)
    assert [r["seed"] for r in res["per_seed"]] == [0, 1]
    assert row["gain_ci_lo"] <= row["reward_gain"] <= row["gain_ci_hi"]
    assert row["reward_gain"] == pytest.approx(sum(r["reward_gain"] for r in res["per_seed"]) / 2, abs=1e-6)
    text = conclusions(res)
    assert "**Seeds** (2" in text and f"{res['per_seed'][1]['reward_gain']:+.3f}" in text
    assert "its own train prompts, samples and pairs" in text and "**Held-out pairs** (2 per seed" in text


def test_seeds_share_one_draw_without_per_seed(tmp_path, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv):
    """data.per_seed=false: every seed trains on the run dir's one draw (its files at the top)."""
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv, **{"data.per_seed": False})
    pipe = Pipeline(cfg)
    assert pipe.data.draw_of(0) is None and pipe.data.draw_of(1) is None
    assert pipe.data.pairs(0) == pipe.data.pairs(1) and pipe.paths.pairs.exists() and not (pipe.dir / "draws").exists()
    assert [p["id"] for p in pipe.data.prompts()["train"]] == [f"train{i}" for i in range(6)]


def test_sweep_traces_frontiers_with_best_of_n_and_matched_kl(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                              reviews_csv):
    """The Level 2/3 sweep on tiny models with LoRA: per divergence a curve from the start through
    its β values (seeds pooled), best-of-N from 16 start samples, matched-KL comparisons with
    verdicts, three frontier plots; policies are adapters; the start's KL is on-policy (~0)."""
    cfg = tiny_cfg(tmp_path / "sw", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                   **{"dpo.lora_r": 4, "dpo.lora_alpha": 8.0, "dpo.lr": 5e-3})
    pipe = Pipeline(cfg)
    res = experiments.sweep(pipe, ("reverse_kl", "forward_kl"), (0.1, 1.0), (0, 1), (0.5,), (1, 2, 4, 8, 16))
    assert len(res["runs"]) == 8 and {r["seed"] for r in res["runs"]} == {0, 1}
    labels = [p["label"] for p in res["points"]]
    assert labels.count("reverse_kl") == 3 and labels.count("best-of-N") == 5  # start + 2 β; N = 1..16
    start = next(p for p in res["points"] if p["label"] == "reverse_kl" and p["beta"] == float("inf"))
    assert abs(start["kl"]) < 0.05 and start["kl_lo"] <= start["kl"] <= start["kl_hi"]
    bon = [p for p in res["points"] if p["label"] == "best-of-N"]
    assert [p["n"] for p in bon] == [1, 2, 4, 8, 16] and all(p.get("pred_entropy") is None for p in bon)
    n16 = read_jsonl(pipe.paths.eval("sft-n16") / "scored.jsonl")  # seed 0's 16 start samples per prompt
    best = {}
    for r in n16:
        best[r["prompt_id"]] = max(best.get(r["prompt_id"], -math.inf), r["reward"])
    n16_1 = read_jsonl(pipe.paths.eval("sft-e1-n16") / "scored.jsonl")
    best1 = {}
    for r in n16_1:
        best1[r["prompt_id"]] = max(best1.get(r["prompt_id"], -math.inf), r["reward"])
    want = (sum(best.values()) + sum(best1.values())) / (len(best) + len(best1))
    assert bon[-1]["reward"] == pytest.approx(want)  # best of all 16 = the max, averaged over seeds and prompts
    for label in {p["label"] for p in res["points"]}:  # a curve is compared at matched KL only if KL rises along it
        kls = [p["kl"] for p in res["points"] if p["label"] == label]  # in curve order: start, β down / N up
        assert (label in res["non_monotone"]) == any(b < a for a, b in zip(kls, kls[1:])), label
    # which comparisons the point table allows, worked out here from the points alone: per pair of KL-monotone
    # curves (the KL-optimal bound is never compared) with overlapping trained KL ranges, 3 KL values per field
    # both curves carry (best-of-N has no pred_entropy); the sweep drops a value fewer than 99 % of draws reach
    allowed = _comparable_pairs(res["points"], res["non_monotone"], res.get("optimum", {}).get("label"))
    compared = [frozenset((c["a"], c["b"])) for c in res["comparisons"]]
    assert set(compared) <= set(allowed) and len(compared) <= sum(3 * n for n in allowed.values())
    assert all(compared.count(pair) <= 3 * n for pair, n in allowed.items())
    # tiny models barely move and β does not order their KL (noise): with these seeds neither divergence curve
    # is KL-monotone, `allowed` is empty and the bound above says nothing may be compared; the verdicts of
    # comparisons that exist: test_frontier.py
    for c in res["comparisons"] + res["matched_reward"]:
        assert c["verdict"] == verdict(c["lo"], c["hi"], c["p_holm"]) and c["lo"] <= c["diff"] <= c["hi"]
    assert all(c["x"] == "reward" and c["field"] == "pred_entropy" for c in res["matched_reward"])
    assert "At matched reward (the reward–diversity axis of Wang et al. 2023" in console.render("sweep", res)
    assert "verdicts" not in res  # data only: the report words it
    assert [(a["label"], a["beta"]) for a in res["alarm"]] == [(lo, b) for lo in ("reverse_kl", "forward_kl")
                                                               for b in (0.1, 1.0)]
    _check_alarm(res, "sweep", [a["label"] for a in res["alarm"]], console.render("sweep", res), pipe.dir)
    assert len(verdict_lines(res["comparisons"])) == sum(c["field"] == "reward" for c in res["comparisons"])
    for f in res["plots"]:
        assert os.path.getsize(f) > 1000, f
    adapter = pipe.paths.policy("reverse_kl-lora4-b0.1-lr0.005-s0") / "model"
    assert (adapter / "adapter_config.json").exists() and not (adapter / "model.safetensors").exists()
    assert read_json(pipe.paths.result("sweep"))["matched_kl"] == res["matched_kl"]


def test_a_sampler_that_loads_saved_models_in_another_process_runs_level1(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                          reviews_csv, monkeypatch):
    """The sampler seam by model reference: tests/subprocess_sampler.py (one module, `TAKES_REF`, and one line in
    `SAMPLERS`) draws every sample of Level 1 in a child process from the saved weights (the start policy's dir;
    base + LoRA adapter for the trained policies) and gets the fast backend's tokens row for row."""
    import subprocess_sampler

    from alignment.steps.samplers import SAMPLERS

    monkeypatch.setitem(SAMPLERS, "subprocess", "subprocess_sampler")
    monkeypatch.setattr(subprocess_sampler, "CALLS", [])
    over = {"dpo.lora_r": 4, "dpo.lora_alpha": 8.0, "model.dtype": "float32", "eval.n_seeds": 1}
    runs = {b: Pipeline(tiny_cfg(tmp_path / b, tiny_gpt2_dir, tiny_classifier_dir, reviews_csv,
                                 **{**over, "sample.backend": b})) for b in ("fast", "subprocess")}
    for pipe in runs.values():
        experiments.level1(pipe)
    files = sorted(p.relative_to(runs["fast"].dir) for p in runs["fast"].dir.rglob("samples.jsonl"))
    assert len(files) == 4  # the start policy's training samples; the start, sigmoid and hinge evaluations
    assert sum(subprocess_sampler.CALLS) == 6 * 3 + 3 * 4 * 2  # every row drawn on the far side
    for f in files:
        a, b = (read_jsonl(runs[k].dir / f) for k in ("fast", "subprocess"))
        assert [r["completion_ids"] for r in a] == [r["completion_ids"] for r in b], f
        assert all(abs(x - y) < 1e-4 for r, s in zip(a, b) for x, y in zip(r["sample_logps"], s["sample_logps"]))


def test_a_frontier_refuses_a_bad_point_before_anything_loads(cfg, tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                             reviews_csv, monkeypatch):
    """Every (family, β) of a sweep or of Level 3 is checked as the config is, before anything loads or trains."""
    from alignment.config import ConfigError
    monkeypatch.setattr(Pipeline, "prepare", lambda *a, **k: pytest.fail("models loaded before the settings were checked"))
    with pytest.raises(ConfigError, match="dpo.beta=-1.0 is invalid"):
        experiments.sweep(Pipeline(cfg), losses=("sigmoid",), betas=(0.1, -1.0), seeds=(0,), best_of_n=(1, 2))
    warm = tiny_cfg(tmp_path / "warm", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv, **{"sample.temperature": 0.7})
    with pytest.raises(ConfigError, match="dpo.method=rloo's policy gradient"):
        experiments.level3(Pipeline(warm), methods=("dpo", "rloo"), betas=(0.3,), seeds=(0,), best_of_n=(1, 2))


class _AtTheOptimizer(Exception):
    """Raised by a stand-in training loop once it has seen how deep it was called."""


def test_the_run_command_reaches_the_training_loop_in_eight_frames(tmp_path, tiny_gpt2_dir, tiny_classifier_dir,
                                                                    reviews_csv, monkeypatch):
    """`python -m alignment run` to the loop that steps the optimizer: cli.main, run_stage, level1,
    level1_train, Pipeline.train, train_policy, train_dpo, train_loop; no decorator, closure or cache
    wrapper in between (a stage's work is a `cache.building` block in its own method)."""
    import inspect
    import yaml

    from alignment import cli
    from alignment.steps import dpo

    def loop(*args, **kwargs):
        names = [f.function for f in inspect.stack()]
        raise _AtTheOptimizer(names[: names.index("main") + 1])

    monkeypatch.setattr(dpo, "train_loop", loop)
    cfg = tiny_cfg(tmp_path / "run", tiny_gpt2_dir, tiny_classifier_dir, reviews_csv)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    with pytest.raises(_AtTheOptimizer) as got:
        cli.main(["run", "--config", str(tmp_path / "c.yaml")])
    assert got.value.args[0] == ["loop", "train_dpo", "train_policy", "train", "level1_train", "level1", "run_stage",
                                 "main"]
