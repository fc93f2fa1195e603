"""The Processing provider ``sarcolor`` and its one setting: the sarcolor executable."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider

from .algorithm import ColorizeAlgorithm

SETTING = "SARCOLOR_EXECUTABLE"

try:  # the Processing plugin's settings page (Settings > Options > Processing > Providers)
    from processing.core.ProcessingConfig import ProcessingConfig, Setting
except ImportError:  # pragma: no cover - Processing disabled: $SARCOLOR_COMMAND or PATH still work
    ProcessingConfig = Setting = None


def executable_setting() -> str:
    """The user's sarcolor executable, '' when unset (then $SARCOLOR_COMMAND or `sarcolor` on PATH)."""
    if ProcessingConfig is None:
        return ""
    return str(ProcessingConfig.getSetting(SETTING) or "")


class SarcolorProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "sarcolor"

    def name(self) -> str:
        return "sarcolor"

    def longName(self) -> str:
        return "sarcolor: deep-learning colorization of SAR imagery"

    def load(self) -> bool:
        if ProcessingConfig is not None:
            ProcessingConfig.addSetting(Setting(
                self.name(), SETTING,
                "sarcolor executable (empty: $SARCOLOR_COMMAND, else `sarcolor` on PATH)", "",
                valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        if ProcessingConfig is not None:
            ProcessingConfig.removeSetting(SETTING)

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(ColorizeAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif", "png", "jpg"]
