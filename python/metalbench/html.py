"""A report as one self-contained HTML page: the header, the best variant per spec, a
roofline chart, one chart per spec of every variant's time with its noise, and the
failures.

Charts are drawn by matplotlib (the optional `plot` extra: `pip install
'metalbench[plot]'`) as static SVG written into the page, so the page needs no
network and no script to show them. The numbers behind the charts are in the page
too, as JSON in `<script type="application/json" id="metalbench-data">`, for anyone who
wants them without parsing SVG.
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
from .report import CLOCK_NAMES, Report, SpecReport, column
from .results import Status

__all__ = ["MissingExtra", "chart_data", "require_plotting", "to_html", "write_html"]

INSTALL_HINT = "pip install 'metalbench[plot]'"
# Colours of the marks, named once so the legend and the marks agree.
_BEST, _TIE, _BASE, _WRONG, _OTHER = "#1a9850", "#91cf60", "#4575b4", "#d73027", "#555555"


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
        specs.append({"index": spec.index, "label": spec.label, "key": spec.key, "best": spec.best,
                      "baseline": report.baseline, "variants": variants,
                      "raced": [{"variant": v, "ratio": ratio} for v, ratio in spec.raced]})
    return {"schema": report.schema, "run": report.run_id, "rank_by": rank, "mode": report.mode, "specs": specs,
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


def _spec_chart(report: Report, spec: dict[str, Any]) -> str:
    """Every variant's median as a dot with its noise (one standard deviation) as a bar,
    fastest at the top; best, ties, baseline and wrong ones coloured."""
    rows = spec["variants"]
    fig = _new_figure(9.5, 0.9 + 0.24 * max(1, len(rows)))
    ax = fig.add_subplot()
    labels, ys = [], []
    for y, v in enumerate(reversed(rows)):
        median, noise = v["median_us"], v["noise"] * v["median_us"]
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
        ax.annotate(f"{median:.2f}", (median, y), xytext=(8, 0), textcoords="offset points", va="center",
                    fontsize=7, color="#333333")
        tags = [t for t in v["tags"] if t in ("best", "tie", "baseline", "bad-rel", "implausible")]
        labels.append(v["variant"] + (f"  [{', '.join(tags)}]" if tags else ""))
        ys.append(y)
    ax.set_yticks(ys, labels, fontsize=8)
    medians = [v["median_us"] for v in rows]
    if medians and min(medians) > 0 and max(medians) / min(medians) > 10:
        ax.set_xscale("log")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"{column(report, report.rank_by)} (median; bar: ±1 standard deviation of the samples)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"[{spec['index']}] {spec['label']}", loc="left", fontsize=10)
    return _svg(fig)


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
    for p in best:
        ax.annotate(str(p["spec"]), (p["intensity"], p["gbps"]), xytext=(4, 3), textcoords="offset points",
                    fontsize=7)
    xs = [p["intensity"] for p in roof["points"]] or [1.0]
    if roof["peak_gbps"]:
        ax.axhline(roof["peak_gbps"], color=_WRONG, linestyle="--", linewidth=1.2,
                   label=f"peak memory bandwidth {roof['peak_gbps']:.1f} GB/s "
                         f"({'measured' if roof['peak_source'].startswith('measured') else roof['peak_source']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = min(xs), max(xs)
    ax.set_xlim(low / 1.5, high * 1.5 if high > low else low * 3)
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
             f"<code>{_esc(spec.best)}</code>" if spec.best else "(none correct)",
             _fmt(t.median_us if t else None, ".2f"), _fmt(100 * t.noise if t else None, ".1f"),
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
    parts += [f"<th>{h}</th>" for h in ("spec", "best", _esc(column(report, report.rank_by)), "noise %",
                                        "baseline us", "speedup", "GB/s", "% peak")]
    parts.append("</tr>")
    parts += [_summary_row(report, spec) for spec in report.specs]
    parts += ["</table>", "<h2>Roofline</h2>", "<figure id='roofline'>", _roofline_chart(data), "</figure>"]
    parts += ["<h2>Every variant, per spec</h2>",
              f"<p class='legend'><span style='color:{_BEST}'>&#9733; best</span>"
              f"<span style='color:{_TIE}'>&#9679; tie</span><span style='color:{_BASE}'>&#9632; baseline</span>"
              f"<span style='color:{_WRONG}'>&#10005; wrong</span><span style='color:{_OTHER}'>&#9679; other</span>"
              "</p>"]
    for spec in data["specs"]:
        parts.append(f"<section class='spec' id='spec-{spec['index']}'>")
        parts.append(_spec_chart(report, spec) if spec["variants"] else
                     f"<h3>[{spec['index']}] {_esc(spec['label'])}</h3><p>(no variant ran)</p>")
        if spec["raced"]:
            parts.append("<p class='raced'>raced out (times the best's, in a brief lap): " +
                         ", ".join(f"<code>{_esc(r['variant'])}</code> {r['ratio']:.1f}x" for r in spec["raced"]) +
                         "</p>")
        parts.append("</section>")
    parts.append("<h2>Failures</h2>")
    if report.failures:
        parts.append("<table><tr><th>variant</th><th>category</th><th class='num'>count</th><th>specs</th>"
                     "<th>message</th></tr>")
        for f in report.failures:
            first = f.message.splitlines()[0] if f.message else ""
            parts.append(f"<tr><td><code>{_esc(f.variant)}</code></td><td>{_esc(f.category)}</td>"
                         f"<td class='num'>{f.count}</td><td>{_esc(', '.join(f.specs))}</td>"
                         f"<td>{_esc(first)}</td></tr>")
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
