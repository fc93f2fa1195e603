"""Shared pytest fixtures. Image generators live in tests/fixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sarcolor.models import ModelConfig, SarColorNet, build_model, save_model

# ../shared/data next to the repository (read-only real data; tests that need it skip where it is absent).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Former defaults that tests and benchmarks compare against: files in the repository, not in the package.
BENCH_MODELS = Path(__file__).resolve().parents[1] / "benchmarks" / "models"


def bench_model(name: str) -> Path:
    """benchmarks/models/<name>.safetensors (skips where the repository's files are not here)."""
    path = BENCH_MODELS / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} not found (a repository file, not part of the package)")
    return path


def tiny_config(**kw: object) -> ModelConfig:
    """A model small enough for tests (multiple 4), with small tiles so small images still have several."""
    base = dict(arch="sarcolornet", width=8, enc_depths=(1, 1), tile=64, overlap=16, name="tiny-test")
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def make_tiny(seed: int = 0, **kw: object) -> tuple[SarColorNet, ModelConfig]:
    torch.manual_seed(seed)
    cfg = tiny_config(**kw)
    return SarColorNet(cfg).eval(), cfg


@pytest.fixture(scope="session")
def tiny() -> tuple[SarColorNet, ModelConfig]:
    """A randomly initialised tiny SarColorNet and its config (do not mutate)."""
    return make_tiny()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, tiny: tuple[SarColorNet, ModelConfig]) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, *tiny)
    return path


@pytest.fixture(scope="session")
def two_render_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny contextnet with two clearly different, vivid renderings "a" (its default) and "b"."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="contextnet", width=8, windows=(3, 7), renders=("a", "b"), render="a", name="ctx")
    net = build_model(cfg).eval()
    with torch.no_grad():
        net.render_embed.weight.normal_(0, 3.0)
        net.mlp[-1].weight.mul_(30)  # a random head's colour is near grey: make it vivid enough to tell apart
    path = tmp_path_factory.mktemp("model") / "two-render.safetensors"
    save_model(path, net, cfg)
    return path
