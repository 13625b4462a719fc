"""Reward scoring: a naive encoder+head (batch 16, input order, plain forward with autograd on, fp32)
vs `EmbeddingReward.score`; the original notebook's HF text-classification pipeline (batch 16) vs
`ClassifierReward` on the same sequence classifier built from the reward encoder.
"""
from __future__ import annotations

import random
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from alignment.assets.models import pick_device
from alignment.steps.reward import ClassifierReward
from benchmarks.harness import (Report, Sizes, ceiling_row, dtype_name, interleaved, log, matmul_flops_per_token,
                                speedup)


def reward_texts(S: Sizes, ctx) -> list[str]:
    """Sample-like texts: the first 8 + k policy tokens of reviews, k = 32 for 3/4 of them (samples
    that hit max_new_tokens) and 1..31 otherwise (samples that stopped early)."""
    tok = ctx.tok
    rng = random.Random(0)
    reviews = [r.text for r in ctx.reviews() if len(r.text) > 200]
    rng.shuffle(reviews)
    out = []
    for text in reviews[: S.texts]:
        ids = tok(text[:600], add_special_tokens=False)["input_ids"]
        k = 32 if rng.random() < 0.75 else rng.randint(1, 31)
        out.append(tok.decode(ids[: 8 + k]))
    return out


def naive_scorer(base, texts: list[str], bs: int = 16):
    """The same encoder + head as a first version would run it: input order, autograd on, fp32."""

    def score() -> torch.Tensor:
        outs = []
        for i in range(0, len(texts), bs):
            enc = base.tok(texts[i : i + bs], padding=True, truncation=True, max_length=base.max_length,
                           return_tensors="pt").to(base.device)
            h = base.enc(**enc).last_hidden_state  # (b, T, D)
            m = enc["attention_mask"].unsqueeze(-1).float()  # (b, T, 1)
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)  # (b, D)
            outs.append((e @ base.w.to(e.device) + base.b.to(e.device)).detach().cpu())  # (b,)
        return torch.cat(outs)

    return score


def bench_embedding(S: Sizes, ctx, rep: Report, texts: list[str]) -> None:
    reward = ctx.embedding_reward("auto")     # batch 64, length-sorted, inference_mode, dtype auto
    base = ctx.embedding_reward("float32")    # the same weights in fp32 for the naive baseline
    naive = naive_scorer(base, texts)
    grad_on = any(p.requires_grad for p in base.enc.parameters())
    naive(), reward.score(texts)
    res = interleaved(S.score_rounds, {"naive": naive, "EmbeddingReward.score": lambda: reward.score(texts)})
    tn, to = min(s for s, _ in res["naive"]), min(s for s, _ in res["EmbeddingReward.score"])
    diff = (res["naive"][0][1] - res["EmbeddingReward.score"][0][1]).abs().max().item()
    dt = dtype_name(next(reward.enc.parameters()).dtype)
    rep.add(f"reward scoring, {len(texts)} texts: naive encoder+head (bs 16, input order, grad on, fp32) vs "
            f"EmbeddingReward.score (bs {reward.batch_size}, length-sorted, inference_mode, {dt})",
            f"{len(texts) / tn:.1f} texts/s", f"{len(texts) / to:.1f} texts/s", speedup(tn, to))
    n_tok = sum(len(x) for x in reward.tok(texts, truncation=True, max_length=reward.max_length)["input_ids"])
    per_text = matmul_flops_per_token(reward.enc) * n_tok / len(texts)  # useful FLOPs: real tokens, no padding
    for who, secs, enc in (("naive (fp32)", tn, base.enc), ("EmbeddingReward", to, reward.enc)):
        rep.ceiling.append(ceiling_row(f"scoring, {who}, {n_tok / len(texts):.0f} tokens per text", len(texts) / secs,
                                       "text", per_text, next(enc.parameters()).dtype, reward.device))
    rep.note(f"scoring: {len(texts)} texts = first 8+k policy tokens of reviews (k=32 for 3/4, else 1-31), "
             f"mean {sum(map(len, texts)) / len(texts):.0f} chars, {ctx.describe()}; encoder params require grad: "
             f"{grad_on}; max |score difference| naive vs ours = {diff:.2e}; best of {S.score_rounds} interleaved "
             "rounds.")


def bench_classifier(S: Sizes, ctx, rep: Report, texts: list[str]) -> None:
    """The original notebook's sentiment pipeline vs ClassifierReward, both loading one saved classifier."""
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        clf = AutoModelForSequenceClassification.from_pretrained(ctx.encoder_dir(), num_labels=2)
        clf.save_pretrained(d)
        AutoTokenizer.from_pretrained(ctx.encoder_dir()).save_pretrained(d)
        del clf
        creward = ClassifierReward(d, batch_size=64, max_length=256, device=pick_device(), dtype="auto")
        cpipe = pipeline("text-classification", model=d, tokenizer=d, device=creward.device)
    pos_label = cpipe.model.config.id2label[creward.pos]

    def run_pipe() -> torch.Tensor:
        out = cpipe(texts, top_k=None, function_to_apply="none", batch_size=16, truncation=True)
        return torch.tensor([next(x["score"] for x in o if x["label"] == pos_label) for o in out])  # (n,)

    run_pipe(), creward.score(texts)
    res = interleaved(S.score_rounds, {"pipeline": run_pipe, "ClassifierReward": lambda: creward.score(texts)})
    tp, tc = min(s for s, _ in res["pipeline"]), min(s for s, _ in res["ClassifierReward"])
    diff = (res["pipeline"][0][1] - res["ClassifierReward"][0][1]).abs().max().item()
    rep.add(f"reward scoring, {len(texts)} texts: pipeline('text-classification', bs 16) vs ClassifierReward "
            f"(bs 64, {dtype_name(next(creward.model.parameters()).dtype)})",
            f"{len(texts) / tp:.1f} texts/s", f"{len(texts) / tc:.1f} texts/s", speedup(tp, tc))
    rep.note(f"classifier: AutoModelForSequenceClassification from the reward encoder dir, num_labels=2 (head seeded "
             f"randomly, saved once, both sides load the same files); pipeline kwargs as the original notebook's sentiment pipe "
             f"(top_k=None, function_to_apply='none', batch_size=16); max |logit difference| = {diff:.2e}.")


def run(S: Sizes, ctx, rep: Report) -> None:
    texts = reward_texts(S, ctx)
    log(f"scoring: {len(texts)} texts, mean {sum(map(len, texts)) / len(texts):.0f} chars")
    bench_embedding(S, ctx, rep, texts)
    bench_classifier(S, ctx, rep, texts)
