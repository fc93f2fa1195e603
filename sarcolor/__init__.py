"""sarcolor: deep-learning colorization of SAR imagery."""

from .errors import SarColorError


def load_model(name_or_path: str = "default", device: str = "cpu"):
    """Load a shipped model by name or a .safetensors file; returns (model, config)."""
    from .models import load_model as _load

    return _load(name_or_path, device=device)


def colorize(image, model="default", **kwargs):
    """Colorize an array (H, W) / (bands, H, W) or a file path; returns an (H, W, 3) uint8 RGB array."""
    from .colorize import colorize as _colorize

    return _colorize(image, model=model, **kwargs)


__all__ = ["SarColorError", "colorize", "load_model"]
