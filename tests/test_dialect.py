"""The dialect's primitives one at a time (kernels/README.md), each in a tiny kernel
built the way Variant.source builds a body (prelude + common.h + #line + body):

- run by PoCL through metalbench._core, the values checked exactly;
- parsed as Metal Shading Language against tests/metal_shim (MSL 3.0 and 3.2);
- compiled for CUDA by nvcc as NVRTC would see it (-DMB_NVRTC=1, the defines as
  #define lines), skipped where there is no nvcc.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from metalbench.specs import Spec

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "kernels" / "include"
SHIM = ROOT / "tests" / "metal_shim"
CLANG = shutil.which("clang++-14")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def build(backend: str, body: str, name: str) -> str:
    return "".join([(INCLUDE / f"{backend}.h").read_text(), "\n", (INCLUDE / "common.h").read_text(),
                    f'\n#line 1 "{name}.c"\n', body])


# ---- the kernels ---------------------------------------------------------------------------------------

# WS_PUT / WS_TAKE between groups: every thread of every group puts a[i] in slot i;
# after the arrival count the last group takes every slot and writes it to c[i]. The
# values cross bit for bit (NaN as a NaN), and the workspace is left zero.
HANDOFF = """
MB_KERNEL(handoff) {
  SHARED int last;
  const int t = LOCAL_ID(0);
  const int g = GROUP_ID(0);
  const int tg = GROUP_SIZE(0);
  const int groups = NUM_GROUPS(0);
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + groups * tg);
  WS_PUT(ws + g * tg + t, LOAD(a, g * tg + t));
  DEVICE_FENCE();
  BARRIER();
  if (t == 0) last = ATOMIC_INC(counter) == groups - 1;
  BARRIER();
  if (last) {
    DEVICE_FENCE();
    for (int q = 0; q < groups; ++q) STORE(c, q * tg + t, WS_TAKE(ws + q * tg + t));
    if (t == 0) ATOMIC_STORE_ZERO(counter);
  }
}
"""

# FLOAT_AS_INT / INT_AS_FLOAT: c[i] is a[i] with its sign bit flipped through the int.
# ATOMIC_XCHG: every thread of the group swaps its id + 1 into one word; the old
# values it gets back, with what is left in the word, are 0 .. TG, each once; then a
# second word is swapped to 7 and back to 0 by each thread on its own.
BITS_AND_XCHG = """
MB_KERNEL(bits_and_xchg) {
  const int t = LOCAL_ID(0);
  const int tg = GROUP_SIZE(0);
  GLOBAL_PTR int* words = (GLOBAL_PTR int*)ws;
  STORE(c, t, INT_AS_FLOAT(FLOAT_AS_INT(LOAD(a, t)) ^ (int)0x80000000));
  const int old = ATOMIC_XCHG(words, t + 1);
  STORE(c, tg + t, (float)old);
  const int seven = ATOMIC_XCHG(words + 1 + t, 7);
  STORE(c, 2 * tg + t, (float)(seven + ATOMIC_XCHG(words + 1 + t, 0)));
}
"""

BODIES = {"handoff": HANDOFF, "bits_and_xchg": BITS_AND_XCHG}


# ---- run by PoCL -----------------------------------------------------------------------------------------


def _params() -> bytes:
    return Spec("matmul", "float32", 1, 1, 1, 1, False, True).params()


def _run(dev, name: str, a: np.ndarray, c_len: int, ws_words: int, groups: int, threads: int):
    kernel = dev.compile(build("opencl", BODIES[name], name), name, {"MB_F16": "0"}, f"dialect/{name}")
    bufs = {}
    for key, n in (("a", len(a)), ("b", 1), ("c", c_len), ("bias", 1), ("ws", ws_words)):
        bufs[key] = dev.allocate(4 * max(1, n))
        bufs[key].fill(0)
    bufs["a"].write(np.ascontiguousarray(a, dtype=np.float32))
    args = [bufs["a"], bufs["b"], bufs["c"], bufs["bias"], bufs["ws"], _params()]
    dev.run(kernel, args, [groups], [threads])
    c = np.empty(c_len, np.float32)
    ws = np.empty(ws_words, np.int32)
    bufs["c"].read(c)
    bufs["ws"].read(ws)
    return c, ws, (kernel, args)


def _special_floats(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, n).astype(np.float32)
    bits = x.view(np.uint32)
    # 0, -0, the smallest denormal, infinities, quiet and signalling NaNs, and the one
    # pattern (0xffffffff) whose complement is the empty word.
    special = [0x00000000, 0x80000000, 0x00000001, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF]
    bits[: len(special)] = special
    return bits.view(np.float32)


def _same_floats(got: np.ndarray, want: np.ndarray) -> bool:
    nan = np.isnan(want)
    return bool(np.array_equal(np.isnan(got), nan) and np.array_equal(got.view(np.uint32)[~nan],
                                                                      want.view(np.uint32)[~nan]))


def test_ws_put_and_take_hand_floats_bit_for_bit_and_leave_ws_zero(opencl):
    groups, tg = 8, 64
    a = _special_floats(groups * tg)
    c, ws, (kernel, args) = _run(opencl, "handoff", a, groups * tg, groups * tg + 1, groups, tg)
    assert _same_floats(c, a)
    assert not ws.any(), "the workspace must be left zero"
    opencl.run(kernel, args, [groups], [tg])  # a second launch finds it clean and works the same
    again = np.empty_like(c)
    args[2].read(again)
    assert _same_floats(again, a)


def test_bit_casts_and_atomic_exchange(opencl):
    tg = 64
    a = _special_floats(tg)
    c, ws, _ = _run(opencl, "bits_and_xchg", a, 3 * tg, 1 + tg, 1, tg)
    flipped = (a.view(np.uint32) ^ np.uint32(0x80000000)).view(np.float32)
    assert _same_floats(c[:tg], flipped)
    olds = sorted(c[tg: 2 * tg].astype(int).tolist() + [int(ws[0])])
    assert olds == list(range(tg + 1)), "each exchange returns the value it replaced, once"
    assert (c[2 * tg:] == 7).all() and not ws[1:].any()


# ---- as Metal and as CUDA ----------------------------------------------------------------------------------


@pytest.mark.skipif(CLANG is None, reason="clang++-14 is not installed")
@pytest.mark.parametrize("version", [300, 320])
@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("f16", ["0", "1"])
def test_parses_as_msl(tmp_path, name, version, f16):
    path = tmp_path / f"{name}.metal"
    path.write_text(build("metal", BODIES[name], name))
    r = subprocess.run([CLANG, "-fsyntax-only", "-x", "c++", "-std=c++17", "-Wno-unknown-attributes", "-I", str(SHIM),
                        f"-D__METAL_VERSION__={version}", f"-DMB_F16={f16}", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine")
@pytest.mark.parametrize("name", sorted(BODIES))
def test_compiles_with_nvcc(tmp_path, name):
    path = tmp_path / f"{name}.cu"
    path.write_text("#define MB_F16 1\n" + build("cuda", BODIES[name], name))
    r = subprocess.run([NVCC, "-arch=sm_90", "--std=c++17", "-DMB_NVRTC=1", "--ptx", str(path), "-o",
                        str(tmp_path / f"{name}.ptx")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
