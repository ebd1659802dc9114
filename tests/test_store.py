import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from metalbench.results import Result
from metalbench.store import SCHEMA_VERSION, MissingRun, Store, StoreError


def make(tmp_path):
    return Store(tmp_path / "r.sqlite")


def test_add_find_reuse_and_load(tmp_path):
    s = make(tmp_path)
    run = s.begin_run("smoke", "opencl", {"name": "dev"}, {"max_time": 0.1}, "naive/default",
                      [{"key": "k0", "label": "spec 0"}, {"key": "k1", "label": "spec 1"}])
    rid = s.add(run, 1, Result("gemv/x", "k1", "ok", key="abc", gpu={"median": 1000.0, "count": 5},
                               batch={"median": 900.0, "count": 3}, measure={"batch_size": 8},
                               samples={"batch": np.array([900, 901, 899], dtype=np.uint64)}))
    s.add(run, 0, Result("naive/default", "k0", "unsupported", category="unsupported", message="requires m == 1"))
    assert s.find("abc") == rid
    assert s.find("nope") is None
    s.finish_run(run, "complete")

    run2 = s.begin_run("smoke", "opencl", {"name": "dev"}, {}, None, [])
    s.reuse(run2, 1, rid)
    loaded = s.load_run(run2)
    assert [(r.variant, r.reused, r.spec_index) for r in loaded.results] == [("gemv/x", True, 1)]
    first = s.load_run(run)
    assert first.status == "complete" and first.baseline == "naive/default"
    assert [r.spec_index for r in first.results] == [0, 1]
    got = first.results[1]
    assert got.gpu == {"median": 1000.0, "count": 5} and got.batch["median"] == 900.0
    assert got.measure == {"batch_size": 8}
    np.testing.assert_array_equal(s.samples(rid)["batch"], [900, 901, 899])


def test_results_survive_a_crash_between_commits(tmp_path):
    s = make(tmp_path)
    run = s.begin_run("smoke", "opencl", {}, {}, None, [])
    s.add(run, 0, Result("a/b", "k", "ok", key="one"))
    # Another connection sees the committed row without the first ever closing.
    other = sqlite3.connect(tmp_path / "r.sqlite")
    assert other.execute("SELECT count(*) FROM results WHERE key='one'").fetchone()[0] == 1


def test_not_a_store(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="bad.sqlite.*damaged"):
        Store(bad)


def test_missing_run_and_missing_store(tmp_path):
    with pytest.raises(MissingRun, match="no run 42"):
        make(tmp_path).load_run(42)
    with pytest.raises(MissingRun, match="no store here"):
        Store(tmp_path / "nowhere.sqlite", readonly=True)


def test_a_version_1_store_is_upgraded_to_3_and_its_results_kept(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE runs (id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, status TEXT NOT NULL,
          suite TEXT NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, settings TEXT NOT NULL, baseline TEXT,
          specs TEXT NOT NULL);
        CREATE TABLE results (id INTEGER PRIMARY KEY, key TEXT, created REAL NOT NULL, variant TEXT NOT NULL,
          spec_key TEXT NOT NULL, status TEXT NOT NULL, category TEXT NOT NULL, message TEXT NOT NULL,
          log TEXT NOT NULL, gpu TEXT, cpu TEXT, checks TEXT, detail TEXT NOT NULL);
        CREATE TABLE run_results (run_id INTEGER NOT NULL, result_id INTEGER NOT NULL, spec_index INTEGER NOT NULL,
          reused INTEGER NOT NULL, PRIMARY KEY (run_id, result_id, spec_index));
        INSERT INTO runs VALUES (1, 0, 1, 'complete', 'smoke', 'opencl', '{"name": "dev"}', '{}', NULL, '[]');
        INSERT INTO runs VALUES (2, 0, NULL, 'running', 'smoke', 'opencl', '{"name": "dev"}', '{}', NULL, '[]');
        INSERT INTO results VALUES (1, 'k', 0, 'a/b', 's', 'ok', '', '', '', '{"median": 5.0, "count": 1}', NULL,
          NULL, '{}');
        INSERT INTO run_results VALUES (1, 1, 0, 0);
    """)
    db.close()
    # Read-only, it is read as it is.
    old = Store(path, readonly=True)
    assert old.version == 1 and old.load_run(1).results[0].gpu["median"] == 5.0 and old.samples(1) == {}
    assert old.peak("opencl|dev") is None  # no peaks table before version 3
    old.close()
    s = Store(path)
    assert s.version == SCHEMA_VERSION
    assert s.load_run(1).results[0].batch is None
    # Version 3's table is there after the upgrade, and readable read-only too.
    s.put_peak("opencl|dev", 2.5e10, "measured: test")
    assert s.peak("opencl|dev") == (2.5e10, "measured: test")
    assert Store(path, readonly=True).peak("opencl|dev") == (2.5e10, "measured: test")
    # A version 1 run left 'running' has no process to ask about: it is abandoned.
    assert s.abandon_dead_runs() == [2]
    assert s.load_run(2).status == "abandoned"


def test_a_run_whose_process_is_gone_is_abandoned_and_a_live_one_is_not(tmp_path):
    s = make(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = s.begin_run("smoke", "opencl", {}, {}, None, [])
    live = s.begin_run("smoke", "opencl", {}, {}, None, [])
    s._db.execute("UPDATE runs SET pid=? WHERE id=?", (int(gone.stdout), dead))
    s._db.execute("UPDATE runs SET pid=? WHERE id=?", (os.getppid(), live))
    assert s.abandon_dead_runs() == [dead]
    assert s.load_run(dead).status == "abandoned" and s.load_run(live).status == "running"


def test_a_full_disk_is_one_clear_error_and_keeps_what_was_stored(tmp_path):
    s = make(tmp_path)
    run = s.begin_run("smoke", "opencl", {}, {}, None, [])
    s.add(run, 0, Result("a/b", "k", "ok", key="first"))
    # SQLite reports a store at its page limit exactly as a full disk.
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreError, match=r"r\.sqlite: cannot write .*disk is full.*results stored so far are kept"):
        for i in range(1000):
            s.add(run, 0, Result("a/b", "k", "ok", key=f"k{i}", log="x" * 10000))
    assert Store(tmp_path / "r.sqlite", readonly=True).find("first") is not None


def test_read_only_opening_never_writes(tmp_path):
    s = make(tmp_path)
    run = s.begin_run("smoke", "opencl", {}, {}, None, [])
    s.add(run, 0, Result("a/b", "k", "ok", key="one"))
    s.close()
    path = tmp_path / "r.sqlite"
    before = path.read_bytes()
    ro = Store(path, readonly=True)
    assert ro.load_run(run).results[0].key == "one"
    with pytest.raises(StoreError, match="read-only"):
        ro.begin_run("smoke", "opencl", {}, {}, None, [])
    assert path.read_bytes() == before


def test_a_version_2_store_reads_without_peaks_and_upgrades_to_3(tmp_path):
    s = make(tmp_path)
    run = s.begin_run("smoke", "opencl", {}, {}, None, [])
    s.add(run, 0, Result("a/b", "k", "ok", key="one", batch={"median": 7.0, "count": 1}))
    # Make it a version 2 store: no peaks table, schema 2.
    s._db.execute("DROP TABLE peaks")
    s._db.execute("UPDATE meta SET value='2' WHERE name='schema'")
    s.close()
    path = tmp_path / "r.sqlite"
    old = Store(path, readonly=True)
    assert old.version == 2 and old.peak("any") is None and old.load_run(run).results[0].batch["median"] == 7.0
    old.close()
    new = Store(path)
    assert new.version == SCHEMA_VERSION and new.peak("any") is None and new.cache("any") is None
    assert new.load_run(run).results[0].key == "one"


def test_a_version_3_store_upgrades_to_4_with_a_table_of_caches(tmp_path):
    s = make(tmp_path)
    s.put_peak("opencl|dev", 2.5e10, "measured: test")
    s._db.execute("DROP TABLE caches")
    s._db.execute("UPDATE meta SET value='3' WHERE name='schema'")
    s.close()
    path = tmp_path / "r.sqlite"
    old = Store(path, readonly=True)
    assert old.version == 3 and old.cache("opencl|dev") is None and old.peak("opencl|dev") == (2.5e10, "measured: test")
    old.close()
    new = Store(path)
    assert new.version == SCHEMA_VERSION and new.cache("opencl|dev") is None
    new.put_cache("opencl|dev", 8 << 20, "measured: test", [(1 << 20, 3e10), (1 << 29, 1e10)])
    assert Store(path, readonly=True).cache("opencl|dev") == (8 << 20, "measured: test")


def test_a_version_4_store_upgrades_to_5_and_its_figures_are_an_earlier_probes(tmp_path):
    s = make(tmp_path)
    s.put_peak("opencl|dev", 2.5e10, "measured: old probe")
    s.put_cache("opencl|dev", 4 << 20, "measured: old probe", [(1 << 20, 3e10)])
    for table in ("peaks", "caches"):
        s._db.execute(f"ALTER TABLE {table} DROP COLUMN method")
    s._db.execute("UPDATE meta SET value='4' WHERE name='schema'")
    s.close()
    path = tmp_path / "r.sqlite"
    old = Store(path, readonly=True)
    assert old.version == 4 and old.cache("opencl|dev") == (4 << 20, "measured: old probe")
    assert old.cache("opencl|dev", "abc") is None and old.peak("opencl|dev", "abc") is None
    old.close()
    new = Store(path)
    assert new.version == SCHEMA_VERSION == 5
    # Kept, for reports of the runs that used them; but no version of the probe claims them.
    assert new.peak("opencl|dev") == (2.5e10, "measured: old probe") and new.peak("opencl|dev", "abc") is None
    assert new.cache("opencl|dev") == (4 << 20, "measured: old probe") and new.cache("opencl|dev", "abc") is None
    new.put_cache("opencl|dev", 64 << 20, "measured: new probe", [(1 << 20, 3e10)], method="abc")
    new.put_peak("opencl|dev", 3.0e10, "measured: new probe", method="abc")
    assert new.cache("opencl|dev", "abc") == (64 << 20, "measured: new probe")
    assert new.peak("opencl|dev", "abc") == (3.0e10, "measured: new probe")
    assert new.cache("opencl|dev", "another") is None and new.peak("opencl|dev", "another") is None
