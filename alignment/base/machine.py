"""The machine a result was produced on: CPU model and native bf16, cores, threads, GPU, versions
(shown by `report.hardware_note` and the benchmarks)."""
from __future__ import annotations

import datetime
import os
import platform

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matmul (avx512_bf16 / amx_bf16); elsewhere bf16 is emulated
    and several times slower than fp32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo; else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """What produced a result: CPU model and native bf16, cores, torch threads, GPU, versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cpu_native_bf16": cpu_has_bf16(), "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "torch": torch.__version__}


CPU_DECODE_ROWS = 64  # sequences per decode batch on a CPU (and wherever free memory is unknown)
MAX_DECODE_ROWS = 8192  # beyond this a GPU decode step is compute-bound: more rows buy no throughput
DECODE_MEMORY_SHARE = 0.6  # of the free device memory a decode batch may take (the rest: scorer, reference, fragmentation)
LOGIT_COPIES = 6  # fp32 (rows, vocab) tensors alive in a decode step: logits, scaled, log-probs, probs, CDF, entropy terms


def dtype_name(dtype) -> str:
    """A torch dtype as configs, cache keys and metrics files spell it: torch.bfloat16 -> 'bfloat16' (None -> 'None')."""
    return str(dtype).replace("torch.", "")


def _text_config(model_config):
    """The language model's own config (a multimodal config's text part; any other config itself)."""
    return model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config


def _first(c, *names: str, default=None):
    """The first of `names` set (non-zero) on config `c`, across GPT-2, Llama and BERT spellings; else `default`."""
    return next((v for v in (getattr(c, n, None) for n in names) if v), default)


def decode_row_bytes(model_config, context: int, dtype_bytes: int) -> int:
    """Device bytes one decoded sequence holds at `context` tokens: its KV cache (2 x layers x KV heads x
    head dim x context x dtype bytes) and its share of a step's fp32 vocabulary tensors (`LOGIT_COPIES`).
    GPT-2 (n_layer, n_head, n_embd) and Llama-style (num_hidden_layers, num_key_value_heads,
    hidden_size / num_attention_heads or head_dim) configs alike.

    Worked example: SmolLM2-135M (30 layers, 3 KV heads of 64, vocab 49,152) at 56 tokens in bf16:
    2 x 30 x 3 x 64 x 56 x 2 = 1,290,240 KV bytes + 6 x 49,152 x 4 = 1,179,648 -> 2,469,888 bytes."""
    c = _text_config(model_config)
    layers, heads = _first(c, "num_hidden_layers", "n_layer", "n_layers"), _first(c, "num_attention_heads", "n_head", "n_heads")
    hidden = _first(c, "hidden_size", "n_embd", "dim")
    if not (layers and heads and hidden):
        raise ValueError(f"{type(c).__name__} names no layer count, attention heads or width under a known name "
                         "(num_hidden_layers/n_layer, num_attention_heads/n_head, hidden_size/n_embd): set "
                         "sample.batch_size to a number instead of 0 (auto)")
    kv_heads = _first(c, "num_key_value_heads", default=heads)
    head_dim = _first(c, "head_dim") or hidden // heads
    return 2 * layers * kv_heads * head_dim * context * dtype_bytes + LOGIT_COPIES * c.vocab_size * 4


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA `device` (torch.cuda.mem_get_info), None elsewhere or where it cannot be read."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError):
        return None


def auto_rows(per_row: int, device_type: str, free_bytes: int | None, *, cpu_rows: int, cap: int, share: float,
              unit: str, hint: str, at: str) -> tuple[int, str]:
    """(rows per batch, why) for an automatic batch size: on CUDA `share` of the device's free memory over
    `per_row` bytes, between 1 and `cap`; on a CPU `cpu_rows`; on a GPU whose free memory is unknown
    (`free_bytes` None) the same, with `hint` (never a guess that could run out of memory).
    `at` says what a row is measured at (e.g. "56 tokens")."""
    if device_type != "cuda":
        return cpu_rows, f"{cpu_rows} {unit} (the {device_type} default)"
    if free_bytes is None:
        return cpu_rows, f"{cpu_rows} {unit}: the GPU's free memory is unknown" + (f"; {hint}" if hint else "")
    rows = max(1, min(cap, int(share * free_bytes) // per_row))
    return rows, (f"{rows} {unit} ({share:.0%} of {free_bytes / 2**30:.1f} GiB free, "
                  f"{per_row / 2**20:.2f} MiB each at {at})")


def auto_decode_rows(model_config, dtype_bytes: int, device_type: str, context: int,
                     free_bytes: int | None) -> tuple[int, str]:
    """(sequences per decode batch, why) for `sample.batch_size=0` (`auto_rows` over `decode_row_bytes`):
    `DECODE_MEMORY_SHARE` of the free GPU memory, at most `MAX_DECODE_ROWS`; `CPU_DECODE_ROWS` on a CPU."""
    per_row = decode_row_bytes(model_config, context, dtype_bytes) if device_type == "cuda" else 1
    return auto_rows(per_row, device_type, free_bytes, cpu_rows=CPU_DECODE_ROWS, cap=MAX_DECODE_ROWS,
                     share=DECODE_MEMORY_SHARE, unit="sequences", at=f"{context} tokens",
                     hint="set sample.batch_size to decode more at once")


CPU_FORWARD_ROWS = 16  # sequences per no-gradient forward on a CPU (reference log-probs, evaluation log-probs)
CPU_SCORE_ROWS = 64  # texts per scoring batch on a CPU (reward.batch_size=0)
MAX_FORWARD_ROWS = 1024  # beyond this a GPU forward is compute-bound: more rows buy no throughput
FORWARD_MEMORY_SHARE = 0.4  # of the free device memory one forward's activations may take (models and caches hold the rest)
FORWARD_LOGIT_COPIES = 3  # fp32 (tokens, vocab) tensors alive when log-probs are taken: the logits, their log-softmax, a gather
SCORING_LOGIT_COPIES = 10  # the same when the sampling distribution is re-scored too (temperature, top-k/top-p sort and
# cumsum, two softmaxes, predictive entropy): evaluation of draws that carry no log-probs of their own


def forward_row_bytes(model_config, tokens: int, dtype_bytes: int, vocab: bool, copies: int = FORWARD_LOGIT_COPIES) -> int:
    """Peak device bytes one sequence of `tokens` adds to a no-gradient forward without a KV cache
    (`logprobs.model_logits`): one layer's activations (8 hidden-size copies, the MLP's inner width and two
    heads x tokens x tokens attention maps, in the model's dtype; layers run one after another) plus, with
    `vocab` (a language model's log-probs), `copies` fp32 (tokens, vocab) tensors. GPT-2, Llama, BERT and
    DistilBERT configs alike; a config without a width or heads counts none of that term.

    Worked example: GPT-2 (768 wide, 3,072 inner, 12 heads, vocab 50,257) at 56 tokens in fp32:
    56 x (8 x 768 + 3,072) x 4 + 2 x 12 x 56^2 x 4 = 2,365,440 + 3 x 56 x 50,257 x 4 = 33,772,704
    -> 36,138,144 bytes (~34.5 MiB)."""
    c = _text_config(model_config)
    hidden = _first(c, "hidden_size", "n_embd", "dim", default=0)
    inner = _first(c, "intermediate_size", "n_inner", "hidden_dim", default=4 * hidden)
    heads = _first(c, "num_attention_heads", "n_head", "n_heads", default=0)
    act = tokens * (8 * hidden + inner) * dtype_bytes + 2 * heads * tokens * tokens * dtype_bytes
    return max(1, act + (copies * tokens * c.vocab_size * 4 if vocab else 0))


_SAID: set[str] = set()  # what this process has announced (`say_once`)


def auto_forward_rows(model, tokens: int, what: str, *, vocab: bool, cpu_rows: int = CPU_FORWARD_ROWS,
                      unit: str = "sequences", hint: str = "", copies: int = FORWARD_LOGIT_COPIES) -> int:
    """Rows per no-gradient forward of `model` (on its own device and dtype) at up to `tokens` tokens:
    `auto_rows` over `forward_row_bytes`; on a CPU `cpu_rows` (silently: the values these batches always
    had). Each distinct choice on a GPU is printed once, naming `what` the batch is for."""
    param = next(model.parameters())
    if param.device.type != "cuda":
        return cpu_rows
    per_row = forward_row_bytes(model.config, tokens, param.element_size(), vocab, copies)
    rows, why = auto_rows(per_row, "cuda", free_device_memory(param.device), cpu_rows=cpu_rows, cap=MAX_FORWARD_ROWS,
                          share=FORWARD_MEMORY_SHARE, unit=unit, hint=hint, at=f"{tokens} tokens")
    say_once(f"{what} (auto): {why}")
    return rows


def say_once(text: str) -> None:
    """Print `text` the first time this process has it to say (each automatic choice, each fallback)."""
    if text not in _SAID:
        _SAID.add(text)
        print(text, flush=True)
