"""The light (numpy) inference path: its GELU, ContextNet forward and looks equal the torch ones; the engine's
outputs stay within 1 grey level of the torch path's on generated scenes and on every shared source; the
engine, CLI, server and cluster run with PyTorch blocked, and a model that needs it says so in one line."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA
from fixtures import db_to_8bit, sar_db, write_geotiff, write_png

from sarcolor import colour, lightlooks, looks
from sarcolor.engine import colorize, get_model
from sarcolor.lightnet import LightNet, erf, features, gelu, head
from sarcolor.modelfile import ModelConfig
from sarcolor.models import ContextNet, load_model, save_model

REPO = Path(__file__).resolve().parents[1]


def test_erf_and_gelu_are_accurate() -> None:
    x = np.linspace(-9, 9, 36001)
    exact = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - exact).max() < 1.5e-7
    assert np.abs(erf(x) - exact).max() > 1e-9  # an approximation, checked against the real thing
    z = np.linspace(-12, 12, 48001, dtype=np.float32)
    ref = F.gelu(torch.from_numpy(z).double()).numpy()
    assert gelu(z).dtype == np.float32
    assert np.abs(gelu(z) - ref).max() < 1e-6
    assert np.abs(gelu(z.astype(np.float64)) - ref).max() < 2e-6  # float64 in, the same formula
    assert np.abs(gelu(z) - np.maximum(z, 0)).max() > 0.1  # not a ReLU


def _random_contextnet(in_channels: int, seed: int = 0) -> tuple[ContextNet, ModelConfig]:
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="contextnet", in_channels=in_channels, width=16, windows=(3, 7, 15),
                      renders=("a", "b", "c"), render="a", name="ctx",
                      polarisation="VV+VH" if in_channels > 1 else "VH")
    net = ContextNet(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
        net.mlp[-1].weight[:2].mul_(15)  # vivid colours
        net.mlp[-1].weight[2:].mul_(5)  # and lightness across its range
    return net, cfg


def _normalised_sar(channels: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fields = np.kron(rng.normal(0, 0.6, (channels, h // 16 + 1, w // 16 + 1)), np.ones((1, 16, 16)))
    return np.clip(fields[:, :h, :w] + rng.normal(0, 0.3, (channels, h, w)), -1.5, 1.5).astype(np.float32)


@pytest.mark.parametrize("in_channels", [1, 5])  # one band; the polarimetric input
def test_features_and_head_equal_the_torch_contextnet(in_channels: int, tmp_path: Path) -> None:
    net, cfg = _random_contextnet(in_channels)
    x = _normalised_sar(in_channels, 96, 128)
    with torch.no_grad():
        feats_t = net.features(torch.from_numpy(x)[None])[0].numpy()
    feats = features(x, cfg)
    np.testing.assert_allclose(feats, feats_t, atol=2e-5)
    path = tmp_path / "ctx.safetensors"
    save_model(path, net, cfg)
    light = LightNet.load(path)
    for render in range(3):
        with torch.no_grad():
            ab_t, light_t = net.head(torch.from_numpy(feats_t)[None], render)
        ab, lightness = head(feats_t, light.weights, render)
        np.testing.assert_allclose(ab, ab_t[0].numpy(), atol=2e-3)
        np.testing.assert_allclose(lightness, light_t[0, 0].numpy(), atol=2e-3)
        assert np.abs(ab).max() > 10  # the colours compared are vivid, not grey


@pytest.mark.parametrize("look", ["sar", "optical"])
@pytest.mark.parametrize(("tone", "in_channels"), [(None, 1), ((1.3, 0.3), 1), (None, 5)])
def test_forward_equals_the_torch_model_within_a_grey_level(look: str, tone: tuple | None, in_channels: int,
                                                            tmp_path: Path) -> None:
    net, cfg = _random_contextnet(in_channels, seed=1)
    path = tmp_path / "ctx.safetensors"
    save_model(path, net, cfg)
    x = _normalised_sar(in_channels, 136, 200, seed=2)
    with torch.no_grad():
        ref = ((net(torch.from_numpy(x)[None], look=look, render=1, tone=tone)[0] + 1) * 127.5).numpy()
    out = LightNet.load(path).forward(x, look, 1, tone) * 255
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 0.5  # rounded to uint8: at most 1 grey level apart
    assert ref.std(axis=(1, 2)).min() > 5  # a picture, not a constant


def test_export_check_finds_a_numpy_runtime_out_of_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sarcolor import lightnet
    from sarcolor.torch_runtime import light_disagreement

    net, cfg = _random_contextnet(1, seed=4)
    path = tmp_path / "ctx.safetensors"
    save_model(path, net, cfg)
    assert light_disagreement(path, net, cfg) < 0.5
    monkeypatch.setattr(lightnet, "gelu", lambda x: np.maximum(x, 0))  # a ReLU where ContextNet has a GELU
    assert light_disagreement(path, net, cfg) > 1


def test_look_pieces_equal_torchs() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((3, 17, 23), dtype=np.float32)
    t = torch.from_numpy(x)[None]
    up = F.interpolate(t, size=(68, 92), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(lightlooks.upsample(x, 4), up, atol=1e-6)
    np.testing.assert_allclose(lightlooks.upsample(x, 4, (8, 44)), up[:, 8:44], atol=1e-6)
    np.testing.assert_allclose(lightlooks.box_filter(x, 2), looks.box_filter(t, 2)[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(lightlooks.rgb_to_lab(x), colour.rgb_to_lab(t * 2 - 1)[0].numpy(), atol=1e-3)
    lab = np.stack([x[0] * 100, x[1] * 120 - 60, x[2] * 120 - 60])
    np.testing.assert_allclose(lightlooks.lab_to_rgb(lab), colour.lab_to_rgb(torch.from_numpy(lab)[None])[0],
                               atol=1e-5)
    grey = rng.random((64, 64), dtype=np.float32)
    src = rng.random((3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(lightlooks.guided_upsample(grey, src, 4), looks.guided_upsample(
        torch.from_numpy(grey)[None, None], torch.from_numpy(src)[None], 4)[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(lightlooks.lee_filter(grey), looks.lee_filter(torch.from_numpy(grey)[None, None])
                               [0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(lightlooks.sar_lightness(grey * 2 - 1, (1.2, 0.2)),
                               looks.sar_lightness(torch.from_numpy(grey * 2 - 1)[None, None], (1.2, 0.2))[0, 0],
                               atol=1e-5)


def test_the_default_model_runs_on_numpy_and_others_on_torch(tiny_model_path: Path) -> None:
    assert isinstance(get_model("default")[0], LightNet)
    assert isinstance(get_model(tiny_model_path)[0], torch.nn.Module)  # a sarcolornet


def _scenes() -> dict[str, np.ndarray]:
    db = sar_db(600, 1250, seed=5)
    return {"float dB": db, "dual-pol dB": np.stack([db - 6, db]), "8-bit": db_to_8bit(db)}


@pytest.mark.parametrize("look", ["sar", "optical"])
def test_engine_outputs_are_within_a_grey_level_of_the_torch_path(look: str) -> None:
    torch_model = load_model("default")
    for name, scene in _scenes().items():
        light, ref = colorize(scene, look=look), colorize(scene, torch_model, look=look)
        diff = np.abs(light.astype(int) - ref)
        assert diff.max() <= 1, name
        assert ref.reshape(-1, 3).std(0).min() > 3, name  # coloured, not flat


def test_thread_count_does_not_change_a_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    one_tile, tiles = sar_db(300, 400, seed=8), sar_db(700, 2300, seed=9)  # bands of a tile, tiles side by side
    for scene in (one_tile, tiles):
        runs = []
        for threads in ("1", "2", "3"):
            monkeypatch.setenv("OMP_NUM_THREADS", threads)
            runs.append(colorize(scene, look="optical"))
        assert all(np.array_equal(runs[0], r) for r in runs[1:])


def _real_scenes() -> list[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    picks = ["volkov_s1s2/sar/*.png", "sih1733/scene1/sar.jpg", "sen12_samples/sar/*.png", "3mos/sar/*.png",
             "bigearthnet/s1/*.tif", "sen1floods11/*_S1Hand.tif"]
    return [sorted(SHARED_DATA.glob(p))[0] for p in picks if list(SHARED_DATA.glob(p))]


@pytest.mark.slow
@pytest.mark.parametrize("look", ["sar", "optical"])
def test_real_scenes_of_every_source_are_within_a_grey_level(look: str) -> None:
    torch_model = load_model("default")
    scenes = _real_scenes()
    assert len(scenes) == 6
    for path in scenes:
        diff = np.abs(colorize(path, look=look).astype(int) - colorize(path, torch_model, look=look))
        assert diff.max() <= 1, path


def _run_without_torch(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python with ``import torch`` failing, as in the light install."""
    prelude = f"import sys; sys.modules['torch'] = None; sys.path.insert(0, {str(REPO)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_colours_scenes_without_torch(tmp_path: Path) -> None:
    db = sar_db(160, 200, seed=7)
    write_geotiff(tmp_path / "dual.tif", np.stack([db - 6, db]))
    write_png(tmp_path / "grey.png", db_to_8bit(db))
    code = """
import sarcolor, sarcolor.cli, sarcolor.engine, sarcolor.raster, sarcolor.preprocess, sarcolor.tiling
import sarcolor.server, sarcolor.cluster
from sarcolor.cli import main
for src, look in (('dual.tif', 'sar'), ('dual.tif', 'optical'), ('grey.png', 'sar'), ('grey.png', 'optical')):
    assert main(['colorize', src, '-o', f'{src}-{look}.tif', '--look', look, '-q']) == 0
assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]
"""
    done = _run_without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("dual.tif-sar.tif", "dual.tif-optical.tif", "grey.png-sar.tif", "grey.png-optical.tif"):
        with rasterio.open(tmp_path / name) as f:
            rgb = f.read()
        assert rgb.shape == (3, 160, 200) and rgb.reshape(3, -1).std(1).min() > 3


@pytest.mark.parametrize("case", ["a torch model", "a GPU"])
def test_a_model_that_needs_torch_is_a_one_line_error_without_it(tmp_path: Path, tiny_model_path: Path,
                                                                 case: str) -> None:
    write_geotiff(tmp_path / "in.tif", sar_db(40, 40)[None])
    args = ["--model", str(tiny_model_path)] if case == "a torch model" else ["--device", "cuda"]
    message = (f"model {tiny_model_path} (sarcolornet)" if case == "a torch model" else "--device cuda")
    code = f"from sarcolor.cli import main; sys.exit(main(['colorize', 'in.tif', '-o', 'out.tif', *{args!r}]))"
    done = _run_without_torch(code, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"sarcolor: error: {message} needs PyTorch: pip install 'sarcolor[train]'")
    assert "Traceback" not in done.stderr and not (tmp_path / "out.tif").exists()


def test_training_commands_say_they_need_torch(tmp_path: Path) -> None:
    done = _run_without_torch("from sarcolor.cli import main; sys.exit(main(['train', '--config', 'c.yaml']))",
                              tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "sarcolor: error: sarcolor train needs PyTorch: pip install 'sarcolor[train]'"


def test_bad_input_is_still_one_line_without_torch(tmp_path: Path) -> None:
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    done = _run_without_torch("from sarcolor.cli import main; sys.exit(main(['colorize', 'broken.tif', '-o', "
                              "'out.tif', '-q']))", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "broken.tif" in done.stderr

