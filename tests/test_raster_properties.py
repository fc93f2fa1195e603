"""Property-based tests (hypothesis) over the raster readers: whatever the file or array holds, colorizing it
ends in a valid output or a clean one-line SarColorError, never another exception, a hang or a leftover file.

Generated: GeoTIFF / PNG / JPEG, every GDAL pixel type sarcolor may meet (complex included), 1-5 bands, an
alpha band, sizes from 1 px, NaN / inf / nodata patterns, truncated files and header bytes overwritten with
lies, and random --bands / --scale / --nodata options. The fast run does ``FAST`` examples per test; the long
run (marked slow) does ``SARCOLOR_HYPOTHESIS_EXAMPLES`` (default 200), e.g.
``SARCOLOR_HYPOTHESIS_EXAMPLES=2000 pytest -m slow -s tests/test_raster_properties.py`` (-s prints the counts).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures import CRS, TRANSFORM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.errors import NotGeoreferencedWarning

from sarcolor.engine import colorize_file, colorize_with_mask
from sarcolor.errors import SarColorError
from sarcolor.preprocess import SCALES

# A NaN or inf reaching the colours (or a float overflow on the way) is a bug here, not noise.
# A hang fails the test (pytest-timeout) instead of stalling the run.
pytestmark = [pytest.mark.filterwarnings("error::RuntimeWarning"), pytest.mark.timeout(900)]

FAST = 60
LONG = int(os.environ.get("SARCOLOR_HYPOTHESIS_EXAMPLES", "200"))
# CI runs the same cases every time (derandomized); setting SARCOLOR_HYPOTHESIS_EXAMPLES explores new ones.
# No example database (nothing written into the checkout); a generous per-example deadline that still
# catches a hang (the tiny model colours these small images in well under a second).
_SETTINGS = dict(deadline=timedelta(seconds=30), database=None, print_blob=True,
                 derandomize="SARCOLOR_HYPOTHESIS_EXAMPLES" not in os.environ,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                        HealthCheck.data_too_large])

FORMATS = {  # driver -> pixel types it can store
    "GTiff": ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64", "complex64",
              "complex_int16"],
    "PNG": ["uint8", "uint16"],
    "JPEG": ["uint8"],
}
EXT = {"GTiff": ".tif", "PNG": ".png", "JPEG": ".jpg"}


# Mostly sizes that can be coloured (8 px and up), sometimes too small; mostly --scale auto.
_side = st.one_of(st.integers(8, 90), st.integers(8, 90), st.integers(8, 90), st.integers(1, 12))
_scales = st.sampled_from(["auto"] * len(SCALES) + list(SCALES))
# Header lies: bytes near the start (TIFF IFD offsets and sizes, PNG IHDR, JPEG SOF) overwritten.
_lies = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4)


@st.composite
def pixels(draw: st.DrawFn, dtype: str, bands: int, h: int, w: int, benign: bool = False) -> np.ndarray:
    """(bands, h, w) values of ``dtype``: SAR-like, constant, or extreme; floats with NaN/inf sprinkled."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # benign: values a SAR product can hold (far from a float64's max, which is beyond float32's range)
    kind = draw(st.sampled_from(["sar", "constant", "uniform"] + ([] if benign else ["extreme"])))
    if dtype.startswith("complex"):
        z = rng.normal(size=(bands, h, w)) + 1j * rng.normal(size=(bands, h, w))
        return (z * 100).astype(np.complex64)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else np.finfo(dtype)
    if kind == "sar":
        db = -14 + 10 * np.log10(rng.gamma(4.0, 0.25, (bands, h, w)))
        a = db if np.dtype(dtype).kind == "f" else np.sqrt(10 ** (db / 10)) * 2000
    elif kind == "constant":
        a = np.full((bands, h, w), draw(st.sampled_from([0, 1, -1, 255, 1e-30])), np.float64)
    elif kind == "extreme":
        a = rng.choice([float(info.min), float(info.max), 0.0], size=(bands, h, w))
    else:
        top = min(float(info.max) / 2, 1e6) if benign else float(info.max) / 2
        a = rng.uniform(max(float(info.min) / 2, -top), top, (bands, h, w))
    if np.dtype(dtype).kind in "ui":
        top = min(float(info.max), 2.0**62)  # a float64 at int64's max rounds above it: the cast would fail
        return np.clip(np.nan_to_num(a), max(float(info.min), -top), top).astype(dtype)
    a = a.astype(dtype)
    special = draw(st.sampled_from(["none", "some nan", "some inf"] + ([] if benign else ["all nan", "nan rows"])))
    if special == "some nan":
        a[rng.random(a.shape) < 0.3] = np.nan
    elif special == "some inf":
        a[rng.random(a.shape) < 0.1] = draw(st.sampled_from([np.inf, -np.inf]))
    elif special == "all nan":
        a[:] = np.nan
    elif special == "nan rows":
        a[:, : h // 2] = np.nan
    return a


@st.composite
def raster_files(draw: st.DrawFn) -> dict:
    driver = draw(st.sampled_from(sorted(FORMATS)))
    dtype = draw(st.sampled_from(FORMATS[driver]))
    bands = draw(st.sampled_from([1, 3]) if driver == "JPEG" else st.integers(1, 5 if driver == "GTiff" else 4))
    h, w = draw(_side), draw(_side)
    data = draw(pixels(dtype, bands, h, w))
    nodata = None
    if driver == "GTiff" and not dtype.startswith("complex"):
        nodata = draw(st.sampled_from([None, "present", "nan", "absent"]))
    return dict(driver=driver, dtype=dtype, data=data, nodata=nodata,
                alpha=driver == "GTiff" and bands in (2, 4) and draw(st.booleans()),
                georef=draw(st.booleans()), tiled=draw(st.booleans()),
                truncate=draw(st.sampled_from([None] * 6 + [0.1, 0.5, 0.9, 0.99])),
                lies=draw(st.sampled_from([[]] * 4 + [draw(_lies)])),
                bands=draw(st.sampled_from([None] * 6 + [[1], [2], [1, 2], [2, 1], [6]])),
                scale=draw(_scales),
                user_nodata=draw(st.sampled_from([None, None, 0.0, -9999.0, float("nan")])),
                out_ext=draw(st.sampled_from([".tif", ".png", ".jpg"])))


@st.composite
def good_files(draw: st.DrawFn) -> dict:
    """Well-formed single-band images of a real pixel type, at least 8 px a side: these must be coloured."""
    driver = draw(st.sampled_from(sorted(FORMATS)))
    dtype = draw(st.sampled_from([t for t in FORMATS[driver] if not t.startswith("complex")]))
    data = draw(pixels(dtype, 1, draw(st.integers(8, 90)), draw(st.integers(8, 90)), benign=True))
    if data.dtype.kind == "f" and not np.isfinite(data).any():
        data[0, 0, 0] = -12.0
    return dict(driver=driver, dtype=dtype, data=data, nodata=draw(st.sampled_from([None, "absent"])),
                alpha=False, georef=draw(st.booleans()), tiled=draw(st.booleans()), truncate=None, lies=[],
                bands=None, scale="auto", user_nodata=None, out_ext=draw(st.sampled_from([".tif", ".png", ".jpg"])))


def _write(path: Path, case: dict) -> Path:
    data, driver = case["data"], case["driver"]
    profile: dict = dict(driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                         dtype=case["dtype"])
    if driver == "GTiff":
        profile.update(compress="deflate")
        if case["tiled"] and data.shape[1] >= 16 and data.shape[2] >= 16:
            profile.update(tiled=True, blockxsize=16, blockysize=16)
        if case["georef"]:
            profile.update(crs=CRS, transform=TRANSFORM)
        if case["alpha"]:
            profile["alpha"] = "YES"
        nd = case["nodata"]
        if nd == "present":
            profile["nodata"] = float(np.asarray(data).flat[0].real)
        elif nd == "nan" and data.dtype.kind == "f":
            profile["nodata"] = float("nan")
        elif nd == "absent":
            profile["nodata"] = 7.0 if data.dtype.kind == "f" else 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
    raw = bytearray(path.read_bytes())
    for offset, value in case["lies"]:  # header bytes overwritten: sizes, offsets, tags that lie
        if offset < len(raw):
            raw[offset] = value
    if case["truncate"] is not None:
        raw = raw[: max(1, int(len(raw) * case["truncate"]))]
    path.write_bytes(bytes(raw))
    return path


def _check_file(case: dict, folder: Path, model: tuple) -> str:
    """Colorize one generated file; returns 'ok' or 'error' (and asserts everything else)."""
    for p in folder.iterdir():
        p.unlink()
    src = _write(folder / f"in{EXT[case['driver']]}", case)
    dst = folder / f"out{case['out_ext']}"
    before = src.read_bytes()
    try:
        colorize_file(src, dst, *model, scale=case["scale"], bands=case["bands"], nodata=case["user_nodata"])
    except SarColorError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        assert sorted(p.name for p in folder.iterdir()) == [src.name]  # no output, no temp file
        outcome = "error"
        REASONS.append(msg.split(": ", 1)[-1][:60])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(dst) as ds:
                assert (ds.count, ds.dtypes[0]) == (3, "uint8")
                assert (ds.height, ds.width) == case["data"].shape[1:]
                ds.read()
        assert sorted(p.name for p in folder.iterdir()) == sorted([src.name, dst.name])
        outcome = "ok"
    assert src.read_bytes() == before  # the input is never touched
    return outcome


@st.composite
def arrays(draw: st.DrawFn) -> dict:
    dtype = draw(st.sampled_from(["bool", "uint8", "int8", "uint16", "int32", "int64", "float16", "float32",
                                  "float64", "complex64"]))
    shape = draw(st.sampled_from(["hw", "bhw", "hwc"]))
    bands = draw(st.integers(1, 5))
    h, w = draw(_side), draw(_side)
    data = draw(pixels("uint8" if dtype == "bool" else dtype, bands, h, w))
    if dtype == "bool":
        data = data > 127
    data = data[0] if shape == "hw" else np.moveaxis(data, 0, -1) if shape == "hwc" else data
    masked = draw(st.booleans())
    return dict(data=np.ma.masked_invalid(data) if masked and data.dtype.kind == "f" else data,
                bands=draw(st.sampled_from([None] * 4 + [[1], [2], [1, 2]])), scale=draw(_scales),
                nodata=draw(st.sampled_from([None, 0.0, float("nan")])))


def _check_array(case: dict, model: tuple) -> str:
    data = case["data"]
    try:
        rgb, valid = colorize_with_mask(data, model, scale=case["scale"], bands=case["bands"],
                                        nodata=case["nodata"])
    except SarColorError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
        return "error"
    assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3 and rgb.shape[:2] == valid.shape
    assert (rgb[~valid] == 0).all()
    return "ok"


OUTCOMES: dict[str, dict[str, int]] = {}
REASONS: list[str] = []  # the files' clean errors, most common printed at the end


def _count(test: str, outcome: str) -> None:
    OUTCOMES.setdefault(test, {"ok": 0, "error": 0})[outcome] += 1


@settings(max_examples=FAST, **_SETTINGS)
@given(case=raster_files())
def test_any_raster_file_gives_an_image_or_a_clean_error(case: dict, tiny, tmp_path: Path) -> None:
    _count("files", _check_file(case, tmp_path, tiny))


@settings(max_examples=FAST, **_SETTINGS)
@given(case=good_files())
def test_any_well_formed_file_is_coloured(case: dict, tiny, tmp_path: Path) -> None:
    outcome = _check_file(case, tmp_path, tiny)
    _count("well-formed files", outcome)
    assert outcome == "ok", REASONS[-1]


@settings(max_examples=FAST, **_SETTINGS)
@given(case=arrays())
def test_any_array_gives_an_image_or_a_clean_error(case: dict, tiny) -> None:
    _count("arrays", _check_array(case, tiny))


@pytest.mark.slow
@settings(max_examples=LONG, **_SETTINGS)
@given(case=raster_files())
def test_any_raster_file_long_run(case: dict, tiny, tmp_path: Path) -> None:
    _count("files (long)", _check_file(case, tmp_path, tiny))


@pytest.mark.slow
@settings(max_examples=LONG, **_SETTINGS)
@given(case=arrays())
def test_any_array_long_run(case: dict, tiny) -> None:
    _count("arrays (long)", _check_array(case, tiny))


def teardown_module() -> None:
    """The case counts, for the record (shown with pytest -s)."""
    for reason, n in Counter(REASONS).most_common(8):
        print(f"  {n:4d} x {reason}")
    for test, n in OUTCOMES.items():
        print(f"\nhypothesis {test}: {n['ok'] + n['error']} cases, {n['ok']} coloured, {n['error']} clean errors")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", ["auto", "db"])
def test_values_at_the_float_limits_give_finite_colours(tiny, dtype: str, scale: str) -> None:
    """Found by the tests above: dB values near a float's max overflowed to inf in the statistics (NaN colours,
    cast to uint8 as garbage); float64 values beyond float32's range became inf in the engine."""
    info = np.finfo(dtype)
    a = np.random.default_rng(0).choice([float(info.min), float(info.max), 0.0, -12.0], size=(24, 24))
    rgb, valid = colorize_with_mask(a.astype(dtype), tiny, scale=scale)  # RuntimeWarnings are errors here
    assert valid.any() and rgb.shape == (24, 24, 3)
