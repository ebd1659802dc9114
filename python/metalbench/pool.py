"""The protocol between the runner and whatever measures for it: jobs in, results out.

A pool measures `Job`s (some pairs of one spec) on devices it owns and answers each
pair with a `Result` through a callback, which may hand back new jobs (a race's full
lap) that go to the front of the queue. Two pools implement it: `worker.ProcessPool`
(worker processes on this machine; `isolated=False` runs the jobs in this process)
and `ray_pool.RayPool` (Ray actors on a cluster). The runner talks to either through
`Pool` alone.

Both keep **spec affinity**: a worker that holds a spec's inputs, reference and
buffers (made for the last job it ran) gets that spec's next job, and a job of a
spec another worker holds waits for that worker while jobs of other specs remain
(`pick`). Preparing a spec again costs more than many a full lap (the LM head's
inputs are 270 MB of random draws).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .peak import Memory
from .results import Result
from .settings import Settings
from .specs import Spec
from .variants import Variant

__all__ = ["DeviceLost", "Job", "Message", "Pair", "Phase", "PeakUnavailable", "Pool", "Progress", "Step",
           "WorkerError", "ahead", "open_pool", "pick"]


class DeviceLost(RuntimeError):
    """The device cannot be opened again after a worker lost it: the run cannot finish."""


class WorkerError(RuntimeError):
    """A worker failed in metalbench's own code (a bug), not in a kernel."""


class PeakUnavailable(RuntimeError):
    """The device's peak bandwidth could not be measured; the message says why."""


@dataclass(frozen=True)
class Pair:
    """One variant on the job's spec, with the key it will be stored under."""

    id: int
    variant: Variant
    key: str
    detail: dict


class Phase(str, Enum):
    """Which lap of a race a job is (runner.py): the brief first lap, or a full measurement."""

    BRIEF = "brief"
    FULL = "full"


@dataclass
class Job:
    """Some pairs of one spec, measured with `settings` (None: the pool's), for the run whose
    inputs and guard bands come from `seed` (measure.Worker.prepare)."""

    spec_index: int
    spec: Spec
    pairs: list[Pair]
    settings: Settings | None = None  # None: the pool's own
    phase: Phase = Phase.FULL
    retried: bool = False  # its worker died once before any pair began: the next death blames them all
    seed: int = 0
    bar_ns: float = 0.0  # a brief lap: the best time known for the spec already (reused results), 0: none
    cache_bytes: int = 0  # the last-level cache cold mode sizes its copies by (0: the driver's figure)
    peak_bandwidth: float = 0.0  # bytes per second, where known: bounds the time an eviction may take
    one_at_a_time: bool = False  # build its kernels in turn: a worker died with several builds under way


class Message(str, Enum):
    """What a worker says, as the first item of each (kind, value[, result]) message."""

    READY = "ready"      # the device is open; value: its info
    FAILED = "failed"    # the device could not be opened; value: why
    PREPARE = "prepare"  # making the spec's inputs, reference and buffers
    BUILDING = "building"  # one variant's build started; value: its id
    BUILT = "built"      # one variant's build ended (built or failed); value: its id
    WAITING = "waiting"  # waiting for its turn on a device another worker is measuring on
    BEGIN = "begin"      # measuring a pair; value: the pair's id
    RESULT = "result"    # a pair's result; value: the pair's id, then the Result
    NOTE = "note"        # something the user should know
    DONE = "done"        # the job is finished
    LOST = "lost"        # the device stopped working; value: why
    PEAK = "peak"        # the memory probe; value: a peak.Memory or the reason it failed
    ERROR = "error"      # metalbench's own bug; value: the traceback


class Step(str, Enum):
    """Where a worker is, as its parent last heard: what a death or an overrun there blames."""

    START = "start"      # starting Python and opening its device
    IDLE = "idle"        # no job
    SENT = "sent"        # a job was sent, nothing heard yet: no pair began (the job is tried once more)
    PREPARE = "prepare"  # preparing the spec's inputs (tried once more, then every pair blamed)
    BUILD = "build"      # building kernels: each build under way has its own deadline and is what a death blames
    WAITING = "waiting"  # between pairs, waiting for the device (no pair to blame; tried again)
    BEGIN = "begin"      # measuring a pair (that pair is blamed)


# What a pool tells of a job's steps as they happen: (job, PREPARE | BUILT | BEGIN, the message's
# value, the worker: an index among the pool's workers, so that pairs in progress side by side
# are told apart).
Progress = Callable[[Job, Message, object, int], None]


class Pool(Protocol):
    """What the runner needs of whatever measures for it."""

    share: int  # workers that take jobs side by side: the runner splits a spec's pairs this many ways

    def describe(self) -> dict:
        """The device info of the first device, before any job runs (DeviceLost if it cannot be had)."""

    def begin(self) -> None:
        """Starts the workers without waiting for them (the runner plans meanwhile)."""

    def measure_peak(self) -> Memory:
        """The first device's memory (read bandwidth against footprint: its peak and its last-level
        cache), measured by a worker (peak.py); PeakUnavailable if not."""

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, Result], Iterable[Job]],
            on_note: Callable[[str], None], on_progress: Progress | None = None) -> None:
        """Runs every job; calls `on_result` once for every pair, in the order answered, and runs
        the jobs it returns next (ahead of the queue, with spec affinity). `on_progress` hears
        each job's PREPARE, BUILT and BEGIN steps as they happen (for a progress display)."""

    def close(self) -> None:
        """Stops every worker."""


def ahead(queue: deque[Job], jobs: Iterable[Job]) -> None:
    """Puts the jobs a result gave rise to at the front of the queue, in their order."""
    queue.extendleft(reversed(list(jobs)))


def pick(queue: deque[Job], holds: int | None, held_elsewhere: Sequence[int]) -> Job | None:
    """Takes the job an idle worker should run next: the first of the spec it holds; else the
    first of a spec no other worker holds; else the first. None when the queue is empty."""
    if not queue:
        return None
    choice = next((j for j in queue if j.spec_index == holds), None) if holds is not None else None
    if choice is None:
        choice = next((j for j in queue if j.spec_index not in held_elsewhere), queue[0])
    queue.remove(choice)
    return choice


def open_pool(backend: str, devices: Sequence[int], settings: Settings, timeout: float, *, workers: int = 1,
              isolated: bool = True, ray: str | None = None) -> Pool:
    """The pool a run measures with: Ray actors at `ray`, else worker processes on `devices`
    (`workers` per device), or this process alone when not `isolated`."""
    if ray is not None:
        from .ray_pool import RayPool

        return RayPool(backend, settings, timeout, ray, workers)
    from .worker import ProcessPool

    return ProcessPool(backend, devices, settings, timeout, workers_per_device=workers, isolated=isolated)
