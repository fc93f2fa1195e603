"""sarcolor: deep-learning colorization of SAR imagery."""

from .errors import SarColorError


def version() -> str:
    """The installed package's version ("dev" when run from a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _installed

    try:
        return _installed("sarcolor")
    except PackageNotFoundError:
        return "dev"


def load_model(name_or_path: str = "default", device: str = "cpu"):
    """Load a shipped model by name or a .safetensors file; returns (model, config)."""
    from .models import load_model as _load

    return _load(name_or_path, device=device)


def colorize(image, model="default", **kwargs):
    """Colorize an array (H, W) / (bands, H, W) or a file path; returns an (H, W, 3) uint8 RGB array."""
    from .engine import colorize as _colorize

    return _colorize(image, model=model, **kwargs)


def colorize_paths(inputs, output, *, client=None, **kwargs) -> int:
    """Colorize files and folders (the ``sarcolor colorize`` command); returns the exit code.

    With ``client`` (a dask.distributed.Client) the scenes run on its cluster, one task each, with a
    resumable run manifest in the output folder (see ``sarcolor.cluster``).
    """
    if client is None:
        from .engine import colorize_paths as _local

        return _local(inputs, output, **kwargs)
    from .cluster import colorize_paths_distributed

    return colorize_paths_distributed(inputs, output, client=client, **kwargs)


__all__ = ["SarColorError", "colorize", "colorize_paths", "load_model", "version"]
