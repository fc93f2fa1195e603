"""The optical look's perception-distortion table: realism (SWD, sharpness) against fidelity (CIEDE2000, SSIM).

Every candidate model's ``optical`` look is scored on the held-out pairs of a config's split (every source's
held-out scenes) with ``sarcolor evaluate``'s machinery, per source and overall; the first candidate is the
reference ("today's shipped model") that the ratios are taken against, in the same run. Pixel losses and
fidelity-only selection give fog (low SWD realism, low sharpness); GANs give invented texture (worse
CIEDE2000/SSIM): the table and the plane show where each candidate lands (Blau and Michaeli, CVPR 2018).

    python experiments/perception_distortion.py --config configs/colournet.yaml \\
        --models default colournet-detail=benchmarks/models/colournet.safetensors pix2pix=runs/pix2pix-seed-colour \\
        -o reports/perception-distortion [--per-source 10]

Writes ``table.md`` (the rows below), ``plane.png`` (SWD vs CIEDE2000, one panel per source), ``summary.json``
and the contact sheets of ``sarcolor evaluate`` (SAR | each candidate | truth, per source).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sarcolor.evaluate import ALL, ModelRunner, _model_file, first_per_source, run_evaluation, select_pairs
from sarcolor.models import load_model

COLUMNS = ("swd", "ciede2000", "sharpness", "ssim", "chroma_ratio", "colour_error")
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def load_candidates(specs: list[str]) -> list[ModelRunner]:
    """``NAME=MODEL`` or ``MODEL`` (shipped name, file or run folder) -> optical-look runners named NAME."""
    runners = []
    for spec in specs:
        name, _, model = spec.rpartition("=")
        name = name or Path(model).stem
        net, cfg = load_model(_model_file(model))
        runners.append(ModelRunner(name, net, cfg, "cpu", "optical"))
    return runners


def table(summary: dict, names: list[str]) -> str:
    """Markdown rows per source and candidate, with SWD, CIEDE2000 and SSIM also as ratios / differences
    against the first candidate (the reference)."""
    ref = names[0]
    lines = ["| source | candidate | SWD ↓ | SWD / ref | CIEDE2000 ↓ | - ref | sharpness →1 | SSIM ↑ | SSIM / ref "
             "| chroma →1 | colour ΔE00 ↓ |", "|" + "---|" * 11]
    for group, per in summary.items():
        r = per[ref]
        for n in names:
            m = per[n]
            lines.append(f"| {group} | {n} | {m['swd']:.3f} | {m['swd'] / r['swd']:.2f} | {m['ciede2000']:.2f} | "
                         f"{m['ciede2000'] - r['ciede2000']:+.2f} | {m['sharpness']:.2f} | {m['ssim']:.3f} | "
                         f"{m['ssim'] / r['ssim']:.2f} | {m['chroma_ratio']:.2f} | {m['colour_error']:.2f} |")
    return "\n".join(lines) + "\n"


def plane(summary: dict, names: list[str], size: int = 260) -> Image.Image:
    """SWD (x) against CIEDE2000 (y) per source, one panel each: lower-left is realistic and faithful."""
    groups = list(summary)
    font = ImageFont.load_default()
    img = Image.new("RGB", (size * len(groups), size + 22 + 14 * len(names)), "white")
    d = ImageDraw.Draw(img)
    for g, group in enumerate(groups):
        pts = {n: (summary[group][n]["swd"], summary[group][n]["ciede2000"]) for n in names}
        xs = [p[0] for p in pts.values() if math.isfinite(p[0])] or [0.0]
        ys = [p[1] for p in pts.values() if math.isfinite(p[1])] or [0.0]
        x0, x1 = 0.0, max(xs) * 1.15 + 1e-6
        y0, y1 = min(ys) * 0.9, max(ys) * 1.05 + 1e-6
        ox, oy, w, h = g * size + 34, 18, size - 44, size - 48
        d.rectangle([ox, oy, ox + w, oy + h], outline="black")
        d.text((ox, 2), group, fill="black", font=font)
        d.text((ox + w - 44, oy + h + 4), "SWD ->", fill="black", font=font)
        d.text((ox - 32, oy), f"{y1:.0f}", fill="black", font=font)
        d.text((ox - 32, oy + h - 10), f"{y0:.0f}", fill="black", font=font)
        d.text((ox - 32, oy + h // 2), "dE00", fill="black", font=font)
        d.text((ox, oy + h + 4), f"{x0:.1f}..{x1:.2f}", fill="black", font=font)
        for i, (x, y) in enumerate(pts.values()):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            px, py = ox + (x - x0) / (x1 - x0) * w, oy + h - (y - y0) / (y1 - y0) * h
            d.ellipse([px - 5, py - 5, px + 5, py + 5], fill=COLOURS[i % len(COLOURS)])
    for i, n in enumerate(names):
        y = size + 8 + 14 * i
        d.ellipse([10, y, 20, y + 10], fill=COLOURS[i % len(COLOURS)])
        d.text((26, y - 1), n, fill="black", font=font)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/colournet.yaml", help="whose validation split is scored")
    ap.add_argument("--models", nargs="+", required=True,
                    help="NAME=MODEL or MODEL (shipped name, .safetensors or run folder); the first is the reference")
    ap.add_argument("--samples", type=int, default=3, help="contact-sheet rows per source")
    ap.add_argument("--per-source", type=int, default=0,
                    help="score only the first N held-out pairs of each source (0: all), for a quicker run")
    ap.add_argument("-o", "--out", default="reports/perception-distortion")
    args = ap.parse_args()
    sel = select_pairs(args.config, None, "val")
    pairs = first_per_source(sel.pairs, args.per_source)
    runners = load_candidates(args.models)
    names = [r.name for r in runners]
    report = run_evaluation(pairs, runners, args.out, samples=args.samples, description=sel.description)
    summary = {g: report.summary[g] for g in [ALL, *[k for k in report.summary if k != ALL]]}
    out = Path(args.out)
    text = table(summary, names)
    (out / "table.md").write_text(f"# Perception-distortion table (optical look)\n\n{sel.description}\n\n"
                                  f"Reference: {names[0]}.\n\n{text}")
    plane(summary, names).save(out / "plane.png")
    (out / "candidates.json").write_text(json.dumps(dict(zip(names, args.models, strict=True)), indent=1))
    print(text, end="")
    print(f"report: {out}")


if __name__ == "__main__":
    main()
