"""SFT stage: fine-tune the base policy on movie-review text, as gpt2-imdb is GPT-2 on IMDB.

`python -m alignment sft` turns the offline policy (SmolLM2-135M-Instruct, a chat model) into a
review continuer, saved where `model.policy=offline-sft` loads it. Only the *train split* is used:
the reviews behind the pipeline's eval prompts (`build_prompts(cfg.data, tok)["eval"]`) are
excluded, by id and by text, and a separate seeded set of held-out reviews measures perplexity.

A plain causal-LM loop of our own (not trl's SFTTrainer): the whole job is ~40 AdamW steps, and
our loop gives exact control over what the brief needs and SFTTrainer would hide: masks that
come from lengths (pad == EOS for GPT-2 and SmolLM2, so a value-derived mask would drop the
real EOS), atomic checkpoints inside the temp output dir that resume with the same data order
and RNG state, and the same metrics before and after.

    batch of right-padded reviews, pad id p (== EOS e), review 2 ends for real:
        input_ids      = [[a, b, c, d],   [f, g, e, p]]
        attention_mask = [[1, 1, 1, 1],   [1, 1, 1, 0]]
        label mask     = attention_mask[:, 1:]  ->  targets b c d | g e   (the pad is never a target)

EOS is appended only to reviews that fit in `sft.max_tokens`: a review cut at the limit did not
end there, so it gets no EOS (training a stop at an arbitrary cut would teach early stopping).

Layout: training runs in `<out>/../.<name>.tmp/` (sft_meta.json, before.json, ckpt.pt) and the
finished dir is renamed to `<out>` at the end, so `<out>` is either absent or complete.
"""
from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .config import OFFLINE, Config, SampleConfig
from .data import DataError, Review, _filter, build_prompts, file_reviews, hub_reviews, make_prompt, offline_reviews
from .io import atomic_open, read_json, stable_hash, write_json
from .logprobs import collate, model_logps
from .train import epoch_batches

CKPT_EVERY = 25          # optimizer steps between resumable checkpoints
WARMUP_RATIO = 0.1       # linear warmup fraction, then linear decay towards 0
MAX_GRAD_NORM = 1.0
N_SAMPLE_PROMPTS = 3     # fixed held-out prompts for before/after continuations
SAMPLE_NEW_TOKENS = 40
DEFAULT_NAME = "SmolLM2-135M-reviews-sft"  # what alignment.models.resolve_policy("offline-sft") loads

# Test hook: called as _after_step(step) after every optimizer step (and its checkpoint, if any).
_after_step: Callable[[int], None] | None = None


# ---- data ------------------------------------------------------------------------------------
def _pools(d) -> dict[str, list[Review]]:
    """The same review pools `build_prompts` draws from (same loaders, same source rules)."""
    if d.source == OFFLINE:
        return {"all": offline_reviews()}
    if d.source == "imdb":
        return {"train": hub_reviews("imdb", "train"), "eval": hub_reviews("imdb", "test")}
    if Path(d.source).expanduser().exists():
        return {"all": file_reviews(d.source)}
    return {"train": hub_reviews(d.source, "train"), "eval": hub_reviews(d.source, "test")}


def sft_splits(cfg: Config, tokenizer) -> tuple[list[Review], list[Review]]:
    """(train_reviews, eval_reviews) for SFT.

    Never contains a review behind an eval prompt of the pipeline (same `build_prompts` call,
    so the same ids), nor any review whose text equals one. Held-out perplexity reviews come
    from the eval pool (the test split for hub data), train reviews from the train pool; the two
    are disjoint by id and by text. Both are seeded by `sft.seed`; filtered like the prompts.
    """
    d, s = cfg.data, cfg.sft
    pools = _pools(d)
    reserved = {r["review_id"] for r in build_prompts(d, tokenizer)["eval"]}
    eval_pool = _filter(pools.get("eval", pools.get("all", [])), d)
    train_pool = _filter(pools.get("train", pools.get("all", [])), d)
    seen = {r.text for r in eval_pool if r.id in reserved}  # texts that must never be trained on
    rng = random.Random(s.seed)

    def take(pool: list[Review], n: int, banned: set[str]) -> list[Review]:
        cand = [r for r in pool if r.id not in banned]
        rng.shuffle(cand)
        out = []
        for r in cand:
            if len(out) == n:
                break
            if r.text not in seen:  # also dedupes repeated texts across and within splits
                seen.add(r.text)
                out.append(r)
        return out

    eval_reviews = take(eval_pool, s.n_eval_reviews, reserved)
    train_reviews = take(train_pool, s.n_reviews, reserved | {r.id for r in eval_reviews})
    if not train_reviews or not eval_reviews:
        raise DataError(f"data.source={d.source!r} leaves {len(train_reviews)} SFT train and {len(eval_reviews)} "
                        f"held-out reviews after excluding the eval prompts' reviews; use more data or relax "
                        f"data.min_chars / data.max_chars")
    if len(train_reviews) < s.n_reviews or len(eval_reviews) < s.n_eval_reviews:
        warnings.warn(f"SFT uses {len(train_reviews)} train / {len(eval_reviews)} held-out reviews "
                      f"(asked sft.n_reviews={s.n_reviews}, sft.n_eval_reviews={s.n_eval_reviews}): not enough data")
    return train_reviews, eval_reviews


def encode_reviews(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids per review, no special tokens in front (prompts have none either); EOS appended
    when the review fits in max_tokens, otherwise cut at max_tokens with no EOS."""
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        out.append(ids + [eos] if eos is not None and len(ids) < max_tokens else ids[:max_tokens])
    return out


# ---- model pieces ----------------------------------------------------------------------------
def _autocast(dev: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()


def batch_nll(model, seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over real tokens, and their count, through the same parity-tested
    log-prob path as DPO (`logprobs.model_logps`): each review is the completion of an empty prompt."""
    batch = collate([[] for _ in seqs], seqs, pad_id)  # right-padded; masks from lengths, not values
    with _autocast(next(model.parameters()).device):
        lp = model_logps(model, batch)  # (B,)
    return -lp.sum(), int(batch["completion_mask"][:, 1:].sum())


@torch.no_grad()
def perplexity(model, seqs: list[list[int]], pad_id: int, batch_size: int = 8) -> float:
    """Token-level perplexity exp(sum NLL / tokens) over `seqs`."""
    was_training = model.training
    model.eval()
    tot, n = 0.0, 0
    seqs = sorted(seqs, key=len)  # length-bucketed batches: less padding, same (masked) result
    for i in range(0, len(seqs), batch_size):
        nll, k = batch_nll(model, seqs[i : i + batch_size], pad_id)
        tot, n = tot + nll.item(), n + k
    model.train(was_training)
    return math.exp(tot / max(n, 1))


def _samples(model, tokenizer, prompts: list[dict], seed: int) -> list[dict]:
    from .models import stop_token_ids
    from .sampling import sample_records

    if not prompts:
        return []
    was_training = model.training
    model.eval()
    scfg = SampleConfig(n_samples=1, max_new_tokens=SAMPLE_NEW_TOKENS, batch_size=len(prompts), seed=seed)
    recs = {r["prompt_id"]: r for b in sample_records(model, tokenizer, prompts, 1, scfg,
                                                      stop_token_ids(tokenizer, model), desc="sft samples")
            for r in b}
    model.train(was_training)
    return [{"prompt": p["text"], "completion": recs[p["id"]]["completion"],
             "finished": recs[p["id"]]["finished"]} for p in prompts]


def lr_at(step: int, total: int, lr: float) -> float:
    """Linear warmup over WARMUP_RATIO of the steps, then linear decay (last step: lr/(total-warm))."""
    warm = max(1, int(round(WARMUP_RATIO * total)))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * (total - step) / max(1, total - warm)


# ---- the stage -------------------------------------------------------------------------------
def sft_out_dir(cfg: Config) -> Path:
    if cfg.sft.out:
        return Path(cfg.sft.out).expanduser()
    from .assets import cache_root

    return cache_root() / "models" / DEFAULT_NAME


def sft_hash(cfg: Config) -> str:
    return stable_hash({"sft": asdict(cfg.sft), "data": asdict(cfg.data)})


def _matches(d: Path, h: str) -> bool:
    meta = d / "sft_meta.json"
    return meta.exists() and read_json(meta).get("hash") == h


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished temp dir in as `out` (renames only; `out` is never half-written)."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def run_sft(cfg: Config) -> dict:
    """Fine-tune cfg.sft.base on train-split reviews; return (and save) the metrics dict.

    Cached: a finished `<out>` with the same sft+data hash returns its metrics untouched.
    Resumable: an interrupted run continues from the last checkpoint in the temp dir.
    """
    from .models import load_causal_lm, load_tokenizer, pick_device
    from .tracking import make_tracker

    out = sft_out_dir(cfg)
    h = sft_hash(cfg)
    if _matches(out, h) and (out / "sft_metrics.json").exists():
        return read_json(out / "sft_metrics.json")
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists() and not _matches(tmp, h):
        shutil.rmtree(tmp)  # a leftover from another config: nothing in it is reusable
    if (tmp / "sft_metrics.json").exists():  # finished, killed before the final rename
        _publish(tmp, out)
        return read_json(out / "sft_metrics.json")
    if out.exists():
        warnings.warn(f"{out} holds an SFT model for another config; it will be replaced when this run ends")
    tmp.mkdir(parents=True, exist_ok=True)
    write_json(tmp / "sft_meta.json", {"hash": h, "sft": asdict(cfg.sft), "data": asdict(cfg.data)})

    t0 = time.time()
    # Thread count: torch's default (physical cores) or OMP_NUM_THREADS; no set_threads() here.
    # On a box shared with other jobs, OMP_NUM_THREADS=1 is ~3x faster per step than 2 contended threads.
    s = cfg.sft
    dev = pick_device()
    tok = load_tokenizer(s.base)
    pad = tok.pad_token_id
    train_reviews, eval_reviews = sft_splits(cfg, tok)
    train_seqs = encode_reviews(tok, [r.text for r in train_reviews], s.max_tokens)
    eval_seqs = encode_reviews(tok, [r.text for r in eval_reviews], s.max_tokens)
    prompts = []
    for r in eval_reviews:  # fixed held-out prompts, built like the pipeline's
        ids = make_prompt(tok, r.text, cfg.data.prompt_tokens)
        if ids and len(prompts) < N_SAMPLE_PROMPTS:
            prompts.append({"id": f"sft{len(prompts)}", "review_id": r.id, "text": tok.decode(ids), "ids": ids})
    model = load_causal_lm(s.base, torch.float32, dev, train=True)
    tracker = make_tracker(cfg, "sft", str(Path(cfg.run_dir) / "sft"))

    before_path = tmp / "before.json"
    base_seconds = 0.0  # wall time spent by earlier, interrupted sessions of this run
    if before_path.exists():
        before = read_json(before_path)
        base_seconds = before["seconds"]
    else:
        before = {"ppl_before": perplexity(model, eval_seqs, pad, s.batch_size),
                  "samples_before": _samples(model, tok, prompts, s.seed)}
        before["seconds"] = time.time() - t0
        write_json(before_path, before)
    tracker.log({"eval/ppl_before": before["ppl_before"]}, step=0)

    steps = epoch_batches(len(train_seqs), s.epochs, s.batch_size, s.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr, weight_decay=0.0)
    torch.manual_seed(s.seed)
    start, losses = 0, []
    ckpt = tmp / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, losses, base_seconds = state["step"], list(state["losses"]), state["seconds"]
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())
    model.train()
    bar = tqdm(total=len(steps), initial=start, desc="sft", unit="step")
    t_steps = time.time()
    for step in range(start, len(steps)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, len(steps), s.lr)
        nll, n = batch_nll(model, [train_seqs[i] for i in steps[step]], pad)
        loss = nll / max(n, 1)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        lv = loss.item()
        if not math.isfinite(lv):
            raise FloatingPointError(f"SFT loss became {lv} at step {step + 1}; lower sft.lr")
        losses.append(lv)
        tracker.log({"train/loss": lv, "train/lr": opt.param_groups[0]["lr"], "train/grad_norm": gn,
                     "train/tokens": n}, step=step + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.3f}")
        if (step + 1) % CKPT_EVERY == 0 and step + 1 < len(steps):
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1, "losses": losses,
                     "seconds": base_seconds + time.time() - t0, "rng": torch.get_rng_state()}
            if torch.cuda.is_available():
                state["cuda_rng"] = torch.cuda.get_rng_state()
            with atomic_open(ckpt, "wb") as f:
                torch.save(state, f)
        if _after_step is not None:
            _after_step(step + 1)
    bar.close()
    n_run = len(steps) - start
    sec_per_step = (time.time() - t_steps) / n_run if n_run else None
    model.eval()

    ppl_after = perplexity(model, eval_seqs, pad, s.batch_size)
    samples_after = _samples(model, tok, prompts, s.seed)
    tracker.log({"eval/ppl_after": ppl_after}, step=len(steps))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    metrics = {
        "out": str(out), "base": s.base, "config_hash": h, "device": str(dev), "threads": torch.get_num_threads(),
        "ppl_before": before["ppl_before"], "ppl_after": ppl_after,
        "n_train_reviews": len(train_seqs), "n_eval_reviews": len(eval_seqs),
        "n_train_tokens": sum(len(x) for x in train_seqs) * s.epochs,
        "steps": len(steps), "resumed_from_step": start, "sec_per_step": sec_per_step,
        "seconds": base_seconds + time.time() - t0,
        "train_loss": losses,
        "samples_before": before["samples_before"], "samples_after": samples_after,
    }
    write_json(tmp / "sft_metrics.json", metrics)
    ckpt.unlink(missing_ok=True)
    before_path.unlink(missing_ok=True)  # folded into sft_metrics.json
    _publish(tmp, out)
    tracker.summary({k: metrics[k] for k in ("ppl_before", "ppl_after", "steps", "seconds", "n_train_reviews")})
    tracker.finish()
    return metrics
