"""The sweep: every variant on every spec of a suite, each result stored as it completes.

    from metalbench import backends, runner, specs, store, variants
    suite = specs.load_suite("qwen2.5-0.5b-decode")
    backend = backends.pick_backend("auto")
    chosen = runner.with_baseline(variants.load_variants(backend), backend, patterns=["gemv/*"], specs=suite.specs)
    run_id = runner.run(suite, chosen, backend=backend, store=store.Store(path))

Data flows one way: specs and variants in, results out to the store. The runner
plans (what is unsupported, what a stored result already answers) and hands the
rest to worker processes (worker.py), which measure (measure.py). Nothing here
formats output; callers watch progress through `Events`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from . import _core
from .backends import BackendError
from .peak import method
from .pool import DeviceLost, Job, Message, Pair, PeakUnavailable, Phase, Pool, WorkerError, open_pool
from .results import Category, Result, Status
from .roofline import cache_of, device_key, implausible
from .settings import Settings
from .specs import Spec, Suite
from .store import Store
from .ties import CONFIDENCE, TIE_FLOOR, Estimate, estimate, ties_with
from .variants import ManifestError, Variant, build_kernel, select

__all__ = ["DeviceLost", "Events", "Planned", "Settings", "WorkerError", "build_kernel", "run",
           "with_baseline"]

# Part of every result key: bump it when verdict rules change, so that verdicts
# stored under the old rules are measured again rather than trusted.
# 3: guard bands, input checks and the timed launches' outputs are verified too.
# 4: inputs a kernel cannot predict (per-run A copies, guard pattern and sentinel), an
#    untimed final round of every slot verified, builds blamed one by one.
CHECK_VERSION = 4
# Seconds one pair (or one spec's preparation) may take before its worker is
# stopped and the pair stored as `timeout`. A correct kernel of the default suite
# needs far less on every backend: the slowest, the naive kernel on the LM head
# under PoCL on two cores, takes about 0.2 s a launch, and a pair makes a few
# dozen launches at most within its --max-time budget, so a minute is ten times that
# and more; NVRTC and PoCL compile a variant in a second or two.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Planned:
    """A spec and the variants a sweep will measure on it."""

    spec: Spec
    variants: tuple[str, ...]


class Events:
    """What a sweep reports as it goes; the CLI draws a progress bar from it."""

    def start(self, total: int) -> None:
        """`total` variant x spec pairs will be measured or reused."""

    def planned(self, planned: Sequence[Planned]) -> None:
        """Right after `start`: the pairs to measure, spec by spec in the order the sweep takes
        them (those reused or failed while planning have had their `result` already)."""

    def result(self, spec: Spec, result: Result) -> None:
        """One pair is done (measured, reused or failed)."""

    def note(self, message: str) -> None:
        """Something the user should know that is not a result (a damaged cache entry)."""

    def status(self, text: str) -> None:
        """What the sweep is doing besides measuring pairs (starting workers, planning,
        preparing a spec's inputs, compiling its kernels), so that a wait has a name."""

    def begin(self, spec: Spec, variant: str, worker: int = 0) -> None:
        """Worker `worker` (an index among the pool's) began measuring `variant` on `spec`: what
        it measured before is over, whether or not a result came of it (a race's brief lap that
        goes on to a full measurement stores none)."""

    def lapped(self, spec: Spec, lap: Result) -> None:
        """A race's brief lap of `lap.variant` on `spec` ended with a time (`lap`, not stored). The
        pair's result comes once every pair of the spec has had its lap: raced out then (the
        lap's figures), or after a full measurement."""


def baseline_of(variants: Sequence[Variant], backend: str, spec: Spec) -> Variant | None:
    """`spec`'s baseline: the first vendor-library variant of the backend that takes the spec,
    else the first fallback one (kernels/README.md, manifest `baseline`). A quantized spec so
    gets the vendor's dequantize-then-library variant where there is one, else the naive
    fused kernel; an unquantized spec the vendor library, else the naive kernel."""
    for kind in ("vendor", "fallback"):
        for v in variants:
            if v.family.baseline == kind and backend in v.family.backends and _takes(v, spec):
                return v
    return None


def _takes(v: Variant, spec: Spec) -> bool:
    try:
        return v.unsupported_reason(spec) is None
    except ManifestError:  # a broken manifest is the sweep's to report, not a baseline
        return False


def with_baseline(variants: Sequence[Variant], backend: str, patterns: Sequence[str] = (), *,
                  specs: Sequence[Spec]) -> list[Variant]:
    """The variants matching `patterns`, plus the baseline of each of `specs` (those the run
    will measure), which every report compares that spec against."""
    chosen = select(variants, patterns)
    for spec in specs:
        base = baseline_of(variants, backend, spec)
        if base is not None and base not in chosen:
            chosen.insert(0, base)
    return chosen


def baselines(suite: Suite, variants: Sequence[Variant], backend: str) -> list[str | None]:
    """The baseline's variant id of each of `suite`'s specs among `variants` (None where none is)."""
    return [b.id if (b := baseline_of(variants, backend, spec)) else None for spec in suite.specs]


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
        "measure_version": _core.measure_version,  # what the core's loop does (csrc/core/measure.h)
    }


def run(suite: Suite, variants: Sequence[Variant], *, backend: str, store: Store, device: int = 0,
        settings: Settings | None = None, force: bool = False, events: Events | None = None,
        timeout: float = DEFAULT_TIMEOUT, isolated: bool = True, race: bool = True,
        tie_floor: float = TIE_FLOOR, devices: Sequence[int] | None = None, workers: int = 1,
        ray: str | None = None) -> int:
    """Sweeps `variants` x `suite` and returns the run's id in `store`.

    On `device`, or on every one of `devices` (all the same model: they share one
    ranking per spec), with `workers` worker processes on each; a spec's pairs are
    shared out among them, and every result records the device index that measured it.
    With `ray` (an address, 'auto' or 'local'), Ray actors on that cluster measure
    instead (ray_pool.py).

    Every run draws a 64-bit seed of its own (stored in the run's settings as `seed`, not
    part of any result's key): the values of A that each launch reads, the guard pattern
    and the never-written sentinel come from it, so no kernel can know them in advance
    (measure.py).

    Unsupported pairs are recorded, never run. A stored result with the same key is
    reused unless `force`, also a stored `timeout` or `crashed`. Every result is
    committed before the next starts, so an interrupted sweep (KeyboardInterrupt
    included) loses nothing measured. Raises DeviceLost when the device cannot be
    opened again after a worker lost it. `isolated` False measures in this process,
    with no timeouts and no protection from a faulty kernel: for measuring what
    isolation costs, and for debugging.

    With `race`, each spec's variants are first verified and timed briefly; those
    that do not tie with the fastest (ties.py, with `tie_floor`) are stored as
    `raced`, with their brief times, and only the rest (and the baseline) are
    measured until their stop rule holds.

    Scripts that call it must start with `if __name__ == "__main__":`, as every
    program using multiprocessing's spawn start method must.
    """
    settings = settings or Settings()
    events = events or Events()
    for run_id in store.abandon_dead_runs():
        events.note(f"run {run_id} was left 'running' by a process that no longer exists (killed or crashed); "
                    "marked 'abandoned', its stored results are kept")
    if not 1 <= workers <= 256:
        raise BackendError(f"workers must be from 1 to 256 per device, got {workers}")
    events.status("opening the device")
    pool = open_pool(backend, list(devices) if devices is not None else [device], settings, timeout,
                     workers=workers, isolated=isolated, ray=ray)
    try:
        info = pool.describe()
        if workers > 1 and info.get("cpu"):
            events.note(f"{workers} workers on a CPU device ({info.get('name')}): its kernels run on the cores the "
                        "other workers build, verify and prepare on, so times are noisier and the sweep gains little; "
                        "one worker is the sound choice there (README, 'More devices, more workers, a cluster')")
        pool.begin()
        # The roof of the roofline and the cache cold mode sizes by, recorded with the run: the
        # device's own, stored, or measured now.
        info = _with_memory(info, store, pool, events.note, events.status)
    except BaseException:
        pool.close()
        raise
    # Each spec's baseline, recorded with it; the run's column names them all (store.py).
    base = baselines(suite, variants, backend)
    seed = secrets.randbits(64)
    run_id = store.begin_run(suite.name, backend, info, {**asdict(settings), "race": race, "seed": seed},
                             ", ".join(dict.fromkeys(b for b in base if b)) or None,
                             [{"key": s.key(), "label": s.label(), "baseline": b, **_orig(s)}
                              for s, b in zip(suite.specs, base, strict=True)])
    status = "interrupted"
    try:
        events.status(f"planning {len(suite.specs)} specs x {len(variants)} variants (reusing stored results)")
        plan = _plan(suite, variants, backend, info, settings, store, run_id, force, race, events, seed)
        for job in plan.jobs:
            job.cache_bytes = int(info.get("llc_bytes") or 0)
            job.peak_bandwidth = float(info.get("peak_bandwidth") or 0)
        # What each spec was to measure, so that a report of an interrupted run can tell
        # a spec it never reached from one that had nothing to measure.
        store.plan_run(run_id, plan.pairs, {job.spec_index: len(job.pairs) for job in plan.jobs})
        events.start(plan.total)
        events.planned([Planned(job.spec, tuple(p.variant.id for p in job.pairs)) for job in plan.jobs])
        if plan.jobs:
            race_of = _Race(plan, settings, base, tie_floor, info) if race else None

            def stored(job: Job, result: Result) -> list[Job]:
                if race_of is not None and job.phase == Phase.BRIEF:
                    return race_of.lap(job, result, store, run_id, events)
                store.add(run_id, job.spec_index, result)
                events.result(job.spec, result)
                return []

            def stored_and_shared(job: Job, result: Result) -> list[Job]:
                return [part for new in stored(job, result) for part in _split(new, pool.share)]

            def progress(job: Job, step: Message, value: object, worker: int) -> None:
                if step == Message.BEGIN:
                    events.begin(job.spec, next((p.variant.id for p in job.pairs if p.id == value), "?"), worker)
                elif step == Message.PREPARE:
                    events.status(f"preparing {job.spec.label()} (inputs, reference, buffers)")
                elif step == Message.BUILT:
                    events.status(f"compiling the kernels of {job.spec.label()}")

            first = [race_of.brief(job) for job in plan.jobs] if race_of else plan.jobs
            events.status("starting the workers")
            pool.run([part for job in first for part in _split(job, pool.share)], stored_and_shared, events.note,
                     on_progress=progress)
        status = "complete"
    finally:
        pool.close()
        store.finish_run(run_id, status)
    return run_id


def _with_memory(info: dict, store: Store, pool: Pool, note: Callable[[str], None],
                 status: Callable[[str], None] = lambda text: None) -> dict:
    """`info` with the device's memory as peak.py measures it: `peak_bandwidth` and its source
    (the device's own figure where it has one) and `llc_bytes`, the last-level cache cold
    mode sizes its copies by, and its source. Each comes from the store for this device, or
    from one probe by a worker, stored; a figure an earlier version of the probe found is
    measured again (peak.method). A probe that cannot be made is a note, never an error:
    the run goes on without % of peak (or with the earlier probe's), with the driver's
    cache figure (or the earlier probe's)."""
    key = device_key(info)
    probe = method()
    own_peak = float(info.get("peak_bandwidth") or 0) > 0
    peak = None if own_peak else store.peak(key, probe)
    cache = store.cache(key, probe)
    if cache is None or (peak is None and not own_peak):
        # What an earlier version of the probe measured: it stands if this one cannot be made.
        earlier_peak = None if own_peak or peak is not None else store.peak(key)
        earlier_cache = store.cache(key) if cache is None else None
        earlier = earlier_peak is not None or earlier_cache is not None
        status("measuring the memory's bandwidth and cache (once per device" +
               (", again: an earlier metalbench's probe measured what the store has)" if earlier else ")"))
        try:
            found = pool.measure_peak()
        except PeakUnavailable as e:
            note(f"memory not measured, so no % of peak and the driver's cache size for cold mode: {e}"
                 if not earlier else f"memory not measured again, so the earlier probe's figures stand: {e}")
            peak, cache = peak or earlier_peak, cache or earlier_cache
        else:
            if cache is None:
                cache = (found.cache_bytes, found.cache_source)
                store.put_cache(key, *cache, found.curve, method=probe)
            if peak is None and not own_peak:
                peak = (found.peak, found.peak_source)
                store.put_peak(key, *peak, method=probe)
    out = dict(info)
    if peak is not None:
        out.update(peak_bandwidth=peak[0], peak_bandwidth_source=peak[1])
    if cache is not None:
        out.update(llc_bytes=cache[0], llc_source=cache[1])
    return out


def _split(job: Job, parts: int) -> list[Job]:
    """`job` in up to `parts` jobs of consecutive pairs, so that every worker gets a share of each spec."""
    if parts <= 1 or len(job.pairs) <= 1:
        return [job]
    size = -(-len(job.pairs) // parts)
    return [replace(job, pairs=job.pairs[i:i + size]) for i in range(0, len(job.pairs), size)]


@dataclass
class _Plan:
    jobs: list[Job]
    total: int                    # pairs the run reports (measured or reused)
    known: dict[int, list[Result]]  # per spec index: the reused results that measured a time
    pairs: dict[int, int] = field(default_factory=dict)  # per spec index: the pairs it reports (as `total`)


def _plan(suite: Suite, variants: Sequence[Variant], backend: str, info: dict, settings: Settings, store: Store,
          run_id: int, force: bool, race: bool, events: Events, seed: int) -> _Plan:
    """Stores what needs no measuring (unsupported, bad geometry, reused) and returns the jobs
    for the rest, one per spec."""
    plan = _Plan([], 0, {})
    serial = 0
    for index, spec in enumerate(suite.specs):
        pairs: list[Pair] = []
        for v in variants:
            try:
                why = v.unsupported_reason(spec, info)
            except ManifestError as e:
                why, failure = None, e
            else:
                failure = None
            if why is not None:
                store.add(run_id, index, Result(variant=v.id, spec_key=spec.key(), status=Status.UNSUPPORTED,
                                                category=Category.UNSUPPORTED, message=why))
                continue
            plan.total += 1
            plan.pairs[index] = plan.pairs.get(index, 0) + 1
            try:
                if failure is not None:
                    raise failure
                detail = _detail(v, spec, backend, info, settings)
            except ManifestError as e:
                result = Result(variant=v.id, spec_key=spec.key(), status=Status.FAILED, category=Category.LAUNCH,
                                message=str(e))
                store.add(run_id, index, result)
                events.result(spec, result)
                continue
            key = _key(detail)
            reused = None
            if not force:
                reused = store.find(key)
                if reused is None and race:
                    reused = store.find(_key({**detail, "raced": True}))
            if reused is not None:
                store.reuse(run_id, index, reused)
                kept = store.result(reused)
                if kept.status == Status.OK:
                    plan.known.setdefault(index, []).append(kept)
                events.result(spec, replace(kept, reused=True))
                continue
            serial += 1
            pairs.append(Pair(serial, v, key, detail))
        if pairs:
            plan.jobs.append(Job(index, spec, pairs, seed=seed))
    return plan


class _Race:
    """Each spec's first lap: every variant verified and timed briefly. When a spec's lap
    is complete, those that cannot tie with the fastest are stored as raced out, and
    the rest go on to a full measurement."""

    # The brief lap: a few samples of each clock, no noise target, a quarter of the
    # time a full measurement may take, and batch samples a fifth as long as a full
    # measurement's. Batch samples are most of a lap's time (a sample's launches are
    # enqueued one by one, then run), and a lap only has to tell variants that cannot
    # tie from those that may: 0.1 ms is still 200 times CUDA events' 0.5 us
    # resolution, so a timestamp moves a sample by 0.5% at most, half the tie floor.
    BRIEF_SAMPLES = 5
    BRIEF_BATCH_SHARE = 5

    def __init__(self, plan: _Plan, settings: Settings, baselines: list[str | None], tie_floor: float,
                 info: dict) -> None:
        self.settings, self.baselines, self.tie_floor = settings, baselines, tie_floor
        self.peak, self.cache = float(info.get("peak_bandwidth") or 0) or None, cache_of(info)
        self.brief_settings = replace(settings, min_samples=min(settings.min_samples, self.BRIEF_SAMPLES),
                                      max_samples=max(settings.max_samples, self.BRIEF_SAMPLES), max_noise=1.0,
                                      min_time=0.0, max_time=settings.max_time / 4,
                                      batch_time=settings.batch_time / self.BRIEF_BATCH_SHARE)
        self.known = plan.known
        self.waiting = {job.spec_index: len(job.pairs) for job in plan.jobs}
        self.laps: dict[int, list[tuple[Pair, Result]]] = {job.spec_index: [] for job in plan.jobs}

    def brief(self, job: Job) -> Job:
        rank = self.settings.rank_by
        known = [e.median for r in self.known.get(job.spec_index, []) if (e := estimate(r.clock(rank)))]
        return replace(job, settings=self.brief_settings, phase=Phase.BRIEF, bar_ns=min(known, default=0.0))

    def lap(self, job: Job, result: Result, store: Store, run_id: int, events: Events) -> list[Job]:
        pair = next(p for p in job.pairs if p.variant.id == result.variant)
        if result.status == Status.OK:
            self.laps[job.spec_index].append((pair, result))
            events.lapped(job.spec, result)
        else:  # a verdict, not a time: final whatever the race decides
            store.add(run_id, job.spec_index, result)
            events.result(job.spec, result)
        self.waiting[job.spec_index] -= 1
        if self.waiting[job.spec_index]:
            return []
        return self._decide(job, store, run_id, events)

    def _decide(self, job: Job, store: Store, run_id: int, events: Events) -> list[Job]:
        rank = self.settings.rank_by
        lap = self.laps.pop(job.spec_index)
        baseline = self.baselines[job.spec_index]  # never raced out: every report compares against it

        def plausible(e: Estimate) -> bool:  # a time faster than memory allows is no time to race against
            return not implausible(job.spec, e.median / 1e3, self.peak, self.settings.cold, self.cache)

        times = [(r.variant, e) for r in self.known.get(job.spec_index, []) if (e := estimate(r.clock(rank)))]
        times += [(r.variant, e) for _, r in lap if (e := estimate(r.clock(rank)))]
        times = [(v, e) for v, e in times if plausible(e)]
        if not times:
            return [replace(job, pairs=[pair for pair, _ in lap], settings=None, phase=Phase.FULL)] if lap else []
        best, fastest = min(times, key=lambda t: t[1].median)
        survivors: list[Pair] = []
        for pair, result in lap:
            mine = estimate(result.clock(rank))
            gave_up = (result.measure or {}).get("hopeless")
            if mine is None and gave_up and pair.variant.id != baseline:
                # Not timed: its verified launch took many times the best time then known
                # (measure.Worker). Out if that launch still takes twice the fastest's time.
                ratio = gave_up["round_trip_ns"] / fastest.median
                if ratio >= 2:
                    self._out(job, pair, result, best, ratio, store, run_id, events,
                              f"raced out: {ratio:.2f}x the time of {best}, by the round trip of the launch it was "
                              f"verified by (over {gave_up['factor']:g}x the best time known then, so not timed)")
                    continue
            if mine is None or pair.variant.id == baseline or not plausible(mine) or \
                    ties_with(fastest, mine, self.tie_floor):
                survivors.append(pair)
                continue
            ratio = mine.median / fastest.median
            self._out(job, pair, result, best, ratio, store, run_id, events,
                      f"raced out: {ratio:.2f}x the time of {best} after a brief measurement, slower at "
                      f"{100 * CONFIDENCE:g}% confidence")
        return [replace(job, pairs=survivors, settings=None, phase=Phase.FULL)] if survivors else []

    @staticmethod
    def _out(job: Job, pair: Pair, result: Result, best: str, ratio: float, store: Store, run_id: int,
             events: Events, message: str) -> None:
        raced = replace(result, status=Status.RACED, category=Category.RACED, key=_key({**pair.detail, "raced": True}),
                        message=message, measure={**(result.measure or {}),
                                                  "race": {"best": best, "ratio": ratio, "confidence": CONFIDENCE}})
        store.add(run_id, job.spec_index, raced)
        events.result(job.spec, raced)


def _orig(spec: Spec) -> dict:
    if spec.orig is None:
        return {}
    return {"orig": {"impl": spec.orig.impl, "ms": spec.orig.ms, "device": spec.orig.device}}
