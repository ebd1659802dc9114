"""The default suite swept five ways on one device: what each costs, and whether the picks agree.

    python benchmarks/sweeps.py [--backend auto] [--device N] [--suite NAME] [--json PATH]

1. racing, one isolated worker, empty kernel and reference caches (what a first run costs);
2. the same again, forced, caches warm: the reference the others are compared with;
3. in this process (no worker isolation): the isolation's cost, target at most 10%;
4. two workers on the device: time, and the same best picks or tie groups as 2;
5. without racing (every variant measured fully): time, and whether racing's pick
   lies in the exhaustive sweep's tie group and the exhaustive pick in racing's, spec
   by spec (the racing issue's check).

Picks "agree" when each sweep's best lies in the other's tie group (report.build).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import choose, pick_backend, say, sweep, table, verdict, write_json

from metalbench.specs import load_suite
from metalbench.store import Store

LABELS = ("1 racing, empty caches", "2 racing, warm caches", "3 in this process", "4 two workers",
          "5 without racing")


def agree(a: object, b: object) -> list[bool]:
    """Per spec: each sweep's best lies in the other's tie group."""
    return [x.best in y.ties and y.best in x.ties for x, y in zip(a.report.specs, b.report.specs, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--suite", default="qwen2.5-0.5b-decode")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    backend, why = pick_backend(args.backend)
    if backend is None:
        print(f"SKIPPED every sweep: {why}")
        return 2
    suite = load_suite(args.suite)
    everything = choose(backend)
    with tempfile.TemporaryDirectory(prefix="mb-sweeps-") as tmp:
        os.environ["METALBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        store = Store(Path(tmp) / "results.sqlite")
        common = {"backend": backend, "store": store, "device": args.device}
        first = sweep(LABELS[0], suite, everything, **common)
        base = sweep(LABELS[1], suite, everything, **common)
        here = sweep(LABELS[2], suite, everything, isolated=False, **common)
        two = sweep(LABELS[3], suite, everything, workers=2, **common)
        full = sweep(LABELS[4], suite, everything, race=False, **common)
        store.close()
    cost = here.seconds and (base.seconds / here.seconds - 1)
    rows = [[label, f"{s.seconds:.1f}", s.report.counts["measured"], s.report.counts["raced"]]
            for label, s in zip(LABELS, (first, base, here, two, full), strict=True)]
    print(table(f"{backend} device {args.device}: {suite.name}", ["sweep", "seconds", "measured", "raced out"], rows))
    workers_agree, race_agree = agree(base, two), agree(base, full)
    checks = [
        ["isolation costs at most 10% (2 against 3)", f"{100 * cost:+.1f}%", verdict(cost <= 0.10)],
        ["two workers pick as one (4 against 2)", f"{sum(workers_agree)}/{len(workers_agree)} specs",
         verdict(all(workers_agree))],
        ["racing picks as the exhaustive sweep (2 against 5)", f"{sum(race_agree)}/{len(race_agree)} specs",
         verdict(all(race_agree))],
    ]
    print(table("checks", ["check", "figure", "verdict"], checks))
    for spec, ok_w, ok_r, b, t, f in zip(base.report.specs, workers_agree, race_agree, base.report.specs,
                                         two.report.specs, full.report.specs, strict=True):
        if not (ok_w and ok_r):
            say(f"{spec.label}: racing {b.best} (ties {b.ties}), two workers {t.best} (ties {t.ties}), "
                f"exhaustive {f.best} (ties {f.ties})")
    write_json(args.json, {"backend": backend, "device": base.report.device, "sweeps": [s.summary() for s in
                           (first, base, here, two, full)], "checks": checks})
    return 0 if all(c[2] == verdict(True) for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
