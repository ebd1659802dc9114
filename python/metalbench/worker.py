"""Worker processes: the device is opened, and every kernel run, in a process the sweep can kill.

A kernel that hangs, or that writes far out of bounds and takes its process down,
costs one result instead of the sweep. The parent hands each worker jobs (one spec
and some of its variants), waits for each step with a deadline (`timeout`), and
when a worker overruns it or dies, stores that pair as `timeout` or `crashed`,
starts a new worker and goes on with the pairs that were left.

Workers start with the spawn method (a fresh interpreter, no inherited device
state or threads), ignore Ctrl-C (the parent owns it and stops them), and write
their own output to stderr.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from .measure import Settings, Worker, worker_stdio
from .specs import Spec
from .store import Result
from .variants import Variant

__all__ = ["DeviceLost", "Job", "JobRunner", "Pair", "Pool", "WorkerError"]

# Longest wait between checks of deadlines and of Ctrl-C, in seconds.
_TICK = 0.2


class DeviceLost(RuntimeError):
    """The device cannot be opened again after a worker lost it: the run cannot finish."""


class WorkerError(RuntimeError):
    """A worker failed in metalbench's own code (a bug), not in a kernel."""


@dataclass(frozen=True)
class Pair:
    """One variant on the job's spec, with the key it will be stored under."""

    id: int
    variant: Variant
    key: str
    detail: dict


@dataclass
class Job:
    """Some pairs of one spec, measured with `settings` (None: the pool's)."""

    spec_index: int
    spec: Spec
    pairs: list[Pair]
    settings: Settings | None = None
    phase: str = "full"  # or "brief": the first lap of a race (runner.py)
    retried: bool = False  # its worker died once before any pair began: the next death blames them all


def _ahead(queue: deque[Job], jobs: Iterable[Job]) -> None:
    """Puts the jobs a result gave rise to (a race's full lap) at the front of the queue:
    the worker that just finished the spec's brief lap still holds its inputs, reference
    and buffers, which take longer to make again than many a full lap (the LM head's
    inputs are 270 MB of random draws)."""
    queue.extendleft(reversed(list(jobs)))


def _orphan_watch() -> None:
    """Ends this process once its parent is gone (killed with -9, say): a worker stuck
    in a hung kernel would otherwise run on for ever. A thread, since the main one may
    be inside a kernel launch, which releases the GIL."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_TICK)
        os._exit(3)

    threading.Thread(target=watch, name="metalbench-orphan-watch", daemon=True).start()


class _DeviceLock:
    """Held while a pair is verified and timed, so that workers sharing a device never
    measure at the same time (they would time each other's kernels); they still
    compile and prepare side by side. A file lock, which the system releases if its
    holder dies, so a killed worker never leaves it held."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def held(self, waiting: Callable[[], None]) -> Iterator[None]:
        import fcntl

        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waiting()
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


class JobRunner:
    """A worker's side of the protocol: runs jobs on its device, reporting every step
    through `send` as (kind, value[, result]) messages."""

    def __init__(self, worker: Worker, settings: Settings, send: Callable[[tuple], None],
                 lock: _DeviceLock | None = None) -> None:
        self.worker, self.settings, self.send, self.lock = worker, settings, send, lock
        self.prepared = None
        self.said_waiting = 0.0

    def _waiting(self) -> None:
        # Waiting for the device is not hanging: say so now and then, so the deadline moves on.
        if time.monotonic() - self.said_waiting > 1.0:
            self.send(("waiting", None))
            self.said_waiting = time.monotonic()

    def run(self, job: Job) -> bool:
        """Runs `job`; False when the device stopped working (the last message said so)."""
        if self.prepared is None or self.prepared.spec != job.spec:
            self.prepared = None  # its buffers go before the next spec's are made
            self.send(("prepare", None))
            self.prepared = self.worker.prepare(job.spec, self.settings)
            for note in self.prepared.notes:
                self.send(("note", note))
        settings = job.settings or self.settings
        # Each build is a step of its own: a slow compiler is never taken for a hung kernel.
        self.worker.build([pair.variant for pair in job.pairs], job.spec.dtype,
                          lambda variant: self.send(("built", variant)))
        for pair in job.pairs:
            with self.lock.held(self._waiting) if self.lock else nullcontext():
                self.send(("begin", pair.id))
                result = self.worker.measure(self.prepared, pair.variant, pair.key, pair.detail, settings)
            self.send(("result", pair.id, result))
            if result.category in ("runtime", "compile") and not self.worker.healthy():
                self.send(("lost", f"the device stopped working after {pair.variant.id} on {job.spec.label()} "
                                   f"({result.message})"))
                return False
        self.send(("done", None))
        return True


def _serve(conn: multiprocessing.connection.Connection, backend: str, index: int, settings: Settings,
           lock_path: str | None) -> None:
    """The worker process's loop: open the device, then run jobs until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _orphan_watch()
    worker_stdio()
    try:
        worker = Worker(backend, index)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", worker.info))
    runner = JobRunner(worker, settings, conn.send, _DeviceLock(lock_path) if lock_path else None)
    try:
        while True:
            job: Job | None = conn.recv()
            if job is None or not runner.run(job):
                return
    except EOFError:
        return
    except Exception:  # noqa: BLE001 - a bug of metalbench's own: the parent stops the run
        conn.send(("error", traceback.format_exc()))


def _exit_reason(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (signal {-code})"
    return f"exited with status {code}"


class _Process:
    """One worker process, the job it holds, and the step it is on."""

    def __init__(self, context: Any, backend: str, index: int, settings: Settings, lock_path: str | None) -> None:
        # A spawned worker inherits the C environment, which native libraries may have
        # changed in place: the OpenCL ICD loader of one GPU machine cut
        # OCL_ICD_FILENAMES at its first ':' while listing devices, and a worker then
        # saw only the first driver. Workers start from the environment Python read.
        for name, value in os.environ.items():
            os.putenv(name, value)
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, backend, index, settings, lock_path), daemon=True,
                                       name=f"metalbench-worker-{backend}{index}")
        self.process.start()
        child.close()
        self.job: Job | None = None
        self.left: deque[Pair] = deque()  # pairs of the job not yet answered
        self.step: str = "start"          # start, prepare, begin (a pair), waiting (its turn), idle
        self.since = time.monotonic()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class Pool:
    """Workers on one or more devices, and the deadlines they are held to.

    With `isolated` False the jobs run in this process instead, one device, no
    deadlines: what isolation costs is measured against that (benchmarks/isolation.py).
    """

    def __init__(self, backend: str, devices: Iterable[int], settings: Settings, timeout: float,
                 workers_per_device: int = 1, isolated: bool = True) -> None:
        self.backend, self.settings, self.timeout, self.isolated = backend, settings, timeout, isolated
        self.slots = [index for index in devices for _ in range(workers_per_device)]
        # Workers that share a device take turns to measure (_DeviceLock).
        self.lock_dir = tempfile.mkdtemp(prefix="metalbench-locks-") if workers_per_device > 1 else None
        self.locks = {d: os.path.join(self.lock_dir, f"device{d}") for d in devices} if self.lock_dir else {}
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Process | None] = [None] * len(self.slots)
        self.infos: dict[int, dict] = {}

    def begin(self) -> None:
        """Starts every worker process without waiting for it: a worker takes a second or
        more to start Python and open its device, which the runner spends planning."""
        if self.isolated:
            for i, w in enumerate(self.workers):
                if w is None:
                    self._launch(i)

    def start(self) -> dict:
        """Starts every worker (those begun are waited for) and returns the first device's info;
        DeviceLost if one cannot open its device."""
        if not self.isolated:
            self.local = Worker(self.backend, self.slots[0])
            return self.local.info
        for i, w in enumerate(self.workers):
            if w is None or w.step == "start":
                self._spawn(i, w)
        return self.infos[self.slots[0]]

    def _launch(self, i: int) -> _Process:
        w = _Process(self.context, self.backend, self.slots[i], self.settings, self.locks.get(self.slots[i]))
        self.workers[i] = w
        return w

    def _spawn(self, i: int, begun: _Process | None = None) -> _Process:
        """Worker i, started (unless `begun`) and ready."""
        w = begun or self._launch(i)
        deadline = time.monotonic() + max(self.timeout, 60.0)
        while not w.conn.poll(_TICK):
            if not w.process.is_alive() and not w.conn.poll():
                raise DeviceLost(f"a worker for {self.backend} device {self.slots[i]} {_exit_reason(w.process)} "
                                 "while opening the device")
            if time.monotonic() > deadline:
                w.stop()
                raise DeviceLost(f"opening {self.backend} device {self.slots[i]} took longer than "
                                 f"{max(self.timeout, 60.0):g} s")
        try:
            kind, value = w.conn.recv()
        except EOFError:
            kind, value = "failed", f"its worker {_exit_reason(self._reap(w))}"
        if kind != "ready":
            w.stop()
            raise DeviceLost(f"{self.backend} device {self.slots[i]} cannot be opened: {value}")
        self.infos[self.slots[i]] = value
        w.step, w.since = "idle", time.monotonic()
        return w

    def close(self) -> None:
        for w in self.workers:
            if w is not None:
                w.stop()
        self.workers = [None] * len(self.slots)
        if self.lock_dir:
            shutil.rmtree(self.lock_dir, ignore_errors=True)

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, Result], Iterable[Job]],
            on_note: Callable[[str], None]) -> None:
        """Runs every job; calls `on_result` once for every pair, in the order answered,
        and runs the jobs it returns too."""
        if not self.isolated:
            return self._run_here(jobs, on_result, on_note)
        queue: deque[Job] = deque(jobs)
        while True:
            for w in self.workers:
                if w is not None and w.job is None and queue:
                    job = queue.popleft()
                    w.job, w.left = job, deque(job.pairs)
                    w.step, w.since = "sent", time.monotonic()
                    w.conn.send(job)
            busy = [w for w in self.workers if w is not None and w.job is not None]
            if not busy:
                return
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=_TICK)
            for w in busy:
                if w.conn in ready:
                    self._receive(w, on_result, on_note, queue)
            for i, w in enumerate(self.workers):
                if w is not None and w.job is not None and time.monotonic() - w.since > self.timeout:
                    self._replace(i, "timeout", f"took longer than {self.timeout:g} s (--timeout); its worker "
                                  "was stopped", on_result, queue)

    def _run_here(self, jobs: Iterable[Job], on_result: Callable[[Job, Result], Iterable[Job]],
                  on_note: Callable[[str], None]) -> None:
        current: list[Job] = []
        queue: deque[Job] = deque(jobs)

        def send(message: tuple) -> None:
            if message[0] == "result":
                _ahead(queue, on_result(current[0], message[2]))
            elif message[0] == "note":
                on_note(message[1])
            elif message[0] == "lost":
                raise DeviceLost(f"{message[1]}; without isolation the run cannot go on")

        runner = JobRunner(self.local, self.settings, send)
        while queue:
            current[:] = [queue.popleft()]
            runner.run(current[0])

    def _receive(self, w: _Process, on_result: Callable[[Job, Result], Iterable[Job]],
                 on_note: Callable[[str], None], queue: deque[Job]) -> None:
        i = self.workers.index(w)
        try:
            message = w.conn.recv()
        except (EOFError, OSError):
            self._replace(i, "crashed", _exit_reason(self._reap(w)), on_result, queue)
            return
        kind, value = message[0], message[1]
        w.since = time.monotonic()
        if kind == "note":
            on_note(value)
        elif kind in ("prepare", "begin", "built", "waiting"):
            w.step = "begin" if kind == "begin" else "prepare"
        elif kind == "result":
            assert w.job is not None
            w.left.popleft()
            _ahead(queue, on_result(w.job, message[2]))
        elif kind == "done":
            w.job, w.step = None, "idle"
        elif kind == "lost":
            on_note(f"{value}; starting a new worker")
            self._reap(w)
            self._requeue(w, queue)
            self._spawn(i)
        elif kind == "error":
            raise WorkerError(value)

    def _reap(self, w: _Process) -> multiprocessing.process.BaseProcess:
        w.process.join(timeout=5)
        return w.process

    def _requeue(self, w: _Process, queue: deque[Job]) -> None:
        """Puts the pairs `w` had not answered back at the front, and stops it."""
        if w.job is not None and w.left:
            queue.appendleft(replace(w.job, pairs=list(w.left)))
        w.stop()

    def _replace(self, i: int, status: str, why: str, on_result: Callable[[Job, Result], Iterable[Job]],
                 queue: deque[Job]) -> None:
        """Stops worker i, blames the pair it was on (or, when it died preparing the job a second
        time, every pair of the job), and starts a new worker for what is left."""
        w = self.workers[i]
        assert w is not None and w.job is not None
        w.stop()
        job = w.job
        if w.step == "begin" and w.left:
            blamed = [w.left.popleft()]
            what = ""
        elif w.step == "waiting" or not job.retried:
            # Waiting its turn on the device, or the first death while preparing the spec or
            # building its kernels: no pair is to blame yet, so the job is tried once more.
            blamed, what = [], ""
            w.job = replace(job, retried=w.step != "waiting")
        else:
            blamed, w.left = list(w.left), deque()
            what = f"preparing {job.spec.label()} (inputs, reference, buffers) "
        for pair in blamed:
            message = f"{what}{why}" if status == "timeout" else f"its worker {why} {what}".rstrip()
            _ahead(queue, on_result(job, Result(variant=pair.variant.id, spec_key=job.spec.key(), status=status,
                                                category=status, message=message, key=pair.key,
                                                detail=pair.detail)))
        self._requeue(w, queue)
        self._spawn(i)
