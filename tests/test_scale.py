"""One sweep shared by several workers, on one device or through Ray: the same verdicts
and counts as one worker, and no pair lost or measured twice when a worker dies."""

import multiprocessing
import os
import signal
from collections import Counter

import pytest
from conftest import Recorder, sweep

from metalbench import backends, runner, worker
from metalbench.ray_pool import ray_available
from metalbench.settings import Settings

PATTERNS = ["gemv/*", "splitk/*", "tiled/*"]


def sweep_smoke(folder, **options):
    """These families on the smoke suite, without racing (every pair measured fully)."""
    return sweep(folder, PATTERNS, race=False, **options)


def verdicts(run):
    return {(r.spec_index, r.variant): r.status for r in run.results}


def assert_no_pair_twice(run):
    twice = [k for k, n in Counter((r.spec_index, r.variant) for r in run.results).items() if n > 1]
    assert not twice, twice


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    from metalbench import _core

    if _core.unavailable_reason("opencl"):
        pytest.skip("no OpenCL device")
    return sweep_smoke(tmp_path_factory.mktemp("one"))


def _same_as_one_worker(run, rep, one_worker):
    one, one_rep = one_worker
    assert_no_pair_twice(run)
    assert verdicts(run) == verdicts(one)
    for count in ("measured", "unsupported", "failed", "wrong"):
        assert rep.counts[count] == one_rep.counts[count], count


def test_two_workers_give_the_verdicts_of_one(one_worker, tmp_path):
    events = Recorder()
    run, rep = sweep_smoke(tmp_path, workers=2, events=events)
    _same_as_one_worker(run, rep, one_worker)
    # PoCL is a CPU device: the run says that a second worker competes with the timed kernel for its cores.
    assert [n for n in events.notes if "2 workers on a CPU device" in n], events.notes
    # Both workers measured, and every result says which device did.
    measured = [r for r in run.results if r.status not in ("unsupported",) and r.measure]
    assert measured and all(r.measure["device"] == 0 for r in measured)


class _KillsAWorker(runner.Events):
    """Kills one worker process (SIGKILL) once a few results are in."""

    def __init__(self, after):
        self.after, self.seen, self.killed = after, 0, None

    def result(self, spec, result):
        self.seen += 1
        if self.seen == self.after and self.killed is None:
            children = multiprocessing.active_children()
            assert children
            self.killed = children[0].pid
            os.kill(self.killed, signal.SIGKILL)


def test_a_worker_killed_mid_sweep_loses_and_repeats_no_pair(one_worker, tmp_path):
    events = _KillsAWorker(after=40)
    run, rep = sweep_smoke(tmp_path, events=events, workers=2)
    assert events.killed is not None
    assert_no_pair_twice(run)
    assert set(verdicts(run)) == set(verdicts(one_worker[0]))
    # The pair the killed worker was on, if any, is stored as crashed; every other verdict stands.
    crashed = [r for r in run.results if r.status == "crashed"]
    assert len(crashed) <= 1 and all("SIGKILL" in r.message for r in crashed)
    differ = {k for k, v in verdicts(run).items() if verdicts(one_worker[0])[k] != v}
    assert differ == {(r.spec_index, r.variant) for r in crashed}


def test_devices_of_different_models_are_refused(monkeypatch):
    infos = [{"index": 0, "vendor": "NVIDIA", "name": "NVIDIA H200", "driver": "13.0"},
             {"index": 1, "vendor": "NVIDIA", "name": "NVIDIA A100", "driver": "13.0"}]
    monkeypatch.setattr(worker._core, "devices", lambda backend: infos)
    with pytest.raises(backends.BackendError, match="not all the same model.*run each model separately"):
        worker.ProcessPool("cuda", [0, 1], Settings(), 60).describe()
    with pytest.raises(backends.BackendError, match="no device 2"):
        worker.ProcessPool("cuda", [0, 2], Settings(), 60).describe()


needs_ray = pytest.mark.skipif(bool(ray_available()), reason=ray_available() or "")


@needs_ray
def test_ray_gives_the_verdicts_of_one_worker(one_worker, tmp_path):
    run, rep = sweep_smoke(tmp_path, ray="local", workers=2)
    _same_as_one_worker(run, rep, one_worker)
