"""How well the progress bar's time left foretold a stored sweep's end: replays the run's
laps and results through eta.Eta and, beside it, the estimate it replaced, against the truth.

    python benchmarks/eta.py --db STORE [--run ID] [--json PATH]

The truth is the run's own: it finished at `runs.finished`, so at each second t of the
sweep `finished - t` seconds were left. The events are rebuilt from the store as the
runner's Events gave them: the plan first (each spec's variants that the run measured,
in the suite's order), then the laps, pairs' beginnings and results. A result's time is
`results.created` (read from the store's file with sqlite3, since a loaded Result does
not carry it). Brief laps are not stored apart: a raced spec's results are all created
when the race decides, each with its lap's seconds. So the laps are put back to back,
ending then, each as long as the seconds it recorded, each pair beginning as its lap
starts; the lap of a pair that went on to a full measurement is lost (its result holds
the full lap's seconds), so those pairs have none.

The estimate it replaced (`pace`): the pairs left, counting a lap as half its pair, at
the pace of the last 60 seconds, from the first result on (cli_progress before eta.py).

Prints, at tenths of the sweep, the seconds truly left and each estimate, then each
estimate's median, lowest and highest ratio to the truth over every second from its
first estimate to 90% of the sweep (where little is left, any ratio is large).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
from collections import deque
from pathlib import Path

from _common import say, table, write_json

from metalbench.eta import Eta
from metalbench.results import LAP_STEPS, Result, Run
from metalbench.runner import Planned
from metalbench.specs import spec_from_key
from metalbench.store import Store

PACE_WINDOW = 60.0  # seconds: the replaced estimate's window


class Pace:
    """The replaced estimate: halves of pairs left at the recent pace, from the first result on."""

    def __init__(self, total: int) -> None:
        self.total, self.halves = total, 0
        self.seen: deque[tuple[float, int]] = deque()

    def add(self, halves: int, now: float, result: bool) -> None:
        self.halves += halves
        if self.seen or result:
            self.seen.append((now, self.halves))
            while len(self.seen) > 2 and now - self.seen[1][0] >= PACE_WINDOW:
                self.seen.popleft()

    def left(self, now: float) -> float | None:
        if len(self.seen) < 2:
            return None
        then, halves_then = self.seen[0]
        if self.halves <= halves_then or now <= then:
            return None
        return (2 * self.total - self.halves) * (now - then) / (self.halves - halves_then)


def _steps(r: Result) -> float:
    seconds = r.measure["seconds"]
    return sum(seconds.get(step, 0.0) for step in LAP_STEPS)


def events_of(run: Run, created: dict[int, float]) -> list[tuple[float, str, Result]]:
    """(time, 'begin' | 'lap' | 'result', result) of a stored run, as the module's docstring says."""
    out: list[tuple[float, str, Result]] = []
    by_spec: dict[int, list[Result]] = {}
    for r in run.results:
        if not r.reused and r.status != "unsupported" and r.measure:
            by_spec.setdefault(r.spec_index, []).append(r)
    for results in by_spec.values():
        briefs = [r for r in results if r.measure.get("lap") == "brief"]
        if briefs:
            end = min(created[r.id] for r in briefs)  # the race decided when the last lap ended
            for r in reversed(sorted(briefs, key=lambda r: r.id)):
                out.append((end, "lap", r))
                end -= _steps(r)
                out.append((end, "begin", r))
        out += [(created[r.id], "result", r) for r in results]
    return sorted(out, key=lambda e: (e[0], e[1] != "begin"))


def replay(db: Path, run_id: int | None) -> dict:
    store = Store(db)
    with sqlite3.connect(db) as raw:
        if run_id is None:
            run_id = raw.execute("SELECT max(id) FROM runs WHERE status='complete'").fetchone()[0]
        created = dict(raw.execute("SELECT r.id, r.created FROM results r JOIN run_results rr ON rr.result_id=r.id "
                                   "WHERE rr.run_id=?", (run_id,)))
    run = store.load_run(run_id)
    specs = [spec_from_key(s["key"]) for s in run.specs]
    events = events_of(run, created)
    variants: dict[int, list[str]] = {}
    for _, kind, r in events:
        if kind == "result":
            variants.setdefault(r.spec_index, []).append(r.variant)
    eta, pace = Eta(), Pace(sum(len(v) for v in variants.values()))
    eta.start(run.started)
    eta.plan([Planned(specs[i], tuple(variants[i])) for i in sorted(variants)])
    lapped: set[tuple[int, str]] = set()
    end = run.finished
    rows, ratios = [], {"eta": [], "pace": []}
    t, k = run.started, 0
    while t <= end:
        while k < len(events) and events[k][0] <= t:
            when, kind, r = events[k]
            spec = specs[r.spec_index]
            if kind == "begin":
                eta.begin(spec, r.variant)
            elif kind == "lap":
                eta.lap(spec, r, when)
                lapped.add((r.spec_index, r.variant))
                pace.add(1, when, result=False)
            else:
                eta.result(spec, r, when)
                pace.add(1 if (r.spec_index, r.variant) in lapped else 2, when, result=True)
            k += 1
        truth = end - t
        new, old = eta.left(t), pace.left(t)
        if t <= run.started + 0.9 * (end - run.started):
            for name, value in (("eta", new), ("pace", old)):
                if value is not None:
                    ratios[name].append(value / truth)
        rows.append((t - run.started, truth, new, old))
        t += 1.0
    tenths = [rows[min(len(rows) - 1, round(f * (len(rows) - 1) / 10))] for f in range(1, 10)]
    summary = {name: {"median_ratio": statistics.median(v), "lowest_ratio": min(v), "highest_ratio": max(v),
                      "seconds": len(v)} for name, v in ratios.items() if v}
    first = min(created[r.id] for _, kind, r in events if kind == "result")
    return {"db": str(db), "run": run_id, "suite": run.suite, "backend": run.backend,
            "device": run.device.get("name"), "sweep_s": end - run.started, "pairs": pace.total,
            "first_result_s": first - run.started, "tenths": tenths, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, required=True, help="a store holding a complete run")
    ap.add_argument("--run", type=int, help="the run's id (default: the last complete one)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    found = replay(args.db, args.run)
    say(f"run {found['run']} of {found['db']}: {found['suite']} on {found['backend']} ({found['device']}), "
        f"{found['pairs']} pairs measured in {found['sweep_s']:.1f} s, first result at {found['first_result_s']:.1f} s")
    print(table("seconds left at tenths of the sweep", ["at (s)", "truly left", "eta.py", "pace of the last 60 s"],
                [(f"{a:.0f}", f"{b:.0f}", None if c is None else f"{c:.0f}", None if d is None else f"{d:.0f}")
                 for a, b, c, d in found["tenths"]]))
    print()
    print(table("estimate / truth, each second from its first estimate to 90% of the sweep",
                ["estimate", "median", "lowest", "highest", "seconds"],
                [(name, f"{s['median_ratio']:.2f}", f"{s['lowest_ratio']:.2f}", f"{s['highest_ratio']:.2f}",
                  s["seconds"]) for name, s in found["summary"].items()]))
    write_json(args.json, found)


if __name__ == "__main__":
    main()
