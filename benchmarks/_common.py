"""What the benchmark scripts share: plain-text tables, JSON output, a sweep through the
runner, and how a script says what it skipped. Only metalbench's public API is used:
runner.run with a Store, report.build, and the suites and variants it ships.

A script that sweeps must start with `if __name__ == "__main__":` (the runner's worker
processes use the spawn start method, which imports the script again).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metalbench import backends, report, runner, specs, variants
from metalbench.specs import Spec
from metalbench.store import Store
from metalbench.ties import TIE_FLOOR

# Settings for verifying rather than timing: every pair is still verified, before and
# after its timed launches, but timed only briefly.
FAST = runner.Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05)
DEFAULT_SUITE = "qwen2.5-0.5b-decode"


def say(*parts: object) -> None:
    """Progress and notes go to stderr; stdout holds the tables."""
    print(*parts, file=sys.stderr, flush=True)


def fmt(value: object, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths,
                                                                                             strict=True)))

    out = [title, line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    say(f"wrote {path}")


def skipped(what: str, reason: str) -> dict:
    """Says plainly that `what` did not run, and why; the dict goes into the JSON."""
    print(f"SKIPPED {what}: {reason}")
    return {"skipped": what, "reason": reason}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Progress(runner.Events):
    """Counts pairs on stderr (about every tenth of a sweep) and keeps the runner's notes."""

    def __init__(self, label: str) -> None:
        self.label, self.total, self.done, self.notes = label, 0, 0, []
        self.started = time.perf_counter()

    def start(self, total: int) -> None:
        self.total = total
        say(f"{self.label}: {total} pairs")

    def result(self, spec: specs.Spec, result: object) -> None:
        self.done += 1
        step = max(1, self.total // 10)
        if self.done % step == 0 or self.done == self.total:
            say(f"{self.label}: {self.done}/{self.total} pairs, {time.perf_counter() - self.started:.0f} s")

    def note(self, message: str) -> None:
        self.notes.append(message)
        say(f"{self.label}: note: {message}")


@dataclass
class Sweep:
    """One runner.run: its report, wall time and the runner's notes."""

    run_id: int
    report: report.Report
    seconds: float
    notes: list[str]

    def summary(self) -> dict:
        return {"run_id": self.run_id, "seconds": self.seconds, "counts": self.report.counts, "notes": self.notes,
                "settings": self.report.settings}


def choose(backend: str, specs: Sequence[Spec], patterns: Sequence[str] = (),
           kernels: Sequence[Path] = ()) -> list[variants.Variant]:
    """The backend's variants (built in, and those of the `kernels` folders) matching `patterns`
    (all when none), with the baseline of each of `specs` (runner.baseline_of)."""
    chosen = runner.with_baseline(variants.load_variants(backend, kernels), backend, patterns, specs=specs)
    if not chosen:
        raise SystemExit(f"no variant of {backend} matches {', '.join(patterns)}")
    return chosen


def sweep(label: str, suite: specs.Suite, chosen: Sequence[variants.Variant], *, backend: str, store: Store,
          device: int = 0, settings: runner.Settings | None = None, force: bool = True, timeout: float | None = None,
          tie_floor: float = TIE_FLOOR, **options: Any) -> Sweep:
    """runner.run, timed on the wall clock; forced by default, so that every pair is measured now.
    `tie_floor` is the tie rule's (racing's and the report's); `options` go to runner.run as
    they are (isolated, race, workers, ...)."""
    events = Progress(label)
    started = time.perf_counter()
    run_id = runner.run(suite, chosen, backend=backend, store=store, device=device, settings=settings, force=force,
                        events=events, timeout=runner.DEFAULT_TIMEOUT if timeout is None else timeout,
                        tie_floor=tie_floor, **options)
    seconds = time.perf_counter() - started
    say(f"{label}: done in {seconds:.1f} s")
    return Sweep(run_id, report.build(store.load_run(run_id), tie_floor=tie_floor), seconds, events.notes)


def pick_backend(name: str) -> tuple[str | None, str]:
    """(backend, "") when `name` can run here, else (None, why not)."""
    try:
        return backends.pick_backend(name), ""
    except backends.BackendError as e:
        return None, str(e)


def cuda_args(doc: str, what: str,
              options: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace | None:
    """A CUDA-only script's arguments (--device, --json, and those `options` adds), or None,
    after saying that `what` was skipped and why, when CUDA cannot run here (the script
    then exits 2)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--json", type=Path)
    if options is not None:
        options(ap)
    args = ap.parse_args()
    backend, why = pick_backend("cuda")
    if backend is None:
        write_json(args.json, skipped(what, why))
        return None
    return args
