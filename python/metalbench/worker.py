"""Worker processes: the device is opened, and every kernel run, in a process the sweep can kill.

A kernel that hangs, or that writes far out of bounds and takes its process down,
costs one result instead of the sweep. The parent hands each worker jobs (one spec
and some of its variants), waits for each step with a deadline (`timeout`), and
when a worker overruns it or dies, stores that pair as `timeout` or `crashed`,
starts a new worker and goes on with the pairs that were left.

A compile is a step of its own too: the worker says when each build starts and ends,
so each has its own deadline, and a build that overruns it, or whose compiler takes
the worker down (out of memory, say), costs that variant alone (category `compile`).
When a worker dies with several builds under way, the job is tried again with its
builds one at a time, so that the next death names the culprit.

Workers start with the spawn method (a fresh interpreter, no inherited device
state or threads), ignore Ctrl-C (the parent owns it and stops them), and write
their own output to stderr.
"""

from __future__ import annotations

import math
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
from dataclasses import replace
from typing import Any

from . import _core
from .backends import BackendError
from .measure import Worker, worker_stdio
from .peak import Memory, measure_memory
from .pool import DeviceLost, Job, Message, PeakUnavailable, Phase, Progress, Step, WorkerError, ahead, pick
from .results import Category, Result, Status, lost_measure
from .settings import Settings

__all__ = ["JobRunner", "PeakJob", "ProcessPool"]

# Longest wait between checks of deadlines and of Ctrl-C, in seconds.
_TICK = 0.2


def _brief_time(result: Result, rank_by: str) -> float:
    """A brief lap's time of a pair in seconds: its ranking clock's median, or the round trip
    of the launch it was verified by where it gave up timing (0: none)."""
    stats = result.clock(rank_by)
    if stats and stats.get("count"):
        return float(stats["median"]) * 1e-9
    return float(((result.measure or {}).get("hopeless") or {}).get("round_trip_ns", 0.0)) * 1e-9


class PeakJob:
    """Asks a worker for its device's memory probe (peak.py) instead of measuring pairs."""


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
        self.worker, self.settings, self.lock = worker, settings, lock
        self.prepared = None
        self.said_waiting = 0.0
        self.ranked: dict[str, float] = {}  # variant -> its brief time over the best's, on the last spec it ran
        # Builds report from their own threads: one message at a time on the connection.
        sending = threading.Lock()

        def send_one(message: tuple) -> None:
            with sending:
                send(message)

        self.send = send_one

    def _waiting(self) -> None:
        # Waiting for the device is not hanging: say so now and then, so the deadline moves on.
        if time.monotonic() - self.said_waiting > 1.0:
            self.send((Message.WAITING, None))
            self.said_waiting = time.monotonic()

    def run(self, job: Job) -> bool:
        """Runs `job`; False when the device stopped working (the last message said so)."""
        if self.prepared is None or (self.prepared.spec, self.prepared.seed) != (job.spec, job.seed):
            self.prepared = None  # its buffers go before the next spec's are made
            self.send((Message.PREPARE, None))
            self.prepared = self.worker.prepare(job.spec, self.settings, job.seed, job.cache_bytes,
                                                job.peak_bandwidth)
            for note in self.prepared.notes:
                self.send((Message.NOTE, note))
        settings = job.settings or self.settings
        # Each build is a step of its own: a slow compiler is never taken for a hung kernel,
        # and a hung or fatal one is known by name.
        self.worker.build([pair.variant for pair in job.pairs], job.spec.dtype,
                          lambda variant: self.send((Message.BUILDING, variant)),
                          lambda variant: self.send((Message.BUILT, variant)), job.one_at_a_time)
        brief = job.phase == Phase.BRIEF
        # A brief lap takes the variants in the order they ranked on the specs before (the
        # fastest first), so that the best time is known early, and gives up timing one whose
        # verified launch was many times slower than that (measure.Worker, `race_bar`).
        pairs = sorted(job.pairs, key=lambda p: self.ranked.get(p.variant.id, math.inf)) if brief else job.pairs
        bar = job.bar_ns * 1e-9
        lap: list[tuple[str, float]] = []
        for pair in pairs:
            with self.lock.held(self._waiting) if self.lock else nullcontext():
                self.send((Message.BEGIN, pair.id))
                result = self.worker.measure(self.prepared, pair.variant, pair.key, pair.detail, settings,
                                             full=not brief, race_bar=bar if brief else 0.0)
            if brief and result.status == Status.OK:
                took = _brief_time(result, settings.rank_by)
                if took:
                    lap.append((pair.variant.id, took))
                    if "hopeless" not in (result.measure or {}):
                        bar = min(bar, took) if bar else took
            self.send((Message.RESULT, pair.id, result))
            if result.category in (Category.RUNTIME, Category.COMPILE) and not self.worker.healthy():
                self.send((Message.LOST, f"the device stopped working after {pair.variant.id} on "
                                         f"{job.spec.label()} ({result.message})"))
                return False
        if lap:
            best = min(t for _, t in lap)
            self.ranked.update({variant: t / best for variant, t in lap})
        self.send((Message.DONE, None))
        return True

    def peak(self) -> Memory | str:
        """The device's memory probe (peak and last-level cache), or why it could not be had."""
        w = self.worker
        try:
            with self.lock.held(self._waiting) if self.lock else nullcontext():
                return measure_memory(w.device, w.backend)
        except (_core.CompileError, _core.DeviceError, _core.UsageError, _core.UnavailableError, OSError) as e:
            return str(e).splitlines()[0] if str(e) else type(e).__name__


def _serve(conn: multiprocessing.connection.Connection, backend: str, index: int, settings: Settings,
           lock_path: str | None) -> None:
    """The worker process's loop: open the device, then run jobs until told to stop."""
    # The parent owns Ctrl-C and SIGTERM (a CI cancel may signal the whole process group):
    # it stops its workers itself, and a worker that died of the signal would be blamed
    # on the pair it held.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _orphan_watch()
    worker_stdio()
    try:
        worker = Worker(backend, index)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
        conn.send((Message.FAILED, f"{type(e).__name__}: {e}"))
        return
    conn.send((Message.READY, worker.info))
    runner = JobRunner(worker, settings, conn.send, _DeviceLock(lock_path) if lock_path else None)
    try:
        while True:
            job: Job | PeakJob | None = conn.recv()
            if isinstance(job, PeakJob):
                conn.send((Message.PEAK, runner.peak()))
            elif job is None or not runner.run(job):
                return
    except EOFError:
        return
    except Exception:  # noqa: BLE001 - a bug of metalbench's own: the parent stops the run
        conn.send((Message.ERROR, traceback.format_exc()))


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
    """One worker process, the job it holds, the step it is on and the spec it has prepared."""

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
        self.left: deque = deque()         # pairs of the job not yet answered
        self.building: dict[str, float] = {}  # builds under way: variant id -> when it began
        self.step = Step.START
        self.since = time.monotonic()
        self.holds: int | None = None      # the spec index whose buffers it made last

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class ProcessPool:
    """Worker processes on one or more devices, and the deadlines they are held to
    (pool.Pool, with spec affinity).

    With `isolated` False the jobs run in this process instead, one device, no
    deadlines: what isolation costs is measured against that (benchmarks/isolation.py).
    """

    def __init__(self, backend: str, devices: Iterable[int], settings: Settings, timeout: float,
                 workers_per_device: int = 1, isolated: bool = True) -> None:
        self.backend, self.settings, self.timeout, self.isolated = backend, settings, timeout, isolated
        devices = list(devices)
        self.devices = devices
        self.slots = [index for index in devices for _ in range(workers_per_device)]
        self.share = len(self.slots)
        # Workers that share a device take turns to measure (_DeviceLock).
        self.lock_dir = tempfile.mkdtemp(prefix="metalbench-locks-") if workers_per_device > 1 else None
        self.locks = {d: os.path.join(self.lock_dir, f"device{d}") for d in devices} if self.lock_dir else {}
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Process | None] = [None] * len(self.slots)
        self.local: JobRunner | None = None
        self.on_progress: Progress | None = None

    def describe(self) -> dict:
        """The first device's info, as the driver lists it; every device must be the same model,
        since they share one ranking (a result's key names the model, not the index)."""
        found = _core.devices(self.backend)
        if not self.devices:
            raise BackendError("no device given")
        for index in self.devices:
            if not 0 <= index < len(found):
                raise BackendError(f"{self.backend} has no device {index} ({len(found)} found; "
                                   "`metalbench devices` lists them)")
        if len(set(self.devices)) != len(self.devices):
            raise BackendError(f"a device is named twice in {self.devices}")
        model = {(found[i]["vendor"], found[i]["name"], found[i]["driver"]) for i in self.devices}
        if len(model) > 1:
            listed = "; ".join(f"{i}: {found[i]['name']} ({found[i]['driver']})" for i in self.devices)
            raise BackendError(f"the devices are not all the same model and driver ({listed}); their times do not "
                               "rank together: run each model separately")
        return found[self.devices[0]]

    def begin(self) -> None:
        """Starts every worker process without waiting for it: a worker takes a second or
        more to start Python and open its device, which the runner spends planning."""
        if self.isolated:
            for i, w in enumerate(self.workers):
                if w is None:
                    self._launch(i)

    def _start(self) -> None:
        """Every worker started (those begun are waited for); DeviceLost if one cannot open its device."""
        if not self.isolated:
            if self.local is None:
                self.local = JobRunner(Worker(self.backend, self.slots[0]), self.settings, self._local_send)
            return
        for i, w in enumerate(self.workers):
            if w is None or w.step == Step.START:
                self._spawn(i, w)

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
            kind, value = Message.FAILED, f"its worker {_exit_reason(self._reap(w))}"
        if kind != Message.READY:
            w.stop()
            raise DeviceLost(f"{self.backend} device {self.slots[i]} cannot be opened: {value}")
        w.step, w.since = Step.IDLE, time.monotonic()
        return w

    def measure_peak(self) -> Memory:
        """The first device's memory probe (peak.py), measured by its first worker within the deadline."""
        self._start()
        if self.local is not None:
            found = self.local.peak()
        else:
            w = self.workers[0]
            assert w is not None
            w.conn.send(PeakJob())
            deadline = time.monotonic() + self.timeout
            while not w.conn.poll(_TICK):
                if not w.process.is_alive() or time.monotonic() > deadline:
                    why = _exit_reason(self._reap(w)) if not w.process.is_alive() else \
                        f"took longer than {self.timeout:g} s (--timeout)"
                    w.stop()
                    self._spawn(0)
                    raise PeakUnavailable(f"the read-bandwidth kernel's worker {why}")
            try:
                kind, found = w.conn.recv()
            except EOFError:
                why = _exit_reason(self._reap(w))
                w.stop()
                self._spawn(0)
                raise PeakUnavailable(f"the read-bandwidth kernel's worker {why}") from None
            if kind == Message.ERROR:
                raise WorkerError(found)
        if isinstance(found, str):
            raise PeakUnavailable(found)
        return found

    def close(self) -> None:
        for w in self.workers:
            if w is not None:
                w.stop()
        self.workers = [None] * len(self.slots)
        if self.lock_dir:
            shutil.rmtree(self.lock_dir, ignore_errors=True)

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, Result], Iterable[Job]],
            on_note: Callable[[str], None], on_progress: Progress | None = None) -> None:
        """Runs every job; calls `on_result` once for every pair, in the order answered,
        and runs the jobs it returns next, with spec affinity (pool.pick)."""
        self.on_progress = on_progress
        self._start()
        queue: deque[Job] = deque(jobs)
        if self.local is not None:
            return self._run_here(queue, on_result, on_note)
        while True:
            for w in self.workers:
                if w is not None and w.job is None and queue:
                    others = [o.holds for o in self.workers if o is not w and o is not None and o.holds is not None]
                    job = pick(queue, w.holds, others)
                    assert job is not None
                    w.job, w.left, w.holds = job, deque(job.pairs), job.spec_index
                    w.step, w.since = Step.SENT, time.monotonic()
                    w.conn.send(job)
            busy = [w for w in self.workers if w is not None and w.job is not None]
            if not busy:
                return
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=_TICK)
            for w in busy:
                if w.conn in ready:
                    self._receive(w, on_result, on_note, queue)
            for i, w in enumerate(self.workers):
                if w is None or w.job is None:
                    continue
                now = time.monotonic()
                overdue = [v for v, began in w.building.items() if now - began > self.timeout]
                if overdue:
                    self._replace(i, Status.TIMEOUT, f"took longer than {self.timeout:g} s (--timeout); its worker "
                                  "was stopped", on_result, queue, overdue)
                elif now - w.since > self.timeout:
                    self._replace(i, Status.TIMEOUT, f"took longer than {self.timeout:g} s (--timeout); its "
                                  "worker was stopped", on_result, queue)

    def _local_send(self, message: tuple) -> None:
        current, queue, on_result, on_note = self._here
        if self.on_progress is not None and message[0] in (Message.PREPARE, Message.BUILT, Message.BEGIN):
            self.on_progress(current[0], message[0], message[1], 0)
        if message[0] == Message.RESULT:
            ahead(queue, on_result(current[0], message[2]))
        elif message[0] == Message.NOTE:
            on_note(message[1])
        elif message[0] == Message.LOST:
            raise DeviceLost(f"{message[1]}; without isolation the run cannot go on")

    def _run_here(self, queue: deque[Job], on_result: Callable[[Job, Result], Iterable[Job]],
                  on_note: Callable[[str], None]) -> None:
        assert self.local is not None
        current: list[Job] = []
        self._here = (current, queue, on_result, on_note)
        holds: int | None = None
        while queue:
            job = pick(queue, holds, [])
            assert job is not None
            current[:] = [job]
            holds = job.spec_index
            self.local.run(job)

    def _receive(self, w: _Process, on_result: Callable[[Job, Result], Iterable[Job]],
                 on_note: Callable[[str], None], queue: deque[Job]) -> None:
        i = self.workers.index(w)
        try:
            message = w.conn.recv()
        except (EOFError, OSError):
            self._replace(i, Status.CRASHED, _exit_reason(self._reap(w)), on_result, queue)
            return
        kind, value = message[0], message[1]
        w.since = time.monotonic()
        if self.on_progress is not None and w.job is not None and kind in (Message.PREPARE, Message.BUILT,
                                                                           Message.BEGIN):
            self.on_progress(w.job, kind, value, i)
        if kind == Message.NOTE:
            on_note(value)
        elif kind == Message.PREPARE:
            w.step = Step.PREPARE
        elif kind == Message.BUILDING:
            w.step = Step.BUILD
            w.building[value] = w.since
        elif kind == Message.BUILT:
            w.building.pop(value, None)
        elif kind == Message.WAITING:
            w.step = Step.WAITING
        elif kind == Message.BEGIN:
            w.step = Step.BEGIN
            # The worker may take a job's pairs in its own order: the one begun goes first.
            begun = next((pair for pair in w.left if pair.id == value), None)
            if begun is not None:
                w.left.remove(begun)
                w.left.appendleft(begun)
        elif kind == Message.RESULT:
            assert w.job is not None
            w.left = deque(pair for pair in w.left if pair.id != value)
            w.step = Step.WAITING  # between pairs until the next begins
            ahead(queue, on_result(w.job, message[2]))
        elif kind == Message.DONE:
            w.job, w.step = None, Step.IDLE
        elif kind == Message.LOST:
            on_note(f"{value}; starting a new worker")
            self._reap(w)
            self._requeue(w, queue)
            self._spawn(i)
        elif kind == Message.ERROR:
            raise WorkerError(value)

    def _reap(self, w: _Process) -> multiprocessing.process.BaseProcess:
        w.process.join(timeout=5)
        return w.process

    def _requeue(self, w: _Process, queue: deque[Job]) -> None:
        """Puts the pairs `w` had not answered back at the front, and stops it."""
        if w.job is not None and w.left:
            queue.appendleft(replace(w.job, pairs=list(w.left)))
        w.stop()

    def _replace(self, i: int, status: Status, why: str, on_result: Callable[[Job, Result], Iterable[Job]],
                 queue: deque[Job], overdue: Iterable[str] = ()) -> None:
        """Stops worker i, blames what it was doing, and starts a new worker for what is left.

        Blamed: the pair it was measuring; the build that overran its deadline (`overdue`);
        the one build under way when it died. Not blamed, the job tried once more: a death
        between pairs, before any pair began, or with several builds under way or overdue
        (built side by side, or as one program: batch.py), then with builds one at a time,
        so that the next death or overrun names one. A second death while preparing the
        spec blames every pair of the job: it was the spec's inputs."""
        w = self.workers[i]
        assert w is not None and w.job is not None
        building = list(w.building)
        ran = time.monotonic() - w.since
        w.stop()
        job = w.job
        blamed: list = []
        what = ""  # what the worker was doing when every pair of the job is blamed
        overdue = list(overdue)
        if len(overdue) > 1 and not job.one_at_a_time:
            overdue = []
        culprits = overdue or (building if len(building) == 1 and status == Status.CRASHED else [])
        if culprits:
            blamed = [pair for pair in w.left if pair.variant.id in culprits]
            w.left = deque(pair for pair in w.left if pair.variant.id not in culprits)
        elif w.step == Step.BEGIN and w.left:
            blamed = [w.left.popleft()]
        elif w.step == Step.BUILD and len(building) > 1:
            w.job = replace(job, one_at_a_time=True)
        elif w.step == Step.WAITING or not job.retried:
            # Between pairs, or the first death before any pair began (sent, preparing the
            # spec, between builds): no pair is to blame yet, so the job is tried once more; a
            # death while waiting for the device does not count as a try.
            w.job = replace(job, retried=job.retried or w.step != Step.WAITING)
        else:
            blamed, w.left = list(w.left), deque()
            what = f"preparing {job.spec.label()} (inputs, reference, buffers)"
        for n, pair in enumerate(blamed):
            category = Category.COMPILE if culprits else Category(status.value)
            doing = f"compiling {pair.variant.id}" if culprits else what
            if status == Status.TIMEOUT:
                message = f"{doing} {why}".strip()
            else:
                message = f"its worker {why}" + (f" while {doing}" if doing else "")
            # The seconds the worker ran on it, once for all that are blamed: no step recorded them.
            lost = lost_measure(ran) if n == 0 else None
            ahead(queue, on_result(job, Result(variant=pair.variant.id, spec_key=job.spec.key(), status=status,
                                               category=category, message=message, key=pair.key,
                                               detail=pair.detail, measure=lost)))
        self._requeue(w, queue)
        self._spawn(i)
