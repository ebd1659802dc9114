"""The decode suite on a CUDA GPU: metalbench's best variant against cuBLAS, checked
against an independent measurement of the same cuBLAS calls.

    python benchmarks/cuda_decode.py [--suite NAME] [--warm] [--variants GLOB]... [--json PATH]

Per spec it prints the fastest correct variant and its median GPU time, cuBLAS's
(the `cublas/baseline` builtin) through the same harness, the speedup, the best
variant's effective bandwidth (fewest bytes the problem must move / time), and the
same cuBLAS calls timed by benchmarks/cublas_independent.cu, a plain CUDA C++
program built here with nvcc (events around each call after an L2 flush) as
harness / independent. Then an empty kernel's GPU time (event pair, stream held)
and launch-to-completion round trip against the same program, and the targets.

Every variant is verified against a float64 reference before it is timed; a wrong
one is reported and never ranked. Timing is cold by default: the L2 is flushed
before every timed launch (untimed), as the targets ask. Kernels go through
metalbench._core directly (benchmarks/cuda_harness.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cuda_harness import Buffers, build_all, make_problem, open_cuda, run_checked  # noqa: E402

from metalbench import variants  # noqa: E402
from metalbench.specs import OPS, Spec, load_suite  # noqa: E402


def find_cublas_build() -> tuple[list[str], list[str]]:
    """Include and link flags for cuBLAS: the toolkit's, else the nvidia-cublas wheel's."""
    incs, libs = [], []
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    for r in roots:
        if r and Path(r, "include", "cublas_v2.h").is_file():
            incs.append(str(Path(r, "include")))
            for sub in ("lib64", "lib"):
                if list(Path(r, sub).glob("libcublas.so*")):
                    libs.append(str(Path(r, sub)))
    try:
        import nvidia  # the namespace package of NVIDIA's wheels

        for base in map(Path, nvidia.__path__):
            for inc in base.glob("*/include/cublas_v2.h"):
                incs.append(str(inc.parent))
            for lib in base.glob("*/lib/libcublas.so*"):
                libs.append(str(lib.parent))
    except ImportError:
        pass
    if not incs or not libs:
        raise RuntimeError("no cuBLAS headers and libraries found (toolkit or nvidia-cublas wheel)")
    lib = libs[0]
    names = sorted(p.name for p in Path(lib).glob("libcublas.so*"))
    lt_names = sorted(p.name for p in Path(lib).glob("libcublasLt.so*"))
    link = [f"-L{lib}", f"-Xlinker=-rpath={lib}", f"-l:{names[-1]}", f"-l:{lt_names[-1]}"]
    return [f"-I{i}" for i in dict.fromkeys(incs)], link


def run_independent(shapes: list[Spec], iterations: int, flush: str, workdir: Path, runs: int = 2,
                    held: bool = False) -> dict | None:
    """Builds and runs the plain program `runs` times; per spec the median of the runs' medians."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        print("(no nvcc: the independent measurement is skipped)")
        return None
    try:
        incs, link = find_cublas_build()
    except RuntimeError as e:
        print(f"({e}: the independent measurement is skipped)")
        return None
    exe = workdir / "cublas_independent"
    stubs = [f"-L{d}" for d in ("/usr/local/cuda/lib64/stubs", "/usr/local/cuda/lib64") if Path(d).is_dir()]
    cmd = [nvcc, "-O2", "-std=c++17", "-arch=sm_90", str(HERE / "cublas_independent.cu"), "-o", str(exe), *incs,
           *link, *stubs, "-lcuda"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("(building the independent program failed:)\n" + " ".join(cmd) + "\n" + r.stderr[-3000:])
        return None
    print(f"built {exe.name} in {time.time() - t0:.1f} s")
    spec_file = workdir / "specs.txt"
    spec_file.write_text("".join(
        f"{OPS.index(s.op)} {s.batch} {s.m} {s.n} {s.k} {int(s.transpose_a)} {int(s.transpose_b)} {s.alpha} {s.beta} "
        f"{16 if s.dtype == 'float16' else 32}\n" for s in shapes))
    results = []
    for i in range(runs):
        out = workdir / f"independent{i}.json"
        try:
            r = subprocess.run([str(exe), str(spec_file), str(out), str(iterations), flush] +
                               (["held"] if held else []), capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            print("(the independent program timed out)")
            return None
        if r.returncode != 0:
            print("(the independent program failed:)\n" + r.stderr[-3000:])
            return None
        results.append(json.loads(out.read_text()))
    merged = results[0]
    for j, spec in enumerate(merged["specs"]):
        runs_us = [res["specs"][j]["median_us"] for res in results]
        spec["runs_us"] = runs_us
        spec["median_us"] = sorted(runs_us)[len(runs_us) // 2] if len(runs_us) % 2 else sum(runs_us) / len(runs_us)
    for key in ("empty_gpu_us", "empty_cpu_us"):
        merged[key + "_runs"] = [res[key] for res in results]
    return merged


EMPTY = 'extern "C" __global__ void mb_empty() {}\n'

# The read ceiling: every 16-byte word of a buffer read once (UNROLL loads in flight
# per thread, grid-stride), nothing else. What no GEMV over that many bytes can beat.
READ = r"""
extern "C" __global__ void mb_read(const uint4* __restrict__ p, unsigned long long n, unsigned* sink) {
  unsigned acc = 0;
  const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += UNROLL * step) {
    uint4 v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) v[u] = i + u * step < n ? __ldg(p + i + u * step) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}
"""


def read_ceiling(dev, nbytes: int, cold: bool) -> tuple[float, str]:
    """Best effective bandwidth (bytes / median GPU time) of a plain read over `nbytes`."""
    buf = dev.allocate(nbytes)
    buf.fill(1)
    sink = dev.allocate(16)
    sms = dev.info["compute_units"]
    best = (0.0, "")
    for unroll in (2, 4, 8):
        k = dev.compile(READ, "mb_read", {"UNROLL": str(unroll)}, f"read/u{unroll}")
        for blocks_per_sm in (4, 8, 16):
            for threads in (256, 512):
                args = [buf, struct.pack("<Q", nbytes // 16), sink]
                m = dev.measure(k, args, [sms * blocks_per_sm], [threads], warmup=2, iterations=30,
                                min_iterations=30, max_seconds=5.0, cold=cold)
                gbps = nbytes / m["gpu"]["median"]
                if gbps > best[0]:
                    best = (gbps, f"unroll {unroll}, {blocks_per_sm} blocks/SM of {threads}")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="qwen2.5-0.5b-decode")
    ap.add_argument("--variants", action="append", default=[], help="glob of variant ids (default: all)")
    ap.add_argument("--warm", action="store_true", help="keep the L2 warm (default: flush before each launch)")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--max-seconds", type=float, default=0.25)
    ap.add_argument("--json", type=Path, default=Path("cuda_decode.json"))
    ap.add_argument("--blas-iterations", type=int, default=300,
                    help="samples of each cuBLAS call, in the harness and the independent program")
    ap.add_argument("--flush", choices=["clean", "fill"], default="clean",
                    help="cold mode: fill the flush buffer and write its dirty lines back (clean), or only fill it")
    ap.add_argument("--no-independent", action="store_true")
    args = ap.parse_args()
    cold = not args.warm
    os.environ["METALBENCH_CUDA_FLUSH"] = args.flush

    dev = open_cuda()
    if dev is None:
        return 2
    info = dev.info
    print(f"{info['name']} | {info['driver']} | {info['compute_units']} SMs | L2 {info['cache_bytes'] >> 20} MiB | "
          f"{'cold, flush ' + args.flush if cold else 'warm'}")
    suite = load_suite(args.suite)
    suite_name, shapes = suite.name, list(suite.specs)
    chosen = variants.select(variants.load_variants("cuda"), args.variants)
    base = [v for v in variants.load_variants("cuda") if v.family.baseline == "vendor"]
    if base and base[0] not in chosen:
        chosen.insert(0, base[0])

    # Compile everything the suite needs, in parallel (and from the disk cache when warm).
    t0 = time.time()
    kernels = build_all(dev, [(v, s.dtype) for s in shapes for v in chosen if v.unsupported_reason(s) is None])
    print(f"{len(kernels)} kernels ready in {time.time() - t0:.1f} s")

    rows = []
    for index, s in enumerate(shapes):
        problem = make_problem(s)
        results = []
        for v in chosen:
            if v.unsupported_reason(s) is not None:
                continue
            k = kernels[(v.id, s.dtype)]
            r = {"variant": v.id}
            if isinstance(k, Exception):
                r["status"], r["message"] = "compile", f"{k} {getattr(k, 'log', '')[:1500]}"
                results.append(r)
                continue
            groups, threads = v.geometry(s)
            try:
                bufs = Buffers(dev, problem, v.workspace_floats(s))
                why = run_checked(dev, k, bufs, groups, threads)
                if why:
                    r["status"], r["message"] = "wrong", why
                else:
                    bufs.ws.fill(0)
                    blas = bool(v.family.builtin)
                    m = dev.measure(k, bufs.args(), groups, threads, warmup=3,
                                    iterations=args.blas_iterations if blas else args.iterations,
                                    min_iterations=args.blas_iterations if blas else 10,
                                    max_seconds=10.0 if blas else args.max_seconds, cold=cold)
                    r["status"] = "ok"
                    r["gpu_us"] = m["gpu"]["median"] / 1e3
                    r["cpu_us"] = m["cpu"]["median"] / 1e3
                    r["gpu_rel_stdev"] = m["gpu"]["rel_stdev"]
            except Exception as e:  # noqa: BLE001
                r["status"], r["message"] = "failed", f"{type(e).__name__}: {e}"
            results.append(r)
        ok = [r for r in results if r["status"] == "ok"]
        blas = next((r for r in ok if r["variant"].startswith("cublas/")), None)
        mine = [r for r in ok if not r["variant"].startswith("cublas/")]
        best = min(mine, key=lambda r: r["gpu_us"]) if mine else None
        row = {"spec": s.label(), "shape": s.fields(), "traffic_bytes": s.bytes_moved(), "results": results,
               "best": best, "cublas": blas}
        rows.append(row)
        bad = [r for r in results if r["status"] != "ok"]
        for r in bad:
            print(f"  {r['status'].upper()} {r['variant']} on {s.label()}: {r.get('message', '')[:300]}")
        b_us = best["gpu_us"] if best else float("nan")
        c_us = blas["gpu_us"] if blas else float("nan")
        print(f"[{index + 1}/{len(shapes)}] {s.label()}: best {best['variant'] if best else '-'} {b_us:.2f} us, "
              f"cuBLAS {c_us:.2f} us ({len(ok)} ok, {len(bad)} not)", flush=True)

    # The empty kernel through the backend.
    empty = dev.compile(EMPTY, "mb_empty", {}, "empty")
    em = dev.measure(empty, [], [1], [1], warmup=10, iterations=2000, min_iterations=2000, max_seconds=20.0)
    empty_gpu, empty_cpu = em["gpu"]["median"] / 1e3, em["cpu"]["median"] / 1e3

    # The read ceiling over the largest B of the suite (the LM head's weights).
    largest = max(shapes, key=lambda s: s.batch * s.n * s.k)
    ceiling_bytes = largest.batch * largest.n * largest.k * (2 if largest.dtype == "float16" else 4)
    ceiling = read_ceiling(dev, ceiling_bytes, cold) if ceiling_bytes >= 64 << 20 else (float("nan"), "")

    indep = None
    if not args.no_independent:
        with tempfile.TemporaryDirectory() as tmp:
            indep = run_independent(shapes, args.blas_iterations, args.flush, Path(tmp))
            # Diagnostic: the same program holding its stream as the backend does.
            held = run_independent(shapes, args.blas_iterations, args.flush, Path(tmp), runs=1, held=True)
            if indep and held:
                indep["held_us"] = [sp["median_us"] for sp in held["specs"]]
    if indep:
        for row, spec in zip(rows, indep["specs"], strict=True):
            row["independent_us"] = spec["median_us"]

    # The table.
    print()
    head = (f"{'spec':<44} {'best variant':<36} {'best us':>8} {'cuBLAS':>8} {'speedup':>7} {'GB/s':>7} "
            f"{'indep':>8} {'h/i':>6} {'held':>7}")
    print(head)
    print("-" * len(head))
    wins, close, small_ok, small_total = 0, 0, 0, 0
    for row in rows:
        best, blas = row["best"], row["cublas"]
        b_us = best["gpu_us"] if best else float("nan")
        c_us = blas["gpu_us"] if blas else float("nan")
        i_us = row.get("independent_us", float("nan"))
        speed = c_us / b_us if best and blas else float("nan")
        gbs = row["traffic_bytes"] / (b_us * 1e3) if best else float("nan")
        ratio = c_us / i_us if blas and indep else float("nan")
        row.update(speedup=speed, best_gbps=gbs, harness_over_independent=ratio)
        wins += speed > 1.0
        close += abs(ratio - 1.0) <= 0.05
        if row["traffic_bytes"] < 2e6:
            small_total += 1
            small_ok += b_us <= 5.0
        held_us = indep["held_us"][rows.index(row)] if indep and "held_us" in indep else float("nan")
        row["independent_held_us"] = held_us
        print(f"{row['spec'][:44]:<44} {(best['variant'] if best else '-')[:36]:<36} {b_us:8.2f} {c_us:8.2f} "
              f"{speed:7.2f} {gbs:7.0f} {i_us:8.2f} {ratio:6.3f} {held_us:7.2f}")
    print()
    print(f"empty kernel: GPU {empty_gpu:.2f} us (event pair, stream held), launch+sync {empty_cpu:.2f} us")
    if ceiling[1]:
        print(f"read ceiling over {ceiling_bytes / 1e6:.0f} MB: {ceiling[0] / 1e3:.3f} TB/s ({ceiling[1]})")
    if indep:
        print(f"plain CUDA program: GPU {indep['empty_gpu_us']:.2f} us, launch+sync {indep['empty_cpu_us']:.2f} us "
              f"(runs: {indep['empty_gpu_us_runs']}, {indep['empty_cpu_us_runs']})")
        spread = [max(sp["runs_us"]) / min(sp["runs_us"]) - 1 for sp in indep["specs"]]
        print(f"independent program, run to run: median spread {sorted(spread)[len(spread) // 2]:.1%}, "
              f"worst {max(spread):.1%}")

    # The targets.
    n = len(rows)
    lm = [r for r in rows if r["shape"]["n"] == 151936 and r["shape"]["k"] == 896 and r["shape"]["m"] == 1]
    targets = {
        "harness within 5% of independent on every spec": (close == n if indep else None, f"{close}/{n}"),
        "empty-kernel floor within 10% of the plain program": (
            (abs(empty_gpu / indep["empty_gpu_us"] - 1) <= 0.10 and abs(empty_cpu / indep["empty_cpu_us"] - 1) <= 0.10)
            if indep else None,
            f"GPU {empty_gpu:.2f} vs {indep['empty_gpu_us']:.2f} us, launch+sync {empty_cpu:.2f} vs "
            f"{indep['empty_cpu_us']:.2f} us" if indep else "no independent program"),
        "a variant faster than cuBLAS on >= 18 of 20 specs": (wins >= min(18, n - 2) if n >= 20 else wins >= n - 2,
                                                               f"{wins}/{n}"),
        "151936x896 GEMV >= 2.95 TB/s": ((lm[0]["best_gbps"] >= 2950) if lm else None,
                                         f"{lm[0]['best_gbps'] / 1e3:.3f} TB/s" if lm else "no such spec"),
        "traffic < 2 MB at <= 5 us": (small_ok == small_total, f"{small_ok}/{small_total}"),
    }
    print()
    for name, (met, detail) in targets.items():
        mark = "MET " if met else ("n/a " if met is None else "MISS")
        print(f"[{mark}] {name}: {detail}")
    report = {
        "device": info, "suite": suite_name, "cold": cold, "flush": args.flush, "iterations": args.iterations,
        "rows": rows,
        "empty_kernel": {"gpu_us": empty_gpu, "cpu_us": empty_cpu}, "independent": indep,
        "read_ceiling": {"bytes": ceiling_bytes, "gbps": ceiling[0], "how": ceiling[1]},
        "targets": {k: {"met": v[0], "detail": v[1]} for k, v in targets.items()},
    }
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
