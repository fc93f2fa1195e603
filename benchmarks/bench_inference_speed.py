"""Inference speed: MP/s of the shipped default model vs ``pix2pix-seed`` through the colorize path, same run.

Both models colorize the same 1024x1024 SAR scene through ``sarcolor.engine.colorize_paths`` (exactly what
``sarcolor colorize`` runs: scene statistics, tiling with overlap, blending, writing the PNG), each with its own
tile size and overlap from its config (default 512/64, seed 128/32, the prototype's 128x128 input). Process
start-up (importing torch) is excluded by timing in-process after a warm-up; the wall time of one full
``sarcolor colorize`` subprocess per model is printed too. The two models' runs alternate (seed, model, seed,
model, ...), so a slow spell of a shared machine hits both; the ratio is of the medians, and the spread of the
per-round ratios is printed beside it. The seed is the trained ``runs/pix2pix-seed/model.safetensors`` when it
exists (or ``--seed-model``), else randomly initialised weights (the same network and cost).

    python benchmarks/bench_inference_speed.py                 # a real volkov_s1s2 scene if ../shared/data is there
    python benchmarks/bench_inference_speed.py --repeats 9 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sarcolor.engine import colorize_paths
from sarcolor.models import build_model, save_model, seed_config

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def scene(tmp: Path) -> Path:
    """A real 1024x1024 volkov_s1s2 SAR tile when the shared data is present, else speckled synthetic SAR."""
    real = sorted((DATA / "volkov_s1s2" / "sar").glob("*.png"))
    if real:
        return real[0]
    rng = np.random.default_rng(0)
    img = np.clip(rng.gamma(1.0, 60.0, (1024, 1024)), 0, 255).astype(np.uint8)
    path = tmp / "scene.png"
    Image.fromarray(img).save(path)
    return path


def time_once(model: str, src: Path, tmp: Path) -> float:
    t = time.perf_counter()
    colorize_paths(src, tmp / "out.png", model=model, device="cpu", overwrite=True, quiet=True, look="optical")
    return time.perf_counter() - t


def cli_seconds(model: str, src: Path, tmp: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sarcolor", "colorize", str(src), "-o", str(tmp / "cli.png"),
                    "--model", model, "--device", "cpu", "--overwrite", "-q"], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="the model to compare with the seed (default: shipped)")
    ap.add_argument("--seed-model", help="a trained pix2pix-seed .safetensors (default: runs/pix2pix-seed's "
                    "if present, else random weights)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        # colorize sets its own thread count (inference_threads()), which reads OMP_NUM_THREADS
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trained = Path(__file__).resolve().parents[1] / "runs" / "pix2pix-seed" / "model.safetensors"
        seed = args.seed_model or (str(trained) if trained.is_file() else None)
        if not seed:
            seed = str(tmp / "seed.safetensors")
            torch.manual_seed(0)
            save_model(seed, build_model(seed_config()), seed_config())
        src = scene(tmp)
        with Image.open(src) as im:
            mp = im.width * im.height / 1e6
        print(f"scene: {src} ({mp:.2f} MP), torch threads: {torch.get_num_threads()}")
        models = {"pix2pix-seed": seed, args.model: args.model}
        for model in models.values():
            time_once(model, src, tmp)  # warm-up (and load)
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, model in models.items():
                times[name].append(time_once(model, src, tmp))
        res = {}
        for name, model in models.items():
            med = statistics.median(times[name])
            res[name] = mp / med
            print(f"{name:>14}: {med:.3f} s median of {args.repeats} -> {mp / med:.2f} MP/s "
                  f"(one `sarcolor colorize` process incl. start-up: {cli_seconds(model, src, tmp):.2f} s)")
        rounds = sorted(s / m for s, m in zip(times["pix2pix-seed"], times[args.model], strict=True))
        print(f"speed ratio {args.model} / pix2pix-seed: {res[args.model] / res['pix2pix-seed']:.1f}x "
              f"(per round: {rounds[0]:.1f}x .. {rounds[-1]:.1f}x)")


if __name__ == "__main__":
    main()
