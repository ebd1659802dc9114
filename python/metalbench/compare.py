"""`metalbench compare`: what changed between two runs, pair by pair, and whether it is real.

Runs A and B may come from one store or from two (two machines, or a baseline store
kept by CI). Pairs are matched by spec key and variant id, so runs on different
devices (M1 against M3, H100 against H200) compare too; the output then says the
devices differ. Only pairs measured in both runs are compared (unsupported in either
is left out).

The time of a pair is the median of the ranking clock (A's; B's must be the same
clock, or the comparison is refused). Whether a change is real is decided on the
stored per-launch samples of that clock:

- Mann-Whitney U test, two-sided, on A's samples against B's (ranks with ties
  averaged, the normal approximation with tie and continuity corrections; numpy
  only). The change is real when p < ALPHA (0.01). The test asks whether one run's
  launches tend to be slower than the other's, with no assumption on the shape of
  their distribution (launch times are skewed and have outliers).
- Where either side has fewer than MIN_SAMPLES (5) samples, or no samples (stores
  of schema 1), the test has too little to work with, and the change is real when
  the 95% confidence intervals of the two medians do not overlap (report.py's rule
  for ties, without its floor).

A regression is a real change that makes B slower than A by more than the
threshold (5% by default), or a verdict that got worse: a pair correct in A that is
wrong, failed, timed out or crashed in B. `compare` exits 1 when there is any. A pair
raced out (verified, then timed only briefly, as slower than the best) counts as
correct, and its brief times are compared like any others.

A comparison that would compare nothing is refused (CompareError, exit 2), so that a CI
gate never passes on it: two runs with no pair in common (two suites, two backends,
disjoint variants), or a run still in progress. What makes two runs less alike than
they look is said in a line of its own: different suites, backends, devices, cache
states (warm, cold) or drivers, and a run that did not finish (its missing pairs are
"only in" the other).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from .errors import InputError
from .report import CLOCK_NAMES
from .results import CORRECT, Result, Run, Status
from .store import Store
from .tables import Column, fit, table

__all__ = ["ALPHA", "COMPARE_SCHEMA", "MIN_SAMPLES", "CompareError", "Comparison", "Pair", "compare", "mann_whitney_u",
           "render", "to_json"]

# The comparison JSON's format (semver, as the report's): docs/json.md.
# 1.1.0: schema, differences, a.status and b.status.
COMPARE_SCHEMA = "1.1.0"

ALPHA = 0.01
MIN_SAMPLES = 5
# What a worse verdict is called, by B's status, for a pair correct in A.
_WORSE = {Status.WRONG: "newly wrong", Status.FAILED: "newly failing", Status.TIMEOUT: "timeout",
          Status.CRASHED: "crashed"}
# Correct verdicts: a raced-out pair was verified, then timed only briefly (runner.py).
_CORRECT = CORRECT
_TIMED = (*CORRECT, Status.WRONG)


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(U of x, two-sided p) of the Mann-Whitney U test, by the normal approximation with
    tie and continuity corrections. p is 1.0 when every value is the same."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs samples on both sides")
    both = np.concatenate([x, y])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # Tied values share the mean of the ranks they span (1-based).
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    ties = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return u, 1.0
    delta = u - n1 * n2 / 2.0
    z = (abs(delta) - 0.5) / math.sqrt(variance) if abs(delta) >= 0.5 else 0.0
    return u, min(1.0, math.erfc(z / math.sqrt(2.0)))


class CompareError(InputError, ValueError):
    """Two runs that cannot be compared as asked; the message says why."""


@dataclass
class Pair:
    """One variant on one spec, in both runs."""

    spec_key: str
    label: str
    variant: str
    status_a: str
    status_b: str
    a_us: float | None = None
    b_us: float | None = None
    change_pct: float | None = None   # (B / A - 1) x 100: positive is slower
    test: str = ""                    # mann-whitney, ci-overlap, or "" when not timed in both
    p_value: float | None = None      # Mann-Whitney's
    significant: bool = False
    verdict: str = ""                 # newly wrong, newly failing, timeout, crashed, fixed, or ""
    regression: bool = False

    @property
    def outcome(self) -> str:
        """faster, slower, same (within noise), or the verdict change."""
        if self.verdict:
            return self.verdict
        if self.change_pct is None:
            return "-"
        if not self.significant:
            return "same (noise)"
        return "slower" if self.change_pct > 0 else "faster"


@dataclass
class Side:
    """What one run was: where it came from and what it ran on."""

    run: int
    store: str
    suite: str
    backend: str
    device: str
    driver: str
    rank_by: str
    mode: str
    status: str = "complete"


@dataclass
class Comparison:
    a: Side
    b: Side
    rank_by: str
    threshold_pct: float
    devices_differ: bool
    pairs: list[Pair]
    only_a: int                       # pairs measured in A only
    only_b: int
    best: list[dict[str, Any]] = field(default_factory=list)  # per spec: the best variant of each run
    differences: list[str] = field(default_factory=list)  # how the two runs differ besides their times
    schema: str = COMPARE_SCHEMA

    @property
    def regressions(self) -> list[Pair]:
        return [p for p in self.pairs if p.regression]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for pair, data in zip(self.pairs, out["pairs"], strict=True):
            data["outcome"] = pair.outcome
        out["regressions"] = len(self.regressions)
        return out


def _side(run: Run, store: Store) -> Side:
    d = run.device
    return Side(run.id, str(store.path), run.suite, run.backend, f"{d.get('name')} ({d.get('vendor')})",
                str(d.get("driver", "")), run.settings.get("rank_by", "gpu"),
                "cold" if run.settings.get("cold") else "warm", run.status)


def _differences(a: Side, b: Side) -> list[str]:
    """How two runs differ besides their times, one line each, for the reader to weigh."""
    out = []
    if a.suite != b.suite:
        out.append(f"different suites: A ran {a.suite!r}, B {b.suite!r}; only specs of both (by shape) are compared")
    if a.backend != b.backend:
        out.append(f"different backends: A ran on {a.backend}, B on {b.backend}; their kernels and timers differ")
    if a.mode != b.mode:
        out.append(f"different cache states: A is {a.mode}, B is {b.mode}; cold times are slower by design")
    if a.device == b.device and a.driver != b.driver:
        out.append(f"different drivers: A {a.driver!r}, B {b.driver!r}")
    for name, side in (("A", a), ("B", b)):
        if side.status != "complete":
            out.append(f"run {name} ({side.run}) is {side.status}: pairs it never reached are counted as only in "
                       f"{'B' if name == 'A' else 'A'}, not compared")
    return out


def _pairs_of(run: Run) -> dict[tuple[str, str], Result]:
    """Results by (spec key, variant), unsupported left out; a spec listed twice keeps its first."""
    out: dict[tuple[str, str], Result] = {}
    for r in run.results:
        if r.status != Status.UNSUPPORTED:
            out.setdefault((r.spec_key, r.variant), r)
    return out


def _median_ci(stats: dict | None) -> tuple[float, float, float] | None:
    if not stats or not stats.get("count"):
        return None
    return (stats["median"] / 1e3, stats.get("ci_lo", stats["min"]) / 1e3, stats.get("ci_hi", stats["max"]) / 1e3)


def _judge(pair: Pair, ra: Result, rb: Result, store_a: Store, store_b: Store, clock: str) -> None:
    a, b = _median_ci(ra.clock(clock)), _median_ci(rb.clock(clock))
    if a is None or b is None or a[0] <= 0:
        return
    pair.a_us, pair.b_us = a[0], b[0]
    pair.change_pct = (b[0] / a[0] - 1.0) * 100.0
    xs = store_a.samples(ra.id).get(clock) if ra.id is not None else None
    ys = store_b.samples(rb.id).get(clock) if rb.id is not None else None
    if xs is not None and ys is not None and min(xs.size, ys.size) >= MIN_SAMPLES:
        pair.test = "mann-whitney"
        _, pair.p_value = mann_whitney_u(xs, ys)
        pair.significant = pair.p_value < ALPHA
    else:
        pair.test = "ci-overlap"
        pair.significant = a[2] < b[1] or b[2] < a[1]


def compare(store_a: Store, run_a: int, store_b: Store, run_b: int, threshold_pct: float = 5.0) -> Comparison:
    """Compares run `run_a` of `store_a` with run `run_b` of `store_b` (the rule: this
    module's docstring)."""
    ra, rb = store_a.load_run(run_a), store_b.load_run(run_b)
    for run, store in ((ra, store_a), (rb, store_b)):
        if run.status == "running" and store.alive(run.id):
            raise CompareError(f"{store.path}: run {run.id} is still running: compare it when it has finished")
        if run.status == "running":  # its process is gone: killed before it could say so
            run.status = "abandoned"
    a, b = _side(ra, store_a), _side(rb, store_b)
    if a.rank_by != b.rank_by:
        raise CompareError(f"run {a.run} is ranked by the {a.rank_by} clock and run {b.run} by the {b.rank_by} "
                         "clock: their times do not compare (run one again with --rank-by)")
    clock = a.rank_by
    labels = {s["key"]: s["label"] for s in (*rb.specs, *ra.specs)}
    pa, pb = _pairs_of(ra), _pairs_of(rb)
    pairs: list[Pair] = []
    order = {s["key"]: i for i, s in reversed(list(enumerate(ra.specs)))}
    for key in sorted(pa.keys() & pb.keys(), key=lambda k: (order.get(k[0], 0), k[1])):
        x, y = pa[key], pb[key]
        pair = Pair(key[0], labels.get(key[0], key[0]), key[1], x.status, y.status)
        if x.status in _CORRECT and y.status in _WORSE:
            pair.verdict = _WORSE[y.status]
            pair.regression = True
        elif x.status in _WORSE and y.status in _CORRECT:
            pair.verdict = "fixed"
        if x.status in _TIMED and y.status in _TIMED:
            _judge(pair, x, y, store_a, store_b, clock)
            if pair.significant and pair.change_pct is not None and pair.change_pct > threshold_pct \
                    and y.status in _CORRECT:
                pair.regression = True
        pairs.append(pair)
    if not pairs:
        raise CompareError(f"run {a.run} ({a.suite}, {a.backend}) and run {b.run} ({b.suite}, {b.backend}) have no "
                           f"pair in common ({len(pa)} pairs in A, {len(pb)} in B; pairs match by spec shape and "
                           "variant id): there is nothing to compare")
    return Comparison(a, b, clock, threshold_pct, a.device != b.device, pairs, len(pa.keys() - pb.keys()),
                      len(pb.keys() - pa.keys()), _best(ra, rb, pairs, clock), _differences(a, b))


def _best(ra: Run, rb: Run, pairs: list[Pair], clock: str) -> list[dict[str, Any]]:
    """Per spec of A also in B: the fastest correct variant of each run by the clock."""
    def fastest(run: Run) -> dict[str, tuple[str, float]]:
        out: dict[str, tuple[str, float]] = {}
        for r in run.results:
            stats = r.clock(clock) if r.status == Status.OK else None
            if stats and stats.get("count") and (r.spec_key not in out or stats["median"] / 1e3 < out[r.spec_key][1]):
                out[r.spec_key] = (r.variant, stats["median"] / 1e3)
        return out

    fa, fb = fastest(ra), fastest(rb)
    rows = []
    seen = set()
    for s in ra.specs:
        if s["key"] in seen or s["key"] not in {x["key"] for x in rb.specs}:
            continue
        seen.add(s["key"])
        a, b = fa.get(s["key"]), fb.get(s["key"])
        rows.append({"spec_key": s["key"], "label": s["label"], "best_a": a[0] if a else None,
                     "a_us": a[1] if a else None, "best_b": b[0] if b else None, "b_us": b[1] if b else None,
                     "change_pct": (b[1] / a[1] - 1) * 100 if a and b else None})
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def _pct_style(value: float | None, threshold: float | None = None) -> str | None:
    if value is None or threshold is None:
        return None
    return "red" if value > threshold else "green" if value < -threshold else None


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(c: Comparison, console: Console, every: bool = False) -> None:
    """The comparison as tables: the header, the best per spec, then every pair (or with
    `every` False, the pairs that changed: real changes and verdicts)."""
    where = escape(f"A = run {c.a.run} ({c.a.store}) -> B = run {c.b.run} ({c.b.store})")
    console.print(f"[bold]metalbench compare[/]: {where}")
    for name, side in (("A", c.a), ("B", c.b)):
        console.print(escape(f"{name}: {side.suite} · {side.backend} · {side.device} · driver {side.driver} · "
                             f"{side.mode} · {side.status}"))
    if c.devices_differ:
        devices = escape(f"A ran on {c.a.device}, B on {c.b.device}")
        console.print(f"[yellow]devices differ[/]: {devices}; pairs are matched by spec key and variant id")
    for line in c.differences:
        console.print(f"[yellow]note:[/] {escape(line)}")
    console.print(f"time: median {CLOCK_NAMES[c.rank_by]} time per launch; a change is real when a Mann-Whitney U "
                  f"test of the stored samples gives p < {ALPHA:g} (95% confidence intervals of the medians apart "
                  f"where a side has fewer than {MIN_SAMPLES} samples); a regression is a real slowdown over "
                  f"{c.threshold_pct:g}%, or a correct pair that became wrong, failed, timed out or crashed")
    columns = [Column("spec"), Column("best A"), Column("A us", numeric=True), Column("best B"),
               Column("B us", numeric=True), Column("change", numeric=True)]
    rows = [[row["label"], row["best_a"] or "(none correct)", _us(row["a_us"]), row["best_b"] or "(none correct)",
             _us(row["b_us"]), _pct(row["change_pct"])] for row in c.best]
    for r, row in enumerate(c.best):
        columns[5].styles[r] = _pct_style(row["change_pct"]) or ""
    console.print()
    console.print(table(columns, rows, fit(columns, rows, console.width), "best correct variant per spec"))
    shown = c.pairs if every else [p for p in c.pairs if p.verdict or p.significant]
    title = "every pair" if every else "pairs that changed (--all shows every pair)"
    columns = [Column("spec"), Column("variant"), Column("A us", numeric=True), Column("B us", numeric=True),
               Column("change", numeric=True), Column("p", numeric=True, keep=1), Column("outcome")]
    rows, styles = [], []
    for r, p in enumerate(shown):
        p_text = "CI" if p.test == "ci-overlap" else f"{p.p_value:.2g}" if p.p_value is not None else "-"
        rows.append([p.label, p.variant, _us(p.a_us), _us(p.b_us), _pct(p.change_pct), p_text,
                     p.outcome + (" [REGRESSION]" if p.regression else "")])
        columns[4].styles[r] = _pct_style(p.change_pct, c.threshold_pct) or ""
        styles.append("red" if p.regression else None)
    if not shown:
        rows, styles = [["(none)", "", "", "", "", "", ""]], [None]
    console.print()
    console.print(table(columns, rows, fit(columns, rows, console.width), title, styles))
    same = sum(1 for p in c.pairs if p.change_pct is not None and not p.significant and not p.verdict)
    faster = sum(1 for p in c.pairs if p.outcome == "faster")
    slower = sum(1 for p in c.pairs if p.outcome == "slower")
    verdicts = sum(1 for p in c.pairs if p.verdict)
    console.print(f"\n{len(c.pairs)} pairs in both runs: {faster} faster, {slower} slower, {same} the same within "
                  f"noise, {verdicts} changed verdict; {c.only_a} only in A, {c.only_b} only in B")
    n = len(c.regressions)
    console.print(f"[bold red]{n} regression{'s' if n != 1 else ''}[/] past {c.threshold_pct:g}%" if n else
                  f"[green]no regression[/] past {c.threshold_pct:g}%")


def to_json(c: Comparison) -> str:
    """The comparison as JSON text (docs/json.md)."""
    return json.dumps(c.to_dict(), indent=2) + "\n"


def write_json(c: Comparison, path: Path) -> None:
    """Writes to_json(c) to `path`."""
    Path(path).write_text(to_json(c), encoding="utf-8")
