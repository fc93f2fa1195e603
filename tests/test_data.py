"""Dataset discovery for each layout, reading options, problem reports, leak-free splits, crops and augmentation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datagen
import numpy as np
import pytest
import torch
from PIL import Image

from sarcolor import data as data_module
from sarcolor.data import (
    CropDataset,
    PairRef,
    build_splits,
    detect_layout,
    discover,
    load_config,
    read_pair,
    sen12_group,
    write_split,
)
from sarcolor.errors import SarColorError


def crop_ds(refs: list[PairRef], **kw) -> CropDataset:
    args = {"crop": 16, "input_norm": "logpct", "in_channels": 1, "samples_per_epoch": 32, "seed": 0} | kw
    return CropDataset(refs, **args)


# --------------------------------------------------------------------------------------- folders
def test_folders_png_and_geotiff_pairs(tmp_path: Path) -> None:
    root = datagen.make_folders(tmp_path / "volkov", n=3, geotiff_pair=True)
    assert detect_layout(root) == "folders"
    pairs = discover({"root": str(root)})
    assert [p.name for p in pairs] == ["volkov/000", "volkov/001", "volkov/002", "volkov/geo"]
    assert len({p.group for p in pairs}) == 4  # without a groups file each pair is its own group
    sar, sv, opt, ov, scale = read_pair(pairs[1])
    want = datagen.sar_image(32, 32, seed=1)
    assert scale == "8bit" and sar.dtype == np.float32 and np.array_equal(sar, want)
    assert np.array_equal(opt, datagen.opt_of(want)) and sv.all() and ov.all()
    sar, sv, opt, ov, scale = read_pair(pairs[3])  # float32 dB GeoTIFF SAR + uint8 RGB GeoTIFF optical
    want = datagen.sar_image(32, 32, seed=100)
    assert scale == "auto" and np.allclose(sar, 10 * np.log10(want / 255.0), atol=1e-5)
    assert np.array_equal(opt, datagen.opt_of(want))


def test_folders_named_by_options_with_groups(tmp_path: Path) -> None:
    root = datagen.make_folders(tmp_path / "d", n=4, groups={"000": "T1", "001": "T1", "002": "T2", "003": "T2"})
    (root / "sar").rename(root / "s1")
    (root / "opt").rename(root / "rgb")
    src = {"root": str(root), "layout": "folders", "sar_dir": "s1", "opt_dir": "rgb", "groups_csv": "groups.csv",
           "group_column": "tile"}
    assert [p.group for p in discover(src)] == ["T1", "T1", "T2", "T2"]
    with pytest.raises(SarColorError, match="no column 'region'"):
        discover(src | {"group_column": "region"})
    with pytest.raises(SarColorError, match="unknown option"):
        discover(src | {"sar_folder": "x"})


def test_8bit_db_export_is_read_as_its_db(tmp_path: Path) -> None:
    """sar_db_range [lo, hi] reads an 8-bit dB export (SEN1-2's PNGs: -25..0 dB) as the dB it holds; bad ranges,
    another scale, or a SAR that is not 8-bit are one-line errors."""
    root = datagen.make_folders(tmp_path / "sen12", n=2, geotiff_pair=True)
    src = {"root": str(root), "layout": "folders", "sar_db_range": [-25, 0]}
    pairs = discover(src)
    sar, sv, _, _, scale = read_pair(pairs[1])
    assert scale == "db" and np.allclose(sar, -25 + datagen.sar_image(32, 32, seed=1) * (25 / 255), atol=1e-5)
    for bad, match in (([0, -25], "lo < hi"), ([1], r"give \[lo, hi\]"), ("x", r"give \[lo, hi\]")):
        with pytest.raises(SarColorError, match=match):
            discover(src | {"sar_db_range": bad})
    with pytest.raises(SarColorError, match="sar_scale db or auto"):
        discover(src | {"sar_scale": "linear"})
    with pytest.raises(SarColorError, match="for 8-bit dB exports; this SAR is float32"):
        read_pair(pairs[2])  # the float dB GeoTIFF pair


def test_missing_partner_is_reported(tmp_path: Path) -> None:
    root = datagen.make_folders(tmp_path / "d", n=3)
    (root / "opt" / "001.png").unlink()
    with pytest.raises(SarColorError, match=r"1 SAR image\(s\) in sar/ without an optical partner.*001.png"):
        discover({"root": str(root)})
    (root / "sar" / "001.png").unlink()
    datagen.write_png(root / "opt" / "extra.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SarColorError, match="without a SAR partner.*extra.png"):
        discover({"root": str(root)})


def test_size_mismatch_is_reported(tmp_path: Path) -> None:
    root = datagen.make_folders(tmp_path / "d", n=2)
    datagen.write_png(root / "opt" / "001.png", np.zeros((30, 32, 3), np.uint8))
    pairs = discover({"root": str(root)})
    with pytest.raises(SarColorError, match=r"pair d/001: SAR 001.png is 32x32 but optical 001.png is 32x30"):
        read_pair(pairs[1])
    for preload in (True, False):  # training fails up front, the pair is not skipped, even read per sample
        with pytest.raises(SarColorError, match="32x30.*fix or remove the pair"):
            crop_ds(pairs, preload=preload)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_file_is_reported(tmp_path: Path, damage: str) -> None:
    root = datagen.make_folders(tmp_path / "d", n=2, size=(64, 64))
    path = root / "sar" / "001.png"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a png at all", "truncated": data[: len(data) // 2], "empty": b""}[damage])
    pairs = discover({"root": str(root)})
    with pytest.raises(SarColorError, match=r"001.png: cannot read"):
        read_pair(pairs[1])


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    from PIL import Image

    root = datagen.make_folders(tmp_path / "d", n=1, size=(64, 64))
    img = datagen.opt_of(datagen.sar_image(64, 64, 0))
    (root / "opt" / "000.png").unlink()
    Image.fromarray(img).save(root / "opt" / "000.jpg", quality=90)
    data = (root / "opt" / "000.jpg").read_bytes()
    (root / "opt" / "000.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SarColorError, match="000.jpg: cannot read"):
        read_pair(discover({"root": str(root)})[0])


def test_same_stem_twice_is_reported(tmp_path: Path) -> None:
    root = datagen.make_folders(tmp_path / "d", n=1)
    datagen.write_png(root / "sar" / "000.jpg", np.zeros((32, 32), np.uint8))
    with pytest.raises(SarColorError, match="share the name '000'"):
        discover({"root": str(root)})


# ----------------------------------------------------------------------------------------- sen12
SEN12_NAMES = ["urban/s1/ROIs1970_fall_s1_47_p421.png", "urban/s1/ROIs1970_fall_s1_47_p422.png",
               "agri/s1/ROIs1970_fall_s1_29_p59.png", "barrenland/s1/ROIs1868_summer_s1_71_p628.png"]


def test_sen12_names_are_relative_s1_paths(tmp_path: Path) -> None:
    root = datagen.make_sen12(tmp_path / "kaggle", SEN12_NAMES)
    assert detect_layout(root) == "sen12"
    pairs = {p.name: p for p in discover({"root": str(root)})}
    assert sorted(pairs) == sorted(SEN12_NAMES)
    p = pairs["urban/s1/ROIs1970_fall_s1_47_p421.png"]
    assert p.opt == root / "urban/s2/ROIs1970_fall_s2_47_p421.png"
    assert p.group == "ROIs1970_fall_47" == sen12_group("ROIs1970_fall_s1_47_p421")
    assert pairs["urban/s1/ROIs1970_fall_s1_47_p422.png"].group == p.group  # same scene, same group
    sar, _, opt, _, scale = read_pair(p)
    assert sar.shape == (16, 16) and opt.shape == (16, 16, 3) and scale == "8bit"
    assert np.array_equal(opt, datagen.opt_of(sar.astype(np.uint8)))


def test_sen12_original_folder_layout(tmp_path: Path) -> None:
    """SEN1-2 as distributed: ROIs1970_fall/s1_13/ROIs1970_fall_s1_13_p10.png with .../s2_13/..._s2_13_p10.png."""
    names = ["ROIs1970_fall/s1_13/ROIs1970_fall_s1_13_p10.png", "ROIs1970_fall/s1_13/ROIs1970_fall_s1_13_p11.png"]
    root = tmp_path / "sen12"
    for k, n in enumerate(names):
        sar = datagen.sar_image(16, 16, k)
        datagen.write_png(root / n, sar)
        datagen.write_png(root / n.replace("s1_13", "s2_13"), datagen.opt_of(sar))
    pairs = discover({"root": str(root), "layout": "sen12"})
    assert [p.opt.relative_to(root).as_posix() for p in pairs] == [
        "ROIs1970_fall/s2_13/ROIs1970_fall_s2_13_p10.png", "ROIs1970_fall/s2_13/ROIs1970_fall_s2_13_p11.png"]


def test_sen12_orphans_are_reported(tmp_path: Path) -> None:
    root = datagen.make_sen12(tmp_path / "k", SEN12_NAMES)
    (root / "agri/s2/ROIs1970_fall_s2_29_p59.png").unlink()
    with pytest.raises(SarColorError, match="without an optical .s2. partner.*agri/s1/ROIs1970_fall_s1_29_p59.png"):
        discover({"root": str(root)})
    (root / "agri/s1/ROIs1970_fall_s1_29_p59.png").unlink()
    datagen.write_png(root / "agri/s2/ROIs1970_fall_s2_29_p60.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(SarColorError, match="without a SAR .s1. partner.*ROIs1970_fall_s2_29_p60.png"):
        discover({"root": str(root)})


def test_sen12_split_file_generated(tmp_path: Path) -> None:
    root = datagen.make_sen12(tmp_path / "k", SEN12_NAMES)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"data": {"train": SEN12_NAMES[:2], "val": SEN12_NAMES[2:3],
                                          "test": SEN12_NAMES[3:]}}))
    splits = build_splits({"sources": [{"root": str(root), "layout": "sen12", "split_file": str(split)}]})
    assert {k: [p.name for p in v] for k, v in splits.items()} == {
        "train": SEN12_NAMES[:2], "val": SEN12_NAMES[2:3], "test": SEN12_NAMES[3:]}
    split.write_text(json.dumps({"data": {"train": SEN12_NAMES[:2] + ["urban/s1/ROIs1970_fall_s1_47_p9.png"]}}))
    with pytest.raises(SarColorError, match=r"1 train entries of split.json not found.*p9.png"):
        build_splits({"sources": [{"root": str(root), "split_file": str(split)}]})


def test_sen12_kaggle_split_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The real Kaggle split.json: a tree of tiny images under its names, and the file as split_file."""
    found = datagen.kaggle_names(12)
    if found is None:
        pytest.skip("../shared/data/kaggle_sen12_layout/split.json is absent: cannot test the real Kaggle names")
    names, split_path = found
    root = datagen.make_sen12(tmp_path / "kaggle", names)
    assert sorted(p.name for p in discover({"root": str(root)})) == sorted(names)
    src = {"root": str(root), "layout": "auto", "split_file": str(split_path)}
    with pytest.raises(SarColorError, match="train entries of split.json not found.*allow_missing"):
        build_splits({"sources": [src]})  # 12,788 of its train images are not in this tree
    with caplog.at_level(logging.WARNING, logger="sarcolor"):
        splits = build_splits({"sources": [src | {"allow_missing": True}]})
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 12, "test": 12}
    assert [p.name for p in splits["val"]] == names[12:24]
    assert "not found" in caplog.text
    # The Kaggle lists are a random patch-level split: say so (they share scenes), but honour the user's file.
    shared = {p.group for p in splits["train"]} & {p.group for p in splits["val"]}
    if shared:
        assert "share" in caplog.text and "optimistic" in caplog.text


# ---------------------------------------------------------------------------------------- scenes
def test_scenes_and_strip_split(tmp_path: Path) -> None:
    root = datagen.make_scenes(tmp_path / "sih", {"scene1": (40, 48), "scene2": (50, 36)})
    assert detect_layout(root) == "scenes"
    cfg = {"sources": [{"root": str(root), "layout": "scenes"}], "val": {"scene_strips": {"scene2": 0.3}}}
    splits = build_splits(cfg)
    assert [p.name for p in splits["train"]] == ["sih/scene1", "sih/scene2:top"]
    assert [p.name for p in splits["val"]] == ["sih/scene2:bottom"]
    top, bottom = splits["train"][1].window, splits["val"][0].window
    assert top == (0, 0, 35, 36) and bottom == (35, 0, 15, 36)
    assert top[0] + top[2] <= bottom[0]  # no pixel row in both
    full = read_pair(discover({"root": str(root)})[1])
    halves = [read_pair(r) for r in (splits["train"][1], splits["val"][0])]
    for k in (0, 2):  # the two windows tile the scene exactly
        assert np.array_equal(np.concatenate([h[k] for h in halves]), full[k])
    ds = crop_ds([splits["train"][1]])
    assert all(it[0].shape == (35, 36) for it in ds.items)  # training crops can only come from the top


def test_scene_folder_problems(tmp_path: Path) -> None:
    root = datagen.make_scenes(tmp_path / "sih", {"scene1": (40, 48)})
    (root / "scene1" / "optical.png").unlink()
    with pytest.raises(SarColorError, match="scene1: expected one sar.* and one optical"):
        discover({"root": str(root), "layout": "scenes"})


# --------------------------------------------------------------------------------------- geotiff
def test_geotiff_sen1floods11_and_sen12ms(tmp_path: Path) -> None:
    root = datagen.make_geotiff(tmp_path / "geo")
    assert detect_layout(root) == "geotiff"
    pairs = {p.name: p for p in discover({"root": str(root)})}
    assert sorted(pairs) == ["ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p30.tif", "S1Hand/Spain_7370579_S1Hand.tif"]
    floods = pairs["S1Hand/Spain_7370579_S1Hand.tif"]
    assert floods.opt.name == "Spain_7370579_S2Hand.tif" and floods.group == "Spain"
    assert floods.opt_bands == (4, 3, 2) and floods.opt_scale == "p99"
    ms = pairs["ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p30.tif"]
    assert ms.opt == root / "ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p30.tif" and ms.group == "ROIs1158_spring_1"

    g = datagen.sar_image(24, 24, seed=300)
    db = 10 * np.log10(g / 255.0)
    sar, sv, opt, ov, scale = read_pair(floods)  # 2 bands (VV, VH): VH, band 2, by default
    assert scale == "auto" and np.allclose(sar, db, atol=1e-5) and sv.all()
    assert opt.dtype == np.uint8 and opt.shape == (24, 24, 3)
    for c in range(3):  # p99: each channel stretched so its 99th percentile is white
        assert abs(np.percentile(opt[..., c], 99) - 255) <= 1
    sar_vv, *_ = read_pair(PairRef(**{**floods.__dict__, "sar_band": 1}))
    assert np.allclose(sar_vv, db + 6.0, atol=1e-5)
    vv = discover({"root": str(root), "sar_band": "VV"})[1]
    assert vv.sar_band == "VV"
    assert np.array_equal(read_pair(vv)[0], sar_vv)  # the file's bands are VV, VH by position

    # "fixed": value / opt_max; bands 4,3,2 hold opt_of(sar) x 10 + 1, so opt_max 2550 gives it back
    fixed = discover({"root": str(root), "opt_scale": "fixed", "opt_max": 2550})
    sar, _, opt, _, _ = read_pair(fixed[0])  # SEN12MS: one band of dB
    g2 = datagen.sar_image(24, 24, seed=301)
    assert np.allclose(sar, 10 * np.log10(g2 / 255.0), atol=1e-5)
    assert np.array_equal(opt, datagen.opt_of(g2))
    rgb_other = discover({"root": str(root), "opt_scale": "fixed", "opt_max": 2550, "opt_bands": [2, 3, 4]})
    assert np.array_equal(read_pair(rgb_other[0])[2], datagen.opt_of(g2)[..., ::-1])


def test_geotiff_nodata_and_band_errors(tmp_path: Path) -> None:
    root = datagen.make_geotiff(tmp_path / "geo")
    import rasterio

    with rasterio.open(root / "S1Hand/Spain_7370579_S1Hand.tif", "r+") as ds:
        a = ds.read()
        a[:, 0, 0] = np.nan
        ds.write(a)
    with rasterio.open(root / "S2Hand/Spain_7370579_S2Hand.tif", "r+") as ds:
        a = ds.read()
        a[:, 5, 5] = 0
        ds.write(a)
    floods = discover({"root": str(root)})[1]
    _, sv, _, ov, _ = read_pair(floods)
    assert not sv[0, 0] and sv.sum() == 24 * 24 - 1
    assert not ov[5, 5] and ov.sum() == 24 * 24 - 1
    with pytest.raises(SarColorError, match="band 3 does not exist .the image has 2 band"):
        read_pair(discover({"root": str(root), "sar_band": 3})[1])
    with pytest.raises(SarColorError, match="int16, not 8-bit; set opt_scale"):
        read_pair(discover({"root": str(root), "opt_scale": "8bit"})[1])
    with pytest.raises(SarColorError, match="opt_bands"):
        discover({"root": str(root), "opt_bands": [4, 3]})
    with pytest.raises(SarColorError, match="sar_band 'HH'"):
        discover({"root": str(root), "sar_band": "HH"})
    (root / "S2Hand/Spain_7370579_S2Hand.tif").unlink()
    with pytest.raises(SarColorError, match="without an optical .s2. partner.*Spain_7370579_S1Hand.tif"):
        discover({"root": str(root)})


@pytest.mark.realdata
def test_real_sen1floods11() -> None:
    root = datagen.SHARED / "sen1floods11"
    if not root.is_dir():
        pytest.skip("../shared/data/sen1floods11 is absent")
    (ref,) = discover({"root": str(root)})
    sar, sv, opt, ov, scale = read_pair(ref)
    assert sar.shape == (512, 512) and opt.shape == (512, 512, 3) and scale == "auto"
    assert np.nanmedian(sar[sv]) < 0  # dB backscatter


# ---------------------------------------------------------------------------------------- splits
def test_group_split_has_no_leak_and_is_written(tmp_path: Path) -> None:
    groups = {"000": "T1", "001": "T1", "002": "T2", "003": "T3", "004": "T3"}
    root = datagen.make_folders(tmp_path / "d", n=5, groups=groups)
    src = {"root": str(root), "groups_csv": "groups.csv", "group_column": "tile"}
    splits = build_splits({"sources": [src], "val": {"groups": ["T2"]}, "test": {"groups": ["T3"]}})
    names = {k: [p.name.split("/")[1] for p in v] for k, v in splits.items()}
    assert names == {"train": ["000", "001"], "val": ["002"], "test": ["003", "004"]}
    gr = {k: {p.group for p in v} for k, v in splits.items()}
    assert not gr["train"] & gr["val"] and not gr["train"] & gr["test"] and not gr["val"] & gr["test"]
    write_split(splits, tmp_path / "split.json")
    written = json.loads((tmp_path / "split.json").read_text())
    assert [e["name"] for e in written["val"]] == ["d/002"] and written["val"][0]["group"] == "T2"
    with pytest.raises(SarColorError, match=r"held-out group\(s\) \['T9'\] match no pair"):
        build_splits({"sources": [src], "val": {"groups": ["T9"]}})
    with pytest.raises(SarColorError, match="both data.val and data.test"):
        build_splits({"sources": [src], "val": {"groups": ["T2"]}, "test": {"groups": ["T2"]}})


def test_a_group_spread_over_two_sources_cannot_leak(tmp_path: Path) -> None:
    a = datagen.make_folders(tmp_path / "a", n=1, groups={"000": "T1"})
    b = datagen.make_folders(tmp_path / "b", n=1, groups={"000": "T1"})
    srcs = [{"root": str(r), "groups_csv": "groups.csv", "group_column": "tile"} for r in (a, b)]
    splits = build_splits({"sources": srcs, "val": {"groups": ["T1"]}})
    assert len(splits["val"]) == 2 and not splits["train"]  # the whole tile goes, from both sources


@pytest.mark.realdata
def test_shipped_config_split_is_leak_free() -> None:
    cfg_path = Path(__file__).resolve().parents[1] / "configs" / "sarcolornet.yaml"
    if not (datagen.SHARED / "volkov_s1s2").is_dir() or not (datagen.SHARED / "sih1733").is_dir():
        pytest.skip("../shared/data (volkov_s1s2, sih1733) is absent")
    splits = build_splits(load_config(cfg_path)["data"], cfg_path.parent)
    train_groups = {p.group for p in splits["train"] if p.window is None}
    assert "T11SMT" not in train_groups and {p.group for p in splits["val"]} == {"T11SMT", "scene2"}
    (top,) = [p for p in splits["train"] if p.name.endswith("scene2:top")]
    (bottom,) = [p for p in splits["val"] if p.name.endswith("scene2:bottom")]
    assert top.window[0] + top.window[2] == bottom.window[0]


# ------------------------------------------------------------------------------- crops, augmentation
def _one_pair(tmp_path: Path, size: tuple[int, int] = (40, 44)) -> tuple[list[PairRef], np.ndarray]:
    root = datagen.make_folders(tmp_path / "d", n=1, size=size)
    return discover({"root": str(root)}), datagen.sar_image(*size, seed=0)


def _d4(a: np.ndarray, t: int) -> np.ndarray:
    """The 8 flips/turns, in the order CropDataset draws them (turn k, then optional left-right flip)."""
    out = np.rot90(a, t % 4, axes=(-2, -1))
    return out[..., ::-1] if t >= 4 else out


def _find(sample: np.ndarray, image: np.ndarray) -> int | None:
    """Which D4 transform of which crop of ``image`` the sample is (None: none)."""
    h = sample.shape[-1]
    for t in range(8):
        undo = sample
        if t >= 4:
            undo = undo[..., ::-1]
        undo = np.rot90(undo, -(t % 4), axes=(-2, -1))
        for r in range(image.shape[0] - h + 1):
            for c in range(image.shape[1] - h + 1):
                if np.array_equal(image[r:r + h, c:c + h], undo):
                    return t
    return None


def test_augmentation_is_identical_for_sar_and_optical(tmp_path: Path) -> None:
    refs, g = _one_pair(tmp_path)
    ds = crop_ds(refs, in_channels=3)
    x_full = ds.items[0][0]  # the preprocessed SAR: a per-pixel function of the grey value
    table = np.full(256, np.nan, np.float32)
    table[g.ravel()] = x_full.ravel()
    assert np.array_equal(table[g], x_full.astype(np.float32))  # a function of g indeed
    seen = set()
    for i in range(24):
        x, y, v, r = ds[i]
        assert x.shape == (3, 16, 16) and y.shape == (3, 16, 16) and v.shape == (1, 16, 16)
        assert int(r) == 0  # no renderings: every pair is index 0
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # SAR as equal channels
        rgb = np.rint((y.numpy() + 1) * 127.5).astype(np.int32)
        # Optical is still opt_of(SAR) pixel by pixel: the same crop, turn and flip were applied to both.
        assert np.array_equal(rgb[1], 255 - rgb[0]) and np.array_equal(rgb[2], rgb[0] // 2)
        assert np.array_equal(x[0].numpy(), table[rgb[0]])  # no jitter on the SAR: exact values
        assert v.all()
        t = _find(rgb[0], g.astype(np.int32))
        assert t is not None
        seen.add(t)
    assert len(seen) >= 5  # flips and turns do happen


def test_no_augmentation_means_plain_crops(tmp_path: Path) -> None:
    refs, g = _one_pair(tmp_path)
    ds = crop_ds(refs, augment=False)
    for i in range(6):
        rgb = np.rint((ds[i][1].numpy() + 1) * 127.5).astype(np.int32)
        assert _find(rgb[0], g.astype(np.int32)) == 0


def test_crops_depend_only_on_seed_epoch_index(tmp_path: Path) -> None:
    refs, _ = _one_pair(tmp_path)
    a, b = crop_ds(refs), crop_ds(refs)
    forward = [a[i] for i in range(8)]
    backward = [b[i] for i in reversed(range(8))][::-1]  # another instance, other access order
    for s, t in zip(forward, backward, strict=True):
        assert all(torch.equal(u, w) for u, w in zip(s, t, strict=True))
    a.set_epoch(1)
    assert sum(torch.equal(forward[i][1], a[i][1]) for i in range(8)) <= 1  # a new epoch, new crops
    a.set_epoch(0)
    assert torch.equal(forward[3][1], a[3][1])
    c = crop_ds(refs, seed=1)
    assert sum(torch.equal(forward[i][1], c[i][1]) for i in range(8)) <= 1


def test_pair_smaller_than_the_crop_is_mirrored_out_and_masked(tmp_path: Path) -> None:
    refs, _ = _one_pair(tmp_path, size=(20, 40))
    x, y, v, _ = crop_ds(refs, crop=32)[0]
    assert x.shape[-2:] == y.shape[-2:] == v.shape[-2:] == (32, 32)
    assert 0 < float(v.mean()) <= 20 / 32  # the 20-px side was padded: those pixels are invalid


def _mixed_refs(tmp_path: Path) -> list[PairRef]:
    """PNG pairs, a scene strip (a windowed pair) and GeoTIFF pairs (dB SAR, reflectance optical)."""
    folders = discover({"root": str(datagen.make_folders(tmp_path / "f", n=2, size=(40, 44)))})
    scenes = build_splits({"sources": [{"root": str(datagen.make_scenes(tmp_path / "s", {"scene2": (50, 36)}))}],
                           "val": {"scene_strips": {"scene2": 0.3}}})["train"]
    geo = discover({"root": str(datagen.make_geotiff(tmp_path / "g"))})
    assert scenes[0].window is not None and len(geo) == 2
    return folders + scenes + geo


def test_read_per_sample_gives_the_preloaded_samples(tmp_path: Path) -> None:
    refs = _mixed_refs(tmp_path)
    kept, read = crop_ds(refs, preload=True), crop_ds(refs, preload=False)
    assert read.items is None and len(kept.items) == len(refs)  # nothing held in memory when reading
    assert np.array_equal(kept.weights, read.weights)  # areas from the headers = areas of the arrays
    for epoch in (0, 1):
        kept.set_epoch(epoch)
        read.set_epoch(epoch)
        for i in range(12):
            assert all(torch.equal(a, b) for a, b in zip(kept[i], read[i], strict=True))


def test_preload_auto_decides_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    refs, _ = _one_pair(tmp_path)  # 40 x 44 px: 10,560 bytes as training holds it
    assert crop_ds(refs).items is not None
    monkeypatch.setattr(data_module, "PRELOAD_MAX_BYTES", 10_559)
    with caplog.at_level(logging.INFO, logger="sarcolor"):
        assert crop_ds(refs).items is None
    assert "read at each sample" in caplog.text


def test_read_per_sample_reports_a_bad_pair_when_drawn(tmp_path: Path) -> None:
    root = datagen.make_folders(tmp_path / "d", n=1, size=(40, 44))
    refs = discover({"root": str(root)})
    Image.fromarray(np.zeros((40, 44, 3), np.uint8)).save(refs[0].opt)  # all-black optical: no valid pixel
    ds = crop_ds(refs, preload=False)  # headers are fine: the dataset builds
    with pytest.raises(SarColorError, match="no pixel is valid in both SAR and optical"):
        ds[0]
    with pytest.raises(SarColorError, match="no pixel is valid in both SAR and optical"):
        crop_ds(refs, preload=True)  # preloaded, the same error comes up front


def test_config_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('seed = 3\n[train]\nsteps = 5\n')
    assert load_config(tmp_path / "a.toml") == {"seed": 3, "train": {"steps": 5}}
    (tmp_path / "b.yaml").write_text("seed: [1\n")
    with pytest.raises(SarColorError, match="cannot parse"):
        load_config(tmp_path / "b.yaml")
    with pytest.raises(SarColorError, match="not found"):
        load_config(tmp_path / "missing.yaml")
