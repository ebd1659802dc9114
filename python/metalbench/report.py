"""Reports of a stored run: built from the store alone, shown as tables or written as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .store import Result, Run

__all__ = ["Report", "build", "render", "write_json"]

TAGS = ("baseline", "best-gpu", "best-cpu", "bad-rel")


@dataclass
class Row:
    variant: str
    status: str  # ok or wrong
    gpu_us: float | None
    cpu_us: float | None
    gpu_noise: float | None  # relative standard deviation of the GPU samples
    samples: int
    vs_baseline_pct: float | None  # GPU time change against the baseline; negative is faster
    vs_orig_pct: float | None  # GPU time change against the recorded original time
    max_abs: float | None
    max_rel: float | None
    reused: bool
    reason: str
    tags: list[str] = field(default_factory=list)


@dataclass
class SpecReport:
    index: int
    label: str
    key: str
    orig: dict | None
    rows: list[Row]
    best_gpu: str | None
    best_cpu: str | None
    baseline_us: float | None


@dataclass
class Failure:
    variant: str
    category: str
    count: int
    message: str  # of the first occurrence
    specs: list[str]
    logs: list[str]


@dataclass
class Report:
    run_id: int
    status: str
    suite: str
    backend: str
    device: dict
    settings: dict
    baseline: str | None
    orig_note: str
    orig_compared: bool
    specs: list[SpecReport]
    counts: dict[str, int]
    failures: list[Failure]
    notes: list[str] = field(default_factory=list)


def _us(stats: dict | None) -> float | None:
    return None if not stats or not stats.get("count") else stats["median"] / 1e3


def _pct(value: float | None, against: float | None) -> float | None:
    if value is None or not against:
        return None
    return (value / against - 1.0) * 100.0


def _device_matches(recorded: str, device_name: str) -> bool:
    """Recorded times name a class of device ("Apple M1-class GPU"); compare on the chip name."""
    chip = recorded.lower().replace("-class", "").replace(" gpu", "").strip()
    return bool(chip) and chip in device_name.lower()


def build(run: Run) -> Report:
    recorded = sorted({s["orig"]["device"] for s in run.specs if s.get("orig")})
    device_name = run.device.get("name", "")
    compared = bool(recorded) and all(_device_matches(r, device_name) for r in recorded)
    if not recorded:
        orig_note = "the suite records no original times"
    elif compared:
        orig_note = f"original times were recorded on {', '.join(recorded)}: compared"
    else:
        orig_note = (f"original times were recorded on {', '.join(recorded)}, not on {device_name}: "
                     "shown, not compared")

    by_spec: dict[int, list[Result]] = {}
    for r in run.results:
        by_spec.setdefault(r.spec_index, []).append(r)

    counts = Counter(measured=0, reused=0, unsupported=0, failed=0, wrong=0)
    failures: dict[tuple[str, str], Failure] = {}
    specs: list[SpecReport] = []
    for index, spec in enumerate(run.specs):
        results = by_spec.get(index, [])
        base = next((r for r in results if r.variant == run.baseline and r.status in ("ok", "wrong")), None)
        base_us = _us(base.gpu) if base and base.status == "ok" else None
        orig_ms = spec["orig"]["ms"] if spec.get("orig") else None
        rows: list[Row] = []
        for r in results:
            if r.status == "unsupported":
                counts["unsupported"] += 1
                continue
            counts["reused" if r.reused else "measured"] += 1
            if r.status in ("failed", "wrong"):
                counts[r.status] += 1
                f = failures.setdefault((r.variant, r.category), Failure(r.variant, r.category, 0, r.message, [], []))
                f.count += 1
                f.specs.append(spec["label"])
                f.logs.append(r.log)
            if r.status == "failed":
                continue
            checks = r.checks or {}
            gpu = _us(r.gpu)
            rows.append(Row(
                variant=r.variant, status=r.status, gpu_us=gpu, cpu_us=_us(r.cpu),
                gpu_noise=(r.gpu or {}).get("rel_stdev"), samples=int((r.gpu or {}).get("count", 0)),
                vs_baseline_pct=_pct(gpu, base_us),
                vs_orig_pct=_pct(gpu, orig_ms * 1e3) if compared and orig_ms else None,
                max_abs=checks.get("max_abs"), max_rel=checks.get("max_rel"), reused=r.reused,
                reason=r.message if r.status == "wrong" else "",
            ))
        # A wrong result is never best, however fast it was.
        correct = [row for row in rows if row.status == "ok"]
        best_gpu = min((row for row in correct if row.gpu_us is not None), key=lambda x: x.gpu_us, default=None)
        best_cpu = min((row for row in correct if row.cpu_us is not None), key=lambda x: x.cpu_us, default=None)
        for row in rows:
            if row.variant == run.baseline:
                row.tags.append("baseline")
            if row is best_gpu:
                row.tags.append("best-gpu")
            if row is best_cpu:
                row.tags.append("best-cpu")
            if row.status == "wrong":
                row.tags.append("bad-rel")
        rows.sort(key=lambda x: (x.status != "ok", x.gpu_us if x.gpu_us is not None else float("inf")))
        specs.append(SpecReport(index, spec["label"], spec["key"], spec.get("orig"), rows,
                                best_gpu.variant if best_gpu else None, best_cpu.variant if best_cpu else None,
                                base_us))
    return Report(run.id, run.status, run.suite, run.backend, run.device, run.settings, run.baseline,
                  orig_note, compared, specs, dict(counts),
                  sorted(failures.values(), key=lambda f: (f.category, f.variant)))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct_text(value: float | None) -> str:
    if value is None:
        return "-"
    color = "green" if value < -1 else "red" if value > 1 else "default"
    return f"[{color}]{value:+.0f}%[/]"


def render(report: Report, console: Console, verbose_failures: bool = False) -> None:
    d, s = report.device, report.settings
    mode = "cold cache (flushed before every launch)" if s.get("cold") else "warm cache (--cold flushes it)"
    console.print(f"[bold]metalbench run {report.run_id}[/] · suite [bold]{report.suite}[/] "
                  f"({len(report.specs)} specs) · status {report.status}")
    console.print(f"device: {d.get('name')} ({d.get('vendor')}) · backend {report.backend} · "
                  f"driver {d.get('driver')}")
    console.print("timing: GPU = device timestamps of back-to-back launches; CPU = submit to completion of one")
    console.print(f"        medians of up to {s.get('iterations')} launches after {s.get('warmup')} warm-up "
                  f"(at most {s.get('max_seconds')} s per kind); {mode}")
    console.print(f"baseline: {report.baseline or 'none'} · {report.orig_note}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    for spec in report.specs:
        orig = spec.orig
        title = f"[{spec.index}] {spec.label}"
        if orig:
            title += f"   (original: {orig['impl']} {orig['ms'] * 1e3:.0f} us on {orig['device']})"
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for name, justify in (("variant", "left"), ("GPU us", "right"), ("CPU us", "right"),
                              ("vs base", "right"), ("vs orig", "right"), ("max abs", "right"),
                              ("max rel", "right"), ("tags", "left")):
            table.add_column(name, justify=justify, no_wrap=name in ("variant", "tags"))  # type: ignore[arg-type]
        for row in spec.rows:
            tags = " ".join(f"[{t}]" for t in row.tags) + (" (reused)" if row.reused else "")
            style = "red" if row.status == "wrong" else ("bold" if "best-gpu" in row.tags else None)
            table.add_row(row.variant, _fmt(row.gpu_us, ".2f"), _fmt(row.cpu_us, ".2f"),
                          _pct_text(row.vs_baseline_pct), _pct_text(row.vs_orig_pct),
                          _fmt(row.max_abs, ".2e"), _fmt(row.max_rel, ".2e"), tags.replace("[", r"\["),
                          style=style)
        if not spec.rows:
            table.add_row("(no variant ran)", *["-"] * 6, "")
        console.print()
        console.print(table)
    console.print()
    _render_summary(report, console)
    c = report.counts
    console.print(f"\n{c['measured']} measured, {c['reused']} reused from the store, {c['unsupported']} "
                  f"unsupported (skipped), {c['failed']} failed, {c['wrong']} wrong")
    if report.failures:
        console.print("\n[bold]failures[/]")
        for f in report.failures:
            console.print(f"  {f.variant}: {f.category} x{f.count}: {f.message.splitlines()[0] if f.message else ''}")
            if verbose_failures:
                for spec_label, log in zip(f.specs, f.logs, strict=True):
                    console.print(f"    - {spec_label}")
                    if log:
                        console.print("      " + log.strip().replace("\n", "\n      "), markup=False)
        if not verbose_failures:
            console.print("  (--verbose-failures lists each one with its compiler log)")


def _render_summary(report: Report, console: Console) -> None:
    table = Table(title="best correct variant per spec (GPU time)", title_justify="left", show_edge=False,
                  pad_edge=False)
    for name in ("spec", "best", "GPU us", "baseline us", "speedup"):
        table.add_column(name, justify="left" if name in ("spec", "best") else "right", no_wrap=True)
    for spec in report.specs:
        best = next((r for r in spec.rows if r.variant == spec.best_gpu), None)
        speedup = f"{spec.baseline_us / best.gpu_us:.2f}x" if best and best.gpu_us and spec.baseline_us else "-"
        table.add_row(spec.label, spec.best_gpu or "(none correct)", _fmt(best.gpu_us if best else None, ".2f"),
                      _fmt(spec.baseline_us, ".2f"), speedup)
    console.print(table)


def to_dict(report: Report) -> dict:
    return asdict(report)


def write_json(report: Report, path: Path) -> None:
    Path(path).write_text(json.dumps(to_dict(report), indent=2))
