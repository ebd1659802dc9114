"""A compile that hangs, or that takes its worker down, costs that variant alone (issue 24, section 2).

Each build is a step of its own with its own deadline (worker.py): the parent knows which
builds are under way, blames the one that overran or that was under way when the worker
died (status timeout or crashed, category compile, a message naming the compile), and
never stores that failure under another pair's key. The faults are planted in the build
itself through the test-only METALBENCH_TEST_BUILD_FAULT (measure._planted_build_fault):
a compiler that never returns, and one the system kills, as it kills one that exhausts
memory.
"""

import pytest
from conftest import FAST, FAULT_SUITE, write_family

from metalbench import report, runner, variants
from metalbench.specs import load_suite
from metalbench.store import Store

NAMES = ("bad", "fine1", "fine2", "fine3")
# A correct kernel, one thread per output: the fault is in its build, not in it.
BODY = """\
MB_KERNEL({name}) {{
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
  if (j >= p.n) return;
  float acc = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
  MB_STORE_C(C_AT(bi, i, j), j, acc);
}}
"""


def sweep(tmp_path, workers=1, timeout=60.0, race=True):
    folder = tmp_path / "k"
    for name in NAMES:
        write_family(folder, name, BODY.format(name=name))
    store = Store(tmp_path / "results.sqlite")
    suite = load_suite(FAULT_SUITE)
    chosen = runner.with_baseline(variants.load_variants("opencl", [folder]), "opencl", [f"{n}/*" for n in NAMES],
                                  specs=suite.specs)
    run_id = runner.run(suite, chosen, backend="opencl", store=store, settings=FAST,
                        timeout=timeout, workers=workers, race=race)
    run = store.load_run(run_id)
    return run, report.build(run)


def measured(run):
    return [r for r in run.results if r.status != "unsupported"]


@pytest.mark.parametrize("workers", [1, 3])
def test_a_hung_compile_costs_its_variant_alone(opencl, tmp_path, monkeypatch, workers):
    monkeypatch.setenv("METALBENCH_TEST_BUILD_FAULT", "bad/tg64=hang")
    run, rep = sweep(tmp_path, workers=workers, timeout=4)
    bad = [r for r in measured(run) if r.variant == "bad/tg64"]
    assert [r.status for r in bad] == ["timeout", "timeout"]
    for r in bad:
        assert r.category == "compile" and r.message.startswith("compiling bad/tg64 took longer than 4 s"), r.message
    others = [r for r in measured(run) if r.variant != "bad/tg64"]
    assert others and all(r.status in ("ok", "raced") for r in others), [(r.variant, r.message) for r in others]
    assert all(s.best is not None for s in rep.specs)


def test_a_compile_that_kills_its_worker_is_named_and_costs_its_variant_alone(opencl, tmp_path, monkeypatch):
    monkeypatch.setenv("METALBENCH_TEST_BUILD_FAULT", "bad/tg64=kill")
    run, rep = sweep(tmp_path)
    bad = [r for r in measured(run) if r.variant == "bad/tg64"]
    assert [r.status for r in bad] == ["crashed", "crashed"]
    for r in bad:
        assert r.category == "compile" and r.message == "its worker was killed by SIGKILL (signal 9) while compiling " \
            "bad/tg64", r.message
    others = [r for r in measured(run) if r.variant != "bad/tg64"]
    assert others and all(r.status in ("ok", "raced") for r in others), [(r.variant, r.message) for r in others]
    # The failure sticks to its own key only: a run without the fault reuses it, and nothing else failed.
    monkeypatch.delenv("METALBENCH_TEST_BUILD_FAULT")
    again, rep2 = sweep(tmp_path)
    assert [r.status for r in measured(again) if r.variant == "bad/tg64"] == ["crashed", "crashed"]
    assert rep2.counts["crashed"] == 2 and rep2.counts["failed"] == 0 and rep2.counts["timeout"] == 0
