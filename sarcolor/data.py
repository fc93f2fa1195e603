"""SAR/optical pair datasets: discovery for the usual layouts, leak-free splits, reading, and training crops.

Layouts (``layout`` in a data source):
- ``folders``: ``root/<sar_dir>/*`` and ``root/<opt_dir>/*`` matched by file stem (e.g. volkov_s1s2).
- ``sen12``: SEN1-2 / the Kaggle "Sentinel-1&2 Image Pairs" set: ``root/<terrain>/s1/*_s1_*.png`` with
  ``root/<terrain>/s2/*_s2_*.png``; optional ``split_file`` (Kaggle ``split.json``).
- ``scenes``: one folder per large co-registered scene with ``sar.*`` and ``optical.*`` (e.g. sih1733);
  training samples random crops.
- ``geotiff``: GeoTIFF pairs named ``*S1*.tif`` / ``*S2*.tif`` (Sen1Floods11, SEN12MS): float dB SAR,
  multi-band optical with ``opt_bands`` (1-based) and reflectance scaling.
- ``auto``: picks one of the above from what is in the folder.

Splits are by group (tile, region, scene or a file list), never by random patches of one scene.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import warnings

import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from .errors import SarColorError
from .preprocess import model_input, scene_stats

log = logging.getLogger("sarcolor")

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass(frozen=True)
class PairRef:
    """One SAR/optical pair, or a window (row, col, height, width) of a large scene pair."""

    name: str
    sar: Path
    opt: Path
    group: str
    window: tuple[int, int, int, int] | None = None
    sar_band: int | None = None  # 1-based band to use from a multi-band SAR file (None: the only/grey band)
    opt_bands: tuple[int, ...] = (1, 2, 3)
    opt_scale: str = "8bit"  # "8bit" (as stored) or "reflectance" (per-channel 99th-percentile stretch)


# ------------------------------------------------------------------------------------------- config
def load_config(path: str | Path) -> dict:
    """Read a YAML or TOML config file."""
    p = Path(path)
    if not p.is_file():
        raise SarColorError(f"{p}: config file not found")
    text = p.read_text()
    if p.suffix == ".toml":
        return tomllib.loads(text)
    import yaml

    cfg = yaml.safe_load(text)
    if not isinstance(cfg, dict):
        raise SarColorError(f"{p}: config must be a mapping")
    return cfg


# ---------------------------------------------------------------------------------------- discovery
def _images(folder: Path) -> dict[str, Path]:
    return {f.stem: f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_EXTS}


def _discover_folders(src: dict, root: Path) -> list[PairRef]:
    sar_dir, opt_dir = root / src.get("sar_dir", "sar"), root / src.get("opt_dir", "opt")
    for d in (sar_dir, opt_dir):
        if not d.is_dir():
            raise SarColorError(f"{d}: folder not found (layout 'folders' needs {sar_dir.name}/ and {opt_dir.name}/)")
    sars, opts = _images(sar_dir), _images(opt_dir)
    missing = sorted(set(sars) ^ set(opts))
    if missing:
        raise SarColorError(f"{root}: {len(missing)} file(s) without a partner, e.g. {missing[0]!r}")
    groups: dict[str, str] = {}
    if src.get("groups_csv"):
        with open(root / src["groups_csv"], newline="") as f:
            for row in csv.DictReader(f):
                groups[row[src.get("name_column", "name")]] = row[src.get("group_column", "group")]
    return [PairRef(name=f"{root.name}/{s}", sar=sars[s], opt=opts[s], group=groups.get(s, s))
            for s in sorted(sars)]


_SEN12 = re.compile(r"^(?P<roi>ROIs\d+)_(?P<season>[a-z]+)_s1_(?P<scene>\d+)_p(?P<patch>\d+)$")


def sen12_group(stem: str) -> str:
    """ROIs1970_fall_s1_13_p10 -> ROIs1970_fall_13: patches of one scene share a group (they overlap)."""
    m = _SEN12.match(stem)
    return f"{m['roi']}_{m['season']}_{m['scene']}" if m else stem


def _discover_sen12(src: dict, root: Path) -> list[PairRef]:
    pairs, missing = [], []
    for s1 in sorted(root.glob("*/s1/*")):
        if s1.suffix.lower() not in IMAGE_EXTS:
            continue
        s2 = s1.parent.parent / "s2" / s1.name.replace("_s1_", "_s2_")
        if not s2.is_file():
            missing.append(s1)
            continue
        rel = s1.relative_to(root).as_posix()
        pairs.append(PairRef(name=rel, sar=s1, opt=s2, group=sen12_group(s1.stem)))
    if missing:
        raise SarColorError(f"{root}: {len(missing)} s1 image(s) without an s2 partner, e.g. {missing[0]}")
    return pairs


def _discover_scenes(src: dict, root: Path) -> list[PairRef]:
    pairs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        sar = [f for f in d.iterdir() if f.stem.lower() == "sar" and f.suffix.lower() in IMAGE_EXTS]
        opt = [f for f in d.iterdir() if f.stem.lower() in ("optical", "opt", "rgb") and f.suffix.lower() in IMAGE_EXTS]
        if len(sar) != 1 or len(opt) != 1:
            raise SarColorError(f"{d}: expected one sar.* and one optical.* image")
        pairs.append(PairRef(name=f"{root.name}/{d.name}", sar=sar[0], opt=opt[0], group=d.name))
    return pairs


def _discover_geotiff(src: dict, root: Path) -> list[PairRef]:
    pairs = []
    for s1 in sorted(root.rglob("*.tif")):
        if "S1" not in s1.name and "_s1_" not in s1.name:
            continue
        s2 = s1.with_name(s1.name.replace("S1", "S2", 1) if "S1" in s1.name else s1.name.replace("_s1_", "_s2_"))
        if not s2.is_file():
            raise SarColorError(f"{s1}: no optical partner {s2.name}")
        pairs.append(PairRef(name=s1.relative_to(root).as_posix(), sar=s1, opt=s2, group=s1.stem.split("_")[0],
                             sar_band=src.get("sar_band", 2),
                             opt_bands=tuple(src.get("opt_bands", (4, 3, 2))), opt_scale="reflectance"))
    return pairs


def detect_layout(root: Path) -> str:
    if (root / "sar").is_dir() and (root / "opt").is_dir():
        return "folders"
    if any(root.glob("*/s1")):
        return "sen12"
    if any(root.glob("*/sar.*")):
        return "scenes"
    if any(root.rglob("*.tif")):
        return "geotiff"
    raise SarColorError(f"{root}: cannot tell the dataset layout (expected sar/+opt/, */s1+*/s2, */sar.*, or *.tif)")


_LAYOUTS = {"folders": _discover_folders, "sen12": _discover_sen12, "scenes": _discover_scenes,
            "geotiff": _discover_geotiff}


def discover(src: dict, base: Path | None = None) -> list[PairRef]:
    """All pairs of one data source ({"root": ..., "layout": ..., ...})."""
    root = Path(src["root"])
    if not root.is_absolute() and base is not None:
        root = (base / root).resolve()
    if not root.is_dir():
        raise SarColorError(f"{root}: dataset folder not found")
    layout = src.get("layout", "auto")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in _LAYOUTS:
        raise SarColorError(f"unknown layout {layout!r}; known: auto, {', '.join(_LAYOUTS)}")
    pairs = _LAYOUTS[layout](src, root)
    if not pairs:
        raise SarColorError(f"{root}: no pairs found (layout {layout})")
    return pairs


# ------------------------------------------------------------------------------------------- splits
def _strip(ref: PairRef, frac: float) -> tuple[PairRef, PairRef]:
    """Split a scene into a top part (train) and a bottom strip of ``frac`` of its height (held out)."""
    with rasterio.open(ref.sar) as ds:
        h, w = ds.height, ds.width
    cut = int(round(h * (1 - frac)))
    top = PairRef(**{**ref.__dict__, "name": f"{ref.name}:top", "window": (0, 0, cut, w)})
    bottom = PairRef(**{**ref.__dict__, "name": f"{ref.name}:bottom", "window": (cut, 0, h - cut, w)})
    return top, bottom


def build_splits(data_cfg: dict, base: Path | None = None) -> dict[str, list[PairRef]]:
    """Discover all sources and split them into train / val (/ test) without leaking between them.

    ``data_cfg["val"]`` may hold ``groups`` (whole tiles/regions/scenes held out) and ``scene_strips``
    ({scene group: fraction}: the bottom strip of a large scene held out, the rest trains). A source may
    carry a Kaggle-style ``split_file`` ({"data": {"train": [...], "val": [...], "test": [...]}}).
    """
    val_cfg = data_cfg.get("val", {}) or {}
    val_groups = set(val_cfg.get("groups", []))
    strips = dict(val_cfg.get("scene_strips", {}) or {})
    splits: dict[str, list[PairRef]] = {"train": [], "val": []}
    for src in data_cfg.get("sources", []):
        pairs = discover(src, base)
        if src.get("split_file"):
            split_path = Path(src["split_file"])
            if not split_path.is_absolute() and base is not None:
                split_path = base / split_path
            lists = json.loads(Path(split_path).read_text())["data"]
            by_name = {p.name: p for p in pairs}
            for part, names in lists.items():
                part = "val" if part in ("val", "valid", "validation") else part
                found = [by_name[n] for n in names if n in by_name]
                if len(found) < len(names):
                    log.warning("%s: %d of %d %s entries not found under %s", split_path, len(names) - len(found),
                                len(names), part, src["root"])
                splits.setdefault(part, []).extend(found)
            continue
        for p in pairs:
            if p.group in strips:
                top, bottom = _strip(p, float(strips[p.group]))
                splits["train"].append(top)
                splits["val"].append(bottom)
            elif p.group in val_groups:
                splits["val"].append(p)
            else:
                splits["train"].append(p)
    leak = {p.group for p in splits["train"]} & {p.group for p in splits["val"]} - set(strips)
    if leak:
        raise SarColorError(f"split leaks groups between train and val: {sorted(leak)[:5]}")
    return splits


def write_split(splits: dict[str, list[PairRef]], path: Path) -> None:
    """Record which pairs (and windows) went where, next to the checkpoints."""
    out = {k: [{"name": p.name, "sar": str(p.sar), "opt": str(p.opt), "group": p.group, "window": p.window}
               for p in v] for k, v in splits.items()}
    path.write_text(json.dumps(out, indent=1))


# ------------------------------------------------------------------------------------------ reading
def _read(path: Path, bands: list[int] | None, window: tuple[int, int, int, int] | None
          ) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        with warnings.catch_warnings(), rasterio.open(path) as ds:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG/JPEG training pairs carry no CRS
            win = Window(window[1], window[0], window[3], window[2]) if window else None
            idx = bands or list(range(1, ds.count + 1))
            if max(idx) > ds.count:
                raise SarColorError(f"{path}: has {ds.count} band(s), asked for band {max(idx)}")
            arr = ds.read(idx, window=win)
            mask = ds.read_masks(idx, window=win).min(axis=0) > 0
            return arr, mask, ds.dtypes[0]
    except RasterioIOError as exc:
        raise SarColorError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


def read_pair(ref: PairRef) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """-> sar_raw (H,W) float32, sar_valid (H,W) bool, opt (H,W,3) uint8, opt_valid (H,W) bool, scale."""
    sar, sar_mask, dtype = _read(ref.sar, [ref.sar_band] if ref.sar_band else None, ref.window)
    sar = sar[0]  # grey stored as 3 equal bands: the first is the grey
    opt, opt_mask, _ = _read(ref.opt, list(ref.opt_bands), ref.window)
    if sar.shape != opt.shape[1:]:
        raise SarColorError(f"{ref.name}: SAR {sar.shape[1]}x{sar.shape[0]} and optical "
                            f"{opt.shape[2]}x{opt.shape[1]} differ in size")
    sar_valid = sar_mask & np.isfinite(sar)
    if ref.opt_scale == "reflectance":
        opt = opt.astype(np.float32)
        ok = opt_mask & np.isfinite(opt).all(0)
        rgb = np.zeros(opt.shape, np.uint8)
        for c in range(3):  # each channel over its 99th percentile, as volkov_s1s2's optical was made
            p99 = np.percentile(opt[c][ok], 99) if ok.any() else 1.0
            rgb[c] = np.clip(opt[c] / max(p99, 1e-6) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        opt, opt_mask = rgb, ok
    opt = np.ascontiguousarray(opt.transpose(1, 2, 0)).astype(np.uint8, copy=False)
    scale = "8bit" if np.dtype(dtype) == np.uint8 else "auto"
    return sar.astype(np.float32), sar_valid, opt, opt_mask, scale


# ---------------------------------------------------------------------------------- training crops
class CropDataset(torch.utils.data.Dataset):
    """Random crops of preloaded pairs. Sample ``i`` of epoch ``e`` depends only on (seed, e, i), so a
    resumed or distributed run sees exactly the same crops in the same order."""

    def __init__(self, refs: list[PairRef], *, crop: int, input_norm: str, in_channels: int,
                 samples_per_epoch: int, seed: int = 0, augment: bool = True) -> None:
        self.crop, self.input_norm, self.in_channels = crop, input_norm, in_channels
        self.samples_per_epoch, self.seed, self.augment, self.epoch = samples_per_epoch, seed, augment, 0
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for ref in refs:
            sar, sar_valid, opt, opt_valid, scale = read_pair(ref)
            if min(sar.shape) < crop:
                raise SarColorError(f"{ref.name}: {sar.shape[1]}x{sar.shape[0]} is smaller than the crop {crop}")
            valid = sar_valid & opt_valid & (opt.max(axis=2) > 0)  # black optical = no data (scene borders)
            stats = scene_stats(sar, valid, scale)
            x = model_input(np.where(valid, sar, np.median(sar[valid])), stats, input_norm, 1)[0]
            self.items.append((x.astype(np.float16), opt, valid))
        areas = np.array([it[0].size for it in self.items], dtype=np.float64)
        self.weights = areas / areas.sum()  # big scenes are sampled in proportion to their area

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        for _ in range(10):  # retry crops that are mostly no-data
            x, opt, valid = self.items[rng.choice(len(self.items), p=self.weights)]
            r = rng.integers(0, x.shape[0] - self.crop + 1)
            c = rng.integers(0, x.shape[1] - self.crop + 1)
            v = valid[r:r + self.crop, c:c + self.crop]
            if v.mean() > 0.9:
                break
        xs = x[r:r + self.crop, c:c + self.crop].astype(np.float32)
        ys = opt[r:r + self.crop, c:c + self.crop].astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        vs = v[None].astype(np.float32)
        if self.augment:  # flips and 90-degree turns, identical for SAR and optical; no colour jitter on SAR
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            xs, ys, vs = (np.rot90(a, k, axes=(-2, -1)) for a in (xs, ys, vs))
            if flip:
                xs, ys, vs = (a[..., ::-1] for a in (xs, ys, vs))
        xs = np.repeat(np.ascontiguousarray(xs)[None], self.in_channels, 0)
        return (torch.from_numpy(xs), torch.from_numpy(np.ascontiguousarray(ys)),
                torch.from_numpy(np.ascontiguousarray(vs)))
