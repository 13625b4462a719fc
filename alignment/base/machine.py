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


def decode_row_bytes(model_config, context: int, dtype_bytes: int) -> int:
    """Device bytes one decoded sequence holds at `context` tokens: its KV cache (2 x layers x KV heads x
    head dim x context x dtype bytes) and its share of a step's fp32 vocabulary tensors (`LOGIT_COPIES`).
    GPT-2 (n_layer, n_head, n_embd) and Llama-style (num_hidden_layers, num_key_value_heads,
    hidden_size / num_attention_heads or head_dim) configs alike.

    Worked example: SmolLM2-135M (30 layers, 3 KV heads of 64, vocab 49,152) at 56 tokens in bf16:
    2 x 30 x 3 x 64 x 56 x 2 = 1,290,240 KV bytes + 6 x 49,152 x 4 = 1,179,648 -> 2,469,888 bytes."""
    c = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    layers = getattr(c, "num_hidden_layers", None) or c.n_layer
    heads = getattr(c, "num_attention_heads", None) or c.n_head
    hidden = getattr(c, "hidden_size", None) or c.n_embd
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    return 2 * layers * kv_heads * head_dim * context * dtype_bytes + LOGIT_COPIES * c.vocab_size * 4


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA `device` (torch.cuda.mem_get_info), None elsewhere or where it cannot be read."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError):
        return None


def auto_decode_rows(model_config, dtype_bytes: int, device_type: str, context: int,
                     free_bytes: int | None) -> tuple[int, str]:
    """(sequences per decode batch, why) for `sample.batch_size=0`: on CUDA, `DECODE_MEMORY_SHARE` of the
    device's free memory over `decode_row_bytes`, between 1 and `MAX_DECODE_ROWS`; on a CPU
    `CPU_DECODE_ROWS`; on a GPU whose free memory is unknown (`free_bytes` None) the same, with a message
    saying so (never a guess that could run out of memory)."""
    if device_type != "cuda":
        return CPU_DECODE_ROWS, f"{CPU_DECODE_ROWS} sequences (the {device_type} default)"
    if free_bytes is None:
        return CPU_DECODE_ROWS, (f"{CPU_DECODE_ROWS} sequences: the GPU's free memory is unknown; "
                                 "set sample.batch_size to decode more at once")
    per_row = decode_row_bytes(model_config, context, dtype_bytes)
    rows = max(1, min(MAX_DECODE_ROWS, int(DECODE_MEMORY_SHARE * free_bytes) // per_row))
    return rows, (f"{rows} sequences ({DECODE_MEMORY_SHARE:.0%} of {free_bytes / 2**30:.1f} GiB free, "
                  f"{per_row / 2**20:.2f} MiB each at {context} tokens)")
