"""How long a sweep has left: the work its plan still holds, costed by what its results took.

The pairs of one sweep differ in cost by a hundred times and more. A kernel's first pair
pays for its build and, on a CPU driver, for the machine code its first launch generates;
a pair of an LM head moves hundreds of megabytes a launch where an attention spec moves
kilobytes. A count of pairs at the recent pace takes every pair to cost what the last
ones did: in a first run of the default suite on PoCL, whose first spec builds and first
launches 81 kernels for its 85 pairs, it showed 9:34 left with 0:41 to go
(benchmarks/eta.py replays stored runs through both).

So each result's record of its own seconds (measure.Worker: its steps, its kernel's build,
its spec's preparation) is split three ways, and the plan's remaining work costed by each:
- a pair's steps (verify, time, check), without its kernel's first launch: per pair, by
  the mean of the pairs of its spec measured so far;
- a kernel's first use (its build and its first launch): by the mean of the kernels
  used so far, for each (variant, dtype) of the plan not yet begun;
- a spec's preparation (inputs, reference, buffers), once per spec not yet begun.
A spec with no result yet is costed by those with results, interpolated on their size
(bytes moved plus FLOPs, on a log scale) and held at the nearest one beyond their range:
a pair's time is bounded by the measurement's caps, so a slope carried past the sizes
seen would overshoot.

The seconds left are that work times the wall seconds the sweep has taken per second
its results recorded (which covers its overheads and its workers in parallel). The specs
under way count down from their last result: the estimate falls as time passes, but
never below what the specs not yet begun will take.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from .results import Result
from .runner import Planned
from .specs import Spec

__all__ = ["Eta"]

# The steps of a pair that measure.Worker times, first_launch being a part of verify.
_STEPS = ("verify", "time", "check")


@dataclass
class _SpecWork:
    size: float                      # log of bytes moved plus FLOPs
    pairs: int = 0                   # planned
    results: int = 0                 # results in
    timed: int = 0                   # of them, with seconds recorded
    steps: float = 0.0               # their steps' seconds, first launches left out
    lapped: set[str] = field(default_factory=set)  # brief laps with no result yet
    prepare: float | None = None     # seconds, once a result says
    begun: bool = False


def _size(spec: Spec) -> float:
    # Bytes and FLOPs both stand for a launch's length: the first where a spec is
    # memory-bound, the second where it is not. Their sum orders specs by either.
    return math.log(max(1, spec.bytes_moved() + spec.flops()))


def _interpolate(points: dict[float, list[float]], x: float) -> float | None:
    """The mean y at x of `points` (x: the ys seen there), linear between the nearest x on
    either side, the nearest one's beyond them; None without points."""
    if not points:
        return None
    xs = sorted(points)
    mean = {p: sum(ys) / len(ys) for p, ys in points.items()}
    if x <= xs[0]:
        return mean[xs[0]]
    if x >= xs[-1]:
        return mean[xs[-1]]
    hi = next(i for i, p in enumerate(xs) if p >= x)
    x0, x1 = xs[hi - 1], xs[hi]
    return mean[x0] + (mean[x1] - mean[x0]) * (x - x0) / (x1 - x0)


class Eta:
    """The time left of one sweep, fed its start, plan and events as they come."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.last: float | None = None            # when the last result came
        self.specs: dict[str, _SpecWork] = {}
        self.kernels_left: set[tuple[str, str]] = set()  # (variant, dtype) not yet begun
        self.kernel_cost: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # build, first launch
        self.recorded = 0.0                       # seconds the results recorded

    def start(self, now: float) -> None:
        self.started = now

    def plan(self, planned: Sequence[Planned]) -> None:
        for p in planned:
            work = self.specs.setdefault(p.spec.key(), _SpecWork(_size(p.spec)))
            work.pairs += len(p.variants)
            self.kernels_left.update((v, p.spec.dtype) for v in p.variants)

    def begin(self, spec: Spec, variant: str) -> None:
        if (work := self.specs.get(spec.key())) is not None:
            work.begun = True
        self.kernels_left.discard((variant, spec.dtype))

    def lap(self, spec: Spec, variant: str) -> None:
        self.begin(spec, variant)
        if (work := self.specs.get(spec.key())) is not None:
            work.lapped.add(variant)

    def result(self, spec: Spec, result: Result, now: float) -> None:
        work = self.specs.get(spec.key())
        if self.started is None or work is None or result.reused:
            return  # a result of planning (reused, or a manifest's fault): no work of the sweep's
        self.begin(spec, result.variant)
        work.results += 1
        work.lapped.discard(result.variant)
        self.last = now
        seconds = (result.measure or {}).get("seconds")
        if not seconds:
            return
        steps = sum(seconds.get(step, 0.0) for step in _STEPS) - seconds.get("first_launch", 0.0)
        work.timed += 1
        work.steps += steps
        self.recorded += steps
        kernel = self.kernel_cost[(result.variant, spec.dtype)]
        if "build" in seconds and not kernel[0]:  # every pair of a kernel carries its build
            kernel[0] = seconds["build"]
            self.recorded += kernel[0]
        if "first_launch" in seconds:
            kernel[1] += seconds["first_launch"]
            self.recorded += seconds["first_launch"]
        if "prepare" in seconds and work.prepare is None:  # and of a spec its preparation
            work.prepare = seconds["prepare"]
            self.recorded += work.prepare

    def left(self, now: float) -> float | None:
        """Seconds the sweep has left at `now`, or None before a result has recorded any."""
        if self.started is None or self.last is None or self.recorded <= 0:
            return None
        per_pair: dict[float, list[float]] = defaultdict(list)
        prepares: dict[float, list[float]] = defaultdict(list)
        for work in self.specs.values():
            if work.timed:
                per_pair[work.size].append(work.steps / work.timed)
            if work.prepare is not None:
                prepares[work.size].append(work.prepare)
        costs = [sum(c) for c in self.kernel_cost.values()]
        kernel = sum(costs) / len(costs) if costs else 0.0
        under_way = not_begun = 0.0
        for work in self.specs.values():
            pairs = work.pairs - work.results - len(work.lapped) / 2  # a lap is half its pair
            if pairs <= 0:
                continue
            each = work.steps / work.timed if work.timed else _interpolate(per_pair, work.size) or 0.0
            if work.begun:
                under_way += pairs * each
            else:
                not_begun += pairs * each + (_interpolate(prepares, work.size) or 0.0)
        not_begun += kernel * len(self.kernels_left)
        wall_per_second = (self.last - self.started) / self.recorded
        return wall_per_second * not_begun + max(0.0, wall_per_second * under_way - (now - self.last))
