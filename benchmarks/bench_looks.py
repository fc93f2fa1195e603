"""Look speed: MP/s of each model and look on a 1024x1024 scene, against the earlier default in the same run.

Every variant colorizes the same 1024x1024 SAR scene through ``colorize_paths`` (what ``sarcolor colorize``
runs: statistics, tiling, the look, writing a PNG), in-process after a warm-up, the variants alternating round
by round so that a slow spell of a shared machine hits all of them. The baseline is the earlier default
(sarcolornet) in its optical look (what ``sarcolor colorize`` gave before the looks existed); each ratio is of
the medians.

    python benchmarks/bench_looks.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_inference_speed import scene

from sarcolor.engine import colorize_paths

MODELS = Path(__file__).resolve().parent / "models"
# the shipped default in both looks; the first variant, former default sarcolornet's optical look, is the
# baseline of the ratios; colournet is another former default
VARIANTS = [("sarcolornet", "optical"), ("colournet", "sar"), ("default", "sar"), ("default", "optical")]


def model_of(name: str) -> str:
    """The shipped model's name, or a former default's file."""
    return name if name == "default" else str(MODELS / f"{name}.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        # colorize sets its own thread count (inference_threads()), which reads OMP_NUM_THREADS
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        src = scene(Path(tmp))
        times: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.repeats + 1):  # round 0 warms up (model load, first allocations)
            for model, look in VARIANTS:
                out = Path(tmp) / f"{model}-{look}.png"
                t0 = time.perf_counter()
                colorize_paths(src, out, model=model_of(model), look=look, overwrite=True, quiet=True, device="cpu")
                if r:
                    times[(model, look)].append(time.perf_counter() - t0)
    base_times = times[VARIANTS[0]]
    base = statistics.median(base_times)
    print(f"1024x1024 scene, {args.repeats} rounds, torch threads {torch.get_num_threads()}")
    print(f"{'model':10} {'look':8} {'median s':>9} {'MP/s':>6} {'vs sarcolornet optical':>23} "
          f"{'per round (min-max)':>20}")
    for (model, look), ts in times.items():
        med = statistics.median(ts)
        # each round's own ratio: the variants ran back to back, so a slow spell of the machine cancels out
        rounds = [b / t for b, t in zip(base_times, ts, strict=True)]
        print(f"{model:10} {look:8} {med:9.3f} {1.048576 / med:6.2f} {base / med:22.2f}x "
              f"{min(rounds):9.2f}x-{max(rounds):.2f}x")


if __name__ == "__main__":
    main()
