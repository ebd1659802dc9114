"""A report as CSV (one line per variant x spec, for spreadsheets and pandas) or as
Markdown (GitHub-flavoured: a header table, the best per spec, every spec's variants
in a collapsible section, the failures).

Both are built from a `report.Report`, so they hold the same figures as the terminal
report and the JSON: medians in microseconds per launch, labelled by clock and cache
state, ranked by the report's clock.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .report import (
    CLOCK_MEANING,
    CLOCK_NAMES,
    Report,
    Row,
    SpecReport,
    column,
    noise_text,
    peak_note,
    ratio_text,
    state_text,
)
from .results import FAILED, Category, Status

__all__ = ["CSV_COLUMNS", "to_csv", "to_markdown", "write_csv", "write_markdown"]

_CLOCK_ORDER = ("batch", "gpu", "cpu")
CSV_COLUMNS = (
    ["run", "spec_index", "spec", "spec_key", "variant", "status", "tags", "rank_by", "mode"]
    + [f"{c}_{what}" for c in _CLOCK_ORDER for what in ("us", "ci_lo_us", "ci_hi_us", "noise", "samples", "stop")]
    + ["vs_baseline_pct", "vs_orig_pct", "bytes", "flops", "gbps", "gflops", "pct_peak", "max_abs", "max_rel",
       "reused", "message"]
)


def _num(value: float | int | None) -> str:
    # repr keeps every digit: a CSV is for further computation, not for reading.
    return "" if value is None else repr(value)


def _row_cells(report: Report, spec: SpecReport, row: Row) -> dict[str, str]:
    cells = {"run": str(report.run_id), "spec_index": str(spec.index), "spec": spec.label, "spec_key": spec.key,
             "variant": row.variant, "status": row.status, "tags": " ".join(row.tags), "rank_by": report.rank_by,
             "mode": report.mode, "vs_baseline_pct": _num(row.vs_baseline_pct), "vs_orig_pct": _num(row.vs_orig_pct),
             "bytes": _num(spec.bytes), "flops": _num(spec.flops), "gbps": _num(row.gbps),
             "gflops": _num(row.gflops), "pct_peak": _num(row.pct_peak), "max_abs": _num(row.max_abs),
             "max_rel": _num(row.max_rel), "reused": str(int(row.reused)), "message": row.reason}
    for c in _CLOCK_ORDER:
        t = row.clocks.get(c)
        if t is not None:
            cells.update({f"{c}_us": _num(t.median_us), f"{c}_ci_lo_us": _num(t.ci_us[0]),
                          f"{c}_ci_hi_us": _num(t.ci_us[1]), f"{c}_noise": _num(t.noise),
                          f"{c}_samples": str(t.samples), f"{c}_stop": t.stop})
    return cells


def to_csv(report: Report) -> str:
    """Every variant that ran on every spec, then one line per raced-out pair and per
    failed, timed-out or crashed pair (status and message only): the columns are CSV_COLUMNS."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for spec in report.specs:
        for row in spec.rows:
            writer.writerow(_row_cells(report, spec, row))
    for spec in report.specs:
        for variant, ratio in spec.raced:
            writer.writerow({"run": str(report.run_id), "spec_index": str(spec.index), "spec": spec.label,
                             "spec_key": spec.key, "variant": variant, "status": Status.RACED,
                             "rank_by": report.rank_by, "mode": report.mode,
                             "message": f"raced out: {ratio_text(ratio)} the lap's fastest time in a brief lap"})
    by_label = {s.label: s for s in reversed(report.specs)}  # the first spec of a label wins
    for f in report.failures:
        if f.category == Category.WRONG:  # wrong rows ran and are above, with their figures
            continue
        status = f.category if f.category in FAILED else Status.FAILED
        for label in f.specs:
            spec = by_label.get(label)
            writer.writerow({"run": str(report.run_id), "spec_index": str(spec.index) if spec else "",
                             "spec": label, "spec_key": spec.key if spec else "", "variant": f.variant,
                             "status": status, "rank_by": report.rank_by, "mode": report.mode,
                             "message": f"{f.category}: {f.message.splitlines()[0] if f.message else ''}"})
    return out.getvalue()


def _cell(text: object) -> str:
    """A table cell: pipes escaped, line breaks folded, so one row stays one row."""
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or " "


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _f(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}%"


def _us(row: Row, clock: str, ranking: bool) -> str:
    t = row.clocks.get(clock)
    if t is None:
        return "-"
    return f"{t.median_us:.2f}" + ("\\*" if ranking and t.stop not in ("converged", "") else "")


def header_rows(report: Report) -> list[tuple[str, str]]:
    """The run's header as (name, value) pairs: shared by the Markdown and HTML pages."""
    d, s = report.device, report.settings
    order = [report.rank_by] + [c for c in _CLOCK_ORDER if c != report.rank_by]
    rows = [("run", f"{report.run_id} ({report.status})"), ("suite", f"{report.suite} ({len(report.specs)} specs)"),
            ("device", f"{d.get('name')} ({d.get('vendor')})"), ("backend", report.backend),
            ("driver", str(d.get("driver"))),
            ("ranked by", f"{CLOCK_NAMES[report.rank_by]} time, {report.mode} cache")]
    if report.cold_note:
        rows.append(("cold", report.cold_note))
    rows += [(f"{CLOCK_NAMES[c]} clock", CLOCK_MEANING[c]) for c in order]
    if "max_noise" in s:
        rows.append(("sampling", f"until noise <= {100 * s['max_noise']:g}% after {s['min_samples']} samples and "
                                 f"{1e3 * s['min_time']:g} ms, at most {1e3 * s['max_time']:g} ms a pair "
                                 "(* marks one that stopped short)"))
    rows += [("ties", f"95% confidence intervals of the medians overlap, or within {100 * report.tie_floor:g}% "
                      "of the best"),
             ("clock", report.clock_note), ("baseline", f"{report.baseline or 'none'}: {report.orig_note}"),
             ("roofline", peak_note(report))]
    unreached = sum(1 for spec in report.specs if spec.state == "not reached")
    partial = sum(1 for spec in report.specs if spec.state == "incomplete")
    if unreached or partial:
        rows.append(("unfinished", f"the run is {report.status}: {unreached} specs not reached, {partial} measured "
                                   "in part (their best is of what was measured)"))
    c = report.counts
    rows.append(("counts", f"{c['measured']} measured ({c.get('raced', 0)} of them raced out), {c['reused']} reused, "
                           f"{c['unsupported']} unsupported, "
                           f"{c['failed']} failed, {c['wrong']} wrong, {c['timeout']} timed out, "
                           f"{c['crashed']} crashed"))
    return rows


def to_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown."""
    rank = report.rank_by
    others = [c for c in ("gpu", "cpu", "batch") if c != rank]
    lines = [f"# metalbench run {report.run_id}: {report.suite}", ""]
    lines += _table(["", ""], [[f"**{k}**", v] for k, v in header_rows(report)], set())
    lines += ["", f"## Best correct variant per spec ({CLOCK_NAMES[rank]} time, {report.mode})", ""]
    summary = []
    for spec in report.specs:
        best = spec.best_row()
        ranked = best.clocks.get(rank) if best else None
        speedup = f"{spec.baseline_us / ranked.median_us:.2f}x" if ranked and spec.baseline_us else "-"
        ties = [v for v in spec.ties if v != spec.best]
        summary.append([spec.label, f"`{state_text(spec)}`" if spec.best else state_text(spec),
                        _us(best, rank, True) if best else "-", noise_text(ranked),
                        str(ranked.samples) if ranked else "-",
                        _f(spec.baseline_us, ".2f"), speedup, _f(best.gbps if best else None, ".2f"),
                        _f(best.pct_peak if best else None, ".1f"), _first(ties, 3)])
    lines += _table(["spec", "best", column(report, rank), "noise", "n", "baseline us", "speedup", "GB/s", "% peak",
                     "ties"], summary, {2, 3, 4, 5, 6, 7, 8})
    lines += ["", "## Every variant, per spec", ""]
    headers = ["variant", column(report, rank), "noise", "n", *(column(report, c) for c in others), "vs base",
               "vs orig", "GB/s", "% peak", "max abs", "max rel", "tags"]
    for spec in report.specs:
        title = f"[{spec.index}] {spec.label}"
        if spec.orig:
            o = spec.orig
            title += f" (original: {o['impl']} {o['ms'] * 1e3:.0f} us on {o['device']})"
        rows = []
        for row in spec.rows:
            ranked = row.clocks.get(rank)
            name = f"**{row.variant}**" if "best" in row.tags else row.variant
            tags = " ".join(f"[{t}]" for t in row.tags) + (" (reused)" if row.reused else "")
            rows.append([name, _us(row, rank, True), noise_text(ranked), str(ranked.samples) if ranked else "-",
                         *(_us(row, c, False) for c in others), _pct(row.vs_baseline_pct), _pct(row.vs_orig_pct),
                         _f(row.gbps, ".2f"), _f(row.pct_peak, ".1f"), _f(row.max_abs, ".2e"),
                         _f(row.max_rel, ".2e"), tags or " "])
        lines += ["<details>", f"<summary>{_html_text(title)}: best {_html_text(state_text(spec))}"
                  "</summary>", ""]
        lines += _table(headers, rows, set(range(1, len(headers) - 1))) if rows else \
            ["(not reached)" if spec.state == "not reached" else "(no variant ran)"]
        if spec.raced:
            lines += ["", "Raced out (slower than the best at 95% confidence in a brief lap; time as a multiple of "
                      "the lap's fastest): " + ", ".join(f"`{v}` {ratio_text(ratio)}" for v, ratio in spec.raced)]
        lines += ["", "</details>", ""]
    if report.failures:
        lines += ["## Failures", ""]
        lines += _table(["variant", "category", "count", "specs", "message"],
                        [[f.variant, f.category, str(f.count), ", ".join(f.specs),
                          " / ".join(([f.message.splitlines()[0]] if f.message else []) + f.detail)]
                         for f in report.failures], {2})
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _first(names: list[str], count: int) -> str:
    if not names:
        return "-"
    return ", ".join(names[:count]) + (f" +{len(names) - count} more" if len(names) > count else "")


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_csv(report: Report, path: Path) -> None:
    """Writes to_csv(report) to `path`."""
    Path(path).write_text(to_csv(report), encoding="utf-8")


def write_markdown(report: Report, path: Path) -> None:
    """Writes to_markdown(report) to `path`."""
    Path(path).write_text(to_markdown(report), encoding="utf-8")
