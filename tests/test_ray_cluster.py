"""Ray past one host: a 2-node cluster on this machine (loopback only, Ray's own
cluster_utils.Cluster), one node removed mid-sweep, and every pair measured once."""

from collections import Counter

import pytest

from metalbench import runner, variants
from metalbench.ray_pool import RayPool, ray_available, reachable
from metalbench.settings import Settings
from metalbench.specs import load_suite
from metalbench.store import Store

FAST = Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05)
needs_ray = pytest.mark.skipif(bool(ray_available()), reason=ray_available() or "")


def test_an_address_where_nothing_listens_is_one_line_at_once():
    from metalbench.backends import BackendError

    with pytest.raises(BackendError, match=r"--ray 127.0.0.1:1: nothing answers there"):
        reachable("127.0.0.1:1")
    reachable("auto")  # no port: left to Ray


@needs_ray
def test_ray_at_a_closed_port_fails_within_seconds(tmp_path):
    import time

    from metalbench.backends import BackendError

    started = time.monotonic()
    with pytest.raises(BackendError, match="nothing answers there"):
        RayPool("opencl", FAST, 60, "127.0.0.1:1", 1).describe()
    assert time.monotonic() - started < 30


class _RemoveNode(runner.Events):
    """Removes `node` from `cluster` once `after` pairs are done."""

    def __init__(self, cluster, node, after):
        self.cluster, self.node, self.after = cluster, node, after
        self.done, self.removed, self.notes = 0, False, []

    def result(self, spec, result):
        self.done += 1
        if self.done == self.after and not self.removed:
            self.cluster.remove_node(self.node)
            self.removed = True

    def note(self, message):
        self.notes.append(message)


@pytest.mark.slow
@needs_ray
def test_a_node_leaving_mid_sweep_loses_no_pair(opencl, tmp_path, monkeypatch):
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Loopback only: Ray would otherwise turn 127.0.0.1 into this machine's network address
    # (what its "cluster" mode does; the setting is read at import, and ray is imported already).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    node = cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    suite = load_suite("smoke")
    chosen = runner.with_baseline(variants.load_variants("opencl"), "opencl", ["gemv/*"], specs=suite.specs)
    events = _RemoveNode(cluster, node, after=12)
    store = Store(tmp_path / "r.sqlite")
    try:
        run_id = runner.run(suite, chosen, backend="opencl", store=store, settings=FAST, race=False,
                            ray=cluster.address, workers=2, events=events)
    finally:
        ray.shutdown()
        cluster.shutdown()
    run = store.load_run(run_id)
    assert events.removed and run.status == "complete"
    pairs = Counter((r.spec_index, r.variant) for r in run.results)
    assert all(n == 1 for n in pairs.values()), [k for k, n in pairs.items() if n > 1]
    assert set(pairs) == {(i, v.id) for i in range(len(suite.specs)) for v in chosen}  # nothing lost
    statuses = Counter(str(r.status) for r in run.results)
    assert set(statuses) <= {"ok", "unsupported"}, (statuses, events.notes,
                                                    [r.message for r in run.results if r.status == "crashed"])
