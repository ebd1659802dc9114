"""Verifies every variant of a backend on the smoke, odd and default suites, through the runner.

    python benchmarks/check.py [--backend auto|metal|cuda|opencl] [--device N] [--suite NAME]...
                               [--variants GLOB]... [--kernels DIR]... [--timeout S] [--db PATH] [--json PATH]

Each suite is swept by runner.run with fast settings (one warm-up launch, 2 to 3
samples per clock, 50 ms per pair), forced, into a fresh store (or --db): the runner
verifies every pair on its first launch and again after its timed launches, checks
the guard bands around every buffer, that the inputs are left as uploaded and that
the workspace is left zero. A pair that hangs past --timeout is stored as a timeout,
one whose worker dies as crashed; the sweep goes on either way.

Prints every failure (suite, spec, variant, why), then per family: the pairs run,
how many verified (ok, or raced out after a verified brief timing), failed (compile,
launch or runtime error), wrong, timed out and crashed, and the unsupported pairs
(not run). Exit status: 0 when every pair verified, 1 when any failed, was wrong,
timed out or crashed, 2 when the backend cannot run here (said so, and written to the JSON).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from _common import DEFAULT_SUITE, FAST, choose, pick_backend, say, skipped, sweep, table, write_json

from metalbench.specs import load_suite
from metalbench.store import Store

SUITES = ["smoke", "odd", DEFAULT_SUITE]
BAD = ("failed", "wrong", "timeout", "crashed")
VERIFIED = ("ok", "raced")
COLUMNS = ("pairs", "verified", *BAD, "unsupported")


def tally(sweeps: dict) -> tuple[dict[str, Counter], list[dict]]:
    """Per family, how its pairs ended; and every pair that did not verify."""
    families: dict[str, Counter] = {}
    failures = []
    for suite_name, (store, s) in sweeps.items():
        run = store.load_run(s.run_id)
        for r in run.results:
            family = r.variant.split("/")[0]
            count = families.setdefault(family, Counter())
            if r.status == "unsupported":
                count["unsupported"] += 1
                continue
            count["pairs"] += 1
            # A pair raced out (runner.run's race) was verified before its brief timing ended it.
            count["verified" if r.status in VERIFIED else r.status] += 1
            if r.status not in VERIFIED:
                failures.append({"suite": suite_name, "spec": run.specs[r.spec_index]["label"], "variant": r.variant,
                                 "status": r.status, "category": r.category, "message": r.message})
    return families, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--suite", action="append", help=f"suite to verify on (repeatable; default: {', '.join(SUITES)})")
    ap.add_argument("--variants", action="append", default=[], help="glob of variant ids (default: every one)")
    ap.add_argument("--kernels", action="append", type=Path, default=[], help="a folder of your own families")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a pair may take (runner --timeout)")
    ap.add_argument("--db", type=Path, help="result store (default: a fresh one in a temporary folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    backend, why = pick_backend(args.backend)
    if backend is None:
        write_json(args.json, skipped(f"check on --backend {args.backend}", why))
        return 2
    suites = [load_suite(name) for name in args.suite or SUITES]
    chosen = choose(backend, [s for suite in suites for s in suite.specs], args.variants, args.kernels)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mb-check-") as tmp:
        store = Store(args.db or Path(tmp) / "results.sqlite")
        sweeps = {}
        for suite in suites:
            sweeps[suite.name] = (store, sweep(f"check {suite.name}", suite, chosen, backend=backend, store=store,
                                               device=args.device, settings=FAST, timeout=args.timeout))
        families, failures = tally(sweeps)
        device = next(iter(sweeps.values()))[1].report.device
    seconds = time.perf_counter() - started

    for f in failures:
        first = f["message"].splitlines()[0] if f["message"] else ""
        print(f"{f['status'].upper():8} {f['suite']} | {f['spec']} | {f['variant']} | {f['category']}: {first}")
    if failures:
        print()
    total = Counter()
    for count in families.values():
        total.update(count)
    rows = [[name, *(families[name][c] for c in COLUMNS)] for name in sorted(families)]
    rows.append(["all", *(total[c] for c in COLUMNS)])
    bad = sum(total[c] for c in BAD)
    print(table(f"{backend} device {args.device} ({device.get('name')}): {len(chosen)} variants on "
                f"{', '.join(sweeps)}, {seconds:.0f} s", ["family", *COLUMNS], rows))
    print(f"\ncheck: {'FAIL' if bad else 'PASS'}: {total['verified']} of {total['pairs']} pairs verified, "
          f"{bad} did not ({', '.join(f'{total[c]} {c}' for c in BAD)})")
    notes = {name: s.notes for name, (_, s) in sweeps.items() if s.notes}
    write_json(args.json, {
        "backend": backend, "device": device, "suites": list(sweeps), "variants": len(chosen),
        "settings": asdict(FAST), "seconds": seconds, "families": {k: dict(v) for k, v in families.items()},
        "total": dict(total), "failures": failures, "notes": notes, "passed": not bad,
    })
    say(f"check finished in {seconds:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
