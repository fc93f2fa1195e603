"""Inputs read as what they mean: palette PNGs through their palette, a transform without a CRS kept, EXIF
orientation applied (the output as a viewer shows the input)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures import TRANSFORM, db_to_8bit, sar_db, write_geotiff
from PIL import Image, ImageOps

import sarcolor
from sarcolor.cli import main
from sarcolor.raster import _ORIENT, open_sar

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _grey(h: int = 96, w: int = 80) -> np.ndarray:
    return db_to_8bit(sar_db(h, w, seed=3))


def test_a_palette_png_is_read_through_its_palette(tmp_path: Path) -> None:
    """A grey scene stored as indices into a shuffled grey palette colours exactly as the grey scene does."""
    grey = _grey()
    order = np.random.default_rng(0).permutation(256)  # index i shows grey order[i]
    index_of = np.argsort(order).astype(np.uint8)
    img = Image.fromarray(index_of[grey], mode="P")
    img.putpalette(np.repeat(order.astype(np.uint8), 3).tolist())
    img.save(tmp_path / "pal.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with open_sar(tmp_path / "pal.png") as src:
        np.testing.assert_array_equal(src.read_rows(0, src.height)[0], grey)
    np.testing.assert_array_equal(sarcolor.colorize(tmp_path / "pal.png"), sarcolor.colorize(tmp_path / "grey.png"))


def test_a_palette_of_colours_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rgb = np.stack([_grey(), 255 - _grey(), _grey() // 2], -1)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "colour.png")
    assert main(["colorize", str(tmp_path / "colour.png"), "-o", str(tmp_path / "o.png"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a palette (indexed) image with colours" in err[0]
    assert not (tmp_path / "o.png").exists()


def test_a_transform_without_a_crs_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = write_geotiff(tmp_path / "nocrs.tif", sar_db(64, 72), crs=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(src, "r+") as ds:
            ds.transform = TRANSFORM
    assert main(["colorize", str(src), "-o", str(tmp_path / "o.tif"), "-q"]) == 0
    with rasterio.open(tmp_path / "o.tif") as out:
        assert out.transform == TRANSFORM and out.crs is None
    caplog.clear()
    with caplog.at_level("INFO", logger="sarcolor"), open_sar(src):
        pass
    assert "a geotransform without a CRS: kept as it is" in caplog.text


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_turns_match_pil(orientation: int) -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    seen = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(_ORIENT.get(orientation, lambda x: x)(a), seen)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_exif_orientation_is_applied(tmp_path: Path, fmt: str) -> None:
    """A portrait (200 wide, 240 high as shown) stored sideways with orientation 6 comes out as shown."""
    shown = _grey(240, 200)
    stored = np.rot90(shown, 1)  # orientation 6: the viewer turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / f"side.{fmt}", exif=exif, quality=100)
    Image.fromarray(shown).save(tmp_path / f"shown.{fmt}", quality=100)
    assert main(["colorize", str(tmp_path / f"side.{fmt}"), "-o", str(tmp_path / "o.png"), "-q"]) == 0
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (200, 240) and "exif" not in out.info  # a viewer shows it the same way
    got, want = sarcolor.colorize(tmp_path / f"side.{fmt}"), sarcolor.colorize(tmp_path / f"shown.{fmt}")
    if fmt == "png":
        np.testing.assert_array_equal(got, want)
    else:  # JPEG: the turned blocks compress differently
        assert np.abs(got.astype(int) - want).mean() < 3
