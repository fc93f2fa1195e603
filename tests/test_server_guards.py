"""The server's guards: Host names (DNS rebinding), Origin of state-changing requests (drive-by uploads), the
cap on kept files, and a shutdown without a leaked-semaphore warning."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient  # noqa: E402
from test_server import LOCAL, make_app, png_bytes, post, wait_done  # noqa: E402

from sarcolor import server  # noqa: E402
from sarcolor.models import ModelConfig, SarColorNet, save_model  # noqa: E402
from sarcolor.server import allowed_hosts  # noqa: E402

PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = ModelConfig(arch="sarcolornet", width=8, enc_depths=(1, 1), tile=64, overlap=16, name="tiny-test")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, SarColorNet(cfg), cfg)
    return path


@pytest.fixture(scope="module")
def guarded(tiny_model: Path):
    with TestClient(make_app(tiny_model), base_url=LOCAL) as c:
        yield c


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.2", ""])
def test_a_host_that_is_not_ours_is_403(guarded: TestClient, host: str) -> None:
    for r in (guarded.get("/api/health", headers={"Host": host}),
              guarded.post("/api/colorize", headers={"Host": host}, files={"file": ("a.png", PNG, "image/png")})):
        assert r.status_code == 403 and "is not served here" in r.json()["detail"], r.text


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"])
def test_loopback_names_are_served(guarded: TestClient, host: str) -> None:
    assert guarded.get("/api/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Origin": "http://localhost:9999"}, {"Sec-Fetch-Site": "cross-site"}])
def test_a_post_from_another_site_is_403(guarded: TestClient, headers: dict) -> None:
    r = guarded.post("/api/colorize", headers=headers, files={"file": ("a.png", PNG, "image/png")})
    assert r.status_code == 403 and "another site" in r.json()["detail"], r.text


def test_same_origin_and_non_browser_posts_are_served(guarded: TestClient) -> None:
    for headers in ({"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}, {}):
        r = guarded.post("/api/colorize", headers=headers, files={"file": ("a.png", PNG, "image/png")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    # reading is not state-changing: a foreign Origin on a GET changes nothing (CORS keeps the answer from it)
    assert guarded.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 200


def test_allowed_hosts_rule() -> None:
    assert allowed_hosts("127.0.0.1", None) == {"127.0.0.1", "::1", "localhost"}
    assert allowed_hosts("0.0.0.0", "sar.team.example, 10.0.0.5") == {
        "127.0.0.1", "::1", "localhost", "sar.team.example", "10.0.0.5"}
    assert allowed_hosts("10.1.2.3", None) >= {"10.1.2.3"}
    assert allowed_hosts("0.0.0.0", "*") is None


def test_team_hosts_and_any_host(tiny_model: Path) -> None:
    with TestClient(make_app(tiny_model, allowed_hosts=allowed_hosts("0.0.0.0", "sar.team")),
                    base_url="http://sar.team") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"Host": "other.team"}).status_code == 403
    with TestClient(make_app(tiny_model, allowed_hosts=None), base_url="http://anything") as c:
        assert c.get("/api/health").status_code == 200


def _folder_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_kept_files_stay_under_the_storage_cap(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job keeps about 30 kB (upload, result GeoTIFF, previews); a 0.1 MB cap keeps the newest few and
    deletes the oldest first."""
    monkeypatch.setattr(server, "RECENT_S", 0.0)
    big = png_bytes(np.random.default_rng(1).integers(0, 256, (120, 120), dtype=np.uint8))
    with TestClient(make_app(tiny_model, max_storage_mb=0.1), base_url=LOCAL) as c:
        root = c.app.state.jobs.root
        ids = []
        for _ in range(8):
            r = post(c, big, query="?async=1")
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
            assert wait_done(c, ids[-1])["status"] == "done"
            end = time.monotonic() + 10  # the cap is applied just after the job reports done
            while _folder_bytes(root) > 0.1 * 2**20 and len(list(root.iterdir())) > 1:
                assert time.monotonic() < end, (_folder_bytes(root), len(list(root.iterdir())))
                time.sleep(0.05)
        assert c.get(f"/api/jobs/{ids[0]}").status_code == 404  # the oldest went first
        assert c.get(f"/api/jobs/{ids[-1]}/result?format=tif").status_code == 200
        assert c.get("/api/model").json()["limits"]["max_storage_mb"] == pytest.approx(0.1, rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_shutdown_prints_no_leaked_semaphore(tiny_model: Path, tmp_path: Path) -> None:
    """A job whose worker is replaced afterwards (over the synchronous size), then Ctrl-C: a clean stderr."""
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "sarcolor", "serve", "--port", str(port), "--model",
                             str(tiny_model)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        big = png_bytes(np.random.default_rng(2).integers(0, 256, (2100, 2100), dtype=np.uint8))
        r = httpx.post(f"{base}/api/colorize", files={"file": ("b.png", big, "image/png")}, timeout=120)
        assert r.status_code == 202, r.text
        for _ in range(600):
            if httpx.get(f"{base}/api/jobs/{r.json()['id']}", timeout=5).json()["status"] == "done":
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert "leaked semaphore" not in err and "Traceback" not in err, err[-2000:]
