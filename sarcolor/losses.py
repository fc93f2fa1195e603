"""Loss functions (pure functions of tensors). Images are RGB in [-1, 1], shape (N, 3, H, W)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F

from .colour import delta_e_2000, lab_blocks, rgb_to_lab, soft_encode


def _masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return x.mean()
    v = valid.expand_as(x)
    return (x * v).sum() / v.sum().clamp_min(1.0)


def l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    return _masked_mean((pred - target).abs(), valid)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
              window: int = 7) -> torch.Tensor:
    """1 - SSIM, channel-wise with a uniform window (the cheap variant; the metric uses skimage's)."""
    x, y = (pred + 1) / 2, (target + 1) / 2
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, window, 1, window // 2, count_include_pad=False)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx**2, pool(y * y) - my**2, pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return 1 - _masked_mean(s, valid)


def lab_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute Lab difference / 100: a smooth stand-in for the CIEDE2000 metric."""
    return _masked_mean((rgb_to_lab(pred) - rgb_to_lab(target)).abs(), valid) / 100


def chroma_match(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """|mean chroma(pred) - mean chroma(target)| per image / 100: keeps colours from washing out under L1."""
    def chroma(t: torch.Tensor) -> torch.Tensor:
        lab = rgb_to_lab(t)
        c = (lab[:, 1:2] ** 2 + lab[:, 2:3] ** 2 + 1e-6).sqrt()
        if valid is None:
            return c.mean((1, 2, 3))
        return (c * valid).sum((1, 2, 3)) / valid.sum((1, 2, 3)).clamp_min(1.0)

    return (chroma(pred) - chroma(target)).abs().mean() / 100


# The sarcolor loss's weights beside its L1 term (training's `train.loss_weights` defaults to these).
SARCOLOR_WEIGHTS: Mapping[str, float] = MappingProxyType({"ssim": 0.5, "lab": 1.0, "chroma": 2.0})


def sarcolor_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                  weights: Mapping[str, float] = SARCOLOR_WEIGHTS) -> dict[str, torch.Tensor]:
    """The default model's reconstruction loss: L1 + structure (SSIM) + perceptual colour (Lab) + chroma."""
    parts = {"l1": l1(pred, target, valid), "ssim": ssim_loss(pred, target, valid),
             "lab": lab_l1(pred, target, valid), "chroma": chroma_match(pred, target, valid)}
    total = parts["l1"]
    for k in SARCOLOR_WEIGHTS:  # left to right, as the sum was always written: same floats as before
        total = total + weights[k] * parts[k]
    parts["total"] = total
    return parts


def bce_gan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def pix2pix_generator_loss(d_fake: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                           l1_weight: float = 100.0) -> dict[str, torch.Tensor]:
    """The prototype's generator loss: BCE GAN + 100 * L1."""
    parts = {"gan": bce_gan(d_fake, True), "l1": l1(pred, target)}
    parts["total"] = parts["gan"] + l1_weight * parts["l1"]
    return parts


def pix2pix_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The prototype's discriminator loss: BCE on real + BCE on fake."""
    return bce_gan(d_real, True) + bce_gan(d_fake, False)


def colour_targets(target: torch.Tensor, valid: torch.Tensor, factor: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optical RGB in [-1, 1] (N, 3, H, W) -> its a*b* bin weights (N, Q, h, w) and L* (N, 1, h, w) at
    1/``factor`` resolution, and the reduced pixels whose whole block is valid (N, 1, h, w)."""
    lab, keep = lab_blocks(target, valid, factor)
    return soft_encode(lab[:, 1:]), lab[:, :1], keep


def colour_loss(logits: torch.Tensor, lightness: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                bin_weights: torch.Tensor, factor: int = 4, l_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The colour model's loss: rebalanced cross-entropy over a*b* bins against the soft-encoded truth (vivid,
    correct colour instead of the average of the options; Zhang et al. 2016) + ``l_weight`` x L1 of the
    optical L* / 100 (the optical look's lightness)."""
    bins, light_t, keep = colour_targets(target, valid, factor)
    w = torch.einsum("nqhw,q->nhw", bins, bin_weights.to(bins)).unsqueeze(1)
    ce = -(bins * F.log_softmax(logits.float(), dim=1)).sum(1, keepdim=True)
    parts = {"ce": (ce * w * keep).sum() / keep.sum().clamp_min(1.0),
             "light": _masked_mean((lightness - light_t).abs() / 100, keep)}
    parts["total"] = parts["ce"] + l_weight * parts["light"]
    return parts


AB_LOSSES = ("squared", "ciede2000")  # regress_loss's a*b* terms


def _centred(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Each sample's values minus its mean over its kept positions (N, C, ...)."""
    dims = tuple(range(2, x.dim()))
    mean = (x * keep).sum(dims, keepdim=True) / keep.sum(dims, keepdim=True).clamp_min(1.0)
    return (x - mean) * keep


def contrast_loss(ab: torch.Tensor, lab: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Squared error (/ 100) of the within-sample colour contrasts: each sample's (one scene's blocks) a*b*
    minus its own mean, against the truth's. It scores which places differ in colour from the rest of their
    scene, apart from the scene's overall balance, which the SAR does not determine."""
    return _masked_mean(((_centred(ab, keep) - _centred(lab[:, 1:], keep)) ** 2).sum(1, keepdim=True) / 100, keep)


def spread_loss(ab: torch.Tensor, lab: torch.Tensor, keep: torch.Tensor, target: float = 0.8) -> torch.Tensor:
    """Squared shortfall (/ 100) of each sample's colour spread (RMS of its centred a*b*) below ``target`` x the
    truth's: a loss that does not reward the average, where a regression alone fades every contrast it is
    unsure of toward one tint. Spread beyond the target costs nothing here (the other terms bound it)."""
    dims = tuple(range(1, ab.dim()))
    n = keep.sum(dims).clamp_min(1.0)
    pred = ((_centred(ab, keep) ** 2).sum(dims) / n).add(1e-6).sqrt()
    truth = ((_centred(lab[:, 1:], keep) ** 2).sum(dims) / n).add(1e-6).sqrt()
    return (torch.relu(target * truth - pred) ** 2).mean() / 100


def regress_loss(ab: torch.Tensor, lightness: torch.Tensor, lab: torch.Tensor, keep: torch.Tensor,
                 l_weight: float = 1.0, ab_loss: str = "squared", contrast_weight: float = 0.0,
                 spread_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The context model's loss against the truth's Lab (``lab_blocks``: block means at the model's
    resolution, ``keep`` the valid ones) + ``l_weight`` x L1 of the optical L* / 100. The a*b* term,
    ``ab_loss``: ``squared`` (error / 100: the conditional mean) or ``ciede2000`` (/ 10: CIEDE2000 between the
    truth and the prediction under the truth's L*, the evaluation's colour error; it weighs hue over chroma
    and, like any distance, picks a median-like colour where the SAR cannot say more, not the mean's grey).
    ``contrast_weight`` x ``contrast_loss`` and ``spread_weight`` x ``spread_loss`` score the colour within
    each sample (one scene's blocks) apart from its overall balance."""
    if ab_loss == "ciede2000":
        err = delta_e_2000(lab, torch.cat([lab[:, :1], ab], 1))[:, None] / 10
    elif ab_loss == "squared":
        err = ((ab - lab[:, 1:]) ** 2).sum(1, keepdim=True) / 100
    else:
        raise ValueError(f"ab_loss {ab_loss!r}: use {' or '.join(AB_LOSSES)}")
    parts = {"ab": _masked_mean(err, keep), "light": _masked_mean((lightness - lab[:, :1]).abs() / 100, keep)}
    parts["total"] = parts["ab"] + l_weight * parts["light"]
    if contrast_weight:
        parts["contrast"] = contrast_loss(ab, lab, keep)
        parts["total"] = parts["total"] + contrast_weight * parts["contrast"]
    if spread_weight:
        parts["spread"] = spread_loss(ab, lab, keep)
        parts["total"] = parts["total"] + spread_weight * parts["spread"]
    return parts
