"""The sweep's progress as `metalbench run` shows it on stderr, from the runner's Events.

On a terminal, a live bar: what the sweep is doing (planning, preparing a spec,
compiling, measuring), pairs done of the total, the time taken and an estimate of
the time left, and the pair being measured now (not the last one finished). With
several devices, one more bar per device counts what it measured.

Anywhere else (a CI log, a file, a pipe), the same facts one line at a time, at most
one line every LINE_EVERY seconds besides each change of phase and the last line, so
that a log shows a long sweep moving without a line per pair.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .results import Result
from .runner import Events
from .specs import Spec

__all__ = ["HEARTBEAT", "LINE_EVERY", "LineProgress", "LiveProgress", "QuietProgress", "progress_for"]

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
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[what]}"), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=None, what="")
        self.per_device = {d: self.progress.add_task(f"  device {d}", total=None, what="") for d in devices} \
            if len(devices) > 1 else {}
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

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total, description="sweep")

    def begin(self, spec: Spec, variant: str, worker: int = 0) -> None:
        self.flight.begin(spec, variant, worker)
        self._show()

    def result(self, spec: Spec, result: Result) -> None:
        self.flight.end(spec, result)
        self.progress.update(self.task, advance=1)
        self._show()
        device = (result.measure or {}).get("device")
        if device in self.per_device:
            self.progress.update(self.per_device[device], advance=1,
                                 what=escape(f"{spec.label()}: {result.variant}"))

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]note:[/] {escape(message)}", highlight=False)


class LineProgress(Events):
    """Progress as plain lines, for a stderr that is not a terminal."""

    def __init__(self, stream: TextIO, every: float = LINE_EVERY, heartbeat: float = HEARTBEAT) -> None:
        self.stream, self.every, self.heartbeat = stream, every, heartbeat
        self.started = time.monotonic()
        self.last = -float("inf")
        self.total: int | None = None
        self.done = 0
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
        if self.total is not None and self.done:
            self._line(force=True)
            self.total = None  # said once

    def _line(self, force: bool = False) -> None:
        with self.lock:
            self._say(force)

    def _say(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        if self.total is None:
            counts = "planning"
        else:
            counts = f"{self.done}/{self.total} pairs"
            if self.total:
                counts += f" ({100 * self.done / self.total:.0f}%)"
        parts = [f"metalbench: {counts}", f"{_clock(elapsed)} elapsed"]
        if self.total and self.done and self.done < self.total:
            parts.append(f"about {_clock(elapsed / self.done * (self.total - self.done))} left")
        what = self.flight.text() or self.doing
        if what and (self.total is None or self.done < self.total):
            parts.append(what)
        print(" · ".join(parts), file=self.stream, flush=True)

    def status(self, text: str) -> None:
        changed = text != self.doing
        self.doing = text
        self._line(force=changed and self.total is None)

    def start(self, total: int) -> None:
        self.total = total
        self._line(force=True)

    def begin(self, spec: Spec, variant: str, worker: int = 0) -> None:
        self.flight.begin(spec, variant, worker)
        self._line()

    def result(self, spec: Spec, result: Result) -> None:
        self.flight.end(spec, result)
        self.done += 1
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
