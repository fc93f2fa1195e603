"""Folder runs survive bad entries (a symlink loop, a dangling link, a FIFO), never take sarcolor's own outputs
for inputs, leave no empty folders behind, and print one progress bar (per-file lines with --verbose)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import db_to_8bit, sar_db, write_geotiff, write_png

from sarcolor.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    write_geotiff(d / "a.tif", sar_db(64, 64))
    write_png(d / "sub" / "b.png", db_to_8bit(sar_db(64, 64, seed=1)))
    return d


def test_bad_entries_are_one_line_each_and_the_rest_is_coloured(folder: Path, capsys: pytest.CaptureFixture
                                                                 ) -> None:
    (folder / "loop.tif").symlink_to("loop.tif")
    (folder / "l1.tif").symlink_to("l2.tif")
    (folder / "l2.tif").symlink_to("l1.tif")
    (folder / "dangling.png").symlink_to("nowhere.png")
    os.mkfifo(folder / "fifo.tif")
    out = folder.parent / "out"
    assert main(["colorize", str(folder), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(err) == sorted([f"sarcolor: error: {folder / 'loop.tif'}: a symlink loop; skipped",
                                  f"sarcolor: error: {folder / 'l1.tif'}: a symlink loop; skipped",
                                  f"sarcolor: error: {folder / 'l2.tif'}: a symlink loop; skipped",
                                  f"sarcolor: error: {folder / 'dangling.png'}: a link that leads nowhere; skipped",
                                  f"sarcolor: error: {folder / 'fifo.tif'}: not a regular file; skipped"])
    assert _tree(out) == ["a.tif", "sub", "sub/b.tif"]


@pytest.mark.parametrize("ext", [".tif", ".png", ".jpg"])
def test_a_second_run_never_takes_the_first_runs_outputs(folder: Path, capsys: pytest.CaptureFixture,
                                                         ext: str) -> None:
    """``colorize d -o d/c1; colorize d -o d/c2``: the second colours d's two scenes again, not c1's outputs."""
    assert main(["colorize", str(folder), "-o", str(folder / "c1"), "--format", ext, "-q"]) == 0
    assert main(["colorize", str(folder), "-o", str(folder / "c2"), "--format", ext, "-q"]) == 0
    assert "error" not in capsys.readouterr().err
    assert _tree(folder / "c2") == sorted(["a" + ext, "sub", "sub/b" + ext])


def test_a_failed_file_leaves_no_empty_folder(folder: Path, capsys: pytest.CaptureFixture) -> None:
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "deep" / "er" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = folder.parent / "out"
    assert main(["colorize", str(folder), "-o", str(out), "-q"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _tree(out) == ["a.tif", "sub", "sub/b.tif"]


def test_a_folder_run_prints_one_bar_and_per_file_lines_only_with_verbose(tmp_path: Path) -> None:
    for i in range(6):
        write_png(tmp_path / "d" / f"s{i}.png", db_to_8bit(sar_db(32, 32, seed=i)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def lines(*extra: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "sarcolor", "colorize", str(tmp_path / "d"), "-o",
                            str(tmp_path / "o"), "--overwrite", *extra], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return [seg for seg in r.stderr.replace("\r", "\n").splitlines() if seg.startswith("sarcolor:")]

    plain = lines()
    assert len(plain) == 1 and "6 colorized" in plain[0], plain
    assert len(lines("--verbose")) >= 1 + 6 * 2  # each file's scale decision and result, then the summary
