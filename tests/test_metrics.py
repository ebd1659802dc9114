"""Error metrics, tolerances and verdicts."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest

from metalbench import metrics
from metalbench.dtypes import round_from, to_float64
from metalbench.reference import Reference, compute_reference, make_inputs
from metalbench.specs import Spec, load_suite

SMOKE = load_suite("smoke").specs
QWEN = load_suite("qwen2.5-0.5b-decode").specs
SPEC = Spec("matmul", "float16", 2, 3, 40, 64, transpose_b=True)


def setup(spec):
    inputs = make_inputs(spec)
    return inputs, compute_reference(spec, inputs), metrics.initial_c(spec, inputs)


def bits(x):
    return x.view(np.uint16 if x.dtype == np.float16 else np.uint32)


def simulated_kernel(spec, inputs, accumulate=np.float32, round_between=False, drop_last=0):
    """What a kernel computes: products summed in `accumulate` along k, then the epilogue.

    round_between rounds acc, alpha acc and beta C to the output dtype before they are
    combined: the couple of extra roundings the tolerance must allow.
    """
    out_t = np.dtype(spec.dtype)
    a = inputs.a.astype(np.float32)
    b = inputs.b.astype(np.float32)
    a = np.swapaxes(a, 1, 2) if spec.transpose_a else a
    b = np.swapaxes(b, 1, 2) if spec.transpose_b else b
    acc = np.zeros(spec.shape_c, dtype=accumulate)
    for kk in range(spec.k - drop_last):
        acc = (acc + (a[:, :, kk:kk + 1] * b[:, kk:kk + 1, :]).astype(accumulate)).astype(accumulate)
    acc = acc.astype(np.float32)

    def rnd(x):
        return x.astype(out_t).astype(np.float32) if round_between else x

    if spec.op == "matmul_bias_add":
        acc = rnd(acc) + inputs.bias.astype(np.float32)
    elif spec.op == "matmul_alpha_beta":
        acc = rnd(np.float32(spec.alpha) * rnd(acc))
        if spec.beta != 0:
            acc = acc + rnd(np.float32(spec.beta) * inputs.c.astype(np.float32))
    return acc.astype(out_t)


def test_sentinel_is_a_quiet_nan_with_a_payload_arithmetic_does_not_make():
    for dtype, pattern in (("float16", 0x7E5A), ("float32", 0x7FC05A5A)):
        s = metrics.sentinel(dtype)
        assert s.shape == () and s.dtype == np.dtype(dtype) and np.isnan(s)
        assert int(bits(s)) == pattern
        with np.errstate(invalid="ignore", divide="ignore"):
            inf = np.array(np.inf, dtype=dtype)
            zero = np.array(0, dtype=dtype)
            for made in (inf - inf, zero / zero, inf * zero, np.array(np.nan, dtype=dtype), np.sqrt(-inf)):
                assert np.isnan(made) and int(bits(np.asarray(made))) != pattern


def test_initial_c_is_the_sentinel_unless_c_is_read():
    for spec in SMOKE:
        inputs = make_inputs(spec)
        c0 = metrics.initial_c(spec, inputs)
        assert c0.shape == spec.shape_c and c0.dtype == np.dtype(spec.dtype) and c0.flags.c_contiguous
        if spec.op == "matmul_alpha_beta" and spec.beta != 0:
            assert c0.tobytes() == inputs.c.tobytes()
        else:
            assert (bits(c0) == bits(metrics.sentinel(spec.dtype))).all()


def test_tolerance_numbers():
    fp16, fp32 = metrics.tolerance("float16", 896), metrics.tolerance("float32", 896)
    assert fp16.rtol == 4 * 2.0**-11 and fp32.rtol == 4 * 2.0**-24
    assert fp16.mag_factor == fp32.mag_factor == pytest.approx((8 * math.sqrt(896) + 4) * 2.0**-24)
    assert metrics.tolerance("float16", 16).mag_factor == (16 + 4) * 2.0**-24  # the worst case is the smaller
    ks = [1, 16, 64, 896, 4864, 2**20]
    factors = [metrics.tolerance("float16", k).mag_factor for k in ks]
    assert factors == sorted(factors)
    assert metrics.tolerance("float16") == metrics.tolerance("float16", 2**20)


@pytest.mark.parametrize("spec", SMOKE + QWEN[:3] + QWEN[4:], ids=lambda s: s.label())
def test_the_correctly_rounded_reference_passes(spec):
    _, ref, c0 = setup(spec)
    out = ref.out.astype(spec.dtype)
    check = metrics.check(spec, out, ref, c0)
    assert check.verdict == "ok", check.reason
    assert (check.bad, check.nan_count, check.unwritten, check.reason) == (0, 0, 0, "")
    u = 2.0**-11 if spec.dtype == "float16" else 2.0**-24
    assert check.max_rel <= u * 1.0001  # one rounding, relative to |ref| (or mag / 64 near zero)
    assert 0 < check.max_abs <= u * float(np.abs(ref.out).max())


@pytest.mark.parametrize("spec", SMOKE, ids=lambda s: s.label())
def test_an_fp32_accumulating_kernel_with_extra_roundings_passes(spec):
    inputs, ref, c0 = setup(spec)
    for round_between in (False, True):
        check = metrics.check(spec, simulated_kernel(spec, inputs, round_between=round_between), ref, c0)
        assert check.verdict == "ok", check.reason


def test_an_fp16_accumulator_is_wrong():
    for spec in (QWEN[2], Spec("matmul", "float32", 1, 1, 64, 1024, transpose_b=True)):
        inputs, ref, c0 = setup(spec)
        check = metrics.check(spec, simulated_kernel(spec, inputs, accumulate=np.float16), ref, c0)
        assert check.verdict == "wrong" and "over tolerance" in check.reason


@pytest.mark.parametrize("spec", [QWEN[1], QWEN[4], SMOKE[10]], ids=lambda s: s.label())
def test_a_kernel_that_drops_the_last_k_term_is_wrong(spec):
    inputs, ref, c0 = setup(spec)
    check = metrics.check(spec, simulated_kernel(spec, inputs, drop_last=1), ref, c0)
    assert check.verdict == "wrong" and check.bad > 0


def test_an_element_off_beyond_tolerance_is_wrong_and_located():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    out[1, 2, 17] = np.float16(ref.out[1, 2, 17] + 0.25)
    check = metrics.check(SPEC, out, ref, c0)
    assert check.verdict == "wrong" and check.bad == 1 and check.unwritten == 0 and check.nan_count == 0
    assert check.reason.startswith("1 element over tolerance, worst at (1, 2, 17): ")
    assert check.max_abs == pytest.approx(0.25, rel=0.01)


def test_an_element_a_few_ulps_off_passes():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    bits(out)[0, 1, 5] += 2  # two ulps: within 4u of |ref|
    assert metrics.check(SPEC, out, ref, c0).verdict == "ok"


def test_elements_left_as_the_sentinel_are_unwritten():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    out[0, 2, 30:] = c0[0, 2, 30:]
    check = metrics.check(SPEC, out, ref, c0)
    assert (check.unwritten, check.nan_count, check.bad, check.verdict) == (10, 0, 10, "wrong")
    assert check.reason == "10 elements never written (first at (0, 2, 30))"


def test_nan_and_inf_are_counted_and_the_worst_problem_comes_first():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    out[0, 0, 0] = c0[0, 0, 0]
    out[1, 1, 3] = np.nan  # a NaN the kernel computed, not the sentinel
    out[1, 1, 4] = -np.inf
    out[1, 0, 9] = np.float16(ref.out[1, 0, 9] - 1.0)
    check = metrics.check(SPEC, out, ref, c0)
    assert (check.unwritten, check.nan_count, check.bad) == (1, 1, 4)
    parts = check.reason.split("; ")
    assert parts[0].startswith("1 element never written") and parts[1:3] == ["1 NaN", "1 infinite"]
    assert parts[3].startswith("1 element over tolerance, worst at (1, 0, 9)")
    assert math.isfinite(check.max_abs) and math.isfinite(check.max_rel)


def test_alpha_beta_with_beta_reads_c_and_an_untouched_c_is_unwritten():
    spec = Spec("matmul_alpha_beta", "float16", 2, 3, 30, 16, alpha=0.5, beta=1.0)
    inputs, ref, c0 = setup(spec)
    out = ref.out.astype(np.float16)
    out[1, 2, :4] = inputs.c[1, 2, :4]
    check = metrics.check(spec, out, ref, c0)
    assert check.unwritten == 4 and check.verdict == "wrong" and "never written" in check.reason
    # A kernel that writes nothing at all leaves C as it was: every element whose
    # answer differs from C's input beyond the tolerance is caught, and only those.
    untouched = metrics.check(spec, c0.copy(), ref, c0)
    tol = metrics.tolerance("float16", spec.k)
    allowed = tol.rtol * (np.abs(ref.out) + ref.epilogue) + tol.mag_factor * ref.mag
    differs = int((np.abs(ref.out - c0.astype(np.float64)) > allowed).sum())
    assert untouched.unwritten == untouched.bad == differs > 0.9 * math.prod(spec.shape_c)


def test_an_element_whose_answer_is_c_itself_is_not_unwritten():
    spec = Spec("matmul_alpha_beta", "float16", 1, 1, 8, 4, alpha=0.5, beta=1.0)
    inputs, ref, c0 = setup(spec)
    want = ref.out.copy()
    want[0, 0, 3] = float(inputs.c[0, 0, 3])  # pretend A.B was 0 there
    ref = Reference(want, ref.mag, ref.epilogue)
    out = want.astype(np.float16)
    check = metrics.check(spec, out, ref, c0)
    assert check.verdict == "ok" and check.unwritten == 0


def test_a_reference_without_its_epilogue_part_is_read_conservatively():
    spec = SMOKE[17]  # bias_add, m = 1
    assert spec.op == "matmul_bias_add"
    inputs, ref, c0 = setup(spec)
    bare = Reference(ref.out, ref.mag)
    out = simulated_kernel(spec, inputs, round_between=True)
    assert metrics.check(spec, out, bare, c0).verdict == "ok"
    wrong = out.copy()
    wrong[0, 0, 3] = np.float16(ref.out[0, 0, 3] + 1)
    assert metrics.check(spec, wrong, bare, c0).verdict == "wrong"


def test_max_rel_is_not_blown_up_by_cancellation():
    spec = Spec("matmul", "float32", 1, 1, 2, 8)
    ref = Reference(np.array([[[1e-9, 1.0]]]), np.array([[[8.0, 8.0]]]))
    out = np.array([[[1e-9 + 1e-6, 1.0]]], dtype=np.float32)
    check = metrics.check(spec, out, ref, metrics.initial_c(spec, make_inputs(spec)))
    # 1e-6 off a reference of 1e-9 is 1000x relative, but the element sums terms of
    # size 8: against mag / 64 it is 8e-6, which max_rel reports.
    assert check.max_rel == pytest.approx(1e-6 / (8 / 64), rel=0.01)
    assert check.max_abs == pytest.approx(1e-6, rel=0.01)


def test_results_that_underflow_to_subnormals_pass():
    spec = Spec("matmul", "float16", 1, 1, 3, 1)
    tiny = np.array([[[1e-8, 3e-8, -6e-8]]])  # below fp16's smallest normal, 2^-14
    ref = Reference(tiny, np.abs(tiny))
    check = metrics.check(spec, tiny.astype(np.float16), ref, metrics.initial_c(spec, make_inputs(spec)))
    assert check.verdict == "ok", check.reason


def test_chunked_comparison_matches_one_pass(monkeypatch):
    spec = Spec("matmul_bias_add", "float16", 3, 5, 33, 20)
    _, ref, c0 = setup(spec)
    out = ref.out.astype(np.float16)
    out[0, 4, 30:] = c0[0, 4, 30:]
    out[2, 1, 7] = np.float16(ref.out[2, 1, 7] + 2)
    out[2, 3, 8] = np.float16(ref.out[2, 3, 8] + 4)
    out[1, 0, 3], out[1, 2, 4] = np.inf, np.nan  # chunks that take the slow path among ones that do not
    whole = metrics.check(spec, out, ref, c0)
    monkeypatch.setattr(metrics, "_CHUNK", 7)  # 71 chunks, checked side by side (metrics._checkers)
    assert metrics.check(spec, out, ref, c0) == whole
    assert whole.unwritten == 3 and "worst at (2, 3, 8)" in whole.reason
    assert whole.nan_count == 1 and "1 infinite" in whole.reason
    # two elements equally far over in two chunks: the first in order is the worst, as in one pass
    flat = Reference(np.ones(spec.shape_c), np.ones(spec.shape_c))
    tied = np.ones(spec.shape_c, np.float16)
    tied[2, 4, 19] = tied[0, 0, 1] = 2
    found = metrics.check(spec, tied, flat, c0)
    assert "2 elements over tolerance, worst at (0, 0, 1)" in found.reason
    monkeypatch.setattr(metrics, "_CHUNK", 1 << 20)
    assert metrics.check(spec, tied, flat, c0) == found


def test_check_is_stored_as_json():
    _, ref, c0 = setup(SPEC)
    out = ref.out.astype(np.float16)
    out[0, 0, 0] = np.nan
    data = json.loads(json.dumps(asdict(metrics.check(SPEC, out, ref, c0))))
    assert data["nan_count"] == 1 and data["verdict"] == "wrong" and isinstance(data["max_abs"], float)


def test_a_mismatched_output_is_a_caller_error():
    _, ref, c0 = setup(SPEC)
    with pytest.raises(ValueError, match="expected float16"):
        metrics.check(SPEC, ref.out.astype(np.float32), ref, c0)
    with pytest.raises(ValueError, match="expected"):
        metrics.check(SPEC, ref.out.astype(np.float16)[:1], ref, c0)


# ---- bfloat16: stored as uint16 bit patterns (metalbench/dtypes.py) -------------------

def bf16(spec):
    return Spec(spec.op, "bfloat16", spec.batch, spec.m, spec.n, spec.k, spec.transpose_a, spec.transpose_b,
                spec.alpha, spec.beta)


BF16 = [bf16(s) for s in SMOKE] + [bf16(QWEN[2]), bf16(QWEN[4])]


def bf16_kernel(spec, inputs, accumulate_bf16=False, round_between=False):
    """simulated_kernel for bfloat16: float32 products, summed in float32 (or rounded to
    bfloat16 after every addition), then the epilogue, rounded to bfloat16."""
    def val(x):
        return to_float64(x, "bfloat16").astype(np.float32)

    def rnd(x):
        return val(round_from(x, "bfloat16"))

    a, b = val(inputs.a), val(inputs.b)
    a = np.swapaxes(a, 1, 2) if spec.transpose_a else a
    b = np.swapaxes(b, 1, 2) if spec.transpose_b else b
    acc = np.zeros(spec.shape_c, dtype=np.float32)
    for kk in range(spec.k):
        acc = acc + a[:, :, kk:kk + 1] * b[:, kk:kk + 1, :]
        if accumulate_bf16:
            acc = rnd(acc)
    step = rnd if round_between else (lambda x: x)
    if spec.op == "matmul_bias_add":
        acc = step(acc) + val(inputs.bias)
    elif spec.op == "matmul_alpha_beta":
        acc = step(np.float32(spec.alpha) * step(acc))
        if spec.beta != 0:
            acc = acc + step(np.float32(spec.beta) * val(inputs.c))
    return round_from(acc, "bfloat16")


def test_bfloat16_tolerance_follows_its_8_bit_significand_and_leaves_the_others_alone():
    bf, fp16 = metrics.tolerance("bfloat16", 896), metrics.tolerance("float16", 896)
    assert bf.rtol == 4 * 2.0**-8 and fp16.rtol == 4 * 2.0**-11
    # Products of bfloat16s are exact in fp32 as those of fp16s are: the same k-scaled term.
    assert bf.mag_factor == fp16.mag_factor


def test_bfloat16_sentinel_is_a_quiet_nan_no_rounding_makes():
    s = metrics.sentinel("bfloat16")
    assert s.shape == () and s.dtype == np.uint16 and int(s) == 0x7FDA
    assert np.isnan(to_float64(s, "bfloat16"))
    for seed in (0, 1, 62, 63, 2**40 + 5):
        bits_ = int(metrics.sentinel("bfloat16", seed))
        assert bits_ & 0x7FC0 == 0x7FC0 and bits_ & 0x3F  # quiet, and not the canonical NaN
    with np.errstate(invalid="ignore"):
        made = np.array([np.inf - np.inf, np.nan, -np.nan], dtype=np.float32)
    assert {int(x) & 0x7FFF for x in round_from(made, "bfloat16")} == {0x7FC0}


@pytest.mark.parametrize("spec", BF16, ids=lambda s: s.label())
def test_bfloat16_rounded_reference_and_fp32_kernels_pass(spec):
    inputs, ref, c0 = setup(spec)
    assert c0.dtype == np.uint16
    check = metrics.check(spec, round_from(ref.out, "bfloat16"), ref, c0)
    assert check.verdict == "ok", check.reason
    assert 0 < check.max_rel <= 2.0**-8 * 1.0001
    for round_between in (False, True):
        check = metrics.check(spec, bf16_kernel(spec, inputs, round_between=round_between), ref, c0)
        assert check.verdict == "ok", check.reason


def test_bfloat16_accumulator_and_float16_rounding_are_wrong():
    spec = bf16(QWEN[2])
    inputs, ref, c0 = setup(spec)
    check = metrics.check(spec, bf16_kernel(spec, inputs, accumulate_bf16=True), ref, c0)
    assert check.verdict == "wrong" and "over tolerance" in check.reason
    # Data read as float16 bits instead of bfloat16 (the wrong LOAD) is far off.
    out = round_from(ref.out, "bfloat16")
    mixed = metrics.check(spec, round_from(out.view(np.float16).astype(np.float64), "bfloat16"), ref, c0)
    assert mixed.verdict == "wrong"


def test_bfloat16_unwritten_nan_and_off_elements_are_found():
    spec = bf16(SPEC)
    _, ref, c0 = setup(spec)
    out = round_from(ref.out, "bfloat16")
    out[0, 2, 30:] = c0[0, 2, 30:]
    out[1, 1, 3] = 0x7FC0  # a NaN computed, not the sentinel
    out[1, 0, 9] = round_from(np.array(ref.out[1, 0, 9] + 0.5), "bfloat16")
    check = metrics.check(spec, out, ref, c0)
    assert (check.unwritten, check.nan_count, check.bad) == (10, 1, 12)
    assert "worst at (1, 0, 9)" in check.reason


def test_every_spec_dtype_has_a_sentinel_tolerance_and_underflow_allowance():
    from metalbench.dtypes import DTYPES

    for name, storage in DTYPES.items():
        s = metrics.sentinel(name, seed=12345)
        assert s.dtype == storage and np.isnan(to_float64(s, name))
        assert metrics.tolerance(name, 64).rtol > 0 and name in metrics._UNDERFLOW
