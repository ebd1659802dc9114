import numpy as np

from metalbench import metrics
from metalbench.reference import compute_reference, make_inputs
from metalbench.specs import Spec


def setup(spec):
    inputs = make_inputs(spec)
    return inputs, compute_reference(spec, inputs), metrics.initial_c(spec, inputs)


SPEC = Spec("matmul", "float16", 2, 3, 40, 64, transpose_b=True)


def test_sentinel_is_a_nan_arithmetic_does_not_make():
    for dtype in ("float16", "float32"):
        s = metrics.sentinel(dtype)
        assert np.isnan(s)
        made = np.array(np.nan, dtype=s.dtype)
        assert s.tobytes() != made.tobytes()


def test_correctly_rounded_output_passes():
    _, ref, c0 = setup(SPEC)
    check = metrics.check(SPEC, ref.out.astype(np.float16), ref, c0)
    assert check.verdict == "ok" and check.reason == "" and check.bad == 0
    assert 0 < check.max_abs < 0.05 and 0 < check.max_rel <= 2.0**-11


def test_out_of_tolerance_element_is_wrong_and_located():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    out[1, 2, 17] += np.float16(0.5)
    check = metrics.check(SPEC, out, ref, c0)
    assert check.verdict == "wrong" and check.bad == 1
    assert "1 over tolerance, worst at (1, 2, 17)" in check.reason


def test_elements_never_written_and_nan_are_counted():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    out[0, 0, :5] = c0[0, 0, :5]
    out[1, 1, 3] = np.nan
    check = metrics.check(SPEC, out, ref, c0)
    assert (check.unwritten, check.nan_count, check.bad) == (5, 1, 1)
    assert check.reason.startswith("5 elements never written; 1 NaN")


def test_alpha_beta_reads_c_and_detects_untouched_elements():
    spec = Spec("matmul_alpha_beta", "float16", 1, 2, 30, 16, alpha=0.5, beta=1.0)
    inputs, ref, c0 = setup(spec)
    np.testing.assert_array_equal(c0, inputs.c)  # beta != 0: C starts with its input
    out = ref.out.astype(np.float16)
    out[0, 1, :4] = inputs.c[0, 1, :4]
    check = metrics.check(spec, out, ref, c0)
    assert check.unwritten == 4 and check.verdict == "wrong"
    zero_beta = Spec("matmul_alpha_beta", "float16", 1, 2, 30, 16, alpha=0.5, beta=0.0)
    _, _, c0 = setup(zero_beta)
    assert np.isnan(c0).all()  # beta == 0: C is not read, so it starts as the sentinel


def test_an_fp16_accumulation_fails_fp32_tolerance():
    spec = Spec("matmul", "float32", 1, 1, 64, 1024, transpose_b=True)
    inputs, ref, c0 = setup(spec)
    a, b = inputs.a[0, 0].astype(np.float16), inputs.b[0].astype(np.float16)
    acc = np.zeros(64, dtype=np.float16)
    for kk in range(spec.k):
        acc = (acc + a[kk] * b[:, kk]).astype(np.float16)
    check = metrics.check(spec, acc.astype(np.float32).reshape(1, 1, 64), ref, c0)
    assert check.verdict == "wrong"
