"""`metalbench doctor`: what this machine can run, and how each device would be measured.

    from metalbench import doctor
    for backend in doctor.diagnose():
        print(backend.name, backend.available, [d.name for d in backend.devices])

For every backend: whether this build has it and, if it cannot run here, why. For
every device: its driver, the cache size cold mode keeps inputs out of and where
that size comes from, which device timestamps GPU times are taken from, how the
GPU's clock is read, and its peak memory bandwidth: where an API gives it, else the
one a run measured and kept in the result store (read only; nothing is measured here).
Each device is opened, as a run would open it, so what is shown is what a run uses
(the Metal backend, for one, decides at open whether its timestamp counters work).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import _core
from .backends import BACKENDS, TRAITS, unavailable_reason
from .peak import method
from .roofline import device_key
from .store import Store, StoreError

__all__ = ["BackendReport", "DeviceReport", "diagnose", "render"]


@dataclass(frozen=True)
class DeviceReport:
    """One device as a run would see it; `opened` is False (and `open_error` says why) when it would not open."""

    index: int
    name: str
    vendor: str
    driver: str
    compute_units: int
    memory_bytes: int
    max_group_size: int
    unified_memory: bool
    cache_bytes: int       # what cold mode sizes its copies by: measured (peak.py, from the store) or the driver's
    cache_source: str
    driver_cache_bytes: int  # what the driver reports
    timing_source: str
    clock_source: str
    peak_bandwidth: float  # bytes per second; 0 when no API gives it
    peak_bandwidth_source: str
    opened: bool
    open_error: str = ""


@dataclass(frozen=True)
class BackendReport:
    name: str
    built: bool
    available: bool
    reason: str  # why it cannot run here; "" when it can
    devices: list[DeviceReport] = field(default_factory=list)


def _device(backend: str, listed: dict, kept: Store | None) -> DeviceReport:
    """The device as opened (as listed where it does not open), with the cache and, where
    its API gives no peak bandwidth, the peak that `kept` stores for it."""
    info, opened, error = listed, False, ""
    try:
        info = _core.open(backend, int(listed["index"])).info
        opened = True
    except Exception as e:  # noqa: BLE001 - any failure to open is what doctor reports
        error = str(e) or type(e).__name__
    key = device_key({"backend": backend, **info})
    peak, peak_source = float(info.get("peak_bandwidth", 0.0)), str(info.get("peak_bandwidth_source", ""))
    stored = kept.peak(key) if kept is not None and peak <= 0 else None
    if kept is not None and stored is not None:
        peak, peak_source = stored[0], f"the result store ({stored[1]}{_earlier(kept.peak(key, method()))})"
    return DeviceReport(
        index=int(info["index"]), name=str(info["name"]), vendor=str(info["vendor"]), driver=str(info["driver"]),
        compute_units=int(info["compute_units"]), memory_bytes=int(info["memory_bytes"]),
        max_group_size=int(info["max_group_size"]), unified_memory=bool(info["unified_memory"]),
        **_cold_cache(backend, key, info, kept),
        timing_source=str(info.get("timing_source", "")), clock_source=str(info.get("clock_source", "")),
        peak_bandwidth=peak, peak_bandwidth_source=peak_source, opened=opened, open_error=error,
    )


def _kept(store: Path | None) -> Store | None:
    """`store` opened read only; None when there is none or it cannot be read."""
    if store is None or not Path(store).is_file():
        return None
    try:
        return Store(Path(store), readonly=True)
    except (StoreError, OSError, ValueError):
        return None


def _cold_cache(backend: str, key: str, info: dict, kept: Store | None) -> dict:
    """The cache cold mode sizes its copies by on the device of `key` (roofline.device_key):
    the one peak.py measured, as the store keeps it, else the driver's until a run measures it."""
    driver = int(info["cache_bytes"])
    found = kept.cache(key) if kept is not None else None
    if kept is None or found is None:
        return {"cache_bytes": driver, "driver_cache_bytes": driver,
                "cache_source": f"{TRAITS[backend].cache_source}; not measured yet (the first run measures it)"}
    return {"cache_bytes": found[0], "driver_cache_bytes": driver,
            "cache_source": f"{found[1]} (stored in {kept.path}{_earlier(kept.cache(key, method()))})"}


def _earlier(current: object) -> str:
    """What doctor adds to a stored figure that `current` (the store's answer for this
    probe's version) says an earlier probe measured."""
    return "" if current is not None else "; an earlier version of the probe measured it: the next run measures again"


def diagnose(store: Path | None = None) -> list[BackendReport]:
    """Every backend metalbench knows, in `--backend auto` order, with its devices opened; a
    device shows the cache and (where its API gives no peak bandwidth) the peak that `store`
    keeps for it, if any."""
    kept = _kept(store)
    try:
        return _diagnose(kept)
    finally:
        if kept is not None:
            kept.close()


def _diagnose(kept: Store | None) -> list[BackendReport]:
    built = set(_core.backends())
    out: list[BackendReport] = []
    for name in BACKENDS:
        if name not in built:
            reason = TRAITS[name].not_built or "this build was made without it"
            out.append(BackendReport(name, built=False, available=False, reason=reason))
            continue
        reason = unavailable_reason(name)
        if reason:
            out.append(BackendReport(name, built=True, available=False, reason=reason))
            continue
        devices = [_device(name, listed, kept) for listed in _core.devices(name)]
        out.append(BackendReport(name, built=True, available=True, reason="", devices=devices))
    return out


def size(nbytes: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def bandwidth(d: DeviceReport) -> str:
    if d.peak_bandwidth <= 0:
        return "unknown (no API gives it; the first `metalbench run` on this device measures it)"
    return f"{d.peak_bandwidth / 1e9:.0f} GB/s, from {d.peak_bandwidth_source or 'the backend'}"


def render(reports: list[BackendReport], console: Console) -> None:
    """The report as `metalbench doctor` prints it."""
    console.print(f"[bold]metalbench doctor[/] · Python {platform.python_version()} · {sys.platform} "
                  f"{platform.machine()}")
    usable = [r.name for r in reports if r.available]
    console.print(f"--backend auto picks: {usable[0] if usable else 'nothing (no backend can run here)'}")
    for r in reports:
        console.print()
        if not r.available:
            state = "not built" if not r.built else "unavailable"
            console.print(f"[bold]{r.name}[/]: {state}: {escape(r.reason)}", soft_wrap=True)
            continue
        console.print(f"[bold]{r.name}[/]: available, {len(r.devices)} device{'s' if len(r.devices) != 1 else ''}")
        for d in r.devices:
            console.print(f"  [bold]{escape(f'[{d.index}] {d.name}')}[/] ({escape(d.vendor)})")
            checked = ("listed by the driver and opened, as a run opens it" if d.opened
                       else f"listed by the driver; opening it failed: {d.open_error}")
            rows = [
                ("driver", d.driver),
                ("memory", f"{size(d.memory_bytes)} · {d.compute_units} compute units · max group "
                           f"{d.max_group_size} · unified memory {'yes' if d.unified_memory else 'no'}"),
                ("cold-mode cache", f"{size(d.cache_bytes)} ({d.cache_bytes} bytes), {d.cache_source}" +
                 (f"; the driver reports {size(d.driver_cache_bytes)}" if d.driver_cache_bytes != d.cache_bytes
                  else "")),
                ("GPU timestamps", d.timing_source or "not reported"),
                ("clock", d.clock_source or "not reported"),
                ("peak bandwidth", bandwidth(d)),
                ("checked", checked),
            ]
            for label, value in rows:
                console.print(f"      [dim]{label:<16}[/] {escape(value)}", soft_wrap=True)
