"""How well the progress bar's time left foretold a stored sweep's end: replays the run's
results through eta.Eta and, beside it, the estimate it replaced, against the truth.

    python benchmarks/eta.py --db STORE [--run ID] [--json PATH]

The truth is the run's own: it finished at `runs.finished`, so at each second t of the
sweep `finished - t` seconds were left. The results are fed in the order the store
created them (`results.created`, read from the store's file with sqlite3, since a loaded
Result does not carry it), as the runner's Events did: the plan first (each spec's
variants that the run measured, in the suite's order), then each result at its time.
Brief laps and pairs' beginnings are not stored, so the replay has neither, except that
a spec counts as begun once the spec before it has all its results (one worker takes
the specs in order): the live bar, which has both, moves more smoothly than this.

The estimate it replaced (`pace`): the pairs left at the pace of the last 60 seconds of
results, from the first result on (cli_progress before eta.py).

Prints, at tenths of the sweep, the seconds truly left and each estimate, then each
estimate's median and worst ratio to the truth over every second from the first result
to the last tenth (where little is left, any ratio is large).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
from collections import deque
from pathlib import Path

from _common import say, table, write_json

from metalbench.eta import Eta
from metalbench.runner import Planned
from metalbench.specs import spec_from_key
from metalbench.store import Store

PACE_WINDOW = 60.0  # seconds: the replaced estimate's window


class Pace:
    """The replaced estimate: pairs left at the recent pace of results."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.seen: deque[tuple[float, int]] = deque()

    def result(self, now: float) -> None:
        self.done += 1
        self.seen.append((now, self.done))
        while len(self.seen) > 2 and now - self.seen[1][0] >= PACE_WINDOW:
            self.seen.popleft()

    def left(self, now: float) -> float | None:
        if len(self.seen) < 2:
            return None
        then, done_then = self.seen[0]
        if self.done <= done_then or now <= then:
            return None
        return (self.total - self.done) * (now - then) / (self.done - done_then)


def replay(db: Path, run_id: int | None) -> dict:
    store = Store(db)
    with sqlite3.connect(db) as raw:
        if run_id is None:
            run_id = raw.execute("SELECT max(id) FROM runs WHERE status='complete'").fetchone()[0]
        created = dict(raw.execute("SELECT r.id, r.created FROM results r JOIN run_results rr ON rr.result_id=r.id "
                                   "WHERE rr.run_id=?", (run_id,)))
    run = store.load_run(run_id)
    measured = [r for r in run.results if not r.reused and r.status != "unsupported" and r.measure]
    specs = [spec_from_key(s["key"]) for s in run.specs]
    variants: dict[int, list[str]] = {}
    for r in measured:
        variants.setdefault(r.spec_index, []).append(r.variant)
    order = sorted(variants)
    eta, pace = Eta(), Pace(len(measured))
    eta.start(run.started)
    eta.plan([Planned(specs[i], tuple(variants[i])) for i in order])
    events = sorted(measured, key=lambda r: created[r.id])
    waiting = {i: len(variants[i]) for i in order}
    eta.begin(specs[order[0]], variants[order[0]][0])
    end = run.finished
    rows, ratios = [], {"eta": [], "pace": []}
    first = created[events[0].id]
    t, k = run.started, 0
    while t <= end:
        while k < len(events) and created[events[k].id] <= t:
            r = events[k]
            eta.result(specs[r.spec_index], r, created[r.id])
            pace.result(created[r.id])
            waiting[r.spec_index] -= 1
            if not waiting[r.spec_index] and (nxt := next((i for i in order if waiting[i]), None)) is not None:
                eta.begin(specs[nxt], variants[nxt][0])
            k += 1
        truth = end - t
        new, old = eta.left(t), pace.left(t)
        if t >= first and t <= run.started + 0.9 * (end - run.started):
            for name, value in (("eta", new), ("pace", old)):
                if value is not None:
                    ratios[name].append(value / truth)
        rows.append((t - run.started, truth, new, old))
        t += 1.0
    tenths = [rows[min(len(rows) - 1, round(f * (len(rows) - 1) / 10))] for f in range(1, 10)]
    summary = {name: {"median_ratio": statistics.median(v), "lowest_ratio": min(v), "highest_ratio": max(v),
                      "seconds": len(v)} for name, v in ratios.items() if v}
    return {"db": str(db), "run": run_id, "suite": run.suite, "backend": run.backend,
            "device": run.device.get("name"), "sweep_s": end - run.started, "pairs": len(measured),
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
    print(table("estimate / truth, each second from the first result to 90% of the sweep",
                ["estimate", "median", "lowest", "highest", "seconds"],
                [(name, f"{s['median_ratio']:.2f}", f"{s['lowest_ratio']:.2f}", f"{s['highest_ratio']:.2f}",
                  s["seconds"]) for name, s in found["summary"].items()]))
    write_json(args.json, found)


if __name__ == "__main__":
    main()
