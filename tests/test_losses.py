"""Losses: the differentiable Lab against skimage, zero at identity, masks, the prototype's GAN terms, and the
context model's regression with its within-scene colour terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab

from sarcolor import losses
from sarcolor.colour import lab_blocks


def rgb_tensor(rgb01: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(rgb01.transpose(2, 0, 1)[None].copy()) * 2 - 1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-4), (torch.float32, 1e-3)])
def test_rgb_to_lab_matches_skimage(dtype: torch.dtype, tol: float) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((9, 11, 3))
    rgb[0, :4] = [[0, 0, 0], [1, 1, 1], [0.02, 0.03, 0.01], [1, 0, 0]]  # black, white, the linear toe, red
    lab = losses.rgb_to_lab(rgb_tensor(rgb).to(dtype))[0].numpy().transpose(1, 2, 0)
    assert np.abs(lab - rgb2lab(rgb)).max() < tol


def test_rgb_to_lab_gradient_is_finite_at_black_and_white() -> None:
    x = torch.tensor([-1.0, 1.0, 0.0]).view(1, 3, 1, 1).repeat(1, 1, 2, 2).requires_grad_(True)
    losses.rgb_to_lab(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_losses_are_zero_for_identical_images() -> None:
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    assert losses.l1(y, y) == 0 and losses.lab_l1(y, y) == 0 and losses.chroma_match(y, y) == 0
    assert abs(float(losses.ssim_loss(y, y))) < 1e-6
    parts = losses.sarcolor_loss(y, y, torch.ones(2, 1, 16, 16))
    assert abs(float(parts["total"])) < 1e-6
    worse = losses.sarcolor_loss(-y, y)["total"]
    closer = losses.sarcolor_loss(0.9 * y, y)["total"]
    assert worse > closer > 0


def test_invalid_pixels_do_not_count() -> None:
    torch.manual_seed(0)
    y = torch.rand(2, 3, 8, 8) * 2 - 1
    pred = torch.rand(2, 3, 8, 8) * 2 - 1
    valid = torch.ones(2, 1, 8, 8)
    valid[:, :, :, :3] = 0
    other = pred.clone()
    other[:, :, :, :3] = torch.rand(2, 3, 8, 3)  # change only invalid pixels
    for fn in (losses.l1, losses.lab_l1, losses.chroma_match):
        assert torch.allclose(fn(pred, y, valid), fn(other, y, valid))
        assert not torch.allclose(fn(pred, y), fn(other, y))
    # the masked L1 is the plain mean over valid pixels
    assert torch.allclose(losses.l1(pred, y, valid), (pred - y)[..., 3:].abs().mean())
    empty = torch.zeros(2, 1, 8, 8)  # nothing valid: zero, not NaN
    assert losses.l1(pred, y, empty) == 0 and torch.isfinite(losses.sarcolor_loss(pred, y, empty)["total"])


def test_prototype_gan_losses() -> None:
    y = torch.zeros(1, 3, 4, 4)
    pred = torch.full((1, 3, 4, 4), 0.5)
    zero_logits = torch.zeros(1, 1, 8, 8)
    g = losses.pix2pix_generator_loss(zero_logits, pred, y)
    assert math.isclose(float(g["gan"]), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(g["l1"]), 0.5) and math.isclose(float(g["total"]), math.log(2) + 50, rel_tol=1e-6)
    d = losses.pix2pix_discriminator_loss(zero_logits, zero_logits)
    assert math.isclose(float(d), 2 * math.log(2), rel_tol=1e-6)
    confident = losses.pix2pix_discriminator_loss(torch.full((1, 1, 8, 8), 9.0), torch.full((1, 1, 8, 8), -9.0))
    assert float(confident) < 1e-3


def test_regress_loss_scores_block_means_of_valid_blocks() -> None:
    """Zero for the truth's own 4x4 block Lab; a block with an invalid pixel does not count; the a*b* term is
    the squared distance / 100, the L* term the absolute difference / 100."""
    torch.manual_seed(0)
    y = torch.rand(1, 3, 8, 8) * 2 - 1
    lab, keep = lab_blocks(y, torch.ones(1, 1, 8, 8), 4)
    assert lab.shape == (1, 3, 2, 2) and keep.all()
    parts = losses.regress_loss(lab[:, 1:], lab[:, :1], lab, keep)
    assert float(parts["total"]) < 1e-6
    off = lab.clone()
    off[:, 1, 0, 0] += 10  # a* 10 off in one block of four: 100 / 100 / 4
    off[:, 0, 1, 1] += 20  # L* 20 off in another: 20 / 100 / 4
    parts = losses.regress_loss(off[:, 1:], off[:, :1], lab, keep, l_weight=2.0)
    assert float(parts["ab"]) == pytest.approx(0.25, rel=1e-4)
    assert float(parts["light"]) == pytest.approx(0.05, rel=1e-4)
    assert float(parts["total"]) == pytest.approx(0.35, rel=1e-4)
    valid = torch.ones(1, 1, 8, 8)
    valid[..., 0, 0] = 0  # one pixel of the first block: that block is out
    parts = losses.regress_loss(off[:, 1:], off[:, :1], lab, lab_blocks(y, valid, 4)[1])
    assert float(parts["ab"]) < 1e-6 and float(parts["light"]) == pytest.approx(20 / 100 / 3, rel=1e-4)


def test_regress_loss_as_ciede2000_scores_colour_under_the_truths_lightness() -> None:
    """ab_loss ciede2000: zero for the truth's own colour whatever the predicted L*; a grey guess costs
    CIEDE2000 / 10 against the truth under its own L*; the gradient pulls a* and b* toward the truth."""
    lab = torch.tensor([[50.0, -20.0, 30.0], [70.0, 10.0, -15.0]]).T.reshape(1, 3, 1, 2)
    keep = torch.ones(1, 1, 1, 2)
    parts = losses.regress_loss(lab[:, 1:], lab[:, :1] + 30, lab, keep, ab_loss="ciede2000")
    assert float(parts["ab"]) < 1e-3
    # a near-grey guess (exact grey has no hue, so no hue gradient: the standard's special case)
    guess = torch.full((1, 2, 1, 2), 0.5, requires_grad=True)
    parts = losses.regress_loss(guess, lab[:, :1], lab, keep, ab_loss="ciede2000")
    near_grey = np.concatenate([lab[0, :1].numpy(), np.full((2, 1, 2), 0.5)]).transpose(1, 2, 0)
    want = deltaE_ciede2000(lab[0].permute(1, 2, 0).numpy(), near_grey)
    assert float(parts["ab"]) == pytest.approx(want.mean() / 10, rel=1e-3)
    parts["total"].backward()
    assert torch.all(torch.sign(guess.grad[0, :, 0]) == -torch.sign(lab[0, 1:, 0]))
    with pytest.raises(ValueError, match="ab_loss 'l3': use squared or ciede2000"):
        losses.regress_loss(guess, lab[:, :1], lab, keep, ab_loss="l3")


def test_contrast_loss_ignores_each_scenes_overall_colour_and_spread_loss_punishes_a_tint() -> None:
    from sarcolor.losses import contrast_loss, regress_loss, spread_loss

    g = torch.Generator().manual_seed(0)
    lab = torch.cat([torch.full((2, 1, 1, 50), 50.0), torch.randn(2, 2, 1, 50, generator=g) * 10], 1)
    keep = torch.ones(2, 1, 1, 50)
    cast = lab[:, 1:] + torch.tensor([5.0, -8.0])[None, :, None, None]  # right contrasts, another balance
    assert contrast_loss(cast, lab, keep).item() < 1e-9
    assert spread_loss(cast, lab, keep).item() < 1e-9
    tint = lab[:, 1:].mean(3, keepdim=True).expand_as(cast)  # each scene's mean colour everywhere
    assert contrast_loss(tint, lab, keep).item() > 0.5
    assert spread_loss(tint, lab, keep).item() > 0.3
    light = torch.full((2, 1, 1, 50), 50.0)
    plain = regress_loss(tint, light, lab, keep)["total"]
    both = regress_loss(tint, light, lab, keep, contrast_weight=1.0, spread_weight=4.0)["total"]
    assert both > plain
