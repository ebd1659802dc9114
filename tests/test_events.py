"""What a sweep tells its watcher as it goes (runner.Events): the pair in progress, then its result."""

import dataclasses

from metalbench import runner, variants
from metalbench.settings import Settings
from metalbench.specs import load_suite
from metalbench.store import Store

FAST = Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05)


class Recorded(runner.Events):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def begin(self, spec, variant, worker=0):
        self.seen.append(("begin", spec.key(), variant))

    def lapped(self, spec, lap):
        self.seen.append(("lapped", spec.key(), lap.variant))

    def result(self, spec, result):
        self.seen.append(("result", spec.key(), result.variant, result.status))


def test_every_measured_pair_is_announced_before_its_result(opencl, tmp_path):
    smoke = load_suite("smoke")
    suite = dataclasses.replace(smoke, specs=smoke.specs[:2])
    chosen = runner.with_baseline(variants.load_variants("opencl"), "opencl", ["simdgemv/nt_bn8_*"], specs=suite.specs)
    events = Recorded()
    runner.run(suite, chosen, backend="opencl", store=Store(tmp_path / "r.sqlite"), settings=FAST, events=events)
    results = [(key, variant, status) for kind, key, variant, *status in events.seen if kind == "result"]
    assert any(status == ["raced"] for *_, status in results)
    for key, variant, status in results:  # raced or measured: each was begun first (a full lap begins it again)
        first_result = events.seen.index(("result", key, variant, *status))
        assert ("begin", key, variant) in events.seen[:first_result]
        # a raced pair's brief lap was announced as it ended, before the spec's race was decided
        if status == ["raced"]:
            assert ("lapped", key, variant) in events.seen[:first_result]
    laps = [entry for entry in events.seen if entry[0] == "lapped"]
    assert len(laps) == len(set(laps))  # one lap each
