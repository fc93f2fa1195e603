"""The README's QGIS screenshots: run inside the QGIS window, with the plugin installed and enabled.

    Xvfb :99 -screen 0 1280x800x24 &
    DISPLAY=:99 SHOT_INPUT=../shared/data/sen1floods11/Spain_7370579_S1Hand.tif SHOT_DIR=/tmp/shots \\
        qgis --nologo --noversioncheck --code qgis_plugin/screenshots.py

Loads the SAR layer (VH band, grey), runs sarcolor:colorize into the project, saves the window as
qgis-result.png and the algorithm dialog as qgis-dialog.png in SHOT_DIR, and quits.
"""

import os
import traceback

import processing
from qgis.core import (
    QgsApplication,
    QgsContrastEnhancement,
    QgsProject,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsSingleBandGrayRenderer,
)
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

SRC = os.path.abspath(os.environ["SHOT_INPUT"])
OUT = os.path.abspath(os.environ.get("SHOT_DIR", "."))
state = {}


def _grey(layer, band):
    """Show one SAR band as grey, stretched to mean +- 2 sigma (QGIS would show 2 bands as false colour)."""
    prov = layer.dataProvider()
    st = prov.bandStatistics(band, QgsRasterBandStats.All)
    ce = QgsContrastEnhancement(prov.dataType(band))
    ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    ce.setMinimumValue(st.mean - 2 * st.stdDev)
    ce.setMaximumValue(st.mean + 2 * st.stdDev)
    renderer = QgsSingleBandGrayRenderer(prov, band)
    renderer.setContrastEnhancement(ce)
    layer.setRenderer(renderer)


def _step(fn, then=None, after_ms=3000):
    def run():
        try:
            fn()
        except Exception:
            traceback.print_exc()
        QTimer.singleShot(after_ms, then or (lambda: QgsApplication.exit(0)))
    return run


def colorize():
    iface.mainWindow().move(0, 0)
    iface.mainWindow().resize(1280, 800)
    sar = QgsRasterLayer(SRC, os.path.basename(SRC) + " (SAR)")
    _grey(sar, sar.bandCount())
    QgsProject.instance().addMapLayer(sar)
    state["sar"] = sar
    print(processing.runAndLoadResults("sarcolor:colorize", {"INPUT": sar, "OUTPUT": f"{OUT}/colorized.tif"}))
    iface.mapCanvas().setExtent(sar.extent())
    iface.mapCanvas().refresh()


def result_and_dialog():
    iface.mainWindow().grab().save(f"{OUT}/qgis-result.png")
    dialog = processing.createAlgorithmDialog("sarcolor:colorize", {"INPUT": state["sar"]})
    dialog.resize(900, 600)
    dialog.show()
    state["dialog"] = dialog


def dialog_shot():
    state["dialog"].grab().save(f"{OUT}/qgis-dialog.png")


QTimer.singleShot(8000, _step(colorize, _step(result_and_dialog, _step(dialog_shot)), after_ms=4000))
