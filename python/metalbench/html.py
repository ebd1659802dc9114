"""A report as one self-contained HTML page: the header, the best variant per spec, a
chart of where each spec's best stands against the device, one chart per spec of every
variant's time with its noise, and the failures with their compilers' first lines.

Charts are drawn by matplotlib (the optional `plot` extra: `pip install
'metalbench[plot]'`) as static SVG written into the page, so the page needs no
network and no script to show them. The numbers behind the charts are in the page
too, as JSON in `<script type="application/json" id="metalbench-data">`, for anyone who
wants them without parsing SVG (docs/json.md).

- Where a suite's specs reach arithmetic intensities where compute may bound them
  (prefill, batched products: MEMORY_BOUND FLOP per byte or more), a roofline: achieved
  GB/s against FLOP per byte, the peak bandwidth as the roof. Where every spec is
  memory-bound (decode GEMVs sit at 1 FLOP per byte, a vertical line on a roofline with
  its labels on top of each other), one bar per spec instead: its best's % of the peak
  bandwidth (GB/s where the peak is unknown).
- Every spec chart has one axis: time as a multiple of that spec's best, on one log
  scale for the whole page, so that a spread is the same width in every chart; each
  mark is labelled with its time in microseconds, inside the frame.
"""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

from .errors import InputError
from .formats import header_rows
from .report import CLOCK_NAMES, Report, SpecReport, column, noise_text, ratio_text, state_text
from .results import Status

__all__ = ["MEMORY_BOUND", "MissingExtra", "chart_data", "require_plotting", "to_html", "write_html"]

INSTALL_HINT = "pip install 'metalbench[plot]'"
# Colours of the marks, named once so the legend and the marks agree.
_BEST, _TIE, _BASE, _WRONG, _OTHER = "#1a9850", "#91cf60", "#4575b4", "#d73027", "#555555"
# A suite whose every spec does fewer FLOPs than this per byte it must move is bound by
# memory bandwidth on any GPU (the ridge points of an M1, an H200 and PoCL on a CPU core
# are 30 to 200 FLOP/byte): it gets bars of % of peak bandwidth, not a roofline, where
# its points would stand in one vertical line.
MEMORY_BOUND = 8.0


class MissingExtra(InputError, RuntimeError):
    """The plotting library is not installed; the message says how to install it."""


def require_plotting() -> None:
    """Raises MissingExtra unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtra(f"--html needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def chart_data(report: Report) -> dict[str, Any]:
    """What the charts show, as plain data: per spec every variant's median by the
    ranking clock with its 95% interval and noise, and the roofline's points and roof."""
    rank = report.rank_by
    specs, points = [], []
    for spec in report.specs:
        variants = []
        for row in spec.rows:
            t = row.clocks.get(rank)
            if t is None:
                continue
            variants.append({"variant": row.variant, "status": row.status, "tags": row.tags,
                             "median_us": t.median_us, "ci_us": list(t.ci_us), "noise": t.noise})
            if row.status == Status.OK and row.gbps is not None and spec.bytes and spec.flops is not None:
                points.append({"spec": spec.index, "variant": row.variant, "intensity": spec.flops / spec.bytes,
                               "gbps": row.gbps, "gflops": row.gflops, "pct_peak": row.pct_peak,
                               "best": row.variant == spec.best, "baseline": "baseline" in row.tags})
        best = spec.best_row()
        specs.append({"index": spec.index, "label": spec.label, "key": spec.key, "best": spec.best,
                      "state": spec.state, "baseline": spec.baseline, "variants": variants,
                      "raced": [{"variant": v, "ratio": ratio} for v, ratio in spec.raced],
                      "intensity": spec.flops / spec.bytes if spec.bytes and spec.flops is not None else None,
                      "best_gbps": best.gbps if best else None, "best_pct_peak": best.pct_peak if best else None})
    intensities = [s["intensity"] for s in specs if s["intensity"]]
    spans = bool(intensities) and max(intensities) >= MEMORY_BOUND
    return {"schema": report.schema, "run": report.run_id, "rank_by": rank, "mode": report.mode, "specs": specs,
            "chart": "roofline" if spans else "bandwidth",
            "roofline": {"peak_gbps": report.peak_bandwidth / 1e9 if report.peak_bandwidth else None,
                         "peak_source": report.peak_source, "points": points}}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: not allowed inside HTML


def _new_figure(width: float, height: float) -> Any:
    import matplotlib
    from matplotlib.figure import Figure

    # Text stays text in the SVG (searchable, and the browser's fonts draw it).
    matplotlib.rcParams["svg.fonttype"] = "none"
    return Figure(figsize=(width, height))


def _mpl(text: str) -> str:
    """User text as matplotlib draws it literally: a '$' would start math mode (and an
    unmatched one fail the page)."""
    return str(text).replace("$", r"\$")


def _scale(data: dict[str, Any]) -> tuple[float, float]:
    """The page's one x range for the spec charts, in multiples of each spec's best: from
    the fastest mark (a wrong variant may beat the best) to the slowest with its noise."""
    low, high = 1.0, 1.0
    for spec in data["specs"]:
        best = next((v["median_us"] for v in spec["variants"] if v["variant"] == spec["best"]), None)
        base = best or min((v["median_us"] for v in spec["variants"]), default=None)
        if not base:
            continue
        for v in spec["variants"]:
            low = min(low, v["median_us"] / base)
            high = max(high, v["median_us"] * (1 + v["noise"]) / base)
    return low, high


def _ratio_ticks(ax: Any, low: float, high: float) -> None:
    """Ticks at round multiples (0.5x, 1x, 2x, 5x, ...) within [low, high], labelled as such."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    steps = [m * 10.0 ** e for e in range(-3, 7) for m in (1, 2, 5)]
    if high / low < 4:
        steps += [m * 10.0 ** e for e in range(-3, 7) for m in (1.2, 1.5, 3)]
    ticks = sorted(t for t in steps if low <= t <= high)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))


def _spec_chart(report: Report, spec: dict[str, Any], scale: tuple[float, float]) -> str:
    """Every variant's median as a dot with its noise (one standard deviation) as a bar,
    fastest at the top, on the page's shared scale of multiples of the spec's best; best,
    ties, baseline and wrong ones coloured, each labelled with its time."""
    rows = spec["variants"]
    fig = _new_figure(9.5, 0.9 + 0.24 * max(1, len(rows)))
    ax = fig.add_subplot()
    best_us = next((v["median_us"] for v in rows if v["variant"] == spec["best"]), None) or \
        min(v["median_us"] for v in rows)
    labels, ys = [], []
    low, high = scale
    # Room at the right for the value labels: a fifth of the axis's log width, at least a factor 1.6.
    right = high * max(1.6, (high / low) ** 0.2)
    for y, v in enumerate(reversed(rows)):
        median, noise = v["median_us"] / best_us, v["noise"] * v["median_us"] / best_us
        if v["status"] != Status.OK:
            color = _WRONG
        elif "best" in v["tags"]:
            color = _BEST
        elif "tie" in v["tags"]:
            color = _TIE
        elif "baseline" in v["tags"]:
            color = _BASE
        else:
            color = _OTHER
        ax.errorbar([median], [y], xerr=[[min(noise, median * 0.999)], [noise]], fmt="none", ecolor=color,
                    elinewidth=3, alpha=0.45)
        marker = "*" if "best" in v["tags"] else "s" if "baseline" in v["tags"] else "x" if v["status"] != Status.OK \
            else "o"
        ax.plot([median], [y], marker=marker, color=color, markersize=11 if marker == "*" else 6, linestyle="none")
        ax.annotate(f"{v['median_us']:.2f} us", (median + noise, y), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=7, color="#333333", annotation_clip=True)
        tags = [t for t in v["tags"] if t in ("best", "tie", "baseline", "bad-rel", "implausible")]
        labels.append(_mpl(v["variant"] + (f"  [{', '.join(tags)}]" if tags else "")))
        ys.append(y)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(low / 1.15, right)
    _ratio_ticks(ax, low / 1.15, right)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.axvline(1.0, color=_BEST, linewidth=0.8, alpha=0.5)
    ax.set_xlabel(f"{column(report, report.rank_by)} / the best's {best_us:.2f} us (median; bar: ±1 standard "
                  "deviation); the same scale for every spec")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.set_title(_mpl(f"[{spec['index']}] {spec['label']}"), loc="left", fontsize=10)
    return _svg(fig)


def _bandwidth_chart(data: dict[str, Any]) -> str:
    """One bar per spec: its best variant's % of the peak memory bandwidth (or GB/s where
    the peak is unknown), for suites whose specs all sit at one arithmetic intensity."""
    roof = data["roofline"]
    pct = roof["peak_gbps"] is not None
    specs = [s for s in data["specs"] if s["best_gbps"] is not None]
    fig = _new_figure(9.5, 1.0 + 0.26 * max(1, len(specs)))
    ax = fig.add_subplot()
    values = [(s["best_pct_peak"] if pct else s["best_gbps"]) or 0.0 for s in specs]
    ys = list(range(len(specs)))[::-1]
    ax.barh(ys, values, color=_BEST, alpha=0.8, height=0.6)
    top = max(values + [100.0 if pct else 1.0])
    for y, value in zip(ys, values, strict=True):
        ax.annotate(f"{value:.1f}{'%' if pct else ' GB/s'}", (value, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7, annotation_clip=True)
    if pct:
        ax.axvline(100.0, color=_WRONG, linestyle="--", linewidth=1.0)
    ax.set_xlim(0, top * 1.15)
    ax.set_yticks(ys, [_mpl(f"[{s['index']}] {s['label']}") for s in specs], fontsize=8)
    ax.set_ylim(-0.7, len(specs) - 0.3)
    intensities = [s["intensity"] for s in data["specs"] if s["intensity"]]
    what = (f"% of the peak memory bandwidth ({roof['peak_gbps']:.1f} GB/s, "
            f"{'measured' if roof['peak_source'].startswith('measured') else roof['peak_source']})" if pct
            else "achieved GB/s (no peak bandwidth known)")
    ax.set_xlabel(_mpl(f"{what}: the best variant of each spec ({CLOCK_NAMES[data['rank_by']]} time, "
                       f"{data['mode']})"))
    ax.grid(axis="x", alpha=0.3)
    low, high = (f"{min(intensities):.2g}", f"{max(intensities):.2g}") if intensities else ("-", "-")
    span = f"about {low}" if low == high else f"{low} to {high}"
    ax.set_title(f"memory bandwidth per spec: every spec does {span} FLOP per byte it must move, under "
                 f"{MEMORY_BOUND:g}, so memory bandwidth bounds them all", loc="left", fontsize=10)
    return _svg(fig)


def _label_points(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Labels each point beside it, trying a few places around it so that no two labels
    overlap (in display space); a label with no free place is left out of the chart (the
    summary table above has every spec)."""
    fig = ax.figure
    fig.canvas.draw()  # the transforms now know the final limits
    placed: list[tuple[float, float, float, float]] = []
    # Offsets in points (1/72 inch); a label is about 4.5 points a character, 8 high at size 7.
    offsets = [(4, 3), (4, -10), (-4, 3), (-4, -10), (4, 12), (4, -19), (-4, 12), (-4, -19), (12, -3), (-12, -3)]
    to_pixels = fig.dpi / 72.0
    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        px, py = ax.transData.transform((x, y))
        width, height = (4.5 * len(text) + 1) * to_pixels, 8 * to_pixels
        for dx, dy in offsets:
            left = px + dx * to_pixels - (width if dx < 0 else 0)
            box = (left, py + dy * to_pixels, left + width, py + dy * to_pixels + height)
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed):
                placed.append(box)
                ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                            ha="right" if dx < 0 else "left", annotation_clip=True)
                break


def _roofline_chart(data: dict[str, Any]) -> str:
    """Achieved bandwidth against arithmetic intensity, every correct variant faint, the
    best of each spec labelled, and the device's peak bandwidth as the roof."""
    roof = data["roofline"]
    fig = _new_figure(9.5, 5.5)
    ax = fig.add_subplot()
    others = [p for p in roof["points"] if not p["best"]]
    best = [p for p in roof["points"] if p["best"]]
    ax.scatter([p["intensity"] for p in others], [p["gbps"] for p in others], s=10, color="#999999", alpha=0.5,
               label="every correct variant")
    ax.scatter([p["intensity"] for p in best], [p["gbps"] for p in best], s=40, color=_BEST, marker="*",
               label="best of each spec", zorder=3)
    xs = [p["intensity"] for p in roof["points"]] or [1.0]
    if roof["peak_gbps"]:
        ax.axhline(roof["peak_gbps"], color=_WRONG, linestyle="--", linewidth=1.2,
                   label=f"peak memory bandwidth {roof['peak_gbps']:.1f} GB/s "
                         f"({'measured' if roof['peak_source'].startswith('measured') else roof['peak_source']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = min(xs), max(xs)
    ax.set_xlim(low / 1.5, high * 2.0 if high > low else low * 3)
    ys = [p["gbps"] for p in roof["points"]] + ([roof["peak_gbps"]] if roof["peak_gbps"] else [])
    if ys:
        ax.set_ylim(min(ys) / 1.5, max(ys) * 2.0)  # room above the roof and right of the points for labels
    _label_points(ax, [(p["intensity"], p["gbps"], str(p["spec"])) for p in best])
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved at least)")
    ax.set_ylabel(f"achieved GB/s ({CLOCK_NAMES[data['rank_by']]} time, {data['mode']})")
    ax.grid(which="both", alpha=0.25)
    # Below the axes, so that it never hides a point.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    ax.set_title("roofline: bytes each spec must move over its time; labels are spec numbers", loc="left",
                 fontsize=10)
    return _svg(fig)


def _esc(text: object) -> str:
    return html.escape(str(text))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _summary_row(report: Report, spec: SpecReport) -> str:
    best = spec.best_row()
    t = best.clocks.get(report.rank_by) if best else None
    speedup = f"{spec.baseline_us / t.median_us:.2f}x" if t and spec.baseline_us else "-"
    cells = [f"<a href='#spec-{spec.index}'>[{spec.index}] {_esc(spec.label)}</a>",
             f"<code>{_esc(state_text(spec))}</code>" if spec.best else _esc(state_text(spec)),
             _fmt(t.median_us if t else None, ".2f"), noise_text(t, ""), str(t.samples) if t else "-",
             _fmt(spec.baseline_us, ".2f"), speedup, _fmt(best.gbps if best else None, ".2f"),
             _fmt(best.pct_peak if best else None, ".1f")]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary td:nth-child(n+3) { text-align: right; font-variant-numeric: tabular-nums; }
section.spec { margin: 1.5em 0; }
svg { max-width: 100%; height: auto; }
.legend span { display: inline-block; margin-right: 1.2em; }
details.raced { margin: 0 0 1em; color: #444; }
details.raced summary { cursor: pointer; }
pre.log { margin: 0.3em 0 0; font-size: 12px; white-space: pre-wrap; color: #444; }
"""


def to_html(report: Report) -> str:
    """The page, as one string; raises MissingExtra without matplotlib."""
    require_plotting()
    data = chart_data(report)
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>metalbench run {report.run_id}: {_esc(report.suite)}</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>metalbench run {report.run_id}: {_esc(report.suite)}</h1>", "<table class='header'>"]
    parts += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in header_rows(report)]
    parts += ["</table>", f"<h2>Best correct variant per spec ({CLOCK_NAMES[report.rank_by]} time, "
              f"{report.mode})</h2>", "<table class='summary'><tr>"]
    parts += [f"<th>{h}</th>" for h in ("spec", "best", _esc(column(report, report.rank_by)), "noise %", "n",
                                        "baseline us", "speedup", "GB/s", "% peak")]
    parts.append("</tr>")
    parts += [_summary_row(report, spec) for spec in report.specs]
    if data["chart"] == "roofline":
        parts += ["</table>", "<h2>Roofline</h2>", "<figure id='roofline'>", _roofline_chart(data), "</figure>"]
    else:
        parts += ["</table>", "<h2>Memory bandwidth</h2>", "<figure id='bandwidth'>", _bandwidth_chart(data),
                  "</figure>"]
    scale = _scale(data)
    parts += ["<h2>Every variant, per spec</h2>",
              f"<p class='legend'><span style='color:{_BEST}'>&#9733; best</span>"
              f"<span style='color:{_TIE}'>&#9679; tie</span><span style='color:{_BASE}'>&#9632; baseline</span>"
              f"<span style='color:{_WRONG}'>&#10005; wrong</span><span style='color:{_OTHER}'>&#9679; other</span>"
              "</p>"]
    for spec in data["specs"]:
        parts.append(f"<section class='spec' id='spec-{spec['index']}'>")
        if spec["variants"]:
            parts.append(_spec_chart(report, spec, scale))
        else:
            why = "not reached: the run stopped first" if spec["state"] == "not reached" else "no variant ran"
            parts.append(f"<h3>[{spec['index']}] {_esc(spec['label'])}</h3><p>({why})</p>")
        if spec["raced"]:
            parts.append(f"<details class='raced'><summary>{len(spec['raced'])} raced out (slower than the best at "
                         "95% confidence in a brief lap)</summary><p>time as a multiple of the lap's fastest: " +
                         ", ".join(f"<code>{_esc(r['variant'])}</code> {ratio_text(r['ratio'])}"
                                   for r in spec["raced"]) + "</p></details>")
        parts.append("</section>")
    parts.append("<h2>Failures</h2>")
    if report.failures:
        parts.append("<table><tr><th>variant</th><th>category</th><th class='num'>count</th><th>specs</th>"
                     "<th>message</th></tr>")
        for f in report.failures:
            first = f.message.splitlines()[0] if f.message else ""
            log = f"<pre class='log'>{_esc(chr(10).join(f.detail))}</pre>" if f.detail else ""
            parts.append(f"<tr><td><code>{_esc(f.variant)}</code></td><td>{_esc(f.category)}</td>"
                         f"<td class='num'>{f.count}</td><td>{_esc(', '.join(f.specs))}</td>"
                         f"<td>{_esc(first)}{log}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None: every variant that ran was correct.</p>")
    # "</" would end the script element early; JSON allows "<\/" for it.
    payload = json.dumps(data).replace("</", "<\\/")
    parts += [f"<script type='application/json' id='metalbench-data'>{payload}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_html(report: Report, path: Path) -> None:
    """Writes to_html(report) to `path`."""
    Path(path).write_text(to_html(report), encoding="utf-8")
