"""Error metrics and verdicts: is a kernel's output the op's result, to the precision of its dtype?"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .chunks import chunked
from .dtypes import DTYPES, UNIT_ROUNDOFF, to_float64
from .reference import Inputs, Reference
from .results import Status
from .specs import Spec

__all__ = ["Check", "Tolerance", "check", "check_at", "initial_c", "sentinel", "tolerance"]

# Quiet NaNs with a payload (0x5A) that arithmetic does not produce: an operation
# that makes a NaN from numbers gives the canonical one (0x7E00, 0x7FC00000, 0x7FC0 or
# their negatives), so an element still holding this was never written. A run draws its
# own payload from its seed (sentinel()); this one is the default. bfloat16 is the top
# half of a float32, so its quiet NaN has 6 payload bits where float32 has 22.
_SENTINEL_BITS = {"float16": 0x7E5A, "float32": 0x7FC05A5A, "bfloat16": 0x7FDA}
# The payload bits of a quiet NaN: any value but 0 (the canonical NaN) marks C.
_PAYLOAD = {"float16": (0x7E00, 0x1FF), "float32": (0x7FC00000, 0x3FFFFF), "bfloat16": (0x7FC0, 0x3F)}
_UINT = {"float16": np.uint16, "float32": np.uint32, "bfloat16": np.uint16}


def sentinel(dtype: str, seed: int | None = None) -> np.ndarray:
    """A 0-d array of `dtype` holding the never-written marker: a quiet NaN whose payload
    arithmetic does not make, the run's own where `seed` is given (a kernel cannot learn
    it before the run), else a fixed one."""
    bits = _SENTINEL_BITS[dtype]
    if seed is not None:
        quiet, payload = _PAYLOAD[dtype]
        bits = quiet | (1 + seed % payload)  # 1 .. payload: never the canonical NaN
    return np.array(bits, dtype=_UINT[dtype]).view(DTYPES[dtype])


def initial_c(spec: Spec, inputs: Inputs, seed: int | None = None) -> np.ndarray:
    """What C holds before every launch.

    C's input where the op reads it (alpha/beta with beta != 0), else the sentinel
    (sentinel(dtype, seed)) everywhere: with beta == 0 C is not read (BLAS semantics),
    so a kernel that reads it anyway, or skips an element, leaves NaN behind.
    """
    if spec.op == "matmul_alpha_beta" and spec.beta != 0:
        if inputs.c is None:
            raise ValueError(f"{spec.label()}: inputs have no C, and beta != 0 reads it")
        return np.ascontiguousarray(inputs.c)
    # Filled through the integer view so the payload bits are exactly the sentinel's.
    marker = sentinel(spec.dtype, seed).view(_UINT[spec.dtype])
    return np.full(spec.shape_c, marker, dtype=_UINT[spec.dtype]).view(DTYPES[spec.dtype])


@dataclass(frozen=True)
class Tolerance:
    """An element is ok iff |out - ref| <= rtol (|ref| + epi) + mag_factor mag (+ an underflow allowance).

    mag = |alpha| (|A| @ |B|) + |beta| |C| + |bias| and epi = |beta| |C| + |bias|, its
    epilogue part (reference.Reference): rtol pays for roundings to the output dtype,
    mag_factor for the fp32 accumulation.
    """

    rtol: float
    mag_factor: float


# The model. A kernel accumulates A.B in fp32 and rounds the result to the output
# dtype once, after at most a couple of extra roundings to that dtype in the epilogue
# (acc rounded before alpha or the bias is applied, alpha acc and beta C each rounded).
# Let u be the output's unit roundoff (fp16 2^-11, bf16 2^-8, fp32 2^-24: dtypes.py) and
# e = |beta C| + |bias|.
#  - Roundings to the output dtype: each errs by u times the value rounded. The result
#    is ~|ref|; |alpha acc| <= |ref| + e since ref = alpha acc + beta C + bias, so
#    rounding acc (then scaling it) or alpha acc costs u (|ref| + e) each; beta C is at
#    most e. Output rounding + those two + beta C's: u |ref| + 2u (|ref| + e) + u e
#    <= 4u (|ref| + e), so rtol = 4u, applied to |ref| + e.
#  - The fp32 dot product of length k errs by at most k 2^-24 sum|a||b| in any order.
#    That worst case needs rounding errors that all line up; with our U(-1, 1) inputs
#    their signs are random and the error stays below 8 sqrt(k) 2^-24 sum|a||b| except
#    with probability ~1e-14 per element (Higham and Mary, SIAM J. Sci. Comput. 2019,
#    lambda = 8). Products of fp16 or bf16 inputs (11 or 8 significand bits) are exact in
#    fp32, so bf16 changes only u above, not this term; those of fp32 inputs, and
#    fp32 epilogue arithmetic (alpha acc + beta C), add a few 2^-24 of mag more.
#    mag_factor = (min(k, 8 sqrt(k)) + 4) 2^-24: 1.5e-5 at k = 896, 3.4e-5 at k = 4864.
#    (Measured: sequential fp32 sums of these inputs err by ~3 2^-24 mag at any k.)
# Against mag this is tight enough to matter. An fp16 accumulator errs by ~2^-12 mag
# whatever k, and dropping one term of a dot product by |a b| ~ 4 mag / k; both are
# caught past k = 10^4, where a bound of k 2^-24 mag (2^-12 at k = 4096) or of u mag
# would let them through. Without k, tolerance() gives the bound for every k up to 2^20.
# For bf16 outputs the rtol term (4 2^-8 |ref|) dominates; a bf16 accumulator, which
# rounds at every addition, still fails at the k of real models (tests/test_metrics.py).
# A variant whose manifest says rounds_b (a two-step baseline that dequantizes B into the
# dtype first, as mx.dequantize does, or a fused kernel that makes its weights in the
# dtype for the tensor cores, qtcgemv) multiplies weights each off by up to u of
# themselves: sum |a| u |b| = u mag more, whatever the order (one more u in mag_factor).
# On fp16 that is ~30 times the fp32 accumulation's allowance, which the rounded weights
# do exceed (the reference dequantizes in float64), so only such a variant gets it.
_ACC_U = 2.0**-24  # fp32 accumulation
_LAMBDA = 8.0
_K_ANY = 2**20
# Rounding into the subnormal range errs absolutely, by up to half the smallest
# subnormal, not relative to the value: four of those on top of the tolerance
# (smallest subnormals: fp16 2^-24, bf16 2^-133, fp32 2^-149).
_UNDERFLOW = {"float16": 2.0**-23, "float32": 2.0**-147, "bfloat16": 2.0**-132}
# max_rel divides by max(|ref|, mag / 64): below that, |ref| is what is left after
# heavy cancellation (its condition number mag / |ref| exceeds 64) and |err| / |ref|
# is large for every correct kernel. A correct kernel's max_rel is then ~u to a few u.
_REL_FLOOR = 1.0 / 64
# Elements compared per step (chunks.py). A chunk's float64 temporaries (1 MiB each)
# stay near a core's cache: on the 2-core VM an 8M-element check took 0.044 s in chunks of 2^17,
# 0.06 s in chunks of 2^16 or 2^18 and 0.10 s in chunks of 2^20 (median of 4).
_CHUNK = 1 << 17


def tolerance(dtype: str, k: int | None = None, rounds_b: bool = False) -> Tolerance:
    """The tolerance for outputs of `dtype` from dot products of length `k` (None: any k up to 2^20);
    `rounds_b`: of B rounded to `dtype` first (the model above)."""
    depth = _K_ANY if k is None else max(1, int(k))
    return Tolerance(rtol=4 * UNIT_ROUNDOFF[dtype],
                     mag_factor=(min(depth, _LAMBDA * math.sqrt(depth)) + 4) * _ACC_U +
                     (UNIT_ROUNDOFF[dtype] if rounds_b else 0.0))


@dataclass(frozen=True)
class Check:
    """The verdict on one output, with the numbers behind it (stored as JSON).

    max_abs: max |out - ref| over written, finite elements (0 if there are none).
    max_rel: max |out - ref| / max(|ref|, mag / 64) over the same elements.
    nan_count: NaN elements that are not never-written sentinels.
    unwritten: elements the kernel never wrote (still holding C's prior content).
    bad: elements that fail: unwritten, NaN, infinite or over tolerance.
    verdict: "ok" or "wrong"; reason: "" when ok, else the worst problem first.
    """

    max_abs: float
    max_rel: float
    nan_count: int
    unwritten: int
    bad: int
    verdict: Status
    reason: str


def _epilogue_of(spec: Spec, ref: Reference) -> np.ndarray | None:
    """|beta C| + |bias| per element, flat, or None where it is zero; all of mag where unknown."""
    reads = spec.op == "matmul_bias_add" or (spec.op == "matmul_alpha_beta" and spec.beta != 0)
    if not reads:
        return None
    epi = ref.mag if ref.epilogue is None else ref.epilogue
    # Flattening the bias's broadcast view copies: at most one more output's worth.
    return np.broadcast_to(epi, spec.shape_c).reshape(-1)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _where(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape))


def check(spec: Spec, out: np.ndarray, ref: Reference, c_before: np.ndarray, rounds_b: bool = False) -> Check:
    """Compares a kernel's output with the reference; `c_before` is what C held before the launch;
    `rounds_b`: the kernel multiplies B rounded to the dtype (tolerance)."""
    shape = spec.shape_c
    dtype = DTYPES[spec.dtype]
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"output is {out.dtype} {out.shape}, expected {dtype} {shape}")
    if ref.out.shape != shape or ref.mag.shape != shape:
        raise ValueError(f"reference is {ref.out.shape}, expected {shape}")
    epi = _epilogue_of(spec, ref)
    c_flat = np.ascontiguousarray(np.broadcast_to(c_before.astype(dtype, copy=False), shape)).reshape(-1)
    return _judge(spec, np.ascontiguousarray(out).reshape(-1), c_flat, ref.out.reshape(-1), ref.mag.reshape(-1),
                  epi, None, rounds_b)


def check_at(spec: Spec, values: np.ndarray, ref: Reference, c_before: np.ndarray, flat: np.ndarray,
             rounds_b: bool = False) -> Check:
    """check() at some elements only: `values` are a kernel's outputs at the elements whose
    indices into C flattened are `flat`, `c_before` what C held there before the launch and
    `ref` the reference there (reference.reference_at), all 1-d and alike in length.
    Positions in the reason are the elements' own (an element may appear more than once:
    several slots' samples checked at once)."""
    dtype = DTYPES[spec.dtype]
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    for name, x in (("values", values), ("c_before", c_before), ("reference", ref.out), ("magnitudes", ref.mag)):
        if x.shape != flat.shape:
            raise ValueError(f"{name} are {x.shape}, expected {flat.shape}")
    if values.dtype != dtype:
        raise ValueError(f"values are {values.dtype}, expected {dtype}")
    reads = spec.op == "matmul_bias_add" or (spec.op == "matmul_alpha_beta" and spec.beta != 0)
    epi = None if not reads else (ref.mag if ref.epilogue is None else ref.epilogue).reshape(-1)
    return _judge(spec, np.ascontiguousarray(values), np.ascontiguousarray(c_before.astype(dtype, copy=False)),
                  ref.out, ref.mag, epi, flat, rounds_b)


@dataclass
class _Part:
    """What _judge found in one chunk of the outputs."""

    unwritten: int
    nans: int
    infs: int
    over: int
    max_abs: float
    max_rel: float
    first_unwritten: int = -1
    worst_ratio: float = 0.0
    worst_index: int = -1


def _judge(spec: Spec, out: np.ndarray, c_before: np.ndarray, r_all: np.ndarray, g_all: np.ndarray,
           epi_all: np.ndarray | None, where: np.ndarray | None, rounds_b: bool = False) -> Check:
    """The verdict on 1-d outputs against 1-d references; `where[i]` is element i's index into
    C flattened (None: i itself), for the reason's positions."""
    shape = spec.shape_c
    dtype = DTYPES[spec.dtype]
    tol = tolerance(spec.dtype, spec.k, rounds_b)
    floor = _UNDERFLOW[spec.dtype]
    uint = _UINT[spec.dtype]
    o_bits, c_bits = out.view(uint), c_before.view(uint)

    def position(i: int) -> tuple[int, ...]:
        return _where(i if where is None else int(where[i]), shape)

    def part(s: int, e: int) -> _Part:
        ob, cb, r, g = o_bits[s:e], c_bits[s:e], r_all[s:e], g_all[s:e]
        abs_r = np.abs(r)
        size = abs_r if epi_all is None else abs_r + epi_all[s:e]
        allowed = tol.rtol * size + tol.mag_factor * g + floor
        same = ob == cb
        v = to_float64(ob.view(dtype), spec.dtype)
        finite = np.isfinite(v)
        if same.any():
            # Where C held the sentinel (a NaN: inputs never are), an unchanged element was
            # never written. Where it held real input (alpha/beta, beta != 0), an unchanged
            # element is unwritten only if the right answer differs from that input beyond
            # the tolerance.
            c_val = to_float64(cb.view(dtype), spec.dtype)
            held = same & ~np.isnan(c_val)
            if held.any():
                same[held] = np.abs(r[held] - c_val[held]) > allowed[held]
        if finite.all() and not same.any():  # every element written, and a number: most checks
            err, nans, infs = np.abs(v - r), 0, 0
        else:
            err = np.where(finite & ~same, np.abs(v - r), 0.0)
            nans, infs = int((np.isnan(v) & ~same).sum()), int(np.isinf(v).sum())
        is_over = err > allowed
        rel = err / np.maximum(abs_r, np.maximum(_REL_FLOOR * g, floor))
        found = _Part(unwritten=int(same.sum()), nans=nans, infs=infs, over=int(is_over.sum()),
                      max_abs=float(err.max(initial=0.0)), max_rel=float(rel.max(initial=0.0)))
        if found.unwritten:
            found.first_unwritten = s + int(np.argmax(same))
        if found.over:
            ratio = np.where(is_over, err / allowed, 0.0)
            i = int(np.argmax(ratio))
            found.worst_ratio, found.worst_index = float(ratio[i]), s + i
        return found

    parts = chunked(part, o_bits.size, _CHUNK)
    unwritten = sum(p.unwritten for p in parts)
    nans = sum(p.nans for p in parts)
    infs = sum(p.infs for p in parts)
    over = sum(p.over for p in parts)
    max_abs = max((p.max_abs for p in parts), default=0.0)
    max_rel = max((p.max_rel for p in parts), default=0.0)
    first_unwritten = next((p.first_unwritten for p in parts if p.unwritten), -1)
    worst_index, worst_ratio = -1, 0.0
    for p in parts:  # the first of equally bad elements, as one pass in order would find
        if p.over and p.worst_ratio > worst_ratio:
            worst_ratio, worst_index = p.worst_ratio, p.worst_index

    reasons = []
    if unwritten:
        reasons.append(f"{_n(unwritten, 'element')} never written (first at {position(first_unwritten)})")
    if nans:
        reasons.append(f"{nans} NaN")
    if infs:
        reasons.append(f"{infs} infinite")
    if over:
        got = float(to_float64(o_bits[worst_index:worst_index + 1].view(dtype), spec.dtype)[0])
        want = float(r_all[worst_index])
        rel_there = abs(got - want) / max(abs(want), _REL_FLOOR * float(g_all[worst_index]), floor)
        reasons.append(f"{_n(over, 'element')} over tolerance, worst at {position(worst_index)}: {got:.6g} "
                       f"instead of {want:.6g}, rel {rel_there:.1e}, {worst_ratio:.3g}x the allowed error")
    return Check(
        max_abs=max_abs,
        max_rel=max_rel,
        nan_count=nans,
        unwritten=unwritten,
        bad=unwritten + nans + infs + over,
        verdict=Status.WRONG if reasons else Status.OK,
        reason="; ".join(reasons),
    )
