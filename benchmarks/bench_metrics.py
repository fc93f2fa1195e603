"""Cost of the colour metrics per scored prediction, against the metrics ``evaluate`` computed before, same run.

On one 2500x1733 scene (sih1733 scene 1 when ../shared/data is there, else a synthetic textured pair), a
prediction (the truth blurred and tinted: a fog-like output) is scored by ``metrics.score`` (every per-image
metric) and the new parts are timed alone on the same inputs: ``colour_error``, ``structure``, ``sharpness``
and the SWD patches (``laplacian_patches``; positions are drawn once per pair, timed separately). The pieces
alternate within each round, so a slow spell of a shared machine hits all of them; medians are printed, and the
ratio "(score + SWD patches) / (score without the new metrics)".

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from sarcolor import metrics
from sarcolor.evaluate import pair_valid, sar_views

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(truth RGB, SAR grey, log SAR, valid, where from): the real sih1733 scene 1, else synthetic."""
    d = DATA / "sih1733" / "scene1"
    if d.is_dir():
        from sarcolor.data import PairRef, read_pair

        sar, sv, opt, ov, scale = read_pair(PairRef("scene1", d / "sar.jpg", d / "optical.jpg", "scene1"))
        grey, db = sar_views(sar, sv, scale)
        return opt, grey, db, pair_valid(sv, opt, ov), "sih1733/scene1"
    rng = np.random.default_rng(0)
    db = gaussian_filter(rng.standard_normal((1733, 2500)), 2) * 30 - 12
    grey = np.clip((db + 25) * 10, 0, 255).astype(np.uint8)
    truth = np.clip(np.stack([grey, grey * 0.8 + 30, 255 - grey], -1), 1, 255).astype(np.uint8)
    return truth, grey, db, np.ones(grey.shape, bool), "synthetic 2500x1733"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    truth, grey, db, valid, where = scene()
    pred = np.clip(gaussian_filter(truth.astype(float), (3, 3, 0)) * 0.9 + 15, 0, 255).astype(np.uint8)
    t0 = time.perf_counter()
    ref = metrics.prepare(truth, grey, valid, db)
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    positions = metrics.patch_positions(valid, 0)
    positions_s = time.perf_counter() - t0
    lab = metrics._lab(pred)
    pieces = {
        "score (all per-image metrics)": lambda: metrics.score(pred, ref),
        "  colour_error": lambda: metrics._colour_error(lab, ref.lab_smooth, valid),
        "  structure": lambda: metrics._structure(lab[..., 0], ref.sar_grad, ref.inner, valid),
        "  sharpness": lambda: metrics._sharpness(lab[..., 0], ref.lap_std, ref.inner),
        "SWD patches": lambda: metrics.laplacian_patches(pred, positions),
    }
    times: dict[str, list[float]] = {k: [] for k in pieces}
    for _ in range(args.repeats):
        for name, f in pieces.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    new = med["  colour_error"] + med["  structure"] + med["  sharpness"]
    before = med["score (all per-image metrics)"] - new
    print(f"{where}: {truth.shape[1]}x{truth.shape[0]}, {int(valid.sum())} valid pixels; median of "
          f"{args.repeats} rounds")
    print(f"once per pair: prepare {prepare_s:.2f} s, SWD patch positions {positions_s:.2f} s")
    for k, v in med.items():
        print(f"{k:<32} {v:6.2f} s")
    print(f"{'score without the new metrics':<32} {before:6.2f} s")
    print(f"per prediction, with the new metrics / without: {(before + new + med['SWD patches']) / before:.2f}x")


if __name__ == "__main__":
    main()
