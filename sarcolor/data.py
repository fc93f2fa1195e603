"""SAR/optical pair datasets: discovery for the usual layouts, leak-free splits, reading, and training crops.

Layouts (``layout`` in a data source):
- ``folders``: ``root/<sar_dir>/*`` and ``root/<opt_dir>/*`` matched by file stem, any raster format
  (e.g. volkov_s1s2); optional ``groups_csv`` names each pair's tile/region.
- ``sen12``: SEN1-2 and the Kaggle "Sentinel-1&2 Image Pairs" set: ``root/<terrain>/s1/*_s1_*.png`` with
  ``root/<terrain>/s2/*_s2_*.png`` (also SEN1-2's own ``ROIs1970_fall/s1_13/...`` folders); a pair's name is
  the s1 path relative to the root, so a Kaggle ``split.json`` can be given as ``split_file``.
- ``scenes``: one folder per large co-registered scene with ``sar.*`` and ``optical.*`` (e.g. sih1733);
  training samples random crops.
- ``geotiff``: GeoTIFF pairs whose paths differ by an S1/S2 token (Sen1Floods11 ``*_S1Hand.tif`` /
  ``*_S2Hand.tif``, SEN12MS ``ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p30.tif`` / ``.../s2_1/..._s2_1_...``,
  SEN12MS-CR): float dB SAR with 1 or 2 bands, multi-band optical with ``opt_bands`` (1-based) and scaling.
- ``auto``: picks one of the above from what is in the folder.

Per-source reading options (any layout): ``sar_band`` (1-based, "VV", "VH", or "auto" = "VH": of a dual-pol
file, the band named so, else band 1 for VV and 2 for VH; the same rule as ``sarcolor colorize``),
``sar_scale`` (auto, db, linear, amplitude, 8bit), ``sar_db_range`` ([lo, hi]: the SAR is an 8-bit dB export
whose 0 is lo dB and 255 is hi dB, as SEN1-2's PNGs with [-25, 0]; read as that dB), ``opt_bands``, ``opt_scale``
("8bit": stored 8-bit values; "p99": each channel over its 99th percentile, as volkov_s1s2 was made;
"fixed": value / ``opt_max``, e.g. 3000 for reflectance x 10000), ``exclude`` (glob patterns of relative
paths to ignore), ``name`` (the source's name, ``PairRef.source``, by which evaluation reports group pairs;
default: the root folder's name).

Splits are by group (tile, region, scene or a file list), never by random patches of one scene. Problems
(a file without its partner, sizes that disagree, an unreadable file) raise ``SarColorError``: a pair is
never dropped silently.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from .atomic import write_text_atomic
from .colour import lab_blocks
from .errors import SarColorError
from .preprocess import POLARIMETRIC_CHANNELS, SCALES, scale_of_type, scene_input

# gdal_env: inference's GDAL settings (truncated files fail)
from .raster import DUAL, file_bands, gdal_env, stack_bands
from .tiling import mirror_index

log = logging.getLogger("sarcolor")

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
OPT_SCALES = ("8bit", "p99", "fixed")
SOURCE_KEYS = {"root", "layout", "sar_dir", "opt_dir", "groups_csv", "name_column", "group_column", "split_file",
               "allow_missing", "sar_band", "sar_scale", "sar_db_range", "opt_bands", "opt_scale", "opt_max",
               "exclude", "name", "render", "group_regex"}
# Sen1Floods11 ships label rasters named like its SAR (S1OtsuLabelHand); SEN12MS-CR's cloudy optical has no
# SAR twin of its own. Neither is a training pair.
DEFAULT_EXCLUDE = ("*Label*", "*label*", "*cloudy*")


@dataclass(frozen=True)
class PairRef:
    """One SAR/optical pair, or a window (row, col, height, width) of a large scene pair."""

    name: str
    sar: Path
    opt: Path
    group: str
    window: tuple[int, int, int, int] | None = None
    sar_band: int | str | None = None  # 1-based band, "VV"/"VH", or None (VH): chosen as ``raster.file_band`` does
    opt_bands: tuple[int, ...] = (1, 2, 3)
    opt_scale: str = "8bit"  # "8bit" (as stored), "p99" (per-channel 99th percentile) or "fixed" (/opt_max)
    sar_scale: str = "auto"  # how the SAR values are scaled (preprocess.SCALES); auto: 8-bit or detected
    sar_db_range: tuple[float, float] | None = None  # an 8-bit dB export: the dB values of levels 0 and 255
    opt_max: float = 3000.0  # the optical value shown as white with opt_scale "fixed"
    source: str = ""  # the data source's name (its `name`, else its root folder's): results are read per source
    render: str = ""  # the source's optical rendering (its colour balance), for models that know several


# ------------------------------------------------------------------------------------------- config
def load_config(path: str | Path) -> dict:
    """Read a YAML or TOML config file."""
    p = Path(path)
    if not p.is_file():
        raise SarColorError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            cfg = tomllib.loads(text)
        else:
            import yaml

            cfg = yaml.safe_load(text)
    except Exception as exc:  # a syntax error is the user's to fix: say where, without a traceback
        raise SarColorError(f"{p}: cannot parse config ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise SarColorError(f"{p}: config must be a mapping")
    return cfg


def _read_options(src: dict, layout: str) -> dict:
    """PairRef reading options of one source, checked, with the layout's defaults."""
    geo = layout == "geotiff"
    band = src.get("sar_band", "auto")
    if isinstance(band, str):
        if band.upper() not in ("AUTO", "VV", "VH", DUAL):
            raise SarColorError(f"sar_band {band!r}: give a 1-based band number, VV, VH, {DUAL} (both) or auto")
        # a polarisation: by band name, else VV,VH order; VV+VH: both bands of a dual-pol file
        band = None if band.lower() == "auto" else band.upper()
    elif band is not None and int(band) < 1:
        raise SarColorError(f"sar_band {band}: bands are numbered from 1")
    opt_bands = tuple(int(b) for b in src.get("opt_bands", (4, 3, 2) if geo else (1, 2, 3)))
    if len(opt_bands) != 3 or min(opt_bands) < 1:
        raise SarColorError(f"opt_bands {list(opt_bands)}: give three 1-based bands (red, green, blue)")
    opt_scale = src.get("opt_scale", "p99" if geo else "8bit")
    opt_scale = "p99" if opt_scale == "reflectance" else opt_scale  # the name earlier configs used
    if opt_scale not in OPT_SCALES:
        raise SarColorError(f"opt_scale {opt_scale!r}: use one of {', '.join(OPT_SCALES)}")
    sar_scale = src.get("sar_scale", "auto")
    if sar_scale not in SCALES:
        raise SarColorError(f"sar_scale {sar_scale!r}: use one of {', '.join(SCALES)}")
    opt_max = float(src.get("opt_max", 3000.0))
    if opt_max <= 0:
        raise SarColorError(f"opt_max {opt_max}: must be positive")
    db_range = src.get("sar_db_range")
    if db_range is not None:
        try:
            lo, hi = (float(v) for v in db_range)
        except (TypeError, ValueError):
            raise SarColorError(f"sar_db_range {db_range!r}: give [lo, hi], the dB of 8-bit levels 0 and 255"
                                ) from None
        if not lo < hi or sar_scale not in ("auto", "db"):
            raise SarColorError(f"sar_db_range {db_range!r}: needs lo < hi, and sar_scale db or auto")
        db_range, sar_scale = (lo, hi), "db"
    return {"sar_band": band if band is None or isinstance(band, str) else int(band), "opt_bands": opt_bands,
            "opt_scale": opt_scale, "sar_scale": sar_scale, "opt_max": opt_max, "sar_db_range": db_range}


# ---------------------------------------------------------------------------------------- discovery
def _images(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in IMAGE_EXTS or f.name.startswith("."):
            continue
        if f.stem in out:  # a.png and a.tif: which one is the pair? Let the user decide.
            raise SarColorError(f"{folder}: two images share the name {f.stem!r} ({out[f.stem].name}, {f.name})")
        out[f.stem] = f
    return out


def _orphans(root: Path, kind: str, names: list[str]) -> SarColorError:
    more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
    return SarColorError(f"{root}: {len(names)} {kind}, e.g. {', '.join(map(repr, names[:3]))}{more}")


def _discover_folders(src: dict, root: Path) -> list[PairRef]:
    sar_dir, opt_dir = root / src.get("sar_dir", "sar"), root / src.get("opt_dir", "opt")
    for d in (sar_dir, opt_dir):
        if not d.is_dir():
            raise SarColorError(f"{d}: folder not found (layout 'folders' needs {sar_dir.name}/ and {opt_dir.name}/)")
    sars, opts = _images(sar_dir), _images(opt_dir)
    no_opt, no_sar = sorted(set(sars) - set(opts)), sorted(set(opts) - set(sars))
    if no_opt:
        raise _orphans(root, f"SAR image(s) in {sar_dir.name}/ without an optical partner in {opt_dir.name}/",
                       [sars[s].name for s in no_opt])
    if no_sar:
        raise _orphans(root, f"optical image(s) in {opt_dir.name}/ without a SAR partner in {sar_dir.name}/",
                       [opts[s].name for s in no_sar])
    groups: dict[str, str] = {}
    if src.get("groups_csv"):
        csv_path = root / src["groups_csv"]
        if not csv_path.is_file():
            raise SarColorError(f"{csv_path}: groups_csv not found")
        name_col, group_col = src.get("name_column", "name"), src.get("group_column", "group")
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            for col in (name_col, group_col):
                if col not in (reader.fieldnames or []):
                    raise SarColorError(f"{csv_path}: no column {col!r} (has: {', '.join(reader.fieldnames or [])})")
            for row in reader:
                groups[row[name_col]] = row[group_col]
        ungrouped = sorted(set(sars) - set(groups))
        if ungrouped:  # they still train, as their own group; a held-out tile would miss them
            log.warning("%s: %d pair(s) not listed, each is its own group (e.g. %s)", csv_path, len(ungrouped),
                        ungrouped[0])
    opts_ = _read_options(src, "folders")
    return [PairRef(name=f"{root.name}/{s}", sar=sars[s], opt=opts[s], group=groups.get(s, s), **opts_)
            for s in sorted(sars)]


# An S1/S2 token in a path: "s1" (folder), "s1_13", "_s1_", "S1Hand", never the "s1" inside "ROIs1970".
_TOKEN = re.compile(r"(?<![A-Za-z0-9])([sS])([12])(?![0-9])")
_SEN12 = re.compile(r"^(?P<roi>ROIs\d+)_(?P<season>[a-z]+)_s[12]_(?P<scene>\d+)_p(?P<patch>\d+)$")


def _has_token(name: str, which: str) -> bool:
    return any(m[2] == which for m in _TOKEN.finditer(name))


def _twin(rel: str, to: str) -> str:
    """The partner's relative path: every S1 token turned into S2 (or back), in folders and file name."""
    return _TOKEN.sub(lambda m: m[1] + to if m[2] != to else m[0], rel)


def sen12_group(stem: str) -> str:
    """ROIs1970_fall_s1_13_p10 -> ROIs1970_fall_13: patches of one scene share a group (they overlap)."""
    m = _SEN12.match(stem)
    return f"{m['roi']}_{m['season']}_{m['scene']}" if m else stem


def _token_group(stem: str) -> str:
    """SEN1-2/SEN12MS patch -> its scene; anything else (Sen1Floods11 Spain_7370579_S1Hand) -> its region."""
    m = _SEN12.match(stem)
    return f"{m['roi']}_{m['season']}_{m['scene']}" if m else stem.split("_")[0]


def _discover_token_pairs(src: dict, root: Path, layout: str, exts: set[str]) -> list[PairRef]:
    """Pairs whose relative paths differ only by S1 <-> S2 tokens (sen12 and geotiff layouts)."""
    exclude = list(src.get("exclude", DEFAULT_EXCLUDE))
    files = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.suffix.lower() in exts and f.is_file() and not any(fnmatch.fnmatchcase(rel, p) for p in exclude):
            files[rel] = f
    sar = [r for r in files if _has_token(Path(r).name, "1")]
    opt = {r for r in files if _has_token(Path(r).name, "2")}
    no_opt = [r for r in sar if _twin(r, "2") not in opt]
    if no_opt:
        raise _orphans(root, "SAR (s1) file(s) without an optical (s2) partner", no_opt)
    no_sar = sorted(opt - {_twin(r, "2") for r in sar})
    if no_sar:
        raise _orphans(root, "optical (s2) file(s) without a SAR (s1) partner", no_sar)
    opts_ = _read_options(src, layout)
    return [PairRef(name=r, sar=files[r], opt=files[_twin(r, "2")], group=_token_group(files[r].stem), **opts_)
            for r in sar]


def _discover_sen12(src: dict, root: Path) -> list[PairRef]:
    return _discover_token_pairs(src, root, "sen12", IMAGE_EXTS)


def _discover_geotiff(src: dict, root: Path) -> list[PairRef]:
    return _discover_token_pairs(src, root, "geotiff", {".tif", ".tiff"})


def _discover_scenes(src: dict, root: Path) -> list[PairRef]:
    pairs = []
    opts_ = _read_options(src, "scenes")
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS]
        sar = [f for f in files if f.stem.lower() == "sar"]
        opt = [f for f in files if f.stem.lower() in ("optical", "opt", "rgb")]
        if len(sar) != 1 or len(opt) != 1:
            raise SarColorError(f"{d}: expected one sar.* and one optical.* image, found "
                                f"{[f.name for f in sar + opt] or 'none'}")
        pairs.append(PairRef(name=f"{root.name}/{d.name}", sar=sar[0], opt=opt[0], group=d.name, **opts_))
    return pairs


def detect_layout(root: Path) -> str:
    """Guess a folder's layout from its structure."""
    if (root / "sar").is_dir() and (root / "opt").is_dir():
        return "folders"
    if any(root.glob("*/sar.*")):
        return "scenes"
    s1 = [f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTS and _has_token(f.name, "1")]
    if s1:
        return "geotiff" if all(f.suffix.lower() in (".tif", ".tiff") for f in s1) else "sen12"
    raise SarColorError(f"{root}: cannot tell the dataset layout (expected sar/ + opt/, */sar.* + */optical.*, "
                        "or S1/S2-named pairs such as */s1/*_s1_*.png or *_S1Hand.tif)")


_LAYOUTS = {"folders": _discover_folders, "sen12": _discover_sen12, "scenes": _discover_scenes,
            "geotiff": _discover_geotiff}


def _resolve(path: str | Path, base: Path | None) -> Path:
    p = Path(path).expanduser()
    return (base / p).resolve() if not p.is_absolute() and base is not None else p


def discover(src: dict, base: Path | None = None) -> list[PairRef]:
    """All pairs of one data source ({"root": ..., "layout": ..., ...}); relative roots are under ``base``."""
    if "root" not in src:
        raise SarColorError(f"data source {src}: no root")
    unknown = set(src) - SOURCE_KEYS
    if unknown:
        raise SarColorError(f"data source {src['root']}: unknown option(s) {sorted(unknown)}; "
                            f"known: {', '.join(sorted(SOURCE_KEYS))}")
    root = _resolve(src["root"], base)
    if not root.is_dir():
        raise SarColorError(f"{root}: dataset folder not found")
    layout = src.get("layout", "auto")
    if layout == "auto":
        layout = detect_layout(root)
        log.info("%s: layout %s", root, layout)
    if layout not in _LAYOUTS:
        raise SarColorError(f"unknown layout {layout!r}; known: auto, {', '.join(_LAYOUTS)}")
    pairs = _LAYOUTS[layout](src, root)
    if not pairs:
        raise SarColorError(f"{root}: no pairs found (layout {layout})")
    return [_labelled(p, src, root) for p in pairs]


def _labelled(ref: PairRef, src: dict, root: Path) -> PairRef:
    """A pair with its source's name and rendering, its name under the source's name (one folder can serve as
    two sources, e.g. the VV and the VH band of the same pairs), and its group from ``group_regex``."""
    name = str(src.get("name", root.name))
    pair_name = ref.name
    if name != root.name and pair_name.startswith(root.name + "/"):
        pair_name = name + pair_name[len(root.name):]
    group = ref.group
    if src.get("group_regex"):
        m = re.search(str(src["group_regex"]), Path(ref.name).name)
        if not m or not m.groups():
            raise SarColorError(f"group_regex {src['group_regex']!r} finds no group in pair name {ref.name!r}")
        group = m.group(1)
    return replace(ref, name=pair_name, group=group, source=name, render=str(src.get("render", "")))


# ------------------------------------------------------------------------------------------- splits
def _strip(ref: PairRef, frac: float) -> tuple[PairRef, PairRef]:
    """Split a scene into a top part (train) and a bottom strip of ``frac`` of its height (held out).
    The two windows share no pixel row, so no training crop can overlap the held-out strip."""
    if not 0 < frac < 1:
        raise SarColorError(f"scene strip for {ref.group}: fraction {frac} must be between 0 and 1")
    h, w = raster_size(ref.sar)
    cut = int(round(h * (1 - frac)))
    top = replace(ref, name=f"{ref.name}:top", window=(0, 0, cut, w))
    bottom = replace(ref, name=f"{ref.name}:bottom", window=(cut, 0, h - cut, w))
    return top, bottom


def _split_file_lists(split_path: Path, pairs: list[PairRef], src: dict) -> dict[str, list[PairRef]]:
    """The pairs of one source as a Kaggle-style split file lists them ({"data": {"train": [...], ...}})."""
    if not split_path.is_file():
        raise SarColorError(f"{split_path}: split_file not found")
    try:
        raw = json.loads(split_path.read_text())
        lists = raw.get("data", raw)
        assert isinstance(lists, dict) and all(isinstance(v, list) for v in lists.values())
    except (ValueError, AssertionError, AttributeError):
        raise SarColorError(f"{split_path}: expected {{\"data\": {{\"train\": [names], \"val\": [names]}}}}") from None
    by_name = {p.name: p for p in pairs}
    out: dict[str, list[PairRef]] = {}
    listed: set[str] = set()
    for part, names in lists.items():
        part = "val" if part in ("val", "valid", "validation") else part
        missing = [n for n in names if n not in by_name]
        if missing and not src.get("allow_missing"):
            raise _orphans(Path(src["root"]), f"{part} entries of {split_path.name} not found (set allow_missing: "
                           "true to train on the pairs that are there)", missing)
        if missing:
            log.warning("%s: %d of %d %s entries not found under %s", split_path, len(missing), len(names), part,
                        src["root"])
        out.setdefault(part, []).extend(by_name[n] for n in names if n in by_name)
        listed.update(names)
    unlisted = len(by_name.keys() - listed)
    if unlisted:
        log.warning("%s: %d pair(s) under %s are in none of its lists and are not used", split_path, unlisted,
                    src["root"])
    shared = {p.group for p in out.get("train", [])} & {p.group for p in out.get("val", [])}
    if shared:  # the user's list wins, but a patch-level split of overlapping patches inflates val scores
        log.warning("%s: train and val share %d scene(s) (e.g. %s): a patch-level split; val scores will be "
                    "optimistic. Hold out whole scenes with data.val.groups for a leak-free estimate.",
                    split_path, len(shared), sorted(shared)[0])
    return out


def build_splits(data_cfg: dict, base: Path | None = None) -> dict[str, list[PairRef]]:
    """Discover all sources and split them into train / val (/ test) without leaking between them.

    ``data_cfg["val"]`` (and ``data_cfg["test"]``) may hold ``groups`` (whole tiles/regions/scenes held out);
    ``val`` may also hold ``scene_strips`` ({scene group: fraction}: the bottom strip of a large scene held
    out, the rest trains). A source may carry a Kaggle-style ``split_file`` instead, which is used as is.
    """
    val_cfg = data_cfg.get("val", {}) or {}
    test_cfg = data_cfg.get("test", {}) or {}
    val_groups, test_groups = set(val_cfg.get("groups", []) or []), set(test_cfg.get("groups", []) or [])
    strips = dict(val_cfg.get("scene_strips", {}) or {})
    both = val_groups & test_groups
    if both:
        raise SarColorError(f"groups {sorted(both)} are in both data.val and data.test")
    splits: dict[str, list[PairRef]] = {"train": [], "val": []}
    seen_groups: set[str] = set()
    ruled: set[str] = set()  # groups placed by our rules: the leak check applies to them
    sources = data_cfg.get("sources", [])
    if not sources:
        raise SarColorError("no data sources configured (data.sources)")
    for src in sources:
        pairs = discover(src, base)
        seen_groups.update(p.group for p in pairs)
        if src.get("split_file"):
            for part, refs in _split_file_lists(_resolve(src["split_file"], base), pairs, src).items():
                splits.setdefault(part, []).extend(refs)
            continue
        ruled.update(p.group for p in pairs)
        for p in pairs:
            if p.group in strips:
                top, bottom = _strip(p, float(strips[p.group]))
                splits["train"].append(top)
                splits["val"].append(bottom)
            elif p.group in val_groups:
                splits["val"].append(p)
            elif p.group in test_groups:
                splits.setdefault("test", []).append(p)
            else:
                splits["train"].append(p)
    unknown = (val_groups | test_groups | set(strips)) - seen_groups
    if unknown:  # a typo would otherwise silently hold nothing out
        raise SarColorError(f"held-out group(s) {sorted(unknown)} match no pair; groups are e.g. "
                            f"{sorted(seen_groups)[:5]}")
    parts = {k: {p.group for p in v} & ruled for k, v in splits.items()}
    for a in parts:
        for b in parts:
            leak = (parts[a] & parts[b]) - set(strips) if a < b else set()
            if leak:
                raise SarColorError(f"split leaks groups between {a} and {b}: {sorted(leak)[:5]}")
    return splits


def write_split(splits: dict[str, list[PairRef]], path: Path) -> None:
    """Record which pairs (and windows) went where, next to the checkpoints."""
    out = {k: [{"name": p.name, "sar": str(p.sar), "opt": str(p.opt), "group": p.group,
                "window": list(p.window) if p.window else None} for p in v] for k, v in splits.items()}
    write_text_atomic(path, json.dumps(out, indent=1))


# ------------------------------------------------------------------------------------------ reading
def _open(path: Path):
    if not path.is_file():
        raise SarColorError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG/JPEG training pairs carry no CRS
            return rasterio.open(path)
    except RasterioError as exc:
        raise SarColorError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


def raster_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header."""
    with gdal_env(), _open(path) as ds:
        return ds.height, ds.width


def _read(ds, path: Path, bands: list[int], window: tuple[int, int, int, int] | None
          ) -> tuple[np.ndarray, np.ndarray]:
    if max(bands) > ds.count:
        raise SarColorError(f"{path}: has {ds.count} band(s), asked for band {max(bands)}")
    win = Window(window[1], window[0], window[3], window[2]) if window else None
    try:
        arr = ds.read(bands, window=win)
        mask = ds.read_masks(bands, window=win).min(axis=0) > 0
    except RasterioError as exc:
        raise SarColorError(f"{path}: cannot read, the file is damaged ({str(exc).splitlines()[0]})") from None
    return arr, mask


def _sar_bands(ref: PairRef, ds) -> tuple[int, ...]:
    """The pair's SAR band(s), by the rule ``sarcolor colorize`` uses (``raster.file_bands``): training and
    evaluation score the band(s) that colorize colours; ``VV+VH``: (co-pol, cross-pol) of a dual-pol file."""
    if isinstance(ref.sar_band, str):
        return file_bands(ds, str(ref.sar), polarisation=ref.sar_band)[0]
    chosen = None if ref.sar_band is None else [ref.sar_band]
    return file_bands(ds, str(ref.sar), bands=chosen)[0]


def _check_geometry(ref: PairRef, sar_hw: tuple[int, int], opt_hw: tuple[int, int]) -> None:
    """A pair's SAR and optical must be the same size, and its window (if any) inside them."""
    (sh, sw), (oh, ow) = sar_hw, opt_hw
    if (sh, sw) != (oh, ow):
        raise SarColorError(f"pair {ref.name}: SAR {ref.sar.name} is {sw}x{sh} but optical "
                            f"{ref.opt.name} is {ow}x{oh} (width x height); fix or remove the pair")
    if ref.window:
        r, c, h, w = ref.window
        if r < 0 or c < 0 or r + h > sh or c + w > sw:
            raise SarColorError(f"pair {ref.name}: window {ref.window} lies outside the {sw}x{sh} image")


def read_pair(ref: PairRef) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """-> sar_raw (H,W) float32 ((H,W,2) co-pol, cross-pol for ``sar_band: VV+VH`` on a dual-pol file), sar_valid
    (H,W) bool, opt (H,W,3) uint8, opt_valid (H,W) bool, scale."""
    with gdal_env(), _open(ref.sar) as s, _open(ref.opt) as o:
        _check_geometry(ref, (s.height, s.width), (o.height, o.width))
        sar, sar_mask = _read(s, ref.sar, list(_sar_bands(ref, s)), ref.window)
        sar_dtype = np.dtype(s.dtypes[0])
        opt, opt_mask = _read(o, ref.opt, list(ref.opt_bands), ref.window)
    sar = stack_bands(sar.astype(np.float32))
    if ref.sar_db_range is not None:  # an 8-bit dB export back to its dB (for the model, only an affine map)
        if sar_dtype != np.uint8:
            raise SarColorError(f"{ref.sar}: sar_db_range is for 8-bit dB exports; this SAR is {sar_dtype}")
        lo, hi = ref.sar_db_range
        sar = (lo + sar * ((hi - lo) / 255.0)).astype(np.float32)
    sar_valid = sar_mask & (np.isfinite(sar).all(axis=-1) if sar.ndim == 3 else np.isfinite(sar))
    if ref.opt_scale == "8bit":
        if opt.dtype != np.uint8:
            raise SarColorError(f"{ref.opt}: optical is {opt.dtype}, not 8-bit; set opt_scale to p99 or fixed "
                                "(with opt_max) for this source")
    else:
        opt = opt.astype(np.float32)
        opt_mask = opt_mask & np.isfinite(opt).all(0)
        rgb = np.zeros(opt.shape, np.uint8)
        for c in range(3):
            if ref.opt_scale == "p99":  # each channel over its 99th percentile, as volkov_s1s2's optical was made
                top = float(np.percentile(opt[c][opt_mask], 99)) if opt_mask.any() else 1.0
            else:
                top = ref.opt_max
            rgb[c] = np.clip(np.nan_to_num(opt[c]) / max(top, 1e-6) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        opt = rgb
    opt = np.ascontiguousarray(opt.transpose(1, 2, 0))
    scale = scale_of_type(ref.sar_scale, sar_dtype)  # decided here: the float32 copy no longer shows 8-bit
    return sar, sar_valid, opt, opt_mask, scale


def pair_valid(sar_valid: np.ndarray, opt: np.ndarray, opt_valid: np.ndarray) -> np.ndarray:
    """Pixels valid in both images, for training and scoring alike. Black optical (0, 0, 0) counts as nodata:
    it is the fill of reprojected PNG/JPEG tiles, which carry no nodata mask."""
    return sar_valid & opt_valid & (opt.max(axis=2) > 0)


# ---------------------------------------------------------------------------------- training crops
PRELOAD_MAX_BYTES = 4 << 30  # "auto" keeps the training pairs in memory up to this estimate (6 bytes a pixel)


def _training_arrays(ref: PairRef, input_norm: str, channels: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pair as training sees it: model input (H, W) float16 normalised with the whole pair's statistics
    ((C, H, W) for a polarimetric model's ``channels``), optical (H, W, 3) uint8, and the pixels valid in both."""
    sar, sar_valid, opt, opt_valid, scale = read_pair(ref)
    valid = pair_valid(sar_valid, opt, opt_valid)
    if not valid.any():
        raise SarColorError(f"{ref.name}: no pixel is valid in both SAR and optical")
    x = scene_input(sar, valid, scale, input_norm, channels)
    return (x if channels == POLARIMETRIC_CHANNELS else x[0]).astype(np.float16), opt, valid


def pair_sizes(pairs: Sequence[PairRef]) -> list[tuple[int, int]]:
    """(height, width) of each pair as ``read_pair`` returns it, from the headers only: a SAR/optical size
    mismatch or a window outside its image fails here, before any pixel is read."""
    sizes = []
    for ref in pairs:
        sar_hw = raster_size(ref.sar)
        _check_geometry(ref, sar_hw, raster_size(ref.opt))
        sizes.append((ref.window[2], ref.window[3]) if ref.window else sar_hw)
    return sizes


class CropDataset(torch.utils.data.Dataset):
    """Random crops of training pairs. Sample ``i`` of epoch ``e`` depends only on (seed, e, i), so a
    resumed or distributed run sees exactly the same crops in the same order.

    ``preload``: True keeps every prepared pair in memory (fast; about 6 bytes a pixel); False reads and
    prepares the drawn pair at each sample (memory stays flat, for datasets larger than RAM such as SEN12MS);
    None decides by the size estimate against ``PRELOAD_MAX_BYTES``. Both give the same samples.

    Augmentation is geometric only (flips and 90-degree turns, the same for SAR and optical): SAR intensity
    is a physical measurement, so no colour or brightness jitter is applied to it.
    """

    def __init__(self, refs: list[PairRef], *, crop: int, input_norm: str, in_channels: int,
                 samples_per_epoch: int, seed: int = 0, augment: bool = True, preload: bool | None = None,
                 renders: Sequence[str] | None = None, balance_sources: bool = False) -> None:
        self.crop, self.input_norm, self.in_channels = crop, input_norm, in_channels
        self.samples_per_epoch, self.seed, self.augment, self.epoch = samples_per_epoch, seed, augment, 0
        if not refs:
            raise SarColorError("no training pairs")
        self.refs = list(refs)
        sizes = pair_sizes(self.refs)  # every pair's headers are checked, even when read per sample
        # ``renders`` (colournet's; None for the other models): each pair's rendering is passed on as an index
        # (an empty list: no conditioning, index 0). Pairs smaller than the crop are mirrored out to it, the
        # added pixels invalid (masked losses skip them; the prototype's unmasked loss sees a mirror image).
        unknown = sorted({r.render for r in self.refs} - set(renders)) if renders else []
        if unknown:
            raise SarColorError(f"render(s) {unknown} of the training pairs are not in model.renders {list(renders)}")
        self.render_idx = [list(renders).index(r.render) if renders else 0 for r in self.refs]
        areas = np.array([h * w for h, w in sizes], dtype=np.float64)
        if preload is None:
            preload = areas.sum() * 6 <= PRELOAD_MAX_BYTES
            if not preload:
                log.info("training pairs (~%.1f GiB) are read at each sample, not kept in memory",
                         areas.sum() * 6 / 2**30)
        # Pixels (nodata, damage) are checked up front when preloaded, otherwise when a pair is first drawn.
        self.array_channels = in_channels if in_channels == POLARIMETRIC_CHANNELS else 1
        self.items = [_training_arrays(ref, input_norm, self.array_channels) for ref in self.refs] if preload else None
        self.weights = areas / areas.sum()  # big scenes are sampled in proportion to their area
        if balance_sources:  # ... within their source; each source is drawn equally often
            names = [r.source for r in self.refs]
            for name in set(names):
                idx = [i for i, n in enumerate(names) if n == name]
                self.weights[idx] = areas[idx] / areas[idx].sum() / len(set(names))

    @property
    def in_memory(self) -> bool:
        """Every sample is cut from memory (no reading: background loader processes would only cost)."""
        return self.items is not None

    def _pair(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.items[k] if self.items is not None
                else _training_arrays(self.refs[k], self.input_norm, self.array_channels))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        for _ in range(10):  # retry crops that are mostly no-data
            pair = rng.choice(len(self.refs), p=self.weights)
            x, opt, valid = self._pair(pair)
            if min(x.shape) < self.crop:  # a small patch: all of it, reflected out to the crop, marked invalid
                x, opt, valid = _padded(x, opt, valid, self.crop)
            r = rng.integers(0, x.shape[0] - self.crop + 1)
            c = rng.integers(0, x.shape[1] - self.crop + 1)
            v = valid[r:r + self.crop, c:c + self.crop]
            if v.mean() > 0.9 * valid.mean():
                break
        xs = x[r:r + self.crop, c:c + self.crop].astype(np.float32)
        ys = opt[r:r + self.crop, c:c + self.crop].astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        vs = v[None].astype(np.float32)
        if self.augment:  # one draw of (turn, flip) for all three arrays: SAR and optical stay aligned
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            xs, ys, vs = (np.rot90(a, k, axes=(-2, -1)) for a in (xs, ys, vs))
            if flip:
                xs, ys, vs = (a[..., ::-1] for a in (xs, ys, vs))
        xs = np.repeat(np.ascontiguousarray(xs)[None], self.in_channels, 0)
        return (torch.from_numpy(xs), torch.from_numpy(np.ascontiguousarray(ys)),
                torch.from_numpy(np.ascontiguousarray(vs)), torch.tensor(self.render_idx[pair]))


class PixelDataset(CropDataset):
    """Training samples for a model whose input is context statistics without weights (contextnet): the
    statistics (``features``: normalised SAR (1, 1, H, W) -> (1, C, H/f, W/f)) and the truth's block Lab are
    computed once per whole training pair, so every window sees the real context it sees at inference (a crop
    would cut a 2.5 km window short). A sample is ``pixels`` random valid blocks of one pair, drawn as
    ``CropDataset`` draws pairs (by area, optionally each source equally often; the same samples for the same
    (seed, epoch, index)); a batch of them mixes many scenes, so no step is about one scene's colour balance.
    Returns (statistics (C, 1, pixels), Lab (3, 1, pixels), valid (1, 1, pixels), rendering index)."""

    def __init__(self, refs: list[PairRef], *, features: Callable[[torch.Tensor], torch.Tensor], factor: int,
                 pixels: int, input_norm: str, samples_per_epoch: int, seed: int = 0,
                 renders: Sequence[str] | None = None, balance_sources: bool = False, in_channels: int = 1) -> None:
        super().__init__(refs, crop=factor, input_norm=input_norm, in_channels=in_channels,
                         samples_per_epoch=samples_per_epoch,
                         seed=seed, augment=False, preload=True, renders=renders, balance_sources=balance_sources)
        self.pixels = pixels
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for x, opt, valid in self.items:
                x = x if x.ndim == 3 else x[None]  # (C, H, W)
                h, w = x.shape[1] // factor * factor, x.shape[2] // factor * factor
                if not h or not w:
                    raise SarColorError(f"a training pair is smaller than {factor} px")
                feats = features(torch.from_numpy(x[:, :h, :w].astype(np.float32))[None])[0]
                rgb = torch.from_numpy(opt[:h, :w].astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
                lab, keep = lab_blocks(rgb, torch.from_numpy(valid[:h, :w].astype(np.float32))[None, None], factor)
                kept = keep[0, 0].flatten() > 0
                self.blocks.append((feats.flatten(1)[:, kept].contiguous(), lab[0].flatten(1)[:, kept].contiguous()))
        self.items = None  # the statistics are all that training needs now
        empty = [r.name for r, (f, _) in zip(self.refs, self.blocks, strict=True) if f.shape[1] == 0]
        if empty:
            raise SarColorError(f"training pair(s) without a wholly valid {factor}x{factor} block: {empty[:3]}")

    @property
    def in_memory(self) -> bool:
        return True

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        pair = rng.choice(len(self.refs), p=self.weights)
        feats, lab = self.blocks[pair]
        idx = torch.from_numpy(rng.integers(0, feats.shape[1], self.pixels))
        return (feats[:, idx][:, None], lab[:, idx][:, None], torch.ones(1, 1, self.pixels),
                torch.tensor(self.render_idx[pair]))


def _padded(x: np.ndarray, opt: np.ndarray, valid: np.ndarray, size: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pair smaller than the crop, mirrored out to at least ``size`` a side (``tiling.mirror_index``); the added
    pixels are invalid."""
    (h, w), thin = x.shape, min(x.shape) < 2
    rows, cols = mirror_index(h, size, edge=thin)[:, None], mirror_index(w, size, edge=thin)
    inside = (np.arange(rows.shape[0]) < h)[:, None] & (np.arange(cols.shape[0]) < w)
    return x[rows, cols], opt[rows, cols], valid[rows, cols] & inside
