"""Colorizing on a Dask cluster: a real scheduler and workers, a worker killed mid-run, resume, the manifest."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DATA
from fixtures import db_to_8bit, sar_db, write_geotiff, write_png

import sarcolor
from sarcolor import cluster
from sarcolor.atomic import remove_temps_of
from sarcolor.atomic import temp_name as _temp_name
from sarcolor.cli import main
from sarcolor.cluster import MANIFEST, Manifest, colorize_on_cluster, run_settings
from sarcolor.engine import colorize_paths
from sarcolor.errors import SarColorError

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

REPO = Path(__file__).resolve().parents[1]
REAL_SCENE = SHARED_DATA / "sen1floods11" / "Spain_7370579_S1Hand.tif"


def _scenes(folder: Path, n: int, h: int = 96, w: int = 120) -> Path:
    for i in range(n):
        write_geotiff(folder / f"s{i:02d}.tif", sar_db(h, w, seed=i))
    return folder


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.tif"))}


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


# ------------------------------------------------------------------------------------------------
# without a cluster: settings, manifest rules, temp files, errors
# ------------------------------------------------------------------------------------------------
def test_settings_are_colorize_files_keywords_with_defaults() -> None:
    sets = run_settings({"scale": "db", "bands": (1, 2)})
    assert sets == {"scale": "db", "bands": [1, 2], "nodata": None, "tta": False, "look": "sar", "render": None}
    with pytest.raises(SarColorError, match="unknown colorize setting.*: colour"):
        run_settings({"colour": "red"})


def test_a_new_colorize_option_passes_through_to_the_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    def colorize_file(src, dst, model_obj, cfg, *, scale="auto", look="sar", device=None, progress=False):
        raise AssertionError("not called")

    monkeypatch.setattr(cluster, "colorize_file", colorize_file)
    assert run_settings({"look": "optical"}) == {"scale": "auto", "look": "optical"}


def test_missing_dask_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    src = write_png(tmp_path / "a.png", db_to_8bit(sar_db()))
    assert main(["colorize", str(src), "-o", str(tmp_path / "out"), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "sarcolor: error: --cluster/--workers need Dask: pip install 'sarcolor[cluster]'\n"
    assert not (tmp_path / "out").exists()


def test_cluster_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("distributed")
    src = write_png(tmp_path / "a.png", db_to_8bit(sar_db()))
    assert main(["colorize", str(src), "-o", str(tmp_path / "out"), "--workers", "0"]) == 2
    assert capsys.readouterr().err == "sarcolor: error: --workers 0: need at least 1\n"
    assert main(["colorize", str(src), "-o", str(tmp_path / "o.tif"), "--workers", "1"]) == 2
    assert "on a cluster the output is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not both
        main(["colorize", str(src), "-o", "x", "--workers", "1", "--cluster", "tcp://127.0.0.1:1"])


def test_unreachable_scheduler_is_one_line(tiny_model_path: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = write_png(tmp_path / "a.png", db_to_8bit(sar_db()))
    code = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--cluster", f"tcp://127.0.0.1:{port}",
                 "--model", str(tiny_model_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"sarcolor: error: --cluster tcp://127.0.0.1:{port}: cannot reach a Dask scheduler")


def test_a_rendering_the_model_lacks_fails_before_the_cluster(tiny_model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    src = _scenes(tmp_path / "in", 1)
    with pytest.raises(SarColorError, match="render 'sen12': this model has no renderings"):
        colorize_on_cluster([src], tmp_path / "out", workers=1, model=tiny_model_path, quiet=True, render="sen12")
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_run_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    src = _scenes(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    Manifest(out / MANIFEST, {"sha256": "0" * 64}, run_settings({})).save()
    with pytest.raises(SarColorError, match=r"holds a run made with other settings \(model sha256 000000000000 "):
        colorize_on_cluster([src], out, workers=1, model=tiny_model_path, quiet=True)
    (out / MANIFEST).write_text("{ not json")
    with pytest.raises(SarColorError, match="not a readable sarcolor run manifest"):
        colorize_on_cluster([src], out, workers=1, model=tiny_model_path, quiet=True)


def test_resume_rules(tmp_path: Path) -> None:
    """What the manifest makes of each scene found on a second run (cluster._already_there)."""
    src = write_png(tmp_path / "a.png", db_to_8bit(sar_db()))
    dst = tmp_path / "a.tif"
    now = cluster._input_record(src)
    assert cluster._already_there({**now, "status": "done"}, now, dst) is None  # output gone: redo
    dst.write_bytes(b"x")
    size, mtime = dst.stat().st_size, dst.stat().st_mtime_ns
    done = {**now, "status": "done", "output_size": size, "output_mtime_ns": mtime}
    assert cluster._already_there(done, now, dst) == "done"
    assert cluster._already_there({**done, "output_size": size + 1}, now, dst) is None  # changed since
    assert cluster._already_there({**done, "input_size": 1}, now, dst) is None  # the input changed
    assert cluster._already_there({**now, "status": "failed"}, now, dst) is None
    assert cluster._already_there(None, now, dst) == "existing"  # not ours: kept, as the plain path does
    pending = {**now, "status": "pending"}  # written by a task whose report was lost: complete (atomic)
    assert cluster._already_there(pending, now, dst) == "done" and pending["output_size"] == size
    replacing = {**now, "status": "pending", "replaces": [size, mtime]}  # --overwrite killed before this one
    assert cluster._already_there(replacing, now, dst) is None


def test_stale_temps_of_killed_writers_are_removed(tmp_path: Path) -> None:
    dst = tmp_path / "a.tif"
    stale = [_temp_name(dst, "part"), _temp_name(dst, "cog")]
    stale.append(stale[1].with_name(stale[1].name + ".ovr.tmp"))
    keep = [_temp_name(tmp_path / "b.tif", "part"), tmp_path / ".a.tif.notes", tmp_path / "a.tif"]
    for p in stale + keep:
        p.write_bytes(b"")
    assert remove_temps_of([dst]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


def test_in_process_cluster_matches_the_plain_path(tiny_model_path: Path, tmp_path: Path) -> None:
    """``sarcolor.colorize_paths(..., client=client)`` with files and a folder: the plain path's bytes."""
    distributed = pytest.importorskip("distributed")
    scenes = _scenes(tmp_path / "in", 3)
    extra = write_png(tmp_path / "extra.png", db_to_8bit(sar_db(seed=9)))
    kw = dict(model=tiny_model_path, quiet=True, scale="auto")
    assert colorize_paths([scenes, extra], tmp_path / "plain", **kw) == 0
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        assert sarcolor.colorize_paths([scenes, extra], tmp_path / "dask", client=client, **kw) == 0
    assert _bytes(tmp_path / "dask") == _bytes(tmp_path / "plain") and len(_bytes(tmp_path / "plain")) == 4
    m = _manifest(tmp_path / "dask")
    assert m["settings"]["scale"] == "auto" and len(m["model"]["sha256"]) == 64
    assert {k: v["status"] for k, v in m["scenes"].items()} == {f"s0{i}.tif": "done" for i in range(3)} | {
        "extra.tif": "done"}


# ------------------------------------------------------------------------------------------------
# a real scheduler and two workers; one is killed mid-run
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # Own session: killing the group kills a worker's nanny and its worker process together.
    return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen], dict[str, str]]]:
    """`dask scheduler` + two `dask worker --nthreads 1 --nworkers 1` processes on 127.0.0.1 (killed at the end;
    should this test itself be killed, the scheduler exits when idle for 2 minutes and the workers follow)."""
    pytest.importorskip("distributed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = [_start(["dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                     "--no-dashboard", "--idle-timeout", "120"], env, tmp_path / "scheduler.log")]
    try:
        for i in range(2):
            procs.append(_start(["dask", "worker", address, "--nthreads", "1", "--nworkers", "1", "--host",
                                 "127.0.0.1", "--no-dashboard", "--name", f"w{i}", "--death-timeout", "30"],
                                env, tmp_path / f"worker{i}.log"))
        yield address, procs, env
    finally:
        for p in reversed(procs):
            _kill(p)


def _run_killing_a_worker(client: Any, cmd: list[str], env: dict[str, str], out: Path,
                          worker: subprocess.Popen) -> tuple[str, list[str], str]:
    """Run ``cmd`` and SIGKILL ``worker`` (nanny and worker process) while it holds scenes.
    Returns (its address, the task keys it held, the run's stderr)."""
    victim = next(a for a, w in client.scheduler_info()["workers"].items() if str(w["name"]).startswith("w0"))
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lost: list[str] = []
        deadline = time.monotonic() + 60
        while not lost and run.poll() is None and time.monotonic() < deadline:
            busy = client.processing(workers=[victim]).get(victim, [])
            if busy and len(list(out.glob("*.tif"))) >= 3:  # under way, and the victim holds scenes
                _kill(worker)
                lost = [str(k) for k in busy]
            time.sleep(0.02)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)
    assert lost, "the worker was never killed while it held a scene: the run ended too soon"
    assert run.returncode == 0, stderr
    return victim, lost, stderr


def _kill_the_client_mid_run(cmd: list[str], env: dict[str, str], out: Path, n: int) -> dict[str, int]:
    """Run ``cmd`` and SIGKILL it once 5 outputs exist; returns the outputs there then (name -> mtime)."""
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while run.poll() is None and len(list(out.glob("*.tif"))) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        run.kill()
        run.wait(timeout=10)
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    assert 5 <= len(written) < n, f"the client was not killed mid-run ({len(written)} of {n} outputs)"
    return written


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_or_client_killed_mid_run_loses_nothing_and_rerun_does_nothing(
        dask_cluster: tuple[str, list[subprocess.Popen], dict[str, str]], tiny_model_path: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client

    address, procs, env = dask_cluster
    inputs = [str(_scenes(tmp_path / "gen", 20, 160, 200))]
    if REAL_SCENE.is_file():
        inputs.append(str(REAL_SCENE))
    else:
        warnings.warn(f"real data {REAL_SCENE} not found: the cluster test ran on the generated scenes only",
                      stacklevel=1)
    n = 20 + (len(inputs) == 2)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "sarcolor", "colorize", *inputs, "-o", str(out), "--cluster", address,
                "--model", str(tiny_model_path)]

    out = tmp_path / "out"
    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        victim, lost, _ = _run_killing_a_worker(client, command(out), env, out, procs[1])

    # Every output exists, complete, byte-identical to one process with the same torch threads (1).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert colorize_paths(inputs, tmp_path / "ref", model=tiny_model_path, quiet=True) == 0
    ref, got = _bytes(tmp_path / "ref"), _bytes(out)
    assert len(ref) == n and sorted(got) == sorted(ref)
    assert [name for name in ref if got[name] != ref[name]] == []
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp file of the killed worker
    m = _manifest(out)
    assert {r["status"] for r in m["scenes"].values()} == {"done"} and len(m["scenes"]) == n
    survivor = next(r["worker"] for r in m["scenes"].values() if r["worker"] != victim)
    for key in lost:  # the scenes the killed worker held were done again by the other one
        scene = key.removeprefix("sarcolor-").rsplit("-", 1)[0]
        assert m["scenes"][scene]["worker"] == survivor, (scene, m["scenes"][scene])
    assert {r["model_loads"] for r in m["scenes"].values()} == {1}  # once per worker process
    assert {r["threads"] for r in m["scenes"].values()} == {1}

    # The same command again: the manifest says all done, nothing is rewritten.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"nothing to do: {n} already done, 0 skipped (already there)" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # the manifest too

    # The client killed mid-run: the same command finishes the rest and keeps what was already written.
    out2 = tmp_path / "out2"
    written = _kill_the_client_mid_run(command(out2), env, out2, n)
    resumed = subprocess.run(command(out2), env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    done_before = int(re.search(r"(\d+) already done", resumed.stderr)[1])  # type: ignore[index]
    assert done_before >= len(written), resumed.stderr
    assert {name: (out2 / name).stat().st_mtime_ns for name in written} == written
    assert _bytes(out2) == ref
    assert {r["status"] for r in _manifest(out2)["scenes"].values()} == {"done"}
