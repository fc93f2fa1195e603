"""Losses: the differentiable Lab against skimage, zero at identity, masks, and the prototype's GAN terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from sarcolor import losses


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


