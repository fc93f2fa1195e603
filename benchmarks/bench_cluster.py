"""Cluster throughput: ``sarcolor colorize --workers N`` (Dask) with 1 and 2 workers vs the plain path, same run.

Part 1, throughput: the same scenes (8 real 1024x1024 volkov_s1s2 SAR tiles when ../shared/data is there,
else synthetic speckled SAR) colorized into a fresh folder by
    plain-1t   colorize_paths in this process, 1 torch thread (what one Dask worker does per scene)
    plain-all  colorize_paths in this process, all cores (``sarcolor colorize`` without a cluster)
    dask-1w    colorize_paths_distributed on a LocalCluster of 1 single-threaded worker process
    dask-2w    the same with 2 workers
Part 2, per-scene overhead: many small scenes (128x128) through plain-1t and dask-1w; the difference per
scene is what the cluster path costs (submitting, the result's round trip, the manifest, the header read).

Both clusters are started (and their workers have loaded the model) before any timing; their start-up is
printed separately. Besides wall time, the CPU seconds of every process involved (this one and the workers)
are summed: on a machine whose cores are busy with other work, wall time cannot show 2 workers scaling,
while equal CPU per scene shows what they would do on free cores (Linux's autogroups also share the CPU
between setsid groups, not processes: under load, all of one group's processes together get one share).
The configurations alternate in every round, so a slow spell of a shared machine hits all of them; the
tables show medians over rounds. Model: the shipped default.

    python benchmarks/bench_cluster.py                       # ~3 min on a quiet 2-core machine
    python benchmarks/bench_cluster.py --rounds 5 --small 64
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import rasterio
from distributed import Client
from rasterio.errors import NotGeoreferencedWarning

from sarcolor.cluster import colorize_paths_distributed, open_client
from sarcolor.engine import colorize_paths
from sarcolor.models import SHIPPED

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """n float32 dB GeoTIFFs: smooth fields plus gamma speckle."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        db = -14 + 5 * np.sin((6 + i) * xx) * np.cos(4 * yy) + 10 * np.log10(rng.gamma(4.0, 0.25, (size, size)))
        p = folder / f"s{i:03d}.tif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32") as ds:
                ds.write(db.astype(np.float32), 1)
        paths.append(p)
    return paths


def big_scenes(tmp: Path, n: int) -> list[Path]:
    real = sorted((DATA / "volkov_s1s2" / "sar").glob("*.png"))[:n]
    return real if len(real) == n else synthetic(tmp / "big", n, 1024)


def megapixels(paths: list[Path]) -> float:
    total = 0
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(p) as ds:
                total += ds.width * ds.height
    return total / 1e6


Runner = tuple[Callable[[Path], int], Callable[[], float]]  # (colorize into a folder, CPU seconds used so far)


def timed(runner: Runner, tmp: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every process involved) of one run into a fresh folder."""
    fn, cpu = runner
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    c, t = cpu(), time.perf_counter()
    assert fn(out) == 0
    return time.perf_counter() - t, cpu() - c


def plain(paths: list[Path], threads: str | None) -> Runner:
    def run(out: Path) -> int:
        old = os.environ.pop("OMP_NUM_THREADS", None)
        if threads:
            os.environ["OMP_NUM_THREADS"] = threads  # what colorize's inference_threads() reads
        try:
            return colorize_paths(paths, out, model="default", device="cpu", quiet=True)
        finally:
            os.environ.pop("OMP_NUM_THREADS", None)
            if old is not None:
                os.environ["OMP_NUM_THREADS"] = old
    return run, time.process_time


def on(client: Client, paths: list[Path]) -> Runner:
    def run(out: Path) -> int:
        return colorize_paths_distributed(paths, out, client=client, model="default", device="cpu", quiet=True)

    return run, lambda: time.process_time() + sum(client.run(time.process_time).values())


def start(stack: ExitStack, workers: int) -> tuple[Client, float]:
    """The local cluster of ``sarcolor colorize --workers N``, its workers warmed up."""
    t = time.perf_counter()
    client = stack.enter_context(open_client(workers=workers))
    # Import sarcolor and load the model in every worker, so the timed runs are the steady state.
    client.run(exec, f"from sarcolor.engine import get_model; get_model({str(SHIPPED['default'])!r}, 'cpu')")
    return client, time.perf_counter() - t


def table(title: str, times: dict[str, list[tuple[float, float]]], n: int, mp: float, base: str) -> None:
    print(f"\n{title}: {n} scenes, {mp:.1f} MP, median of {len(next(iter(times.values())))} rounds")
    print(f"| {'path':<10} | {'wall s':>7} | {'s/scene':>8} | {'MP/s':>6} | {'vs ' + base:>12} "
          f"| {'CPU s':>6} | {'CPU vs ' + base:>16} |")
    print(f"|{'-' * 12}|{'-' * 8}:|{'-' * 9}:|{'-' * 7}:|{'-' * 13}:|{'-' * 7}:|{'-' * 17}:|")
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    for k in times:
        print(f"| {k:<10} | {wall[k]:>7.2f} | {wall[k] / n:>8.3f} | {mp / wall[k]:>6.2f} | "
              f"{wall[base] / wall[k]:>11.2f}x | {cpu[k]:>6.2f} | {cpu[k] / cpu[base]:>15.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenes", type=int, default=8, help="1024x1024 scenes for the throughput part")
    ap.add_argument("--small", type=int, default=40, help="128x128 scenes for the overhead part")
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        big = big_scenes(tmp, args.scenes)
        small = synthetic(tmp / "small", args.small, 128, seed=1)
        with ExitStack() as stack:
            client1, s1 = start(stack, 1)
            client2, s2 = start(stack, 2)
            print(f"cores: {len(os.sched_getaffinity(0))}; LocalCluster start + model load: 1 worker {s1:.1f} s, "
                  f"2 workers {s2:.1f} s; scenes: {big[0].parent}")
            runs = {"plain-1t": plain(big, "1"), "plain-all": plain(big, None), "dask-1w": on(client1, big),
                    "dask-2w": on(client2, big)}
            small_runs = {"plain-1t": plain(small, "1"), "dask-1w": on(client1, small)}
            for fn in (*runs.values(), *small_runs.values()):
                timed(fn, tmp)  # warm-up: file caches, first-call costs
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
            small_times: dict[str, list[tuple[float, float]]] = {k: [] for k in small_runs}
            for _ in range(args.rounds):
                for k, fn in runs.items():
                    times[k].append(timed(fn, tmp))
                for k, fn in small_runs.items():
                    small_times[k].append(timed(fn, tmp))
        table("throughput", times, len(big), megapixels(big), "plain-1t")
        d2 = statistics.median(w for w, _ in times["dask-1w"]) / statistics.median(w for w, _ in times["dask-2w"])
        print(f"dask 2 workers / 1 worker, wall: {d2:.2f}x")
        table("per-scene overhead (small scenes)", small_times, len(small), megapixels(small), "plain-1t")
        over = (statistics.median(w for w, _ in small_times["dask-1w"])
                - statistics.median(w for w, _ in small_times["plain-1t"])) / len(small)
        print(f"cluster path overhead: {over * 1000:+.0f} ms wall per scene")


if __name__ == "__main__":
    main()
