"""The two looks of a colorized SAR scene, built from a model's colour (torch, per tile, pure functions).

- ``sar`` (the default): every pixel's lightness comes from the SAR itself (speckle-reduced with a Lee filter,
  then a tone curve that keeps water dark and built-up areas bright); hue and chroma come from the model,
  brought to full resolution by a guided filter whose guide is that lightness, so colour edges follow SAR
  edges. Nothing is invented: every edge an analyst sees is a radar measurement (Schmitt et al. 2018).
- ``optical``: the model's full optical-like prediction (its own lightness and colour).

The colour is set in Lab at the model's resolution, then carried to full resolution as BT.601 chroma (Cb, Cr)
beside a full-resolution luma: three cheap passes per pixel instead of a full Lab -> RGB conversion.

``lightlooks`` is the same in numpy (the light inference path) and holds the settings both use.

Inputs are model inputs: SAR normalised by the scene's 1st-99th dB percentiles to about [-1, 1]
(``preprocess.model_input`` with ``input_norm: logpct``), so the tone curve is the same for every tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .colour import lab_to_rgb, rgb_to_lab
from .lightlooks import (  # noqa: F401  (the looks' settings live with the numpy looks; re-exported)
    CC2RGB,
    GREY_BRIGHT,
    GREY_DARK,
    GUIDE_EPS,
    GUIDE_RADIUS,
    LEE_NOISE,
    LEE_SIZE,
    LOOKS,
    RGB2YCC,
    TONE_GAMMA,
    check_look,
)


def box_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, edges replicated (N, C, H, W) -> same shape. Running sums (a cumulative
    sum down the columns, then along the rows): a few operations a pixel whatever the window, 2-15x faster
    than pooling on these sizes. float32 sums over a 1024-px tile keep the mean within ~2e-5 (1/255 is 4e-3)."""
    if r == 0:
        return x
    k = 2 * r + 1
    # One extra replicated row/column in front, so that each window's sum is a difference of two running sums.
    # (in place where the result is a fresh tensor anyway: each full-size temporary costs fresh pages)
    c = F.pad(x, (0, 0, r + 1, r), mode="replicate").cumsum_(-2)
    c = F.pad(c[..., k:, :] - c[..., :-k, :], (r + 1, r, 0, 0), mode="replicate").cumsum_(-1)
    return torch.sub(c[..., k:], c[..., :-k]).mul_(1.0 / (k * k))


def lee_filter(x: torch.Tensor, size: int = LEE_SIZE, noise: float = LEE_NOISE) -> torch.Tensor:
    """Lee's speckle filter on a log-domain image (N, 1, H, W): the local mean where the local variance is
    speckle, the pixel itself where it is structure (edges, point targets)."""
    mean, sq = box_filter(torch.cat([x, x * x], 1), size // 2).split(1, 1)  # one pass for both moments
    var = sq.sub_(mean * mean).clamp_min_(0)
    k = (var - noise * noise).div_(var.clamp_min_(1e-6)).clamp_(0, 1)
    return torch.addcmul(mean, k, x - mean)


def sar_lightness(x: torch.Tensor, tone: tuple[float, float] | None = None) -> torch.Tensor:
    """Normalised SAR (N, 1, H, W) -> display grey (N, 1, H, W) in [0, 1]: Lee-filtered, then the tone curve.
    ``tone``: (gain, offset) from the input's range to the tone curve's (``SceneStats.tone_map``; None: the same)."""
    t = lee_filter(x)
    if tone is not None and tone != (1.0, 0.0):
        t = t.mul_(tone[0]).add_(tone[1])
    t = t.add_(1).mul_(0.5 / 1.15).clamp_(0, 1)  # [-1, 1.3] -> [0, 1]
    return t.pow_(TONE_GAMMA).mul_(GREY_BRIGHT - GREY_DARK).add_(GREY_DARK)


def guided_upsample(guide: torch.Tensor, src: torch.Tensor, factor: int, radius: int = GUIDE_RADIUS,
                    eps: float = GUIDE_EPS, guide_lo: torch.Tensor | None = None) -> torch.Tensor:
    """Fast guided filter (He and Sun 2015): ``src`` (N, C, h, w) at 1/``factor`` resolution -> full resolution,
    locally an affine function of ``guide`` (N, 1, H, W) in [0, 1], so its edges follow the guide's.
    ``guide_lo``: the guide's ``factor``-mean, where the caller has it already."""
    g_lo = F.avg_pool2d(guide, factor) if guide_lo is None else guide_lo
    mean_g, mean_s = box_filter(g_lo, radius), box_filter(src, radius)
    cov = box_filter(g_lo * src, radius) - mean_g * mean_s
    var = box_filter(g_lo * g_lo, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    # both coefficient maps to full resolution in one pass
    ab = F.interpolate(box_filter(torch.cat([a, b], 1), radius), size=guide.shape[-2:], mode="bilinear",
                       align_corners=False)
    a, b = ab.split(src.shape[1], 1)
    return torch.addcmul(b, a, guide)


# BT.601 (JPEG) luma / chroma of gamma-encoded RGB: a linear split, so swapping the luma is three cheap passes
# at full resolution (the colour itself is set at the model's reduced resolution, in Lab).
_RGB2YCC = torch.tensor(RGB2YCC, dtype=torch.float32)
_CC2RGB = torch.tensor(CC2RGB, dtype=torch.float32)


def chroma_of(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (N, 3, H, W) -> its (Cb, Cr) chroma (N, 2, H, W)."""
    return torch.einsum("ij,njhw->nihw", _RGB2YCC[1:].to(rgb), rgb)


def with_grey(grey: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Display grey (N, 1, H, W) as luma + (Cb, Cr) chroma -> RGB in [-1, 1] (the engine's convention).

    Where a colour does not fit at that grey (a vivid tan on dark ground, any colour on a bright point target),
    the grey is moved just enough for it to fit, instead of clipping the RGB channels: clipping would grey out
    the colour there (sih1733's tan: colour error 5.66 -> 5.48 on its held-out strip, other sources within
    0.005). Only the extremes move, so edges stay where they were."""
    offset = torch.einsum("ij,njhw->nihw", _CC2RGB.to(chroma), chroma)
    # the greys at which all three channels stay in [0, 1]; a colour too vivid for any grey is clipped below
    low, high = offset.amin(1, keepdim=True).neg_(), offset.amax(1, keepdim=True).neg_().add_(1)
    return offset.add_(torch.minimum(torch.maximum(grey, low), high)).clamp_(0, 1).mul_(2).sub_(1)


def luma_of(rgb: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) -> its BT.601 luma (N, 1, H, W); linear with weights summing to 1, so RGB in [0, 1]
    gives luma in [0, 1] and RGB in [-1, 1] luma in [-1, 1]."""
    return torch.einsum("ij,njhw->nihw", _RGB2YCC[:1].to(rgb), rgb)


def lab_chroma(lightness: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L* (N, 1, h, w) and a*b* (N, 2, h, w) -> the colour's display grey (luma) and (Cb, Cr)."""
    rgb = lab_to_rgb(torch.cat([lightness, ab], 1))
    return luma_of(rgb), chroma_of(rgb)


def sar_look(grey: torch.Tensor, ab: torch.Tensor, factor: int) -> torch.Tensor:
    """The ``sar`` look from a*b* (N, 2, H/factor, W/factor): that colour set under the SAR's own lightness at
    its resolution, carried to full resolution as chroma by the guided filter, on the SAR's display grey
    (N, 1, H, W) -> RGB in [-1, 1]."""
    lo_grey = F.avg_pool2d(grey, factor)
    lo_l = rgb_to_lab(lo_grey.expand(-1, 3, -1, -1) * 2 - 1)[:, :1]  # L* of that grey
    _, chroma = lab_chroma(lo_l, ab)
    return with_grey(grey, guided_upsample(grey, chroma, factor, guide_lo=lo_grey))


def sar_look_from_rgb(x: torch.Tensor, rgb: torch.Tensor, tone: tuple[float, float] | None = None
                      ) -> torch.Tensor:
    """The ``sar`` look for a model that predicts full RGB only (the earlier models): its chroma, the SAR's grey."""
    return with_grey(sar_lightness(x[:, :1], tone), chroma_of((rgb + 1) * 0.5))

