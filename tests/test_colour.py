"""Colour spaces and quantised a*b* colour: conversions against skimage, the soft encoding, rebalancing, read-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab

from sarcolor.colour import (
    ab_grid,
    annealed_mean,
    delta_e_2000,
    grid_shape,
    lab_to_rgb,
    rebalance_weights,
    rgb_to_lab,
    soft_encode,
)


def test_lab_round_trip_matches_skimage() -> None:
    rgb = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(rgb * 2 - 1)
    np.testing.assert_allclose(lab.permute(0, 2, 3, 1).numpy(), rgb2lab(rgb.permute(0, 2, 3, 1).numpy()), atol=1e-3)
    back = lab_to_rgb(lab).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(back, lab2rgb(lab.permute(0, 2, 3, 1).numpy().astype(np.float64)), atol=1e-4)
    np.testing.assert_allclose(back, rgb.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_soft_encoding_sums_to_one_and_keeps_the_colour() -> None:
    ab = torch.tensor([[-23.0, 7.5], [0.0, 0.0], [44.0, -31.0], [-12.5, 61.0]]).T.reshape(1, 2, 2, 2)
    enc = soft_encode(ab)
    assert enc.shape == (1, len(ab_grid()), 2, 2)
    torch.testing.assert_close(enc.sum(1), torch.ones(1, 2, 2))
    assert int((enc > 0).sum()) <= 4 * 4  # at most four bins per pixel
    mean = torch.einsum("nqhw,qc->nchw", enc, ab_grid())
    torch.testing.assert_close(mean, ab, atol=1e-3, rtol=0)  # inside the grid, the weighted centres give it back


def test_soft_encoding_clips_to_the_grid() -> None:
    far = torch.tensor([-200.0, 300.0]).reshape(1, 2, 1, 1)
    mean = torch.einsum("nqhw,qc->nchw", soft_encode(far), ab_grid()).flatten()
    grid = ab_grid()
    assert mean[0] == pytest.approx(float(grid[:, 0].min()), abs=0.01)
    assert mean[1] == pytest.approx(float(grid[:, 1].max()), abs=0.01)


def test_rebalancing_favours_rare_colours_and_averages_one() -> None:
    hist = torch.zeros(len(ab_grid()))
    hist[10], hist[50], hist[90] = 1000.0, 100.0, 1.0
    w = rebalance_weights(hist, mix=0.5, sigma_bins=0)
    assert w[90] > w[50] > w[10] > 0
    p = hist / hist.sum()
    assert float((w * p).sum()) == pytest.approx(1.0, rel=1e-5)
    assert int((w > 0).sum()) == 3  # bins never seen get no weight
    torch.testing.assert_close(rebalance_weights(hist, mix=1.0, sigma_bins=0)[[10, 50, 90]], torch.ones(3))


def test_annealed_mean_moves_from_the_mean_to_the_mode() -> None:
    q = len(ab_grid())
    logits = torch.full((1, q, 1, 1), -20.0)
    green, brown = 40, 100
    logits[0, green], logits[0, brown] = 1.0, 0.5  # two likely colours
    mean = annealed_mean(logits, 1.0).flatten()
    sharp = annealed_mean(logits, 0.05).flatten()
    grid = ab_grid()
    torch.testing.assert_close(sharp, grid[green], atol=0.01, rtol=0)
    between = (grid[green] - mean).norm() + (grid[brown] - mean).norm()
    assert between == pytest.approx(float((grid[green] - grid[brown]).norm()), rel=1e-3)  # on the segment
    assert grid_shape()[0] * grid_shape()[1] == q


def test_delta_e_2000_matches_skimage_and_has_gradients() -> None:
    rng = np.random.default_rng(0)
    a = np.stack([rng.uniform(0, 100, 4000), rng.uniform(-60, 60, 4000), rng.uniform(-60, 60, 4000)], -1)
    b = a + rng.normal(0, 8, a.shape)
    b[:10] = a[:10]  # identical colours: 0, and finite gradients
    b[10:20, 1:] = -a[10:20, 1:]  # opposite hues: the wrap-around of the mean hue
    b[20:30, 1:] = 0.0  # a colour against grey (no hue)
    want = deltaE_ciede2000(a, b)
    t1 = torch.tensor(a).T[None].requires_grad_(True)
    got = delta_e_2000(t1, torch.tensor(b).T[None])
    np.testing.assert_allclose(got[0].detach().numpy(), want, atol=2e-3)
    got.sum().backward()
    assert torch.isfinite(t1.grad).all()
