"""Bounded load test of ``sarcolor serve`` on loopback: N concurrent uploads of a 1024 x 1024 SAR image.

Starts the server as a subprocess (``python -m sarcolor serve``) with the shipped model, or a random model of
the default configuration (same compute) when none is shipped, checks that every request gets a 1024 x 1024
PNG back, and reports latencies and the resident memory of the server's process tree (the server, its worker
processes and their forkserver): before, after one warm-up request, and the peak sampled over the whole
burst (plus the server process's own VmHWM). Because jobs queue on a bounded worker pool, the peak should stay
close to the warm-up figure instead of growing with the number of concurrent requests.

    python benchmarks/bench_server_load.py                 # 20 uploads, 1 worker, server pinned to 1 CPU
    python benchmarks/bench_server_load.py --cpus 2 --workers 2 --json out.json

Exit code 1 when a request fails, the burst exceeds --timeout, or the sampled peak tree RSS exceeds
--max-rss-mb.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REAL_SAR_DIR = ROOT.parent / "shared" / "data" / "volkov_s1s2" / "sar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid: int, field: str) -> int:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def tree_pids(root: int) -> list[int]:
    """root and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_memory_mb(root: int) -> dict[str, float]:
    """RSS of the root process, and RSS and PSS summed over its process tree, in MB (PSS shares out the
    pages that forked processes have in common, so it does not count them twice)."""
    rss = pss = server = 0
    pids = tree_pids(root)
    for pid in pids:
        try:
            kb = proc_kb(pid, "VmRSS")
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss += int(next(x for x in rollup.splitlines() if x.startswith("Pss:")).split()[1])
        except (OSError, KeyError, StopIteration):
            continue
        rss += kb
        server = kb if pid == root else server
    return {"server_rss": round(server / 1024, 1), "tree_rss": round(rss / 1024, 1),
            "tree_pss": round(pss / 1024, 1), "processes": len(pids)}


def wait_healthy(client: httpx.Client, server: subprocess.Popen, log_path: Path, limit: float) -> None:
    """Until /api/health answers; SystemExit with the server's log when it exits or takes over ``limit`` s."""
    deadline = time.time() + limit
    while True:
        if server.poll() is not None:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise SystemExit("server exited during start-up")
        try:
            if client.get("/api/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"server did not answer /api/health within {limit:.0f} s")
        time.sleep(0.2)


def stop_server(server: subprocess.Popen, wait: float = 30) -> None:
    """SIGINT: uvicorn's graceful shutdown, which deletes the server's temp folder and stops its workers."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(wait)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def test_image(size: int) -> tuple[bytes, str]:
    """A real 1024 x 1024 Sentinel-1 tile when the shared data is there, else a speckled synthetic one."""
    real = sorted(REAL_SAR_DIR.glob("*.png")) if REAL_SAR_DIR.is_dir() else []
    if real:
        with Image.open(real[0]) as im:
            arr = np.asarray(im.convert("L"))
        if arr.shape[0] >= size and arr.shape[1] >= size:
            src = f"{real[0].name} (volkov_s1s2)"
            arr = arr[:size, :size]
        else:
            real = []
    if not real:
        rng = np.random.default_rng(0)
        field = rng.uniform(0.05, 0.6, (16, 16)).repeat(size // 16 + 1, 0).repeat(size // 16 + 1, 1)[:size, :size]
        arr = np.clip(field * rng.gamma(4.0, 0.25, (size, size)) * 255, 0, 255).astype(np.uint8)
        src = "synthetic speckle"
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue(), src


def model_path(tmp: Path) -> tuple[str, str]:
    from sarcolor.models import SHIPPED, ModelConfig, build_model, save_model

    if SHIPPED["default"].exists():
        return "default", "shipped default"
    import torch

    torch.manual_seed(0)
    cfg = ModelConfig(name="random-default-config")
    path = tmp / "random-default.safetensors"
    save_model(path, build_model(cfg), cfg, card="random weights with the default configuration (benchmark)")
    return str(path), "random weights, default configuration"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="concurrent uploads (default 20)")
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    ap.add_argument("--workers", type=int, default=1, help="server colorize workers (default 1)")
    ap.add_argument("--cpus", type=int, default=1, help="pin the server to this many CPUs (default 1)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole burst (default 900)")
    ap.add_argument("--max-rss-mb", type=float, default=2048.0, help="fail above this peak RSS (default 2048)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    if not 1 <= args.n <= 200:
        ap.error("--n: 1..200")

    tmp = Path(tempfile.mkdtemp(prefix="sarcolor-bench-"))
    model, model_desc = model_path(tmp)
    image, image_desc = test_image(args.size)
    port = free_port()
    cmd = [sys.executable, "-m", "sarcolor", "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model,
           "--workers", str(args.workers), "--max-upload-mb", "50", "--ttl", "600"]
    log_path = tmp / "server.log"
    log_file = open(log_path, "w")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    cpus = sorted(os.sched_getaffinity(0))[: max(1, args.cpus)]
    os.sched_setaffinity(server.pid, cpus)  # before torch starts its threads, which inherit it
    base = f"http://127.0.0.1:{port}"
    result: dict = {}
    try:
        with httpx.Client(base_url=base, timeout=args.timeout) as client:
            wait_healthy(client, server, log_path, 120)
            mem_idle = tree_memory_mb(server.pid)

            def one(_: int) -> tuple[float, int, str]:
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/colorize", files={"file": ("sar.png", image, "image/png")})
                except httpx.HTTPError as exc:
                    return time.perf_counter() - t0, 0, f"{exc.__class__.__name__}: {exc}"
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    return dt, r.status_code, r.text[:200]
                with Image.open(io.BytesIO(r.content)) as im:
                    if im.size != (args.size, args.size) or im.mode != "RGB":
                        return dt, r.status_code, f"unexpected result {im.size} {im.mode}"
                return dt, 200, ""

            warm_dt, warm_status, warm_err = one(0)
            if warm_status != 200:
                raise SystemExit(f"warm-up request failed: {warm_status} {warm_err}")
            mem_warm = tree_memory_mb(server.pid)
            hwm_warm = proc_kb(server.pid, "VmHWM")

            samples: list[dict[str, float]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    if server.poll() is not None:
                        return
                    samples.append(tree_memory_mb(server.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.n) as pool:
                outcomes = list(pool.map(one, range(args.n), timeout=args.timeout))
            wall = time.perf_counter() - t0
            stop.set()
            sampler.join()
            hwm = proc_kb(server.pid, "VmHWM")
    finally:
        stop_server(server)
        log_file.close()
        shutil.rmtree(tmp, ignore_errors=True)

    lat = sorted(dt for dt, _, _ in outcomes)
    failures = [(s, e) for _, s, e in outcomes if s != 200]
    q = statistics.quantiles(lat, n=10, method="inclusive") if len(lat) >= 2 else lat * 9
    result = {
        "requests": args.n, "ok": args.n - len(failures), "image": f"{args.size}x{args.size} PNG, {image_desc}",
        "model": model_desc, "workers": args.workers, "server_cpus": len(cpus), "wall_s": round(wall, 2),
        "throughput_img_per_s": round(args.n / wall, 3), "warmup_latency_s": round(warm_dt, 2),
        "latency_s": {"min": round(lat[0], 2), "median": round(statistics.median(lat), 2),
                      "p90": round(q[8], 2), "max": round(lat[-1], 2)},
        "memory_mb": {"idle": mem_idle, "after_one_request": mem_warm,
                      "peak_tree_rss_during_burst_sampled": max((m["tree_rss"] for m in samples), default=0),
                      "peak_tree_pss_during_burst_sampled": max((m["tree_pss"] for m in samples), default=0),
                      "server_process_vmhwm_after_one_request": round(hwm_warm / 1024, 1),
                      "server_process_vmhwm_overall": round(hwm / 1024, 1)},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    for status, err in failures[:5]:
        print(f"failed: {status} {err}", file=sys.stderr)
    peak = result["memory_mb"]["peak_tree_rss_during_burst_sampled"]
    ok = not failures and peak <= args.max_rss_mb
    if peak > args.max_rss_mb:
        print(f"peak tree RSS {peak:.0f} MB is over --max-rss-mb {args.max_rss_mb:.0f}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
