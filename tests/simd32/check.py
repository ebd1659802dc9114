"""Portable variants checked on OpenCL with 32-lane SIMD groups emulated
(opencl_simd32.h, next to this file), so that the lane arithmetic Metal and CUDA run is
verified on a machine without a GPU (PoCL). Used by tests/test_families.py on a few
variants and by benchmarks/opencl_check.py on every one.

The emulation's source and its seventh kernel argument (a scratch buffer) are what the
runner cannot give a kernel, so this launches through the embedded API (Device.compile
and run) and judges each output with the package's own inputs, references and verdicts
(metalbench.reference, metalbench.metrics): each supported pair is launched twice from
C's initial state, the second time from the workspace the first left, so a kernel that
leaves it dirty fails too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

import metalbench
from metalbench import metrics, paths, quant
from metalbench.reference import ReferenceCache, make_inputs
from metalbench.specs import Spec
from metalbench.variants import Variant

# Appended to the OpenCL prelude: SIMD_WIDTH 32, SIMD_SUM and SIMD_BROADCAST emulated.
HEADER = Path(__file__).resolve().parent / "opencl_simd32.h"
# Scratch floats per thread the emulation takes (MB_SIM_SLOTS in opencl_simd32.h).
SIMD32_SLOTS = 16


def simd32_source(v: Variant) -> str:
    """The OpenCL source of a portable variant with 32-lane SIMD groups emulated."""
    text = v.source("opencl")
    cut = text.index(f'#line 1 "{v.family.source.name}"')  # type: ignore[union-attr]
    common = (paths.kernels_dir() / "include" / "common.h").read_text()
    head = text[:cut]
    assert common in head
    prelude = head[: head.index(common)]
    return prelude + "\n" + HEADER.read_text() + "\n" + head[head.index(common):] + text[cut:]


class _Problem:
    """A spec's inputs on the device (each buffer exactly its size), its reference and C's initial state."""

    def __init__(self, dev: metalbench.Device, spec: Spec) -> None:
        self.spec = spec
        inputs = make_inputs(spec)
        self.ref, _ = ReferenceCache().get(spec, inputs)
        self.c0 = np.ascontiguousarray(metrics.initial_c(spec, inputs))
        bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
        # A quantized B as the kernels take it (codes, scales, biases in one buffer), not its
        # dequantized values, which only the reference reads.
        layout = spec.b_layout()
        b = inputs.b if inputs.q is None or layout is None else quant.b_buffer(inputs.q, layout)
        self.a, self.b, self.bias = (self._upload(dev, x) for x in (inputs.a, b, bias))
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
