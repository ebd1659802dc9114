"""The default suite in bfloat16 on a CUDA GPU: does the kernel library still beat cuBLAS?

    python benchmarks/bf16.py [--device N] [--json PATH]

The built-in qwen2.5-0.5b-decode suite with every spec's dtype set to bfloat16 (the
checkpoints' own type; the traced times it records were float16, so they are left out),
swept as `metalbench run --cold` sweeps it: every CUDA variant that takes bfloat16,
racing on, worker processes, cuBLAS in the same run (cublasGemmEx on CUDA_R_16BF with
float accumulation), from empty kernel and reference caches, ranked by the cold batch
clock (back-to-back launches, each reading inputs that are not in L2).

Targets (issue 23, section 3: the fp16 suite's, in bfloat16): every pair verified (none
wrong or failed); the best variant beats cuBLAS on every spec; the LM head (the largest
spec) at 90% or more of the measured peak bandwidth. For every spec the table gives
cuBLAS's time, the best variant and its time, and their ratio.

On a machine without CUDA it prints one SKIPPED line and exits 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from _common import choose, cuda_args, fmt, say, sweep, table, verdict, write_json

from metalbench import runner
from metalbench.specs import Suite, load_suite
from metalbench.store import Store

SUITE = "qwen2.5-0.5b-decode"
LM_HEAD_TARGET = 0.90  # of the peak bandwidth, as benchmarks/roof.py asks of float16


def bf16_suite() -> Suite:
    base = load_suite(SUITE)
    specs = tuple(dataclasses.replace(s, dtype="bfloat16", orig=None) for s in base.specs)
    return dataclasses.replace(base, name=f"{base.name}-bf16", specs=specs)


def main() -> int:
    args = cuda_args(__doc__, "the bfloat16 suite")
    if args is None:
        return 2
    suite = bf16_suite()
    chosen = choose("cuda", suite.specs)
    with tempfile.TemporaryDirectory(prefix="mb-bf16-") as tmp:
        os.environ["METALBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        store = Store(Path(tmp) / "results.sqlite")
        run = sweep("bfloat16, cold, racing, empty caches", suite, chosen, backend="cuda", store=store,
                    device=args.device, settings=runner.Settings(cold=True))
        store.close()
    rep = run.report
    counts = rep.counts
    peak = float(rep.peak_bandwidth or 0.0)
    rows, beaten = [], 0
    for sr in rep.specs:
        by_name = {r.variant: r for r in sr.rows}
        best_us = by_name[sr.best].us("batch") if sr.best in by_name else None
        base = sr.baseline  # cublas/baseline: every spec of the suite is unquantized
        base_us = by_name[base].us("batch") if base in by_name else None
        ratio = base_us / best_us if best_us and base_us else None
        wins = sr.best is not None and sr.best != base and ratio is not None and ratio > 1.0
        beaten += wins
        rows.append([sr.label, fmt(base_us), sr.best or "(none correct)", fmt(best_us), fmt(ratio),
                     "yes" if wins else "no"])
    lm = max(rep.specs, key=lambda s: s.bytes or 0)
    lm_us = next((r.us("batch") for r in lm.rows if r.variant == lm.best), None)
    lm_share = lm.bytes / (lm_us * 1e-6) / peak if lm_us and peak else 0.0
    print(table(f"{suite.name} on {rep.device['name']} ({rep.device['driver']}): cold batch us",
                ["spec", "cuBLAS", "best", "best us", "cuBLAS / best", "beats cuBLAS"], rows))
    print()
    wrong = counts.get("wrong", 0) + counts.get("failed", 0)
    print(table("targets (issue 23, section 3: bf16)", ["figure", "value", "target", "verdict"], [
        ["pairs wrong or failed", f"{wrong} of {counts['measured']}", "0", verdict(wrong == 0)],
        ["specs where the best beats cuBLAS", f"{beaten} of {len(rep.specs)}", "all",
         verdict(beaten == len(rep.specs))],
        [f"LM head {lm.label}: {lm.best}", f"{lm_share:.1%} of {peak / 1e12:.2f} TB/s", f">= {LM_HEAD_TARGET:.0%}",
         verdict(lm_share >= LM_HEAD_TARGET)],
        ["sweep wall time, s", f"{run.seconds:.1f}", "", ""]]))
    say(f"{len(chosen)} variants; {counts['measured']} pairs measured, {counts['raced']} raced out")
    write_json(args.json, {"suite": suite.name, "device": rep.device, "sweep_s": run.seconds, "counts": counts,
                           "peak_bandwidth": peak, "specs": rows, "beaten": beaten, "lm_head_share": lm_share})
    return 0


if __name__ == "__main__":
    sys.exit(main())
