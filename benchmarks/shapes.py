"""Every shape a model runs, not only m = 1: the kernel library beside cuBLAS on the products
of issue 20, with the plain-read floor of each product's bytes.

    python benchmarks/shapes.py [--device N] [--json PATH] [--suites NAME,...]

On a CUDA device (the targets were set for an H200), each suite is swept as
`metalbench run --cold` sweeps it: every variant, racing on, worker processes, cuBLAS in
the same run, from empty kernel and reference caches (so each sweep time includes
compiling), ranked by the cold batch clock (back-to-back launches, every launch reading
inputs that are not in L2). The suites, made by `metalbench suite from-config`:

- default: the built-in qwen2.5-0.5b-decode suite, for its sweep time with every new
  variant in it (target: under 30 s);
- llama-decode-4, llama-decode-16, qwen-decode-4, qwen-decode-16: Llama-3.2-1B and
  Qwen2.5-0.5B decoding 4 and 16 sequences together (--tokens 4, 16). Targets: per
  suite, the median over its weight products of cuBLAS time / library time is at least
  1.25, and every weight product of 8 MB or more runs at 85% or more of the HBM peak;
  each suite sweeps in under 60 s;
- qkv-nn: the fused QKV products (weights stored k x n) of Mistral-7B, Llama-3.2-1B and
  Qwen2.5-0.5B at m = 1 (from --tokens 1). Target: 85% of the peak, or, where a plain
  read of the same bytes is itself slower than that, within 10% of the read;
- llama-prefill-512: Llama-3.2-1B prefilling a 512-token prompt (--phase prefill).
  Target: the median over its weight products of cuBLAS time / library time is at least
  0.8; the suite sweeps in under 60 s.

Weight products are the suites' batch-1 matmul and bias_add specs (attention is
alpha/beta). For every product the table gives cuBLAS's time, the library's fastest kernel
(every variant but cuBLAS; where racing left it out, its brief lap's time, marked *) and
its time, their ratio, the library's share of the HBM peak (bytes moved / time / peak) and the
plain-read floor: the best time of a kernel that only reads the product's bytes
(benchmarks/cuda_floor.py's read kernel, over a few grids), cold as the products are.
No kernel that moves those bytes can beat it, so library / floor is the distance left.
Prefill is compute-bound instead: its table gives TFLOPS, beside the ceiling of the
instruction the matrix tile uses on CUDA, mma.sync m16n8k16 (f16 in, f32 accumulate),
measured by a kernel that issues nothing else. wgmma (sm_90a's warpgroup instruction,
which wggemm and cuBLAS use) has a higher ceiling that this script does not measure, so a
wggemm pick's ratio to the mma.sync ceiling can pass 1.

On a machine without CUDA it prints one SKIPPED line and exits 2.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import choose, cuda_args, fmt, median, say, sweep, table, verdict, write_json
from cuda_floor import READ, SETTINGS

import metalbench
from metalbench import runner
from metalbench.specs import DTYPES, Spec, Suite, load_suite
from metalbench.store import Store

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"llama": ROOT / "tests" / "data" / "llama-3.2-1b.json",
           "qwen": ROOT / "tests" / "data" / "qwen2.5-0.5b.json",
           "mistral": ROOT / "tests" / "data" / "mistral-7b-v0.1.json"}
DEFAULT = "qwen2.5-0.5b-decode"
SUITES = ["default", "llama-decode-4", "llama-decode-16", "qwen-decode-4", "qwen-decode-16", "qkv-nn",
          "llama-prefill-512"]
DEFAULT_SWEEP_S = 30.0
MODEL_SWEEP_S = 60.0
DECODE_RATIO = 1.25   # median of cuBLAS / library over a decode suite's weight products
DECODE_PEAK = 0.85    # share of the HBM peak for every weight product of 8 MB or more
BIG_WEIGHTS = 8 * 2**20
QKV_PEAK = 0.85       # or within QKV_FLOOR of the plain read where that read is slower
QKV_FLOOR = 1.10
PREFILL_RATIO = 0.8   # median of cuBLAS / library over the prefill suite's weight products


def from_config(config: Path, out: Path, *args: str) -> Suite:
    """`metalbench suite from-config CONFIG ARGS --dtype float16 --out OUT`, loaded: float16, the dtype the
    targets were set in (the configs' own is bfloat16)."""
    cmd = [sys.executable, "-m", "metalbench", "suite", "from-config", str(config), *args, "--dtype", "float16",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"shapes: {' '.join(cmd[2:])} failed: {r.stderr.strip()}")
    return load_suite(out)


def is_weight_product(spec: Spec) -> bool:
    return spec.batch == 1 and spec.op in ("matmul", "matmul_bias_add")


def qkv_suite(folder: Path) -> Suite:
    """The three fused QKV products at m = 1 (B stored k x n), one suite."""
    specs = []
    for model in ("mistral", "llama", "qwen"):
        suite = from_config(CONFIGS[model], folder / f"{model}-decode-1.toml", "--tokens", "1")
        nn = [s for s in suite.specs if is_weight_product(s) and not s.transpose_b]
        if len(nn) != 1:
            raise SystemExit(f"shapes: {model}'s decode suite has {len(nn)} products with weights stored k x n, "
                             "not the one fused QKV")
        specs.append(nn[0])
    path = folder / "qkv-nn.toml"
    lines = ['name = "qkv-nn"', 'description = "fused QKV, weights stored k x n, m = 1: Mistral-7B, Llama-3.2-1B, '
             'Qwen2.5-0.5B"']
    for s in specs:
        lines += ["[[spec]]", f'op = "{s.op}"', f'dtype = "{s.dtype}"', f"m = {s.m}", f"n = {s.n}", f"k = {s.k}",
                  "transpose_b = false"]
    path.write_text("\n".join(lines) + "\n")
    return load_suite(path)


def build_suite(name: str, folder: Path) -> Suite:
    if name == "default":
        return load_suite(DEFAULT)
    if name == "qkv-nn":
        return qkv_suite(folder)
    model, phase, tokens = name.split("-")
    args = ["--tokens", tokens] + (["--phase", "prefill"] if phase == "prefill" else [])
    return from_config(CONFIGS[model], folder / f"{name}.toml", *args, "--name", name)


def read_floor(dev: metalbench.Device, nbytes: int, cache: dict) -> float:
    """The best cold batch time (us) of cuda_floor's read kernel over `nbytes`: one copy per
    launch out of enough copies to pass 2 x L2, two unrollings and two grid sizes (cuda_floor.py
    found the best of a wider search at unroll 4, 16 blocks of 512 per SM)."""
    if nbytes in cache:
        return cache[nbytes]
    words = max(1, math.ceil(nbytes / 16))
    align = int(dev.info["view_alignment"])
    stride = -(-words * 16 // align) * align
    copies = max(1, math.ceil(2 * int(dev.info["cache_bytes"]) / (words * 16)))
    arena, sink = dev.allocate(stride * copies), dev.allocate(16)
    arena.fill(1)
    slots = [[arena.view(i * stride, words * 16), struct.pack("<Q", words), sink] for i in range(copies)]
    sms = int(dev.info["compute_units"])
    best = math.inf
    for unroll in (4, 8):
        if ("kernel", unroll) not in cache:
            cache[("kernel", unroll)] = dev.compile(READ, "mb_read", {"UNROLL": str(unroll)}, f"floor/read_u{unroll}")
        for blocks_per_sm in (4, 16):
            blocks = max(1, min(sms * blocks_per_sm, math.ceil(words / (512 * unroll))))
            m = dev.measure(cache[("kernel", unroll)], slots, [blocks], [512],
                            **{**SETTINGS, "min_samples": 10, "max_time": 0.2})
            best = min(best, m["batch"]["median"] / 1e3)
    cache[nbytes] = best
    return best


# mma.sync.m16n8k16 back to back, eight independent accumulators per warp, nothing else:
# the most any kernel built on the matrix tile's CUDA instruction can compute.
MMA = r"""
extern "C" __global__ void mb_mma_peak(float* out, int iters) {
  unsigned a = 0x3c003c00u ^ threadIdx.x, b = 0x3c003c00u ^ (threadIdx.x << 1);
  float c[8][4];
  for (int j = 0; j < 8; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                   "{%8, %9}, {%0, %1, %2, %3};"
                   : "+f"(c[j][0]), "+f"(c[j][1]), "+f"(c[j][2]), "+f"(c[j][3])
                   : "r"(a), "r"(b), "r"(a), "r"(b), "r"(b), "r"(a));
  }
  float s = 0.0f;
  for (int j = 0; j < 8; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  if (s == 1234.5f) out[0] = s;
}
"""
MMA_ITERS = 4096


def mma_ceiling(dev: metalbench.Device) -> float:
    """TFLOPS of mma.sync m16n8k16 f16 -> f32 issued back to back on every SM (4 blocks of 4 warps each)."""
    kernel = dev.compile(MMA, "mb_mma_peak", {}, "floor/mma_peak")
    out = dev.allocate(16)
    blocks = int(dev.info["compute_units"]) * 4
    m = dev.measure(kernel, [out, struct.pack("<i", MMA_ITERS)], [blocks], [128],
                    **{**SETTINGS, "min_samples": 10, "max_time": 0.5})
    flops = blocks * 4 * MMA_ITERS * 8 * 2 * 16 * 8 * 16
    return flops / (m["batch"]["median"] * 1e-9) / 1e12


def best_library(sr: object, baseline: str | None) -> tuple[str | None, float | None, bool]:
    """The fastest kernel of the library (every variant but the vendor baseline) on one spec:
    its id, its batch time (us) and whether that time is a raced-out variant's brief lap
    (its ratio to the spec's best, from the runner's race, times the best's time)."""
    best_row = sr.best_row()
    best_us = best_row.us("batch") if best_row else None
    found = [(r.variant, r.us("batch"), False) for r in sr.rows
             if r.variant != baseline and r.status == "ok" and r.us("batch")]
    if best_us:
        found += [(v, ratio * best_us, True) for v, ratio in sr.raced if v != baseline]
    if not found:
        return None, None, False
    return min(found, key=lambda f: f[1])


def product_rows(name: str, suite: Suite, rep: object, peak: float, floors: dict[int, float]) -> list[dict]:
    """One dict per weight product: the figures of the table and the JSON. The targets are the
    library's: its fastest kernel against cuBLAS (the baseline), and against the peak."""
    rows = []
    for spec, sr in zip(suite.specs, rep.specs, strict=True):
        if not is_weight_product(spec):
            continue
        best = sr.best_row()
        base = next((r for r in sr.rows if r.variant == sr.baseline), None)
        best_us = best.us("batch") if best else None
        base_us = base.us("batch") if base else None
        lib, lib_us, brief = best_library(sr, sr.baseline)
        floor = floors.get(spec.bytes_moved())

        def share(us: float | None, moved: int = spec.bytes_moved()) -> float | None:
            return moved / (us * 1e-6) / peak if us and peak else None

        rows.append({"suite": name, "product": sr.label, "weight_bytes": spec.n * spec.k * DTYPES[spec.dtype].itemsize,
                     "bytes": spec.bytes_moved(), "flops": spec.flops(), "cublas_us": base_us,
                     "best": sr.best, "best_us": best_us, "library": lib, "library_us": lib_us,
                     "library_brief": brief, "ratio": base_us / lib_us if base_us and lib_us else None,
                     "share_of_peak": share(lib_us), "cublas_share_of_peak": share(base_us),
                     "floor_us": floor, "floor_share_of_peak": share(floor),
                     "best_over_floor": lib_us / floor if lib_us and floor else None})
    return rows


def judge(name: str, rows: list[dict], seconds: float) -> list[tuple[str, str, str, bool | None, str]]:
    """(suite, figure, target, met, at the floor) for every target that concerns the suite. The
    last is the same figure for a kernel as fast as the plain read of the product's bytes,
    where the target is about speed: a target that the floor itself misses is out of reach
    of any kernel that moves those bytes, on this device and clock."""
    out = []
    if name == "default" or "-decode-" in name or "-prefill-" in name:
        limit = DEFAULT_SWEEP_S if name == "default" else MODEL_SWEEP_S
        out.append((name, f"sweep {seconds:.1f} s", f"< {limit:g} s", seconds < limit, ""))
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    if "-decode-" in name:
        got = median(ratios)
        out.append((name, f"median cuBLAS / library {fmt(got)}", f">= {DECODE_RATIO:g}",
                    got >= DECODE_RATIO if ratios else None, fmt(median(_floor_ratios(rows)))))
        for r in rows:
            if r["weight_bytes"] >= BIG_WEIGHTS:
                share, floor_share = r["share_of_peak"], r["floor_share_of_peak"]
                out.append((name, f"{r['product']}: {fmt(share * 100 if share else None, '.1f')}% of peak",
                            f">= {DECODE_PEAK:.0%}", share >= DECODE_PEAK if share is not None else None,
                            f"{fmt(floor_share * 100 if floor_share else None, '.1f')}%"))
    elif name == "qkv-nn":
        for r in rows:
            share, floor_share = r["share_of_peak"], r["floor_share_of_peak"]
            if share is None:
                out.append((name, f"{r['product']}: no correct variant", "", False, ""))
                continue
            if floor_share is not None and floor_share < QKV_PEAK:
                ok = r["best_over_floor"] <= QKV_FLOOR
                out.append((name, f"{r['product']}: {fmt(r['best_over_floor'])}x the read floor (the read itself "
                                  f"{floor_share:.0%} of peak)", f"<= {QKV_FLOOR:g}x", ok, "1.00x"))
            else:
                out.append((name, f"{r['product']}: {share:.1%} of peak", f">= {QKV_PEAK:.0%}", share >= QKV_PEAK,
                            f"{fmt(floor_share * 100 if floor_share else None, '.1f')}%"))
    elif "-prefill-" in name:
        got = median(ratios)
        out.append((name, f"median cuBLAS / library {fmt(got)}", f">= {PREFILL_RATIO:g}",
                    got >= PREFILL_RATIO if ratios else None, ""))
    return out


def _floor_ratios(rows: list[dict]) -> list[float]:
    """cuBLAS / floor per product: what cuBLAS / library would be for a library at the floor."""
    return [r["cublas_us"] / r["floor_us"] for r in rows if r["cublas_us"] and r["floor_us"]]


def main() -> int:
    args = cuda_args(__doc__, "the shapes benchmark", lambda ap: ap.add_argument(
        "--suites", default=",".join(SUITES), help=f"a comma-separated subset of {', '.join(SUITES)}"))
    if args is None:
        return 2
    wanted = args.suites.split(",")
    unknown = sorted(set(wanted) - set(SUITES))
    if unknown:
        print(f"shapes: error: unknown suite {unknown[0]} (known: {', '.join(SUITES)})", file=sys.stderr)
        return 2
    backend = "cuda"
    results, products, verdicts, floors = {}, [], [], {}
    with tempfile.TemporaryDirectory(prefix="mb-shapes-") as tmp:
        folder = Path(tmp)
        suites = {name: build_suite(name, folder) for name in wanted}
        for name, suite in suites.items():
            # Empty kernel and reference caches for every suite: its sweep time includes compiling.
            os.environ["METALBENCH_CACHE_DIR"] = str(folder / f"cache-{name}")
            store = Store(folder / f"{name}.sqlite")
            chosen = choose(backend, suite.specs)
            run = sweep(f"{name} ({len(suite.specs)} specs)", suite, chosen, backend=backend, store=store,
                        device=args.device, settings=runner.Settings(cold=True))
            store.close()
            results[name] = (suite, run)
        dev = metalbench.open_device(backend, args.device)
        ceiling = mma_ceiling(dev) if "llama-prefill-512" in results else None
        peak = 0.0
        for name, (suite, run) in results.items():
            peak = float(run.report.peak_bandwidth or dev.info["peak_bandwidth"] or 0)
            for spec in suite.specs:
                if is_weight_product(spec) and name != "default":
                    read_floor(dev, spec.bytes_moved(), floors)
            rows = product_rows(name, suite, run.report, peak, floors) if name != "default" else []
            products += rows
            verdicts += judge(name, rows, run.seconds)

    info = dev.info
    print(table(f"weight products on {info['name']} ({info['driver']}), cold batch clock, us; peak "
                f"{peak / 1e12:.2f} TB/s; library = the fastest kernel but cuBLAS (* its brief lap's time: raced "
                "out); floor = a plain read of the same bytes",
                ["suite", "product", "MB", "cuBLAS", "library", "library kernel", "cuBLAS / library", "% peak",
                 "cuBLAS % peak", "floor", "% peak (floor)", "library / floor"],
                [[r["suite"], r["product"], fmt(r["bytes"] / 1e6, ".1f"), fmt(r["cublas_us"]),
                  fmt(r["library_us"]) + ("*" if r["library_brief"] else ""), r["library"] or "-", fmt(r["ratio"]),
                  fmt(r["share_of_peak"] * 100 if r["share_of_peak"] else None, ".1f"),
                  fmt(r["cublas_share_of_peak"] * 100 if r["cublas_share_of_peak"] else None, ".1f"),
                  fmt(r["floor_us"]), fmt(r["floor_share_of_peak"] * 100 if r["floor_share_of_peak"] else None, ".1f"),
                  fmt(r["best_over_floor"])] for r in products], left=2))
    prefill = [r for r in products if "-prefill-" in r["suite"]]
    if prefill:
        print()

        def tflops(r: dict, key: str) -> str:
            return fmt(r["flops"] / (r[key] * 1e-6) / 1e12 if r[key] else None, ".0f")

        print(table(f"prefill, compute-bound: TFLOPS; mma.sync m16n8k16 (the matrix tile on CUDA) issued back to "
                    f"back reaches {fmt(ceiling, '.0f')} (wgmma, of wggemm and cuBLAS, more: not measured here)",
                    ["product", "cuBLAS", "library", "library kernel", "library / mma.sync ceiling"],
                    [[r["product"], tflops(r, "cublas_us"), tflops(r, "library_us"), r["library"] or "-",
                      fmt(r["flops"] / (r["library_us"] * 1e-6) / 1e12 / ceiling if r["library_us"] and ceiling
                          else None)]
                     for r in prefill]))
    print()
    print(table("sweeps", ["suite", "specs", "pairs", "raced out", "wrong", "failed", "seconds"],
                [[name, len(suite.specs), run.report.counts["measured"], run.report.counts["raced"],
                  run.report.counts.get("wrong", 0), run.report.counts.get("failed", 0), f"{run.seconds:.1f}"]
                 for name, (suite, run) in results.items()]))
    print()
    print(table("targets (issue 20, section 4); at the floor = the figure of a kernel as fast as the plain read",
                ["suite", "figure", "target", "verdict", "at the floor"],
                [[s, f, t, verdict(ok), floor] for s, f, t, ok, floor in verdicts], left=2))
    write_json(args.json, {"device": info, "peak_bandwidth": peak, "mma_sync_tflops": ceiling, "products": products,
                           "sweeps": {name: {"specs": len(suite.specs), **run.summary()}
                                      for name, (suite, run) in results.items()},
                           "targets": [{"suite": s, "figure": f, "target": t, "met": ok, "at_floor": floor}
                                       for s, f, t, ok, floor in verdicts]})
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
