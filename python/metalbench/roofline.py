"""Roofline figures: what each result had to move and compute, against the device's peak.

- bytes: `Spec.bytes_moved()`, the least traffic the op can cost: A, B (and the bias)
  read once, C written once, and C read too where beta != 0.
- FLOPs: `Spec.flops()`, a multiply-add counted as two.
- achieved GB/s and GFLOP/s: those over the result's median time by the ranking clock;
  % of peak: achieved bytes per second over the device's peak memory bandwidth.

The peak comes from the device where an API gives it (`DeviceInfo.peak_bandwidth`:
CUDA reads it from NVML), else from a measurement (peak.py) kept in the store. This
module only computes: it opens no device and writes nothing, so reports can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .specs import Spec

__all__ = ["Figures", "device_key", "figures"]


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
