"""How long a sweep has left: the work its plan still holds, costed by what its laps and results took.

The pairs of one sweep differ in cost by a hundred times and more. A kernel's first pair
pays for its build and, on a CPU driver, for the machine code its first launch generates;
a pair of an LM head moves hundreds of megabytes a launch where an attention spec moves
kilobytes. A count of pairs at the recent pace takes every pair to cost what the last
ones did: in a first run of the default suite on PoCL, whose first spec builds and first
launches 81 kernels for its 85 pairs, it said 9:28 left with 0:47 to go
(benchmarks/results/eta_live_pocl.txt; benchmarks/eta.py replays a stored run through both).

So the seconds that each brief lap and each result record (measure.Worker: the pair's
steps, its kernel's build, its spec's preparation; a raced-out pair's result is its lap's,
counted once) are split three ways, and the plan's remaining work costed by each:
- a pair's steps (verify, time, check), without its kernel's first launch: per pair, by
  the pairs of its spec measured so far (their brief laps and the full laps of those
  that went on, shared out over them); a pair whose lap is in counts as half done;
- a kernel's (a variant's in a dtype) first use: its build, by the mean share of a build
  step's wall time a kernel took (builds run side by side), for each kernel of a spec
  not yet begun (a job builds all of its kernels before its first pair),
  and its first launch, by the mean, for each kernel no pair has begun with;
- a spec's preparation (inputs, reference, buffers), once per spec not yet begun.
A pair whose worker overran --timeout or died records the seconds it ran (results.LOST):
they count toward the pace below, and not toward the pairs left.
A spec with nothing recorded yet is costed by those with, interpolated on their size
(bytes moved plus FLOPs, on a log scale) and held at the nearest one beyond their range:
a pair's time is bounded by the measurement's caps, so a slope carried past the sizes
seen would overshoot.

The seconds left are that work times the wall seconds per recorded second (which covers
the sweep's overheads and its workers in parallel), taken from the first moment anything
was recorded on, one to one before a second moment. Not from the sweep's start: before
its first lap it starts the workers and builds all of the first spec's kernels, whose
builds the laps then record one by one, so that the first lap of the default suite on
PoCL put the time left at 5.8 times the truth. The specs under way count down from the
last lap or result: the estimate falls as time passes, but never below what the specs
not yet begun will take.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from .results import LAP_STEPS, LOST, Result
from .runner import Planned
from .specs import Spec

__all__ = ["Eta"]


@dataclass
class _SpecWork:
    size: float                      # log of bytes moved plus FLOPs
    pairs: int = 0                   # planned
    results: int = 0                 # results in
    lapped: set[str] = field(default_factory=set)  # brief laps with no result yet
    recorded: set[str] = field(default_factory=set)  # variants whose seconds are counted
    steps: float = 0.0               # those seconds' steps (brief and full laps), first launches left out
    prepare: float | None = None     # seconds, once a lap or result says
    kernels: set[tuple[str, str]] = field(default_factory=set)  # (variant, dtype) of its pairs
    begun: bool = False
    early: bool = False              # begun before anything was recorded

    def per_pair(self) -> float | None:
        """The steps' seconds of a planned pair: its brief lap and its share of the full laps."""
        return self.steps / len(self.recorded) if self.recorded else None


def _size(spec: Spec) -> float:
    # Bytes and FLOPs both stand for a launch's length: the first where a spec is
    # memory-bound, the second where it is not. Their sum orders specs by either.
    return math.log(max(1, spec.bytes_moved() + spec.flops()))


def _curve(points: dict[float, list[float]]) -> list[tuple[float, float]]:
    """(x, the mean of its ys) of `points`, by x."""
    return sorted((x, sum(ys) / len(ys)) for x, ys in points.items())


def _interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """y at x on `curve` (_curve's), linear between the nearest x on either side, the
    nearest one's beyond them; None on an empty curve."""
    if not curve:
        return None
    hi = bisect.bisect_left(curve, x, key=lambda point: point[0])
    if hi == 0:
        return curve[0][1]
    if hi == len(curve):
        return curve[-1][1]
    (x0, y0), (x1, y1) = curve[hi - 1], curve[hi]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class Eta:
    """The time left of one sweep, fed its start, plan and events as they come."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.specs: dict[str, _SpecWork] = {}
        # Kernels, as (variant, dtype): a job builds all of its kernels before its first pair,
        # and a kernel's first pair launches it first.
        self.unbuilt: set[tuple[str, str]] = set()     # of specs not yet begun
        self.unlaunched: set[tuple[str, str]] = set()  # with no pair begun
        self.builds: dict[tuple[str, str], float] = {}
        self.launches: dict[tuple[str, str], float] = {}  # first launches' seconds, 0 where none was recorded
        self.recorded = 0.0        # seconds the laps and results recorded
        self.first: float | None = None  # when something was first recorded
        self.untimed = 0.0         # of the seconds recorded, those spent before then
        self.last: float | None = None   # when the last lap or result came

    def start(self, now: float) -> None:
        self.started = now

    def plan(self, planned: Sequence[Planned]) -> None:
        for p in planned:
            work = self.specs.setdefault(p.spec.key(), _SpecWork(_size(p.spec)))
            work.pairs += len(p.variants)
            work.kernels.update((v, p.spec.dtype) for v in p.variants)
            self.unbuilt.update(work.kernels)
            self.unlaunched.update(work.kernels)

    def begin(self, spec: Spec, variant: str) -> None:
        if (work := self.specs.get(spec.key())) is not None and not work.begun:
            work.begun = True
            self.unbuilt -= work.kernels
        self.unlaunched.discard((variant, spec.dtype))

    def lap(self, spec: Spec, result: Result, now: float) -> None:
        """A brief lap's result, before its pair's own: its seconds count now, and not again."""
        if (work := self._work(spec, result)) is not None:
            work.lapped.add(result.variant)
            self._record(spec, work, result, now)

    def result(self, spec: Spec, result: Result, now: float) -> None:
        """A pair's result: the race's verdict on its lap, a full lap's, or a pair's without a race."""
        if (work := self._work(spec, result)) is None:
            return
        work.results += 1
        lapped = result.variant in work.lapped
        work.lapped.discard(result.variant)
        lost = LOST in ((result.measure or {}).get("seconds") or {})  # its full lap overran, say
        if lapped and (result.measure or {}).get("lap") != "full" and not lost:
            self.last = now  # the race's verdict on a lap whose seconds are counted already
        else:
            self._record(spec, work, result, now)

    def _work(self, spec: Spec, result: Result) -> _SpecWork | None:
        work = self.specs.get(spec.key())
        if self.started is None or work is None or result.reused:
            return None  # a result of planning (reused, or a manifest's fault): no work of the sweep's
        self.begin(spec, result.variant)
        return work

    def _record(self, spec: Spec, work: _SpecWork, result: Result, now: float) -> None:
        self.last = now
        seconds = (result.measure or {}).get("seconds")
        if not seconds:
            return
        if self.first is None:
            self.first = now
            for w in self.specs.values():
                w.early = w.begun
        before = self.recorded
        if LOST in seconds:
            # A pair whose worker overran or died: its seconds went by and count toward the
            # pace, but not toward what its spec's other pairs will take.
            self.recorded += seconds[LOST]
            if now == self.first:
                self.untimed += self.recorded - before
            return
        steps = sum(seconds.get(step, 0.0) for step in LAP_STEPS) - seconds.get("first_launch", 0.0)
        work.recorded.add(result.variant)
        work.steps += steps
        self.recorded += steps
        kernel = (result.variant, spec.dtype)
        self.launches[kernel] = self.launches.get(kernel, 0.0) + seconds.get("first_launch", 0.0)
        self.recorded += seconds.get("first_launch", 0.0)
        if "build" in seconds and kernel not in self.builds:  # every pair of a kernel carries its build
            # Its share of its build step's wall time: builds run side by side (16 NVRTC
            # threads on a GPU machine), so the compilers' own seconds overstate the wait.
            build = seconds.get("build_wall", seconds["build"])
            self.builds[kernel] = build
            self.recorded += build
            if work.early and now != self.first:  # built before the first record, with its spec's others
                self.untimed += build
        if "prepare" in seconds and work.prepare is None:  # and of a spec its preparation
            work.prepare = seconds["prepare"]
            self.recorded += work.prepare
        if now == self.first:
            self.untimed += self.recorded - before

    def left(self, now: float) -> float | None:
        """Seconds the sweep has left at `now`, or None before a lap or result has recorded any."""
        if self.first is None or self.last is None:
            return None
        pair_points: dict[float, list[float]] = defaultdict(list)
        prepare_points: dict[float, list[float]] = defaultdict(list)
        for work in self.specs.values():
            if (each := work.per_pair()) is not None:
                pair_points[work.size].append(each)
            if work.prepare is not None:
                prepare_points[work.size].append(work.prepare)
        per_pair, prepares = _curve(pair_points), _curve(prepare_points)
        under_way = not_begun = 0.0
        for work in self.specs.values():
            pairs = work.pairs - work.results - len(work.lapped) / 2  # a lap is half its pair
            if pairs <= 0:
                continue
            each = work.per_pair()
            if each is None:
                each = _interpolate(per_pair, work.size) or 0.0
            if work.begun:
                under_way += pairs * each
            else:
                not_begun += pairs * each + (_interpolate(prepares, work.size) or 0.0)
        not_begun += _mean(self.builds) * len(self.unbuilt) + _mean(self.launches) * len(self.unlaunched)
        span, since = self.last - self.first, self.recorded - self.untimed
        wall_per_second = span / since if span > 0 and since > 0 else 1.0
        return wall_per_second * not_begun + max(0.0, wall_per_second * under_way - (now - self.last))


def _mean(values: dict[tuple[str, str], float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0
