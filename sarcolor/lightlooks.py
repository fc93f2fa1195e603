"""The two looks in numpy: what the light (torch-free) inference path composes a model's colour with.

The same functions as ``looks`` and ``colour`` (torch, used in training), on single tiles ((C, H, W) float32
arrays, no batch axis), and the constants both share: this module is where the looks' settings live, and
``looks`` imports them. Tests check that the two agree (``tests/test_light.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .errors import SarColorError

# How the full-resolution work maps over its bands of rows: the builtin ``map``, or a thread pool's (numpy
# releases the GIL in its array operations, so bands run in parallel).
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]

LOOKS = ("sar", "optical")

LEE_SIZE = 5  # Lee filter window (pixels)
# Speckle std in normalised-dB units (the scene's 1st-99th dB percentiles span 2). One value fits every shared
# source, measured (the 25th percentile of the 5x5 local std of dB, the speckle of the flattest places, over
# held-out and training scenes): volkov_s1s2 0.72 dB over a 7.6 dB range (0.19), SEN1-2 1.22 / 14.9 (0.16),
# BigEarthNet VH 1.60 / 15.4 (0.21), VV 1.44 / 14.8 (0.19), sih1733 1.79 / 25.7 (0.14). A fixed 2.2 dB
# (Sentinel-1 GRD's nominal, ENL ~4.4) would be 0.47-0.57 on volkov_s1s2 and SEN1-2, whose exports carry much
# less: tried, it smoothed their sar look to a blur (sharpness of the truth's 0.73 -> 0.23 on volkov_s1s2).
# (0.12 left the speckle as salt and pepper.)
LEE_NOISE = 0.2
# Display grey of the scene's 1st / 99th dB percentiles: water and radar shadow dark, built-up bright. The dark end
# is lifted to about L* 17 (not black, L* 3), where a colour can still show (a lake's navy, a shadowed slope's
# green), yet darker than any land around it.
GREY_DARK, GREY_BRIGHT = 0.16, 0.96
TONE_GAMMA = 1.25  # gamma > 1 darkens the mid-tones toward optical imagery's typical grey
GUIDE_RADIUS = 2  # guided-filter box radius at the colour's (reduced) resolution
GUIDE_EPS = 0.01  # guided-filter regularisation (guide in [0, 1]): larger keeps more of the model's own colour

# sRGB (D65) -> XYZ, and the D65 white point (as skimage's rgb2lab).
RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423],
                    [0.212671, 0.715160, 0.072169],
                    [0.019334, 0.119193, 0.950227]])
WHITE = np.array([0.95047, 1.0, 1.08883])
# BT.601 (JPEG) luma / chroma of gamma-encoded RGB: a linear split, so swapping the luma is three cheap passes
# at full resolution (the colour itself is set at the model's reduced resolution, in Lab).
RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
CC2RGB = np.array([[0.0, 1.402], [-0.344136, -0.714136], [1.772, 0.0]])

_XYZ2RGB = np.linalg.inv(RGB2XYZ).astype(np.float32)
_F32 = np.float32


def check_look(look: str) -> str:
    if look not in LOOKS:
        raise SarColorError(f"unknown look {look!r}; use one of {', '.join(LOOKS)}")
    return look


def box_filter(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges replicated, over the last two axes of ``x`` (running sums)."""
    if r == 0:
        return x
    k = 2 * r + 1
    lead = [(0, 0)] * (x.ndim - 2)
    c = np.pad(x, [*lead, (r + 1, r), (0, 0)], mode="edge").cumsum(-2, dtype=x.dtype)
    c = np.pad(np.subtract(c[..., k:, :], c[..., :-k, :]), [*lead, (0, 0), (r + 1, r)], mode="edge")
    c = c.cumsum(-1, out=c)
    out = np.subtract(c[..., k:], c[..., :-k])
    out *= _F32(1.0 / (k * k))
    return out


def avg_pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks of the last two axes (sides multiples of it)."""
    *lead, h, w = x.shape
    return x.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1), dtype=_F32)


def _taps(factor: int) -> list[tuple[int, float, float]]:
    """Bilinear upsampling by ``factor`` with half-pixel centres (torch's align_corners=False): output pixel
    ``factor k + j`` is ``w0 x[k + d] + w1 x[k + d + 1]``; (d, w0, w1) for each j, d in {-1, 0}."""
    taps = []
    for j in range(factor):
        off = (j + 0.5) / factor - 0.5
        taps.append((-1, -off, 1 + off) if off < 0 else (0, 1 - off, off))
    return taps


def upsample(x: np.ndarray, factor: int, rows: tuple[int, int] | None = None) -> np.ndarray:
    """(C, h, w) -> (C, h x factor, w x factor) bilinearly, as torch's F.interpolate(mode="bilinear",
    align_corners=False) (edges replicated); ``rows``: only the output rows [start, end)."""
    r0, r1 = (0, x.shape[-2] * factor) if rows is None else rows
    k0, k1 = r0 // factor, -(-r1 // factor)
    xp = np.pad(x[:, max(k0 - 1, 0):k1 + 1], [(0, 0), (k0 == 0, k1 == x.shape[-2]), (1, 1)], mode="edge")
    c, n, w = xp.shape[0], k1 - k0, xp.shape[-1] - 2
    vert = np.empty((c, n, factor, w + 2), _F32)
    for j, (d, w0, w1) in enumerate(_taps(factor)):
        np.multiply(xp[:, 1 + d:1 + d + n], _F32(w0), out=vert[:, :, j])
        vert[:, :, j] += xp[:, 2 + d:2 + d + n] * _F32(w1)
    vert = vert.reshape(c, n * factor, w + 2)[:, r0 - k0 * factor:r1 - k0 * factor]
    out = np.empty((c, len(vert[0]), w, factor), _F32)
    for j, (d, w0, w1) in enumerate(_taps(factor)):
        np.multiply(vert[..., 1 + d:1 + d + w], _F32(w0), out=out[..., j])
        out[..., j] += vert[..., 2 + d:2 + d + w] * _F32(w1)
    return out.reshape(c, -1, w * factor)


BAND_ROWS = 64  # full-resolution work runs over bands of rows, so that its temporaries stay in the cache


def bands(height: int, rows: int = BAND_ROWS) -> list[tuple[int, int]]:
    """[start, end) row ranges covering ``height`` rows."""
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def lee_filter(x: np.ndarray, size: int = LEE_SIZE, noise: float = LEE_NOISE) -> np.ndarray:
    """Lee's speckle filter on a log-domain image (H, W): the local mean where the local variance is speckle,
    the pixel itself where it is structure (edges, point targets)."""
    mean, sq = box_filter(np.stack([x, x * x]), size // 2)
    var = np.maximum(sq - mean * mean, 0, out=sq)
    k = np.maximum(var, _F32(1e-6))
    np.divide(var - _F32(noise * noise), k, out=k)
    np.clip(k, 0, 1, out=k)
    out = x - mean
    out *= k
    out += mean
    return out


def sar_lightness(x: np.ndarray, tone: tuple[float, float] | None = None, map_: Mapper = map) -> np.ndarray:
    """Normalised SAR (H, W) -> display grey (H, W) in [0, 1]: Lee-filtered, then the tone curve.
    ``tone``: (gain, offset) from the input's range to the tone curve's (``SceneStats.tone_map``)."""
    out = np.empty(x.shape, _F32)
    halo = LEE_SIZE // 2  # rows of context a band's filter needs beyond it

    def band(rows: tuple[int, int]) -> None:
        r0, r1 = rows
        lo, hi = max(r0 - halo, 0), min(r1 + halo, len(x))
        out[r0:r1] = _tone(lee_filter(x[lo:hi])[r0 - lo:r1 - lo], tone)

    list(map_(band, bands(len(x))))
    return out


def _tone(t: np.ndarray, tone: tuple[float, float] | None) -> np.ndarray:
    if tone is not None and tone != (1.0, 0.0):
        t *= _F32(tone[0])
        t += _F32(tone[1])
    t += 1
    t *= _F32(0.5 / 1.15)  # [-1, 1.3] -> [0, 1]
    np.clip(t, 0, 1, out=t)
    t *= np.sqrt(np.sqrt(t))  # t ** 1.25 (TONE_GAMMA), a few times faster than a power
    t *= _F32(GREY_BRIGHT - GREY_DARK)
    t += _F32(GREY_DARK)
    return t


def guided_coefficients(g_lo: np.ndarray, src: np.ndarray, radius: int = GUIDE_RADIUS, eps: float = GUIDE_EPS
                        ) -> np.ndarray:
    """The fast guided filter's (He and Sun 2015) smoothed affine coefficients at the reduced resolution:
    ``src`` (C, h, w) ~ a x guide + b locally, for the guide's block means ``g_lo`` (h, w) -> (a, b) (2C, h, w)."""
    mean_g, var_g = box_filter(np.stack([g_lo, g_lo * g_lo]), radius)
    var_g -= mean_g * mean_g
    moments = box_filter(np.concatenate([src, g_lo * src]), radius)
    mean_s, cov = moments[:len(src)], moments[len(src):] - mean_g * moments[:len(src)]
    a = cov / (var_g + _F32(eps))
    b = mean_s - a * mean_g
    return box_filter(np.concatenate([a, b]), radius)


def apply_coefficients(coeffs: np.ndarray, guide: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of the guided filter's output: its coefficients (2C, h, w) upsampled bilinearly to the
    guide's (H, W) (``factor`` times theirs) and applied to it -> (C, r1 - r0, W)."""
    ab = upsample(coeffs, len(guide) // coeffs.shape[-2], (r0, r1))
    c = len(coeffs) // 2
    out = ab[:c]
    out *= guide[r0:r1]
    out += ab[c:]
    return out


def guided_upsample(guide: np.ndarray, src: np.ndarray, factor: int, radius: int = GUIDE_RADIUS,
                    eps: float = GUIDE_EPS) -> np.ndarray:
    """Fast guided filter: ``src`` (C, h, w) at 1/``factor`` resolution -> full resolution (C, H, W), locally an
    affine function of ``guide`` (H, W) in [0, 1], so its edges follow the guide's."""
    coeffs = guided_coefficients(avg_pool(guide, factor), src, radius, eps)
    return apply_coefficients(coeffs, guide, 0, len(guide))


def _mix(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A per-pixel linear map: (O, I) matrix times (I, H, W) -> (O, H, W)."""
    return np.tensordot(matrix.astype(_F32), x, axes=1)


def chroma_of(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (3, H, W) -> its (Cb, Cr) chroma (2, H, W)."""
    return _mix(RGB2YCC[1:], rgb)


def luma_of(rgb: np.ndarray) -> np.ndarray:
    """RGB (3, H, W) -> its BT.601 luma (1, H, W)."""
    return _mix(RGB2YCC[:1], rgb)


def with_grey(grey: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Display grey (H, W) as luma + (Cb, Cr) chroma (2, H, W) -> RGB in [0, 1] (3, H, W).

    Where a colour does not fit at that grey, the grey is moved just enough for it to fit instead of clipping
    the RGB channels (which would grey out the colour there); see ``looks.with_grey``."""
    cb, cr = chroma
    offset = np.empty((3, *grey.shape), _F32)
    np.multiply(cr, _F32(CC2RGB[0, 1]), out=offset[0])
    np.multiply(cb, _F32(CC2RGB[1, 0]), out=offset[1])
    offset[1] += cr * _F32(CC2RGB[1, 1])
    np.multiply(cb, _F32(CC2RGB[2, 0]), out=offset[2])
    low = np.minimum(np.minimum(offset[0], offset[1]), offset[2])
    np.negative(low, out=low)
    high = np.maximum(np.maximum(offset[0], offset[1]), offset[2])
    np.subtract(1, high, out=high)
    g = np.maximum(grey, low, out=low)
    np.minimum(g, high, out=g)
    offset += g
    return np.clip(offset, 0, 1, out=offset)


def grey_lightness(grey: np.ndarray) -> np.ndarray:
    """Display grey in [0, 1] -> its CIE L* (the L* of the RGB colour (grey, grey, grey))."""
    g = np.clip(grey, 0, 1).astype(np.float64)
    lin = np.where(g > 0.04045, ((g + 0.055) / 1.055) ** 2.4, g / 12.92)
    f = np.where(lin > 0.008856, np.cbrt(lin), 7.787 * lin + 16 / 116)
    return (116 * f - 16).astype(_F32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (3, ...) -> CIE Lab (3, ...), L in [0, 100]; matches skimage.color.rgb2lab."""
    c = np.clip(rgb, 0, 1).astype(np.float64)
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.tensordot(RGB2XYZ, lin, axes=1) / WHITE.reshape(3, *([1] * (rgb.ndim - 1)))
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])]).astype(_F32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (3, ...) -> RGB in [0, 1] (out-of-gamut colours clipped); matches skimage.color.lab2rgb."""
    L, a, b = lab.astype(_F32)
    fy = (L + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200])
    white = WHITE.astype(_F32).reshape(3, *([1] * (lab.ndim - 1)))
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16 / 116) / _F32(7.787)) * white
    lin = np.clip(np.tensordot(_XYZ2RGB, xyz, axes=1), 0, 1)
    srgb = np.where(lin > 0.0031308, 1.055 * np.maximum(lin, 1e-8) ** _F32(1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(srgb, 0, 1).astype(_F32)


def lab_chroma(lightness: np.ndarray, ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L* (h, w) and a*b* (2, h, w) -> the colour's display grey (1, h, w) and (Cb, Cr) (2, h, w)."""
    rgb = lab_to_rgb(np.concatenate([lightness[None], ab]))
    return luma_of(rgb), chroma_of(rgb)


def sar_look(grey: np.ndarray, ab: np.ndarray, factor: int, map_: Mapper = map) -> np.ndarray:
    """The ``sar`` look from a*b* (2, H/factor, W/factor): that colour set under the SAR's own lightness at its
    resolution, carried to full resolution as chroma by the guided filter, on the SAR's display grey (H, W)
    -> RGB in [0, 1] (3, H, W)."""
    lo_grey = avg_pool(grey, factor)
    _, chroma = lab_chroma(grey_lightness(lo_grey), ab)
    coeffs = guided_coefficients(lo_grey, chroma)
    out = np.empty((3, *grey.shape), _F32)

    def band(rows: tuple[int, int]) -> None:
        r0, r1 = rows
        out[:, r0:r1] = with_grey(grey[r0:r1], apply_coefficients(coeffs, grey, r0, r1))

    list(map_(band, bands(len(grey))))
    return out


def optical_look(grey: np.ndarray, ab: np.ndarray, light: np.ndarray, factor: int, map_: Mapper = map
                 ) -> np.ndarray:
    """The ``optical`` look: the model's own L* (h, w) and a*b* (2, h, w), carried to full resolution by the
    guided filter on the SAR's grey (H, W) -> RGB in [0, 1] (3, H, W)."""
    opt_grey, chroma = lab_chroma(light, ab)
    coeffs = guided_coefficients(avg_pool(grey, factor), np.concatenate([opt_grey, chroma]))
    out = np.empty((3, *grey.shape), _F32)

    def band(rows: tuple[int, int]) -> None:
        up = apply_coefficients(coeffs, grey, *rows)
        out[:, rows[0]:rows[1]] = with_grey(up[0], up[1:])

    list(map_(band, bands(len(grey))))
    return out
