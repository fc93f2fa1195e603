"""``sarcolor:colorize``: a SAR raster layer -> an RGB raster, by running ``sarcolor colorize``."""

from __future__ import annotations

import os
import shlex

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from . import runner

HELP = " ".join("""
<p>Colorizes a SAR image with sarcolor: predicts what the optical (RGB) view of the scene looks like. The output
keeps the input's CRS and transform (GeoTIFF); nodata pixels stay nodata.</p>
<p><b>Band(s)</b>: empty for one-band, grey-as-RGB or VV,VH rasters; else one band (e.g. 2) or two as VV,VH
(e.g. 1,2).</p>
<p><b>Scale</b>: how the values are stored; auto decides from the data type and range.</p>
<p><b>Look</b>: sar (the default) or optical: sarcolor's --look option (needs a sarcolor that has it).</p>
<p><b>Colours like</b>: empty for the model's default colour balance (Sentinel-2 L2A natural colour, s2-l2a), or
one of its renderings: s2-l1c-p99 (Sentinel-2 L1C stretched per channel), sih-display (ISRO's sample scenes, India),
sen12 (SEN1-2), 3mos (Google-Earth-like views).</p>
<p><b>Model</b>: empty or 'default' for the shipped model, or a .safetensors file from sarcolor train/export.</p>
<p>Runs the sarcolor command set in Settings &gt; Options &gt; Processing &gt; Providers &gt; sarcolor; when
none is set and sarcolor is installed in QGIS's own Python, runs there (else: sarcolor on PATH).</p>""".split())


class ColorizeAlgorithm(QgsProcessingAlgorithm):
    INPUT, BAND, SCALE, LOOK, RENDER, MODEL, OUTPUT = "INPUT", "BAND", "SCALE", "LOOK", "RENDER", "MODEL", "OUTPUT"

    def name(self) -> str:
        return "colorize"

    def displayName(self) -> str:
        return "Colorize SAR"

    def shortHelpString(self) -> str:
        return HELP

    def createInstance(self) -> ColorizeAlgorithm:
        return ColorizeAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR raster layer"))
        self.addParameter(QgsProcessingParameterString(
            self.BAND, "Band(s): one band, or VV,VH (empty: automatic)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.SCALE, "Scale of the SAR values", options=list(runner.SCALES), defaultValue="auto",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.LOOK, "Look", options=list(runner.LOOKS), defaultValue="sar",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.RENDER, "Colours like (a rendering of the model; empty: its default)", defaultValue="",
            optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model (empty: the shipped default model)", optional=True,
            fileFilter="sarcolor models (*.safetensors)"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Colorized"))

    def checkParameterValues(self, parameters, context):
        # 'default' (the shipped model's name) is not a file, but is a valid MODEL.
        model = parameters.get(self.MODEL)
        if isinstance(model, str) and model.strip() == "default":
            parameters = {**parameters, self.MODEL: None}
        ok, msg = super().checkParameterValues(parameters, context)
        src = parameters.get(self.INPUT)
        if not ok and isinstance(src, str) and os.path.isfile(src) and self.INPUT in msg:
            msg = f"{src}: not a raster QGIS can open (sarcolor needs a SAR image: GeoTIFF, TIFF, PNG or JPEG)"
        return ok, msg

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(f"{layer.name()}: sarcolor reads raster files (GDAL layers), "
                                         f"not {layer.providerType()} layers; save the layer to a GeoTIFF first")
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        look = self.parameterAsEnumString(parameters, self.LOOK, context)
        render = self.parameterAsString(parameters, self.RENDER, context).strip()
        from .provider import executable_setting

        band = self.parameterAsString(parameters, self.BAND, context)
        scale = self.parameterAsEnumString(parameters, self.SCALE, context)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        try:
            if runner.use_in_process(executable_setting()):  # sarcolor in QGIS's own Python: no second process
                feedback.pushInfo("sarcolor: running in QGIS's Python")
                runner.run_in_process(layer.source(), dst, band=band, scale=scale, look=look, model=model,
                                      render=render, progress=feedback.setProgress,
                                      message=feedback.pushConsoleInfo, cancelled=feedback.isCanceled)
                return {self.OUTPUT: dst}
            exe = runner.find_command(executable_setting())
            args = runner.colorize_args(exe, layer.source(), dst, band=band, scale=scale, look=look, model=model,
                                        render=render)
            if look != "sar" and not runner.supports_option(exe, "--look"):
                raise runner.RunError(f"look {look!r} needs a newer sarcolor than {runner.version(exe)!r}; "
                                      "update it or use look 'sar'")
            if render and not runner.supports_option(exe, "--render"):
                raise runner.RunError(f"'Colours like' needs a newer sarcolor than {runner.version(exe)!r}; "
                                      "update it or leave it empty")
            feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in args))
            # Other output (a broken installation's traceback) only when debugging, as in sarcolor itself.
            debug = feedback.pushDebugInfo if os.environ.get("SARCOLOR_DEBUG") else None
            runner.run(args, progress=feedback.setProgress, message=feedback.pushConsoleInfo, debug=debug,
                       cancelled=feedback.isCanceled)
        except runner.RunError as exc:
            raise QgsProcessingException(str(exc)) from None
        return {self.OUTPUT: dst}
