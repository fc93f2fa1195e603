"""Outputs appear whole or not at all: a full disk, a write that fails silently, the manifest after both.

The full-disk test mounts a 3 MB tmpfs (root on Linux, as in CI); where that is not possible it skips and says
why. The injected failure truncates what GDAL wrote while reporting success, as GDAL does when a full disk
hits it while closing a file; it runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
import rasterio.shutil
from fixtures import db_to_8bit, sar_db, write_geotiff, write_png

import sarcolor
from sarcolor.atomic import temp_name, write_atomic, write_text_atomic
from sarcolor.cli import main
from sarcolor.errors import WriteFailed
from sarcolor.models import save_safetensors

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def truncating_copy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """GDAL's conversion 'succeeds' but leaves a file cut short (what a full disk at close does)."""
    copy, cut = rasterio.shutil.copy, []

    def bad_copy(src: object, dst: str, **kw: object) -> None:
        copy(src, dst, **kw)
        size = os.path.getsize(dst)
        os.truncate(dst, size // 2)
        cut.append(Path(dst))

    monkeypatch.setattr(rasterio.shutil, "copy", bad_copy)
    yield cut


@pytest.mark.parametrize("ext", [".tif", ".png", ".jpg"])
def test_a_write_that_fails_silently_leaves_nothing(tmp_path: Path, tiny_model_path: Path, truncating_copy,
                                                    capsys: pytest.CaptureFixture, ext: str) -> None:
    src = write_geotiff(tmp_path / "in.tif", sar_db(96, 80))
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["colorize", str(src), "-o", str(out / f"o{ext}"), "--model", str(tiny_model_path), "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert truncating_copy, "the injected failure did not run"
    assert rc == 1 and len(err) == 1
    assert err[0].startswith(f"sarcolor: error: {out / ('o' + ext)}: could not be written")
    assert _listing(out) == []  # neither the output nor a temporary file


def test_a_failed_scene_is_not_done_in_the_manifest_and_reruns(tmp_path: Path, tiny_model_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    write_geotiff(tmp_path / "in" / "a.tif", sar_db(64, 64))
    out = tmp_path / "out"
    copy = rasterio.shutil.copy

    def bad_copy(src: object, dst: str, **kw: object) -> None:
        copy(src, dst, **kw)
        os.truncate(dst, os.path.getsize(dst) // 2)

    kw = dict(model=tiny_model_path, quiet=True)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        monkeypatch.setattr(rasterio.shutil, "copy", bad_copy)
        assert sarcolor.colorize_paths([tmp_path / "in"], out, client=client, **kw) == 1
        rec = json.loads((out / "sarcolor-run.json").read_text())["scenes"]["a.tif"]
        assert rec["status"] == "failed" and "could not be written" in rec["error"]
        assert _listing(out) == ["sarcolor-run.json"]
        monkeypatch.setattr(rasterio.shutil, "copy", copy)
        assert sarcolor.colorize_paths([tmp_path / "in"], out, client=client, **kw) == 0
    rec = json.loads((out / "sarcolor-run.json").read_text())["scenes"]["a.tif"]
    assert rec["status"] == "done"
    with rasterio.open(out / "a.tif") as ds:
        assert ds.read().shape == (3, 64, 64)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, or a skip saying why there is none."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True,
                           text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk test ({exc})")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk test (needs root on Linux): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=20)


def _fill(disk: Path, leave: int) -> Path:
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def test_a_full_disk_gives_an_error_and_no_output_then_works_once_freed(small_disk: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """With about as much space left as the output needs (more, but not enough for the output and its
    intermediate together; or less), a run either succeeds with a whole output or fails with one error line,
    exit code 1 and nothing at the output path (GDAL's failure while closing the COG used to give exit code 0
    and a truncated file); once freed, the same command succeeds."""
    d = sar_db(300, 300)
    inputs = {".tif": write_geotiff(tmp_path / "x.tif", d), ".png": write_png(tmp_path / "x.png", db_to_8bit(d))}
    for ext, src in inputs.items():
        dst = small_disk / f"o{ext}"
        argv = ["colorize", str(src), "-o", str(dst), "-q"]
        assert main(argv) == 0
        size = dst.stat().st_size
        dst.unlink()
        failures = 0
        for fraction in (0.5, 0.95, 1.2, 1.4, 1.6, 1.8):
            filler = _fill(small_disk, int(size * fraction))
            capsys.readouterr()
            rc = main(argv)
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sarcolor:")]
            if rc == 0:
                with rasterio.open(dst) as ds:
                    assert ds.read().shape == (3, 300, 300), (ext, fraction)
                dst.unlink()
            else:
                failures += 1
                assert rc == 1 and len(err) == 1, (ext, fraction, err)
                assert err[0].startswith(f"sarcolor: error: {dst}: could not be written"), err
                assert _listing(small_disk) == ["filler"], (ext, fraction)
            filler.unlink()
        assert failures >= 2, ext  # at least the runs with less space than the output needs
        assert main(argv) == 0
        with rasterio.open(dst) as ds:
            assert ds.read().shape == (3, 300, 300)
        dst.unlink()


def test_write_atomic_removes_the_temporary_file_when_verify_fails(tmp_path: Path) -> None:
    def verify(p: Path) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(WriteFailed, match=r"x.bin: could not be written \(Input/output error\)"):
        write_atomic(tmp_path / "x.bin", lambda p: p.write_bytes(b"123"), verify=verify)
    assert _listing(tmp_path) == []
    write_text_atomic(tmp_path / "t.txt", "one")
    assert (tmp_path / "t.txt").read_text() == "one" and _listing(tmp_path) == ["t.txt"]


def test_a_truncated_checkpoint_is_never_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import torch
    from safetensors import torch as st

    save = st.save_file

    def short(tensors: dict, path: str, metadata: dict) -> None:
        save(tensors, path, metadata=metadata)
        os.truncate(path, os.path.getsize(path) - 8)

    monkeypatch.setattr("sarcolor.models.save_file", short)
    with pytest.raises(WriteFailed, match="m.safetensors: could not be written"):
        save_safetensors({"w": torch.ones(16)}, tmp_path / "m.safetensors", {"k": "v"})
    assert _listing(tmp_path) == []


def test_one_temporary_naming(tmp_path: Path) -> None:
    name = temp_name(tmp_path / "out.tif", "part").name
    assert name.startswith(f".out.tif.{os.getpid()}-") and name.endswith(".part.tmp")
