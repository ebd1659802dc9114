"""Error metrics and verdicts: is a kernel's output the op's result, to the precision of its dtype?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import Inputs, Reference
from .specs import DTYPES, Spec

__all__ = ["Check", "Tolerance", "check", "initial_c", "sentinel", "tolerance"]

# Quiet NaNs with a payload arithmetic does not produce (a computed NaN carries
# the canonical payload), so an element still holding it was never written.
_SENTINEL_BITS = {"float16": (np.uint16, 0x7E5A), "float32": (np.uint32, 0x7FC05A5A)}


@dataclass(frozen=True)
class Tolerance:
    """An element passes when |out - ref| <= rtol |ref| + mag_factor mag, mag = sum of |terms|."""

    rtol: float
    mag_factor: float


# fp16 (unit roundoff u = 2^-11): products of fp16 inputs are exact in fp32 and
# the accumulation error of a length-k fp32 dot product is at most k 2^-24 mag,
# under 2^-11 mag for every k up to 8192. Rounding the output to fp16 costs
# u |ref|, and an implementation may round once more on the way (alpha acc, or
# acc + bias, in half precision) at u mag. So rtol = 2u = 2^-10 (the output
# rounding with a factor 2 to spare) and mag_factor = 2^-10 (accumulation plus
# one intermediate rounding). Dropping a single term of a length-896 dot product
# already exceeds it on average.
# fp32 (u = 2^-24): rtol of 4 ulp; mag_factor 2^-16 admits the worst-case k u
# error up to k = 256 and the usual sqrt(k) u growth far beyond the suites' k,
# while a TF32 or fp16 accumulation (errors near 2^-11) is flagged.
_TOLERANCES = {"float16": Tolerance(2.0**-10, 2.0**-10), "float32": Tolerance(2.0**-22, 2.0**-16)}
# max_rel is reported over elements whose reference is not the residue of heavy
# cancellation (|ref| >= mag / 64): elsewhere |err| / |ref| is large for a
# correct kernel and says nothing.
_REL_FLOOR = 1.0 / 64


def tolerance(dtype: str) -> Tolerance:
    return _TOLERANCES[dtype]


def sentinel(dtype: str) -> np.ndarray:
    """A 0-d array of `dtype` holding the never-written marker."""
    bits_type, bits = _SENTINEL_BITS[dtype]
    return np.array(bits, dtype=bits_type).view(DTYPES[dtype])


def initial_c(spec: Spec, inputs: Inputs) -> np.ndarray:
    """What C holds before the checked launch: C's input where the op reads it, else the sentinel."""
    if spec.op == "matmul_alpha_beta" and spec.beta != 0:
        return np.ascontiguousarray(inputs.c)
    return np.full(spec.shape_c, sentinel(spec.dtype), dtype=DTYPES[spec.dtype])


@dataclass(frozen=True)
class Check:
    max_abs: float  # over written, finite elements
    max_rel: float  # likewise, where |ref| >= mag / 64
    nan_count: int  # NaN elements that are not the never-written sentinel
    unwritten: int
    bad: int  # elements out of tolerance, NaN or infinite included
    verdict: str  # "ok" or "wrong"
    reason: str  # the worst problem first; "" when ok


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def check(spec: Spec, out: np.ndarray, ref: Reference, c_before: np.ndarray) -> Check:
    """Compares a kernel's output with the reference; `c_before` is what C held before the launch."""
    tol = tolerance(spec.dtype)
    allowed = tol.rtol * np.abs(ref.out) + tol.mag_factor * ref.mag
    same = _bits(out) == _bits(np.broadcast_to(c_before, out.shape))
    if spec.op == "matmul_alpha_beta" and spec.beta != 0:
        # C held real values: an element equal to them is unwritten only where the
        # right answer differs from them.
        unwritten_mask = same & (np.abs(ref.out - c_before.astype(np.float64)) > allowed)
    else:
        unwritten_mask = same
    value = out.astype(np.float64)
    nan_mask = np.isnan(value) & ~unwritten_mask
    inf_mask = np.isinf(value)
    finite = ~(unwritten_mask | nan_mask | inf_mask)
    err = np.where(finite, np.abs(value - ref.out), 0.0)
    over = finite & (err > allowed)
    meaningful = finite & (np.abs(ref.out) >= _REL_FLOOR * ref.mag) & (ref.out != 0)
    rel = np.where(meaningful, err / np.where(meaningful, np.abs(ref.out), 1.0), 0.0)

    unwritten, nans, infs, over_count = (int(m.sum()) for m in (unwritten_mask, nan_mask, inf_mask, over))
    reasons = []
    if unwritten:
        reasons.append(f"{unwritten} elements never written")
    if nans:
        reasons.append(f"{nans} NaN")
    if infs:
        reasons.append(f"{infs} infinite")
    if over_count:
        # Report the element furthest over its own allowance.
        worst = np.unravel_index(int(np.argmax(np.where(over, err / np.maximum(allowed, 1e-300), 0.0))), out.shape)
        reasons.append(f"{over_count} over tolerance, worst at {tuple(int(i) for i in worst)}: "
                       f"{float(value[worst]):.6g} instead of {float(ref.out[worst]):.6g}")
    return Check(
        max_abs=float(err.max()) if err.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        nan_count=nans,
        unwritten=unwritten,
        bad=nans + infs + over_count,
        verdict="wrong" if reasons else "ok",
        reason="; ".join(reasons),
    )
