"""Training: ``sarcolor train --config FILE [key=value ...] [--resume] [--init MODEL]``.

One loop serves both objectives: ``loss: sarcolor`` (the default model: L1 + SSIM + Lab + chroma, optional
spectral-norm PatchGAN) and ``loss: pix2pix`` (the prototype: BCE GAN + 100 L1, Adam 2e-4, betas 0.5/0.999).
Checkpoints are single safetensors files written atomically; they hold the generator, EMA, discriminator,
optimiser state, step and RNG state, so ``--resume`` continues exactly. Under ``torchrun`` the loop uses
DistributedDataParallel (gloo on CPU, nccl on GPU) with a DistributedSampler; only rank 0 writes.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import losses
from .data import CropDataset, PairRef, build_splits, load_config, read_pair, write_split
from .errors import SarColorError
from .models import (ModelConfig, PatchDiscriminator, SeedDiscriminator, build_model, load_model, save_model,
                     seed_config)
from .preprocess import model_input, scene_stats

log = logging.getLogger("sarcolor")

DEFAULTS: dict = {
    "run_dir": "runs/default",
    "seed": 0,
    "model": {},  # ModelConfig fields; {"arch": "pix2pix-seed"} gives the prototype's config
    "data": {},
    "train": {
        "loss": "sarcolor",  # "sarcolor" or "pix2pix"
        "steps": 10000, "max_minutes": 0,  # max_minutes > 0 stops early at a wall-time budget
        "batch_size": 8, "crop": 256, "samples_per_epoch": 4000,
        "lr": 2e-3, "weight_decay": 1e-4, "warmup": 200, "betas": [0.9, 0.99],
        "ema": 0.999, "gan_weight": 0.0, "threads": 0,
        "ckpt_every": 200, "val_every": 500, "val_crop": 512, "log_every": 20,
    },
}


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
        node[leaf] = yaml.safe_load(value)
    return cfg


def resolve_config(path: str | Path, overrides: list[str] = ()) -> dict:
    cfg = _merge(DEFAULTS, load_config(path))
    cfg = apply_overrides(cfg, list(overrides))
    cfg["_base"] = str(Path(path).resolve().parent)
    return cfg


def model_config(cfg: dict) -> ModelConfig:
    m = dict(cfg.get("model", {}))
    base = seed_config() if m.get("arch") == "pix2pix-seed" else ModelConfig()
    known = {f.name for f in fields(ModelConfig)}
    bad = set(m) - known
    if bad:
        raise SarColorError(f"unknown model option(s): {sorted(bad)}")
    if "enc_depths" in m:
        m["enc_depths"] = tuple(m["enc_depths"])
    return ModelConfig(**{**asdict(base), **m})


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
    """Everything needed to resume, in one safetensors file, written to a temp name and renamed."""
    tensors = {}
    for name, mod in parts.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}/{k}"] = v.detach().cpu().contiguous()
    opt_meta = {}
    for name, opt in opts.items():
        t, m = _flat_optimizer(f"opt:{name}", opt)
        tensors.update({k: v.cpu().contiguous() for k, v in t.items()})
        opt_meta[name] = m
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {**meta, "optimizers": opt_meta}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"sarcolor_checkpoint": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["sarcolor_checkpoint"])
        return load_file(str(path)), meta
    except Exception as exc:
        raise SarColorError(f"{path}: not a readable sarcolor checkpoint ({exc.__class__.__name__})") from None


def _sub(tensors: dict, name: str) -> dict:
    return {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + "/")}


def export_checkpoint(checkpoint: str | Path, output: str | Path) -> None:
    """Write the inference-only model (EMA generator + config + model card stub) as safetensors."""
    ck = Path(checkpoint)
    if ck.is_dir():
        ck = ck / "checkpoint.safetensors"
    if not ck.is_file():
        raise SarColorError(f"{checkpoint}: no checkpoint found")
    out = Path(output)
    if not out.parent.is_dir():
        raise SarColorError(f"{out.parent}: output folder does not exist")
    tensors, meta = load_checkpoint(ck)
    mcfg = ModelConfig.from_json(meta["model_config"])
    model = build_model(mcfg)
    model.load_state_dict(_sub(tensors, "ema"))
    card = (f"# {mcfg.name}\n\nArchitecture: {mcfg.arch}. Trained {meta['step']} steps "
            f"({meta.get('elapsed_s', 0) / 60:.1f} min), seed {meta['config'].get('seed')}.\n"
            f"Config: `{json.dumps({k: v for k, v in meta['config'].items() if not k.startswith('_')})}`\n")
    save_model(out, model, mcfg, card=card)


# ------------------------------------------------------------------------------------ distributed
def _dist_setup(device_pref: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank = dist.get_rank()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return rank, world, torch.device("cuda") if use_cuda else torch.device("cpu")
    return 0, 1, torch.device("cuda" if use_cuda else "cpu")


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


# ------------------------------------------------------------------------------------- validation
def _val_items(refs: list[PairRef], mcfg: ModelConfig, size: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """A fixed centre crop of each validation pair, preprocessed once (a cheap running signal; the
    full tiled evaluation is ``sarcolor evaluate``)."""
    size = size // 128 * 128  # both architectures take multiples of 128
    items = []
    for ref in refs:
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = sv & ov
        stats = scene_stats(sar, valid, scale)
        h, w = sar.shape
        s = min(size, h // 128 * 128, w // 128 * 128)
        r, c = (h - s) // 2, (w - s) // 2
        x = model_input(np.where(valid, sar, np.median(sar[valid])), stats, mcfg.input_norm, mcfg.in_channels)
        items.append((torch.from_numpy(x[:, r:r + s, c:c + s].copy())[None], opt[r:r + s, c:c + s]))
    return items


@torch.no_grad()
def validate(model: nn.Module, items: list, device: torch.device) -> dict[str, float]:
    from .metrics import ciede2000, psnr, ssim

    model.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "ciede2000": []}
    for x, truth in items:
        y = model(x.to(device))[0].float().cpu().numpy().transpose(1, 2, 0)
        pred = np.clip((y + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        scores["psnr"].append(psnr(pred, truth))
        scores["ssim"].append(ssim(pred, truth))
        scores["ciede2000"].append(ciede2000(pred, truth))
    return {k: float(np.mean(v)) for k, v in scores.items()}


# ------------------------------------------------------------------------------------------- loop
def _lr_factor(step: int, tc: dict, elapsed: float = 0.0) -> float:
    """Warm-up then cosine decay. With a wall-time budget (max_minutes), progress is whichever of steps or
    time is further along, so the schedule completes within the budget on a busy or slow machine. Runs
    without a budget are step-based and so exactly reproducible."""
    if tc["loss"] == "pix2pix":
        return 1.0  # the prototype used a constant learning rate
    if step < tc["warmup"]:
        return (step + 1) / tc["warmup"]
    t = (step - tc["warmup"]) / max(1, tc["steps"] - tc["warmup"])
    if tc["max_minutes"]:
        t = max(t, elapsed / (float(tc["max_minutes"]) * 60))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train(cfg: dict, *, resume: bool = False, init: str | None = None, quiet: bool = False,
          device_pref: str = "auto") -> Path:
    """Run (or resume) training as configured; returns the run folder."""
    rank, world, device = _dist_setup(device_pref)
    tc = cfg["train"]
    if tc["threads"]:
        torch.set_num_threads(int(tc["threads"]))
    run_dir = Path(cfg["run_dir"])
    if not run_dir.is_absolute():  # relative to the config file, like the data roots
        run_dir = (Path(cfg.get("_base", ".")) / run_dir).resolve()
    ck_path = run_dir / "checkpoint.safetensors"
    if resume and not ck_path.is_file():
        raise SarColorError(f"{run_dir}: nothing to resume (no checkpoint.safetensors)")
    if not resume and ck_path.is_file():
        raise SarColorError(f"{run_dir}: a run exists already; use --resume or another run_dir")
    mcfg = model_config(cfg)
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)

    base = Path(cfg.get("_base", "."))
    splits = build_splits(cfg["data"], base)
    if not splits["train"]:
        raise SarColorError("the training split is empty")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(splits, run_dir / "split.json")
        (run_dir / "config.json").write_text(json.dumps(cfg, indent=1, default=str))

    gen = build_model(mcfg).to(device)
    if init:
        src, icfg = load_model(init) if not str(init).endswith("checkpoint.safetensors") else (None, None)
        if src is None:
            tensors, meta = load_checkpoint(Path(init))
            gen.load_state_dict(_sub(tensors, "ema"))
        else:
            if icfg.arch != mcfg.arch:
                raise SarColorError(f"--init {init}: architecture {icfg.arch} differs from {mcfg.arch}")
            mcfg = icfg
            gen = build_model(mcfg).to(device)
            gen.load_state_dict(src.state_dict())
        log.info("initialised from %s", init)
    ema = copy.deepcopy(gen).eval().requires_grad_(False)
    pix2pix = tc["loss"] == "pix2pix"
    disc: nn.Module | None = None
    if pix2pix:
        disc = SeedDiscriminator(mcfg.in_channels).to(device)
        g_opt = torch.optim.Adam(gen.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]))
        d_opt = torch.optim.Adam(disc.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]))
    else:
        g_opt = torch.optim.AdamW(gen.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]),
                                  weight_decay=tc["weight_decay"])
        d_opt = None
        if tc["gan_weight"] > 0:
            disc = PatchDiscriminator(mcfg.in_channels).to(device)
            d_opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))

    step, elapsed = 0, 0.0
    if resume:
        tensors, meta = load_checkpoint(ck_path)
        gen.load_state_dict(_sub(tensors, "gen"))
        ema.load_state_dict(_sub(tensors, "ema"))
        if disc is not None:
            disc.load_state_dict(_sub(tensors, "disc"))
        g_opt.load_state_dict(_unflat_optimizer("opt:g", tensors, meta["optimizers"]["g"]))
        if d_opt is not None:
            d_opt.load_state_dict(_unflat_optimizer("opt:d", tensors, meta["optimizers"]["d"]))
        torch.set_rng_state(tensors["rng/torch"])
        step, elapsed = int(meta["step"]), float(meta.get("elapsed_s", 0.0))
        log.info("resumed %s at step %d", run_dir, step)

    ddp_gen, ddp_disc = gen, disc
    if world > 1:
        ddp_gen = nn.parallel.DistributedDataParallel(gen)
        if disc is not None:
            ddp_disc = nn.parallel.DistributedDataParallel(disc)

    ds = CropDataset(splits["train"], crop=tc["crop"], input_norm=mcfg.input_norm, in_channels=mcfg.in_channels,
                     samples_per_epoch=tc["samples_per_epoch"], seed=seed)
    bs = int(tc["batch_size"])
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    batches_per_epoch = len(sampler) // bs
    val_items = _val_items(splits["val"], mcfg, tc["val_crop"]) if (rank == 0 and splits["val"]) else []

    csv_path = run_dir / "log.csv"
    fields_ = ["step", "elapsed_s", "images_per_s", "lr", "loss", "val_psnr", "val_ssim", "val_ciede2000"]
    if rank == 0 and not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(fields_)
    tb = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # tensorboard is optional
            tb = None

    def checkpoint() -> None:
        if rank != 0:
            return
        parts = {"gen": gen, "ema": ema} | ({"disc": disc} if disc is not None else {})
        opts = {"g": g_opt} | ({"d": d_opt} if d_opt is not None else {})
        save_checkpoint(ck_path, parts, opts, {"step": step, "elapsed_s": elapsed, "config": cfg,
                                               "model_config": mcfg.to_json()})
        save_model(run_dir / "model.safetensors", ema, mcfg,
                   card=f"{mcfg.name}: {step} steps, {elapsed / 60:.1f} min, seed {seed}")

    from tqdm import tqdm

    bar = tqdm(total=tc["steps"], initial=step, disable=quiet or rank != 0, unit="step", dynamic_ncols=True)
    budget = float(tc["max_minutes"]) * 60
    running, t_last, n_last = 0.0, time.time(), 0
    done = step >= tc["steps"] or (budget and elapsed >= budget)
    while not done:
        epoch, skip = divmod(step, batches_per_epoch)
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=bs, sampler=_Skip(sampler, skip * bs), drop_last=True, num_workers=0)
        for x, y, v in loader:
            t0 = time.time()
            x, y, v = x.to(device), y.to(device), v.to(device)
            lr_f = _lr_factor(step, tc, elapsed)
            for g in g_opt.param_groups:
                g["lr"] = tc["lr"] * lr_f
            gen.train()
            pred = ddp_gen(x)
            if pix2pix:
                d_fake = ddp_disc(x, pred)
                g_parts = losses.pix2pix_generator_loss(d_fake, pred, y)
            else:
                g_parts = losses.sarcolor_loss(pred, y, v)
                if disc is not None:
                    g_parts["gan"] = losses.bce_gan(ddp_disc(x, pred), True)
                    g_parts["total"] = g_parts["total"] + tc["gan_weight"] * g_parts["gan"]
            g_opt.zero_grad(set_to_none=True)
            g_parts["total"].backward()
            g_opt.step()
            if disc is not None:
                d_loss = losses.pix2pix_discriminator_loss(ddp_disc(x, y), ddp_disc(x, pred.detach()))
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
            with torch.no_grad():  # EMA of weights; buffers (BatchNorm statistics) are copied
                decay = min(tc["ema"], (1 + step) / (10 + step))
                for pe, pg in zip(ema.parameters(), gen.parameters(), strict=True):
                    pe.lerp_(pg, 1 - decay)
                for be, bg in zip(ema.buffers(), gen.buffers(), strict=True):
                    be.copy_(bg)
            step += 1
            elapsed += time.time() - t0
            running = 0.9 * running + 0.1 * float(g_parts["total"]) if step > 1 else float(g_parts["total"])
            bar.update(1)
            n_last += bs * world
            row = None
            if step % tc["log_every"] == 0 or step % tc["val_every"] == 0:
                ips = n_last / max(1e-9, time.time() - t_last)
                t_last, n_last = time.time(), 0
                bar.set_postfix(loss=f"{running:.4f}", img_s=f"{ips:.1f}")
                row = {"step": step, "elapsed_s": round(elapsed, 1), "images_per_s": round(ips, 2),
                       "lr": tc["lr"] * lr_f, "loss": round(running, 5)}
            if val_items and step % tc["val_every"] == 0:
                row = row or {"step": step, "elapsed_s": round(elapsed, 1)}
                scores = validate(ema, val_items, device)
                row.update({f"val_{k}": round(v, 4) for k, v in scores.items()})
                log.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            if row and rank == 0:
                with open(csv_path, "a", newline="") as f:
                    csv.DictWriter(f, fields_).writerow(row)
                if tb is not None:
                    for k, val in row.items():
                        if k != "step" and val is not None:
                            tb.add_scalar(k, val, step)
            if world > 1:  # agree on the wall-time stop so no rank waits forever in a collective
                flag = torch.tensor([float(elapsed >= budget) if budget else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                over = bool(flag.item())
            else:
                over = bool(budget) and elapsed >= budget
            done = step >= tc["steps"] or over
            if step % tc["ckpt_every"] == 0 or done:
                checkpoint()
            if done:
                break
    bar.close()
    if rank == 0 and val_items and step % tc["val_every"] != 0:
        scores = validate(ema, val_items, device)
        with open(csv_path, "a", newline="") as f:
            csv.DictWriter(f, fields_).writerow({"step": step, "elapsed_s": round(elapsed, 1),
                                                 **{f"val_{k}": round(v, 4) for k, v in scores.items()}})
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def train_from_cli(config: str, overrides: list[str], *, resume: bool, init: str | None, quiet: bool) -> int:
    cfg = resolve_config(config, overrides)
    run_dir = train(cfg, resume=resume, init=init, quiet=quiet)
    log.info("done: %s (export with `sarcolor export %s -o MODEL.safetensors`)", run_dir, run_dir)
    return 0
