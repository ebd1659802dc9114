"""The README's first command (`metalbench run`), timed as a new user runs it, and where its time goes.

    python benchmarks/first_run.py [--suite NAME] [--keep-caches] [--json PATH] [-- RUN OPTIONS...]

Runs `metalbench run` in a fresh process with an empty store, an empty reference cache
and an empty PoCL kernel cache (POCL_CACHE_DIR; --keep-caches uses the user's caches
instead), then reads the store and prints where the sweep's time went, from what every
result records (measure.py: `measure.seconds`, `measure.lap`):

- prepare: each spec's inputs, reference and buffers (once per spec and worker);
- build:   compiling each kernel (once per variant and dtype; builds run side by side,
           so their sum can exceed the wall time they took, which is given apart: each
           kernel records its share of its build step's wall time);
- brief, full: the race's laps, each split into verify (build lookup, the first launch
           and its checks), time (the core's clocks and final round) and check (reading
           back and verifying a round); of verify, the first launches of each kernel
           with its group shape are summed apart: PoCL compiles a kernel's work-group
           function then, one at a time per process, as it builds programs;
- lost:    the seconds a worker ran before it was stopped (--timeout) or died, once a stop;
- the rest: starting Python and the workers, planning, the peak bandwidth, messages
           and the store, and the builds' wall time.

Times are wall-clock seconds; `pip install .` (the build of the package) is not included:
time it apart. Then the progress lines `metalbench run` wrote to its standard error (a
pipe here, so lines rather than a bar) are held against the truth: each line's estimate
of the time left beside the time that was truly left after it, the end being the last
line's elapsed time (whole seconds, as the lines print them). Prints tables and, with
--json, writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import say, table, write_json

from metalbench.results import LAP_STEPS as STEPS
from metalbench.results import LOST
from metalbench.store import Store


def breakdown(store: Store, run_id: int) -> dict:
    """The sums of what the run's results recorded about their own time."""
    run = store.load_run(run_id)
    prepare: dict[tuple[int, float], float] = {}
    build: dict[tuple[str, str], float] = {}
    build_wall: dict[tuple[str, str], float] = {}
    laps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_spec: dict[int, float] = defaultdict(float)
    full_of: dict[int, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    lost, stops = 0.0, 0
    for r in run.results:
        seconds = (r.measure or {}).get("seconds")
        if r.reused or not seconds:
            continue
        if LOST in seconds:  # a worker stopped (--timeout) or dead: the seconds it ran, once a stop
            lost, stops = lost + seconds[LOST], stops + 1
            continue
        dtype = r.spec_key.split("/")[1]
        prepare[(r.spec_index, seconds.get("prepare", 0.0))] = seconds.get("prepare", 0.0)
        if "build" in seconds:
            build[(r.variant, dtype)] = seconds["build"]
            build_wall[(r.variant, dtype)] = seconds.get("build_wall", seconds["build"])
        lap = r.measure.get("lap", "?")
        counts[lap] += 1
        full_of[r.spec_index] += lap == "full"
        for step in STEPS:
            laps[lap][step] += seconds.get(step, 0.0)
            per_spec[r.spec_index] += seconds.get(step, 0.0)
        if "first_launch" in seconds:
            laps[lap]["first_launch"] += seconds["first_launch"]
            laps[lap]["first_launches"] += 1
    sweep = (run.finished or time.time()) - run.started
    pairs = sum(steps[step] for steps in laps.values() for step in STEPS)
    return {
        "run": run_id, "status": run.status, "sweep_s": sweep, "prepare_s": sum(prepare.values()),
        "build_s_summed": sum(build.values()), "build_wall_s": sum(build_wall.values()), "builds": len(build),
        "laps": {lap: {**steps, "pairs": counts[lap]} for lap, steps in laps.items()},
        "pairs_s": pairs, "lost_s": lost, "stops": stops, "rest_s": sweep - pairs - lost - sum(prepare.values()),
        "specs": sorted(((run.specs[i]["label"], s, full_of[i]) for i, s in per_spec.items()), key=lambda x: -x[1]),
    }


# A progress line's elapsed time and, where it has one, its estimate (cli_progress.LineProgress).
_CLOCK = r"(\d+):(\d\d):(\d\d)"
_ELAPSED = re.compile(_CLOCK + " elapsed")
_LEFT = re.compile("about " + _CLOCK + " left")


def _seconds(match: re.Match[str]) -> int:
    h, m, s = (int(g) for g in match.groups())
    return 3600 * h + 60 * m + s


def estimates(stderr: str) -> dict:
    """Each progress line's estimate of the time left against the time truly left after it."""
    lines = [(_seconds(e), _seconds(left) if (left := _LEFT.search(line)) else None)
             for line in stderr.splitlines() if line.startswith("metalbench: ") and (e := _ELAPSED.search(line))]
    if not lines:
        return {"lines": []}
    end = lines[-1][0]
    rows = [(at, end - at, left) for at, left in lines if left is not None and end - at > 0]
    ratios = [left / truly for _, truly, left in rows]
    return {"end_s": end, "lines": rows,
            "ratio": {"median": statistics.median(ratios), "lowest": min(ratios), "highest": max(ratios)} if ratios
            else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=None, help="default: metalbench run's own")
    ap.add_argument("--keep-caches", action="store_true", help="use the user's reference and PoCL caches")
    ap.add_argument("--json", type=Path)
    ap.add_argument("run_options", nargs="*", help="more options for metalbench run (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="metalbench-first-run-") as tmp:
        env = dict(os.environ, METALBENCH_DB=str(Path(tmp) / "results.sqlite"))
        if not args.keep_caches:
            env.update(METALBENCH_CACHE_DIR=str(Path(tmp) / "cache"), POCL_CACHE_DIR=str(Path(tmp) / "pocl"))
        command = [sys.executable, "-m", "metalbench", "run", *(["--suite", args.suite] if args.suite else []),
                   *args.run_options]
        say("running:", " ".join(command))
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        if done.returncode != 0:
            say(done.stderr)
            return done.returncode
        store = Store(Path(tmp) / "results.sqlite", readonly=True)
        found = breakdown(store, store.latest_run())
    found["wall_s"], found["cpu_s"], found["load_after"] = wall, cpu.ru_utime + cpu.ru_stime, load
    found["caches"] = "the user's" if args.keep_caches else "empty"
    rows = [("metalbench run, wall", wall), ("  CPU time of it and its workers", found["cpu_s"]),
            ("  (the machine's load average when it ended)", load),
            ("  the sweep (run started to finished)", found["sweep_s"]),
            ("  before the sweep (Python, workers, peak)", wall - found["sweep_s"]),
            ("prepare (inputs, reference, buffers)", found["prepare_s"]),
            (f"build ({found['builds']} kernels, summed over threads)", found["build_s_summed"]),
            ("  the wall time of the build steps", found["build_wall_s"])]
    for lap, steps in sorted(found["laps"].items()):
        rows.append((f"{lap} laps ({steps['pairs']} pairs)", sum(steps[s] for s in STEPS)))
        for step in STEPS:
            rows.append((f"  {step}", steps[step]))
            if step == "verify" and steps.get("first_launches"):
                rows.append((f"    of it, first launches of a kernel shape ({steps['first_launches']:.0f})",
                             steps["first_launch"]))
    if found["stops"]:
        rows.append((f"workers stopped or dead ({found['stops']}: timeouts, crashes)", found["lost_s"]))
    rows.append(("rest of the sweep (builds' wall, messages, store, planning)", found["rest_s"]))
    print(table(f"where the time of `metalbench run` went ({found['caches']} caches)", ["part", "seconds"],
                [(name, f"{value:.1f}") for name, value in rows]))
    print(table("the specs that took longest (pairs' steps)", ["spec", "seconds", "full laps"],
                [(label, f"{s:.1f}", full) for label, s, full in found["specs"][:8]]))
    found["estimates"] = estimates(done.stderr)
    rows = found["estimates"]["lines"]
    if rows:
        picks = [rows[round(f * (len(rows) - 1) / 9)] for f in range(10)]
        print(table(f"the progress lines' time left ({len(rows)} lines with an estimate; the last line at "
                    f"{found['estimates']['end_s']} s)", ["at (s)", "truly left", "estimated"], picks))
        r = found["estimates"]["ratio"]
        say(f"estimated / truly left over those lines: median {r['median']:.2f}, lowest {r['lowest']:.2f}, "
            f"highest {r['highest']:.2f}")
    write_json(args.json, json.loads(json.dumps(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
