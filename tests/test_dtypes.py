"""bfloat16 on the host (metalbench/dtypes.py): bit patterns in uint16, converted exactly."""

from fractions import Fraction

import numpy as np
import pytest

from metalbench import dtypes
from metalbench.dtypes import bfloat16_bits, bfloat16_values, round_from, to_float64

ALL = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def value(bits: int) -> float:
    return float(bfloat16_values(np.array([bits], dtype=np.uint16))[0])


# Every positive finite bfloat16 (pattern i has value POSITIVE[i]), from its definition:
# subnormals m 2^-133, normals (1 + m/128) 2^(e-127). Independent of the code under test.
POSITIVE = np.array([(m * 2.0**-133) if e == 0 else (1 + m / 128) * 2.0**(e - 127)
                     for e in range(255) for m in range(128)])


def nearest_even(x: float) -> int:
    """The bfloat16 pattern nearest to x, ties to even, by exact rational arithmetic."""
    sign = 0x8000 if np.signbit(x) else 0
    ax = Fraction(abs(x))
    top, below = Fraction(POSITIVE[-1]), Fraction(POSITIVE[-2])
    # Past the largest finite value by half its step or more: infinity (IEEE 754 overflow).
    if ax >= top + (top - below) / 2:
        return sign | 0x7F80
    i = int(np.searchsorted(POSITIVE, abs(x)))
    best = min((abs(Fraction(POSITIVE[j]) - ax), j & 1, j) for j in (i - 1, i, i + 1) if 0 <= j < POSITIVE.size)
    return sign | best[2]


def test_every_pattern_widens_and_narrows_back_to_itself():
    values = bfloat16_values(ALL)
    assert values.dtype == np.float32 and (values.view(np.uint32) & 0xFFFF == 0).all()
    finite = ~np.isnan(values)
    assert (bfloat16_bits(values)[finite] == ALL[finite]).all()
    assert (bfloat16_bits(to_float64(ALL, "bfloat16"))[finite] == ALL[finite]).all()
    assert (values[:0x7F80] == POSITIVE).all() and (values[0x8000:0xFF80] == -POSITIVE).all()
    assert value(0x3F80) == 1.0 and value(0xC000) == -2.0 and value(0x7F7F) == float.fromhex("0x1.fep127")
    assert value(0x0001) == 2.0**-133 and value(0x7F80) == np.inf and value(0xFF80) == -np.inf


def test_halfway_values_round_to_even_and_others_to_nearest():
    # Between every pair of neighbouring positive finite bfloat16s (subnormals included),
    # the float32 exactly halfway, and its float32 neighbours on each side.
    lo = np.arange(0, 0x7F7F, dtype=np.uint32)
    mid = (lo << 16) | 0x8000
    for offset, want in ((0, np.where(lo & 1, lo + 1, lo)), (-1, lo), (1, lo + 1)):
        x = (mid + np.uint32(offset) if offset >= 0 else mid - np.uint32(1)).view(np.float32)
        for sign in (1, -1):
            got = bfloat16_bits(sign * x)
            assert (got == ((0x8000 if sign < 0 else 0) | want).astype(np.uint16)).all(), offset
            assert (bfloat16_bits((sign * x).astype(np.float64)) == got).all()


def test_float64_rounds_once_not_twice():
    # 1 + 2^-8 + 2^-30 is just above the halfway point between 1 and 1 + 2^-7: the right
    # answer is up. Through float32 by nearest it would first become 1 + 2^-8, a tie, and
    # then round to even: down, to 1.
    x = 1 + 2.0**-8 + 2.0**-30
    assert np.float32(x) == np.float32(1 + 2.0**-8)
    assert int(bfloat16_bits(np.array([x]))[0]) == 0x3F81
    rng = np.random.default_rng(7)
    xs = rng.standard_normal(3000) * np.exp2(rng.integers(-140, 128, 3000))
    xs = np.concatenate([xs, [2.0**-134, 2.0**-134 * (1 + 2.0**-40), 2.0**-135, 3.3961e38, 3.3962e38, 1e39, 0.0]])
    got = bfloat16_bits(xs)
    assert [int(g) for g in got] == [nearest_even(float(x)) for x in xs]


def test_infinities_and_nans():
    assert [int(b) for b in bfloat16_bits(np.array([np.inf, -np.inf], dtype=np.float32))] == [0x7F80, 0xFF80]
    # The largest float32 is past bfloat16's largest finite value by more than half a step.
    assert int(bfloat16_bits(np.array([np.finfo(np.float32).max]))[0]) == 0x7F80
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0x7F80FFFF], dtype=np.uint32).view(np.float32)
    got = bfloat16_bits(nans)
    assert np.isnan(bfloat16_values(got)).all()  # never infinity, even when only low payload bits are set
    assert [int(g) for g in got[:2]] == [0x7FC0, 0xFFC0]  # canonical NaNs stay canonical
    assert (got & 0x0040).all()  # and every NaN is quiet
    with np.errstate(invalid="raise"):  # a signaling NaN on the way in is not an error
        assert np.isnan(to_float64(np.array([0x7F81], dtype=np.uint16), "bfloat16")).all()


def test_round_from_and_to_float64_for_every_dtype():
    x = np.array([1 / 3, -2.5, 1e-3], dtype=np.float64)
    for name, storage in dtypes.DTYPES.items():
        stored = round_from(x, name)
        assert stored.dtype == storage and stored.shape == x.shape
        back = to_float64(stored, name)
        assert back.dtype == np.float64
        assert np.all(np.abs(back - x) <= dtypes.UNIT_ROUNDOFF[name] * np.abs(x))
    assert dtypes.define("bfloat16") == {"MB_DTYPE": "2"}
    assert sorted(dtypes.CODES) == sorted(dtypes.DTYPES) == sorted(dtypes.UNIT_ROUNDOFF) == sorted(dtypes.SHORT)


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_shapes_are_kept(shape):
    x = np.full(shape, 1.5, dtype=np.float32)
    assert bfloat16_bits(x).shape == shape and bfloat16_values(bfloat16_bits(x)).shape == shape
