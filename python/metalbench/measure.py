"""One variant on one spec, on an open device: build, verify, time, verify again.

This is the work a worker process does (worker.py); nothing here stores or reports.

    verify  one launch from C's initial state; its output is checked against the
            reference, every guard band and every input against what was uploaded.
    time    the core's three clocks (csrc/core/measure.h) over rounds of output slots,
            each round from a fresh C and workspace.
    verify  the last round's outputs, guard bands and inputs again: a kernel that is
            correct once but not when launched over and over is wrong.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _core, metrics, paths
from .arena import Comparer, SpecBuffers, guard_bytes, plan_copies
from .reference import Reference, ReferenceCache, make_inputs
from .results import CLOCKS, Category, Result, Status
from .settings import BATCH_TIME, Settings
from .specs import DTYPES, Spec
from .variants import ManifestError, Variant, build_kernel

__all__ = ["Prepared", "Worker", "plan_slots", "prelude_simd_width", "unsupported_here"]

# No GPU completes a launch much faster than this back to back (an H200 runs an empty
# kernel in 1.4 us): with this many output slots, a batch of the fastest kernels can
# still give every launch its own.
_FASTEST_LAUNCH = 1e-6
# Output slots take at most this much device memory per spec (more slots than a batch
# needs only cost memory and reset time).
_SLOT_BUDGET = 16 << 20
# Cold input copies take at most this share of the device's memory.
_COLD_SHARE = 4
# Compiler threads at most: compiling is memory-hungry too (NVRTC takes ~100 MB).
_BUILD_THREADS = 16
# How a prelude states the SIMD width it compiles the dialect for.
_SIMD_WIDTH = re.compile(r"^#define SIMD_WIDTH (\d+)\b", re.MULTILINE)


def plan_slots(spec: Spec, copies: int, alignment: int, max_held: int) -> int:
    """Output slots: one per launch of the longest batch the fastest kernel could need,
    within the memory budget, and at least one per input copy."""
    slot = -(-(math.prod(spec.shape_c) * DTYPES[spec.dtype].itemsize + guard_bytes(alignment)) // alignment) * alignment
    wanted = math.ceil(BATCH_TIME / _FASTEST_LAUNCH)
    if max_held:
        wanted = min(wanted, max_held)
    return max(copies, min(wanted, max(1, _SLOT_BUDGET // slot)))


@dataclass
class Prepared:
    """A spec ready to run variants on: its reference and its buffers, or why not."""

    spec: Spec
    ref: Reference | None = None
    buffers: SpecBuffers | None = None
    c_initial: np.ndarray | None = None
    failure: str = ""
    notes: list[str] = field(default_factory=list)
    mode: dict = field(default_factory=dict)


@functools.cache
def prelude_simd_width(backend: str) -> int:
    """The SIMD width `backend`'s prelude (kernels/include/<backend>.h, the one place it is
    written) compiles the portable dialect for; 1: every thread is a SIMD group of its own."""
    path = paths.kernels_dir() / "include" / f"{backend}.h"
    found = _SIMD_WIDTH.search(path.read_text())
    if found is None:
        raise ManifestError(f"{path}: no '#define SIMD_WIDTH' line")
    return int(found.group(1))


def unsupported_here(kernel: _core.Kernel, v: Variant, backend: str, info: dict, threads: Sequence[int]) -> str:
    """Why the built `kernel` of `v` cannot run a launch of `threads` on this device, or "".

    Known only once the kernel is built, so the worker decides it, not the planner: a
    pipeline may take fewer threads a group than its device (the Metal compiler chooses,
    as NVIDIA's OpenCL does at 256 for some kernels), and the SIMD width a kernel runs
    at is the compiler's (Metal's threadExecutionWidth: 32 on Apple GPUs, other widths on
    an Intel Mac's). A kernel compiled with a prelude that assumes a width above 1 (the
    lanes of SIMD_SUM, SIMD_BROADCAST, SIMD_LANE and the primitives built on them) would
    compute wrong results at another; a width-1 prelude assumes no lock step at all.
    Vendor builtins choose their own geometry and have no prelude.
    """
    group = math.prod(threads)
    limit = int(kernel.max_group_size)  # 0: none of its own, as for a builtin
    if limit and int(info.get("max_group_size") or 0):
        limit = min(limit, int(info["max_group_size"]))
    if limit and group > limit:
        return f"a group of {group} threads is more than the {limit} this kernel takes on {info['name']}"
    if v.family.builtin is None:
        assumed = prelude_simd_width(backend)
        if assumed > 1 and int(kernel.simd_width) != assumed:
            return (f"its SIMD groups are {kernel.simd_width} threads wide on {info['name']}; the {backend} "
                    f"prelude assumes {assumed}")
    return ""


def _host_available() -> int | None:
    """Bytes of memory the host can still give, where the system says (Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


class Worker:
    """A device opened in this process, and what it keeps between pairs: compiled
    kernels (one build per variant and dtype) and the compare kernel."""

    def __init__(self, backend: str, index: int) -> None:
        self.backend, self.index = backend, index
        self.device = _core.open(backend, index)
        self.info = self.device.info
        self.compare = Comparer(self.device, backend)
        self.kernels: dict[tuple[str, str], _core.Kernel | Exception] = {}
        self.cache = ReferenceCache()

    def healthy(self) -> bool:
        """Whether the device still takes work: a failure that outlives its variant means it does not."""
        try:
            probe = self.device.allocate(4)
            probe.fill(0)
            probe.read(np.empty(1, dtype=np.float32))
        except _core.DeviceError:
            return False
        return True

    def prepare(self, spec: Spec, settings: Settings) -> Prepared:
        """Inputs, reference and buffers of `spec`, or the reason the spec cannot run here."""
        out = Prepared(spec)
        itemsize = DTYPES[spec.dtype].itemsize
        elements_c = math.prod(spec.shape_c)
        # Inputs in their dtype, C's initial state, and the reference's two float64 arrays.
        host_need = spec.bytes_read() + 2 * elements_c * itemsize + 16 * elements_c + \
            8 * math.prod(spec.shape_a) * 2
        copies = plan_copies(spec, int(self.info["cache_bytes"]), settings.cold,
                             int(self.info["memory_bytes"]) // _COLD_SHARE)
        slots = plan_slots(spec, copies, int(self.info["view_alignment"]), int(self.info["max_held_launches"]))
        alignment = int(self.info["view_alignment"])
        guard = guard_bytes(alignment)
        device_need = 2 * copies * (spec.bytes_read() + 3 * guard) + 2 * slots * (elements_c * itemsize + guard)
        if device_need > int(self.info["memory_bytes"]):
            out.failure = (f"needs {_gib(device_need)} of device memory for its buffers, the device has "
                           f"{_gib(int(self.info['memory_bytes']))}")
            return out
        # A device that shares the host's memory (a CPU OpenCL device, Apple silicon) takes
        # its buffers from the same pool: checking the two apart let the kernel kill the worker.
        shared = bool(self.info.get("unified_memory"))
        available = _host_available()
        need = host_need + (device_need if shared else 0)
        if available is not None and need > available:
            what = "its inputs, reference and buffers (the device shares the host's memory)" if shared \
                else "its inputs and reference"
            out.failure = f"needs {_gib(need)} of host memory for {what}, {_gib(available)} is available"
            return out
        try:
            inputs = make_inputs(spec)
            out.ref, status = self.cache.get(spec, inputs)
            if status.startswith("recomputed"):
                out.notes.append(f"reference for {spec.label()}: {status}")
            out.c_initial = metrics.initial_c(spec, inputs)
            bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
            out.buffers = SpecBuffers(self.device, spec, inputs.a, inputs.b, bias, out.c_initial, copies, slots,
                                      self.compare)
        except MemoryError:
            out.failure = f"ran out of host memory preparing its inputs and reference (about {_gib(host_need)})"
        except _core.DeviceError as e:
            out.failure = f"could not allocate its buffers on the device: {e}"
        wanted = plan_copies(spec, int(self.info["cache_bytes"]), settings.cold, 1 << 62)
        out.mode = {"cold": settings.cold, "copies": copies, "slots": slots,
                    "cold_partial": settings.cold and copies < wanted}
        return out

    def build(self, wanted: list[Variant], dtype: str, done: Callable[[str], None]) -> None:
        """Builds every variant of `wanted` not built yet, side by side: compilers (NVRTC,
        the OpenCL and Metal compilers) release the GIL and take one thread each, and a
        sweep's kernels are many, so a cold kernel cache costs seconds rather than
        minutes. `done(variant id)` is called as each is built."""
        todo = list({v.id: v for v in wanted if (v.id, dtype) not in self.kernels}.values())
        if len(todo) < 2:
            return
        with ThreadPoolExecutor(min(len(todo), os.cpu_count() or 1, _BUILD_THREADS)) as pool:
            for v, built in zip(todo, pool.map(lambda v: self._build(v, dtype), todo), strict=True):
                self.kernels[(v.id, dtype)] = built
                done(v.id)

    def _build(self, v: Variant, dtype: str) -> _core.Kernel | Exception:
        try:
            return build_kernel(self.device, self.backend, v, dtype)
        except Exception as e:  # noqa: BLE001 - any failure belongs to this variant alone
            return e

    def kernel(self, v: Variant, dtype: str) -> _core.Kernel:
        """Builds once per variant and dtype; a build failure is remembered and raised again."""
        slot = (v.id, dtype)
        if slot not in self.kernels:
            self.kernels[slot] = self._build(v, dtype)
        found = self.kernels[slot]
        if isinstance(found, Exception):
            raise found
        return found

    def measure(self, prepared: Prepared, v: Variant, key: str, detail: dict, settings: Settings) -> Result:
        """The result of variant `v` on the prepared spec (never raises for the variant's own faults);
        its `measure` says which device index measured it."""
        result = self._measure(prepared, v, key, detail, settings)
        result.measure = {**(result.measure or {}), "device": self.index}
        return result

    def _measure(self, prepared: Prepared, v: Variant, key: str, detail: dict, settings: Settings) -> Result:
        spec = prepared.spec
        result = Result(variant=v.id, spec_key=spec.key(), status=Status.FAILED, key=key, detail=detail)
        if prepared.failure:
            result.category, result.message = Category.RUNTIME, f"{spec.label()} {prepared.failure}"
            return result
        buffers, ref = prepared.buffers, prepared.ref
        assert buffers is not None and ref is not None and prepared.c_initial is not None
        groups, threads = detail["groups"], detail["threads"]
        try:
            kernel = self.kernel(v, spec.dtype)
            why = unsupported_here(kernel, v, self.backend, self.info, threads)
        except _core.CompileError as e:
            result.category, result.message, result.log = Category.COMPILE, str(e), getattr(e, "log", "")
            return result
        except (_core.UsageError, _core.UnavailableError, ManifestError, OSError) as e:
            result.category, result.message = Category.COMPILE, str(e)
            return result
        if why:  # stored as the planner stores what a manifest rules out, with the key: a rerun reuses it
            result.status, result.category = Status.UNSUPPORTED, Category.UNSUPPORTED
            result.message = why
            return result
        ws_bytes = 4 * detail["workspace"] * buffers.slots
        if ws_bytes > int(self.info["memory_bytes"]) // 2:
            result.category = Category.LAUNCH
            result.message = (f"its workspace of {detail['workspace']} floats x {buffers.slots} slots "
                              f"({_gib(ws_bytes)}) does not fit the device's memory")
            return result
        ws, ws0 = buffers.workspace(detail["workspace"])
        args = buffers.slot_args(ws, spec.params())

        # Verify: one launch, from C's initial state.
        buffers.reset(ws, ws0)
        try:
            self.device.run(kernel, args[0], groups, threads)
        except _core.UsageError as e:
            result.category, result.message = Category.LAUNCH, str(e)
            return result
        except _core.DeviceError as e:
            result.category, result.message = Category.RUNTIME, str(e)
            return result
        outputs, band = buffers.outputs(0, 1)
        check = metrics.check(spec, outputs[0], ref, prepared.c_initial)
        result.checks = asdict(check)
        damage = band or buffers.strays(0, 1) or self._damage(buffers, ws, ws0, first_only=True)
        if damage:
            # Memory it must not touch: not run again, so nothing else is damaged.
            result.status, result.category, result.message = Status.WRONG, Category.WRONG, damage
            return result
        wrong = check.reason if check.verdict != Status.OK else ""

        # Time, then verify what the final round left.
        try:
            timing = self.device.measure(kernel, args, groups, threads, resets=buffers.resets(ws, ws0),
                                         **settings.core())
        except (_core.UsageError, _core.DeviceError) as e:
            result.category, result.message = Category.RUNTIME, f"timing: {e}"
            return result
        for clock in CLOCKS:
            setattr(result, clock, timing[clock])
            result.samples[clock] = timing[f"{clock}_ns"]
        result.measure = {"batch_size": timing["batch_size"], "clock": timing["clock"], "warmup": timing["warmup"],
                          **prepared.mode}
        if not wrong:
            # The last round started from a reset and launched only these slots: their outputs
            # and bands are read back, the rest of C must still be as reset.
            first, count = timing["first_slot"], timing["last_round"]
            outputs, band = buffers.outputs(first, count)
            again = band or buffers.strays(first, count) or self._damage(buffers, ws, ws0) or \
                self._verify_slots(spec, outputs, ref, prepared.c_initial)
            if again:
                wrong = f"correct once, wrong when timed: {again}"
        if wrong:
            result.status, result.category, result.message = Status.WRONG, Category.WRONG, wrong
        else:
            result.status = Status.OK
        return result

    def _damage(self, buffers: SpecBuffers, ws: object, ws0: _core.Buffer, first_only: bool = False) -> str:
        found = buffers.damage(ws, ws0, first_only)  # type: ignore[arg-type]
        if found is None:
            return ""
        if found.buffer != "workspace":  # later variants of this spec need the inputs as uploaded
            arena, pristine = buffers.inputs[found.buffer]
            arena.buffer.copy_from(pristine)
        return found.reason

    @staticmethod
    def _verify_slots(spec: Spec, outputs: np.ndarray, ref: Reference, c_initial: np.ndarray) -> str:
        """Why the last timed round's outputs are not all correct, or ""; identical outputs are checked once."""
        first = outputs[0].view(np.uint8)
        for i, out in enumerate(outputs):
            if i and np.array_equal(out.view(np.uint8), first):
                continue
            check = metrics.check(spec, out, ref, c_initial)
            if check.verdict != Status.OK:
                return f"{check.reason} (launch {i + 1} of the last timed round)"
        return ""


def worker_stdio() -> None:
    """A worker's own output goes to the parent's stderr: stdout belongs to the report."""
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
