"""Scale: sampling time and peak RSS of ours (`sample_to_file`, streaming to a tmp JSONL) as N and
the prompt count grow, in the sampling dtype auto, one fresh subprocess per size so memory peaks
do not mix (`python -m benchmarks.run --_scale-worker SPEC`, see `worker`).
"""
from __future__ import annotations

import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import run_worker, Report, Sizes, log, mib



def _proc_status(field: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so VmHWM = peak from now on."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_poller(before: int | None):
    """(start, stop) of a 5 ms psutil RSS poll, for where VmHWM cannot be reset; peak[0] = max seen."""
    try:
        import psutil

        proc = psutil.Process()
    except ImportError:
        return None, None, [before]
    peak, done = [before or proc.memory_info().rss], threading.Event()

    def poll():
        while not done.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    th = threading.Thread(target=poll, daemon=True)
    return th, done, peak


def worker(spec: dict) -> dict:
    """Load, warm up, then time `sample_to_file`; peak RSS of the sampling call alone (VmHWM after a
    reset; a 5 ms psutil poll where the reset is unavailable)."""
    import torch

    from alignment.config import SampleConfig
    from alignment.assets.models import pick_device, sampling_dtype, stop_token_ids
    from alignment.steps.decode import row_keys, sample_batch
    from alignment.steps.sampling import sample_to_file
    from benchmarks.context import Ctx

    torch.set_num_threads(spec["threads"])
    ctx = Ctx(**spec["ctx"])
    tok, prompts = ctx.tok, ctx.prompts(spec["prompts"])
    model = ctx.lm(sampling_dtype("auto", pick_device()))
    stops = stop_token_ids(tok, model)
    cfg = SampleConfig(n_samples=spec["n"], max_new_tokens=spec["new"])
    sample_batch(model, [prompts[0]["ids"]], 2, cfg, stops, tok.pad_token_id, row_keys(0, ["warm-up"], 2), 4)  # warm-up
    load_peak, before = _proc_status("VmHWM"), _proc_status("VmRSS")
    exact = _reset_peak_rss() and _proc_status("VmHWM") is not None
    th, done, peak = (None, None, [before]) if exact else _rss_poller(before)
    before = before if before is not None else peak[0]
    with tempfile.TemporaryDirectory() as d:
        if th:
            th.start()
        t0 = time.perf_counter()
        recs = sample_to_file(Path(d) / "samples.jsonl", model, tok, prompts, spec["n"], cfg, stops)
        dt = time.perf_counter() - t0
        if th:
            done.set()
            th.join()
        file_bytes = (Path(d) / "samples.jsonl").stat().st_size
    if exact:
        peak[0] = _proc_status("VmHWM")
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"time_s": dt, "tokens": sum(len(r["completion_ids"]) for r in recs), "sequences": len(recs),
            "rss_before": before, "rss_peak_sampling": peak[0], "peak_exact": exact, "load_peak": load_peak,
            "ru_maxrss": ru, "file_bytes": file_bytes}


def measure(spec: dict) -> dict:
    """One size in a fresh subprocess (`--_scale-worker`)."""
    return run_worker("--_scale-worker", spec)


def run(S: Sizes, ctx, rep: Report) -> None:
    import torch

    configs = [("N", n, S.scale_fixed_prompts) for n in S.scale_n] + \
              [("prompts", S.scale_fixed_n, p) for p in S.scale_prompts]
    cache: dict[tuple, dict] = {}
    for scan, n, p in configs:
        if (n, p) not in cache:
            log(f"scale: N={n}, prompts={p} (subprocess)")
            cache[(n, p)] = measure({"n": n, "prompts": p, "new": S.new, "threads": torch.get_num_threads(),
                                     "ctx": ctx.spec()})
        rep.scale.append({"scan": scan, "n": n, "prompts": p, **cache[(n, p)]})
    for scan, key in (("N", "n"), ("prompts", "prompts")):
        rows = [r for r in rep.scale if r["scan"] == scan]
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            rep.note(f"scale over {scan} ({a[key]} -> {b[key]}): sequences x{b['sequences'] / a['sequences']:.1f}, "
                     f"time x{b['time_s'] / a['time_s']:.2f}, ms/token {1000 * a['time_s'] / a['tokens']:.1f} -> "
                     f"{1000 * b['time_s'] / b['tokens']:.1f}, peak RSS while sampling "
                     f"{mib(a['rss_peak_sampling'])} -> {mib(b['rss_peak_sampling'])} MiB")
    r0 = rep.scale[0]
    how = ("VmHWM of the worker, reset (/proc/self/clear_refs) after model load and warm-up, read after the call: "
           "exact" if r0.get("peak_exact") else "max of a 5 ms psutil RSS poll during the call")
    rep.note(f"scale: {S.new} new tokens, sample.batch_size=64 sequences per decode batch (so 64 // N prompts per "
             f"batch), the sampling dtype auto, {ctx.describe()}, one fresh subprocess per size. Peak RSS while "
             f"sampling = {how}. getrusage ru_maxrss is not usable here: a child started by this (large) benchmark "
             f"process reports the parent's high-water mark ({mib(r0['ru_maxrss'])} MiB in the first worker; Linux "
             f"keeps the pre-exec peak across exec), so the table shows /proc VmHWM instead.")
