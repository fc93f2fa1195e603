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


# ------------------------------------------------------------------- colour, structure, sharpness
def lab_image(lab: np.ndarray) -> np.ndarray:
    """Lab (H, W, 3) -> uint8 sRGB (the values chosen stay inside the gamut)."""
    from skimage.color import lab2rgb

    return np.clip(np.rint(lab2rgb(lab) * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scene() -> dict[str, np.ndarray]:
    """A hand-made scene: a log-SAR texture; a truth whose L* follows it and whose colour follows fields."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(7)
    h, w = 96, 112
    sar_db = gaussian_filter(rng.standard_normal((h, w)), 3) * 40 - 12  # smooth fields with edges, dB
    fields = (np.arange(w)[None, :] // 28 + np.arange(h)[:, None] // 32) % 3  # three crop colours
    ab = np.array([(20.0, 30.0), (-25.0, 20.0), (5.0, -25.0)])[fields]
    light = 50 + 3 * (sar_db - sar_db.mean())
    truth = lab_image(np.dstack([np.clip(light, 25, 75), ab]))
    return {"sar_db": sar_db, "truth": truth, "lab": rgb2lab(img_as_float(truth))}


def test_colour_error_ignores_lightness(scene):
    lab = scene["lab"].copy()
    lab[..., 0] = np.clip(lab[..., 0] + 15, 0, 90)  # same a*b*, every pixel 15 L* brighter
    brighter = lab_image(lab)
    assert m.ciede2000(brighter, scene["truth"]) > 8  # the full CIEDE2000 sees the lightness change...
    assert m.colour_error(brighter, scene["truth"]) < 0.6  # ... colour alone sees only 8-bit rounding
    assert m.colour_error(scene["truth"], scene["truth"]) == 0.0


def test_colour_error_of_grey_is_the_truths_chroma_error():
    truth_lab = np.array([60.0, 30.0, -40.0])
    truth = lab_image(np.broadcast_to(truth_lab, (16, 16, 3)))
    grey = solid((90, 90, 90), 16, 16)  # any grey: its lightness is replaced by the truth's
    t = rgb2lab(img_as_float(truth))[0, 0]
    expected = deltaE_ciede2000(t, np.array([t[0], 0.0, 0.0]))  # the same L*, no chroma
    assert expected > 20
    assert m.colour_error(grey, truth) == pytest.approx(expected, abs=0.05)


def test_colour_error_nodata_does_not_bleed():
    truth = solid((40, 160, 60), 24, 24)
    pred = truth.copy()
    pred[:, 12:] = (255, 0, 255)  # wrong, but only where the mask says nodata
    valid = np.ones((24, 24), bool)
    valid[:, 12:] = False
    assert m.colour_error(pred, truth, valid) == pytest.approx(0.0, abs=1e-9)
    assert m.colour_error(pred, truth) > 10  # scored, the magenta half counts (and smears over the seam)


def test_structure_of_sar_in_grey_is_high_and_fog_is_low(scene):
    from scipy.ndimage import gaussian_filter

    db = scene["sar_db"]
    grey = np.rint((db - db.min()) / np.ptp(db) * 255).astype(np.uint8)  # a dB display, as SEN1-2's
    assert m.structure(m.grey_rgb(grey), scene["sar_db"]) > 0.9
    assert m.structure(scene["truth"], scene["sar_db"]) > 0.9  # its L* follows the SAR
    fog = gaussian_filter(scene["truth"].astype(float), (8, 8, 0)).astype(np.uint8)
    assert m.structure(fog, scene["sar_db"]) < 0.5
    assert m.structure(solid((120, 130, 90), 96, 112), scene["sar_db"]) == 0.0  # flat: kept nothing
    assert math.isnan(m.structure(scene["truth"], np.zeros((96, 112))))  # a flat SAR: nothing to keep


def test_structure_ignores_nodata(scene):
    valid = np.ones(scene["sar_db"].shape, bool)
    valid[:, 60:] = False
    garbage = scene["truth"].copy()
    garbage[:, 60:] = np.random.default_rng(0).integers(0, 256, garbage[:, 60:].shape)
    sar = scene["sar_db"].copy()
    sar[:, 60:] = -999.0  # a nodata fill value
    assert m.structure(garbage, sar, valid) == pytest.approx(
        m.structure(scene["truth"][:, :60], scene["sar_db"][:, :60]), abs=1e-9)


def test_sharpness():
    from scipy.ndimage import gaussian_filter

    truth = texture(5, 96)
    assert m.sharpness(truth, truth) == 1.0
    blurred = gaussian_filter(truth.astype(float), (1.5, 1.5, 0)).round().astype(np.uint8)
    assert m.sharpness(blurred, truth) < 0.5
    noisy = np.clip(truth + np.random.default_rng(1).normal(0, 20, truth.shape), 0, 255).astype(np.uint8)
    assert m.sharpness(noisy, truth) > 1.5
    assert math.isnan(m.sharpness(truth, solid((9, 9, 9), 96, 96)))  # a flat truth: no scale


def test_score_includes_the_new_metrics(scene):
    grey = scene["truth"][..., 1].copy()
    got = m.all_metrics(scene["truth"], scene["truth"], grey, sar_db=scene["sar_db"])
    assert got["colour_error"] == 0.0 and got["sharpness"] == 1.0
    assert got["structure"] == pytest.approx(m.structure(scene["truth"], scene["sar_db"]), rel=1e-12)
    assert math.isnan(m.all_metrics(scene["truth"], scene["truth"], grey)["structure"])  # no log SAR given


# -------------------------------------------------------------------------------------------------- SWD
def texture(seed: int, size: int = 128) -> np.ndarray:
    """A random texture generator: smoothed coloured noise."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(np.random.default_rng(seed).standard_normal((size, size, 3)), (1.5, 1.5, 0))
    return np.clip(128 + f * 300, 0, 255).astype(np.uint8)


def patch_set(images: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
    per_image = [m.laplacian_patches(img, m.patch_positions(np.ones(img.shape[:2], bool), s))
                 for img, s in zip(images, seeds, strict=True)]
    return [np.concatenate(level) for level in zip(*per_image, strict=True)]


def test_swd_tells_texture_from_blur():
    from scipy.ndimage import gaussian_filter

    truths = [texture(s, 256) for s in range(4)]
    others = [texture(s, 256) for s in range(10, 14)]  # the same generator, different draws
    blurred = [gaussian_filter(t.astype(float), (2, 2, 0)).astype(np.uint8) for t in truths]
    ref = patch_set(truths, [0, 1, 2, 3])
    # 256 to 32 px band-pass levels: 128 patches per image; the 16 px low-pass has only 10x10 patch corners
    assert [len(level) for level in ref] == [4 * m.PATCHES_PER_LEVEL] * 4 + [4 * 100]
    assert m.swd(ref, ref) == 0.0
    same_kind = m.swd(patch_set(others, [4, 5, 6, 7]), ref)
    blur = m.swd(patch_set(blurred, [0, 1, 2, 3]), ref)
    assert same_kind < 0.4 * blur  # measured: 0.083 vs 0.298
    assert m.swd(patch_set(others, [4, 5, 6, 7]), ref) == same_kind  # deterministic


def test_swd_patches_avoid_nodata():
    valid = np.ones((64, 64), bool)
    valid[:, 32:] = False
    pos = m.patch_positions(valid, 0)
    assert all((p[:, 1] + m.PATCH <= 32).all() for p in pos[:1])  # the finest level stays left of the seam
    img = texture(3, 64)
    img2 = img.copy()
    img2[:, 32:] = 255 - img2[:, 32:]
    for a, b in zip(m.laplacian_patches(img, pos), m.laplacian_patches(img2, pos), strict=True):
        assert np.allclose(a, b, rtol=0, atol=1e-6)  # nodata never reaches a sampled patch (float32 ulps)
    assert len(m.patch_positions(np.zeros((64, 64), bool), 0)[0]) == 0


def test_swd_bad_input():
    with pytest.raises(SarColorError, match="levels"):
        m.swd([np.zeros((3, 7, 7, 3))], [])
    assert math.isnan(m.swd([np.zeros((0, 7, 7, 3))], [np.zeros((5, 7, 7, 3))]))


def test_pyramid_upsampling_is_skimage_resize():
    from skimage.transform import resize

    coarse = np.random.default_rng(0).random((9, 13, 3))
    rows, cols = np.meshgrid(np.arange(17), np.arange(26), indexing="ij")
    expected = resize(coarse, (17, 26, 3), order=1, mode="edge", anti_aliasing=False)
    assert np.allclose(m._upsampled(coarse, (17, 26), rows, cols), expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- land-cover colour
def _patchwork(colours: list[tuple[int, int, int]], layout: np.ndarray, block: int = 16) -> np.ndarray:
    """An image of ``block`` px squares, square (i, j) coloured colours[layout[i, j]]."""
    table = np.array(colours, np.uint8)
    return np.kron(table[layout], np.ones((block, block, 1), np.uint8)).astype(np.uint8)


LAYOUT = np.array([[0, 1, 2, 0], [2, 0, 1, 1], [1, 2, 0, 2]])
COVERS = [(40, 110, 40), (150, 120, 80), (40, 70, 140)]  # forest green, bare tan, water blue


def test_land_cover_colour_right_colours_score_one():
    truth = _patchwork(COVERS, LAYOUT)
    t = m.block_ab(truth)
    assert t.shape == (12, 2) and abs(t.mean()) < 1e-9  # centred per image
    assert m.land_cover_colour([t], [t]) == pytest.approx(1.0)
    assert m.colour_spread([t], [t]) == pytest.approx(1.0)


def test_land_cover_colour_ignores_each_image_overall_tint():
    truth = _patchwork(COVERS, LAYOUT)
    tinted = _patchwork([(c[0] + 30, c[1] + 10, max(c[2] - 30, 0)) for c in COVERS], LAYOUT)  # a warm cast
    score = m.land_cover_colour([m.block_ab(tinted)], [m.block_ab(truth)])
    assert score > 0.9
    assert m.colour_error(tinted, truth) > 5  # while the colour error sees the cast


def test_a_single_tint_scores_zero_and_no_spread():
    truth = _patchwork(COVERS, LAYOUT)
    tint = np.broadcast_to(np.array([120, 130, 100], np.uint8), truth.shape).copy()
    p, t = m.block_ab(tint), m.block_ab(truth)
    assert m.land_cover_colour([p], [t]) == 0.0
    assert m.colour_spread([p], [t]) < 0.01


def test_swapped_colours_score_negative_and_half_as_varied_half_spread():
    truth = _patchwork(COVERS, LAYOUT)
    swapped = _patchwork([COVERS[2], COVERS[1], COVERS[0]], LAYOUT)  # water where forest is
    assert m.land_cover_colour([m.block_ab(swapped)], [m.block_ab(truth)]) < -0.3
    t = m.block_ab(truth)
    assert m.colour_spread([0.5 * t], [t]) == pytest.approx(0.5)


def test_block_ab_keeps_only_wholly_valid_blocks_and_pools_images():
    truth = _patchwork(COVERS, LAYOUT)
    valid = np.ones(truth.shape[:2], bool)
    valid[3, 3] = False  # spoils block (0, 0)
    assert len(m.block_ab(truth, valid)) == 11
    a, b = m.block_ab(truth), m.block_ab(_patchwork(COVERS, LAYOUT[::-1]))
    assert m.land_cover_colour([a, b], [a, b]) == pytest.approx(1.0)
    with pytest.raises(SarColorError, match="prediction blocks"):
        m.land_cover_colour([a], [a, b])
    assert math.isnan(m.land_cover_colour([], []))
