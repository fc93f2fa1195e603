"""Does the predicted colour vary where the truth's does? The question the colour error alone cannot answer.

For each held-out pair, the `sar` look of each model and the optical truth are averaged in a*b* over square
blocks (32 px by default; blocks with nodata are left out). Per source it prints the spread of the prediction's
block colours over the truth's (1: as varied as the truth; near 0: one colour everywhere) and the mean
correlation of the block a* and b* with the truth's (1: the right colour in the right place; 0: no better
than chance). A model that paints each source's average colour scores a low colour error and a spread near 0.

    python experiments/colour_variation.py --config configs/colournet.yaml --models default \\
        benchmarks/models/colournet.safetensors benchmarks/models/sarcolornet.safetensors
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from skimage.color import rgb2lab

from sarcolor.data import read_pair
from sarcolor.engine import colorize_array
from sarcolor.evaluate import pair_valid, select_pairs
from sarcolor.models import load_model


def block_ab(rgb: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (n, 2) mean a*b* of each wholly valid size x size block."""
    h, w = rgb.shape[0] // size * size, rgb.shape[1] // size * size
    ab = rgb2lab(rgb[:h, :w])[..., 1:].reshape(h // size, size, w // size, size, 2).mean((1, 3)).reshape(-1, 2)
    return ab[valid[:h, :w].reshape(h // size, size, w // size, size).all((1, 3)).reshape(-1)]


def spread_and_correlation(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Block colours (n, 2) -> (spread of pred over truth's, mean correlation of a* and b*; 0 where flat)."""
    spread = float(np.sqrt(pred.var(0).sum() / max(truth.var(0).sum(), 1e-9)))
    corr = [float(np.corrcoef(pred[:, i], truth[:, i])[0, 1]) if min(pred[:, i].std(), truth[:, i].std()) > 1e-6
            else 0.0 for i in range(2)]
    return spread, float(np.mean(corr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/colournet.yaml", help="whose validation split is used")
    ap.add_argument("--models", nargs="+", default=["default"])
    ap.add_argument("--block", type=int, default=32, help="block size in pixels")
    args = ap.parse_args()
    nets = {m: load_model(m) for m in args.models}
    rows: dict[str, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for ref in select_pairs(args.config, None, "val").pairs:
        sar, sv, opt, ov, scale = read_pair(ref)
        valid = pair_valid(sv, opt, ov)
        truth = block_ab(opt, valid, args.block)
        if len(truth) < 4:  # too small a patch for a spread
            continue
        for name, (net, cfg) in nets.items():
            render = ref.render if ref.render in cfg.renders else None
            rgb = colorize_array(net, cfg, sar, valid=sv, scale=scale, look="sar", render=render)
            rows[name][ref.source].append(spread_and_correlation(block_ab(rgb, valid, args.block), truth))
    sources = sorted({s for per in rows.values() for s in per})
    print(f"{args.block}x{args.block} px blocks, sar look: spread of a*b* (prediction / truth) / correlation")
    print(f"{'model':14}", *(f"{s[:16]:>18}" for s in sources))
    for name, per in rows.items():
        cells = [f"{np.mean([a for a, _ in per[s]]):5.2f} / {np.mean([c for _, c in per[s]]):5.2f}" for s in sources]
        print(f"{name:14}", *(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
