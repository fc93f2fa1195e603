"""The `sar` look's ceiling: built from the truth's own colour, how close can it get?

For held-out pairs of each source, the sar look is composed exactly as the default model composes it (the SAR's
Lee-filtered, tone-curved lightness; a*b* at 1/4 resolution set under that lightness, carried as chroma by the
guided filter), but with the truth's own a*b* (averaged over 4x4 pixels) in place of the model's. Its colour error
alone and chroma ratio say what the composition itself costs; the rest of a model's error is the model's.

    python experiments/sar_look_oracle.py --config configs/colournet.yaml --per-source 6
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
import torch.nn.functional as F

from sarcolor import looks, metrics
from sarcolor.colour import rgb_to_lab
from sarcolor.data import read_pair
from sarcolor.evaluate import first_per_source, pair_valid, select_pairs
from sarcolor.preprocess import scene_input

FACTOR = 4  # the default model's colour resolution


def oracle_sar_look(sar: np.ndarray, sar_valid: np.ndarray, opt: np.ndarray, scale: str) -> np.ndarray:
    """(H, W) SAR + its (H, W, 3) uint8 truth -> the sar look with the truth's colour, (h, w, 3) uint8, where
    h, w are H, W cut down to multiples of 16 (as the model's input)."""
    h, w = (s // 16 * 16 for s in sar.shape)
    x = torch.from_numpy(scene_input(sar, sar_valid, scale, "logpct", 1)[:, :h, :w])[None]
    y = torch.from_numpy(opt[:h, :w]).permute(2, 0, 1)[None].float() / 127.5 - 1
    rgb = looks.sar_look(looks.sar_lightness(x), F.avg_pool2d(rgb_to_lab(y), FACTOR)[:, 1:], FACTOR)
    return ((rgb[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/colournet.yaml", help="whose validation split is used")
    ap.add_argument("--per-source", type=int, default=6, help="held-out pairs per source")
    args = ap.parse_args()
    torch.set_num_threads(1)
    chosen: dict[str, list] = collections.defaultdict(list)
    for ref in first_per_source(select_pairs(args.config, None, "val").pairs, args.per_source):
        chosen[ref.source].append(ref)
    print(f"{'source':16} {'n':>3} {'colour error':>13} {'chroma ratio':>13}")
    for source, refs in chosen.items():
        errors, chroma = [], []
        for ref in refs:
            sar, sv, opt, ov, scale = read_pair(ref)
            out = oracle_sar_look(sar, sv, opt, scale)
            h, w = out.shape[:2]
            valid = pair_valid(sv, opt, ov)[:h, :w]
            errors.append(metrics.colour_error(out, opt[:h, :w], valid))
            chroma.append(metrics.chroma_ratio(out, opt[:h, :w], valid))
        print(f"{source:16} {len(refs):3d} {np.mean(errors):13.2f} {np.mean(chroma):13.2f}")


if __name__ == "__main__":
    main()
