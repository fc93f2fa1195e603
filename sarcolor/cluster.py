"""Colorize many scenes on a Dask cluster: one task per scene, a resumable run manifest, whole-run progress.

Inputs, outputs and the model file must be on a filesystem every worker sees under the same paths (a shared
disk, NFS, a cluster filesystem). Each worker process loads the model once (``get_model``'s per-process
cache) and writes each output atomically exactly as the plain path does (``colorize_file``), so a worker that
dies leaves no partial output and Dask runs its scene again on another worker. The client records every
finished scene in ``OUTDIR/sarcolor-run.json``; the same command run again skips the scenes recorded done
whose outputs are still there unchanged and redoes the rest, so a killed run resumes without losing or
repeating finished work. A scene is one task: the engine already streams a scene of any size through
bounded memory (row strips), so no scene needs more than one worker's memory.

Each task uses OMP_NUM_THREADS threads (Dask's nanny sets 1, so run one single-threaded worker process per
core). The default model runs on numpy, so workers need no PyTorch and never import it (other models do).
Outputs are byte-identical to ``sarcolor colorize`` run with the same thread count.

Public entry points:
    colorize_paths_distributed(inputs, output, client=client, ...) -> exit code
    colorize_on_cluster(inputs, output, address=... or workers=N, ...) -> exit code (the CLI)
    open_client(address=... or workers=N) -> context manager giving a dask.distributed.Client
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import inspect
import json
import logging
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .atomic import remove_temps_of, write_text_atomic
from .config import check_manifest
from .engine import (
    ModelLike,
    colorize_file,
    error_line,
    get_model,
    inference_threads,
    input_paths,
    model_loads,
    plan_jobs,
)
from .errors import SarColorError
from .modelfile import check_render, resolve_model_path
from .raster import WRITE_DRIVERS

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("sarcolor")

MANIFEST = "sarcolor-run.json"
CONNECT_TIMEOUT_S = 20  # to reach a scheduler given with --cluster
MANIFEST_EVERY_S = 2.0  # at most one manifest write per this many seconds while scenes finish (and at the end)
_NOT_SETTINGS = {"device", "progress"}  # colorize_file arguments that do not change an output's pixels
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def _distributed() -> Any:
    """The dask.distributed module, or a one-line error that says what to install."""
    try:
        import distributed
    except ImportError:
        raise SarColorError("--cluster/--workers need Dask: pip install 'sarcolor[cluster]'") from None
    return distributed


# --------------------------------------------------------------------------------------------------
# what a run is: model file, settings
# --------------------------------------------------------------------------------------------------
def run_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``colorize_file``'s keyword settings with its defaults filled in, as JSON values (for the manifest).

    Any keyword ``colorize_file`` accepts passes through, so a new colorize option needs no change here.
    """
    params = {name: p.default for name, p in inspect.signature(colorize_file).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_SETTINGS}
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise SarColorError(f"unknown colorize setting(s): {', '.join(unknown)}")
    return json.loads(json.dumps({**params, **settings}))  # tuples -> lists, exactly as read back from JSON


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # cache key only: a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process and file version."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _model_file(model: ModelLike) -> Path:
    if isinstance(model, tuple):
        raise SarColorError("on a cluster the model must be a shipped name or a .safetensors file "
                            "(workers load it themselves)")
    return resolve_model_path(model).resolve()


# --------------------------------------------------------------------------------------------------
# the task: one scene on a worker
# --------------------------------------------------------------------------------------------------
def _worker_address() -> str:
    try:
        return str(_distributed().get_worker().address)
    except ValueError:  # not inside a Dask worker (a test calling the task directly)
        return "local"


@functools.cache
def _undo_frozen_mmap_threshold() -> bool:
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_, and setting it also freezes glibc's mmap threshold at 128 KiB:
    every strip-sized array is then mapped and unmapped anew, which made 1 MP scenes ~50% slower in a worker.
    Set the threshold glibc would have grown to by itself (32 MiB); once per process, glibc only."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, AttributeError, TypeError):  # not glibc
        return False


def colorize_scene(src: str, dst: str, model: str, sha256: str, device: str, settings: dict[str, Any]
                   ) -> dict[str, Any]:
    """The Dask task: colorize ``src`` into ``dst`` (atomically) and say what was done, for the manifest."""
    _undo_frozen_mmap_threshold()
    if file_sha256(Path(model)) != sha256:
        raise SarColorError(f"{model}: the model file on worker {_worker_address()} differs from the client's "
                            "(sha256); every worker needs the same model file at the same path")
    net, cfg = get_model(model, device)  # cached: loaded once per worker process
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    info = colorize_file(src, dst, net, cfg, progress=False, **settings)
    st = Path(dst).stat()
    return {"width": info.width, "height": info.height, "seconds": round(info.seconds, 3),
            "output_size": st.st_size, "output_mtime_ns": st.st_mtime_ns, "worker": _worker_address(),
            "pid": os.getpid(), "threads": inference_threads(), "model_loads": model_loads()}


# --------------------------------------------------------------------------------------------------
# the manifest
# --------------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """``OUTDIR/sarcolor-run.json``: model, settings, and one record per scene (keyed by output path
    relative to OUTDIR) with status pending | done | failed | existing (an output this run did not make)."""

    path: Path
    model: dict[str, str]
    settings: dict[str, Any]
    scenes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _saved: float = 0.0
    _on_disk: str = ""  # the scenes as last read or written: a run that changes nothing writes nothing

    @classmethod
    def open(cls, path: Path, model: dict[str, str], settings: dict[str, Any], overwrite: bool) -> Manifest:
        """The folder's manifest if it is for this model and these settings; a fresh one with ``overwrite``."""
        fresh = cls(path, model, settings)
        if not os.path.lexists(path):
            return fresh
        if not path.is_file():  # a FIFO would block the read for ever
            raise SarColorError(f"{path}: not a regular file; move it away to start over")
        try:
            old_model, old_settings, scenes = check_manifest(json.loads(path.read_text()))
        except (OSError, UnicodeError) as exc:
            raise SarColorError(f"{path}: not a readable sarcolor run manifest ({exc.__class__.__name__}); "
                                "move it away to start over") from None
        except (ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
            raise SarColorError(f"{path}: not a readable sarcolor run manifest ({why}); move it away to start over"
                                ) from None
        diff = [f"model sha256 {old_model.get('sha256', '?')[:12]} -> {model['sha256'][:12]}"
                ] if old_model.get("sha256") != model["sha256"] else []
        diff += [f"{k} {old_settings.get(k)!r} -> {settings.get(k)!r}" for k in sorted({*old_settings, *settings})
                 if old_settings.get(k) != settings.get(k)]
        if not diff:
            fresh.scenes, fresh._on_disk = scenes, json.dumps(scenes, sort_keys=True)
        elif not overwrite:
            raise SarColorError(f"{path.parent}: holds a run made with other settings ({'; '.join(diff)}); "
                                "use the same ones, --overwrite, or another output folder")
        return fresh

    def save(self, force: bool = True) -> None:
        """Write it atomically, if anything changed (``force`` False: at most every MANIFEST_EVERY_S)."""
        if not force and time.monotonic() - self._saved < MANIFEST_EVERY_S:
            return
        scenes = json.dumps(self.scenes, sort_keys=True)
        if scenes == self._on_disk and self.path.exists():
            return
        doc = {"format": 1, "updated": _now(), "model": self.model, "settings": self.settings,
               "scenes": self.scenes}
        write_text_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True))
        self._saved, self._on_disk = time.monotonic(), scenes


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _input_record(src: Path) -> dict[str, Any]:
    size, mtime = _stat(src) or (None, None)
    return {"input": str(src.resolve()), "input_size": size, "input_mtime_ns": mtime}


def _already_there(rec: dict[str, Any] | None, now: dict[str, Any], dst: Path) -> str | None:
    """'done' or 'existing' when the scene needs no work, else None. ``now``: the input as it is now."""
    out = _stat(dst)
    if out is None:
        return None
    if rec is None or rec.get("status") == "existing":
        return "existing"  # not made by this run: kept, as the plain path keeps existing outputs
    if any(rec.get(k) != v for k, v in now.items()):
        return None  # the input changed since
    if rec.get("status") == "done":
        return "done" if (rec.get("output_size"), rec.get("output_mtime_ns")) == out else None
    if rec.get("status") == "pending" and rec.get("replaces") != list(out):
        # written (atomically, so complete) by a task whose report was lost; not the old output of --overwrite
        rec.update(output_size=out[0], output_mtime_ns=out[1], note="found complete on resume")
        return "done"
    return None  # failed: try again


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Scene:
    key: str  # output path relative to OUTDIR
    src: Path
    dst: Path
    pixels: int


def _pixels(src: Path) -> int:
    """Width x height from the header (for progress); 0 when unreadable (the task reports why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(src) as ds:
                return int(ds.width) * int(ds.height)
    except Exception:  # noqa: BLE001 - any failure is reported by the task itself
        return 0


def _scenes_to_do(manifest: Manifest, jobs: list[tuple[Path, Path]], out: Path, overwrite: bool
          ) -> tuple[list[_Scene], dict[str, int]]:
    """The scenes still to do (recorded as pending) and counts of those that are not."""
    todo, counts = [], {"done": 0, "existing": 0}
    for src, dst in jobs:
        key = dst.relative_to(out).as_posix()
        now = _input_record(src)
        state = None if overwrite else _already_there(manifest.scenes.get(key), now, dst)
        if state is not None:
            counts[state] += 1
            manifest.scenes[key] = {**manifest.scenes.get(key, {}), **now, "status": state}
            continue
        old = _stat(dst)  # an output being replaced (--overwrite) must not pass for a finished one on resume
        manifest.scenes[key] = {**now, "status": "pending", **({"replaces": list(old)} if old else {})}
        todo.append(_Scene(key, src, dst, _pixels(src)))
    return todo, counts


def _dashboard(client: Client) -> str | None:
    """The dashboard's address; None where it cannot serve pages (it needs bokeh, here and on the scheduler)."""
    if find_spec("bokeh") is None:
        return None
    try:
        services = client.scheduler_info().get("services", {})
        return str(client.dashboard_link) if "dashboard" in services else None
    except Exception:  # noqa: BLE001 - a link is a nicety
        return None


def _failure(exc: BaseException, src: Path) -> str:
    if type(exc).__name__ == "KilledWorker":  # Dask gave up after distributed.scheduler.allowed-failures
        return f"sarcolor: error: {src}: every worker that ran it died (out of memory?)"
    return error_line(src, exc)


def _execute(client: Client, manifest: Manifest, todo: list[_Scene], task_args: tuple[Any, ...],
             quiet: bool) -> int:
    """Submit one task per scene, record each result as it arrives; returns the number of failures."""
    dist = _distributed()
    futures = {client.submit(colorize_scene, str(s.src.resolve()), str(s.dst.resolve()), *task_args,
                             key=f"sarcolor-{s.dst.name}-{secrets.token_hex(4)}", pure=False): s for s in todo}
    # Pixels (whole numbers: the bar ends exactly at its total), shown as Mpx done, Mpx/s and the ETA.
    bar = tqdm(total=sum(s.pixels for s in todo), unit="px", unit_scale=True, disable=quiet,
               desc=f"0/{len(todo)} scenes")
    done = failed = 0
    try:
        for fut in dist.as_completed(list(futures)):
            scene = futures.pop(fut)
            rec = manifest.scenes[scene.key]
            try:
                rec.update(status="done", finished=_now(), **fut.result())
                rec.pop("error", None), rec.pop("replaces", None)
                done += 1
            except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the run
                line = _failure(exc, scene.src)
                rec.update(status="failed", error=line.removeprefix("sarcolor: error: "))
                tqdm.write(line, file=sys.stderr)
                failed += 1
            bar.update(scene.pixels)
            bar.set_description_str(f"{done + failed}/{len(todo)} scenes")
            manifest.save(force=False)
    finally:
        bar.close()
        for fut in futures:  # interrupted: leave nothing of ours queued on the cluster
            fut.cancel()
        manifest.save()
    return failed


@dataclass
class _ClusterRun:
    out: Path
    manifest: Manifest
    todo: list[_Scene]
    task_args: tuple[Any, ...]  # model path, model sha256, device, settings
    errors: list[str]
    skipped: str  # "N already done, M skipped (already there)"


def _prepare_cluster_run(inputs: str | Path | Sequence[str | Path], output: str | Path, *, model: ModelLike,
                         device: str, out_ext: str, overwrite: bool, settings: dict[str, Any]) -> _ClusterRun:
    """Everything before the cluster is needed: check the inputs and model, read the manifest, find the work."""
    srcs, out = input_paths(inputs), Path(output)
    if out.suffix.lower() in WRITE_DRIVERS and not out.is_dir():
        raise SarColorError(f"{out}: on a cluster the output is a folder, not a file name")
    sets = run_settings(settings)
    model_path = _model_file(model)
    cfg = get_model(model_path, "cpu")[1]  # a broken model file fails here, once, not in every task
    check_render(cfg, sets.get("render"))  # and so does a rendering it does not know
    jobs, errors = plan_jobs(srcs, out, out_ext)
    out.mkdir(parents=True, exist_ok=True)
    ident = {"path": str(model_path), "sha256": file_sha256(model_path), "name": cfg.name}
    manifest = Manifest.open(out / MANIFEST, ident, sets, overwrite)
    todo, counts = _scenes_to_do(manifest, jobs, out, overwrite)
    manifest.save()
    for line in errors:
        print(line, file=sys.stderr)
    skipped = f"{counts['done']} already done, {counts['existing']} skipped (already there)"
    return _ClusterRun(out, manifest, todo, (str(model_path), ident["sha256"], device, sets), errors, skipped)


def _run_on_cluster(run: _ClusterRun, connect: Callable[[], AbstractContextManager[Client]], quiet: bool) -> int:
    """Send the scenes still to do to the cluster (``connect`` gives the client; not called when none are)."""
    if not run.todo:
        log.info("nothing to do: %s -> %s", run.skipped, run.out)
        return 1 if run.errors else 0
    with connect() as client:
        link = _dashboard(client)
        log.info("%d scene(s) to colorize (%.1f MP) on %d Dask worker(s), %s%s", len(run.todo),
                 sum(s.pixels for s in run.todo) / 1e6, len(client.scheduler_info().get("workers", {})),
                 run.skipped, f"; dashboard: {link}" if link else "")
        with logging_redirect_tqdm():
            failed = _execute(client, run.manifest, run.todo, run.task_args, quiet)
    remove_temps_of(s.dst for s in run.todo)  # from workers killed mid-scene; all our tasks have ended
    log.info("%d colorized, %s, %d failed -> %s (manifest %s)", len(run.todo) - failed, run.skipped,
             failed + len(run.errors), run.out, MANIFEST)
    return 1 if failed or run.errors else 0


def colorize_paths_distributed(inputs: str | Path | Sequence[str | Path], output: str | Path, *,
                               client: Client, model: ModelLike = "default", device: str = "auto",
                               out_ext: str = ".tif", overwrite: bool = False, quiet: bool = False,
                               **settings: Any) -> int:
    """Colorize files and folders into the folder ``output`` on the Dask cluster of ``client``.

    ``settings``: ``colorize_file``'s keywords (scale, bands, nodata, tta, ...), recorded in the manifest.
    Returns the exit code: 0, or 1 if any scene failed (one line each on stderr). Run it again to resume.
    """
    run = _prepare_cluster_run(inputs, output, model=model, device=device, out_ext=out_ext, overwrite=overwrite,
                   settings=settings)
    return _run_on_cluster(run, lambda: nullcontext(client), quiet)


# --------------------------------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------------------------------
def _check_where(address: str | None, workers: int | None) -> Any:
    """Check the cluster options before any work; returns the dask.distributed module."""
    dist = _distributed()
    if (address is None) == (workers is None):
        raise SarColorError("give either a Dask scheduler address (--cluster) or a number of workers (--workers)")
    if workers is not None and workers < 1:
        raise SarColorError(f"--workers {workers}: need at least 1")
    return dist


@contextmanager
def open_client(address: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a local cluster of ``workers`` single-threaded
    worker processes (closed on exit)."""
    dist = _check_where(address, workers)
    # Dask's INFO lines (workers starting and closing) would bury sarcolor's; its warnings still show.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if address is not None:
        try:
            client = dist.Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise SarColorError(f"--cluster {address}: cannot reach a Dask scheduler there ({why})") from None
        with client:
            yield client
        return
    # The dashboard on a free port: 8787 may be taken by another user's cluster.
    with dist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.WARNING) as cluster, dist.Client(cluster) as client:
        yield client


def colorize_on_cluster(inputs: Sequence[str | Path], output: str | Path, *, address: str | None = None,
                        workers: int | None = None, model: ModelLike = "default", device: str = "auto",
                        out_ext: str = ".tif", overwrite: bool = False, quiet: bool = False,
                        **settings: Any) -> int:
    """``sarcolor colorize ... --cluster ADDRESS | --workers N``; no cluster is started when nothing is to do."""
    _check_where(address, workers)
    run = _prepare_cluster_run(inputs, output, model=model, device=device, out_ext=out_ext, overwrite=overwrite,
                   settings=settings)
    return _run_on_cluster(run, lambda: open_client(address, workers), quiet)
