"""Roofline figures: what each result had to move and compute, against the device's peak.

- bytes: `Spec.bytes_moved()`, the least traffic the op can cost: A, B (and the bias)
  read once, C written once, and C read too where beta != 0.
- FLOPs: `Spec.flops()`, a multiply-add counted as two.
- achieved GB/s and GFLOP/s: those over the result's median time by the ranking clock;
  % of peak: achieved bytes per second over the device's peak memory bandwidth.

The peak comes from the device where an API gives it (`DeviceInfo.peak_bandwidth`:
CUDA reads it from NVML). Metal and OpenCL have none, so there it is measured once
per device by a read-bandwidth kernel (kernels/internal/readbw.c: a buffer several
times the last-level cache read once per launch, timed with the embedded timer's
batch clock) and kept in the store's `peaks` table; its source then says "measured".
A measured peak is what one simple kernel sustains, not the memory's data-sheet
figure, so a variant may show a little over 100%.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _core, paths
from .specs import Spec
from .store import Store
from .variants import prelude_source

__all__ = ["Figures", "device_key", "figures", "measure_read_bandwidth", "with_peak"]

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


@dataclass(frozen=True)
class Figures:
    """The roofline figures of one result at one time."""

    bytes: int           # the least bytes the op must move (Spec.bytes_moved)
    flops: int           # Spec.flops
    gbps: float          # achieved, 1e9 bytes per second
    gflops: float        # achieved, 1e9 FLOPs per second
    pct_peak: float | None  # of the device's peak bandwidth; None when the peak is unknown

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0


def figures(spec: Spec, us: float, peak_bytes_per_s: float | None) -> Figures:
    """The figures of `spec` run in `us` microseconds (> 0)."""
    moved, flops = spec.bytes_moved(), spec.flops()
    seconds = us * 1e-6
    rate = moved / seconds
    pct = 100.0 * rate / peak_bytes_per_s if peak_bytes_per_s else None
    return Figures(moved, flops, rate / 1e9, flops / seconds / 1e9, pct)


def device_key(info: dict) -> str:
    """What a stored peak belongs to: the backend, the device and its driver (a new driver
    may move memory faster, and measuring again costs a second)."""
    return f"{info.get('backend', '')}|{info.get('vendor', '')}|{info.get('name', '')}|{info.get('driver', '')}"


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
        raise _core.DeviceError(f"[roofline] the read-bandwidth kernel gave no usable time ({median_ns} ns)")
    source = (f"measured: kernels/internal/readbw.c reading {size >> 20} MiB "
              f"({size / max(1, int(info['cache_bytes'])):.0f}x the last-level cache), batch clock median")
    return size / (median_ns * 1e-9), source


def with_peak(info: dict, store: Store, backend: str, index: int,
              note: Callable[[str], None] = lambda message: None) -> dict:
    """`info` with `peak_bandwidth` and `peak_bandwidth_source` filled in: the device's
    own figure where it has one, else the store's for this device, else measured now
    (device `index` of `backend` opened in this process for it, then released) and
    stored. A peak that cannot be had is reported through `note`, never raised: the
    run goes on without % of peak."""
    if float(info.get("peak_bandwidth") or 0) > 0:
        return info
    key = device_key(info)
    found = store.peak(key)
    if found is None:
        try:
            found = measure_read_bandwidth(_core.open(backend, index), backend)
        except (_core.CompileError, _core.DeviceError, _core.UsageError, _core.UnavailableError, OSError) as e:
            note(f"peak bandwidth not measured, so no % of peak: {str(e).splitlines()[0] if str(e) else e}")
            return info
        store.put_peak(key, *found)
    return {**info, "peak_bandwidth": found[0], "peak_bandwidth_source": found[1]}
