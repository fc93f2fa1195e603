"""A colorize stopped by a signal leaves no partial output; one killed outright is cleaned up by the next run.

Real processes: the CLI runs in a subprocess whose model is slowed down (a sleep per batch) so that the signal
surely arrives mid-scene, after the temporary output file exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures import sar_db, write_geotiff

# Ctrl-C as in a terminal: a job started in the background by a shell (`cmd &`, as a CI runner may start the
# test run) inherits SIGINT ignored, and Python then leaves it ignored; the CLI's own behaviour is under test.
_SLOW_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import sarcolor.torch_runtime as runtime  # the test's model is a torch one
from sarcolor.cli import main
predict = runtime.predict
def slow(*a, **k):
    time.sleep(0.2)
    return predict(*a, **k)
runtime.predict = slow
sys.exit(main(sys.argv[1:]))
"""


def _start(src: Path, dst: Path, model: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", _SLOW_CLI, "colorize", str(src), "-o", str(dst), "--model",
                             str(model), "-q"], stderr=subprocess.PIPE, text=True, env=env)


def _temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def _wait_for_temp(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not _temps(folder):
        assert proc.poll() is None, f"finished before the signal: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < end, "no temporary output appeared"
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the scene: a few batches written


@pytest.fixture()
def scene(tmp_path: Path) -> tuple[Path, Path]:
    src = write_geotiff(tmp_path / "in" / "scene.tif", sar_db(400, 400))
    out = tmp_path / "out"
    out.mkdir()
    return src, out


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_mid_scene_removes_the_temporary_output(scene, tiny_model_path: Path, sig: str) -> None:
    src, out = scene
    proc = _start(src, out / "scene.tif", tiny_model_path)
    _wait_for_temp(proc, out)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert err.strip().splitlines()[-1] in {f"sarcolor: stopped by {sig}", "sarcolor: interrupted"}
    assert list(out.iterdir()) == []  # neither the output nor its hidden temporary file


@pytest.mark.slow
def test_the_next_run_removes_what_a_killed_run_left(scene, tiny_model_path: Path) -> None:
    src, out = scene
    proc = _start(src, out / "scene.tif", tiny_model_path)
    _wait_for_temp(proc, out)
    proc.kill()  # SIGKILL: no handler runs, the temporary file stays
    proc.communicate(timeout=60)
    left = _temps(out)
    assert left and not (out / "scene.tif").exists()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "sarcolor", "colorize", str(src), "-o", str(out / "other.tif"),
                          "--model", str(tiny_model_path), "-q"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "removed 1 temporary file(s) left by an interrupted run" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["other.tif"]


def test_temporary_files_of_running_processes_are_kept(tmp_path: Path) -> None:
    from sarcolor.atomic import remove_stale_temps

    mine = tmp_path / f".a.tif.{os.getpid()}-0123abcd.part.tmp"
    dead = tmp_path / ".b.tif.999999999-0123abcd.cog.tmp"  # no such process (above any pid_max)
    other = tmp_path / ".b.tif.not-ours.tmp"
    for p in (mine, dead, other):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [dead.resolve()]
    assert remove_stale_temps(tmp_path) == []  # once per folder per process
    assert mine.exists() and other.exists() and not dead.exists()


def test_a_second_stop_does_not_cut_the_cleanup_short(tmp_path: Path) -> None:
    """A writer being aborted (a broken pipe unwinding, say) that gets SIGTERM meanwhile still removes its temp
    files: the signal is held until the cleanup is done, then delivered."""
    import numpy as np

    from sarcolor.raster import RGBWriter

    dst = tmp_path / "o.tif"
    writer = RGBWriter(dst, 64, 64)
    writer.write_rows(0, np.full((3, 8, 64), 7, np.uint8), np.ones((8, 64), bool))
    real_cleanup = writer._cleanup
    got = []

    def cleanup_with_a_signal() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the cleanup
        real_cleanup()

    writer._cleanup = cleanup_with_a_signal
    # Another thread alive (as in a full test run, or a server): the kernel may hand it the signal.
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    old = signal.signal(signal.SIGTERM, lambda *_: got.append("late") or (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.abort()
    finally:
        signal.signal(signal.SIGTERM, old)
        stop.set()
    assert got == ["late"]  # delivered after the cleanup, not lost
    assert [p.name for p in tmp_path.iterdir()] == []
