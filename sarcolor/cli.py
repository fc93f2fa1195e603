"""The one command line: ``sarcolor colorize | train | evaluate | export | serve``.

Every subcommand's options are declared here, in one place; the work is done by plain functions in the
modules named after each job. User errors become one line on stderr and a non-zero exit, never a traceback
(set SARCOLOR_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import version
from .errors import SarColorError, require_torch
from .lightlooks import LOOKS
from .preprocess import SCALES
from .raster import parse_bands

log = logging.getLogger("sarcolor")


DEVICES = ("auto", "cpu", "cuda")  # --device of colorize, train and evaluate
Subparsers = Any  # what ArgumentParser.add_subparsers returns (a private argparse class)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sarcolor", description="Deep-learning colorization of SAR imagery.")
    p.add_argument("--version", action="version", version=f"sarcolor {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_colorize, _add_train, _add_evaluate, _add_export, _add_serve):
        add(sub)
    return p


def _add_colorize(sub: Subparsers) -> None:
    c = sub.add_parser("colorize", help="colorize SAR images and folders of them, here or on a Dask cluster")
    c.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="SAR image(s) (PNG, JPEG, TIFF, GeoTIFF) or folder(s) of them")
    c.add_argument("-o", "--output", required=True,
                   help="output file (.tif/.tiff -> GeoTIFF, .png/.jpg -> 8-bit RGB), or a folder")
    c.add_argument("--model", default="default",
                   help="a shipped model (default = contextnet; colournet, sarcolornet) or a .safetensors file "
                        "(default: default)")
    c.add_argument("--look", default="sar", choices=LOOKS,
                   help="sar: lightness from the SAR, colour from the model; optical: the full optical-like "
                        "prediction (default: sar)")
    c.add_argument("--scale", default="auto", choices=SCALES,
                   help="how the SAR values are scaled (default: auto; 8-bit files are read as linear display "
                        "products unless --scale db says they hold dB, as SEN1-2's do)")
    c.add_argument("--render", metavar="NAME",
                   help="whose optical colour balance to give (default: the model's; the shipped model's is s2-l2a, "
                        "Sentinel-2 L2A natural colour; also s2-l1c-p99, sih-display, sen12, 3mos)")
    c.add_argument("--bands", help="1-based band(s) to use: one band, or two as VV,VH (needed for >3 bands)")
    c.add_argument("--nodata", type=float, help="also treat this value as no-data (default: the file's own)")
    c.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto: the GPU when PyTorch sees one, else the CPU (default: auto)")
    c.add_argument("--format", dest="out_ext", default=".tif", choices=(".tif", ".png", ".jpg"),
                   help="output format when -o is a folder (default: .tif)")
    c.add_argument("--tta", action="store_true", help="average over flips (4x slower, slightly smoother)")
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info messages")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="a folder run's info lines for each file (default: one progress bar; errors always show)")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="ADDRESS",
                       help="run on this Dask scheduler (e.g. tcp://host:8786); resumable; needs sarcolor[cluster]")
    where.add_argument("--workers", type=int, metavar="N",
                       help="run on a local Dask cluster of N single-threaded worker processes")


def _add_train(sub: Subparsers) -> None:
    t = sub.add_parser("train", help="train or fine-tune a model on SAR/optical pairs")
    t.add_argument("--config", required=True, help="YAML or TOML training config")
    t.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. steps=500 data.root=...)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run folder")
    t.add_argument("--init", help="start from a model: 'default' or a checkpoint / .safetensors path")
    t.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto: the GPU when PyTorch sees one (under torchrun: one GPU per process)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar; warnings and errors only")


def _add_evaluate(sub: Subparsers) -> None:
    e = sub.add_parser("evaluate", help="score models and baselines on SAR/optical pairs")
    e.add_argument("--config", help="training config whose data and split to use")
    e.add_argument("--data", help="dataset folder (instead of --config)")
    e.add_argument("--split", help="split to score: val, test, all, or a split file FILE[:PART] "
                                   "(default: val with --config, all with --data)")
    e.add_argument("--models", nargs="+", default=["default"], help="shipped names, .safetensors or checkpoints")
    e.add_argument("--looks", default="sar,optical",
                   help="looks to score each model in, comma-separated (default: sar,optical)")
    e.add_argument("--no-baselines", action="store_true",
                   help="skip the SAR-grey, mean-colour and intensity-lookup baselines")
    e.add_argument("-o", "--out", required=True, help="report folder")
    e.add_argument("--samples", default="6",
                   help="contact-sheet rows: a number of random pairs, or comma-separated names (default: 6)")
    e.add_argument("--heatmap", action="store_true", help="also write per-pixel error heatmaps")
    e.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto: the GPU when PyTorch sees one, else the CPU (default: auto)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bars; warnings and errors only")


def _add_export(sub: Subparsers) -> None:
    x = sub.add_parser("export", help="write the inference-only model (EMA weights + config + card)")
    x.add_argument("checkpoint", help="training checkpoint folder or file, or a model file whose card to replace")
    x.add_argument("-o", "--output", required=True, help="output .safetensors")
    x.add_argument("--tile", type=int, help="inference tile size (px) to store in the model (default: the run's)")
    x.add_argument("--card", help="a short Markdown model card to embed, under 4 KB (default: a generated summary "
                                  "of the run)")


def _add_serve(sub: Subparsers) -> None:
    s = sub.add_parser("serve", help="start the web page and HTTP API (needs the [serve] extra)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000, help="TCP port")
    s.add_argument("--model", default="default", help="shipped model name or .safetensors file")
    s.add_argument("--max-upload-mb", type=float, default=200.0, help="largest accepted upload, in MB")
    s.add_argument("--max-pixels", type=float, default=400e6, help="largest accepted image, in pixels")
    s.add_argument("--workers", type=int, default=1, help="concurrent colorize jobs")
    s.add_argument("--ttl", type=float, default=3600.0, help="seconds before uploads and results are deleted")
    s.add_argument("--max-storage-mb", type=float, default=2048.0,
                   help="cap on all kept uploads and results together; the oldest results are deleted first")
    s.add_argument("--allowed-hosts", metavar="NAMES",
                   help="Host names to answer besides loopback ones and --host, comma-separated, e.g. the server's "
                        "name when served to a team ('*': any; default: none)")
    s.add_argument("--job-timeout", type=float, default=600.0,
                   help="seconds one image may take; a longer job is stopped and answered 413 (default: 600)")


def _require_serve_extra() -> None:
    """The server's packages come with the [serve] extra: say so instead of a ModuleNotFoundError."""
    missing = [m for m in ("fastapi", "uvicorn") if not _importable(m)]
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        missing.append("python-multipart")
    if missing:
        raise SarColorError(f"sarcolor serve needs the [serve] extra ({', '.join(missing)} not installed): "
                            "pip install 'sarcolor[serve]'")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed command to the module that does the work; returns the exit code."""
    if args.command == "colorize":
        kw = dict(model=args.model, device=args.device, out_ext=args.out_ext, overwrite=args.overwrite,
                  quiet=args.quiet, scale=args.scale, bands=parse_bands(args.bands), nodata=args.nodata,
                  tta=args.tta, look=args.look, render=args.render)
        if args.cluster is not None or args.workers is not None:
            from .cluster import colorize_on_cluster

            return colorize_on_cluster(args.inputs, args.output, address=args.cluster, workers=args.workers, **kw)
        from .engine import colorize_paths

        return colorize_paths(args.inputs, args.output, verbose=args.verbose, **kw)
    if args.command in ("train", "evaluate", "export"):
        require_torch(f"sarcolor {args.command}")
    if args.command == "train":
        from .train import train_from_cli

        return train_from_cli(args.config, args.overrides, resume=args.resume, init=args.init, quiet=args.quiet,
                              device=args.device)
    if args.command == "evaluate":
        from .evaluate import evaluate_from_cli

        return evaluate_from_cli(args)
    if args.command == "export":
        from .train import export_checkpoint

        export_checkpoint(args.checkpoint, args.output, tile=args.tile, card=args.card)
        return 0
    if args.command == "serve":
        _require_serve_extra()
        from .server import serve

        return serve(args)
    raise SarColorError(f"unknown command {args.command}")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every ``finally`` runs and temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def _stop_on_signals(enabled: bool = True) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP (kill, a closed terminal, a batch system's time limit) into ``Stopped``: their
    default action ends the process at once, leaving half-written temporary outputs behind. The previous
    handlers come back afterwards (main() also runs inside other programs, such as the tests)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    signums = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {n: signal.signal(n, _raise_stopped) for n in signums}
    try:
        yield
    finally:
        for n, handler in old.items():
            signal.signal(n, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="sarcolor: %(message)s")
    # GDAL's own error for a bad file would be a second line; sarcolor reports it in its one-line error.
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)
    try:
        with _stop_on_signals(args.command != "serve"):  # the server (uvicorn) handles its own signals
            return run(args)
    except SarColorError as exc:
        print(f"sarcolor: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Stopped as exc:
        print(f"sarcolor: stopped by {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("sarcolor: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: still one line, unless debugging
        if os.environ.get("SARCOLOR_DEBUG"):
            raise
        print(f"sarcolor: error: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
