"""The shipped models: they load from the package alone; the default (contextnet, trained on every shared
source) colours held-out sources better than the earlier defaults (colournet and sarcolornet, reference models in
benchmarks/models/); sarcolornet still beats the intensity-lookup baseline on its own held-out scenes; no tile seams.
Skips where ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, bench_model

from sarcolor import metrics
from sarcolor.data import build_splits, load_config, read_pair
from sarcolor.engine import colorize_array
from sarcolor.evaluate import IntensityLookup, fit_baselines, pair_valid, sar_display
from sarcolor.models import SHIPPED, count_params, load_model


@pytest.mark.parametrize(("name", "arch", "params", "channels"), [("default", "contextnet", 5_000, 5),
                                                                  ("contextnet", "contextnet", 5_000, 5),
                                                                  ("colournet", "colournet", 300_000, 1),
                                                                  ("sarcolornet", "sarcolornet", 900_000, 1)])
def test_models_load(name: str, arch: str, params: int, channels: int) -> None:
    """The shipped model by its names (from the package alone), the former defaults from their files."""
    path = SHIPPED[name] if name in SHIPPED else bench_model(name)
    model, cfg = load_model(name if name in SHIPPED else path)
    assert path.stat().st_size <= 25 * 1024 * 1024
    assert cfg.name != "sarcolor-default"  # only the shipped model's outputs are tagged as the default's
    assert cfg.arch == arch and cfg.in_channels == channels  # the default reads both polarisations (5 channels)
    assert count_params(model) > params  # the trained network, not a stub
    x = np.linspace(0, 255, 96 * 80, dtype=np.float32).reshape(96, 80)
    for look in ("sar", "optical"):
        rgb = colorize_array(model, cfg, x, scale="8bit", look=look)
        assert rgb.shape == (96, 80, 3) and rgb.dtype == np.uint8
        assert rgb.reshape(-1, 3).std(0).max() > 5  # the colour follows the SAR, not one constant


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sarcolornet.yaml"


@pytest.fixture(scope="module")
def held_out() -> tuple[dict[str, list], IntensityLookup]:
    """sarcolornet's split, and the intensity lookup fitted on all of its training pairs (as in
    ``sarcolor evaluate``)."""
    if not (SHARED_DATA / "volkov_s1s2").is_dir() or not (SHARED_DATA / "sih1733").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (needs ../shared/data/volkov_s1s2 and sih1733)")
    splits = build_splits(load_config(CONFIG)["data"], CONFIG.parent)
    lookup = [b for b in fit_baselines(splits["train"], quiet=True) if b.name == "intensity-lookup"][0]
    return splits, lookup


def mean_scores(refs: list, lookup: IntensityLookup) -> tuple[dict[str, float], dict[str, float]]:
    """Mean metrics over the pairs, for sarcolornet and for the lookup."""
    model, cfg = load_model(bench_model("sarcolornet"))
    ours, base = [], []
    for ref in refs:
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = pair_valid(sv, opt, ov)
        prepared = metrics.prepare(opt, sar_display(sar, sv, scale), valid)
        pred = colorize_array(model, cfg, sar, valid=sv, scale=scale, look="optical")  # the model's own output
        ours.append(metrics.score(pred, prepared)[0])
        base.append(metrics.score(lookup.predict(sar, sv, scale), prepared)[0])
    keys = ("psnr", "ssim", "ciede2000", "chroma_ratio")
    return ({k: float(np.mean([r[k] for r in ours])) for k in keys},
            {k: float(np.mean([r[k] for r in base])) for k in keys})


def assert_beats(ours: dict[str, float], base: dict[str, float]) -> None:
    assert ours["psnr"] > base["psnr"], (ours, base)
    assert ours["ssim"] > base["ssim"], (ours, base)
    assert ours["ciede2000"] < base["ciede2000"], (ours, base)
    assert abs(np.log(ours["chroma_ratio"])) < abs(np.log(base["chroma_ratio"])), (ours, base)  # nearer 1


@pytest.mark.slow
@pytest.mark.realdata
def test_sarcolornet_beats_intensity_lookup_on_held_out_scene(held_out) -> None:
    """sih1733 scene 2's held-out strip: a real 2500 px wide scene that no training crop touched."""
    splits, lookup = held_out
    strip = [p for p in splits["val"] if p.name.startswith("sih1733")]
    assert len(strip) == 1
    assert_beats(*mean_scores(strip, lookup))


@pytest.mark.slow
@pytest.mark.realdata
def test_sarcolornet_beats_intensity_lookup_on_held_out_tile(held_out) -> None:
    """All 31 pairs of the held-out Sentinel-2 tile T11SMT, on average."""
    splits, lookup = held_out
    tile = [p for p in splits["val"] if p.group == "T11SMT"]
    assert len(tile) == 31
    assert_beats(*mean_scores(tile, lookup))


@pytest.mark.slow
@pytest.mark.realdata
def test_default_colours_held_out_bigearthnet_better_than_the_floor_and_sarcolornet() -> None:
    """The default (contextnet, trained on every source) on the held-out BigEarthNet tiles (VH): its sar look's
    colour error alone is at most 0.9x the better per-source floor (the intensity lookup fitted on BigEarthNet
    VH's training part: 9.25 in the model card, the default 7.13) and far below sarcolornet's, which never saw
    that source (18.7); its chroma is within 0.8-1.25 of the truth's (the targets of docs/research-log.md)."""
    config = CONFIG.parent / "colournet.yaml"
    if not (SHARED_DATA / "bigearthnet").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA / 'bigearthnet'}")
    splits = build_splits(load_config(config)["data"], config.parent)
    refs = [p for p in splits["val"] if p.source == "bigearthnet-vh"]
    assert len(refs) == 13
    lookup = IntensityLookup()
    for ref in (p for p in splits["train"] if p.source == "bigearthnet-vh"):
        sar, sv, opt, ov, scale = read_pair(ref)
        lookup.update(sar_display(sar, sv, scale), opt, pair_valid(sv, opt, ov))
    lookup.finish()
    colour, ccfg = load_model("default")
    old, ocfg = load_model(bench_model("sarcolornet"))
    errors: dict[str, list[float]] = {"default": [], "sarcolornet": [], "lookup": [], "chroma": []}
    for ref in refs:
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = pair_valid(sv, opt, ov)
        ours = colorize_array(colour, ccfg, sar, valid=sv, scale=scale, look="sar", render=ref.render)
        theirs = colorize_array(old, ocfg, sar, valid=sv, scale=scale, look="sar")
        errors["default"].append(metrics.colour_error(ours, opt, valid))
        errors["sarcolornet"].append(metrics.colour_error(theirs, opt, valid))
        errors["lookup"].append(metrics.colour_error(lookup.predict(sar, sv, scale), opt, valid))
        errors["chroma"].append(metrics.chroma_ratio(ours, opt, valid))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean["default"] < 0.9 * mean["lookup"] and mean["default"] < 0.5 * mean["sarcolornet"], mean
    assert 0.8 < mean["chroma"] < 1.25, mean


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["ben_34VDM_33_62_20171016", "ben_34VDM_1_31_20180512"])
def test_sar_look_keeps_a_lake_dark_and_its_structure(name: str) -> None:
    """A held-out BigEarthNet patch of open water alone (VH dB, 1st-99th percentiles about -37..-25): the sar
    look shows it dark (the truth is black; the scene's own stretch alone gave mean grey ~0.47, now 0.33), and its edges
    still follow the SAR's (structure as the model card's other scenes, ~0.98)."""
    path = SHARED_DATA / "bigearthnet" / "s1" / f"{name}.tif"
    if not path.is_file():
        pytest.skip(f"real data not found: {path}")
    import rasterio

    with rasterio.open(path) as ds:
        vh = ds.read(ds.descriptions.index("VH") + 1)
    model, cfg = load_model("default")
    rgb = colorize_array(model, cfg, vh, scale="db", look="sar", render="ben-l2a")
    # dark: a third of the grey range at most, where the look's dark end is lifted to 0.16 so colour shows
    assert rgb.mean() / 255 < 0.35
    assert metrics.structure(rgb, vh, np.ones(vh.shape, bool)) > 0.95


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("look", ["optical", "sar"])
def test_default_shows_no_tile_seams_on_a_4096_scene(look: str) -> None:
    """A real 4096 x 4096 scene (sih1733 scene 1, mirrored out to that size) through the default model in each
    look: at the engine's tile borders neighbouring columns and rows differ no more than inside tiles (the
    seam measure of test_colorize, which shows > 3 for unblended tiles)."""
    from PIL import Image

    import sarcolor.engine as engine
    from sarcolor.tiling import axis_starts, best_tile

    path = SHARED_DATA / "sih1733" / "scene1" / "sar.jpg"
    if not path.is_file():
        pytest.skip(f"real data not found at {path}")
    sar = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    scene = np.pad(sar, ((0, max(0, 4096 - sar.shape[0])), (0, max(0, 4096 - sar.shape[1]))),
                   mode="symmetric")[:4096, :4096]
    model, cfg = load_model("default")
    rgb = colorize_array(model, cfg, scene, scale="8bit", look=look).astype(np.float32)
    m = engine.EDGE_MARGIN
    size = best_tile(4096 + 2 * m, 4096 + 2 * m, cfg.tile, min(cfg.overlap, cfg.tile // 2), model.multiple)
    starts = [s - m for s in axis_starts(4096 + 2 * m, size, min(cfg.overlap, cfg.tile // 2))]
    assert len(starts) >= 4  # several tile borders on each axis (1024 px tiles for the default)
    for axis in (0, 1):
        d = np.abs(np.diff(rgb, axis=axis)).mean(axis=(1 - axis, 2))
        edges = sorted(e for e in {s - 1 for s in starts[1:]} | {s + size - 1 for s in starts[:-1]}
                       if 0 <= e < len(d))
        ratio = d[edges].mean() / np.delete(d, edges).mean()
        assert ratio < 1.1, (look, axis, ratio)
