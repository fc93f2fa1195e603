"""Each metric against an independent skimage / numpy / scipy computation, and against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import img_as_float

from sarcolor import metrics as m
from sarcolor.errors import SarColorError


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    truth = rng.integers(1, 256, (40, 48, 3), dtype=np.uint8)  # no black pixel: SAM is plain arccos
    noise = rng.integers(-30, 31, truth.shape)
    pred = np.clip(truth.astype(int) + noise, 1, 255).astype(np.uint8)
    return pred, truth


def solid(rgb: tuple[int, int, int], h: int = 8, w: int = 8) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


# ------------------------------------------------------------------------------ hand-computed cases
def test_identical_images(pair):
    _, truth = pair
    grey = truth[..., 1].copy()
    got = m.all_metrics(truth, truth, grey)
    assert set(got) == set(m.METRICS)
    assert got["psnr"] == math.inf
    assert got["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert got["ciede2000"] == 0.0
    assert got["sam"] == 0.0
    assert got["chroma_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert got["ab_wasserstein"] == 0.0
    assert got["identity_collapse"] == 0.0


def test_constant_offset_psnr():
    truth = np.random.default_rng(0).integers(0, 200, (16, 16, 3), dtype=np.uint8)
    pred = truth + np.uint8(10)  # every channel of every pixel off by 10 -> MSE 100
    assert m.psnr(pred, truth) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    assert m.psnr(pred, truth) == pytest.approx(28.1308, abs=1e-4)


def test_black_vs_white_delta_e_is_100():
    # Only lightness differs (0 vs 100) at mean L 50, where S_L = 1: CIEDE2000 = |dL| = 100.
    assert m.ciede2000(solid((0, 0, 0)), solid((255, 255, 255))) == pytest.approx(100.0, abs=1e-3)


@pytest.mark.parametrize(("p", "t", "deg"), [
    ((255, 0, 0), (0, 255, 0), 90.0),
    ((10, 10, 0), (10, 0, 0), 45.0),
    ((20, 40, 60), (10, 20, 30), 0.0),  # a brighter copy has the same spectral angle
    ((0, 0, 0), (0, 0, 0), 0.0),  # both black: identical
    ((0, 0, 0), (10, 20, 30), 90.0),  # one black: counted as fully wrong
])
def test_sam_hand_cases(p, t, deg):
    assert m.sam(solid(p), solid(t)) == pytest.approx(deg, abs=1e-9)


def test_grey_prediction_has_zero_chroma_ratio():
    assert m.chroma_ratio(solid((90, 90, 90)), solid((200, 30, 40))) == pytest.approx(0.0, abs=1e-3)
    assert math.isnan(m.chroma_ratio(solid((200, 30, 40)), solid((90, 90, 90))))  # grey truth: undefined


def test_ab_wasserstein_ignores_where_colours_are(pair):
    _, truth = pair
    shuffled = truth.reshape(-1, 3)[np.random.default_rng(1).permutation(truth.shape[0] * truth.shape[1])]
    assert m.ab_wasserstein(shuffled.reshape(truth.shape), truth) == pytest.approx(0.0, abs=1e-12)


def test_identity_collapse_flag(pair):
    pred, truth = pair
    grey = truth.mean(axis=2).astype(np.uint8)
    assert m.identity_collapse(m.grey_rgb(grey), truth, grey) == 1.0
    assert m.identity_collapse(pred, truth, grey) == 0.0
    assert m.all_metrics(m.grey_rgb(grey), truth, grey)["identity_collapse"] == 1.0


# ------------------------------------------------------------------------- independent computations
def test_psnr_matches_skimage(pair):
    pred, truth = pair
    ref = peak_signal_noise_ratio(truth, pred, data_range=255)
    assert m.psnr(pred, truth) == pytest.approx(ref, rel=1e-12)


def test_ssim_matches_skimage(pair):
    pred, truth = pair
    ref = structural_similarity(truth, pred, channel_axis=-1, data_range=255)
    assert m.ssim(pred, truth) == pytest.approx(ref, rel=1e-12)
    # and channel-wise: the mean of the three grey-level SSIMs
    per_channel = [structural_similarity(truth[..., c], pred[..., c], data_range=255) for c in range(3)]
    assert m.ssim(pred, truth) == pytest.approx(np.mean(per_channel), rel=1e-12)


def test_ciede2000_matches_skimage(pair):
    pred, truth = pair
    ref = deltaE_ciede2000(rgb2lab(img_as_float(truth)), rgb2lab(img_as_float(pred))).mean()
    assert m.ciede2000(pred, truth) == pytest.approx(ref, rel=1e-12)


def test_sam_matches_numpy_arccos(pair):
    pred, truth = pair
    p, t = pred.reshape(-1, 3).astype(float), truth.reshape(-1, 3).astype(float)
    cos = (p * t).sum(1) / (np.sqrt((p**2).sum(1)) * np.sqrt((t**2).sum(1)))
    ref = np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()
    assert m.sam(pred, truth) == pytest.approx(ref, rel=1e-9)


def test_chroma_ratio_matches_numpy(pair):
    pred, truth = pair
    lp, lt = rgb2lab(img_as_float(pred)), rgb2lab(img_as_float(truth))
    chroma_p = np.sqrt(lp[..., 1] ** 2 + lp[..., 2] ** 2).mean()
    ref = chroma_p / np.sqrt(lt[..., 1] ** 2 + lt[..., 2] ** 2).mean()
    assert m.chroma_ratio(pred, truth) == pytest.approx(ref, rel=1e-12)


def test_ab_wasserstein_matches_scipy(pair):
    pred, truth = pair
    lp, lt = rgb2lab(img_as_float(pred)), rgb2lab(img_as_float(truth))
    ref = 0.5 * (wasserstein_distance(lp[..., 1].ravel(), lt[..., 1].ravel())
                 + wasserstein_distance(lp[..., 2].ravel(), lt[..., 2].ravel()))
    assert m.ab_wasserstein(pred, truth) == pytest.approx(ref, rel=1e-9)


def test_all_metrics_equals_single_functions(pair):
    pred, truth = pair
    grey = truth[..., 0].copy()
    got = m.all_metrics(pred, truth, grey)
    for name in ("psnr", "ssim", "ciede2000", "sam", "chroma_ratio", "ab_wasserstein"):
        assert got[name] == pytest.approx(getattr(m, name)(pred, truth), rel=1e-12), name
    assert got["identity_collapse"] == m.identity_collapse(pred, truth, grey)


# ------------------------------------------------------------------------------------------- masks
def test_masked_pixels_are_excluded(pair):
    pred, truth = pair
    valid = np.zeros(truth.shape[:2], bool)
    valid[5:30, 8:40] = True
    garbage = pred.copy()
    garbage[~valid] = np.random.default_rng(3).integers(0, 256, (int((~valid).sum()), 3))
    sub_p, sub_t = pred[5:30, 8:40], truth[5:30, 8:40]
    for name in ("psnr", "ciede2000", "sam", "chroma_ratio", "ab_wasserstein"):
        f = getattr(m, name)
        # pixel-wise metrics: exactly the value on the valid rectangle alone, whatever is outside it
        assert f(garbage, truth, valid) == pytest.approx(f(sub_p, sub_t), rel=1e-12), name
    # SSIM: only windows lying wholly on valid pixels count, so changing invalid pixels changes nothing
    assert m.ssim(garbage, truth, valid) == pytest.approx(m.ssim(pred, truth, valid), rel=1e-12)
    # ... and on the valid rectangle that is skimage's value for the rectangle cut out
    ref = structural_similarity(sub_t, sub_p, channel_axis=-1, data_range=255)
    assert m.ssim(pred, truth, valid) == pytest.approx(ref, rel=1e-12)


def test_identical_on_valid_pixels_only(pair):
    pred, truth = pair
    valid = np.zeros(truth.shape[:2], bool)
    valid[:, :20] = True
    mixed = np.where(valid[..., None], truth, pred)
    assert m.psnr(mixed, truth, valid) == math.inf
    assert m.ssim(mixed, truth, valid) == pytest.approx(1.0, abs=1e-12)
    assert m.ciede2000(mixed, truth, valid) == 0.0


def test_nothing_valid_gives_nan(pair):
    pred, truth = pair
    none = np.zeros(truth.shape[:2], bool)
    assert all(math.isnan(v) for v in m.all_metrics(pred, truth, truth[..., 0].copy(), none).values())


def test_size_mismatch_raises(pair):
    pred, truth = pair
    with pytest.raises(SarColorError, match="differ in size"):
        m.psnr(pred[:-1], truth)
