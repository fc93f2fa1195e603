"""The QGIS plugin (qgis_plugin/sarcolor_qgis): its runner anywhere, and the algorithm in a real QGIS.

The QGIS tests run Debian's QGIS headless (``qgis_process.bin``, and QGIS's own Python for a cancel from the
feedback object) with the plugin installed from the zip into a private profile; they skip where QGIS is absent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SHARED_DATA
from fixtures import sar_db, write_geotiff

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "qgis_plugin").is_dir():
    pytest.skip("the QGIS plugin's source (qgis_plugin/) is not here", allow_module_level=True)
sys.path.insert(0, str(ROOT / "qgis_plugin"))
from build_zip import build  # noqa: E402
from sarcolor_qgis import runner  # noqa: E402  (plain Python: no QGIS import)

QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")  # not /usr/bin/qgis_process: it adds --noversioncheck
QGIS_PYTHON = Path("/usr/bin/python3")  # the Python QGIS embeds (Debian's python3-qgis)
SPAIN = SHARED_DATA / "sen1floods11" / "Spain_7370579_S1Hand.tif"


# ------------------------------------------------------------------------------------------------
# the runner (no QGIS needed)
# ------------------------------------------------------------------------------------------------
def _fake(tmp_path: Path, body: str) -> str:
    """An executable that runs ``body`` as Python: stands in for a sarcolor installation."""
    exe = tmp_path / "fake-sarcolor"
    exe.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    exe.chmod(0o755)
    return str(exe)


def test_colorize_args_map_the_parameters() -> None:
    args = runner.colorize_args("sarcolor", "in.tif", "out.tif", band=" 1, 2", scale="db", model="")
    assert args == ["sarcolor", "colorize", "in.tif", "-o", "out.tif", "--scale", "db", "--model", "default",
                    "--overwrite", "--bands", "1,2"]
    assert runner.colorize_args("s", "a.tif", "b.png", look="optical", model="m.safetensors")[-2:] == [
        "--look", "optical"]
    assert runner.colorize_args("s", "a.tif", "b.png", render=" sih-display ")[-2:] == ["--render", "sih-display"]
    assert "--render" not in runner.colorize_args("s", "a.tif", "b.png", render="")
    with pytest.raises(runner.RunError, match=r"b\.vrt: sarcolor writes GeoTIFF"):
        runner.colorize_args("s", "a.tif", "b.vrt")
    with pytest.raises(runner.RunError, match="unknown scale 'dB'"):
        runner.colorize_args("s", "a.tif", "b.tif", scale="dB")


def test_find_command_setting_then_env_then_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(runner.ENV_COMMAND, "/opt/env/bin/sarcolor")
    assert runner.find_command("/my/sarcolor") == "/my/sarcolor"
    assert runner.find_command("") == "/opt/env/bin/sarcolor"
    monkeypatch.delenv(runner.ENV_COMMAND)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(runner.RunError, match="sarcolor command was not found on PATH: install sarcolor"):
        runner.find_command("")


def test_run_reports_progress_and_messages(tmp_path: Path) -> None:
    exe = _fake(tmp_path, r"""
        import sys
        sys.stderr.write("sarcolor: scale auto -> db\nsome library's warning\n")
        for i in range(5):
            sys.stderr.write(f"\rscene.tif:  {i * 25}%|##  | {i}/4 [00:01<00:02, 2.0tile/s]")
        sys.stderr.write("\r\nsarcolor: scene.tif -> out.tif\n")
    """)
    progress: list[float] = []
    messages: list[str] = []
    debug: list[str] = []
    runner.run([exe], progress=progress.append, message=messages.append, debug=debug.append)
    assert progress == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert messages == ["sarcolor: scale auto -> db", "sarcolor: scene.tif -> out.tif"]
    assert debug == ["some library's warning"]


def test_run_ends_at_100_percent_when_sarcolor_drew_no_bar(tmp_path: Path) -> None:
    """A scene done before sarcolor's progress bar appears (one small tile) still ends the algorithm at 100%."""
    exe = _fake(tmp_path, r"""
        import sys
        sys.stderr.write("sarcolor: scene.tif -> out.tif (512x512, 1 tiles, 0.1 s)\n")
    """)
    progress: list[float] = []
    runner.run([exe], progress=progress.append)
    assert progress == [100.0]


def test_run_child_does_not_inherit_qgis_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHOME", "/usr/share/qgis-python")
    monkeypatch.setenv("PYTHONPATH", "/usr/share/qgis/python")
    exe = _fake(tmp_path, """
        import os, sys
        sys.exit(3 if {"PYTHONHOME", "PYTHONPATH"} & set(os.environ) else 0)
    """)
    runner.run([exe])


@pytest.mark.parametrize(("body", "match"), [
    ("import sys; print('sarcolor: error: scene.tif: all pixels are nodata', file=sys.stderr); sys.exit(2)",
     r"^sarcolor: scene\.tif: all pixels are nodata$"),
    ("import torch_not_installed_here", r"failed \(exit 1\): ModuleNotFoundError: No module named "
                                        r"'torch_not_installed_here'; is that installation complete\?$"),
    ("import sys; print('usage: ...\\nsarcolor colorize: error: unrecognized arguments: --look optical', "
     "file=sys.stderr); sys.exit(2)", r"^sarcolor: unrecognized arguments: --look optical \(is the sarcolor"),
])
def test_run_failure_is_one_line(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(runner.RunError, match=match) as err:
        runner.run([_fake(tmp_path, body)])
    assert "\n" not in str(err.value)


def test_run_missing_or_broken_executable(tmp_path: Path) -> None:
    with pytest.raises(runner.RunError, match=r"sarcolor executable '/nonexistent/sarcolor' not found: install"):
        runner.run(["/nonexistent/sarcolor", "colorize"])
    not_exec = tmp_path / "sarcolor"
    not_exec.write_text("")
    with pytest.raises(runner.RunError, match="is not executable: install sarcolor"):
        runner.run([str(not_exec)])
    with pytest.raises(runner.RunError, match="not found"):
        runner.version("/nonexistent/sarcolor")


def test_run_cancel_stops_the_child(tmp_path: Path) -> None:
    flag = tmp_path / "stopped"
    exe = _fake(tmp_path, f"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: (open({str(flag)!r}, "w").close(), sys.exit(130)))
        print("sarcolor: started", flush=True)
        time.sleep(60)
    """)
    started: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(runner.Cancelled, match="cancelled: sarcolor was stopped and wrote no output"):
        runner.run([exe], message=started.append, cancelled=lambda: bool(started))
    assert time.monotonic() - t0 < 20 and flag.exists()  # SIGTERM, not a 60 s wait or a SIGKILL


def test_build_zip_has_the_layout_qgis_installs(tmp_path: Path) -> None:
    names = zipfile.ZipFile(build(tmp_path / "p.zip")).namelist()
    assert {"sarcolor_qgis/__init__.py", "sarcolor_qgis/metadata.txt", "sarcolor_qgis/algorithm.py",
            "sarcolor_qgis/provider.py", "sarcolor_qgis/runner.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    meta = zipfile.ZipFile(tmp_path / "p.zip").read("sarcolor_qgis/metadata.txt").decode()
    assert "hasProcessingProvider=yes" in meta and "qgisMinimumVersion=3.22" in meta


# ------------------------------------------------------------------------------------------------
# in a real QGIS
# ------------------------------------------------------------------------------------------------
class Qgis:
    """A private QGIS profile with the plugin installed from its zip, and sarcolor = this checkout."""

    def __init__(self, root: Path, executable_setting: str | None = None) -> None:
        plugins = root / "plugins"
        zipfile.ZipFile(build(root / "sarcolor_qgis.zip")).extractall(plugins)
        runtime = root / "xdg"
        runtime.mkdir(mode=0o700)
        # The sarcolor "installation" QGIS is pointed to: this interpreter running this checkout's code.
        self.sarcolor = root / "sarcolor"
        self.sarcolor.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m sarcolor "$@"\n')
        self.sarcolor.chmod(0o755)
        self.env = {
            **os.environ, "HOME": str(root / "home"), "XDG_RUNTIME_DIR": str(runtime),
            "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(plugins),
            runner.ENV_COMMAND: str(self.sarcolor),
            # System dirs first: QGIS's embedded Python must not find another python3 (and its stdlib) first.
            "PATH": "/usr/bin:/bin:" + os.environ.get("PATH", ""),
            "PYTHONPATH": f"/usr/share/qgis/python/plugins:{plugins}",
        }
        out = self.process("plugins", "enable", "sarcolor_qgis")
        assert out.returncode == 0, out.stdout
        if executable_setting is not None:  # Settings > Options > Processing > Providers > sarcolor
            ini = root / "home/.local/share/QGIS/QGIS3/profiles/default/QGIS/QGIS3.ini"
            with ini.open("a") as f:
                f.write(f"\n[Processing]\nConfiguration\\SARCOLOR_EXECUTABLE={executable_setting}\n")

    def process(self, *args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess:
        return subprocess.run([str(QGIS_PROCESS), *args], env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=600, **kw)

    def colorize(self, out: Path, env: dict[str, str] | None = None, **params: str | Path
                 ) -> subprocess.CompletedProcess:
        pairs = [f"{k}={v}" for k, v in {**params, "OUTPUT": out}.items()]
        return self.process("run", "sarcolor:colorize", "--", *pairs, env=env)


@pytest.fixture(scope="module")
def qgis(tmp_path_factory: pytest.TempPathFactory) -> Qgis:
    if not QGIS_PROCESS.exists():
        pytest.skip(f"QGIS is not installed ({QGIS_PROCESS} missing; apt-get install qgis python3-qgis)")
    if not SPAIN.exists():
        pytest.skip(f"real data missing: {SPAIN}")
    return Qgis(tmp_path_factory.mktemp("qgis"))


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4096 x 4096 dB scene (the Sen1Floods11 tile repeated): long enough to cancel mid-run."""
    with rasterio.open(SPAIN) as ds:
        vh = np.nan_to_num(ds.read(2), nan=-20.0)
    return write_geotiff(tmp_path_factory.mktemp("big") / "big.tif", np.tile(vh, (8, 8)))


def _cli(*args: str | Path) -> None:
    run = subprocess.run([sys.executable, "-m", "sarcolor", "colorize", *map(str, args), "-q"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr


def _assert_same_raster(got: Path, want: Path) -> None:
    with rasterio.open(got) as a, rasterio.open(want) as b:
        assert (a.crs, a.transform, a.width, a.height, a.count, a.dtypes, a.nodata) == (
            b.crs, b.transform, b.width, b.height, b.count, b.dtypes, b.nodata)
        assert a.crs is not None and a.count == 3
        np.testing.assert_array_equal(a.read(), b.read())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_qgis_process_output_equals_the_cli(qgis: Qgis, tmp_path: Path) -> None:
    out, ref = tmp_path / "qgis.tif", tmp_path / "cli.tif"
    run = qgis.colorize(out, INPUT=SPAIN)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "100 - done" in run.stdout and "scale auto -> db" in run.stdout  # progress and sarcolor's log
    _cli(SPAIN, "-o", ref)
    _assert_same_raster(out, ref)
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_qgis_process_band_scale_model_and_look(qgis: Qgis, tmp_path: Path) -> None:
    from sarcolor.models import SHIPPED

    looks = ["sar"] + (["optical"] if runner.supports_option(str(qgis.sarcolor), "--look") else [])
    for look in looks:
        out, ref = tmp_path / f"qgis_{look}.tif", tmp_path / f"cli_{look}.tif"
        run = qgis.colorize(out, INPUT=SPAIN, BAND="1", SCALE="db", MODEL=SHIPPED["default"], LOOK=look)
        assert run.returncode == 0, run.stdout + run.stderr
        _cli(SPAIN, "-o", ref, "--bands", "1", "--scale", "db", *(["--look", look] if look != "sar" else []))
        _assert_same_raster(out, ref)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["not a raster", "missing model", "sarcolor not installed", "broken sarcolor"])
def test_qgis_process_errors_are_one_clear_message(qgis: Qgis, tmp_path: Path, case: str) -> None:
    params: dict[str, str | Path] = {"INPUT": SPAIN}
    env: dict[str, str] = {}
    if case == "not a raster":
        params["INPUT"] = tmp_path / "notes.txt"
        params["INPUT"].write_text("not an image\n")
        match = r"notes\.txt: not a raster QGIS can open"
    elif case == "missing model":
        params["MODEL"] = tmp_path / "gone.safetensors"
        match = r"ERROR:\s+sarcolor: \S+gone\.safetensors: model not found"
    elif case == "sarcolor not installed":  # the plugin's setting wins over a working $SARCOLOR_COMMAND
        qgis = Qgis(tmp_path / "profile", executable_setting=str(tmp_path / "no-env" / "bin" / "sarcolor"))
        match = r"ERROR:\s+sarcolor executable '\S+/no-env/bin/sarcolor' not found: install sarcolor"
    else:  # an environment without torch: Python's ImportError becomes one line
        env[runner.ENV_COMMAND] = _fake(tmp_path, "import torch_is_missing_here\n")
        match = r"ERROR:\s+sarcolor at \S+ failed \(exit 1\): ModuleNotFoundError"
    out = tmp_path / "out.tif"
    run = qgis.colorize(out, env=env, **params)
    text = run.stdout + run.stderr
    assert run.returncode != 0
    assert __import__("re").search(match, text), text
    assert "Traceback" not in text and not out.exists() and not [p for p in tmp_path.glob(".*") if p.is_file()]


CANCEL_SCRIPT = """
import json, sys
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
import processing
from sarcolor_qgis.provider import SarcolorProvider
Processing.initialize()
provider = SarcolorProvider()  # kept referenced: the registry does not keep the Python object alive
QgsApplication.processingRegistry().addProvider(provider)
feedback, seen = QgsProcessingFeedback(), []
def on_progress(p):
    seen.append(p)
    if p > 0:
        feedback.cancel()  # what the dialog's Cancel button does
feedback.progressChanged.connect(on_progress)
try:
    processing.run("sarcolor:colorize", {"INPUT": sys.argv[1], "OUTPUT": sys.argv[2]}, feedback=feedback)
    error = None
except QgsProcessingException as exc:
    error = str(exc)
print(json.dumps({"error": error, "progress": seen}))
"""


@pytest.mark.slow
def test_cancel_in_qgis_stops_sarcolor_and_leaves_no_output(qgis: Qgis, big_scene: Path, tmp_path: Path
                                                             ) -> None:
    out = tmp_path / "out.tif"
    run = subprocess.run([str(QGIS_PYTHON), "-c", CANCEL_SCRIPT, str(big_scene), str(out)], env=qgis.env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["error"] == "cancelled: sarcolor was stopped and wrote no output"
    assert 0 < max(result["progress"]) < 100
    assert not out.exists() and _leftovers(tmp_path) == []


def _sarcolor_running_for(out: Path) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes():
                return True
        except OSError:
            pass  # the process ended while we looked
    return False


@pytest.mark.slow
def test_killing_qgis_process_stops_sarcolor_and_leaves_no_output(qgis: Qgis, big_scene: Path, tmp_path: Path
                                                                 ) -> None:
    out = tmp_path / "out.tif"
    proc = subprocess.Popen([str(QGIS_PROCESS), "run", "sarcolor:colorize", "--", f"INPUT={big_scene}",
                             f"OUTPUT={out}"], env=qgis.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not _leftovers(tmp_path):  # sarcolor's temp output appears once it has started writing
            assert proc.poll() is None and time.monotonic() < deadline, "sarcolor never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # QGIS dies without a chance to clean up
        assert proc.wait(60) != 0
        deadline = time.monotonic() + 60
        while _sarcolor_running_for(out):  # sarcolor is told (SIGTERM) that QGIS died, and stops
            assert time.monotonic() < deadline, "sarcolor kept running after QGIS was killed"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# in-process: sarcolor importable in QGIS's own Python (the light install), no second environment
# ------------------------------------------------------------------------------------------------
def test_in_process_only_when_no_executable_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.ENV_COMMAND, raising=False)
    assert runner.use_in_process("")  # this interpreter imports sarcolor
    assert not runner.use_in_process("/opt/env/bin/sarcolor")  # the user's executable wins
    monkeypatch.setenv(runner.ENV_COMMAND, "/opt/env/bin/sarcolor")
    assert not runner.use_in_process("")


def test_run_in_process_equals_the_cli(tmp_path: Path) -> None:
    src = write_geotiff(tmp_path / "in.tif", np.stack([sar_db(90, 130) - 6, sar_db(90, 130)]))
    progress: list[float] = []
    messages: list[str] = []
    runner.run_in_process(str(src), str(tmp_path / "qgis.tif"), look="optical", progress=progress.append,
                          message=messages.append)
    _cli(src, "-o", tmp_path / "cli.tif", "--look", "optical")
    _assert_same_raster(tmp_path / "qgis.tif", tmp_path / "cli.tif")
    assert progress[-1] == 100.0 and any("scale auto -> db" in m for m in messages)
    assert not logging.getLogger("sarcolor").handlers  # its log handler removed again


def test_run_in_process_errors_are_one_line_and_cancel_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.tif").write_text("not an image\n")
    with pytest.raises(runner.RunError, match=r"^sarcolor: \S+notes\.tif: ") as err:
        runner.run_in_process(str(tmp_path / "notes.tif"), str(tmp_path / "out.tif"))
    assert "\n" not in str(err.value)
    src = write_geotiff(tmp_path / "in.tif", sar_db(60, 60)[None])
    with pytest.raises(runner.Cancelled, match="cancelled"):
        runner.run_in_process(str(src), str(tmp_path / "out.tif"), cancelled=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "notes.tif"]


@pytest.fixture(scope="module")
def qgis_python_sarcolor(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PYTHONPATH that makes this checkout's sarcolor importable in QGIS's Python: Debian's numpy and
    python3-rasterio, and the two light dependencies Debian lacks, installed into a folder."""
    if subprocess.run([str(QGIS_PYTHON), "-c", "import rasterio, numpy, yaml, PIL"]).returncode != 0:
        pytest.skip("QGIS's Python lacks rasterio (apt-get install python3-rasterio)")
    deps = tmp_path_factory.mktemp("qgis-python-deps")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(deps), "--no-deps",
                          "--only-binary=:all:", "safetensors", "tqdm"], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    return f"{deps}:{ROOT}"


@pytest.mark.slow
def test_qgis_runs_sarcolor_in_its_own_python(qgis: Qgis, qgis_python_sarcolor: str, tmp_path: Path) -> None:
    env = {**qgis.env, "PYTHONPATH": qgis.env["PYTHONPATH"] + ":" + qgis_python_sarcolor}
    del env[runner.ENV_COMMAND]
    out, ref = tmp_path / "qgis.tif", tmp_path / "cli.tif"
    run = subprocess.run([str(QGIS_PROCESS), "run", "sarcolor:colorize", "--", f"INPUT={SPAIN}", f"OUTPUT={out}"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "running in QGIS's Python" in run.stdout and "100 - done" in run.stdout
    _cli(SPAIN, "-o", ref)
    with rasterio.open(out) as a, rasterio.open(ref) as b:  # another numpy and GDAL: the same colours
        assert (a.crs, a.transform, a.count) == (b.crs, b.transform, b.count)
        assert np.abs(a.read().astype(int) - b.read()).max() <= 1
