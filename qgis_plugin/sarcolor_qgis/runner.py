"""Run sarcolor for QGIS, with progress, cancel and clear errors: in QGIS's own Python where sarcolor is
importable there (the light install: ``pip install sarcolor``, with Debian's python3-rasterio), else the
``sarcolor colorize`` command of another environment (the executable the user points the plugin to).

No QGIS import here (so it is testable anywhere). The plugin holds no inference code of its own.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

ENV_COMMAND = "SARCOLOR_COMMAND"  # overrides the default `sarcolor` on PATH when the setting is empty
SCALES = ("auto", "db", "linear", "amplitude", "8bit")
LOOKS = ("sar", "optical")
OUTPUT_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
# Set by QGIS for its own Python and GDAL; another environment's Python/rasterio must not inherit them.
HOST_ONLY_VARS = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA",
                  "GDAL_DRIVER_PATH")
STOP_GRACE_S = 20.0  # after SIGTERM sarcolor removes its temp file and exits; then it is killed
HINT = ("install sarcolor (see the README's QGIS section) and set 'sarcolor executable' in "
        "Settings > Options > Processing > Providers > sarcolor")
# tqdm's bar: "name:  45%|####      | 9/20 [00:03<00:04, 2.5tile/s]"
_TQDM = re.compile(r"(\d+)/(\d+) \[")


class RunError(Exception):
    """sarcolor could not be run or failed; the message is one line for the user."""


class Cancelled(RunError):
    """The user cancelled; sarcolor was stopped and wrote no output."""


def find_command(setting: str | None = None) -> str:
    """The sarcolor executable: the plugin setting, else $SARCOLOR_COMMAND, else `sarcolor` on PATH."""
    cmd = (setting or "").strip() or os.environ.get(ENV_COMMAND, "").strip()
    if cmd:
        return os.path.expanduser(cmd)
    found = shutil.which("sarcolor")
    if found is None:
        raise RunError(f"the sarcolor command was not found on PATH: {HINT}")
    return found


def use_in_process(setting: str | None = None) -> bool:
    """Whether to run sarcolor inside QGIS's Python: no executable was chosen (the plugin setting and
    $SARCOLOR_COMMAND are empty) and ``sarcolor`` is importable here."""
    if (setting or "").strip() or os.environ.get(ENV_COMMAND, "").strip():
        return False
    import importlib.util

    try:
        return importlib.util.find_spec("sarcolor.engine") is not None
    except ImportError:  # no sarcolor package at all
        return False


class _LogLines(logging.Handler):
    def __init__(self, message: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.message = message

    def emit(self, record: logging.LogRecord) -> None:
        self.message("sarcolor: " + record.getMessage())


def run_in_process(src: str, dst: str, *, band: str = "", scale: str = "auto", look: str = "sar",
                   model: str = "default", render: str = "", progress: Callable[[float], None] | None = None,
                   message: Callable[[str], None] | None = None, cancelled: Callable[[], bool] = lambda: False
                   ) -> None:
    """Colorize ``src`` into ``dst`` with the sarcolor importable here (its numpy runtime: no PyTorch needed for
    the default model); raise RunError (one line) or Cancelled (no output left)."""
    from sarcolor.engine import colorize_file, get_model
    from sarcolor.errors import SarColorError
    from sarcolor.raster import parse_bands

    colorize_args("sarcolor", src, dst, scale=scale, look=look)  # the same checks as the command's

    def report(done: int, total: int) -> None:
        if cancelled():
            raise Cancelled("cancelled: sarcolor was stopped and wrote no output")
        if progress is not None:
            progress(100.0 * done / max(total, 1))

    log = logging.getLogger("sarcolor")
    handler = _LogLines(message) if message is not None else None
    if handler is not None:
        log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        net, cfg = get_model((model or "").strip() or "default")
        colorize_file(src, dst, net, cfg, scale=scale, bands=parse_bands((band or "").replace(" ", "") or None),
                      look=look, render=(render or "").strip() or None, progress=report)
    except SarColorError as exc:
        raise RunError(f"sarcolor: {exc}") from None
    finally:
        log.setLevel(level)
        if handler is not None:
            log.removeHandler(handler)
    if progress is not None:
        progress(100.0)


def colorize_args(exe: str, src: str, dst: str, *, band: str = "", scale: str = "auto", look: str = "sar",
                  model: str = "default", render: str = "") -> list[str]:
    """The command line for one file; QGIS has already asked before replacing ``dst``, hence --overwrite."""
    if os.path.splitext(dst)[1].lower() not in OUTPUT_EXTS:
        raise RunError(f"{dst}: sarcolor writes GeoTIFF (.tif), PNG or JPEG; choose one of those extensions")
    if scale not in SCALES:
        raise RunError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    if look not in LOOKS:
        raise RunError(f"unknown look {look!r}; use one of {', '.join(LOOKS)}")
    args = [exe, "colorize", src, "-o", dst, "--scale", scale, "--model", (model or "").strip() or "default",
            "--overwrite"]
    band = (band or "").replace(" ", "")
    if band:
        args += ["--bands", band]
    if look != "sar":  # only then: a sarcolor without --look still runs the default look
        args += ["--look", look]
    render = (render or "").strip()
    if render:  # the model checks the name (one line naming those it knows)
        args += ["--render", render]
    return args


def child_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    for name in HOST_ONLY_VARS:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a preexec hook so that if QGIS dies (killed, crashed) sarcolor gets SIGTERM, removes its temp
    file and exits, instead of finishing an output nobody waits for. Looked up before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def supports_option(exe: str, option: str) -> bool:
    """Whether ``sarcolor colorize --help`` lists ``option`` (older installs may lack newer options)."""
    out = _check_output([exe, "colorize", "--help"])
    return re.search(rf"(^|\s){re.escape(option)}\b", out) is not None


def version(exe: str) -> str:
    return _check_output([exe, "--version"]).strip()


def _check_output(args: Sequence[str]) -> str:
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=120, env=child_env())
    except (OSError, subprocess.SubprocessError) as exc:
        raise RunError(_start_error(args[0], exc)) from None
    if run.returncode != 0:
        raise RunError(_failure(args[0], run.returncode, (run.stderr or run.stdout).splitlines()))
    return run.stdout


def _start_error(exe: str, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"sarcolor executable {exe!r} not found: {HINT}"
    if isinstance(exc, PermissionError):
        return f"sarcolor executable {exe!r} is not executable: {HINT}"
    return f"could not run {exe!r} ({exc.__class__.__name__}: {exc}): {HINT}"


def _failure(exe: str, code: int, lines: Sequence[str]) -> str:
    """One line: sarcolor's own error line if it wrote one, else what a broken installation printed last."""
    for line in reversed(lines):
        if line.startswith("sarcolor: error:"):
            return "sarcolor: " + line[len("sarcolor: error:"):].strip()
        if "error: unrecognized arguments" in line or "error: argument" in line:
            return f"sarcolor: {line.split('error:', 1)[1].strip()} (is the sarcolor at {exe!r} up to date?)"
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
    return f"sarcolor at {exe!r} failed (exit {code}): {last}; is that installation complete?"


def _pump(stream: object, out: queue.Queue) -> None:
    """Read the child's output in chunks; tqdm redraws with '\\r', so lines end with '\\r' or '\\n'."""
    buf = ""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        while chunk := os.read(fd, 65536):
            buf += chunk.decode("utf-8", "replace")
            *lines, buf = re.split(r"[\r\n]", buf)
            for line in lines:
                out.put(line)
        if buf:
            out.put(buf)
    finally:
        out.put(None)  # always: the caller waits for it


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: sarcolor aborts its temp file (see sarcolor.cli)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(args: Sequence[str], *, progress: Callable[[float], None] | None = None,
        message: Callable[[str], None] | None = None, debug: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False, poll_s: float = 0.1) -> None:
    """Run sarcolor; report progress in percent, its log lines (``message``) and any other output (``debug``);
    raise RunError or Cancelled."""
    try:
        proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=child_env(),
                                preexec_fn=_die_with_parent())
    except (OSError, subprocess.SubprocessError) as exc:
        raise RunError(_start_error(args[0], exc)) from None
    shown: list[float] = []  # the progress reported so far

    def tell(pct: float) -> None:
        shown.append(pct)
        if progress is not None:
            progress(pct)

    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while True:
            stopped = cancelled() and proc.poll() is None
            if stopped:
                _stop(proc)
            eof = _drain(lines, seen, tell, message, debug, poll_s)
            if stopped:
                raise Cancelled("cancelled: sarcolor was stopped and wrote no output")
            if eof:
                break
    finally:
        if proc.poll() is None:
            _stop(proc)
        proc.stdout.close()  # type: ignore[union-attr]
    code = proc.wait()
    if code != 0:
        raise RunError(_failure(args[0], code, seen))
    if not shown or shown[-1] < 100.0:
        tell(100.0)  # done, also when the scene was too quick for sarcolor to draw its bar


def _drain(lines: queue.Queue, seen: list[str], progress: Callable[[float], None] | None,
           message: Callable[[str], None] | None, debug: Callable[[str], None] | None, poll_s: float) -> bool:
    """Hand queued output to the callbacks (in the caller's thread); True at the end of the output."""
    try:
        line = lines.get(timeout=poll_s)
    except queue.Empty:
        return False
    while True:
        if line is None:
            return True
        bar = _TQDM.search(line)
        if bar and int(bar.group(2)) > 0:
            if progress is not None:
                progress(100.0 * int(bar.group(1)) / int(bar.group(2)))
        elif line.strip():
            seen.append(line)
            if line.startswith("sarcolor: error:"):
                pass  # raised as the one-line error
            elif line.startswith("sarcolor: "):
                if message is not None:
                    message(line)
            elif debug is not None:  # e.g. the traceback of a broken installation: not for the user's log
                debug(line)
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return False
