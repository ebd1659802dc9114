"""Verifies OpenCL variants (PoCL on a machine without a GPU) on the smoke suite, the
default suite and odd shapes, counting each set on its own.

    python benchmarks/opencl_check.py [--variants GLOB]... [--sets smoke,default,odd] [--simd32]
                                      [--json PATH]

Runs through metalbench._core (benchmarks/cuda_harness.py's verify_all, which is not
tied to CUDA): each supported pair is launched twice from a zeroed workspace and a
fresh C, so a kernel that leaves the workspace dirty fails its second run. Exits 1 if
any pair is wrong or fails.

--simd32 builds portable bodies with tests/simd32/opencl_simd32.h after the OpenCL
prelude: SIMD_WIDTH 32, SIMD_SUM and SIMD_BROADCAST emulated through a scratch buffer,
so the lane arithmetic that Metal and CUDA run is checked here too (on CPU, slowly).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_harness import CHECK_SPECS, Buffers, check, make_problem, suite_specs, verify_all  # noqa: E402

from metalbench import _core, paths, variants  # noqa: E402
from metalbench.specs import Spec  # noqa: E402
from metalbench.variants import Variant  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIMD32 = ROOT / "tests" / "simd32" / "opencl_simd32.h"

# Beyond CHECK_SPECS: m = 1 tails that no vector width divides in k or n for both
# layouts, A stored transposed, alpha/beta with beta != 0 on both layouts, float32
# with and without bias, batches with odd n, and a k long enough for every split.
ODD_SPECS = CHECK_SPECS + [
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

SETS = {
    "smoke": lambda: suite_specs("smoke"),
    "default": lambda: suite_specs("qwen2.5-0.5b-decode"),
    "odd": lambda: ODD_SPECS,
}


def simd32_source(v: Variant) -> str:
    """The OpenCL source of a portable variant with 32-lane SIMD groups emulated."""
    text = v.source("opencl")
    cut = text.index(f'#line 1 "{v.family.source.name}"')  # type: ignore[union-attr]
    common = (paths.kernels_dir() / "include" / "common.h").read_text()
    head = text[:cut]
    assert common in head
    prelude = head[: head.index(common)]
    return prelude + "\n" + SIMD32.read_text() + "\n" + head[head.index(common):] + text[cut:]


def verify_simd32(dev: _core.Device, chosen: list[Variant], shapes: list[Spec],
                  log=print) -> list[dict]:
    """verify_all's checks (two launches, the second from the workspace the first left)
    with SIMD_WIDTH 32 emulated: portable variants only."""
    rows = []
    kernels: dict = {}
    for s in shapes:
        problem = None
        for v in chosen:
            if v.family.source is None or v.family.source.parent.name != "portable":
                continue
            if v.unsupported_reason(s) is not None:
                continue
            row = {"variant": v.id, "shape": s.label()}
            try:
                key = (v.id, s.dtype)
                if key not in kernels:
                    kernels[key] = dev.compile(simd32_source(v), v.family.entry, v.defines(s.dtype), v.id + "@simd32")
                problem = problem or make_problem(s)
                groups, threads = v.geometry(s)
                bufs = Buffers(dev, problem, v.workspace_floats(s))
                scratch = dev.allocate(4 * max(1, groups[0] * groups[1] * groups[2] * threads[0] * threads[1]
                                               * threads[2]))
                why = None
                for _ in range(2):
                    bufs.reset()
                    dev.run(kernels[key], bufs.args() + [scratch], list(groups), list(threads))
                    why = check(problem, bufs.result())
                    if why:
                        break
                if why:
                    row["wrong"] = why
            except Exception as e:  # noqa: BLE001 - belongs to that pair alone
                row["error"] = f"{type(e).__name__}: {e} {getattr(e, 'log', '')[:2000]}"
            if "error" in row or "wrong" in row:
                log(f"FAIL {row}")
            rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", action="append", default=[])
    ap.add_argument("--sets", default="smoke,default,odd")
    ap.add_argument("--simd32", action="store_true", help="emulate 32-lane SIMD groups (portable families only)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    reason = _core.unavailable_reason("opencl")
    if reason:
        print(f"OpenCL is not available here: {reason}")
        return 2
    _core.set_cache_dir(str(paths.cache_dir() / "kernels"))
    dev = _core.open("opencl", 0)
    print(dev.info["name"], dev.info["driver"])
    chosen = variants.select(variants.load_variants("opencl"), args.variants)
    out, bad = {}, 0
    for name in args.sets.split(","):
        t0 = time.time()
        shapes = SETS[name]()
        rows = verify_simd32(dev, chosen, shapes) if args.simd32 else verify_all(dev, chosen, shapes)
        failed = sum(1 for r in rows if "error" in r)
        wrong = sum(1 for r in rows if "wrong" in r)
        bad += failed + wrong
        out[name] = rows
        label = f"{name} (simd32)" if args.simd32 else name
        print(f"{label}: {len(rows)} pairs of {len(chosen)} variants verified, {failed} failed, {wrong} wrong, "
              f"{time.time() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
