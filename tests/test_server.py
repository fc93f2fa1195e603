"""``sarcolor serve``: the HTTP API through FastAPI's TestClient, over good and bad inputs.

A tiny random model keeps inference to milliseconds; what is tested is the server around the engine.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient  # noqa: E402

from sarcolor.models import ModelConfig, SarColorNet, save_model  # noqa: E402
from sarcolor.server import ApiError, JobManager, create_app, safe_stem, sniff  # noqa: E402

LOCAL = "http://localhost"  # the server answers loopback Host names only, by default

MAX_PIXELS = 200 * 200
SYNC_PIXELS = 96 * 96


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = ModelConfig(arch="sarcolornet", width=8, enc_depths=(1, 1), tile=64, overlap=16, name="tiny-test")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, SarColorNet(cfg), cfg, card="# tiny-test\n\nRandom weights, for tests only.")
    return path


def make_app(model: Path, **kw):
    opts = dict(max_upload_mb=0.25, max_pixels=MAX_PIXELS, workers=1, ttl=60.0, sync_max_pixels=SYNC_PIXELS,
                device="cpu")
    opts.update(kw)
    return create_app(model=model, **opts)


@pytest.fixture(scope="module")
def client(tiny_model: Path):
    with TestClient(make_app(tiny_model), base_url=LOCAL) as c:
        yield c


def grey(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def geotiff_bytes(tmp_path: Path, h: int = 64, w: int = 80) -> tuple[bytes, dict]:
    """A dual-pol dB GeoTIFF like Sen1Floods11's, with CRS, transform and a NaN nodata corner."""
    rng = np.random.default_rng(1)
    data = rng.normal(-15, 4, (2, h, w)).astype(np.float32)
    data[:, :5, :5] = np.nan
    profile = dict(driver="GTiff", width=w, height=h, count=2, dtype="float32", crs="EPSG:32630",
                   transform=Affine(10, 0, 500000, 0, -10, 4400000), nodata=float("nan"))
    path = tmp_path / "s1.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.descriptions = ("VV", "VH")
    return path.read_bytes(), profile


def post(client: TestClient, data: bytes, name: str = "scene.png", ctype: str = "image/png", query: str = ""):
    return client.post(f"/api/colorize{query}", files={"file": (name, data, ctype)})


def wait_done(client: TestClient, job_id: str, timeout: float = 30.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = client.get(f"/api/jobs/{job_id}").json()
        if st["status"] in ("done", "failed"):
            return st
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not finished after {timeout} s")


def png_size(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as im:
        assert im.format == "PNG"
        return im.size


def assert_json_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    for w in words:
        assert w.lower() in detail.lower(), detail
    return detail


# ------------------------------------------------------------------ good inputs
def test_png_returns_png_directly(client: TestClient) -> None:
    r = post(client, png_bytes(grey(48, 64)))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert png_size(r.content) == (64, 48)
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.mode == "RGB"
    job = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()
    assert job["status"] == "done" and job["progress"] == 1.0
    assert (job["width"], job["height"], job["input_type"], job["georeferenced"]) == (64, 48, "png", False)


def test_look_field(client: TestClient, tiny_model: Path) -> None:
    """look=sar (the default) and look=optical give what colorize gives in each look; another look is a 422."""
    from sarcolor.engine import colorize

    sar = grey(48, 64, seed=5)
    got = {}
    for look in ("sar", "optical"):
        r = post(client, png_bytes(sar), query="" if look == "sar" else "?look=optical")
        assert r.status_code == 200, r.text
        with Image.open(io.BytesIO(r.content)) as im:
            got[look] = np.asarray(im.convert("RGB"))
        direct = colorize(sar, tiny_model, look=look, device="cpu").astype(int)
        assert np.abs(got[look].astype(int) - direct).max() <= 2  # a worker's thread count may round differently
    assert not np.array_equal(got["sar"], got["optical"])
    assert_json_error(post(client, png_bytes(sar), query="?look=fog"), 422, "look")


def test_a_rendering_the_model_does_not_have_is_a_422_before_any_work(client: TestClient) -> None:
    """render=: checked against the served model's renderings (this tiny sarcolornet has none) before the
    upload is stored or queued."""
    detail = assert_json_error(post(client, png_bytes(grey(16, 16)), query="?render=sen12"), 422, "render 'sen12'")
    assert "no renderings" in detail


def test_render_gives_the_colorize_engines_colour_balance(two_render_model_path: Path) -> None:
    """render= on a model with renderings: the same image as colorize with that rendering; another one
    differs; one the model does not know is a 422 naming those it does."""
    from sarcolor.engine import colorize

    model = two_render_model_path
    sar = grey(48, 64, seed=5)
    with TestClient(make_app(model), base_url=LOCAL) as c:
        got = {}
        for render in ("a", "b"):
            r = post(c, png_bytes(sar), query=f"?render={render}")
            assert r.status_code == 200, r.text
            with Image.open(io.BytesIO(r.content)) as im:
                got[render] = np.asarray(im.convert("RGB")).astype(int)
            direct = colorize(sar, model, device="cpu", render=render).astype(int)
            assert np.abs(got[render] - direct).max() <= 2
        assert np.abs(got["a"] - got["b"]).mean() > 1
        assert_json_error(post(c, png_bytes(sar), query="?render=zz"), 422, "render 'zz': this model knows a, b")


def test_engine_errors_speak_the_apis_parameters() -> None:
    """An engine message worded for the CLI (``--scale db``) names the API's parameters (``scale=db``)."""
    from sarcolor.server import _api_wording

    assert _api_wording("x.png: --scale db: no; try --bands 2 or --look sar") == \
        "x.png: scale=db: no; try bands=2 or look=sar"
    assert _api_wording("--device cpu") == "--device cpu"  # not an API parameter: left alone


def test_scale_db_reads_an_8bit_db_export(client: TestClient, tiny_model: Path) -> None:
    """scale=db on an 8-bit PNG (a SEN1-2-style dB export) colours it as sarcolor.colorize does with scale db."""
    from sarcolor.engine import colorize

    sar = grey(48, 64, seed=6)
    r = post(client, png_bytes(sar), query="?scale=db")
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as im:
        got = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(got - colorize(sar, tiny_model, scale="db", device="cpu").astype(int)).max() <= 2


def test_jpeg_and_downloads(client: TestClient) -> None:
    r = post(client, jpeg_bytes(grey(40, 56, seed=2)), name="sar.jpg", ctype="image/jpeg")
    assert r.status_code == 200, r.text
    job_id = r.headers["x-job-id"]
    png = client.get(f"/api/jobs/{job_id}/result?format=png")
    assert png.status_code == 200 and png_size(png.content) == (56, 40)
    assert 'filename="sar_sarcolor.png"' in png.headers["content-disposition"]
    tif = client.get(f"/api/jobs/{job_id}/result?format=tif")
    assert tif.status_code == 200 and tif.headers["content-type"] == "image/tiff"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.MemoryFile(tif.content) as mem, mem.open() as ds:
            assert (ds.count, ds.width, ds.height, ds.dtypes[0]) == (3, 56, 40, "uint8")
    inp = client.get(f"/api/jobs/{job_id}/input.png")
    assert inp.status_code == 200 and png_size(inp.content) == (56, 40)


def test_geotiff_async_keeps_georeferencing(client: TestClient, tmp_path: Path) -> None:
    data, profile = geotiff_bytes(tmp_path)
    r = post(client, data, name="Spain_S1Hand.tif", ctype="image/tiff", query="?async=1")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert job["georeferenced"] is True and job["bands"] == 2 and job["input_type"] == "tiff"
    job = wait_done(client, job["id"])
    assert job["status"] == "done", job
    tif = client.get(job["links"]["tif"])
    assert tif.status_code == 200
    with rasterio.MemoryFile(tif.content) as mem, mem.open() as ds:
        assert ds.crs == rasterio.crs.CRS.from_string(profile["crs"])
        assert ds.transform == profile["transform"]
        assert (ds.count, ds.width, ds.height) == (3, 80, 64)
    prev = client.get(job["links"]["preview"])
    inp = client.get(job["links"]["input_preview"])
    assert png_size(prev.content) == png_size(inp.content) == (80, 64)


def test_large_scene_gets_a_job(client: TestClient) -> None:
    r = post(client, png_bytes(grey(120, 100)))  # 12,000 px > sync threshold, < pixel limit
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "done"
    assert png_size(client.get(job["links"]["png"]).content) == (100, 120)


def test_progress_follows_the_engine(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sarcolor.server as server

    calls: list[tuple[int, int]] = []
    real = server._progress_callback

    def spy(job):
        report = real(job)

        def both(done: int, total: int) -> None:
            calls.append((done, total))
            report(done, total)
            assert 0 < job.progress <= 0.95

        return both

    monkeypatch.setattr(server, "_progress_callback", spy)
    with TestClient(make_app(tiny_model), base_url=LOCAL) as c:
        r = post(c, png_bytes(grey(150, 150)), query="?async=1")  # 64-px tiles: a 3 x 3 grid
        job = wait_done(c, r.json()["id"])
    assert job["status"] == "done" and job["progress"] == 1.0
    assert calls and calls[-1][0] == calls[-1][1] > 1
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_scale_and_bands_options(client: TestClient, tmp_path: Path) -> None:
    data, _ = geotiff_bytes(tmp_path)
    r = post(client, data, name="s1.tif", ctype="image/tiff", query="?scale=db&bands=1,2")
    assert r.status_code == 200, r.text
    assert_json_error(post(client, data, query="?scale=celsius"), 422, "scale")
    assert_json_error(post(client, data, query="?bands=3"), 422, "band")
    assert_json_error(post(client, data, query="?bands=x"), 422, "band")


# ------------------------------------------------------------------ bad inputs
def test_unsupported_type_is_415_whatever_the_name(client: TestClient) -> None:
    gif = b"GIF89a" + b"\x00" * 64
    assert_json_error(post(client, gif, name="looks.png"), 415, "unsupported", "PNG")
    assert_json_error(post(client, b"%PDF-1.4 hello", name="x.tif", ctype="image/tiff"), 415)


def test_corrupt_images_are_400(client: TestClient) -> None:
    assert_json_error(post(client, b"\x89PNG\r\n\x1a\n" + b"garbage" * 10), 400, "corrupt")
    assert_json_error(post(client, b"II*\x00" + b"\xff" * 40, name="x.tif"), 400, "corrupt")
    assert_json_error(post(client, b""), 400, "empty")
    # A valid header with its pixel data cut off: only decoding can tell, so the engine reports it.
    truncated = png_bytes(grey(64, 64, seed=3))[:300]
    detail = assert_json_error(post(client, truncated), 400)
    assert "/tmp" not in detail and "sarcolor-serve" not in detail  # no server paths leak out


def test_colour_image_is_422_with_a_hint(client: TestClient) -> None:
    rng = np.random.default_rng(4)
    colour = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    detail = assert_json_error(post(client, png_bytes(colour)), 422, "bands")
    assert "--bands" not in detail and "sarcolor-serve" not in detail


def test_upload_over_size_limit_is_413(client: TestClient) -> None:
    big = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(5).bytes(400_000)  # limit: 0.25 MB
    assert_json_error(post(client, big), 413, "size limit")


def test_streamed_upload_over_size_limit_is_413(client: TestClient) -> None:
    """No Content-Length (chunked): the limit is enforced on the bytes actually received."""
    body = (b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + b"\x89PNG\r\n\x1a\n" + b"\x00" * 600_000 + b"\r\n--xx--\r\n")

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = client.post("/api/colorize", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=xx"})
    assert_json_error(r, 413, "size limit")


def test_over_pixel_limit_is_413(client: TestClient) -> None:
    assert_json_error(post(client, png_bytes(grey(250, 250))), 413, "pixel", "limit")


def png_bomb(width: int, height: int) -> bytes:
    """A ~100-byte PNG that claims width x height 8-bit grey pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header(client: TestClient, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    assert_json_error(post(client, png_bomb(100_000, 100_000)), 413, "pixel")
    # A sparse deflated GeoTIFF: a few kilobytes that claim 400 megapixels.
    path = tmp_path / "bomb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20_000, height=20_000, count=1, dtype="uint8",
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
                       crs="EPSG:4326", transform=Affine(1e-4, 0, 0, 0, -1e-4, 0)) as ds:
        ds.write(np.zeros((1, 16, 16), np.uint8), window=((0, 16), (0, 16)))
    data = path.read_bytes()
    assert len(data) < 100_000
    assert_json_error(post(client, data, name="bomb.tif", ctype="image/tiff"), 413, "pixel")
    assert time.perf_counter() - t0 < 5  # refused from the header, not after decoding


def test_missing_file_field_is_422(client: TestClient) -> None:
    r = client.post("/api/colorize", files={"image": ("a.png", png_bytes(grey(16, 16)), "image/png")})
    assert_json_error(r, 422, "file")
    assert_json_error(client.post("/api/colorize"), 422, "file")
    assert_json_error(client.post("/api/colorize", json={"file": "a.png"}), 422, "file")


def test_unknown_job_is_404(client: TestClient) -> None:
    for path in ("/api/jobs/nope", "/api/jobs/nope/result?format=png", "/api/jobs/nope/input.png",
                 "/api/jobs/nope/preview.png", "/api/jobs/..%2F..%2Fetc%2Fpasswd"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json")
    r = post(client, png_bytes(grey(32, 32)))
    assert_json_error(client.get(f"/api/jobs/{r.headers['x-job-id']}/result?format=gif"), 422, "format")


# ------------------------------------------------------------------ info, page, docs
def test_model_and_health(client: TestClient) -> None:
    m = client.get("/api/model").json()
    assert m["name"] == "tiny" and m["arch"] == "sarcolornet" and m["parameters"] > 0
    assert "Random weights" in m["card"]
    assert m["limits"]["max_pixels"] == MAX_PIXELS and m["limits"]["max_upload_mb"] == pytest.approx(0.25)
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny"


def test_model_is_loaded_once(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sarcolor.models as models
    from sarcolor import torch_runtime

    torch_runtime.load_cached.cache_clear()  # earlier tests of this process loaded the same file
    calls = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    with TestClient(make_app(tiny_model), base_url=LOCAL) as c:
        for seed in range(3):
            assert post(c, png_bytes(grey(32, 32, seed))).status_code == 200
    assert len(calls) == 1


def test_page_static_and_docs(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert 'for="file-input"' in r.text and 'id="swipe"' in r.text
    for name in ("app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../server.py").status_code == 404
    assert client.get("/static/nope.js").status_code == 404
    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    # Self-contained (no CDN script: analysts' machines are often offline) and generated from the real routes.
    assert "<script" not in docs.text and "cdn" not in docs.text.lower()
    assert "<code>POST /api/colorize</code>" in docs.text and "<code>GET /api/jobs/{job_id}</code>" in docs.text
    spec = client.get("/openapi.json").json()
    assert {"/api/colorize", "/api/jobs/{job_id}", "/api/model", "/api/health"} <= set(spec["paths"])


# ------------------------------------------------------------------ storage, expiry, queue
def test_uploads_stay_in_a_private_folder_under_server_names(tiny_model: Path) -> None:
    app = make_app(tiny_model)
    root = app.state.jobs.root
    assert root.stat().st_mode & 0o777 == 0o700
    with TestClient(app, base_url=LOCAL) as c:
        r = post(c, png_bytes(grey(32, 32)), name="../../../tmp/evil name.png")
        assert r.status_code == 200
        assert 'filename="evil_name_sarcolor.png"' in r.headers["content-disposition"]
        job_id = r.headers["x-job-id"]
        files = sorted(p.name for p in (root / job_id).iterdir())
        assert "input.png" in files and not any("evil" in f for f in files)
        assert [p.name for p in root.iterdir()] == [job_id]
        # Refused uploads leave nothing behind.
        post(c, b"GIF89a" + b"\x00" * 32)
        post(c, png_bytes(grey(250, 250)))
        assert [p.name for p in root.iterdir()] == [job_id]
    assert not root.exists()  # shutdown removes the whole folder


def test_files_are_deleted_after_ttl(tiny_model: Path) -> None:
    app = make_app(tiny_model, ttl=0.5)
    root = app.state.jobs.root
    with TestClient(app, base_url=LOCAL) as c:
        r = post(c, png_bytes(grey(32, 32)))
        job_id = r.headers["x-job-id"]
        assert (root / job_id).is_dir()
        assert c.get(f"/api/jobs/{job_id}").json()["expires_in_s"] <= 0.5
        deadline = time.time() + 10
        while (root / job_id).exists() and time.time() < deadline:
            time.sleep(0.1)  # the janitor runs every ttl/4
        assert not (root / job_id).exists()
        assert_json_error(c.get(f"/api/jobs/{job_id}"), 404, "expired")


def test_queue_is_bounded() -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(job) -> None:
        started.set()
        release.wait(10)

    jm = JobManager(slow, workers=1, max_queue=1, ttl=60)
    try:
        def job(i: int):
            from sarcolor.server import ImageInfo, Job

            job_id, folder = jm.new_folder()
            return Job(id=job_id, folder=folder, info=ImageInfo("png", 8, 8, 1, "uint8", False), stem=f"j{i}",
                       scale="auto", bands=None)

        first = jm.submit(job(1))
        assert started.wait(5)
        second = jm.submit(job(2))
        assert jm.queue_position(second) == 0 and second.status == "queued"
        with pytest.raises(ApiError) as err:
            jm.submit(job(3))
        assert err.value.status == 503
        release.set()
        first.future.result(5)
        second.future.result(5)
        assert first.status == second.status == "done"
        assert len(list(jm.root.iterdir())) == 2  # the refused job's files are gone at once
    finally:
        release.set()
        jm.close()
    assert not jm.root.exists()


def test_queue_full_is_503_and_pending_result_is_409(tiny_model: Path) -> None:
    app = make_app(tiny_model, max_queue=0)
    release = threading.Event()
    jm = app.state.jobs
    real_run = jm._run

    def gated(job) -> None:
        release.wait(10)
        real_run(job)

    jm._run = gated
    with TestClient(app, base_url=LOCAL) as c:
        try:
            r = post(c, png_bytes(grey(32, 32)), query="?async=1")
            assert r.status_code == 202
            job_id = r.json()["id"]
            assert_json_error(c.get(f"/api/jobs/{job_id}/result"), 409, "poll")
            r2 = post(c, png_bytes(grey(32, 32)))
            assert_json_error(r2, 503, "busy")
            assert r2.headers["retry-after"]
        finally:
            release.set()
        assert wait_done(c, job_id)["status"] == "done"


def test_sniff_and_safe_stem() -> None:
    assert sniff(b"\x89PNG\r\n\x1a\nxxxx") == "png"
    assert sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff(b"II*\x00") == sniff(b"MM\x00*") == sniff(b"II+\x00") == "tiff"
    assert sniff(b"GIF89a") is None and sniff(b"") is None
    assert safe_stem("C:\\data\\S1 scene.tif") == "S1_scene"
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem(None) == safe_stem("...") == "sar"


def test_bad_settings_are_refused(tiny_model: Path) -> None:
    from sarcolor.errors import SarColorError

    with pytest.raises(SarColorError):
        make_app(tiny_model, workers=0)
    with pytest.raises(SarColorError, match="not found"):
        make_app(tiny_model.with_name("missing.safetensors"))


def test_cli_serve_binds_loopback_by_default(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from sarcolor.cli import main

    seen: dict = {}

    def fake_run(app, **kw) -> None:
        seen.update(kw, app=app)
        with TestClient(app, base_url=LOCAL) as c:  # the app the CLI built really serves
            seen["health"] = c.get("/api/health").json()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # serve() sets it process-wide
    assert main(["serve", "--model", str(tiny_model), "--port", "8123", "--max-pixels", "1e6", "--ttl", "5"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["health"]["status"] == "ok" and seen["health"]["model"] == "tiny"
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
    assert seen["app"].state.config.ttl == 5.0


# ------------------------------------------------------------------ budgets, worker processes, slow clients
def test_job_over_its_time_budget_is_killed_and_413(tiny_model: Path) -> None:
    """The job runs in a worker process that is killed at the budget; the next job gets a fresh worker."""
    app = make_app(tiny_model, job_timeout=0.001)  # nothing colorizes, writes a COG and a PNG in 1 ms
    with TestClient(app, base_url=LOCAL) as c:
        [before] = app.state.workers.pids()
        r = post(c, png_bytes(grey(64, 64)))
        detail = assert_json_error(r, 413, "time budget", "0.001 s")
        assert "smaller" in detail
        job = c.get("/api/jobs/" + next(iter(app.state.jobs.jobs))).json()
        assert job["status"] == "failed" and job["error_status"] == 413
        folder = app.state.jobs.root / job["id"]
        assert [p.name for p in folder.iterdir()] == ["input.png"]  # no partial or temp outputs
        [after] = app.state.workers.pids()
        assert after != before
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(before, 0)  # the old worker is gone, not left running
        app.state.config.job_timeout = 60.0
        r = post(c, png_bytes(grey(64, 64)))
        assert r.status_code == 200, r.text
        assert c.get("/api/model").json()["limits"]["job_timeout_s"] == 60.0


def test_jobs_run_in_a_worker_process_replaced_after_large_jobs(tiny_model: Path) -> None:
    """Small jobs share one worker (model loaded once); a large one's worker is replaced, freeing its memory."""
    import os

    app = make_app(tiny_model)
    with TestClient(app, base_url=LOCAL) as c:
        [worker] = app.state.workers.pids()
        assert worker != os.getpid()
        for seed in range(3):
            assert post(c, png_bytes(grey(40, 40, seed))).status_code == 200
        assert app.state.workers.pids() == [worker]
        r = post(c, png_bytes(grey(120, 100)))  # over sync_max_pixels: a large job
        assert wait_done(c, r.json()["id"])["status"] == "done"
        [new] = app.state.workers.pids()
        assert new != worker
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
        os.kill(new, 9)  # a worker that died (OOM killer, crash) is replaced on the next job
        assert post(c, png_bytes(grey(40, 40))).status_code == 200
    assert app.state.workers.pids() == []  # shutdown stops the workers


def test_complex_pixels_are_422_with_a_hint(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "slc.tif"
    data = (np.random.default_rng(6).normal(size=(32, 32)) * (1 + 1j)).astype(np.complex64)
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="complex64") as ds:
        ds.write(data, 1)
    detail = assert_json_error(post(client, path.read_bytes(), name="slc.tif", ctype="image/tiff"), 422,
                               "complex", "GRD")
    assert "sarcolor-serve" not in detail


@pytest.fixture
def live_server(tiny_model: Path, monkeypatch: pytest.MonkeyPatch):
    """The app under a real uvicorn, as ``serve`` runs it, with short client deadlines."""
    import socket

    import uvicorn

    import sarcolor.server as server

    monkeypatch.setattr(server, "HEADER_TIMEOUT", 0.5)
    monkeypatch.setattr(server, "BODY_GRACE", 0.5)
    monkeypatch.setattr(server, "BODY_MIN_RATE", 1024)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(make_app(tiny_model), host="127.0.0.1", port=port, log_level="warning",
                            http=server.header_deadline_protocol())
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(10)


def _raw(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``data`` and read until the server closes the connection: (everything read, seconds taken)."""
    import socket

    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        t0 = time.perf_counter()
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            got += b"<still open>"
        return got, time.perf_counter() - t0


def test_slow_clients_are_cut_off(live_server: int) -> None:
    import httpx

    port = live_server
    # Headers that never finish, and a connection that sends nothing: 408, then closed.
    for data in (b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty", b""):
        got, dt = _raw(port, data)
        assert got.startswith(b"HTTP/1.1 408 ") and got.endswith(b"}"), got
        assert b'"detail": "request headers not received in time"' in got
        assert 0.4 < dt < 3
    # A body that stalls: 408 JSON from the app, once BODY_GRACE + bytes / BODY_MIN_RATE have passed.
    head = (b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
            b"Content-Length: 50000\r\n\r\n--xx\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n")
    got, dt = _raw(port, head)
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert b"upload too slow" in got and b"application/json" in got
    assert 0.4 < dt < 3
    # Normal clients are unaffected, keep-alive included (the deadline is re-armed after each response).
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        for seed in range(2):
            r = c.post("/api/colorize", files={"file": ("a.png", png_bytes(grey(32, 32, seed)), "image/png")})
            assert r.status_code == 200, r.text
            time.sleep(0.7)  # longer than the header deadline, between two requests on one connection
        assert c.get("/api/health").json()["status"] == "ok"


def test_pixels_are_only_decoded_in_worker_processes(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Previews and the full-size PNG are made by workers too, so the server process never holds a decoded
    image (its memory would not go back); the SAR preview is the job's first step, waited for if queued."""
    import sarcolor.server as server

    def boom(*_a, **_k):
        raise AssertionError("pixels decoded in the server process")

    monkeypatch.setattr(server, "write_png", boom)  # the workers have their own, unpatched, module
    monkeypatch.setattr(server, "write_input_preview", boom)
    app = make_app(tiny_model, preview_max=64)
    release = threading.Event()
    jm = app.state.jobs
    real_run = jm._run
    jm._run = lambda job: release.wait(10) and real_run(job)
    with TestClient(app, base_url=LOCAL) as c:
        job_id = post(c, png_bytes(grey(120, 100)), query="?async=1").json()["id"]
        threading.Timer(0.5, release.set).start()
        t0 = time.perf_counter()
        inp = c.get(f"/api/jobs/{job_id}/input.png")  # the job is queued: this waits for its first step
        assert inp.status_code == 200 and time.perf_counter() - t0 > 0.4
        assert png_size(inp.content) == (53, 64)
        assert wait_done(c, job_id)["status"] == "done"
        assert png_size(c.get(f"/api/jobs/{job_id}/preview.png").content) == (53, 64)
        full = c.get(f"/api/jobs/{job_id}/result?format=png")
        assert full.status_code == 200 and png_size(full.content) == (100, 120)
