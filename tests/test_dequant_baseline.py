"""The two-step baseline on quantized weights (kernels/cublas_dequant.toml): its first step,
portable/qdequant.c, run by PoCL exactly as the cuBLAS builtin launches it (the variant's
defines, dispatch and six arguments, its output where `ws` points), and the tolerance its
product is held to (metrics.tolerance with rounds_b). cuBLAS itself runs only on a GPU
(tests/test_cuda.py)."""

from __future__ import annotations

import numpy as np
import pytest

from metalbench import _core, metrics, quant, reference, variants
from metalbench.specs import DTYPES, Spec

SPECS = [Spec("matmul", "float16", 1, 1, 40, 192, False, True, quant="affine-q4-g64"),
         Spec("matmul_bias_add", "float32", 2, 1, 24, 256, False, True, quant="affine-q3-g32"),
         Spec("matmul", "float16", 1, 3, 17, 384, False, True, quant="affine-q6-g128"),
         Spec("matmul", "float32", 1, 1, 33, 128, False, True, quant="affine-q8-g32")]


def dequant_variant() -> variants.Variant:
    return next(v for v in variants.load_variants("cuda") if v.family.name == "cublas-dequant")


@pytest.mark.parametrize("spec", SPECS, ids=[s.label() for s in SPECS])
def test_the_first_step_writes_b_dequantized_rounded_once_to_the_dtype(opencl, spec):
    v = dequant_variant()
    dtype = DTYPES[spec.dtype]
    inputs = reference.make_inputs(spec)
    layout = quant.b_layout(inputs.q.quant, spec.batch, spec.n, spec.k, dtype.itemsize)
    kernel = opencl.compile(v.source("opencl"), v.family.entry, v.defines(spec.dtype), f"{v.id} (qdequant)")
    bufs = [opencl.allocate(max(4, x.nbytes)) for x in (inputs.a, np.zeros(1), np.zeros(spec.shape_c, dtype),
                                                         np.zeros(spec.n, dtype))]
    bufs[1] = opencl.allocate(layout.nbytes)
    bufs[1].write(quant.b_buffer(inputs.q, layout))
    bufs[0].write(np.ascontiguousarray(inputs.a))
    out = opencl.allocate(spec.batch * spec.n * spec.k * dtype.itemsize + 64)  # 64 bytes past: must stay 0xAB
    out.fill(0xAB)
    groups, threads = v.geometry(spec)
    opencl.run(kernel, [*bufs, out, spec.params()], groups, threads)
    got = np.empty(spec.batch * spec.n * spec.k * dtype.itemsize + 64, np.uint8)
    out.read(got)
    assert (got[-64:] == 0xAB).all(), "wrote past B's dequantized end"
    codes = quant.unpack(inputs.q.codes, inputs.q.quant.bits).astype(np.float32)
    group = np.ones(inputs.q.quant.group, np.float32)
    scaled = np.kron(inputs.q.scales.astype(np.float32), group) * codes
    bias = np.kron(inputs.q.biases.astype(np.float32), group)
    written = got[:-64].view(dtype).reshape(codes.shape)
    if dtype == np.float16:  # an fp16 scale times a code is exact in fp32: one rounding of the sum, then to fp16
        np.testing.assert_array_equal(written, (scaled + bias).astype(dtype))
    else:  # the compiler may fuse the multiply-add: within one rounding of the two terms' size
        err = np.abs(written.astype(np.float64) - (scaled.astype(np.float64) + bias))
        assert (err <= 2.0**-23 * (np.abs(scaled) + np.abs(bias))).all()


def test_a_product_of_b_rounded_to_fp16_needs_the_rounds_b_tolerance():
    """Why the family says rounds_b: on the quantized suite's shapes, a correct fp32 product of
    the weights rounded to float16 exceeds the tolerance every fused kernel meets (which
    dequantizes in fp32), and meets the one that allows for the rounding."""
    spec = Spec("matmul", "float16", 1, 1, 2048, 896, False, True, quant="affine-q4-g64")
    inputs = reference.make_inputs(spec)
    ref = reference.compute_reference(spec, inputs)
    c0 = metrics.initial_c(spec, inputs)
    rounded = inputs.b.astype(np.float16).astype(np.float32)
    out = (inputs.a.astype(np.float32) @ np.swapaxes(rounded, -1, -2)).astype(np.float16)
    assert metrics.check(spec, out, ref, c0).verdict == "wrong"
    assert metrics.check(spec, out, ref, c0, rounds_b=True).verdict == "ok"
    # And no more than that: a step that skips one group of weights (64 of every row) is still caught.
    g = inputs.q.quant.group
    dropped = (inputs.a[..., g:].astype(np.float32) @ np.swapaxes(rounded[..., g:], -1, -2)).astype(np.float16)
    assert metrics.check(spec, dropped, ref, c0, rounds_b=True).verdict == "wrong"


def test_only_the_families_that_multiply_weights_made_in_the_dtype_round_b():
    """The looser tolerance goes to the dequantize-then-library baseline and to qtcgemv,
    which makes float16 weights for the tensor cores; every other fused kernel keeps the
    fp32 accumulation's."""
    every = variants.load_families()
    assert {f.name for f in every if f.rounds_b} == {"cublas-dequant", "qtcgemv"}
    family = next(f for f in every if f.name == "cublas-dequant")
    assert family.builtin == "cublas" and family.quant and family.baseline == "vendor"


def test_a_first_kernel_needs_a_builtin_that_runs_one(opencl):
    v = dequant_variant()
    kernel = opencl.compile(v.source("opencl"), v.family.entry, v.defines("float32"), "x/first")
    with pytest.raises(_core.UsageError, match=r"^\[opencl::builtin\] x/y: no vendor library routine 'cublas'"):
        opencl.builtin("cublas", "x/y", {"MB_F16": "0"}, kernel)
