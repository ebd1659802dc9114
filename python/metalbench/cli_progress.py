"""The sweep's progress as `metalbench run` shows it on stderr, from the runner's Events.

On a terminal, a live bar: what the sweep is doing (planning, preparing a spec,
compiling, measuring), pairs done of the total, the time taken and an estimate of
the time left, and the pair being measured now (not the last one finished). With
several devices, one more bar per device counts what it measured.

A raced sweep stores a spec's pairs only once all of them have had their brief lap,
so the count of pairs done moves a spec at a time. The bar and the percentage move with
each lap instead: they count a brief lap as half of its pair (_Work). The time left is
the plan's remaining work, costed by what the laps and results so far took (eta.py),
from the sweep's first lap or result on.

Anywhere else (a CI log, a file, a pipe), the same facts one line at a time, at most
one line every LINE_EVERY seconds besides each change of phase and the last line, so
that a log shows a long sweep moving without a line per pair.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .eta import Eta
from .results import Result
from .runner import Events, Planned
from .specs import Spec

__all__ = ["HEARTBEAT", "LINE_EVERY", "LineProgress", "LiveProgress", "QuietProgress",
           "progress_for"]

# Seconds between two lines of progress when stderr is not a terminal, and the longest
# a log goes without a line while one pair takes long (the LM head's naive kernel on a
# CPU driver takes minutes): a line then says what is still being measured.
LINE_EVERY = 5.0
HEARTBEAT = 30.0


class _InFlight:
    """The pair each worker is measuring now."""

    def __init__(self) -> None:
        self.pairs: dict[int, tuple[str, str, str]] = {}  # worker -> (spec key, variant, text)

    def begin(self, spec: Spec, variant: str, worker: int) -> None:
        self.pairs.pop(worker, None)  # newest last
        self.pairs[worker] = (spec.key(), variant, f"{spec.label()}: {variant}")

    def end(self, spec: Spec, result: Result) -> None:
        for worker, (key, variant, _) in list(self.pairs.items()):
            if key == spec.key() and variant == result.variant:
                del self.pairs[worker]

    def text(self) -> str:
        if not self.pairs:
            return ""
        newest = list(self.pairs.values())[-1][2]
        more = len(self.pairs) - 1
        return f"measuring {newest}" + (f" (+{more} more)" if more else "")


class _Work:
    """How much of the sweep is done, in halves of pairs: a brief lap is the first half of its
    pair, the pair's result the rest (both halves for a pair with no lap: reused, failed, or
    measured without a race). Results that come before the sweep starts (reused, or failed
    while planning) count as done. How long the rest takes is eta.Eta's to say."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.pairs = 0  # results in
        self.halves = 0
        self.lapped: set[tuple[str, str]] = set()
        self.eta = Eta()

    def start(self, total: int, now: float) -> None:
        self.total = total
        self.eta.start(now)

    def planned(self, planned: Sequence[Planned]) -> None:
        self.eta.plan(planned)

    def begin(self, spec: Spec, variant: str) -> None:
        self.eta.begin(spec, variant)

    def lap(self, spec: Spec, lap: Result, now: float) -> None:
        self.lapped.add((spec.key(), lap.variant))
        self.halves += 1
        self.eta.lap(spec, lap, now)

    def result(self, spec: Spec, result: Result, now: float) -> None:
        self.pairs += 1
        lapped = (spec.key(), result.variant) in self.lapped
        self.lapped.discard((spec.key(), result.variant))
        self.halves += 1 if lapped else 2
        self.eta.result(spec, result, now)

    def fraction(self) -> float:
        return min(1.0, self.halves / (2 * self.total)) if self.total else 0.0

    def left(self, now: float) -> float | None:
        """Seconds left, or None before any lap or result has said what its work took."""
        return self.eta.left(now)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class QuietProgress(Events):
    """--quiet: no progress; notes (warnings) still reach stderr."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Nothing is on the screen to take down."""

    def note(self, message: str) -> None:
        print(f"metalbench: note: {message}", file=self.stream, flush=True)


class LiveProgress(Events):
    """A rich bar on a terminal: one for the sweep and, with several devices, one per device."""

    def __init__(self, console: Console, devices: list[int]) -> None:
        # The sweep's bar counts halves of pairs (_Work); its count column shows pairs done.
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 TextColumn("{task.fields[pairs]}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[what]}"),
                                 console=console, transient=True)
        self.task = self.progress.add_task("starting", total=None, what="", pairs="", eta="")
        self.per_device = {d: self.progress.add_task(f"  device {d}", total=None, what="", pairs="", eta="")
                           for d in devices} if len(devices) > 1 else {}
        self.work = _Work()
        self.flight = _InFlight()
        self.doing = ""

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.progress.stop()

    def _show(self) -> None:
        self.progress.update(self.task, what=escape(self.flight.text() or self.doing))

    def status(self, text: str) -> None:
        self.doing = text
        if self.progress.tasks[self.task].total is None:
            self.progress.update(self.task, description=escape(text.split(" ", 1)[0]))
        self._show()

    def _count(self) -> None:
        left = self.work.left(time.monotonic())
        self.progress.update(self.task, completed=self.work.halves, pairs=f"{self.work.pairs}/{self.work.total}",
                             eta=f"eta {'-:--:--' if left is None else _clock(left)}")

    def start(self, total: int) -> None:
        self.work.start(total, time.monotonic())
        self.progress.update(self.task, total=2 * total, description="sweep")
        self._count()

    def planned(self, planned: Sequence[Planned]) -> None:
        self.work.planned(planned)

    def begin(self, spec: Spec, variant: str, worker: int = 0) -> None:
        self.flight.begin(spec, variant, worker)
        self.work.begin(spec, variant)
        self._show()

    def lapped(self, spec: Spec, lap: Result) -> None:
        self.work.lap(spec, lap, time.monotonic())
        self._count()

    def result(self, spec: Spec, result: Result) -> None:
        self.flight.end(spec, result)
        self.work.result(spec, result, time.monotonic())
        if self.work.total is not None:
            self._count()
        self._show()
        device = (result.measure or {}).get("device")
        if device in self.per_device:
            done = self.progress.tasks[self.per_device[device]].completed + 1
            self.progress.update(self.per_device[device], completed=done, pairs=f"{done:g}",
                                 what=escape(f"{spec.label()}: {result.variant}"))

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]note:[/] {escape(message)}", highlight=False)


class LineProgress(Events):
    """Progress as plain lines, for a stderr that is not a terminal."""

    def __init__(self, stream: TextIO, every: float = LINE_EVERY, heartbeat: float = HEARTBEAT) -> None:
        self.stream, self.every, self.heartbeat = stream, every, heartbeat
        self.started = time.monotonic()
        self.last = -float("inf")
        self.work = _Work()
        self.said_last = False
        self.flight = _InFlight()
        self.doing = ""
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.beat: threading.Thread | None = None

    def __enter__(self) -> LineProgress:
        self.beat = threading.Thread(target=self._beat, name="metalbench-progress", daemon=True)
        self.beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _beat(self) -> None:
        # Events come only as pairs begin and end; a pair that takes minutes still gets a line.
        while not self.stopped.wait(self.heartbeat / 6):
            if time.monotonic() - self.last >= self.heartbeat:
                self._line(force=True)

    def stop(self) -> None:
        self.stopped.set()
        if self.work.total is not None and self.work.pairs and not self.said_last:
            self._line(force=True)
            self.said_last = True

    def _line(self, force: bool = False) -> None:
        with self.lock:
            self._say(force)

    def _say(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        work = self.work
        if work.total is None:
            counts = "planning"
        else:
            counts = f"{work.pairs}/{work.total} pairs"
            if work.total:
                counts += f" ({100 * work.fraction():.0f}%)"
        parts = [f"metalbench: {counts}", f"{_clock(now - self.started)} elapsed"]
        left = work.left(now)
        if left is not None and work.pairs < (work.total or 0):
            parts.append(f"about {_clock(left)} left")
        what = self.flight.text() or self.doing
        if what and (work.total is None or work.pairs < work.total):
            parts.append(what)
        print(" · ".join(parts), file=self.stream, flush=True)

    def status(self, text: str) -> None:
        changed = text != self.doing
        self.doing = text
        self._line(force=changed and self.work.total is None)

    def start(self, total: int) -> None:
        with self.lock:
            self.work.start(total, time.monotonic())
        self._line(force=True)

    def planned(self, planned: Sequence[Planned]) -> None:
        with self.lock:
            self.work.planned(planned)

    def begin(self, spec: Spec, variant: str, worker: int = 0) -> None:
        self.flight.begin(spec, variant, worker)
        with self.lock:
            self.work.begin(spec, variant)
        self._line()

    def lapped(self, spec: Spec, lap: Result) -> None:
        with self.lock:
            self.work.lap(spec, lap, time.monotonic())
        self._line()

    def result(self, spec: Spec, result: Result) -> None:
        self.flight.end(spec, result)
        with self.lock:
            self.work.result(spec, result, time.monotonic())
        self._line()

    def note(self, message: str) -> None:
        print(f"metalbench: note: {message}", file=self.stream, flush=True)


def progress_for(console: Console, devices: list[int], quiet: bool) -> LiveProgress | LineProgress | QuietProgress:
    """The progress display for stderr `console`: quiet, a live bar on a terminal, else lines."""
    if quiet:
        return QuietProgress(console.file)
    if console.is_terminal:
        return LiveProgress(console, devices)
    return LineProgress(console.file)
