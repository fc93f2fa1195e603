"""sarcolor.preprocess: scene statistics (their 8-bit histogram shortcut) and scales."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sarcolor.errors import SarColorError
from sarcolor.preprocess import LEVEL_NORM, model_input, percentiles, scene_input, scene_level, scene_stats, to_db


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


def test_level_input_carries_the_scenes_absolute_db_level() -> None:
    """logpct-level: channel 0 is the logpct input; the last two are the scene's 1st/99th dB percentiles,
    (dB + 15) / 10, the same on every tile; a scene 10 dB brighter has the same first channel, its level 1 up."""
    rng = np.random.default_rng(0)
    db = rng.normal(-14.0, 4.0, (64, 64)).astype(np.float32)
    stats = scene_stats(db, None, "db")
    x = scene_input(db, np.ones_like(db, bool), "db", LEVEL_NORM, 3)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], scene_input(db, np.ones_like(db, bool), "db", "logpct", 1)[0])
    np.testing.assert_allclose(x[1:, 0, 0], [(stats.lo + 15) / 10, (stats.hi + 15) / 10], atol=1e-6)
    assert np.all(x[1:] == x[1:, :1, :1])  # constant planes
    tile = model_input(db[:16, 40:], stats, LEVEL_NORM, 3)  # a tile of the scene: the scene's level
    np.testing.assert_array_equal(tile[1:, 0, 0], scene_level(stats))
    brighter = scene_input(db + 10, np.ones_like(db, bool), "db", LEVEL_NORM, 3)
    np.testing.assert_allclose(brighter[0], x[0], atol=1e-5)
    np.testing.assert_allclose(brighter[1:] - x[1:], 1.0, atol=1e-5)
    with pytest.raises(SarColorError, match="'logpct-level' needs more than 2 input channels"):
        model_input(db, stats, LEVEL_NORM, 2)
