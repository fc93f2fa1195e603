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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from .errors import SarColorError

# Column order of reports; also the keys of ``all_metrics``.
METRICS = ("psnr", "ssim", "ciede2000", "sam", "chroma_ratio", "ab_wasserstein", "identity_collapse")
# True where larger is better; None where the target is a value (chroma ratio: 1).
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ciede2000": False, "sam": False, "chroma_ratio": None,
                    "ab_wasserstein": False, "identity_collapse": False}
SSIM_WIN = 7  # skimage's default window; images must be at least this big on both sides
# Exact greys have a Lab chroma of up to 0.005 in skimage's rgb2lab (white-point rounding): a truth whose mean
# chroma is below this floor is grey, and the chroma ratio is undefined for it.
CHROMA_FLOOR = 0.01


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


def _smooth_lab(rgb: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Lab of an image smoothed by a Gaussian (per channel, normalised over valid pixels only)."""
    from scipy.ndimage import gaussian_filter

    w = gaussian_filter(valid.astype(np.float64), sigma)
    out = np.empty(rgb.shape, np.float64)
    for c in range(3):
        out[..., c] = gaussian_filter(np.where(valid, rgb[..., c], 0).astype(np.float64), sigma)
    return rgb2lab(out / np.maximum(w, 1e-9)[..., None] / 255.0)


def colour_error(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None, sigma: float = 2.0
                 ) -> float:
    """Colour error alone: mean CIEDE2000 after both images are smoothed (Gaussian, ``sigma`` px) and the
    prediction's L* is replaced by the truth's, so only hue and chroma are scored (not lightness or texture)."""
    valid = _check(pred, truth, valid)
    if not valid.any():
        return math.nan
    lab_t, lab_p = _smooth_lab(truth, valid, sigma), _smooth_lab(pred, valid, sigma)
    lab_p[..., 0] = lab_t[..., 0]
    return float(deltaE_ciede2000(lab_t, lab_p)[valid].mean())


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


@dataclass
class Reference:
    """The truth side of one image, prepared once and scored against any number of predictions."""

    truth: np.ndarray  # (H, W, 3) uint8
    valid: np.ndarray  # (H, W) bool
    lab: np.ndarray  # Lab of the truth
    grey_lab: np.ndarray  # Lab of the SAR as grey RGB
    sorted_ab: tuple[np.ndarray, np.ndarray] | None = None  # the truth's sorted valid a*, b* (Wasserstein)


def prepare(truth: np.ndarray, sar_grey: np.ndarray, valid: np.ndarray | None = None) -> Reference:
    """Cache the truth's and the grey SAR's Lab so that each extra model costs one conversion."""
    valid = _check(truth, truth, valid)
    if sar_grey.shape != truth.shape[:2]:
        raise SarColorError(f"SAR {sar_grey.shape} and truth {truth.shape[:2]} differ in size")
    lab = _lab(truth)
    sorted_ab = (np.sort(lab[..., 1][valid]), np.sort(lab[..., 2][valid]))
    return Reference(truth, valid, lab, _lab(grey_rgb(sar_grey)), sorted_ab)


def score(pred: np.ndarray, ref: Reference) -> tuple[dict[str, float], np.ndarray]:
    """All metrics of one prediction against a prepared reference, and its per-pixel CIEDE2000 map."""
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
        "psnr": psnr(pred, ref.truth, valid),
        "ssim": ssim(pred, ref.truth, valid),
        "ciede2000": de_truth,
        "sam": sam(pred, ref.truth, valid),
        "chroma_ratio": _chroma_ratio(lab_p, ref.lab, valid),
        "ab_wasserstein": _ab_wasserstein(lab_p, ref.lab, valid, ref.sorted_ab),
        "identity_collapse": collapse,
    }
    return out, de


def all_metrics(pred: np.ndarray, truth: np.ndarray, sar_grey: np.ndarray,
                valid: np.ndarray | None = None) -> dict[str, float]:
    """Every metric in ``METRICS`` for one image (see the module docstring for the definitions)."""
    return score(pred, prepare(truth, sar_grey, valid))[0]
