"""``sarcolor evaluate`` on tiny generated pair folders: baselines, report files, contact sheet, errors."""

from __future__ import annotations

import csv
import json
import math
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from sarcolor import evaluate as ev
from sarcolor import metrics
from sarcolor.cli import main
from sarcolor.data import build_splits, read_pair, write_split
from sarcolor.errors import SarColorError

SIZE = 32


def colour_of(grey: np.ndarray) -> np.ndarray:
    """The synthetic ground truth: a fixed, never-black colour for every grey level."""
    g = grey.astype(np.int64)
    return np.stack([g, 255 - g, (g * 7) % 256], axis=-1).astype(np.uint8)


def other_colour_of(grey: np.ndarray) -> np.ndarray:
    """A second source's rendering: another fixed, never-black colour for every grey level."""
    g = grey.astype(np.int64)
    return np.stack([(g * 3) % 200 + 30, np.full_like(g, 90), 255 - g // 2], axis=-1).astype(np.uint8)


def write_pairs(root: Path, names: list[str], seed: int = 0, size: tuple[int, int] = (SIZE, SIZE),
                colour=colour_of) -> Path:
    """root/sar/<name>.png (8-bit grey, every level present) + root/opt/<name>.png = colour(sar)."""
    (root / "sar").mkdir(parents=True, exist_ok=True)
    (root / "opt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in names:
        grey = rng.permutation(np.resize(np.arange(256, dtype=np.uint8), size[0] * size[1])).reshape(size)
        Image.fromarray(grey).save(root / "sar" / f"{n}.png")
        Image.fromarray(colour(grey)).save(root / "opt" / f"{n}.png")
    return root


BASELINES = ["sar-grey", "hyp3-rgb", "mean-colour", "mean-colour/src", "intensity-lookup", "intensity-lookup/src"]


class GreyCopy:
    """A 'model' that returns the SAR itself: the identity collapse."""

    name = "grey-copy"

    def predict(self, sar_raw: np.ndarray, sar_valid: np.ndarray, scale: str) -> np.ndarray:
        return metrics.grey_rgb(ev.sar_display(sar_raw, sar_valid, scale))


def samples_of(refs) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for ref in refs:
        sar, sv, opt, ov, scale = read_pair(ref)
        out.append((ev.sar_display(sar, sv, scale), opt, ev.pair_valid(sv, opt, ov)))
    return out


# ------------------------------------------------------------------------------------------ baselines
def test_intensity_lookup_reproduces_the_mapping(tmp_path):
    root = write_pairs(tmp_path / "d", ["a", "b"])
    refs = build_splits({"sources": [{"root": str(root), "layout": "folders"}]})["train"]
    lut = ev.IntensityLookup().fit(samples_of(refs[:1]))
    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(np.rint(lut.table).astype(np.uint8), colour_of(levels))
    sar, sv, opt, _, scale = read_pair(refs[1])
    assert np.array_equal(lut.predict(sar, sv, scale), opt)  # an unseen pair, predicted exactly


def test_intensity_lookup_interpolates_empty_levels():
    grey = np.array([[0, 100]], np.uint8)
    opt = np.array([[[0, 0, 200], [100, 50, 0]]], np.uint8)
    lut = ev.IntensityLookup().fit([(grey, opt, np.ones_like(grey, bool))])
    assert np.allclose(lut.table[50], [50, 25, 100])  # halfway between the two filled levels
    assert np.allclose(lut.table[255], [100, 50, 0])  # constant beyond the last filled level
    assert lut.counts[0] == lut.counts[100] == 1 and lut.counts.sum() == 2


def test_mean_colour_uses_valid_pixels_only():
    opt = np.array([[[10, 20, 30], [30, 40, 50], [255, 255, 255]]], np.uint8)
    valid = np.array([[True, True, False]])
    mc = ev.MeanColour().fit([(np.zeros((1, 3), np.uint8), opt, valid)])
    assert np.allclose(mc.rgb, [20, 30, 40])
    assert (mc.predict(np.zeros((8, 9), np.float32), np.ones((8, 9), bool), "8bit") == [20, 30, 40]).all()


def test_sar_display_same_mapping_for_every_scale():
    rng = np.random.default_rng(0)
    raw8 = rng.integers(0, 256, (16, 16)).astype(np.float32)
    assert np.array_equal(ev.sar_display(raw8, np.ones_like(raw8, bool), "8bit"), raw8.astype(np.uint8))
    lin = rng.gamma(1.0, 0.05, (64, 64)).astype(np.float32)  # speckle-like linear intensity
    db = 10 * np.log10(lin)
    grey = ev.sar_display(db, np.ones_like(db, bool), "db").astype(int)
    p99 = 10 ** (np.percentile(db, 99) / 10)  # scene_stats takes the percentile in dB
    expected = np.rint(np.clip(lin / p99, 0, 1) * 255).astype(int)
    assert np.abs(grey - expected).max() <= 1


def test_sar_grey_baseline_is_the_display():
    rng = np.random.default_rng(0)
    db = rng.normal(-15, 4, (20, 24)).astype(np.float32)
    valid = np.ones(db.shape, bool)
    got = ev.SarGrey().predict(db, valid, "db")
    assert got.shape == (20, 24, 3) and (got == ev.sar_display(db, valid, "db")[..., None]).all()


def two_sources(tmp_path: Path) -> list:
    """Source "one" (colour_of) and source "two" (other_colour_of), three pairs each; pair c of each held out."""
    write_pairs(tmp_path / "d1", ["a", "b", "c"], seed=1)
    write_pairs(tmp_path / "d2", ["a", "b", "c"], seed=2, colour=other_colour_of)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  sources:\n    - {root: d1, layout: folders, name: one}\n"
                   "    - {root: d2, layout: folders}\n  val:\n    groups: [c]\n")
    return cfg


def test_per_source_baselines_fit_their_own_source(tmp_path):
    sel = ev.select_pairs(str(two_sources(tmp_path)), None, None)
    # name: or folder; a named source also names its pairs (one folder can serve as two sources, e.g. VV and VH)
    assert [(p.name, p.source) for p in sel.pairs] == [("one/c", "one"), ("d2/c", "d2")]
    baselines = {b.name: b for b in ev.fit_baselines(sel.train, quiet=True)}
    assert list(baselines) == BASELINES
    per_src = baselines["mean-colour/src"]
    for source, colour in (("one", colour_of), ("d2", other_colour_of)):
        mine = [p for p in sel.train if p.source == source]
        expected = np.mean([colour(ev.sar_display(*read_pair(p)[:2], "8bit")).reshape(-1, 3) for p in mine],
                           axis=(0, 1))
        assert np.allclose(per_src.by_source[source].rgb, expected)
    # each source's lookup is exact on its own source; the one fitted on both mixes the two renderings
    report = ev.run_evaluation(sel.pairs, list(baselines.values()), tmp_path / "r", samples=1, quiet=True)
    summary = report.summary
    assert list(summary) == ["all", "one", "d2"]
    for source in ("one", "d2"):
        assert summary[source]["intensity-lookup/src"]["colour_error"] == 0.0
        assert summary[source]["intensity-lookup"]["colour_error"] > 5
        assert summary[source]["mean-colour/src"]["ciede2000"] < summary[source]["mean-colour"]["ciede2000"]
        assert summary[source]["hyp3-rgb"]["count"] == 0  # dual-pol pairs only
        assert all(v["count"] == 1 for k, v in summary[source].items() if k != "hyp3-rgb")
    assert all(v["count"] == 2 for k, v in summary["all"].items() if k != "hyp3-rgb")
    all_lookup = [r["colour_error"] for r in report.rows if r["model"] == "intensity-lookup"]
    assert summary["all"]["intensity-lookup"]["colour_error"] == pytest.approx(np.mean(all_lookup))
    # SWD is one number per set: the all-sources value is not the mean of the per-source ones
    assert summary["all"]["sar-grey"]["swd"] != pytest.approx(
        np.mean([summary[s]["sar-grey"]["swd"] for s in ("one", "d2")]), rel=1e-6)
    # baselines only: each source's sheet is SAR | truth
    assert sorted(p.name for p in (tmp_path / "r").glob("contact_sheet_*.png")) == [
        "contact_sheet_d2.png", "contact_sheet_one.png"]
    md = (tmp_path / "r" / "summary.md").read_text()
    assert md.index("## all sources (2 pair(s))") < md.index("## one (1 pair(s))") < md.index("## d2 (1 pair(s))")


def test_source_without_training_pairs(tmp_path):
    write_pairs(tmp_path / "d1", ["a", "b", "c"], seed=1)
    write_pairs(tmp_path / "d3", ["x", "y"], seed=3, colour=other_colour_of)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  sources:\n    - {root: d1, layout: folders}\n    - {root: d3, layout: folders}\n"
                   "  val:\n    groups: [c, x, y]\n")
    sel = ev.select_pairs(str(cfg), None, None)
    assert "no training pairs of d3: the /src baselines do not score them" in sel.description
    report = ev.run_evaluation(sel.pairs, ev.fit_baselines(sel.train, quiet=True), tmp_path / "r", samples=0,
                               quiet=True)
    d3 = report.summary["d3"]
    assert d3["mean-colour/src"]["count"] == 0 and math.isnan(d3["mean-colour/src"]["colour_error"])
    assert d3["mean-colour"]["count"] == 2 and report.summary["d1"]["mean-colour/src"]["count"] == 1


# --------------------------------------------------------------------------------------------- report
def test_report_files_and_values(tmp_path):
    root = write_pairs(tmp_path / "d", ["a", "b", "c"])
    # nodata: a black optical patch in pair c is excluded from the scores
    opt_c = np.array(Image.open(root / "opt" / "c.png"))
    opt_c[:4, :] = 0
    Image.fromarray(opt_c).save(root / "opt" / "c.png")
    refs = build_splits({"sources": [{"root": str(root), "layout": "folders"}]})["train"]
    preds = [GreyCopy(), *ev.fit_baselines(refs[:2], quiet=True)]
    out = tmp_path / "report"
    report = ev.run_evaluation(refs, preds, out, samples=2, heatmaps=True, quiet=True, description="test run")
    names = ["grey-copy", *(b for b in BASELINES if b != "hyp3-rgb")]  # hyp3-rgb: dual-pol pairs only

    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 3 * len(names)
    assert list(rows[0]) == ["image", "source", "group", "model", "valid_pixels", *metrics.METRICS]
    assert {r["source"] for r in rows} == {"d"}
    valid_c = {r["model"]: int(r["valid_pixels"]) for r in rows if r["image"].endswith("/c")}
    assert set(valid_c.values()) == {SIZE * SIZE - 4 * SIZE}

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["all", "d"] and summary["all"] == summary["d"]  # one source
    summary = summary["all"]
    assert list(summary) == ["grey-copy", *BASELINES] and summary["hyp3-rgb"]["count"] == 0  # no dual-pol pair
    for name in names:
        assert summary[name]["count"] == 3
        assert set(summary[name]) == {*metrics.METRICS, *metrics.SET_METRICS, "count"}
        mine = [r for r in rows if r["model"] == name]
        csv_mean = np.mean([float(r["ciede2000"]) for r in mine])
        assert float(summary[name]["ciede2000"]) == pytest.approx(csv_mean, rel=1e-9)
    # exact lookup: PSNR inf reported honestly (as the string "inf": strict JSON), SSIM 1, no colour error
    lookup = summary["intensity-lookup"]
    assert lookup["psnr"] == "inf" and float(lookup["psnr"]) == math.inf and lookup["ssim"] == 1.0
    assert lookup["ciede2000"] == lookup["colour_error"] == lookup["swd"] == 0.0 and lookup["sharpness"] == 1.0
    assert summary["grey-copy"]["identity_collapse"] == 1.0
    assert summary["intensity-lookup"]["identity_collapse"] == 0.0
    assert summary["mean-colour"]["structure"] == 0.0 and summary["mean-colour"]["sharpness"] == 0.0
    assert summary["mean-colour"]["swd"] > summary["sar-grey"]["swd"] > 0

    # one value checked against a direct computation
    sar, sv, opt, ov, scale = read_pair(refs[2])
    valid = ev.pair_valid(sv, opt, ov)
    grey, sar_db = ev.sar_views(sar, sv, scale)
    mean_colour = next(p for p in preds if p.name == "mean-colour")
    direct = metrics.all_metrics(mean_colour.predict(sar, sv, scale), opt, grey, valid, sar_db)
    row = next(r for r in report.rows if r["model"] == "mean-colour" and r["image"] == refs[2].name)
    assert row == {**row, **direct}

    md = (out / "summary.md").read_text()
    assert "test run" in md and "## all sources (3 pair(s))" in md and "## d (3 pair(s))" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 * (3 + len(names)) and all(f"| {n} |" in md for n in names)  # + hyp3-rgb (count 0)
    assert table[0].count("|") == table[2].count("|")
    heat = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert len(heat) == 3 * len(names) and "d_c__grey-copy.png" in heat and "d_c__mean-colour_src.png" in heat
    hm = np.array(Image.open(out / "heatmaps" / "d_c__intensity-lookup.png"))
    zero_error = ev.heatmap(np.zeros((1, 1)), np.ones((1, 1), bool))[0, 0]
    assert (hm[:4] == ev.NODATA_RGB).all() and (hm[4:] == zero_error).all()


def test_contact_sheet_shows_the_right_panels(tmp_path):
    root = write_pairs(tmp_path / "d", ["a", "b", "c"], size=(48, 48))
    refs = build_splits({"sources": [{"root": str(root), "layout": "folders"}]})["train"]
    preds = [GreyCopy(), *ev.fit_baselines(refs, quiet=True)]
    out = tmp_path / "report"
    ev.run_evaluation(refs, preds, out, samples=["b", "c"], quiet=True)
    sheet = np.array(Image.open(out / "contact_sheet_d.png"))
    (w, h), boxes = ev.sheet_layout(2, 3)  # SAR | the model (baselines are in the tables only) | truth
    assert (w, h) == (3 * ev.THUMB, ev.HEADER_H + 2 * (ev.CAPTION_H + ev.THUMB))
    assert sheet.shape == (h, w, 3)
    for r, ref in enumerate(refs[1:]):
        sar, sv, opt, ov, scale = read_pair(ref)
        grey = ev.sar_display(sar, sv, scale)
        expected = [grey, preds[0].predict(sar, sv, scale), opt]
        for (x0, y0, x1, y1), img in zip(boxes[r], expected, strict=True):
            assert np.array_equal(sheet[y0:y1, x0:x1], np.array(ev.thumbnail(img))), (ref.name, x0)
    assert "`contact_sheet_d.png` (768x562): SAR | grey-copy | truth, rows: `d/b`, `d/c`" in (
        out / "summary.md").read_text()


def test_contact_sheet_layout_with_unequal_panels():
    thumb = 40
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    rows = [("wide", [ev.thumbnail(np.full((10, 20, 3), c, np.uint8), thumb) for c in colours]),
            ("tall", [ev.thumbnail(np.full((20, 10, 3), c, np.uint8), thumb) for c in colours])]
    sheet = np.array(ev.contact_sheet(rows, ["SAR", "model", "truth"], thumb))
    (w, h), boxes = ev.sheet_layout(2, 3, thumb)
    assert sheet.shape == (h, w, 3) == (ev.HEADER_H + 2 * (ev.CAPTION_H + thumb), 3 * thumb, 3)
    assert (sheet[:ev.HEADER_H] == 255).mean() > 0.8 and (sheet[:ev.HEADER_H] < 128).any()  # titles drawn
    for r in range(2):
        for c, colour in enumerate(colours):
            x0, y0, x1, y1 = boxes[r][c]
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            assert tuple(sheet[cy, cx]) == colour
            # letterbox: wide panels leave the top of the cell empty, tall ones the left
            corner = sheet[y0 + 2, cx] if r == 0 else sheet[cy, x0 + 2]
            assert tuple(corner) == ev.BACKGROUND


# --------------------------------------------------------------------------------------- pairs/splits
def test_mismatched_pair_is_a_clear_error_and_nothing_is_computed(tmp_path, capsys):
    root = write_pairs(tmp_path / "d", ["a", "b"])
    Image.fromarray(np.zeros((SIZE, SIZE + 8, 3), np.uint8) + 9).save(root / "opt" / "b.png")
    refs = build_splits({"sources": [{"root": str(root), "layout": "folders"}]})["train"]
    with pytest.raises(SarColorError, match=r"pair d/b: SAR b.png is 32x32 but optical b.png is 40x32"):
        ev.run_evaluation(refs, [GreyCopy()], tmp_path / "report", quiet=True)
    assert not (tmp_path / "report").exists()
    rc = main(["evaluate", "--data", str(root), "--models", "nonexistent", "-o", str(tmp_path / "r2"), "-q"])
    assert rc == 2 and "pair d/b" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_config_split_and_baseline_training_pairs(tmp_path):
    write_pairs(tmp_path / "d", ["a", "b", "c"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  sources:\n    - {root: d, layout: folders}\n  val:\n    groups: [c]\n")
    sel = ev.select_pairs(str(cfg), None, None)
    assert [p.name for p in sel.pairs] == ["d/c"] and [p.name for p in sel.train] == ["d/a", "d/b"]
    assert "2 training pair(s)" in sel.description
    sel = ev.select_pairs(None, str(tmp_path / "d"), None)  # a plain folder: every pair, baselines see them
    assert len(sel.pairs) == 3 and "no held-out split" in sel.description
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"data": {"train": ["d/a"], "val": ["d/b", "d/c"]}}))
    sel = ev.select_pairs(str(cfg), None, str(split))
    assert [p.name for p in sel.pairs] == ["d/b", "d/c"] and [p.name for p in sel.train] == ["d/a"]
    run_split = tmp_path / "run_split.json"  # a training run's split.json, part chosen after a colon
    write_split({"train": [sel.train[0]], "val": sel.pairs[1:]}, run_split)
    sel = ev.select_pairs(str(cfg), None, f"{run_split}:val")
    assert [p.name for p in sel.pairs] == ["d/c"] and [p.name for p in sel.train] == ["d/a"]
    with pytest.raises(SarColorError, match="not a split"):
        ev.select_pairs(str(cfg), None, "nope")
    with pytest.raises(SarColorError, match="either --config"):
        ev.select_pairs(None, None, None)


def test_nodata_in_a_geotiff_sar_is_excluded(tmp_path):
    root = write_pairs(tmp_path / "d", ["a"])
    grey = np.array(Image.open(root / "sar" / "a.png")).astype(np.float32)
    grey[:, :5] = -9999.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / "sar" / "a.tif", "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                           dtype="float32", nodata=-9999.0) as ds:
            ds.write(grey, 1)
    (root / "sar" / "a.png").unlink()
    refs = build_splits({"sources": [{"root": str(root), "layout": "folders"}]})["train"]
    report = ev.run_evaluation(refs, [GreyCopy()], tmp_path / "r", samples=0, quiet=True)
    assert report.rows[0]["valid_pixels"] == SIZE * (SIZE - 5)
    assert not (tmp_path / "r" / "contact_sheet.png").exists()


def save_tiny_model(path: Path, tile: int) -> Path:
    """A small random sarcolornet saved as a model file (inference only needs some weights)."""
    import torch

    from sarcolor.models import ModelConfig, build_model, save_model

    cfg = ModelConfig(arch="sarcolornet", width=8, enc_depths=(1, 1), tile=tile, overlap=tile // 4, name="tiny")
    torch.manual_seed(0)
    save_model(path, build_model(cfg), cfg)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """64-px tiles (the least a model file may ask for)."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors", tile=64)


def test_cli_scores_models_and_checkpoint_folders(tmp_path, tiny_model, capsys):
    from sarcolor.engine import colorize_array
    from sarcolor.models import load_model

    root = write_pairs(tmp_path / "d", ["a", "b", "c"], size=(40, 48))
    run = tmp_path / "run-7"  # a training run folder holding its exported model
    run.mkdir()
    (run / "model.safetensors").write_bytes(tiny_model.read_bytes())
    out = tmp_path / "report"
    rc = main(["evaluate", "--data", str(root), "--models", str(tiny_model), str(run), "-o", str(out),
               "--samples", "2", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| tiny [sar] |" in printed and "| run-7 [optical] |" in printed and f"report: {out}" in printed
    summary = json.loads((out / "summary.json").read_text())["d"]
    models = ["tiny [sar]", "run-7 [sar]", "tiny [optical]", "run-7 [optical]"]  # every model's sar look first
    assert list(summary) == [*models, *BASELINES]
    assert summary["tiny [sar]"] == summary["run-7 [sar]"]  # the same weights, loaded two ways
    assert Image.open(out / "contact_sheet_d.png").size == ev.sheet_layout(2, 6)[0]
    # the runner's prediction is colorize's in its look: check rows against a direct computation
    refs = build_splits({"sources": [{"root": str(root), "layout": "auto"}]})["train"]
    sar, sv, opt, ov, scale = read_pair(refs[0])
    model, cfg = load_model(tiny_model)
    grey, sar_db = ev.sar_views(sar, sv, scale)
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    for look in ("sar", "optical"):
        pred = colorize_array(model, cfg, sar, valid=sv, scale=scale, device="cpu", look=look)
        direct = metrics.all_metrics(pred, opt, grey, ev.pair_valid(sv, opt, ov), sar_db)
        row = next(r for r in rows if r["model"] == f"tiny [{look}]")
        assert row["image"] == refs[0].name
        for k in metrics.METRICS:
            assert float(row[k]) == pytest.approx(direct[k], rel=1e-8), (look, k)
    # --looks: only the looks asked for
    rc = main(["evaluate", "--data", str(root), "--models", str(tiny_model), "-o", str(tmp_path / "r2"),
               "--looks", "optical", "--no-baselines", "-q", "--device", "cpu"])
    assert rc == 0 and list(json.loads((tmp_path / "r2" / "summary.json").read_text())["all"]) == ["tiny [optical]"]


def test_looks_option_errors(tmp_path, capsys):
    root = write_pairs(tmp_path / "d", ["a"])
    rc = main(["evaluate", "--data", str(root), "--looks", "sar,fog", "-o", str(tmp_path / "r"), "-q"])
    assert rc == 2 and not (tmp_path / "r").exists()
    assert "--looks 'sar,fog': give one or more of sar, optical" in capsys.readouterr().err
    with pytest.raises(SarColorError, match="each once"):
        ev.parse_looks("sar,sar")
    assert ev.parse_looks("optical, sar") == ["optical", "sar"]


def test_runner_passes_look_and_render(monkeypatch):
    """ModelRunner gives colorize_array its look, and the pair's source rendering when the model knows it."""
    import sarcolor.engine as engine

    seen = []

    def fake(model, cfg, sar, *, valid=None, scale="auto", device=None, tta=False, progress=False, look="sar",
             render=None):
        seen.append((look, render))
        return np.zeros((*sar.shape, 3), np.uint8)

    monkeypatch.setattr(engine, "colorize_array", fake)
    cfg = types.SimpleNamespace(renders=("l2a-3000",))
    runners = [ev.ModelRunner(f"m [{look}]", None, cfg, "cpu", look) for look in ("sar", "optical")]
    for render in ("l2a-3000", "unknown"):
        ref = types.SimpleNamespace(name="x", source="s", render=render)
        for r in runners:
            ev.for_pair(r, ref).predict(np.zeros((4, 4), np.float32), np.ones((4, 4), bool), "8bit")
    assert seen == [("sar", "l2a-3000"), ("optical", "l2a-3000"), ("sar", None), ("optical", None)]


def test_checkpoint_folder_without_model_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.safetensors").write_bytes(b"x")
    with pytest.raises(SarColorError, match="sarcolor export"):
        ev.load_runners([str(tmp_path / "run")], "cpu")


def test_parse_samples():
    assert ev.parse_samples("4") == 4
    assert ev.parse_samples("001, 017") == ["001", "017"]


def test_a_source_named_all_is_refused(tmp_path):
    root = write_pairs(tmp_path / "d", ["a"])
    refs = build_splits({"sources": [{"root": str(root), "layout": "folders", "name": "all"}]})["train"]
    with pytest.raises(SarColorError, match="a data source is named 'all'"):
        ev.run_evaluation(refs, [GreyCopy()], tmp_path / "r", quiet=True)


# ------------------------------------------------------------------------------------------ real data
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.realdata
def test_volkov_report(tmp_path):
    """A short real run: 3 volkov_s1s2 pairs scored, baselines fitted on 6 others, the shipped default model
    when installed (else a small random one: only the report's mechanics are checked)."""
    root = DATA / "volkov_s1s2"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (../shared/data next to the repo)")
    from sarcolor.models import SHIPPED

    sel = ev.select_pairs(None, str(root), None)
    assert len(sel.pairs) == 80
    model = "default" if SHIPPED["default"].is_file() else str(save_tiny_model(tmp_path / "tiny.safetensors", 512))
    preds = [*ev.load_runners([model], "cpu"), *ev.fit_baselines(sel.pairs[10:16], quiet=True)]
    out = tmp_path / "report"
    report = ev.run_evaluation(sel.pairs[:3], preds, out, samples=2, heatmaps=True, quiet=True)
    assert len(report.rows) == 3 * 7  # 2 looks + 5 baselines
    assert report.summary["all"] == report.summary["volkov_s1s2"]
    summary = report.summary["all"]
    assert summary.pop("hyp3-rgb")["count"] == 0  # the dual-pol baseline: these tiles are one band (VH)
    for name, vals in summary.items():
        assert vals["count"] == 3
        assert all(math.isfinite(vals[k]) for k in (*metrics.METRICS, "swd")
                   if not (k == "structure" and name.startswith("mean-colour"))), name
        assert 0 < vals["ciede2000"] < 100 and -1 <= vals["ssim"] <= 1 and 0 <= vals["sam"] <= 90
    assert summary["mean-colour"]["chroma_ratio"] < summary["intensity-lookup"]["chroma_ratio"] * 3
    # the SAR in grey keeps the SAR's edges (~0.95 measured on these VH tiles); a constant keeps none
    assert summary["sar-grey"]["structure"] > 0.85 and summary["mean-colour"]["structure"] == 0.0
    assert summary["mean-colour"]["sharpness"] == 0.0 and summary["sar-grey"]["sharpness"] > 0.5
    if model == "default":  # its optical look is fog (contextnet: structure ~0.54, sharpness low); the sar
        opt, sar = summary["default [optical]"], summary["default [sar]"]  # look keeps the SAR's edges
        assert opt["sharpness"] < 0.3 and opt["structure"] < 0.7 and sar["structure"] > 0.9, (opt, sar)
    sheet = Image.open(out / "contact_sheet_volkov_s1s2.png")
    assert sheet.size == ev.sheet_layout(2, 4)[0]  # SAR | sar look | optical look | truth
    assert len(list((out / "heatmaps").iterdir())) == 3 * 7


def test_first_per_source_keeps_each_sources_first_pairs_in_order() -> None:
    from sarcolor.data import PairRef

    refs = [PairRef(sar=Path(f"{s}{i}.png"), opt=Path(f"o{s}{i}.png"), name=f"{s}{i}", group="g", source=s)
            for i, s in enumerate("aabab")]
    assert [r.name for r in ev.first_per_source(refs, 1)] == ["a0", "b2"]
    assert [r.name for r in ev.first_per_source(refs, 2)] == ["a0", "a1", "b2", "b4"]
    assert ev.first_per_source(refs, 0) == refs


def test_hyp3_decomposition_colours_water_blue_vegetation_green_and_bare_ground_red() -> None:
    from sarcolor.evaluate import hyp3_rgb

    co = np.array([[-25.0, -8.0, -4.0]])  # calm water, vegetation, bright bare/built-up ground (VV dB)
    cross = np.array([[-30.0, -13.0, -20.0]])
    rgb = hyp3_rgb(co, cross).astype(int)[0]
    water, veg, bare = rgb
    assert water[2] > max(water[:2]) and veg[1] > max(veg[0], veg[2]) and bare[0] > max(bare[1], bare[2])
    assert rgb.min() >= 1  # 0 is kept for nodata


def test_dual_pol_pairs_are_scored_by_every_predictor_and_the_hyp3_baseline(tmp_path: Path) -> None:
    """A dual-pol float-dB source (sar_band VV+VH): the model and every baseline score it, the HyP3
    decomposition too (only there), and the land-cover colour of an exact copy of the truth is 1."""
    rng = np.random.default_rng(0)
    for part in ("s1", "opt"):
        (tmp_path / "d" / part).mkdir(parents=True)
    for n in ("a", "b", "c"):
        vv = rng.uniform(-20, -5, (64, 64)).astype(np.float32)
        with rasterio.open(tmp_path / "d" / "s1" / f"{n}.tif", "w", driver="GTiff", width=64, height=64, count=2,
                           dtype="float32") as ds:
            ds.write(np.stack([vv, vv - 7]))
            ds.descriptions = ("VV", "VH")
        grey = np.clip((vv + 20) / 15 * 255, 0, 255).astype(np.uint8)
        Image.fromarray(colour_of(grey)).save(tmp_path / "d" / "opt" / f"{n}.png")
    cfg = {"sources": [{"root": str(tmp_path / "d"), "layout": "folders", "sar_dir": "s1", "opt_dir": "opt",
                        "sar_band": "VV+VH", "sar_scale": "db", "name": "dual"}], "val": {"groups": ["c"]}}
    splits = build_splits(cfg)
    sar = read_pair(splits["val"][0])[0]
    assert sar.shape == (64, 64, 2)  # co-pol, cross-pol
    preds = ev.fit_baselines(splits["train"], quiet=True)
    report = ev.run_evaluation(splits["val"], preds, tmp_path / "r", samples=1, quiet=True)
    table = report.summary["dual"]
    assert all(table[b]["count"] == 1 for b in BASELINES)
    assert table["hyp3-rgb"]["structure"] > 0.3  # its colours follow the SAR's edges
    assert 0.9 < table["intensity-lookup/src"]["land_cover_colour"] <= 1.0  # the truth is a function of the grey
