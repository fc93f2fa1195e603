"""Generators and discriminators (torch), and safe (safetensors) save/load.

A model file is a safetensors file whose metadata carries the ``ModelConfig`` (``modelfile``) as JSON, so that
inference rebuilds the network from the file alone (like nanoGPT's ``model_args``). No pickle is ever loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import looks
from .atomic import write_atomic
from .colour import ab_grid, annealed_mean
from .config import check_tile_multiple
from .errors import SarColorError
from .modelfile import (  # noqa: F401  (re-exported: the model file's config lives with its reader)
    SHIPPED,
    WEIGHTS_DIR,
    ModelConfig,
    check_render,
    flag_channels,
    read_config,
    read_metadata,
    resolve_model_path,
    stat_channels,
)
from .tiling import mirror_index


def seed_config() -> ModelConfig:
    """The prototype's configuration: 128x128 tiles, 3 equal input channels in [-1, 1]."""
    return ModelConfig(arch="pix2pix-seed", in_channels=3, input_norm="seed", tile=128, overlap=32,
                       name="pix2pix-seed", enc_depths=(), width=64)


# --------------------------------------------------------------------------------------------------
# sarcolornet: a compact U-Net of inverted-residual (depthwise-separable) blocks, resize-conv upsampling
# --------------------------------------------------------------------------------------------------
class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (NAFNet's LayerNorm2d). Unlike BatchNorm it behaves the same
    in training and inference and never mixes statistics across images or tiles."""

    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel over the channel axis; in channels_last (as inference runs) the permuted view is
        # already contiguous, so nothing is copied.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight.view(-1), self.bias.view(-1), self.eps)
        return y.permute(0, 3, 1, 2)


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "layer":
        return ChannelNorm(c)
    if kind == "none":
        return nn.Identity()
    raise SarColorError(f"unknown norm {kind!r} (expected batch, layer or none)")


class Block(nn.Module):
    """Depthwise 3x3 (optionally dilated) -> norm -> pointwise expand -> GELU -> pointwise project, residual."""

    def __init__(self, c: int, expand: int = 2, dilation: int = 1, norm: str = "layer", pad: str = "zeros"
                 ) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c, bias=norm != "batch",
                            padding_mode=pad)
        self.bn = _norm(norm, c)
        self.pw1 = nn.Conv2d(c, c * expand, 1)
        self.pw2 = nn.Conv2d(c * expand, c, 1)
        # Small residual scale keeps the deep stack stable at the start of training.
        self.scale = nn.Parameter(torch.full((1, c, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.scale, self.pw2(F.gelu(self.pw1(self.bn(self.dw(x))))))


def _pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom and right to multiples of ``m``, mirrored as ``tiling.pad_to_multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        thin = min(h, w) < 2
        rows, cols = (torch.from_numpy(mirror_index(n, n + p, edge=thin)).to(x.device)
                      for n, p in ((h, ph), (w, pw)))
        x = x.index_select(-2, rows).index_select(-1, cols)
    return x


def _unet(net: nn.Module, y: torch.Tensor, bottom: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder/decoder pass shared by sarcolornet and colournet (their ``enc``, ``downs``, ``ups`` and ``dec``
    lists); ``bottom`` is added to the features entering the coarsest level (colournet's rendering)."""
    skips = []
    for i, blocks in enumerate(net.enc):
        if bottom is not None and i == len(net.enc) - 1:
            y = y + bottom.to(y.dtype)
        y = blocks(y)
        if i < len(net.downs):
            skips.append(y)
            y = net.downs[i](y)
    for up, dec in zip(net.ups, net.dec, strict=True):
        skip = skips.pop()
        y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = dec(up(y) + skip)
    return y


class SarColorNet(nn.Module):
    """SAR (1 channel, normalised to about [-1, 1]) -> RGB in [-1, 1]. Fully convolutional at any size.

    The input is pixel-unshuffled to 1/2 resolution without losing a pixel, the work is done at 1/2 .. 1/16
    resolution (colour is low-frequency), and a pixel-shuffle head restores full resolution. Decoder
    upsampling is bilinear + 1x1 conv, which avoids transposed-conv checkerboards.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, d, e = cfg.width, cfg.enc_depths, cfg.expand
        chans = [w * 2**i for i in range(len(d))]
        self.levels = len(d)
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(cfg.in_channels * 4, chans[0], 3, padding=1),
                                  nn.GELU())
        self.enc = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, (c, n) in enumerate(zip(chans, d, strict=True)):
            last = i == len(d) - 1
            # Dilations at the coarsest level widen the receptive field for context, without global pooling
            # (a global op would make colours depend on the tile and show as seams).
            dil = ([1, 2, 4, 8][:n] + [1] * n)[:n] if last else [1] * n
            self.enc.append(nn.Sequential(*[Block(c, e, dl, cfg.norm) for dl in dil]))
            if not last:
                self.downs.append(nn.Conv2d(c, chans[i + 1], 2, stride=2))
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(d) - 1, 0, -1):
            self.ups.append(nn.Conv2d(chans[i], chans[i - 1], 1))
            # No block at the finest level: it would cost a quarter of the full-resolution pixel count.
            self.dec.append(Block(chans[i - 1], e, norm=cfg.norm) if i > 1 else nn.Identity())
        self.head = nn.Sequential(nn.Conv2d(chans[0], 12, 3, padding=1), nn.PixelShuffle(2))

    @property
    def multiple(self) -> int:
        return 2**self.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = _unet(self, self.stem(_pad_to_multiple(x, self.multiple)))
        return torch.tanh(self.head(y)[..., :h, :w])


# --------------------------------------------------------------------------------------------------
# colournet: colour at 1/4 resolution with wide context, lightness from the SAR (the "sar" look)
# --------------------------------------------------------------------------------------------------
class LookNet(nn.Module):
    """A colour model that gives both looks: it predicts a*b* and the optical L* at 1/``factor`` resolution
    (``ab_light``), knows each source's optical rendering (``renders``), and composes the look at full
    resolution from the SAR's own lightness (``forward``). Subclasses build the network and set ``cfg`` and
    ``renders``."""

    factor = 4  # colour resolution: 1/4 of the input's
    cfg: ModelConfig
    renders: list[str]

    @property
    def multiple(self) -> int:
        return self.factor

    def render_index(self, render: str | None) -> int:
        if not self.cfg.renders:  # a model trained without renderings: one colour balance for all
            return 0
        return self.renders.index(check_render(self.cfg, render))

    @staticmethod
    def _render_tensor(x: torch.Tensor, render: torch.Tensor | int | None) -> torch.Tensor:
        if render is None or isinstance(render, int):
            return torch.full((x.shape[0],), render or 0, dtype=torch.long, device=x.device)
        return render

    def raw(self, x: torch.Tensor, render: torch.Tensor | int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """What training scores, at 1/``factor`` resolution: (colour output, L* (N, 1, h, w)); H and W of
        ``x`` multiples of ``multiple``."""
        raise NotImplementedError

    def ab_light(self, x: torch.Tensor, render: torch.Tensor | int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W), H and W multiples of ``multiple`` -> (a*b* (N, 2, H/4, W/4), L* (N, 1, H/4, W/4))."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, look: str = "sar", render: torch.Tensor | int | None = None,
                tone: tuple[float, float] | None = None) -> torch.Tensor:
        """RGB in [-1, 1] in ``look`` ("sar" or "optical"). ``tone``: the sar look's tone range against the
        input's (``SceneStats.tone_map``); the optical look's guide keeps the input's own range."""
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.multiple)
        ab, light = self.ab_light(x, render)
        grey = looks.sar_lightness(x[:, :1], tone if look == "sar" else None)
        if look == "sar":  # the colour under the SAR's own (low-resolution) lightness, then the SAR's grey
            rgb = looks.sar_look(grey, ab, self.factor)
        else:
            opt_grey, chroma = looks.lab_chroma(light, ab)
            up = looks.guided_upsample(grey, torch.cat([opt_grey, chroma], 1), self.factor)
            rgb = looks.with_grey(up[:, :1], up[:, 1:])
        return rgb[..., :h, :w]


class ColourNet(LookNet):
    """SAR (1 channel, normalised) -> a*b* colour classes and optical L* at 1/4 resolution; both looks.

    Colour is low-frequency and needs context (hundreds of metres), so the whole network runs at 1/4 .. 1/16
    resolution: the input is pixel-unshuffled by 4 (no pixel lost: texture is kept as channels), encoded by
    the inverted-residual blocks of sarcolornet with dilations at the coarsest level (about 1 km each way,
    no global pooling so tiles agree; replicate padding, so nothing depends on the crop or tile size), and
    decoded back to 1/4 resolution. The head classifies each
    pixel's a*b* over ``colour.ab_grid()`` bins (trained with rebalanced cross-entropy: vivid colour, not the
    grey average) and regresses the optical L*. A learned embedding of the optical rendering (``renders``:
    each source's colour balance) is added at the coarsest level, so one source's balance is not learned as
    a region's colour. ``forward`` returns RGB in [-1, 1] at full resolution in either look.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, d, e = cfg.width, cfg.enc_depths, cfg.expand
        chans = [w * 2**i for i in range(len(d))]
        self.levels, self.cfg = len(d), cfg
        self.renders = list(cfg.renders) or ["default"]
        self.stem = nn.Sequential(nn.PixelUnshuffle(self.factor),
                                  nn.Conv2d(cfg.in_channels * self.factor**2, chans[0], 3, padding=1,
                                            padding_mode="replicate"), nn.GELU())
        self.enc, self.downs = nn.ModuleList(), nn.ModuleList()
        for i, (c, n) in enumerate(zip(chans, d, strict=True)):
            last = i == len(d) - 1
            dil = ([1, 2, 4, 8][:n] + [1] * n)[:n] if last else [1] * n
            # Replicate padding: a zero border would tell the network where the crop ends, and it would then
            # learn colours that hold for the training crop's size only.
            self.enc.append(nn.Sequential(*[Block(c, e, dl, cfg.norm, pad="replicate") for dl in dil]))
            if not last:
                self.downs.append(nn.Conv2d(c, chans[i + 1], 2, stride=2))
        self.render_embed = nn.Embedding(len(self.renders), chans[-1])
        nn.init.zeros_(self.render_embed.weight)
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        for i in range(len(d) - 1, 0, -1):
            self.ups.append(nn.Conv2d(chans[i], chans[i - 1], 1))
            self.dec.append(Block(chans[i - 1], e, norm=cfg.norm, pad="replicate"))
        self.head = nn.Conv2d(chans[0], len(ab_grid()) + 1, 1)

    @property
    def multiple(self) -> int:
        return self.factor * 2 ** (self.levels - 1)

    def colour(self, x: torch.Tensor, render: torch.Tensor | int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W), H and W multiples of ``multiple`` -> (a*b* logits (N, Q, H/4, W/4), L* (N, 1, ..))."""
        render = self._render_tensor(x, render)
        y = _unet(self, self.stem(x), bottom=self.render_embed(render)[:, :, None, None])
        out = self.head(y)
        return out[:, :-1], 50.0 + 50.0 * torch.tanh(out[:, -1:])

    raw = colour

    def ab_light(self, x: torch.Tensor, render: torch.Tensor | int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, light = self.colour(x, render)
        return annealed_mean(logits, self.cfg.temperature), light


HEAD_POSITIONS = 8192  # block positions per pass of ContextNet's head (its 64-channel temporaries: 2 MB)


class ContextNet(LookNet):
    """SAR (1 channel, normalised) -> a*b* and optical L* at 1/4 resolution from the statistics of the SAR
    around each place; both looks.

    What tells land cover apart in SAR is how bright a place is and how that brightness varies, over tens of
    metres (texture) to a kilometre or two (fields, towns, hills, water bodies). The features are those
    statistics, computed without learned weights: per 4x4 block the mean and standard deviation of the
    normalised dB, then, over square windows of ``windows`` blocks (120 m .. 2.5 km for 10 m pixels), the
    mean of the block means, their standard deviation and the mean block texture. A per-pixel MLP (1x1
    convolutions, ``width`` channels, a learned bias per optical rendering) maps them to a*b* and L*,
    trained as a regression (``train.loss: regress``) on statistics computed once over whole training
    scenes (``data.PixelDataset``), so every window sees the real context it sees at inference. So few
    weights (about 5k) learn land cover, not the training scenes: on held-out scenes of every source its
    colour is closer than the 330k-weight ColourNet's (model card). Windows use replicate padding.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg, self.renders = cfg, list(cfg.renders) or ["default"]
        n_feat = self.stat_channels * (2 + 3 * len(cfg.windows)) + self.flag_channels
        self.inp = nn.Conv2d(n_feat, cfg.width, 1)
        self.render_embed = nn.Embedding(len(self.renders), cfg.width)
        nn.init.zeros_(self.render_embed.weight)
        self.mlp = nn.Sequential(nn.GELU(), nn.Conv2d(cfg.width, cfg.width, 1), nn.GELU(),
                                 nn.Conv2d(cfg.width, 3, 1))

    @property
    def stat_channels(self) -> int:
        return stat_channels(self.cfg)

    @property
    def flag_channels(self) -> int:
        return flag_channels(self.cfg)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) model input -> (N, k x (2 + 3 x len(windows)) + flags, H/4, W/4) context statistics of
        its k ``stat_channels``, grouped by statistic (block means of the k channels, block stds, then per window
        the means, stds and mean block stds), then the ``flag_channels``' block means."""
        k = self.stat_channels
        x = x.float()
        xs = x[:, :k]
        m0 = F.avg_pool2d(xs, self.factor)
        s0 = (F.avg_pool2d(xs * xs, self.factor) - m0 * m0).clamp_min(0).add(1e-6).sqrt()
        feats = [m0, s0]
        for size in self.cfg.windows:
            m, q, t = looks.box_filter(torch.cat([m0, m0 * m0, s0], 1), size // 2).split(k, 1)
            feats += [m, (q - m * m).clamp_min(0).add(1e-6).sqrt(), t]
        if self.flag_channels:
            feats.append(F.avg_pool2d(x[:, k:k + self.flag_channels], self.factor))
        # channels-last as the model's weights at inference: the 1x1 convolutions are then plain matrix products
        return torch.cat(feats, 1).contiguous(memory_format=torch.channels_last)

    def head(self, feats: torch.Tensor, render: torch.Tensor | int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context statistics (N, C, h, w) -> (a*b* (N, 2, h, w), L* (N, 1, h, w))."""
        bias = self.render_embed(self._render_tensor(feats, render))[:, :, None, None]
        n, _, h, w = feats.shape
        # A pixel's colour depends on its own statistics only, so the head runs over bands of rows: its
        # 64-channel temporaries for a whole 1088 px tile are 19 MB each, which the allocator hands back to the
        # system and takes again as fresh pages on every call; bands of HEAD_POSITIONS stay in the cache and
        # are reused (a 1088 px tile's head: 28 -> 12 ms, bit-identical).
        rows = max(1, HEAD_POSITIONS // (n * w))
        out = torch.cat([self._mlp(feats[:, :, i:i + rows], bias) for i in range(0, h, rows)], 2)
        # a*b* in the range of land-cover colours; L* within 0..100
        return 60.0 * torch.tanh(out[:, :2] / 60.0), 50.0 + 50.0 * torch.tanh(out[:, 2:] / 50.0)

    def _mlp(self, feats: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # In place: keeps the convolution's (channels-last) layout, which a broadcast add would not
        return self.mlp(self.inp(feats).add_(bias))

    def raw(self, x: torch.Tensor, render: torch.Tensor | int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x), render)

    ab_light = raw


def _down(cin: int, cout: int, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, dropout: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                               nn.BatchNorm2d(cout)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Pix2PixUNet(nn.Module):
    """The prototype's U-Net at 128x128: 7 down (64-128-256-512-512-512-512), 6 up, tanh. ~41.8M params."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cin = cfg.in_channels if cfg else 3
        downs = [64, 128, 256, 512, 512, 512, 512]
        self.downs = nn.ModuleList([_down(cin, 64, bn=False)] +
                                   [_down(a, b) for a, b in zip(downs[:-1], downs[1:], strict=True)])
        ups = [512, 512, 512, 256, 128, 64]
        skips = downs[-2::-1]  # 512, 512, 512, 256, 128, 64
        self.ups = nn.ModuleList()
        prev = downs[-1]
        for i, (u, s) in enumerate(zip(ups, skips, strict=True)):
            self.ups.append(_up(prev, u, dropout=i < 3))
            prev = u + s
        self.last = nn.ConvTranspose2d(prev, 3, 4, stride=2, padding=1)

    multiple = 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for d in self.downs:
            x = d(x)
            skips.append(x)
        for up, s in zip(self.ups, reversed(skips[:-1]), strict=True):
            x = torch.cat([up(x), s], 1)
        return torch.tanh(self.last(x))


class SeedDiscriminator(nn.Module):
    """The prototype's discriminator: cat(SAR, RGB) -> 4 stride-2 convs (64..512, ReLU) -> 8x8 logits."""

    def __init__(self, sar_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = sar_channels + 3
        for o in (64, 128, 256, 512):
            layers += [nn.Conv2d(c, o, 4, stride=2, padding=1), nn.ReLU()]
            c = o
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, sar: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([sar, rgb], 1))


# The single place where an architecture name becomes a class.
ARCHS = {"sarcolornet": SarColorNet, "colournet": ColourNet, "contextnet": ContextNet, "pix2pix-seed": Pix2PixUNet}
# The architectures that predict colour at reduced resolution and give both looks themselves (``LookNet``).
LOOK_ARCHS = tuple(name for name, cls in ARCHS.items() if issubclass(cls, LookNet))


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.arch not in ARCHS:
        raise SarColorError(f"unknown architecture {cfg.arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[cfg.arch](cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (a temporary file beside it, then renamed), readable as any file
    this user creates is: safetensors makes its files owner-only (0600), so a model exported to a shared
    folder could not be read by the colleagues it was made for."""
    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o666 & ~mask)

    write_atomic(path, write, verify=_verify_safetensors, errors=(SafetensorError,))


def _verify_safetensors(path: Path) -> None:
    """Raises when the file is not a whole safetensors file (its header's offsets past its end, say)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        if names:
            f.get_slice(names[-1])


def save_model(path: str | Path, model: nn.Module, cfg: ModelConfig, card: str = "") -> None:
    """Write inference weights + config (+ optional model card text) atomically as safetensors."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state, path, {"sarcolor_config": cfg.to_json(), "model_card": card})


# A weights file carries a short card (what, data, key numbers, limits; docs/model-card-embedded.md for the
# default): it is served by /api/model and shown on the page. The full card lives in docs/, so editing it never
# rewrites weights; a card is embedded only when a model is exported.
MAX_CARD_BYTES = 4096


def check_card(card: str, origin: str) -> str:
    """``card`` unchanged, or a SarColorError naming ``origin`` when it is too long to embed."""
    size = len(card.encode("utf-8"))
    if size >= MAX_CARD_BYTES:
        raise SarColorError(f"{origin}: the card is {size} bytes; an embedded model card must be under "
                            f"{MAX_CARD_BYTES} (what, data, key numbers, limits; the full card belongs in docs/)")
    return card


def embed_card(src: str | Path, dst: str | Path, card: str) -> None:
    """Write the model file ``src`` to ``dst`` with ``card`` as its model card: tensors and config unchanged."""
    meta = read_metadata(src)
    if "sarcolor_config" not in meta:
        raise SarColorError(f"{src}: not a sarcolor model file (no sarcolor_config in its metadata)")
    save_safetensors(load_file(str(src)), dst, {**meta, "model_card": card})


def load_model(name_or_path: str | Path = "default", device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a generator from a safetensors model file (or a shipped name) in eval mode."""
    path = resolve_model_path(name_or_path)
    cfg = read_config(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt data
        raise SarColorError(f"{path}: not a readable safetensors model ({exc.__class__.__name__})") from None
    model = build_model(cfg)  # the config's bounds keep this under ~400 MB whatever the file says
    try:
        check_tile_multiple(cfg.tile, int(getattr(model, "multiple", 1)))
    except ValueError as exc:
        raise SarColorError(f"{path}: its sarcolor config is invalid ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SarColorError(f"{path}: weights do not match config {cfg.arch}: {str(exc).splitlines()[0]}") from None
    model.eval().to(device)
    return model, cfg


def _log_input(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """A model's input as normalised log SAR (what the sar look's lightness is made from)."""
    if cfg.input_norm == "seed":  # 8-bit display intensity in [-1, 1]: back to dB over a 25 dB range
        db = 10 * torch.log10(((x[:, :1] + 1) * 0.5).clamp_min(1e-3))
        return (db + 12.5) / 12.5
    return x[:, :1]


def predict_look(model: nn.Module, cfg: ModelConfig, x: torch.Tensor, look: str = "sar",
                 render: str | None = None, tone: tuple[float, float] | None = None) -> torch.Tensor:
    """Any generator's output in the chosen look, RGB in [-1, 1]. Models that predict RGB only (sarcolornet,
    pix2pix-seed) give the sar look as their a*b* under the SAR's lightness. ``tone``: the sar look's tone range
    against a ``logpct`` input's (``SceneStats.tone_map``; ignored for other inputs)."""
    looks.check_look(look)
    tone = tone if cfg.input_norm == "logpct" else None
    if isinstance(model, LookNet):
        return model(x, look=look, render=model.render_index(render), tone=tone)
    rgb = model(x)
    return rgb if look == "optical" else looks.sar_look_from_rgb(_log_input(x, cfg), rgb, tone)
