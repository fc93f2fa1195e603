"""``sarcolor serve``: the web page and the HTTP API, on FastAPI + uvicorn.

Design, in the order a request meets it:

- A client must send its request headers within ``HEADER_TIMEOUT`` seconds (a uvicorn protocol subclass)
  and its body at a minimum rate (``BODY_GRACE`` seconds plus one second per ``BODY_MIN_RATE`` bytes),
  else 408: slow clients cannot hold connections open for ever.
- The request body is capped by a small ASGI middleware (declared ``Content-Length`` first, then the bytes
  actually received), so an oversized upload is refused with 413 before it is spooled anywhere.
- The upload is copied into a private folder (``tempfile.mkdtemp``, mode 0700) under a server-generated name;
  the client's filename is only ever used, sanitised, in the ``Content-Disposition`` of downloads. Starlette
  spools multipart bodies to an anonymous temp file first (unlinked at creation on Linux); we never name it.
- The type is sniffed from magic bytes (PNG, JPEG, TIFF/BigTIFF), never from the filename or content type.
- Width x height is read from the header and refused above ``max_pixels`` before anything is decoded, which
  is what stops decompression bombs (a tiny PNG or deflated TIFF that claims a huge raster).
- Jobs are queued on a bounded ``ThreadPoolExecutor``; at most ``max_queue`` jobs wait, beyond that the
  server answers 503 (with Retry-After) instead of piling work (and memory) up.
- Each job runs in a worker process (``sarcolor.workers``) that loaded the model once, within a time budget
  (``job_timeout``): a job over it is killed and answered 413. A worker that ran a large job is replaced, so
  the memory that job needed goes back to the system; the server process itself never decodes pixels for
  inference. Inference is ``sarcolor.engine.colorize_file``, the same code path as ``sarcolor colorize``.
- Whatever an upload contains, the answer is the image or a 4xx JSON error; a 500 means a bug in sarcolor.
- A janitor thread deletes each job's folder ``ttl`` seconds after the job finished, and the oldest finished
  jobs first whenever all kept files together pass ``max_storage_mb``.
- Requests name one of the server's own hosts (``Host``: loopback names unless ``allowed_hosts`` says more),
  or get 403: a web page that had our address resolved under its own name (DNS rebinding) reaches nothing.
  A POST sent by a page of another origin (``Origin``, ``Sec-Fetch-Site``) gets 403 too: no drive-by uploads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from rasterio.errors import RasterioError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import version
from .atomic import write_atomic
from .errors import SarColorError, WriteFailed
from .lightlooks import LOOKS
from .preprocess import SCALES
from .raster import GDAL_ERRORS, parse_bands, verify_raster
from .workers import JobTimeout, WorkerPool

log = logging.getLogger("sarcolor")

# Magic numbers of the formats we accept. Everything else is a 415, whatever the filename says.
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
]
# The optical renderings of the shipped model in the analyst's words (the page shows another model's by name).
RENDER_NAMES = {
    "s2-l2a": "Sentinel-2 natural colour (L2A)",
    "s2-l1c-p99": "Sentinel-2 L1C, stretched per channel",
    "sih-display": "ISRO's sample scenes (India)",
    "sen12": "SEN1-2 (worldwide)",
    "3mos": "Google-Earth-like views (3MOS)",
}
_EXT = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}
_MAX_BANDS = 16  # with max_pixels this bounds the decoded bytes of a TIFF too
_MULTIPART_SLACK = 64 * 1024  # multipart boundaries and headers around the file itself
# Slow clients (the numbers of Apache's mod_reqtimeout): headers within 10 s; the body within 30 s plus one
# second per 16 KiB received, so an upload is never cut off while it keeps arriving at 16 KiB/s or more.
HEADER_TIMEOUT = 10.0
RECENT_S = 5.0  # a job finished this recently keeps its files whatever the storage cap: its client is downloading
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})  # the Host names answered by default
BODY_GRACE = 30.0
BODY_MIN_RATE = 16 * 1024
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The page is self-contained; this policy keeps it so (no inline script, nothing from elsewhere).
_PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
             "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


class ApiError(Exception):
    """An error with an HTTP status, rendered as ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------------
# Inspecting an upload without decoding it
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageInfo:
    kind: str  # "png", "jpeg" or "tiff"
    width: int
    height: int
    bands: int
    dtype: str
    georeferenced: bool


def sniff(head: bytes) -> str | None:
    """The image type from the first bytes of a file, or None when it is none we accept."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def inspect_image(path: Path, kind: str, max_pixels: int) -> ImageInfo:
    """Read only the header: size, bands, georeferencing. Raises ApiError 400 (corrupt) or 413 (too big)."""
    if kind in ("png", "jpeg"):
        from PIL import Image

        try:
            with warnings.catch_warnings():
                # PIL warns (and raises past twice its limit) on huge headers; we decide below ourselves.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    width, height = im.size
                    bands = len(im.getbands())
                    mode = im.mode
                    if kind == "png":
                        # Walks the chunks and checks their CRCs without inflating anything. Needed because
                        # GDAL reads a truncated PNG without an error (it returns made-up rows).
                        im.verify()
        except Image.DecompressionBombError:
            raise ApiError(413, f"image is over the pixel limit of {max_pixels:,} pixels") from None
        except Exception as exc:  # PIL raises many types on broken headers
            raise ApiError(400, f"corrupt or unreadable {kind.upper()} image ({exc.__class__.__name__})") from None
        info = ImageInfo(kind, width, height, bands, "uint16" if mode.startswith("I;16") else "uint8", False)
    else:
        import rasterio

        try:
            with _gdal_env(), rasterio.open(path, driver="GTiff") as ds:  # driver: TIFF magic, TIFF reader
                georef = ds.crs is not None or ds.gcps[1] is not None or not ds.transform.is_identity
                info = ImageInfo(kind, ds.width, ds.height, ds.count, ds.dtypes[0], bool(georef))
                dtypes = set(ds.dtypes)
        except GDAL_ERRORS as exc:
            raise ApiError(400, f"corrupt or unreadable TIFF image ({_scrub(_first_line(exc), path.parent)})") from None
        _check_pixel_types(dtypes)
    if info.width < 1 or info.height < 1:
        raise ApiError(400, "image has no pixels")
    if info.width * info.height > max_pixels:
        raise ApiError(413, f"image is {info.width} x {info.height} = {info.width * info.height:,} pixels, "
                            f"over the limit of {max_pixels:,}")
    if info.bands > _MAX_BANDS:
        raise ApiError(422, f"image has {info.bands} bands; at most {_MAX_BANDS} are accepted")
    return info


def _check_pixel_types(dtypes: set[str]) -> None:
    """422 for pixels the engine cannot colour (complex SLC, ...), before any job is queued."""
    from .raster import check_pixel_type

    try:
        for dtype in sorted(dtypes):
            check_pixel_type("image", dtype)
    except SarColorError as exc:
        raise ApiError(422, str(exc).removeprefix("image: ")) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _gdal_env():
    """sarcolor's GDAL settings (bounded cache, truncated files fail), plus for uploads: never list or probe
    the folder for sidecar files."""
    from .raster import gdal_env

    return gdal_env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_PAM_ENABLED="NO")


def safe_stem(filename: str | None) -> str:
    """A harmless name for downloads, from the client's filename (used in headers only, never on disk)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rsplit(".", 1)[0]).strip("._")[:60]
    return stem or "sar"


# --------------------------------------------------------------------------------------------------
# Previews (display only: a percentile stretch and a decimated read, no inference)
# --------------------------------------------------------------------------------------------------
def _preview_shape(width: int, height: int, max_side: int) -> tuple[int, int]:
    f = min(1.0, max_side / max(width, height))
    return max(1, round(height * f)), max(1, round(width * f))


def write_input_preview(src: Path, dst: Path, *, bands: list[int] | None, polarisation: str,
                        max_side: int) -> None:
    """Grey PNG of the SAR band the model reads, at most max_side on the long side.

    8-bit inputs are shown as they are; others (dB, amplitude, power) are stretched between their 1st and
    99th percentile in dB, the usual way to look at SAR.
    """
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning

    from .preprocess import scene_stats, to_db
    from .raster import open_sar

    with warnings.catch_warnings(), _gdal_env():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_sar(src, bands=bands, polarisation=polarisation) as sar:  # the engine's band choice
            shape = _preview_shape(sar.ds.width, sar.ds.height, max_side)  # as stored; as_seen turns it
            whole = shape == (sar.ds.height, sar.ds.width)
            resampling = Resampling.nearest if whole or sar.palette is not None else Resampling.average
            raw = sar.ds.read(sar.band, out_shape=shape, resampling=resampling, masked=True)
            data, valid = sar.as_seen(np.ma.getdata(raw), ~np.ma.getmaskarray(raw))
    if data.dtype == np.uint8:
        grey = data.astype(np.float32)
    else:
        valid &= np.isfinite(data)
        try:
            stats = scene_stats(data, valid, "auto")
            grey = np.clip((to_db(data, stats.scale) - stats.lo) / (stats.hi - stats.lo), 0, 1) * 255
        except SarColorError:  # nothing valid: a black preview is honest
            grey = np.zeros(data.shape, np.float32)
    grey = np.where(valid, np.nan_to_num(grey), 0).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(dst, format="PNG", compress_level=3)


def write_png(src_tif: Path, dst: Path, max_side: int | None = None) -> None:
    """The RGB(A) GeoTIFF result as PNG, optionally shrunk to max_side (for display)."""
    import rasterio
    from PIL import Image
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings(), _gdal_env():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src_tif) as ds:
            if max_side is None or max(ds.width, ds.height) <= max_side:
                if ds.width * ds.height > 64e6:
                    # Very large: let GDAL stream it row by row instead of holding it all in memory.
                    from rasterio.shutil import copy as gdal_copy

                    gdal_copy(ds, str(dst), driver="PNG", ZLEVEL=3)
                    return
                shape = (ds.height, ds.width)
            else:
                shape = _preview_shape(ds.width, ds.height, max_side)
            bands = list(range(1, min(ds.count, 4) + 1))
            arr = ds.read(bands, out_shape=(len(bands), *shape))
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[0]]
    pixels = arr[0] if mode == "L" else np.ascontiguousarray(np.moveaxis(arr, 0, -1))
    Image.fromarray(pixels, mode=mode).save(dst, format="PNG", compress_level=3)


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    folder: Path
    info: ImageInfo
    stem: str
    scale: str
    bands: list[int] | None
    look: str = "sar"
    render: str | None = None
    status: str = "queued"  # queued -> running -> done | failed
    progress: float = 0.0
    error: str | None = None
    error_status: int | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    future: Future | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def input_path(self) -> Path:
        return self.folder / f"input{_EXT[self.info.kind]}"

    @property
    def result_tif(self) -> Path:
        return self.folder / "result.tif"

    @property
    def result_png(self) -> Path:
        return self.folder / "result.png"

    @property
    def preview_png(self) -> Path:
        return self.folder / "preview.png"

    @property
    def input_preview(self) -> Path:
        return self.folder / "input_preview.png"


class JobManager:
    """Owns the private folder, the worker pool, the job table and the janitor."""

    def __init__(self, run: Callable[[Job], None], *, workers: int, max_queue: int, ttl: float,
                 max_storage: int = 2048 * 2**20) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sarcolor-serve-"))  # mode 0700: private to this user
        self.root.chmod(0o700)
        self._run = run
        self.workers = workers
        self.max_queue = max_queue
        self.ttl = ttl
        self.max_storage = max_storage
        self._sizes: dict[str, tuple[int, int]] = {}  # job id -> (its folder's mtime, bytes in it then)
        self.jobs: dict[str, Job] = {}
        self._pending: set[str] = set()  # folders of uploads still being checked, not yet jobs
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sarcolor-job")
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
        # The folder goes even if the app is never shut down cleanly (tests, Ctrl-C before start-up).
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def new_folder(self) -> tuple[str, Path]:
        job_id = secrets.token_urlsafe(16)  # unguessable: a job id is the only key to someone's image
        folder = self.root / job_id
        self._pending.add(job_id)  # before it exists, so the janitor never takes it for a stray
        folder.mkdir(mode=0o700)
        return job_id, folder

    def discard(self, job_id: str, folder: Path) -> None:
        """Forget an upload that was refused before it became a job, and delete its files now."""
        self._pending.discard(job_id)
        shutil.rmtree(folder, ignore_errors=True)

    def _snapshot(self) -> list[Job]:
        # list() of a dict view is one C call under the GIL: safe while the janitor deletes entries.
        return list(self.jobs.values())

    def active(self) -> int:
        return sum(1 for j in self._snapshot() if j.status in ("queued", "running"))

    def queue_position(self, job: Job) -> int:
        """How many queued jobs were submitted before this one (0 when running or next)."""
        if job.status != "queued":
            return 0
        return sum(1 for j in self._snapshot() if j.status == "queued" and j.created < job.created)

    def check_room(self) -> None:
        """ApiError 503 when the queue is full (checked again, atomically, by submit)."""
        busy = self.active()
        if busy >= self.workers + self.max_queue:
            raise ApiError(503, f"server busy: {busy} jobs are queued or running; retry later")

    def submit(self, job: Job) -> Job:
        """Queue a job; when the queue is full its files are deleted and ApiError 503 is raised."""
        with self._lock:
            try:
                self.check_room()
            except ApiError:
                self.discard(job.id, job.folder)
                raise
            self.jobs[job.id] = job
            self._pending.discard(job.id)
            job.future = self._pool.submit(self._guarded, job)
        return job

    def _guarded(self, job: Job) -> None:
        job.status, job.started = "running", time.time()
        try:
            self._run(job)
            job.progress, job.status = 1.0, "done"
        except ApiError as exc:
            job.error, job.error_status, job.status = exc.message, exc.status, "failed"
        except Exception as exc:  # a bug: log it whole, tell the client one line
            if self._stop.is_set():  # shutting down: its folder was deleted under it, nothing to report
                job.error, job.error_status, job.status = "server shut down", 503, "failed"
                return
            log.exception("job %s failed", job.id)
            job.error, job.error_status, job.status = f"internal error ({exc.__class__.__name__})", 500, "failed"
        finally:
            job.finished = time.time()
            self.enforce_cap()

    def _bytes(self, job: Job) -> int:
        """The bytes in a job's folder (re-counted only when the folder changed: files are renamed in)."""
        try:
            mtime = job.folder.stat().st_mtime_ns
            cached = self._sizes.get(job.id)
            if cached is None or cached[0] != mtime:
                cached = (mtime, sum(e.stat().st_size for e in os.scandir(job.folder) if e.is_file()))
                self._sizes[job.id] = cached
        except FileNotFoundError:
            return 0
        return cached[1]

    def enforce_cap(self, now: float | None = None) -> int:
        """Delete finished jobs, oldest first, while all kept files together pass ``max_storage``; the newest
        finished job and any that finished in the last ``RECENT_S`` seconds are spared (their clients are
        fetching the results now). Returns how many jobs went."""
        now = time.time() if now is None else now
        with self._lock:
            jobs = self._snapshot()
            total = sum(self._bytes(j) for j in jobs)
            old = sorted((j for j in jobs if j.finished is not None), key=lambda j: j.finished or 0.0)[:-1]
            gone = []
            for job in (j for j in old if now - (j.finished or now) >= RECENT_S):
                if total <= self.max_storage:
                    break
                total -= self._bytes(job)
                del self.jobs[job.id]
                self._sizes.pop(job.id, None)
                gone.append(job)
        for job in gone:
            shutil.rmtree(job.folder, ignore_errors=True)
        if gone:
            log.info("storage cap of %.0f MB: the %d oldest result(s) deleted", self.max_storage / 2**20, len(gone))
        return len(gone)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)  # a dict lookup: the id never becomes a path unless it is ours
        if job is None:
            raise ApiError(404, "no such job (unknown id, or its files expired and were deleted)")
        return job

    def sweep(self, now: float | None = None) -> int:
        """Delete finished jobs older than ttl, and any stray folder; returns how many jobs went."""
        now = time.time() if now is None else now
        with self._lock:
            expired = [j for j in self.jobs.values() if j.finished is not None and now - j.finished >= self.ttl]
            for job in expired:
                del self.jobs[job.id]
        for job in expired:
            self._sizes.pop(job.id, None)
            shutil.rmtree(job.folder, ignore_errors=True)
        self.enforce_cap(now)
        for folder in self.root.iterdir():  # strays (e.g. left by a crash) get the same ttl
            if folder.name not in self.jobs and folder.name not in self._pending:
                try:
                    if now - folder.stat().st_mtime >= self.ttl:
                        shutil.rmtree(folder, ignore_errors=True)
                except FileNotFoundError:
                    pass
        return len(expired)

    def start(self) -> None:
        if self._janitor is None:
            interval = min(max(self.ttl / 4, 0.2), 60.0)
            self._janitor = threading.Thread(target=self._janitor_loop, args=(interval,), daemon=True,
                                             name="sarcolor-janitor")
            self._janitor.start()

    def _janitor_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # the janitor must outlive a surprise (e.g. a folder deleted by hand)
                log.exception("janitor sweep failed")

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._finalizer()


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------
@dataclass
class ServerConfig:
    max_upload_bytes: int
    max_pixels: int
    workers: int
    ttl: float
    sync_max_pixels: int
    preview_max: int
    max_queue: int
    device: str
    job_timeout: float
    max_storage_bytes: int = 2048 * 2**20
    allowed_hosts: frozenset[str] | None = None  # None: any Host


def _host_name(host: str) -> str:
    """A Host header's name without its port ("[::1]:8000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _SameOrigin:
    """ASGI middleware: 403 unless the request names one of our hosts, and, for a state-changing request from a
    browser, unless the page that sent it is ours (its ``Origin`` is our own ``Host``)."""

    def __init__(self, app: Any, hosts: frozenset[str] | None) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        why = None
        if self.hosts is not None and _host_name(host) not in self.hosts:
            why = (f"Host {host[:64]!r} is not served here (a server for a team: sarcolor serve --allowed-hosts "
                   "NAME,...)")
        elif scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get(b"origin")
            if (origin is not None and urlsplit(origin.decode("latin-1")).netloc.lower() != host.lower()
                    or headers.get(b"sec-fetch-site") == b"cross-site"):
                why = "a request from a page of another site is refused"
        if why is None:
            return await self.app(scope, receive, send)
        resp = JSONResponse({"detail": why}, status_code=403, headers={"Connection": "close"})
        return await resp(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: 413 for a POST body over the limit, by declared length or by bytes received; 408 for
    a body that arrives slower than ``BODY_MIN_RATE`` (after ``BODY_GRACE`` seconds)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            # Answer without reading the body: nothing of it is stored.
            resp = JSONResponse({"detail": _too_large_msg(self.limit)}, status_code=413,
                                headers={"Connection": "close"})
            return await resp(scope, receive, send)
        seen, complete = 0, False
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def counting_receive() -> dict:
            nonlocal seen, complete
            if complete:  # after the body: a wait for the disconnect, which may last
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), start + BODY_GRACE + seen / BODY_MIN_RATE - loop.time())
            except asyncio.TimeoutError:
                raise StarletteHTTPException(408, f"upload too slow: {seen:,} bytes in {loop.time() - start:.0f} s; "
                                                  f"the body must keep arriving at {BODY_MIN_RATE // 1024} KiB/s",
                                             headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.limit:
                    # FastAPI re-raises HTTPException from body parsing as is, so this becomes a JSON 413.
                    raise StarletteHTTPException(413, _too_large_msg(self.limit))
            else:
                complete = True
            return message

        await self.app(scope, counting_receive, send)


def _too_large_msg(limit: int) -> str:
    return f"upload is over the size limit of {(limit - _MULTIPART_SLACK) / 2**20:.1f} MB"


def _remove_outputs(job: Job) -> None:
    """After a failed or killed job: everything in its folder but the upload and its preview (partial
    files, temp files)."""
    for path in job.folder.iterdir():
        if path not in (job.input_path, job.input_preview) and path.is_file():
            path.unlink(missing_ok=True)


def _progress_callback(job: Job) -> Callable[[int, int], None]:
    """The engine reports (tiles done, tiles total); job.progress goes 0 -> 0.95, the rest is previews."""

    def report(done: int, total: int) -> None:
        if total > 0:
            job.progress = max(job.progress, min(done / total, 1.0) * 0.95)

    return report


def _scrub(text: str, folder: Path) -> str:
    """A message without our private paths or file names (the client only knows its own file name)."""
    text = re.sub(re.escape(str(folder)) + r"(/[^\s:,;'\"]*)?", "", text)
    return re.sub(r"\binput\.(png|jpg|tif): ?", "", text).strip(" :'\"")


def _api_wording(text: str) -> str:
    """The engine speaks CLI (``--bands 2``, ``--scale db``); the API's parameters are ``bands=2``, ``scale=db``."""
    return re.sub(r"--(bands|scale|look|render)\b ?", r"\1=", text)


def _engine_error(exc: SarColorError, folder: Path) -> ApiError:
    """The engine's message for a client: our private paths out, CLI wording in API terms; 400 or 422."""
    text = _api_wording(_scrub(str(exc), folder)) or "the image could not be colorized"
    corrupt = any(w in text for w in ("corrupt", "truncated", "not a readable", "not a supported", "cannot read"))
    return ApiError(400 if corrupt else 422, text)


# --------------------------------------------------------------------------------------------------
# What a worker process does (sarcolor.workers runs these in the child)
# --------------------------------------------------------------------------------------------------
def _atomic(dst: Path, write: Callable[[Path], None]) -> None:
    """write(tmp), checked, then renamed to dst: a reader never sees half a file."""
    write_atomic(dst, write, verify=verify_raster, errors=GDAL_ERRORS)


def _full_png(_state: Any, src: Path, dst: Path, *, progress: Callable[[int, int], None]) -> None:
    """The full-resolution PNG of a result GeoTIFF (in a worker: decoding a large result takes memory)."""
    _atomic(dst, lambda tmp: write_png(src, tmp))


def _worker_state(model: Any, device: str) -> tuple[Any, Any]:
    """Load the model in a worker process, once: (module, config)."""
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore, registered with the server's resource tracker: a
    # worker killed (timeout, recycle) never unregisters it, and the tracker warns of a leak at shutdown.
    tqdm.set_lock(threading.RLock())
    module, cfg, _, _ = _load(model, device)
    return module, cfg


def _work(state: tuple[Any, Any], folder: Path, src: Path, opts: dict, preview_max: int, *,
          progress: Callable[[int, int], None]) -> tuple[int, str] | None:
    """The SAR preview (input_preview.png), then ``src`` colorized into ``folder``/result.tif and its
    display-sized preview.png; returns None, or (HTTP status, message)."""
    from .engine import colorize_file

    module, cfg = state
    try:  # first, so that the page can show the SAR while the rest runs
        _atomic(folder / "input_preview.png", lambda tmp: write_input_preview(
            src, tmp, bands=opts.get("bands"), polarisation=cfg.polarisation, max_side=preview_max))
    except (SarColorError, RasterioError):
        pass  # colorize_file below meets the same problem and reports it
    try:
        with _gdal_env():
            colorize_file(src, folder / "result.tif", module, cfg, progress=progress, **opts)
        _atomic(folder / "preview.png", lambda tmp: write_png(folder / "result.tif", tmp, preview_max))
    except WriteFailed:  # the server's own disk, not the upload: the client may try again later
        return 507, "the server could not store the result (its disk is full?); try again later"
    except SarColorError as exc:
        err = _engine_error(exc, folder)
        return err.status, err.message
    except RasterioError as exc:  # GDAL choking on the input's content; anything else is ours (a 500)
        return 400, f"could not decode the image: {_scrub(_first_line(exc), folder)}"
    return None


def _load(model: Any, device: str) -> tuple[Any, Any, str, str]:
    """(model, config, display name, card) from a shipped name, a path, or a (model, config) pair; the default
    model runs on the numpy runtime, others need PyTorch (``engine.get_model``)."""
    from .engine import get_model
    from .modelfile import read_metadata, resolve_model_path

    if isinstance(model, tuple):
        module, cfg = get_model(model)
        name, card = cfg.name, ""
    else:
        path = resolve_model_path(model)
        module, cfg = get_model(path, device)
        card = read_metadata(path).get("model_card", "")
        name = str(model) if not str(model).endswith(".safetensors") else path.stem
    if hasattr(module, "eval"):  # a torch module
        import torch

        # The engine switches to channels_last on every call; doing it once here means concurrent jobs
        # never swap a parameter's storage under each other's feet.
        module = module.eval().to(device).to(memory_format=torch.channels_last)
    return module, cfg, name, card


def _api_docs_html(spec: dict) -> str:
    """A self-contained API reference from the OpenAPI schema (works offline; the raw schema is /openapi.json)."""
    from html import escape

    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(spec['info']['title'])} "
           "HTTP API</title><link rel='stylesheet' href='/static/app.css'></head><body><main>",
           f"<h1>{escape(spec['info']['title'])} HTTP API {escape(spec['info']['version'])}</h1>",
           f"<p>{escape(spec['info'].get('description', ''))}</p>",
           "<p>Machine-readable schema: <a href='/openapi.json'>/openapi.json</a>. Errors are JSON: "
           "<code>{\"detail\": \"...\"}</code>.</p>"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            out.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2><p>{escape(op.get('summary', ''))}</p>")
            if op.get("description"):
                out.append(f"<p>{escape(op['description'])}</p>")
            params = [(p["name"], p["in"], p.get("description", "")) for p in op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {})
            if "multipart/form-data" in body:
                params.append(("file", "form-data", "the SAR image to upload"))
            if params:
                out.append("<ul>" + "".join(f"<li><code>{escape(n)}</code> ({escape(w)}) {escape(d)}</li>"
                                            for n, w, d in params) + "</ul>")
            codes = ", ".join(f"{c} {escape(r.get('description', ''))}" for c, r in op.get("responses", {}).items())
            out.append(f"<p class='small'>Responses: {codes}</p>")
    out.append("</main></body></html>")
    return "\n".join(out)


class _Service:
    """What the routes share: the limits, the loaded model's description, the job queue and the worker pool,
    and the steps of a request that are more than a route's few lines (storing an upload, a job's status)."""

    def __init__(self, model: Any, conf: ServerConfig) -> None:
        from .modelfile import resolve_model_path

        self.conf = conf
        # Here for its configuration, card and a clear error at start-up; the workers load their own copy.
        self.module, self.cfg, self.model_name, self.card = _load(model, "cpu")
        self.pool = WorkerPool(conf.workers, _worker_state,
                               (model if isinstance(model, tuple) else str(resolve_model_path(model)), conf.device))
        self.jobs = JobManager(self.run_job, workers=conf.workers, max_queue=conf.max_queue, ttl=conf.ttl,
                               max_storage=conf.max_storage_bytes)
        self.static = _load_static()

    def run_job(self, job: Job) -> None:
        conf = self.conf
        opts = {"scale": job.scale, "bands": job.bands, "look": job.look, "render": job.render}
        try:
            failure = self.pool.run(_work, (job.folder, job.input_path, opts, conf.preview_max),
                                    timeout=conf.job_timeout, progress=_progress_callback(job),
                                    recycle=job.info.width * job.info.height > conf.sync_max_pixels)
        except JobTimeout:
            _remove_outputs(job)
            raise ApiError(413, f"stopped after {conf.job_timeout:g} s, the time budget per image; "
                                "send a smaller image (or a crop)") from None
        if failure is not None:
            _remove_outputs(job)
            raise ApiError(*failure)

    def static_response(self, name: str) -> Response:
        if name not in self.static:  # an in-memory table: a URL never becomes a path
            raise ApiError(404, "not found")
        body, ctype = self.static[name]
        return Response(body, media_type=ctype, headers={"Content-Security-Policy": _PAGE_CSP,
                                                         "X-Content-Type-Options": "nosniff",
                                                         "Referrer-Policy": "no-referrer",
                                                         "Cache-Control": "no-cache"})

    def model_info(self) -> dict:
        from dataclasses import asdict

        from .engine import count_parameters

        conf = self.conf
        return {"name": self.model_name, "arch": self.cfg.arch, "parameters": count_parameters(self.module),
                "device": conf.device, "polarisation": self.cfg.polarisation, "config": asdict(self.cfg),
                "card": self.card, "render_names": {r: RENDER_NAMES.get(r, r) for r in self.cfg.renders},
                "limits": {"max_upload_mb": conf.max_upload_bytes / 2**20, "max_pixels": conf.max_pixels,
                           "sync_max_pixels": conf.sync_max_pixels, "preview_max": conf.preview_max,
                           "ttl_s": conf.ttl, "job_timeout_s": conf.job_timeout,
                           "max_storage_mb": conf.max_storage_bytes / 2**20,
                           "formats": ["png", "jpeg", "tiff"]}}

    def status(self, job: Job) -> dict:
        base = f"/api/jobs/{job.id}"
        out = {"id": job.id, "status": job.status, "progress": round(job.progress, 4),
               "queue_position": self.jobs.queue_position(job), "width": job.info.width, "height": job.info.height,
               "bands": job.info.bands, "input_type": job.info.kind, "georeferenced": job.info.georeferenced,
               "model": self.model_name, "error": job.error, "error_status": job.error_status,
               "expires_in_s": (None if job.finished is None
                                else max(0.0, job.finished + self.conf.ttl - time.time())),
               "links": {"self": base, "input_preview": f"{base}/input.png"}}
        if job.status == "done":
            out["links"].update(preview=f"{base}/preview.png", png=f"{base}/result?format=png",
                                tif=f"{base}/result?format=tif")
        return out

    def store_upload(self, upload: UploadFile) -> tuple[str, Path, str]:
        """Copy the spooled upload into a fresh private folder; returns (job id, folder, kind)."""
        upload.file.seek(0)
        head = upload.file.read(16)
        if not head:
            raise ApiError(400, "the file is empty")
        kind = sniff(head)
        if kind is None:
            raise ApiError(415, "unsupported file type: send a PNG, JPEG or (Geo)TIFF image")
        job_id, folder = self.jobs.new_folder()
        try:
            upload.file.seek(0)
            size = 0
            with open(folder / f"input{_EXT[kind]}", "wb") as out:
                while chunk := upload.file.read(1 << 20):
                    size += len(chunk)
                    if size > self.conf.max_upload_bytes:  # the body limit allows for multipart overhead
                        raise ApiError(413, _too_large_msg(self.conf.max_upload_bytes + _MULTIPART_SLACK))
                    out.write(chunk)
        except BaseException:
            self.jobs.discard(job_id, folder)
            raise
        return job_id, folder, kind

    def prepare(self, upload: UploadFile, scale: str, bands: str | None, look: str, render: str | None) -> Job:
        from .modelfile import check_render

        try:
            band_list = parse_bands(bands)
            check_render(self.cfg, render)
        except SarColorError as exc:
            raise ApiError(422, _api_wording(str(exc))) from None
        self.jobs.check_room()  # busy: answered before the upload is copied or opened
        job_id, folder, kind = self.store_upload(upload)
        try:
            info = inspect_image(folder / f"input{_EXT[kind]}", kind, self.conf.max_pixels)
            if band_list and max(band_list) > info.bands:
                raise ApiError(422, f"bands={bands}: the image has {info.bands} band(s)")
        except BaseException:
            self.jobs.discard(job_id, folder)
            raise
        return Job(id=job_id, folder=folder, info=info, stem=safe_stem(upload.filename), scale=scale,
                   bands=band_list, look=look, render=render)

    def result_png(self, job: Job) -> Path:
        """The full-resolution PNG, made on first request (the preview already is it for normal sizes)."""
        conf = self.conf
        if max(job.info.width, job.info.height) <= conf.preview_max:
            return job.preview_png
        with job.lock:
            if not job.result_png.exists():
                try:
                    self.pool.run(_full_png, (job.result_tif, job.result_png), timeout=conf.job_timeout,
                                  progress=lambda *_: None, recycle=True)
                except JobTimeout:
                    raise ApiError(413, f"the full-size PNG takes longer than the time budget of "
                                        f"{conf.job_timeout:g} s; download the GeoTIFF (format=tif)") from None
        return job.result_png

    def done(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job.status == "failed":
            raise ApiError(job.error_status or 500, job.error or "failed")
        if job.status != "done":
            raise ApiError(409, f"job is {job.status}; poll /api/jobs/{job.id} until it is done")
        return job


def create_app(model: Any = "default", *, max_upload_mb: float = 200.0, max_pixels: float = 400e6,
               workers: int = 1, ttl: float = 3600.0, sync_max_pixels: int = 2048 * 2048,
               preview_max: int = 4096, max_queue: int = 64, device: str = "auto",
               job_timeout: float = 600.0, max_storage_mb: float = 2048.0,
               allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS) -> FastAPI:
    """Build the FastAPI app. ``model`` is a shipped name, a .safetensors path or a (module, config) pair.

    Images up to ``sync_max_pixels`` are answered with the PNG directly (unless ``?async=1``); larger ones
    get a job id, and the worker process that ran them is replaced afterwards (memory back to the system).
    ``preview_max`` caps the long side of the images the page displays. A job running longer than
    ``job_timeout`` seconds is killed and answered 413. Kept files together stay under ``max_storage_mb`` (the
    oldest results go first). Requests must name a host in ``allowed_hosts`` (None or "*": any).
    """
    if (workers < 1 or max_queue < 0 or max_upload_mb <= 0 or max_pixels < 1 or ttl <= 0 or job_timeout <= 0
            or max_storage_mb <= 0):
        raise SarColorError("serve: workers >= 1, max_queue >= 0, and positive size, pixel, ttl, job time and "
                            "storage limits, please")
    hosts = None if allowed_hosts is None or "*" in allowed_hosts else frozenset(
        _host_name(h) for h in allowed_hosts)
    from .engine import device_name

    device = device_name(device)  # inference's rule: "auto" -> cuda when available; cuda without one fails
    conf = ServerConfig(max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_pixels), workers=workers,
                        ttl=float(ttl), sync_max_pixels=int(sync_max_pixels), preview_max=int(preview_max),
                        max_queue=int(max_queue), device=device, job_timeout=float(job_timeout),
                        max_storage_bytes=int(max_storage_mb * 2**20), allowed_hosts=hosts)
    svc = _Service(model, conf)

    async def lifespan(_app: FastAPI):
        svc.jobs.start()
        await run_in_threadpool(svc.pool.start)
        yield
        svc.jobs.close()
        svc.pool.close()

    # FastAPI's Swagger page loads its JavaScript from a CDN (blank offline); /docs is served by _api_docs_html.
    app = FastAPI(title="sarcolor", version=version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Colorize SAR images (PNG, JPEG, GeoTIFF). Small images are answered with the "
                              "PNG; large scenes, or `?async=1`, with a job to poll.")
    app.state.jobs = svc.jobs
    app.state.config = conf
    app.state.workers = svc.pool
    app.add_middleware(_BodyLimit, limit=conf.max_upload_bytes + _MULTIPART_SLACK)
    app.add_middleware(_SameOrigin, hosts=conf.allowed_hosts)  # added last: it runs first, before any body
    _add_error_handlers(app)
    _add_page_routes(app, svc)
    _add_colorize_route(app, svc)
    _add_job_routes(app, svc)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"detail": "one clear sentence"}``."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "malformed multipart body; send the image as multipart/form-data in the field 'file'"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for e in errors:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            if loc == "file" and e.get("type") == "missing":
                parts.append("no file: send the image as multipart/form-data in the field 'file'")
            else:
                parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request",
                             "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]},
                            status_code=422)


def _add_page_routes(app: FastAPI, svc: _Service) -> None:
    """The page, its files, the API reference and the two information routes."""

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return svc.static_response("index.html")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> Response:
        return Response(_api_docs_html(app.openapi()), media_type="text/html",
                        headers={"Content-Security-Policy": _PAGE_CSP, "X-Content-Type-Options": "nosniff"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        return svc.static_response(name)

    @app.get("/api/health", summary="Liveness and queue state")
    async def health() -> dict:
        return {"status": "ok", "model": svc.model_name, "device": svc.conf.device, "active_jobs": svc.jobs.active(),
                "workers": svc.conf.workers, "max_queue": svc.conf.max_queue}

    @app.get("/api/model", summary="The loaded model: name, configuration, card and server limits")
    async def model_info() -> dict:
        return svc.model_info()


def _add_colorize_route(app: FastAPI, svc: _Service) -> None:
    @app.post("/api/colorize", summary="Colorize a SAR image (PNG, JPEG or GeoTIFF)",
              response_class=Response, status_code=200,
              responses={200: {"content": {"image/png": {}}, "description": "the colorized image (small inputs)"},
                         202: {"description": "a job to poll at /api/jobs/{id} (large scenes or ?async=1)"},
                         400: {"description": "corrupt image"}, 413: {"description": "over size/pixel limit"},
                         415: {"description": "not a PNG, JPEG or TIFF"}, 422: {"description": "bad request"},
                         503: {"description": "queue full; retry later"}})
    async def colorize_endpoint(
        file: UploadFile = File(..., description="the SAR image: PNG, JPEG or (Geo)TIFF"),
        async_: bool = Query(False, alias="async", description="always answer 202 with a job id"),
        scale: Literal[SCALES] = Query("auto", description="how the SAR values are scaled"),  # type: ignore[valid-type]
        bands: str | None = Query(None, description="1-based band(s): one, or two as VV,VH",
                                  max_length=16),
        look: Literal[LOOKS] = Query("sar", description="sar: lightness from the SAR, colour from the model; "  # type: ignore[valid-type]
                                     "optical: the full optical-like prediction"),
        render: str | None = Query(None, max_length=32, description="whose optical colour balance to give "
                                   "(the shipped model: s2-l2a, the default; s2-l1c-p99; sih-display; sen12; 3mos)"),
    ) -> Response:
        job = await run_in_threadpool(svc.prepare, file, scale, bands, look, render)
        svc.jobs.submit(job)  # 503 when the queue is full
        if async_ or job.info.width * job.info.height > svc.conf.sync_max_pixels:
            return JSONResponse(svc.status(job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})
        assert job.future is not None
        await asyncio.wrap_future(job.future)
        if job.status != "done":
            raise ApiError(job.error_status or 500, job.error or "failed")
        path = await run_in_threadpool(svc.result_png, job)
        return FileResponse(path, media_type="image/png", filename=f"{job.stem}_sarcolor.png",
                            headers={"X-Job-Id": job.id}, content_disposition_type="inline")


def _add_job_routes(app: FastAPI, svc: _Service) -> None:
    @app.get("/api/jobs/{job_id}", summary="Job status, progress and result links")
    async def job_status(job_id: str) -> dict:
        return svc.status(svc.jobs.get(job_id))

    @app.get("/api/jobs/{job_id}/result", summary="Download the result as PNG or GeoTIFF",
             response_class=FileResponse,
             responses={200: {"content": {"image/png": {}, "image/tiff": {}}}})
    async def job_result(job_id: str, format: Literal["png", "tif"] = Query("png")) -> FileResponse:
        job = svc.done(job_id)
        if format == "tif":
            return FileResponse(job.result_tif, media_type="image/tiff", filename=f"{job.stem}_sarcolor.tif")
        path = await run_in_threadpool(svc.result_png, job)
        return FileResponse(path, media_type="image/png", filename=f"{job.stem}_sarcolor.png")

    @app.get("/api/jobs/{job_id}/preview.png", summary="The result, sized for display",
             response_class=FileResponse, responses={200: {"content": {"image/png": {}}}})
    async def job_preview(job_id: str) -> FileResponse:
        return FileResponse(svc.done(job_id).preview_png, media_type="image/png")

    @app.get("/api/jobs/{job_id}/input.png", summary="The uploaded SAR image as a grey PNG, sized for display",
             description="Made by the job's worker as its first step: a request for a queued job waits for it.",
             response_class=FileResponse, responses={200: {"content": {"image/png": {}}}})
    async def job_input(job_id: str) -> FileResponse:
        job = svc.jobs.get(job_id)
        while not job.input_preview.exists() and job.status in ("queued", "running"):
            await asyncio.sleep(0.1)
        if job.input_preview.exists():
            return FileResponse(job.input_preview, media_type="image/png")
        if job.status == "failed":
            raise ApiError(job.error_status or 500, job.error or "failed")
        raise ApiError(404, "no preview of this input")  # done without one: the preview's own read failed


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once into memory from package data."""
    out: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("sarcolor") / "static"
    if folder.is_dir():
        for entry in folder.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if entry.is_file() and suffix in _STATIC_TYPES:
                out[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return out


def allowed_hosts(listen: str, extra: str | None) -> frozenset[str] | None:
    """The Host names to answer: loopback names, the address listened on (unless every interface), and
    ``--allowed-hosts`` (comma-separated; "*": any, None returned)."""
    names = {h.strip() for h in (extra or "").split(",") if h.strip()}
    if "*" in names:
        return None
    if listen not in ("0.0.0.0", "::", ""):
        names.add(listen)
    return LOOPBACK_HOSTS | {_host_name(n) for n in names}


def serve(args: Any) -> int:
    """Run the app with uvicorn (``sarcolor serve``); returns the exit code."""
    import uvicorn
    from PIL import Image

    hosts = allowed_hosts(args.host, args.allowed_hosts)
    if args.host not in LOOPBACK_HOSTS:
        log.warning("listening on %s: the API has no authentication; anyone who can reach this port can use it "
                    "(Host names answered: %s)", args.host, "any" if hosts is None else ", ".join(sorted(hosts)))
    # Process-wide, so set here and not in create_app: PIL refuses (DecompressionBombError) beyond twice this.
    Image.MAX_IMAGE_PIXELS = int(args.max_pixels)
    app = create_app(model=args.model, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                     workers=args.workers, ttl=args.ttl, job_timeout=args.job_timeout,
                     max_storage_mb=args.max_storage_mb, allowed_hosts=hosts)
    log.info("serving on http://%s:%d/ (API docs at /docs)",
             f"[{args.host}]" if ":" in args.host else args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5,
                http=header_deadline_protocol())
    return 0


def header_deadline_protocol() -> type:
    """uvicorn's HTTP/1.1 protocol, plus: a request's headers must arrive within ``HEADER_TIMEOUT`` seconds.

    uvicorn times out idle keep-alive connections but not a client that sends its headers a byte at a time
    (or opens a connection and sends nothing): such connections would stay open for ever. The clock starts
    when the connection opens and again after each response; the request line and headers stop it.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                body = b'{"detail": "request headers not received in time"}'
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a request line and headers arrived
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may already start on a pipelined next request
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline
