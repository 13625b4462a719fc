"""A sentiment judge of another kind than the reward: an encoder whose top layers are fine-tuned end
to end, with a logistic head on its normalised mean-pooled embedding, as a sequence classifier.

The offline reward and the linear-head judge are logistic heads on *frozen* encoders; their errors
can be alike. Here the top `Recipe.layers` transformer layers learn from the labels as well. The
frozen lower layers run once over every text (`lower_features`, bf16 where native); the top layers
and the head then train for a few epochs on those cached states (`fine_tune`), warm-started from the
logistic fit on the frozen model's embeddings. The result is a plain encoder dir + `head.safetensors`,
the layout `reward.EmbeddingReward` scores (the positive logit). `build_judge` builds it once through
`io.cached`; `reward.ensure_ft_judge` names the encoder and the rows (the `judge` role).
"""
from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

from ..base.io import cached, part_dir, stable_hash, write_json
from ..base.machine import dtype_name
from .reward_train import Rows, accuracy, fit_logistic
from ..base.timing import bars_off


class JudgeBuildError(ValueError):
    """The fine-tuned judge cannot be built: the message names the input and the fix."""


@dataclass(frozen=True)
class Recipe:
    """How the judge is fine-tuned; every field is part of its cache key."""

    layers: int = 6          # top transformer layers tuned (the rest frozen, run once)
    epochs: int = 1          # passes over the training rows
    lr: float = 1e-4         # AdamW lr of the tuned layers (linear warm-up over 10 %, then linear decay)
    head_lr: float = 1e-3    # AdamW lr of the logistic head
    batch_size: int = 32     # texts per step
    max_length: int = 128    # tokens per text (the snippets have at most ~80)
    l2: float = 1e-4         # L2 strength of the warm-start logistic fit
    n_train: int = 0         # use the first n training rows after the seeded shuffle (0 = all)
    seed: int = 0            # row order, batches and dropout


class _Given(nn.Module):
    """Stands in for the embeddings: returns the cached hidden states handed in as `inputs_embeds`."""

    def forward(self, *args, inputs_embeds=None, **kwargs):
        """`inputs_embeds` as they are."""
        return inputs_embeds


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-like encoder (`embeddings` + `encoder.layer`); else a clear error."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "embeddings"):
        raise JudgeBuildError(f"{type(model).__name__} is not a BERT-like encoder (embeddings + encoder.layer); "
                              "use an encoder such as all-mpnet-base-v2 or a BERT")
    return layers


@contextmanager
def top_only(model: nn.Module, n_low: int) -> Iterator[nn.Module]:
    """`model` as its layers from `n_low` up, reading hidden states from `inputs_embeds`."""
    full, emb = encoder_layers(model), model.embeddings
    model.encoder.layer, model.embeddings = nn.ModuleList(list(full)[n_low:]), _Given()
    try:
        yield model
    finally:
        model.encoder.layer, model.embeddings = full, emb


def length_order(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of `batch_size`, by length (little padding): [3, 1, 2], 2 -> [[1, 2], [0]]."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def amp(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` (bf16 where native: `models.sampling_dtype`); a no-op for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def pooled(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, L2-normalised: (b, T, D), (b, T) -> (b, D), as `EmbeddingReward.embed`."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


@torch.no_grad()
def lower_features(model, tok, texts: list[str], n_low: int, max_length: int, dtype) -> tuple[list, torch.Tensor]:
    """One frozen pass: each text's hidden states entering layer `n_low` (T_i, D), kept on the CPU,
    and its final pooled embedding (n, D) (for the warm start)."""
    dev = model.device
    feats, final = [None] * len(texts), torch.empty(len(texts), model.config.hidden_size)
    bar = tqdm(total=len(texts), desc="judge: encoding texts (frozen layers)", unit="text", leave=False,
               disable=bars_off())
    for idx in length_order([len(t) for t in texts], 64):
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt").to(dev)
        with amp(dev, dtype):
            out = model(**enc, output_hidden_states=True)
        mask = enc["attention_mask"].bool()
        for j, i in enumerate(idx):
            feats[i] = out.hidden_states[n_low][j][mask[j]].to("cpu", dtype or torch.float32).clone()
        final[idx] = pooled(out.last_hidden_state.float(), mask).cpu()
        bar.update(len(idx))
    bar.close()
    return feats, final


def collate(feats: list[torch.Tensor], idx: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the cached states of rows `idx`: (b, T, D) fp32 and the (b, T) attention mask."""
    n, d = max(len(feats[i]) for i in idx), feats[idx[0]].size(-1)
    x, mask = torch.zeros(len(idx), n, d), torch.zeros(len(idx), n, dtype=torch.long)
    for j, i in enumerate(idx):
        x[j, : len(feats[i])], mask[j, : len(feats[i])] = feats[i].float(), 1
    return x.to(device), mask.to(device)


def top_scores(model, head: dict, feats, idx, dtype) -> torch.Tensor:
    """Positive logits (b,) of rows `idx` through the top layers (`top_only`) and the head."""
    x, mask = collate(feats, idx, model.device)
    with amp(model.device, dtype):
        h = model(inputs_embeds=x, attention_mask=mask).last_hidden_state
    return pooled(h.float(), mask) @ head["weight"] + head["bias"]


@torch.no_grad()
def score_rows(model, head: dict, feats, dtype) -> torch.Tensor:
    """Positive logits (n,) of every cached row, in row order (eval mode)."""
    out = torch.empty(len(feats))
    for idx in length_order([len(f) for f in feats], 64):
        out[idx] = top_scores(model, head, feats, idx, dtype).cpu()
    return out


def epoch_batches(feats: list, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: a seeded shuffle, sorted within chunks of 8 batches."""
    order = list(range(len(feats)))
    rng.shuffle(order)
    chunk = 8 * batch_size
    out = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c : c + chunk], key=lambda i: len(feats[i]))
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def train_top(model, head: dict, feats, y: torch.Tensor, recipe: Recipe, dtype) -> list[dict]:
    """AdamW on the tuned layers and the head; per epoch, the mean loss and running train accuracy."""
    tuned = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": tuned, "lr": recipe.lr},
                             {"params": list(head.values()), "lr": recipe.head_lr}], weight_decay=0.0)
    rng = random.Random(recipe.seed)
    plan = [epoch_batches(feats, recipe.batch_size, rng) for _ in range(recipe.epochs)]
    total = sum(map(len, plan))
    warm = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (total - s) / max(1, total - warm)))
    model.train()
    log = []
    bar = tqdm(total=total, desc="judge: fine-tuning the top layers", unit="batch", leave=False, disable=bars_off())
    for batches in plan:
        loss_sum = hits = 0.0
        for idx in batches:
            s = top_scores(model, head, feats, idx, dtype)
            target = y[idx].to(s.device)
            loss = nn.functional.binary_cross_entropy_with_logits(s, target.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            hits += ((s > 0).long() == target).sum().item()
            bar.update(1)
        log.append({"loss": loss_sum / len(feats), "train_accuracy": hits / len(feats)})
    bar.close()
    model.eval()
    return log


def load_encoder(encoder_dir: str | Path):
    """The tokenizer and encoder (eval mode) at `encoder_dir`; one clear error when it is missing."""
    encoder_dir = Path(encoder_dir).expanduser()
    if not (encoder_dir / "config.json").is_file():
        raise JudgeBuildError(f"the judge's encoder {str(encoder_dir)!r} is missing (no config.json there); "
                              "fix the path, or run `python -m alignment assets` to fetch the offline encoders")
    return AutoTokenizer.from_pretrained(str(encoder_dir)), AutoModel.from_pretrained(str(encoder_dir)).eval()


def prepare(model, train: Rows, test: Rows, recipe: Recipe, sources: str) -> tuple[int, Rows]:
    """Check the sizes, freeze all but the top `recipe.layers` layers; (first tuned layer, training rows)."""
    layers = encoder_layers(model)
    n_low = len(layers) - recipe.layers
    if not train or not test or n_low < 0 or recipe.layers < 1:
        raise JudgeBuildError(f"cannot tune {recipe.layers} of {len(layers)} layers on {len(train)} training and "
                              f"{len(test)} test rows ({sources or 'no sources named'})")
    model.requires_grad_(False)
    layers[n_low:].requires_grad_(True)
    train = list(train)
    random.Random(recipe.seed).shuffle(train)
    return n_low, train[: recipe.n_train or None]


def fine_tune(out_dir: Path, encoder_dir: str | Path, train: Rows, test: Rows, recipe: Recipe = Recipe(),
              sources: str = "", device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> dict:
    """Fine-tune into `out_dir` (a part dir of `io.cached`): encoder/, head.safetensors, metrics.json.
    `dtype`: the autocast dtype of every pass (None: fp32)."""
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(recipe.seed)
    tok, model = load_encoder(encoder_dir)
    n_low, train = prepare(model, train, test, recipe, sources)
    dev = torch.device(device)
    model.to(dev)
    feats, final = lower_features(model, tok, [t for t, _ in train], n_low, recipe.max_length, dtype)
    t1 = time.perf_counter()
    test_feats, test_final = lower_features(model, tok, [t for t, _ in test], n_low, recipe.max_length, dtype)
    texts_per_s = len(test) / (time.perf_counter() - t1)
    y, y_te = torch.tensor([l for _, l in train]), torch.tensor([l for _, l in test])
    head = {k: v.to(dev).requires_grad_(True) for k, v in fit_logistic(final, y, recipe.l2).items()}
    frozen = accuracy(test_final @ head["weight"].detach().cpu() + head["bias"].detach().cpu(), y_te)
    with top_only(model, n_low):
        log = train_top(model, head, feats, y, recipe, dtype)
        test_acc = accuracy(score_rows(model, head, test_feats, dtype), y_te)
    metrics = {"n_train": len(train), "n_test": len(test), "recipe": asdict(recipe), "sources": sources,
               "test_accuracy": test_acc, "frozen_head_test_accuracy": frozen,
               "test_positive_rate": y_te.float().mean().item(), "epochs": log, "texts_per_s": texts_per_s,
               "build_s": time.perf_counter() - t0, "build_cpu_s": time.process_time() - c0,
               "device": str(dev), "threads": torch.get_num_threads(), "autocast": dtype_name(dtype)}
    out = part_dir(out_dir)
    model.cpu().save_pretrained(str(out / "encoder"))
    tok.save_pretrained(str(out / "encoder"))
    save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, str(out / "head.safetensors"))
    write_json(out / "metrics.json", metrics)
    return metrics


def judge_key(encoder_dir: str | Path, train: Rows, test: Rows, recipe: Recipe, deps: dict | None,
              dtype: torch.dtype | None) -> dict:
    """What a fine-tuned judge is built from (its cache key): `deps` (the encoder's identity), the recipe, the rows
    and the training dtype."""
    return {**(deps or {"encoder": str(encoder_dir)}), "recipe": asdict(recipe), "rows": stable_hash([train, test]),
            "autocast": dtype_name(dtype)}


def build_judge(out: Path, encoder_dir: str | Path, train: Rows, test: Rows, recipe: Recipe = Recipe(),
                deps: dict | None = None, sources: str = "", device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> bool:
    """The fine-tuned judge at `out`, built once (temp part -> rename -> meta, announced); True if built now.
    `deps` names the encoder's identity (a cache hash); the recipe, the rows and the dtype are added."""
    if not (Path(encoder_dir).expanduser() / "config.json").is_file():
        load_encoder(encoder_dir)  # the one clear error, before any lock or part is made
    key = judge_key(encoder_dir, train, test, recipe, deps, dtype)

    def build(part):
        print(f"fine-tuning the offline judge (once, minutes): {sources or encoder_dir} ...", flush=True)
        m = fine_tune(Path(part), encoder_dir, train, test, recipe, sources, device, dtype)
        print(f"fine-tuned judge: held-out accuracy {m['test_accuracy']:.3f} (frozen head "
              f"{m['frozen_head_test_accuracy']:.3f}), built in {m['build_s']:.0f} s", flush=True)

    return cached(out, key, build, on_mismatch="rebuild")
