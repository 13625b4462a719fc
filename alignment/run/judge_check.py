"""How independent of the reward is each judge? `python -m alignment judge-check EVAL_DIR`

Scores the held-out `test` snippets with the reward, the linear-head judge (`offline`) and the
fine-tuned judge (`offline-ft`), as evaluation loads them (`RewardConfig()` defaults), and prints:
each scorer's accuracy; against the reward, the sign agreement of the logits, their correlation and
the phi coefficient of the two error indicators (1 = the same snippets wrong, 0 = unrelated errors);
each scorer's mean on degenerate text: the test snippets with their words shuffled, and prompt +
completion (as `reward.score_prompt=True` scores them) of the evaluations named in `POLICIES` under
EVAL_DIR (a run dir's `eval/`). The result goes to `independence.json` beside the fine-tuned judge's
metrics.json.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import RewardConfig
from ..assets.corpus import snippets_by_role
from ..base.io import read_jsonl, write_json
from ..base.timing import bars_off
from ..steps.reward import FT_JUDGE, ensure_head, head_dir, offline_ft_judge, offline_head, reward_texts
from ..study.stats import paired_phi_gap, phi

POLICIES = {"word salad (lr 1e-3)": "sigmoid-b0.1-lr0.001-s0", "healthy (lr 5e-5)": "sigmoid-b0.1-lr5e-05-s0",
            "start (SFT)": "sft"}  # label -> evaluation name under EVAL_DIR


def shuffle_words(text: str, rng: random.Random) -> str:
    """The words of `text` in a seeded random order."""
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def versus(s: torch.Tensor, ref: torch.Tensor, y: torch.Tensor) -> dict:
    """Scores `s` against `ref` on labels `y`: sign agreement (and what independent errors would give),
    logit correlation, the phi coefficient of the two error indicators, how often both are wrong."""
    err, ref_err = (s > 0).long() != y, (ref > 0).long() != y
    pa, pb = err.float().mean().item(), ref_err.float().mean().item()
    return {"sign_agreement": ((s > 0) == (ref > 0)).float().mean().item(),
            "agreement_if_independent": (1 - pa) * (1 - pb) + pa * pb,
            "logit_r": torch.corrcoef(torch.stack([s, ref]))[0, 1].item(), "error_phi": phi(err, ref_err),
            "both_wrong": (err & ref_err).float().mean().item(), "p_wrong_given_ref_wrong": err[ref_err].float().mean().item()}


def measure(scorers: dict, rows: list[tuple[str, int]], texts: dict[str, list[str]], seed: int = 0,
            n_boot: int = 2000) -> dict:
    """{"scorers": name -> numbers, "error_phi_gaps": ...} for `scorers` (name -> scorer; the first is
    the reference) on test `rows` and on each list of degenerate `texts`; a gap is the error phi with
    the reference of one scorer minus the next one's, with its bootstrap CI (`stats.paired_phi_gap`)."""
    rng = random.Random(seed)
    y = torch.tensor([l for _, l in rows])
    shuffled = [shuffle_words(t, rng) for t, _ in rows]
    sets = {"test": [t for t, _ in rows], "shuffled": shuffled, **texts}
    bar = tqdm(total=len(scorers) * sum(map(len, sets.values())), desc="judge check", unit="text", disable=bars_off())
    scored = {}
    for n, sc in scorers.items():  # every scorer on every set of texts, one call per set
        for label, ts in sets.items():
            bar.set_postfix_str(f"{n}: {label}")
            scored[n, label] = sc.score(ts).float()
            bar.update(len(ts))
    bar.close()
    scores = {n: (scored[n, "test"], scored[n, "shuffled"]) for n in scorers}
    ref, *others = scores
    err = {n: ((s > 0).long() != y).numpy() for n, (s, _) in scores.items()}
    out = {}
    for n, (s, s_shuf) in scores.items():
        out[n] = {"accuracy": ((s > 0).long() == y).float().mean().item(), "mean": s.mean().item(),
                  "mean_abs": s.abs().mean().item(), "shuffled_accuracy": ((s_shuf > 0).long() == y).float().mean().item(),
                  "shuffled_mean": s_shuf.mean().item(), "shuffled_mean_abs": s_shuf.abs().mean().item(),
                  "degenerate": {label: scored[n, label].mean().item() for label in texts}}
        if n != ref:
            out[n]["vs_" + ref] = versus(s, scores[ref][0], y)
    gaps = {f"{a} - {b}": paired_phi_gap(err[ref], err[a], err[b], n_boot, seed=seed) for a, b in zip(others, others[1:])}
    return {"scorers": out, "error_phi_gaps": gaps}


def table(res: dict) -> str:
    """The measurements as aligned text rows, one per scorer, then the error-phi gaps."""
    rows = res["scorers"]
    ref = next(iter(rows))
    labels = list(rows[ref]["degenerate"])
    head = ["scorer", "acc", "agree", "agree if indep.", "logit r", "err phi", "shuf acc", "|s|", "shuf |s|"]
    lines = [" | ".join(head + labels)]
    for n, r in rows.items():
        v = r.get("vs_" + ref, {})
        vs = [f"{v[k]:.3f}" if v else "-" for k in ("sign_agreement", "agreement_if_independent", "logit_r", "error_phi")]
        lines.append(" | ".join([n, f"{r['accuracy']:.3f}", *vs, f"{r['shuffled_accuracy']:.3f}", f"{r['mean_abs']:.2f}",
                                 f"{r['shuffled_mean_abs']:.2f}", *(f"{r['degenerate'][l]:+.2f}" for l in labels)]))
    lines += [f"error phi with {ref}, {pair}: {g['diff']:+.3f} (95% CI {g['lo']:+.3f} .. {g['hi']:+.3f}, p {g['p']:.3g})"
              for pair, g in res["error_phi_gaps"].items()]
    return "\n".join(lines)


def main(argv: list[str]) -> dict:
    """Load the three scorers, measure, print the table and write independence.json."""
    missing = [n for n in POLICIES.values() if len(argv) != 1 or not (Path(argv[0]) / n / "scored.jsonl").is_file()]
    if missing:
        raise SystemExit(f"usage: python -m alignment judge-check EVAL_DIR: a run dir's eval/ holding "
                         f"<name>/scored.jsonl for {', '.join(POLICIES.values())} (missing: {', '.join(missing)})")
    recs = {label: read_jsonl(Path(argv[0]) / name / "scored.jsonl") for label, name in POLICIES.items()}
    cfg = RewardConfig()
    for kind in ("reward", "judge", FT_JUDGE):  # built once (a scorer load never builds them)
        ensure_head(kind)
    scorers = {"reward": offline_head("reward", cfg.batch_size, cfg.max_length, cfg.dtype),
               "judge": offline_head("judge", cfg.batch_size, cfg.max_length, cfg.dtype),
               "judge_ft": offline_ft_judge(cfg.batch_size, cfg.max_length, cfg.dtype)}
    rows = [(s.text, s.label) for s in snippets_by_role()["test"]]
    res = measure(scorers, rows, {label: reward_texts(r, True) for label, r in recs.items()})
    res["stored_means"] = {label: {k: sum(x[k] for x in r) / len(r) for k in ("reward", "judge")}
                           for label, r in recs.items()}  # what the evaluation recorded, for comparison
    print(table(res))
    write_json(head_dir(FT_JUDGE) / "independence.json", {**res, "eval_dir": str(argv[0]), "dtype": cfg.dtype})
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
