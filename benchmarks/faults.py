"""Planted faulty kernels on any backend: what each costs, and that the sweep goes on.

    python benchmarks/faults.py [--backend auto] [--device N] [--timeout S] [--kernels DIR] [--json PATH]

The faults are the kernel families of tests/faults/kernels (--kernels another folder):
each computes C correctly and adds one fault, in the portable dialect where it can
(so the same source runs on OpenCL, CUDA and Metal), and its manifest's description
says what it plants. Every one that runs on the backend goes into one sweep of
tests/faults/suite.toml through runner.run, with the baseline beside them; the
table gives each fault's stored verdict and message, and whether the baseline still
measured best on every spec after the faults. Exit status 1 if any fault was judged
ok (a fault that went unnoticed) or the baseline was hurt; 2 when the backend
cannot run here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import FAST, pick_backend, skipped, table, write_json

from metalbench import report, runner, variants
from metalbench.specs import load_suite
from metalbench.store import Store

FAULTS = Path(__file__).resolve().parents[1] / "tests" / "faults"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="--timeout of the sweep, seconds")
    parser.add_argument("--kernels", type=Path, default=FAULTS / "kernels", help="the folder of faults")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backend, why = pick_backend(args.backend)
    if backend is None:
        write_json(args.json, skipped("the planted faults", why))
        return 2
    kernels = args.kernels.resolve()
    faults = [f for f in variants.load_families([kernels]) if f.manifest.parent == kernels and backend in f.backends]
    if not faults:
        print(f"faults.py: no family of {kernels} runs on {backend}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "results.sqlite")
        suite = load_suite(FAULTS / "suite.toml")
        chosen = runner.with_baseline(variants.load_variants(backend, [kernels]), backend,
                                      [f"{f.name}/*" for f in faults], specs=suite.specs)
        start = time.perf_counter()
        run_id = runner.run(suite, chosen, backend=backend, store=store,
                            device=args.device, settings=FAST, race=False, timeout=args.timeout)
        wall = time.perf_counter() - start
        run = store.load_run(run_id)
    rep = report.build(run)
    rows, unnoticed = [], 0
    for fault in faults:
        for r in (r for r in run.results if r.variant.startswith(f"{fault.name}/") and r.status != "unsupported"):
            unnoticed += r.status == "ok"
            rows.append([fault.name, fault.description, run.specs[r.spec_index]["label"], r.status,
                         r.message.splitlines()[0][:110]])
    baseline_ok = all(s.best == s.baseline for s in rep.specs)
    title = f"{backend} device {args.device} ({run.device['name']}): {len(faults)} planted faults, {wall:.0f} s"
    print(table(title, ["fault", "plants", "spec", "verdict", "message"], rows, left=5))
    print(f"baseline {run.baseline} best on every spec after the faults: {baseline_ok}; faults judged ok: {unnoticed}")
    write_json(args.json, {"backend": backend, "device": run.device, "wall_s": wall, "rows": rows,
                           "baseline_ok": baseline_ok, "unnoticed": unnoticed})
    return 1 if unnoticed or not baseline_ok else 0


if __name__ == "__main__":
    sys.exit(main())
