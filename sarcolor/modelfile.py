"""A model file without PyTorch: its config (``ModelConfig``), the shipped models' paths, its metadata.

A model file is a safetensors file whose metadata carries the ``ModelConfig`` as JSON, so that inference
rebuilds the network from the file alone. Both runtimes (``models`` in torch, ``lightnet`` in numpy) read it
through this module, which imports neither torch nor a network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import DEFAULT_OVERLAP, DEFAULT_TILE, check_model_config
from .errors import SarColorError
from .preprocess import POLARIMETRIC_CHANNELS

WEIGHTS_DIR = Path(__file__).parent / "weights"
# The one shipped model: contextnet (colour from the SAR's context statistics, trained on every shared source).
# Other models are loaded from their files (the benchmarks' reference models live in benchmarks/models/).
SHIPPED = {"default": WEIGHTS_DIR / "default.safetensors", "contextnet": WEIGHTS_DIR / "default.safetensors"}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a generator and feed it correctly."""

    # The defaults are the shipped model's architecture; configs/ holds the others'.
    arch: str = "contextnet"  # contextnet, colournet, sarcolornet or pix2pix-seed (the prototype)
    in_channels: int = 1  # 1 (one polarisation); pix2pix-seed: 3 equal channels
    width: int = 64  # contextnet: its MLP's channels; U-Nets: channels at the first level, doubling per level
    enc_depths: tuple[int, ...] = (1, 2, 3, 4)  # blocks per level at 1/2, 1/4, 1/8, 1/16 resolution
    expand: int = 2  # inverted-residual expansion factor
    norm: str = "layer"  # sarcolornet blocks: "layer" (per-pixel LayerNorm), "batch" (BatchNorm) or "none"
    input_norm: str = "logpct"  # "logpct": log + scene percentile stretch; "seed": 8-bit/127.5-1
    polarisation: str = "VH"  # the polarisation the model was trained on (picked from dual-pol inputs)
    tile: int = DEFAULT_TILE  # inference tile size (pixels)
    overlap: int = DEFAULT_OVERLAP  # inference tile overlap (pixels)
    name: str = "contextnet"
    extra: dict = field(default_factory=dict)  # free-form provenance (data, steps, seed)
    # colournet only: the optical renderings it was trained to give (one per kind of source), the one it
    # gives by default, and the annealed-mean temperature of its colour read-out.
    renders: tuple[str, ...] = ()
    render: str = ""
    temperature: float = 0.38
    # contextnet only: the square windows (in 1/4-resolution blocks, odd) of its SAR context statistics.
    windows: tuple[int, ...] = (3, 7, 15, 31, 63)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """A model file's config, checked field by field (``config.check_model_config``): ValueError if bad."""
        return cls(**check_model_config(json.loads(text)))


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {})


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A shipped name or a model file's path -> the file's path; one error line where there is no file."""
    if str(name_or_path) in SHIPPED:
        path = SHIPPED[str(name_or_path)]
        if not path.exists():
            raise SarColorError(f"{path}: model file not found (shipped model {name_or_path!r} is not installed)")
        return path
    p = Path(name_or_path)
    if not p.exists():
        raise SarColorError(f"{p}: model not found (give a .safetensors file or one of: {', '.join(SHIPPED)})")
    if p.is_dir():
        raise SarColorError(f"{p}: is a directory, expected a .safetensors model file")
    if not p.is_file():  # a FIFO or a device: reading it could block for ever
        raise SarColorError(f"{p}: not a regular file, expected a .safetensors model file")
    return p


def stat_channels(cfg: ModelConfig) -> int:
    """Input channels whose context statistics are taken: the normalised SAR; a polarimetric model's absolute dB
    and cross-pol ratio too (``preprocess.polarimetric_input``)."""
    return 3 if cfg.in_channels == POLARIMETRIC_CHANNELS else 1


def flag_channels(cfg: ModelConfig) -> int:
    """Input channels passed on as their block means: a polarimetric model's calibrated and dual-pol flags."""
    return cfg.in_channels - 3 if cfg.in_channels == POLARIMETRIC_CHANNELS else 0


# Earlier names of renderings, still accepted: BigEarthNet's optical is Sentinel-2 L2A reflectance / 3000.
RENDER_ALIASES = {"ben-l2a": "s2-l2a"}


def check_render(cfg: ModelConfig, render: str | None) -> str | None:
    """The optical rendering (whose colour balance the output takes) that ``render`` asks for: ``render`` itself,
    else the model's default; None for a model without renderings. A one-line error for a name the model does
    not know, or any name for a model without renderings, before any work."""
    if not cfg.renders:
        if render is not None:
            raise SarColorError(f"render {render!r}: this model has no renderings (contextnet and colournet have)")
        return None
    name = render or cfg.render or cfg.renders[0]
    name = name if name in cfg.renders else RENDER_ALIASES.get(name, name)
    if name not in cfg.renders:
        raise SarColorError(f"render {name!r}: this model knows {', '.join(cfg.renders)}")
    return name


def read_config(path: str | Path) -> ModelConfig:
    """The ``ModelConfig`` stored in a model file; one-line errors for an unreadable file or a missing config."""
    try:
        meta = read_metadata(path)
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise SarColorError(f"{path}: not a readable safetensors model ({exc.__class__.__name__})") from None
    if "sarcolor_config" not in meta:
        raise SarColorError(f"{path}: safetensors file has no sarcolor config; export it with `sarcolor export`")
    try:
        return ModelConfig.from_json(meta["sarcolor_config"])
    except (ValueError, TypeError, RecursionError) as exc:
        raise SarColorError(f"{path}: its sarcolor config is invalid ({str(exc).splitlines()[0]})") from None
