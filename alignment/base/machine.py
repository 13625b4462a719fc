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
