"""Seeded inputs, the float64 reference and its on-disk cache."""

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

from metalbench import reference
from metalbench.dtypes import bfloat16_bits, to_float64
from metalbench.paths import cache_dir
from metalbench.reference import ReferenceCache, compute_reference, make_inputs, seed_of
from metalbench.specs import Orig, Spec, load_suite

SMOKE = load_suite("smoke").specs


def direct(spec, inputs):
    """The op from its definition, independently of compute_reference: logical matrices, einsum."""
    a = inputs.a.astype(np.float64)
    b = inputs.b.astype(np.float64)
    a = np.swapaxes(a, 1, 2) if spec.transpose_a else a
    b = np.swapaxes(b, 1, 2) if spec.transpose_b else b
    out = np.einsum("bik,bkj->bij", a, b)
    mag = np.einsum("bik,bkj->bij", np.abs(a), np.abs(b))
    if spec.op == "matmul_bias_add":
        out += inputs.bias.astype(np.float64)
        mag += np.abs(inputs.bias.astype(np.float64))
    if spec.op == "matmul_alpha_beta":
        c = inputs.c.astype(np.float64)
        out, mag = spec.alpha * out + spec.beta * c, abs(spec.alpha) * mag + abs(spec.beta) * np.abs(c)
    return out, mag


def arrays(inputs):
    return [x for x in (inputs.a, inputs.b, inputs.bias, inputs.c) if x is not None]


def test_seed_is_sha256_of_the_key_and_stable():
    spec = Spec("matmul", "float16", 1, 1, 9728, 896, transpose_b=True)
    digest = hashlib.sha256(b"metalbench inputs v1\nmatmul/float16/1x1x9728x896/nt").digest()
    assert seed_of(spec) == int.from_bytes(digest[:8], "little")
    assert seed_of(spec) != seed_of(Spec("matmul", "float16", 1, 1, 9728, 896))
    with_orig = Spec("matmul", "float16", 1, 1, 9728, 896, transpose_b=True, orig=Orig("mps", 0.3, "M1"))
    assert seed_of(with_orig) == seed_of(spec)


def test_inputs_are_deterministic_and_differ_between_specs():
    for spec in SMOKE[:6]:
        one, two = make_inputs(spec), make_inputs(spec)
        assert [x.tobytes() for x in arrays(one)] == [x.tobytes() for x in arrays(two)]
    first, second = make_inputs(SMOKE[0]), make_inputs(SMOKE[1])  # same shapes, other layout of B
    assert first.a.shape == second.a.shape and first.a.tobytes() != second.a.tobytes()


@pytest.mark.parametrize("spec", SMOKE, ids=[s.label() for s in SMOKE])
def test_inputs_have_the_stored_shapes_dtype_and_range(spec):
    inputs = make_inputs(spec)
    assert inputs.a.shape == spec.shape_a and inputs.b.shape == spec.shape_b
    assert (inputs.bias is not None) == spec.bias
    # C's input exists for alpha/beta even when beta == 0, so the runner can choose.
    assert (inputs.c is not None) == (spec.op == "matmul_alpha_beta")
    if inputs.bias is not None:
        assert inputs.bias.shape == (spec.n,)
    if inputs.c is not None:
        assert inputs.c.shape == spec.shape_c
    for x in arrays(inputs):
        assert x.dtype == np.dtype(spec.dtype) and x.flags.c_contiguous
        assert -1 <= x.min() < -0.5 and 0.5 < x.max() <= 1


def test_inputs_do_not_depend_on_the_draw_chunk(monkeypatch):
    spec = Spec("matmul_alpha_beta", "float32", 3, 7, 13, 11, alpha=0.5, beta=2.0)
    whole = make_inputs(spec)
    monkeypatch.setattr(reference, "_DRAW_CHUNK", 5)
    chunked = make_inputs(spec)
    assert [x.tobytes() for x in arrays(whole)] == [x.tobytes() for x in arrays(chunked)]


@pytest.mark.parametrize("spec", SMOKE, ids=[s.label() for s in SMOKE])
def test_reference_is_the_op_in_float64(spec):
    inputs = make_inputs(spec)
    ref = compute_reference(spec, inputs)
    out, mag = direct(spec, inputs)
    assert ref.out.dtype == ref.mag.dtype == np.float64
    assert ref.out.shape == ref.mag.shape == spec.shape_c
    np.testing.assert_allclose(ref.out, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.mag, mag, rtol=1e-12, atol=1e-12)
    assert (ref.mag >= np.abs(ref.out) * (1 - 1e-12)).all()


def test_reference_uses_the_float32_alpha_the_kernel_sees():
    spec = Spec("matmul_alpha_beta", "float16", 1, 2, 3, 4, alpha=0.1, beta=0.3)
    inputs = make_inputs(spec)
    ref = compute_reference(spec, inputs)
    a, b = inputs.a[0].astype(np.float64), inputs.b[0].astype(np.float64)
    want = float(np.float32(0.1)) * (a @ b) + float(np.float32(0.3)) * inputs.c[0].astype(np.float64)
    np.testing.assert_array_equal(ref.out[0], want)


@pytest.mark.parametrize("tb", [False, True])
def test_chunking_over_n_does_not_change_the_result(monkeypatch, tb):
    spec = Spec("matmul_bias_add", "float16", 2, 3, 50, 20, transpose_b=tb)
    inputs = make_inputs(spec)
    whole = compute_reference(spec, inputs)
    monkeypatch.setattr(reference, "_REF_CHUNK", 2 * 20 * 7)  # 7 columns at a time, a ragged last chunk
    chunked = compute_reference(spec, inputs)
    np.testing.assert_array_equal(whole.out, chunked.out)
    np.testing.assert_array_equal(whole.mag, chunked.mag)


def test_cache_computes_once_then_hits(tmp_path):
    spec = SMOKE[-4]
    inputs = make_inputs(spec)
    cache = ReferenceCache(tmp_path)
    first, status = cache.get(spec, inputs)
    assert status == "computed"
    again, status = cache.get(spec, inputs)
    assert status == "cached"
    np.testing.assert_array_equal(first.out, again.out)
    np.testing.assert_array_equal(first.mag, again.mag)
    assert ReferenceCache(tmp_path).get(spec, inputs)[1] == "cached"  # another process, same disk
    assert [p.name for p in tmp_path.iterdir()] == [cache.path_for(spec, inputs).name]  # no temp files left


def test_default_root_follows_the_cache_dir():
    spec = SMOKE[0]
    cache = ReferenceCache()
    assert cache.root == cache_dir() / "references"
    cache.get(spec, make_inputs(spec))
    assert cache.path_for(spec, make_inputs(spec)).is_file()


def test_entries_are_content_addressed(tmp_path, monkeypatch):
    cache = ReferenceCache(tmp_path)
    a, b = SMOKE[0], SMOKE[1]
    assert cache.path_for(a, make_inputs(a)) != cache.path_for(b, make_inputs(b))
    path = cache.path_for(a, make_inputs(a))
    monkeypatch.setattr(reference, "VERSION", reference.VERSION + 1)
    assert cache.path_for(a, make_inputs(a)) != path
    monkeypatch.undo()
    # Other numbers for the same spec (a generator that changed) get their own entry.
    other = make_inputs(a)
    other.b.reshape(-1)[0] = -other.b.reshape(-1)[0] + 0.5
    assert cache.path_for(a, other) != path


def _payload(path):
    header, _, payload = path.read_bytes().partition(b"\n")
    with np.load(io.BytesIO(payload)) as z:
        return header, {name: z[name] for name in z.files}


def _write(path, header, parts, reseal):
    buf = io.BytesIO()
    np.savez(buf, **parts)
    payload = buf.getvalue()
    if reseal:  # a well-formed entry with the wrong content, as a buggy writer would leave
        header = b"metalbench-reference v1 sha256=" + hashlib.sha256(payload).hexdigest().encode()
    path.write_bytes(header + b"\n" + payload)


def damage_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_flip_middle(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def damage_header(path):
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))


def damage_garbage(path):
    path.write_bytes(b"not a reference entry at all")


def damage_empty(path):
    path.write_bytes(b"")


def damage_values(path):
    header, parts = _payload(path)
    parts["out"] = parts["out"].copy()
    parts["out"].reshape(-1)[3] += 1.0
    _write(path, header, parts, reseal=False)


def damage_shape_resealed(path):
    header, parts = _payload(path)
    parts["out"] = parts["out"].reshape(-1)[:-1]
    _write(path, header, parts, reseal=True)


def damage_dtype_resealed(path):
    header, parts = _payload(path)
    parts["mag"] = parts["mag"].astype(np.float32)
    _write(path, header, parts, reseal=True)


def damage_npz_resealed(path):
    path.write_bytes(b"metalbench-reference v1 sha256=" + hashlib.sha256(b"junk").hexdigest().encode() + b"\njunk")


@pytest.mark.parametrize(("damage", "words"), [
    (damage_truncate, "failed its checksum"),
    (damage_flip_middle, "failed its checksum"),
    (damage_header, "bad header"),
    (damage_garbage, "bad header"),
    (damage_empty, "bad header"),
    (damage_values, "failed its checksum"),
    (damage_shape_resealed, "not float64 (2, 5, 31)"),
    (damage_dtype_resealed, "has mag of float32"),
    (damage_npz_resealed, "could not be read"),
])
def test_a_damaged_entry_is_reported_and_recomputed(tmp_path, damage, words):
    spec = SMOKE[-4]  # alpha/beta with beta != 0: out and mag both depend on everything
    assert spec.shape_c == (2, 5, 31)
    inputs = make_inputs(spec)
    cache = ReferenceCache(tmp_path)
    good, _ = cache.get(spec, inputs)
    path = cache.path_for(spec, inputs)
    damage(path)
    fixed, status = cache.get(spec, inputs)
    assert status.startswith("recomputed: ") and path.name in status and words in status, status
    np.testing.assert_array_equal(fixed.out, good.out)
    np.testing.assert_array_equal(fixed.mag, good.mag)
    again, status = cache.get(spec, inputs)
    assert status == "cached"  # the entry was rewritten whole
    np.testing.assert_array_equal(again.out, good.out)


def test_every_single_flipped_byte_is_caught(tmp_path):
    spec = SMOKE[-4]
    inputs = make_inputs(spec)
    cache = ReferenceCache(tmp_path)
    good, _ = cache.get(spec, inputs)
    path = cache.path_for(spec, inputs)
    pristine = path.read_bytes()
    for i in range(0, len(pristine), 7):  # header, zip records, metadata and array data alike
        data = bytearray(pristine)
        data[i] ^= 0x10
        path.write_bytes(bytes(data))
        ref, status = cache.get(spec, inputs)
        assert status.startswith("recomputed: "), (i, status)
        np.testing.assert_array_equal(ref.out, good.out)
        np.testing.assert_array_equal(ref.mag, good.mag)
    assert cache.get(spec, inputs)[1] == "cached"


def test_another_specs_entry_under_this_name_is_not_trusted(tmp_path):
    cache = ReferenceCache(tmp_path)
    spec, other = SMOKE[2], SMOKE[3]
    inputs, other_inputs = make_inputs(spec), make_inputs(other)
    good, _ = cache.get(spec, inputs)
    cache.get(other, other_inputs)
    path = cache.path_for(spec, inputs)
    path.write_bytes(cache.path_for(other, other_inputs).read_bytes())
    fixed, status = cache.get(spec, inputs)
    assert status.startswith("recomputed") and "another spec" in status
    np.testing.assert_array_equal(fixed.out, good.out)


def test_an_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    spec = SMOKE[0]
    inputs = make_inputs(spec)
    cache = ReferenceCache(tmp_path)

    def interrupted(src, dst):
        assert Path(src).stat().st_size > 0  # the whole entry was written aside first
        raise KeyboardInterrupt

    monkeypatch.setattr(reference.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.get(spec, inputs)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # neither a half entry nor its temp file
    assert cache.get(spec, inputs)[1] == "computed"


def test_an_unwritable_cache_still_gives_the_reference(tmp_path):
    spec = SMOKE[0]
    inputs = make_inputs(spec)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    ref, status = ReferenceCache(blocker / "references").get(spec, inputs)
    assert status.startswith("computed (not stored:")
    np.testing.assert_array_equal(ref.out, compute_reference(spec, inputs).out)


@pytest.mark.skipif(not os.environ.get("METALBENCH_BIG_TESTS"), reason="set METALBENCH_BIG_TESTS=1: 272 MB of input")
def test_lm_head_reference_is_memory_bounded():
    import resource

    spec = load_suite("qwen2.5-0.5b-decode").specs[3]
    inputs = make_inputs(spec)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ref = compute_reference(spec, inputs)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # a float64 copy of B alone would be 1090 MB
    b = inputs.b[0, -100:].astype(np.float64)
    np.testing.assert_allclose(ref.out[0, 0, -100:], b @ inputs.a[0, 0].astype(np.float64), rtol=1e-12, atol=1e-12)


def as_bfloat16(spec):
    return Spec(spec.op, "bfloat16", spec.batch, spec.m, spec.n, spec.k, spec.transpose_a, spec.transpose_b,
                spec.alpha, spec.beta)


BF16 = [as_bfloat16(s) for s in SMOKE[:: 3]]


@pytest.mark.parametrize("spec", BF16, ids=[s.label() for s in BF16])
def test_bfloat16_inputs_are_bit_patterns_of_drawn_values_and_the_reference_uses_the_values(spec):
    inputs = make_inputs(spec)
    for x in arrays(inputs):
        assert x.dtype == np.uint16  # bit patterns: numpy has no bfloat16
    values = [to_float64(x, "bfloat16") for x in arrays(inputs)]
    assert all(-1 <= v.min() < -0.5 and 0.5 < v.max() <= 1 for v in values)
    for x, v in zip(arrays(inputs), values, strict=True):
        assert (bfloat16_bits(v) == x).all()  # values of bfloat16s: they round to themselves
        assert len(np.unique(x)) > min(x.size // 2, 200)  # drawn, not a handful of values
    ref = compute_reference(spec, inputs)
    decoded = reference.Inputs(*(None if x is None else to_float64(x, "bfloat16")
                                 for x in (inputs.a, inputs.b, inputs.bias, inputs.c)))
    out, mag = direct(spec, decoded)
    np.testing.assert_allclose(ref.out, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.mag, mag, rtol=1e-12, atol=1e-12)


def test_bfloat16_fresh_copies_and_their_reference():
    spec = as_bfloat16(Spec("matmul_bias_add", "float16", 2, 3, 10, 16, transpose_a=True))
    inputs = make_inputs(spec)
    base = compute_reference(spec, inputs)
    copies, fresh = reference.fresh_copies(spec, inputs.a, 1234, 2)
    flat = np.arange(int(np.prod(spec.shape_c)))
    for c, a in enumerate(copies):
        assert a.dtype == np.uint16
        want = compute_reference(spec, reference.Inputs(a, inputs.b, inputs.bias, None))
        got = reference.reference_at(spec, base, inputs.b, fresh, c, flat)
        np.testing.assert_allclose(got.out, want.out.reshape(-1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.mag, want.mag.reshape(-1), rtol=1e-12, atol=1e-12)
