"""Soak test of ``sarcolor serve`` on loopback: N minutes of mixed good, bad and oversized uploads.

Starts ``python -m sarcolor serve`` on a free port (the shipped model, or a random model of the default
configuration when none is shipped), runs ``--clients`` request loops for ``--minutes`` and stops the
server. The mix: small PNGs and dual-pol GeoTIFFs (answered with the PNG), a scene above the synchronous
limit (a job, whose worker process is replaced afterwards), a scene meant to run past ``--job-timeout``
(killed, 413, unless the machine is fast enough), pixel bombs, uploads over the size limit, truncated,
GIF, complex (SLC-like), colour and too-small images, requests without a file, input previews, uploads
posted by a page of another site (an ``Origin`` not ours) and requests naming another host (DNS rebinding),
both of which must get 403; plus, now and then, a client that never finishes its headers and one whose body
stalls (both must get 408). The server runs with ``--max-storage-mb``; the size of its kept files is sampled
and must stay within the cap (plus the newest job's files, which are always kept).

Reported: requests and final HTTP codes by kind (a job counts with its final status), latency percentiles,
5xx and transport errors, and the memory of the server's whole process tree (server, worker processes,
forkserver): RSS and PSS sampled every ``--sample-s`` seconds, and measured with no job running at the end
of the warm-up and at the end. Exit code 1 on any 5xx or transport error, or when the tree's idle RSS at
the end is more than 20% above (or below) its idle RSS after the warm-up.

    nice -n 10 python benchmarks/soak_server.py                  # 10 minutes, 3 clients
    nice -n 10 python benchmarks/soak_server.py --minutes 2 --json soak.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import Affine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server_load import free_port, model_path, stop_server, tree_memory_mb, wait_healthy  # noqa: E402

HEADER_TIMEOUT, BODY_GRACE = 10.0, 30.0  # sarcolor.server's deadlines for slow clients


# ------------------------------------------------------------------ the uploads
def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _speckle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    field = rng.uniform(0.05, 0.6, (h // 32 + 1, w // 32 + 1)).repeat(32, 0).repeat(32, 1)[:h, :w]
    return np.clip(field * rng.gamma(4.0, 0.25, (h, w)) * 255, 0, 255).astype(np.uint8)


def _tif(tmp: Path, data: np.ndarray, **kw: object) -> bytes:
    path = tmp / "x.tif"
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32630", transform=Affine(10, 0, 5e5, 0, -10, 4.4e6),
                       **kw) as ds:
        ds.write(data)
    return path.read_bytes()


def _bomb(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9))
            + chunk(b"IEND", b""))


def make_uploads(tmp: Path, max_upload_mb: float, sync_side: int, heavy_side: int
                 ) -> dict[str, tuple[int, bytes | None, set[int]]]:
    """kind -> (weight, file bytes or None for 'no file field', the final HTTP codes that are correct)."""
    rng = np.random.default_rng(0)
    dual = rng.normal(-15, 4, (2, 384, 384)).astype(np.float32)
    dual[:, :40, :40] = np.nan
    slc = (rng.normal(size=(1, 128, 128)) * (1 + 1j)).astype(np.complex64)
    smooth = np.add.outer(np.arange(heavy_side) % 251, np.arange(heavy_side) % 241).astype(np.uint8)
    good = _png(_speckle(rng, 512, 512))
    return {
        "good_png": (30, good, {200}),
        "good_geotiff": (15, _tif(tmp, dual, nodata=float("nan")), {200}),
        "large_job": (3, _png(_speckle(rng, sync_side + 64, sync_side + 64)), {200}),
        "over_time_budget": (1, _png(smooth), {200, 413}),
        "pixel_bomb": (5, _bomb(40_000, 40_000), {413}),
        "over_upload_limit": (3, b"\x89PNG\r\n\x1a\n" + rng.bytes(int((max_upload_mb + 1) * 2**20)), {413}),
        "truncated_png": (8, good[: len(good) // 2], {400}),
        "gif": (5, b"GIF89a" + rng.bytes(2000), {415}),
        "complex_slc": (5, _tif(tmp, slc), {422}),
        "colour_png": (5, _png(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)), {422}),
        "too_small": (5, _png(rng.integers(0, 256, (4, 4), dtype=np.uint8)), {422}),
        "no_file": (3, None, {422}),
        "cross_origin_post": (4, good, {403}),
        "wrong_host": (4, good, {403}),
    }


HEADERS = {"cross_origin_post": {"Origin": "http://drive-by.example"}, "wrong_host": {"Host": "rebound.example"}}


# ------------------------------------------------------------------ the clients
class Soak:
    def __init__(self, base: str, uploads: dict, seed: int) -> None:
        self.base, self.uploads = base, uploads
        self.kinds = list(uploads)
        self.weights = [uploads[k][0] for k in self.kinds]
        self.results: list[tuple[str, int, float]] = []  # (kind, final HTTP code, seconds)
        self.lock = threading.Lock()
        self.go = threading.Event()  # cleared to pause the clients
        self.stop = threading.Event()
        self.seed = seed

    def record(self, kind: str, code: int, dt: float) -> None:
        with self.lock:
            self.results.append((kind, code, dt))

    def one(self, client: httpx.Client, kind: str) -> None:
        data = self.uploads[kind][1]
        files = {"file": ("scene.bin", data, "application/octet-stream")} if data is not None else None
        t0 = time.perf_counter()
        try:
            r = client.post("/api/colorize", files=files, data=None if files else {"x": "1"},
                            headers=HEADERS.get(kind))
            code = r.status_code
            if code == 202:  # a job: its final status is what counts
                job_id = r.json()["id"]
                while True:
                    time.sleep(0.5)
                    job = client.get(f"/api/jobs/{job_id}").json()
                    if job["status"] == "done":
                        code = 200
                        break
                    if job["status"] == "failed":
                        code = job["error_status"]
                        break
            elif code == 200 and kind == "good_png" and random.random() < 0.3:
                job_id = r.headers["x-job-id"]
                t1 = time.perf_counter()
                p = client.get(f"/api/jobs/{job_id}/input.png")
                self.record("input_preview", p.status_code, time.perf_counter() - t1)
        except httpx.HTTPError as exc:
            code = -1
            print(f"transport error on {kind}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        self.record(kind, code, time.perf_counter() - t0)

    def client_loop(self, index: int) -> None:
        rnd = random.Random(self.seed + index)
        with httpx.Client(base_url=self.base, timeout=600) as client:
            while not self.stop.is_set():
                if not self.go.wait(1):
                    continue
                self.one(client, rnd.choices(self.kinds, self.weights)[0])

    def slow_clients(self, every: float) -> None:
        """Now and then a client that stalls in its headers, or in its body: both must get 408 and be closed."""
        host, port = self.base.removeprefix("http://").split(":")
        n = 0
        while not self.stop.wait(every):
            n += 1
            partial = b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
            body = (b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            kind, data = ("slow_headers", partial) if n % 3 else ("slow_body", body)
            t0 = time.perf_counter()
            try:
                with socket.create_connection((host, int(port))) as s:
                    s.settimeout(BODY_GRACE + 30)
                    s.sendall(data)
                    got = b""
                    while chunk := s.recv(4096):
                        got += chunk
                code = int(got.split()[1]) if got.startswith(b"HTTP/1.1 ") else -2
            except OSError:
                code = -2
            self.record(kind, code, time.perf_counter() - t0)

    def pause_until_idle(self, client: httpx.Client, limit: float = 300) -> None:
        self.go.clear()
        t0 = time.time()
        time.sleep(1)
        while client.get("/api/health").json()["active_jobs"] and time.time() - t0 < limit:
            time.sleep(0.5)
        time.sleep(2)  # in-flight requests that were refused or answered finish their last bytes


def _folder_mb(folder: Path) -> float:
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except OSError:  # deleted while we looked
            pass
    return total / 2**20


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    q = statistics.quantiles(v, n=100, method="inclusive") if len(v) > 1 else v * 99
    return {"n": len(v), "p50": round(q[49], 3), "p90": round(q[89], 3), "p99": round(q[98], 3),
            "max": round(v[-1], 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="load before the first idle memory figure (60)")
    ap.add_argument("--clients", type=int, default=3, help="concurrent request loops (default 3)")
    ap.add_argument("--job-timeout", type=float, default=120.0, help="the server's --job-timeout (default 120)")
    ap.add_argument("--heavy-side", type=int, default=6000,
                    help="side of the upload meant to run past the job timeout (default 6000)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="memory sampling interval (default 10)")
    ap.add_argument("--slow-client-s", type=float, default=40.0, help="a slow client every this many s (40)")
    ap.add_argument("--max-storage-mb", type=float, default=256.0, help="the server's storage cap (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if not 0 < args.minutes <= 240 or not 1 <= args.clients <= 32:
        ap.error("--minutes in (0, 240], --clients in 1..32")

    tmp = Path(tempfile.mkdtemp(prefix="sarcolor-soak-"))
    max_upload_mb, sync_side = 20.0, 2048
    uploads = make_uploads(tmp, max_upload_mb, sync_side, args.heavy_side)
    model, model_desc = model_path(tmp)
    port = free_port()
    cmd = [sys.executable, "-m", "sarcolor", "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model,
           "--max-upload-mb", str(max_upload_mb), "--max-pixels", "64e6", "--job-timeout", str(args.job_timeout),
           "--ttl", "120", "--max-storage-mb", str(args.max_storage_mb)]
    log_path = tmp / "server.log"
    log_file = open(log_path, "w")  # a file, not a pipe: a full pipe would stall the server
    store = tmp / "server-tmp"  # the server's job folders land here (TMPDIR), so that their size can be sampled
    store.mkdir()
    server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(store)})
    base = f"http://127.0.0.1:{port}"
    soak = Soak(base, uploads, args.seed)
    samples: list[dict] = []
    t_start = time.time()
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            wait_healthy(client, server, log_path, 180)
            mem_start_idle_before_load = tree_memory_mb(server.pid)

            def sampler() -> None:
                while not soak.stop.wait(args.sample_s):
                    samples.append({"t_s": round(time.time() - t_start), **tree_memory_mb(server.pid),
                                    "storage_mb": round(_folder_mb(store), 1)})

            threads = [threading.Thread(target=soak.client_loop, args=(i,), daemon=True) for i in range(args.clients)]
            threads += [threading.Thread(target=sampler, daemon=True),
                        threading.Thread(target=soak.slow_clients, args=(args.slow_client_s,), daemon=True)]
            t_start = time.time()
            soak.go.set()
            for t in threads:
                t.start()
            end = t_start + args.minutes * 60
            time.sleep(min(args.warmup_s, args.minutes * 60 / 2))
            soak.pause_until_idle(client)
            mem_after_warmup = tree_memory_mb(server.pid)
            soak.go.set()
            while time.time() < end and server.poll() is None:
                time.sleep(1)
            soak.pause_until_idle(client)
            mem_end = tree_memory_mb(server.pid)
            soak.stop.set()
            for t in threads:
                t.join(BODY_GRACE + 60)
            wall = time.time() - t_start
    finally:
        soak.stop.set()
        stop_server(server)
        log_file.close()
        server_log = log_path.read_text()
        shutil.rmtree(tmp, ignore_errors=True)

    by_kind: dict[str, Counter] = defaultdict(Counter)
    latency: dict[str, list[float]] = defaultdict(list)
    for kind, code, dt in soak.results:
        by_kind[kind][code] += 1
        latency[kind].append(dt)
    codes = Counter(code for _, code, _ in soak.results)
    peak_storage = max((s["storage_mb"] for s in samples), default=0.0)
    expected = {k: v[2] for k, v in uploads.items()} | {"input_preview": {200}, "slow_headers": {408},
                                                       "slow_body": {408}}
    unexpected = {k: {str(c): n for c, n in cnt.items() if c not in expected[k]} for k, cnt in by_kind.items()}
    ratio = mem_end["tree_rss"] / mem_after_warmup["tree_rss"]
    result = {
        "minutes": round(wall / 60, 2), "clients": args.clients, "model": model_desc,
        "server": " ".join(cmd[1:]).replace(model, "MODEL"),
        "requests": len(soak.results), "by_code": {str(c): n for c, n in sorted(codes.items())},
        "5xx": sum(n for c, n in codes.items() if c >= 500), "transport_errors": codes.get(-1, 0) + codes.get(-2, 0),
        "by_kind": {k: {str(c): n for c, n in sorted(v.items())} for k, v in sorted(by_kind.items())},
        "unexpected_codes": {k: v for k, v in unexpected.items() if v},
        "latency_s": {"all": percentiles([dt for _, _, dt in soak.results])}
                     | {k: percentiles(v) for k, v in sorted(latency.items())},
        "memory_mb": {"idle_before_load": mem_start_idle_before_load, "idle_after_warmup": mem_after_warmup,
                      "idle_at_end": mem_end, "end_over_start_tree_rss": round(ratio, 3),
                      "peak_tree_rss_sampled": max((s["tree_rss"] for s in samples), default=0),
                      "peak_tree_pss_sampled": max((s["tree_pss"] for s in samples), default=0)},
        "storage_mb": {"cap": args.max_storage_mb, "peak_sampled": peak_storage},
        "memory_timeline": samples,
        "server_log_tracebacks": server_log.count("Traceback"),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "memory_timeline"}, indent=2))
    print("memory over time (s: tree RSS / PSS MB, processes): " + ", ".join(
        f"{s['t_s']}: {s['tree_rss']:.0f}/{s['tree_pss']:.0f} ({s['processes']})" for s in samples))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    # the newest finished job (and any running one) is kept whatever the cap: allow a large job's files on top
    storage_ok = peak_storage <= args.max_storage_mb + 150
    ok = (result["5xx"] == 0 and result["transport_errors"] == 0 and 0.8 <= ratio <= 1.2 and storage_ok
          and not result["unexpected_codes"])
    if not ok:
        print(f"FAILED: 5xx={result['5xx']} transport errors={result['transport_errors']} "
              f"idle tree RSS end/start={ratio:.2f} storage peak={peak_storage:.0f} MB "
              f"(cap {args.max_storage_mb:g}) unexpected={result['unexpected_codes']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
