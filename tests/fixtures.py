"""Tiny input images generated in code: GeoTIFFs (CRS, transform, nodata), PNG/JPEG, broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import Affine

CRS = "EPSG:32630"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)  # 10 m pixels, north up


def sar_db(h: int = 48, w: int = 56, seed: int = 0) -> np.ndarray:
    """A SAR-like scene in dB: smooth fields (dark water, bright town) plus multiplicative speckle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = -14 + 5 * np.sin(6 * xx) * np.cos(4 * yy) - 8 * (np.hypot(xx - 0.3, yy - 0.6) < 0.15)
    speckle = 10 * np.log10(rng.gamma(4.0, 0.25, (h, w)))
    return (base + speckle).astype(np.float32)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    return (10.0 ** (db / 10.0)).astype(np.float32)


def db_to_uint16(db: np.ndarray) -> np.ndarray:
    """Amplitude DN as in GRD products: sqrt(power) scaled into uint16."""
    return np.clip(np.sqrt(10.0 ** (db / 10.0)) * 2000, 1, 65535).astype(np.uint16)


def db_to_8bit(db: np.ndarray) -> np.ndarray:
    """The display product: linear intensity / its 99th percentile, clipped, x 255."""
    lin = 10.0 ** (db / 10.0)
    return np.clip(lin / np.percentile(lin, 99) * 255, 0, 255).astype(np.uint8)


def write_geotiff(path: Path, data: np.ndarray, *, nodata: float | None = None, crs: str | None = CRS,
                  tiled: bool = False, descriptions: list[str] | None = None,
                  photometric: str | None = None, alpha: bool = False) -> Path:
    """(H, W) or (bands, H, W) -> GeoTIFF with CRS/transform (unless crs=None) and optional nodata."""
    data = data[None] if data.ndim == 2 else data
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, compress="deflate")
    if crs is not None:
        profile.update(crs=crs, transform=TRANSFORM)
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    if photometric:
        profile["photometric"] = photometric
    if alpha:
        profile["alpha"] = "YES"
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """uint8 (H, W) L, (H, W, 2) LA, (H, W, 3) RGB, (H, W, 4) RGBA, or uint16 (H, W) (mode I;16) via PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_jpeg(path: Path, array: np.ndarray, quality: int = 95) -> Path:
    Image.fromarray(array).save(path, quality=quality)
    return path


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst
