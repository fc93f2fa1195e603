"""The light install against the torch install: whole-process ``sarcolor colorize`` time, throughput, memory, size.

Both run this repository's package in fresh processes, alternately, side by side:
- light: the CLI with ``import torch`` made to fail (what ``pip install sarcolor`` gives: the numpy runtime);
- torch: the same engine with the default model as a torch module (``models.load_model``), torch imported
  first, as every install did before the light path (the CLI imported torch with the engine).
Each process's wall time and peak RSS (``os.wait4``) are recorded; medians are reported, with the time of
``python -c "import torch"`` alone.

    python benchmarks/bench_light.py                         # a 1024 x 1024 scene, 5 runs each
    python benchmarks/bench_light.py --size 20000 --repeats 1 # throughput and peak RSS on a large scene
    python benchmarks/bench_light.py --size 20000 --repeats 1 --only light
    python benchmarks/bench_light.py --site-packages /tmp/light-venv/lib/python3.11/site-packages

The 1024 px scene is volkov_s1s2's first SAR tile where ../shared/data has it, else a generated dB GeoTIFF.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_colorize_large import write_scene  # noqa: E402

VOLKOV = REPO.parent / "shared" / "data" / "volkov_s1s2" / "sar"

LIGHT = ("import sys; sys.modules['torch'] = None\n"
         "from sarcolor.cli import main\n"
         "sys.exit(main(['colorize', sys.argv[1], '-o', sys.argv[2], '-q', '--overwrite']))")
TORCH = ("import sys, torch\n"
         "from sarcolor.engine import colorize_paths\n"
         "from sarcolor.models import load_model\n"
         "sys.exit(colorize_paths(sys.argv[1], sys.argv[2], model=load_model('default'), quiet=True,"
         " overwrite=True))")


def run(code: str, *args: str) -> tuple[float, float, float]:
    """One fresh Python process: (wall seconds, CPU seconds (user + system), peak RSS in MiB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: a run failed: {code.splitlines()[-1]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def scene(size: int, tmp: Path) -> Path:
    tiles = sorted(VOLKOV.glob("*.png")) if size == 1024 else []
    if tiles:
        return tiles[0]
    path = tmp / f"scene_{size}.tif"
    write_scene(path, size)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="scene side in pixels (default: 1024)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each (default: 5)")
    p.add_argument("--only", choices=("light", "torch"), help="run one side only (the large scene takes long)")
    p.add_argument("--site-packages", nargs="*", default=[], type=Path, metavar="DIR",
                   help="report the installed size of these folders (say, a light venv's site-packages)")
    args = p.parse_args(argv)
    for folder in args.site_packages:
        print(f"{folder}: {folder_mb(folder):.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        src = scene(args.size, Path(tmp))
        out = str(Path(tmp) / "out.tif")
        print(f"scene: {src} ({args.size} x {args.size}); {args.repeats} runs each, alternating")
        times: dict[str, list[tuple[float, float, float]]] = {"light": [], "torch": [], "import torch": []}
        for _ in range(args.repeats):
            if args.only != "torch":
                times["light"].append(run(LIGHT, str(src), out))
            if args.only != "light":
                times["torch"].append(run(TORCH, str(src), out))
            if args.size <= 4096 and args.only is None:
                times["import torch"].append(run("import torch"))
    mp = args.size * args.size / 1e6
    med = {k: statistics.median(t for t, _, _ in v) for k, v in times.items() if v}
    for name, runs in times.items():
        if runs:
            cpu, rss = statistics.median(c for _, c, _ in runs), max(r for _, _, r in runs)
            print(f"{name:>12}: median {med[name]:.2f} s wall (runs {', '.join(f'{t:.2f}' for t, _, _ in runs)}), "
                  f"{cpu:.2f} s CPU; {mp / med[name]:.2f} MP/s whole process; peak RSS {rss:.0f} MiB")
    if args.only is None:
        print(f"light vs torch: {med['torch'] / med['light']:.2f}x faster (whole process, median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
