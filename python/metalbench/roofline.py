"""Roofline figures: what each result had to move and compute, against the device's peak.

- bytes: `Spec.bytes_moved()`, the least traffic the op can cost: A, B (and the bias)
  read once, C written once, and C read too where beta != 0.
- FLOPs: `Spec.flops()`, a multiply-add counted as two.
- achieved GB/s and GFLOP/s: those over the result's median time by the ranking clock;
  % of peak: achieved bytes per second over the device's peak memory bandwidth.

The peak comes from the device where an API gives it (`DeviceInfo.peak_bandwidth`:
CUDA reads it from NVML), else from a measurement (peak.py) kept in the store. This
module only computes: it opens no device and writes nothing, so reports can use it.

Plausibility (`implausible`): a launch must read from memory every byte of its inputs
when cold, and when warm whatever of them the last-level cache cannot hold; a time
shorter than reading those bytes at PLAUSIBLE_FACTOR times the peak bandwidth takes is
implausible: flagged in every report, never best, never the time a race measures others
against. Warm inputs that fit in the cache are exempt (nothing need come from memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from .specs import Spec

__all__ = ["PLAUSIBLE_FACTOR", "Figures", "cache_of", "device_key", "figures", "from_memory", "implausible",
           "plausibility_note"]

# How far past the peak bandwidth a time may seem to go before it is implausible. A
# measured peak is what one simple read kernel sustains (peak.py), which a good kernel
# may pass a little; the cheats this catches (answers kept or copied, not computed) went
# 290x to 3,800x past it.
PLAUSIBLE_FACTOR = 2.0


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


def cache_of(device: dict) -> int:
    """The last-level cache a run's device info says it used for cold mode (bytes): the
    measured or refined figure where the run recorded one, else the driver's."""
    return int(device.get("llc_bytes") or device.get("cache_bytes") or 0)


def from_memory(spec: Spec, cold: bool, cache_bytes: int) -> int:
    """Bytes one launch of `spec` must read from memory: all it reads when cold; warm,
    what of it a cache of `cache_bytes` cannot hold (0 when its inputs fit)."""
    read = spec.bytes_read()
    return read if cold else max(0, read - max(0, cache_bytes))


def implausible(spec: Spec, us: float, peak_bytes_per_s: float | None, cold: bool, cache_bytes: int) -> str:
    """Why a time of `us` microseconds per launch of `spec` is implausible on a device with
    that peak bandwidth and cache, or "" (also when the peak is unknown)."""
    must = from_memory(spec, cold, cache_bytes)
    if not peak_bytes_per_s or must <= 0 or not us > 0:
        return ""
    floor_us = must / (PLAUSIBLE_FACTOR * peak_bytes_per_s) * 1e6
    if us >= floor_us:
        return ""
    return (f"{us:.3g} us is less than the {floor_us:.3g} us that reading its {must:,} bytes from memory takes "
            f"at {PLAUSIBLE_FACTOR:g}x the peak bandwidth")


def plausibility_note(cold: bool, cache_bytes: int, exempt: int, specs: int) -> str:
    """One line: the rule, and (warm) how many specs it leaves out because their inputs fit in the cache."""
    note = (f"a time below reading the bytes that must come from memory at {PLAUSIBLE_FACTOR:g}x the peak is "
            "[implausible], never best")
    if not cold:
        note += (f"; warm: inputs count as in cache up to {cache_bytes / 2**20:.1f} MiB, so {exempt} of {specs} "
                 "specs are exempt")
    return note
