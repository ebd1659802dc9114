"""What measuring every pair in a worker process costs: the default suite's sweep time with
worker isolation (runner.run's default) and without (isolated=False), on one device.

    python benchmarks/isolation.py [--backend auto|metal|cuda|opencl] [--device N] [--suite NAME]
                                   [--variants GLOB]... [--rounds N] [--json PATH]

Target: isolation costs at most 10% of the sweep's wall time.

How. One untimed sweep first fills the on-disk kernel cache and the reference cache,
so that no timed sweep compiles a kernel or computes a reference. Then --rounds
rounds (2 by default) of one isolated and one in-process sweep, both forced (every
pair measured again) with the same settings (the runner's defaults, as
`metalbench run` uses them) into the same store; the order flips from one round to
the next (isolated, in-process, in-process, isolated, ...), so that a drift over the
run (GPU clock and temperature, other load on the host) falls on both modes alike
rather than on whichever always runs second. The cost is the median isolated sweep
time over the median in-process one, minus one. Alternating is chosen over "warm
once, then time each once" because one timed sweep per mode would take any slow
moment of the host or the GPU as the cost of a mode.

What an isolated sweep pays on top: starting a worker process (a fresh interpreter,
importing metalbench, opening the device), handing each spec's pairs over a pipe,
and loading each compiled kernel in that process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_SUITE, choose, median, pick_backend, say, skipped, sweep, table, verdict, write_json

from metalbench.specs import load_suite
from metalbench.store import Store

TARGET = 0.10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--suite", default=DEFAULT_SUITE)
    ap.add_argument("--variants", action="append", default=[], help="glob of variant ids (default: every one)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of one sweep of each mode (default 2)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    backend, why = pick_backend(args.backend)
    if backend is None:
        write_json(args.json, skipped(f"isolation on --backend {args.backend}", why))
        return 2
    suite = load_suite(args.suite)
    chosen = choose(backend, suite.specs, args.variants)
    modes = {"isolated": True, "in-process": False}
    times: dict[str, list[float]] = {name: [] for name in modes}
    sweeps: dict[str, list[dict]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory(prefix="mb-isolation-") as tmp:
        store = Store(Path(tmp) / "results.sqlite")
        common = {"backend": backend, "store": store, "device": args.device}
        warm = sweep("warm-up (untimed)", suite, chosen, **common)
        device = warm.report.device
        for i in range(args.rounds):
            order = list(modes) if i % 2 == 0 else list(reversed(modes))
            for name in order:
                s = sweep(f"round {i + 1} {name}", suite, chosen, isolated=modes[name], **common)
                times[name].append(s.seconds)
                sweeps[name].append(s.summary())

    iso, local = median(times["isolated"]), median(times["in-process"])
    cost = iso / local - 1
    passed = cost <= TARGET
    measured = {name: [s["counts"]["measured"] for s in runs] for name, runs in sweeps.items()}
    rows = [[name, " ".join(f"{t:.1f}" for t in times[name]), median(times[name]), " ".join(map(str, measured[name]))]
            for name in modes]
    print(table(f"{suite.name} ({len(suite.specs)} specs, {len(chosen)} variants) on {backend} device "
                f"{args.device} ({device.get('name')}), warm kernel cache, {args.rounds} rounds",
                ["mode", "sweeps s", "median s", "pairs measured"], rows))
    print(f"\nisolation cost: {cost:+.1%} of the in-process sweep (target <= {TARGET:.0%}): {verdict(passed)}")
    write_json(args.json, {
        "backend": backend, "device": device, "suite": suite.name, "variants": len(chosen), "rounds": args.rounds,
        "warm_up": warm.summary(), "seconds": times, "sweeps": sweeps, "median_seconds": {"isolated": iso,
                                                                                         "in-process": local},
        "cost": cost, "target": TARGET, "passed": passed,
    })
    say("isolation finished")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
