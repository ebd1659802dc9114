"""Verifies the portable families on OpenCL (PoCL on a machine without a GPU) with 32-lane
SIMD groups emulated, so that the lane arithmetic Metal and CUDA run is checked here too.

    python benchmarks/opencl_check.py [--variants GLOB]... [--sets smoke,default,odd] [--json PATH]

Each portable body is built with tests/simd32/opencl_simd32.h after the OpenCL
prelude: SIMD_WIDTH 32, SIMD_SUM and SIMD_BROADCAST emulated through a scratch buffer
that the kernel takes as a seventh argument (slowly, on a CPU). That source and that
argument are what the runner cannot give a kernel, so this script launches through
the embedded API (open_device, Device.compile and run) and judges each output with
the package's own inputs, references and verdicts (metalbench.reference,
metalbench.metrics): each supported pair is launched twice from C's initial state,
the second time from the workspace the first left, so a kernel that leaves it dirty
fails too. Verifying the variants as they are, without the emulation, is
benchmarks/check.py's job (`--backend opencl`), through the runner.

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

import numpy as np
from _common import pick_backend, skipped, table, write_json

import metalbench
from metalbench import metrics, paths, variants
from metalbench.reference import ReferenceCache, make_inputs
from metalbench.specs import Spec, load_suite
from metalbench.variants import Variant

ROOT = Path(__file__).resolve().parents[1]
SIMD32 = ROOT / "tests" / "simd32" / "opencl_simd32.h"
# Scratch floats per thread the emulation takes (MB_SIM_SLOTS in opencl_simd32.h).
SIMD32_SLOTS = 16

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


def simd32_source(v: Variant) -> str:
    """The OpenCL source of a portable variant with 32-lane SIMD groups emulated."""
    text = v.source("opencl")
    cut = text.index(f'#line 1 "{v.family.source.name}"')  # type: ignore[union-attr]
    common = (paths.kernels_dir() / "include" / "common.h").read_text()
    head = text[:cut]
    assert common in head
    prelude = head[: head.index(common)]
    return prelude + "\n" + SIMD32.read_text() + "\n" + head[head.index(common):] + text[cut:]


class _Problem:
    """A spec's inputs on the device (each buffer exactly its size), its reference and C's initial state."""

    def __init__(self, dev: metalbench.Device, spec: Spec) -> None:
        self.spec = spec
        inputs = make_inputs(spec)
        self.ref, _ = ReferenceCache().get(spec, inputs)
        self.c0 = np.ascontiguousarray(metrics.initial_c(spec, inputs))
        bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
        self.a, self.b, self.bias = (self._upload(dev, x) for x in (inputs.a, inputs.b, bias))
        self.c = dev.allocate(self.c0.nbytes)

    @staticmethod
    def _upload(dev: metalbench.Device, array: np.ndarray) -> metalbench.Buffer:
        buf = dev.allocate(array.nbytes)
        buf.write(np.ascontiguousarray(array))
        return buf

    def launch_and_check(self, dev: metalbench.Device, kernel: metalbench.Kernel, ws: metalbench.Buffer,
                         scratch: metalbench.Buffer, groups: list[int], threads: list[int]) -> str | None:
        """One launch from C's initial state; None if its output is correct, else why not."""
        self.c.write(self.c0)
        dev.run(kernel, [self.a, self.b, self.c, self.bias, ws, self.spec.params(), scratch], groups, threads)
        out = np.empty_like(self.c0)
        self.c.read(out)
        check = metrics.check(self.spec, out, self.ref, self.c0)
        return None if check.verdict == "ok" else check.reason


def verify_simd32(dev: metalbench.Device, chosen: list[Variant], shapes: list[Spec],
                  log: Callable[[str], None] = print) -> list[dict]:
    """Every portable variant on every shape it supports, twice (the second launch from the
    workspace the first left), with SIMD_WIDTH 32 emulated. One row per pair: variant,
    shape, and "wrong" or "error" when it did not verify."""
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
                problem = problem or _Problem(dev, s)
                groups, threads = v.geometry(s)
                ws = dev.allocate(4 * v.workspace_floats(s))
                ws.fill(0)
                scratch = dev.allocate(4 * SIMD32_SLOTS * max(1, int(np.prod(groups)) * int(np.prod(threads))))
                why = None
                for _ in range(2):
                    why = problem.launch_and_check(dev, kernels[key], ws, scratch, list(groups), list(threads))
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
