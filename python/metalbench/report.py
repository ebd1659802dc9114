"""Reports of a stored run: built from the store alone, shown as tables or written as JSON.

Every figure is labelled with how it was taken: the clock (batch, per-launch GPU,
CPU round trip) and the cache state (warm, or cold: inputs rotated so that no
launch finds them in the last-level cache).

The best correct variant of a spec is the fastest by the ranking clock; every
correct variant that cannot be told apart from it (ties.py) shares the tag as a tie.

Roofline figures (roofline.py): every row has the bytes its spec must move at least and
its FLOPs, hence GB/s, GFLOP/s and % of the device's peak memory bandwidth by the
ranking clock. The peak is the run's (recorded when it started), else the one a
caller passes (the store's, for runs made before peaks were recorded).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .errors import InputError
from .results import CLOCKS, FAILED, Category, Result, Run, Status
from .roofline import cache_of, figures, from_memory, implausible, plausibility_note
from .specs import SpecError, spec_from_key
from .tables import Column, fit, table
from .ties import TIE_FLOOR, Estimate, ties_with

__all__ = ["JSON_SCHEMA", "Report", "build", "render", "write_json"]

# The JSON report's format (semver): a new field bumps the minor version, a removed
# or changed one the major. docs/json.md documents every field.
# 1.1.0: roofline figures (Row.gbps, gflops, pct_peak; SpecReport.bytes, flops;
#        Report.peak_bandwidth, peak_source), SpecReport.raced and devices.
# 1.2.0: settings.batch_time.
# 1.3.0: SpecReport.state (not reached, incomplete), Failure.detail (a compile log's first lines).
# 1.4.0: Row.implausible, Report.plausibility, Report.cold_note; settings.seed; device.llc_bytes, llc_source.
# 1.5.0: SpecReport.baseline (each spec its own: a quantized spec's differs); Report.baseline lists them all.
JSON_SCHEMA = "1.5.0"
CLOCK_NAMES = {"batch": "batch", "gpu": "launch", "cpu": "CPU"}
CLOCK_MEANING = {
    "batch": "N launches back to back between one pair of device timestamps, divided by N",
    "gpu": "each launch between its own device timestamps, launches held back to back",
    "cpu": "submit one launch and wait for it, on the host's clock",
}


@dataclass
class Timing:
    """One clock's figures for a row, in microseconds per launch."""

    median_us: float
    ci_us: tuple[float, float]  # 95% confidence interval of the median
    noise: float                # relative standard deviation of the samples
    samples: int
    stop: str                   # converged, enough, time-cap, sample-cap, throttled ('' before schema 2)
    discarded: int


@dataclass
class Row:
    variant: str
    status: Status  # ok or wrong
    clocks: dict[str, Timing]
    vs_baseline_pct: float | None  # ranking clock against the baseline's; negative is faster
    vs_orig_pct: float | None      # ranking clock against the recorded original time
    max_abs: float | None
    max_rel: float | None
    reused: bool
    reason: str
    tags: list[str] = field(default_factory=list)
    # Roofline figures by the ranking clock (None without a time, or a peak for pct_peak).
    gbps: float | None = None
    gflops: float | None = None
    pct_peak: float | None = None
    implausible: str = ""  # why its time is faster than memory allows (roofline.implausible); never best

    def us(self, clock: str) -> float | None:
        t = self.clocks.get(clock)
        return None if t is None else t.median_us


@dataclass
class SpecReport:
    index: int
    label: str
    key: str
    orig: dict | None
    rows: list[Row]
    best: str | None
    ties: list[str]  # the best's tie group, the best first
    baseline_us: float | None
    raced: list[tuple[str, float]] = field(default_factory=list)  # raced out: variant, times the best's
    devices: list[int] = field(default_factory=list)  # indices of the devices that measured its variants
    bytes: int | None = None  # the least bytes the op must move (Spec.bytes_moved)
    flops: int | None = None
    # "" when the run finished the spec; "not reached" when it stopped before measuring any
    # of it, "incomplete" when it stopped partway (its best is of what was measured).
    state: str = ""
    baseline: str | None = None  # the variant id of its baseline (runner.baseline_of), which baseline_us is of

    def best_row(self) -> Row | None:
        """The row of the best correct variant, if any."""
        return next((r for r in self.rows if r.variant == self.best), None)


@dataclass
class Failure:
    variant: str
    category: Category
    count: int
    message: str  # of the first occurrence
    specs: list[str]
    logs: list[str]
    detail: list[str] = field(default_factory=list)  # the first lines of the first log that says what failed


@dataclass
class Report:
    run_id: int
    status: str
    suite: str
    backend: str
    device: dict
    settings: dict
    rank_by: str
    mode: str  # warm or cold
    tie_floor: float
    baseline: str | None  # the baselines of its specs, ', '-separated (each spec's is SpecReport.baseline)
    orig_note: str
    orig_compared: bool
    clock_note: str
    specs: list[SpecReport]
    counts: dict[str, int]
    failures: list[Failure]
    notes: list[str] = field(default_factory=list)
    peak_bandwidth: float | None = None  # bytes per second; None when unknown
    peak_source: str = ""
    plausibility: str = ""  # the rule that flags [implausible] times (roofline.plausibility_note)
    cold_note: str = ""  # cold runs: how the specs' launches were kept from finding their inputs in cache
    schema: str = JSON_SCHEMA


def _timing(stats: dict | None) -> Timing | None:
    if not stats or not stats.get("count"):
        return None
    median = stats["median"] / 1e3
    ci = (stats.get("ci_lo", stats["min"]) / 1e3, stats.get("ci_hi", stats["max"]) / 1e3)
    return Timing(median, ci, float(stats.get("rel_stdev", 0.0)), int(stats["count"]), stats.get("stop", ""),
                  int(stats.get("discarded", 0)))


def _estimate(t: Timing) -> Estimate:
    return Estimate(t.median_us, *t.ci_us)


def _pct(value: float | None, against: float | None) -> float | None:
    if value is None or not against:
        return None
    return (value / against - 1.0) * 100.0


def _device_matches(recorded: str, device_name: str) -> bool:
    """Recorded times name a class of device ("Apple M1-class GPU"); compare on the chip name."""
    chip = recorded.lower().replace("-class", "").replace(" gpu", "").strip()
    return bool(chip) and chip in device_name.lower()


def _clock_note(run: Run) -> str:
    lows, highs, tops, discarded = [], [], [], 0
    for r in run.results:
        clock = (r.measure or {}).get("clock") or {}
        if clock.get("low"):
            lows.append(clock["low"]["mhz"])
            tops.append(clock["low"]["max_mhz"])
        if clock.get("high"):
            highs.append(clock["high"]["mhz"])
        discarded += sum(int((r.clock(c) or {}).get("discarded", 0)) for c in CLOCKS)
    source = run.device.get("clock_source", "")
    if not lows:
        reason = source.removeprefix("none: ") if source.startswith("none") else f"{run.backend} exposes none"
        return f"not read ({reason})"
    note = f"{min(lows):.0f}-{max(highs):.0f} MHz (maximum {max(tops):.0f}), read before and after every round"
    if discarded:
        note += f"; {discarded} samples taken at a low or throttled clock were discarded"
    return note


def _state(spec: dict, results: list[Result]) -> str:
    """How far an unfinished run got with a spec: "" (all of it), "incomplete" or "not reached".
    Runs record per spec the pairs they report and how many of those they set out to
    measure (runner: store.plan_run); for older runs, a spec with no result is not reached."""
    have = sum(1 for r in results if r.status != Status.UNSUPPORTED)
    if "pairs" not in spec:
        return "not reached" if have == 0 else ""
    pairs, to_measure = int(spec["pairs"]), int(spec.get("to_measure", 0))
    if have >= pairs:
        return ""
    return "not reached" if have <= pairs - to_measure else "incomplete"


def log_lines(log: str, count: int = 3) -> list[str]:
    """The first `count` lines of a compiler log that matter: from its first line that
    names an error (else its first line), blank lines left out."""
    lines = [line.rstrip() for line in (log or "").splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if "error" in line.lower()), 0)
    return lines[first:first + count]


def build(run: Run, rank_by: str | None = None, tie_floor: float = TIE_FLOOR,
          peak: tuple[float, str] | None = None) -> Report:
    """The report of `run`, ranked by `rank_by` (default: the clock the run measured to converge).

    `peak` (bytes per second, source) is used when the run recorded no peak bandwidth."""
    rank = rank_by or run.settings.get("rank_by", "gpu")
    if rank not in CLOCKS:
        raise InputError(f"rank_by must be one of {', '.join(CLOCKS)}, got {rank!r}")
    peak_bw: float | None = float(run.device.get("peak_bandwidth") or 0) or None
    peak_source = str(run.device.get("peak_bandwidth_source") or "") if peak_bw else ""
    if peak_bw is None and peak is not None and peak[0] > 0:
        peak_bw, peak_source = peak
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

    cold, cache = bool(run.settings.get("cold")), cache_of(run.device)
    exempt = 0
    by_spec: dict[int, list[Result]] = {}
    for r in run.results:
        by_spec.setdefault(r.spec_index, []).append(r)
    finished = run.status == "complete"

    counts = Counter(measured=0, reused=0, unsupported=0, failed=0, wrong=0, timeout=0, crashed=0, raced=0)
    failures: dict[tuple[str, str], Failure] = {}
    specs: list[SpecReport] = []
    for index, spec in enumerate(run.specs):
        results = by_spec.get(index, [])
        baseline = run.baseline_of(index)
        base = next((r for r in results if r.variant == baseline and r.status == Status.OK), None)
        base_timing = _timing(base.clock(rank)) if base else None
        base_us = base_timing.median_us if base_timing else None
        orig_ms = spec["orig"]["ms"] if spec.get("orig") else None
        try:
            shape = spec_from_key(spec["key"])
        except SpecError:  # a key this version cannot read: no roofline figures for it
            shape = None
        exempt += shape is not None and from_memory(shape, cold, cache) == 0
        rows: list[Row] = []
        raced: list[tuple[str, float]] = []
        for r in results:
            if r.status == Status.UNSUPPORTED:
                counts["unsupported"] += 1
                continue
            counts["reused" if r.reused else "measured"] += 1
            if r.status in (*FAILED, Status.WRONG):
                counts[r.status] += 1
                f = failures.setdefault((r.variant, r.category), Failure(r.variant, r.category, 0, r.message, [], [],
                                                                         log_lines(r.log)))
                f.count += 1
                f.specs.append(spec["label"])
                f.logs.append(r.log)
            if r.status in FAILED:
                continue
            if r.status == Status.RACED:
                counts["raced"] += not r.reused  # of those measured in this run
                raced.append((r.variant, float(((r.measure or {}).get("race") or {}).get("ratio", 0.0))))
                continue
            clocks = {c: t for c in CLOCKS if (t := _timing(r.clock(c))) is not None}
            checks = r.checks or {}
            ranked = clocks.get(rank)
            roof = figures(shape, ranked.median_us, peak_bw) if shape and ranked and ranked.median_us > 0 else None
            rows.append(Row(
                variant=r.variant, status=r.status, clocks=clocks,
                vs_baseline_pct=_pct(ranked.median_us if ranked else None, base_us),
                vs_orig_pct=_pct(ranked.median_us, orig_ms * 1e3) if compared and orig_ms and ranked else None,
                max_abs=checks.get("max_abs"), max_rel=checks.get("max_rel"), reused=r.reused,
                reason=r.message if r.status == Status.WRONG else "",
                gbps=roof.gbps if roof else None, gflops=roof.gflops if roof else None,
                pct_peak=roof.pct_peak if roof else None,
                implausible=implausible(shape, ranked.median_us, peak_bw, cold, cache)
                if shape and ranked and r.status == Status.OK else "",
            ))
        # A wrong result is never best, however fast it was; nor one faster than memory allows.
        correct = [row for row in rows if row.status == Status.OK and rank in row.clocks and not row.implausible]
        best = min(correct, key=lambda x: x.clocks[rank].median_us, default=None)
        ties = [] if best is None else \
            [row for row in correct if row is best or ties_with(_estimate(best.clocks[rank]),
                                                                   _estimate(row.clocks[rank]), tie_floor)]
        ties.sort(key=lambda x: x.clocks[rank].median_us)
        for row in rows:
            if row.variant == baseline:
                row.tags.append("baseline")
            if row is best:
                row.tags.append("best")
            elif row in ties:
                row.tags.append("tie")
            if row.status == Status.WRONG:
                row.tags.append("bad-rel")
            if row.implausible:
                row.tags.append("implausible")
        rows.sort(key=lambda x: (x.status != Status.OK, x.us(rank) if x.us(rank) is not None else float("inf")))
        where = sorted({r.measure["device"] for r in results if r.measure and "device" in r.measure})
        specs.append(SpecReport(index, spec["label"], spec["key"], spec.get("orig"), rows,
                                best.variant if best else None, [row.variant for row in ties], base_us,
                                sorted(raced, key=lambda x: x[1]), where,
                                shape.bytes_moved() if shape else None, shape.flops() if shape else None,
                                "" if finished else _state(spec, results), baseline))
    ordered = sorted(failures.values(), key=lambda f: (f.category, f.variant))
    cold_note = _cold_note(run, by_spec) if cold else ""
    return Report(run.id, run.status, run.suite, run.backend, run.device, run.settings, rank,
                  "cold" if run.settings.get("cold") else "warm", tie_floor, run.baseline, orig_note, compared,
                  _clock_note(run), specs, dict(counts), ordered, peak_bandwidth=peak_bw, peak_source=peak_source,
                  plausibility=plausibility_note(cold, cache, exempt, len(run.specs)) if peak_bw else "",
                  cold_note=cold_note)


# How arena.ColdPlan kept each spec's inputs out of the cache, in words.
_COLD_HOW = {"rotate": "rotate input copies, each launch its own",
             "evict": "rotate the copies the bounds allow and stream {evict} through the cache before each round",
             "evict-partial": "rotate the copies the bounds allow and stream {evict} through the cache before each "
                              "round, less than twice the cache (bounded by time: partly cold)",
             "size": "read more than twice the cache (one copy)"}


def _cold_note(run: Run, by_spec: dict[int, list[Result]]) -> str:
    """Cold runs: how many specs kept their inputs out of the cache which way, and the cache
    size it was planned for, from what the results recorded (measure.Prepared.mode)."""
    ways: Counter = Counter()
    for results in by_spec.values():
        mode = next((r.measure for r in results if r.measure and r.measure.get("cold_how")), None)
        if mode:
            evict = f"{mode.get('evict_bytes', 0) / 2**20:.0f} MiB"
            ways[_COLD_HOW.get(mode["cold_how"], mode["cold_how"]).format(evict=evict)] += 1
    cache = cache_of(run.device)
    source = run.device.get("llc_source") or "the driver's figure"
    parts = [f"{count} spec{'s' if count != 1 else ''} {how}" for how, count in ways.most_common()]
    return (", ".join(parts) or "no spec measured in this run") + \
        f"; last-level cache {cache / 2**20:.1f} MiB ({source})"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct_text(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}%"


def _pct_style(value: float | None) -> str | None:
    if value is None:
        return None
    return "green" if value < -1 else "red" if value > 1 else None


# Fewer samples than this give no noise figure: one sample has no spread, two a meaningless one.
MIN_NOISE_SAMPLES = 3


def noise_text(t: Timing | None, suffix: str = "%") -> str:
    """A clock's noise in percent, or '-' where it has too few samples to have one."""
    if t is None or t.samples < MIN_NOISE_SAMPLES:
        return "-"
    return f"{100 * t.noise:.1f}{suffix}"


def us_text(t: Timing | None, ranking: bool, star: str = "*") -> str:
    """A median in microseconds; a ranking figure that stopped before its noise target is starred."""
    if t is None:
        return "-"
    mark = star if ranking and t.stop not in ("converged", "") else ""
    return f"{t.median_us:.2f}{mark}"


def ratio_text(ratio: float) -> str:
    """A time as a multiple of the best's, with the digits that keep it apart from 1x."""
    text = f"{ratio:.2f}x"
    return f"{ratio:.3f}x" if text == "1.00x" else text


def state_text(spec: SpecReport) -> str:
    """What a spec's summary says when it has no best, or a best of part of its variants."""
    if spec.state == "not reached":
        return "(not reached: the run stopped first)"
    if spec.best is None:
        return "(none correct)"
    return spec.best + (" (incomplete run)" if spec.state == "incomplete" else "")


def column(report: Report, clock: str) -> str:
    """A figure's label: its clock and cache state, e.g. 'batch warm us'."""
    return f"{CLOCK_NAMES[clock]} {report.mode} us"


# Each spec table's columns, and how useful each is when the console is too narrow for
# all of them (tables.Column.keep: the lowest is left out first; 0 always stays).
def _spec_columns(report: Report) -> list[Column]:
    rank = report.rank_by
    others = [c for c in ("gpu", "cpu", "batch") if c != rank]
    return [Column("variant"), Column(column(report, rank), numeric=True), Column("noise", numeric=True, keep=9),
            Column("n", numeric=True, keep=6), *(Column(column(report, c), numeric=True, keep=k)
                                                for c, k in zip(others, (3, 2), strict=True)),
            Column("vs base", numeric=True, keep=8), Column("vs orig", numeric=True, keep=1),
            Column("GB/s", numeric=True, keep=4), Column("% peak", numeric=True, keep=7),
            Column("max abs", numeric=True, keep=1), Column("max rel", numeric=True, keep=5), Column("tags", keep=10)]


def _spec_cells(report: Report, row: Row) -> list[str]:
    rank = report.rank_by
    others = [c for c in ("gpu", "cpu", "batch") if c != rank]
    ranked = row.clocks.get(rank)
    tags = " ".join(f"[{t}]" for t in row.tags) + (" (reused)" if row.reused else "")
    return [row.variant, us_text(ranked, True), noise_text(ranked), str(ranked.samples) if ranked else "-",
            *(us_text(row.clocks.get(c), False) for c in others), _pct_text(row.vs_baseline_pct),
            _pct_text(row.vs_orig_pct), _fmt(row.gbps, ".2f"), _fmt(row.pct_peak, ".1f"), _fmt(row.max_abs, ".2e"),
            _fmt(row.max_rel, ".2e"), tags]


def render(report: Report, console: Console, verbose_failures: bool = False) -> None:
    """The report as tables on `console`, each fitted to its width (tables.py)."""
    d, s = report.device, report.settings
    console.print(f"[bold]metalbench run {report.run_id}[/] · suite [bold]{escape(report.suite)}[/] "
                  f"({len(report.specs)} specs) · status {escape(report.status)}")
    console.print(escape(f"device: {d.get('name')} ({d.get('vendor')}) · backend {report.backend} · "
                         f"driver {d.get('driver')}"))
    order = [report.rank_by] + [c for c in ("batch", "gpu", "cpu") if c != report.rank_by]
    console.print(f"timing: per launch, in us; {report.mode} cache" +
                  (f": {report.cold_note}" if report.mode == "cold" else ""), markup=False)
    for c in order:
        console.print(f"  {CLOCK_NAMES[c]:<6} = {CLOCK_MEANING[c]}" + ("  \\[ranks]" if c == report.rank_by else ""))
    if "max_noise" in s:
        console.print(f"  {CLOCK_NAMES[report.rank_by]} is sampled until its noise (relative standard deviation) is "
                      f"at most {100 * s['max_noise']:g}%, after {s['min_samples']} samples spanning "
                      f"{1e3 * s['min_time']:g} ms, for at most {1e3 * s['max_time']:g} ms a pair; * marks a figure "
                      f"that stopped short; n is its samples (no noise under {MIN_NOISE_SAMPLES})")
    console.print(f"  ties: 95% confidence intervals of the medians overlap, or within {100 * report.tie_floor:g}% "
                  "of the best" + ("; variants slower than the fastest at 95% confidence after a brief lap were "
                                   "raced out" if s.get("race") else ""))
    console.print(escape(f"clock: {report.clock_note}"))
    console.print(escape(f"baseline: {report.baseline or 'none'} · {report.orig_note}"))
    console.print(escape(f"roofline: {peak_note(report)}"))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    unreached = [spec for spec in report.specs if spec.state == "not reached"]
    partial = [spec for spec in report.specs if spec.state == "incomplete"]
    if unreached or partial:
        console.print(f"[yellow]note:[/] the run is {escape(report.status)}: {len(unreached)} specs not reached, "
                      f"{len(partial)} measured in part (their best is of what was measured); a rerun measures "
                      "the rest and reuses what is stored")

    columns = _spec_columns(report)
    rows = [_spec_cells(report, row) for spec in report.specs for row in spec.rows]
    layout = fit(columns, rows, console.width)
    if layout.dropped:
        console.print(escape(f"columns left out to fit {console.width} columns: {', '.join(layout.dropped)} (a "
                             "wider terminal shows them, and --json or --csv holds every figure)"), style="dim")
    for spec in report.specs:
        orig = spec.orig
        title = f"[{spec.index}] {spec.label}"
        if orig:
            title += f"   (original: {orig['impl']} {orig['ms'] * 1e3:.0f} us on {orig['device']})"
        if len(spec.devices) > 1:  # same model (the runner refuses a mix), but not the same chip
            title += f"   (measured on devices {', '.join(map(str, spec.devices))})"
        if spec.state:
            title += f"   ({spec.state})"
        cells = [_spec_cells(report, row) for row in spec.rows]
        for c in columns:
            c.styles = {}
        vs_base, vs_orig = (next(c for c in columns if c.header == name) for name in ("vs base", "vs orig"))
        for r, row in enumerate(spec.rows):
            vs_base.styles[r] = _pct_style(row.vs_baseline_pct) or ""
            vs_orig.styles[r] = _pct_style(row.vs_orig_pct) or ""
        styles = ["red" if row.status == Status.WRONG else ("bold" if "best" in row.tags else None)
                  for row in spec.rows]
        if not spec.rows:
            cells = [["(not reached)" if spec.state == "not reached" else "(no variant ran)"]
                     + ["-"] * (len(columns) - 2) + [""]]
            styles = [None]
        console.print()
        console.print(table(columns, cells, layout, title, styles))
        if spec.raced:
            listed = ", ".join(f"{v} {ratio_text(ratio)}" for v, ratio in spec.raced[:4])
            more = f" and {len(spec.raced) - 4} more" if len(spec.raced) > 4 else ""
            console.print(f"raced out (slower than the best at 95% confidence in a brief lap; time as a multiple "
                          f"of the lap's fastest): {listed}{more}", markup=False, style="dim")
    console.print()
    _render_summary(report, console)
    c = report.counts
    console.print(f"\n{c['measured']} measured ({c['raced']} of them raced out), {c['reused']} reused from the "
                  f"store, {c['unsupported']} unsupported (skipped), {c['failed']} failed, {c['wrong']} wrong, "
                  f"{c['timeout']} timed out, {c['crashed']} crashed")
    if c["measured"] == 0 and c["reused"]:
        console.print("nothing was measured: every result was reused from the store (an earlier run measured it "
                      "with the same kernel, spec, device, driver and settings); --force measures again")
    if report.failures:
        console.print("\n[bold]failures[/]")
        for f in report.failures:
            first = f.message.splitlines()[0] if f.message else ""
            console.print(f"  {f.variant}: {f.category} x{f.count}: {first}", markup=False, soft_wrap=True)
            if not verbose_failures:
                for line in f.detail:
                    console.print(f"      {line}", markup=False, soft_wrap=True, style="dim")
            else:
                for spec_label, log in zip(f.specs, f.logs, strict=True):
                    console.print(f"    - {spec_label}", markup=False)
                    if log:
                        console.print("      " + log.strip().replace("\n", "\n      "), markup=False)
        if not verbose_failures:
            console.print("  (--verbose-failures lists each one with its whole compiler log)")


def _render_summary(report: Report, console: Console) -> None:
    rank = report.rank_by
    columns = [Column("spec"), Column("best"), Column(column(report, rank), numeric=True),
               Column("noise", numeric=True, keep=6), Column("n", numeric=True, keep=5),
               Column("baseline us", numeric=True, keep=3), Column("speedup", numeric=True, keep=7),
               Column("GB/s", numeric=True, keep=2), Column("% peak", numeric=True, keep=5), Column("ties", keep=4)]
    rows = []
    for spec in report.specs:
        best = spec.best_row()
        ranked = best.clocks.get(rank) if best else None
        speedup = f"{spec.baseline_us / ranked.median_us:.2f}x" if ranked and spec.baseline_us else "-"
        others = [v for v in spec.ties if v != spec.best]
        ties = "-" if not others else (", ".join(others[:3]) + (f" +{len(others) - 3} more" if len(others) > 3 else ""))
        rows.append([spec.label, state_text(spec), us_text(ranked, True), noise_text(ranked),
                     str(ranked.samples) if ranked else "-", _fmt(spec.baseline_us, ".2f"), speedup,
                     _fmt(best.gbps if best else None, ".2f"), _fmt(best.pct_peak if best else None, ".1f"), ties])
    layout = fit(columns, rows, console.width)
    title = f"best correct variant per spec ({CLOCK_NAMES[rank]} time, {report.mode})"
    if layout.dropped:
        title += f"; left out to fit: {', '.join(layout.dropped)}"
    console.print(table(columns, rows, layout, title))


def peak_note(report: Report) -> str:
    """One line on the roof that % of peak is taken against."""
    if not report.peak_bandwidth:
        return "peak memory bandwidth unknown (no % of peak)"
    note = f"% peak = GB/s over {report.peak_bandwidth / 1e9:.1f} GB/s ({report.peak_source})"
    if report.mode == "warm":
        note += "; warm: inputs that fit in cache may pass 100%"
    if report.plausibility:
        note += f"; {report.plausibility}"
    return note


def to_dict(report: Report) -> dict:
    return asdict(report)


def to_json(report: Report) -> str:
    """The report as JSON text (docs/json.md)."""
    return json.dumps(to_dict(report), indent=2) + "\n"


def write_json(report: Report, path: Path) -> None:
    """Writes to_json(report) to `path`."""
    Path(path).write_text(to_json(report), encoding="utf-8")
