"""The Metal backend on a real Apple GPU: correctness of the compiled kernels and the
MPS builtins, every kernel family verified on the smoke and odd suites, the default
suite run as a user runs it, and one check for every behaviour docs/macos.md lists as
confirmable only on a Mac ("What the first Mac run checks", M1 to M22). A failing check
names the assumption that proved wrong.

On a Mac, after `pip install ".[test]"`:

    python -m pytest -m gpu

Hosted macOS runners expose only an "Apple Paravirtual device": MPS does not support
it, and custom kernels have been reported to return zeros there (JuliaGPU/Metal.jl
issue 309), so GPU tests skip on it. Elsewhere than macOS the build has no Metal
backend at all, which is checked too.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import suite_in_bfloat16

from metalbench import _core, peak, report, runner, variants
from metalbench.dtypes import define
from metalbench.specs import DTYPES, Spec, load_suite
from metalbench.store import Store

PARAVIRTUAL = "Apple Paravirtual device"
VIEW = 256  # DeviceInfo.view_alignment


def _metal_reason() -> str:
    if "metal" not in _core.backends():
        return "this build has no Metal backend (it is built on macOS only)"
    reason = _core.unavailable_reason("metal")
    if reason:
        return reason
    name = _core.devices("metal")[0]["name"]
    if PARAVIRTUAL in name:
        return (f"only the {PARAVIRTUAL} of a hosted runner: MPS does not support it and custom kernels are "
                "reported to return zeros there (JuliaGPU/Metal.jl issue 309)")
    return ""


def wrong(assumption: str, what: str) -> str:
    """The message of a failed check: which documented assumption it disproves."""
    return f"docs/macos.md assumption {assumption} is wrong: {what}"


@pytest.fixture(scope="module")
def metal():
    reason = _metal_reason()
    if reason:
        pytest.skip(f"no real Apple GPU: {reason}")
    return _core.open("metal", 0)


def open_metal(monkeypatch, timing: str = "auto", storage: str = "auto"):
    """A device opened with METALBENCH_METAL_TIMING and METALBENCH_METAL_STORAGE set."""
    reason = _metal_reason()
    if reason:
        pytest.skip(f"no real Apple GPU: {reason}")
    monkeypatch.setenv("METALBENCH_METAL_TIMING", timing)
    monkeypatch.setenv("METALBENCH_METAL_STORAGE", storage)
    return _core.open("metal", 0)


def uses_counters(dev) -> bool:
    return "pass counters" in dev.info["driver"]


def quick(dev, kernel, args, groups, threads, samples: int = 20, **kw) -> dict:
    """A measurement that stops at `samples` per clock, whatever the noise."""
    settings = dict(warmup=2, min_samples=samples, max_samples=samples, min_time=0.0, max_time=60.0, max_noise=1.0,
                    rank_by="gpu")
    settings.update(kw)
    return dev.measure(kernel, args, groups, threads, **settings)


def in_thread(fn, timeout: float, what: str):
    """Runs `fn` in a thread and fails, naming `what`, if it does not return within `timeout` seconds."""
    out: dict = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(what)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_the_backend_is_built_exactly_on_macos():
    assert ("metal" in _core.backends()) == (sys.platform == "darwin")
    if sys.platform == "darwin":
        assert _core.backends()[0] == "metal"  # first choice of --backend auto


@pytest.mark.skipif(sys.platform != "darwin", reason="Metal exists on macOS only")
def test_devices_are_listed_even_on_a_hosted_runner():
    found = _core.devices("metal")
    assert found, _core.unavailable_reason("metal")
    for i, d in enumerate(found):
        assert d["backend"] == "metal" and d["index"] == i and d["name"]
        assert d["max_group_size"] >= 32 and d["memory_bytes"] > 0
        assert d["view_alignment"] == VIEW and d["max_held_launches"] == 4096
        assert ("pass counters" in d["driver"]) != ("command-buffer times" in d["driver"])
        assert d["timing_source"].startswith("Metal ") and d["clock_source"].startswith("none")


# --- kernels ---------------------------------------------------------------------------------------------

# Each thread runs `iters` dependent multiply-adds on its element: a kernel whose length
# the test chooses, that binds one buffer and writes it.
SPIN = """
#include <metal_stdlib>
using namespace metal;
kernel void spin(device float* x [[buffer(0)]], constant uint& iters [[buffer(1)]],
                 uint i [[thread_position_in_grid]]) {
  float v = x[i];
  for (uint j = 0; j < iters; ++j) v = fma(v, 0.9999f, 0.0001f);
  x[i] = v;
}
"""
SPIN_GROUPS, SPIN_THREADS = [256], [256]


class Spin:
    """The spin kernel on one device, with an iteration count that makes it last about `target_ns`."""

    def __init__(self, dev, target_ns: float):
        self.dev = dev
        self.kernel = dev.compile(SPIN, "spin", {}, "test/spin")
        self.x = dev.allocate(4 * SPIN_GROUPS[0] * SPIN_THREADS[0])
        self.x.write(np.zeros(SPIN_GROUPS[0] * SPIN_THREADS[0], np.float32))
        self.iters = 256
        for _ in range(4):  # scale until a launch lasts about target_ns
            took = quick(dev, self.kernel, self.args(), SPIN_GROUPS, SPIN_THREADS, samples=5)["gpu"]["median"]
            self.iters = int(min(1 << 26, max(1, self.iters * target_ns / max(took, 1.0))))
            if abs(took - target_ns) < 0.2 * target_ns:
                break

    def args(self, x=None):
        return [x or self.x, struct.pack("<I", self.iters)]

    def measure(self, dev=None, **kw) -> dict:
        dev = dev or self.dev
        kernel = self.kernel if dev is self.dev else dev.compile(SPIN, "spin", {}, "test/spin")
        x = self.x if dev is self.dev else dev.allocate(self.x.nbytes)
        return quick(dev, kernel, self.args(x), SPIN_GROUPS, SPIN_THREADS, **kw)


# --- one GEMM problem, packed as the kernel ABI (kernels/include/common.h) --------------------------------

class Problem:
    def __init__(self, dtype, op="matmul", batch=2, m=3, n=70, k=64, trans_a=False, trans_b=True, alpha=1.0,
                 beta=0.0, seed=0):
        rng = np.random.default_rng(seed)
        self.dtype, self.op, self.shape = np.dtype(dtype), op, (batch, m, n, k)
        self.a = rng.uniform(-1, 1, (batch, k, m) if trans_a else (batch, m, k)).astype(dtype)
        self.b = rng.uniform(-1, 1, (batch, n, k) if trans_b else (batch, k, n)).astype(dtype)
        self.bias = rng.uniform(-1, 1, n).astype(dtype) if op == "matmul_bias_add" else np.zeros(1, dtype)
        if op == "matmul_alpha_beta" and beta != 0:
            self.c0 = rng.uniform(-1, 1, (batch, m, n)).astype(dtype)
        else:
            self.c0 = np.full((batch, m, n), np.nan, dtype)  # a sentinel C must not be read
        # Packed by the one packer of the kernel ABI (specs.Spec.params, checked against the core's table).
        self.params = Spec(op, self.dtype.name, batch, m, n, k, trans_a, trans_b, alpha, beta).params()
        a64 = self.a.astype(np.float64).transpose(0, 2, 1) if trans_a else self.a.astype(np.float64)
        b64 = self.b.astype(np.float64).transpose(0, 2, 1) if trans_b else self.b.astype(np.float64)
        acc = a64 @ b64
        if op == "matmul_bias_add":
            acc = acc + self.bias.astype(np.float64)
        elif op == "matmul_alpha_beta":
            acc = alpha * acc + (beta * self.c0.astype(np.float64) if beta != 0 else 0.0)
        self.ref = acc

    @property
    def geometry(self):
        batch, m, n, _ = self.shape
        return [(n + 63) // 64, m, batch], [64, 1, 1]

    def operands(self):
        return [self.a, self.b, self.c0, self.bias, np.zeros(1, np.float32)]

    def buffers(self, dev):
        def upload(x):
            buf = dev.allocate(x.nbytes)
            buf.write(np.ascontiguousarray(x))
            return buf

        bufs = [upload(x) for x in self.operands()]
        self.c = bufs[2]
        return [*bufs, self.params]

    def views(self, dev, pad: int = 2 * VIEW, fill: int = 0x7F):
        """Each operand in a view `pad` bytes into a larger buffer pre-filled with `fill`; the parents too."""
        parents, views = [], []
        for x in self.operands():
            parent = dev.allocate(pad + x.nbytes + pad)
            parent.fill(fill)
            view = parent.view(pad, x.nbytes)
            view.write(np.ascontiguousarray(x))
            parents.append(parent)
            views.append(view)
        self.c = views[2]
        return [*views, self.params], parents

    def check(self, assumption: str = "", what: str = ""):
        out = np.empty(self.c0.shape, self.dtype)
        self.c.read(out)
        tol = 3e-2 if self.dtype == np.float16 else 1e-4
        try:
            np.testing.assert_allclose(out.astype(np.float64), self.ref, rtol=tol, atol=tol)
        except AssertionError as e:
            if not assumption:
                raise
            raise AssertionError(wrong(assumption, f"{what}\n{e}")) from None


def family(name: str) -> variants.Family:
    return next(f for f in variants.load_families() if f.name == name)


def naive(dev, dtype):
    """naive/default as a sweep builds it: its source and its defines (MB_DTYPE, MB_TG), nothing unprefixed."""
    (v,) = variants.expand(family("naive"))
    return runner.build_kernel(dev, "metal", v, dtype)


def mps(dev, dtype, name="mps"):
    label = "mps/baseline" if name == "mps" else f"{name}/default"
    return dev.builtin(name, label, defines=define(dtype))


def case_id(c: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in c.items())


# Every dtype the MPS builtins list that has a host type here (M10, M11: what MPS accepts).
# Problem holds numpy arrays, which have no bfloat16: these direct checks cover float16 and
# float32; MPS in bfloat16 is checked through the runner (metalbench run on a bfloat16 suite).
NUMPY_DTYPES = {name for name in DTYPES if name != "bfloat16"}
MPS_DTYPES = sorted(set(family("mps").dtypes) & NUMPY_DTYPES)
GEMV_DTYPES = sorted(set(family("mps-gemv").dtypes) & NUMPY_DTYPES)
CASES = [
    dict(op="matmul"),
    dict(op="matmul", m=1, trans_b=False),
    dict(op="matmul", trans_a=True, trans_b=False),
    dict(op="matmul_bias_add"),
    dict(op="matmul_alpha_beta", alpha=0.5, beta=2.0),
    dict(op="matmul_alpha_beta", alpha=-1.5, beta=0.0),
]
# MPSMatrixFullyConnected: the bias in the nn layout, one batch.
FC_CASES = [
    dict(op="matmul_bias_add", batch=1, m=3, trans_b=False),
    dict(op="matmul_bias_add", batch=1, m=1, n=130, k=96, trans_b=False),
]
# MPSMatrixVectorMultiplication: m = 1, both layouts, every op, batches.
GEMV_CASES = [
    dict(op="matmul", batch=1, m=1, trans_b=True),
    dict(op="matmul", batch=1, m=1, trans_b=False),
    dict(op="matmul", batch=2, m=1, trans_b=True),
    dict(op="matmul", batch=2, m=1, trans_b=False),
    dict(op="matmul", batch=1, m=1, trans_a=True, trans_b=True),
    dict(op="matmul_bias_add", batch=1, m=1, trans_b=True),
    dict(op="matmul_bias_add", batch=1, m=1, trans_b=False),
    dict(op="matmul_alpha_beta", batch=1, m=1, alpha=0.5, beta=2.0),
    dict(op="matmul_alpha_beta", batch=1, m=1, alpha=-1.5, beta=0.0, trans_b=False),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_naive_is_correct(metal, dtype, case):
    p = Problem(dtype, **case)
    metal.run(naive(metal, dtype), p.buffers(metal), *p.geometry)
    p.check()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", MPS_DTYPES)
@pytest.mark.parametrize("case", CASES + FC_CASES, ids=case_id)
def test_mps_is_correct_and_never_reads_c_when_beta_is_0(metal, dtype, case):
    """M9: with beta = 0 MPS does not read C (pre-filled with NaN); M10: the fully connected bias path."""
    p = Problem(dtype, **case)
    try:
        metal.run(mps(metal, dtype), p.buffers(metal), [1], [1])
    except (_core.DeviceError, _core.UsageError) as e:
        pytest.fail(wrong("M10", f"MPS refused {dtype} ({case_id(case)}): {e}"))
    if case["op"] == "matmul_bias_add":
        p.check("M10", f"MPS's bias path gave a wrong C for {case_id(case)} {dtype}")
    elif case["op"] == "matmul" or case.get("beta", 0.0) == 0:
        p.check("M9", f"MPS gave a wrong C for {case_id(case)} {dtype}, where C held NaN and beta is 0")
    else:
        p.check()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GEMV_DTYPES)
@pytest.mark.parametrize("case", GEMV_CASES, ids=case_id)
def test_mps_gemv_is_correct(metal, dtype, case):
    """M11: MPSMatrixVectorMultiplication with the row of A as x and the row of C as y, batches included."""
    p = Problem(dtype, **case)
    try:
        metal.run(mps(metal, dtype, "mps-gemv"), p.buffers(metal), [1], [1])
    except (_core.DeviceError, _core.UsageError) as e:
        pytest.fail(wrong("M11", f"MPSMatrixVectorMultiplication refused {dtype} ({case_id(case)}): {e}"))
    p.check("M11", f"mps-gemv gave a wrong C for {case_id(case)} {dtype}")


@pytest.mark.gpu
def test_mps_gemv_refuses_more_than_one_row(metal):
    p = Problem("float32", m=2)
    with pytest.raises(_core.UsageError, match=r"\[metal::launch\].*m = 1"):
        metal.run(mps(metal, "float32", "mps-gemv"), p.buffers(metal), [1], [1])


# --- M1 to M3: how times are taken -----------------------------------------------------------------------


@pytest.mark.gpu
def test_apple_gpus_time_compute_passes_with_counters(metal):
    """M1: an Apple GPU samples timestamps at stage boundaries, and the probe at open passes."""
    if not metal.info["name"].startswith("Apple"):
        pytest.skip(f"not an Apple GPU: {metal.info['name']}")
    assert uses_counters(metal), wrong(
        "M1", f"this Apple GPU times command buffers, not passes: {metal.info['timing_source']}")


@pytest.mark.gpu
def test_pass_and_command_buffer_times_agree(metal, monkeypatch):
    """M2: ticks converted to nanoseconds agree with GPUStartTime/GPUEndTime for a 2 ms kernel, within 5%."""
    if not uses_counters(metal):
        pytest.skip(f"counters are not in use here: {metal.info['timing_source']}")
    spin = Spin(metal, 2e6)
    by_pass = spin.measure(samples=15)["gpu"]["median"]
    buffers = open_metal(monkeypatch, timing="command-buffer")
    by_buffer = spin.measure(buffers, samples=15)["gpu"]["median"]
    assert abs(by_buffer - by_pass) <= 0.05 * by_buffer, wrong(
        "M2", f"a kernel's own pass took {by_pass / 1e3:.1f} us by counters ({metal.info['timing_source']}) and "
              f"its command buffer {by_buffer / 1e3:.1f} us by GPUStartTime/GPUEndTime; they should agree within 5%")


@pytest.mark.gpu
@pytest.mark.parametrize("timing", ["auto", "command-buffer"])
def test_a_batch_has_no_host_gaps(monkeypatch, timing):
    """M3: N launches back to back cost at most N single launches: no host gap, no per-launch stall."""
    dev = open_metal(monkeypatch, timing=timing)
    spin = Spin(dev, 50e3)
    r = spin.measure(samples=20)
    per_launch, batch = r["gpu"]["median"], r["batch"]["median"]
    assert r["batch_size"] > 1
    assert batch <= 1.05 * per_launch + 2000, wrong(
        "M3", f"{r['batch_size']} launches in one batch ({timing} timing) took "
              f"{batch / 1e3:.1f} us each, more than one launch alone ({per_launch / 1e3:.1f} us): the GPU waited "
              "between launches of the batch")


@pytest.mark.gpu
@pytest.mark.parametrize("timing", ["auto", "command-buffer"])
@pytest.mark.parametrize("make", [naive, mps], ids=["naive", "mps"])
def test_launches_of_different_slots_never_overlap(monkeypatch, timing, make):
    """M4: join passes order launches that share no buffer (else timed() raises on overlapping samples)."""
    dev = open_metal(monkeypatch, timing=timing)
    problems = [Problem("float16", seed=s) for s in range(3)]
    slots = [p.buffers(dev) for p in problems]
    groups, threads = problems[0].geometry
    try:
        r = quick(dev, make(dev, "float16"), slots, groups, threads, samples=30)
    except _core.DeviceError as e:
        pytest.fail(wrong("M4", f"consecutive launches ran concurrently ({timing} timing): {e}"))
    assert (r["gpu_ns"] > 0).all() and (r["batch_ns"] > 0).all()
    for p in problems:
        p.check("M4", "a slot's output is wrong after a round over three slots")


@pytest.mark.gpu
@pytest.mark.parametrize("timing, launches", [("command-buffer", 1200), ("auto", 9000)])
def test_runs_longer_than_a_window_neither_stall_nor_overlap(monkeypatch, timing, launches):
    """M5: a run longer than a window (511 command buffers; 4 x 1024 counter launches) is paced in windows,
    each behind its own gate, within the queue's depth of 1024: no deadlock, and its samples stay ordered."""
    dev = open_metal(monkeypatch, timing=timing)
    spin = Spin(dev, 5e3)
    r = in_thread(lambda: spin.measure(samples=launches, max_time=600.0), 300,
                  wrong("M5", f"a timed run of {launches} launches ({timing} timing) did not finish in 300 s"))
    assert r["gpu"]["count"] == launches and (r["gpu_ns"] > 0).all()


@pytest.mark.gpu
def test_two_threads_measuring_one_device_are_serialized(metal):
    """M6: run() and measure() from several threads on one device finish, each correct."""
    problems = [Problem("float32", seed=s) for s in range(2)]
    bufs = [p.buffers(metal) for p in problems]
    kernel = naive(metal, "float32")
    groups, threads = problems[0].geometry

    def measuring(i):
        return lambda: [quick(metal, kernel, bufs[i], groups, threads, samples=50) for _ in range(5)]

    def running():
        for _ in range(200):
            metal.run(kernel, bufs[0], groups, threads)

    workers = [threading.Thread(target=f, daemon=True) for f in (measuring(0), measuring(1), running)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert not w.is_alive(), wrong("M6", "two threads timing on one device deadlocked")
    for p in problems:
        p.check("M6", "an output is wrong after concurrent use")


# --- M7, M8, M12: buffers -----------------------------------------------------------------------------------


VIEW_CASES = [dict(op="matmul_bias_add"), dict(op="matmul_bias_add", batch=1, trans_b=False)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", VIEW_CASES, ids=case_id)
@pytest.mark.parametrize("make", [naive, mps], ids=["naive", "mps"])
def test_views_bind_at_their_offset(metal, make, case):
    """M7: a view is its parent's bytes at its offset, for kernels (setBuffer:offset:) and MPS (offset:)."""
    p = Problem("float32", **case)
    args, parents = p.views(metal)
    geometry = p.geometry if make is naive else ([1], [1])
    metal.run(make(metal, "float32"), args, *geometry)
    p.check("M7", "an operand passed as a view was read or written at the wrong place")
    whole = np.empty(parents[2].nbytes, np.uint8)
    parents[2].read(whole)
    c_bytes = p.c0.nbytes
    outside = np.concatenate([whole[:2 * VIEW], whole[2 * VIEW + c_bytes:]])
    assert (outside == 0x7F).all(), wrong("M7", "a launch on a view wrote outside it")


@pytest.mark.gpu
def test_views_of_views_and_their_limits(metal):
    parent = metal.allocate(4 * VIEW)
    parent.write(np.arange(VIEW, dtype=np.uint32))
    inner = parent.view(VIEW, 2 * VIEW).view(VIEW, 16)
    got = np.empty(4, np.uint32)
    inner.read(got)
    assert list(got) == [128, 129, 130, 131]  # bytes 512..527 of the parent
    with pytest.raises(_core.UsageError, match=r"\[metal::view\].*multiple of 256"):
        parent.view(4, 16)
    with pytest.raises(_core.UsageError):
        parent.view(3 * VIEW, 2 * VIEW)


def _round_trips(dev, assumption: str):
    rng = np.random.default_rng(1)
    for size in (4, 1000, 1003, (1 << 20) + 1):
        data = rng.integers(0, 255, size, dtype=np.uint8)
        buf = dev.allocate(size)
        buf.write(data)
        got = np.empty(size, np.uint8)
        buf.read(got)
        assert (got == data).all(), wrong(assumption, f"{size} bytes written and read back differ")
        if size > 8:  # unaligned pieces: the staging path reads the words around them back first
            piece = rng.integers(0, 255, 5, dtype=np.uint8)
            buf.write(piece, offset=3)
            data[3:8] = piece
            part = np.empty(6, np.uint8)
            buf.read(part, offset=1)
            assert (part == data[1:7]).all(), wrong(assumption, "an unaligned write or read moved other bytes")
        buf.fill(0xA5)
        buf.read(got)
        assert (got == 0xA5).all(), wrong(assumption, f"fill of {size} bytes")
        other = dev.allocate(size)
        other.write(data)
        buf.copy_from(other)
        buf.read(got)
        assert (got == data).all(), wrong(assumption, f"copy_from of {size} bytes")


def _read_into(buf, out: np.ndarray) -> np.ndarray:
    buf.read(out)
    return out


@pytest.mark.gpu
def test_copy_from_copies(metal):
    """M8: copy_from copies whole buffers and views (a blit, then an odd tail through the host)."""
    _round_trips(metal, "M8")
    parent = metal.allocate(4 * VIEW)
    parent.write(np.arange(VIEW, dtype=np.uint32))
    low, high = parent.view(0, VIEW + 3), parent.view(2 * VIEW, VIEW + 3)
    high.copy_from(low)
    got = _read_into(parent, np.empty(VIEW, np.uint32))
    assert (got[128:192] == np.arange(64)).all(), wrong("M8", "copy_from between two views of one buffer")
    with pytest.raises(_core.UsageError, match="overlap"):
        parent.view(0, 2 * VIEW).copy_from(parent.view(VIEW, 2 * VIEW))


@pytest.mark.gpu
def test_private_storage_round_trips_and_computes(monkeypatch):
    """M12: buffers in private storage (what GPUs without unified memory get) write, read, fill, copy and view."""
    dev = open_metal(monkeypatch, storage="private")
    assert "private storage" in dev.info["driver"]
    _round_trips(dev, "M12")
    for make, case in ((naive, VIEW_CASES[0]), (mps, VIEW_CASES[0]), (mps, VIEW_CASES[1])):
        p = Problem("float16", **case)
        args, _ = p.views(dev)
        dev.run(make(dev, "float16"), args, *(p.geometry if make is naive else ([1], [1])))
        p.check("M12", f"{make.__name__} on private buffers (through views) gave a wrong C for {case_id(case)}")
    p = Problem("float32")
    r = quick(dev, naive(dev, "float32"), p.buffers(dev), *p.geometry, samples=10)
    assert (r["gpu_ns"] > 0).all()
    p.check("M12", "naive measured on private buffers gave a wrong C")


# --- M13: split-K ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nt", "nn"])
def test_split_k_gives_the_reference_on_large_k(metal, layout):
    """M13: kernels/portable/splitk.c hands its partials over through device memory correctly on large k,
    launch after launch (the last group also resets the workspace)."""
    from metalbench import metrics, runner, variants
    from metalbench.reference import compute_reference, make_inputs
    from metalbench.specs import Spec

    spec = Spec(op="matmul", dtype="float16", batch=1, m=1, n=512, k=16384, transpose_b=layout == "nt")
    inputs = make_inputs(spec)
    ref = compute_reference(spec, inputs)
    chosen = [v for v in variants.load_variants("metal") if v.family.name == "splitk"
              and v.unsupported_reason(spec) is None]
    assert chosen, "no split-K variant supports the spec"
    for v in chosen:
        bufs = runner.upload_inputs(metal, spec, inputs)
        ws = metal.allocate(4 * v.workspace_floats(spec))
        ws.fill(0)
        c_before = metrics.initial_c(spec, inputs)
        kernel = runner.build_kernel(metal, "metal", v, spec.dtype)
        args = [bufs["a"], bufs["b"], bufs["c"], bufs["bias"], ws, spec.params()]
        groups, threads = v.geometry(spec)
        for launches in (1, 30):
            bufs["c"].write(np.ascontiguousarray(c_before))
            for _ in range(launches):
                metal.run(kernel, args, groups, threads)
            out = np.empty(spec.shape_c, c_before.dtype)
            bufs["c"].read(out)
            verdict = metrics.check(spec, out, ref, c_before)
            assert verdict.verdict == "ok", wrong(
                "M13", f"{v.id} after {launches} launches on k = {spec.k}: {verdict.reason}")


# --- errors and limits ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_kernel_limits_are_reported_and_enforced(metal):
    kernel = naive(metal, "float32")
    assert 32 <= kernel.max_group_size <= metal.info["max_group_size"]
    p = Problem("float32")
    with pytest.raises(_core.UsageError, match="exceeds"):
        metal.run(kernel, p.buffers(metal), [1], [kernel.max_group_size * 2])


@pytest.mark.gpu
def test_errors_say_where_they_come_from(metal):
    with pytest.raises(_core.CompileError) as info:
        metal.compile("kernel void broken(device float* y) { y[0] = undefined_name; }", "broken", {}, "mine/broken")
    assert str(info.value).startswith("[metal::compile] mine/broken: ") and "undefined_name" in info.value.log
    with pytest.raises(_core.CompileError, match=r"^\[metal::compile\] mine/other: no kernel named 'other'"):
        metal.compile("kernel void k(device float* y) { y[0] = 1; }", "other", {}, "mine/other")
    with pytest.raises(_core.UsageError, match=r"^\[metal::builtin\] x/y: no vendor library routine 'cublas'"):
        metal.builtin("cublas", "x/y", {"MB_DTYPE": "1"})


@pytest.mark.gpu
def test_mps_refuses_what_it_cannot_take(metal):
    p = Problem("float32")
    args = p.buffers(metal)
    with pytest.raises(_core.UsageError, match="6 GEMM arguments"):
        metal.run(mps(metal, "float32"), args[:5], [1], [1])
    small = metal.allocate(16)
    with pytest.raises(_core.UsageError, match="B needs"):
        metal.run(mps(metal, "float32"), [args[0], small, *args[2:]], [1], [1])


@pytest.mark.gpu
def test_environment_settings_are_checked(metal, monkeypatch):
    monkeypatch.setenv("METALBENCH_METAL_TIMING", "sometimes")
    with pytest.raises(_core.UsageError, match="METALBENCH_METAL_TIMING"):
        _core.open("metal", 0)
    monkeypatch.setenv("METALBENCH_METAL_TIMING", "auto")
    monkeypatch.setenv("METALBENCH_METAL_STORAGE", "managed")
    with pytest.raises(_core.UsageError, match="METALBENCH_METAL_STORAGE"):
        _core.open("metal", 0)


# --- M14, M15: every family, and the default suite as a user runs it -------------------------------------


def _metal_families(dtype: str | None = None) -> list[str]:
    """Every family that runs on Metal (in `dtype`, when given), read from the manifests now: families added
    later are covered too."""
    try:
        return [f.name for f in variants.load_families() if "metal" in f.backends and dtype in (None, *f.dtypes)]
    except Exception as e:  # noqa: BLE001 - reported by the tests below, not at collection
        return [f"<manifests: {e}>"]


VERIFIED = ("ok", "raced")  # raced out: verified correct on its brief lap, then found slower
BAD = ("failed", "wrong", "timeout", "crashed")


@pytest.fixture(scope="module")
def sweeps(metal, tmp_path_factory):
    """Every Metal variant swept over a suite, with racing, once per suite: name -> (run, report)."""
    done: dict = {}

    def get(suite: str):
        if suite not in done:
            folder = tmp_path_factory.mktemp(suite)
            store = Store(folder / "results.sqlite")
            retyped = folder / "suite.toml"
            if suite.endswith(BF16):
                retyped.write_text(suite_in_bfloat16(suite.removesuffix(BF16)))
            loaded = load_suite(retyped if retyped.exists() else suite)
            chosen = runner.with_baseline(variants.load_variants("metal"), "metal", specs=loaded.specs)
            run = store.load_run(runner.run(loaded, chosen, backend="metal", store=store))
            done[suite] = (run, report.build(run))
        return done[suite]

    return get


BF16 = "-bfloat16"  # a built-in suite's name + this: its shapes, every spec in bfloat16 (M22)


def _of(run, name: str) -> list:
    return [r for r in run.results if r.variant.split("/", 1)[0] == name]


def _no_pair_bad_or_silent(assumption: str, what: str, mine: list) -> None:
    """No pair of `mine` failed, was wrong, timed out or crashed, and each unsupported one says why."""
    bad = [r for r in mine if r.status in BAD]
    assert not bad, wrong(assumption, f"{len(bad)} of {len(mine)} pairs of {what} are "
                                      f"{sorted({r.status for r in bad})}; first: {bad[0].variant} on "
                                      f"{bad[0].spec_key}: {bad[0].message}")
    silent = [r for r in mine if r.status == "unsupported" and not r.message.strip()]
    assert not silent, f"unsupported without a reason: {silent[0].variant} on {silent[0].spec_key}"


@pytest.mark.gpu
@pytest.mark.parametrize("suite", ["smoke", "odd"])
@pytest.mark.parametrize("name", _metal_families())
def test_every_family_verifies_on_metal(sweeps, name, suite):
    """M14: each family's variants compile with Apple's compiler and verify on every spec of the suite they
    support; what they cannot run is unsupported with a reason (a manifest's requires, a pipeline's thread
    limit, a SIMD width), never failed or wrong."""
    assert variants.load_families(), name
    run, rep = sweeps(suite)
    mine = _of(run, name)
    _no_pair_bad_or_silent("M14", f"{name} on {suite}", mine)
    assert rep.baseline == "mps/baseline"
    if not any(r.status in VERIFIED for r in mine):
        pytest.skip(f"{name}: no spec of {suite} runs here: {sorted({r.message for r in mine})[:3]}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", _metal_families())
def test_every_family_is_verified_by_the_first_mac_run(sweeps, name):
    """M14: the smoke and odd suites between them run every family at least once on this Mac; the built-in
    quantized suite every family that takes only quantized weights (its baseline there is qnaive)."""
    quantized = any(f.quant for f in variants.load_families() if f.name == name)
    suites = ("quantized",) if quantized else ("smoke", "odd")
    ran = {suite: [r for r in _of(sweeps(suite)[0], name) if r.status in VERIFIED] for suite in suites}
    if not any(ran.values()):
        reasons = sorted({r.message for suite in suites for r in _of(sweeps(suite)[0], name)})
        pytest.fail(wrong("M14", f"no spec of the {' or '.join(suites)} suite verifies {name} on this Mac; why: "
                                 f"{reasons[:5]}"))
    if quantized:
        assert all(s.baseline == "qnaive/default" for s in sweeps("quantized")[1].specs)


@pytest.mark.gpu
@pytest.mark.parametrize("name", _metal_families("bfloat16"))
def test_every_bfloat16_family_verifies_on_metal(metal, sweeps, name):
    """M22: on macOS 14 and later, each family that lists bfloat16 (MPS and MPSMatrixVectorMultiplication
    among them) verifies on the smoke suite's shapes in bfloat16 (the quantized suite's, for the families of
    quantized weights); before, its pairs are unsupported, with the device's reason."""
    quantized = any(f.quant for f in variants.load_families() if f.name == name)
    run, _ = sweeps(("quantized" if quantized else "smoke") + BF16)
    mine = _of(run, name)
    assert mine, f"{name} has no pair on the suite in bfloat16"
    if not metal.info["bfloat16"]:
        assert {r.status for r in mine} == {"unsupported"}, sorted({r.status for r in mine})
        assert all(metal.info["bfloat16_detail"] in r.message for r in mine), mine[0].message
        pytest.skip(f"no bfloat16 here: {metal.info['bfloat16_detail']}")
    _no_pair_bad_or_silent("M22", f"{name} in bfloat16", mine)
    if not any(r.status in VERIFIED for r in mine):
        pytest.skip(f"{name}: no bfloat16 spec of the suite runs here: {sorted({r.message for r in mine})[:3]}")


@pytest.mark.gpu
def test_the_default_suite_runs_clean_with_racing(metal, tmp_path):
    """M15: `metalbench run` on the default suite, with racing, as a user runs it: 0 failed, 0 wrong,
    every unsupported pair with a reason."""
    db, out = tmp_path / "results.sqlite", tmp_path / "run.json"
    r = subprocess.run([sys.executable, "-m", "metalbench", "run", "--backend", "metal", "--db", str(db),
                        "--json", str(out)], capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, f"exit status {r.returncode}: {r.stderr[-3000:]}"
    data = json.loads(out.read_text())
    c = data["counts"]
    assert data["status"] == "complete" and data["settings"]["race"] is not False and c["raced"] > 0
    failures = [(f["variant"], f["category"], f["message"]) for f in data["failures"]]
    assert c["failed"] == c["wrong"] == c["timeout"] == c["crashed"] == 0, wrong(
        "M15", f"the default suite has failures on Metal: {c}; {failures[:5]}")
    run = Store(db, readonly=True).load_run(data["run_id"])
    unsupported = [x for x in run.results if x.status == "unsupported"]
    assert len(unsupported) == c["unsupported"] and all(x.message.strip() for x in unsupported)
    assert data["baseline"] == "mps/baseline"


# --- M16 to M21: held runs, pass transitions, limits, caches, clocks ------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("timing", ["auto", "command-buffer"])
def test_the_gates_wait_is_in_no_sample(monkeypatch, timing):
    """M16: a held run's first launch waits for its gate in the gate's own command buffer, so its sample does
    not hold the time the host spent encoding the rest of the window."""
    dev = open_metal(monkeypatch, timing=timing)
    spin = Spin(dev, 20e3)
    ns = spin.measure(samples=500)["gpu_ns"]  # one round: one held run of 500 launches, one window
    first, typical = float(ns[0]), float(np.median(ns))
    assert first <= 2 * typical + 20e3, wrong(
        "M16", f"launch 0 of a held run of 500 ({timing} timing) took {first / 1e3:.1f} us, the median "
               f"{typical / 1e3:.1f} us: its sample holds the wait for the gate (a command buffer's GPUStartTime "
               "is taken before the passes it depends on have ended?)")


@pytest.mark.gpu
@pytest.mark.parametrize("make", [naive, mps], ids=["kernel", "mps"])
def test_pass_transitions_cost_little(metal, make):
    """M17: with counters every launch, kernel or MPS, is timed from the end of the join pass before it to the
    start of the one after it: two pass transitions, which must be small against a launch."""
    if not uses_counters(metal):
        pytest.skip(f"counters are not in use here: {metal.info['timing_source']}")
    if make is naive:
        spin = Spin(metal, 50e3)
        r = spin.measure(samples=50)
    else:
        p = Problem("float16", batch=1, m=64, n=1024, k=1024)
        r = quick(metal, mps(metal, "float16"), p.buffers(metal), [1], [1], samples=50)
    extra = r["gpu"]["median"] - r["batch"]["median"]
    assert extra <= 10e3, wrong(
        "M17", f"a {make.__name__} launch timed between join passes took {r['gpu']['median'] / 1e3:.1f} us, "
               f"{extra / 1e3:.1f} us more than back to back in one batch: pass transitions are not small")


@pytest.mark.gpu
def test_pipeline_thread_limits_are_what_the_sweeps_store(metal, sweeps):
    """M18: a pipeline may take fewer threads than the device (maxTotalThreadsPerThreadgroup); every variant's
    limit lies between one SIMD group and the device's, and each pair whose group is over it was stored
    unsupported with the limit, never failed (M14 runs the rest)."""
    device_max = metal.info["max_group_size"]
    specs = {s.key(): s for suite in ("smoke", "odd") for s in load_suite(suite).specs}
    ran: dict = {}  # variant -> the pairs the sweeps ran or found unsupported once built
    for suite in ("smoke", "odd"):
        for r in sweeps(suite)[0].results:
            if r.key:
                ran.setdefault(r.variant, []).append(r)
    over = []
    for v in variants.load_variants("metal"):
        if v.family.builtin:
            continue
        for dtype in v.family.dtypes:
            k = runner.build_kernel(metal, "metal", v, dtype)
            assert k.simd_width <= k.max_group_size <= device_max, wrong(
                "M18", f"{v.id} {dtype}: pipeline limit {k.max_group_size}, SIMD width {k.simd_width}, "
                       f"device limit {device_max}")
            for r in ran.get(v.id, []):
                spec = specs[r.spec_key]
                if spec.dtype == dtype and np.prod(v.geometry(spec)[1]) > k.max_group_size:
                    over.append((v.id, spec.label(), r.status, r.message))
    stored_wrong = [o for o in over if o[2] != "unsupported" or "this kernel takes" not in o[3]]
    assert not stored_wrong, wrong("M18", f"pairs over their pipeline's limit, not stored unsupported with it: "
                                          f"{stored_wrong[:5]}")


SIMD_PROBE = """
#include <metal_stdlib>
using namespace metal;
kernel void simd_probe(device uint* out [[buffer(0)]], uint width [[threads_per_simdgroup]],
                       uint i [[thread_position_in_grid]]) {
  out[i] = width;
}
"""


@pytest.mark.gpu
def test_the_simd_width_is_the_pipelines_execution_width(metal):
    """M19: threadExecutionWidth, which the worker compares with the prelude's SIMD_WIDTH, is the width SIMD
    groups run with ([[threads_per_simdgroup]]); on an Apple GPU it is 32, so no portable variant is lost."""
    kernel = metal.compile(SIMD_PROBE, "simd_probe", {}, "test/simd")
    out = metal.allocate(4 * 256)
    metal.run(kernel, [out], [1], [256])
    widths = set(_read_into(out, np.empty(256, np.uint32)).tolist())
    assert widths == {kernel.simd_width}, wrong(
        "M19", f"threadExecutionWidth is {kernel.simd_width}, the kernel ran with SIMD groups of {sorted(widths)}")
    if metal.info["name"].startswith("Apple"):
        assert naive(metal, "float16").simd_width == 32, wrong("M19", "an Apple GPU pipeline is not 32 wide")


@pytest.mark.gpu
def test_the_cold_cache_bound_exceeds_the_system_level_cache(metal):
    """M20: where no curve was measured, cold mode sizes its copies by DeviceInfo.cache_bytes
    (128 MiB, said to be more than any Apple chip's system-level cache): on the read-bandwidth
    curve (peak.measure_memory), footprints over twice that are read no faster than the largest."""
    bound = metal.info["cache_bytes"]
    found = peak.measure_memory(metal, "metal")
    beyond = [(size, bw) for size, bw in found.curve if size >= 2 * bound]
    assert beyond, f"the curve stops at {found.curve[-1][0] >> 20} MiB, below twice {bound >> 20} MiB"
    largest = found.curve[-1][1]
    fast = [(size >> 20, round(bw / 1e9)) for size, bw in beyond if bw > 1.15 * largest]
    assert not fast, wrong(
        "M20", f"footprints (MiB, GB/s) {fast} read faster than the largest ({largest / 1e9:.0f} GB/s): a cache "
               f"holds more than {bound >> 20} MiB, so cold mode's copies may be found in it")


@pytest.mark.gpu
def test_the_clock_is_up_after_the_warm_up(metal):
    """M21: Metal shows no GPU clock, so none is checked: the core's warm-up (3 launches, and after the device
    idled, as many as take MeasureConfig.ramp_time) must bring an idle GPU to speed. After 2 s idle, the first
    10 launches of a held run are within 10% of the last 40."""
    spin = Spin(metal, 200e3)
    time.sleep(2.0)
    ns = spin.measure(samples=100, warmup=3)["gpu_ns"]
    early, late = float(np.median(ns[:10])), float(np.median(ns[-40:]))
    assert early <= 1.10 * late, wrong(
        "M21", f"after 2 s idle and the warm-up, the first launches took {early / 1e3:.1f} us, the last "
               f"{late / 1e3:.1f} us: the clock ramps up over more than the warm-up")
