"""NVRTC alone, through ctypes: CUDA source in, machine code (or PTX) and NVRTC's log out,
with no GPU and no toolkit. benchmarks/nvcc_check.py --nvrtc compiles every CUDA variant
with it, and tests/test_tiles.py the matrix tile.

NVRTC comes from a CUDA toolkit or from `pip install nvidia-cuda-nvrtc-cu12`; the library
is looked for as the CUDA backend looks for it: METALBENCH_NVRTC, then NVIDIA's wheels,
then a toolkit, then the loader's path.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from metalbench import variants


def _candidates() -> list[Path]:
    """Where libnvrtc may be: METALBENCH_NVRTC, NVIDIA's wheels, a toolkit, the loader's path."""
    out = []
    if os.environ.get("METALBENCH_NVRTC"):
        out.append(Path(os.environ["METALBENCH_NVRTC"]))
    try:
        import nvidia  # the namespace package of NVIDIA's wheels

        for base in nvidia.__path__:
            out += sorted(Path(base).glob("*/lib/libnvrtc.so*"))
    except ImportError:
        pass
    out += sorted(Path("/usr/local").glob("cuda*/lib*/libnvrtc.so*"))
    return [p for p in out if "alt.so" not in p.name and "builtins" not in p.name] + [Path("libnvrtc.so")]


class Nvrtc:
    """libnvrtc through ctypes: source in, machine code (or PTX) and the log out."""

    def __init__(self) -> None:
        self.lib = None
        tried = []
        for path in _candidates():
            try:
                # NVRTC opens its builtins library by file name: load the one beside it first.
                for builtins in sorted(path.parent.glob("libnvrtc-builtins.so*")):
                    if "alt.so" not in builtins.name:
                        ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
                        break
                self.lib = ctypes.CDLL(str(path))
                break
            except OSError as e:
                tried.append(str(e))
        if self.lib is None:
            raise OSError("NVRTC (libnvrtc.so) was not found: `pip install nvidia-cuda-nvrtc-cu12` or set "
                          "METALBENCH_NVRTC; tried " + "; ".join(tried[:3]))
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = f"{major.value}.{minor.value}"
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def compile(self, source: str, name: str, options: list[str], cubin: bool = True) -> tuple[bool, str]:
        """(compiled, log): NVRTC's log, ptxas's report included when `options` ask for it."""
        prog = ctypes.c_void_p()
        rc = self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
        if rc:
            return False, f"nvrtcCreateProgram: {self.lib.nvrtcGetErrorString(rc).decode()}"
        try:
            argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = self.lib.nvrtcCompileProgram(prog, len(options), argv)
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(max(1, size.value))
            self.lib.nvrtcGetProgramLog(prog, log)
            text = log.value.decode(errors="replace")
            if rc:
                return False, f"{self.lib.nvrtcGetErrorString(rc).decode()}\n{text}"
            size = ctypes.c_size_t()
            got = (self.lib.nvrtcGetCUBINSize if cubin else self.lib.nvrtcGetPTXSize)(prog, ctypes.byref(size))
            if got or size.value == 0:
                return False, "no code came out\n" + text
            return True, text
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def options(v: variants.Variant, dtype: str, arch: str, verbose: bool = True) -> list[str]:
    """What the CUDA backend passes (csrc/cuda/cuda_backend.cpp), for `arch`."""
    opts = [f"--gpu-architecture={arch}", "--std=c++17", "-DMB_NVRTC=1"]
    opts += [f"-D{k}={val}" for k, val in sorted(v.defines(dtype).items())]
    return opts + (["--ptxas-options=--verbose"] if verbose else [])


def compile_variant(rtc: Nvrtc, v: variants.Variant, dtype: str, arch: str) -> tuple[bool, str]:
    """A variant as the CUDA backend compiles it, to machine code for `arch`, ptxas's report in the log."""
    return rtc.compile(v.source("cuda"), f"{v.id}.cu", options(v, dtype, arch))
