"""`metalbench compare`: the significance test, the pairing, verdicts, exit codes."""

import json

import numpy as np
import pytest
from conftest import cli

from metalbench import compare
from metalbench.results import Result
from metalbench.store import Store

DEVICE = {"name": "Test GPU", "vendor": "Test", "driver": "1.0", "backend": "opencl"}
SPECS = [{"key": "matmul/float16/1x1x64x64/nt", "label": "matmul 1x64x64 nt"},
         {"key": "matmul/float16/1x1x32x32/nt", "label": "matmul 1x32x32 nt"}]


def _stats(ns):
    ns = np.sort(np.asarray(ns, dtype=np.float64))
    return {"count": int(ns.size), "median": float(np.median(ns)), "min": float(ns[0]), "max": float(ns[-1]),
            "ci_lo": float(np.quantile(ns, 0.3)), "ci_hi": float(np.quantile(ns, 0.7)),
            "rel_stdev": float(ns.std() / ns.mean()), "stop": "converged"}


def add_run(store, results, device=DEVICE, seed=0):
    """A run whose results are {(spec index, variant): (status, median ns or None, samples)}."""
    rng = np.random.default_rng(seed)
    run = store.begin_run("test", "opencl", device, {"rank_by": "batch"}, "naive/default", SPECS)
    for (index, variant), (status, median, count) in results.items():
        r = Result(variant, SPECS[index]["key"], status, key=f"{seed}/{index}/{variant}")
        if median is not None:
            ns = np.round(rng.normal(median, median * 0.01, count)).astype(np.uint64)
            r.batch = _stats(ns)
            r.samples = {"batch": ns}
        store.add(run, index, r)
    store.finish_run(run, "complete")
    return run


def test_mann_whitney_u_matches_known_values():
    # Two samples with no overlap: U = 0; the normal approximation with continuity
    # correction gives p = 0.01219 (as tables of the asymptotic test do).
    u, p = compare.mann_whitney_u(np.arange(1.0, 6.0), np.arange(6.0, 11.0))
    assert u == 0 and p == pytest.approx(0.0121858, abs=1e-6)
    assert compare.mann_whitney_u(np.arange(6.0, 11.0), np.arange(1.0, 6.0))[1] == pytest.approx(p)
    # Ties take the mean rank; all equal is no evidence at all.
    assert compare.mann_whitney_u(np.ones(5), np.ones(7)) == (17.5, 1.0)
    u, p = compare.mann_whitney_u(np.array([1.0, 2, 2, 3]), np.array([2.0, 3, 3, 4]))
    assert u == 3.0 and 0.1 < p < 0.5
    rng = np.random.default_rng(1)
    same = [compare.mann_whitney_u(rng.normal(0, 1, 50), rng.normal(0, 1, 50))[1] for _ in range(200)]
    assert 0 < sum(p < 0.05 for p in same) < 25  # about 5% false alarms at the 5% level


def test_slower_faster_noise_and_verdicts(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    a = add_run(store, {(0, "fast/a"): ("ok", 10000, 50), (0, "same/b"): ("ok", 20000, 50),
                        (0, "better/c"): ("ok", 30000, 50), (1, "breaks/d"): ("ok", 5000, 50),
                        (1, "fixed/e"): ("wrong", 6000, 50), (1, "gone/f"): ("ok", 1000, 50),
                        (1, "few/g"): ("ok", 1000, 3), (0, "raced/i"): ("ok", 40000, 50)}, seed=1)
    b = add_run(store, {(0, "fast/a"): ("ok", 11000, 50), (0, "same/b"): ("ok", 20000, 50),
                        (0, "better/c"): ("ok", 24000, 50), (1, "breaks/d"): ("wrong", 5000, 50),
                        (1, "fixed/e"): ("ok", 6000, 50), (1, "timeout/h"): ("timeout", None, 0),
                        (1, "few/g"): ("ok", 1000, 3), (0, "raced/i"): ("raced", 40000, 3)}, seed=2)
    c = compare.compare(store, a, store, b, threshold_pct=5)
    by = {p.variant: p for p in c.pairs}
    assert set(by) == {"fast/a", "same/b", "better/c", "breaks/d", "fixed/e", "few/g", "raced/i"}
    # Raced out in B: verified, briefly timed; no verdict change, and its time compares.
    assert by["raced/i"].verdict == "" and not by["raced/i"].regression and by["raced/i"].b_us is not None
    assert (c.only_a, c.only_b) == (1, 1) and not c.devices_differ
    assert by["fast/a"].outcome == "slower" and by["fast/a"].regression and by["fast/a"].test == "mann-whitney"
    assert by["fast/a"].change_pct == pytest.approx(10, abs=1.5) and by["fast/a"].p_value < compare.ALPHA
    assert by["same/b"].outcome == "same (noise)" and not by["same/b"].regression
    assert by["better/c"].outcome == "faster" and not by["better/c"].regression
    assert by["breaks/d"].verdict == "newly wrong" and by["breaks/d"].regression
    assert by["fixed/e"].verdict == "fixed" and not by["fixed/e"].regression
    assert by["few/g"].test == "ci-overlap"  # 3 samples a side: the intervals decide
    assert {p.variant for p in c.regressions} == {"fast/a", "breaks/d"}
    # A 10% slowdown is no regression past a 20% threshold; the wrong verdict still is.
    assert {p.variant for p in compare.compare(store, a, store, b, 20).regressions} == {"breaks/d"}
    best = {row["label"]: row for row in c.best}
    assert best["matmul 1x64x64 nt"]["best_a"] == "fast/a" and best["matmul 1x64x64 nt"]["best_b"] == "fast/a"


def test_cli_exit_status_gates_on_regressions(tmp_path):
    db = tmp_path / "r.sqlite"
    store = Store(db)
    a = add_run(store, {(0, "v/a"): ("ok", 10000, 40), (0, "v/b"): ("ok", 20000, 40)}, seed=1)
    b = add_run(store, {(0, "v/a"): ("ok", 10000, 40), (0, "v/b"): ("ok", 23000, 40)}, seed=2)
    store.close()
    same = cli("compare", str(a), str(a), "--db", str(db))
    assert same.returncode == 0, same.stderr
    assert "no regression" in same.stdout
    worse = cli("compare", str(a), "latest", "--db", str(db), "--json", str(tmp_path / "c.json"))
    assert worse.returncode == 1, worse.stderr
    assert "v/b" in worse.stdout and "REGRESSION" in worse.stdout and "1 regression past 5%" in worse.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["regressions"] == 1 and data["a"]["run"] == a and data["b"]["run"] == b
    assert cli("compare", str(a), str(b), "--db", str(db), "--threshold", "20").returncode == 0
    bad = cli("compare", "one", str(b), "--db", str(db))
    assert bad.returncode == 2 and "a run is a number or 'latest'" in bad.stderr


def test_two_stores_of_two_devices_compare_by_spec_key(tmp_path):
    m1, m3 = Store(tmp_path / "m1.sqlite"), Store(tmp_path / "m3.sqlite")
    a = add_run(m1, {(0, "v/a"): ("ok", 10000, 40), (1, "v/a"): ("ok", 8000, 40)}, seed=1)
    # The same specs in another order: pairs follow the spec key, not the position.
    m3_specs = list(reversed(SPECS))
    run = m3.begin_run("test", "opencl", {**DEVICE, "name": "Other GPU"}, {"rank_by": "batch"}, None, m3_specs)
    rng = np.random.default_rng(3)
    for index, median in ((0, 4000), (1, 5000)):
        ns = np.round(rng.normal(median, 40, 40)).astype(np.uint64)
        r = Result("v/a", m3_specs[index]["key"], "ok", key=f"m3/{index}", batch=_stats(ns), samples={"batch": ns})
        m3.add(run, index, r)
    m3.finish_run(run, "complete")
    m3.close()
    m1.close()
    c = compare.compare(Store(tmp_path / "m1.sqlite", readonly=True), a, Store(tmp_path / "m3.sqlite", readonly=True),
                        run)
    assert c.devices_differ
    changes = {p.spec_key: p.change_pct for p in c.pairs}
    assert changes[SPECS[0]["key"]] == pytest.approx(-50, abs=2) and changes[SPECS[1]["key"]] == pytest.approx(-50,
                                                                                                               abs=2)
    out = cli("compare", str(a), str(run), "--db", str(tmp_path / "m1.sqlite"), "--db-b", str(tmp_path / "m3.sqlite"))
    assert out.returncode == 0, out.stderr
    assert "devices differ" in out.stdout and "Other GPU" in out.stdout
