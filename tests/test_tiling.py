"""Tile grid, blending window and the strip accumulator (pure functions, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from sarcolor.tiling import (
    WINDOW_FLOOR,
    StripAccumulator,
    Tile,
    axis_starts,
    blend_window,
    pad_to_multiple,
    taper,
    tile_grid,
)


@pytest.mark.parametrize("n", [1, 8, 63, 64, 65, 100, 112, 113, 1000])
def test_axis_starts_cover_with_overlap(n: int) -> None:
    tile, overlap = 64, 16
    starts = axis_starts(n, tile, overlap)
    size = min(tile, n)
    assert starts[0] == 0 and starts[-1] + size == n  # the last tile is shifted inward, never padded
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + size - b >= overlap  # neighbours overlap by at least `overlap`
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s:s + size] = True
    assert covered.all()


def test_axis_starts_small_image_is_one_tile() -> None:
    assert axis_starts(10, 64, 16) == [0]
    assert axis_starts(64, 64, 16) == [0]
    assert axis_starts(65, 64, 16) == [0, 1]


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (64, 64), (64, -1), (32, 40)])
def test_axis_starts_rejects_bad_parameters(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(100, tile, overlap)


def test_tile_grid_rows_share_size_and_stay_inside() -> None:
    grid = tile_grid(150, 40, 64, 16)
    assert len(grid) == len(axis_starts(150, 64, 16))
    for row in grid:
        assert len({(t.y, t.h) for t in row}) == 1
        for t in row:
            assert (t.h, t.w) == (64, 40)
            assert 0 <= t.y and t.y + t.h <= 150 and 0 <= t.x and t.x + t.w <= 40


@pytest.mark.parametrize(("shape", "multiple"), [((3, 10, 13), 4), ((1, 8, 8), 16), ((2, 1, 5), 4), ((5, 16), 16)])
def test_pad_to_multiple(shape: tuple[int, ...], multiple: int) -> None:
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    p = pad_to_multiple(a, multiple)
    assert p.shape[:-2] == a.shape[:-2]
    assert p.shape[-2] % multiple == 0 and p.shape[-1] % multiple == 0
    np.testing.assert_array_equal(p[..., : shape[-2], : shape[-1]], a)  # the image itself is untouched
    if min(shape[-2:]) > 1 and p.shape[-1] > shape[-1]:
        np.testing.assert_array_equal(p[..., : shape[-2], shape[-1]], a[..., -2])  # mirrored, not zeros


def test_taper_is_a_partition_of_unity_at_the_nominal_overlap() -> None:
    tile, overlap = 64, 16
    w = taper(tile, overlap)
    assert w.dtype == np.float32 and w.min() >= WINDOW_FLOOR and w.max() == 1.0
    np.testing.assert_allclose(w, w[::-1])
    np.testing.assert_array_equal(w[overlap:-overlap], 1.0)
    # The falling edge of one tile plus the rising edge of the next sum to one.
    np.testing.assert_allclose(w[-overlap:] + w[:overlap], 1.0, atol=2 * WINDOW_FLOOR)
    np.testing.assert_array_equal(taper(10, 0), 1.0)


def test_blend_window_is_2d_read_only_and_positive() -> None:
    win = blend_window(32, 48, 8)
    assert win.shape == (32, 48)
    assert win.min() >= WINDOW_FLOOR**2 and win.max() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        win[0, 0] = 2.0  # cached and shared between calls


def _accumulate(values: np.ndarray, tile: int, overlap: int) -> tuple[np.ndarray, StripAccumulator]:
    """Run the accumulator over an image's own tiles; returns the blended image and the accumulator."""
    c, h, w = values.shape
    grid = tile_grid(h, w, tile, overlap)
    win = blend_window(grid[0][0].h, grid[0][0].w, overlap)
    acc = StripAccumulator(w, channels=c)
    out = np.full_like(values, np.nan)
    for i, row in enumerate(grid):
        for t in row:
            acc.add(t, values[:, t.y:t.y + t.h, t.x:t.x + t.w], win)
        done = grid[i + 1][0].y if i + 1 < len(grid) else h
        y0, rows = acc.flush(done)
        out[:, y0:y0 + rows.shape[1]] = rows
    return out, acc


def test_accumulator_reproduces_an_image_whose_tiles_agree() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 150, 130)).astype(np.float32)
    out, acc = _accumulate(img, 64, 16)
    np.testing.assert_allclose(out, img, rtol=1e-5)  # every row flushed exactly once, weights divided out
    assert acc.rows_held == 0


def test_accumulator_holds_about_one_tile_of_rows() -> None:
    img = np.ones((1, 2000, 50), np.float32)
    _, acc = _accumulate(img, 64, 16)
    assert acc.max_rows_held <= 64  # bounded by the tile height, not by the image height


def test_accumulator_blends_disagreeing_tiles_smoothly() -> None:
    """Two tiles predicting 0 and 1 cross-fade across the overlap instead of jumping."""
    acc = StripAccumulator(112, channels=1)
    win = blend_window(16, 64, 16)
    acc.add(Tile(0, 0, 16, 64), np.zeros((1, 16, 64), np.float32), win)
    acc.add(Tile(0, 48, 16, 64), np.ones((1, 16, 64), np.float32), win)
    _, rows = acc.flush(16)
    line = rows[0, 8]
    assert line[:48].max() < 1e-2 and line[64:].min() > 1 - 1e-2
    assert np.all(np.diff(line[40:72]) >= -1e-6)  # monotone ramp
    assert np.abs(np.diff(line)).max() < 0.15  # no jump


def test_accumulator_rejects_tiles_above_flushed_rows() -> None:
    acc = StripAccumulator(10, channels=1)
    acc.add(Tile(0, 0, 8, 10), np.ones((1, 8, 10), np.float32), blend_window(8, 10, 2))
    acc.flush(4)
    with pytest.raises(ValueError, match="flushed"):
        acc.add(Tile(2, 0, 8, 10), np.ones((1, 8, 10), np.float32), blend_window(8, 10, 2))


def test_best_tile_covers_with_fewer_model_pixels() -> None:
    from sarcolor.tiling import best_tile

    # 1200 px: 3 tiles of 512 (edge tile shifted inward) cost about 2x the image; 2 tiles of 640 cost 1.14x.
    assert best_tile(1200, 1200, 512, 64, 16) == 640  # 2 x 2 tiles instead of 3 x 3 of 512
    assert best_tile(1024, 1024, 512, 64, 16) == 1024  # up to 2 tiles a side: the whole scene is one tile
    assert best_tile(1000, 1010, 512, 64, 16) == 1024
    assert best_tile(1024, 1100, 512, 64, 16) <= 640  # larger: never a tile over 1.25 x the configured size
    assert best_tile(300, 300, 512, 64, 16) == 512  # one tile either way: keep the configured size
    assert best_tile(1024, 1024, 128, 32, 128) == 128  # the seed's multiple is its tile: unchanged
    t = best_tile(20000, 20000, 512, 64, 16)
    assert 512 <= t <= 640 and t % 16 == 0
