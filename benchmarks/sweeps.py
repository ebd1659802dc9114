"""The default suite swept several ways on one device: what each costs, and whether the picks agree.

    python benchmarks/sweeps.py [--backend auto] [--device N] [--suite NAME] [--only 1,2,3,4,5]
                                [--control] [--tie PCT] [--json PATH]

1. racing, one isolated worker, empty kernel and reference caches (what a first run costs);
2. the same again, forced, caches warm: the reference the others are compared with;
3. in this process (no worker isolation): the isolation's cost, target at most 10%;
4. two workers on the device: time, and the same best picks or tie groups as 2;
5. without racing (every variant measured fully): time, and whether racing's pick
   lies in the exhaustive sweep's tie group and the exhaustive pick in racing's, spec
   by spec (the racing issue's check);
6. with --control, without racing once more: how often two exhaustive sweeps agree,
   the instrument's own reproducibility, which racing cannot be asked to beat.

Picks "agree" when each sweep's best lies in the other's tie group (report.build).
--tie sets the tie rule's floor for racing and for the tie groups alike: a device
whose times move more than 1% from one run to the next (a CPU driver on a shared
machine) needs a wider one for any two sweeps to agree. --only lists the sweeps to
run (1 and 5 at least, since every check needs them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import Sweep, choose, pick_backend, say, sweep, table, verdict, write_json

from metalbench.specs import load_suite
from metalbench.store import Store
from metalbench.ties import TIE_FLOOR

LABELS = ("1 racing, empty caches", "2 racing, warm caches", "3 in this process", "4 two workers",
          "5 without racing", "6 without racing, again")


def agree(a: object, b: object) -> list[bool]:
    """Per spec: each sweep's best lies in the other's tie group."""
    return [x.best in y.ties and y.best in x.ties for x, y in zip(a.report.specs, b.report.specs, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--suite", default="qwen2.5-0.5b-decode")
    ap.add_argument("--tie", type=float, default=100 * TIE_FLOOR, help="tie floor, percent (default 1)")
    ap.add_argument("--control", action="store_true", help="sweep 6: a second exhaustive sweep")
    ap.add_argument("--only", default="1,2,3,4,5", help="sweeps to run, e.g. 1,5 (default 1,2,3,4,5)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    wanted = {int(x) for x in args.only.split(",")} | ({6} if args.control else set())
    if not {1, 5} <= wanted or not wanted <= set(range(1, 7)):
        ap.error("--only takes sweep numbers from 1 to 6 and must include 1 and 5")
    backend, why = pick_backend(args.backend)
    if backend is None:
        print(f"SKIPPED every sweep: {why}")
        return 2
    suite = load_suite(args.suite)
    everything = choose(backend, suite.specs)
    options = [{}, {}, {"isolated": False}, {"workers": 2}, {"race": False}, {"race": False}]
    done: dict[int, Sweep] = {}
    with tempfile.TemporaryDirectory(prefix="mb-sweeps-") as tmp:
        os.environ["METALBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        store = Store(Path(tmp) / "results.sqlite")
        for n in sorted(wanted):
            done[n] = sweep(LABELS[n - 1], suite, everything, backend=backend, store=store, device=args.device,
                            tie_floor=args.tie / 100, **options[n - 1])
        store.close()
    rows = [[LABELS[n - 1], f"{s.seconds:.1f}", s.report.counts["measured"], s.report.counts["raced"]]
            for n, s in done.items()]
    print(table(f"{backend} device {args.device}: {suite.name}, tie floor {args.tie:g}%",
                ["sweep", "seconds", "measured", "raced out"], rows))
    racing = done.get(2, done[1])  # racing with warm caches where it ran, else from empty ones
    checks = []
    if 3 in done and 2 in done:
        cost = done[3].seconds and (done[2].seconds / done[3].seconds - 1)
        checks.append(["isolation costs at most 10% (2 against 3)", f"{100 * cost:+.1f}%", verdict(cost <= 0.10)])
    if 4 in done:
        same = agree(racing, done[4])
        checks.append(["two workers pick as one (4 against 2)", f"{sum(same)}/{len(same)} specs", verdict(all(same))])
    race_agree = agree(racing, done[5])
    checks.append([f"racing picks as the exhaustive sweep ({2 if 2 in done else 1} against 5)",
                   f"{sum(race_agree)}/{len(race_agree)} specs", verdict(all(race_agree))])
    if 6 in done:
        control = agree(done[5], done[6])
        checks.append(["control: two exhaustive sweeps agree (5 against 6)", f"{sum(control)}/{len(control)} specs",
                       "-"])
    print(table("checks", ["check", "figure", "verdict"], checks))
    for i, (spec, ok) in enumerate(zip(racing.report.specs, race_agree, strict=True)):
        if not ok:
            full = done[5].report.specs[i]
            say(f"{spec.label}: racing {spec.best} (ties {spec.ties}), exhaustive {full.best} (ties {full.ties})")
    write_json(args.json, {"backend": backend, "device": racing.report.device, "tie_floor": args.tie / 100,
                           "sweeps": {LABELS[n - 1]: s.summary() for n, s in done.items()}, "checks": checks})
    return 0 if all(c[2] in (verdict(True), "-") for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
