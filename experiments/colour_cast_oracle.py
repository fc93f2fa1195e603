"""How much of a model's held-out colour error is each image's or scene's overall colour balance (its cast)?

For each held-out pair, the `sar` look of the model is scored as `sarcolor evaluate` scores it (colour error
alone), then again after an oracle shifts its a*b* by the mean a*b* error of the pair itself (``image``) and of
its scene or tile (``scene``: the split's group). The oracle looks at the truth, so it is a ceiling, not a
method: what is left after it is the error within the image (which place gets which colour). A source whose
error mostly vanishes under ``image`` misses its images' colour balance, which is set by the optical rendering
(volkov_s1s2's per-image 99th-percentile stretch) or the season (SEN1-2), not by the land cover the SAR shows.

    python experiments/colour_cast_oracle.py --config configs/colournet.yaml --model default
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from sarcolor.data import read_pair
from sarcolor.engine import colorize_array
from sarcolor.evaluate import pair_valid, select_pairs
from sarcolor.metrics import chroma_ratio, colour_error
from sarcolor.models import load_model


def shifted(lab: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """(H, W, 3) Lab with ``ab`` added to every pixel's a*b* (L* kept) -> uint8 RGB."""
    out = lab.copy()
    out[..., 1:] += ab
    return (np.clip(lab2rgb(out), 0, 1) * 255 + 0.5).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/colournet.yaml", help="whose validation split is used")
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    net, cfg = load_model(args.model)
    # per source, per group: (prediction, truth, valid) of each held-out pair
    items: dict[str, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for ref in select_pairs(args.config, None, "val").pairs:
        sar, sv, opt, ov, scale = read_pair(ref)
        render = ref.render if ref.render in cfg.renders else None
        rgb = colorize_array(net, cfg, sar, valid=sv, scale=scale, look="sar", render=render)
        items[ref.source][ref.group].append((rgb, opt, pair_valid(sv, opt, ov)))
    print(f"{args.model}, sar look: colour error alone (chroma ratio) as shipped / each scene's mean colour "
          "corrected / each image's")
    for source in sorted(items):
        rows: list[list[float]] = []
        for pairs in items[source].values():
            labs = [rgb2lab(p) for p, _, _ in pairs]
            # each image's mean a*b* error and its pixel count: the scene's mean is their weighted mean
            errors = [(rgb2lab(o)[v] - lab[v])[:, 1:].mean(0) for lab, (_, o, v) in zip(labs, pairs, strict=True)]
            counts = [int(v.sum()) for _, _, v in pairs]
            scene_ab = np.average(errors, axis=0, weights=counts)
            for (p, o, v), lab, e in zip(pairs, labs, errors, strict=True):
                by_scene, by_image = shifted(lab, scene_ab), shifted(lab, e)
                rows.append([colour_error(p, o, v), colour_error(by_scene, o, v), colour_error(by_image, o, v),
                             chroma_ratio(p, o, v), chroma_ratio(by_image, o, v)])
        m = np.mean(rows, 0)
        print(f"{source:16} {m[0]:6.2f} ({m[3]:.2f}) {m[1]:6.2f} {m[2]:6.2f} ({m[4]:.2f})  n={len(rows)}")


if __name__ == "__main__":
    main()
