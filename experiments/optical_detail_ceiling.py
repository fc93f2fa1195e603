"""How much of the optical image's fine structure does the SAR carry? (The optical look's ceiling.)

On a config's held-out pairs, per source, with no model:

- ``band corr``: per band of a difference of Gaussians (sigma 1-2, 2-4, 4-8, 8-16 px), the correlation of the
  SAR's dB band with the optical grey's band, per image, then the mean of its absolute value (the sign may
  differ from image to image). 1 would mean the SAR shows the optical's detail at that scale; 0 that it shows
  none of it;
- ``structure``: ``sarcolor evaluate``'s SAR-structure score of the optical truth itself (how well its edges
  follow the SAR's) beside that of the SAR in grey (evaluate's baseline: the linear 8-bit display, not the dB
  the score compares with, so below 1);
- what the realism score (SWD, as evaluate computes it) gives two oracles that know the truth: ``fog``, the
  truth blurred (Gaussian sigma 4 px: perfect colour and layout, no detail), and ``fog + SAR detail``, that
  fog plus the SAR's 1-4 px band scaled to the truth's own detail amplitude with the sign of their
  correlation: detail measured by the radar, at the optical's strength, but not the optical's detail.
  Their SSIM and sharpness say what that detail costs in fidelity and how sharp it reads.

    python experiments/optical_detail_ceiling.py [--config configs/colournet.yaml] [--per-source N]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from sarcolor import metrics
from sarcolor.data import read_pair
from sarcolor.evaluate import first_per_source, pair_valid, sar_display, select_pairs
from sarcolor.preprocess import to_db

REPO = Path(__file__).resolve().parents[1]
BANDS = ((1, 2), (2, 4), (4, 8), (8, 16))  # px: difference of Gaussians sigma a - sigma b
FOG_SIGMA = 4.0
DETAIL_BAND = (1, 4)


def band(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return gaussian_filter(x, a) - gaussian_filter(x, b)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two samples; 0 when either is flat."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def oracles(db: np.ndarray, opt: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """The fog and fog + SAR detail oracles of one pair (8-bit RGB)."""
    truth = opt.astype(np.float64)
    fog = gaussian_filter(truth, (FOG_SIGMA, FOG_SIGMA, 0))
    grey = truth.mean(axis=2)
    want = (grey - gaussian_filter(grey, FOG_SIGMA))[valid]  # the optical detail the fog lacks
    sar = band(db, *DETAIL_BAND)
    sar_v = sar[valid]
    gain = np.sign(_corr(sar_v, want) or 1.0) * want.std() / max(float(sar_v.std()), 1e-9)
    return {"fog": _u8(fog), "fog + SAR detail": _u8(fog + (gain * sar)[..., None])}


def measure(pairs: list) -> dict[str, dict[str, float]]:
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, ref in enumerate(pairs):
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = pair_valid(sv, opt, ov)
        db = to_db(np.where(valid, sar, np.median(sar[valid])).astype(np.float64), scale)
        grey = opt.astype(np.float64).mean(axis=2)
        row = per[ref.source]
        for a, b in BANDS:
            row[f"band {a}-{b} px"].append(abs(_corr(band(db, a, b)[valid], band(grey, a, b)[valid])))
        db32 = db.astype(np.float32)
        row["structure truth"].append(metrics.structure(opt, db32, valid))
        sar_grey = metrics.grey_rgb(sar_display(sar, sv, scale))
        row["structure SAR grey"].append(metrics.structure(sar_grey, db32, valid))
        pos = metrics.patch_positions(valid, i)
        row["_truth patches"].append(metrics.laplacian_patches(opt, pos))
        for name, img in oracles(db, opt, valid).items():
            row[f"_{name} patches"].append(metrics.laplacian_patches(img, pos))
            row[f"SSIM {name}"].append(metrics.ssim(img, opt, valid))
            row[f"sharpness {name}"].append(metrics.sharpness(img, opt, valid))
    out = {}
    for source, row in per.items():
        res = {k: float(np.nanmean(v)) for k, v in row.items() if not k.startswith("_")}
        for name in ("fog", "fog + SAR detail"):
            res[f"SWD {name}"] = metrics.swd_of_images(row[f"_{name} patches"], row["_truth patches"])
        res["n"] = len(row["_truth patches"])
        out[source] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "colournet.yaml"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--per-source", type=int, default=0, help="only the first N pairs of each source (0: all)")
    args = ap.parse_args()
    sel = select_pairs(args.config, None, args.split)
    pairs = first_per_source(sel.pairs, args.per_source)
    res = measure(pairs)
    cols = [f"band {a}-{b} px" for a, b in BANDS] + ["structure truth", "structure SAR grey"]
    cols += [f"{m} {o}" for o in ("fog", "fog + SAR detail") for m in ("SWD", "SSIM", "sharpness")]
    print(f"{sel.description}\n")
    print("| source (n) | " + " | ".join(cols) + " |")
    print("|---|" + "--:|" * len(cols))
    for source, r in res.items():
        print(f"| {source} ({r['n']}) | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
