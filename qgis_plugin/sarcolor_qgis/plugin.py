"""The plugin object: registers the Processing provider (in the QGIS window and in qgis_process)."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import SarcolorProvider


class SarcolorPlugin:
    def __init__(self, iface: object) -> None:
        self.iface = iface
        self.provider: SarcolorProvider | None = None

    def initProcessing(self) -> None:
        self.provider = SarcolorProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
