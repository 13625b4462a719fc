"""How much the sampling dtype moves the published numbers: CPUs with native bf16 sample in bf16
(`model.dtype=auto`), CPUs without it in fp32, so the same seed gives different draws there. This
re-evaluates a run dir's start policy and one trained policy with the same evaluation seed in both
dtypes (same prompts, same scorers, fp32 reference) and prints each metric per dtype with its
prompt-clustered CI, the difference (paired over prompts), and the gain vs the start in each.

    python -m benchmarks.sampling_dtype --run-dir runs/notebook-default --policy sigmoid-b0.1-lr5e-05-s0

Run by hand (a few minutes on 2 cores); writes benchmarks/results-dtype.md. Never gates CI.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignment.config import load_config  # noqa: E402
from alignment.steps.evaluate import evaluate_model  # noqa: E402
from alignment.base.io import read_json, read_jsonl  # noqa: E402
from alignment.base.machine import hardware  # noqa: E402
from alignment.study.metrics import metrics_of  # noqa: E402
from alignment.run.pipeline import Pipeline  # noqa: E402
from alignment.run.rundir import Policy  # noqa: E402
from alignment.study.markdown import markdown_table  # noqa: E402
from alignment.study.stats import paired_prompt_bootstrap  # noqa: E402

FIELDS = (("reward", "eval/reward_mean"), ("judge", "eval/judge_mean"), ("on_topic", "eval/on_topic"))
def ci(key: str) -> str:
    """The CI key prefix of a metric (the reward's CI is eval/reward_ci_*)."""
    return "eval/reward" if key == "eval/reward_mean" else key


KEYS = ("eval/reward_mean", "eval/judge_mean", "eval/on_topic", "eval/kl_to_ref", "eval/predictive_entropy",
        "eval/ref_perplexity")


def _evaluate(pipe: Pipeline, policy: Policy | None, dtype: torch.dtype, out: Path) -> list[dict]:
    m = pipe.models
    model, ref = (m.ref_model, None) if policy is None else (m.load_trained(policy.dir), m.ref_model)
    evaluate_model(policy.name if policy else "sft", model, ref, m.tokenizer, m.scorers, pipe.data.prompts()["eval"],
                   pipe.cfg, m.stop_ids, out, sample_dtype=dtype, seed=0)
    return read_jsonl(out / "scored.jsonl")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/notebook-default")
    ap.add_argument("--policy", default="sigmoid-b0.1-lr5e-05-s0")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results-dtype.md"))
    args = ap.parse_args(argv)
    pipe = Pipeline(_run_config(args.run_dir))
    pipe.prepare()
    policy = next(p for p in pipe.policies() if p.name == args.policy)
    t0, scored = time.time(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (torch.float32, torch.bfloat16):
            for name, pol in (("start", None), ("policy", policy)):
                scored[(name, dtype)] = _evaluate(pipe, pol, dtype, Path(tmp) / f"{name}-{dtype}")
    n = pipe.cfg.eval.n_boot
    rows = []
    for name in ("start", "policy"):
        for dtype in (torch.float32, torch.bfloat16):
            m = metrics_of(name, scored[(name, dtype)], n)
            rows.append({"model": f"{name} ({args.policy if name == 'policy' else 'sft'})",
                         "sampling dtype": str(dtype).split(".")[1],
                         **{k.split("/")[1]: f"{m[k]:.3f}" + (f" ({m[ci(k) + '_ci_lo']:.3f}..{m[ci(k) + '_ci_hi']:.3f})"
                                                              if ci(k) + "_ci_lo" in m else "")
                            for k in KEYS if m.get(k) is not None}})
    diffs = []
    for name in ("start", "policy"):
        a, b = scored[(name, torch.bfloat16)], scored[(name, torch.float32)]
        for field, _ in FIELDS:
            d = paired_prompt_bootstrap([r[field] for r in a], [r["prompt_id"] for r in a],
                                        [r[field] for r in b], [r["prompt_id"] for r in b], n_boot=n)
            diffs.append({"model": name, "metric": f"{field}: bf16 - fp32", "difference": f"{d['diff']:+.3f}",
                          "95 % CI": f"{d['lo']:+.3f} .. {d['hi']:+.3f}"})
    for dtype in (torch.float32, torch.bfloat16):
        a, b = scored[("policy", dtype)], scored[("start", dtype)]
        d = paired_prompt_bootstrap([r["reward"] for r in a], [r["prompt_id"] for r in a],
                                    [r["reward"] for r in b], [r["prompt_id"] for r in b], n_boot=n)
        diffs.append({"model": "policy - start", "metric": f"reward gain, both sampled in {str(dtype).split('.')[1]}",
                      "difference": f"{d['diff']:+.3f}", "95 % CI": f"{d['lo']:+.3f} .. {d['hi']:+.3f}"})
    h = hardware()
    text = "\n".join([
        "# Sampling dtype: bf16 vs fp32 draws, same seed", "",
        f"`python -m benchmarks.sampling_dtype --run-dir {args.run_dir} --policy {args.policy}` — "
        f"{(time.time() - t0) / 60:.1f} min on {h['cpu']} (native bf16: {h['cpu_native_bf16']}), "
        f"{h['cpu_cores']} cores, torch {h['torch']}, {h['date']}.", "",
        f"Same held-out prompts ({len(pipe.data.prompts()['eval'])}), same evaluation seed (0), {pipe.cfg.eval.n_samples} "
        "samples per prompt; the reference scores in fp32 both times; KL and predictive entropy are on-policy "
        "(the sampler's own log-probs).", "",
        markdown_table(rows), "",
        "Differences bf16 - fp32 (paired over prompts; the draws themselves differ, so this is the spread a "
        "reader on the other kind of CPU should expect), and the reward gain measured within each dtype:", "",
        markdown_table(diffs), ""])
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _run_config(run_dir: str):
    """The run dir's own config (config.json), tracking off."""
    saved = read_json(Path(run_dir) / "config.json")
    flat = {f"{sec}.{k}": v for sec, vals in saved.items() if isinstance(vals, dict) for k, v in vals.items()}
    flat.update({k: v for k, v in saved.items() if not isinstance(v, dict)})
    flat["track.mode"] = "disabled"
    return load_config(overrides=flat)


if __name__ == "__main__":
    raise SystemExit(main())
