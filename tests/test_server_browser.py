"""End to end: the real page in headless Chromium (Debian's /usr/bin/chromium) against a live uvicorn server.

Uploads a SAR image through the file picker, waits for the result, checks that the colorized image is shown
at the input's size, that the swipe slider and zoom answer the keyboard, and saves a screenshot (to a temp
file; to the README's docs/img/serve.png with SARCOLOR_SCREENSHOT=1). Uses the shipped model and a real SAR
tile where they exist, else a tiny random model and a generated speckled scene (the checks are the same).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
# The README picture is refreshed only on request (SARCOLOR_SCREENSHOT=1): a test run leaves the repo unchanged.
README_SHOT = ROOT / "docs" / "img" / "serve.png"
REAL_SAR_DIR = ROOT.parent / "shared" / "data" / "volkov_s1s2" / "sar"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def synthetic_sar(h: int, w: int, seed: int = 0) -> np.ndarray:
    """8-bit SAR-like scene: fields of different backscatter, a dark river, bright points, speckle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    field = rng.uniform(0.05, 0.6, (8, 10))[(y * 8 // h), (x * 10 // w)]
    river = np.abs(y - (0.45 * h + 0.12 * h * np.sin(x / w * 6))) < h * 0.03
    field[river] = 0.01
    field[rng.random((h, w)) < 0.0008] = 3.0
    speckle = rng.gamma(4.0, 1 / 4.0, (h, w))  # 4-look intensity speckle
    intensity = field * speckle
    return np.clip(intensity / np.percentile(intensity, 99) * 255, 0, 255).astype(np.uint8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    uvicorn = pytest.importorskip("uvicorn")
    from sarcolor.models import SHIPPED, ModelConfig, SarColorNet, save_model
    from sarcolor.server import create_app

    model = SHIPPED["default"]
    if not model.exists():
        cfg = ModelConfig(arch="sarcolornet", width=8, enc_depths=(1, 1), name="tiny-random")
        model = tmp_path_factory.mktemp("model") / "tiny-random.safetensors"
        save_model(model, SarColorNet(cfg), cfg, card="# tiny-random\n\nRandom weights: a test stand-in.")
    app = create_app(model=model, max_upload_mb=20, max_pixels=50e6, workers=1, ttl=600, device="cpu")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def sar_png(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    path = tmp_path_factory.mktemp("img") / "scene.png"
    real = sorted(REAL_SAR_DIR.glob("*.png")) if REAL_SAR_DIR.is_dir() else []
    if real:
        with Image.open(real[0]) as im:
            im.convert("L").crop((0, 0, 768, 512)).save(path)  # non-square: width and height both checked
    else:
        Image.fromarray(synthetic_sar(512, 768)).save(path)
    return path, 768, 512


def _served_renders(url: str) -> tuple[str, ...]:
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/api/model") as r:  # noqa: S310 (our own local server)
        return tuple(json.load(r)["config"]["renders"])


def test_page_colorizes_an_upload(server_url: str, sar_png: tuple[Path, int, int], tmp_path: Path) -> None:
    SCREENSHOT = README_SHOT if os.environ.get("SARCOLOR_SCREENSHOT") else tmp_path / "serve.png"
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    path, width, height = sar_png
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The one expected console error is the 415 of the wrong-type upload at the end.
            page.on("console", lambda msg: errors.append(msg.text)
                    if msg.type == "error" and "415" not in msg.text else None)
            posts: list[str] = []
            page.on("request", lambda req: posts.append(req.url) if "/api/colorize" in req.url else None)
            page.goto(server_url + "/")
            page.wait_for_function("() => document.getElementById('model-name').textContent !== 'loading…'")
            assert page.get_by_label("Choose image…").count() == 1  # the picker has a label
            # The colour balance to give: the model's renderings, its default chosen (none: the field is hidden)
            renders = page.eval_on_selector_all("#render option", "os => os.map(o => o.value)")
            expected = list(_served_renders(server_url))
            assert renders == expected and page.locator("#render-field").is_visible() == bool(expected)
            if expected:
                page.select_option("#render", expected[-1])

            page.set_input_files("#file-input", str(path))
            page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Done')",
                                   timeout=120_000)

            assert posts and all((f"render={expected[-1]}" in u) == bool(expected) for u in posts)
            natural = page.eval_on_selector("#result-img", "i => [i.naturalWidth, i.naturalHeight, i.complete]")
            assert natural == [width, height, True]
            sar = page.eval_on_selector("#sar-img", "i => [i.naturalWidth, i.naturalHeight]")
            assert sar == [width, height]
            # Shown, fitted into the viewport with its aspect ratio, and on top of the SAR image.
            box = page.locator("#result-img").bounding_box()
            vp = page.locator("#vp-main").bounding_box()
            assert box is not None and vp is not None and box["width"] > 100
            assert abs(box["width"] / box["height"] - width / height) < 0.01
            assert box["width"] <= vp["width"] + 1 and box["height"] <= vp["height"] + 1
            assert page.locator("#result-img").is_visible()

            # Downloads are enabled and point at the job's results.
            assert page.get_attribute("#dl-png", "aria-disabled") == "false"
            assert "format=png" in page.get_attribute("#dl-png", "href")
            assert "format=tif" in page.get_attribute("#dl-tif", "href")

            # Keyboard: the swipe slider moves with arrow keys; the zoom buttons change the zoom.
            page.focus("#swipe")
            page.keyboard.press("ArrowRight")
            assert page.input_value("#swipe") == "51"
            page.keyboard.press("ArrowLeft")
            before = page.text_content("#zoom-level")
            page.click("#zoom-in")
            assert page.text_content("#zoom-level") != before
            page.click("#zoom-fit")
            assert page.text_content("#zoom-level") == before

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.mouse.move(0, 0)  # no hover or focus ring on a button in the README picture
            page.evaluate("() => document.activeElement && document.activeElement.blur()")
            page.screenshot(path=str(SCREENSHOT))

            # A file of the wrong type: the server's message is shown in the alert region.
            page.set_input_files("#file-input", files=[{"name": "notes.png", "mimeType": "image/png",
                                                         "buffer": b"GIF89a not really a png"}])
            alert = page.get_by_role("alert")
            alert.wait_for(state="visible")
            assert "unsupported file type" in alert.text_content().lower()
        finally:
            browser.close()
    assert not errors, errors
    with Image.open(SCREENSHOT) as shot:
        assert shot.size == (1366, 768)
