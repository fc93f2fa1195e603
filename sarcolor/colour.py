"""Colour spaces and quantised a*b* colour (torch, differentiable, pure functions).

sRGB (D65) <-> CIE Lab as skimage computes it, and the a*b* bins of the colour model: a regular grid over the
a*b* plane where land cover lives, a soft (bilinear) encoding of a target colour over its four nearest bins,
class rebalancing weights toward rare colours, and the annealed-mean read-out of Zhang, Isola and Efros
(2016, "Colorful Image Colorization"), which gives vivid colour instead of the grey average of the options.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .lightlooks import RGB2XYZ, WHITE

# sRGB (D65) -> XYZ, and the D65 white point (``lightlooks`` holds them for both runtimes).
_RGB2XYZ = torch.tensor(RGB2XYZ, dtype=torch.float32)
_XYZ2RGB = torch.linalg.inv(_RGB2XYZ)
_WHITE = torch.tensor(WHITE, dtype=torch.float32)

# The a*b* grid of the colour model: land cover (vegetation, soil, water, snow, built-up) lies well inside it.
AB_STEP = 10.0
A_RANGE = (-50.0, 50.0)
B_RANGE = (-50.0, 70.0)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [-1, 1], (N, 3, H, W) -> CIE Lab (L in [0, 100]), differentiable; matches skimage.color.rgb2lab."""
    c = ((rgb + 1) / 2).clamp(0, 1)
    lin = torch.where(c > 0.04045, ((c + 0.055) / 1.055).clamp_min(1e-8) ** 2.4, c / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB2XYZ.to(rgb), lin) / _WHITE.to(rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-8) ** (1 / 3), 7.787 * xyz + 16 / 116)
    L = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([L, a, b], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (N, 3, H, W) -> RGB in [0, 1] (out-of-gamut colours clipped); matches skimage.color.lab2rgb."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], 1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787) * _WHITE.to(lab).view(1, 3, 1, 1)
    lin = torch.einsum("ij,njhw->nihw", _XYZ2RGB.to(lab), xyz).clamp(0, 1)
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-8) ** (1 / 2.4) - 0.055, 12.92 * lin).clamp(0, 1)


def delta_e_2000(lab1: torch.Tensor, lab2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """CIEDE2000 (kL = kC = kH = 1, Sharma et al. 2005) between Lab tensors (N, 3, ...) -> (N, ...);
    differentiable (``eps`` keeps the square roots' gradients finite at zero), matches
    skimage.color.deltaE_ciede2000. As a loss it scores colour as the evaluation's colour error does: vivid
    colours' chroma errors count less than greys', hue errors more than chroma ones."""
    (l1, a1, b1), (l2, a2, b2) = lab1.unbind(1), lab2.unbind(1)
    cbar7 = ((torch.sqrt(a1 * a1 + b1 * b1 + eps) + torch.sqrt(a2 * a2 + b2 * b2 + eps)) / 2) ** 7
    g = 1.5 - 0.5 * torch.sqrt(cbar7 / (cbar7 + 25.0**7))  # 1 + G: a* stretched for near-neutral colours
    a1, a2 = g * a1, g * a2
    c1, c2 = torch.sqrt(a1 * a1 + b1 * b1 + eps), torch.sqrt(a2 * a2 + b2 * b2 + eps)
    h1 = torch.remainder(torch.atan2(b1, a1), 2 * math.pi)
    h2 = torch.remainder(torch.atan2(b2, a2), 2 * math.pi)
    # a colour without hue (grey): no hue difference, and the mean hue is the other's (as the standard says)
    grey = ((a1 == 0) & (b1 == 0)) | ((a2 == 0) & (b2 == 0))
    dh = torch.remainder(h2 - h1 + math.pi, 2 * math.pi) - math.pi  # the hue difference the short way round
    d_hue = 2 * torch.sqrt(c1 * c2) * torch.sin(torch.where(grey, 0.0, dh) / 2)
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    h_mean = (h1 + h2 + torch.where((h1 - h2).abs() > math.pi, 2 * math.pi, 0.0)) / 2  # on the shorter arc
    h_mean = torch.where(grey, h1 + h2, torch.remainder(h_mean, 2 * math.pi))
    t = (1 - 0.17 * torch.cos(h_mean - math.radians(30)) + 0.24 * torch.cos(2 * h_mean)
         + 0.32 * torch.cos(3 * h_mean + math.radians(6)) - 0.20 * torch.cos(4 * h_mean - math.radians(63)))
    rotation = math.radians(30) * torch.exp(-(((torch.rad2deg(h_mean) - 275) / 25) ** 2))
    c7 = c_mean**7
    r_t = -torch.sin(2 * rotation) * 2 * torch.sqrt(c7 / (c7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / torch.sqrt(20 + (l_mean - 50) ** 2)
    dl, dc, dhh = (l2 - l1) / s_l, (c2 - c1) / (1 + 0.045 * c_mean), d_hue / (1 + 0.015 * c_mean * t)
    return torch.sqrt((dl * dl + dc * dc + dhh * dhh + r_t * dc * dhh).clamp_min(0) + eps)


def lab_blocks(rgb: torch.Tensor, valid: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB in [-1, 1] (N, 3, H, W) -> its mean Lab per ``factor`` x ``factor`` block (N, 3, h, w) and the
    blocks that are wholly valid (N, 1, h, w): what the colour models are scored against."""
    return F.avg_pool2d(rgb_to_lab(rgb), factor), (F.avg_pool2d(valid, factor) > 0.999).float()


def ab_grid() -> torch.Tensor:
    """(Q, 2) a*b* centres of the bins, a varying slowest."""
    a = torch.arange(A_RANGE[0], A_RANGE[1] + 1e-6, AB_STEP)
    b = torch.arange(B_RANGE[0], B_RANGE[1] + 1e-6, AB_STEP)
    return torch.cartesian_prod(a, b)


def grid_shape() -> tuple[int, int]:
    na = int(round((A_RANGE[1] - A_RANGE[0]) / AB_STEP)) + 1
    nb = int(round((B_RANGE[1] - B_RANGE[0]) / AB_STEP)) + 1
    return na, nb


def soft_encode(ab: torch.Tensor) -> torch.Tensor:
    """(N, 2, h, w) a*b* -> (N, Q, h, w) bilinear weights over the four nearest bins (sum 1; the weighted mean
    of the bin centres is the colour itself, clipped to the grid)."""
    na, nb = grid_shape()
    ia = ((ab[:, 0] - A_RANGE[0]) / AB_STEP).clamp(0, na - 1 - 1e-4)
    ib = ((ab[:, 1] - B_RANGE[0]) / AB_STEP).clamp(0, nb - 1 - 1e-4)
    a0, b0 = ia.floor(), ib.floor()
    fa, fb = ia - a0, ib - b0
    a0, b0 = a0.long(), b0.long()
    out = ab.new_zeros(ab.shape[0], na * nb, *ab.shape[2:])
    for da, wa in ((0, 1 - fa), (1, fa)):
        for db, wb in ((0, 1 - fb), (1, fb)):
            out.scatter_add_(1, ((a0 + da) * nb + (b0 + db)).unsqueeze(1), (wa * wb).unsqueeze(1))
    return out


def rebalance_weights(histogram: torch.Tensor, mix: float = 0.5, sigma_bins: float = 0.5) -> torch.Tensor:
    """Per-bin loss weights from the training set's bin histogram (Zhang et al.): the distribution smoothed,
    mixed with a uniform one over the bins in use, inverted, and scaled so that its mean under the data is 1.
    Rare colours (green fields, blue water) weigh more than the ubiquitous brown-grey."""
    na, nb = grid_shape()
    p = histogram.double().reshape(1, 1, na, nb)
    p = p / p.sum().clamp_min(1e-12)
    if sigma_bins > 0:
        r = max(1, int(3 * sigma_bins))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma_bins ** 2))
        k = k / k.sum()
        p = F.conv2d(F.pad(p, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        p = F.conv2d(F.pad(p, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    p = p.flatten()
    used = p > 1e-6
    p = p / p.sum()
    w = torch.zeros_like(p)
    w[used] = 1.0 / ((1 - mix) * p[used] + mix / used.sum())
    w = w / (w * p).sum()
    return w.float()


def annealed_mean(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, Q, h, w) logits -> (N, 2, h, w) a*b*: the mean of the softmax re-sharpened by ``temperature``
    (1: the plain mean, the grey average of the options; -> 0: the mode, vivid but noisy)."""
    # Classes last: contiguous in the channels-last layout inference uses, and one matrix product (2x faster).
    p = torch.softmax(logits.float().permute(0, 2, 3, 1) * (1.0 / temperature), dim=-1)
    return (p @ ab_grid().to(p)).permute(0, 3, 1, 2)
