"""The colorize engine end to end: arrays, files, folders, the CLI, errors, seams, devices, real data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import SHARED_DATA, make_tiny
from fixtures import (
    CRS,
    TRANSFORM,
    db_to_8bit,
    db_to_linear,
    db_to_uint16,
    sar_db,
    truncated,
    write_geotiff,
    write_jpeg,
    write_png,
)

import sarcolor
import sarcolor.engine as engine
from sarcolor.cli import main
from sarcolor.engine import colorize, colorize_array, colorize_file, colorize_paths, colorize_with_mask
from sarcolor.errors import SarColorError
from sarcolor.looks import GREY_DARK
from sarcolor.models import SHIPPED, ModelConfig, Pix2PixUNet, seed_config
from sarcolor.raster import ArraySource
from sarcolor.tiling import axis_starts, best_tile

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------------
# arrays
# ------------------------------------------------------------------------------------------------
def test_colorize_array_basic(tiny) -> None:
    db = sar_db(50, 70)
    rgb = colorize(db, tiny)
    assert rgb.shape == (50, 70, 3) and rgb.dtype == np.uint8
    assert rgb.std() > 0
    np.testing.assert_array_equal(rgb, sarcolor.colorize(db, model=tiny))  # the package-level API
    np.testing.assert_array_equal(rgb, colorize(db, tiny))  # deterministic


def test_package_colorize_is_the_function() -> None:
    """``sarcolor.colorize`` is the package's function, also after the engine module has been imported."""
    import types

    import sarcolor.engine  # noqa: F401  (importing a submodule must not rebind the name)

    assert isinstance(sarcolor.colorize, types.FunctionType)


@pytest.mark.parametrize("shape", [(8, 8), (9, 13), (37, 53), (64, 64), (65, 130)])
def test_any_size_from_8x8(tiny, shape: tuple[int, int]) -> None:
    assert colorize(sar_db(*shape), tiny).shape == (*shape, 3)


def test_nan_pixels_are_black_and_masked(tiny) -> None:
    db = sar_db(40, 40)
    db[5:15, 20:30] = np.nan
    rgb, valid = colorize_with_mask(db, tiny)
    assert not valid[5:15, 20:30].any() and valid.sum() == 40 * 40 - 100
    assert (rgb[~valid] == 0).all()


def test_invalid_pixels_never_change_their_neighbours(tiny) -> None:
    """Whatever garbage sits under the mask, valid pixels get the same colours (it is filled first)."""
    db = sar_db(60, 60)
    a, b = db.copy(), db.copy()
    a[20:30, 20:30], b[20:30, 20:30] = 1e6, -1e6
    valid = np.ones(db.shape, bool)
    valid[20:30, 20:30] = False
    model, cfg = tiny
    np.testing.assert_array_equal(colorize_array(model, cfg, a, valid=valid),
                                  colorize_array(model, cfg, b, valid=valid))


@pytest.mark.parametrize(("make", "expected"), [
    (lambda db: db, "db"),
    (db_to_linear, "linear"),
    (lambda db: np.sqrt(db_to_linear(db)) * 3, "amplitude"),
    (db_to_uint16, "amplitude"),
    (db_to_8bit, "8bit"),
])
def test_auto_scale_is_decided_and_logged(tiny, caplog: pytest.LogCaptureFixture, make, expected: str) -> None:
    with caplog.at_level(logging.INFO, logger="sarcolor"):
        colorize(make(sar_db(40, 40)), tiny)
    assert any(f"scale auto -> {expected}" in r.getMessage() for r in caplog.records)


def test_8bit_db_export_with_scale_db_colours_as_its_db(tiny, tiny_model_path: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A SEN1-2-style 8-bit dB export (dB clipped to -25..0, scaled to 0-255) given --scale db colours as the float
    dB it came from (the normalisation removes the affine map); read as 8-bit linear (auto) it does not."""
    levels = np.clip(np.rint((sar_db(48, 56) + 25) / 25 * 255), 0, 255).astype(np.uint8)
    png = write_png(tmp_path / "sen12.png", levels)
    with caplog.at_level(logging.INFO, logger="sarcolor"):
        assert main(["colorize", str(png), "-o", str(tmp_path / "db.png"), "--scale", "db", "-q",
                     "--model", str(tiny_model_path)]) == 0
    assert any("8-bit dB export" in r.getMessage() for r in caplog.records)
    with rasterio.open(tmp_path / "db.png") as ds:
        got = ds.read().transpose(1, 2, 0).astype(int)
    as_db = colorize(-25 + levels.astype(np.float32) * (25 / 255), tiny, scale="db").astype(int)
    assert np.abs(got - as_db).max() <= 1
    assert np.abs(colorize(levels, tiny).astype(int) - as_db).max() > 8  # auto: read as linear intensity


def test_power_amplitude_and_db_give_the_same_colours(tiny) -> None:
    """The log-percentile normalisation makes the result independent of how the scene is scaled."""
    db = sar_db(48, 48)
    ref = colorize(db, tiny, scale="db").astype(int)
    for data, scale in ((db_to_linear(db), "linear"), (np.sqrt(db_to_linear(db)), "amplitude")):
        assert np.abs(colorize(data, tiny, scale=scale).astype(int) - ref).max() <= 1


def test_calibrated_water_alone_stays_dark_in_the_sar_look(tiny) -> None:
    """The same texture at land's level and at calm water's: the normalisation alone would give the same picture
    (as it still does for the model's colour); calibrated dB keeps the water dark, land's own range unchanged."""
    land = sar_db(48, 48)  # -22..-9 dB: its own range is the tone's
    water = land - 17.0  # -39..-26 dB: a lake
    grey = {k: colorize(v, tiny, scale="db").mean() / 255 for k, v in (("land", land), ("water", water))}
    # the normalisation alone: equal. Above the sar look's lifted dark end (GREY_DARK), water keeps well under
    # two thirds of land's lightness
    assert grey["water"] - GREY_DARK < 0.65 * (grey["land"] - GREY_DARK)
    np.testing.assert_array_equal(colorize(water, tiny, scale="db", look="optical"),
                                  colorize(land, tiny, scale="db", look="optical"))


def test_unknown_scale(tiny) -> None:
    with pytest.raises(SarColorError, match="unknown scale 'decibel'"):
        colorize(sar_db(), tiny, scale="decibel")


def test_dual_pol_array_uses_the_models_polarisation(tiny) -> None:
    vv, vh = sar_db(seed=1), sar_db(seed=2)
    np.testing.assert_array_equal(colorize(np.stack([vv, vh]), tiny), colorize(vh, tiny))
    np.testing.assert_array_equal(colorize(np.stack([vv, vh]), tiny, bands=1), colorize(vv, tiny))


def test_tta_averages_the_four_flips(tiny) -> None:
    db = sar_db(40, 48)
    plain, tta = colorize(db, tiny), colorize(db, tiny, tta=True)
    assert not np.array_equal(plain, tta)
    # Averaging over all flips makes the result flip-equivariant (up to rounding).
    flipped = colorize(db[:, ::-1].copy(), tiny, tta=True)[:, ::-1]
    assert np.abs(flipped.astype(int) - tta.astype(int)).max() <= 1


def test_colorize_array_restores_training_mode() -> None:
    model, cfg = make_tiny()
    model.train()
    colorize_array(model, cfg, sar_db())
    assert model.training


def test_pix2pix_seed_model_runs_on_odd_sizes() -> None:
    torch.manual_seed(0)
    cfg = seed_config()
    rgb = colorize(db_to_8bit(sar_db(100, 150)), (Pix2PixUNet(cfg), cfg))  # padded to multiples of 128
    assert rgb.shape == (100, 150, 3)


def test_model_from_file_is_loaded_once(tiny_model_path: Path) -> None:
    a = engine.get_model(tiny_model_path, "cpu")
    b = engine.get_model(str(tiny_model_path), "cpu")
    assert a[0] is b[0] and a[1].name == "tiny-test"
    np.testing.assert_array_equal(colorize(sar_db(), tiny_model_path), colorize(sar_db(), a))


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SarColorError, match="model not found"):
        colorize(sar_db(), tmp_path / "nope.safetensors")


def test_cpu_and_auto_devices_agree(tiny_model_path: Path) -> None:
    db = sar_db(40, 40)
    np.testing.assert_array_equal(colorize(db, tiny_model_path, device="cpu"),
                                  colorize(db, tiny_model_path, device="auto"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu(tiny_model_path: Path) -> None:
    db = sar_db(80, 80)
    cpu = colorize(db, tiny_model_path, device="cpu").astype(int)
    gpu = colorize(db, tiny_model_path, device="cuda").astype(int)
    assert np.abs(cpu - gpu).max() <= 2  # float reductions differ slightly on GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_request_without_gpu_is_a_clear_error(tiny_model_path: Path) -> None:
    with pytest.raises(SarColorError, match="no CUDA GPU"):
        colorize(sar_db(), tiny_model_path, device="cuda")


# ------------------------------------------------------------------------------------------------
# tiling in the engine: seams and bounded memory
# ------------------------------------------------------------------------------------------------
def _contextual_tiny(overlap: int = 16):
    """A tiny SarColorNet whose colours are smooth (one colour per 2x2 pixel-shuffle cell) and strong, so
    that tile-edge effects of its zero-padded convolutions would show as seams if tiles were not blended."""
    model, cfg = make_tiny(overlap=overlap)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.fill_(1.0)
        w, b = model.head[0].weight, model.head[0].bias
        for c in range(3):
            w[4 * c:4 * c + 4] = 4 * w[4 * c]
            b[4 * c:4 * c + 4] = b[4 * c]
    return model, cfg


def _smooth_scene(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / 50.0
    return (-14 + 4 * np.sin(1.3 * xx + 1) * np.cos(0.9 * yy) + 2 * np.sin(0.5 * xx + yy)).astype(np.float32)


def _seam_ratio(rgb: np.ndarray, starts: list[int], size: int, axis: int) -> float:
    """Mean |colour change| between neighbouring columns (axis=1) or rows (axis=0) at tile edges, divided by
    the same inside tiles. About 1 means no seam."""
    d = np.abs(np.diff(rgb.astype(np.float32), axis=axis)).mean(axis=(1 - axis, 2))
    edges = sorted(e for e in {s - 1 for s in starts[1:]} | {s + size - 1 for s in starts[:-1]}
                   if 0 <= e < len(d))
    inside = np.setdiff1d(np.arange(len(d)), edges)
    return float(d[edges].mean() / d[inside].mean())


def _engine_grid(h: int, w: int, model: torch.nn.Module, overlap: int, tile: int) -> tuple[int, list[int], list[int]]:
    """The tile size and tile starts the engine picks, in image coordinates (it tiles the image with its
    mirrored margin)."""
    m = engine.EDGE_MARGIN
    size = best_tile(h + 2 * m, w + 2 * m, tile, overlap, model.multiple)
    return (size, [s - m for s in axis_starts(h + 2 * m, size, overlap)],
            [s - m for s in axis_starts(w + 2 * m, size, overlap)])


def test_no_seams_across_tile_borders(monkeypatch: pytest.MonkeyPatch) -> None:
    # Interior tile borders only: this extreme model's colours depend so much on context that the mirrored
    # margin around the scene (tested on its own below) would dominate its small edge tiles.
    monkeypatch.setattr(engine, "EDGE_MARGIN", 0)
    model, cfg = _contextual_tiny()
    h, w = 200, 232
    scene = _smooth_scene(h, w)
    size, ys, xs = _engine_grid(h, w, model, cfg.overlap, cfg.tile)
    assert len(ys) >= 3 and len(xs) >= 3

    blended = colorize(scene, (model, cfg))
    assert _seam_ratio(blended, xs, size, 1) < 1.5
    assert _seam_ratio(blended, ys, size, 0) < 1.5

    # The same tiles averaged without the blending window: the seams show, so the check above can fail.
    monkeypatch.setattr(engine, "blend_window", lambda th, tw, overlap: np.ones((th, tw), np.float32))
    boxed = colorize(scene, (model, cfg))
    assert _seam_ratio(boxed, xs, size, 1) > 3
    assert _seam_ratio(boxed, ys, size, 0) > 3


def test_naive_tiling_would_show_seams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "EDGE_MARGIN", 0)
    model, cfg = _contextual_tiny(overlap=0)
    scene = _smooth_scene(200, 232)
    naive = colorize(scene, (model, cfg))
    size, _, xs = _engine_grid(200, 232, model, 0, cfg.tile)
    assert _seam_ratio(naive, xs, size, 1) > 3


def test_rows_are_read_once_in_order_and_memory_is_per_strip(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[tuple[int, int]] = []
    original = ArraySource.read_rows

    def spy(self, y0: int, y1: int):
        reads.append((y0, y1))
        return original(self, y0, y1)

    monkeypatch.setattr(ArraySource, "read_rows", spy)
    held: list[int] = []
    acc_cls = engine.StripAccumulator

    class Spy(acc_cls):  # type: ignore[misc, valid-type]
        def flush(self, upto: int):
            held.append(self.rows_held)
            return super().flush(upto)

    monkeypatch.setattr(engine, "StripAccumulator", Spy)
    colorize(sar_db(700, 40), tiny)
    assert reads[0][0] == 0 and reads[-1][1] == 700
    assert all(a[1] == b[0] for a, b in zip(reads, reads[1:], strict=False))  # contiguous, no re-reads
    assert max(held) <= int(tiny[1].tile * 1.25)  # never more than one tile (of best_tile's size) of rows in flight


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def test_path_and_array_give_the_same_result(tiny, tmp_path: Path) -> None:
    db = sar_db(70, 90)
    path = write_geotiff(tmp_path / "in.tif", db, tiled=True)
    np.testing.assert_array_equal(colorize(path, tiny), colorize(db, tiny))


def test_geotiff_output_keeps_crs_transform_and_nodata(tiny, tmp_path: Path) -> None:
    db = sar_db(150, 170)
    db[:20, :] = -9999.0
    db[60, 60] = np.nan
    src = write_geotiff(tmp_path / "in.tif", db, nodata=-9999.0)
    info = colorize_file(src, tmp_path / "out.tif", *tiny)
    assert info.scale == "db" and info.tiles >= 3 * 3 and info.output == tmp_path / "out.tif"
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert (ds.count, ds.width, ds.height, ds.dtypes[0]) == (3, 170, 150, "uint8")
        assert ds.crs == CRS and ds.transform == TRANSFORM and ds.nodata == 0
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        rgb, mask = ds.read(), ds.dataset_mask()
    invalid = np.zeros(db.shape, bool)
    invalid[:20], invalid[60, 60] = True, True
    assert (rgb[:, invalid] == 0).all() and (mask[invalid] == 0).all()
    assert (rgb[:, ~invalid] >= 1).all() and (mask[~invalid] == 255).all()
    assert _files(tmp_path) == {"in.tif", "out.tif"}


@pytest.mark.parametrize("kind", ["uint16 tif", "uint8 png", "uint16 png", "grey rgb jpeg", "grey+alpha png"])
def test_input_types(tiny, tmp_path: Path, kind: str) -> None:
    db = sar_db(40, 50)
    if kind == "uint16 tif":
        src = write_geotiff(tmp_path / "in.tif", db_to_uint16(db))
    elif kind == "uint8 png":
        src = write_png(tmp_path / "in.png", db_to_8bit(db))
    elif kind == "uint16 png":
        src = write_png(tmp_path / "in.png", db_to_uint16(db))
    elif kind == "grey rgb jpeg":
        src = write_jpeg(tmp_path / "in.jpg", np.repeat(db_to_8bit(db)[..., None], 3, axis=2))
    else:
        src = write_png(tmp_path / "in.png", np.dstack([db_to_8bit(db), np.full(db.shape, 255, np.uint8)]))
    colorize_file(src, tmp_path / "out.png", *tiny)
    with rasterio.open(tmp_path / "out.png") as ds:
        assert (ds.count, ds.height, ds.width) == (3, 40, 50)


def test_png_output_warns_once_that_georeferencing_is_lost(tiny, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    src = write_geotiff(tmp_path / "in.tif", sar_db())
    with caplog.at_level(logging.INFO, logger="sarcolor"):
        colorize_file(src, tmp_path / "out.jpg", *tiny)
    lost = [r for r in caplog.records if "georeferencing" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING and "\n" not in lost[0].getMessage()
    assert _files(tmp_path) == {"in.tif", "out.jpg"}  # no .aux.xml / world file carrying the CRS


def test_progress_callback_reports_tiles(tiny, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    info = colorize_file(write_geotiff(tmp_path / "in.tif", sar_db(150, 150)), tmp_path / "o.tif", *tiny,
                         progress=lambda done, total: calls.append((done, total)))
    assert info.tiles >= 9 and calls[-1] == (info.tiles, info.tiles)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and len(calls) > 1


def test_failure_mid_scene_leaves_no_output(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sarcolor.raster import RasterSource

    src = write_geotiff(tmp_path / "in.tif", sar_db(300, 60))
    original = RasterSource.read_rows

    def failing(self, y0: int, y1: int):
        if y0 > 0:
            raise SarColorError(f"{self.name}: cannot read pixels (rows {y0}-{y1})")
        return original(self, y0, y1)

    monkeypatch.setattr(RasterSource, "read_rows", failing)
    with pytest.raises(SarColorError, match="cannot read pixels"):
        colorize_file(src, tmp_path / "out.tif", *tiny)
    assert _files(tmp_path) == {"in.tif"}


# ------------------------------------------------------------------------------------------------
# bad input: one-line errors, nothing left behind
# ------------------------------------------------------------------------------------------------
def _case(tmp: Path, case: str) -> tuple[Path, Path, str]:
    """(input, output, expected message) for one kind of bad input."""
    out = tmp / "out.tif"
    good = write_geotiff(tmp / "good.tif", sar_db(64, 64))
    if case == "missing":
        return tmp / "nope.tif", out, r"nope\.tif: no such file"
    if case == "directory":
        (tmp / "d.tif").mkdir()
        (tmp / "d.tif" / "x.txt").write_text("not an image")
        return tmp / "d.tif", tmp / "o", r"d\.tif: no images found"
    if case == "zero bytes":
        (tmp / "e.tif").write_bytes(b"")
        return tmp / "e.tif", out, r"e\.tif: file is empty"
    if case == "not an image":
        (tmp / "n.png").write_text("hello\n")
        return tmp / "n.png", out, r"n\.png: not a supported image"
    if case == "truncated":
        return truncated(good, tmp / "t.tif", 0.5), out, r"t\.tif: cannot read pixels.*truncated or corrupt"
    if case == "corrupt":
        data = bytearray(good.read_bytes())
        data[8:64] = b"\xff" * 56
        (tmp / "c.tif").write_bytes(bytes(data))
        return tmp / "c.tif", out, r"c\.tif: (not a readable image|cannot read pixels)"
    if case == "1x1":
        return write_png(tmp / "one.png", np.zeros((1, 1), np.uint8)), out, r"one\.png: image is 1x1 pixels"
    if case == "5x5":
        return write_geotiff(tmp / "s.tif", sar_db(5, 5)), out, r"s\.tif: image is 5x5 pixels"
    if case == "all NaN":
        return (write_geotiff(tmp / "nan.tif", np.full((20, 20), np.nan, np.float32)), out,
                r"nan\.tif: image has no valid pixels")
    if case == "all nodata":
        return (write_geotiff(tmp / "nd.tif", np.zeros((20, 20), np.uint16), nodata=0), out,
                r"nd\.tif: image has no valid pixels")
    if case in ("4 bands", "5 bands"):
        n = int(case[0])
        return (write_geotiff(tmp / "m.tif", np.stack([sar_db(seed=i) for i in range(n)])), out,
                rf"m\.tif: {n} bands; choose the SAR band with --bands")
    if case in ("complex64", "complex int16"):
        z = (db_to_linear(sar_db()) + 1j * db_to_linear(sar_db(seed=1))) * 100
        path = tmp / "slc.tif"
        with rasterio.open(path, "w", driver="GTiff", width=z.shape[1], height=z.shape[0], count=1,
                           dtype="complex64" if case == "complex64" else "complex_int16", crs=CRS,
                           transform=TRANSFORM) as ds:
            ds.write(z.astype(np.complex64), 1)
        return path, out, r"slc\.tif: complex pixels .*SLC.*GRD.*DERIVED_SUBDATASET:AMPLITUDE"
    if case == "1-bit png":
        return write_png(tmp / "mask.png", sar_db() > -14), out, r"mask\.png: 1-bit \(boolean\) pixels"
    if case == "no output folder":
        return good, tmp / "missing" / "out.tif", r"output folder .*missing.* does not exist"
    if case == "output is input":
        return good, tmp / "good.tif", r"good\.tif: output would overwrite the input"
    if case == "bad output format":
        return good, tmp / "out.bmp", r"unsupported output format '\.bmp'"
    raise AssertionError(case)


BAD = ["missing", "directory", "zero bytes", "not an image", "truncated", "corrupt", "1x1", "5x5", "all NaN",
       "all nodata", "4 bands", "5 bands", "complex64", "complex int16", "1-bit png", "no output folder",
       "output is input", "bad output format"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_one_line_and_leaves_nothing(tiny_model_path: Path, tmp_path: Path, case: str) -> None:
    src, dst, match = _case(tmp_path, case)
    before = _files(tmp_path)
    mtime = src.stat().st_mtime_ns if src.is_file() else None
    with pytest.raises(SarColorError, match=match) as info:
        colorize_paths(src, dst, model=tiny_model_path, quiet=True, overwrite=True)
    assert "\n" not in str(info.value)
    assert _files(tmp_path) == before  # no partial output, no temp files
    if mtime is not None:
        assert src.stat().st_mtime_ns == mtime  # the input is never touched


@pytest.mark.parametrize("case", ["missing", "not an image", "corrupt", "truncated", "all NaN", "5 bands",
                                  "complex64", "1-bit png", "output is input"])
def test_cli_errors_are_one_line_without_traceback(tiny_model_path: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, case: str) -> None:
    src, dst, match = _case(tmp_path, case)
    code = main(["colorize", str(src), "-o", str(dst), "--model", str(tiny_model_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sarcolor: error: ") and "Traceback" not in err
    assert __import__("re").search(match, err)


def test_cli_process_prints_only_its_own_error_line(tiny_model_path: Path, tmp_path: Path) -> None:
    """In a real process (pytest's log capture hides this), GDAL's own message for a non-image file must not
    add a second line to sarcolor's one-line error."""
    import subprocess
    import sys

    src, dst, _ = _case(tmp_path, "not an image")
    run = subprocess.run([sys.executable, "-m", "sarcolor", "colorize", str(src), "-o", str(dst), "--model",
                          str(tiny_model_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("sarcolor: error: "), run.stderr


# ------------------------------------------------------------------------------------------------
# CLI and folders
# ------------------------------------------------------------------------------------------------
def test_cli_file_to_file(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_geotiff(tmp_path / "in.tif", np.stack([sar_db(seed=i) for i in range(4)]))
    args = ["colorize", str(src), "-o", str(tmp_path / "out.tif"), "--model", str(tiny_model_path),
            "--bands", "3", "--device", "cpu", "-q"]
    assert main(args) == 0
    assert capsys.readouterr().err == ""
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.count == 3 and ds.crs == CRS
    # An existing output is kept unless --overwrite.
    mtime = (tmp_path / "out.tif").stat().st_mtime_ns
    assert main(args) == 0 and (tmp_path / "out.tif").stat().st_mtime_ns == mtime
    assert main([*args, "--overwrite"]) == 0 and (tmp_path / "out.tif").stat().st_mtime_ns != mtime


def test_cli_nodata_option(tiny_model_path: Path, tmp_path: Path) -> None:
    dn = db_to_uint16(sar_db(40, 40))
    dn[:10] = 0
    src = write_geotiff(tmp_path / "in.tif", dn)
    assert main(["colorize", str(src), "-o", str(tmp_path / "o.tif"), "--model", str(tiny_model_path),
                 "--nodata", "0", "-q"]) == 0
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert (ds.read()[:, :10] == 0).all() and (ds.read()[:, 10:] > 0).all()


def test_cli_file_into_existing_folder(tiny_model_path: Path, tmp_path: Path) -> None:
    src = write_png(tmp_path / "scene.png", db_to_8bit(sar_db()))
    (tmp_path / "out").mkdir()
    assert main(["colorize", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path),
                 "--format", ".png", "-q"]) == 0
    assert (tmp_path / "out" / "scene.png").is_file()


def test_folder_mirrors_tree_skips_and_reports_failures(tiny_model_path: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    write_geotiff(src / "a" / "x.tif", sar_db())
    write_png(src / "a" / "b" / "y.png", db_to_8bit(sar_db()))
    write_jpeg(src / "z.JPG", db_to_8bit(sar_db()))
    (src / "broken.tif").write_bytes(b"II*\x00garbage")
    write_geotiff(src / ".hidden.tif", sar_db())
    (src / "notes.txt").write_text("ignored")
    out = src / "colored"  # inside the input: must not be picked up as input on the next run
    args = ["colorize", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q"]

    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.tif" in err[0] and err[0].startswith("sarcolor: error: ")
    assert _files(out) == {"a", "a/x.tif", "a/b", "a/b/y.tif", "z.tif"}
    with rasterio.open(out / "a" / "x.tif") as ds:
        assert ds.crs == CRS

    mtime = (out / "z.tif").stat().st_mtime_ns
    (src / "broken.tif").unlink()
    assert main(args) == 0  # existing outputs skipped
    assert (out / "z.tif").stat().st_mtime_ns == mtime and _files(out) == {"a", "a/x.tif", "a/b", "a/b/y.tif",
                                                                          "z.tif"}
    assert main([*args, "--overwrite", "--format", ".png"]) == 0
    assert (out / "a" / "b" / "y.png").is_file()


def test_relative_output_folder_inside_the_input(tiny_model_path: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scenes").mkdir()
    write_png(tmp_path / "scenes" / "a.png", db_to_8bit(sar_db()))
    monkeypatch.chdir(tmp_path)
    args = ["colorize", "scenes", "-o", "scenes/out", "--model", str(tiny_model_path), "-q"]
    assert main(args) == 0 and main([*args, "--overwrite"]) == 0
    assert _files(tmp_path / "scenes") == {"a.png", "out", "out/a.tif"}  # no out/out/a.tif


def test_several_inputs_files_and_folders(tiny_model_path: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """Files go to OUT/<stem>.tif, folders are mirrored into OUT; two inputs with one output: the second fails."""
    write_png(tmp_path / "dir" / "sub" / "a.png", db_to_8bit(sar_db()))
    b = write_geotiff(tmp_path / "b.tif", sar_db(seed=1))
    clash = write_png(tmp_path / "other" / "b.png", db_to_8bit(sar_db(seed=2)))
    out = tmp_path / "out"
    args = ["colorize", str(tmp_path / "dir"), str(b), str(clash), "-o", str(out), "--model", str(tiny_model_path),
            "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == f"sarcolor: error: {clash}: output {out / 'b.tif'} is also the output of {b}; skipped\n"
    assert _files(out) == {"sub", "sub/a.tif", "b.tif"}
    (tmp_path / "x.tif").write_bytes(b"x")
    with pytest.raises(SarColorError, match="there are several inputs, so the output must be a folder"):
        colorize_paths([b, clash], tmp_path / "x.tif", model=tiny_model_path, quiet=True)
    with pytest.raises(SarColorError, match="nope.tif: no such file or folder"):
        colorize_paths([b, tmp_path / "nope.tif"], out, model=tiny_model_path, quiet=True)


def test_folder_input_with_file_output_is_an_error(tiny_model_path: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "a.png", db_to_8bit(sar_db()))
    (tmp_path / "out.tif").write_bytes(b"x")
    with pytest.raises(SarColorError, match="output must be a folder"):
        colorize_paths(tmp_path / "in", tmp_path / "out.tif", model=tiny_model_path, quiet=True)


# ------------------------------------------------------------------------------------------------
# real data (../shared/data and the shipped model)
# ------------------------------------------------------------------------------------------------
def _need_real(*rel: str) -> list[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    paths = [SHARED_DATA / r for r in rel]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data file(s) missing: {', '.join(missing)}")
    if not SHIPPED["default"].is_file():
        pytest.skip(f"shipped model {SHIPPED['default']} not installed yet")
    return paths


@pytest.mark.slow
@pytest.mark.realdata
def test_real_sen1floods11_geotiff(tmp_path: Path) -> None:
    (src,) = _need_real("sen1floods11/Spain_7370579_S1Hand.tif")
    out = tmp_path / "spain.tif"
    assert main(["colorize", str(src), "-o", str(out), "--device", "cpu", "-q"]) == 0
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.count, b.width, b.height, b.dtypes[0]) == (3, a.width, a.height, "uint8")
        assert b.crs == a.crs and b.transform == a.transform and b.nodata == 0
        valid_in = (a.read_masks(2) > 0) & np.isfinite(a.read(2))
        rgb, mask = b.read(), b.dataset_mask()
    assert (rgb[:, ~valid_in] == 0).all() and (rgb[:, valid_in] >= 1).all()
    np.testing.assert_array_equal(mask > 0, valid_in)
    assert rgb[:, valid_in].std() > 1  # not a flat image


@pytest.mark.slow
@pytest.mark.realdata
def test_real_sih1733_jpeg_to_png(tmp_path: Path) -> None:
    (src,) = _need_real("sih1733/scene1/sar.jpg")
    out = tmp_path / "scene1.png"
    assert main(["colorize", str(src), "-o", str(out), "--device", "cpu", "-q"]) == 0
    with rasterio.open(out) as ds:
        assert (ds.driver, ds.count, ds.width, ds.height, ds.dtypes[0]) == ("PNG", 3, 2500, 1733, "uint8")


def test_model_config_defaults_are_what_the_engine_expects() -> None:
    cfg = ModelConfig()
    assert cfg.tile % 16 == 0 and 0 <= cfg.overlap < cfg.tile // 2 + 1
    assert os.cpu_count()


@pytest.mark.slow
def test_cli_sigterm_stops_like_ctrl_c_and_leaves_no_output(tmp_path: Path) -> None:
    """A cancel in QGIS (or `kill`) sends SIGTERM: the temp output is removed, nothing appears at -o."""
    import signal
    import subprocess
    import sys
    import time

    src = write_geotiff(tmp_path / "in" / "big.tif", sar_db(3072, 3072))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sarcolor", "colorize", str(src), "-o", str(out_dir / "o.tif"),
                             "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out_dir.iterdir()):  # the hidden temp output: sarcolor is writing
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and err == "sarcolor: stopped by SIGTERM\n", err
    assert list(out_dir.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# the scene's edges and holes (the shipped model: these are properties of real weights)
# ------------------------------------------------------------------------------------------------
def _speckle_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A stationary scene (uniform field + speckle): every row and column should come out alike."""
    rng = np.random.default_rng(seed)
    return (-12 + 10 * np.log10(rng.gamma(4.0, 0.25, (h, w)))).astype(np.float32)


def test_no_dark_frame_along_the_edges() -> None:
    """The convolutions' zero padding at the scene's edges darkened a 2-px frame by about 18/255 (top row);
    with a mirrored margin every edge row and column is as bright as the interior."""
    # The optical look: the network's own output (the sar look's grey is the SAR's, speckle and all).
    grey = colorize(_speckle_scene(300, 360), "default", scale="db", device="cpu", look="optical"
                    ).astype(np.float64).mean(-1)
    inner = grey[32:-32, 32:-32].mean()
    edges = [grey[i].mean() for i in (0, 1, 2, -3, -2, -1)] + [grey[:, j].mean() for j in (0, 1, 2, -3, -2, -1)]
    assert max(abs(e - inner) for e in edges) < 3


@pytest.mark.parametrize("look", ["sar", "optical"])
def test_a_nan_hole_only_changes_colours_within_the_models_reach(look: str) -> None:
    """What lies under a hole is unknown, so a network that reads context colours its near neighbours a little
    differently (the hole is filled with the scene median first, so its values never matter). Far from it
    the colours are the same up to rounding."""
    db = _speckle_scene(320, 320, seed=1) + 3 * np.sin(np.mgrid[0:320, 0:320][1] / 20.0).astype(np.float32)
    holed = db.copy()
    holed[140:180, 140:180] = np.nan
    a = colorize(db, "default", scale="db", device="cpu", look=look).astype(int)
    b, valid = colorize_with_mask(holed, "default", scale="db", device="cpu", look=look)
    diff = np.abs(a - b.astype(int)).max(-1)
    yy, xx = np.mgrid[0:320, 0:320]
    dist = np.maximum(np.maximum(140 - yy, yy - 179), np.maximum(140 - xx, xx - 179))
    assert not valid[140:180, 140:180].any()
    # The default model reads box statistics up to 2.5 km wide, where the filled hole is a small part of
    # each window: its colour moves next to the hole, by at most 2/255 beyond 32 px, and there in under 5% of the
    # pixels by more than 1 (measured: at most 4 levels from 8 px on in either look; beyond 32 px a mean of
    # 0.91 in the sar look, 0.55 in the optical, 4.8% and 3.4% of the pixels by 2).
    far_mean = 0.6 if look == "optical" else 1.0
    far = diff[dist >= 32]
    assert far.max() <= 2 and (far > 1).mean() < 0.05 and far.mean() < far_mean and diff[dist >= 8].max() <= 10
    # (the sar look's grey is a direct function of the scene's dB percentiles, which the hole moves a little:
    # far from it, a difference of at most 1/255 in about 70% of the pixels; its Lee filter reaches 2 px)
