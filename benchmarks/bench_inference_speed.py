"""Inference speed: MP/s of the shipped default model vs ``pix2pix-seed`` through the colorize path, same run.

Both models colorize the same 1024x1024 SAR scene through ``sarcolor.colorize.colorize_paths`` (exactly what
``sarcolor colorize`` runs: scene statistics, tiling with overlap, blending, writing the PNG), each with its own
tile size and overlap from its config (default 512/64, seed 128/32, the prototype's 128x128 input). Process
start-up (importing torch) is excluded by timing in-process after a warm-up; the wall time of one full
``sarcolor colorize`` subprocess per model is printed too. The seed's speed does not depend on its weights, so
a randomly initialised seed model is used unless ``--seed-model`` names a trained one.

    python benchmarks/bench_inference_speed.py                 # a real volkov_s1s2 scene if ../shared/data is there
    python benchmarks/bench_inference_speed.py --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sarcolor.colorize import colorize_paths
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


def time_model(model: str, src: Path, tmp: Path, repeats: int) -> list[float]:
    out = tmp / "out.png"
    colorize_paths(src, out, model=model, device="cpu", overwrite=True, quiet=True)  # warm-up (and load)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        colorize_paths(src, out, model=model, device="cpu", overwrite=True, quiet=True)
        times.append(time.perf_counter() - t)
    return times


def cli_seconds(model: str, src: Path, tmp: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sarcolor", "colorize", str(src), "-o", str(tmp / "cli.png"),
                    "--model", model, "--device", "cpu", "--overwrite", "-q"], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="the model to compare with the seed (default: shipped)")
    ap.add_argument("--seed-model", help="a trained pix2pix-seed .safetensors (default: random weights)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        seed = args.seed_model
        if not seed:
            seed = str(tmp / "seed.safetensors")
            torch.manual_seed(0)
            save_model(seed, build_model(seed_config()), seed_config())
        src = scene(tmp)
        with Image.open(src) as im:
            mp = im.width * im.height / 1e6
        print(f"scene: {src} ({mp:.2f} MP), torch threads: {torch.get_num_threads()}")
        res = {}
        for name, model in (("pix2pix-seed", seed), (args.model, args.model)):
            t = time_model(model, src, tmp, args.repeats)
            med = statistics.median(t)
            res[name] = mp / med
            print(f"{name:>14}: {med:.3f} s median of {len(t)} -> {mp / med:.2f} MP/s "
                  f"(one `sarcolor colorize` process incl. start-up: {cli_seconds(model, src, tmp):.2f} s)")
        print(f"speed ratio {args.model} / pix2pix-seed: {res[args.model] / res['pix2pix-seed']:.1f}x")


if __name__ == "__main__":
    main()
