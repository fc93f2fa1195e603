"""``sarcolor evaluate``: score models and baselines on SAR/optical pairs and write a report folder.

The pairs come from the same readers and splits as training (``sarcolor.data``); models run through the same
tiled inference as ``sarcolor colorize`` (``sarcolor.engine``), so scenes of any size work. Every model is scored in
each look asked for (``--looks``, default ``sar`` and ``optical``), as rows ``<model> [<look>]``. Baselines,
scored in the same run:

* ``sar-grey``: the SAR's 8-bit display (``sar_display``) as grey RGB: all the structure, no colour.
* ``mean-colour``: every pixel gets the mean training colour.
* ``intensity-lookup``: each pixel gets the mean training colour of its SAR grey level (0..255), where the
  grey level is the 8-bit display of the SAR (``sar_display``), the same mapping for every input scale.
* ``mean-colour/src``, ``intensity-lookup/src``: the same two fitted on each source's training part alone,
  each pair predicted by the one of its own source (what knowing only a source's colours gives).

Every number is reported per data source (``PairRef.source``) and over all sources. Report folder:
``per_image.csv``, ``summary.json``, ``summary.md``, ``contact_sheet_<source>.png`` and, with ``--heatmap``,
``heatmaps/*.png`` (per-pixel CIEDE2000). Metric definitions: ``sarcolor.metrics`` and docs/metrics.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import metrics
from .data import PairRef, build_splits, load_config, pair_sizes, pair_valid, read_pair
from .errors import SarColorError
from .looks import LOOKS
from .preprocess import SceneStats, scene_stats, to_db
from .raster import DUAL

log = logging.getLogger("sarcolor")

THUMB = 256  # contact-sheet panel size (pixels)
HEADER_H = 22  # contact-sheet column-title strip
CAPTION_H = 14  # contact-sheet strip above each row with the pair's name
BACKGROUND = (40, 40, 40)  # around thumbnails that are not square
HEATMAP_MAX = 40.0  # CIEDE2000 at the top of the heatmap colour scale (larger values are clipped)
NODATA_RGB = (128, 128, 128)  # heatmap pixels that were not scored
ALL = "all"  # the summary's key for all sources together


# --------------------------------------------------------------------------------------- grey levels
def sar_display(sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
    """The SAR as an 8-bit grey display (H, W) uint8, the same mapping for every scale.

    It is the prototype's ("seed") input: linear intensity over the reference that shows as white, clipped to
    1, times 255. For an 8-bit product the reference is 255, so the grey is the stored value itself; for dB,
    linear or amplitude input it is the scene's 99th percentile, which is how volkov_s1s2's PNGs were made.
    Invalid pixels are 0.
    """
    sar_raw = co_pol(sar_raw)
    return _display(sar_raw, sar_valid, scene_stats(sar_raw, sar_valid, scale))


def co_pol(sar_raw: np.ndarray) -> np.ndarray:
    """The co-pol band of a dual-pol (H, W, 2) SAR (what the colour SAR look's lightness is made from); a
    single band as it is."""
    return sar_raw[..., 0] if sar_raw.ndim == 3 else sar_raw


def sar_views(sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """The SAR's 8-bit grey display (``sar_display``) and its log (dB, ``preprocess.to_db``; what
    ``metrics.structure`` compares edges with), from one pass of scene statistics."""
    sar_raw = co_pol(sar_raw)
    stats = scene_stats(sar_raw, sar_valid, scale)
    return _display(sar_raw, sar_valid, stats), to_db(sar_raw, stats.scale)


def _display(sar_raw: np.ndarray, sar_valid: np.ndarray, stats: SceneStats) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if stats.scale == "8bit":
            # The stored value exactly (to_db clamps 0 to 0.5 for the log, which would merge levels 0 and 1).
            grey = np.rint(np.clip(sar_raw.astype(np.float64), 0.0, 255.0))
        else:
            lin = 10.0 ** ((to_db(sar_raw, stats.scale).astype(np.float64) - stats.ref) / 10.0)
            grey = np.rint(np.clip(lin, 0.0, 1.0) * 255.0)
    grey[~sar_valid | ~np.isfinite(grey)] = 0
    return grey.astype(np.uint8)


# ------------------------------------------------------------------------------------------- models
class Predictor(Protocol):
    """What is scored. One may also have ``for_pair(ref) -> Predictor | None``: the predictor to use on that
    pair (a per-source baseline picks its source's fit; None: it has nothing for that pair, which is then not
    scored for it). Baselines set ``baseline = True`` (they stay off the contact sheets)."""

    name: str

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        """-> (H, W, 3) uint8 RGB."""
        ...


Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # (grey (H,W) uint8, opt (H,W,3) uint8, valid (H,W) bool)


def for_pair(pred: Predictor, ref: PairRef) -> Predictor | None:
    """The predictor that scores ``ref`` (see ``Predictor``)."""
    bind = getattr(pred, "for_pair", None)
    return bind(ref) if bind else pred


@dataclass
class SarGrey:
    """Baseline: the SAR's 8-bit display as grey RGB (all of its structure, no colour)."""

    name: str = "sar-grey"
    baseline: ClassVar[bool] = True

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        return metrics.grey_rgb(sar_display(sar_raw, sar_valid, scale))


@dataclass
class MeanColour:
    """Baseline: the mean colour of all valid training pixels, everywhere."""

    name: str = "mean-colour"
    rgb: np.ndarray = field(default_factory=lambda: np.zeros(3))  # float64 mean
    _sum: np.ndarray = field(default_factory=lambda: np.zeros(3), repr=False)
    _n: int = 0
    baseline: ClassVar[bool] = True

    def update(self, grey: np.ndarray, opt: np.ndarray, valid: np.ndarray) -> None:
        """Accumulate one training pair (pairs are streamed: the training split need not fit in memory)."""
        self._sum += opt[valid].sum(axis=0, dtype=np.float64)
        self._n += int(valid.sum())

    def finish(self) -> MeanColour:
        if self._n == 0:
            raise SarColorError(f"{self.name}: the training pairs have no valid pixels to fit it on")
        self.rgb = self._sum / self._n
        return self

    def fit(self, samples: Sequence[Sample]) -> MeanColour:
        for s in samples:
            self.update(*s)
        return self.finish()

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        colour = np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8)
        return np.broadcast_to(colour, (*sar_raw.shape[:2], 3)).copy()


@dataclass
class IntensityLookup:
    """Baseline: the mean training colour of each SAR grey level (a 256-entry table)."""

    name: str = "intensity-lookup"
    table: np.ndarray = field(default_factory=lambda: np.zeros((256, 3)))  # float64 mean RGB per level
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))  # training pixels per level
    _sums: np.ndarray = field(default_factory=lambda: np.zeros((256, 3)), repr=False)
    baseline: ClassVar[bool] = True

    def update(self, grey: np.ndarray, opt: np.ndarray, valid: np.ndarray) -> None:
        g = grey[valid]
        self.counts += np.bincount(g, minlength=256)
        for c in range(3):
            self._sums[:, c] += np.bincount(g, weights=opt[..., c][valid], minlength=256)

    def finish(self) -> IntensityLookup:
        """Mean per level; empty levels are interpolated linearly between their filled neighbours (constant
        beyond the first and last filled level)."""
        filled = np.flatnonzero(self.counts)
        if filled.size == 0:
            raise SarColorError(f"{self.name}: the training pairs have no valid pixels to fit it on")
        means = self._sums[filled] / self.counts[filled, None]
        levels = np.arange(256)
        self.table = np.stack([np.interp(levels, filled, means[:, c]) for c in range(3)], axis=1)
        return self

    def fit(self, samples: Sequence[Sample]) -> IntensityLookup:
        for s in samples:
            self.update(*s)
        return self.finish()

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        lut = np.clip(np.rint(self.table), 0, 255).astype(np.uint8)
        return lut[sar_display(sar_raw, sar_valid, scale)]


def hyp3_rgb(co_db: np.ndarray, cross_db: np.ndarray, threshold_db: float = -24.0) -> np.ndarray:
    """ASF HyP3's RGB decomposition of dual-pol backscatter (hyp3-lib ``docs/rgb_decomposition.md``), a fixed
    formula: red surface scattering with some volume scattering, green volume scattering (cross-pol), blue
    surface scattering with very low volume scattering; pixels whose cross-pol is below ``threshold_db`` (water,
    smooth ground) go blue. dB (H, W) in, (H, W, 3) uint8 out (1..255)."""
    cp, xp = 10.0 ** (co_db.astype(np.float64) / 10.0), 10.0 ** (cross_db.astype(np.float64) / 10.0)
    blue_mask = xp < 10.0 ** (threshold_db / 10.0)
    red_mask = ~blue_mask
    surface = cp - 3.0 * xp
    z = blue_mask * np.arctan(np.sqrt(np.clip(cp - xp, 0.0, None))) * 2.0 / np.pi
    i_r = 2.0 * red_mask * np.sqrt(np.clip(surface, 0.0, None)) + z
    i_g = 3.0 * red_mask * np.sqrt(xp) + 2.0 * z
    i_b = 2.0 * blue_mask * np.sqrt(np.clip(-surface, 0.0, None)) + 5.0 * z
    rgb = np.stack([i_r, i_g, i_b], axis=-1) * 254.0 + 1.0
    return np.clip(np.nan_to_num(rgb), 0, 255).astype(np.uint8)


@dataclass
class Hyp3Decomposition:
    """Baseline for dual-pol pairs: ``hyp3_rgb`` of their co-pol and cross-pol (no learning)."""

    name: str = "hyp3-rgb"
    baseline: ClassVar[bool] = True

    def for_pair(self, ref: PairRef) -> Hyp3Decomposition | None:
        return self if ref.sar_band == DUAL else None

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        if sar_raw.ndim != 3:
            raise SarColorError(f"{self.name}: needs a dual-pol (co-pol, cross-pol) SAR")
        stats = scene_stats(sar_raw, sar_valid, scale)
        rgb = hyp3_rgb(to_db(sar_raw[..., 0], stats.scale), to_db(sar_raw[..., 1], stats.scale))
        rgb[~sar_valid] = 0
        return rgb


Fittable = MeanColour | IntensityLookup


@dataclass
class PerSource:
    """A baseline fitted on each source's training part alone; a pair is predicted by its own source's fit
    (a source without training pairs has none: its pairs are not scored for this baseline)."""

    name: str
    by_source: dict[str, Fittable]
    baseline: ClassVar[bool] = True

    def for_pair(self, ref: PairRef) -> Fittable | None:
        return self.by_source.get(ref.source)

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        raise SarColorError(f"{self.name} predicts per pair (for_pair), not on a bare array")


@dataclass
class ModelRunner:
    """A loaded generator in one look, run through the tiled inference of ``colorize``."""

    name: str
    model: object  # torch.nn.Module
    cfg: object  # ModelConfig
    device: str = "cpu"
    look: str = "sar"
    render: str | None = None  # the optical rendering of the pair's source (PairRef.render), when known

    def for_pair(self, ref: PairRef) -> ModelRunner:
        # A source whose rendering the model knows is coloured in it; any other in the model's default.
        known = getattr(self.cfg, "renders", ())
        return replace(self, render=ref.render if ref.render in known else None)

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        from .engine import colorize_array

        return colorize_array(self.model, self.cfg, sar_raw, valid=sar_valid, scale=scale, device=self.device,
                              look=self.look, render=self.render)


def _model_file(spec: str) -> Path | str:
    """A --models entry -> what load_model takes: shipped name, .safetensors file, or a checkpoint folder's
    exported ``model.safetensors``."""
    p = Path(spec)
    if not p.is_dir():
        return spec
    if (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    if (p / "checkpoint.safetensors").is_file():
        raise SarColorError(f"{p}: checkpoint folder without model.safetensors; run "
                            f"`sarcolor export {p} -o {p / 'model.safetensors'}` first")
    raise SarColorError(f"{p}: not a checkpoint folder (no model.safetensors)")


def _display_name(spec: str, taken: set[str]) -> str:
    p = Path(spec)
    name = p.name if p.is_dir() else (p.stem if p.suffix == ".safetensors" else spec)
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def parse_looks(text: str | Sequence[str]) -> list[str]:
    """--looks: comma-separated looks, each at most once, in the order given."""
    looks = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    bad = [x for x in looks if x not in LOOKS]
    if bad or not looks or len(set(looks)) != len(looks):
        raise SarColorError(f"--looks {','.join(looks)!r}: give one or more of {', '.join(LOOKS)}, "
                            "comma-separated, each once")
    return looks


def load_runners(specs: Sequence[str], device: str = "auto", looks: Sequence[str] = LOOKS) -> list[ModelRunner]:
    """Load every --models entry (shipped name, .safetensors file or checkpoint folder) once, and give one
    runner per look, named ``<model> [<look>]``: all models' first look, then all models' second look."""
    from .engine import resolve_device
    from .models import load_model

    dev = str(resolve_device(device))  # a clear error for --device cuda without a GPU
    loaded: list[tuple[str, object, object]] = []
    for spec in specs:
        model, cfg = load_model(_model_file(spec), device=dev)
        loaded.append((_display_name(spec, {n for n, _, _ in loaded}), model, cfg))
    return [ModelRunner(f"{name} [{look}]", model, cfg, dev, look) for look in looks for name, model, cfg in loaded]


# ------------------------------------------------------------------------------------------- pairs
@dataclass
class Selection:
    """The pairs to score, the pairs to fit baselines on, and a line saying where they came from."""

    pairs: list[PairRef]
    train: list[PairRef]
    description: str


def _split_file_pairs(path: Path, splits: dict[str, list[PairRef]], part: str) -> list[PairRef]:
    """Pairs named in a split file: Kaggle-style {"data": {part: [names]}} or a run's split.json
    ({part: [{"name", "window", ...}]}). Windowed entries (``name:top``) are rebuilt from their pair."""
    raw = json.loads(path.read_text())
    lists = raw.get("data", raw)
    aliases = {"val": ("val", "valid", "validation")}.get(part, (part,))
    entries = next((lists[k] for k in aliases if k in lists), None)
    if entries is None:
        raise SarColorError(f"{path}: no {part!r} list (has: {', '.join(lists)})")
    known = {p.name: p for refs in splits.values() for p in refs}
    out, missing = [], []
    for e in entries:
        name = e["name"] if isinstance(e, dict) else str(e)
        window = tuple(e["window"]) if isinstance(e, dict) and e.get("window") else None
        ref = known.get(name) or known.get(name.rsplit(":", 1)[0])
        if ref is None:
            missing.append(name)
            continue
        out.append(PairRef(**{**ref.__dict__, "name": name, "window": window}) if window else ref)
    if missing:
        raise SarColorError(f"{path}: {len(missing)} {part} pair(s) not in the data, e.g. {missing[0]!r}")
    return out


def first_per_source(pairs: Sequence[PairRef], n: int) -> list[PairRef]:
    """The first ``n`` pairs of each source, in their order (``n`` <= 0: all): a quicker, still per-source run."""
    if n <= 0:
        return list(pairs)
    seen: dict[str, int] = {}
    out = []
    for p in pairs:
        seen[p.source] = seen.get(p.source, 0) + 1
        if seen[p.source] <= n:
            out.append(p)
    return out


def select_pairs(config: str | None, data: str | None, split: str | None) -> Selection:
    """Resolve --config / --data / --split into the pairs to score and the baselines' training pairs.

    ``--config``: the training config's data and split (default split: val). ``--data DIR``: every pair of a
    folder (auto layout; default split: all). ``--split FILE[:PART]`` scores PART (default val) of a split
    file, and fits the baselines on its train list when it has one.
    """
    if bool(config) == bool(data):
        raise SarColorError("give either --config (a training config) or --data (a dataset folder)")
    if config:
        base = Path(config).resolve().parent  # data roots are relative to the config file, as in training
        cfg = load_config(config)
        if not cfg.get("data", {}).get("sources"):
            raise SarColorError(f"{config}: no data.sources in the config")
        splits = build_splits(cfg["data"], base)
        source = config
    else:
        splits = build_splits({"sources": [{"root": str(data), "layout": "auto"}]})
        source = str(data)
    split = split or ("val" if config else "all")
    everything = [p for refs in splits.values() for p in refs]
    train = splits.get("train", [])
    path_part = re.match(r"^(.*?)(?::(\w+))?$", split)
    if split == "all":
        pairs = everything
    elif split in splits:
        pairs = splits[split]
    elif path_part and Path(path_part[1]).is_file():
        path, part = Path(path_part[1]), path_part[2] or "val"
        pairs = _split_file_pairs(path, splits, part)
        lists = json.loads(path.read_text())
        if "train" in lists.get("data", lists):
            train = _split_file_pairs(path, splits, "train")
    else:
        known = ", ".join(["all", *splits])
        raise SarColorError(f"--split {split!r}: not a split ({known}) nor a split file")
    if not pairs:
        raise SarColorError(f"split {split!r} of {source} is empty"
                            + (" (the config holds nothing out: set data.val)" if split == "val" else ""))
    train = train or everything
    shared = {p.name for p in pairs} & {p.name for p in train}
    if shared:
        # No held-out split (a plain folder): the baselines have seen scored pairs, which flatters them. Say so.
        note = f"baselines fitted on {len(train)} pair(s), {len(shared)} of them scored too (no held-out split)"
    else:
        note = f"baselines fitted on {len(train)} training pair(s)"
    untrained = sorted({p.source for p in pairs} - {p.source for p in train})
    if untrained:
        note += f"; no training pairs of {', '.join(untrained)}: the /src baselines do not score them"
    return Selection(pairs, train, f"{source}, split {split}: {len(pairs)} pair(s); {note}")


def check_sizes(pairs: Sequence[PairRef]) -> None:
    """Fail before any inference if a pair's SAR and optical differ in size (reads headers only)."""
    try:
        pair_sizes(pairs)
    except SarColorError as exc:
        raise SarColorError(f"{exc}; nothing was scored") from None


# ------------------------------------------------------------------------------------------ fitting
def fit_baselines(train: Sequence[PairRef], quiet: bool = False) -> list[Predictor]:
    """The baselines, fitted on the training pairs in one streamed pass: ``sar-grey`` (nothing to fit),
    ``mean-colour`` and ``intensity-lookup`` on all of them, and the ``/src`` variants on each source's."""
    from tqdm import tqdm

    mean, lookup = MeanColour(), IntensityLookup()
    per_source: dict[str, tuple[MeanColour, IntensityLookup]] = {}
    for ref in tqdm(train, desc="fitting baselines", unit="pair", disable=quiet, leave=False):
        sar, sar_valid, opt, opt_valid, scale = read_pair(ref)
        sample = (sar_display(sar, sar_valid, scale), opt, pair_valid(sar_valid, opt, opt_valid))
        mine = per_source.setdefault(ref.source, (MeanColour(f"mean-colour/src:{ref.source}"),
                                                  IntensityLookup(f"intensity-lookup/src:{ref.source}")))
        for b in (mean, lookup, *mine):
            b.update(*sample)
    return [SarGrey(), Hyp3Decomposition(), mean.finish(),
            PerSource("mean-colour/src", {s: m.finish() for s, (m, _) in per_source.items()}),
            lookup.finish(),
            PerSource("intensity-lookup/src", {s: lu.finish() for s, (_, lu) in per_source.items()})]


# ------------------------------------------------------------------------------------- contact sheet
def sheet_layout(n_rows: int, n_cols: int, thumb: int = THUMB) -> tuple[tuple[int, int], list[list[tuple]]]:
    """Contact-sheet geometry: (width, height) and each panel's box (left, top, right, bottom) by row/col.

    One title strip of ``HEADER_H`` on top; each row is a caption strip of ``CAPTION_H`` then the panels,
    ``thumb`` x ``thumb`` each, side by side without gaps.
    """
    width, height = n_cols * thumb, HEADER_H + n_rows * (CAPTION_H + thumb)
    boxes = [[(c * thumb, HEADER_H + r * (CAPTION_H + thumb) + CAPTION_H,
               (c + 1) * thumb, HEADER_H + (r + 1) * (CAPTION_H + thumb)) for c in range(n_cols)]
             for r in range(n_rows)]
    return (width, height), boxes


def thumbnail(img: np.ndarray, thumb: int = THUMB) -> Image.Image:
    """(H, W) or (H, W, 3) uint8 -> RGB image of at most thumb x thumb, aspect kept (area-averaged)."""
    im = Image.fromarray(img).convert("RGB")
    s = thumb / max(im.size)
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return im.resize(size, Image.Resampling.BOX)


def contact_sheet(rows: Sequence[tuple[str, Sequence[Image.Image]]], titles: Sequence[str],
                  thumb: int = THUMB) -> Image.Image:
    """Rows of (caption, panels) under column ``titles``; each panel is centred in its thumb x thumb cell."""
    (w, h), boxes = sheet_layout(len(rows), len(titles), thumb)
    sheet = Image.new("RGB", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.rectangle((0, 0, w - 1, HEADER_H - 1), fill=(255, 255, 255))
    for c, title in enumerate(titles):
        draw.text((c * thumb + 4, 5), _fit_text(draw, title, font, thumb - 8), fill=(0, 0, 0), font=font)
    for r, (caption, panels) in enumerate(rows):
        if len(panels) != len(titles):
            raise ValueError(f"row {caption!r}: {len(panels)} panels for {len(titles)} columns")
        top = boxes[r][0][1] - CAPTION_H
        draw.text((4, top + 1), _fit_text(draw, caption, font, w - 8), fill=(230, 230, 230), font=font)
        for (x0, y0, x1, y1), panel in zip(boxes[r], panels, strict=True):
            sheet.paste(panel, (x0 + (x1 - x0 - panel.width) // 2, y0 + (y1 - y0 - panel.height) // 2))
    return sheet


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


# ------------------------------------------------------------------------------------------ heatmap
# A dark-to-bright perceptual ramp (inferno-like): black = no error, pale yellow = HEATMAP_MAX or more.
_RAMP = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], float)


def heatmap(delta_e: np.ndarray, valid: np.ndarray, vmax: float = HEATMAP_MAX) -> np.ndarray:
    """Per-pixel CIEDE2000 (H, W) -> (H, W, 3) uint8 colour map; unscored pixels are mid grey."""
    t = np.clip(np.nan_to_num(delta_e, nan=0.0) / vmax, 0.0, 1.0) * (len(_RAMP) - 1)
    x = np.arange(len(_RAMP))
    rgb = np.stack([np.interp(t, x, _RAMP[:, c]) for c in range(3)], axis=-1)
    rgb[~valid] = NODATA_RGB
    return np.rint(rgb).astype(np.uint8)


# ------------------------------------------------------------------------------------------- report
@dataclass
class Report:
    rows: list[dict]  # per image and model: image, source, group, model, valid_pixels, metrics...
    summary: dict[str, dict[str, dict[str, float | int]]]  # "all" / source -> model -> metric -> mean (+ count)
    files: dict[str, Path]


@dataclass
class PatchBank:
    """What the set metrics need of every scored image: the SWD patches (the truth's, and each model's at the
    same places) and the centred block a*b* of land-cover colour and colour spread (``metrics.block_ab``)."""

    truth: dict[str, list[np.ndarray]] = field(default_factory=dict)  # image -> per pyramid level
    pred: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)  # (model, image) -> levels
    truth_ab: dict[str, np.ndarray] = field(default_factory=dict)  # image -> (blocks, 2)
    pred_ab: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (model, image) -> (blocks, 2)

    def block_metrics(self, model: str, images: Sequence[str]) -> dict[str, float]:
        """Land-cover colour and colour spread of the model's blocks on ``images`` (pooled)."""
        mine = [i for i in images if (model, i) in self.pred_ab]
        preds, truths = [self.pred_ab[(model, i)] for i in mine], [self.truth_ab[i] for i in mine]
        return {"land_cover_colour": metrics.land_cover_colour(preds, truths),
                "colour_spread": metrics.colour_spread(preds, truths)}

    def swd(self, model: str, images: Sequence[str]) -> float:
        """SWD of the model's patches on ``images`` against the truth's patches of the same images."""
        preds = [self.pred[(model, i)] for i in images if (model, i) in self.pred]
        truths = [self.truth[i] for i in images if (model, i) in self.pred]
        return metrics.swd_of_images(preds, truths)


def _nanmean(values: Sequence[float]) -> float:
    vals = np.array(values, dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else math.nan


def summarise(rows: Sequence[dict], models: Sequence[str], patches: PatchBank | None = None
              ) -> dict[str, dict[str, dict[str, float | int]]]:
    """{"all": {model: {metric: mean, ..., "swd": ..., "count": n}}, <source>: {...}, ...}: the mean of each
    per-image metric over the images where it is defined (NaN-free), the set metrics of the group's images as
    one set (land-cover colour and colour spread of "all": the mean over the sources, each source counting
    once), and ``count`` = images scored. PSNR is ``inf`` for an image predicted exactly, and so is its mean
    then: reported, not clipped."""
    sources = list(dict.fromkeys(r["source"] for r in rows))
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for group in [*sources, ALL]:
        out[group] = {}
        for name in models:
            mine = [r for r in rows if r["model"] == name and group in (ALL, r["source"])]
            vals: dict[str, float | int] = {k: _nanmean([r[k] for r in mine]) for k in metrics.METRICS}
            images = [r["image"] for r in mine]
            vals["swd"] = patches.swd(name, images) if patches else math.nan
            blocks = patches.block_metrics(name, images) if patches else dict.fromkeys(BLOCK_METRICS, math.nan)
            if group == ALL:
                blocks = {k: _nanmean([out[s][name][k] for s in sources if name in out[s]]) for k in BLOCK_METRICS}
            vals.update(blocks)
            vals["count"] = len(mine)
            out[group][name] = vals
    return {ALL: out.pop(ALL), **out}


def _json_safe(x: object) -> object:
    """Strict JSON has no inf/NaN: write them as the strings "inf", "-inf", "nan" (float() reads them)."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


BLOCK_METRICS = ("land_cover_colour", "colour_spread")
# Report columns, in order: the colour/fog metrics first.
_COLUMNS = {"land_cover_colour": ("land-cover colour ↑", "{:.3f}"), "colour_spread": ("colour spread →1", "{:.2f}"),
            "colour_error": ("colour ΔE00 ↓", "{:.2f}"), "structure": ("structure ↑", "{:.3f}"),
            "sharpness": ("sharpness →1", "{:.3f}"), "swd": ("SWD ↓", "{:.3f}"),
            "ciede2000": ("ΔE00 ↓", "{:.2f}"), "chroma_ratio": ("chroma ratio →1", "{:.3f}"),
            "psnr": ("PSNR dB ↑", "{:.2f}"), "ssim": ("SSIM ↑", "{:.4f}"), "sam": ("SAM ° ↓", "{:.2f}"),
            "ab_wasserstein": ("a*b* W1 ↓", "{:.2f}"), "identity_collapse": ("collapse ↓", "{:.0%}")}


def markdown_table(summary: dict[str, dict[str, float | int]]) -> str:
    """One group's summary ({model: values}) as a GitHub Markdown table, one row per model."""
    head = ["model", *(title for title, _ in _COLUMNS.values()), "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--"] + ["--:"] * (len(head) - 1)) + "|"]
    for name, vals in summary.items():
        cells = [name]
        for k, (_, fmt) in _COLUMNS.items():
            v = float(vals[k])
            cells.append(fmt.format(v) if math.isfinite(v) else str(v))
        cells.append(str(vals["count"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_tables(summary: dict[str, dict[str, dict[str, float | int]]]) -> str:
    """Every group's table under a heading: all sources first, then each source."""
    parts = []
    for group, table in summary.items():
        n = max((int(v["count"]) for v in table.values()), default=0)
        parts += [f"## {'all sources' if group == ALL else group} ({n} pair(s))", "", markdown_table(table)]
    return "\n".join(parts)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def _pick_samples(pairs: Sequence[PairRef], samples: int | Sequence[str], seed: int = 0) -> list[int]:
    """Indices of the contact-sheet rows: the named pairs, or ``samples`` per source drawn at random (fixed
    seed)."""
    if isinstance(samples, int):
        out = []
        for source in dict.fromkeys(p.source for p in pairs):
            idx = [i for i, p in enumerate(pairs) if p.source == source]
            n = min(max(samples, 0), len(idx))
            out += [idx[j] for j in np.random.default_rng(seed).choice(len(idx), size=n, replace=False)]
        return sorted(out)
    index = {p.name: i for i, p in enumerate(pairs)}
    out = []
    for s in samples:
        hits = [i for name, i in index.items() if name == s or name.endswith("/" + s)]
        if not hits:
            raise SarColorError(f"--samples: no pair named {s!r} in the split (e.g. {pairs[0].name!r})")
        out.append(hits[0])
    return out


def _check_predictors(predictors: Sequence[Predictor], pairs: Sequence[PairRef]) -> None:
    if not predictors:
        raise SarColorError("nothing to evaluate: no models and no baselines")
    names = [p.name for p in predictors]
    if len(set(names)) != len(names):
        raise SarColorError(f"model names must be unique: {names}")
    if any(p.source == ALL for p in pairs):
        raise SarColorError(f"a data source is named {ALL!r}, the report's name for all sources: rename it "
                            "(name: in the config)")


def _score_pair(ref: PairRef, predictors: Sequence[Predictor], bank: PatchBank, heat_dir: Path | None,
                sheet: bool) -> tuple[list[dict], list[Image.Image]]:
    """Score every predictor on one pair: its rows, SWD patches into ``bank``, and contact-sheet panels
    (SAR, each non-baseline prediction, truth) when ``sheet``."""
    sar, sar_valid, opt, opt_valid, scale = read_pair(ref)
    if sar.shape[:2] != opt.shape[:2]:  # check_sizes saw the headers; this guards the pixels read
        raise SarColorError(f"pair {ref.name}: SAR {sar.shape[:2]} and optical {opt.shape[:2]} differ in "
                            "size; nothing was scored")
    valid = pair_valid(sar_valid, opt, opt_valid)
    grey, sar_db = sar_views(sar, sar_valid, scale)
    reference = metrics.prepare(opt, grey, valid, sar_db)
    positions = metrics.patch_positions(valid, seed=zlib.crc32(ref.name.encode()))
    bank.truth[ref.name] = metrics.laplacian_patches(opt, positions)
    bank.truth_ab[ref.name] = reference.block_ab
    rows, panels = [], [thumbnail(grey)] if sheet else []
    for pred_obj in predictors:
        bound = for_pair(pred_obj, ref)
        if bound is None:
            continue
        pred = bound.predict(sar, sar_valid, scale)
        if pred.shape != opt.shape or pred.dtype != np.uint8:
            raise SarColorError(f"{pred_obj.name} on {ref.name}: returned {pred.shape} {pred.dtype}, "
                                f"expected {opt.shape} uint8")
        scores, delta_e, pred_ab = metrics.score(pred, reference)
        rows.append({"image": ref.name, "source": ref.source, "group": ref.group, "model": pred_obj.name,
                     "valid_pixels": int(valid.sum()), **scores})
        bank.pred[(pred_obj.name, ref.name)] = metrics.laplacian_patches(pred, positions)
        bank.pred_ab[(pred_obj.name, ref.name)] = pred_ab
        if sheet and not getattr(pred_obj, "baseline", False):
            panels.append(thumbnail(pred))
        if heat_dir:
            Image.fromarray(heatmap(delta_e, valid)).save(heat_dir / f"{_safe(ref.name)}__{_safe(pred_obj.name)}.png")
    if sheet:
        panels.append(thumbnail(opt))
    return rows, panels


def run_evaluation(pairs: Sequence[PairRef], predictors: Sequence[Predictor], out: str | Path, *,
                   samples: int | Sequence[str] = 6, heatmaps: bool = False, quiet: bool = False,
                   description: str = "") -> Report:
    """Score every predictor on every pair and write the report folder; returns what was written.

    ``samples``: contact-sheet rows, a number per source or pair names; one sheet per source."""
    from tqdm import tqdm

    _check_predictors(predictors, pairs)
    names = [p.name for p in predictors]
    check_sizes(pairs)  # every pair, before any inference: nothing is computed on misaligned sizes
    sample_idx = set(_pick_samples(pairs, samples))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heat_dir = out / "heatmaps" if heatmaps else None
    if heat_dir:
        heat_dir.mkdir(exist_ok=True)
    rows: list[dict] = []
    sheets: dict[str, list[tuple[str, list[Image.Image]]]] = {}
    bank = PatchBank()
    bar = tqdm(pairs, desc="evaluating", unit="pair", disable=quiet)
    for i, ref in enumerate(bar):
        pair_rows, panels = _score_pair(ref, predictors, bank, heat_dir, i in sample_idx)
        rows += pair_rows
        if panels:
            sheets.setdefault(ref.source, []).append((ref.name, panels))
        first = [r["ciede2000"] for r in rows if r["model"] == names[0]]
        if first:
            bar.set_postfix({f"ΔE {names[0]}": f"{np.nanmean(first):.2f}"})
    summary = summarise(rows, names, bank)
    shown = [p.name for p in predictors if not getattr(p, "baseline", False)]
    files = _write_report(out, rows, summary, sheets, shown, description, heatmaps)
    return Report(rows, summary, files)


def _write_report(out: Path, rows: list[dict], summary: dict, sheets: dict[str, list], shown: list[str],
                  description: str, heatmaps: bool) -> dict[str, Path]:
    files = {"csv": out / "per_image.csv", "json": out / "summary.json", "md": out / "summary.md"}
    fields = ["image", "source", "group", "model", "valid_pixels", *metrics.METRICS]
    with open(files["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (format(v, ".10g") if isinstance(v, float) else v) for k, v in r.items()})
    files["json"].write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    md = ["# sarcolor evaluation", "", description, "", markdown_tables(summary),
          "Per image, then averaged over images (SWD: over each group's images as one set); nodata in either "
          "image excluded. ↑ higher is better, ↓ lower is better, →1 best at 1. land-cover colour: correlation of the "
          "output's 16 px block a*b* with the truth's, each image's own mean colour removed (0: a tint or no "
          "colour; all sources: their mean); colour spread: how varied those block colours are, over the truth's; "
          "colour ΔE00: CIEDE2000 of the "
          "smoothed colours on the truth's lightness (colour alone); structure: correlation of the output's "
          "edges with the SAR's; sharpness: Laplacian std over the truth's; SWD: patch realism; collapse: share "
          "of images closer to the grey SAR than to the truth. `/src` baselines are fitted on the pair's own "
          "source's training part. Definitions: docs/metrics.md.", ""]
    titles = ["SAR", *shown, "truth"]
    for source, sheet_rows in sheets.items():
        files[f"sheet:{source}"] = path = out / f"contact_sheet_{_safe(source)}.png"
        (w_, h_), _ = sheet_layout(len(sheet_rows), len(titles))
        md += [f"Contact sheet `{path.name}` ({w_}x{h_}): {' | '.join(titles)}, rows: "
               + ", ".join(f"`{r[0]}`" for r in sheet_rows) + ".", ""]
        contact_sheet(sheet_rows, titles).save(path)
    if heatmaps:
        md += [f"Heatmaps (`heatmaps/<image>__<model>.png`): per-pixel CIEDE2000, black 0 to pale yellow "
               f"{HEATMAP_MAX:g}+; grey = not scored.", ""]
    files["md"].write_text("\n".join(md))
    return files


# ---------------------------------------------------------------------------------------------- CLI
def parse_samples(text: str | int) -> int | list[str]:
    """--samples: a number of random rows, or comma-separated pair names."""
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise SarColorError(f"--samples {text!r}: give a number or comma-separated pair names")
    return names


def evaluate_from_cli(args: argparse.Namespace) -> int:
    """``sarcolor evaluate``: select pairs, fit baselines, load models, score, write the report."""
    looks = parse_looks(args.looks)
    sel = select_pairs(args.config, args.data, args.split)
    samples = parse_samples(args.samples)
    check_sizes(sel.pairs)  # fail fast, before fitting or loading anything
    predictors: list[Predictor] = list(load_runners(args.models, args.device, looks)) if args.models else []
    if not args.no_baselines:
        check_sizes(sel.train)
        predictors += fit_baselines(sel.train, quiet=args.quiet)
        log.info("%s", sel.description)
    else:
        log.info("%s", sel.description.split(";")[0])
    report = run_evaluation(sel.pairs, predictors, args.out, samples=samples, heatmaps=args.heatmap,
                            quiet=args.quiet, description=sel.description)
    if not args.quiet:
        print(markdown_tables(report.summary), end="")
        print(f"report: {Path(args.out)}")
    return 0
