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


def test_measure_returns_per_launch_samples(opencl):
    n = 1 << 16
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x, y = opencl.allocate(4 * n), opencl.allocate(4 * n)
    args = [y, x, struct.pack("<f", 1.0), struct.pack("<i", n)]
    r = opencl.measure(kernel, args, [n // 256], [256], warmup=2, iterations=7, max_seconds=10.0)
    assert r["gpu_ns"].dtype == np.uint64 and r["gpu_ns"].shape == (7,)
    assert r["cpu_ns"].shape == (7,)
    assert (r["gpu_ns"] > 0).all()
    # The statistics describe exactly the samples returned.
    assert r["gpu"]["count"] == 7
    assert r["gpu"]["median"] == pytest.approx(float(np.median(r["gpu_ns"])))
    assert r["cpu"]["q3"] == pytest.approx(float(np.percentile(r["cpu_ns"], 75)))
    # CPU time is submit to completion, so it cannot be shorter than the kernel.
    assert r["cpu"]["median"] >= r["gpu"]["min"]


def test_time_budget_caps_samples_but_keeps_the_minimum(opencl):
    n = 1 << 16
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x, y = opencl.allocate(4 * n), opencl.allocate(4 * n)
    args = [y, x, struct.pack("<f", 1.0), struct.pack("<i", n)]
    r = opencl.measure(kernel, args, [n // 256], [256], iterations=1000, min_iterations=4, max_seconds=1e-9)
    assert r["gpu"]["count"] == 4


def test_cold_mode_runs(opencl):
    kernel = opencl.compile(SAXPY, "saxpy", {}, "test/saxpy")
    x, y = opencl.allocate(4096), opencl.allocate(4096)
    r = opencl.measure(kernel, [y, x, struct.pack("<f", 1.0), struct.pack("<i", 1024)], [4], [256],
                       iterations=3, cold=True)
    assert r["cold"] is True and r["gpu"]["count"] == 3


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
