"""ContextNet's forward pass in numpy: the light (torch-free) inference path of the default model.

``models.ContextNet`` (torch) is what training runs; this is the same computation for inference without
PyTorch, read from the same safetensors file (``safetensors.numpy``). Keep the two in step: a change to
ContextNet's features or head must be made here too, and ``tests/test_light.py`` checks that they agree
(random weights, every input channel count).

    features(x, cfg) -> (F, h, w) context statistics of a normalised SAR tile (C, H, W)
    head(feats, weights, render) -> (a*b* (2, h, w), L* (h, w))
    LightNet.load(path) -> the model; LightNet.forward(x, look, render, tone) -> RGB (3, H, W) in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from . import lightlooks
from .config import check_tile_multiple
from .errors import SarColorError
from .lightlooks import Mapper
from .modelfile import ModelConfig, check_render, flag_channels, read_config, stat_channels

FACTOR = 4  # colour resolution: 1/4 of the input's
HEAD_POSITIONS = 2048  # block positions per pass of the head: its 64-channel temporaries stay in the cache

# Abramowitz and Stegun 7.1.26: erf(x) = 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p x), x >= 0;
# absolute error below 1.5e-7 (numpy has no erf, and scipy is too large a dependency for the light install).
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function to within 1.5e-7 (float64)."""
    z = np.abs(x, dtype=np.float64)
    return np.copysign(1.0 - _erfc_scaled(z) * np.exp(-z * z), x)


def _erfc_scaled(z: np.ndarray) -> np.ndarray:
    """erfc(z) exp(z^2) for z >= 0 (A&S 7.1.26's polynomial), in z's dtype."""
    dt = z.dtype.type
    t = z * dt(_ERF_P)
    t += 1
    np.reciprocal(t, out=t)
    acc = t * dt(_ERF_A[4])
    for a in _ERF_A[3::-1]:  # Horner
        acc += dt(a)
        acc *= t
    return acc


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU, x Phi(x), as torch's nn.GELU(), to within 2e-7 x |x| (plus x's own rounding).

    Computed in x's precision: for float32 activations float64 gains nothing measurable (the largest difference
    from torch's float64 GELU is 3.3e-7 either way, the float32 result's rounding) and costs twice the time."""
    dt = x.dtype.type
    z = np.abs(x)
    z *= dt(1 / math.sqrt(2))
    q = _erfc_scaled(z)
    z *= z
    np.negative(z, out=z)
    q *= np.exp(z, out=z)
    q *= np.abs(x)
    q *= dt(0.5)  # |x| (1 - Phi(|x|)); x Phi(x) = max(x, 0) - |x| (1 - Phi(|x|)) for either sign
    return np.subtract(np.maximum(x, dt(0)), q, out=q)


def n_features(cfg: ModelConfig) -> int:
    return stat_channels(cfg) * (2 + 3 * len(cfg.windows)) + flag_channels(cfg)


def features(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(C, H, W) model input, H and W multiples of 4 -> (``n_features``, H/4, W/4) context statistics of its
    ``stat_channels``: per 4x4 block their means and standard deviations, then over square windows of
    ``cfg.windows`` blocks the mean of the block means, their standard deviation and the mean block texture,
    grouped by statistic (as ``models.ContextNet.features``); then the ``flag_channels``' block means."""
    k = stat_channels(cfg)
    xs = x[:k].astype(np.float32, copy=False)
    # A polarimetric model's absolute-dB and ratio channels are zero for an uncalibrated or single-band scene: their
    # statistics are constants, so only the channels that vary go through the box filters (2-3x less work).
    live = [c for c in range(k) if c == 0 or xs[c].any()]
    m0 = np.stack([lightlooks.avg_pool(xs[c], FACTOR) for c in live])
    s0 = _std(np.stack([lightlooks.avg_pool(xs[c] * xs[c], FACTOR) for c in live]), m0)
    out = [_all_channels(m0, live, k, 0.0), _all_channels(s0, live, k, _ZERO_STD)]
    moments = np.concatenate([m0, m0 * m0, s0])
    for size in cfg.windows:
        m, q, t = np.split(lightlooks.box_filter(moments, size // 2), 3)
        out += [_all_channels(m, live, k, 0.0), _all_channels(_std(q, m), live, k, _ZERO_STD),
                _all_channels(t, live, k, _ZERO_STD)]
    flags = x[k:k + flag_channels(cfg)].astype(np.float32, copy=False)
    out += [np.stack([lightlooks.avg_pool(ch, FACTOR) for ch in flags])] if len(flags) else []
    return np.concatenate(out)


_ZERO_STD = np.sqrt(np.float32(1e-6))  # ``_std`` of a channel of zeros


def _all_channels(stat: np.ndarray, live: list[int], k: int, fill: float) -> np.ndarray:
    """One statistic of the ``live`` channels (len(live), h, w) -> of all ``k``, the others' being ``fill``."""
    if len(live) == k:
        return stat
    out = np.full((k, *stat.shape[1:]), fill, np.float32)
    out[live] = stat
    return out


def _std(sq_mean: np.ndarray, mean: np.ndarray) -> np.ndarray:
    var = sq_mean - mean * mean
    np.maximum(var, 0, out=var)
    var += np.float32(1e-6)
    return np.sqrt(var, out=var)


def head(feats: np.ndarray, weights: dict[str, np.ndarray], render: int = 0, map_: Mapper = map
         ) -> tuple[np.ndarray, np.ndarray]:
    """Context statistics (F, h, w) -> (a*b* (2, h, w), L* (h, w)): the per-pixel MLP (1x1 convolutions
    inp -> + rendering bias -> GELU -> conv -> GELU -> conv to 3), a*b* and L* squashed into their ranges."""
    n_feat, h, w = feats.shape
    pos = feats.reshape(n_feat, h * w).T  # (positions, features)
    w_in, w_mid, w_out = (weights[k][:, :, 0, 0].T for k in ("inp.weight", "mlp.1.weight", "mlp.3.weight"))
    b_in = weights["inp.bias"] + weights["render_embed.weight"][render]
    out = np.empty((h * w, 3), np.float32)

    def chunk(i: int) -> None:  # a pixel's colour depends on its own statistics only
        y = gelu(pos[i:i + HEAD_POSITIONS] @ w_in + b_in)
        y = gelu(y @ w_mid + weights["mlp.1.bias"])
        out[i:i + HEAD_POSITIONS] = y @ w_out + weights["mlp.3.bias"]

    list(map_(chunk, range(0, h * w, HEAD_POSITIONS)))
    out = out.T.reshape(3, h, w)
    ab = 60.0 * np.tanh(out[:2] / np.float32(60.0))
    light = 50.0 + 50.0 * np.tanh(out[2] / np.float32(50.0))
    return ab.astype(np.float32), light.astype(np.float32)


@dataclass
class LightNet:
    """The default model (arch ``contextnet``) for numpy inference; ``forward`` gives either look."""

    cfg: ModelConfig
    weights: dict[str, np.ndarray]
    multiple = FACTOR

    @classmethod
    def load(cls, path: str | Path) -> LightNet:
        cfg = read_config(path)
        if not supports(cfg):
            raise SarColorError(f"{path}: model {cfg.arch!r} has no numpy runtime")
        try:
            weights = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise SarColorError(f"{path}: not a readable safetensors model ({exc.__class__.__name__})") from None
        try:
            check_tile_multiple(cfg.tile, FACTOR)
        except ValueError as exc:
            raise SarColorError(f"{path}: its sarcolor config is invalid ({exc})") from None
        w = cfg.width
        expected = {"inp.weight": (w, n_features(cfg), 1, 1), "inp.bias": (w,), "mlp.1.weight": (w, w, 1, 1),
                    "mlp.1.bias": (w,), "mlp.3.weight": (3, w, 1, 1), "mlp.3.bias": (3,),
                    "render_embed.weight": (max(1, len(cfg.renders)), w)}
        if {k: v.shape for k, v in weights.items()} != expected:
            raise SarColorError(f"{path}: weights do not match config {cfg.arch} (tensor names or shapes differ)")
        return cls(cfg, {k: v.astype(np.float32) for k, v in weights.items()})

    def render_index(self, render: str | None) -> int:
        if not self.cfg.renders:  # a model trained without renderings: one colour balance for all
            return 0
        return list(self.cfg.renders).index(check_render(self.cfg, render))

    def ab_light(self, x: np.ndarray, render: int = 0, map_: Mapper = map) -> tuple[np.ndarray, np.ndarray]:
        """(C, H, W) -> (a*b* (2, H/4, W/4), L* (H/4, W/4))."""
        return head(features(x, self.cfg), self.weights, render, map_)

    def forward(self, x: np.ndarray, look: str = "sar", render: int = 0,
                tone: tuple[float, float] | None = None, map_: Mapper = map) -> np.ndarray:
        """A normalised SAR tile (C, H, W), sides multiples of 4 -> RGB (3, H, W) in [0, 1] in ``look``.
        ``map_``: how independent pieces (bands of rows, chunks of the head) are run: a thread pool's ``map``
        runs them in parallel, with the same result."""
        ab, light = self.ab_light(x, render, map_)
        grey = lightlooks.sar_lightness(x[0], tone if look == "sar" else None, map_)
        if look == "sar":
            return lightlooks.sar_look(grey, ab, FACTOR, map_)
        return lightlooks.optical_look(grey, ab, light, FACTOR, map_)


def supports(cfg: ModelConfig) -> bool:
    """Whether the numpy runtime runs this model (ContextNet on normalised log SAR)."""
    return cfg.arch == "contextnet" and cfg.input_norm == "logpct"
