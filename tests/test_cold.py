"""Cold mode that finishes anywhere (issue 21, section 1): the cache measured where the driver
misreports it, copies bounded by memory and count, eviction where the copies cannot fit."""

import dataclasses

import pytest

from metalbench import report, runner, variants
from metalbench.arena import ColdPlan, plan_cold
from metalbench.measure import Worker
from metalbench.peak import CACHE_MULTIPLE, _read_curve
from metalbench.settings import Settings
from metalbench.specs import Spec, load_suite
from metalbench.store import Store

MIB = 1 << 20
TINY = Spec("matmul", "float16", 1, 1, 45, 29, transpose_b=True)  # reads 2.7 KB a launch
HEAD = Spec("matmul", "float16", 1, 1, 151936, 896, transpose_b=True)  # reads 272 MB


def test_the_cold_plan_rotates_copies_evicts_where_they_cannot_fit_and_knows_when_size_alone_is_cold():
    assert plan_cold(TINY, 32 * MIB, False, 1 << 30, 512) == ColdPlan(1, 0, "warm")
    assert plan_cold(HEAD, 32 * MIB, True, 1 << 30, 512) == ColdPlan(1, 0, "size")
    mid = Spec("matmul", "float16", 1, 1, 896, 4864, transpose_b=True)  # 8.7 MB: 8 copies cover 2 x 32 MiB
    assert plan_cold(mid, 32 * MIB, True, 1 << 30, 512) == ColdPlan(8, 0, "rotate")
    # 2 x 480 MiB / 2.7 KB would be ~370,000 copies: 512 at most, and a buffer of twice the cache streamed.
    plan = plan_cold(TINY, 480 * MIB, True, 4 << 30, 512)
    assert plan == ColdPlan(512, 960 * MIB, "evict")
    # The eviction is bounded by time (bytes it may copy): then it says it is partial.
    assert plan_cold(TINY, 480 * MIB, True, 4 << 30, 512, max_evict=100 * MIB) == ColdPlan(512, 100 * MIB,
                                                                                            "evict-partial")
    # Memory bounds the copies too.
    assert plan_cold(mid, 32 * MIB, True, 30 * MIB, 512) == ColdPlan(3, 64 * MIB, "evict")


def curve(points):
    return [(int(kib * 1024), gbps * 1e9) for kib, gbps in points]


def test_the_cache_is_where_read_bandwidth_falls_and_stays_fallen():
    busy = curve([(256, 32), (512, 34), (1024, 34), (2048, 30), (4096, 34), (8192, 22), (16384, 7), (32768, 6),
                  (65536, 28), (131072, 15), (262144, 13), (524288, 11)])
    found = _read_curve(busy, 480 * MIB)
    assert found.cache_bytes == 8 * MIB and found.cache_source.startswith("measured: ")
    # The peak: the median of the footprints at least CACHE_MULTIPLE times the cache.
    far = sorted(bw for size, bw in busy if size >= CACHE_MULTIPLE * 8 * MIB)
    assert found.peak == pytest.approx(far[len(far) // 2] if len(far) % 2 else sum(far[len(far) // 2 - 1:][:2]) / 2)
    assert "64 to 512 MiB (8x to 64x the last-level cache)" in found.peak_source
    # No cache seen (a flat curve), or still fast at the largest footprint: the driver's figure stands.
    flat = _read_curve(curve([(256 * 2**i, 10) for i in range(12)]), 4 * MIB)
    assert flat.cache_bytes == 4 * MIB and flat.cache_source.startswith("the driver's")
    rising = _read_curve(curve([(256 * 2**i, 10 + i) for i in range(12)]), 4 * MIB)
    assert rising.cache_bytes == 4 * MIB
    # A GPU's curve rises first, while a launch's fixed cost outweighs its reads, and falls
    # past its L2 (NVIDIA's OpenCL reports 4 MiB for an H100's 50 MiB): the knee is the
    # fall after the fastest footprint, not the slow small footprints before it.
    gpu = curve([(256, 400), (512, 700), (1024, 1200), (2048, 1900), (4096, 2600), (8192, 3300), (16384, 3700),
                 (32768, 3600), (65536, 2700), (131072, 2550), (262144, 2500), (524288, 2500)])
    found = _read_curve(gpu, 4 * MIB)
    assert found.cache_bytes == 32 * MIB and found.cache_source.startswith("measured: ")
    # Memory nearly as fast as the L2 behind a launch's fixed cost (an H200 read no
    # footprint more than 1.04x faster than 512 MiB): the plain curve shows no cache, the
    # curve with the smallest footprint's time taken off shows it.
    us, tbps = 1e-6, 1e12
    sizes = [(256 << 10) << i for i in range(12)]
    l2 = {size: 7 * tbps if size <= 32 * MIB else 4.3 * tbps for size in sizes}
    h200 = [(size, size / (3 * us + size / l2[size])) for size in sizes]
    assert max(bw for _, bw in h200) < 1.25 * h200[-1][1]
    found = _read_curve(h200, 4 * MIB)
    assert found.cache_bytes == 32 * MIB and "beyond the smallest footprint" in found.cache_source
    assert found.peak == pytest.approx(sorted(bw for size, bw in h200 if size >= 256 * MIB)[0], rel=0.05)


def test_evicting_cold_mode_measures_and_verifies_with_rounds_no_longer_than_its_copies(opencl):
    worker = Worker("opencl", 0)
    settings = Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05, cold=True)
    # As if the cache were 64 MiB: 2 x 64 MiB / 2.7 KB needs ~48,000 copies; 512 and eviction instead.
    prepared = worker.prepare(TINY, settings, seed=3, cache_bytes=64 * MIB)
    mode = prepared.mode
    assert mode["cold_how"] == "evict" and mode["evict_bytes"] == 128 * MIB
    assert mode["copies"] == mode["slots"] == 512 and len(prepared.buffers.resets(*prepared.buffers.workspace(1))) == 3
    naive = next(v for v in variants.load_variants("opencl") if v.id == "naive/default")
    groups, threads = naive.geometry(TINY)
    result = worker.measure(prepared, naive, "k", {"groups": groups, "threads": threads, "workspace": 1}, settings)
    assert result.status == "ok", result.message
    assert result.measure["batch_size"] <= 512 and result.measure["verified"]["launches"] >= 2


def test_a_cold_sweep_says_which_way_it_kept_inputs_out_of_the_cache(opencl, tmp_path):
    store = Store(tmp_path / "r.sqlite")
    smoke = load_suite("smoke")
    suite = dataclasses.replace(smoke, specs=smoke.specs[:2])
    chosen = runner.with_baseline(variants.load_variants("opencl"), "opencl", ["simdgemv/nt_bn8_vec4"],
                                    specs=suite.specs)
    settings = Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05, cold=True)
    run_id = runner.run(suite, chosen, backend="opencl", store=store, settings=settings)
    run = store.load_run(run_id)
    rep = report.build(run)
    assert run.device["llc_bytes"] > 0 and run.device["llc_source"]
    assert rep.mode == "cold" and "last-level cache" in rep.cold_note
    assert "2 specs" in rep.cold_note and ("stream" in rep.cold_note or "rotate" in rep.cold_note)
    assert all(r.status in ("ok", "raced", "unsupported") for r in run.results), [r.message for r in run.results]
