"""The command line's own behaviour: help texts, the [serve] extra, model checks before skipping."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fixtures import sar_db, write_geotiff

from sarcolor.cli import build_parser, main


def _help_entry(command: str, option: str) -> str:
    """The help text of one option of a subcommand, as --help prints it, on one line."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # noqa: SLF001
    lines = sub.format_help().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(option + " ")
                 or line.lstrip().startswith(option + ","))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("-")), len(lines))
    return " ".join(x.strip() for x in lines[start:end])


@pytest.mark.parametrize(("command", "option", "shown"), [
    ("serve", "--host", "(default: 127.0.0.1)"), ("serve", "--port", "(default: 8000)"),
    ("serve", "--model", "(default: default)"), ("serve", "--max-upload-mb", "(default: 200.0)"),
    ("colorize", "--device", "(default: auto)"), ("train", "-q", "warnings and errors only"),
])
def test_every_option_has_help_and_its_default(command: str, option: str, shown: str) -> None:
    assert shown in _help_entry(command, option)


def test_serve_without_the_serve_extra_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if it were not installed
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "sarcolor: error: sarcolor serve needs the [serve] extra (fastapi not installed): " \
                  "pip install 'sarcolor[serve]'\n"


def test_an_existing_output_does_not_hide_a_bad_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_geotiff(tmp_path / "in.tif", sar_db())
    (tmp_path / "out.tif").write_bytes(b"an earlier result")
    assert main(["colorize", str(src), "-o", str(tmp_path / "out.tif"), "--model", "nope", "-q"]) == 2
    assert "nope" in capsys.readouterr().err and (tmp_path / "out.tif").read_bytes() == b"an earlier result"


def test_an_existing_output_with_a_good_model_is_skipped(tmp_path: Path, tiny_model_path: Path) -> None:
    src = write_geotiff(tmp_path / "in.tif", sar_db())
    (tmp_path / "out.tif").write_bytes(b"an earlier result")
    assert main(["colorize", str(src), "-o", str(tmp_path / "out.tif"), "--model", str(tiny_model_path)]) == 0
    assert (tmp_path / "out.tif").read_bytes() == b"an earlier result"


def test_render_picks_the_colour_balance_and_a_wrong_one_is_a_one_line_error(
        tmp_path: Path, tiny_model_path: Path, two_render_model_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--render: a rendering the model knows changes the colour (not the SAR's lightness); one it does not know,
    or any rendering for a model without them, is a one-line error with exit 2 and no output, in a batch too."""
    import numpy as np
    from PIL import Image

    model = two_render_model_path
    src = write_geotiff(tmp_path / "in.tif", sar_db())
    outs = {}
    for render in ("a", "b"):
        out = tmp_path / f"{render}.png"
        assert main(["colorize", str(src), "-o", str(out), "--model", str(model), "--render", render, "-q"]) == 0
        outs[render] = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert np.abs(outs["a"] - outs["b"]).mean() > 1  # another colour ...
    import rasterio

    assert main(["colorize", str(src), "-o", str(tmp_path / "b.tif"), "--model", str(model), "--render", "b",
                 "-q"]) == 0
    with rasterio.open(tmp_path / "b.tif") as ds:  # the GeoTIFF says which colour balance it carries
        assert ds.tags()["SARCOLOR_RENDER"] == "b" and ds.tags()["SARCOLOR_LOOK"] == "sar"
    grey = {k: v @ np.array([0.299, 0.587, 0.114]) for k, v in outs.items()}
    assert np.corrcoef(grey["a"].ravel(), grey["b"].ravel())[0, 1] > 0.9  # ... under the same SAR lightness
    capsys.readouterr()
    for args, message in [
        (["--model", str(model), "--render", "zz"], "render 'zz': this model knows a, b"),
        (["--model", str(tiny_model_path), "--render", "a"], "render 'a': this model has no renderings"),
    ]:
        for output in (tmp_path / "bad.png", tmp_path / "batch"):
            inputs = [str(src)] if output.suffix else [str(tmp_path / "in.tif"), str(src)]
            assert main(["colorize", *inputs, "-o", str(output), *args, "-q"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err, err
            assert not (tmp_path / "bad.png").exists() and not (tmp_path / "batch").exists()
