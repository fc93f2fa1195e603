"""sarcolor.preprocess: scene statistics (their 8-bit histogram shortcut) and scales."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sarcolor.errors import SarColorError
from sarcolor.preprocess import TONE_BRIGHT_DB, percentiles, scene_stats, to_db


def test_percentiles_of_a_hand_made_8bit_sample() -> None:
    v = np.array([0, 10, 10, 20, 255], dtype=np.uint8)
    # order statistics 0, 10, 10, 20, 255: the median is 10; the 90th lies 60% of the way from 20 to 255
    assert percentiles(v, [0, 50, 90, 100]) == pytest.approx([0, 10, 20 + 0.6 * 235, 255])
    db = percentiles(v, [50], "8bit")[0]
    assert db == pytest.approx(10 * np.log10(10 / 255), abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(v=arrays(np.uint8, st.integers(1, 500)), scale=st.sampled_from([None, "8bit", "linear", "amplitude"]))
def test_8bit_histogram_percentiles_equal_numpys(v: np.ndarray, scale: str | None) -> None:
    qs = [0, 1, 37.5, 50, 99, 100]
    want = np.percentile(v.astype(np.float64) if scale is None else to_db(v.astype(np.float64), scale), qs)
    assert np.allclose(percentiles(v, qs, scale), want, rtol=1e-6, atol=1e-4)


def test_scene_stats_of_8bit_and_float_copies_agree() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, (64, 64)).astype(np.uint8)
    a = scene_stats(img, None, "auto")
    b = scene_stats(img.astype(np.float32), None, "8bit")  # the sorting path, same values
    assert a.scale == "8bit" and (a.lo, a.hi) == pytest.approx((b.lo, b.hi), abs=1e-4)


def test_scene_stats_errors() -> None:
    with pytest.raises(SarColorError, match="no valid pixels"):
        scene_stats(np.full((4, 4), np.nan, np.float32), None, "auto")


def test_scale_db_on_8bit_is_an_8bit_db_export() -> None:
    """--scale db on 8-bit values reads them as dB (SEN1-2's PNGs): its statistics are those of the values."""
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    st = scene_stats(v, None, "db")
    assert st.scale == "db" and (st.lo, st.hi) == pytest.approx(tuple(np.percentile(np.arange(256), [1, 99])))


def test_calibrated_scenes_without_land_keep_the_absolute_tone() -> None:
    """Float backscatter is calibrated: a scene of water alone is toned from its own 1st percentile up to -12 dB
    (its water dark); a scene with land keeps its own range (the model input's: gain 1, offset 0)."""
    rng = np.random.default_rng(0)
    lake = rng.normal(-31.0, 2.2, (64, 64)).astype(np.float32)  # calm water, VH, speckle ~2.2 dB
    st = scene_stats(lake, None, "db")
    assert st.tone_hi == TONE_BRIGHT_DB
    gain, offset = st.tone_map()
    for db in (st.lo, -12.0):  # the model's input units -> the tone's -1..1
        x = 2.0 * (db - st.lo) / (st.hi - st.lo) - 1.0
        assert gain * x + offset == pytest.approx(-1.0 if db == st.lo else 1.0)
    x_median = 2.0 * (-31.0 - st.lo) / (st.hi - st.lo) - 1.0
    assert gain * x_median + offset < -0.5  # water's median: in the dark part of the tone (its own range: ~0)
    both = np.concatenate([lake, rng.normal(-15.0, 2.2, (64, 64)).astype(np.float32)])
    assert scene_stats(both, None, "db").tone_hi is None and scene_stats(both, None, "db").tone_map() == (1.0, 0.0)
    # the same water as an 8-bit export (uncalibrated), or floats said to be one: their own range
    dark = np.clip(lake + 40, 0, 255)
    assert scene_stats(dark.astype(np.uint8), None, "8bit").tone_hi is None
    assert scene_stats(dark.astype(np.float32), None, "8bit").tone_hi is None
    # linear power is calibrated too: the same tone
    power = scene_stats((10.0 ** (lake / 10)).astype(np.float32), None, "linear")
    assert power.tone_map() == pytest.approx(st.tone_map(), abs=1e-3)


def test_polarimetric_input_channels() -> None:
    from sarcolor.preprocess import ABS_DB, POLARIMETRIC_CHANNELS, RATIO_DB, polarimetric_input

    rng = np.random.default_rng(0)
    vv = rng.uniform(-20, -5, (8, 9)).astype(np.float32)
    vh = (vv - 6.0).astype(np.float32)  # a cross-pol ratio of -6 dB everywhere
    dual = np.stack([vv, vh], axis=-1)
    stats = scene_stats(dual, None, "db")
    assert stats.calibrated and stats.medians == pytest.approx((np.median(vv), np.median(vh)), abs=1e-4)
    x = polarimetric_input(dual, stats)
    assert x.shape == (POLARIMETRIC_CHANNELS, 8, 9)
    np.testing.assert_allclose(x[1], np.clip((vv - ABS_DB[0]) / ABS_DB[1], -2, 2), atol=1e-6)
    np.testing.assert_allclose(x[2], (-6.0 - RATIO_DB[0]) / RATIO_DB[1], atol=1e-5)
    assert (x[3] == 1).all() and (x[4] == 1).all()
    single = polarimetric_input(vv, scene_stats(vv, None, "db"))  # one band: no ratio, no dual flag
    np.testing.assert_array_equal(single[:2], x[:2])
    assert (single[2] == 0).all() and (single[4] == 0).all() and (single[3] == 1).all()
    # an 8-bit export is not calibrated: its levels mean nothing alone, only its normalised grey is read
    grey = rng.integers(1, 255, (8, 9)).astype(np.uint8)
    g = polarimetric_input(grey, scene_stats(grey, None, "8bit"))
    assert (g[1:] == 0).all() and g[0].std() > 0
