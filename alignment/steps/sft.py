"""SFT stage: fine-tune the base policy on movie-review text, as gpt2-imdb is GPT-2 on IMDB.

With the offline default (`model.policy=offline-sft`) every run builds this model first, once per
sft config (`Pipeline.prepare`), and starts DPO from it: SmolLM2-135M-Instruct, a chat model, becomes a review continuer
(`python -m alignment sft` builds it on its own). Only the source's *train pool* is read
(`data.review_pools`: the hub's train split, or a fixed text-hash share of the reviews), so no eval
prompt's source review is ever trained on, whatever the prompt counts or seeds; held-out
perplexity reviews come from the eval pool.

It trains with the package's one loop (`alignment.steps.train.train_loop`) and a next-token loss closure
(not trl's SFTTrainer): masks that come from lengths (pad == EOS for GPT-2 and SmolLM2, so a
value-derived mask would drop the real EOS), resumable checkpoints with the same data order and
RNG state, and the same metrics before and after.

    batch of right-padded reviews, pad id p (== EOS e), review 2 ends for real:
        input_ids      = [[a, b, c, d],   [f, g, e, p]]
        attention_mask = [[1, 1, 1, 1],   [1, 1, 1, 0]]
        label mask     = attention_mask[:, 1:]  ->  targets b c d | g e   (the pad is never a target)

EOS is appended only where a review ends inside a training window (`encode_reviews`): a review
cut at the limit did not end there (training a stop at an arbitrary cut would teach early stops).

Layout: the stage goes through `io.cached` like every artifact: training runs in a temp dir next
to `<out>` named after the config hash (before.json, ckpt.pt, train_log.jsonl) and the finished dir
is renamed to `<out>` at the end, so `<out>` is either absent or complete; `<out>.meta.json`
records the config. `<out>` is `sft.out`, else one cache dir per SFT config (`sft_out_dir`).
"""
from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path

import torch

from ..assets.offline import cache_root
from ..config import Config, SampleConfig, section_deps
from ..assets.corpus import Review
from .data import DataError, filter_reviews, make_prompt, review_pools
from ..base.io import cache_state, cached, meta_path, part_dir, read_json, stable_hash, write_json
from .logprobs import collate, model_logps
from ..assets.models import add_lora, load_causal_lm, load_tokenizer, pick_device, stop_token_ids, train_autocast
from .sampling import sample_records
from ..base.tracking import NullTracker
from .train import LoopConfig, done_training, train_loop

DEFAULT_NAME = "SmolLM2-135M-reviews-sft"  # + "-<config hash>": the cache dir of `offline-sft` (sft_out_dir)


# ---- data ------------------------------------------------------------------------------------
def sft_splits(cfg: Config) -> tuple[list[Review], list[Review]]:
    """(train_reviews, eval_reviews) for SFT: train text from the source's *train* pool only, so
    no eval prompt's source review is ever trained on, whatever the prompt counts or seeds
    (`data.review_pools`: the hub's test split, or a fixed hash share of the reviews); held-out
    perplexity reviews from the eval pool. Deduplicated by text, filtered like the prompts,
    shuffled by `sft.seed`."""
    d, s = cfg.data, cfg.sft
    pools = review_pools(d)
    eval_pool, train_pool = filter_reviews(pools["eval"], d), filter_reviews(pools["train"], d)
    seen = {r.text for r in eval_pool}  # eval texts are never trained on, even as duplicates
    rng = random.Random(s.seed)

    def take(pool: list[Review], n: int, banned: set[str]) -> list[Review]:
        cand = list(pool)
        rng.shuffle(cand)
        out = []
        for r in cand:
            if len(out) == n:
                break
            if r.text not in banned:  # also dedupes repeated texts within the split
                banned.add(r.text)
                out.append(r)
        return out

    eval_reviews = take(eval_pool, s.n_eval_reviews, set())
    train_reviews = take(train_pool, s.n_reviews, seen)
    if not train_reviews or not eval_reviews:
        raise DataError(f"data.source={d.source!r} leaves {len(train_reviews)} SFT train and {len(eval_reviews)} "
                        f"held-out reviews; use more data or relax data.min_chars / data.max_chars")
    if len(train_reviews) < s.n_reviews or len(eval_reviews) < s.n_eval_reviews:
        warnings.warn(f"SFT uses {len(train_reviews)} train / {len(eval_reviews)} held-out reviews "
                      f"(asked sft.n_reviews={s.n_reviews}, sft.n_eval_reviews={s.n_eval_reviews}): not enough data")
    return train_reviews, eval_reviews


def encode_reviews(tokenizer, texts: list[str], max_tokens: int, windows: int = 1) -> list[list[int]]:
    """Token ids per review, no special tokens in front (prompts have none either), as up to
    `windows` consecutive chunks of `max_tokens` from the review's start; EOS is appended to the
    chunk where the review ends (never to a chunk cut at the limit: that would teach early stops).

        max_tokens=3, windows=2:  [a b c d e]  ->  [a b c], [d e EOS]
                                  [a b c d e f g]  ->  [a b c], [d e f]     (g dropped, no EOS)
    """
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        full = ids + [eos] if eos is not None else ids
        for w in range(windows):
            chunk = full[w * max_tokens : (w + 1) * max_tokens]
            if not chunk or (w > 0 and chunk == [eos]):
                break
            out.append(chunk)
    return out


# ---- model pieces ----------------------------------------------------------------------------
def batch_nll(model, seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over real tokens, and their count, through the same parity-tested
    log-prob path as DPO (`logprobs.model_logps`): each review is the completion of an empty prompt."""
    batch = collate([[] for _ in seqs], seqs, pad_id)  # right-padded; masks from lengths, not values
    lp = model_logps(model, batch)  # (B,); bf16 autocast comes from the training loop (sft.precision)
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


def _samples(model, tokenizer, prompts: list[dict], seed: int, new_tokens: int) -> list[dict]:
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    scfg = SampleConfig(n_samples=1, max_new_tokens=new_tokens, batch_size=len(prompts), seed=seed)
    recs = {r["prompt_id"]: r for b in sample_records(model, tokenizer, prompts, 1, scfg,
                                                      stop_token_ids(tokenizer, model), desc="sft samples")
            for r in b}
    model.train(was_training)
    return [{"prompt": p["text"], "completion": recs[p["id"]]["completion"],
             "finished": recs[p["id"]]["finished"]} for p in prompts]


def sample_prompts(tok, eval_reviews: list[Review], k: int, n: int) -> list[dict]:
    """Fixed held-out prompts (built like the pipeline's) continued before and after training."""
    prompts = []
    for r in eval_reviews:
        ids = make_prompt(tok, r.text, k)
        if ids and len(prompts) < n:
            prompts.append({"id": f"sft{len(prompts)}", "review_id": r.id, "text": tok.decode(ids), "ids": ids})
    return prompts


def sft_loop_config(cfg: Config, dev: torch.device) -> LoopConfig:
    s = cfg.sft
    return LoopConfig(lr=s.lr, epochs=s.epochs, batch_size=s.batch_size, grad_accum=1, warmup_ratio=s.warmup_ratio,
                      final_lr_ratio=s.final_lr_ratio, max_grad_norm=s.max_grad_norm, seed=s.seed,
                      save_every=s.save_every, save_minutes=s.save_minutes, disable_dropout=False,
                      autocast=train_autocast(s.precision, dev), desc="sft")


# ---- the stage -------------------------------------------------------------------------------
SFT_DATA_FIELDS = ("source", "min_chars", "max_chars", "prompt_tokens")  # what SFT reads of cfg.data


def sft_deps(cfg: Config) -> dict:
    """What the SFT model depends on: the sft section and the data fields it reads (not prompt
    counts or seeds: the eval pool is fixed by `data.review_pools`)."""
    data = section_deps(cfg, "data")["data"]
    return {"sft": section_deps(cfg, "sft")["sft"], "data": {k: data[k] for k in SFT_DATA_FIELDS}}


def sft_out_dir(cfg: Config) -> Path:
    """`sft.out`, else the cache's `SmolLM2-135M-reviews-sft-<config hash>`: one dir per SFT
    config, so a smoke-sized SFT never replaces the default one."""
    if cfg.sft.out:
        return Path(cfg.sft.out).expanduser()
    return cache_root() / "models" / f"{DEFAULT_NAME}-{stable_hash(sft_deps(cfg), 8)}"


def run_sft(cfg: Config, make_tracker=None) -> dict:
    """Fine-tune cfg.sft.base on train-split reviews; return (and save) the metrics dict.

    Cached: a finished `<out>` with the same sft+data config returns its metrics untouched.
    Resumable: an interrupted run continues from the last checkpoint in its temp dir.
    `make_tracker(name, job_type)` gives the tracker (`RunTrackers.make`); none = no tracking.
    """
    out, deps = sft_out_dir(cfg), sft_deps(cfg)
    where = f"models/{out.name} in the asset cache" if out.parent == cache_root() / "models" else out  # no home path
    if out.exists() and cache_state(out, deps) != "fresh":
        warnings.warn(f"{where} holds an SFT model for another config; it will be replaced when this run ends")

    def build(part):
        print(f"building the SFT start policy (once per sft config): {cfg.sft.base} tuned on "
              f"{cfg.sft.n_reviews} train-pool reviews -> {where}", flush=True)
        _build(cfg, part_dir(part), make_tracker)

    cached(out, deps, build, on_mismatch="rebuild")
    return read_json(out / "sft_metrics.json")


def sft_hash(cfg: Config) -> str:
    """The cache hash of this config's built SFT model (what a run dir's artifacts record they were
    made from). Reads its cache record only: `run_sft` builds it."""
    meta = meta_path(sft_out_dir(cfg))
    if not meta.exists() or cache_state(sft_out_dir(cfg), sft_deps(cfg)) != "fresh":
        raise FileNotFoundError(f"the SFT start policy for this config is not built at {sft_out_dir(cfg)}; "
                                "build it with `python -m alignment sft` (every run's first step does)")
    return read_json(meta)["hash"]


def _build(cfg: Config, tmp: Path, make_tracker) -> None:
    """Train into `tmp` (resuming there); leaves model, tokenizer and sft_metrics.json in it."""
    if (tmp / "sft_metrics.json").exists():  # finished, killed before it was published
        (tmp / "before.json").unlink(missing_ok=True)
        done_training(tmp)
        return
    t0 = time.time()
    # Thread count: torch's default (physical cores) or OMP_NUM_THREADS; no set_threads() here.
    # On a box shared with other jobs, OMP_NUM_THREADS=1 is ~3x faster per step than 2 contended threads.
    s = cfg.sft
    dev = pick_device()
    tok = load_tokenizer(s.base)
    pad = tok.pad_token_id
    train_reviews, eval_reviews = sft_splits(cfg)
    train_seqs = encode_reviews(tok, [r.text for r in train_reviews], s.max_tokens, s.windows)
    eval_seqs = encode_reviews(tok, [r.text for r in eval_reviews], s.max_tokens)
    prompts = sample_prompts(tok, eval_reviews, cfg.data.prompt_tokens, s.n_sample_prompts)
    model = load_causal_lm(s.base, torch.float32, dev, train=True)
    if s.lora_r:
        torch.manual_seed(s.seed)  # the adapters' random init
        model = add_lora(model, s.lora_r, s.lora_alpha)
    tracker = make_tracker("sft", "sft") if make_tracker else NullTracker()

    before_path = tmp / "before.json"
    if not before_path.exists():
        before = {"ppl_before": perplexity(model, eval_seqs, pad, s.batch_size),
                  "samples_before": _samples(model, tok, prompts, s.seed, s.sample_new_tokens),
                  "seconds": time.time() - t0}
        write_json(before_path, before)
    before = read_json(before_path)
    tracker.log({"eval/ppl_before": before["ppl_before"]}, step=0)

    def loss_fn(net, mb: list[int]):
        nll, n = batch_nll(net, [train_seqs[i] for i in mb], pad)
        return nll / max(n, 1), {"loss": (nll / max(n, 1)).item(), "tokens": n}

    log, train_seconds, resumed_from = train_loop(model, len(train_seqs), loss_fn, sft_loop_config(cfg, dev), tmp, tracker)
    t_after = time.time()
    if s.lora_r:  # `offline-sft` is a plain model either way
        model = model.merge_and_unload()
    ppl_after = perplexity(model, eval_seqs, pad, s.batch_size)
    samples_after = _samples(model, tok, prompts, s.seed, s.sample_new_tokens)
    tracker.log({"eval/ppl_after": ppl_after}, step=len(log))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    metrics = {
        "out": str(sft_out_dir(cfg)), "base": s.base, "device": str(dev), "threads": torch.get_num_threads(),
        "ppl_before": before["ppl_before"], "ppl_after": ppl_after,
        "n_train_reviews": len(train_seqs), "n_eval_reviews": len(eval_seqs),
        "n_train_tokens": sum(len(x) for x in train_seqs) * s.epochs,
        "steps": len(log), "resumed_from_step": resumed_from, "sec_per_step": train_seconds / max(len(log), 1),
        "seconds": before["seconds"] + train_seconds + time.time() - t_after,  # over all sessions
        "train_loss": [r["loss"] for r in log],
        "samples_before": before["samples_before"], "samples_after": samples_after,
    }
    write_json(tmp / "sft_metrics.json", metrics)
    before_path.unlink()  # folded into sft_metrics.json
    done_training(tmp)
    tracker.log_model(tmp)  # with track.log_models (wandb copies the files now, before tmp is renamed)
    track_result(tracker, metrics)


def track_result(tracker, metrics: dict) -> None:
    """The SFT run's summary (perplexity before and after, steps, seconds, reviews) and its held-out
    prompts' continuations before and after, side by side (the `sft/samples` table); closes the run."""
    tracker.summary({k: metrics[k] for k in ("ppl_before", "ppl_after", "steps", "seconds", "n_train_reviews")})
    pairs = zip(metrics["samples_before"], metrics["samples_after"])
    tracker.log_table("sft/samples", ["prompt", "before", "after"], [[b["prompt"], b["completion"], a["completion"]]
                                                                     for b, a in pairs])
    tracker.finish()
