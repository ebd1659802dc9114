"""The sweep: every variant on every spec of a suite, each result stored as it completes.

    from metalbench import runner, specs, store, variants
    suite = specs.load_suite("qwen2.5-0.5b-decode")
    backend = runner.pick_backend("auto")
    chosen = runner.with_baseline(variants.load_variants(backend), backend, patterns=["gemv/*"])
    run_id = runner.run(suite, chosen, backend=backend, store=store.Store(path))

Data flows one way: specs and variants in, results out to the store. The runner
plans (what is unsupported, what a stored result already answers) and hands the
rest to worker processes (worker.py), which measure (measure.py). Nothing here
formats output; callers watch progress through `Events`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict

from . import _core
from .measure import Settings
from .specs import Spec, Suite
from .store import Result, Store
from .variants import BACKENDS, ManifestError, Variant, build_kernel, select
from .worker import DeviceLost, Job, Pair, Pool, WorkerError

__all__ = ["BackendError", "DeviceLost", "Events", "Settings", "WorkerError", "build_kernel", "pick_backend", "run",
           "with_baseline"]

# Part of every result key: bump it when verdict rules change, so that verdicts
# stored under the old rules are measured again rather than trusted.
# 3: guard bands, input checks and the timed launches' outputs are verified too.
CHECK_VERSION = 3
# Seconds one pair (or one spec's preparation) may take before its worker is
# stopped and the pair stored as `timeout`. A correct kernel of the default suite
# needs far less on every backend: the slowest, the naive kernel on the LM head
# under PoCL on two cores, takes about 0.2 s a launch, and a pair makes a few
# dozen launches at most within its --max-time budget, so a minute is ten times that
# and more; NVRTC and PoCL compile a variant in a second or two.
DEFAULT_TIMEOUT = 60.0


class BackendError(RuntimeError):
    """No usable backend, or the one asked for cannot run here."""


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


def _key(detail: dict) -> str:
    return hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()


def _detail(v: Variant, spec: Spec, backend: str, info: dict, settings: Settings) -> dict:
    """Everything that changes a result; its hash is the result's key."""
    groups, threads = v.geometry(spec)
    return {
        "variant": v.id,
        "source_hash": v.source_hash(backend, spec.dtype),
        "defines": v.defines(spec.dtype),
        "spec": spec.key(),
        "groups": groups,
        "threads": threads,
        "workspace": v.workspace_floats(spec),
        "device": f"{info['vendor']} {info['name']}",
        "backend": backend,
        "driver": info["driver"],
        "settings": asdict(settings),
        "check_version": CHECK_VERSION,
    }


def run(suite: Suite, variants: Sequence[Variant], *, backend: str, store: Store, device: int = 0,
        settings: Settings | None = None, force: bool = False, events: Events | None = None,
        timeout: float = DEFAULT_TIMEOUT, isolated: bool = True) -> int:
    """Sweeps `variants` x `suite` on one device and returns the run's id in `store`.

    Unsupported pairs are recorded, never run. A stored result with the same key is
    reused unless `force`, also a stored `timeout` or `crashed`. Every result is
    committed before the next starts, so an interrupted sweep (KeyboardInterrupt
    included) loses nothing measured. Raises DeviceLost when the device cannot be
    opened again after a worker lost it. `isolated` False measures in this process,
    with no timeouts and no protection from a faulty kernel: for measuring what
    isolation costs, and for debugging.

    Scripts that call it must start with `if __name__ == "__main__":`, as every
    program using multiprocessing's spawn start method must.
    """
    settings = settings or Settings()
    events = events or Events()
    for run_id in store.abandon_dead_runs():
        events.note(f"run {run_id} was left 'running' by a process that no longer exists (killed or crashed); "
                    "marked 'abandoned', its stored results are kept")
    found = _core.devices(backend)
    if not 0 <= device < len(found):
        raise BackendError(f"{backend} has no device {device} ({len(found)} found; `metalbench devices` lists them)")
    info = found[device]
    base = baseline_of(variants, backend)
    run_id = store.begin_run(suite.name, backend, info, asdict(settings), base.id if base else None,
                             [{"key": s.key(), "label": s.label(), **_orig(s)} for s in suite.specs])
    status = "interrupted"
    pool = Pool(backend, [device], settings, timeout, isolated=isolated)
    try:
        jobs, total = _plan(suite, variants, backend, info, settings, store, run_id, force, events)
        events.start(total)
        if jobs:
            pool.start()

            def stored(job: Job, result: Result) -> None:
                store.add(run_id, job.spec_index, result)
                events.result(job.spec, result)

            pool.run(jobs, stored, events.note)
        status = "complete"
    finally:
        pool.close()
        store.finish_run(run_id, status)
    return run_id


def _plan(suite: Suite, variants: Sequence[Variant], backend: str, info: dict, settings: Settings, store: Store,
          run_id: int, force: bool, events: Events) -> tuple[list[Job], int]:
    """Stores what needs no measuring (unsupported, bad geometry, reused) and returns the jobs
    for the rest, one per spec, with the number of pairs the run will report."""
    jobs: list[Job] = []
    total = 0
    serial = 0
    for index, spec in enumerate(suite.specs):
        pairs: list[Pair] = []
        for v in variants:
            try:
                why = v.unsupported_reason(spec)
            except ManifestError as e:
                why, failure = None, e
            else:
                failure = None
            if why is not None:
                store.add(run_id, index, Result(variant=v.id, spec_key=spec.key(), status="unsupported",
                                                category="unsupported", message=why))
                continue
            total += 1
            try:
                if failure is not None:
                    raise failure
                detail = _detail(v, spec, backend, info, settings)
            except ManifestError as e:
                result = Result(variant=v.id, spec_key=spec.key(), status="failed", category="launch", message=str(e))
                store.add(run_id, index, result)
                events.result(spec, result)
                continue
            key = _key(detail)
            reused = None if force else store.find(key)
            if reused is not None:
                store.reuse(run_id, index, reused)
                events.result(spec, Result(variant=v.id, spec_key=spec.key(), status="reused", id=reused, reused=True))
                continue
            serial += 1
            pairs.append(Pair(serial, v, key, detail))
        if pairs:
            jobs.append(Job(index, spec, pairs))
    return jobs, total


def _orig(spec: Spec) -> dict:
    if spec.orig is None:
        return {}
    return {"orig": {"impl": spec.orig.impl, "ms": spec.orig.ms, "device": spec.orig.device}}
