"""Decoding with MLX-quantized weights: the library's quantized kernels beside what an app
without a fused kernel pays (dequantize, then cuBLAS), and a plain read of the same bytes.

    python benchmarks/quant.py [--device N] [--json PATH]

On a CUDA device, the q4-g64 decode weight products of Qwen2.5-0.5B and Llama-3.2-1B
(`metalbench suite from-config tests/data/<model>.json --quant affine-q4-g64 --tokens 1`,
its quantized products only: attention is not quantized) are swept as `metalbench run
--cold` sweeps them: the quantized families (qnaive, qgemv, qmv, qskinny, qtcgemv) and the spec's
baseline, cublas-dequant (B dequantized to fp16 into a scratch buffer, then cuBLAS, timed
as one launch), racing on, ranked by the cold batch clock. For every product the table
gives the baseline's time, the fastest quantized kernel (where racing left it out, its
brief lap's time, marked *), their ratio, the kernel's share of the HBM peak (the bytes
the product moves, quantized B included, over its time) and the plain-read floor of those
bytes (benchmarks/cuda_floor.py's read kernel, as shapes.py runs it).

Targets (issue 23, section 3): the best quantized GEMV reaches 80% of the HBM peak on
every product with 8 MB or more of quantized weights, and is at least 3x faster than
dequantize-then-cuBLAS on the median product.

On a machine without CUDA it prints one SKIPPED line and exits 2.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from _common import choose, cuda_args, fmt, median, say, sweep, table, verdict, write_json
from shapes import CONFIGS, best_library, from_config, is_weight_product, read_floor

import metalbench
from metalbench import runner
from metalbench.specs import Suite
from metalbench.store import Store

MODELS = {"qwen": "Qwen2.5-0.5B", "llama": "Llama-3.2-1B"}
QUANT = "affine-q4-g64"
FAMILIES = ["qnaive/*", "qgemv/*", "qmv/*", "qskinny/*", "qtcgemv/*"]
PEAK_SHARE = 0.80            # of the HBM peak, on products with at least BIG_WEIGHTS of quantized B
BIG_WEIGHTS = 8 * 2**20
OVER_DEQUANT = 3.0           # median of dequantize-then-cuBLAS time / best quantized time


def quant_suite(model: str, folder: Path) -> Suite:
    """The model's decode step at m = 1, its weights quantized: the weight products only."""
    name = f"{model}-decode-1-q4"
    suite = from_config(CONFIGS[model], folder / f"{name}.toml", "--tokens", "1", "--quant", QUANT, "--name", name)
    products = [s for s in suite.specs if s.quant is not None and is_weight_product(s)]
    if not products:
        raise SystemExit(f"quant: {model}'s suite has no quantized weight product")
    return dataclasses.replace(suite, specs=tuple(products))


def rows_of(model: str, suite: Suite, rep: object, peak: float, floors: dict[int, float]) -> list[dict]:
    rows = []
    for spec, sr in zip(suite.specs, rep.specs, strict=True):
        base = next((r for r in sr.rows if r.variant == sr.baseline), None)
        base_us = base.us("batch") if base else None
        best, best_us, brief = best_library(sr, sr.baseline)
        moved = spec.bytes_moved()
        floor = floors.get(moved)

        def share(us: float | None, moved: int = moved) -> float | None:
            return moved / (us * 1e-6) / peak if us and peak else None

        rows.append({"model": MODELS[model], "product": sr.label, "quant_bytes": spec.b_bytes(), "bytes": moved,
                     "baseline": sr.baseline, "baseline_us": base_us, "best": best, "best_us": best_us,
                     "best_brief": brief, "speedup": base_us / best_us if base_us and best_us else None,
                     "share_of_peak": share(best_us), "floor_us": floor, "floor_share_of_peak": share(floor),
                     "best_over_floor": best_us / floor if best_us and floor else None})
    return rows


def judge(rows: list[dict]) -> list[tuple[str, str, bool | None, str]]:
    """(figure, target, met, at the floor) for each target; the last is the figure a kernel as
    fast as the plain read of the same bytes would have: a target the floor misses is out of
    reach of any kernel that reads those bytes, on this device and clock."""
    out = []
    for r in rows:
        if r["quant_bytes"] >= BIG_WEIGHTS:
            s, f = r["share_of_peak"], r["floor_share_of_peak"]
            out.append((f"{r['model']} {r['product']}: {fmt(s * 100 if s else None, '.1f')}% of peak",
                        f">= {PEAK_SHARE:.0%}", s >= PEAK_SHARE if s is not None else None,
                        f"{fmt(f * 100 if f else None, '.1f')}%"))
    speedups = [r["speedup"] for r in rows if r["speedup"] is not None]
    got = median(speedups)
    out.append((f"median dequantize-then-cuBLAS / best quantized {fmt(got)}", f">= {OVER_DEQUANT:g}",
                got >= OVER_DEQUANT if speedups else None, ""))
    return out


def main() -> int:
    args = cuda_args(__doc__, "the quantized-weights benchmark")
    if args is None:
        return 2
    backend = "cuda"
    rows: list[dict] = []
    sweeps, floors = {}, {}
    with tempfile.TemporaryDirectory(prefix="mb-quant-") as tmp:
        folder = Path(tmp)
        suites = {model: quant_suite(model, folder) for model in MODELS}
        dev = metalbench.open_device(backend, args.device)
        peak = 0.0
        for model, suite in suites.items():
            store = Store(folder / f"{model}.sqlite")
            run = sweep(f"{MODELS[model]} q4 decode ({len(suite.specs)} products)", suite,
                        choose(backend, suite.specs, FAMILIES), backend=backend, store=store, device=args.device,
                        settings=runner.Settings(cold=True))
            store.close()
            sweeps[model] = (suite, run)
            peak = float(run.report.peak_bandwidth or dev.info["peak_bandwidth"] or 0)
            for spec in suite.specs:
                read_floor(dev, spec.bytes_moved(), floors)
            rows += rows_of(model, suite, run.report, peak, floors)
    verdicts = judge(rows)

    info = dev.info
    print(table(f"{QUANT} decode weight products on {info['name']} ({info['driver']}), cold batch clock, us; peak "
                f"{peak / 1e12:.2f} TB/s; baseline = dequantize to fp16, then cuBLAS (one launch); best = the "
                "fastest quantized kernel (* its brief lap's time: raced out); floor = a plain read of the same bytes",
                ["model", "product", "quantized MB", "baseline", "best", "best kernel", "baseline / best", "% peak",
                 "floor", "% peak (floor)", "best / floor"],
                [[r["model"], r["product"], fmt(r["quant_bytes"] / 1e6, ".1f"), fmt(r["baseline_us"]),
                  fmt(r["best_us"]) + ("*" if r["best_brief"] else ""), r["best"] or "-", fmt(r["speedup"]),
                  fmt(r["share_of_peak"] * 100 if r["share_of_peak"] else None, ".1f"), fmt(r["floor_us"]),
                  fmt(r["floor_share_of_peak"] * 100 if r["floor_share_of_peak"] else None, ".1f"),
                  fmt(r["best_over_floor"])] for r in rows], left=2))
    print()
    print(table("sweeps", ["model", "products", "pairs", "raced out", "wrong", "failed", "seconds"],
                [[MODELS[m], len(suite.specs), run.report.counts["measured"], run.report.counts["raced"],
                  run.report.counts.get("wrong", 0), run.report.counts.get("failed", 0), f"{run.seconds:.1f}"]
                 for m, (suite, run) in sweeps.items()]))
    print()
    print(table("targets (issue 23, section 3); at the floor = the figure of a kernel as fast as the plain read",
                ["figure", "target", "verdict", "at the floor"],
                [[f, t, verdict(ok), floor] for f, t, ok, floor in verdicts]))
    write_json(args.json, {"device": info, "peak_bandwidth": peak, "quant": QUANT, "products": rows,
                           "sweeps": {MODELS[m]: {"products": len(suite.specs), **run.summary()}
                                      for m, (suite, run) in sweeps.items()},
                           "targets": [{"figure": f, "target": t, "met": ok, "at_floor": floor}
                                       for f, t, ok, floor in verdicts]})
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
