"""One variant on one spec, on an open device: build, verify, time, verify again.

This is the work a worker process does (worker.py); nothing here stores or reports.

    build   each variant's kernel, as a step of its own (a hung or fatal build blames
            that variant alone: worker.py).
    verify  one launch from C's initial state; its output is checked against the
            reference, every guard band and every input against what was uploaded.
    time    the core's three clocks (csrc/core/measure.h) over rounds of output slots,
            each round from a fresh C and workspace.
    verify  a round of launches again: for a full measurement an untimed final round over
            every slot (as many as fit in its time), for a race's brief lap the last timed
            round. Every slot reads its own copy of A (reference.fresh_copies, from the
            run's seed), so a launch that kept, copied or shipped an answer instead of
            computing its own slot's is wrong: every guard band, a sample of every slot's
            elements against that slot's reference, a few whole slots, the rest of C,
            the inputs and the workspace.
"""

from __future__ import annotations

import functools
import math
import os
import re
import signal
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _core, batch, metrics, paths
from .arena import Comparer, SpecBuffers, guard_bytes, guard_pattern, plan_cold
from .backends import traits
from .quant import b_buffer
from .reference import Fresh, Reference, ReferenceCache, fresh_copies, make_inputs, reference_at
from .results import CHECK, CLOCKS, TIME, VERIFY, Category, Result, Status
from .settings import BATCH_TIME, Settings
from .specs import DTYPES, Spec
from .variants import ManifestError, Variant, build_kernel

__all__ = ["Prepared", "Worker", "plan_a_copies", "plan_slots", "prelude_simd_width", "unsupported_here"]

# No GPU completes a launch much faster than this back to back (an H200 runs an empty
# kernel in 1.4 us): with this many output slots, a batch of the fastest kernels can
# still give every launch its own.
_FASTEST_LAUNCH = 1e-6
# Output slots take at most this much device memory per spec (more slots than a batch
# needs only cost memory and reset time).
_SLOT_BUDGET = 16 << 20
# Cold input copies (and eviction buffers) take at most this share of the device's
# memory, and at most _COLD_BYTES; there are at most _COLD_COPIES of them (each its
# own slot and launch of a round, whose host-side arguments and device timestamps
# cost per launch: PoCL's 480 MiB cache asked for tens of thousands, and a spec's
# preparation alone took longer than a minute).
_COLD_SHARE = 4
_COLD_BYTES = 1 << 30
_COLD_COPIES = 512
# An eviction before a round may take at most this share of max_time at the peak
# bandwidth: a copy of twice a (misreported) 480 MiB cache before every round made a
# smoke suite's cold run take 12 times its warm one on PoCL.
_EVICT_SHARE = 0.1
# Compiler threads at most: compiling is memory-hungry too (NVRTC takes ~100 MB).
_BUILD_THREADS = 16
# How a prelude states the SIMD width it compiles the dialect for.
_SIMD_WIDTH = re.compile(r"^#define SIMD_WIDTH (\d+)\b", re.MULTILINE)
# Copies of A (each with its own values) take at most this many bytes, and in any case
# at most 1/_A_CACHE_SHARE of the last-level cache, so that warm inputs stay warm.
_A_BUDGET = 16 << 20
_A_CACHE_SHARE = 8
# Elements of every slot of a verified round checked against that slot's reference (all
# of a smaller C), and slots of it checked whole: a stale, copied or precomputed output
# differs from the slot's answer at nearly every element, and a racy one at many.
_SAMPLE = 128
_WHOLE_SLOTS = 2
_U64 = (1 << 64) - 1
# A brief lap skips its warm-up where the launch it verified took this share of
# max_time or more (the core would stop a warm-up after one such launch anyway).
_WARM_SHARE = 0.25
# A brief lap gives up timing a pair whose verified launch took over this many times the
# best time of its spec known so far (and at least _HOPELESS_MIN seconds: a round trip
# that long is the kernel's time within a few percent): it cannot tie, which needs 1%.
_HOPELESS = 4.0
_HOPELESS_MIN = 2e-3
# Test-only (_planted_build_fault): a build that hangs or is killed.
_BUILD_FAULT_ENV = "METALBENCH_TEST_BUILD_FAULT"


def plan_slots(spec: Spec, copies: int, alignment: int, max_held: int) -> int:
    """Output slots: one per launch of the longest batch the fastest kernel could need,
    within the memory budget, and at least one per input copy."""
    slot = -(-(math.prod(spec.shape_c) * DTYPES[spec.dtype].itemsize + guard_bytes(alignment)) // alignment) * alignment
    wanted = math.ceil(BATCH_TIME / _FASTEST_LAUNCH)
    if max_held:
        wanted = min(wanted, max_held)
    return max(copies, min(wanted, max(1, _SLOT_BUDGET // slot)))


def plan_a_copies(spec: Spec, copies: int, slots: int, alignment: int, cache_bytes: int) -> int:
    """Copies of A, each with its own values: one per slot within a budget (warm inputs stay
    warm: at most an eighth of the cache, and _A_BUDGET), at least the input copies, and at
    least two wherever there are two slots, so that no slot's neighbour shares its answer."""
    stride = -(-(math.prod(spec.shape_a) * DTYPES[spec.dtype].itemsize + guard_bytes(alignment)) // alignment) * \
        alignment
    budget = min(_A_BUDGET, cache_bytes // _A_CACHE_SHARE)
    return max(copies, min(slots, 2), min(slots, budget // stride))


@dataclass
class Prepared:
    """A spec ready to run variants on, for one run (its seed): the base reference, B as
    stored, what each copy of A changed, the buffers; or why the spec cannot run here.

    References of a copy of A are made as verification asks for them, and kept for the
    next variant: whole ones per copy, sampled elements per slot."""

    spec: Spec
    seed: int = 0
    ref: Reference | None = None
    b: np.ndarray | None = None
    fresh: Fresh | None = None
    buffers: SpecBuffers | None = None
    c_initial: np.ndarray | None = None
    failure: str = ""
    notes: list[str] = field(default_factory=list)
    mode: dict = field(default_factory=dict)
    seconds: float = 0.0  # what preparing it took
    cache_bytes: int = 0  # the last-level cache its cold plan was sized by
    peak_bandwidth: float = 0.0
    _whole: dict[int, Reference] = field(default_factory=dict, repr=False)
    _sampled: dict[int, tuple[np.ndarray, Reference]] = field(default_factory=dict, repr=False)

    def whole(self, copy: int) -> Reference:
        """The reference of copy `copy` of A at every element, shaped as C."""
        if copy not in self._whole:
            assert self.ref is not None and self.b is not None and self.fresh is not None
            at = reference_at(self.spec, self.ref, self.b, self.fresh, copy, np.arange(math.prod(self.spec.shape_c)))
            shape = self.spec.shape_c
            self._whole[copy] = Reference(at.out.reshape(shape), at.mag.reshape(shape),
                                          None if at.epilogue is None else at.epilogue.reshape(shape))
        return self._whole[copy]

    def sampled(self, slots: np.ndarray) -> tuple[np.ndarray, Reference]:
        """For each of `slots`, the elements verified there (flat indices into C, `_SAMPLE` of
        them drawn from the run's seed and the slot, or every one of a small C), and the
        reference of the slot's copy of A at them: (len(slots), count) arrays."""
        assert self.ref is not None and self.b is not None and self.fresh is not None and self.buffers is not None
        todo = [int(s) for s in dict.fromkeys(slots.tolist()) if int(s) not in self._sampled]
        if todo:
            size = math.prod(self.spec.shape_c)
            count = min(_SAMPLE, size)
            picks = [np.arange(size) if count == size else
                     np.random.default_rng([self.seed & _U64, slot, 0x5A]).choice(size, count, replace=False)
                     for slot in todo]
            flat = np.concatenate(picks)
            copy = np.repeat([self.buffers.a_copy(slot) for slot in todo], count)
            at = reference_at(self.spec, self.ref, self.b, self.fresh, copy, flat)
            for i, slot in enumerate(todo):
                part = slice(i * count, (i + 1) * count)
                self._sampled[slot] = (picks[i], Reference(at.out[part], at.mag[part],
                                                           None if at.epilogue is None else at.epilogue[part]))
        found = [self._sampled[int(s)] for s in slots]
        epilogues = [r.epilogue for _, r in found]
        return np.stack([f for f, _ in found]), Reference(
            np.stack([r.out for _, r in found]), np.stack([r.mag for _, r in found]),
            None if any(e is None for e in epilogues) else np.stack(epilogues))  # type: ignore[arg-type]


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


def _planted_build_fault(variant: str) -> None:
    """Test-only: what METALBENCH_TEST_BUILD_FAULT plants in the build of `variant` ("ID=hang"
    or "ID=kill", comma-separated): a compiler that never returns, or one whose process
    the system kills (as it kills one that exhausts memory). The worker-side half of the
    tests of worker.py's build deadlines; unset, it does nothing."""
    planted = os.environ.get(_BUILD_FAULT_ENV)
    if not planted:
        return
    for item in planted.split(","):
        name, _, fault = item.partition("=")
        if name.strip() != variant:
            continue
        if fault == "hang":
            while True:
                time.sleep(1)
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)


class Worker:
    """A device opened in this process, and what it keeps between pairs: compiled
    kernels (one build per variant and dtype) and the compare kernel."""

    def __init__(self, backend: str, index: int) -> None:
        self.backend, self.index = backend, index
        self.device = _core.open(backend, index)
        self.info = self.device.info
        self.compare = Comparer(self.device, backend)
        self.kernels: dict[tuple[str, str], _core.Kernel | Exception] = {}
        self.build_seconds: dict[tuple[str, str], float] = {}
        # Each kernel's share of the wall time of the build step it was built in: builds run
        # side by side, so these add up to the time the sweep waited, where build_seconds
        # add up to the compilers' time (eta.py costs the builds to come by these).
        self.build_wall: dict[tuple[str, str], float] = {}
        self._alone: set[Path | None] = set()  # sources whose variants did not build as one program (batch.py)
        # Kernels launched at least once with a group shape: a driver that compiles at the
        # first launch of a shape (PoCL) has done so, and a round trip is a launch's time.
        self.launched: set[tuple[str, str, tuple[int, ...]]] = set()
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

    def prepare(self, spec: Spec, settings: Settings, seed: int = 0, cache_bytes: int = 0,
                peak_bandwidth: float = 0.0) -> Prepared:
        """Inputs, reference and buffers of `spec` for the run with `seed`, or the reason the
        spec cannot run here. `cache_bytes` is the last-level cache cold mode sizes its
        copies by (peak.py's measurement; 0: the driver's figure); `peak_bandwidth` (bytes
        per second, 0: unknown) bounds how long an eviction before each round may take."""
        out = Prepared(spec, seed)
        out.cache_bytes, out.peak_bandwidth = cache_bytes or int(self.info["cache_bytes"]), peak_bandwidth
        started = time.perf_counter()
        try:
            return self._prepare(out, settings)
        finally:
            out.seconds = round(time.perf_counter() - started, 6)

    def _prepare(self, out: Prepared, settings: Settings) -> Prepared:
        spec, seed = out.spec, out.seed
        itemsize = DTYPES[spec.dtype].itemsize
        elements_c = math.prod(spec.shape_c)
        alignment = int(self.info["view_alignment"])
        cache_bytes = out.cache_bytes
        budget = min(_COLD_BYTES, int(self.info["memory_bytes"]) // _COLD_SHARE)
        # An eviction copy reads and writes its buffer: at the peak, at most _EVICT_SHARE of max_time.
        max_evict = int(out.peak_bandwidth * settings.max_time * _EVICT_SHARE / 2)
        cold = plan_cold(spec, cache_bytes, settings.cold, budget, _COLD_COPIES, max_evict)
        copies = cold.copies
        # Evicting, a round launches each copy once at most: as many slots as copies.
        slots = copies if cold.evict else plan_slots(spec, copies, alignment, int(self.info["max_held_launches"]))
        a_copies = plan_a_copies(spec, copies, slots, alignment, cache_bytes)
        a_bytes = math.prod(spec.shape_a) * itemsize
        # Inputs in their dtype and A's copies, C's initial state, and the reference's two
        # float64 arrays (and one for a copy's).
        host_need = spec.bytes_read() + a_copies * a_bytes + 2 * elements_c * itemsize + 24 * elements_c + \
            8 * math.prod(spec.shape_a) * 2
        guard = guard_bytes(alignment)
        device_need = 2 * copies * (spec.bytes_read() + 3 * guard) + 2 * a_copies * (a_bytes + guard) + \
            2 * slots * (elements_c * itemsize + guard) + 2 * cold.evict
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
            a_contents, out.fresh = fresh_copies(spec, inputs.a, seed, a_copies)
            out.b = inputs.b
            out.c_initial = metrics.initial_c(spec, inputs, seed)
            bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
            layout = spec.b_layout()
            # A quantized B goes to the device as MLX holds it (codes, scales, biases in one
            # buffer: quant.b_buffer); inputs.b, its dequantized value, is what the reference reads.
            b_device = inputs.b if layout is None or inputs.q is None else b_buffer(inputs.q, layout)
            out.buffers = SpecBuffers(self.device, spec, a_contents, b_device, bias, out.c_initial, copies, slots,
                                      self.compare, guard_pattern(seed), cold.evict)
        except MemoryError:
            out.failure = f"ran out of host memory preparing its inputs and reference (about {_gib(host_need)})"
        except _core.DeviceError as e:
            out.failure = f"could not allocate its buffers on the device: {e}"
        out.mode = {"cold": settings.cold, "copies": copies, "a_copies": a_copies, "slots": slots,
                    "cold_how": cold.how, "evict_bytes": cold.evict, "cache_bytes": cache_bytes}
        return out

    def build(self, wanted: list[Variant], dtype: str, begin: Callable[[str], None], done: Callable[[str], None],
              one_at_a_time: bool = False) -> None:
        """Builds every variant of `wanted` not built yet, side by side: compilers (NVRTC,
        the OpenCL and Metal compilers) release the GIL and take one thread each, and a
        sweep's kernels are many, so a cold kernel cache costs seconds rather than
        minutes. Where the backend builds many variants to a program (batch.py), each
        thread builds a batch. `begin(variant id)` is called as each build starts and
        `done(variant id)` as it ends (from the building thread), so that a watcher knows
        which builds are under way: the ones a hung or fatal compiler is among.
        `one_at_a_time` builds them one variant at a time, so that a fatal one is the
        only one under way."""
        todo = list({v.id: v for v in wanted if (v.id, dtype) not in self.kernels}.values())
        if not todo:
            return
        together = traits(self.backend).batch_builds and not one_at_a_time
        groups = batch.batches(todo, alone=self._alone) if together else [[v] for v in todo]

        def one(group: list[Variant]) -> None:
            for v in group:
                begin(v.id)
            started = time.perf_counter()
            built = self._build_together(group, dtype) if len(group) > 1 else [self._build(group[0], dtype)]
            # A batch's time is shared by its variants, so that the builds still sum to the whole.
            each = round((time.perf_counter() - started) / len(group), 6)
            for v, kernel in zip(group, built, strict=True):
                self.kernels[(v.id, dtype)] = kernel
                self.build_seconds[(v.id, dtype)] = each
                done(v.id)

        threads = 1 if one_at_a_time else min(len(groups), os.cpu_count() or 1, _BUILD_THREADS)
        started = time.perf_counter()
        if threads == 1:
            for group in groups:
                one(group)
        else:
            with ThreadPoolExecutor(threads) as pool:
                for f in [pool.submit(one, group) for group in groups]:
                    f.result()
        share = round((time.perf_counter() - started) / len(todo), 6)
        for v in todo:
            self.build_wall[(v.id, dtype)] = share

    def _build_together(self, group: list[Variant], dtype: str) -> list[_core.Kernel | Exception]:
        """The kernels of `group` from one program; where that program does not build, each
        variant built alone, so that every error is its own variant's."""
        for v in group:
            _planted_build_fault(v.id)
        try:
            return list(batch.build(self.device, self.backend, group, dtype))
        except Exception:  # noqa: BLE001 - told apart below, variant by variant
            # A body that defines its own functions (a family of your own may) cannot be
            # in a program twice: its later variants are built alone from the start.
            self._alone.add(group[0].family.source)
            return [self._build(v, dtype) for v in group]

    def _build(self, v: Variant, dtype: str) -> _core.Kernel | Exception:
        try:
            _planted_build_fault(v.id)
            return build_kernel(self.device, self.backend, v, dtype)
        except Exception as e:  # noqa: BLE001 - any failure belongs to this variant alone
            return e

    def kernel(self, v: Variant, dtype: str) -> _core.Kernel:
        """Builds once per variant and dtype; a build failure is remembered and raised again."""
        slot = (v.id, dtype)
        if slot not in self.kernels:
            started = time.perf_counter()
            self.kernels[slot] = self._build(v, dtype)
            self.build_seconds[slot] = self.build_wall[slot] = round(time.perf_counter() - started, 6)
        found = self.kernels[slot]
        if isinstance(found, Exception):
            raise found
        return found

    def measure(self, prepared: Prepared, v: Variant, key: str, detail: dict, settings: Settings,
                full: bool = True, race_bar: float = 0.0) -> Result:
        """The result of variant `v` on the prepared spec (never raises for the variant's own faults);
        its `measure` says which device index measured it. `full` False is a race's brief lap:
        the ranking clock alone, and its last round verified rather than a final round. In a
        brief lap, `race_bar` (seconds, 0: none) is the best time of the spec known: a pair
        whose verified launch took over _HOPELESS times that (a kernel launched before, at
        least _HOPELESS_MIN long, so no compile and little overhead in it) is not timed: its
        round trip is its time (`measure.hopeless`), and the race puts it out (runner.py)."""
        spent: dict[str, float] = {}
        result = self._measure(prepared, v, key, detail, settings, full, spent, race_bar)
        slot = (v.id, prepared.spec.dtype)
        built = {"build": self.build_seconds[slot], "build_wall": self.build_wall.get(slot, self.build_seconds[slot])} \
            if slot in self.build_seconds else {}
        # Where the time went (benchmarks/first_run.py adds it up): this pair's steps, its
        # kernel's build (the compiler's seconds, and its share of the build step's wall
        # time) and its spec's preparation (the same in every pair of the spec).
        result.measure = {**(result.measure or {}), "device": self.index, "lap": "full" if full else "brief",
                          "seconds": {**spent, **built, "prepare": prepared.seconds}}
        return result

    def _measure(self, prepared: Prepared, v: Variant, key: str, detail: dict, settings: Settings,
                 full: bool, spent: dict[str, float], race_bar: float = 0.0) -> Result:
        spec = prepared.spec
        clock = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            spent[step] = round(spent.get(step, 0.0) + now - clock, 6)
            clock = now

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

        # Verify: one launch, from C's initial state, checked in full against its copy of A.
        buffers.reset(ws, ws0)
        shape = (v.id, spec.dtype, tuple(threads))
        warmed = shape in self.launched
        try:
            started = time.perf_counter()
            self.device.run(kernel, args[0], groups, threads)
            round_trip = time.perf_counter() - started
            if not warmed:  # part of the verify lap, kept apart: what a driver's first-launch compile costs
                spent["first_launch"] = round(round_trip, 6)
            self.launched.add(shape)
        except _core.UsageError as e:
            result.category, result.message = Category.LAUNCH, str(e)
            return result
        except _core.DeviceError as e:
            result.category, result.message = Category.RUNTIME, str(e)
            return result
        outputs, band = buffers.outputs(0, 1)
        check = metrics.check(spec, outputs[0], prepared.whole(buffers.a_copy(0)), prepared.c_initial,
                              v.family.rounds_b)
        result.checks = asdict(check)
        damage = band or buffers.strays(0, 1) or self._damage(buffers, ws, ws0, first_only=True)
        if damage:
            # Memory it must not touch: not run again, so nothing else is damaged.
            result.status, result.category, result.message = Status.WRONG, Category.WRONG, damage
            return result
        wrong = check.reason if check.verdict != Status.OK else ""

        lap(VERIFY)
        if not full and not wrong and race_bar > 0 and warmed and round_trip >= _HOPELESS_MIN and \
                round_trip > _HOPELESS * race_bar:
            result.status = Status.OK
            result.measure = {**prepared.mode, "hopeless": {"round_trip_ns": round(round_trip * 1e9),
                                                            "bar_ns": round(race_bar * 1e9), "factor": _HOPELESS},
                              "verified": {"round": "first launch", "launches": 1, "slots": buffers.slots,
                                           "elements": math.prod(spec.shape_c), "whole": 1}}
            return result
        # Time, then verify a round of launches: the final round, or the last timed one.
        core = settings.core()
        if not full and warmed and round_trip >= settings.max_time * _WARM_SHARE:
            # A brief lap of a slow kernel that was built and launched before: the launch just
            # verified warmed it, its inputs and the driver as a warm-up would have.
            core.update(warmup=0, launch_hint=round_trip)
        try:
            timing = self.device.measure(kernel, args, groups, threads, resets=buffers.resets(ws, ws0),
                                         rank_only=not full, final_round=full and not wrong, **core)
        except (_core.UsageError, _core.DeviceError) as e:
            result.category, result.message = Category.RUNTIME, f"timing: {e}"
            return result
        lap(TIME)
        for name in CLOCKS:
            setattr(result, name, timing[name] if timing[name]["count"] else None)
            if timing[name]["count"]:
                result.samples[name] = timing[f"{name}_ns"]
        first, count = timing["first_slot"], timing["last_round"]
        result.measure = {"batch_size": timing["batch_size"], "clock": timing["clock"], "warmup": timing["warmup"],
                          **prepared.mode,
                          "verified": {"round": "final" if timing["final_round"] else "last timed", "launches": count,
                                       "slots": buffers.slots, "elements": min(_SAMPLE, math.prod(spec.shape_c)),
                                       "whole": min(_WHOLE_SLOTS, count)}}
        if not wrong:
            # The round started from a reset and launched only these slots: their outputs and
            # bands are read back, the rest of C must still be as reset.
            outputs, band = buffers.outputs(first, count)
            again = band or buffers.strays(first, count) or self._damage(buffers, ws, ws0) or \
                self._verify_round(prepared, v, first, outputs)
            if again:
                wrong = f"correct once, wrong when timed: {again}"
            lap(CHECK)
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
    def _verify_round(prepared: Prepared, v: Variant, first: int, outputs: np.ndarray) -> str:
        """Why the outputs of a round of launches on slots first, first + 1, ... (wrapping) are
        not each their own slot's answer, or "": a sample of every slot's elements against
        that slot's reference, and _WHOLE_SLOTS slots (chosen from the run's seed and the
        variant) whole."""
        spec, buffers = prepared.spec, prepared.buffers
        assert buffers is not None and prepared.c_initial is not None
        count = len(outputs)
        slots = (first + np.arange(count)) % buffers.slots

        def where(i: int) -> str:
            return f"slot {int(slots[i])}, launch {i + 1} of {count} verified"

        flat, refs = prepared.sampled(slots)
        rows = outputs.reshape(count, -1)
        values = np.take_along_axis(rows, flat, axis=1)
        c_before = prepared.c_initial.reshape(-1)[flat]
        rounds_b = v.family.rounds_b
        check = metrics.check_at(spec, values.reshape(-1), _flatten(refs), c_before.reshape(-1), flat.reshape(-1),
                                 rounds_b)
        if check.verdict != Status.OK:
            for i in range(count):  # which slot: the first found wrong
                one = metrics.check_at(spec, values[i], _row(refs, i), c_before[i], flat[i], rounds_b)
                if one.verdict != Status.OK:
                    return f"{one.reason} ({where(i)})"
            return check.reason
        rng = np.random.default_rng([prepared.seed & _U64, zlib.crc32(v.id.encode())])
        for i in sorted(rng.choice(count, min(_WHOLE_SLOTS, count), replace=False).tolist()):
            whole = metrics.check(spec, outputs[i], prepared.whole(buffers.a_copy(int(slots[i]))), prepared.c_initial,
                                  rounds_b)
            if whole.verdict != Status.OK:
                return f"{whole.reason} ({where(i)})"
        return ""


def _flatten(ref: Reference) -> Reference:
    return Reference(ref.out.reshape(-1), ref.mag.reshape(-1), None if ref.epilogue is None else
                     ref.epilogue.reshape(-1))


def _row(ref: Reference, i: int) -> Reference:
    return Reference(ref.out[i], ref.mag[i], None if ref.epilogue is None else ref.epilogue[i])


def worker_stdio() -> None:
    """A worker's own output goes to the parent's stderr: stdout belongs to the report."""
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
