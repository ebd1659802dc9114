"""The measurement issue's "done when", on one CUDA GPU, in one run.

    python benchmarks/measurement.py [--parts 1,2,3,4] [--stability-sweeps N] [--arch sm_90] [--json PATH]

1. The empty kernel: the embedded timer's batch clock (Device.measure on an empty
   CUDA kernel of one thread, the "batch" median: N launches back to back between
   one pair of events, over N) against the plain program (cublas_independent.cu,
   built here with nvcc) launching the same kernel back to back on a held stream.
   Target: within 10%. The per-launch clock against the plain program's event
   pairs, the CPU round trip against launch + synchronize, and the plain program's
   CUDA-graph replay are shown for context, with no target.
2. cuBLAS on every spec of the default suite: the harness's batch time (runner.run
   over the suite with the cublas/* variants only, warm, at least 15 samples per
   clock) against the plain program making the same cuBLAS calls back to back.
   Target: within 5% on every spec. The plain program runs before and after the
   harness; its figure is the median of both runs' samples.
3. Every spec's fastest correct metalbench variant against cuBLAS, by batch time,
   in a full warm sweep and a full cold one (runner settings cold=False and
   cold=True: in cold mode every launch reads its own copy of the inputs, rotated so
   that none is in L2). Target: faster than cuBLAS on at least 18 of 20 specs, warm
   and cold each; "clear" counts the wins where cuBLAS is not in the best's tie group.
4. Best-pick stability over --stability-sweeps (3) forced warm sweeps: a spec is
   stable when every sweep's best lies within every other sweep's tie group (the
   report's tie rule: 95% confidence intervals of the medians overlap, or within 1%
   of the best); in particular when every sweep picks the same variant. Target
   (this script's reading of the issue): every spec stable.

Every sweep uses runner.run's defaults but for what a part changes (cold, or the
samples of part 2), racing included where the runner races: a variant raced out
after its brief timing has no full time, so it is in no tie group.

And the default suite's sweep wall time, compile included, from empty kernel and
reference caches (METALBENCH_CACHE_DIR points at a fresh temporary folder), against
60 s. That first sweep is the warm sweep of part 3 and the first of part 4: it runs
with the same settings as the others, and each variant compiles before its first
pair is verified, never while one is timed.

Order: parts 1 and 2 first (the plain program, the harness's cuBLAS sweep and empty
kernel, the plain program again; their own caches), then the full sweeps (warm from
empty caches, cold, the remaining stability sweeps), each part's table printed as
soon as it is known and the JSON rewritten after each stage; the last table gathers
every target. The whole takes about as long as five sweeps of the default suite;
--parts splits it (parts 3 and 4 each measure the wall time too). Without a CUDA
device nothing runs (exit 2); without nvcc or cuBLAS's headers and libraries the
comparisons with the plain program (parts 1 and 2) are skipped, said so, and the
rest runs. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import ctypes.util
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import DEFAULT_SUITE, choose, fmt, median, pick_backend, say, skipped, sweep, table, verdict, write_json

import metalbench
from metalbench import runner
from metalbench.specs import OPS, Suite, load_suite
from metalbench.store import Store

HERE = Path(__file__).resolve().parent
EMPTY = 'extern "C" __global__ void mb_empty() {}\n'
EMPTY_TARGET, CUBLAS_TARGET, WIN_TARGET, WALL_TARGET = 0.10, 0.05, 18, 60.0
PLAIN_REPEATS = 21
# The cuBLAS comparison's harness settings: the defaults, with at least 15 samples per
# clock as the plain program takes at least 15 batches.
CUBLAS_SETTINGS = runner.Settings(min_samples=15, max_time=2.0)


# ---- the plain program -------------------------------------------------------------------------------------------

def find_cublas_build() -> tuple[list[str], list[str]]:
    """Include and link flags for cuBLAS: the toolkit's, else the nvidia-cublas wheel's."""
    incs, libs = [], []
    for root in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if root and Path(root, "include", "cublas_v2.h").is_file():
            incs.append(str(Path(root, "include")))
            for sub in ("lib64", "lib"):
                if list(Path(root, sub).glob("libcublas.so*")):
                    libs.append(str(Path(root, sub)))
    try:
        import nvidia  # the namespace package of NVIDIA's wheels (nvidia/cublas/ or nvidia/cu13/)

        for base in map(Path, nvidia.__path__):
            incs += [str(p.parent) for p in base.glob("*/include/cublas_v2.h")]
            libs += [str(p.parent) for p in base.glob("*/lib/libcublas.so*")]
    except ImportError:
        pass
    if not incs or not libs:
        raise RuntimeError("no cuBLAS headers and libraries (a CUDA toolkit with cuBLAS, or "
                           "`pip install nvidia-cublas`)")
    lib = libs[0]
    # Wheels ship only versioned names (libcublas.so.13): link those by file name.
    blas = sorted(p.name for p in Path(lib).glob("libcublas.so*"))
    blas_lt = sorted(p.name for p in Path(lib).glob("libcublasLt.so*"))
    link = [f"-L{lib}", f"-Xlinker=-rpath={lib}", f"-l:{blas[-1]}", f"-l:{blas_lt[-1]}"]
    return [f"-I{i}" for i in dict.fromkeys(incs)], link


def build_plain(workdir: Path, arch: str) -> tuple[Path | None, str]:
    """The plain program built with nvcc, or None and why not."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        return None, "no nvcc on PATH or in /usr/local/cuda/bin"
    try:
        incs, link = find_cublas_build()
    except RuntimeError as e:
        return None, str(e)
    exe = workdir / "cublas_independent"
    stubs = [f"-L{d}" for d in ("/usr/local/cuda/lib64/stubs", "/usr/local/cuda/lib64") if Path(d).is_dir()]
    cmd = [nvcc, "-O2", "-std=c++17", f"-arch={arch}", str(HERE / "cublas_independent.cu"), "-o", str(exe), *incs,
           *link, *stubs, "-lcuda"]
    started = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and "-lcuda" in r.stderr and ctypes.util.find_library("cuda"):
        # No libcuda.so (a driver without its development link, no toolkit stubs): the driver's own name.
        cmd[-1] = f"-l:{ctypes.util.find_library('cuda')}"
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"nvcc failed: {' '.join(cmd)}\n{r.stderr[-3000:]}"
    say(f"built {exe.name} in {time.perf_counter() - started:.1f} s")
    return exe, ""


def run_plain(exe: Path, suite: Suite, workdir: Path, tag: str) -> tuple[dict | None, str]:
    """One run of the plain program over the suite's specs: its JSON, or None and why not."""
    spec_file = workdir / "specs.txt"
    spec_file.write_text("".join(
        f"{OPS.index(s.op)} {s.batch} {s.m} {s.n} {s.k} {int(s.transpose_a)} {int(s.transpose_b)} {s.alpha!r} "
        f"{s.beta!r} {16 if s.dtype == 'float16' else 32}\n" for s in suite.specs))
    out = workdir / f"plain-{tag}.json"
    try:
        r = subprocess.run([str(exe), str(spec_file), str(out), str(PLAIN_REPEATS)], capture_output=True, text=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        return None, "the plain program ran over 300 s"
    if r.returncode != 0:
        return None, f"the plain program failed (exit {r.returncode}): {r.stderr[-2000:]}"
    say(f"plain program ({tag}): {r.stdout.splitlines()[0] if r.stdout else ''}")
    return json.loads(out.read_text()), ""


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def pooled(runs: list[dict], pick: Callable[[dict], dict]) -> float:
    """The median of every sample of the runs, where `pick` finds the samples in a run."""
    return median([x for run in runs for x in pick(run)["samples_us"]])


# ---- parts -------------------------------------------------------------------------------------------------------

def embedded_empty(device: int) -> dict:
    """The empty kernel through the embedded timer: its three clocks, in microseconds per launch."""
    dev = metalbench.open_device("cuda", device)
    kernel = dev.compile(EMPTY, "mb_empty", {}, "bench/empty")
    m = dev.measure(kernel, [], [1], [1], warmup=10, min_samples=PLAIN_REPEATS, max_samples=2000, min_time=0.02,
                    max_time=5.0, max_noise=0.005, rank_by="batch")
    out = {c: m[c]["median"] / 1e3 for c in ("batch", "gpu", "cpu")}
    out.update(batch_size=m["batch_size"], batch_noise=m["batch"]["rel_stdev"], batch_stop=m["batch"]["stop"],
               samples=m["batch"]["count"], clock=m["clock"])
    del kernel, dev
    gc.collect()
    return out


def best_mine(spec_report: object, baseline: str | None) -> object | None:
    """The fastest correct row that is not the baseline, by batch time."""
    rows = [r for r in spec_report.rows if r.status == "ok" and r.variant != baseline and "batch" in r.clocks]
    return min(rows, key=lambda r: r.clocks["batch"].median_us, default=None)


def versus_cublas(rep: object, suite: Suite) -> tuple[list[dict], int, int]:
    """Per spec: the best metalbench variant against cuBLAS, with its effective bandwidth (the
    fewest bytes the op must move over its time); and the wins, and the clear ones."""
    rows, wins, clear = [], 0, 0
    for spec, moved in zip(rep.specs, (s.bytes_moved() for s in suite.specs), strict=True):
        mine = best_mine(spec, spec.baseline)
        mine_us = mine.clocks["batch"].median_us if mine else None
        blas_us = spec.baseline_us
        win = bool(mine_us and blas_us and mine_us < blas_us)
        is_clear = win and spec.best == mine.variant and spec.baseline not in spec.ties
        wins += win
        clear += is_clear
        rows.append({"spec": spec.label, "best": mine.variant if mine else None, "best_us": mine_us,
                     "cublas_us": blas_us, "speedup": blas_us / mine_us if mine_us and blas_us else None,
                     "gbps": moved / (1e3 * mine_us) if mine_us else None, "win": win, "clear": is_clear,
                     "ties": spec.ties})
    return rows, wins, clear


def stability(reports: list) -> tuple[list[dict], int]:
    """Per spec: each sweep's best and tie group, and whether every best lies in every tie group."""
    rows, stable = [], 0
    for i, spec in enumerate(reports[0].specs):
        picks = [(rep.specs[i].best, set(rep.specs[i].ties)) for rep in reports]
        ok = all(best is not None for best, _ in picks) and all(best in ties for best, _ in picks for _, ties in picks)
        stable += ok
        rows.append({"spec": spec.label, "bests": [b for b, _ in picks], "ties": [sorted(t) for _, t in picks],
                     "stable": ok})
    return rows, stable


Targets = dict[str, tuple[bool | None, str]]


def part1(empty: dict, plain: list[dict], targets: Targets) -> tuple[str, dict]:
    p = plain[0]["empty"] if plain else None
    batch_plain = pooled(plain, lambda run: run["empty"]) if plain else None
    ratio = empty["batch"] / batch_plain if batch_plain else None
    ok = None if ratio is None else abs(ratio - 1) <= EMPTY_TARGET
    ctx = [median([run["empty"][k] for run in plain]) if p else None
           for k in ("event_pair_us", "launch_sync_us", "graph_us")]
    rows = [["batch: back to back / N", empty["batch"], batch_plain, ratio, f"<= {EMPTY_TARGET:.0%}", verdict(ok)],
            ["per launch: event pair", empty["gpu"], ctx[0], empty["gpu"] / ctx[0] if ctx[0] else None, "context", ""],
            ["CPU: launch + synchronize", empty["cpu"], ctx[1], empty["cpu"] / ctx[1] if ctx[1] else None, "context",
             ""],
            ["CUDA graph replay, per launch", None, ctx[2], None, "context", ""]]
    text = table(f"1. empty kernel, one thread (harness: Device.measure, batches of {empty['batch_size']}; "
                 f"plain: {len(plain)} runs, batches of {p['n'] if p else '-'})",
                 ["clock", "harness us", "plain us", "ratio", "target", "verdict"],
                 [[r[0], *(fmt(x, ".3f") if isinstance(x, float) else x for x in r[1:])] for r in rows])
    targets["1. empty kernel batch time within 10% of the plain program"] = (
        ok, f"{empty['batch']:.3f} vs {batch_plain:.3f} us" if batch_plain else "no plain program")
    return text, {"harness": empty, "plain_batch_us": batch_plain, "ratio": ratio, "passed": ok,
                  "plain_context_us": dict(zip(("event_pair", "launch_sync", "graph"), ctx, strict=True))}


def part2(harness: object, plain: list[dict], targets: Targets) -> tuple[str, dict]:
    rows, close = [], 0
    rep = harness.report
    for i, spec in enumerate(rep.specs):
        row = next((r for r in spec.rows if r.variant == spec.baseline and r.status == "ok"), None)
        h = row.clocks["batch"] if row and "batch" in row.clocks else None
        p_us = pooled(plain, lambda run, i=i: run["specs"][i]) if plain else None
        ratio = h.median_us / p_us if h and p_us else None
        ok = None if not plain else ratio is not None and abs(ratio - 1) <= CUBLAS_TARGET
        close += bool(ok)
        rows.append({"spec": spec.label, "harness_us": h.median_us if h else None,
                     "harness_noise": h.noise if h else None,
                     "plain_runs_us": [run["specs"][i]["batch_us"] for run in plain], "plain_us": p_us,
                     "ratio": ratio, "passed": ok})
    n = len(rows)
    ok = (close == n) if plain else None
    text = table("2. cuBLAS, batch time: harness (runner.run, cublas/*, warm) against the plain program",
                 ["spec", "harness us", "noise", "plain runs us", "plain us", "ratio", "verdict"],
                 [[r["spec"], fmt(r["harness_us"]), percent(r["harness_noise"]),
                   " ".join(f"{x:.2f}" for x in r["plain_runs_us"]) or "-", fmt(r["plain_us"]),
                   fmt(r["ratio"], ".3f"), verdict(r["passed"])] for r in rows])
    targets["2. cuBLAS batch time within 5% of the plain program, every spec"] = (
        ok, f"{close}/{n}" if plain else "no plain program")
    return text, {"rows": rows, "within": close, "of": n, "passed": ok, "harness": harness.summary()}


def part3(warm: object, cold: object, suite: Suite, targets: Targets) -> tuple[str, dict]:
    warm_rows, warm_wins, warm_clear = versus_cublas(warm.report, suite)
    cold_rows, cold_wins, cold_clear = versus_cublas(cold.report, suite)
    rows = [[w["spec"], w["best"] or "-", fmt(w["best_us"]), fmt(w["cublas_us"]), times(w["speedup"]),
             fmt(w["gbps"], ".0f"), c["best"] or "-", fmt(c["best_us"]), fmt(c["cublas_us"]), times(c["speedup"]),
             fmt(c["gbps"], ".0f")] for w, c in zip(warm_rows, cold_rows, strict=True)]
    n = len(rows)
    text = table("3. best metalbench variant against cuBLAS, batch time (full sweeps of the default suite)",
                 ["spec", "best warm", "us", "cuBLAS us", "speedup", "GB/s", "best cold", "us", "cuBLAS us",
                  "speedup", "GB/s"], rows)
    for mode, wins, clear in (("warm", warm_wins, warm_clear), ("cold", cold_wins, cold_clear)):
        targets[f"3. a variant faster than cuBLAS on >= {min(WIN_TARGET, n)} of {n} specs, {mode}"] = (
            wins >= min(WIN_TARGET, n), f"{wins}/{n} ({clear} clear of the tie group)")
    return text, {"warm": {"rows": warm_rows, "wins": warm_wins, "clear": warm_clear},
                  "cold": {"rows": cold_rows, "wins": cold_wins, "clear": cold_clear}}


def part4(warm: list, targets: Targets) -> tuple[str, dict]:
    rows, stable = stability([s.report for s in warm])
    n = len(rows)
    text = table(f"4. best pick over {len(warm)} forced warm sweeps (tie group sizes in brackets)",
                 ["spec", *(f"sweep {i + 1}" for i in range(len(warm))), "stable"],
                 [[r["spec"], *(f"{b or '-'} [{len(t)}]" for b, t in zip(r["bests"], r["ties"], strict=True)),
                   "yes" if r["stable"] else "NO"] for r in rows])
    targets[f"4. best pick stable over {len(warm)} sweeps, every spec"] = (stable == n, f"{stable}/{n}")
    return text, {"rows": rows, "stable": stable, "of": n}


def wall(warm: list, cold: object | None, targets: Targets) -> tuple[str, dict]:
    first = warm[0]
    named = [("warm 1 (compiles)", first)] + [(f"warm {i + 2}", s) for i, s in enumerate(warm[1:])]
    named += [("cold", cold)] if cold else []
    text = table("sweep wall time: the default suite, every variant (the first from empty kernel and reference caches)",
                 ["sweep", "seconds", "pairs", "failed", "wrong", "timeout", "crashed"],
                 [[name, f"{s.seconds:.1f}", *(s.report.counts[c] for c in ("measured", "failed", "wrong", "timeout",
                                                                             "crashed"))] for name, s in named])
    targets[f"sweep wall time <= {WALL_TARGET:.0f} s (compile included)"] = (
        first.seconds <= WALL_TARGET, f"{first.seconds:.1f} s, {first.report.counts['measured']} pairs")
    return text, {**first.summary(), "target_s": WALL_TARGET}


def show(text: str) -> None:
    print(text, end="\n\n", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="1,2,3,4", help="which parts to run (comma-separated; default all)")
    ap.add_argument("--stability-sweeps", type=int, default=3)
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (the plain program uses the same)")
    ap.add_argument("--arch", default="sm_90", help="nvcc -arch for the plain program (sm_90: H100, H200)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="copy the sweeps' result store here at the end (for metalbench "
                    "report and compare)")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    out: dict = {"parts": sorted(parts)}

    backend, why = pick_backend("cuda")
    if backend is None:
        out.update(skipped("every part (this script measures on CUDA only)", why))
        write_json(args.json, out)
        return 2
    suite = load_suite(DEFAULT_SUITE)
    targets: Targets = {}
    with tempfile.TemporaryDirectory(prefix="mb-measurement-") as tmp:
        work = Path(tmp)
        store = Store(work / "results.sqlite")
        common = {"backend": backend, "store": store, "device": args.device}

        # Parts 1 and 2: the plain program, the harness, the plain program again. Their
        # caches are their own, so that the sweeps below start from empty ones.
        if parts & {1, 2}:
            os.environ["METALBENCH_CACHE_DIR"] = str(work / "cache-1-2")
            exe, why = build_plain(work, args.arch)
            plain: list[dict] = []
            if exe is not None:
                got, why = run_plain(exe, suite, work, "before")
                plain += [got] if got else []
            harness = None
            if 2 in parts:
                harness = sweep("cuBLAS through the harness", suite, choose(backend, suite.specs, ["cublas/*"]),
                                settings=CUBLAS_SETTINGS, **common)
            empty = embedded_empty(args.device) if 1 in parts else None
            if exe is not None and plain:
                got, why = run_plain(exe, suite, work, "after")
                plain += [got] if got else []
            if not plain:
                out["plain_program"] = skipped("parts 1 and 2's comparison with the plain program", why)
            out["plain_runs"] = plain
            if empty is not None:
                text, out["part1"] = part1(empty, plain, targets)
                show(text)
            if harness is not None:
                text, out["part2"] = part2(harness, plain, targets)
                show(text)
            write_json(args.json, {**out, "targets": targets})

        # Parts 3 and 4: full sweeps, the first from empty kernel and reference caches.
        if parts & {3, 4}:
            os.environ["METALBENCH_CACHE_DIR"] = str(work / "cache")
            everything = choose(backend, suite.specs)
            warm = [sweep("warm sweep 1 (empty caches)", suite, everything, **common)]
            out["device"] = warm[0].report.device
            cold = sweep("cold sweep", suite, everything, settings=runner.Settings(cold=True), **common) \
                if 3 in parts else None
            if 4 in parts:
                for i in range(2, args.stability_sweeps + 1):
                    warm.append(sweep(f"warm sweep {i}", suite, everything, **common))
            out["sweeps"] = {"warm": [s.summary() for s in warm], "cold": cold.summary() if cold else None}
            if cold is not None:
                text, out["part3"] = part3(warm[0], cold, suite, targets)
                show(text)
            if 4 in parts and len(warm) >= 2:
                text, out["part4"] = part4(warm, targets)
                show(text)
            text, out["wall"] = wall(warm, cold, targets)
            show(text)
        store.close()
        if args.keep:
            shutil.copy(work / "results.sqlite", args.keep)

    print(table("targets", ["target", "figure", "verdict"],
                [[name, figure, verdict(ok)] for name, (ok, figure) in targets.items()]))
    out["targets"] = {name: {"passed": ok, "figure": figure} for name, (ok, figure) in targets.items()}
    write_json(args.json, out)
    return 1 if any(ok is False for ok, _ in targets.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
