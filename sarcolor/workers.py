"""Child processes for the server's jobs: a time budget per job, and memory handed back after big ones.

Each ``Worker`` is one child process that loads the model once (``init``) and then runs jobs sent over a
pipe, one at a time, reporting progress on the same pipe. The parent waits on the pipe *and* the process
sentinel with the job's time budget as timeout, so it learns at once whether the job finished, the process
died (a crash, the OOM killer), or the budget ran out, in which case it kills the process: a job stuck
inside GDAL or PyTorch cannot be interrupted any other way. A worker that ran a large job is replaced
(``recycle``), which is the only reliable way to give its memory back to the system: glibc, GDAL's block
cache and PyTorch keep freed memory for reuse, so a long-lived process stays at its largest job's size.

Why not a stdlib pool: ``ProcessPoolExecutor`` (before Python 3.14) cannot kill the process of one job, and
a worker killed by hand breaks the whole pool; ``multiprocessing.Pool`` never reports a worker that died
in the middle of a job (the result just never comes).

Children are forked from a forkserver that has already imported the server (PyTorch included), so a
replacement is ready in a fraction of a second; where there is no forkserver (Windows) they are spawned.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

Progress = Callable[[int, int], None]


class JobTimeout(Exception):
    """The job ran past its time budget; its process was killed."""


class WorkerDied(Exception):
    """The worker process ended in the middle of a job (crash, OOM kill, shutdown)."""


class _NotTaken(Exception):
    """The worker process was gone before it took the job."""


def _context() -> Any:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Only takes effect if the forkserver is not up yet. colorize: PyTorch, which takes seconds to import.
        ctx.set_forkserver_preload(["sarcolor.engine", "sarcolor.server"])
        return ctx
    return mp.get_context("spawn")


def _child_main(conn: Connection, init: Callable[..., Any], init_args: tuple) -> None:
    """The child: build its state once, then run (fn, args) messages until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    state = init(*init_args)

    def progress(done: int, total: int) -> None:
        conn.send(("progress", done, total))

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        fn, args = msg
        conn.send(("taken",))
        try:
            reply = ("ok", fn(state, *args, progress=progress))
        except Exception:  # fn turns expected failures into results; anything here is a bug
            reply = ("bug", traceback.format_exc())
        conn.send(reply)


class Worker:
    """One child process that runs jobs one at a time (not thread-safe: one caller at a time)."""

    def __init__(self, ctx: Any, init: Callable[..., Any], init_args: tuple) -> None:
        self._ctx, self._init, self._init_args = ctx, init, init_args
        self._proc: Any = None
        self._conn: Connection | None = None
        self.jobs_done = 0
        self.closed = False  # set at shutdown: no new process after that

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self.kill()
        if self.closed:
            raise WorkerDied("the server is shutting down")
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child_main, args=(child, self._init, self._init_args),
                                       name="sarcolor-worker", daemon=True)
        self._proc.start()
        child.close()
        self._conn, self.jobs_done = parent, 0

    def run(self, fn: Callable[..., Any], args: tuple, *, timeout: float, progress: Progress) -> Any:
        """fn(state, *args, progress=...) in the child; its return value, or JobTimeout / WorkerDied."""
        deadline = time.monotonic() + timeout
        for _ in range(2):  # a process that died while idle (OOM killer...) never saw the job: once more
            self.start()
            try:
                return self._run_once(fn, args, deadline, timeout, progress)
            except _NotTaken:
                self.kill()
        raise WorkerDied("the worker process died before it could take the job")

    def _run_once(self, fn: Callable[..., Any], args: tuple, deadline: float, timeout: float,
                  progress: Progress) -> Any:
        assert self._conn is not None and self._proc is not None
        conn, proc = self._conn, self._proc
        taken = False
        try:
            conn.send((fn, args))
            while True:
                ready = wait([conn, proc.sentinel], timeout=max(0.0, deadline - time.monotonic()))
                if conn in ready:  # before the sentinel: the last message may come just before an exit
                    kind, *payload = conn.recv()
                    if kind == "taken":
                        taken = True
                    elif kind == "progress":
                        progress(*payload)
                    else:
                        self.jobs_done += 1
                        if kind == "bug":
                            raise RuntimeError(f"worker process error:\n{payload[0]}")
                        return payload[0]
                elif ready:
                    break
                else:
                    self.kill()
                    raise JobTimeout(f"over the time budget of {timeout:g} s")
        except (EOFError, OSError):  # the pipe broke: the process is gone
            pass
        self.kill()  # reap it and close the pipe; the next run starts a fresh one
        if not taken:
            raise _NotTaken
        raise WorkerDied("the worker process ended in the middle of a job")

    def stop(self, timeout: float = 5.0) -> None:
        """Let the child finish its loop and exit; kill it if it does not within ``timeout``."""
        if self._proc is not None and self._conn is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._proc.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join()
            self._proc.close()
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WorkerPool:
    """``size`` workers; ``run`` takes an idle one, so callers never exceed ``size`` at once."""

    def __init__(self, size: int, init: Callable[..., Any], init_args: tuple = (), *, max_jobs: int = 200) -> None:
        ctx = _context()
        self._workers = [Worker(ctx, init, init_args) for _ in range(size)]
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self.max_jobs = max_jobs  # a worker is replaced after this many jobs even if they were all small
        self._closed = threading.Event()

    def start(self) -> None:
        """Start every worker now, so the first job does not wait for one."""
        for w in self._workers:
            w.start()

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    def run(self, fn: Callable[..., Any], args: tuple, *, timeout: float, progress: Progress,
            recycle: bool = False) -> Any:
        """Run ``fn`` in an idle worker within ``timeout`` seconds; ``recycle`` replaces the worker after."""
        if self._closed.is_set():
            raise WorkerDied("the server is shutting down")
        worker = self._idle.get()
        try:
            return worker.run(fn, args, timeout=timeout, progress=progress)
        finally:
            if not self._closed.is_set():
                if recycle or worker.jobs_done >= self.max_jobs:
                    worker.stop()
                worker.start()  # after a stop, a kill or a crash: the replacement loads the model now
            self._idle.put(worker)

    def close(self) -> None:
        """Kill every worker; a running job ends with WorkerDied."""
        self._closed.set()
        for w in self._workers:
            w.closed = True
            if w.pid is not None:
                try:
                    os.kill(w.pid, signal.SIGKILL)  # not w.kill(): another thread may be inside w.run
                except ProcessLookupError:
                    pass
        while True:  # reap the idle ones now; a busy one is reaped by its run()
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return
