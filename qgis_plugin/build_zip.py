"""Build the zip QGIS installs (Plugins > Install from ZIP):

    python qgis_plugin/build_zip.py -o dist/sarcolor_qgis.zip
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "sarcolor_qgis"


def build(out: Path) -> Path:
    """Zip the plugin folder as ``sarcolor_qgis/...`` (the layout QGIS expects), without caches."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in PLUGIN.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix != ".pyc")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, Path(PLUGIN.name) / f.relative_to(PLUGIN))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-o", "--output", type=Path, default=Path("dist/sarcolor_qgis.zip"))
    print(build(p.parse_args().output))
