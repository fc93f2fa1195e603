"""Training speed: images/s of one training step for ``pix2pix-seed`` and the default architecture, same run.

Each model is trained exactly as its shipped config says (``configs/pix2pix-seed.yaml``: the prototype U-Net,
128 px crops, GAN + 100 L1 with its discriminator; ``configs/sarcolornet.yaml``: sarcolornet, its crop and loss),
through the same ``Trainer.step`` that ``sarcolor train`` runs, on synthetic tensors so no data is needed.
A few warm-up steps are not timed. Crops differ between the two configs, so pixels/s is printed too.

    python benchmarks/bench_train_speed.py                      # 3 warm-up + 10 timed steps each
    python benchmarks/bench_train_speed.py --steps 4 --threads 1 --batch-size 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sarcolor.engine import resolve_device
from sarcolor.models import count_params
from sarcolor.train import Trainer, model_config, resolve_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def bench(config: Path, steps: int, warmup: int, batch_size: int | None, device: torch.device) -> dict:
    """Time ``steps`` training steps (after ``warmup`` untimed ones) of the model and loss of ``config``."""
    cfg = resolve_config(config)
    tc = cfg["train"] | ({"batch_size": batch_size} if batch_size else {})
    mcfg = model_config(cfg)
    torch.manual_seed(0)
    trainer = Trainer(mcfg, tc, device)
    bs, crop = int(tc["batch_size"]), int(tc["crop"])
    x = torch.rand(bs, mcfg.in_channels, crop, crop, device=device) * 2 - 1
    y = torch.rand(bs, 3, crop, crop, device=device) * 2 - 1
    v = torch.ones(bs, 1, crop, crop, device=device)
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.step(x, y, v, step, tc["lr"])  # its .item() waits for the GPU: the time is complete
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    total = sum(times)
    return {"config": config.name, "arch": mcfg.arch, "params": count_params(trainer.gen), "loss": tc["loss"],
            "crop": crop, "batch": bs, "ms_step": 1000 * total / steps, "img_s": bs * steps / total,
            "mpx_s": bs * steps * crop * crop / total / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--batch-size", type=int, help="override both configs' batch size (default: theirs, 8)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}" + (f", {torch.get_num_threads()} CPU thread(s)" if device.type == "cpu" else "")
          + f", torch {torch.__version__}; {args.warmup} warm-up + {args.steps} timed steps per model")
    rows = [bench(CONFIGS / name, args.steps, args.warmup, args.batch_size, device)
            for name in ("pix2pix-seed.yaml", "sarcolornet.yaml")]
    print(f"{'config':<18} {'arch':<13} {'params':>8} {'loss':<9} {'crop':>4} {'batch':>5} {'ms/step':>9} "
          f"{'images/s':>9} {'Mpx/s':>7}")
    for r in rows:
        print(f"{r['config']:<18} {r['arch']:<13} {r['params'] / 1e6:>7.2f}M {r['loss']:<9} {r['crop']:>4} "
              f"{r['batch']:>5} {r['ms_step']:>9.1f} {r['img_s']:>9.2f} {r['mpx_s']:>7.3f}")
    seed, ours = rows
    print(f"default / pix2pix-seed: {ours['img_s'] / seed['img_s']:.2f}x images/s "
          f"({ours['crop']} vs {seed['crop']} px crops), {ours['mpx_s'] / seed['mpx_s']:.2f}x pixels/s")


if __name__ == "__main__":
    main()
