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
from conftest import FAULT_KERNELS
from simd32.check import HEADER as SIMD32
from simd32.check import SIMD32_SLOTS

from metalbench import variants
from metalbench.specs import Spec

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "kernels" / "include"
SHIM = ROOT / "tests" / "metal_shim"
CLANG = shutil.which("clang++-14")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def build(backend: str, body: str, name: str, simd32: bool = False) -> str:
    """simd32 (OpenCL only): 32-lane SIMD groups emulated (tests/simd32/opencl_simd32.h)."""
    prelude = (INCLUDE / f"{backend}.h").read_text() + ("\n" + SIMD32.read_text() if simd32 else "")
    return "".join([prelude, "\n", (INCLUDE / "common.h").read_text(), f'\n#line 1 "{name}.c"\n', body])


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

# SIMD_BROADCAST: c[3 t .. 3 t + 2] are the values of lanes 0, SIMD_WIDTH - 1 and
# 5 % SIMD_WIDTH of t's SIMD group; c[3 TG + t] is the sum over the group's lanes
# gathered by broadcasting each lane in turn, the loop a body written for any width
# uses (at width 1: the thread's own value).
BROADCAST = """
MB_KERNEL(broadcast) {
  const int t = LOCAL_ID(0);
  const int tg = GROUP_SIZE(0);
  const float x = LOAD(a, t);
  STORE(c, 3 * t, SIMD_BROADCAST(x, 0));
  STORE(c, 3 * t + 1, SIMD_BROADCAST(x, SIMD_WIDTH - 1));
  STORE(c, 3 * t + 2, SIMD_BROADCAST(x, 5 % SIMD_WIDTH));
  float s = 0.0f;
  for (int l = 0; l < SIMD_WIDTH; ++l) s += SIMD_BROADCAST(x, l);
  STORE(c, 3 * tg + t, s);
}
"""

# LOAD4_IF: the vector path at aligned offsets (c[4 t ..]), the scalar path at
# offsets one past them (c[4 TG + 4 t ..]), which a vector load could not take.
LOAD4_IF_BODY = """
MB_KERNEL(load4_if) {
  const int t = LOCAL_ID(0);
  const int tg = GROUP_SIZE(0);
  const FLOAT4 v = LOAD4_IF(1, a, 4 * t);
  const FLOAT4 s = LOAD4_IF(p.k == -1, a, 4 * t + 1); /* false, known only at run time */
  STORE(c, 4 * t, v.x);
  STORE(c, 4 * t + 1, v.y);
  STORE(c, 4 * t + 2, v.z);
  STORE(c, 4 * t + 3, v.w);
  STORE(c, 4 * tg + 4 * t, s.x);
  STORE(c, 4 * tg + 4 * t + 1, s.y);
  STORE(c, 4 * tg + 4 * t + 2, s.z);
  STORE(c, 4 * tg + 4 * t + 3, s.w);
}
"""

# LOAD_UINT4: thread t reads words 4 t .. 4 t + 3 of a in one load and writes them to
# c[4 t ..] as they are (float32 data: a word's bits are an element's), in reverse order
# so that the components are told apart.
LOAD_UINT4_BODY = """
MB_KERNEL(load_uint4) {
  const int t = LOCAL_ID(0);
  const UINT4 v = LOAD_UINT4((GLOBAL_PTR const unsigned int*)a, 4 * t);
  STORE(c, 4 * t, INT_AS_FLOAT(v.w));
  STORE(c, 4 * t + 1, INT_AS_FLOAT(v.z));
  STORE(c, 4 * t + 2, INT_AS_FLOAT(v.y));
  STORE(c, 4 * t + 3, INT_AS_FLOAT(v.x));
}
"""

# QB_HALF_CODE: thread t takes word t of a and writes every 4-bit code of it (c[12 t ..
# 12 t + 7], low half first) and every 8-bit code (c[12 t + 8 .. + 11]), each times 2^(e bits).
HALF_CODE = """
MB_KERNEL(half_code) {
  const int t = LOCAL_ID(0);
  const unsigned int w = ((GLOBAL_PTR const unsigned int*)a)[t];
  for (int h = 0; h < 2; ++h) {
    for (int e = 0; e < 4; ++e) STORE(c, 12 * t + 4 * h + e, QB_HALF_CODE(w, h, e, 4));
    for (int e = 0; e < 2; ++e) STORE(c, 12 * t + 8 + 2 * h + e, QB_HALF_CODE(w, h, e, 8));
  }
}
"""

# WS_ARRIVE and WS_TAKE_SUM4 / WS_TAKE_SUM: every group puts a[g * TG + t] in slot
# g * TG + t; the last to arrive sums each t's slots over the groups, in group order,
# three outputs at once by WS_TAKE_SUM4 and the fourth by WS_TAKE_SUM, into c[t].
TAKE_SUM = """
MB_KERNEL(take_sum) {
  SHARED int last;
  const int t = LOCAL_ID(0);
  const int g = GROUP_ID(0);
  const int tg = GROUP_SIZE(0);
  const int groups = NUM_GROUPS(0);
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + groups * tg);
  WS_PUT(ws + g * tg + t, LOAD(a, g * tg + t));
  WS_ARRIVE(counter, groups, last);
  if (last) {
    if (t % 4 == 0) {
      const MBSum4 s = WS_TAKE_SUM4(ws + t, 1, 3, tg, groups);
      for (int u = 0; u < 3; ++u) STORE(c, t + u, s.v[u]);
      STORE(c, t + 3, WS_TAKE_SUM(ws + t + 3, tg, groups));
    }
    if (t == 0) ATOMIC_STORE_ZERO(counter);
  }
}
"""

BODIES = {"handoff": HANDOFF, "bits_and_xchg": BITS_AND_XCHG, "broadcast": BROADCAST, "load4_if": LOAD4_IF_BODY,
          "load_uint4": LOAD_UINT4_BODY, "half_code": HALF_CODE, "take_sum": TAKE_SUM}


# ---- run by PoCL -----------------------------------------------------------------------------------------


def _params() -> bytes:
    return Spec("matmul", "float32", 1, 1, 1, 1, False, True).params()


def _run(dev, name: str, a: np.ndarray, c_len: int, ws_words: int, groups: int, threads: int,
         dtype=np.float32, simd32: bool = False):
    f16 = "1" if dtype == np.float16 else "0"
    kernel = dev.compile(build("opencl", BODIES[name], name, simd32), name, {"MB_DTYPE": f16},
                         f"dialect/{name}{'@simd32' if simd32 else ''}")
    bufs = {}
    for key, n in (("a", len(a)), ("b", 1), ("c", c_len), ("bias", 1), ("ws", ws_words)):
        bufs[key] = dev.allocate(4 * max(1, n))
        bufs[key].fill(0)
    bufs["a"].write(np.ascontiguousarray(a, dtype=dtype))
    args = [bufs["a"], bufs["b"], bufs["c"], bufs["bias"], bufs["ws"], _params()]
    if simd32:
        args.append(dev.allocate(4 * SIMD32_SLOTS * groups * threads))
    dev.run(kernel, args, [groups], [threads])
    c = np.empty(c_len, dtype)
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


def test_ws_take_sum_adds_every_group_in_order_and_leaves_ws_zero(opencl):
    groups, tg = 12, 32  # more groups than WS_TAKE_SUM4 has exchanges in flight at once
    a = np.random.default_rng(9).uniform(-1, 1, groups * tg).astype(np.float32)
    c, ws, (kernel, args) = _run(opencl, "take_sum", a, tg, groups * tg + 1, groups, tg)
    want = np.zeros(tg, np.float32)
    for g in range(groups):  # float32, in group order, as the kernel adds
        want = want + a[g * tg: (g + 1) * tg]
    assert np.array_equal(c, want)
    assert not ws.any(), "the workspace must be left zero"


def test_bit_casts_and_atomic_exchange(opencl):
    tg = 64
    a = _special_floats(tg)
    c, ws, _ = _run(opencl, "bits_and_xchg", a, 3 * tg, 1 + tg, 1, tg)
    flipped = (a.view(np.uint32) ^ np.uint32(0x80000000)).view(np.float32)
    assert _same_floats(c[:tg], flipped)
    olds = sorted(c[tg: 2 * tg].astype(int).tolist() + [int(ws[0])])
    assert olds == list(range(tg + 1)), "each exchange returns the value it replaced, once"
    assert (c[2 * tg:] == 7).all() and not ws[1:].any()


@pytest.mark.parametrize("width", [1, 32], ids=["opencl", "simd32"])
def test_simd_broadcast(opencl, width):
    tg = 128
    a = np.random.default_rng(3).uniform(-1, 1, tg).astype(np.float32)
    c, _, _ = _run(opencl, "broadcast", a, 4 * tg, 1, 1, tg, simd32=width == 32)
    t = np.arange(tg)
    base = t - t % width
    lanes = c[: 3 * tg].reshape(tg, 3)
    assert np.array_equal(lanes[:, 0], a[base])
    assert np.array_equal(lanes[:, 1], a[base + width - 1])
    assert np.array_equal(lanes[:, 2], a[base + 5 % width])
    sums = a.reshape(-1, width).astype(np.float64).sum(axis=1).repeat(width)
    np.testing.assert_allclose(c[3 * tg:], sums, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["float16", "float32"])
def test_load4_if_takes_both_paths(opencl, dtype):
    tg = 32
    a = np.random.default_rng(5).uniform(-1, 1, 4 * tg + 4).astype(dtype)
    c, _, _ = _run(opencl, "load4_if", a, 8 * tg, 1, 1, tg, dtype=dtype)
    assert np.array_equal(c[: 4 * tg], a[: 4 * tg])
    assert np.array_equal(c[4 * tg:], np.concatenate([a[4 * i + 1: 4 * i + 5] for i in range(tg)]))


def test_load_uint4_reads_four_words_bit_for_bit(opencl):
    tg = 32
    a = _special_floats(4 * tg)
    c, _, _ = _run(opencl, "load_uint4", a, 4 * tg, 1, 1, tg)
    assert _same_floats(c, a.reshape(tg, 4)[:, ::-1].ravel())


def test_half_code_is_every_code_times_its_place_exactly(opencl):
    tg = 64
    words = np.random.default_rng(11).integers(0, 2**32, tg, dtype=np.uint64).astype(np.uint32)
    words[:3] = [0, 0xFFFFFFFF, 0x80000001]  # every code 0, every code the largest, the two ends
    c, _, _ = _run(opencl, "half_code", words.view(np.float32), 12 * tg, 1, 1, tg)
    want = []
    for w in words.tolist():
        for h in range(2):
            half = (w >> (16 * h)) & 0xFFFF
            want.append([half & (0xF << (4 * e)) for e in range(4)])
        want.append([(w >> (16 * h)) & (0xFF << (8 * e)) for h in range(2) for e in range(2)])
    assert np.array_equal(c, np.array(want, dtype=np.float32).ravel())


# ---- as Metal and as CUDA ----------------------------------------------------------------------------------


def _parse_msl(path: Path, version: int, defines: dict[str, str]) -> subprocess.CompletedProcess:
    """clang++-14 parses the Metal source at `path` against tests/metal_shim."""
    return subprocess.run([CLANG, "-fsyntax-only", "-x", "c++", "-std=c++17", "-Wno-unknown-attributes", "-I",
                           str(SHIM), f"-D__METAL_VERSION__={version}", *(f"-D{k}={v}" for k, v in defines.items()),
                           str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CLANG is None, reason="clang++-14 is not installed")
@pytest.mark.parametrize("version", [300, 320])
@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("f16", ["0", "1"])
def test_parses_as_msl(tmp_path, name, version, f16):
    path = tmp_path / f"{name}.metal"
    path.write_text(build("metal", BODIES[name], name))
    r = _parse_msl(path, version, {"MB_DTYPE": f16})
    assert r.returncode == 0, r.stderr


def _planted_faults() -> list:
    return [v for v in variants.load_variants("metal", [FAULT_KERNELS]) if v.family.manifest.parent == FAULT_KERNELS]


@pytest.mark.skipif(CLANG is None, reason="clang++-14 is not installed")
@pytest.mark.parametrize("fault", _planted_faults(), ids=lambda v: v.family.name)
def test_the_planted_faults_parse_as_msl(tmp_path, fault):
    """tests/faults: the same source is meant to run on every backend, Metal included."""
    path = tmp_path / f"{fault.family.name}.metal"
    path.write_text(fault.source("metal"))
    for dtype in fault.family.dtypes:
        r = _parse_msl(path, 300, fault.defines(dtype))
        assert r.returncode == 0, r.stderr


@pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine")
@pytest.mark.parametrize("name", sorted(BODIES))
def test_compiles_with_nvcc(tmp_path, name):
    path = tmp_path / f"{name}.cu"
    path.write_text("#define MB_DTYPE 1\n" + build("cuda", BODIES[name], name))
    r = subprocess.run([NVCC, "-arch=sm_90", "--std=c++17", "-DMB_NVRTC=1", "--ptx", str(path), "-o",
                        str(tmp_path / f"{name}.ptx")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
