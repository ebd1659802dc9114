import sqlite3

import pytest

from metalbench.store import Result, Store, StoreError


def make(tmp_path):
    return Store(tmp_path / "r.sqlite")


def test_add_find_reuse_and_load(tmp_path):
    s = make(tmp_path)
    run = s.begin_run("smoke", "opencl", {"name": "dev"}, {"iterations": 5}, "naive/default",
                      [{"key": "k0", "label": "spec 0"}, {"key": "k1", "label": "spec 1"}])
    rid = s.add(run, 1, Result("gemv/x", "k1", "ok", key="abc", gpu={"median": 1000.0, "count": 5}))
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
    assert first.results[1].gpu == {"median": 1000.0, "count": 5}


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
    with pytest.raises(StoreError, match="bad.sqlite"):
        Store(bad)


def test_missing_run(tmp_path):
    with pytest.raises(StoreError, match="no run 42"):
        make(tmp_path).load_run(42)
