"""Hostile model files and run manifests: one line on stderr and exit code 2, fast and in little memory.

A model file's config and a cluster run's manifest are JSON from anywhere; ``sarcolor.config`` checks every
field. Property-based tests (hypothesis) throw arbitrary JSON values at each field: the checks either accept a
value within its bounds or raise ``ValueError``, never anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import BENCH_MODELS
from fixtures import sar_db, write_geotiff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from sarcolor import config
from sarcolor.cli import main
from sarcolor.cluster import MANIFEST, Manifest, _already_there
from sarcolor.config import check_manifest, check_model_config
from sarcolor.errors import SarColorError
from sarcolor.models import ModelConfig, load_model, read_metadata

EXAMPLES = int(os.environ.get("SARCOLOR_HYPOTHESIS_EXAMPLES", "200"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, derandomize="SARCOLOR_HYPOTHESIS_EXAMPLES" not in os.environ,
                 suppress_health_check=[HealthCheck.too_slow])

# What the hostile-user trial tried, and a few more: each must be refused with one line, exit code 2.
BAD_CONFIGS = {
    "windows 10^7": {"windows": [3, 10_000_001]},
    "tile 10^9": {"tile": 10**9},
    "tile 0": {"tile": 0},
    "tile -512": {"tile": -512},
    "tile '512'": {"tile": "512"},
    "tile 512.0": {"tile": 512.0},
    "tile true": {"tile": True},
    "tile not a multiple": {"tile": 130, "overlap": 32},
    "overlap -64": {"overlap": -64},
    "overlap over half the tile": {"tile": 128, "overlap": 65},
    "windows even": {"windows": [3, 8]},
    "windows empty": {"windows": []},
    "width 10^6": {"width": 10**6},
    "temperature NaN": {"temperature": float("nan")},
    "render unknown": {"render": "nope"},
    "renders a string": {"renders": "abc"},
    "extra a list": {"extra": [1]},
}


def _with_config(src: Path, dst: Path, text: str) -> Path:
    save_file(load_file(str(src)), str(dst), metadata={**read_metadata(src), "sarcolor_config": text})
    return dst


def _bad_models(base: Path, folder: Path) -> dict[str, Path]:
    good = json.loads(read_metadata(base)["sarcolor_config"])
    out = {name: _with_config(base, folder / f"bad{i}.safetensors", json.dumps({**good, **change}))
           for i, (name, change) in enumerate(BAD_CONFIGS.items())}
    out["a list instead of an object"] = _with_config(base, folder / "list.safetensors", json.dumps([good]))
    out["nested 100000 deep"] = _with_config(base, folder / "deep.safetensors", "[" * 100_000 + "]" * 100_000)
    out["not JSON"] = _with_config(base, folder / "text.safetensors", "{tile: 512")
    return out


def test_the_model_configs_fields_all_have_a_rule() -> None:
    assert set(config.FIELDS) == {f.name for f in fields(ModelConfig)}


def test_shipped_and_reference_models_pass_their_own_checks() -> None:
    former = [p for p in (BENCH_MODELS / f"{n}.safetensors" for n in ("colournet", "sarcolornet")) if p.is_file()]
    for model in ("default", *former):
        assert load_model(model)[1].tile >= config.TILE_RANGE[0]


def test_bad_model_files_are_one_line_exit_2(two_render_model_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    src = write_geotiff(tmp_path / "in.tif", sar_db(64, 64))
    for what, model in _bad_models(two_render_model_path, tmp_path).items():
        t0 = time.perf_counter()
        rc = main(["colorize", str(src), "-o", str(tmp_path / "o.tif"), "--model", str(model), "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith(f"sarcolor: error: {model}: "), (what, err)
        assert "Error" not in err[0] and time.perf_counter() - t0 < 2, (what, err)
        assert not (tmp_path / "o.tif").exists()


_CHILD = """
import resource, sys, time
from sarcolor.cli import main
worst = 0.0
for model in sys.argv[2:]:
    t0 = time.perf_counter()
    assert main(["colorize", sys.argv[1], "-o", sys.argv[1] + ".out.tif", "--model", model, "-q"]) == 2
    worst = max(worst, time.perf_counter() - t0)
print(worst, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_bad_model_files_take_little_time_and_memory(two_render_model_path: Path, tmp_path: Path) -> None:
    """All of them in one process: the slowest under 2 s, the peak (with torch loaded) under 500 MB."""
    src = write_geotiff(tmp_path / "in.tif", sar_db(256, 256))
    models = [str(p) for p in _bad_models(two_render_model_path, tmp_path).values()]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(src), *models], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    worst, rss_kb = r.stdout.split()
    assert float(worst) < 2 and int(rss_kb) < 500 * 1024, (worst, rss_kb)


def test_special_files_are_refused_and_nothing_is_created(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fifo = tmp_path / "in.tif"
    os.mkfifo(fifo)
    model = tmp_path / "m.safetensors"
    os.mkfifo(model)
    src = write_geotiff(tmp_path / "real.tif", sar_db(64, 64))
    assert main(["colorize", str(fifo), "-o", str(tmp_path / "out.tif"), "-q"]) == 2
    assert capsys.readouterr().err.strip() == f"sarcolor: error: {fifo}: not a regular file or folder"
    assert main(["colorize", str(src), "-o", str(tmp_path / "o.tif"), "--model", str(model), "-q"]) == 2
    assert capsys.readouterr().err.strip().endswith("not a regular file, expected a .safetensors model file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "m.safetensors", "real.tif"]


# ------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------
_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
            | st.text(max_size=8) | st.sampled_from(["VH", "layer", "logpct", "a", "sarcolornet"]))
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=4), kids, max_size=4), max_leaves=12)
_near = st.integers(-2, 5000) | st.lists(st.integers(-2, 300), max_size=5)


@PROPS
@given(st.dictionaries(st.sampled_from(sorted(config.FIELDS)), _json | _near, max_size=8))
def test_any_config_is_accepted_within_bounds_or_refused_with_a_value_error(raw: dict) -> None:
    try:
        kw = check_model_config(raw)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    cfg = ModelConfig(**kw)
    assert config.TILE_RANGE[0] <= cfg.tile <= config.TILE_RANGE[1] and 0 <= cfg.overlap <= cfg.tile // 2
    assert all(type(w) is int and w % 2 == 1 and w <= config.MAX_WINDOW for w in cfg.windows)
    assert ModelConfig.from_json(cfg.to_json()) == cfg  # what is accepted survives a round trip


_record_values = {
    "status": st.sampled_from(["pending", "done", "failed", "existing", "DONE"]),
    "output_size": st.integers(-5, 10**6), "output_mtime_ns": st.integers(0, 10**18),
    "replaces": st.lists(st.integers(0, 10), max_size=3), "input_size": st.none() | st.integers(-1, 10),
}
_records = st.fixed_dictionaries({}, optional={k: v | _json for k, v in _record_values.items()}) | _json


@PROPS
@given(st.dictionaries(st.text(max_size=6), _records, max_size=3), _json)
def test_any_manifest_is_read_or_refused_in_one_line(tmp_path_factory, scenes: dict, settings_: object) -> None:
    folder = tmp_path_factory.mktemp("m")
    path = folder / MANIFEST
    doc = {"format": 1, "model": {"sha256": "0" * 64}, "settings": {}, "scenes": scenes}
    path.write_text(json.dumps(doc))
    try:
        m = Manifest.open(path, {"sha256": "0" * 64}, {}, overwrite=False)
    except SarColorError as exc:
        assert str(exc).startswith(f"{path}: not a readable sarcolor run manifest (") and "\n" not in str(exc)
        return
    for key, rec in m.scenes.items():  # what the resume reads of each record never fails
        _already_there(rec, {"input": "x", "input_size": 1, "input_mtime_ns": 1}, folder / (key or "k"))
    try:
        check_manifest({**doc, "settings": settings_})
    except ValueError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("doc", [
    {"model": {}, "settings": {}, "scenes": {"a.tif": "done"}},
    {"model": {}, "settings": {}, "scenes": {"a.tif": {"status": "done", "output_size": "12"}}},
    {"model": {}, "settings": {}, "scenes": {"a.tif": {"status": "maybe"}}},
    {"model": [], "settings": {}, "scenes": {}},
    [1, 2],
])
def test_bad_manifests_are_one_line_exit_2(tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture,
                                           doc: object) -> None:
    pytest.importorskip("distributed")
    write_geotiff(tmp_path / "in" / "a.tif", sar_db(64, 64))
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps(doc))
    rc = main(["colorize", str(tmp_path / "in"), "-o", str(out), "--workers", "1", "--model", str(tiny_model_path),
               "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a readable sarcolor run manifest" in err[0], err


def test_a_deeply_nested_manifest_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SarColorError, match=r"not a readable sarcolor run manifest \(nested too deeply\)"):
        Manifest.open(path, {"sha256": "0"}, {}, overwrite=False)
