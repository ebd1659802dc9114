"""The Metal backend on a real Apple GPU: the naive kernel and the MPS baseline
through metalbench._core, then a sweep of the smoke suite.

Hosted macOS runners expose only an "Apple Paravirtual device": MPS does not
support it, and custom kernels have been reported to return zeros there
(JuliaGPU/Metal.jl issue 309), so GPU tests skip on it. Elsewhere than macOS
the build has no Metal backend at all, which is checked too.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from metalbench import _core, paths

PARAVIRTUAL = "Apple Paravirtual device"


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


@pytest.fixture(scope="module")
def metal():
    reason = _metal_reason()
    if reason:
        pytest.skip(f"no real Apple GPU: {reason}")
    return _core.open("metal", 0)


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
        assert "GPU time per launch" in d["driver"]  # the timing mode, which the report shows


# --- one problem, packed as the kernel ABI (kernels/include/common.h) ---------------------------------

OPS = {"matmul": 0, "matmul_bias_add": 1, "matmul_alpha_beta": 2}


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
        lda, ldb = self.a.shape[2], self.b.shape[2]
        self.params = struct.pack("<13i2fi", batch, m, n, k, lda, ldb, n, self.a.shape[1] * lda,
                                  self.b.shape[1] * ldb, m * n, int(trans_a), int(trans_b), OPS[op], alpha, beta, 0)
        a64 = self.a.astype(np.float64).transpose(0, 2, 1) if trans_a else self.a.astype(np.float64)
        b64 = self.b.astype(np.float64).transpose(0, 2, 1) if trans_b else self.b.astype(np.float64)
        acc = a64 @ b64
        if op == "matmul_bias_add":
            acc = acc + self.bias.astype(np.float64)
        elif op == "matmul_alpha_beta":
            acc = alpha * acc + (beta * self.c0.astype(np.float64) if beta != 0 else 0.0)
        self.ref = acc

    def buffers(self, dev):
        def upload(x):
            buf = dev.allocate(x.nbytes)
            buf.write(np.ascontiguousarray(x))
            return buf

        self.c = upload(self.c0)
        return [upload(self.a), upload(self.b), self.c, upload(self.bias), upload(np.zeros(1, np.float32)),
                self.params]

    def check(self):
        out = np.empty(self.c0.shape, self.dtype)
        self.c.read(out)
        tol = 3e-2 if self.dtype == np.float16 else 1e-4
        np.testing.assert_allclose(out.astype(np.float64), self.ref, rtol=tol, atol=tol)


def naive(dev, dtype):
    include, body = paths.kernels_dir() / "include", paths.kernels_dir() / "portable" / "naive.c"
    source = "".join([(include / "metal.h").read_text(), "\n", (include / "common.h").read_text(),
                      '\n#line 1 "naive.c"\n', body.read_text()])
    return dev.compile(source, "naive", {"MB_F16": "1" if dtype == "float16" else "0", "TG": "64"}, "naive/default")


def mps(dev, dtype):
    return dev.builtin("mps", "mps/baseline", defines={"MB_F16": "1" if dtype == "float16" else "0"})


CASES = [
    dict(op="matmul"),
    dict(op="matmul", m=1, trans_b=False),
    dict(op="matmul", trans_a=True, trans_b=False),
    dict(op="matmul_bias_add"),
    dict(op="matmul_alpha_beta", alpha=0.5, beta=2.0),
    dict(op="matmul_alpha_beta", alpha=-1.5, beta=0.0),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_naive_is_correct(metal, dtype, case):
    p = Problem(dtype, **case)
    args = p.buffers(metal)
    batch, m, n, _ = p.shape
    metal.run(naive(metal, dtype), args, [(n + 63) // 64, m, batch], [64, 1, 1])
    p.check()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_mps_is_correct(metal, dtype, case):
    p = Problem(dtype, **case)
    metal.run(mps(metal, dtype), p.buffers(metal), [1], [1])
    p.check()


@pytest.mark.gpu
@pytest.mark.parametrize("make", [naive, mps], ids=["naive", "mps"])
def test_measure_gives_gpu_and_cpu_samples(metal, make):
    p = Problem("float16")
    batch, m, n, _ = p.shape
    r = metal.measure(make(metal, "float16"), p.buffers(metal), [(n + 63) // 64, m, batch], [64, 1, 1],
                      warmup=2, iterations=9, max_seconds=10.0)
    assert r["gpu_ns"].shape == (9,) and (r["gpu_ns"] > 0).all()
    assert r["cpu"]["median"] >= r["gpu"]["min"]
    p.check()


@pytest.mark.gpu
def test_cold_mode_flushes_outside_the_timed_span(metal):
    p = Problem("float32")
    batch, m, n, _ = p.shape
    r = metal.measure(naive(metal, "float32"), p.buffers(metal), [(n + 63) // 64, m, batch], [64, 1, 1],
                      iterations=3, cold=True)
    assert r["cold"] and r["gpu"]["count"] == 3


@pytest.mark.gpu
def test_batched_timing_is_selected_and_named(metal, monkeypatch):
    monkeypatch.setenv("METALBENCH_METAL_TIMING", "batched:4")
    dev = _core.open("metal", 0)
    assert "1/4 of a command buffer of 4 launches" in dev.info["driver"]
    p = Problem("float16")
    batch, m, n, _ = p.shape
    kernel, args = naive(dev, "float16"), p.buffers(dev)
    r = dev.measure(kernel, args, [(n + 63) // 64, m, batch], [64, 1, 1], iterations=5, max_seconds=10.0)
    assert (r["gpu_ns"] > 0).all()
    with pytest.raises(_core.UsageError, match="cold mode"):
        dev.measure(kernel, args, [(n + 63) // 64, m, batch], [64, 1, 1], iterations=3, cold=True)
    monkeypatch.setenv("METALBENCH_METAL_TIMING", "sometimes")
    with pytest.raises(_core.UsageError, match="METALBENCH_METAL_TIMING"):
        _core.open("metal", 0)


@pytest.mark.gpu
def test_kernel_limits_are_reported_and_enforced(metal):
    kernel = naive(metal, "float32")
    assert kernel.simd_width == 32 and 256 <= kernel.max_group_size <= 1024
    p = Problem("float32")
    with pytest.raises(_core.UsageError, match="exceeds"):
        metal.run(kernel, p.buffers(metal), [1], [kernel.max_group_size * 2])


@pytest.mark.gpu
def test_compile_error_carries_the_compiler_message(metal):
    with pytest.raises(_core.CompileError) as info:
        metal.compile("kernel void broken(device float* y) { y[0] = undefined_name; }", "broken", {}, "mine/broken")
    assert "mine/broken" in str(info.value) and "undefined_name" in info.value.log
    with pytest.raises(_core.CompileError, match="no kernel named 'other'"):
        metal.compile("kernel void k(device float* y) { y[0] = 1; }", "other", {}, "mine/other")


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
def test_the_smoke_suite_sweeps_clean_on_metal(metal, tmp_path):
    from metalbench import report, runner, variants
    from metalbench.specs import load_suite
    from metalbench.store import Store

    store = Store(tmp_path / "results.sqlite")
    chosen = runner.with_baseline(variants.load_variants("metal"), "metal", ["naive/*", "mps/*"])
    settings = runner.Settings(warmup=1, iterations=3, min_iterations=2, max_seconds=0.05)
    run_id = runner.run(load_suite("smoke"), chosen, backend="metal", store=store, settings=settings)
    rep = report.build(store.load_run(run_id))
    assert rep.counts["failed"] == 0 and rep.counts["wrong"] == 0, rep.failures
    assert rep.baseline == "mps/baseline"
