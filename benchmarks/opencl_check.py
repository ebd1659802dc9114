"""Verifies the portable families on OpenCL (PoCL on a machine without a GPU) with 32-lane
SIMD groups emulated, so that the lane arithmetic Metal and CUDA run is checked here too.

    python benchmarks/opencl_check.py [--variants GLOB]... [--sets smoke,default,odd] [--json PATH]

The check is tests/simd32/check.py (tests/test_families.py runs it on a few variants;
this script on every one, over whole suites): each portable body is built with
tests/simd32/opencl_simd32.h after the OpenCL prelude, launched through the embedded API,
twice per pair (the second time from the workspace the first left), and judged with the
package's own inputs, references and verdicts. Verifying the variants as they are,
without the emulation, is benchmarks/check.py's job (`--backend opencl`), through the
runner.

Prints one line per failing pair and a table per set; exits 1 if any pair is wrong
or fails, 2 when OpenCL cannot run here. (--simd32 is accepted and changes nothing:
the emulation is what this script is for.)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import pick_backend, skipped, table, write_json

import metalbench
from metalbench import variants
from metalbench.specs import Spec, load_suite

# The check lives with the tests, which run it too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from simd32.check import verify_simd32  # noqa: E402

# Beyond the odd suite: m = 1 tails that no vector width divides in k or n for both
# layouts, A stored transposed, alpha/beta with beta != 0 on both layouts, float32
# with and without bias, batches with odd n, and a k long enough for every split.
EXTRA_SPECS = [
    Spec("matmul", "float16", 1, 1, 301, 1027, False, True),
    Spec("matmul", "float16", 1, 1, 301, 1027, False, False),
    Spec("matmul_bias_add", "float16", 2, 1, 258, 130, False, False),
    Spec("matmul_bias_add", "float16", 1, 1, 257, 515, True, True),
    Spec("matmul_alpha_beta", "float16", 3, 1, 67, 93, False, False, alpha=-0.5, beta=0.75),
    Spec("matmul_alpha_beta", "float16", 3, 1, 67, 93, True, True, alpha=1.5, beta=-1.0),
    Spec("matmul_alpha_beta", "float32", 2, 1, 130, 2050, False, True, alpha=0.25, beta=2.0),
    Spec("matmul", "float32", 1, 1, 1, 7, False, True),
    Spec("matmul", "float32", 1, 1, 5, 3, False, False),
    Spec("matmul", "float32", 4, 1, 33, 4099, False, True),
    Spec("matmul_bias_add", "float32", 1, 1, 515, 258, False, False),
    Spec("matmul", "float16", 1, 1, 640, 8200, False, True),
]

SETS: dict[str, Callable[[], list[Spec]]] = {
    "smoke": lambda: list(load_suite("smoke").specs),
    "default": lambda: list(load_suite("qwen2.5-0.5b-decode").specs),
    "odd": lambda: list(load_suite("odd").specs) + EXTRA_SPECS,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", action="append", default=[])
    ap.add_argument("--sets", default="smoke,default,odd")
    ap.add_argument("--simd32", action="store_true", help="accepted for compatibility: always on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    backend, why = pick_backend("opencl")
    if backend is None:
        write_json(args.json, skipped("the 32-lane SIMD check on OpenCL", why))
        return 2
    dev = metalbench.open_device("opencl", 0)
    chosen = variants.select(variants.load_variants("opencl"), args.variants)
    out, lines, bad = {}, [], 0
    for name in args.sets.split(","):
        started = time.perf_counter()
        rows = verify_simd32(dev, chosen, SETS[name]())
        failed = sum(1 for r in rows if "error" in r)
        wrong = sum(1 for r in rows if "wrong" in r)
        bad += failed + wrong
        out[name] = rows
        lines.append([name, len(rows), len(rows) - failed - wrong, failed, wrong,
                      f"{time.perf_counter() - started:.0f}"])
    print(table(f"portable variants with 32-lane SIMD groups emulated on {dev.info['name']}",
                ["set", "pairs", "verified", "failed", "wrong", "seconds"], lines))
    write_json(args.json, {"device": dev.info, "sets": out, "passed": not bad})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
