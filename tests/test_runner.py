"""The sweep on real kernels, compiled and run by PoCL."""

import re

import pytest
from conftest import Recorder, sweep, write_family

from metalbench import variants
from metalbench.paths import cache_dir
from metalbench.results import LAP_STEPS
from metalbench.store import Store


def test_every_builtin_family_verifies_on_the_smoke_suite(opencl, tmp_path):
    _, rep = sweep(tmp_path, race=False)
    assert rep.counts["failed"] == 0, rep.failures
    assert rep.counts["wrong"] == 0, rep.failures
    measured_families = {row.variant.split("/")[0] for s in rep.specs for row in s.rows}
    # Quantized families take only quantized specs, which smoke has none of
    # (tests/test_quant_families.py verifies them).
    every_family = {f.name for f in variants.load_families() if "opencl" in f.backends and not f.quant}
    assert measured_families == every_family
    for spec in rep.specs:
        assert spec.best is not None and spec.best in spec.ties
        assert any("baseline" in row.tags for row in spec.rows)
        for row in spec.rows:
            assert all(row.us(clock) > 0 for clock in ("batch", "gpu", "cpu"))
            assert row.max_abs is not None


def test_a_wrong_kernel_is_flagged_and_never_best(opencl, tmp_path):
    # Writes zeros without reading anything: the fastest kernel there is, and wrong.
    kernels = write_family(tmp_path / "k", "zeros", """\
        MB_KERNEL(zeros) {
          int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
          if (j < p.n) STORE(c, C_AT(GROUP_ID(2), GROUP_ID(1), j), 0.0f);
        }
        """)
    _, rep = sweep(tmp_path, ["zeros/*"], kernels=[kernels])
    rows = [row for s in rep.specs for row in s.rows if row.variant == "zeros/tg64"]
    assert rows and all(row.status == "wrong" and "bad-rel" in row.tags for row in rows)
    assert all(not {"best", "tie"} & set(row.tags) for row in rows)
    assert all(s.best == "naive/default" for s in rep.specs)
    assert rep.counts["wrong"] == len(rows)
    assert any(f.variant == "zeros/tg64" and f.category == "wrong" for f in rep.failures)


def test_elements_never_written_are_caught(opencl, tmp_path):
    kernels = write_family(tmp_path / "k", "skiplast", """\
        MB_KERNEL(skiplast) {
          int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
          int i = GROUP_ID(1), bi = GROUP_ID(2);
          if (j >= p.n - 1) return;
          float acc = 0.0f;
          for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
          MB_STORE_C(C_AT(bi, i, j), j, acc);
        }
        """, extra='requires = ["op == \'matmul\'"]')
    run, _ = sweep(tmp_path, ["skiplast/*"], kernels=[kernels])
    bad = [r for r in run.results if r.variant == "skiplast/tg64" and r.status == "wrong"]
    assert bad
    for r in bad:
        assert r.checks["unwritten"] > 0
        assert "never written" in r.message


def test_a_compile_error_is_reported_with_its_log_and_the_sweep_goes_on(opencl, tmp_path):
    kernels = write_family(tmp_path / "k", "broken", """\
        MB_KERNEL(broken) {
          float acc = 0.0f
          STORE(c, 0, acc);
        }
        """)
    _, rep = sweep(tmp_path, ["broken/*"], kernels=[kernels])
    failure = next(f for f in rep.failures if f.variant == "broken/tg64")
    assert failure.category == "compile"
    assert "broken/tg64" in failure.message
    # The #line directive makes the compiler name the body's own file and line
    # (2 for fp16; for fp32 the missing ';' only shows on line 3).
    assert all(re.search(r"broken\.c:[23]:", log) for log in failure.logs)
    assert all(s.best == "naive/default" for s in rep.specs)
    assert rep.counts["failed"] == len(rep.specs)


def test_a_rerun_reuses_every_result_and_force_measures_again(opencl, tmp_path):
    _, first = sweep(tmp_path, ["naive/*"])
    assert first.counts["reused"] == 0 and first.counts["measured"] > 0
    _, second = sweep(tmp_path, ["naive/*"])
    assert second.counts["measured"] == 0
    assert second.counts["reused"] == first.counts["measured"]
    assert [s.best for s in second.specs] == [s.best for s in first.specs]
    _, forced = sweep(tmp_path, ["naive/*"], force=True)
    assert forced.counts["reused"] == 0 and forced.counts["measured"] == first.counts["measured"]


def test_a_damaged_reference_is_recomputed_and_reported(opencl, tmp_path):
    sweep(tmp_path, ["naive/*"])
    entries = [p for p in (cache_dir() / "references").rglob("*") if p.is_file()]
    assert entries
    for p in entries:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    events = Recorder()
    _, rep = sweep(tmp_path, ["naive/*"], force=True, events=events)
    assert len(events.notes) == len(entries)
    assert all("recomputed" in n for n in events.notes)
    assert rep.counts["wrong"] == 0 and rep.counts["failed"] == 0


def test_an_interrupted_sweep_keeps_what_it_stored(opencl, tmp_path):
    events = Recorder(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, ["naive/*"], events=events)
    store = Store(tmp_path / "results.sqlite")
    interrupted = store.load_run(store.latest_run())
    assert interrupted.status == "interrupted"
    assert len([r for r in interrupted.results if r.status == "ok"]) == 3
    _, rep = sweep(tmp_path, ["naive/*"])
    assert rep.counts["reused"] == 3


def test_racing_measures_fully_only_what_may_tie_with_the_fastest(opencl, tmp_path):
    patterns = ["gemv/*", "naive/*"]
    run, rep = sweep(tmp_path, patterns)
    raced = [r for r in run.results if r.status == "raced"]
    # naive is many times slower than gemv on every m = 1 spec it shares with it.
    assert raced and rep.counts["raced"] == len(raced)
    for r in raced:
        race = r.measure["race"]
        assert race["ratio"] > 1 and race["confidence"] == 0.95 and r.message.startswith("raced out:")
        assert r.variant != run.baseline  # the baseline is always measured fully
    for spec in rep.specs:
        assert spec.best not in {v for v, _ in spec.raced}
    # Each lap records its steps' seconds under the names eta.py and first_run.py add up.
    laps: dict[str, set[str]] = {"brief": set(), "full": set()}
    for r in run.results:
        if r.status in ("ok", "raced"):
            laps[r.measure["lap"]] |= set(r.measure["seconds"])
    for keys in laps.values():
        assert set(LAP_STEPS) <= keys <= {*LAP_STEPS, "first_launch", "build", "build_wall", "prepare"}
    # A rerun reuses the race's verdicts; without racing, the raced-out ones are measured fully.
    _, again = sweep(tmp_path, patterns)
    assert again.counts["measured"] == 0
    full, _ = sweep(tmp_path, patterns, race=False)
    assert not any(r.status == "raced" for r in full.results)
    assert sum(1 for r in full.results if not r.reused and r.status == "ok") == len(raced)
