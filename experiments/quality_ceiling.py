"""How high can PSNR / SSIM / CIEDE2000 go on a validation split? Oracles that peek at the truth.

Not a model and not a baseline: each oracle is fitted on the very image it is scored on, so it shows what the
metrics reward and how much of the score is global colour. Scored exactly as ``sarcolor evaluate`` scores
(8-bit RGB per image over valid pixels, then the mean over images):

- ``true-mean-colour``: every pixel gets the image's own mean colour (perfect global colour, no structure);
- ``sar-regression``: per image, least squares of the truth on the SAR in dB smoothed at 1, 5, 15 and 45 px
  (perfect per-image colour calibration of what the SAR brightness says);
- ``blurred-truth``: the truth box-blurred over 16 px (perfect colour at field scale, no fine detail).

    python experiments/quality_ceiling.py                          # the default config's validation split
    python experiments/quality_ceiling.py --config configs/sarcolornet.yaml --split val
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

from sarcolor import metrics
from sarcolor.data import read_pair
from sarcolor.evaluate import pair_valid, sar_display, select_pairs
from sarcolor.preprocess import to_db

REPO = Path(__file__).resolve().parents[1]


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def oracles(sar: np.ndarray, opt: np.ndarray, valid: np.ndarray, scale: str) -> dict[str, np.ndarray]:
    truth = opt.astype(np.float64)
    mean = truth[valid].mean(axis=0)
    db = to_db(np.where(valid, sar, np.median(sar[valid])).astype(np.float64), scale)
    feats = np.stack([np.ones_like(db)] + [uniform_filter(db, k) for k in (1, 5, 15, 45)], axis=-1)
    beta = np.linalg.lstsq(feats[valid], truth[valid], rcond=None)[0]
    blur = np.stack([uniform_filter(truth[..., c], 16) for c in range(3)], axis=-1)
    return {"true-mean-colour": _u8(np.broadcast_to(mean, truth.shape)),
            "sar-regression": _u8(feats @ beta), "blurred-truth": _u8(blur)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "sarcolornet.yaml"))
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    sel = select_pairs(args.config, None, args.split)
    scores: dict[str, list[dict[str, float]]] = {}
    for ref in sel.pairs:
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = pair_valid(sv, opt, ov)
        prepared = metrics.prepare(opt, sar_display(sar, sv, scale), valid)
        for name, pred in oracles(sar, opt, valid, scale).items():
            scores.setdefault(name, []).append(metrics.score(pred, prepared)[0])
    print(f"{args.config}, split {args.split}: {len(sel.pairs)} pair(s); oracles fitted on each scored image")
    print(f"{'oracle':<18} {'PSNR':>6} {'SSIM':>7} {'dE00':>6} {'chroma':>7}")
    for name, rows in scores.items():
        m = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "ciede2000", "chroma_ratio")}
        print(f"{name:<18} {m['psnr']:6.2f} {m['ssim']:7.4f} {m['ciede2000']:6.2f} {m['chroma_ratio']:7.3f}")


if __name__ == "__main__":
    main()
