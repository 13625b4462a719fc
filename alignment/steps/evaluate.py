"""Honest evaluation on held-out prompts: every model is scored on its *own fresh samples*.

For each model (`metrics.metrics_of`, from the annotated samples): the training reward (mean/median, prompt-clustered bootstrap CI), an independent
sentiment **judge** that never influenced training (Gao et al. 2022's gold vs proxy), the
**on-topic** rate (fraction of completions an on-topic judge calls part of a movie review: a gain
made of off-topic cheer shows here), the assignment's unigram token entropy, the f-DPO paper's
mean per-token predictive entropy, distinct-1/2, a sequence-level KL(pi || pi_ref) estimate from
the samples, and perplexity under the reference model (fluency: word salad shows up here even
when reward and entropy both go up).

The **human row** (`evaluate_human`) is the real reviews' own continuations of the same eval
openings, cut to the same token budget, scored by every judge: the ceiling for "writes movie
reviews" and the reference point for fluency.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..study.alarm import other_prompt_index
from ..config import Config
from ..base.distributed import Dist
from ..base.machine import FORWARD_LOGIT_COPIES, SCORING_LOGIT_COPIES, auto_forward_rows
from ..base.io import read_json, read_jsonl, write_json, write_jsonl
from ..base.timing import slow_bar
from .logprobs import collate, model_logits, model_token_logps, token_logps
from ..study.metrics import METRICS_VERSION, kl_control_variate, mean_predictive_entropy, metrics_of
from .reward import check_finite, reward_texts, score_records
from .decode import filter_logits
from ..assets.models import cast_model
from .sampling import sample_to_file


EVAL_VERSION = 2  # 2: KL / predictive entropy on the sampler's own log-probs (1: fp32 re-scoring of bf16 draws)


class Evaluation(NamedTuple):
    metrics: dict       # eval/* metrics of one model on its own held-out samples
    scored: list[dict]  # those samples with their rewards, in prompt order


def load_evaluation(out_dir: Path, n_boot: int) -> Evaluation:
    """An evaluation dir as written by `evaluate_model`/`evaluate_human`: its annotated samples
    (`scored.jsonl`) and its metrics as computed when it was built (`metrics.json`) — or, when they
    were computed by another version of `metrics.metrics_of` (`METRICS_VERSION`), recomputed from
    the samples (with `n_boot` resamples), so a cached evaluation is always measured by this code."""
    stored, scored = read_json(out_dir / "metrics.json"), read_jsonl(out_dir / "scored.jsonl")
    if stored.pop("metrics_version", None) != METRICS_VERSION:
        stored = metrics_of(stored["model"], scored, n_boot)
    return Evaluation(stored, scored)


def pooled(name: str, evals: list[Evaluation], n_boot: int, measure: bool = True) -> Evaluation:
    """Evaluations of one model under several seeds as one: their samples together (tagged with
    the seed's index), metrics recomputed (`measure=False`: only {"model": name}, for callers that
    use the samples alone); CIs resample seeds and prompts."""
    if len(evals) == 1:
        return Evaluation({**evals[0].metrics, "model": name}, evals[0].scored)
    scored = [{**r, "seed_index": k} for k, ev in enumerate(evals) for r in ev.scored]
    return Evaluation(metrics_of(name, scored, n_boot) if measure else {"model": name}, scored)


@dataclass
class Scorers:
    """What grades a completion: the training reward, and (optional) the judges."""
    reward: object              # score(texts) -> (n,); the proxy that built the pairs
    judge: object | None = None  # independent sentiment judge, same texts as the reward
    topic: object | None = None  # on-topic judge: logit > 0 = part of a movie review (completion only)
    score_prompt: bool = True    # reward and judge see prompt + completion


def score_all(scorers: Scorers, recs: list[dict]) -> dict[str, list[float]]:
    """Per-record reward, judge score and on_topic (1/0; an empty completion is off-topic)."""
    texts = reward_texts(recs, scorers.score_prompt)
    out = {"reward": score_records(scorers.reward, recs, scorers.score_prompt)}
    if scorers.judge is not None:
        out["judge"] = check_finite(scorers.judge.score(texts), texts).tolist()
    if scorers.topic is not None:
        comp = [r["completion"] for r in recs]
        logit = check_finite(scorers.topic.score([c if c.strip() else "." for c in comp]), comp)
        out["on_topic"] = [float(x > 0 and c.strip() != "") for x, c in zip(logit.tolist(), comp)]
    return out


def _row_tokens(tok_lp: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """(b, T-1) token log-probs, (b, T) completion mask -> each row's completion-token log-probs."""
    keep = mask[:, 1:].bool().cpu()
    return [row[k].tolist() for row, k in zip(tok_lp.float().cpu(), keep)]


def other_prompts(prompts: list[dict]) -> dict[str, list[int]] | None:
    """{prompt id: another eval prompt's token ids} (`alarm.other_prompt_index`, seed 0: the same pairing for
    the start policy and every trained one), under which the reference scores each completion again for
    `ref_logp_other` (the alarm's `prompt_relevance`); None with fewer than 2 prompts."""
    if len({p["id"] for p in prompts}) < 2:
        return None
    idx = other_prompt_index([p["id"] for p in prompts], seed=0)
    return {p["id"]: prompts[j]["ids"] for p, j in zip(prompts, idx)}


@torch.no_grad()
def logps_and_entropy(sampler, ref_model, prompt_ids: dict[str, list[int]], recs: list[dict], pad_id: int,
                      batch_size: int = 0, sample_cfg=None, other_ids: dict[str, list[int]] | None = None,
                      sampler_is_ref: bool = False) -> dict:
    """Per sample (N,): the sampling distribution's log q(y) and mean predictive entropy — the
    sampler's own (`sample_logps`, `sample_entropy` in the records) or, for records without them
    (backend=generate), a forward of `sampler` (the model in the dtype that drew) —, the
    reference's log p(y), the control-variate KL term sum_t (r_t - 1 - log r_t) with
    r_t = p(y_t|<t) / q(y_t|<t) (Schulman's k3; unbiased, >= 0 — only when q has full support: with
    top-k/top-p (`sample_cfg`) E_q[r_t - 1] is minus the reference's mass outside q's support, so
    `kl_cv` is None then), and token counts. The forward fallback applies the sampler's temperature
    and top-k/top-p (`sample_cfg`), so its log q is the sampling distribution's too.
    `sampler=None` (the human row): only the reference's log-probs and the counts. `other_ids` ({prompt id:
    another prompt's ids}, `other_prompts`): also the reference's log p(y) after that other prompt ("ref_other").
    `sampler_is_ref` (the start policy drawn by itself in its own dtype, `reuses_draw_logps`): where the records carry
    the sampler's log-probs of the full-support distribution, those are the reference's too (a forward's up to
    the numerics of cached decoding: within 1e-4 nats per sequence in fp32), so no reference forward is run and
    the KL is exactly 0; the other-prompt forward still runs.
    `batch_size` samples per forward; 0: `eval_rows`."""
    batch_size = batch_size or eval_rows(ref_model, prompt_ids, recs, sampler)
    T, top_k, top_p = ((sample_cfg.temperature, sample_cfg.top_k, sample_cfg.top_p) if sample_cfg is not None
                       else (1.0, 0, 1.0))
    full_support = top_k == 0 and top_p >= 1.0
    out = {"policy": [], "ref": [], "entropy": [], "kl_cv": [], "n_tokens": [], **({"ref_other": []} if other_ids else {})}
    for i in slow_bar(range(0, len(recs), batch_size), len(recs), "evaluation log-probs", "seq",
                      size=lambda i: min(batch_size, len(recs) - i)):
        chunk = recs[i : i + batch_size]
        batch = collate([prompt_ids[r["prompt_id"]] for r in chunk], [r["completion_ids"] for r in chunk], pad_id)
        mask = batch["completion_mask"]  # (b, T)
        out["n_tokens"].append(mask.sum(-1))
        if sampler_is_ref and full_support and T == 1.0 and all("sample_logps" in r for r in chunk):
            ref_tok = [list(r["sample_logps"]) for r in chunk]  # the sampler's own: what a forward would give
        else:
            ref_tok = _row_tokens(model_token_logps(ref_model, batch), mask)
        out["ref"].append(torch.tensor([sum(x) for x in ref_tok], dtype=torch.float64))
        if other_ids is not None:
            other = collate([other_ids[r["prompt_id"]] for r in chunk], [r["completion_ids"] for r in chunk], pad_id)
            other_tok = _row_tokens(model_token_logps(ref_model, other), other["completion_mask"])
            out["ref_other"].append(torch.tensor([sum(x) for x in other_tok], dtype=torch.float64))
        if sampler is None:
            continue
        if all("sample_logps" in r for r in chunk):
            q_tok, ent = [r["sample_logps"] for r in chunk], torch.tensor([r["sample_entropy"] for r in chunk])
        else:
            logits = model_logits(sampler, batch)  # (b, T, V)
            b, L, V = logits.shape
            logits = filter_logits(logits.float().reshape(b * L, V) / T, top_k, top_p).reshape(b, L, V)
            q_tok = _row_tokens(token_logps(logits, batch["input_ids"].to(logits.device)), mask)
            ent = mean_predictive_entropy(logits[:, :-1], mask[:, 1:].to(logits.device)).cpu()
        out["policy"].append(torch.tensor([sum(x) for x in q_tok], dtype=torch.float64))
        out["entropy"].append(ent.double())
        if full_support:
            out["kl_cv"].append(torch.stack([kl_control_variate(torch.tensor(q, dtype=torch.float64),
                                                                torch.tensor(p, dtype=torch.float64))
                                             for q, p in zip(q_tok, ref_tok)]))
    return {k: torch.cat(v) if v else None for k, v in out.items()}


def annotate(recs: list[dict], scores: dict[str, list[float]], lp: dict) -> list[dict]:
    """Sample records with everything measured per sample: the scores, the sampling
    distribution's and the reference's log-probs of the completion, the control-variate KL term,
    the sampler's mean predictive entropy and the token count (`logp`/`pred_entropy`/`kl_cv` None
    for the human row). Metrics are a function of these alone
    (`metrics.metrics_of`), so evaluations can be pooled, e.g. over seeds."""
    out = []
    for i, r in enumerate(recs):
        row = {**r, **{k: v[i] for k, v in scores.items()}, "ref_logp": lp["ref"][i].item(),
               "n_tokens": int(lp["n_tokens"][i])}
        if lp.get("ref_other") is not None:
            row["ref_logp_other"] = lp["ref_other"][i].item()
        for key, name in (("policy", "logp"), ("entropy", "pred_entropy"), ("kl_cv", "kl_cv")):
            row[name] = None if lp[key] is None else lp[key][i].item()
        row.pop("sample_logps", None)  # in samples.jsonl; the sums above are what metrics need
        out.append(row)
    return out


def _finish(name: str, out_dir: Path, recs: list[dict], scores: dict[str, list[float]], lp: dict,
            cfg: Config) -> dict:
    scored = annotate(recs, scores, lp)
    metrics = metrics_of(name, scored, cfg.eval.n_boot)
    write_jsonl(out_dir / "scored.jsonl", scored)
    write_json(out_dir / "metrics.json", {**metrics, "metrics_version": METRICS_VERSION})
    return metrics


def evaluate_model(name: str, model, ref_model, tokenizer, scorers: Scorers, prompts: list[dict], cfg: Config,
                   stop_ids: list[int], out_dir: str | Path, sample_dtype=None, seed: int = 0,
                   dist: Dist = Dist()) -> dict:
    """Sample cfg.eval.n_samples per held-out prompt from `model`, score, measure; writes out_dir
    (samples.jsonl streamed, so a killed evaluation resumes; the pipeline caches the whole dir).

    `ref_model=None` means the model *is* the reference (the start policy): its KL is then
    KL(sampler || itself in fp32), ~0 (exactly 0 when it samples in fp32: the reference's log-probs are then the
    draws' own, `reuses_draw_logps`). KL, predictive
    entropy are on-policy: log q of the distribution that drew (see `logps_and_entropy`); the
    reference scores in its own dtype (fp32: the reference DPO trained against).
    `seed` picks the evaluation draws (sample.seed + 10_000 + seed: never the training draws); a
    policy trained with dpo.seed s is compared with the start policy evaluated with the same s.
    Under several processes (`dist`; `scorers` then split their batches too) each rank samples and
    measures its share of the batches; rank 0 writes the files and returns the metrics."""
    out_dir = Path(out_dir)
    sampler = model if sample_dtype is None else cast_model(model, sample_dtype)
    scfg = dataclasses.replace(cfg.sample, seed=cfg.sample.seed + 10_000 + seed)  # eval draws differ from train
    recs = sample_to_file(out_dir / "samples.jsonl", sampler, tokenizer, prompts, cfg.eval.n_samples,
                          scfg, stop_ids, desc=f"eval {name}", max_new_tokens=cfg.eval.max_new_tokens, dist=dist)
    scores = score_all(scorers, recs)
    lp = _sharded_logps(dist, sampler, model if ref_model is None else ref_model, {p["id"]: p["ids"] for p in prompts},
                        recs, tokenizer.pad_token_id, cfg.sample, other_ids=other_prompts(prompts),
                        sampler_is_ref=reuses_draw_logps(sampler, model, ref_model, cfg.sample.backend))
    del sampler
    return _finish(name, out_dir, recs, scores, lp, cfg) if dist.main else {}


def reuses_draw_logps(sampler, model, ref_model, backend: str) -> bool:
    """Whether an evaluation takes the reference's log-probs from the draws (`logps_and_entropy`'s
    `sampler_is_ref`): the start policy (`ref_model` None) drawn by itself, not by a copy cast to another dtype,
    with the in-process sampler ("fast"), whose recorded log-probs are the model's own."""
    return ref_model is None and sampler is model and backend == "fast"


def eval_rows(ref_model, prompt_ids: dict[str, list[int]], recs: list[dict], sampler=None) -> int:
    """Samples per evaluation forward: from free GPU memory at the longest prompt (another prompt's too: the
    `ref_other` forward) plus the longest completion, with the vocabulary tensors of re-scoring the sampling
    distribution (`sampler`) where a record carries no log-probs of its own (`machine.auto_forward_rows`); 16 on a CPU."""
    longest = max(map(len, prompt_ids.values()), default=0) + max((len(r["completion_ids"]) for r in recs), default=1)
    rescored = sampler is not None and any("sample_logps" not in r for r in recs)
    return auto_forward_rows(ref_model, longest, "evaluation log-probs batch", vocab=True,
                             copies=SCORING_LOGIT_COPIES if rescored else FORWARD_LOGIT_COPIES)


def _sharded_logps(dist: Dist, sampler, ref_model, prompt_ids: dict, recs: list[dict], pad_id: int, sample_cfg,
                   batch_size: int = 0, other_ids: dict | None = None, sampler_is_ref: bool = False) -> dict:
    """`logps_and_entropy` with its batches split across ranks, gathered (equal to one process's)."""
    batch_size = dist.agree(batch_size or eval_rows(ref_model, prompt_ids, recs, sampler))  # rank 0's: one batching for all
    if dist.world == 1 or not recs:
        return logps_and_entropy(sampler, ref_model, prompt_ids, recs, pad_id, batch_size, sample_cfg, other_ids,
                                 sampler_is_ref)

    def per_record(sub: list[dict]) -> list[dict]:
        lp = logps_and_entropy(sampler, ref_model, prompt_ids, sub, pad_id, batch_size, sample_cfg, other_ids,
                               sampler_is_ref)
        return [{k: (None if v is None else v[i]) for k, v in lp.items()} for i in range(len(sub))]

    rows = dist.map(per_record, recs, batch_size)
    return {k: None if rows[0][k] is None else torch.stack([r[k] for r in rows]) for k in rows[0]}


def human_records(prompts: list[dict], texts: dict[str, str], tokenizer, max_new_tokens: int,
                  eos_id: int | None) -> list[dict]:
    """The real review's own continuation of each eval prompt: its next `max_new_tokens` policy
    tokens after the prompt's, plus EOS where the review ends inside that budget (as a model's
    sample ends with its stop token). Records shaped like samples (one per prompt, `sample` 0)."""
    out = []
    for p in prompts:
        k_chars = 40 * (len(p["ids"]) + max_new_tokens + 2)  # ample: a token is rarely > 10 chars
        text = texts[p["review_id"]]
        ids = tokenizer(text[:k_chars], add_special_tokens=False)["input_ids"]  # starts with p["ids"], as
        cont = ids[len(p["ids"]) : len(p["ids"]) + max_new_tokens]  # the prompt was cut the same way
        # ends inside the budget with room for the stop token (a model's stop token counts in max_new_tokens)
        ended = len(text) <= k_chars and len(ids) - len(p["ids"]) < max_new_tokens
        comp_ids = cont + [eos_id] if ended and eos_id is not None else cont
        out.append({"prompt_id": p["id"], "sample": 0, "prompt": p["text"], "completion": tokenizer.decode(cont),
                    "completion_ids": comp_ids, "finished": ended})
    return out


def evaluate_human(name: str, ref_model, tokenizer, scorers: Scorers, prompts: list[dict], texts: dict[str, str],
                   cfg: Config, out_dir: str | Path, dist: Dist = Dist()) -> dict:
    """The human row: the reviews' own continuations, scored and measured like a model's samples
    (no KL or predictive entropy: no model drew them; ref_ppl is the reference model's surprise)."""
    out_dir = Path(out_dir)
    recs = human_records(prompts, texts, tokenizer, cfg.eval.max_new_tokens, tokenizer.eos_token_id)
    scores = score_all(scorers, recs)
    lp = _sharded_logps(dist, None, ref_model, {p["id"]: p["ids"] for p in prompts}, recs, tokenizer.pad_token_id, None,
                        other_ids=other_prompts(prompts))
    return _finish(name, out_dir, recs, scores, lp, cfg) if dist.main else {}
