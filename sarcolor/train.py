"""Training: ``sarcolor train --config FILE [key=value ...] [--resume] [--init MODEL]``.

One loop serves every objective (``LOSS_ARCHS``): ``loss: regress`` (the shipped contextnet), ``colour``
(colournet), ``sarcolor`` (sarcolornet: L1 + SSIM + Lab + chroma) and ``pix2pix`` (the prototype: BCE GAN + 100 L1,
Adam 2e-4, betas 0.5/0.999).
Checkpoints are single safetensors files written atomically; they hold the generator, EMA, discriminator,
optimiser state, step and RNG state, so ``--resume`` continues exactly: every random draw of step ``s`` (crops,
flips, dropout) is derived from (seed, rank, s), never from how many steps this process has run. Under
``torchrun`` the loop uses DistributedDataParallel (gloo on CPU, nccl on GPU) with a DistributedSampler;
only rank 0 writes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import losses
from .atomic import write_text_atomic
from .colour import ab_grid, rebalance_weights
from .data import CropDataset, PairRef, PixelDataset, build_splits, load_config, read_pair, write_split
from .engine import resolve_device, to_uint8
from .errors import SarColorError
from .models import (
    LOOK_ARCHS,
    ModelConfig,
    SeedDiscriminator,
    _pad_to_multiple,
    build_model,
    check_card,
    count_params,
    embed_card,
    load_model,
    predict_look,
    read_metadata,
    save_model,
    save_safetensors,
    seed_config,
)
from .preprocess import scene_input
from .raster import DUAL
from .tiling import pad_to_multiple

log = logging.getLogger("sarcolor")

DEFAULTS: dict = {
    "run_dir": "runs/default",
    "seed": 0,
    "model": {},  # ModelConfig fields (default: the shipped contextnet); {"arch": "pix2pix-seed"}: the prototype's
    "data": {},
    "train": {
        "loss": "regress",  # one of LOSS_ARCHS (below): the objective, which fixes the model.arch it trains
        "loss_weights": dict(losses.SARCOLOR_WEIGHTS),  # sarcolor loss: L1 + these x (1-SSIM, Lab, chroma)
        "steps": 10000, "max_minutes": 0,  # > 0: stop after this much training time (validation excluded)
        "stop_at": 0,  # > 0: stop (with a checkpoint) at this step without changing the schedule of `steps`
        "batch_size": 8, "crop": 256, "samples_per_epoch": 4000, "augment": True,
        "pixels": 256,  # regress loss: the blocks one sample draws from one whole training pair
        "preload": "auto",  # keep training pairs in memory: true, false (read per sample) or auto (by size)
        "lr": 2e-3, "weight_decay": 1e-4, "warmup": 200, "betas": [0.9, 0.99],
        "ema": 0.999, "threads": 0,
        "light_weight": 1.0, "rebalance": 0.5,  # colour loss: L* term's weight; mix of the rebalancing prior
        "ab_loss": "ciede2000",  # regress loss: a*b* error as CIEDE2000 or squared (losses.regress_loss)
        "contrast_weight": 0.0, "spread_weight": 0.0,  # regress loss: within-scene colour (losses.regress_loss)
        "balance_sources": False,  # draw each data source equally often (else in proportion to its area)
        "ckpt_every": 200, "val_every": 500, "val_crop": 512, "log_every": 20,
    },
}
# Each training objective and the architectures it trains: sarcolor (L1 + SSIM + Lab + chroma) and pix2pix
# (the prototype's GAN + 100 L1) train full-image generators; colour (rebalanced a*b* classes + L*) colournet;
# regress (a*b* and L* regression) contextnet.
LOSS_ARCHS: dict[str, tuple[str, ...]] = {"sarcolor": ("sarcolornet", "pix2pix-seed"),
                                          "pix2pix": ("pix2pix-seed", "sarcolornet"),
                                          "colour": ("colournet",), "regress": ("contextnet",)}
# Settings that change what a run computes; a resume with other values warns (it will not match the run).
_TRAJECTORY = ("seed", "model", "data", "train.loss", "train.steps", "train.batch_size", "train.crop",
               "train.samples_per_epoch", "train.augment", "train.lr", "train.weight_decay", "train.warmup",
               "train.betas", "train.ema", "train.loss_weights", "train.light_weight",
               "train.rebalance", "train.balance_sources", "train.ab_loss", "train.contrast_weight",
               "train.spread_weight")
DIGEST_ENV = "SARCOLOR_RANK_DIGEST"  # a folder: each rank writes rank<N>.json (weights hash, losses) at the end


# ------------------------------------------------------------------------------------------- config
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    import yaml

    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise SarColorError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SarColorError(f"override {item!r}: {p} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SarColorError(f"override {item!r}: cannot parse the value") from None
    return cfg


def resolve_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Defaults <- config file <- key=value overrides; relative paths in it are relative to the file."""
    cfg = _merge(DEFAULTS, load_config(path))
    cfg = apply_overrides(cfg, list(overrides))
    unknown = set(cfg["train"]) - set(DEFAULTS["train"])
    if unknown:
        raise SarColorError(f"unknown train option(s) {sorted(unknown)}; known: {', '.join(DEFAULTS['train'])}")
    _preload(cfg["train"]["preload"])  # a bad value fails here, before the run folder is touched
    cfg["_base"] = str(Path(path).resolve().parent)
    return cfg


def model_config(cfg: dict) -> ModelConfig:
    m = dict(cfg.get("model", {}) or {})
    base = seed_config() if m.get("arch") == "pix2pix-seed" else ModelConfig()
    known = {f.name for f in fields(ModelConfig)}
    bad = set(m) - known
    if bad:
        raise SarColorError(f"unknown model option(s): {sorted(bad)}")
    for key in ("enc_depths", "renders"):
        if key in m:
            m[key] = tuple(m[key])
    return ModelConfig(**{**asdict(base), **m})


def _get(cfg: dict, dotted: str):
    node = cfg
    for k in dotted.split("."):
        node = node.get(k) if isinstance(node, dict) else None
    return node


# -------------------------------------------------------------------------------------- checkpoints
def _flat_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _unflat_optimizer(prefix: str, tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, parts: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer],
                    meta: dict) -> None:
    """Everything needed to resume, in one safetensors file, written to a temp name and renamed, so a kill
    at any moment leaves either the previous checkpoint or the new one, never half of one."""
    tensors = {}
    for name, mod in parts.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}/{k}"] = v.detach().cpu().contiguous()
    opt_meta = {}
    for name, opt in opts.items():
        t, m = _flat_optimizer(f"opt:{name}", opt)
        tensors.update({k: v.detach().cpu().contiguous() for k, v in t.items()})
        opt_meta[name] = m
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {**meta, "optimizers": opt_meta}
    save_safetensors(tensors, path, {"sarcolor_checkpoint": json.dumps(meta, default=str)})


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """-> (tensors, metadata) of a training checkpoint."""
    try:
        meta = json.loads(read_metadata(path)["sarcolor_checkpoint"])
        return load_file(str(path)), meta
    except Exception as exc:
        raise SarColorError(f"{path}: not a readable sarcolor checkpoint ({exc.__class__.__name__})") from None


def _sub(tensors: dict, name: str) -> dict:
    return {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + "/")}


def _checkpoint_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "checkpoint.safetensors" if p.is_dir() else p


def _is_model_file(path: Path) -> bool:
    """An exported (inference) model file, as opposed to a training checkpoint."""
    try:
        meta = read_metadata(path)
    except Exception:  # not safetensors at all: load_checkpoint says so
        return False
    return "sarcolor_config" in meta and "sarcolor_checkpoint" not in meta


def _model_card(mcfg: ModelConfig, meta: dict, n_params: int, log_csv: Path | None) -> str:
    """A model card stub: what the model is and how it was made; the sections below it are for people."""
    cfg = meta.get("config", {})
    sources = [s.get("root") for s in cfg.get("data", {}).get("sources", [])]
    last_val = ""
    if log_csv is not None and log_csv.is_file():
        with open(log_csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_psnr")]
        if rows:
            r = next((r for r in rows if r["step"] == str(meta.get("step"))), rows[-1])
            last_val = (f"- Validation at step {r['step']} (EMA weights, centre crops of the held-out split): "
                        f"PSNR {r['val_psnr']} dB, SSIM {r['val_ssim']}, CIEDE2000 {r['val_ciede2000']}\n")
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return (f"# {mcfg.name}\n\n"
            f"- Architecture: {mcfg.arch}, {n_params:,} parameters; input: {mcfg.in_channels} channel(s), "
            f"normalisation `{mcfg.input_norm}`, polarisation {mcfg.polarisation}; tiles {mcfg.tile} px, "
            f"overlap {mcfg.overlap} px\n"
            f"- Training: {meta.get('step')} steps ({meta.get('elapsed_s', 0) / 60:.1f} min), seed {cfg.get('seed')}, "
            f"loss `{cfg.get('train', {}).get('loss')}`; weights are the EMA of the generator\n"
            f"- Data: {', '.join(map(str, sources)) or 'unknown'}\n{last_val}"
            f"- Config: `{json.dumps(public, default=str)}`\n\n"
            "## Intended use\n\nTODO\n\n## Limitations\n\nTODO (regions, seasons and sensors not in the data)\n")


def _check_light(out: Path, model: nn.Module, cfg: ModelConfig) -> None:
    """A model the light install runs on numpy must colour as the trained network does (within a grey level);
    else the file is removed and the mismatch named (``lightnet`` must follow ``models.ContextNet``)."""
    from .lightnet import supports
    from .torch_runtime import light_disagreement

    if supports(cfg) and (worst := light_disagreement(out, model, cfg)) >= 0.5:
        out.unlink()
        raise SarColorError(f"{out}: the numpy runtime (sarcolor/lightnet.py) differs from the trained {cfg.arch} "
                            f"by {worst:.1f} grey levels; update it to match models.py (file not written)")


def export_checkpoint(checkpoint: str | Path, output: str | Path, tile: int | None = None,
                      card: str | Path | None = None) -> None:
    """Write the inference-only model (EMA generator + config + model card stub) as safetensors.

    ``tile`` replaces the inference tile size stored with the model (training never uses it): larger tiles
    redo less overlap and give each pixel more context, at more memory per tile. ``card``: a short Markdown
    file (under ``MAX_CARD_BYTES``) embedded as the model card instead of the generated summary. Given a model
    file instead of a checkpoint, only its card is replaced (tensors and config unchanged)."""
    ck = _checkpoint_file(checkpoint)
    if not ck.is_file():
        raise SarColorError(f"{checkpoint}: no checkpoint found")
    out = Path(output)
    if out.is_dir():
        raise SarColorError(f"{out}: is a folder; give the output .safetensors file name")
    if not out.parent.is_dir():
        raise SarColorError(f"{out.parent}: output folder does not exist")
    if out.resolve() == ck.resolve():
        raise SarColorError(f"{out}: is the input; write to another file (and move it over the input if meant)")
    card_text = None
    if card is not None:
        try:
            card_text = Path(card).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SarColorError(f"--card {card}: cannot read it ({exc.__class__.__name__})") from None
        check_card(card_text, f"--card {card}")
    if _is_model_file(ck):
        if card_text is None or tile is not None:
            raise SarColorError(f"{ck}: is a model file; only its card can be replaced (--card FILE, no --tile)")
        embed_card(ck, out, card_text)
        log.info("%s -> %s with the card of %s", ck, out, card)
        return
    tensors, meta = load_checkpoint(ck)
    mcfg = ModelConfig.from_json(meta["model_config"])
    if tile is not None:
        if tile < 2 * mcfg.overlap or tile > 4096:
            raise SarColorError(f"--tile {tile}: use {2 * mcfg.overlap} to 4096 px (overlap is {mcfg.overlap} px)")
        mcfg = replace(mcfg, tile=tile)
    model = build_model(mcfg)
    model.load_state_dict(_sub(tensors, "ema"))
    save_model(out, model, mcfg,
               card=card_text or _model_card(mcfg, meta, count_params(model), ck.parent / "log.csv"))
    _check_light(out, model, mcfg)
    log.info("exported %s (step %s) -> %s", ck, meta.get("step"), out)


def _load_generator(gen: nn.Module, state: dict[str, torch.Tensor], mcfg: ModelConfig) -> None:
    """Initial weights into a generator (all of them: one error line naming what does not fit)."""
    missing, unexpected = gen.load_state_dict(state, strict=False)
    if unexpected or missing:
        names = ", ".join((unexpected or missing)[:3])
        raise SarColorError(f"initial weights do not fit {mcfg.arch}: {'unexpected' if unexpected else 'missing'} "
                            f"{names}")


def _load_init(init: str) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Weights + config to fine-tune from: a shipped name, a model file, a checkpoint file or a run folder."""
    p = Path(init)
    if p.is_dir():
        p = p / "checkpoint.safetensors" if (p / "checkpoint.safetensors").is_file() else p / "model.safetensors"
    if p.is_file():
        try:
            is_ckpt = "sarcolor_checkpoint" in read_metadata(p)
        except Exception:
            raise SarColorError(f"--init {init}: not a readable safetensors file") from None
        if is_ckpt:
            tensors, meta = load_checkpoint(p)
            return _sub(tensors, "ema"), ModelConfig.from_json(meta["model_config"])
    model, mcfg = load_model(init)
    return model.state_dict(), mcfg


# ------------------------------------------------------------------------------------ distributed
def _dist_setup(device_pref: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = resolve_device(device_pref).type == "cuda"  # inference's rule and error for auto/cpu/cuda
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)  # before the process group, so nccl binds the right GPU
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return dist.get_rank(), world, torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return 0, 1, torch.device("cuda" if use_cuda else "cpu")


def _step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one step on one rank (dropout): the same after a resume, different per rank."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] % (2**63))


class _Skip(Sampler):
    """Drops the first ``skip`` indices of an epoch: how a resumed run continues mid-epoch."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self):
        for n, i in enumerate(self.base):
            if n >= self.skip:
                yield i

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


# ---------------------------------------------------------------------------------------- trainer
class _Part(nn.Module):
    """A colour model's part that its loss scores, as a module (DistributedDataParallel synchronises the
    gradients of module calls): ``raw`` (colournet: a SAR crop -> its outputs at 1/4 resolution) or ``head``
    (contextnet: precomputed context statistics -> a*b*, L*)."""

    def __init__(self, gen: nn.Module, part: str) -> None:
        super().__init__()
        self.gen, self.part = gen, part

    def forward(self, x: torch.Tensor, render: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.part == "raw":
            return self.gen.raw(_pad_to_multiple(x, self.gen.multiple), render)
        return self.gen.head(x, render)


class Trainer:
    """Generator, its EMA, the optional discriminator, optimisers, and one training step.

    Shared by ``train`` and ``benchmarks/bench_train_speed.py`` so the benchmark times the real step.
    """

    def __init__(self, mcfg: ModelConfig, tc: dict, device: torch.device, *,
                 gen_state: dict[str, torch.Tensor] | None = None) -> None:
        if tc["loss"] not in LOSS_ARCHS:
            raise SarColorError(f"train.loss {tc['loss']!r}: use {', '.join(LOSS_ARCHS)}")
        if mcfg.arch not in LOSS_ARCHS[tc["loss"]]:
            fits = [loss for loss, archs in LOSS_ARCHS.items() if mcfg.arch in archs]
            raise SarColorError(f"train.loss {tc['loss']!r} does not fit model.arch {mcfg.arch!r} (it trains with "
                                f"{' or '.join(fits)})")
        if tc["ab_loss"] not in losses.AB_LOSSES:
            raise SarColorError(f"train.ab_loss {tc['ab_loss']!r}: use {' or '.join(losses.AB_LOSSES)}")
        if tc["loss"] == "sarcolor" and set(tc["loss_weights"]) != set(losses.SARCOLOR_WEIGHTS):
            *first, last = losses.SARCOLOR_WEIGHTS
            raise SarColorError(f"train.loss_weights {tc['loss_weights']}: give {', '.join(first)} and {last}")
        self.mcfg, self.tc, self.device = mcfg, tc, device
        self.gen = build_model(mcfg).to(device)
        if gen_state is not None:
            _load_generator(self.gen, gen_state, mcfg)
        self.ema = copy.deepcopy(self.gen).eval().requires_grad_(False)
        self.pix2pix = tc["loss"] == "pix2pix"
        self.disc: nn.Module | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.pix2pix:
            self.disc = SeedDiscriminator(mcfg.in_channels).to(device)
            self.g_opt: torch.optim.Optimizer = torch.optim.Adam(self.gen.parameters(), lr=tc["lr"],
                                                                 betas=tuple(tc["betas"]))
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]))
        else:
            self.g_opt = torch.optim.AdamW(self.gen.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]),
                                           weight_decay=tc["weight_decay"])
        # The colour and regress losses score a part of the model (``_Part``), the others its picture.
        part = {"colour": "raw", "regress": "head"}.get(tc["loss"])
        self.net: nn.Module = _Part(self.gen, part) if part else self.gen
        self.ddp_net, self.ddp_disc = self.net, self.disc
        self.distributed = False
        # The colour loss's per-bin weights: uniform until set from the training data (set_colour_prior).
        self.bin_weights = torch.ones(len(ab_grid()), device=device) if tc["loss"] == "colour" else None

    def set_colour_prior(self, histogram: torch.Tensor) -> None:
        """The colour loss's per-bin weights, from the training set's a*b* bin histogram."""
        self.bin_weights = rebalance_weights(histogram, mix=float(self.tc["rebalance"])).to(self.device)

    def wrap_ddp(self) -> None:
        """Train through DistributedDataParallel (call after loading weights: DDP broadcasts rank 0's)."""
        self.distributed = True
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp_net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if self.disc is not None:
            self.ddp_disc = nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)

    def modules(self) -> dict[str, nn.Module]:
        return {"gen": self.gen, "ema": self.ema} | ({"disc": self.disc} if self.disc is not None else {})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.g_opt} | ({"d": self.d_opt} if self.d_opt is not None else {})

    def load(self, tensors: dict, meta: dict) -> None:
        """Restore modules and optimisers from checkpoint tensors."""
        try:
            for name, mod in self.modules().items():
                mod.load_state_dict(_sub(tensors, name))
            for name, opt in self.optimizers().items():
                opt.load_state_dict(_unflat_optimizer(f"opt:{name}", tensors, meta["optimizers"][name]))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SarColorError(f"checkpoint does not fit this run's model/loss ({str(exc).splitlines()[0]})"
                                ) from None

    def step(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, step: int, lr: float,
             r: torch.Tensor | None = None) -> float:
        """One optimisation step (generator, then discriminator, then EMA); returns the generator loss.
        ``r``: each sample's optical rendering (index into the model's ``renders``), for colournet."""
        tc = self.tc
        x, y, v = x.to(self.device), y.to(self.device), v.to(self.device)
        for g in self.g_opt.param_groups:
            g["lr"] = lr
        self.gen.train()
        pred = None  # the colour loss scores class logits at 1/4 resolution, not an image
        if r is None:  # colournet's renderings: none given, the first
            r = torch.zeros(len(x), dtype=torch.long)
        if tc["loss"] == "colour":
            logits, light = self.ddp_net(x, r.to(self.device))
            parts = losses.colour_loss(logits, light, y, v, self.bin_weights, self.gen.factor, tc["light_weight"])
        elif tc["loss"] == "regress":  # x: context statistics, y: the truth's block Lab (data.PixelDataset)
            ab, light = self.ddp_net(x, r.to(self.device))
            parts = losses.regress_loss(ab, light, y, v, tc["light_weight"], tc["ab_loss"],
                                        tc["contrast_weight"], tc["spread_weight"])
        else:
            pred = self.ddp_net(x)
            if self.pix2pix:
                # The generator's adversarial term goes through the plain module with D frozen: no gradient is
                # computed for D here, and DDP sees exactly one D forward/backward per step (below).
                self.disc.requires_grad_(False)
                parts = losses.pix2pix_generator_loss(self.disc(x, pred), pred, y)
            else:
                parts = losses.sarcolor_loss(pred, y, v, tc["loss_weights"])
        self.g_opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        self.g_opt.step()
        if self.disc is not None and pred is not None:
            self.disc.requires_grad_(True)
            # Real and fake in one batch: D has no normalisation layer, so this equals two passes.
            logits = self.ddp_disc(torch.cat([x, x]), torch.cat([y, pred.detach()]))
            d_real, d_fake = logits.chunk(2)
            d_loss = losses.pix2pix_discriminator_loss(d_real, d_fake)
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_opt.step()
        if self.distributed:
            # Each rank has just updated its BatchNorm running statistics from its own shard. DDP would
            # broadcast rank 0's at the next forward anyway; doing it now makes every rank hold the same
            # state at each step boundary (what a checkpoint captures, and what the EMA copies).
            for mod in (self.gen, self.disc):
                for b in mod.buffers() if mod is not None else ():
                    dist.broadcast(b, 0)
        with torch.no_grad():  # EMA of weights; buffers (BatchNorm statistics) are copied
            decay = min(tc["ema"], (1 + step) / (10 + step))
            for pe, pg in zip(self.ema.parameters(), self.gen.parameters(), strict=True):
                pe.lerp_(pg, 1 - decay)
            for be, bg in zip(self.ema.buffers(), self.gen.buffers(), strict=True):
                be.copy_(bg)
        return parts["total"].item()


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's parameters and buffers (bitwise identity across ranks or runs)."""
    h = hashlib.sha256()
    for k, t in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------- validation
def _val_items(refs: list[PairRef], mcfg: ModelConfig, size: int, multiple: int
               ) -> list[tuple[torch.Tensor, np.ndarray, str]]:
    """A fixed centre crop of each validation pair, preprocessed once (a cheap running signal; the
    full tiled evaluation is ``sarcolor evaluate``)."""
    items = []
    for ref in refs:
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = sv & ov
        if not valid.any():
            raise SarColorError(f"validation pair {ref.name}: no valid pixel")
        h, w = sar.shape[:2]
        x = scene_input(sar, valid, scale, mcfg.input_norm, mcfg.in_channels)
        s = min(size, h, w) // multiple * multiple  # the model takes multiples of this
        if s == 0:  # a patch smaller than the model's multiple: all of it, mirrored out (scored unpadded)
            s = min(h, w)
            x = pad_to_multiple(x, multiple)
        r, c = (h - s) // 2, (w - s) // 2
        x = x[:, r:r + max(s, multiple), c:c + max(s, multiple)]
        items.append((torch.from_numpy(x.copy())[None], opt[r:r + s, c:c + s], ref.render))
    return items


@torch.no_grad()
def validate(model: nn.Module, items: list, device: torch.device, mcfg: ModelConfig | None = None,
             look: str | None = None) -> dict[str, float]:
    """Scores of one look on the validation crops: PSNR, SSIM, CIEDE2000, the colour error alone (what a colour
    model is selected by), sharpness and SWD over the set, and ``pd``: SWD x CIEDE2000 / 10, realism and
    fidelity together (either alone favours fog or invention).
    ``look``: by default the one each kind of model was trained to give (colournet: sar)."""
    from .metrics import (
        ciede2000,
        colour_error,
        laplacian_patches,
        patch_positions,
        psnr,
        sharpness,
        ssim,
        swd_of_images,
    )

    model.eval()
    mcfg = mcfg or ModelConfig()
    look = look or ("sar" if mcfg.arch in LOOK_ARCHS else "optical")
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "ciede2000": [], "colour_error": [], "sharpness": []}
    patches: dict[str, list[list[np.ndarray]]] = {"pred": [], "truth": []}
    for i, (x, truth, render) in enumerate(items):
        y = predict_look(model, mcfg, x.to(device), look, render or None)[0].float().cpu().numpy()
        y = y[:, :truth.shape[0], :truth.shape[1]]  # a mirrored-out small patch is scored unpadded
        pred = to_uint8((y.transpose(1, 2, 0) + 1) * 0.5)  # as colorize writes it: rounded uint8
        scores["psnr"].append(psnr(pred, truth))
        scores["ssim"].append(ssim(pred, truth))
        scores["ciede2000"].append(ciede2000(pred, truth))
        scores["colour_error"].append(colour_error(pred, truth))
        scores["sharpness"].append(sharpness(pred, truth))
        pos = patch_positions(np.ones(truth.shape[:2], bool), seed=i, per_level=32)
        patches["pred"].append(laplacian_patches(pred, pos))
        patches["truth"].append(laplacian_patches(truth, pos))
    out = {k: float(np.nanmean(v)) for k, v in scores.items()}
    out["swd"] = swd_of_images(patches["pred"], patches["truth"])
    out["pd"] = out["swd"] * out["ciede2000"] / 10
    return out


def colour_histogram(ds: CropDataset, factor: int) -> torch.Tensor:
    """The training pairs' a*b* bin histogram at the colour model's resolution (valid pixels, each pair
    weighted by how often training draws it): the prior that the colour loss rebalances against."""
    hist = torch.zeros(len(ab_grid()), dtype=torch.float64)
    for k in range(len(ds.refs)):
        _, opt, valid = ds._pair(k)
        h, w = valid.shape[0] // factor * factor, valid.shape[1] // factor * factor
        y = torch.from_numpy(opt[:h, :w].astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        v = torch.from_numpy(valid[:h, :w].astype(np.float32))[None, None]
        bins, _, keep = losses.colour_targets(y, v, factor)
        pair = (bins * keep).sum((0, 2, 3)).double()
        hist += pair / pair.sum().clamp_min(1e-9) * float(ds.weights[k])
    return hist


def _preload(value: object) -> bool | None:
    """train.preload -> CropDataset's preload (None: decide by size)."""
    if isinstance(value, bool):
        return value
    if value == "auto":
        return None
    raise SarColorError(f"train.preload must be true, false or auto, not {value!r}")


# ------------------------------------------------------------------------------------------- loop
def _lr_factor(step: int, tc: dict, elapsed: float = 0.0) -> float:
    """Warm-up then cosine decay. With a wall-time budget (max_minutes), progress is whichever of steps or
    time is further along, so the schedule completes within the budget on a busy or slow machine; runs that
    reach their step count first (or have no budget) are purely step-based and exactly reproducible."""
    if tc["loss"] == "pix2pix":
        return 1.0  # the prototype used a constant learning rate
    if step < tc["warmup"]:
        return (step + 1) / tc["warmup"]
    t = (step - tc["warmup"]) / max(1, tc["steps"] - tc["warmup"])
    if tc.get("max_minutes"):
        t = max(t, elapsed / (float(tc["max_minutes"]) * 60))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


_CSV_FIELDS = ["step", "elapsed_s", "images_per_s", "lr", "loss", "val_psnr", "val_ssim", "val_ciede2000",
               "val_colour_error", "val_sharpness", "val_swd", "val_pd"]


def _trim_log(csv_path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint: those steps are about to be redone."""
    if not csv_path.is_file():
        return
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, _CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(csv_path, text.getvalue())


def _best_val(csv_path: Path, key: str = "ciede2000") -> float:
    """The lowest validation score ``key`` logged so far (inf if none): where ``best.safetensors`` stands."""
    if not csv_path.is_file():
        return math.inf
    with open(csv_path, newline="") as f:
        vals = [float(r[f"val_{key}"]) for r in csv.DictReader(f) if r.get(f"val_{key}")]
    return min(vals, default=math.inf)


def _warn_changed(saved: dict, cfg: dict) -> None:
    saved = _merge(DEFAULTS, saved)  # a checkpoint from an older version lacks options added since
    changed = [k for k in _TRAJECTORY if _get(saved, k) != _get(json.loads(json.dumps(cfg, default=str)), k)]
    if changed:
        log.warning("resuming with changed setting(s) %s: the run will not match an uninterrupted one", changed)


def train(cfg: dict, *, resume: bool = False, init: str | None = None, quiet: bool = False,
          device_pref: str = "auto") -> Path:
    """Run (or resume) training as configured; returns the run folder."""
    rank, world, device = _dist_setup(device_pref)
    try:
        return _train(cfg, rank, world, device, resume=resume, init=init, quiet=quiet)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run_dir(cfg: dict, resume: bool) -> tuple[Path, Path]:
    """The run folder (relative to the config file, like the data roots) and its checkpoint's path, checked
    against ``--resume``."""
    run_dir = Path(cfg["run_dir"])
    if not run_dir.is_absolute():
        run_dir = (Path(cfg.get("_base", ".")) / run_dir).resolve()
    ck_path = run_dir / "checkpoint.safetensors"
    if resume and not ck_path.is_file():
        raise SarColorError(f"{run_dir}: nothing to resume (no checkpoint.safetensors)")
    if not resume and ck_path.is_file():
        raise SarColorError(f"{run_dir}: a run exists already; use --resume or another run_dir")
    return run_dir, ck_path


def _starting_point(cfg: dict, ck_path: Path, resume: bool, init: str | None
                    ) -> tuple[ModelConfig, dict | None, dict | None, dict | None]:
    """(model config, checkpoint tensors, checkpoint metadata, initial generator weights): a resumed run's
    own model and state, a fine-tuning's initial weights (``--init``), or the config's fresh model."""
    mcfg = model_config(cfg)
    if resume:
        tensors, meta = load_checkpoint(ck_path)
        _warn_changed(meta.get("config", {}), cfg)
        # the run's model, also when it began from --init
        return ModelConfig.from_json(meta["model_config"]), tensors, meta, None
    if not init:
        return mcfg, None, None, None
    gen_state, icfg = _load_init(init)
    wanted = (cfg.get("model") or {}).get("arch")
    if wanted and wanted != icfg.arch:
        raise SarColorError(f"--init {init}: architecture {icfg.arch} differs from the config's {wanted}")
    # The config may rename the model; everything else is the init's.
    given = cfg.get("model") or {}
    mcfg = replace(icfg, name=mcfg.name if given.get("name") else icfg.name)
    log.info("fine-tuning from %s (%s)", init, icfg.arch)
    return mcfg, None, None, gen_state


def with_single_bands(refs: list[PairRef]) -> list[PairRef]:
    """Dual-pol pairs (``sar_band: VV+VH``) once as they are and once per band alone: a model that reads both
    polarisations where the input has them must still colour the single-band exports analysts also bring."""
    out = list(refs)
    for r in refs:
        if r.sar_band == DUAL:
            out += [replace(r, name=f"{r.name}#{pol}", sar_band=pol) for pol in ("VV", "VH")]
    return out


def _dataset(trainer: Trainer, train_refs: list[PairRef], mcfg: ModelConfig, tc: dict, seed: int) -> CropDataset:
    """The training samples for the loss: context statistics computed once (contextnet, ``regress``: they
    have no weights) or crops."""
    renders = mcfg.renders if mcfg.arch in LOOK_ARCHS else None
    if tc["loss"] == "regress":
        return PixelDataset(
            with_single_bands(train_refs), features=trainer.gen.features, factor=trainer.gen.factor,
            pixels=int(tc["pixels"]), input_norm=mcfg.input_norm, samples_per_epoch=tc["samples_per_epoch"],
            seed=seed, renders=renders, balance_sources=bool(tc["balance_sources"]), in_channels=mcfg.in_channels)
    return CropDataset(train_refs, crop=tc["crop"], input_norm=mcfg.input_norm,
                       in_channels=mcfg.in_channels, samples_per_epoch=tc["samples_per_epoch"], seed=seed,
                       augment=bool(tc["augment"]), preload=_preload(tc["preload"]), renders=renders,
                       balance_sources=bool(tc["balance_sources"]))


def _open_logs(csv_path: Path, resume: bool, step: int) -> Any:
    """log.csv ready to append to (trimmed to ``step`` on resume, with its header), and a TensorBoard writer
    beside it (None without TensorBoard)."""
    if resume:
        _trim_log(csv_path, step)
    if not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(_CSV_FIELDS)
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(csv_path.parent / "tb"), purge_step=step if resume else None)
    except Exception:  # tensorboard is optional
        return None


def _log_row(csv_path: Path, tb: Any, row: dict) -> None:
    """One row of log.csv, and its numbers to TensorBoard when there is a writer."""
    with open(csv_path, "a", newline="") as f:
        csv.DictWriter(f, _CSV_FIELDS).writerow(row)
    if tb is not None:
        for k, val in row.items():
            if k != "step" and val is not None:
                tb.add_scalar(k, val, row["step"])


def _write_digest(out: Path, trainer: Trainer, rank: int, world: int, step: int, losses: list[float]) -> None:
    """For the multi-process test: did every rank end with the same weights? (rank<N>.json in ``out``)"""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": world, "step": step, "gen": weights_digest(trainer.gen),
        "ema": weights_digest(trainer.ema),
        "disc": weights_digest(trainer.disc) if trainer.disc is not None else None, "losses": losses}))


@dataclass
class _TrainingRun:
    """One rank's view of a training run: what its setup, step loop and wrap-up share."""

    cfg: dict
    rank: int
    world: int
    device: torch.device
    run_dir: Path
    ck_path: Path
    mcfg: ModelConfig
    trainer: Trainer
    step: int = 0
    elapsed: float = 0.0
    val_items: list = field(default_factory=list)
    tb: Any = None
    best: float = math.inf

    @property
    def tc(self) -> dict:
        return self.cfg["train"]

    @property
    def csv_path(self) -> Path:
        return self.run_dir / "log.csv"

    @property
    def select_by(self) -> str:
        """The validation score that picks best.safetensors."""
        return {"colour": "colour_error", "regress": "colour_error"}.get(self.tc["loss"], "ciede2000")

    def meta(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed, "config": self.cfg, "model_config": self.mcfg.to_json()}

    def validate(self) -> dict[str, float]:
        """Score the EMA weights on the held-out items; keep them in best.safetensors if they are the best yet.

        Early stopping without stopping: held-out colour can peak before the end."""
        scores = validate(self.trainer.ema, self.val_items, self.device, self.mcfg)
        if scores[self.select_by] < self.best:
            self.best = scores[self.select_by]
            save_checkpoint(self.run_dir / "best.safetensors", {"ema": self.trainer.ema}, {},
                            self.meta() | {"val": scores})
        return scores

    def checkpoint(self) -> None:
        if self.rank != 0:
            return
        meta = self.meta()
        save_checkpoint(self.ck_path, self.trainer.modules(), self.trainer.optimizers(), meta)
        save_model(self.run_dir / "model.safetensors", self.trainer.ema, self.mcfg,
                   card=_model_card(self.mcfg, meta, count_params(self.trainer.ema), None))


def _prepare_training_run(cfg: dict, rank: int, world: int, device: torch.device, *, resume: bool,
                          init: str | None) -> tuple[_TrainingRun, CropDataset, DistributedSampler]:
    """The run's folder, split, model (fresh, initialised or resumed), data and logs."""
    tc = cfg["train"]
    if tc["threads"]:
        torch.set_num_threads(int(tc["threads"]))
    run_dir, ck_path = _run_dir(cfg, resume)
    seed = int(cfg["seed"])
    mcfg, tensors, meta, gen_state = _starting_point(cfg, ck_path, resume, init)

    bs = int(tc["batch_size"])
    if bs < 1 or int(tc["samples_per_epoch"]) < bs * world:
        raise SarColorError(f"samples_per_epoch {tc['samples_per_epoch']} must be at least batch_size x "
                            f"processes ({bs} x {world})")
    splits = build_splits(cfg["data"], Path(cfg.get("_base", ".")))
    if not splits["train"]:
        raise SarColorError("the training split is empty")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(splits, run_dir / "split.json")
        (run_dir / "config.json").write_text(json.dumps(cfg, indent=1, default=str))

    torch.manual_seed(seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    np.random.seed(seed)
    run = _TrainingRun(cfg, rank, world, device, run_dir, ck_path, mcfg, Trainer(mcfg, tc, device, gen_state=gen_state))
    if resume:
        run.trainer.load(tensors, meta)
        torch.set_rng_state(tensors["rng/torch"])
        run.step, run.elapsed = int(meta["step"]), float(meta.get("elapsed_s", 0.0))
        log.info("resumed %s at step %d", run_dir, run.step)
        del tensors
    if world > 1:
        run.trainer.wrap_ddp()

    ds = _dataset(run.trainer, splits["train"], mcfg, tc, seed)
    if tc["loss"] == "colour":
        run.trainer.set_colour_prior(colour_histogram(ds, run.trainer.gen.factor))
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    if rank == 0:
        multiple = int(getattr(run.trainer.gen, "multiple", 1))
        run.val_items = _val_items(splits["val"], mcfg, tc["val_crop"], multiple) if splits["val"] else []
        run.tb = _open_logs(run.csv_path, resume, run.step)
        run.best = _best_val(run.csv_path, run.select_by)
    return run, ds, sampler


def _steps(run: _TrainingRun, ds: CropDataset, sampler: DistributedSampler, stop: dict[str, bool], quiet: bool
           ) -> list[float]:
    """Train until the last step, the time budget or a SIGTERM (``stop``); returns the step losses."""
    from tqdm import tqdm

    tc, bs, seed = run.tc, int(run.tc["batch_size"]), int(run.cfg["seed"])
    batches_per_epoch = len(sampler) // bs
    # Pairs read per sample are decoded by background workers while the step runs; a sample depends only on
    # (seed, epoch, index), so the batches are the same as in the process itself.
    workers = 0 if ds.in_memory else max(1, min(4, (os.cpu_count() or 2) // 2))
    last = min(int(tc["stop_at"]) if tc["stop_at"] else int(tc["steps"]), int(tc["steps"]))
    bar = tqdm(total=last, initial=run.step, disable=quiet or run.rank != 0, unit="step", dynamic_ncols=True)
    budget = float(tc["max_minutes"]) * 60
    running: float | None = None
    step_losses: list[float] = []
    t_last, n_last = time.time(), 0
    done = run.step >= last or bool(budget and run.elapsed >= budget)
    with bar:
        while not done:
            epoch, skip = divmod(run.step, batches_per_epoch)
            ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            loader = DataLoader(ds, batch_size=bs, sampler=_Skip(sampler, skip * bs), drop_last=True,
                                num_workers=workers)
            for x, y, v, r in loader:
                t0 = time.time()
                torch.manual_seed(_step_seed(seed, run.rank, run.step))
                lr = tc["lr"] * _lr_factor(run.step, tc, run.elapsed)
                loss = run.trainer.step(x, y, v, run.step, lr, r)
                run.step += 1
                run.elapsed += time.time() - t0
                step_losses.append(loss)
                running = loss if running is None else 0.9 * running + 0.1 * loss
                bar.update(1)
                n_last += bs * run.world
                row = None
                if run.step % tc["log_every"] == 0 or run.step % tc["val_every"] == 0:
                    ips = n_last / max(1e-9, time.time() - t_last)
                    t_last, n_last = time.time(), 0
                    bar.set_postfix(loss=f"{running:.4f}", img_s=f"{ips:.1f}")
                    row = {"step": run.step, "elapsed_s": round(run.elapsed, 1), "images_per_s": round(ips, 2),
                           "lr": lr, "loss": round(running, 5)}
                if run.val_items and run.step % tc["val_every"] == 0:
                    row = row or {"step": run.step, "elapsed_s": round(run.elapsed, 1)}
                    scores = run.validate()
                    row.update({f"val_{k}": round(s, 4) for k, s in scores.items()})
                    log.info("step %d: %s", run.step, " ".join(f"{k}={s:.4f}" for k, s in scores.items()))
                if row and run.rank == 0:
                    _log_row(run.csv_path, run.tb, row)
                done = run.step >= last or _over(run, budget, stop)
                if run.step % tc["ckpt_every"] == 0 or done:
                    run.checkpoint()
                if done:
                    break
    return step_losses


def _over(run: _TrainingRun, budget: float, stop: dict[str, bool]) -> bool:
    """Past the time budget, or SIGTERM'd; every rank agrees, so no rank waits forever in a collective."""
    over = (bool(budget) and run.elapsed >= budget) or stop["sigterm"]
    if run.world > 1:
        flag = torch.tensor([float(over)], device=run.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        over = bool(flag.item())
    return over


def _train(cfg: dict, rank: int, world: int, device: torch.device, *, resume: bool, init: str | None,
           quiet: bool) -> Path:
    run, ds, sampler = _prepare_training_run(cfg, rank, world, device, resume=resume, init=init)
    # SIGTERM (a scheduler's preemption) stops at the end of the step with a checkpoint.
    stop = {"sigterm": False}
    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
    except ValueError:  # not the main thread
        pass
    try:
        step_losses = _steps(run, ds, sampler, stop, quiet)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    if stop["sigterm"]:
        log.warning("stopped by SIGTERM at step %d; `--resume` continues", run.step)
    # A final validation of the last steps, unless preempted: a scheduler's grace period is short, and a resumed
    # run validates at its own next interval.
    if run.val_items and run.step % run.tc["val_every"] != 0 and not stop["sigterm"]:
        scores = run.validate()
        _log_row(run.csv_path, None, {"step": run.step, "elapsed_s": round(run.elapsed, 1),
                                      **{f"val_{k}": round(v, 4) for k, v in scores.items()}})
    if run.tb is not None:
        run.tb.close()
    if os.environ.get(DIGEST_ENV):
        _write_digest(Path(os.environ[DIGEST_ENV]), run.trainer, rank, world, run.step, step_losses)
    if world > 1:
        dist.barrier()
    return run.run_dir


def train_from_cli(config: str, overrides: list[str], *, resume: bool, init: str | None, quiet: bool,
                   device: str = "auto") -> int:
    cfg = resolve_config(config, overrides)
    run_dir = train(cfg, resume=resume, init=init, quiet=quiet, device_pref=device)
    log.info("done: %s (export with `sarcolor export %s -o MODEL.safetensors`)", run_dir, run_dir)
    return 0
