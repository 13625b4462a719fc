"""Small, crash-safe file helpers: atomic files and directories, appendable JSONL, and `building`
(a block) or `cached` (a build function), the one way every cached artifact is made (pipeline
stages, evaluations, the SFT model, the reward head, the offline assets).

Every file `alignment` writes goes through here so that an interrupted run never leaves a
half-written cache behind: we write to a temp file (or temp dir) next to the target, fsync,
then rename. A cached artifact's `<name>.meta.json` is written only *after* the artifact exists.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kw) -> Iterator[Any]:
    """Open a temp file next to `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a torn last line (a crash mid-append) is ignored, never half-parsed."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn final line from an interrupted append
            out.append(json.loads(line))
    return out


class JsonlAppender:
    """Append records to a JSONL file, one fsync'd line per chunk, resumable.

    Only whole lines count on reload (see `read_jsonl`), and `open` truncates a torn tail,
    so a SIGKILL between chunks loses at most the chunk in flight.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = read_jsonl(self.path) if self.path.exists() else []
        if self.path.exists():  # cut a torn tail so the next append starts on a fresh line
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                with open(self.path, "r+b") as f:
                    f.truncate(keep)

    def keep(self, records: list[dict]) -> None:
        """Replace the file's content with `records` (atomically), e.g. to drop rows past a checkpoint."""
        write_jsonl(self.path, records)
        self.records = list(records)

    def extend(self, records: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(records)


def debug_delay() -> None:
    """Sleep ALIGNMENT_DEBUG_STEP_DELAY seconds (default 0) after each saved unit of work
    (a sampling batch, a training step): lets interrupt tests land mid-run on fast machines."""
    delay = float(os.environ.get("ALIGNMENT_DEBUG_STEP_DELAY", "0") or 0)
    if delay > 0:
        time.sleep(delay)


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short sha256 of a JSON-able object with sorted keys (config fingerprints)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


# ---- directories and cached artifacts ------------------------------------------------------------
class CacheMismatch(RuntimeError):
    """An artifact exists but was made with a different config."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _remove_if_empty(part: Path) -> None:
    """Remove `part` if it holds nothing (an empty file or an empty directory tree): work already in
    a part is kept, for the rerun to resume from."""
    if part.is_dir() and not any(p.is_file() for p in part.rglob("*")):
        shutil.rmtree(part)
    elif part.is_file() and part.stat().st_size == 0:
        part.unlink()


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Swap the finished `tmp` (file or dir) in as `path` by renames only: `path` is always either
    the old complete artifact, absent for an instant, or the new complete one."""
    tmp, path = Path(tmp), Path(path)
    old = path.with_name(f".{path.name}.old")
    _remove(old)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    _remove(old)


def meta_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".meta.json")


CACHE_FORMAT = 2  # metas without it were written before their artifact (an older version of this package): never trusted


def cache_state(artifact: str | os.PathLike, deps: dict) -> str:
    """"fresh" (artifact complete for these deps), "stale" (complete for other deps) or "missing"."""
    artifact, meta = Path(artifact), meta_path(artifact)
    if not meta.exists():
        return "missing"
    old = read_json(meta)
    if old.get("format") != CACHE_FORMAT or not artifact.exists():
        return "missing"
    return "fresh" if old["hash"] == stable_hash(deps) else "stale"


def cached(artifact: str | os.PathLike, deps: dict, build: Callable[[Path], Any], *,
           on_mismatch: str = "raise", hint: str = "", started: float | None = None) -> bool:
    """Make `artifact` (a file or a directory) once per `deps` by `build(part)`; True if it was built
    now. The same as a `building` block whose work is `build(part)`."""
    with building(artifact, deps, on_mismatch=on_mismatch, hint=hint, started=started) as part:
        if part is not None:
            build(part)
    return part is not None


@contextmanager
def building(artifact: str | os.PathLike, deps: dict, *, on_mismatch: str = "raise", hint: str = "",
             started: float | None = None) -> Iterator[Path | None]:
    """Make `artifact` (a file or a directory) once per `deps`, in the block's own code::

        with building(out, {"lr": 1e-5}) as part:
            if part is not None:  # None: out is already built for these deps
                write_json(part, train(...))

    `part` is a temp path next to the artifact named after the deps hash (`.<name>.<hash>.part`); the
    block writes the artifact there and may resume there after an interrupt: the partial work of one
    config is never mistaken for another's. When the block ends without an error, `part` is renamed to
    `artifact`, and only then is `<artifact>.meta.json` ({format, hash, deps, built_at, build_seconds})
    written; left-over parts of other configs are removed. `build_seconds` counts from `started` (a
    `time.time()`; default: when the block starts), for work that ran before.

    An artifact whose meta records other deps raises `CacheMismatch` naming the changed keys
    (`on_mismatch="raise"`, e.g. a run dir never mixes configs; `hint` says what to do) or is
    rebuilt and replaced (`"rebuild"`, e.g. the single SFT model in the asset cache).
    """
    artifact = Path(artifact)
    if cache_state(artifact, deps) == "fresh":  # the common case: no lock, no write
        yield None
        return
    artifact.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(artifact):  # another process may be building the same artifact right now
        state = cache_state(artifact, deps)
        if state == "fresh":  # built by another process while we waited
            yield None
            return
        if state == "stale" and on_mismatch == "raise":
            raise CacheMismatch(stale_message(artifact, deps, hint))
        part, t0 = part_path(artifact, deps), time.time() if started is None else started
        try:
            yield part
        except Exception:
            _remove_if_empty(part)  # a build that failed before writing anything leaves nothing behind
            raise
        _publish_built(artifact, part, deps, t0)


@contextmanager
def _build_lock(artifact: Path) -> Iterator[None]:
    """An exclusive lock on `.<name>.lock` (POSIX flock; none where fcntl is missing). The lock
    file is removed on release: a waiter then holds the old inode, finds the artifact fresh, returns."""
    lock = artifact.with_name(f".{artifact.name}.lock")
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock
        yield
        return
    while True:
        f = open(lock, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:  # the holder before us may have removed the file: then this lock guards nothing, retry
            if os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        f.close()  # releases the flock


def stale_message(artifact: str | os.PathLike, deps: dict, hint: str = "") -> str | None:
    """What `CacheMismatch` says (the changed keys) when `artifact` was made with other deps, else None."""
    artifact = Path(artifact)
    if cache_state(artifact, deps) != "stale":
        return None
    old = read_json(meta_path(artifact))["deps"]
    changed = sorted(k for k in set(deps) | set(old) if old.get(k) != deps.get(k))
    return f"{artifact} was made with a different config (changed: {', '.join(changed)}). {hint}"


def part_path(artifact: str | os.PathLike, deps: dict) -> Path:
    """Where `cached` builds `artifact` for these deps (`.<name>.<deps hash>.part`)."""
    artifact = Path(artifact)
    return artifact.with_name(f".{artifact.name}.{stable_hash(deps)}.part")


def _publish_built(artifact: Path, part: Path, deps: dict, t0: float) -> None:
    """Rename the finished `part` to `artifact`, then write its meta; remove abandoned parts of other configs."""
    meta = meta_path(artifact)
    if meta.exists():
        meta.unlink()  # a crash from here on leaves an artifact without meta: rebuilt, never trusted
    publish(part, artifact)
    done = time.time()
    write_json(meta, {"format": CACHE_FORMAT, "hash": stable_hash(deps), "deps": deps,
                      "build_seconds": round(done - t0, 3),
                      "built_at": datetime.fromtimestamp(done).astimezone().isoformat()})
    for stale in artifact.parent.glob(f".{artifact.name}.*.part"):  # abandoned builds of other configs
        if re.fullmatch(rf"\.{re.escape(artifact.name)}\.[0-9a-f]{{12}}\.part", stale.name):
            _remove(stale)


def build_record(artifact: str | os.PathLike) -> dict:
    """When and in how long a cached artifact was built, from its meta: {"built_at": ISO time,
    "build_seconds"}; {} without a meta or for one written without them (built by an earlier version)."""
    meta = meta_path(artifact)
    old = read_json(meta) if meta.exists() else {}
    return {k: old[k] for k in ("built_at", "build_seconds") if k in old}


def part_dir(part: str | os.PathLike) -> Path:
    """`part` as a directory (created if missing), for builders that write several files."""
    Path(part).mkdir(parents=True, exist_ok=True)
    return Path(part)
