"""Every file sarcolor writes appears whole or not at all: one temporary naming, one publish step.

A file is written to a hidden temporary name beside its destination (``.NAME.<pid>-<8 hex>.<tag>.tmp``: same
folder, so the final rename is atomic on the same filesystem), flushed to disk, checked by a ``verify``
function (re-reading what was written: GDAL and libpng can fail while closing a file without raising, and a
full disk then leaves a truncated file behind an exit code 0) and only then renamed into place. Any failure
removes the temporary file and raises ``WriteFailed``: one line, and nothing at the destination.

Temporary files of a process killed outright (SIGKILL, power loss) are swept by the next writer into that
folder (``remove_stale_temps``). Ctrl-C and SIGTERM (turned into an exception by the CLI) unwind through the
cleanup, which holds further stop signals back until it is done (``signals_held``).

No torch, no GDAL: the light inference path, the server and training all use it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import WriteFailed

log = logging.getLogger("sarcolor")

# temp_name's names (output name, writer's pid), and the side files GDAL may add to them
TEMP_RE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.[a-z]+\.tmp(\.ovr\.tmp|\.aux\.xml)?")
_SIDE_FILES = (".ovr.tmp", ".aux.xml")
_swept: set[Path] = set()


def temp_name(dst: Path, tag: str) -> Path:
    """A hidden, unique temporary name beside ``dst`` (``tag``: lowercase letters, what the file is)."""
    return dst.with_name(f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}.{tag}.tmp")


def remove_temp(tmp: Path) -> None:
    """Delete a temporary file and the side files GDAL may have made for it (overviews, PAM)."""
    for p in (tmp, *(tmp.with_name(tmp.name + s) for s in _SIDE_FILES)):
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed run (SIGKILL, power loss) left in ``folder``: those whose
    process is no longer running on this machine. Once per folder per process; returns what was removed."""
    folder = folder.resolve()
    if folder in _swept:
        return []
    if len(_swept) > 10_000:  # a long-running server writes into many job folders
        _swept.clear()
    _swept.add(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        m = TEMP_RE.fullmatch(e.name)
        if m and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
            except OSError:
                continue
            removed.append(Path(e.path))
    if removed:
        log.warning("%s: removed %d temporary file(s) left by an interrupted run (%s)", folder, len(removed),
                    ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else ""))
    return removed


def remove_temps_of(outputs: Iterable[Path]) -> int:
    """Delete temporary files that killed writers of ``outputs`` left behind (a process killed with SIGKILL
    cannot clean up); returns how many. Only for when no writer of these outputs can still be running."""
    names: dict[Path, set[str]] = {}
    for dst in outputs:
        names.setdefault(dst.parent, set()).add(dst.name)
    removed = 0
    for folder, wanted in names.items():
        try:
            entries = [e.name for e in os.scandir(folder)]
        except OSError:
            continue
        for name in entries:
            m = TEMP_RE.fullmatch(name)
            if m and m["name"] in wanted:
                (folder / name).unlink(missing_ok=True)
                removed += 1
    return removed


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM/SIGINT/SIGHUP back until the block is done, then deliver them. (Handlers, not a signal mask:
    a mask holds only this thread, and the kernel hands a process's signal to any thread that does not block
    it; Python then runs the handler in the main thread anyway.) Main thread only, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    names = [n for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n)]
    old = {getattr(signal, n): signal.signal(getattr(signal, n), lambda signum, _: pending.append(signum))
           for n in names}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in pending:
            signal.raise_signal(signum)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # a network or quota filesystem may report a failed write only here
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # no fsync here (Windows, some FUSE)
            raise
    finally:
        os.close(fd)


def write_failed(dst: Path, exc: BaseException, *temps: Path) -> WriteFailed:
    """The one-line error for an output that could not be written (without the temporary files' names)."""
    if isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror
    else:
        why = (str(exc.__cause__ or exc).splitlines() or [exc.__class__.__name__])[0]
    for t in temps:
        why = why.replace(f"{t}: ", "").replace(f"{t.name}: ", "")
    return WriteFailed(f"{dst}: could not be written ({why}); nothing was left at that path")


@contextlib.contextmanager
def _removed_on_failure(tmp: Path, dst: Path, errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """On any failure inside, ``tmp`` is removed; an OSError, or one of ``errors``, becomes a one-line
    ``WriteFailed`` for ``dst``."""
    try:
        yield
    except (OSError, *errors) as exc:
        with signals_held():
            remove_temp(tmp)
        raise write_failed(dst, exc, tmp) from None
    except BaseException:
        with signals_held():
            remove_temp(tmp)
        raise


def publish(tmp: Path, dst: Path, verify: Callable[[Path], None] | None = None,
            errors: tuple[type[BaseException], ...] = ()) -> Path:
    """Flush ``tmp``, check it with ``verify`` (which raises when the file is incomplete), rename it to ``dst``.

    On any failure ``tmp`` is removed; an OSError, or one of ``errors``, becomes a one-line ``WriteFailed``."""
    with _removed_on_failure(tmp, dst, errors):
        _fsync(tmp)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, dst)
    return dst


def write_atomic(dst: str | Path, write: Callable[[Path], None], *, verify: Callable[[Path], None] | None = None,
                 tag: str = "part", errors: tuple[type[BaseException], ...] = ()) -> Path:
    """``write(tmp)`` to a temporary file beside ``dst``, then ``publish`` it; nothing is left on failure."""
    dst = Path(dst)
    tmp = temp_name(dst, tag)
    with _removed_on_failure(tmp, dst, errors):
        write(tmp)
    return publish(tmp, dst, verify, errors)


def _verify_text(expected: bytes) -> Callable[[Path], None]:
    def verify(tmp: Path) -> None:
        if tmp.read_bytes() != expected:
            raise OSError(0, "the file read back differs from what was written")
    return verify


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write a small file so that readers see the old or the new content, never half of it."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), verify=_verify_text(data), tag="txt")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file (UTF-8) so that readers see the old or the new content, never half of it."""
    return write_bytes_atomic(path, text.encode())
