"""Large-scene benchmark: peak memory and throughput of ``sarcolor colorize`` on a synthetic GeoTIFF.

Writes a SIZE x SIZE float32 dB GeoTIFF (tiled, deflate, NaN nodata in one corner) into a temporary folder,
window by window so the generator itself stays small, then runs ``python -m sarcolor colorize`` on it in a
subprocess and reports that subprocess's peak RSS (getrusage RUSAGE_CHILDREN) and megapixels per second.
Uses the shipped default model (contextnet) in the default (sar) look; without the weights file, a randomly
initialised SarColorNet (the earlier default's architecture).

    python benchmarks/bench_colorize_large.py            # 20000 x 20000, the acceptance case (< 2 GB RSS)
    python benchmarks/bench_colorize_large.py --size 4000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

RSS_LIMIT_MB = 2048
STRIP = 512


def write_scene(path: Path, size: int, seed: int = 0) -> None:
    """A speckled dB scene with smooth structure; NaN (nodata) in the top-left corner triangle."""
    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32", nodata=float("nan"),
                   crs="EPSG:32630", transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0),
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", predictor=3,
                   bigtiff="IF_SAFER")
    xx = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.Env(GDAL_CACHEMAX=128), rasterio.open(path, "w", **profile) as ds:
        for y0 in range(0, size, STRIP):
            n = min(STRIP, size - y0)
            yy = np.arange(y0, y0 + n, dtype=np.float32)[:, None]
            base = -14 + 5 * np.sin(xx / 900) * np.cos(yy / 700) - 9 * (np.sin(xx / 300 + yy / 450) > 0.9)
            speckle = 10 * np.log10(rng.gamma(4.0, 0.25, (n, size)).astype(np.float32))
            strip = (base + speckle).astype(np.float32)
            strip[xx + yy < size / 10] = np.nan
            ds.write(strip, 1, window=Window(0, y0, size, n))


def model_path(tmp: Path) -> str:
    from sarcolor.models import SHIPPED, ModelConfig, build_model, save_model

    if SHIPPED["default"].is_file():
        return "default"
    import torch

    torch.manual_seed(0)
    cfg = ModelConfig()
    path = tmp / "random-default.safetensors"
    save_model(path, build_model(cfg), cfg, card="random init, for benchmarking only")
    print("shipped model not installed: using a randomly initialised default-config model")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=20000, help="scene side in pixels (default: 20000)")
    p.add_argument("--dir", help="work folder (default: a temporary folder, deleted afterwards)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--tta", action="store_true")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="sarcolor-bench-") as d:
        tmp = Path(d)
        src, dst = tmp / f"scene_{args.size}.tif", tmp / "colorized.tif"
        t0 = time.perf_counter()
        write_scene(src, args.size)
        print(f"input: {args.size}x{args.size} float32 dB GeoTIFF, {src.stat().st_size / 2**20:.0f} MiB "
              f"on disk, written in {time.perf_counter() - t0:.1f} s")
        model = model_path(tmp)
        cmd = [sys.executable, "-m", "sarcolor", "colorize", str(src), "-o", str(dst), "--model", model,
               "--device", args.device, "-q"] + (["--tta"] if args.tta else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
        if proc.returncode != 0:
            print(f"sarcolor colorize failed (exit {proc.returncode}):\n{proc.stderr}", file=sys.stderr)
            return 1
        with rasterio.open(dst) as ds:
            assert (ds.width, ds.height, ds.count) == (args.size, args.size, 3) and ds.crs is not None
            layout = ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "GTiff")
        mp = args.size * args.size / 1e6
        print(f"output: {dst.stat().st_size / 2**20:.0f} MiB {layout}")
        print(f"colorize: {mp:.0f} MP in {seconds:.1f} s = {mp / seconds:.2f} MP/s on {os.cpu_count()} CPU "
              f"core(s) [{args.device}]")
        ok = peak_mb < RSS_LIMIT_MB
        print(f"peak RSS of the colorize process: {peak_mb:.0f} MiB "
              f"({'OK' if ok else 'OVER'} the {RSS_LIMIT_MB} MiB budget)")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
