"""Raster I/O: opening, band choice, validity masks, decimated samples, safe output writing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures import (
    CRS,
    TRANSFORM,
    db_to_8bit,
    db_to_uint16,
    sar_db,
    truncated,
    write_geotiff,
    write_jpeg,
    write_png,
)

from sarcolor.errors import SarColorError
from sarcolor.raster import (
    ArraySource,
    RasterSource,
    RGBWriter,
    check_output,
    choose_band,
    gdal_env,
    open_sar,
)

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _open(path: Path, **kw: object) -> RasterSource:
    with gdal_env():
        return RasterSource(path, **kw)  # type: ignore[arg-type]


def _read_all(path: Path, **kw: object) -> tuple[np.ndarray, np.ndarray, RasterSource]:
    with gdal_env(), RasterSource(path, **kw) as src:  # type: ignore[arg-type]
        data, valid = src.read_rows(0, src.height)
    return data, valid, src


# ------------------------------------------------------------------------------------------------
# band choice
# ------------------------------------------------------------------------------------------------
def _choose(n: int, *, bands: list[int] | None = None, pol: str = "VH", desc: list[str | None] | None = None,
            equal: bool = True) -> int:
    band, _ = choose_band(list(range(1, n + 1)), bands=bands, polarisation=pol,
                          descriptions=desc or [None] * n, bands_equal=lambda _: equal, name="x.tif")
    return band


def test_choose_band_rules() -> None:
    assert _choose(1) == 1
    assert _choose(2) == 2  # VV,VH order: VH is band 2
    assert _choose(2, pol="VV") == 1
    assert _choose(2, desc=["VH", "VV"]) == 1  # band names win over the order convention
    assert _choose(3, equal=True) == 1  # grey stored as RGB
    assert _choose(5, bands=[4]) == 4
    assert _choose(5, bands=[3, 5]) == 5  # --bands VV,VH with a VH model
    assert _choose(5, bands=[3, 5], pol="VV") == 3


@pytest.mark.parametrize(("n", "kw", "match"), [
    (3, {"equal": False}, "3 bands that differ.*--bands"),
    (4, {}, "4 bands.*--bands"),
    (5, {}, "5 bands.*--bands"),
    (2, {"bands": [3]}, "band 3 does not exist"),
    (2, {"bands": [1, 2, 1]}, "one band, or two"),
])
def test_choose_band_errors(n: int, kw: dict, match: str) -> None:
    with pytest.raises(SarColorError, match=match):
        _choose(n, **kw)


def test_dual_pol_geotiff_picks_vh_and_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vv, vh = sar_db(seed=1), sar_db(seed=2) - 6
    path = write_geotiff(tmp_path / "s1.tif", np.stack([vv, vh]))
    with caplog.at_level(logging.INFO, logger="sarcolor"):
        data, _, src = _read_all(path)
    assert src.band == 2
    np.testing.assert_array_equal(data, vh)
    assert any("using band 2" in r.getMessage() and "VH" in r.getMessage() for r in caplog.records)


def test_grey_stored_as_rgb_jpeg_is_one_band(tmp_path: Path) -> None:
    grey = db_to_8bit(sar_db(64, 64))
    path = write_jpeg(tmp_path / "g.jpg", np.repeat(grey[..., None], 3, axis=2))
    data, valid, src = _read_all(path)
    assert src.band == 1 and data.dtype == np.uint8 and valid.all()


def test_colour_image_needs_bands(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_png(tmp_path / "rgb.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    with pytest.raises(SarColorError, match=r"rgb\.png: 3 bands that differ"):
        _open(path)
    assert _open(path, bands=[2]).band == 2


@pytest.mark.parametrize("count", [4, 5])
def test_multiband_geotiff_needs_bands(tmp_path: Path, count: int) -> None:
    path = write_geotiff(tmp_path / "m.tif", np.stack([sar_db(seed=i) for i in range(count)]))
    with pytest.raises(SarColorError, match=rf"m\.tif: {count} bands; choose the SAR band with --bands"):
        _open(path)
    assert _open(path, bands=[count]).band == count


# ------------------------------------------------------------------------------------------------
# validity masks
# ------------------------------------------------------------------------------------------------
def test_nodata_and_nan_are_invalid(tmp_path: Path) -> None:
    db = sar_db()
    db[:5] = -9999.0
    db[10, 10] = np.nan
    data, valid, src = _read_all(write_geotiff(tmp_path / "n.tif", db, nodata=-9999.0))
    assert data.dtype == np.float32
    assert not valid[:5].any() and not valid[10, 10] and valid[6:].sum() == valid[6:].size - 1


def test_nan_nodata_value(tmp_path: Path) -> None:
    db = sar_db()
    db[:, :3] = np.nan
    _, valid, _ = _read_all(write_geotiff(tmp_path / "n.tif", db, nodata=float("nan")))
    assert not valid[:, :3].any() and valid[:, 3:].all()


def test_user_nodata_adds_to_the_file_mask(tmp_path: Path) -> None:
    dn = db_to_uint16(sar_db())
    dn[:4] = 0
    _, valid, _ = _read_all(write_geotiff(tmp_path / "u16.tif", dn), nodata=0)
    assert not valid[:4].any() and valid[4:].all()


def test_grey_alpha_png_uses_the_alpha_as_mask(tmp_path: Path) -> None:
    grey = db_to_8bit(sar_db())
    alpha = np.full(grey.shape, 255, np.uint8)
    alpha[:, :7] = 0
    data, valid, src = _read_all(write_png(tmp_path / "la.png", np.dstack([grey, alpha])))
    assert src.band == 1
    np.testing.assert_array_equal(data, grey)
    assert not valid[:, :7].any() and valid[:, 7:].all()


def test_grey_rgba_geotiff_with_alpha(tmp_path: Path) -> None:
    grey = db_to_8bit(sar_db())
    alpha = np.where(np.arange(grey.shape[1]) < 5, 0, 255).astype(np.uint8)[None].repeat(grey.shape[0], 0)
    path = write_geotiff(tmp_path / "rgba.tif", np.stack([grey, grey, grey, alpha]), photometric="RGB",
                         alpha=True)
    _, valid, src = _read_all(path)
    assert src.band == 1 and not valid[:, :5].any() and valid[:, 5:].all()


def test_uint16_png_keeps_its_dtype(tmp_path: Path) -> None:
    dn = db_to_uint16(sar_db())
    data, _, _ = _read_all(write_png(tmp_path / "u16.png", dn))
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, dn)


def test_sample_is_decimated_and_row_reads_are_windows(tmp_path: Path) -> None:
    db = sar_db(100, 120)
    db[:8, :8] = -9999
    with gdal_env(), RasterSource(write_geotiff(tmp_path / "a.tif", db, nodata=-9999, tiled=True)) as src:
        sample, valid = src.sample(max_pixels=1000)
        assert sample.size <= 1000 and sample.dtype == np.float32 and not valid[0, 0]
        rows, rvalid = src.read_rows(30, 47)
        np.testing.assert_array_equal(rows, db[30:47])
        assert rvalid.shape == (17, 120)
        assert src.georef.crs == CRS and src.georef.transform == TRANSFORM


def test_png_has_no_georeferencing(tmp_path: Path) -> None:
    src = _open(write_png(tmp_path / "a.png", db_to_8bit(sar_db())))
    assert not src.georef.present


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    good_tif = write_geotiff(tmp / "good.tif", sar_db(64, 64))
    good_png = write_png(tmp / "good.png", db_to_8bit(sar_db(64, 64)))
    good_jpg = write_jpeg(tmp / "good.jpg", db_to_8bit(sar_db(64, 64)))
    (tmp / "empty.tif").write_bytes(b"")
    (tmp / "notes.tif").write_text("this is not an image\n")
    (tmp / "folder.tif").mkdir()
    return {
        "missing": (tmp / "nope.tif", r"nope\.tif: no such file"),
        "directory": (tmp / "folder.tif", r"folder\.tif: is a directory"),
        "zero bytes": (tmp / "empty.tif", r"empty\.tif: file is empty \(0 bytes\)"),
        "not an image": (tmp / "notes.tif", r"notes\.tif: not a supported image"),
        "truncated header": (truncated(good_tif, tmp / "head.tif", 0.01), r"head\.tif: not a readable image"),
        "truncated tiff": (truncated(good_tif, tmp / "cut.tif", 0.5), r"cut\.tif: cannot read pixels"),
        "truncated png": (truncated(good_png, tmp / "cut.png", 0.6), r"cut\.png: cannot read pixels"),
        "truncated jpeg": (truncated(good_jpg, tmp / "cut.jpg", 0.6), r"cut\.jpg: cannot read pixels"),
        "1x1": (write_png(tmp / "one.png", np.zeros((1, 1), np.uint8)), r"one\.png: image is 1x1 pixels"),
        "7x30": (write_geotiff(tmp / "thin.tif", sar_db(7, 30)), r"thin\.tif: image is 30x7 pixels"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "zero bytes", "not an image", "truncated header",
                                  "truncated tiff", "truncated png", "truncated jpeg", "1x1", "7x30"])
def test_bad_inputs_are_one_line_errors(tmp_path: Path, case: str) -> None:
    path, match = _bad_inputs(tmp_path)[case]
    with pytest.raises(SarColorError, match=match) as info:
        with gdal_env(), open_sar(path) as src:
            src.sample(4_000_000)
            src.read_rows(0, src.height)
    assert "\n" not in str(info.value)


def test_array_source_layouts_and_masks() -> None:
    db = sar_db(20, 30)
    assert ArraySource(db).band == 1
    hwc = np.dstack([db, db - 5])  # channels-last dual-pol
    src = ArraySource(hwc)
    assert (src.height, src.width, src.band) == (20, 30, 2)
    masked = np.ma.masked_less(db, -20)
    _, valid = ArraySource(masked).read_rows(0, 20)
    np.testing.assert_array_equal(valid, db >= -20)
    extra = np.ones(db.shape, bool)
    extra[0] = False
    _, valid = ArraySource(db, valid=extra).read_rows(0, 20)
    assert not valid[0].any() and valid[1:].all()
    with pytest.raises(SarColorError, match="expected an array"):
        ArraySource(np.zeros((2, 3, 10, 10)))
    with pytest.raises(SarColorError, match="4 bands"):
        ArraySource(np.zeros((4, 10, 10)))


# ------------------------------------------------------------------------------------------------
# output checks and writing
# ------------------------------------------------------------------------------------------------
def test_check_output(tmp_path: Path) -> None:
    src = write_geotiff(tmp_path / "in.tif", sar_db())
    with pytest.raises(SarColorError, match="output folder .* does not exist"):
        check_output(src, tmp_path / "no" / "out.tif")
    with pytest.raises(SarColorError, match="would overwrite the input"):
        check_output(src, tmp_path / "." / "in.tif")
    (tmp_path / "link.tif").hardlink_to(src)
    with pytest.raises(SarColorError, match="would overwrite the input"):
        check_output(src, tmp_path / "link.tif")
    with pytest.raises(SarColorError, match="unsupported output format '.bmp'"):
        check_output(src, tmp_path / "out.bmp")
    with pytest.raises(SarColorError, match="is a directory"):
        check_output(src, tmp_path)
    assert check_output(src, tmp_path / "OUT.TIF") == tmp_path / "OUT.TIF"


def _write(dst: Path, h: int = 40, w: int = 30, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    valid = np.ones((h, w), bool)
    valid[:3] = False
    with RGBWriter(dst, w, h, **kw) as wr:  # type: ignore[arg-type]
        for y in range(0, h, 7):  # row chunks that do not line up with the output's blocks
            wr.write_rows(y, rgb[:, y:y + 7], valid[y:y + 7])
    return rgb, valid


def test_geotiff_output_is_a_cog_with_georef_and_nodata(tmp_path: Path) -> None:
    with gdal_env():
        src = _open(write_geotiff(tmp_path / "in.tif", sar_db()))
        rgb, valid = _write(tmp_path / "out.tif", georef=src.georef)
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
        assert ds.crs == CRS and ds.transform == TRANSFORM and ds.nodata == 0
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.compression.name.lower() == "deflate"
        out = ds.read()
        mask = ds.dataset_mask()
    assert (out[:, ~valid] == 0).all() and (mask[~valid] == 0).all() and (mask[valid] == 255).all()
    np.testing.assert_array_equal(out[:, valid], np.maximum(rgb[:, valid], 1))  # real colours never read 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]  # no temp files left


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_png_and_jpeg_outputs_are_plain_rgb(tmp_path: Path, ext: str) -> None:
    with gdal_env():
        src = _open(write_geotiff(tmp_path / "in.tif", sar_db()))
        rgb, valid = _write(tmp_path / f"out{ext}", georef=src.georef)
    with rasterio.open(tmp_path / f"out{ext}") as ds:
        assert ds.count == 3 and ds.crs is None and ds.nodata is None
        out = ds.read()
    if ext == ".png":
        np.testing.assert_array_equal(out[:, valid], rgb[:, valid])
        assert (out[:, ~valid] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", f"out{ext}"]  # no .aux.xml, no temps


def test_failed_write_leaves_nothing_and_keeps_an_old_output(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="boom"), RGBWriter(dst, 20, 20) as wr:
        wr.write_rows(0, np.zeros((3, 10, 20), np.uint8), np.ones((10, 20), bool))
        assert len(list(tmp_path.iterdir())) == 2  # the temp file is a hidden sibling, dst is untouched
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"] and dst.read_bytes() == b"previous result"


def test_a_stop_while_the_writer_is_being_made_leaves_no_temp_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (raised as an exception) can land after GDAL created the temp file but before the caller holds
    the writer: the constructor itself removes the file (a CI run caught one left behind)."""
    import sarcolor.raster as raster

    class Stopping:
        @property
        def red(self) -> None:
            assert list(tmp_path.iterdir()), "the temp file exists by now"
            raise KeyboardInterrupt

    monkeypatch.setattr(raster, "ColorInterp", Stopping())
    with pytest.raises(KeyboardInterrupt):
        RGBWriter(tmp_path / "o.tif", 10, 10, tags={"SARCOLOR_LOOK": "sar"})
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_rows_out_of_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in order"), RGBWriter(tmp_path / "o.tif", 10, 10) as wr:
        wr.write_rows(5, np.zeros((3, 5, 10), np.uint8), np.ones((5, 10), bool))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# dual-pol: both bands for a model that reads both polarisations
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("desc", "expect"), [(["VV", "VH"], (1, 2)), (["VH", "VV"], (2, 1)),
                                              (["HV", "HH"], (2, 1)), (None, (1, 2))])
def test_dual_model_reads_co_and_cross_pol_by_name_then_order(tmp_path: Path, desc, expect) -> None:
    vv, vh = sar_db(40, 50, seed=1), sar_db(40, 50, seed=2) - 7
    bands = {1: vv, 2: vh} if expect == (1, 2) else {1: vh, 2: vv}
    path = write_geotiff(tmp_path / "d.tif", np.stack([bands[1], bands[2]]).astype(np.float32), descriptions=desc)
    data, valid, src = _read_all(path, polarisation="VV+VH")
    assert src.bands == expect and data.shape == (40, 50, 2) and valid.shape == (40, 50)
    np.testing.assert_array_equal(data[..., 0], vv.astype(np.float32))  # co-pol first, whatever the file order
    np.testing.assert_array_equal(data[..., 1], vh.astype(np.float32))


def test_dual_model_on_one_band_reads_it_and_user_bands_win(tmp_path: Path) -> None:
    one = write_geotiff(tmp_path / "one.tif", sar_db(30, 30).astype(np.float32))
    data, _, src = _read_all(one, polarisation="VV+VH")
    assert src.bands == (1,) and data.shape == (30, 30)
    two = write_geotiff(tmp_path / "two.tif", np.stack([sar_db(30, 30), sar_db(30, 30, seed=3)]).astype(np.float32))
    assert _read_all(two, polarisation="VV+VH", bands=[2])[2].bands == (2,)
    assert _read_all(two, polarisation="VV+VH", bands=[2, 1])[2].bands == (2, 1)
    assert _read_all(two, polarisation="VH")[2].bands == (2,)  # a single-band model: VH as before
    with pytest.raises(SarColorError, match="band 3 does not exist"):
        _open(two, polarisation="VV+VH", bands=[1, 3])


def test_dual_pol_nodata_in_either_band_is_invalid(tmp_path: Path) -> None:
    vv, vh = sar_db(20, 20).astype(np.float32), (sar_db(20, 20, seed=4) - 7).astype(np.float32)
    vv[0, 0], vh[5, 5] = -9999, -9999
    path = write_geotiff(tmp_path / "n.tif", np.stack([vv, vh]), nodata=-9999)
    _, valid, _ = _read_all(path, polarisation="VV+VH")
    assert not valid[0, 0] and not valid[5, 5] and valid.sum() == 398
    arr = ArraySource(np.stack([vv, vh]), polarisation="VV+VH", nodata=-9999)
    assert arr.read_rows(0, 20)[0].shape == (20, 20, 2) and arr.read_rows(0, 20)[1].sum() == 398
