"""The results vocabulary: what a measured pair is, in words every part shares.

A *pair* is one variant on one spec. Its `Result` says how it ended (`Status`), why
when it did not end well (`Category`), and what each clock measured (`CLOCKS`). A
`Run` is a sweep's record: its suite, device, settings and the results it measured
or reused. The runner, the workers, the store, the reports and `compare` all speak
this vocabulary; nothing here opens a device or a file.

The words are `str` enums: they compare equal to the strings the store has always
held, and are written as those strings to SQLite and JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np

__all__ = ["CLOCKS", "CORRECT", "FAILED", "LAP_STEPS", "LOST", "Category", "Result", "Run", "Status", "lost_measure",
           "result_fields"]

# The clocks a result is timed by (csrc/core/measure.h); also the columns of the
# store's `results` table.
CLOCKS = ("gpu", "batch", "cpu")

# The steps of a pair that measure.Worker times apart, each a key of a result's
# `measure.seconds` (beside "build", "prepare" and "first_launch", a part of verify).
VERIFY, TIME, CHECK = "verify", "time", "check"
LAP_STEPS = (VERIFY, TIME, CHECK)
# The one key of `measure.seconds` of a pair whose worker overran --timeout or died
# (worker.py; ray_pool.py: an actor that overran): the seconds it ran, which no step
# recorded; on the first of the pairs blamed, once a stop.
LOST = "lost"


def lost_measure(ran: float) -> dict:
    """The `measure` of a pair whose worker ran `ran` seconds on it before it was stopped or died."""
    return {"seconds": {LOST: round(ran, 3)}}


class _Word(str, Enum):
    """An enum member that is its own string, in str(), format() and JSON alike."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Status(_Word):
    """How a pair ended."""

    OK = "ok"                    # verified, timed, verified again
    WRONG = "wrong"              # ran, and its output (or what it touched) was wrong
    FAILED = "failed"            # did not compile, launch or run
    TIMEOUT = "timeout"          # its worker overran --timeout and was stopped
    CRASHED = "crashed"          # its worker process died
    RACED = "raced"              # verified, timed briefly, and could not tie with the fastest
    UNSUPPORTED = "unsupported"  # the variant cannot run this spec (or on this device); never run


class Category(_Word):
    """Why a pair did not end `ok`: the failure's kind, one word."""

    NONE = ""
    COMPILE = "compile"          # the build failed (with the compiler's log)
    LAUNCH = "launch"            # the launch was refused (geometry, workspace, arguments)
    RUNTIME = "runtime"          # the device failed while it ran, or its spec could not be prepared
    WRONG = "wrong"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    RACED = "raced"
    UNSUPPORTED = "unsupported"


# Statuses of a pair that ran but gave no usable time.
FAILED = (Status.FAILED, Status.TIMEOUT, Status.CRASHED)
# Statuses of a pair whose output was verified correct (a raced-out pair was, before its brief times).
CORRECT = (Status.OK, Status.RACED)


@dataclass
class Result:
    """One variant on one spec, as measured (or judged unsupported)."""

    variant: str
    spec_key: str
    status: Status
    category: Category = Category.NONE
    message: str = ""
    log: str = ""
    gpu: dict | None = None
    cpu: dict | None = None
    checks: dict | None = None
    key: str | None = None
    detail: dict = field(default_factory=dict)
    batch: dict | None = None
    measure: dict | None = None
    # Per-launch samples of each clock; written to `samples`, not loaded with a run.
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # Filled in when read back from a run:
    id: int | None = None
    spec_index: int = -1
    reused: bool = False

    def __post_init__(self) -> None:
        # Rows read back from the store (and callers of old) give plain strings.
        self.status = Status(self.status)
        self.category = Category(self.category)

    def clock(self, name: str) -> dict | None:
        """The statistics of clock `name` (gpu, batch or cpu)."""
        return getattr(self, name)


@dataclass
class Run:
    """A sweep as stored: what was run, where, how, and the results it measured or reused."""

    id: int
    started: float
    finished: float | None
    status: str  # running, complete, interrupted, abandoned
    suite: str
    backend: str
    device: dict
    settings: dict
    baseline: str | None  # the baselines of its specs, ', '-separated, for display
    specs: list[dict]
    results: list[Result]

    def baseline_of(self, index: int) -> str | None:
        """The variant id of the `index`th spec's baseline. Runs stored before each spec
        recorded its own had one for every spec, the run's."""
        return self.specs[index].get("baseline", self.baseline)


def result_fields(result: Result) -> dict:
    """A result as plain data, for JSON output (samples left out)."""
    fields = asdict(result)
    fields.pop("samples", None)
    fields["status"], fields["category"] = str(result.status), str(result.category)
    return fields
