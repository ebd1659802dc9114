import numpy as np
import pytest

from metalbench import reference
from metalbench.reference import ReferenceCache, compute_reference, make_inputs, seed_of
from metalbench.specs import Spec, load_suite

SMOKE = load_suite("smoke").specs


def direct(spec, inputs):
    a = inputs.a.astype(np.float64)
    b = inputs.b.astype(np.float64)
    a = a.transpose(0, 2, 1) if spec.transpose_a else a
    b = b.transpose(0, 2, 1) if spec.transpose_b else b
    out = np.einsum("bik,bkj->bij", a, b)
    if spec.op == "matmul_bias_add":
        out = out + inputs.bias.astype(np.float64)
    if spec.op == "matmul_alpha_beta":
        out = spec.alpha * out + spec.beta * inputs.c.astype(np.float64)
    return out


def test_inputs_are_deterministic_and_per_spec():
    s = SMOKE[0]
    one, two = make_inputs(s), make_inputs(s)
    assert one.a.tobytes() == two.a.tobytes() and one.b.tobytes() == two.b.tobytes()
    assert make_inputs(SMOKE[1]).a.tobytes() != one.a.tobytes()
    assert seed_of(s) == seed_of(Spec(**{f: getattr(s, f) for f in ("op", "dtype", "batch", "m", "n", "k")},
                                      transpose_a=s.transpose_a, transpose_b=s.transpose_b))
    assert one.a.dtype == np.float16 and one.a.shape == s.shape_a and one.b.shape == s.shape_b
    assert one.a.min() >= -1 and one.a.max() <= 1


@pytest.mark.parametrize("spec", SMOKE, ids=[s.label() for s in SMOKE])
def test_reference_is_the_op_in_float64(spec):
    inputs = make_inputs(spec)
    ref = compute_reference(spec, inputs)
    np.testing.assert_allclose(ref.out, direct(spec, inputs), rtol=1e-12, atol=1e-12)
    assert (ref.mag >= np.abs(ref.out) - 1e-9).all()
    assert (inputs.bias is not None) == spec.bias
    assert (inputs.c is not None) == (spec.op == "matmul_alpha_beta")


def test_chunking_does_not_change_the_result(monkeypatch):
    spec = Spec("matmul", "float16", 2, 3, 50, 20, transpose_b=True)
    inputs = make_inputs(spec)
    whole = compute_reference(spec, inputs)
    monkeypatch.setattr(reference, "_CHUNK", 7)
    chunked = compute_reference(spec, inputs)
    np.testing.assert_array_equal(whole.out, chunked.out)
    np.testing.assert_array_equal(whole.mag, chunked.mag)


def test_cache_hit_and_damage(tmp_path):
    cache = ReferenceCache(tmp_path)
    spec = SMOKE[3]
    inputs = make_inputs(spec)
    first, status = cache.get(spec, inputs)
    assert status == "computed"
    again, status = cache.get(spec, inputs)
    assert status == "cached"
    np.testing.assert_array_equal(first.out, again.out)
    path = cache.path_for(spec)

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the arrays
    path.write_bytes(bytes(data))
    fixed, status = cache.get(spec, inputs)
    assert status.startswith("recomputed") and path.name in status
    np.testing.assert_array_equal(fixed.out, first.out)
    assert cache.get(spec, inputs)[1] == "cached"

    path.write_bytes(path.read_bytes()[:100])  # truncated
    fixed, status = cache.get(spec, inputs)
    assert status.startswith("recomputed") and "unreadable" in status
    np.testing.assert_array_equal(fixed.out, first.out)

    other = SMOKE[4]
    cache.get(other, make_inputs(other))
    path.write_bytes(cache.path_for(other).read_bytes())  # another spec's entry under this name
    fixed, status = cache.get(spec, inputs)
    assert "another spec" in status
    np.testing.assert_array_equal(fixed.out, first.out)
