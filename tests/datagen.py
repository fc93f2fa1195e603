"""Tiny generated datasets in each layout sarcolor reads (helpers for test_data.py and test_train.py).

Optical images are a fixed per-pixel function of the SAR (``opt_of``), so a test can check that SAR and
optical stay aligned through cropping and augmentation, and a tiny model can learn the mapping in a few steps.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import yaml
from fixtures import CRS, write_geotiff, write_png  # noqa: F401 (write_png is used as datagen.write_png)
from rasterio.errors import NotGeoreferencedWarning

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def sar_image(h: int, w: int, seed: int) -> np.ndarray:
    """Grey uint8 with structure at several scales (blocky fields plus speckle-like noise), no zeros."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(20, 230, (h // 4 + 1, w // 4 + 1))
    img = np.kron(coarse, np.ones((4, 4)))[:h, :w] + rng.integers(-15, 16, (h, w))
    return np.clip(img, 1, 255).astype(np.uint8)


def opt_of(sar: np.ndarray) -> np.ndarray:
    """The optical twin of a grey SAR image: R = g, G = 255 - g, B = g // 2 (H, W, 3) uint8."""
    g = sar.astype(np.int32)
    return np.stack([g, 255 - g, g // 2], -1).astype(np.uint8)


def write_tif(path: Path, arr: np.ndarray, nodata: float | None = None, georef: bool = True) -> Path:
    """(bands, H, W) array -> GeoTIFF (with a UTM CRS and 10 m pixels unless georef is False)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return write_geotiff(path, arr, nodata=nodata, crs=CRS if georef else None)


def make_folders(root: Path, n: int = 6, size: tuple[int, int] = (32, 32), groups: dict[str, str] | None = None,
                 geotiff_pair: bool = False) -> Path:
    """root/sar/NNN.png + root/opt/NNN.png (+ one float32 dB / uint8 RGB GeoTIFF pair) [+ groups.csv]."""
    for i in range(n):
        sar = sar_image(*size, seed=i)
        write_png(root / "sar" / f"{i:03d}.png", sar)
        write_png(root / "opt" / f"{i:03d}.png", opt_of(sar))
    if geotiff_pair:
        sar = sar_image(*size, seed=100)
        db = (10 * np.log10(sar.astype(np.float32) / 255.0))[None]  # the same picture, as dB backscatter
        write_tif(root / "sar" / "geo.tif", db.astype(np.float32))
        write_tif(root / "opt" / "geo.tif", opt_of(sar).transpose(2, 0, 1).copy())
    if groups:
        lines = ["name,tile"] + [f"{k},{v}" for k, v in groups.items()]
        (root / "groups.csv").write_text("\n".join(lines) + "\n")
    return root


def make_scenes(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """root/<scene>/sar.png (grey as 3 equal bands, like sih1733) + optical.png."""
    for k, (name, (h, w)) in enumerate(sizes.items()):
        sar = sar_image(h, w, seed=50 + k)
        write_png(root / name / "sar.png", np.repeat(sar[..., None], 3, -1))
        write_png(root / name / "optical.png", opt_of(sar))
    return root


def make_sen12(root: Path, names: list[str], size: int = 16) -> Path:
    """The Kaggle SEN1-2 tree for s1 names such as ``urban/s1/ROIs1970_fall_s1_47_p421.png``."""
    for k, name in enumerate(names):
        sar = sar_image(size, size, seed=200 + k)
        write_png(root / name, sar)
        s2 = name.replace("/s1/", "/s2/").replace("_s1_", "_s2_")
        write_png(root / s2, opt_of(sar))
    return root


def kaggle_names(n_per_part: int = 12) -> tuple[list[str], Path] | None:
    """A few dozen names from the real Kaggle split.json (None where ../shared/data is absent)."""
    split = SHARED / "kaggle_sen12_layout" / "split.json"
    if not split.is_file():
        return None
    import json

    lists = json.loads(split.read_text())["data"]
    return [n for part in ("train", "val", "test") for n in lists[part][:n_per_part]], split


def s2_stack(sar: np.ndarray, rgb_bands: tuple[int, int, int] = (4, 3, 2)) -> np.ndarray:
    """13-band int16 'reflectance x 10000' whose bands 4, 3, 2 hold opt_of(sar) x 10; other bands are noise."""
    h, w = sar.shape
    stack = np.random.default_rng(7).integers(100, 4000, (13, h, w)).astype(np.int16)
    rgb = opt_of(sar).astype(np.int16) * 10 + 1  # +1: reflectance 0 is Sentinel-2's nodata
    for band, c in zip(rgb_bands, range(3), strict=True):
        stack[band - 1] = rgb[..., c]
    return stack


def make_geotiff(root: Path, size: int = 24) -> Path:
    """Sen1Floods11-style (S1Hand/S2Hand, 2-band dB SAR) and SEN12MS-style (s1_1/s2_1 folders) GeoTIFF pairs."""
    sar = sar_image(size, size, seed=300)
    db = (10 * np.log10(sar.astype(np.float32) / 255.0)).astype(np.float32)
    vv = db + 6.0
    write_tif(root / "S1Hand" / "Spain_7370579_S1Hand.tif", np.stack([vv, db]), nodata=float("nan"))
    write_tif(root / "S2Hand" / "Spain_7370579_S2Hand.tif", s2_stack(sar), nodata=0)
    # Sen1Floods11 label rasters look like SAR by name; the default exclude keeps them out.
    write_tif(root / "S1OtsuLabelHand" / "Spain_7370579_S1OtsuLabelHand.tif", np.zeros((1, size, size), np.int16))
    sar2 = sar_image(size, size, seed=301)
    db2 = (10 * np.log10(sar2.astype(np.float32) / 255.0)).astype(np.float32)
    write_tif(root / "ROIs1158_spring" / "s1_1" / "ROIs1158_spring_s1_1_p30.tif", db2[None])  # 1 band
    write_tif(root / "ROIs1158_spring" / "s2_1" / "ROIs1158_spring_s2_1_p30.tif", s2_stack(sar2))
    return root


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path
