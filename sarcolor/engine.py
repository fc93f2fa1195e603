"""The colorize engine: a SAR scene (array or file) -> RGB, tile by tile, in bounded memory.

Per scene: one decimated read gives the scene statistics (so every tile is normalised identically), then
rows of overlapping tiles are read as full-width strips, invalid pixels are filled with the scene median
(so nodata never bleeds into its neighbours' colours), tiles are batched through the model, blended with a
cosine window and handed on (to an array, or streamed into the output file) as soon as their rows are final.

Public entry points:
    colorize(image, model="default", ...) -> (H, W, 3) uint8
    colorize_with_mask(image, model="default", ...) -> ((H, W, 3) uint8, (H, W) bool valid)
    colorize_array(model, cfg, sar, valid=...) -> (H, W, 3) uint8   (a loaded model, for evaluation)
    colorize_file(src, dst, model_obj, cfg, ...) -> SceneInfo       (the CLI's and the server's path)
    colorize_paths(inputs, output, ...) -> exit code (the CLI)
    plan_jobs(inputs, out, out_ext) -> (input, output) pairs of a batch (also used by sarcolor.cluster)
    get_model(model, device) -> (LightNet or nn.Module, ModelConfig), cached
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ModuleNotFoundError:  # a Python without it (QGIS's own, given sarcolor's folder): BLAS threads as they are
    threadpool_limits = None  # type: ignore[assignment]

from . import lightnet
from .errors import SarColorError, WriteFailed, require_torch
from .lightlooks import Mapper, check_look
from .lightnet import LightNet
from .modelfile import ModelConfig, check_render, read_config, resolve_model_path
from .preprocess import SCALES, SceneStats, model_input, scene_stats
from .raster import (
    READ_EXTS,
    ArraySource,
    ReflectPadded,
    RGBWriter,
    SarSource,
    check_output,
    gdal_env,
    made_by_sarcolor,
    open_sar,
    output_driver,
)
from .tiling import StripAccumulator, Tile, best_tile, blend_window, pad_to_multiple, tile_grid

log = logging.getLogger("sarcolor")

MAX_STATS_PIXELS = 4_000_000  # scene statistics from a decimated read of at most this many pixels
EDGE_MARGIN = 32  # mirrored pixels added around a scene: 32 takes the frame from -18/255 to under 1/255
BATCH_PIXELS = {"cpu": 1 << 20, "cuda": 16 << 20}  # tile pixels per forward pass

Model = Any  # a LightNet (the numpy runtime) or a torch nn.Module
ModelLike = str | Path | tuple[Model, ModelConfig]
RowSink = Callable[[int, np.ndarray, np.ndarray], None]  # (first row, rgb (3, n, W) uint8, valid (n, W))
Progress = bool | Callable[[int, int], None]  # True: a tqdm bar over tiles; a callable gets (done, total)


@dataclass(frozen=True)
class SceneInfo:
    """What happened to one scene (for logs, the server and evaluation)."""

    name: str
    width: int
    height: int
    band: int  # the 1-based band used as SAR input
    scale: str  # the resolved scale ("auto" decided)
    tiles: int
    valid_fraction: float  # of the decimated statistics sample
    seconds: float
    output: Path | None = None


# --------------------------------------------------------------------------------------------------
# model and device
# --------------------------------------------------------------------------------------------------
def _torch_runtime(what: str = "this model") -> types.ModuleType:
    require_torch(what)
    from . import torch_runtime

    return torch_runtime


def resolve_device(device: Any = "auto") -> Any:
    """'auto' -> cuda when available, else cpu (a torch.device; needs PyTorch)."""
    return _torch_runtime(f"--device {device}").resolve_device(device)


def device_name(device: Any = "auto") -> str:
    """``resolve_device`` as a name; without PyTorch 'auto' and 'cpu' are 'cpu' (the numpy runtime's)."""
    if str(device) in ("auto", "cpu") and find_spec("torch") is None:
        return "cpu"
    return str(resolve_device(device))


@functools.lru_cache(maxsize=4)
def _load_light(path: str, mtime_ns: int) -> LightNet:
    del mtime_ns  # part of the cache key only: a re-exported model file is loaded again
    return LightNet.load(path)


def _is_torch_module(obj: object) -> bool:
    return "torch" in sys.modules and sys.modules["torch"] is not None and _torch_runtime().is_module(obj)


def get_model(model: ModelLike = "default", device: Any = "auto") -> tuple[Model, ModelConfig]:
    """A shipped name, a .safetensors path, or a (model, cfg) pair -> (model, cfg).

    A model the numpy runtime runs (``lightnet.supports``: the default) is a ``LightNet`` unless ``device`` asks
    for a GPU; any other needs PyTorch (a one-line error without it) and comes as an nn.Module on ``device``.
    Files are loaded once per process and device (cached). A pair is moved only if ``device`` is explicit.
    """
    if isinstance(model, tuple):
        if (len(model) != 2 or not isinstance(model[1], ModelConfig)
                or not (isinstance(model[0], LightNet) or _is_torch_module(model[0]))):
            raise SarColorError("model must be a name, a .safetensors path or a (module, config) pair")
        net, cfg = model
        if device != "auto" and not isinstance(net, LightNet):
            net = net.to(resolve_device(device))
        return net, cfg
    path = resolve_model_path(model)
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    cfg = read_config(path)
    if str(device) in ("auto", "cpu") and lightnet.supports(cfg):
        return _load_light(*key), cfg
    rt = _torch_runtime(f"model {model} ({cfg.arch})" if device in ("auto", "cpu") else f"--device {device}")
    return rt.load_cached(*key, str(rt.resolve_device(device)))


def model_loads() -> int:
    """How many model files this process has loaded so far (the cluster's workers report it)."""
    loads = _load_light.cache_info().misses
    if "sarcolor.torch_runtime" in sys.modules:
        loads += sys.modules["sarcolor.torch_runtime"].load_cached.cache_info().misses
    return loads


def count_parameters(model: Model) -> int:
    """The number of trained weights of a model of either runtime."""
    if isinstance(model, LightNet):
        return sum(int(v.size) for v in model.weights.values())
    return sum(p.numel() for p in model.parameters())


def inference_threads() -> int:
    """Threads for CPU inference: OMP_NUM_THREADS when set (a Dask worker's nanny sets 1), else all cores.

    The thread count is part of what makes the torch path's outputs byte-exact: oneDNN's convolutions sum in a
    thread-dependent order, so about one uint8 value in a million differs by 1 between, say, 1 and 2 threads.
    (The numpy runtime gives the same bytes whatever the count: its pieces run in parallel (tiles, bands of
    rows, chunks of the head) are each computed the same way by one thread, with BLAS at one thread a call.)
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_FLIPS = [(), (-1,), (-2,), (-2, -1)]  # test-time augmentation: the four flips of a tile


def _light_tile(net: LightNet, x: np.ndarray, tta: bool, look: str, render: int,
                tone: tuple[float, float] | None, map_: Mapper = map) -> np.ndarray:
    """One (C, h, w) tile through the numpy runtime -> (3, h, w) float32 RGB in [0, 1]."""
    if not tta:
        return net.forward(x, look, render, tone, map_)
    y = sum(np.flip(net.forward(np.ascontiguousarray(np.flip(x, f)), look, render, tone, map_), f) for f in _FLIPS)
    return y / np.float32(len(_FLIPS))


Predict = Callable[[np.ndarray], np.ndarray]  # (B, C, h, w) model input -> (B, 3, h, w) RGB in [0, 1]


@contextmanager
def _light_runtime(run: Callable[..., np.ndarray], threads: int) -> Iterator[tuple[Predict, int]]:
    """The numpy runtime's predict function: tiles side by side in ``threads`` threads, or a lone tile's bands
    of rows (a scene of one tile); numpy releases the GIL in its array operations."""
    # The head's matrix products are small: BLAS's own threads on top of these would only contend (and spin:
    # 2-4x the CPU time of a tile, measured), so BLAS runs one thread a call while inference lasts.
    with threadpool_limits(1, user_api="blas") if threadpool_limits else nullcontext():
        if threads == 1:
            yield (lambda batch: np.stack([run(x) for x in batch])), 1
            return
        with ThreadPoolExecutor(threads) as pool:
            def predict(batch: np.ndarray) -> np.ndarray:
                if len(batch) == 1:
                    return run(batch[0], map_=pool.map)[None]
                return np.stack(list(pool.map(run, batch)))

            yield predict, threads


@contextmanager
def _runtime(model: Model, cfg: ModelConfig, tile_pixels: int, tta: bool, look: str, render: str | None,
             tone: tuple[float, float] | None) -> Iterator[tuple[Predict, int]]:
    """The model's predict function and how many tiles it takes at once, while inference is set up."""
    threads = inference_threads()
    if isinstance(model, LightNet):
        index = model.render_index(render)
        run = functools.partial(_light_tile, model, tta=tta, look=look, render=index, tone=tone)
        with _light_runtime(run, threads) as runtime:
            yield runtime
        return
    rt = _torch_runtime()
    device = rt.model_device(model)
    per_batch = max(1, BATCH_PIXELS.get(device.type, BATCH_PIXELS["cpu"]) // tile_pixels)
    with rt.inference(model, device, threads):
        yield (lambda batch: rt.predict(model, cfg, batch, device, tta, look, render, tone)), per_batch


# --------------------------------------------------------------------------------------------------
# the tile loop
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TilePlan:
    stats: SceneStats
    valid_fraction: float
    tile: int
    overlap: int
    grid: list[list[Tile]]


def _plan_tiles(source: SarSource, cfg: ModelConfig, multiple: int, scale: str) -> _TilePlan:
    if scale not in SCALES:
        raise SarColorError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    sample, valid = source.sample(MAX_STATS_PIXELS)
    stats = scene_stats(sample, valid, scale)  # raises on an all-invalid image; logs an 'auto' decision
    tile = max(multiple, cfg.tile // multiple * multiple)  # whole multiples: no padding inside large scenes
    overlap = min(cfg.overlap, tile // 2)
    tile = _best_tile(source, tile, overlap, multiple)
    return _TilePlan(stats, float(valid.mean()), tile, overlap,
                 tile_grid(source.height, source.width, tile, overlap))


def _best_tile(source: SarSource, tile: int, overlap: int, multiple: int) -> int:
    """best_tile for the scene itself: a scene that would be one tile stays one tile with its mirrored edges."""
    m = int(getattr(source, "margin", 0))
    h, w = source.height - 2 * m, source.width - 2 * m
    size = best_tile(h, w, tile, overlap, multiple)
    if size >= max(h, w):
        return max(size, -(-max(source.height, source.width) // multiple) * multiple)
    return best_tile(source.height, source.width, tile, overlap, multiple)


def _strips(source: SarSource, grid: list[list[Tile]]) -> Iterator[tuple[list[Tile], np.ndarray, np.ndarray]]:
    """Full-width strips for each tile row; rows shared with the previous strip are not read again
    (each source row is read once, in order, which sequential formats such as PNG/JPEG need)."""
    y_held, data, valid = 0, None, None
    for row in grid:
        y, h = row[0].y, row[0].h
        if data is not None and y < y_held + len(data):
            end = y_held + len(data)
            keep = slice(y - y_held, None)
            if y + h > end:
                new_d, new_v = source.read_rows(end, y + h)
                data, valid = np.concatenate([data[keep], new_d]), np.concatenate([valid[keep], new_v])
            else:
                data, valid = data[keep][:h], valid[keep][:h]
        else:
            data, valid = source.read_rows(y, y + h)
        y_held = y
        yield row, data, valid


def _tile_input(raw: np.ndarray, valid: np.ndarray, t: Tile, plan: _TilePlan, cfg: ModelConfig) -> np.ndarray:
    """One tile of a strip -> (C, h, w) model input; invalid pixels take the scene median first.

    Per tile rather than per strip: full-width float temporaries would dominate memory on wide scenes.
    """
    cols = slice(t.x, t.x + t.w)
    tile = raw[:, cols].astype(np.float32)  # a copy: the strip is kept for the next row of tiles
    tile[~valid[:, cols]] = plan.stats.fill  # per band for a dual-pol (h, w, 2) tile
    return model_input(tile, plan.stats, cfg.input_norm, cfg.in_channels)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[0, 1] float32 -> uint8, rounding; works in place (full-width strips are large)."""
    rgb *= 255.0
    rgb += 0.5
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


class _NoBar:
    """What ``_run_tiles`` needs of a progress bar, when none is shown."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _tile_bar(total: int, name: str, show: bool) -> Any:
    if not show:  # tqdm is imported only to draw a bar (its import is a tenth of the light path's start-up)
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc=name, leave=False)


def _run_tiles(source: SarSource, model: Model, cfg: ModelConfig, plan: _TilePlan, sink: RowSink, *,
         tta: bool, progress: Progress, look: str = "sar", render: str | None = None) -> None:
    multiple = int(getattr(model, "multiple", 1))
    th, tw = plan.grid[0][0].h, plan.grid[0][0].w
    window = blend_window(th, tw, plan.overlap)
    acc = StripAccumulator(source.width)
    total = sum(len(r) for r in plan.grid)
    report = progress if callable(progress) else None
    bar = _tile_bar(total, Path(source.name).name, progress is True)
    done_tiles = 0
    tone = plan.stats.tone_map()  # one scene, one tone: the same for every tile
    with bar, _runtime(model, cfg, th * tw, tta, look, render, tone) as (predict, per_batch):
        for i, (row, raw, valid) in enumerate(_strips(source, plan.grid)):
            for b in range(0, len(row), per_batch):
                tiles = row[b:b + per_batch]
                batch = pad_to_multiple(np.stack([_tile_input(raw, valid, t, plan, cfg) for t in tiles]),
                                        multiple)
                out = predict(batch)[:, :, :th, :tw]
                for t, o in zip(tiles, out, strict=True):
                    acc.add(t, o, window)
                bar.update(len(tiles))
                done_tiles += len(tiles)
                if report is not None:
                    report(done_tiles, total)
            y = row[0].y
            done = plan.grid[i + 1][0].y if i + 1 < len(plan.grid) else source.height
            y0, rgb = acc.flush(done)
            sink(y0, to_uint8(rgb), valid[y0 - y:done - y])


def _named(name: str, exc: SarColorError) -> SarColorError:
    msg = str(exc)
    return exc if msg.startswith(name) or isinstance(exc, WriteFailed) else SarColorError(f"{name}: {msg}")


def _colorize_source(source: SarSource, model: Model, cfg: ModelConfig, sink: RowSink, *, scale: str,
                     tta: bool, progress: Progress, before: Callable[[], None] | None = None,
                     look: str = "sar", render: str | None = None) -> SceneInfo:
    t0 = time.perf_counter()
    multiple = int(getattr(model, "multiple", 1))
    # Mirrored context around the scene: zero padding at its edges darkened a frame along every output's edge.
    padded = ReflectPadded(source, EDGE_MARGIN)
    try:
        check_look(look)
        plan = _plan_tiles(padded, cfg, multiple, scale)
        if before is not None:
            before()
        _run_tiles(padded, model, cfg, plan, padded.crop(sink), tta=tta, progress=progress, look=look, render=render)
    except SarColorError as exc:
        raise _named(source.name, exc) from None
    return SceneInfo(source.name, source.width, source.height, source.band, plan.stats.scale,
                     sum(len(r) for r in plan.grid), plan.valid_fraction, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
def _bands_arg(bands: int | Sequence[int] | None) -> list[int] | None:
    if bands is None:
        return None
    return [int(bands)] if isinstance(bands, int | np.integer) else [int(b) for b in bands]


def _array_sink(height: int, width: int) -> tuple[np.ndarray, np.ndarray, RowSink]:
    rgb = np.zeros((height, width, 3), np.uint8)
    valid_out = np.zeros((height, width), bool)

    def sink(y0: int, rows: np.ndarray, valid: np.ndarray) -> None:
        n = rows.shape[1]
        rgb[y0:y0 + n] = np.moveaxis(rows, 0, -1) * valid[..., None]
        valid_out[y0:y0 + n] = valid

    return rgb, valid_out, sink


def colorize_with_mask(image: np.ndarray | str | Path, model: ModelLike = "default", *, scale: str = "auto",
                       bands: int | Sequence[int] | None = None, nodata: float | None = None,
                       device: Any = "auto", tta: bool = False, progress: Progress = False,
                       look: str = "sar", render: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Colorize an array ((H, W) or (bands, H, W)) or an image file in memory.

    Returns (rgb (H, W, 3) uint8, valid (H, W) bool); invalid (NaN / nodata / masked) pixels are black.
    ``look``: "sar" (lightness from the SAR, colour from the model) or "optical" (the full prediction);
    ``render``: one of the model's optical renderings (``cfg.renders``; default ``cfg.render``).
    """
    net, cfg = get_model(model, device)
    env = gdal_env() if not isinstance(image, np.ndarray) else nullcontext()
    with env, open_sar(image, bands=_bands_arg(bands), polarisation=cfg.polarisation, nodata=nodata) as src:
        rgb, valid, sink = _array_sink(src.height, src.width)
        _colorize_source(src, net, cfg, sink, scale=scale, tta=tta, progress=progress, look=look, render=render)
    return rgb, valid


def colorize(image: np.ndarray | str | Path, model: ModelLike = "default", *, scale: str = "auto",
             bands: int | Sequence[int] | None = None, nodata: float | None = None,
             device: Any = "auto", tta: bool = False, progress: Progress = False,
             look: str = "sar", render: str | None = None) -> np.ndarray:
    """Colorize an array ((H, W) or (bands, H, W)) or an image file; returns (H, W, 3) uint8 RGB.

    ``model``: a shipped name, a .safetensors path or a (model, cfg) pair. Invalid pixels come out black.
    ``look``: "sar" (default: the SAR's lightness, the model's colour) or "optical".
    """
    return colorize_with_mask(image, model, scale=scale, bands=bands, nodata=nodata, device=device, tta=tta,
                              progress=progress, look=look, render=render)[0]


def colorize_array(model: Model, cfg: ModelConfig, sar: np.ndarray, *, valid: np.ndarray | None = None,
                   scale: str = "auto", device: Any | None = None, tta: bool = False,
                   progress: Progress = False, look: str = "sar", render: str | None = None) -> np.ndarray:
    """A loaded model on a 2-D SAR band in raw units (for evaluation): (H, W, 3) uint8, invalid pixels black.

    ``valid`` (H, W) bool adds to the NaN mask. Same tiling, statistics and blending as ``sarcolor colorize``.
    """
    net, cfg = get_model((model, cfg), "auto" if device is None else device)
    src = ArraySource(sar, valid=valid, polarisation=cfg.polarisation)
    rgb, _, sink = _array_sink(src.height, src.width)
    _colorize_source(src, net, cfg, sink, scale=scale, tta=tta, progress=progress, look=look, render=render)
    return rgb


def colorize_file(src: str | Path, dst: str | Path, model_obj: Model, cfg: ModelConfig, *,
                  scale: str = "auto", bands: int | Sequence[int] | None = None, nodata: float | None = None,
                  device: Any | None = None, tta: bool = False, progress: Progress = False,
                  look: str = "sar", render: str | None = None) -> SceneInfo:
    """Colorize one image file into ``dst``; returns what was done. The output appears only when complete.

    .tif/.tiff -> Cloud-Optimized GeoTIFF, 3-band uint8 RGB, nodata=0, the input's CRS/transform (or GCPs,
    RPCs); .png/.jpg -> 8-bit RGB, invalid pixels black. ``device`` None: wherever ``model_obj`` is.
    """
    src, dst = Path(src), Path(dst)
    check_output(src, dst)
    model_obj, cfg = get_model((model_obj, cfg), "auto" if device is None else device)
    georef_kept = output_driver(dst) == "GTiff"
    check_look(look)
    render = check_render(cfg, render)
    # provenance, in every format (PNG: text chunks; JPEG: a comment): it also keeps a folder run from taking
    # sarcolor's own outputs for inputs
    tags = {"TIFFTAG_SOFTWARE": "sarcolor", "SARCOLOR_MODEL": cfg.name, "SARCOLOR_LOOK": look}
    if render:  # which colour balance the file carries (provenance for the analyst)
        tags["SARCOLOR_RENDER"] = render
    with gdal_env(), open_sar(src, bands=_bands_arg(bands), polarisation=cfg.polarisation,
                              nodata=nodata) as source:
        writer: RGBWriter | None = None

        def open_writer() -> None:  # only once the statistics passed: no temp file for a hopeless input
            nonlocal writer
            if not georef_kept and source.georef.present:
                log.warning("%s: georeferencing is not kept in %s output; write .tif to keep it",
                            dst, dst.suffix.lower())
            writer = RGBWriter(dst, source.width, source.height, georef=source.georef, tags=tags)

        def sink(y0: int, rgb: np.ndarray, valid: np.ndarray) -> None:
            assert writer is not None
            writer.write_rows(y0, rgb, valid)

        try:
            info = _colorize_source(source, model_obj, cfg, sink, scale=scale, tta=tta, progress=progress,
                                    before=open_writer, look=look, render=render)
            assert writer is not None
            writer.commit()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return SceneInfo(**{**info.__dict__, "output": dst})


_OWN = "one of sarcolor's own outputs"


def _entry_problem(p: Path, exclude: Path) -> str | None:
    """Why a folder entry named like an image is not an input: a line's reason, "" to leave it out silently
    (a folder, our output folder), ``_OWN``, or None for an input."""
    try:
        real = p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13: a symlink loop
        return "a symlink loop"
    except OSError as exc:
        return ("a link that leads nowhere" if p.is_symlink() and not os.path.lexists(os.path.realpath(p))
                else "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror or "cannot be read")
    if real == exclude or exclude in real.parents or real.is_dir():
        return ""  # never re-colorize our own outputs when -o is inside the input folder
    if not real.is_file():
        return "not a regular file"
    return _OWN if made_by_sarcolor(real) else None


def _find_images(folder: Path, exclude: Path) -> tuple[list[Path], list[str]]:
    """Image files under ``folder`` (not hidden, not under ``exclude``: our own output folder, not sarcolor's
    own outputs) and one error line for each entry that cannot be an input (a symlink loop, a dangling link,
    a FIFO, a folder that cannot be listed); those never stop the run."""
    found, problems, own = [], [], 0
    exclude = exclude.resolve()

    def unlistable(exc: OSError) -> None:
        problems.append(f"sarcolor: error: {exc.filename}: cannot be listed ({exc.strerror}); skipped")

    for root, dirs, files in os.walk(folder, onerror=unlistable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            p = Path(root) / name
            if name.startswith(".") or p.suffix.lower() not in READ_EXTS:
                continue
            why = _entry_problem(p, exclude)
            if why is None:
                found.append(p)
            elif why == _OWN:
                own += 1
            elif why:
                problems.append(f"sarcolor: error: {p}: {why}; skipped")
    if own:
        log.info("%s: %d of sarcolor's own outputs left out", folder, own)
    return sorted(found), sorted(problems)


def input_paths(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or several -> a list of existing paths (else a one-line error naming the missing one)."""
    paths = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    if not paths:
        raise SarColorError("no input given")
    for p in paths:
        if not p.exists():
            raise SarColorError(f"{p}: no such file or folder" + (" (a link that leads nowhere)"
                                                                   if p.is_symlink() else ""))
        if not (p.is_file() or p.is_dir()):  # a FIFO, socket or device: reading it could block for ever
            raise SarColorError(f"{p}: not a regular file or folder")
    return paths


def plan_jobs(inputs: Sequence[Path], out: Path, out_ext: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) pairs for files and folders colorized into the folder ``out``.

    A folder's tree is mirrored into ``out``; a file goes to ``out/<stem><out_ext>``. Returns the pairs and
    the error lines (for stderr) of inputs that would share an output with an earlier one (those are left out).
    """
    output_driver(Path("x" + out_ext))
    if out.exists() and not out.is_dir():
        what = "input is a folder" if len(inputs) == 1 else "there are several inputs"
        raise SarColorError(f"{out}: {what}, so the output must be a folder too")
    jobs: list[tuple[Path, Path]] = []
    errors: list[str] = []
    claimed: dict[Path, Path] = {}
    for src in inputs:
        if src.is_dir():
            files, problems = _find_images(src, out)
            errors += problems
            if not files:
                if len(inputs) == 1 and not problems:
                    raise SarColorError(f"{src}: no images found ({', '.join(READ_EXTS)})")
                log.warning("%s: no images found", src)
            pairs = [(f, out / f.relative_to(src).with_suffix(out_ext)) for f in files]
        else:
            pairs = [(src, out / (src.stem + out_ext))]
        for f, dst in pairs:
            if dst in claimed:
                errors.append(f"sarcolor: error: {f}: output {dst} is also the output of {claimed[dst]}; skipped")
                continue
            claimed[dst] = f
            jobs.append((f, dst))
    if not jobs and not errors:
        raise SarColorError(f"no images found in {', '.join(map(str, inputs))} ({', '.join(READ_EXTS)})")
    return jobs, errors


def error_line(src: Path, exc: BaseException) -> str:
    """The one line reported for a failed scene of a batch (a SarColorError already names its file)."""
    if isinstance(exc, SarColorError):
        return f"sarcolor: error: {exc}"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"sarcolor: error: {src}: {exc.__class__.__name__}: {first}"


def colorize_paths(inputs: str | Path | Sequence[str | Path], output: str | Path, *,
                   model: ModelLike = "default", scale: str = "auto", bands: Sequence[int] | None = None,
                   device: str = "auto", out_ext: str = ".tif", tta: bool = False, overwrite: bool = False,
                   quiet: bool = False, nodata: float | None = None, look: str = "sar",
                   render: str | None = None, verbose: bool = False) -> int:
    """The ``sarcolor colorize`` command in one process: file -> file, or files and folders -> a folder.
    ``verbose``: a folder run's info lines for each file (else one progress bar, and errors).

    Returns the exit code: 0, or 1 if any file of a batch failed (each failure is one line on stderr).
    A single file's problem raises SarColorError. ``sarcolor.cluster`` runs the same on a Dask cluster.
    """
    srcs, out = input_paths(inputs), Path(output)
    check_look(look)
    kw = dict(scale=scale, bands=bands, nodata=nodata, tta=tta, look=look, render=render)
    with _log_around_bars(quiet):
        if len(srcs) == 1 and srcs[0].is_file():
            src = srcs[0]
            if out.is_dir():
                out = out / (src.stem + out_ext)
            check_output(src, out)
            net, cfg = get_model(model, device)  # a bad --model, --device or --render fails even when skipping
            check_render(cfg, render)
            if out.exists() and not overwrite:
                log.warning("%s: exists, skipped (use --overwrite to replace it)", out)
                return 0
            info = colorize_file(src, out, net, cfg, progress=not quiet, **kw)
            log.info("%s -> %s (%dx%d, %d tiles, %.1f s)", src, out, info.width, info.height, info.tiles,
                     info.seconds)
            return 0
        return _colorize_batch(srcs, out, model=model, device=device, out_ext=out_ext, overwrite=overwrite,
                               quiet=quiet, verbose=verbose, **kw)


def _log_around_bars(quiet: bool) -> Any:
    """Log lines printed above the progress bars, not through them (nothing to do when quiet)."""
    if quiet:
        return nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _colorize_batch(srcs: list[Path], out: Path, *, model: ModelLike, device: str, out_ext: str,
                    overwrite: bool, quiet: bool, verbose: bool = False, **kw: object) -> int:
    from tqdm import tqdm

    jobs, errors = plan_jobs(srcs, out, out_ext)
    net, cfg = get_model(model, device)
    check_render(cfg, kw.get("render"))  # once, not as every file's error  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    for line in errors:
        tqdm.write(line, file=sys.stderr)
    done = skipped = 0
    failed = len(errors)
    made: list[Path] = []  # folders this run created (a mirrored tree): those left empty by failures go again
    with _info_lines(verbose):
        for f, dst in tqdm(jobs, unit="file", disable=quiet):
            if dst.exists() and not overwrite:
                skipped += 1
                continue
            try:
                made += _make_folder(dst.parent)
                info = colorize_file(f, dst, net, cfg, progress=False, **kw)  # type: ignore[arg-type]
                log.info("%s -> %s (%dx%d, %.1f s)", f, dst, info.width, info.height, info.seconds)
                done += 1
            except (SarColorError, OSError, RuntimeError, ValueError, MemoryError) as exc:  # one bad file
                failed += 1                                                                 # must not stop a batch
                tqdm.write(error_line(f, exc), file=sys.stderr)
    for folder in reversed(made):
        with suppress(OSError):  # not empty: it holds outputs
            folder.rmdir()
    log.info("%d colorized, %d skipped (already there), %d failed -> %s", done, skipped, failed, out)
    return 1 if failed else 0


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those it created, outermost first."""
    missing, p = [], folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


@contextmanager
def _info_lines(verbose: bool) -> Iterator[None]:
    """A folder run's per-file info lines only with --verbose: one progress bar otherwise (warnings and
    errors always show)."""
    if verbose or log.getEffectiveLevel() > logging.INFO:
        yield
        return
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)

