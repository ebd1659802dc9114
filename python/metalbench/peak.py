"""The device's memory as a kernel sees it: read bandwidth against footprint (device side).

APIs misreport the last-level cache (PoCL reported 480 MiB on one VM; NVIDIA's OpenCL
reports 4 MiB for an H200's L2 of 60 MiB), and Metal and OpenCL report no peak
bandwidth. So the first run on a device model measures both with one read-bandwidth
kernel (kernels/internal/readbw.c: a buffer read once per launch, timed with the
embedded timer's batch clock, warm) over footprints from 256 KiB doubling to 512 MiB (an
eighth of the device's memory at most), three passes, each footprint's median kept:

- the bandwidth of footprints that fit in a cache is well above that of the largest;
  the last-level cache is taken as the footprint before the bandwidth, past its fastest
  footprint, first falls below the geometric mean of the two and stays there for the
  next footprint too (on a GPU the smallest footprints are slow as well: a launch's
  fixed cost outweighs their reads). Where no footprint stands CACHE_EFFECT times above
  the largest, the same search runs on the marginal curve: each footprint's bytes beyond
  the smallest over its time beyond the smallest's, which takes a launch's fixed cost
  off (an H200's HBM reads so close to its L2 that, with a few us per launch on top,
  no footprint read more than 1.04x faster than 512 MiB). Where neither shows a cache,
  the driver's figure stands;
- the peak is the median bandwidth of the footprints at least CACHE_MULTIPLE times that
  cache (the largest where none is): what one simple kernel sustains from memory.

It runs in a worker like every kernel (pool.Pool.measure_peak), and the runner keeps
both figures in the store (`peaks` and `caches` tables), stamped with `method()`: a
figure another version of this probe measured is measured again, so that a fixed probe
reaches the stores that kept what the old one found. A measured peak is what one
simple kernel sustains, not the memory's data-sheet figure, so a variant may show a
little over 100% of it (roofline.py).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _core, paths
from .dtypes import define
from .specs import Spec
from .variants import prelude_source

__all__ = ["CACHE_EFFECT", "CACHE_MULTIPLE", "Memory", "measure_memory", "method"]

# The peak is measured over footprints this many times the last-level cache, so that
# almost every byte of a launch comes from memory even when the cache keeps what it can.
CACHE_MULTIPLE = 8
# A cache is seen where some footprint's bandwidth is at least this many times the
# largest footprint's.
CACHE_EFFECT = 1.25
_SMALLEST = 256 << 10
_PASSES = 3
_LARGEST = 512 << 20
# Threads per group, and FLOAT4s each thread reads: a grid sized by the buffer keeps
# every GPU full, and a few loads per thread (not hundreds) keep each thread's reads
# close together, which a CPU driver (PoCL: 7-10 GB/s here, against 2 GB/s with a
# grid of 64 groups per compute unit) needs too.
_THREADS = 256
_PER_THREAD = 8


@dataclass(frozen=True)
class Memory:
    """What the probe found: the peak read bandwidth (bytes per second) and the last-level
    cache (bytes) with where each came from, and the curve behind them."""

    peak: float
    peak_source: str
    cache_bytes: int
    cache_source: str
    curve: list[tuple[int, float]] = field(default_factory=list)  # (footprint bytes, bytes per second)


@functools.cache  # the sources do not change while a process runs
def method() -> str:
    """This probe's version: a digest of its source and its kernel's. Derived rather than
    numbered by hand, so that no change to how the figures are found can forget to say so
    (a change to a comment costs one probe more per device)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update((paths.kernels_dir() / "internal" / "readbw.c").read_bytes())
    return digest.hexdigest()[:12]


def _footprints(info: dict) -> list[int]:
    top = max(_SMALLEST, min(_LARGEST, int(info["memory_bytes"]) // 8))
    return [f for f in (_SMALLEST << i for i in range(20)) if f <= top]


def measure_memory(device: _core.Device, backend: str) -> Memory:
    """Read bandwidth against footprint on `device`, and the cache and peak it shows.
    Raises the core's errors (CompileError, DeviceError) as they come."""
    info = device.info
    sizes = _footprints(info)
    body = paths.kernels_dir() / "internal" / "readbw.c"
    kernel = device.compile(prelude_source(backend, body), "mb_readbw", define("float32"), "internal/readbw")
    data = device.allocate(sizes[-1])
    data.fill(0)
    small = device.allocate(16)
    small.fill(0)
    threads = max(1, min(_THREADS, int(info["max_group_size"]), kernel.max_group_size or _THREADS))
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(_PASSES):  # passes over every footprint, so that a burst of other work skews one figure alone
        for size in sizes:
            vectors = size // 16
            groups = max(1, -(-vectors // (threads * _PER_THREAD)))
            params = Spec("matmul", "float32", 1, 1, vectors, 1).params()  # p.n = FLOAT4s to read
            timing = device.measure(kernel, [data.view(0, size), small, small, small, small, params], [groups],
                                    [threads], warmup=2, min_samples=5, max_samples=50, min_time=0.0, max_time=0.05,
                                    max_noise=0.02, rank_by="batch", rank_only=True)
            median_ns = float(np.median(timing["batch_ns"])) if len(timing["batch_ns"]) else 0.0
            if not median_ns > 0 or not math.isfinite(median_ns):
                raise _core.DeviceError(f"[peak] the read-bandwidth kernel gave no usable time over {size} bytes "
                                        f"({median_ns} ns)")
            seconds[size].append(median_ns * 1e-9)
    curve = [(size, size / float(np.median(taken))) for size, taken in seconds.items()]
    return _read_curve(curve, int(info["cache_bytes"]))


def _knee(curve: list[tuple[int, float]]) -> tuple[int | None, float, float]:
    """(the cache, or None where the curve shows none; the fastest bandwidth; the largest
    footprints' bandwidth) of a bandwidth-against-footprint curve (module docstring)."""
    # The largest footprints' median: one footprint's figure moves with whatever else the
    # machine is doing.
    memory_bw = float(np.median([bw for _, bw in curve[-3:]]))
    fastest = max(bw for _, bw in curve)
    threshold = math.sqrt(fastest * memory_bw)
    if not (fastest >= CACHE_EFFECT * memory_bw and memory_bw < threshold):
        return None, fastest, memory_bw
    # The footprint before bandwidth first stays below the threshold for two footprints
    # running, searched from the fastest footprint on: one slow footprint in a busy
    # machine's curve is not the cache's end, and on a GPU the smallest footprints are
    # slow too (a launch's fixed cost dwarfs their reads) before the curve rises to the
    # cache's bandwidth.
    below = [bw < threshold for _, bw in curve] + [True]
    top = next(i for i, (_, bw) in enumerate(curve) if bw == fastest)
    knee = next(i for i in range(top, len(curve)) if below[i] and below[i + 1])
    return (curve[knee - 1][0] if knee > 0 else None), fastest, memory_bw


def _marginal(curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Each footprint's bytes beyond the smallest over its time beyond the smallest's: the
    curve with a launch's fixed cost taken off (footprints no slower than the smallest
    are left out)."""
    small, small_bw = curve[0]
    t0 = small / small_bw
    return [(size, (size - small) / (size / bw - t0)) for size, bw in curve[1:] if size / bw > t0]


def _read_curve(curve: list[tuple[int, float]], reported: int) -> Memory:
    """The cache and the peak a bandwidth-against-footprint curve shows (module docstring)."""
    cache, fastest, memory_bw = _knee(curve)
    what = "read bandwidth"
    if cache is None:
        marginal = _marginal(curve)
        if len(marginal) >= 4:
            cache, fastest_m, memory_m = _knee(marginal)
            if cache is not None:
                fastest, memory_bw = fastest_m, memory_m
                what = "read bandwidth beyond the smallest footprint's (its time taken off each one's)"
    seen = cache is not None
    cache = cache if seen else reported
    cache_source = (f"measured: {what} falls from {fastest / 1e9:.3g} GB/s toward {memory_bw / 1e9:.3g} GB/s "
                    f"past {cache >> 10} KiB (kernels/internal/readbw.c over 256 KiB to {curve[-1][0] >> 20} MiB)"
                    if seen else
                    f"the driver's: the read bandwidth over 256 KiB to {curve[-1][0] >> 20} MiB showed no cache "
                    f"(at most {fastest / memory_bw:.2f}x that of the largest)")
    far = [(size, bw) for size, bw in curve if size >= CACHE_MULTIPLE * cache] or curve[-1:]
    low, high = far[0][0], far[-1][0]
    reach = f"{low >> 20} MiB" if low == high else f"{low >> 20} to {high >> 20} MiB"
    times = f"{low / max(1, cache):.0f}x" if low == high else \
        f"{low / max(1, cache):.0f}x to {high / max(1, cache):.0f}x"
    peak_source = (f"measured: kernels/internal/readbw.c reading {reach} ({times} the last-level cache), median, "
                   "batch clock")
    return Memory(float(np.median([bw for _, bw in far])), peak_source, int(cache), cache_source, curve)

