"""The time a sweep has left (eta.py): its plan's remaining work, costed by its results' seconds."""

import pytest

from metalbench.eta import Eta
from metalbench.results import Result
from metalbench.runner import Planned
from metalbench.specs import Spec

SMALL = Spec("matmul", "float16", 1, 1, 64, 64, transpose_b=True)
SMALL_NN = Spec("matmul", "float16", 1, 1, 64, 64)  # another spec of the same size
MID = Spec("matmul", "float16", 1, 1, 2048, 2048, transpose_b=True)
BIG = Spec("matmul", "float16", 1, 1, 65536, 4096, transpose_b=True)
HUGE = Spec("matmul", "float16", 1, 1, 262144, 4096, transpose_b=True)


def timed(spec: Spec, variant: str, steps: float, status: str = "raced", lap: str = "brief", **more: float) -> Result:
    """A result that recorded `steps` seconds of its pair's steps, plus `more` (build, first_launch,
    prepare); a first launch is a part of verify, as measure.Worker records it."""
    verify = steps + more.get("first_launch", 0.0)
    return Result(variant, spec.key(), status, measure={"lap": lap, "seconds": {"verify": verify, "time": 0.0,
                                                                                "check": 0.0, **more}})


def test_a_kernels_first_use_is_costed_once_and_not_for_every_pair():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1", "v/2", "v/3")), Planned(SMALL_NN, ("v/0", "v/1", "v/2", "v/3", "v/4"))])
    # The first spec's preparation (0.2 s) and its kernels' builds (0.5 s each) come before
    # its first pair; then each pair takes 0.1 s and its kernel's first launch 1 s.
    for i in range(4):
        eta.result(SMALL, timed(SMALL, f"v/{i}", 0.1, build=0.5, first_launch=1.0, prepare=0.2), now=2.2 + 1.1 * i)
    # The second spec: its 5 pairs at 0.1 s, its preparation and one new kernel (v/4), not
    # 5 pairs at the 1.6 s a pair of the first spec took.
    assert eta.left(6.6) == pytest.approx(5 * 0.1 + 0.2 + 1.5)


def test_builds_are_costed_by_their_share_of_the_build_steps_wall_time():
    # Four kernels built side by side, 8 s of compiler each in 2 s of wall: the next spec's
    # four new kernels will take 2 s more, not 32 (a CUDA sweep builds 16 at a time).
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1", "v/2", "v/3")), Planned(SMALL_NN, ("w/0", "w/1", "w/2", "w/3"))])
    for i in range(4):
        eta.result(SMALL, timed(SMALL, f"v/{i}", 0.1, build=8.0, build_wall=0.5), now=2.1 + 0.1 * i)
    assert eta.left(2.4) == pytest.approx(4 * 0.1 + 4 * 0.5)


def test_a_spec_not_yet_measured_is_costed_by_the_sizes_either_side_and_held_beyond_them():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/a",)), Planned(BIG, ("v/a",)), Planned(MID, ("v/a",))])
    eta.result(SMALL, timed(SMALL, "v/a", 0.1), now=0.1)
    eta.result(BIG, timed(BIG, "v/a", 1.0), now=1.1)
    mid = eta.left(1.1)
    assert 0.1 < mid < 1.0
    more = Eta()
    more.start(0.0)
    more.plan([Planned(SMALL, ("v/a",)), Planned(BIG, ("v/a",)), Planned(HUGE, ("v/a",))])
    more.result(SMALL, timed(SMALL, "v/a", 0.1), now=0.1)
    more.result(BIG, timed(BIG, "v/a", 1.0), now=1.1)
    assert more.left(1.1) == pytest.approx(1.0)  # the largest size seen, not a slope carried past it


def test_the_estimate_counts_down_between_results_but_not_below_the_specs_not_begun():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1", "v/2", "v/3")), Planned(SMALL_NN, ("v/0", "v/1", "v/2", "v/3"))])
    eta.result(SMALL, timed(SMALL, "v/0", 1.0), now=1.0)
    eta.result(SMALL, timed(SMALL, "v/1", 1.0), now=2.0)
    assert eta.left(2.0) == pytest.approx(2 + 4)
    assert eta.left(3.0) == pytest.approx(1 + 4)
    assert eta.left(10.0) == pytest.approx(4)  # the first spec overran; the second has not begun
    eta.begin(SMALL_NN, "v/0")
    assert eta.left(10.0) == pytest.approx(0)


def test_the_wall_time_before_the_first_record_does_not_count():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1", "v/2")), Planned(SMALL_NN, ("v/0", "v/1", "v/2"))])
    # The workers started and built every kernel of the first spec in 30 s; its laps then
    # record their kernels' builds one by one.
    eta.lap(SMALL, timed(SMALL, "v/0", 1.0, "ok", build=9.0), now=31.0)
    # 2.5 pairs of the first spec and 3 of the second, of 1 s each; every kernel is built
    # (the second spec's are the first's), and none has a first launch recorded: one wall
    # second a recorded second until a second moment.
    assert eta.left(31.0) == pytest.approx(2.5 * 1.0 + 3 * 1.0)
    eta.lap(SMALL, timed(SMALL, "v/1", 1.0, "ok", build=9.0), now=32.0)
    eta.lap(SMALL, timed(SMALL, "v/2", 1.0, "ok", build=9.0), now=33.0)
    # 20 s recorded since the first lap, 2 s of them spent since: the builds were done before it.
    assert eta.left(33.0) == pytest.approx(1.5 * 1.0 + 3 * 1.0)


def test_workers_in_parallel_shorten_the_wall_time_of_the_work_left():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1", "v/2", "v/3")), Planned(SMALL_NN, ("v/0", "v/1", "v/2", "v/3"))])
    for i in range(4):  # 2 s recorded each, a wall second apart: two workers side by side
        eta.result(SMALL, timed(SMALL, f"v/{i}", 2.0), now=1.0 + i)
    assert eta.left(4.0) == pytest.approx(4 * 2.0 / 2)


def test_no_estimate_before_the_sweep_has_recorded_work_and_reused_results_record_none():
    eta = Eta()
    eta.result(SMALL, timed(SMALL, "v/0", 5.0), now=0.0)  # before the start: planning's
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/1", "v/2"))])
    assert eta.left(1.0) is None
    reused = timed(SMALL, "v/1", 5.0)
    reused.reused = True
    eta.result(SMALL, reused, now=1.0)
    eta.result(SMALL, Result("v/1", SMALL.key(), "failed"), now=2.0)  # no seconds of its own
    assert eta.left(2.0) is None
    eta.result(SMALL, timed(SMALL, "v/2", 1.0), now=3.0)
    assert eta.left(3.0) == pytest.approx(0)  # every planned pair is in


def test_a_lap_counts_its_seconds_at_once_and_its_raced_result_not_again():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1")), Planned(SMALL_NN, ("v/0", "v/1"))])
    eta.lap(SMALL, timed(SMALL, "v/0", 1.0, "ok"), now=1.0)
    assert eta.left(1.0) == pytest.approx(1.5 * 1.0 + 2 * 1.0)  # the first lap is an estimate already
    eta.lap(SMALL, timed(SMALL, "v/1", 1.0, "ok"), now=2.0)
    eta.result(SMALL, timed(SMALL, "v/0", 1.0), now=2.0)  # raced out: the lap's own seconds
    eta.result(SMALL, timed(SMALL, "v/1", 3.0, "ok", lap="full"), now=5.0)  # went on: a full lap of its own
    assert eta.recorded == pytest.approx(5.0)
    # A pair of this size costs 2.5 s (two laps and one full lap over two pairs), a wall second a second.
    assert eta.left(5.0) == pytest.approx(2 * 2.5)


def test_a_pair_whose_worker_was_stopped_counts_toward_the_pace_and_not_toward_its_specs_pairs():
    eta = Eta()
    eta.start(0.0)
    eta.plan([Planned(SMALL, ("v/0", "v/1", "v/2", "v/3")), Planned(SMALL_NN, ("v/0", "v/1"))])
    eta.result(SMALL, timed(SMALL, "v/0", 1.0), now=1.0)
    eta.result(SMALL, timed(SMALL, "v/1", 1.0), now=2.0)
    # v/2 hung: its worker was stopped after 60 s (worker.py records them as "lost").
    eta.result(SMALL, Result("v/2", SMALL.key(), "timeout", measure={"seconds": {"lost": 60.0}}), now=62.0)
    # One wall second a recorded second still, and the pairs left (one of the first spec, two
    # of the second) at the 1 s the measured pairs took, not at the hung one's 60.
    assert eta.left(62.0) == pytest.approx(3 * 1.0)
    # A pair whose brief lap was in, and whose full lap then hung: its 60 s count as well.
    eta.lap(SMALL, timed(SMALL, "v/3", 1.0, "ok"), now=63.0)
    eta.result(SMALL, Result("v/3", SMALL.key(), "timeout", measure={"seconds": {"lost": 60.0}}), now=123.0)
    assert eta.left(123.0) == pytest.approx(2 * 1.0)
