"""What makes a race's brief lap cheaper without changing what it decides (issue 21, section 2):
a slow kernel's verified launch stands for its warm-up, a hopeless one is not timed, and
a worker takes a job's pairs in its own order."""

from metalbench import runner, variants
from metalbench.measure import Worker
from metalbench.pool import Job, Pair
from metalbench.results import Result
from metalbench.settings import Settings
from metalbench.specs import Spec
from metalbench.store import Store

BRIEF = Settings(warmup=3, min_samples=5, max_samples=50, max_time=0.025, max_noise=1.0, min_time=0.0,
                 batch_time=1e-4)
# The naive kernel takes milliseconds a launch on PoCL here: slow enough for both shortcuts.
SLOW = Spec("matmul", "float16", 1, 1, 8192, 4096, transpose_b=True)


def naive_on(worker, spec, settings, **kw):
    naive = next(v for v in variants.load_variants("opencl") if v.id == "naive/default")
    groups, threads = naive.geometry(spec)
    prepared = worker.prepare(spec, settings, seed=5)
    return worker.measure(prepared, naive, "k", {"groups": groups, "threads": threads, "workspace": 1}, settings,
                          **kw)


def test_a_slow_kernel_launched_before_skips_its_warm_up_in_a_brief_lap(opencl):
    worker = Worker("opencl", 0)
    first = naive_on(worker, SLOW, BRIEF, full=False)
    assert first.status == "ok" and first.measure["warmup"] >= 1  # its first launch compiled it: warm-up kept
    again = naive_on(worker, SLOW, BRIEF, full=False)
    assert again.status == "ok" and again.measure["warmup"] == 0 and again.batch["count"] >= 1
    assert again.gpu is None and again.cpu is None  # a brief lap times the ranking clock alone


def test_a_hopeless_kernel_is_verified_not_timed_and_raced_out_by_its_round_trip(opencl, tmp_path):
    worker = Worker("opencl", 0)
    naive_on(worker, SLOW, BRIEF, full=False)  # launched once: its next round trip is its time
    hopeless = naive_on(worker, SLOW, BRIEF, full=False, race_bar=1e-5)
    assert hopeless.status == "ok" and hopeless.batch is None and hopeless.checks["bad"] == 0
    gave_up = hopeless.measure["hopeless"]
    assert gave_up["round_trip_ns"] > 4 * gave_up["bar_ns"] and hopeless.measure["verified"]["launches"] == 1
    # Never for a full measurement, nor without a bar.
    assert "hopeless" not in naive_on(worker, SLOW, BRIEF, full=True, race_bar=1e-5).measure
    assert "hopeless" not in naive_on(worker, SLOW, BRIEF, full=False).measure
    # The race puts it out by its round trip, against the fastest brief time.
    fast = Result("fast/a", SLOW.key(), "ok", batch={"count": 5, "median": 1e3, "min": 990, "max": 1010,
                                                      "ci_lo": 995, "ci_hi": 1005})
    slow = Result("naive/x", SLOW.key(), "ok", measure=hopeless.measure)
    pairs = [Pair(i, type("V", (), {"id": name})(), f"k{i}", {}) for i, name in enumerate(("fast/a", "naive/x"))]
    job = Job(0, SLOW, pairs)
    race = runner._Race(runner._Plan([job], 2, {}), Settings(), ["naive/default"], 0.01, {})
    store = Store(tmp_path / "s.sqlite")
    run_id = store.begin_run("s", "opencl", {}, {}, None, [{"key": SLOW.key(), "label": SLOW.label()}])
    assert race.lap(race.brief(job), fast, store, run_id, runner.Events()) == []
    full = race.lap(race.brief(job), slow, store, run_id, runner.Events())
    assert [p.variant.id for j in full for p in j.pairs] == ["fast/a"]
    raced = [r for r in store.load_run(run_id).results if r.variant == "naive/x"]
    assert raced[0].status == "raced" and "by the round trip of the launch it was verified by" in raced[0].message
