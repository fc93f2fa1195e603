"""QGIS plugin entry point: QGIS calls classFactory(iface) (qgis_process passes no interface)."""


def classFactory(iface):  # the name QGIS looks for
    from .plugin import SarcolorPlugin

    return SarcolorPlugin(iface)
