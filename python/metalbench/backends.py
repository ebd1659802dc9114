"""What metalbench knows of each backend, in one place, and which one to use.

A backend's native side is a folder under csrc/ (its device, kernels, buffers and
timing) and a prelude kernels/include/<name>.h (the portable dialect in its
language). Everything the Python side must know of it is a `Traits` entry here:
the language its kernels are exported in, where the size cold mode keeps inputs
out of comes from, whether Ray counts its devices as GPUs, why a build may lack
it, and whether its variants are built many to a program. Only OpenCL's are:
its compile keeps a program for further entries (csrc/opencl), CUDA's keeps each
variant's cubin on disk under the variant's own key, and Metal's has not been
measured. Nothing here opens a device: `pick_backend` asks the core only whether a
backend can run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

__all__ = ["BACKENDS", "TRAITS", "BackendError", "Traits", "pick_backend", "traits", "unavailable_reason"]


class BackendError(InputError, RuntimeError):
    """No usable backend, or the one asked for cannot run here."""


@dataclass(frozen=True)
class Traits:
    """One backend's facts."""

    name: str
    language: str         # what its kernel sources are written in
    extension: str        # file extension of an exported source
    compiled_with: str    # how the embedded timer compiles a source (an app should do the same)
    cache_source: str     # where DeviceInfo.cache_bytes comes from
    ray_gpus: bool        # Ray counts its devices as GPUs (num_gpus), so it can place actors on them
    not_built: str        # why a build may lack it ("" where every build has it)
    batch_builds: bool = False  # builds a family's variants as one program (batch.py)


# In --backend auto's order: the first that can run here is used.
TRAITS: dict[str, Traits] = {t.name: t for t in (
    Traits("metal", "Metal Shading Language", "metal", "newLibraryWithSource with default MTLCompileOptions",
           "assumed: Metal reports no cache size; 128 MiB is above every Apple system-level cache reported so far",
           ray_gpus=False, not_built="the Metal backend is built on macOS only"),
    Traits("cuda", "CUDA C++", "cu", "NVRTC options: --std=c++17 --gpu-architecture=<the device's>",
           "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, the L2 as the CUDA driver reports it", ray_gpus=True, not_built=""),
    Traits("opencl", "OpenCL C 1.2", "cl", "clBuildProgram options: -cl-std=CL1.2",
           "CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, as the OpenCL driver reports it", ray_gpus=False, not_built="",
           batch_builds=True),
)}
BACKENDS: tuple[str, ...] = tuple(TRAITS)


def traits(name: str) -> Traits:
    """The facts of backend `name`; BackendError for a name metalbench does not know."""
    try:
        return TRAITS[name]
    except KeyError:
        raise BackendError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})") from None


def _pocl_cache() -> Path:
    """Where PoCL keeps its compiled kernels, as PoCL itself decides."""
    if os.environ.get("POCL_CACHE_DIR"):
        return Path(os.environ["POCL_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "pocl"
    return Path(os.environ.get("HOME", "/")) / ".cache" / "pocl"


def _unwritable(folder: Path) -> str:
    """Why `folder` cannot be made and written, or ''."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                return f"{place} is not a folder"
            if not os.access(place, os.W_OK | os.X_OK):
                return f"{place} is not writable"
            return ""
    return ""


def unavailable_reason(name: str) -> str:
    """Why backend `name` cannot run here, or '' if it can: the core's reason, with its real
    cause where the core can only see the symptom. PoCL, the CPU OpenCL driver, lists no
    device when it cannot make its kernel cache (a HOME that is a file, or read-only), and
    the loader then reads as if no driver were installed."""
    from . import _core

    reason = _core.unavailable_reason(name)
    if name == "opencl" and reason and "found no device" in reason:
        vendors = Path(os.environ.get("OCL_ICD_VENDORS", "/etc/OpenCL/vendors"))
        icds = " ".join(p.read_text(errors="replace") for p in vendors.glob("*.icd")) if vendors.is_dir() else ""
        cache = _pocl_cache()
        why = _unwritable(cache) if "pocl" in icds.lower() else ""
        if why:
            return (f"the OpenCL loader found no device, and PoCL (installed here) cannot make its kernel cache "
                    f"{cache}: {why}; point POCL_CACHE_DIR (or XDG_CACHE_HOME, or HOME) at a writable folder")
    return reason


def pick_backend(name: str = "auto") -> str:
    """`name` if it can run here, or for "auto" the first of Metal, CUDA, OpenCL that can."""
    from . import _core  # the one question asked of the native side

    built = _core.backends()
    if name != "auto":
        if name not in BACKENDS:
            raise BackendError(f"unknown backend '{name}' (choose from auto, {', '.join(BACKENDS)})")
        if name not in built:
            raise BackendError(f"backend '{name}' is not part of this build (it has: {', '.join(built)})")
        reason = unavailable_reason(name)
        if reason:
            raise BackendError(f"backend '{name}' cannot run here: {reason}")
        return name
    reasons = []
    for candidate in (b for b in BACKENDS if b in built):
        reason = unavailable_reason(candidate)
        if not reason:
            return candidate
        reasons.append(f"{candidate}: {reason}")
    raise BackendError("no backend can run here; " + "; ".join(reasons))
