"""Compiles CUDA variants with a local nvcc, no GPU needed: every grid point of the
chosen families in each of its dtypes, as NVRTC would see it (the CUDA prelude,
common.h and the body; -DMB_NVRTC=1; the defines as #define lines, which nvcc's own
headers, included first, do not see). With --nvrtc, NVRTC itself compiles them, as the
CUDA backend does (benchmarks/nvrtc.py; no toolkit needed: `pip install
nvidia-cuda-nvrtc-cu12`).

    python benchmarks/nvcc_check.py [--nvrtc] [--variants GLOB]... [--arch sm_90a] [--jobs 2]

Prints one line per failure with the compiler's messages, and every variant whose ptxas
report shows register spills; exits 1 if any compile fails, 2 without the compiler.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nvrtc

from metalbench import variants


def nvcc_path() -> str | None:
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def cuda_text(v: variants.Variant, dtype: str) -> str:
    defines = "".join(f"#define {k} {val}\n" for k, val in v.defines(dtype).items())
    return defines + v.source("cuda")


def compile_one(nvcc: str, folder: Path, i: int, v: variants.Variant, dtype: str, arch: str) -> tuple[int, str]:
    src = folder / f"k{i}.cu"
    src.write_text(cuda_text(v, dtype))
    r = subprocess.run([nvcc, f"-arch={arch}", "--std=c++17", "-DMB_NVRTC=1", "-Xptxas", "-v", "-c", str(src),
                        "-o", str(folder / f"k{i}.o")], capture_output=True, text=True)
    return r.returncode, r.stderr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", action="append", default=[])
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--nvrtc", action="store_true", help="compile with NVRTC (as the CUDA backend does), not nvcc")
    args = ap.parse_args()
    if args.nvrtc:
        try:
            rtc = nvrtc.Nvrtc()
        except OSError as e:
            print(f"SKIPPED the NVRTC compile check: {e}")
            return 2
        compiler = f"NVRTC {rtc.version}"

        def compile_case(i: int, v: variants.Variant, d: str) -> tuple[int, str]:
            ok, log = nvrtc.compile_variant(rtc, v, d, args.arch)
            return (0 if ok else 1), log
    else:
        nvcc = nvcc_path()
        if nvcc is None:
            print("no nvcc on this machine")
            return 2
        compiler = "nvcc"
        tmp = tempfile.TemporaryDirectory()

        def compile_case(i: int, v: variants.Variant, d: str) -> tuple[int, str]:
            return compile_one(nvcc, Path(tmp.name), i, v, d, args.arch)
    chosen = [v for v in variants.select(variants.load_variants("cuda"), args.variants) if v.family.source]
    cases = [(v, d) for v in chosen for d in v.family.dtypes]
    t0 = time.time()
    failed, spills = [], []
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        futures = {ex.submit(compile_case, i, v, d): (v, d) for i, (v, d) in enumerate(cases)}
        for f in cf.as_completed(futures):
            v, d = futures[f]
            rc, err = f.result()
            if rc:
                failed.append(f"{v.id} {d}:\n{err}")
                print(f"FAIL {v.id} {d}:\n{err}")
            elif re.search(r"[1-9]\d* bytes spill", err):
                spills.append(f"{v.id} {d}")
    print(f"{len(cases)} compiles of {len(chosen)} variants ({compiler}, {args.arch}), {len(failed)} failed, "
          f"{len(spills)} with register spills, {time.time() - t0:.0f} s")
    for s in sorted(spills):
        print(f"spills: {s}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
