"""The sweep: every variant on every spec of a suite, each result stored as it completes.

    from metalbench import runner, specs, store, variants
    suite = specs.load_suite("qwen2.5-0.5b-decode")
    backend = runner.pick_backend("auto")
    chosen = runner.with_baseline(variants.load_variants(backend), backend, patterns=["gemv/*"])
    run_id = runner.run(suite, chosen, backend=backend, store=store.Store(path))

Data flows one way: specs and variants in, results out to the store. Nothing
here formats output; callers watch progress through `Events`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import _core, metrics, paths
from .reference import Inputs, Reference, ReferenceCache, make_inputs
from .specs import Spec, Suite
from .store import Result, Store
from .variants import BACKENDS, ManifestError, Variant, select

__all__ = ["BackendError", "DeviceLost", "Events", "Settings", "build_kernel", "pick_backend", "run",
           "upload_inputs", "with_baseline"]

# Part of every result key: bump it when verdict rules change, so that verdicts
# stored under the old rules are measured again rather than trusted.
CHECK_VERSION = 2


class BackendError(RuntimeError):
    """No usable backend, or the one asked for cannot run here."""


class DeviceLost(RuntimeError):
    """The device stopped answering mid-sweep (a CUDA kernel fault poisons its context).

    Raised after every result obtained so far is stored, the culprit's included, so
    a rerun in a new process continues where this one stopped.
    """


@dataclass(frozen=True)
class Settings:
    """How each variant is measured; all of it is part of the result key."""

    warmup: int = 3
    iterations: int = 100
    min_iterations: int = 5
    max_seconds: float = 0.5
    cold: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.min_iterations < 1 or self.warmup < 0 or self.max_seconds <= 0:
            raise ValueError(f"measurement settings out of range: {self}")


class Events:
    """What a sweep reports as it goes; the CLI draws a progress bar from it."""

    def start(self, total: int) -> None:
        """`total` variant x spec pairs will be measured or reused."""

    def result(self, spec: Spec, result: Result) -> None:
        """One pair is done (measured, reused or failed)."""

    def note(self, message: str) -> None:
        """Something the user should know that is not a result (a damaged cache entry)."""


def pick_backend(name: str = "auto") -> str:
    """`name` if it can run here, or for "auto" the first of Metal, CUDA, OpenCL that can."""
    built = _core.backends()
    if name != "auto":
        if name not in BACKENDS:
            raise BackendError(f"unknown backend '{name}' (choose from auto, {', '.join(BACKENDS)})")
        if name not in built:
            raise BackendError(f"backend '{name}' is not part of this build (it has: {', '.join(built)})")
        reason = _core.unavailable_reason(name)
        if reason:
            raise BackendError(f"backend '{name}' cannot run here: {reason}")
        return name
    reasons = []
    for candidate in built:
        reason = _core.unavailable_reason(candidate)
        if not reason:
            return candidate
        reasons.append(f"{candidate}: {reason}")
    raise BackendError("no backend can run here; " + "; ".join(reasons))


def baseline_of(variants: Sequence[Variant], backend: str) -> Variant | None:
    """The vendor library's variant where the backend has one, else the fallback family's."""
    for kind in ("vendor", "fallback"):
        for v in variants:
            if v.family.baseline == kind and backend in v.family.backends:
                return v
    return None


def with_baseline(variants: Sequence[Variant], backend: str, patterns: Sequence[str] = ()) -> list[Variant]:
    """The variants matching `patterns`, plus the baseline, which every report compares against."""
    chosen = select(variants, patterns)
    base = baseline_of(variants, backend)
    if base is not None and base not in chosen:
        chosen.insert(0, base)
    return chosen


def build_kernel(device: _core.Device, backend: str, v: Variant, dtype: str) -> _core.Kernel:
    """The kernel of variant `v` for `dtype`: a vendor builtin, a precompiled library, or compiled from source."""
    if v.family.builtin:
        return device.builtin(v.family.builtin, v.id, v.defines(dtype))
    if v.precompiled:
        return device.load(str(v.family.source), v.family.entry, v.id)
    return device.compile(v.source(backend), v.family.entry, v.defines(dtype), v.id)


def _key(detail: dict) -> str:
    return hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()


class _Sweep:
    """State of one run: the device, compiled kernels, and the spec's buffers."""

    def __init__(self, device: _core.Device, backend: str, settings: Settings) -> None:
        self.device = device
        self.backend = backend
        self.settings = settings
        self.info = device.info
        self.kernels: dict[tuple[str, str], _core.Kernel | Exception] = {}

    def detail(self, v: Variant, spec: Spec) -> dict:
        """Everything that changes a result; its hash is the result's key."""
        groups, threads = v.geometry(spec)
        return {
            "variant": v.id,
            "source_hash": v.source_hash(self.backend, spec.dtype),
            "defines": v.defines(spec.dtype),
            "spec": spec.key(),
            "groups": groups,
            "threads": threads,
            "workspace": v.workspace_floats(spec),
            "device": f"{self.info['vendor']} {self.info['name']}",
            "backend": self.backend,
            "driver": self.info["driver"],
            "settings": asdict(self.settings),
            "check_version": CHECK_VERSION,
        }

    def healthy(self) -> bool:
        """Whether the device still takes work: a failure that outlives its variant means it does not."""
        try:
            probe = self.device.allocate(4)
            probe.fill(0)
            probe.read(np.empty(1, dtype=np.float32))
        except _core.DeviceError:
            return False
        return True

    def kernel(self, v: Variant, dtype: str) -> _core.Kernel:
        """Compiles once per run; a compile failure is remembered and raised again."""
        slot = (v.id, dtype)
        if slot not in self.kernels:
            try:
                self.kernels[slot] = build_kernel(self.device, self.backend, v, dtype)
            except Exception as e:  # noqa: BLE001 - any failure belongs to this variant alone
                self.kernels[slot] = e
        found = self.kernels[slot]
        if isinstance(found, Exception):
            raise found
        return found

    def measure(self, v: Variant, spec: Spec, detail: dict, bufs: dict, c_before: np.ndarray,
                ref: Reference) -> Result:
        result = Result(variant=v.id, spec_key=spec.key(), status="failed", key=_key(detail), detail=detail)
        try:
            kernel = self.kernel(v, spec.dtype)
        except _core.CompileError as e:
            result.category, result.message, result.log = "compile", str(e), getattr(e, "log", "")
            return result
        except (_core.UsageError, _core.UnavailableError, ManifestError, OSError) as e:
            result.category, result.message = "compile", str(e)
            return result
        ws = self.device.allocate(4 * detail["workspace"])
        ws.fill(0)
        bufs["c"].write(c_before)
        args = [bufs["a"], bufs["b"], bufs["c"], bufs["bias"], ws, spec.params()]
        groups, threads = detail["groups"], detail["threads"]
        try:
            self.device.run(kernel, args, groups, threads)
        except _core.UsageError as e:
            result.category, result.message = "launch", str(e)
            return result
        except _core.DeviceError as e:
            result.category, result.message = "runtime", str(e)
            return result
        out = np.empty(spec.shape_c, dtype=c_before.dtype)
        bufs["c"].read(out)
        check = metrics.check(spec, out, ref, c_before)
        result.checks = asdict(check)
        if check.verdict != "ok":
            result.status, result.category, result.message = "wrong", "wrong", check.reason
        else:
            result.status = "ok"
        # A kernel that left its workspace dirty must not spoil its own timing runs.
        ws.fill(0)
        s = self.settings
        try:
            timing = self.device.measure(kernel, args, groups, threads, warmup=s.warmup, iterations=s.iterations,
                                         min_iterations=s.min_iterations, max_seconds=s.max_seconds, cold=s.cold)
        except (_core.UsageError, _core.DeviceError) as e:
            result.status, result.category, result.message = "failed", "runtime", str(e)
            return result
        result.gpu, result.cpu = timing["gpu"], timing["cpu"]
        return result


def upload_inputs(device: _core.Device, spec: Spec, inputs: Inputs) -> dict[str, _core.Buffer]:
    """A, B and bias (a one-element dummy where the op has none) on the device, and room for C."""
    def upload(array: np.ndarray) -> _core.Buffer:
        buf = device.allocate(array.nbytes)
        buf.write(np.ascontiguousarray(array))
        return buf

    itemsize = np.dtype(inputs.a.dtype).itemsize
    bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
    return {
        "a": upload(inputs.a),
        "b": upload(inputs.b),
        "bias": upload(bias),
        "c": device.allocate(int(np.prod(spec.shape_c)) * itemsize),
    }


def run(suite: Suite, variants: Sequence[Variant], *, backend: str, store: Store, device: int = 0,
        settings: Settings | None = None, force: bool = False, cache: ReferenceCache | None = None,
        events: Events | None = None) -> int:
    """Sweeps `variants` x `suite` on one device and returns the run's id in `store`.

    Unsupported pairs are recorded, never run. A stored result with the same key
    is reused unless `force`. Every result is committed before the next starts,
    so an interrupted sweep (KeyboardInterrupt included) loses nothing measured.
    """
    settings = settings or Settings()
    events = events or Events()
    cache = cache or ReferenceCache()
    # Compiled kernels (CUDA's cubins) live beside the references.
    _core.set_cache_dir(str(paths.cache_dir() / "kernels"))
    dev = _core.open(backend, device)
    sweep = _Sweep(dev, backend, settings)
    base = baseline_of(variants, backend)
    run_id = store.begin_run(suite.name, backend, dev.info, asdict(settings), base.id if base else None,
                             [{"key": s.key(), "label": s.label(), **_orig(s)} for s in suite.specs])
    plan = [[(v, v.unsupported_reason(spec)) for v in variants] for spec in suite.specs]
    events.start(sum(1 for pairs in plan for _, why in pairs if why is None))
    status = "interrupted"
    try:
        for index, (spec, pairs) in enumerate(zip(suite.specs, plan, strict=True)):
            _sweep_spec(sweep, store, run_id, index, spec, pairs, force, cache, events)
        status = "complete"
    finally:
        store.finish_run(run_id, status)
    return run_id


def _orig(spec: Spec) -> dict:
    if spec.orig is None:
        return {}
    return {"orig": {"impl": spec.orig.impl, "ms": spec.orig.ms, "device": spec.orig.device}}


def _sweep_spec(sweep: _Sweep, store: Store, run_id: int, index: int, spec: Spec,
                pairs: list[tuple[Variant, str | None]], force: bool, cache: ReferenceCache,
                events: Events) -> None:
    todo: list[tuple[Variant, dict]] = []
    for v, why in pairs:
        if why is not None:
            store.add(run_id, index, Result(variant=v.id, spec_key=spec.key(), status="unsupported",
                                            category="unsupported", message=why))
            continue
        try:
            detail = sweep.detail(v, spec)
        except ManifestError as e:
            result = Result(variant=v.id, spec_key=spec.key(), status="failed", category="launch", message=str(e))
            store.add(run_id, index, result)
            events.result(spec, result)
            continue
        found = None if force else store.find(_key(detail))
        if found is not None:
            store.reuse(run_id, index, found)
            events.result(spec, Result(variant=v.id, spec_key=spec.key(), status="reused", id=found, reused=True))
        else:
            todo.append((v, detail))
    if not todo:
        return
    inputs = make_inputs(spec)
    ref, status = cache.get(spec, inputs)
    if status.startswith("recomputed"):
        events.note(f"reference for {spec.label()}: {status}")
    try:
        bufs = upload_inputs(sweep.device, spec, inputs)
    except _core.DeviceError as e:
        _check_alive(sweep, f"allocating the buffers of {spec.label()}", e)
        # Alive, so the spec itself is too big for this device: its variants fail, the sweep goes on.
        for v, detail in todo:
            result = Result(variant=v.id, spec_key=spec.key(), status="failed", key=_key(detail), detail=detail,
                            category="runtime", message=f"could not allocate the spec's buffers: {e}")
            store.add(run_id, index, result)
            events.result(spec, result)
        return
    c_before = metrics.initial_c(spec, inputs)
    for v, detail in todo:
        try:
            result = sweep.measure(v, spec, detail, bufs, c_before, ref)
        except _core.DeviceError as e:
            # Outside the launch (workspace, copies): if the device is gone, an earlier
            # launch broke it and this variant must not be blamed for it.
            _check_alive(sweep, f"preparing {v.id} on {spec.label()}", e)
            result = Result(variant=v.id, spec_key=spec.key(), status="failed", key=_key(detail), detail=detail,
                            category="runtime", message=f"preparing the launch: {e}")
        store.add(run_id, index, result)
        events.result(spec, result)
        if result.category in ("runtime", "compile") and not sweep.healthy():
            raise DeviceLost(f"the device stopped working after {v.id} on {spec.label()} ({result.message}); "
                             "every result so far is stored, this one included, and a rerun continues from here")


def _check_alive(sweep: _Sweep, doing: str, error: Exception) -> None:
    if not sweep.healthy():
        raise DeviceLost(f"the device stopped working ({doing}: {error}); every result so far is stored, "
                         "and a rerun continues from here") from error
