"""How close the default suite's best variants come to what the GPU allows, in one run.

    python benchmarks/roof.py [--device N] [--json PATH]

On a CUDA device (the figures of the kernel-library issue were asked of an H200):

1. The sweep: the default suite, every variant, cold, racing on, in worker processes
   as `metalbench run` runs it, from empty kernel and reference caches. Its wall time
   includes compiling, preparing and racing (target: under 30 s).
2. The LM head (the largest spec, 1 x 151936 x 896: 272 MB of fp16 weights): the best
   variant's cold batch time and its bandwidth against the device's peak (target: 90%
   or more), beside cuBLAS's from the same sweep and the read ceiling, a kernel that
   only reads the same number of bytes (cuda_floor.py; no GEMV can beat it).
3. The small specs (all but the four plain matmuls: the fused QKV projection with its
   bias and the 15 attention GEMVs): the best variant's cold batch time against
   cuBLAS's, and the median of the ratios (target: 1.5 or more). Beside them, the time
   floor of a kernel that moves an attention spec's bytes and computes nothing
   (cuda_floor.py's last rung, at 14 x 64 x 64): cuBLAS's time over that floor is the
   most any GEMV could gain over cuBLAS on that spec.

Every time is the batch clock's (back-to-back launches, what a decode loop pays),
cold: each launch reads inputs that are not in L2.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from _common import choose, cuda_args, fmt, median, say, sweep, table, verdict, write_json
from cuda_floor import FLOOR, ladder, read_ceiling

import metalbench
from metalbench import runner
from metalbench.specs import load_suite
from metalbench.store import Store

SWEEP_TARGET_S = 30.0
LM_HEAD_TARGET = 0.90   # of the peak bandwidth
SMALL_TARGET = 1.5      # cuBLAS's time over the best variant's, median of the small specs
SUITE = "qwen2.5-0.5b-decode"


def main() -> int:
    args = cuda_args(__doc__, "the roof figures")
    if args is None:
        return 2
    suite = load_suite(SUITE)
    backend = "cuda"
    chosen = choose(backend, suite.specs)
    with tempfile.TemporaryDirectory(prefix="mb-roof-") as tmp:
        os.environ["METALBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        store = Store(Path(tmp) / "results.sqlite")
        run = sweep("cold sweep, racing, empty caches", suite, chosen, backend=backend, store=store,
                    device=args.device, settings=runner.Settings(cold=True))
        store.close()
        dev = metalbench.open_device(backend, args.device)
        floor = ladder(dev, only=FLOOR)[0]["cold"]["batch_us"]
        ceiling = read_ceiling(dev)
    rep = run.report
    peak = float(rep.peak_bandwidth or dev.info["peak_bandwidth"])
    def row_us(spec_report: object, variant: str | None) -> float | None:
        row = next((r for r in spec_report.rows if r.variant == variant), None)
        return None if row is None else row.us("batch")

    counts = rep.counts
    print(table(f"1. the sweep: {suite.name} on {rep.device['name']} ({rep.device['driver']}), cold, racing",
                ["variants", "pairs", "measured fully", "raced out", "wrong", "failed", "seconds", "target",
                 "verdict"],
                [[len(chosen), counts["measured"], counts["measured"] - counts["raced"], counts["raced"],
                  counts.get("wrong", 0), counts.get("failed", 0), f"{run.seconds:.1f}", f"< {SWEEP_TARGET_S:g}",
                  verdict(run.seconds < SWEEP_TARGET_S)]]))
    print()

    lm = max(rep.specs, key=lambda s: s.bytes or 0)
    lm_best, lm_base = row_us(lm, lm.best), row_us(lm, lm.baseline)
    read = ceiling["best"]

    def share(us: float | None) -> str:
        return "-" if not us else f"{lm.bytes / us / 1e6:.3f} TB/s, {lm.bytes / (us * 1e-6) / peak:.1%}"

    lm_share = lm.bytes / (lm_best * 1e-6) / peak if lm_best else 0.0
    print(table(f"2. the LM head, {lm.label}: {lm.bytes / 1e6:.0f} MB; peak {peak / 1e12:.2f} TB/s "
                f"({rep.peak_source or 'device'})",
                ["kernel", "batch us", "bandwidth, of peak", "target", "verdict"],
                [[f"best: {lm.best}", fmt(lm_best), share(lm_best), f">= {LM_HEAD_TARGET:.0%}",
                  verdict(lm_share >= LM_HEAD_TARGET)],
                 [f"cuBLAS: {lm.baseline}", fmt(lm_base), share(lm_base), "", ""],
                 [f"read ceiling: unroll {read['unroll']}, {read['blocks_per_sm']} blocks/SM of {read['threads']}",
                  fmt(read["batch_us"]), share(read["batch_us"]), "", ""]]))
    print()

    small = [(s, sr) for s, sr in zip(suite.specs, rep.specs, strict=True) if s.op != "matmul"]
    rows, ratios, ceilings = [], [], []
    for spec, sr in small:
        best, cublas = row_us(sr, sr.best), row_us(sr, sr.baseline)
        ratio = cublas / best if best and cublas else None
        most = cublas / floor if cublas and spec.op == "matmul_alpha_beta" else None
        if ratio is not None:
            ratios.append(ratio)
        if most is not None:
            ceilings.append(most)
        rows.append([sr.label, sr.best or "-", fmt(best), fmt(cublas), fmt(ratio), fmt(most)])
    got = median(ratios)
    print(table(f"3. the {len(small)} small specs: cold batch us; the floor of an attention spec's bytes is "
                f"{floor:.2f} us",
                ["spec", "best", "best us", "cuBLAS us", "cuBLAS / best", "cuBLAS / floor"], rows, left=2))
    print(table("", ["figure", "median", "target", "verdict"],
                [["cuBLAS / best", fmt(got), f">= {SMALL_TARGET:g}", verdict(got >= SMALL_TARGET)],
                 ["cuBLAS / floor (the most any GEMV could reach)", fmt(median(ceilings)), "", ""]]))
    write_json(args.json, {
        "device": rep.device, "suite": suite.name, "variants": len(chosen), "settings": rep.settings,
        "sweep": run.summary(),
        "lm_head": {"spec": lm.label, "bytes": lm.bytes, "peak_bandwidth": peak, "best": lm.best, "best_us": lm_best,
                    "cublas_us": lm_base, "read_ceiling": ceiling, "share_of_peak": lm_share},
        "small": {"floor_us": floor, "rows": rows, "median_ratio": got, "median_ceiling": median(ceilings)},
    })
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
