"""A time faster than memory allows is flagged in every report form and never best (issue 24, section 1)."""

import csv
import io
import json

import pytest
from rich.console import Console

from metalbench import formats, report, roofline, runner
from metalbench.pool import Job, Pair
from metalbench.results import Result, Run
from metalbench.specs import Spec
from metalbench.store import Store

PEAK = 10e9                   # bytes per second
CACHE = 1 << 20
# B alone is 32 MiB: warm, all but the cache's 1 MiB of its inputs come from memory.
SPEC = Spec("matmul", "float16", 1, 1, 4096, 4096, transpose_b=True)
SMALL = Spec("matmul", "float16", 1, 1, 64, 64, transpose_b=True)  # 8 KiB of inputs: fits in the cache


def floor_us(spec, cold):
    return roofline.from_memory(spec, cold, CACHE) / (roofline.PLAUSIBLE_FACTOR * PEAK) * 1e6


def test_the_rule_reads_from_memory_what_the_cache_cannot_hold():
    assert roofline.from_memory(SPEC, True, CACHE) == SPEC.bytes_read()
    assert roofline.from_memory(SPEC, False, CACHE) == SPEC.bytes_read() - CACHE
    assert roofline.from_memory(SMALL, False, CACHE) == 0 and roofline.from_memory(SMALL, True, CACHE) > 0
    least = floor_us(SPEC, False)
    assert roofline.implausible(SPEC, 1.01 * least, PEAK, False, CACHE) == ""
    why = roofline.implausible(SPEC, 0.5 * least, PEAK, False, CACHE)
    assert why.startswith(f"{0.5 * least:.3g} us is less than the {least:.3g} us that reading its")
    # Exempt: warm inputs that fit in the cache; no peak known. Cold, the small spec is not exempt.
    assert roofline.implausible(SMALL, 1e-3, PEAK, False, CACHE) == ""
    assert roofline.implausible(SPEC, 1e-3, None, False, CACHE) == ""
    assert roofline.implausible(SMALL, 1e-3, PEAK, True, CACHE) != ""
    assert roofline.cache_of({"cache_bytes": 5, "llc_bytes": 7}) == 7 and roofline.cache_of({"cache_bytes": 5}) == 5


def stats(us):
    ns = us * 1e3
    return {"count": 10, "median": ns, "min": 0.99 * ns, "max": 1.01 * ns, "ci_lo": 0.995 * ns, "ci_hi": 1.005 * ns,
            "rel_stdev": 0.004, "stop": "converged"}


def result(variant, us, index=0, spec=SPEC):
    return Result(variant=variant, spec_key=spec.key(), status="ok", batch=stats(us), gpu=stats(us), cpu=stats(us),
                  checks={"max_abs": 0.0, "max_rel": 0.0}, spec_index=index, measure={"device": 0})


@pytest.fixture
def cheat_report():
    least = floor_us(SPEC, False)
    run = Run(id=1, started=0.0, finished=1.0, status="complete", suite="s", backend="opencl",
              device={"name": "dev", "vendor": "v", "driver": "d", "cache_bytes": CACHE, "peak_bandwidth": PEAK,
                      "peak_bandwidth_source": "test"},
              settings={"rank_by": "batch", "cold": False, "race": True}, baseline="naive/default",
              specs=[{"key": SPEC.key(), "label": SPEC.label()}, {"key": SMALL.key(), "label": SMALL.label()}],
              results=[result("naive/default", 20 * least), result("honest/a", 2 * least),
                       result("cheat/a", least / 50), result("naive/default", 50, 1, SMALL),
                       result("fast/a", 0.001, 1, SMALL)])
    return report.build(run)


def test_an_implausible_time_is_flagged_and_never_best(cheat_report):
    spec = cheat_report.specs[0]
    assert spec.best == "honest/a" and "cheat/a" not in spec.ties
    cheat = next(r for r in spec.rows if r.variant == "cheat/a")
    assert "implausible" in cheat.tags and "best" not in cheat.tags and cheat.implausible
    # The small spec's inputs fit in the cache: exempt, however fast.
    assert cheat_report.specs[1].best == "fast/a"
    assert "warm: inputs count as in cache up to 1.0 MiB, so 1 of 2 specs are exempt" in cheat_report.plausibility


def test_every_report_form_shows_the_flag(cheat_report):
    console = Console(record=True, width=400)
    report.render(cheat_report, console)
    terminal = console.export_text()
    assert "[implausible]" in terminal and "never best" in terminal
    data = json.loads(json.dumps(report.to_dict(cheat_report)))
    row = next(r for r in data["specs"][0]["rows"] if r["variant"] == "cheat/a")
    assert "implausible" in row["tags"] and row["implausible"] and data["plausibility"]
    rows = list(csv.DictReader(io.StringIO(formats.to_csv(cheat_report))))
    assert "implausible" in next(r for r in rows if r["variant"] == "cheat/a")["tags"]
    markdown = formats.to_markdown(cheat_report)
    assert "[implausible]" in markdown and "never best" in markdown
    pytest.importorskip("matplotlib")
    from metalbench import html

    page = html.to_html(cheat_report)
    assert "implausible" in page and "never best" in page


def test_a_race_never_measures_others_against_an_implausible_time(tmp_path):
    least = floor_us(SPEC, False)
    variants = {name: type("V", (), {"id": name})() for name in ("naive/default", "honest/a", "slow/a", "cheat/a")}
    pairs = [Pair(i, v, f"key{i}", {}) for i, v in enumerate(variants.values())]
    job = Job(0, SPEC, pairs)
    info = {"peak_bandwidth": PEAK, "cache_bytes": CACHE}
    race = runner._Race(runner._Plan([job], len(pairs), {}), runner.Settings(), ["naive/default"], 0.01, info)
    store = Store(tmp_path / "s.sqlite")
    run_id = store.begin_run("s", "opencl", {}, {}, None, [{"key": SPEC.key(), "label": SPEC.label()}])
    times = {"naive/default": 20 * least, "honest/a": 2 * least, "slow/a": 8 * least, "cheat/a": least / 50}
    survivors = []
    for name, us in times.items():
        survivors += race.lap(race.brief(job), result(name, us), store, run_id, runner.Events())
    full = {p.variant.id for j in survivors for p in j.pairs}
    # Against the cheat, every honest variant would have been raced out.
    assert full == {"naive/default", "honest/a", "cheat/a"}
