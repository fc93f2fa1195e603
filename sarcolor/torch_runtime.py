"""The engine's PyTorch side: devices, loading a torch model, and running a batch of tiles through it.

Imported by ``engine`` only for models that need torch (every model but the default's numpy runtime, or any
model on a GPU), so that colouring with the default model never imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import models
from .errors import SarColorError
from .modelfile import ModelConfig
from .models import predict_look


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; asking for cuda without one is a user error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SarColorError("--device cuda: no CUDA GPU is available to PyTorch here; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise SarColorError(f"unknown device {device!r}; use auto, cpu or cuda") from None


@functools.lru_cache(maxsize=4)
def load_cached(path: str, mtime_ns: int, device: str) -> tuple[nn.Module, ModelConfig]:
    del mtime_ns  # part of the cache key only: a re-exported model file is loaded again
    return models.load_model(path, device=device)


def is_module(obj: object) -> bool:
    return isinstance(obj, nn.Module)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def inference(model: nn.Module, device: torch.device, threads: int) -> Iterator[None]:
    """eval + channels_last (faster convs on CPU and GPU) + ``threads`` CPU threads; the model's train flag and
    the thread count are restored."""
    was_training, before = model.training, torch.get_num_threads()
    model.eval()
    model.to(memory_format=torch.channels_last)
    if device.type == "cpu" and before != threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
        model.train(was_training)


def predict(model: nn.Module, cfg: ModelConfig, batch: np.ndarray, device: torch.device, tta: bool,
            look: str, render: str | None, tone: tuple[float, float] | None = None) -> np.ndarray:
    """(B, C, h, w) model input -> (B, 3, h, w) float32 RGB in [0, 1] in ``look``; ``tta`` averages 4 flips;
    ``tone``: the scene's ``SceneStats.tone_map``."""
    x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
    flips: list[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if tta else [()]
    y = None
    for dims in flips:
        xi = torch.flip(x, dims).contiguous(memory_format=torch.channels_last) if dims else x
        yi = predict_look(model, cfg, xi, look, render, tone)
        yi = torch.flip(yi, dims) if dims else yi
        y = yi if y is None else y + yi
    assert y is not None
    y = y.float()
    if len(flips) > 1:
        y /= len(flips)
    y = y.add_(1.0).mul_(0.5)  # tanh [-1, 1] -> [0, 1], in place (a full-resolution tile)
    return y.contiguous().cpu().numpy()


def light_disagreement(path: str | Path, model: nn.Module, cfg: ModelConfig, size: int = 192) -> float:
    """The largest difference, in grey levels (of 255), between a model file's numpy runtime (``lightnet``) and
    the torch ``model`` it was written from, over a synthetic scene in both looks and every rendering: what
    ``sarcolor export`` checks, so that the file the light install runs colours as the trained network does."""
    from .lightnet import LightNet

    rng = np.random.default_rng(0)
    fields = np.kron(rng.normal(0, 0.6, (size // 16, size // 16)), np.ones((16, 16)))
    x = np.clip(fields + rng.normal(0, 0.3, (size, size)), -1.5, 1.5).astype(np.float32)
    x = np.repeat(x[None], cfg.in_channels, axis=0)
    light = LightNet.load(path)
    worst = 0.0
    with torch.inference_mode():
        for render in range(max(1, len(cfg.renders))):
            for look in ("sar", "optical"):
                ref = (model.eval()(torch.from_numpy(x)[None], look=look, render=render)[0] + 1) * 127.5
                worst = max(worst, float(np.abs(light.forward(x, look, render) * 255 - ref.numpy()).max()))
    return worst
