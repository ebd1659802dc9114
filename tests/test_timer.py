"""The native core used directly, as the README's embedding example does."""

import struct

import numpy as np
import pytest

from metalbench import _core

SAXPY = """
__kernel void saxpy(__global float* y, __global const float* x, const float a, const int n) {
  int i = get_global_id(0);
  if (i < n) y[i] += a * x[i];
}
"""


def test_compile_run_and_copy(opencl):
    n = 1000
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x = opencl.allocate(4 * n)
    y = opencl.allocate(4 * n)
    x.write(np.arange(n, dtype=np.float32))
    y.write(np.ones(n, dtype=np.float32))
    opencl.run(kernel, [y, x, struct.pack("<f", 2.0), struct.pack("<i", n)], [4], [256])
    out = np.empty(n, dtype=np.float32)
    y.read(out)
    np.testing.assert_array_equal(out, 1 + 2 * np.arange(n, dtype=np.float32))


def test_measure_returns_three_clocks_with_their_samples(opencl):
    n = 1 << 16
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x, y = opencl.allocate(4 * n), opencl.allocate(4 * n)
    args = [y, x, struct.pack("<f", 1.0), struct.pack("<i", n)]
    r = opencl.measure(kernel, args, [n // 256], [256], warmup=2, min_samples=7, max_samples=7, max_time=10.0)
    for clock in ("gpu", "batch", "cpu"):
        ns = r[f"{clock}_ns"]
        assert ns.dtype == np.uint64 and (ns > 0).all()
        # The statistics describe exactly the samples returned.
        assert r[clock]["count"] == len(ns) == 7
        assert r[clock]["median"] == pytest.approx(float(np.median(ns)))
        assert r[clock]["q3"] == pytest.approx(float(np.percentile(ns, 75)))
        assert r[clock]["ci_lo"] <= r[clock]["median"] <= r[clock]["ci_hi"]
        assert r[clock]["stop"] in ("converged", "enough", "sample-cap", "time-cap")
    assert r["batch_size"] >= 1 and r["rank_by"] == "batch"
    # The batch clock ranks: it stops on its noise or a cap, the others at their minimum.
    assert r["gpu"]["stop"] == "enough" and r["cpu"]["stop"] == "enough"
    # CPU time is submit to completion, so it holds the kernel. The two clocks time
    # different launches, and on PoCL the kernel shares the CPU with whatever else runs:
    # a load that eased between them made one CI run's cpu median 6% under the gpu
    # minimum. A clock that stopped at submission would read a small fraction of it.
    assert r["cpu"]["median"] >= 0.5 * r["gpu"]["median"]
    assert r["clock"] == {"low": None, "high": None}  # OpenCL exposes no clock


def test_the_ranking_clock_stops_on_noise_or_at_its_caps(opencl):
    n = 1 << 12
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x, y = opencl.allocate(4 * n), opencl.allocate(4 * n)
    args = [y, x, struct.pack("<f", 1.0), struct.pack("<i", n)]
    # Noise within 100%, the most max_noise allows: it stops as soon as it has its minimum,
    # unless the machine stalled a sample so long that the first 12 were noisier still.
    r = opencl.measure(kernel, args, [n // 256], [256], min_samples=12, min_time=0, max_noise=1.0, max_time=60)
    first = np.array(r["batch_ns"][:12], dtype=float)
    assert r["batch"]["stop"] == "converged"
    assert r["batch"]["count"] == 12 or first.std(ddof=1) / first.mean() > 1.0, first
    # No noise is within 0%: it runs to the sample cap, or to the time cap keeping at least one sample.
    r = opencl.measure(kernel, args, [n // 256], [256], min_samples=3, max_samples=20, max_noise=0.0, max_time=60)
    assert r["batch"]["stop"] in ("sample-cap", "converged") and r["batch"]["count"] <= 20
    r = opencl.measure(kernel, args, [n // 256], [256], min_samples=1000, max_samples=1000, max_time=1e-6)
    assert r["batch"]["stop"] == "time-cap" and r["batch"]["count"] >= 1


def test_the_warm_up_lasts_ramp_time_after_the_device_idled(opencl):
    """A device's first measurement, and one after ramp_idle seconds without any, warm up
    for ramp_time (many launches of a kernel of microseconds); one that follows another
    sooner takes its `warmup` launches alone, as does any with ramp_time 0."""
    device = _core.open("opencl", 0)  # its own: no measurement on it yet
    n = 1 << 10
    kernel = device.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x, y = device.allocate(4 * n), device.allocate(4 * n)
    args = [y, x, struct.pack("<f", 1.0), struct.pack("<i", n)]

    def warm_ups(**ramp: float) -> int:
        r = device.measure(kernel, args, [n // 256], [256], warmup=1, min_samples=3, max_samples=3, max_time=10.0,
                           **ramp)
        return r["warmup"]

    assert warm_ups(ramp_idle=3600, ramp_time=0.05) > 1  # never measured: idle
    assert warm_ups(ramp_idle=3600, ramp_time=0.05) == 1  # measured just now
    assert warm_ups(ramp_idle=0, ramp_time=0.05) > 1
    assert warm_ups(ramp_idle=0, ramp_time=0) == 1
    assert _core.MeasureConfig().ramp_time > 0  # on by default


def test_slots_rotate_and_resets_run_before_every_round(opencl):
    # Each slot counts its launches in its own word; the reset puts every count back to
    # zero before each round, so no slot is ever launched twice without a reset between.
    count = """__kernel void count(__global int* c) { if (get_global_id(0) == 0) c[0] += 1; }"""
    kernel = opencl.compile(count, "count", {}, "test/count")
    slots = 5
    arena, zeros = opencl.allocate(256 * slots), opencl.allocate(256 * slots)
    zeros.fill(0)
    views = [[arena.view(256 * i, 4)] for i in range(slots)]
    r = opencl.measure(kernel, views, [1], [1], min_samples=3, max_samples=30, max_time=10.0,
                       resets=[(arena, zeros)])
    got = np.empty(64 * slots, dtype=np.int32)
    arena.read(got)
    hits = got[::64]
    launched = [(r["first_slot"] + i) % slots for i in range(r["last_round"])]
    assert r["last_round"] == 3  # the cpu clock's round: min_samples launches
    assert all(hits[i] == 1 for i in launched) and all(hits[i] == 0 for i in set(range(slots)) - set(launched))


def test_settings_out_of_range_name_the_setting(opencl):
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    y = opencl.allocate(16)
    args = [y, y, struct.pack("<f", 1.0), struct.pack("<i", 1)]
    for bad, name in [({"max_time": float("nan")}, "max_time"), ({"max_time": float("inf")}, "max_time"),
                      ({"max_time": -1.0}, "max_time"), ({"min_time": -0.5}, "min_time"),
                      ({"max_noise": float("nan")}, "max_noise"), ({"min_samples": 0}, "min_samples"),
                      ({"max_samples": 2, "min_samples": 5}, "max_samples"), ({"warmup": -1}, "warmup"),
                      ({"rank_by": "wall"}, "rank_by"), ({"batch_time": 0.0}, "batch_time"),
                      ({"ramp_idle": -1.0}, "ramp_idle"), ({"ramp_time": float("nan")}, "ramp_time")]:
        with pytest.raises(_core.UsageError, match=rf"\[core::measure\] {name}"):
            opencl.measure(kernel, args, [1], [1], **bad)


def test_views_copies_and_define_checks(opencl):
    a, b = opencl.allocate(1024), opencl.allocate(1024)
    a.write(np.arange(256, dtype=np.int32))
    b.copy_from(a)
    out = np.empty(256, dtype=np.int32)
    b.read(out)
    np.testing.assert_array_equal(out, np.arange(256))
    part = b.view(256, 512)
    got = np.empty(128, dtype=np.int32)
    part.read(got)
    np.testing.assert_array_equal(got, np.arange(64, 192))
    with pytest.raises(_core.UsageError, match="cannot view"):
        b.view(512, 1024)
    with pytest.raises(_core.UsageError, match="define name 'A B'"):
        opencl.compile(SAXPY, "saxpy", {"A B": "1"}, "test/saxpy")
    with pytest.raises(_core.UsageError, match="define X = '1 -cl-fast"):
        opencl.compile(SAXPY, "saxpy", {"X": "1 -cl-fast-relaxed-math"}, "test/saxpy")


def test_compile_error_carries_the_log(opencl):
    with pytest.raises(_core.CompileError) as info:
        opencl.compile("__kernel void broken(__global float* y) { y[0] = undefined_name; }", "broken", {"X": 1},
                       "mine/broken")
    assert "mine/broken" in str(info.value)
    assert "undefined_name" in info.value.log


def test_launch_larger_than_the_kernel_allows_is_refused(opencl):
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    y = opencl.allocate(16)
    too_many = kernel.max_group_size * 2
    with pytest.raises(_core.UsageError, match="test/saxpy.*exceeds"):
        opencl.run(kernel, [y, y, struct.pack("<f", 1.0), struct.pack("<i", 0)], [1], [too_many])


def test_bad_arguments_are_usage_errors(opencl):
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    y = opencl.allocate(16)
    with pytest.raises(_core.UsageError, match="argument 1 must be a Buffer or bytes"):
        opencl.run(kernel, [y, 3], [1], [1])
    with pytest.raises(_core.UsageError, match="empty dimension"):
        opencl.run(kernel, [y, y, b"\0\0\0\0", b"\0\0\0\0"], [0], [1])
    with pytest.raises(ValueError, match="cannot write 32 bytes"):
        y.write(np.zeros(8, dtype=np.float32))


def test_device_info(opencl):
    info = opencl.info
    assert info["backend"] == "opencl"
    assert info["max_group_size"] >= 1 and info["memory_bytes"] > 0
    assert info["name"]


def test_unknown_backend():
    with pytest.raises(_core.UsageError, match="unknown backend 'vulkan'"):
        _core.open("vulkan", 0)
