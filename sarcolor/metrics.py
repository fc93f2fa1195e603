"""Colorization metrics on 8-bit RGB images, with an optional mask of valid pixels.

Every function takes ``pred`` and ``truth`` as (H, W, 3) uint8 RGB arrays of the same size and an optional
(H, W) bool ``valid`` mask (True = scored; nodata in either image must be False). Values are per image; the
report averages them over images. The definitions are the standard ones (scikit-image's where it has one) and
are documented in ``docs/metrics.md``; the options below are the only choices made:

* ``psnr``: 10 log10(255^2 / MSE), MSE over valid pixels and the 3 channels; ``inf`` for identical images.
* ``ssim``: skimage ``structural_similarity(channel_axis=-1, data_range=255)`` with its defaults (7x7 uniform
  window, K1 0.01, K2 0.03, sample covariance), averaged over channels and over the pixels whose whole window
  lies on valid pixels: for an all-valid image that is exactly skimage's value (which drops a 3-pixel border).
* ``ciede2000``: mean CIEDE2000 colour difference (kL = kC = kH = 1) between skimage ``rgb2lab`` (sRGB, D65).
* ``sam``: mean spectral angle between RGB vectors, in degrees.
* ``chroma_ratio``: mean Lab chroma sqrt(a^2 + b^2) of the prediction over that of the truth (1: as vivid).
* ``ab_wasserstein``: 1-D Wasserstein (earth mover's) distance between the a* distributions, and between the
  b* distributions, of prediction and truth, averaged; in Lab units.
* ``identity_collapse``: 1.0 when the prediction is closer (mean CIEDE2000) to the SAR shown as grey RGB than
  to the truth, else 0.0; its mean over images is the fraction of collapsed predictions.

Metrics that tell colour from fog:

* ``colour_error``: CIEDE2000 between the truth and the prediction after both are smoothed (Gaussian, sigma
  ``SIGMA`` px, per Lab channel, nodata-aware) and the prediction's L* is replaced by the truth's: only a*b*
  differ, so a right colour on a different lightness scores 0.
* ``structure``: Pearson correlation, over valid pixels, of the gradient magnitudes of the prediction's L* and
  of the log SAR (dB), both smoothed (sigma ``SIGMA`` px): 1 = every SAR edge where the output has one.
* ``sharpness``: std of the Laplacian of the prediction's L* over that of the truth's L* (1 = as sharp).
* ``land_cover_colour`` (over a set of images): how well the colour follows the land cover, apart from each image's
  overall colour balance. Both images are split into ``LC_BLOCK`` x ``LC_BLOCK`` px blocks (wholly valid ones
  only); each block's mean a* and b* is taken, each image's mean over its blocks subtracted, the blocks of all
  images of the set pooled, and the Pearson correlation of prediction against truth taken for a* and for b*; the
  result is their mean. A prediction whose centred block a* (or b*) varies by less than ``LC_MIN_STD`` (std) scores
  0 for that channel: no colour variation is no land-cover colour.
* ``colour_spread`` (over a set of images): root-mean-square of the prediction's centred block a*b* over the
  truth's (1 = as varied as the truth; a single tint scores about 0).
* ``swd`` (over a set of images, not per image): sliced Wasserstein distance between 7x7 Laplacian-pyramid
  patches of predictions and of truths (Karras et al. 2018); ``laplacian_patches`` samples an image's
  patches, ``swd`` compares two sets.

Smoothing with nodata is a normalised convolution: gaussian(x * valid) / gaussian(valid), so invalid pixels
never bleed into valid ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter, laplace, minimum_filter
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity
from skimage.transform import pyramid_gaussian

from .errors import SarColorError

# Column order of reports; also the keys of ``all_metrics``.
METRICS = ("colour_error", "structure", "sharpness", "psnr", "ssim", "ciede2000", "sam", "chroma_ratio",
           "ab_wasserstein", "identity_collapse")
# over a set of images (a source's, or all): one number per set, not per image
SET_METRICS = ("land_cover_colour", "colour_spread", "swd")
# True where larger is better; None where the target is a value (chroma ratio, sharpness: 1).
HIGHER_IS_BETTER = {"land_cover_colour": True, "colour_spread": None,
                    "colour_error": False, "structure": True, "sharpness": None, "swd": False, "psnr": True,
                    "ssim": True, "ciede2000": False, "sam": False, "chroma_ratio": None,
                    "ab_wasserstein": False, "identity_collapse": False}
SSIM_WIN = 7  # skimage's default window; images must be at least this big on both sides
# Exact greys have a Lab chroma of up to 0.005 in skimage's rgb2lab (white-point rounding): a truth whose mean
# chroma is below this floor is grey, and the chroma ratio is undefined for it.
CHROMA_FLOOR = 0.01
LC_BLOCK = 16  # px: the blocks of land_cover_colour and colour_spread (160 m for 10 m pixels: a field, a lake)
LC_MIN_STD = 0.5  # a*/b* std below which a prediction's block colour is taken as constant (no land-cover colour)
SIGMA = 2.0  # px: the smoothing of colour_error and structure (colour is judged at ~5 px, not per speckle)
FLAT = 1e-6  # L* per px: a smoothed gradient-magnitude std below this is a flat image (rounding noise only)
# SWD (Karras et al. 2018): 7x7 patches of PYRAMID_LEVELS - 1 band-pass levels and the low-pass residual, at
# most PATCHES_PER_LEVEL per image and level, projected on SWD_DIRECTIONS random unit directions; fixed seeds.
PATCH = 7
PYRAMID_LEVELS = 5
PATCHES_PER_LEVEL = 128
SWD_DIRECTIONS = 512
SWD_SEED = 0


def _check(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Validate shapes and dtypes; return the valid mask (all True if none given)."""
    for name, a in (("prediction", pred), ("truth", truth)):
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise SarColorError(f"{name}: expected (H, W, 3) uint8 RGB, got {a.shape} {a.dtype}")
    if pred.shape != truth.shape:
        raise SarColorError(f"prediction {pred.shape[:2]} and truth {truth.shape[:2]} differ in size")
    if valid is None:
        return np.ones(truth.shape[:2], bool)
    if valid.shape != truth.shape[:2]:
        raise SarColorError(f"valid mask {valid.shape} does not match image {truth.shape[:2]}")
    return valid.astype(bool, copy=False)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> CIE Lab (D65, 2 deg observer), float64, via skimage."""
    return rgb2lab(rgb.astype(np.float64) / 255.0)


def psnr(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB, data range 255; ``inf`` if identical, ``nan`` if nothing is valid."""
    valid = _check(pred, truth, valid)
    if not valid.any():
        return math.nan
    diff = pred[valid].astype(np.float64) - truth[valid].astype(np.float64)
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel, per-channel SSIM map (H, W, 3) from skimage (uniform 7x7 window, data range 255)."""
    _, smap = structural_similarity(truth, pred, channel_axis=-1, data_range=255, win_size=SSIM_WIN,
                                    full=True)
    return smap


def ssim_mask(valid: np.ndarray) -> np.ndarray:
    """Pixels whose whole SSIM window lies on valid pixels inside the image (so nodata never leaks in)."""
    return binary_erosion(valid, structure=np.ones((SSIM_WIN, SSIM_WIN), bool), border_value=0)


def ssim(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean SSIM over channels and over pixels whose window is all valid; equals skimage's mssim unmasked.

    If no pixel has an all-valid window (a valid region thinner than 7 px) the mean is over valid pixels;
    ``nan`` when the image is smaller than 7x7 or nothing is valid.
    """
    valid = _check(pred, truth, valid)
    if min(truth.shape[:2]) < SSIM_WIN or not valid.any():
        return math.nan
    smap = ssim_map(pred, truth)
    inner = ssim_mask(valid)
    use = inner if inner.any() else valid
    return float(smap[use].mean(dtype=np.float64))


def delta_e_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 (H, W) between the two images."""
    return deltaE_ciede2000(_lab(truth), _lab(pred))


def ciede2000(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean CIEDE2000 colour difference over valid pixels (0 = identical; about 2.3 = just noticeable)."""
    valid = _check(pred, truth, valid)
    if not valid.any():
        return math.nan
    return float(delta_e_map(pred, truth)[valid].mean())


def sam(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean spectral angle in degrees between the RGB vectors of each valid pixel (0 = same hue/mix).

    Black pixels have no direction: a pixel black in both images counts as 0 deg (identical), a pixel black
    in only one counts as 90 deg (the largest angle between non-negative vectors, i.e. fully wrong).
    """
    valid = _check(pred, truth, valid)
    if not valid.any():
        return math.nan
    p = pred[valid].astype(np.float64)
    t = truth[valid].astype(np.float64)
    # atan2(|p x t|, p . t) is the same angle as arccos of the normalised dot product, but exact for parallel
    # vectors (arccos of a rounded 1.0 would give ~1e-7 deg for identical pixels).
    ang = np.degrees(np.arctan2(np.linalg.norm(np.cross(p, t), axis=1), np.einsum("ij,ij->i", p, t)))
    p_black, t_black = p.max(axis=1) == 0, t.max(axis=1) == 0
    ang[p_black ^ t_black] = 90.0
    ang[p_black & t_black] = 0.0
    return float(ang.mean())


def _chroma(lab: np.ndarray) -> np.ndarray:
    return np.hypot(lab[..., 1], lab[..., 2])


def chroma_ratio(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean Lab chroma of the prediction over that of the truth (< 1: washed out, > 1: oversaturated).

    ``nan`` when the truth is grey (mean chroma below ``CHROMA_FLOOR``) or nothing is valid.
    """
    valid = _check(pred, truth, valid)
    return _chroma_ratio(_lab(pred), _lab(truth), valid)


def _chroma_ratio(lab_p: np.ndarray, lab_t: np.ndarray, valid: np.ndarray) -> float:
    if not valid.any():
        return math.nan
    ct = float(_chroma(lab_t)[valid].mean())
    return math.nan if ct < CHROMA_FLOOR else float(_chroma(lab_p)[valid].mean()) / ct


def wasserstein_1d(x: np.ndarray, y: np.ndarray) -> float:
    """1-D Wasserstein-1 distance between two equal-size samples: mean |sorted(x) - sorted(y)|."""
    return float(np.mean(np.abs(np.sort(x.ravel()) - np.sort(y.ravel()))))


def ab_wasserstein(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Colour-distribution distance: mean of the 1-D Wasserstein distances of a* and of b* (Lab units).

    It compares the histograms of colour, not where the colours are: a prediction with the right palette in
    the wrong places scores 0. The same valid pixels are taken from both images, so the samples have equal
    size and the distance is exact (no binning).
    """
    valid = _check(pred, truth, valid)
    return _ab_wasserstein(_lab(pred), _lab(truth), valid)


def _ab_wasserstein(lab_p: np.ndarray, lab_t: np.ndarray, valid: np.ndarray,
                    sorted_t: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    if not valid.any():
        return math.nan
    ta, tb = sorted_t or (np.sort(lab_t[..., 1][valid]), np.sort(lab_t[..., 2][valid]))
    pa, pb = np.sort(lab_p[..., 1][valid]), np.sort(lab_p[..., 2][valid])
    return 0.5 * (float(np.mean(np.abs(pa - ta))) + float(np.mean(np.abs(pb - tb))))


def grey_rgb(sar_grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8 SAR display -> (H, W, 3) grey RGB, what an identity 'colorizer' would output."""
    if sar_grey.ndim != 2 or sar_grey.dtype != np.uint8:
        raise SarColorError(f"SAR grey: expected (H, W) uint8, got {sar_grey.shape} {sar_grey.dtype}")
    return np.repeat(sar_grey[..., None], 3, axis=2)


def identity_collapse(pred: np.ndarray, truth: np.ndarray, sar_grey: np.ndarray,
                      valid: np.ndarray | None = None) -> float:
    """1.0 if mean CIEDE2000(pred, grey SAR) < mean CIEDE2000(pred, truth), else 0.0 (``nan`` if no pixel)."""
    valid = _check(pred, truth, valid)
    if not valid.any():
        return math.nan
    grey = grey_rgb(sar_grey)
    to_sar = float(delta_e_map(pred, grey)[valid].mean())
    return float(to_sar < ciede2000(pred, truth, valid))


# ------------------------------------------------------------------------------ colour, structure, fog
def masked_smooth(x: np.ndarray, valid: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Gaussian smoothing (per channel of an (H, W[, C]) array) that ignores invalid pixels: the normalised
    convolution gaussian(x * valid) / gaussian(valid). Pixels with no valid pixel in reach are 0."""
    v = valid.astype(np.float64)
    sig = (sigma, sigma) + (0.0,) * (x.ndim - 2)
    num = gaussian_filter(np.where(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x, 0.0).astype(np.float64),
                          sig, mode="constant")
    den = gaussian_filter(v, sigma, mode="constant")
    den = den.reshape(den.shape + (1,) * (x.ndim - 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / den, 0.0)


def _colour_error(lab_p: np.ndarray, lab_t_smooth: np.ndarray, valid: np.ndarray) -> float:
    if not valid.any():
        return math.nan
    ab = masked_smooth(lab_p[..., 1:], valid)[valid]
    t = lab_t_smooth[valid]
    # float32: 4x faster in skimage, and the mean agrees with float64 to ~1e-8 (checked on 4.3M pixels)
    p = np.concatenate([t[:, :1], ab], axis=1).astype(np.float32)
    return float(deltaE_ciede2000(t.astype(np.float32), p).mean(dtype=np.float64))


def colour_error(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Colour error alone: mean CIEDE2000 over valid pixels between the smoothed truth (sigma ``SIGMA``, per
    Lab channel, nodata-aware) and the smoothed prediction carrying the truth's smoothed L*."""
    valid = _check(pred, truth, valid)
    return _colour_error(_lab(pred), masked_smooth(_lab(truth), valid), valid)


def block_ab(rgb: np.ndarray, valid: np.ndarray | None = None, block: int = LC_BLOCK) -> np.ndarray:
    """The mean a*, b* of each wholly valid ``block`` x ``block`` px block of an (H, W, 3) uint8 image, minus the
    image's mean over those blocks: (n_blocks, 2), in row-major block order (so two images of one size and mask
    give matching rows). An image with no whole valid block gives (0, 2)."""
    valid = _check(rgb, rgb, valid)
    return _block_ab(_lab(rgb), valid, block)


def _block_ab(lab: np.ndarray, valid: np.ndarray, block: int = LC_BLOCK) -> np.ndarray:
    h, w = (lab.shape[0] // block) * block, (lab.shape[1] // block) * block
    if not h or not w:
        return np.zeros((0, 2))
    shape = (h // block, block, w // block, block)
    whole = valid[:h, :w].reshape(shape).all(axis=(1, 3)).ravel()
    ab = lab[:h, :w, 1:].reshape(*shape, 2).mean(axis=(1, 3)).reshape(-1, 2)[whole]
    return ab - ab.mean(axis=0) if len(ab) else ab


def land_cover_colour(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """``land_cover_colour`` of a set of images from their ``block_ab`` arrays (prediction and truth, paired):
    the mean over a* and b* of the pooled Pearson correlation, 0 for a channel whose prediction varies by less
    than ``LC_MIN_STD``. ``nan`` with fewer than 3 blocks or a truth without variation."""
    p, t = np.concatenate([*pred, np.zeros((0, 2))]), np.concatenate([*truth, np.zeros((0, 2))])
    if len(p) != len(t):
        raise SarColorError(f"land-cover colour: {len(p)} prediction blocks but {len(t)} truth blocks")
    if len(p) < 3:
        return math.nan
    out = []
    for c in range(2):
        ps, ts = p[:, c].std(), t[:, c].std()
        if ts < 1e-9:
            return math.nan
        out.append(0.0 if ps < LC_MIN_STD else float(np.corrcoef(p[:, c], t[:, c])[0, 1]))
    return float(np.mean(out))


def colour_spread(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """``colour_spread`` of a set of images from their ``block_ab`` arrays: RMS of the prediction's centred block
    a*b* over the truth's. ``nan`` without blocks or for a truth without variation."""
    p, t = np.concatenate([*pred, np.zeros((0, 2))]), np.concatenate([*truth, np.zeros((0, 2))])
    rms_t = math.sqrt(float((t**2).mean())) if len(t) else 0.0
    return math.sqrt(float((p**2).mean())) / rms_t if rms_t > 1e-9 else math.nan


def _grad_mag(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Gradient magnitude (central differences, per px) of x smoothed with ``masked_smooth``."""
    gy, gx = np.gradient(masked_smooth(x, valid))
    return np.hypot(gx, gy)


def _inner(valid: np.ndarray) -> np.ndarray:
    """Valid pixels whose 3x3 neighbourhood is valid too (their central differences / Laplacian see no nodata)."""
    return binary_erosion(valid, structure=np.ones((3, 3), bool), border_value=0)


def _structure(pred_l: np.ndarray, sar_grad: np.ndarray | None, inner: np.ndarray, valid: np.ndarray) -> float:
    if sar_grad is None or not inner.any():
        return math.nan
    g_sar = sar_grad[inner]
    g_out = _grad_mag(pred_l, valid)[inner]
    if g_sar.std() < FLAT:
        return math.nan  # a flat SAR has no structure to keep
    if g_out.std() < FLAT:
        return 0.0  # a flat output kept none of it
    return float(np.corrcoef(g_out, g_sar)[0, 1])


def structure(pred: np.ndarray, sar_db: np.ndarray, valid: np.ndarray | None = None) -> float:
    """SAR structure kept: Pearson correlation over valid pixels (whose 3x3 neighbourhood is valid) of the
    gradient magnitudes of the prediction's L* and of the log SAR ``sar_db`` (H, W), both smoothed (sigma
    ``SIGMA``, nodata-aware). 0 for a flat output; ``nan`` for a flat SAR or no valid pixel."""
    valid = _check(pred, pred, valid)
    if sar_db.shape != valid.shape:
        raise SarColorError(f"SAR {sar_db.shape} and prediction {valid.shape} differ in size")
    inner = _inner(valid)
    return _structure(_lab(pred)[..., 0], _grad_mag(sar_db, valid), inner, valid)


def _laplace_std(lum: np.ndarray, inner: np.ndarray) -> float:
    return float(laplace(lum)[inner].std()) if inner.any() else math.nan


def _sharpness(pred_l: np.ndarray, truth_lap_std: float, inner: np.ndarray) -> float:
    if not inner.any() or not truth_lap_std >= FLAT:
        return math.nan
    return _laplace_std(pred_l, inner) / truth_lap_std


def sharpness(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Std of the Laplacian (scipy 5-point) of the prediction's L* over the truth's, on valid pixels whose
    3x3 neighbourhood is valid (1: as sharp; < 1 blurred). ``nan`` for a flat truth."""
    valid = _check(pred, truth, valid)
    inner = _inner(valid)
    return _sharpness(_lab(pred)[..., 0], _laplace_std(_lab(truth)[..., 0], inner), inner)


# -------------------------------------------------------------------------------------- realism (SWD)
def _upsampled(coarse: np.ndarray, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The coarser pyramid level brought up to ``shape`` by bilinear interpolation (pixel centres aligned,
    edges clamped: skimage ``resize(order=1, mode="edge")``), evaluated only at pixels (rows, cols): a patch
    needs 49 values, not the whole upsampled image."""
    (h1, w1), (h0, w0) = coarse.shape[:2], shape
    y = np.clip((rows + 0.5) * (h1 / h0) - 0.5, 0, h1 - 1)
    x = np.clip((cols + 0.5) * (w1 / w0) - 0.5, 0, w1 - 1)
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h1 - 1), np.minimum(x0 + 1, w1 - 1)
    extra = (None,) * (coarse.ndim - 2)  # broadcast the weights over channels
    wy, wx = (y - y0)[(..., *extra)], (x - x0)[(..., *extra)]
    top = coarse[y0, x0] * (1 - wx) + coarse[y0, x1] * wx
    bottom = coarse[y1, x0] * (1 - wx) + coarse[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _gauss_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """skimage's Gaussian pyramid (sigma 2/3 px per halving, reflected edges): ``levels`` levels or fewer."""
    return list(pyramid_gaussian(img, max_layer=levels - 1, channel_axis=-1 if img.ndim == 3 else None))


def patch_positions(valid: np.ndarray, seed: int, per_level: int = PATCHES_PER_LEVEL,
                    levels: int = PYRAMID_LEVELS) -> list[np.ndarray]:
    """Top-left corners (n, 2) of the sampled 7x7 patches at each pyramid level (fewer levels for a tiny
    image): only patches whose pixels, and all the pyramid filters reach from them, are valid; at most
    ``per_level`` per level, drawn with ``seed``. They depend only on the mask and the seed, so a prediction
    and its truth are sampled at the same places."""
    # The valid mask through the same pyramid: 1 where no invalid pixel is within the filters' reach.
    full = 1.0 - 1e-6  # float32 rounding of a sum of weights that is 1
    gauss = _gauss_pyramid(valid.astype(np.float32), levels)
    out = []
    for k, g in enumerate(gauss):
        ok = g >= full
        h, w = ok.shape
        if k + 1 < len(gauss):
            # A band-pass level also subtracts the next level, bilinear from the 2x2 coarse pixels around
            # each pixel: require the coarse pixel under it and its 8 neighbours to be fully valid.
            coarse = minimum_filter(gauss[k + 1] >= full, size=3, mode="nearest")
            h1, w1 = coarse.shape
            ri = np.minimum(((np.arange(h) + 0.5) * (h1 / h)).astype(np.intp), h1 - 1)
            ci = np.minimum(((np.arange(w) + 0.5) * (w1 / w)).astype(np.intp), w1 - 1)
            ok &= coarse[np.ix_(ri, ci)]
        if h < PATCH or w < PATCH:
            out.append(np.zeros((0, 2), np.int64))
            continue
        # a top-left corner is usable when its whole patch is: a minimum filter anchored at the corner
        corner = minimum_filter(ok, size=PATCH, origin=-(PATCH // 2), mode="constant", cval=False)
        cand = np.flatnonzero(corner[: h - PATCH + 1, : w - PATCH + 1])
        pick = np.random.default_rng([seed, k]).choice(cand.size, size=min(per_level, cand.size), replace=False)
        out.append(np.stack(np.unravel_index(np.sort(cand[pick]), (h - PATCH + 1, w - PATCH + 1)), axis=1))
    return out


def laplacian_patches(rgb: np.ndarray, positions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The 7x7 patches of an (H, W, 3) uint8 image's Laplacian pyramid (values / 255) at ``positions`` (from
    ``patch_positions``): per level an (n, 7, 7, 3) float32 array. Level k < last is the band-pass
    G_k - up(G_k+1), the last is the low-pass G_last (G: skimage's Gaussian pyramid)."""
    gauss = _gauss_pyramid(rgb.astype(np.float32) / 255.0, len(positions))
    offs = np.arange(PATCH)
    out = []
    for k, pos in enumerate(positions):
        rows = np.broadcast_to(pos[:, :1, None] + offs[None, :, None], (len(pos), PATCH, PATCH))
        cols = np.broadcast_to(pos[:, 1:, None] + offs[None, None, :], (len(pos), PATCH, PATCH))
        band = gauss[k][rows, cols]
        if k + 1 < len(positions):
            band = band - _upsampled(gauss[k + 1], gauss[k].shape[:2], rows, cols)
        out.append(band.astype(np.float32))
    return out


def _sorted_w1(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per column, the 1-D Wasserstein-1 distance of two samples (rows); unequal sizes compare quantiles."""
    if len(x) != len(y):
        q = (np.arange(min(len(x), len(y))) + 0.5) / min(len(x), len(y))
        x, y = np.quantile(x, q, axis=0), np.quantile(y, q, axis=0)
    else:
        x, y = np.sort(x, axis=0), np.sort(y, axis=0)
    return np.abs(x - y).mean(axis=0)


def swd(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray], directions: int = SWD_DIRECTIONS,
        seed: int = SWD_SEED) -> float:
    """Sliced Wasserstein distance between two sets of patches, per level (n, 7, 7, C) arrays, averaged over
    the levels both sets have patches at. Per level, both sets are normalised per channel by the truth's
    patch mean and std (so a washed-out or blurred set keeps its smaller amplitude), flattened, projected
    on ``directions`` random unit vectors (fixed ``seed``), and the 1-D Wasserstein distances of the
    projections are averaged. 0 for identical sets; ``nan`` when no level has patches in both."""
    if len(pred) != len(truth):
        raise SarColorError(f"SWD: {len(pred)} prediction levels but {len(truth)} truth levels")
    dists = []
    for p, t in zip(pred, truth, strict=True):
        if len(p) == 0 or len(t) == 0:
            continue
        if p.shape[1:] != t.shape[1:]:
            raise SarColorError(f"SWD: patch shapes differ ({p.shape[1:]} vs {t.shape[1:]})")
        axes = tuple(range(t.ndim - 1))
        mean, std = t.mean(axis=axes, dtype=np.float64), t.std(axis=axes, dtype=np.float64)
        std = np.where(std > 1e-8, std, 1.0)
        p_n, t_n = ((a - mean) / std for a in (p, t))
        d = p_n[0].size
        rng = np.random.default_rng([seed, d])
        dirs = rng.standard_normal((d, directions))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        dists.append(float(_sorted_w1(p_n.reshape(len(p), d) @ dirs, t_n.reshape(len(t), d) @ dirs).mean()))
    return float(np.mean(dists)) if dists else math.nan


def swd_of_images(pred: Sequence[Sequence[np.ndarray]], truth: Sequence[Sequence[np.ndarray]]) -> float:
    """SWD of a set of images: per image its ``laplacian_patches`` levels (prediction and truth sampled at the
    same places), each level pooled over the images that have it, then ``swd``. ``nan`` for no images."""
    n = max((len(t) for t in truth), default=0)
    if n == 0:
        return math.nan

    def levels(sets: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate([s[k] for s in sets if len(s) > k]) for k in range(n)]

    return swd(levels(pred), levels(truth))


@dataclass
class Reference:
    """The truth side of one image, prepared once and scored against any number of predictions."""

    truth: np.ndarray  # (H, W, 3) uint8
    valid: np.ndarray  # (H, W) bool
    lab: np.ndarray  # Lab of the truth
    grey_lab: np.ndarray  # Lab of the SAR as grey RGB
    sorted_ab: tuple[np.ndarray, np.ndarray] | None = None  # the truth's sorted valid a*, b* (Wasserstein)
    lab_smooth: np.ndarray | None = None  # the truth's Lab smoothed for colour_error
    inner: np.ndarray | None = None  # valid pixels with a valid 3x3 neighbourhood (structure, sharpness)
    sar_grad: np.ndarray | None = None  # gradient magnitude of the smoothed log SAR (None: no structure)
    lap_std: float = math.nan  # std of the Laplacian of the truth's L* (sharpness)
    block_ab: np.ndarray | None = None  # the truth's centred block a*b* (land-cover colour, colour spread)


def prepare(truth: np.ndarray, sar_grey: np.ndarray, valid: np.ndarray | None = None,
            sar_db: np.ndarray | None = None) -> Reference:
    """Cache the truth's (and the SAR's) side so that each extra model costs one conversion. ``sar_db``: the
    log SAR (H, W) for ``structure`` (without it, structure is ``nan``)."""
    valid = _check(truth, truth, valid)
    for what, a in (("SAR", sar_grey), ("log SAR", sar_db)):
        if a is not None and a.shape != truth.shape[:2]:
            raise SarColorError(f"{what} {a.shape} and truth {truth.shape[:2]} differ in size")
    lab = _lab(truth)
    sorted_ab = (np.sort(lab[..., 1][valid]), np.sort(lab[..., 2][valid]))
    inner = _inner(valid)
    sar_grad = None if sar_db is None else _grad_mag(sar_db.astype(np.float64), valid)
    return Reference(truth, valid, lab, _lab(grey_rgb(sar_grey)), sorted_ab, masked_smooth(lab, valid), inner,
                     sar_grad, _laplace_std(lab[..., 0], inner), _block_ab(lab, valid))


def score(pred: np.ndarray, ref: Reference) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """All metrics of one prediction against a prepared reference, its per-pixel CIEDE2000 map and its centred
    block a*b* (``block_ab``, for the set metrics), from one Lab conversion of the prediction."""
    valid = _check(pred, ref.truth, ref.valid)
    lab_p = _lab(pred)
    de = deltaE_ciede2000(ref.lab, lab_p)
    if valid.any():
        de_truth = float(de[valid].mean())
        de_sar = float(deltaE_ciede2000(ref.grey_lab, lab_p)[valid].mean())
        collapse = float(de_sar < de_truth)
    else:
        de_truth = collapse = math.nan
    out = {
        "colour_error": _colour_error(lab_p, ref.lab_smooth, valid),
        "structure": _structure(lab_p[..., 0], ref.sar_grad, ref.inner, valid),
        "sharpness": _sharpness(lab_p[..., 0], ref.lap_std, ref.inner),
        "psnr": psnr(pred, ref.truth, valid),
        "ssim": ssim(pred, ref.truth, valid),
        "ciede2000": de_truth,
        "sam": sam(pred, ref.truth, valid),
        "chroma_ratio": _chroma_ratio(lab_p, ref.lab, valid),
        "ab_wasserstein": _ab_wasserstein(lab_p, ref.lab, valid, ref.sorted_ab),
        "identity_collapse": collapse,
    }
    return out, de, _block_ab(lab_p, valid)


def all_metrics(pred: np.ndarray, truth: np.ndarray, sar_grey: np.ndarray,
                valid: np.ndarray | None = None, sar_db: np.ndarray | None = None) -> dict[str, float]:
    """Every metric in ``METRICS`` for one image (see the module docstring for the definitions)."""
    return score(pred, prepare(truth, sar_grey, valid, sar_db))[0]
