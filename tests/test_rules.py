"""Rules that more than one module applies: each lives in one place, and these tests fail when a copy drifts."""

from __future__ import annotations

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
