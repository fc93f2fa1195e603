"""Raster I/O: where SAR pixels come from (files through rasterio, or numpy arrays) and where RGB goes.

Reading: ``open_sar`` gives a ``SarSource`` (one SAR band + its validity mask) that is read in row windows or
as a decimated sample for scene statistics. Band choice follows ``choose_band``.

Writing: ``RGBWriter`` streams rows into a temporary tiled GeoTIFF next to the output and, only once
everything is written, converts it (Cloud-Optimized GeoTIFF, PNG or JPEG) and renames it into place, so a
failed or interrupted run never leaves a half-written output.

GeoTIFF outputs are 3-band uint8 RGB with ``nodata=0`` on every band, and valid pixels are clamped to at
least 1 so a dark colour never reads as nodata. We chose nodata over an alpha band because QGIS, GDAL tools
(gdalwarp, gdal_merge, gdalbuildvrt) and web tilers all honour a declared nodata without any setup, QGIS
makes a pixel transparent when any of its RGB bands is nodata, and the file stays a plain 3-band RGB image
for tools that do not understand alpha.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window

from .atomic import publish, remove_stale_temps, remove_temp, signals_held, temp_name, write_failed
from .errors import SarColorError, WriteFailed

try:  # GDAL errors that rasterio does not wrap in a RasterioError (private module, hence the fallback)
    from rasterio._err import CPLE_BaseError as _CPLError
except ImportError:  # pragma: no cover
    _CPLError = RasterioError
_GDAL_ERRORS = (RasterioError, _CPLError)
GDAL_ERRORS = _GDAL_ERRORS  # what a reader of a hostile file must catch (the server does too)

log = logging.getLogger("sarcolor")

READ_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
WRITE_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
MIN_SIZE = 8  # smaller images carry no spatial context for a colorization model
BLOCK = 512  # GeoTIFF tile size of outputs
# A PNG/JPEG output up to this size is gathered in memory (3 bytes a pixel: 48 MB) rather than in a temporary
# GeoTIFF: half the writing time of a 1024x1024 scene. Larger ones stream through the file (bounded memory).
MEM_PIXELS = 16_000_000
STRIP_ROWS = 512  # rows per read when sampling a whole scene
GDAL_CACHE_MB = 128  # bounds GDAL's block cache (its default is 5% of RAM): a row of 512 px blocks of a 20000 px
# wide float32 scene is 40 MB; 256 only added ~90 MB to the peak of a 20000 px wide run, at the same speed
_EQUAL_TOL = 0.02  # 3 bands count as grey when 99% of pixel differences are within 2% of the value range


def gdal_env(**options: Any) -> rasterio.Env:
    """The GDAL settings for sarcolor's reads and writes."""
    # A truncated JPEG is only a libjpeg *warning* (GDAL fills the rest with grey), and GDAL's whole-image
    # PNG fast path decodes a truncated PNG without any error: make both fail loudly.
    # rasterio passes an integer GDAL_CACHEMAX to GDAL as bytes, not megabytes.
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024, GDAL_ERROR_ON_LIBJPEG_WARNING="TRUE",
                        GDAL_PNG_WHOLE_IMAGE_OPTIM="NO", **options)


# --------------------------------------------------------------------------------------------------
# band selection
# --------------------------------------------------------------------------------------------------
def choose_band(data_bands: Sequence[int], *, bands: Sequence[int] | None, polarisation: str,
                descriptions: Sequence[str | None], bands_equal: Callable[[Sequence[int]], bool],
                name: str) -> tuple[int, str | None]:
    """Pick the 1-based band holding the SAR image; returns (band, a message to log or None).

    ``data_bands`` are the non-alpha bands; ``bands`` is the user's choice (one band, or VV,VH).
    """
    count = len(descriptions)
    if bands is not None:
        bands = [int(b) for b in bands]
        if not 1 <= len(bands) <= 2:
            raise SarColorError(f"{name}: bands={bands}: give one band, or two (VV,VH)")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise SarColorError(f"{name}: band {bad[0]} does not exist (the image has {count} band(s))")
        if len(bands) == 1:
            return bands[0], None
        band = bands[1] if polarisation.upper() == "VH" else bands[0]
        pol = polarisation.upper()
        return band, f"{name}: using band {band} as {pol} (bands VV,VH = {bands[0]},{bands[1]})"
    n = len(data_bands)
    if n == 1:
        return data_bands[0], None
    if n == 2:
        # Dual-pol: the model was trained on one polarisation. Band names win over the VV,VH order convention.
        pol = polarisation.upper()
        named = [b for b in data_bands if (descriptions[b - 1] or "").strip().upper() == pol]
        band = named[0] if named else data_bands[1 if pol == "VH" else 0]
        how = "by band name" if named else "assuming bands are VV,VH"
        return band, (f"{name}: 2 bands, using band {band} for the model's {pol} polarisation "
                      f"({how}; --bands to change)")
    if n == 3 and bands_equal(data_bands):
        return data_bands[0], None  # grey stored as RGB
    kind = "3 bands that differ (a colour image?)" if n == 3 else f"{n} bands"
    raise SarColorError(f"{name}: {kind}; choose the SAR band with --bands N (or --bands VV,VH)")


DUAL = "VV+VH"  # the polarisation of a model that reads both polarisations where the input has them
CO_POL, CROSS_POL = ("VV", "HH"), ("VH", "HV")


def choose_bands(data_bands: Sequence[int], *, bands: Sequence[int] | None, polarisation: str,
                 descriptions: Sequence[str | None], bands_equal: Callable[[Sequence[int]], bool],
                 name: str) -> tuple[tuple[int, ...], str | None]:
    """The 1-based band(s) the model reads: (co-pol, cross-pol) for a model of polarisation ``DUAL`` given a
    dual-pol input (two data bands, or ``bands`` VV,VH), else the one band of ``choose_band``."""
    if polarisation.upper() != DUAL:
        band, msg = choose_band(data_bands, bands=bands, polarisation=polarisation, descriptions=descriptions,
                                bands_equal=bands_equal, name=name)
        return (band,), msg
    if bands is not None and len(bands) == 2:
        choose_band(data_bands, bands=[bands[0]], polarisation="VV", descriptions=descriptions,
                    bands_equal=bands_equal, name=name)  # checks that both exist
        choose_band(data_bands, bands=[bands[1]], polarisation="VV", descriptions=descriptions,
                    bands_equal=bands_equal, name=name)
        return (int(bands[0]), int(bands[1])), f"{name}: bands {bands[0]},{bands[1]} read as co-pol, cross-pol"
    if bands is None and len(data_bands) == 2:
        names = [(descriptions[b - 1] or "").strip().upper() for b in data_bands]
        co = [b for b, n in zip(data_bands, names, strict=True) if n in CO_POL]
        cross = [b for b, n in zip(data_bands, names, strict=True) if n in CROSS_POL]
        if co and cross:
            return (co[0], cross[0]), f"{name}: dual-pol, bands {co[0]},{cross[0]} by name (co-pol, cross-pol)"
        return tuple(data_bands), f"{name}: dual-pol, assuming bands are VV,VH (--bands N for one band)"
    band, msg = choose_band(data_bands, bands=bands, polarisation="VV", descriptions=descriptions,
                            bands_equal=bands_equal, name=name)
    return (band,), msg


def stack_bands(data: np.ndarray) -> np.ndarray:
    """(bands, h, w) as read -> (h, w) for one band, (h, w, bands) channels-last for several: the engine's
    row and column slicing then carries every band along."""
    return data[0] if len(data) == 1 else np.ascontiguousarray(np.moveaxis(data, 0, -1))


def _bands_equal(sample: np.ndarray, valid: np.ndarray | None = None) -> bool:
    """Are the (bands, h, w) sample's bands the same grey image, allowing for JPEG noise?"""
    s = sample.astype(np.float64)
    ok = np.isfinite(s).all(axis=0) if valid is None else (valid & np.isfinite(s).all(axis=0))
    if not ok.any():
        return True
    v = s[:, ok]
    with np.errstate(over="ignore", invalid="ignore"):  # values near float64's max: an inf range is fine
        lo, hi = np.percentile(v[0], [1, 99])
        tol = _EQUAL_TOL * max(hi - lo, 1e-12)
        return all(np.percentile(np.abs(v[i] - v[0]), 99) <= tol for i in range(1, len(v)))


def _check_size(name: str, height: int, width: int) -> None:
    if height < MIN_SIZE or width < MIN_SIZE:
        raise SarColorError(f"{name}: image is {width}x{height} pixels; "
                            f"at least {MIN_SIZE}x{MIN_SIZE} is needed")


def check_pixel_type(name: str, dtype: str, nbits: int | None = None) -> np.dtype:
    """The band's pixel type as numpy's, or a SarColorError for types no SAR colorization can use."""
    if "complex" in str(dtype):  # GDAL's CInt16/CInt32 have no numpy equivalent, so test the name first
        raise SarColorError(f"{name}: complex pixels ({dtype}): a single-look complex (SLC) product? sarcolor "
                            "colours detected amplitude/intensity images: use the GRD product, or write the "
                            f"amplitude with: gdal_translate DERIVED_SUBDATASET:AMPLITUDE:{name} amplitude.tif")
    dt = np.dtype(dtype)
    if dt.kind == "b" or nbits == 1:
        raise SarColorError(f"{name}: 1-bit (boolean) pixels: a mask, not a SAR image")
    if dt.kind not in "uif":
        raise SarColorError(f"{name}: unsupported pixel type {dt}; expected integer or floating-point pixels")
    return dt


def _narrow(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats wider than float32 as float32 (the engine works in float32; SAR needs no more precision), with
    values beyond float32's range marked invalid instead of becoming inf (or NaN statistics) later on.
    ``valid`` was computed on the original values, so a nodata value compares exactly."""
    if data.dtype.kind != "f" or data.dtype.itemsize <= 4:
        return data, valid
    with np.errstate(over="ignore"):
        narrow = data.astype(np.float32)
    return narrow, valid & np.isfinite(narrow)


def _nodata_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.ones(data.shape, bool)
    if np.isnan(nodata):
        return ~np.isnan(data)
    return data != nodata


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Georef:
    """What an output GeoTIFF copies from its input: CRS + transform, or GCPs, or RPCs."""

    crs: Any = None
    transform: Affine | None = None
    gcps: tuple[list, Any] | None = None
    rpcs: Any = None

    @property
    def present(self) -> bool:
        return (self.crs is not None or self.transform is not None or self.gcps is not None
                or self.rpcs is not None)


class SarSource(Protocol):
    """One SAR band and its validity mask (True = a real measurement), readable in row strips."""

    name: str
    height: int
    width: int
    dtype: np.dtype
    band: int
    georef: Georef

    def read_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]: ...

    def sample(self, max_pixels: int) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


def _guarded(ds: DatasetReader, name: str, fn: Callable[[], np.ndarray], what: str) -> np.ndarray:
    """``fn()`` (a read of ``ds``), with GDAL's read errors as one SarColorError line naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return fn()
    except _GDAL_ERRORS as exc:
        # rasterio's own message says "see previous exception": GDAL's reason is the cause.
        why = str(exc.__cause__ or exc).splitlines()[0].removeprefix(f"{ds.name}, ")
        raise SarColorError(f"{name}: cannot read pixels ({what}); is the file truncated or corrupt? "
                            f"[{why}]") from None


def _data_bands(ds: DatasetReader) -> list[int]:
    """The 1-based bands of ``ds`` that are not alpha."""
    alpha = [i + 1 for i, c in enumerate(colour_interp(ds)) if c == ColorInterp.alpha]
    return [b for b in range(1, ds.count + 1) if b not in alpha]


def file_bands(ds: DatasetReader, name: str, *, bands: Sequence[int] | None = None, polarisation: str = "VH"
               ) -> tuple[tuple[int, ...], str | None]:
    """``choose_band`` for an open file: the one band rule of colorize, training and evaluation.

    Returns (1-based band, a message to log or None).
    """
    def bands_equal(chosen: Sequence[int]) -> bool:
        # Five 256 x 256 windows (centre and corners) at full resolution: cheap on any size and format.
        h, w = min(256, ds.height), min(256, ds.width)
        corners = [(0, 0), (0, ds.width - w), (ds.height - h, 0), (ds.height - h, ds.width - w),
                   ((ds.height - h) // 2, (ds.width - w) // 2)]
        parts = [_guarded(ds, name, lambda y=y, x=x: ds.read(list(chosen), window=Window(x, y, w, h)),
                          "reading a sample") for y, x in corners]
        return _bands_equal(np.concatenate(parts, axis=1))

    return choose_bands(_data_bands(ds), bands=bands, polarisation=polarisation, descriptions=ds.descriptions,
                        bands_equal=bands_equal, name=name)


def file_band(ds: DatasetReader, name: str, *, bands: Sequence[int] | None = None, polarisation: str = "VH"
              ) -> tuple[int, str | None]:
    """``file_bands`` for a single-band model: (1-based band, a message to log or None)."""
    chosen, msg = file_bands(ds, name, bands=bands, polarisation=polarisation)
    return chosen[0], msg


class RasterSource:
    """A SAR band of an image file (PNG, JPEG, TIFF, GeoTIFF), read through rasterio/GDAL."""

    def __init__(self, path: str | Path, *, bands: Sequence[int] | None = None, polarisation: str = "VH",
                 nodata: float | None = None) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.ds = _open(self.path)
        self._whole: tuple[np.ndarray, np.ndarray] | None = None  # the scene, once ``sample`` has read it whole
        try:
            self._setup(bands, polarisation, nodata)
        except BaseException:
            self.ds.close()
            raise

    def _setup(self, bands: Sequence[int] | None, polarisation: str, nodata: float | None) -> None:
        ds = self.ds
        if ds.count == 0:
            raise SarColorError(f"{self.name}: no raster bands (a container of sub-datasets?)")
        self.height, self.width = ds.height, ds.width
        _check_size(self.name, self.height, self.width)
        for b in _data_bands(ds):  # before choosing a band: that reads pixels, which must be of a usable type
            nbits = ds.tags(b, ns="IMAGE_STRUCTURE").get("NBITS")
            check_pixel_type(self.name, ds.dtypes[b - 1], int(nbits) if (nbits or "").isdigit() else None)
        self.bands, msg = file_bands(ds, self.name, bands=bands, polarisation=polarisation)
        self.band = self.bands[0]
        if msg:
            log.info(msg)
        dtypes = {ds.dtypes[b - 1] for b in self.bands}
        if len(dtypes) > 1:
            raise SarColorError(f"{self.name}: bands {self.bands} differ in pixel type ({', '.join(sorted(dtypes))})")
        self.dtype = np.dtype(ds.dtypes[self.band - 1])
        self.file_nodata = ds.nodatavals[self.band - 1]
        self.user_nodata = nodata
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        # GDAL's mask band already combines nodata, alpha and internal masks; skip reading it when it is
        # trivially all-valid or a plain nodata comparison that numpy does on the data we already have.
        self._mask_kind = ("none" if all(MaskFlags.all_valid in f for f in flags) else
                           "nodata" if all(f == [MaskFlags.nodata] for f in flags) else "gdal")
        gcps, gcrs = ds.gcps
        has_transform = ds.transform != Affine.identity()
        self.georef = Georef(crs=ds.crs if has_transform else None,
                             transform=ds.transform if has_transform else None,
                             gcps=(gcps, gcrs) if gcps else None, rpcs=ds.rpcs or None)
        if has_transform and not ds.crs:
            log.info("%s: a geotransform without a CRS: kept as it is (the output has no CRS either)", self.name)
        self.palette = palette_lut(ds, self.band, self.name)
        self.orientation = exif_orientation(self.path, ds.driver)
        self._orient(self.orientation)

    def _orient(self, orientation: int) -> None:
        """Hold the scene as a viewer shows it (EXIF orientation): read whole, turned, and kept."""
        if orientation == 1:
            return
        data, valid = (np.ascontiguousarray(_ORIENT[orientation](a)) for a in self.read_rows(0, self.height))
        data.flags.writeable = valid.flags.writeable = False
        self._whole, (self.height, self.width) = (data, valid), data.shape
        if self.georef.present:
            log.warning("%s: georeferencing dropped: it does not apply to the image turned to its EXIF "
                        "orientation", self.name)
            self.georef = Georef()
        log.info("%s: EXIF orientation %d applied (the image as a viewer shows it)", self.name, orientation)

    def as_seen(self, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A read of the band (any window or size) as sarcolor sees it: through its palette, in its EXIF
        orientation (for a preview; ``read_rows`` and ``sample`` do this themselves)."""
        if self.palette is not None:
            grey, known = self.palette
            data, valid = grey[data], valid & known[data]
        turn = _ORIENT.get(self.orientation)
        return (data, valid) if turn is None else (turn(data), turn(valid))

    def _guard(self, fn: Callable[[], np.ndarray], what: str) -> np.ndarray:
        return _guarded(self.ds, self.name, fn, what)

    def _valid(self, data: np.ndarray, window: Window) -> np.ndarray:
        """Valid pixels of rows read (``stack_bands``' layout): valid in every band read."""
        if self._mask_kind == "gdal":
            m = self._guard(lambda: self.ds.read_masks(list(self.bands), window=window), "reading the mask")
            valid = stack_bands(m > 0)
        elif self._mask_kind == "nodata":
            valid = _nodata_mask(data, self.file_nodata)
        else:
            valid = np.ones(data.shape, bool)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data)
        if self.user_nodata is not None:
            valid &= _nodata_mask(data, self.user_nodata)
        return valid.all(axis=-1) if valid.ndim == 3 else valid

    def read_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [y0, y1) at full width: (data in the file's dtype, valid mask); read-only views when the whole
        scene is held (a scene that ``sample`` read whole)."""
        if self._whole is not None:
            return self._whole[0][y0:y1], self._whole[1][y0:y1]
        window = Window(0, y0, self.width, y1 - y0)
        data = stack_bands(self._guard(lambda: self.ds.read(list(self.bands), window=window), f"rows {y0}-{y1}"))
        valid = self._valid(data, window)
        if self.palette is not None:  # index -> the grey it stands for (palette images have one band)
            grey, known = self.palette
            data, valid = grey[data], valid & known[data]
        return _narrow(data, valid)

    def sample(self, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """Every f-th pixel of every f-th row, so that at most ``max_pixels`` pixels are returned.

        Read as full-width strips and strided in numpy: GDAL's own decimated read (out_shape) of a tiled,
        compressed GeoTIFF without overviews decompresses blocks over and over (60 s instead of 0.6 s for
        a 20000 x 1100 scene), while strips read every block once, in bounded memory.
        """
        f = max(1, math.ceil(math.sqrt(self.height * self.width / max_pixels)))
        if f == 1:  # the whole scene: kept (at most max_pixels), so the tile loop does not decode it again
            data, valid = self.read_rows(0, self.height)
            data.flags.writeable = valid.flags.writeable = False
            self._whole = (data, valid)
            return data, valid
        step = max(f, STRIP_ROWS // f * f)  # a multiple of f: the row grid stays regular across strips
        parts, masks = [], []
        for y0 in range(0, self.height, step):
            data, valid = self.read_rows(y0, min(y0 + step, self.height))
            parts.append(data[::f, ::f].copy())
            masks.append(valid[::f, ::f].copy())
        return np.concatenate(parts), np.concatenate(masks)

    def close(self) -> None:
        self.ds.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# EXIF orientation -> the turn that shows the image as a viewer does (PIL's ImageOps.exif_transpose)
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].T, 8: lambda a: np.rot90(a, 1)}


def exif_orientation(path: Path, driver: str) -> int:
    """A JPEG's or PNG's EXIF orientation (1: as stored), from its header; GDAL does not apply it."""
    if driver not in ("JPEG", "PNG"):
        return 1
    try:
        from PIL import Image

        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - no readable EXIF: the image as stored
        return 1
    return value if value in _ORIENT else 1


def colour_interp(ds: DatasetReader) -> tuple[ColorInterp, ...]:
    """The bands' colour interpretations; a damaged header (GDAL cannot read its tags) is a one-line error."""
    try:
        return ds.colorinterp
    except _GDAL_ERRORS as exc:
        why = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise SarColorError(f"{ds.name}: not a readable image (truncated or corrupt?) [{why}]") from None


def palette_lut(ds: DatasetReader, band: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(grey per index, index defined and not transparent) of a palette (indexed) band; None for other bands.
    A palette of colours is refused: a grey SAR image quantised to a palette has grey entries."""
    dtype = np.dtype(ds.dtypes[band - 1])
    if colour_interp(ds)[band - 1] != ColorInterp.palette or dtype.kind != "u" or dtype.itemsize > 2:
        return None
    try:
        cmap = ds.colormap(band)
    except ValueError:  # no colour table after all
        return None
    grey, known = np.zeros(1 << (8 * dtype.itemsize), dtype), np.zeros(1 << (8 * dtype.itemsize), bool)
    for i, (r, g, b, *alpha) in cmap.items():
        if max(r, g, b) - min(r, g, b) > 2:
            raise SarColorError(f"{name}: a palette (indexed) image with colours, not a grey SAR image; "
                                "convert it to grey first (e.g. gdal_translate -expand gray)")
        grey[i], known[i] = round((r + g + b) / 3), (alpha[0] if alpha else 255) > 0
    return grey, known


def made_by_sarcolor(path: Path) -> bool:
    """Is this image one of sarcolor's own outputs (its provenance tags, or its JPEG comment)?"""
    try:
        with gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                tags = ds.tags()
    except _GDAL_ERRORS:
        return False  # unreadable: the run reports it as that file's error
    return tags.get("TIFFTAG_SOFTWARE") == "sarcolor" or "SARCOLOR_MODEL" in tags or tags.get(
        "COMMENT", "").lower().startswith("sarcolor")


def _open(path: Path) -> Any:
    """rasterio.open with every failure turned into a one-line SarColorError naming the file."""
    if not path.exists():
        raise SarColorError(f"{path}: no such file")
    if path.is_dir():
        raise SarColorError(f"{path}: is a directory, expected an image file")
    if not path.is_file():  # a FIFO, socket or device: reading it could block for ever
        raise SarColorError(f"{path}: not a regular file, expected an image file")
    try:
        if path.stat().st_size == 0:
            raise SarColorError(f"{path}: file is empty (0 bytes)")
    except OSError as exc:
        raise SarColorError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except _GDAL_ERRORS as exc:
        text = str(exc)
        why = ("not a supported image (PNG, JPEG, TIFF, GeoTIFF)" if "not recognized" in text
               else "not a readable image (truncated or corrupt?)")
        raise SarColorError(f"{path}: {why}") from None


class ArraySource:
    """A SAR image already in memory: (H, W) or (bands, H, W); (H, W, <=4) is read as channels-last.

    NaN, a masked array's mask, ``nodata`` and ``valid`` == False (an (H, W) mask) mark invalid pixels.
    """

    def __init__(self, array: np.ndarray, *, bands: Sequence[int] | None = None, polarisation: str = "VH",
                 nodata: float | None = None, valid: np.ndarray | None = None, name: str = "array") -> None:
        self.name = name
        mask = np.ma.getmaskarray(array) if np.ma.isMaskedArray(array) else None
        a = np.ma.getdata(array) if mask is not None else np.asarray(array)
        if a.ndim == 3 and a.shape[-1] <= 4 < a.shape[0]:
            a = np.moveaxis(a, -1, 0)  # an image from PIL/imageio is channels-last
            mask = None if mask is None else np.moveaxis(mask, -1, 0)
        if a.ndim == 2:
            a = a[None]
            mask = None if mask is None else mask[None]
        if a.ndim != 3:
            raise SarColorError(f"{name}: expected an array of shape (H, W) or (bands, H, W), got {a.shape}")
        check_pixel_type(name, str(a.dtype))
        _, self.height, self.width = a.shape
        _check_size(name, self.height, self.width)
        self.bands, msg = choose_bands(list(range(1, a.shape[0] + 1)), bands=bands, polarisation=polarisation,
                                       descriptions=[None] * a.shape[0],
                                       bands_equal=lambda b: _bands_equal(a[[i - 1 for i in b]]), name=name)
        self.band = self.bands[0]
        if msg:
            log.info(msg)
        picked = [b - 1 for b in self.bands]
        self.data = stack_bands(a[picked])
        self.dtype = self.data.dtype
        self.mask = None if mask is None else stack_bands(mask[picked])
        if self.mask is not None and self.mask.ndim == 3:
            self.mask = self.mask.any(axis=-1)
        if valid is not None:
            if valid.shape != self.data.shape[:2]:
                raise SarColorError(f"{name}: valid mask {valid.shape} != image shape {self.data.shape[:2]}")
            self.mask = ~valid.astype(bool) if self.mask is None else (self.mask | ~valid.astype(bool))
        self.nodata = nodata
        self.georef = Georef()

    def _valid(self, data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        valid = _nodata_mask(data, self.nodata)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data)
        if valid.ndim == 3:
            valid = valid.all(axis=-1)
        if mask is not None:
            valid &= ~mask
        return valid

    def read_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        data = self.data[y0:y1]
        return _narrow(data, self._valid(data, None if self.mask is None else self.mask[y0:y1]))

    def sample(self, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
        f = max(1, math.ceil(math.sqrt(self.height * self.width / max_pixels)))
        data = self.data[::f, ::f]
        return _narrow(data, self._valid(data, None if self.mask is None else self.mask[::f, ::f]))

    def close(self) -> None:
        pass

    def __enter__(self) -> ArraySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReflectPadded:
    """A ``SarSource`` seen with ``margin`` mirrored pixels added on every side.

    The model then sees image-like context at the scene's edges instead of its convolutions' zero padding,
    which darkened a frame along every output's edges. Rows are read forward only (PNG/JPEG decode
    sequentially): the last ``margin + 1`` rows read are kept for the mirror at the bottom edge.
    ``sample`` is the unpadded source's, so the scene statistics count every real pixel once.
    """

    def __init__(self, inner: SarSource, margin: int) -> None:
        self.inner, self.margin = inner, margin
        self.name, self.dtype, self.band, self.georef = inner.name, inner.dtype, inner.band, inner.georef
        self.height, self.width = inner.height + 2 * margin, inner.width + 2 * margin
        self._rows = np.pad(np.arange(inner.height), margin, mode="reflect")  # padded row -> source row
        self._cols = np.pad(np.arange(inner.width), margin, mode="reflect")
        self._start = 0  # source row of self._buf's first row
        self._buf: tuple[np.ndarray, np.ndarray] | None = None

    def _source_rows(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Source rows [lo, hi) into the buffer (reading only rows not read yet); returns the buffer."""
        end = self._start + (0 if self._buf is None else len(self._buf[0]))
        if self._buf is None or lo < self._start or lo > end:  # first read, or not contiguous with the last
            self._buf, self._start = self.inner.read_rows(lo, hi), lo
        elif hi > end:
            data, valid = self.inner.read_rows(end, hi)
            keep = max(0, min(lo, hi - self.margin - 1) - self._start)  # rows before that are never asked again
            self._buf = (np.concatenate([self._buf[0][keep:], data]), np.concatenate([self._buf[1][keep:], valid]))
            self._start += keep
        return self._buf

    def read_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[y0:y1]
        data, valid = self._source_rows(int(rows.min()), int(rows.max()) + 1)
        r = rows - self._start
        # one axis at a time: 3x faster than a 2-D fancy index (np.ix_) for the same pixels
        return data.take(r, 0).take(self._cols, 1), valid.take(r, 0).take(self._cols, 1)

    def sample(self, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.sample(max_pixels)

    def close(self) -> None:
        self.inner.close()

    def crop(self, sink: Callable[[int, np.ndarray, np.ndarray], None]
             ) -> Callable[[int, np.ndarray, np.ndarray], None]:
        """A row sink for this padded source's output that passes the source's own rows on to ``sink``."""
        m, h, w = self.margin, self.inner.height, self.inner.width

        def cropped(y0: int, rgb: np.ndarray, valid: np.ndarray) -> None:
            a, b = max(y0, m), min(y0 + rgb.shape[1], m + h)
            if b > a:
                sink(a - m, rgb[:, a - y0:b - y0, m:m + w], valid[a - y0:b - y0, m:m + w])

        return cropped


def open_sar(image: str | Path | np.ndarray, *, bands: Sequence[int] | None = None, polarisation: str = "VH",
             nodata: float | None = None) -> RasterSource | ArraySource:
    """A path becomes a ``RasterSource``, an array an ``ArraySource``."""
    if isinstance(image, np.ndarray):
        return ArraySource(image, bands=bands, polarisation=polarisation, nodata=nodata)
    if isinstance(image, str | os.PathLike):
        return RasterSource(image, bands=bands, polarisation=polarisation, nodata=nodata)
    raise SarColorError(f"expected a file path or a numpy array, got {type(image).__name__}")


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def output_driver(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in WRITE_DRIVERS:
        raise SarColorError(f"{path}: unsupported output format {ext or '(none)'!r}; "
                            "use .tif/.tiff (GeoTIFF), .png or .jpg")
    return WRITE_DRIVERS[ext]


def check_output(src: str | Path | None, dst: str | Path) -> Path:
    """Validate an output path before any work: known format, existing folder, not the input itself."""
    dst = Path(dst)
    if dst.is_dir():
        raise SarColorError(f"{dst}: is a directory, expected an output file name")
    output_driver(dst)
    parent = dst.parent
    if not parent.is_dir():
        raise SarColorError(f"{dst}: output folder {str(parent)!r} does not exist")
    if src is not None:
        src = Path(src)
        same = src.resolve() == dst.resolve()
        if not same and dst.exists() and src.exists():
            same = os.path.samefile(src, dst)  # hard links
        if same:
            raise SarColorError(f"{dst}: output would overwrite the input; choose another output path")
    return dst


def verify_raster(path: Path) -> None:
    """Re-open a just-written image and decode its last block (for PNG and JPEG: the whole image, which a
    read of the last row needs), so that a file GDAL or libpng failed to finish (a full disk while closing,
    which neither reports) raises here instead of passing for an output."""
    with gdal_env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            bh, bw = ds.block_shapes[0]
            y, x = (ds.height - 1) // bh * bh, (ds.width - 1) // bw * bw
            ds.read(window=Window(x, y, ds.width - x, ds.height - y))


class RGBWriter:
    """Streams RGB rows into ``dst`` safely; use as a context manager (commit on success, clean up on error).

    ``write_rows(y0, rgb, valid)`` takes rows in order: rgb (3, n, W) uint8 and valid (n, W) bool.
    """

    def __init__(self, dst: str | Path, width: int, height: int, *, georef: Georef | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.dst = Path(dst)
        self.driver = output_driver(self.dst)
        self.width, self.height = width, height
        self.geotiff = self.driver == "GTiff"
        self.temps: list[Path] = []
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._next_row = 0
        self._written = 0
        georef = georef if (georef is not None and self.geotiff) else Georef()
        profile: dict[str, Any] = dict(
            driver="GTiff", width=width, height=height, count=3, dtype="uint8", tiled=True,
            blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", predictor=2, photometric="RGB",
            bigtiff="IF_SAFER")
        if self.geotiff:
            profile["nodata"] = 0
        if georef.transform is not None:  # with its CRS, or without one (then kept as it is)
            profile["transform"] = georef.transform
        if georef.crs is not None:
            profile["crs"] = georef.crs
        # The intermediate is only ever read once more, by the conversion: favour speed over size.
        if self.driver != "GTiff" or _has_cog():
            profile["zlevel"] = 1
        remove_stale_temps(self.dst.parent)
        self.tmp: Path | None = None
        if not self.geotiff and width * height <= MEM_PIXELS:  # PNG/JPEG are written whole at the end anyway
            profile = dict(driver="MEM", width=width, height=height, count=3, dtype="uint8")
        else:
            self.tmp = temp_name(self.dst, "part")
            self.temps.append(self.tmp)
        self.ds: Any = None
        # a stop (SIGTERM, Ctrl-C) before the caller's ``with`` holds this writer still removes the file
        with self._aborted_on_failure():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG/JPEG, or an image without CRS
                self.ds = rasterio.open(self.tmp or "", "w", **profile)
            self.ds.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            if georef.gcps is not None:
                self.ds.gcps = georef.gcps
            if georef.rpcs is not None:
                self.ds.rpcs = georef.rpcs
            if tags:
                self.ds.update_tags(**tags)

    @contextlib.contextmanager
    def _aborted_on_failure(self) -> Iterator[None]:
        """On any failure inside, the writer's temporary files are removed; a GDAL error becomes a one-line
        ``WriteFailed``."""
        try:
            yield
        except _GDAL_ERRORS as exc:
            err = self._failed(exc)
            self.abort()
            raise err from None
        except BaseException:
            self.abort()
            raise

    def write_rows(self, y0: int, rgb: np.ndarray, valid: np.ndarray) -> None:
        if y0 != self._next_row:
            raise ValueError(f"rows must come in order: expected row {self._next_row}, got {y0}")
        rgb = rgb.copy()
        if self.geotiff:
            np.maximum(rgb, 1, out=rgb)  # keep real colours off the nodata value
        rgb[:, ~valid] = 0
        self._pending.append(rgb)
        self._pending_rows += rgb.shape[1]
        self._next_row += rgb.shape[1]
        # Write whole block rows only: a partially written compressed tile would be stored twice.
        if self._pending_rows >= BLOCK or self._next_row == self.height:
            self._drain(final=self._next_row == self.height)

    def _drain(self, final: bool) -> None:
        # one piece (a strip of whole blocks, the usual case) is written as it is: no second full-width copy
        rgb = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        n = rgb.shape[1] if final else rgb.shape[1] // BLOCK * BLOCK
        try:
            self.ds.write(rgb[:, :n], window=Window(0, self._written, self.width, n))
        except _GDAL_ERRORS as exc:
            raise self._failed(exc) from None
        self._written += n
        rest = rgb[:, n:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_rows = rest.shape[1]

    def commit(self) -> Path:
        """Finish the file: convert it to its final format, check it reads back whole, and move it over ``dst``
        in one rename. A write that failed (a full disk) raises ``WriteFailed`` and leaves nothing behind."""
        if self._written != self.height:
            raise ValueError(f"only {self._written} of {self.height} rows were written")
        with self._aborted_on_failure():
            final = self._finish()
        self.temps.remove(final)
        try:
            publish(final, self.dst, verify_raster, _GDAL_ERRORS)
        finally:
            self.abort()  # the intermediate of a conversion
        return self.dst

    def _failed(self, exc: BaseException) -> WriteFailed:
        return write_failed(self.dst, exc, *self.temps)

    def _finish(self) -> Path:
        """Close the stream and write the final format into a temporary file; returns that file."""
        if self.tmp is not None:
            ds, self.ds = self.ds, None
            ds.close()
        final = self.tmp
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():  # PAM off: no .aux.xml files
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if self.driver == "GTiff" and _has_cog():
                final = temp_name(self.dst, "cog")
                self.temps.append(final)
                rasterio.shutil.copy(self.tmp, final, driver="COG", compress="DEFLATE", predictor="YES",
                                     blocksize=BLOCK, overview_resampling="AVERAGE", bigtiff="IF_SAFER",
                                     num_threads="ALL_CPUS")
            elif self.driver in ("PNG", "JPEG"):
                final = temp_name(self.dst, "out")
                self.temps.append(final)
                # zlevel 1: a sixth of the default 6's time for ~17% larger files (zlevel 3: 40% slower than 1
                # for 7% smaller files); colorized SAR is texture-rich and compresses little either way.
                opts = ({"quality": 95, "COMMENT": "sarcolor"} if self.driver == "JPEG"
                        else {"zlevel": 1, "WRITE_METADATA_AS_TEXT": "YES"})
                rasterio.shutil.copy(self.tmp or self.ds, final, driver=self.driver, **opts)
        assert final is not None
        return final

    def abort(self) -> None:
        """Remove every temporary file. A second stop (SIGTERM from a dying parent, say, while a broken pipe is
        already unwinding) must not cut the cleanup short: those signals wait until it is done."""
        with signals_held():
            try:
                if self.ds is not None:
                    ds, self.ds = self.ds, None
                    ds.close()
            except _GDAL_ERRORS:
                pass  # closing a file that is being thrown away: its write errors do not matter
            finally:
                self._cleanup()

    def _cleanup(self) -> None:
        for p in self.temps:
            remove_temp(p)
        self.temps.clear()

    def __enter__(self) -> RGBWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@functools.cache
def _has_cog() -> bool:
    """GDAL >= 3.1 has the COG driver; without it the tiled GeoTIFF is the final output."""
    with rasterio.Env() as env:
        return "COG" in env.drivers()


def parse_bands(text: str | None) -> list[int] | None:
    """``--bands`` / ``bands=`` text ("2" or "1,2") -> 1-based band numbers (None: the default choice)."""
    if text is None:
        return None
    try:
        bands = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise SarColorError(f"--bands {text!r}: expected 1-based band numbers such as 1 or 1,2") from None
    if not bands or len(bands) > 2 or min(bands) < 1:
        raise SarColorError(f"--bands {text!r}: give one band, or two (VV,VH), numbered from 1")
    return bands
