"""The spec dtypes on the host: how arrays of each are stored, and exact conversions.

numpy has float16 and float32 but no bfloat16, so a bfloat16 array is held as its bit
patterns in uint16 (the bytes a device reads and writes: the top half of a float32).
Code that wants the values goes through to_float64 / round_from, never through astype,
which would read the bit patterns as integers.

Conversions are exact and round to nearest, ties to even, as a device's store does:
 - bfloat16 -> float32 or float64 widens exactly (the bits shifted up by 16);
 - float32 -> bfloat16 adds 0x7FFF plus the kept part's lowest bit and drops the low 16
   bits, which is round-to-nearest-even on the value across normals, subnormals and
   overflow to infinity (float32 and bfloat16 share their exponent field); a NaN keeps
   its sign and the top of its payload and is made quiet, so it never becomes infinity;
 - float64 -> bfloat16 first rounds to float32 *to odd* (truncate, then set the last
   bit when anything was dropped), which keeps the second rounding correct: rounding
   to odd with at least two extra bits never double-rounds (Boldo and Melquiond, IEEE
   Trans. Computers 2008).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CODES", "DTYPES", "SHORT", "UNIT_ROUNDOFF", "bfloat16_bits", "bfloat16_values", "define", "round_from",
           "to_float64"]

# How each dtype is stored on the host (and so its itemsize on the device).
DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(np.uint16),  # bit patterns: numpy has no bfloat16
}
# The value of the MB_DTYPE define a kernel is compiled with (kernels/README.md), the one
# switch of the element type T in every prelude and of the vendor builtins' data type.
# float32 is 0, so an undefined MB_DTYPE (the preprocessor reads it as 0) means float32.
# The preludes and builtins test these numbers; tests/test_dtypes.py ties them together.
CODES: dict[str, int] = {"float32": 0, "float16": 1, "bfloat16": 2}
# Each dtype's short name, in exported file names (`naive-default-bf16.cl`).
SHORT: dict[str, str] = {"float16": "f16", "float32": "f32", "bfloat16": "bf16"}
# Unit roundoff 2^-p of each dtype, p its significand's bits with the implicit one.
UNIT_ROUNDOFF: dict[str, float] = {"float16": 2.0**-11, "float32": 2.0**-24, "bfloat16": 2.0**-8}


def define(dtype: str) -> dict[str, str]:
    """The define that selects `dtype` in a kernel's prelude: {"MB_DTYPE": code}."""
    return {"MB_DTYPE": str(CODES[dtype])}


def bfloat16_values(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (uint16), exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _odd_float32(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded to odd: towards zero, then the last bit set if inexact."""
    # Casting a signaling NaN raises the invalid flag; NaNs are handled by the caller.
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(np.float32)  # to nearest; may have rounded away from zero, or to infinity
        bits = y.view(np.uint32).copy()
        finite = np.isfinite(x)
        away = finite & (np.abs(y.astype(np.float64)) > np.abs(x))
        bits[away] -= 1  # one float32 step towards zero: same sign, so the bit pattern minus one
        inexact = finite & (bits.view(np.float32).astype(np.float64) != x)
        bits[inexact] |= 1
    return bits.view(np.float32)


def bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 or float64 values, rounded to nearest even."""
    given = np.asarray(x)
    x = given.reshape(-1)
    if x.dtype == np.float64:
        x = _odd_float32(x)
    elif x.dtype != np.float32:
        x = x.astype(np.float32)  # float16 widens exactly
    u = x.view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded.reshape(given.shape)


def to_float64(x: np.ndarray, dtype: str) -> np.ndarray:
    """The values of `x`, an array stored as DTYPES[dtype], as float64 (exact). An array that
    is float64 already holds values, whatever the dtype (a quantized B's dequantized weights)."""
    with np.errstate(invalid="ignore"):  # widening a signaling NaN (a kernel's garbage) raises the flag
        if dtype == "bfloat16" and np.asarray(x).dtype != np.float64:
            return bfloat16_values(x).astype(np.float64)
        return np.asarray(x).astype(np.float64)


def round_from(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 or float64 values rounded to `dtype` (nearest even), stored as DTYPES[dtype]."""
    if dtype == "bfloat16":
        return bfloat16_bits(x)
    return np.asarray(x).astype(DTYPES[dtype])
