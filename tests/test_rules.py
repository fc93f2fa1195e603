"""Rules that more than one module applies: each lives in one place, and these tests fail when a copy drifts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_geotiff

from sarcolor.data import PairRef, discover, read_pair
from sarcolor.engine import colorize
from sarcolor.errors import SarColorError
from sarcolor.raster import open_sar


# ------------------------------------------------------------------------------------------ band choice
def _dual_pol_pair(root: Path, order: tuple[str, str]) -> tuple[Path, dict[str, np.ndarray]]:
    """A 2-band dB GeoTIFF whose bands are named ``order`` (and a matching 8-bit optical file)."""
    rng = np.random.default_rng(len(root.name))
    bands = {"VV": rng.uniform(-20, -5, (24, 24)).astype(np.float32),
             "VH": rng.uniform(-30, -15, (24, 24)).astype(np.float32)}
    sar = write_geotiff(root / "s1" / "scene.tif", np.stack([bands[p] for p in order]), descriptions=list(order))
    write_geotiff(root / "opt" / "scene.tif", rng.integers(1, 255, (3, 24, 24), dtype=np.uint8))
    return sar, bands


@pytest.mark.parametrize("order", [("VH", "VV"), ("VV", "VH")])
def test_train_evaluate_and_colorize_read_the_same_band(tmp_path: Path, order: tuple[str, str], tiny) -> None:
    """A dual-pol file is read as its VH band by colorize and by training/evaluation (``read_pair``),
    whichever order its named bands are in; ``sar_band: VV`` picks the VV band by name for both."""
    sar, bands = _dual_pol_pair(tmp_path / "-".join(order), order)
    ref = PairRef("scene", sar, sar.parents[1] / "opt" / "scene.tif", "g")
    read, *_ = read_pair(ref)  # what train.py and evaluate.py score
    np.testing.assert_array_equal(read, bands["VH"])
    with open_sar(sar, polarisation="VH") as src:  # what colorize colours
        assert src.band == 1 + order.index("VH")
        np.testing.assert_array_equal(src.read_rows(0, 24)[0], bands["VH"])
    np.testing.assert_array_equal(colorize(sar, tiny, scale="db"), colorize(bands["VH"], tiny, scale="db"))

    vv = discover({"root": str(sar.parents[1]), "layout": "folders", "sar_dir": "s1", "opt_dir": "opt",
                   "sar_band": "VV"})[0]
    np.testing.assert_array_equal(read_pair(vv)[0], bands["VV"])
    with open_sar(sar, polarisation="VV") as src:
        np.testing.assert_array_equal(src.read_rows(0, 24)[0], bands["VV"])


# ------------------------------------------------------------------------------------ model file, device
def test_missing_shipped_model_is_one_error_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """colorize, the server and the cluster report a shipped model whose file is missing with one line."""
    from sarcolor import cluster, engine, models, server

    missing = tmp_path / "gone.safetensors"
    monkeypatch.setitem(models.SHIPPED, "default", missing)
    want = f"{missing}: model file not found .shipped model 'default' is not installed."
    for load in (lambda: engine.get_model("default", "cpu"), lambda: server._load("default", "cpu"),
                 lambda: cluster._model_file("default"), lambda: models.load_model("default")):
        with pytest.raises(SarColorError, match=want):
            load()


def test_server_resolves_device_as_colorize_does(monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path) -> None:
    """``serve --device auto`` takes the engine's decision (one rule for "auto"), and cuda without a GPU fails
    with the engine's error."""
    import torch

    from sarcolor import engine, server

    asked = []

    def resolve(device: str) -> torch.device:
        asked.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(engine, "resolve_device", resolve)
    server.create_app(model=tiny_model_path, workers=1, device="auto")
    assert asked == ["auto"]
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(SarColorError, match="no CUDA GPU is available"):
            server.create_app(model=tiny_model_path, workers=1, device="cuda")


# ------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (2, 1, 3, 30), (1, 2, 1, 9), (1, 1, 64, 65), (1, 1, 2, 2)])
def test_one_padding_rule(shape: tuple[int, ...]) -> None:
    """Inference (tiling), the models' own padding and training's small-patch padding mirror alike, also where
    the padding is wider than the image (numpy's repeated reflection)."""
    import torch

    from sarcolor.data import _padded
    from sarcolor.models import _pad_to_multiple
    from sarcolor.tiling import pad_to_multiple

    a = np.random.default_rng(0).random(shape).astype(np.float32)
    for m in (4, 16):
        want = pad_to_multiple(a, m)
        assert want.shape[-2:] == tuple(-(-n // m) * m for n in shape[-2:])
        np.testing.assert_array_equal(_pad_to_multiple(torch.from_numpy(a), m).numpy(), want)
    x = a[0, 0]
    if max(x.shape) <= 16:  # training pads a patch smaller than the crop to the crop; the added pixels invalid
        opt = np.repeat(x[..., None], 3, -1)
        px, popt, pv = _padded(x, opt, np.ones(x.shape, bool), 16)
        np.testing.assert_array_equal(px, pad_to_multiple(x, 16))
        np.testing.assert_array_equal(popt, np.moveaxis(pad_to_multiple(np.moveaxis(opt, -1, 0), 16), 0, -1))
        assert pv.sum() == x.size and pv[:x.shape[0], :x.shape[1]].all()


# ------------------------------------------------------------------------------- valid pixels, 8-bit scale
def test_black_optical_is_no_data_for_training_and_scoring(tmp_path: Path) -> None:
    """A black optical pixel is left out of training (``_training_arrays``) and of scoring (``pair_valid``)."""
    from sarcolor import evaluate
    from sarcolor.data import _training_arrays

    sar = write_geotiff(tmp_path / "s1" / "a.tif", np.random.default_rng(1).uniform(-25, -5, (16, 16)
                                                                                     ).astype(np.float32))
    opt = np.full((3, 16, 16), 90, np.uint8)
    opt[:, 3, 4] = 0  # black: the fill of a reprojected tile
    opt[0, 5, 6] = 0  # red 0 alone is a colour
    ref = PairRef("a", sar, write_geotiff(tmp_path / "opt" / "a.tif", opt), "g")
    _, sv, o, ov, _ = read_pair(ref)
    scored = evaluate.pair_valid(sv, o, ov)
    np.testing.assert_array_equal(_training_arrays(ref, "logpct")[2], scored)
    assert not scored[3, 4] and scored[5, 6] and scored.sum() == 16 * 16 - 1


@pytest.mark.parametrize(("dtype", "want"), [(np.uint8, "8bit"), (np.uint16, "auto"), (np.float32, "auto")])
def test_8bit_pixels_mean_8bit_scale(tmp_path: Path, dtype: type, want: str) -> None:
    """8-bit SAR is an 8-bit display product for training/evaluation (``read_pair``) and for colorize."""

    from sarcolor.preprocess import scene_stats

    pixels = np.random.default_rng(2).integers(1, 250, (16, 16)).astype(dtype)
    sar = write_geotiff(tmp_path / "s1.tif", pixels)
    ref = PairRef("a", sar, write_geotiff(tmp_path / "opt.tif", np.full((3, 16, 16), 90, np.uint8)), "g")
    assert read_pair(ref)[4] == want
    if want == "8bit":
        assert scene_stats(pixels, None, "auto").scale == "8bit"  # what colorize decides on these pixels


# ------------------------------------------------------------------ option lists copied outside the package
ROOT = Path(__file__).resolve().parents[1]
QGIS = ROOT / "qgis_plugin" / "sarcolor_qgis"


@pytest.mark.skipif(not QGIS.is_dir(), reason="the QGIS plugin's source (qgis_plugin/) is not here")
def test_qgis_plugin_offers_the_packages_options() -> None:
    """The plugin runs in QGIS's Python, without sarcolor: its copies of the scales, looks and rendering names
    must be the package's."""
    import importlib.util

    from sarcolor.looks import LOOKS
    from sarcolor.models import load_model
    from sarcolor.preprocess import SCALES

    spec = importlib.util.spec_from_file_location("qgis_runner", QGIS / "runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert tuple(runner.SCALES) == SCALES and tuple(runner.LOOKS) == LOOKS
    help_text = (QGIS / "algorithm.py").read_text()
    listed = re.search(r"renderings: (.*?)\.</p>", help_text, re.S)
    assert listed, "algorithm.py's help no longer lists the renderings"
    names = re.findall(r"([\w-]+) \(", " ".join(listed[1].split()))
    renders = load_model("default")[1].renders
    assert set(names) | {renders[0]} == set(renders)  # the first (the default) is named in words


def test_page_offers_the_packages_options() -> None:
    """The page's scale choices and look buttons are the package's; rendering names come from the server."""
    import sarcolor
    from sarcolor.looks import LOOKS
    from sarcolor.models import load_model
    from sarcolor.preprocess import SCALES
    from sarcolor.server import RENDER_NAMES

    static = Path(sarcolor.__file__).parent / "static"  # the page as installed
    html = (static / "index.html").read_text()
    select = re.search(r'<select id="scale".*?</select>', html, re.S)
    assert select and tuple(re.findall(r'<option value="([^"]+)"', select[0])) == SCALES
    assert tuple(re.findall(r'name="look" value="([^"]+)"', html)) == LOOKS
    assert set(load_model("default")[1].renders) <= set(RENDER_NAMES)  # the shipped model's, in words
    app = (static / "app.js").read_text()
    assert "render_names" in app and not any(f'"{name}"' in app for name in RENDER_NAMES)  # no copy in the page


# ------------------------------------------------------------------------------------------ the package
def test_the_package_ships_one_model() -> None:
    """The wheel's weights are the default's alone (former defaults live in benchmarks/models/)."""
    from sarcolor.models import SHIPPED, WEIGHTS_DIR

    assert sorted(p.name for p in WEIGHTS_DIR.glob("*.safetensors")) == ["default.safetensors"]
    assert set(SHIPPED.values()) == {WEIGHTS_DIR / "default.safetensors"}


def test_a_config_is_checked_with_the_defaults_it_is_built_with() -> None:
    """A model file's config without tile or overlap is checked against ModelConfig's own defaults."""
    from sarcolor.modelfile import ModelConfig

    with pytest.raises(ValueError, match="overlap 128: must be at most half the tile"):
        ModelConfig.from_json('{"arch": "contextnet", "tile": 128}')
    assert ModelConfig.from_json('{"arch": "contextnet"}').tile == ModelConfig().tile
