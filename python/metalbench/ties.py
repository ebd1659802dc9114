"""When two measured times cannot be told apart: the tie rule, shared by the report
(which tags a best variant's tie group) and the runner (which races variants out).

Two variants tie when the 95% confidence intervals of their medians overlap, or when
their medians differ by less than `floor` (1% by default). The intervals are the
core's order-statistic intervals (csrc/core/stats.cpp): distribution-free, the same
for the same samples. The floor is there because within one run the intervals can
be far narrower than what changes from one run to the next (clock and thermal state,
placement in memory): a difference smaller than that is not a win a rerun would repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONFIDENCE", "TIE_FLOOR", "Estimate", "estimate", "ties_with"]

TIE_FLOOR = 0.01
# The level of the core's confidence intervals of the median.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A clock's median and its 95% confidence interval, in nanoseconds."""

    median: float
    low: float
    high: float


def estimate(stats: dict | None) -> Estimate | None:
    """The estimate in a clock's stored statistics, or None where it has no samples."""
    if not stats or not stats.get("count"):
        return None
    return Estimate(stats["median"], stats.get("ci_lo", stats["min"]), stats.get("ci_hi", stats["max"]))


def ties_with(best: Estimate, other: Estimate, floor: float = TIE_FLOOR) -> bool:
    """Whether `other` cannot be told apart from `best`, the faster of the two."""
    return other.median <= best.median * (1 + floor) or other.low <= best.high
