"""The device's peak memory bandwidth, measured where no API gives it (device side).

Metal and OpenCL report no peak, so the first run on a device measures one with a
read-bandwidth kernel (kernels/internal/readbw.c: a buffer several times the
last-level cache read once per launch, timed with the embedded timer's batch clock).
It runs in a worker like every kernel (pool.Pool.measure_peak), and the runner keeps
the figure in the store's `peaks` table, labelled "measured". A measured peak is what
one simple kernel sustains, not the memory's data-sheet figure, so a variant may
show a little over 100% of it (roofline.py).
"""

from __future__ import annotations

import math

import numpy as np

from . import _core, paths
from .specs import Spec
from .variants import prelude_source

__all__ = ["CACHE_MULTIPLE", "measure_read_bandwidth"]

# The read-bandwidth buffer: this many times the last-level cache, so that almost
# every byte of a launch comes from memory even when the cache keeps what it can.
CACHE_MULTIPLE = 8
_MIN_BYTES = 64 << 20
_MAX_BYTES = 1 << 30
# Threads per group, and FLOAT4s each thread reads: a grid sized by the buffer keeps
# every GPU full, and a few loads per thread (not hundreds) keep each thread's reads
# close together, which a CPU driver (PoCL: 7-10 GB/s here, against 2 GB/s with a
# grid of 64 groups per compute unit) needs too.
_THREADS = 256
_PER_THREAD = 8


def measure_read_bandwidth(device: _core.Device, backend: str) -> tuple[float, str]:
    """Bytes per second the read-bandwidth kernel sustains on `device`, and the peak's
    source in words. Raises the core's errors (CompileError, DeviceError) as they come."""
    info = device.info
    size = min(max(CACHE_MULTIPLE * int(info["cache_bytes"]), _MIN_BYTES), _MAX_BYTES,
               max(16, int(info["memory_bytes"]) // 8))
    size -= size % 16
    body = paths.kernels_dir() / "internal" / "readbw.c"
    kernel = device.compile(prelude_source(backend, body), "mb_readbw", {"MB_F16": "0"}, "internal/readbw")
    data = device.allocate(size)
    data.fill(0)
    small = device.allocate(16)
    small.fill(0)
    vectors = size // 16
    threads = max(1, min(_THREADS, int(info["max_group_size"]), kernel.max_group_size or _THREADS))
    groups = max(1, -(-vectors // (threads * _PER_THREAD)))
    params = Spec("matmul", "float32", 1, 1, vectors, 1).params()  # p.n = FLOAT4s to read
    timing = device.measure(kernel, [data, small, small, small, small, params], [groups], [threads],
                            warmup=2, min_samples=5, max_samples=50, min_time=0.0, max_time=1.0,
                            max_noise=0.03, rank_by="batch")
    median_ns = float(np.median(timing["batch_ns"])) if len(timing["batch_ns"]) else timing["batch"]["median"]
    if not median_ns > 0 or not math.isfinite(median_ns):
        raise _core.DeviceError(f"[peak] the read-bandwidth kernel gave no usable time ({median_ns} ns)")
    source = (f"measured: kernels/internal/readbw.c reading {size >> 20} MiB "
              f"({size / max(1, int(info['cache_bytes'])):.0f}x the last-level cache), batch clock median")
    return size / (median_ns * 1e-9), source
