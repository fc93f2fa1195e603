"""Pure tiling helpers: the tile grid, the blending window, and a strip accumulator for bounded memory.

A scene is cut into overlapping tiles; every tile's prediction is multiplied by a window that tapers to
(almost) zero at the tile's edges and added into a running sum, which is divided by the summed weights.
Where two tiles overlap their cosine tapers add up to one, so colours cross-fade instead of jumping at the
border (the conv padding at a tile's edge makes those edge pixels the least reliable ones anyway).

Tiles are processed one row at a time: ``StripAccumulator`` only holds the rows still in flight (about one
tile high, full width) and hands back finished rows, so memory does not grow with the scene's height.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

WINDOW_FLOOR = 1e-3  # the least weight a pixel gets: image-edge pixels are covered by one tile only


@dataclass(frozen=True)
class Tile:
    """A tile's window in image coordinates (never extends past the image)."""

    y: int
    x: int
    h: int
    w: int


def axis_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile starts covering [0, n), overlapping by >= ``overlap``; the last tile is shifted inward."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got tile={tile} overlap={overlap}")
    if n <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((n - tile) / stride) + 1
    return [min(i * stride, n - tile) for i in range(count)]


def best_tile(height: int, width: int, tile: int, overlap: int, multiple: int, slack: float = 1.25) -> int:
    """The tile size in [tile, slack * tile] (a whole multiple) that covers the image with the fewest pixels
    run through the model: e.g. a 1200 px side takes 2 tiles of 640 instead of 3 of 512 (edge tiles shifted
    inward overlap a lot); a scene of at most 2 x tile a side (a 1024 x 1024 scene) is one tile.
    A model with a large multiple (the seed's 128) keeps its tile size."""
    best, best_cost = tile, None
    candidates = list(range(tile, max(tile, int(tile * slack)) + 1, multiple))
    whole = -(-max(height, width) // multiple) * multiple
    if tile < whole <= 2 * tile:
        # A scene of up to two tiles a side goes through as one tile: no overlap to redo, the most context,
        # and memory stays bounded (at most (2 x tile)^2 pixels, whatever the scene).
        candidates.append(whole)
    for t in candidates:
        n_tiles = len(axis_starts(height, t, overlap)) * len(axis_starts(width, t, overlap))
        cost = n_tiles * min(t, height) * min(t, width)
        if best_cost is None or cost < best_cost:
            best, best_cost = t, cost
    return best


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles covering an image. All tiles have the same size: min(tile, image side)."""
    th, tw = min(tile, height), min(tile, width)
    xs = axis_starts(width, tile, overlap)
    return [[Tile(y, x, th, tw) for x in xs] for y in axis_starts(height, tile, overlap)]


def mirror_index(n: int, size: int, *, edge: bool = False) -> np.ndarray:
    """Indices 0..n-1 continued to ``size`` by mirroring without repeating the edge pixel (numpy's "reflect",
    reflected again where ``size`` exceeds the image), or by repeating the edge pixel with ``edge`` (or n == 1).

    The one padding rule of inference, the models and training: padded images are ``a[..., rows, cols]``.
    """
    return np.pad(np.arange(n), (0, max(0, size - n)), mode="edge" if edge or n < 2 else "reflect")


def pad_to_multiple(a: np.ndarray, multiple: int) -> np.ndarray:
    """Pad the last two axes (bottom/right) up to a multiple, mirroring the image so no edge is invented."""
    h, w = a.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return a
    thin = min(h, w) < 2  # a one-pixel line: repeated in both directions
    return a[..., mirror_index(h, h + ph, edge=thin)[:, None], mirror_index(w, w + pw, edge=thin)]


def taper(n: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """1-D weights: a raised-cosine ramp over ``overlap`` pixels at both ends, 1 in between, never < floor.

    sin^2 ramps of neighbouring tiles that overlap by exactly ``overlap`` sum to 1 (a partition of unity).
    """
    ramp_len = min(overlap, n // 2)
    w = np.ones(n, np.float64)
    if ramp_len > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(ramp_len) + 0.5) / ramp_len) ** 2
        w[:ramp_len] = ramp
        w[n - ramp_len:] = ramp[::-1]
    return np.maximum(w, floor).astype(np.float32)


@functools.lru_cache(maxsize=8)
def blend_window(h: int, w: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """2-D (h, w) float32 blending window: the outer product of two ``taper``s. Read-only (cached)."""
    win = np.outer(taper(h, overlap, floor), taper(w, overlap, floor))
    win.setflags(write=False)
    return win


class StripAccumulator:
    """Weighted sum of tile predictions over the rows in flight only.

    ``add`` tiles (in row order), then ``flush(upto)`` returns the blended rows [start, upto) that no later
    tile touches. The buffers are allocated once (about one tile high) and reused; the rows returned by
    ``flush`` are a view into them, valid until the next ``add`` or ``flush`` (no full-width copies).
    """

    def __init__(self, width: int, channels: int = 3) -> None:
        self.width, self.channels = width, channels
        self.start = 0  # image row of the first row held
        self._held = 0
        self.max_rows_held = 0  # for tests and diagnostics
        self.acc = np.zeros((channels, 0, width), np.float32)
        self.weight = np.zeros((0, width), np.float32)
        self._drop = 0  # rows handed out by the last flush, removed on the next call

    @property
    def rows_held(self) -> int:
        """Rows accumulated and not yet handed out."""
        return self._held - self._drop

    def _compact(self) -> None:
        """Forget the rows returned by the last flush: move the rest to the top, clear the freed rows."""
        n, held = self._drop, self._held
        if n:
            self.acc[:, :held - n] = self.acc[:, n:held]  # numpy handles the overlapping copy
            self.weight[:held - n] = self.weight[n:held]
            self.acc[:, held - n:held] = 0
            self.weight[held - n:held] = 0
            self.start += n
            self._held = held - n
            self._drop = 0

    def _grow(self, end: int) -> None:
        need = end - self.start
        if need > self.weight.shape[0]:  # the first tile row only: later rows fit the same space
            acc = np.zeros((self.channels, need, self.width), np.float32)
            weight = np.zeros((need, self.width), np.float32)
            acc[:, :self._held] = self.acc[:, :self._held]
            weight[:self._held] = self.weight[:self._held]
            self.acc, self.weight = acc, weight
        self._held = max(self._held, need)
        self.max_rows_held = max(self.max_rows_held, self._held)

    def add(self, tile: Tile, values: np.ndarray, window: np.ndarray) -> None:
        """Add a (channels, h, w) prediction for ``tile``, weighted by an (h, w) window."""
        self._compact()
        if tile.y < self.start:
            raise ValueError(f"tile at row {tile.y} comes after rows up to {self.start} were flushed")
        self._grow(tile.y + tile.h)
        r0 = tile.y - self.start
        rows, cols = slice(r0, r0 + tile.h), slice(tile.x, tile.x + tile.w)
        self.acc[:, rows, cols] += values * window
        self.weight[rows, cols] += window

    def flush(self, upto: int) -> tuple[int, np.ndarray]:
        """(first row, blended (channels, n, width) float32 view) for rows [start, upto), then drops them.

        The view may be modified in place by the caller; it is overwritten by the next add/flush.
        """
        self._compact()
        n = max(0, min(upto - self.start, self._held))
        out, w = self.acc[:, :n], self.weight[:n]
        np.divide(out, np.where(w > 0, w, 1.0), out=out)  # rows no tile touched stay 0
        self._drop = n
        return self.start, out
