"""metalbench: find the fastest correct GPU matmul kernel for every shape your model runs.

The native core is also a timer you can embed: see `open_device` and the README.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._core import Buffer, CompileError, Device, DeviceError, Kernel, UnavailableError, UsageError
from ._core import backends as _backends
from ._core import devices as _devices
from ._core import open as _open

try:
    __version__ = version("metalbench")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Buffer", "CompileError", "Device", "DeviceError", "Kernel", "UnavailableError", "UsageError",
    "devices", "open_device",
]


def devices() -> list[dict]:
    """Every device of every backend that can run here, as dicts (backend, index, name, ...)."""
    from ._core import unavailable_reason

    return [d for b in _backends() if not unavailable_reason(b) for d in _devices(b)]


def open_device(backend: str = "auto", index: int = 0) -> Device:
    """Opens a device; "auto" picks Metal, then CUDA, then OpenCL, whichever can run here."""
    from .backends import pick_backend

    return _open(pick_backend(backend), index)
