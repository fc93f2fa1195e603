"""A model file's config, checked before anything is built from it (no torch: every runtime calls this).

A model file is data from anywhere: its config decides tile sizes, window sizes and layer widths, so a hostile
or broken one could ask for gigabytes (``windows`` of 10^7 blocks, a tile of 10^9 px) or quietly shift colours
(a tile of 0). ``check_model_config`` takes the parsed JSON and returns the constructor's keywords, or raises
``ValueError`` with one line naming the field, its value and what is allowed. Fields it does not know are
ignored (a newer sarcolor's additions); every field it knows must have exactly its type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TILE_RANGE = (64, 4096)  # px: below, a tile is mostly its blended edge; above, one tile alone takes gigabytes
DEFAULT_TILE, DEFAULT_OVERLAP = 1024, 128  # px: ModelConfig's defaults (the shipped model's), one place
# contextnet's context: at most 16 square windows, each odd and at most 255 of its 4 x 4 px blocks (10 km at
# 10 m pixels; the shipped model's widest is 63). 10^7 blocks asked for 9.6 GB.
MAX_WINDOWS, MAX_WINDOW = 16, 255


def _int(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if type(v) is not int or not lo <= v <= hi:
            return f"must be an integer in {lo}..{hi}"
        return None
    return check


def _number(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if type(v) not in (int, float) or not lo <= v <= hi:
            return f"must be a number in {lo:g}..{hi:g}"
        return None
    return check


def _text(choices: tuple[str, ...] | None = None, longest: int = 200) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if type(v) is not str or len(v) > longest:
            return f"must be a string of at most {longest} characters"
        if choices is not None and v not in choices:
            return f"must be one of {', '.join(choices)}"
        return None
    return check


def _ints(lo: int, hi: int, most: int, least: int = 0) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if (type(v) is not list or not least <= len(v) <= most
                or any(type(x) is not int or not lo <= x <= hi for x in v)):
            return f"must be a list of {least}..{most} integers in {lo}..{hi}"
        return None
    return check


def _names(v: Any) -> str | None:
    if type(v) is not list or len(v) > 64 or any(type(x) is not str or not 0 < len(x) <= 64 for x in v):
        return "must be a list of at most 64 names"
    return None


def _dict(v: Any) -> str | None:
    return None if type(v) is dict else "must be an object"


# One rule per ModelConfig field (tests check that the two name the same fields).
FIELDS: dict[str, Callable[[Any], str | None]] = {
    "arch": _text(longest=64),  # which ones exist is the runtime's to say
    "in_channels": _int(1, 5),  # 5: a polarimetric contextnet (preprocess.POLARIMETRIC_CHANNELS)
    # the largest network these allow (sarcolornet, width 64, 4 levels of 8 blocks, expand 4) has 24 M weights:
    # a hostile file is refused within 2 s and 500 MB (width 128 built 96 M weights, 630 MB, before refusal)
    "width": _int(1, 64),
    "enc_depths": _ints(0, 8, most=4),
    "expand": _int(1, 4),
    "norm": _text(("layer", "batch", "none")),
    "input_norm": _text(("logpct", "seed")),
    "polarisation": _text(("VV", "VH", "HH", "HV", "vv", "vh", "hh", "hv", "VV+VH")),  # VV+VH: both, where given
    "tile": _int(*TILE_RANGE),
    "overlap": _int(0, TILE_RANGE[1] // 2),
    "name": _text(),
    "extra": _dict,
    "renders": _names,
    "render": _text(longest=64),
    "temperature": _number(1e-3, 100.0),
    "windows": _ints(1, MAX_WINDOW, most=MAX_WINDOWS, least=1),
}
_TUPLES = ("enc_depths", "renders", "windows")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def check_model_config(raw: Any) -> dict[str, Any]:
    """The parsed config JSON -> ModelConfig keywords; ``ValueError`` (one line) for anything out of bounds."""
    if type(raw) is not dict:
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    out = {k: v for k, v in raw.items() if k in FIELDS}
    out.setdefault("norm", "batch")  # written before the option existed: those models used BatchNorm
    for key, value in out.items():
        why = FIELDS[key](value)
        if why:
            raise ValueError(f"{key} {_show(value)}: {why}")
    tile, overlap = out.get("tile", DEFAULT_TILE), out.get("overlap", DEFAULT_OVERLAP)
    if overlap > tile // 2:
        raise ValueError(f"overlap {overlap}: must be at most half the tile ({tile // 2})")
    even = [w for w in out.get("windows", ()) if w % 2 == 0]
    if even:
        raise ValueError(f"windows {even[0]}: must be odd (a window centred on its block)")
    renders = out.get("renders", [])
    if out.get("render") and out["render"] not in renders:
        raise ValueError(f"render {_show(out['render'])}: not one of the renders ({', '.join(renders) or 'none'})")
    return {k: tuple(v) if k in _TUPLES else v for k, v in out.items()}


def check_tile_multiple(tile: int, multiple: int) -> None:
    """A network that works on blocks of ``multiple`` px needs tiles made of whole blocks."""
    if tile % multiple:
        raise ValueError(f"tile {tile}: must be a multiple of {multiple} for this network")


# --------------------------------------------------------------------------------------------------
# the run manifest of a cluster run (OUTDIR/sarcolor-run.json): read back on every resume
# --------------------------------------------------------------------------------------------------
def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


_BIG = 2**63 - 1
_STR = _text(longest=4096)
SCENE_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "status": _text(("pending", "done", "failed", "existing")),
    "input": _STR, "input_size": _optional(_int(0, _BIG)), "input_mtime_ns": _optional(_int(-_BIG, _BIG)),
    "output_size": _int(0, _BIG), "output_mtime_ns": _int(-_BIG, _BIG),
    "replaces": _ints(-_BIG, _BIG, most=2, least=2),
    "width": _int(0, _BIG), "height": _int(0, _BIG), "seconds": _number(0, 1e12),
    "worker": _STR, "pid": _int(0, _BIG), "threads": _int(0, 1 << 20), "model_loads": _int(0, _BIG),
    "finished": _STR, "error": _STR, "note": _STR,
}


def _scalars(v: Any) -> str | None:
    ok = type(v) is dict and all(x is None or type(x) in (str, int, float, bool)
                                 or (type(x) is list and all(type(y) in (str, int, float) for y in x))
                                 for x in v.values())
    return None if ok else "must be an object of plain values"


def check_manifest(doc: Any) -> tuple[dict[str, str], dict[str, Any], dict[str, dict[str, Any]]]:
    """A parsed manifest -> (model, settings, scenes); ``ValueError`` (one line) naming the first bad field.
    Fields it does not know are kept as they are (a newer sarcolor's additions)."""
    if type(doc) is not dict:
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    missing = [k for k in ("model", "settings", "scenes") if k not in doc]
    if missing:
        raise ValueError(f"no {missing[0]!r} field")
    model, settings, scenes = doc["model"], doc["settings"], doc["scenes"]
    if type(model) is not dict or any(type(v) is not str for v in model.values()):
        raise ValueError("model: must be an object of strings")
    if _scalars(settings):
        raise ValueError(f"settings: {_scalars(settings)}")
    if type(scenes) is not dict:
        raise ValueError(f"scenes: must be an object, got {type(scenes).__name__}")
    for key, rec in scenes.items():
        if type(rec) is not dict:
            raise ValueError(f"scene {_show(key)}: must be an object, got {type(rec).__name__}")
        if "status" not in rec:
            raise ValueError(f"scene {_show(key)}: no status")
        for name, value in rec.items():
            why = SCENE_FIELDS[name](value) if name in SCENE_FIELDS else None
            if why:
                raise ValueError(f"scene {_show(key)}: {name} {_show(value)}: {why}")
    return model, settings, dict(scenes)
