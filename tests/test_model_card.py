"""Model cards: a weights file carries a short card (under 4 KB), the full card lives in docs/, and
``sarcolor export MODEL --card FILE`` replaces a model file's card leaving its tensors and config unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file

from sarcolor import cli
from sarcolor.errors import SarColorError
from sarcolor.models import MAX_CARD_BYTES, check_card, read_metadata, save_model
from sarcolor.train import export_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = sorted((ROOT / "sarcolor" / "weights").glob("*.safetensors")) + sorted(
    (ROOT / "benchmarks" / "models").glob("*.safetensors"))


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_the_embedded_card_of_each_model_file_is_short_and_current(path: Path) -> None:
    card = read_metadata(path)["model_card"]
    assert card.startswith("# ") and len(card.encode("utf-8")) < MAX_CARD_BYTES == 4096
    assert "session" not in card.lower()
    assert "the default model" not in card.lower() or path.name == "default.safetensors"


def test_the_short_card_to_embed_fits() -> None:
    path = ROOT / "docs" / "model-card-embedded.md"
    if not path.is_file():
        pytest.skip(f"{path} not here (a repository file, not part of the package)")
    card = path.read_text(encoding="utf-8")
    assert check_card(card, "docs/model-card-embedded.md") == card
    with pytest.raises(SarColorError, match=r"x\.md: the card is 4096 bytes; an embedded model card must be under"):
        check_card("a" * 4096, "x.md")


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.safetensors"
    save_model(path, *make_tiny(), card="# tiny\n\nA long card of old.\n" * 50)
    return path


def test_export_replaces_only_the_card_of_a_model_file(tmp_path: Path, model_file: Path) -> None:
    (tmp_path / "short.md").write_text("# tiny\n\nShort.\n", encoding="utf-8")
    out = tmp_path / "recarded.safetensors"
    assert cli.main(["export", str(model_file), "--card", str(tmp_path / "short.md"), "-o", str(out)]) == 0
    before, after = load_file(str(model_file)), load_file(str(out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    meta_before, meta_after = read_metadata(model_file), read_metadata(out)
    assert meta_after["sarcolor_config"] == meta_before["sarcolor_config"]
    assert meta_after["model_card"] == "# tiny\n\nShort.\n" != meta_before["model_card"]


def test_export_refuses_a_long_card_the_input_as_output_and_a_model_file_without_a_card(
        tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "long.md").write_text("x" * 5000, encoding="utf-8")
    out = tmp_path / "out.safetensors"
    assert cli.main(["export", str(model_file), "--card", str(tmp_path / "long.md"), "-o", str(out)]) == 2
    assert "5000 bytes; an embedded model card must be under 4096" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "short.md").write_text("# tiny\n", encoding="utf-8")
    original = model_file.read_bytes()
    with pytest.raises(SarColorError, match="is the input; write to another file"):
        export_checkpoint(model_file, model_file, card=tmp_path / "short.md")
    assert model_file.read_bytes() == original
    with pytest.raises(SarColorError, match=r"is a model file; only its card can be replaced \(--card FILE"):
        export_checkpoint(model_file, out)
    with pytest.raises(SarColorError, match="is a model file; only its card can be replaced"):
        export_checkpoint(model_file, out, card=tmp_path / "short.md", tile=256)
    assert not out.exists()
