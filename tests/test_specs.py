"""Specs, their ABI packing, and suite files."""

import math
import struct
import textwrap

import numpy as np
import pytest

from metalbench import _core
from metalbench.specs import OPS, SHORT_OPS, Orig, Spec, SpecError, SuiteError, builtin_suites, kernel_abi, load_suite

QWEN_SPECS = [
    # op, batch, m, n, k, transpose_a, transpose_b, alpha, beta, impl, ms
    ("matmul", 1, 1, 9728, 896, False, True, 1.0, 0.0, "mps", 0.325),
    ("matmul", 1, 1, 896, 4864, False, True, 1.0, 0.0, "mps", 0.239),
    ("matmul", 1, 1, 896, 896, False, True, 1.0, 0.0, "mlx", 0.235),
    ("matmul", 1, 1, 151936, 896, False, True, 1.0, 0.0, "mps", 2.51),
    ("matmul_bias_add", 1, 1, 1152, 896, False, False, 1.0, 0.0, "mlx", 0.234),
    *[("matmul_alpha_beta", 14, 1, 64, k, False, False, 1.0, 0.0, "mlx", ms)
      for k, ms in [(95, 0.25), (16, 0.249), (88, 0.219), (83, 0.187), (69, 0.176), (67, 0.172), (68, 0.169),
                    (84, 0.169)]],
    *[("matmul_alpha_beta", 14, 1, n, 64, False, True, 0.125, 1.0, "mlx", ms)
      for n, ms in [(51, 0.231), (83, 0.216), (90, 0.208), (76, 0.208), (80, 0.176), (67, 0.172), (73, 0.172)]],
]


def test_builtin_suites_are_listed():
    assert builtin_suites() == ["batched-decode", "odd", "quantized", "qwen2.5-0.5b-decode", "smoke"]


def test_qwen_decode_suite_has_exactly_the_traced_specs_and_times():
    suite = load_suite("qwen2.5-0.5b-decode")
    assert suite.name == "qwen2.5-0.5b-decode" and suite.description
    got = [(s.op, s.batch, s.m, s.n, s.k, s.transpose_a, s.transpose_b, s.alpha, s.beta, s.orig.impl, s.orig.ms)
           for s in suite.specs]
    assert got == QWEN_SPECS
    assert {s.dtype for s in suite.specs} == {"float16"}
    assert {s.orig.device for s in suite.specs} == {"Apple M1-class GPU"}
    assert len({s.key() for s in suite.specs}) == 20


def test_smoke_suite_covers_every_op_layout_and_case():
    specs = load_suite("smoke").specs
    assert 20 <= len(specs) <= 30
    assert {(s.op, s.transpose_a, s.transpose_b) for s in specs} == {
        (op, ta, tb) for op in OPS for ta in (False, True) for tb in (False, True)}
    assert {s.dtype for s in specs} == {"float16", "float32"}
    assert {s.op for s in specs if s.dtype == "float32"} == set(OPS)
    assert any(s.batch > 1 for s in specs) and any(s.batch == 1 for s in specs)
    assert any(s.m == 1 for s in specs) and any(s.m > 1 and s.m % 4 for s in specs)
    assert any(s.n % 2 and s.k % 2 for s in specs)
    ab = [s for s in specs if s.op == "matmul_alpha_beta"]
    assert any(s.beta == 0 for s in ab) and any(s.beta != 0 for s in ab) and any(s.alpha != 1 for s in ab)
    # Small enough for a CPU driver: only k is long, and only where split-K needs it.
    assert all(s.m <= 200 and s.n <= 200 and s.k <= 1024 for s in specs)
    assert sum(s.k > 200 for s in specs) <= 3
    assert len({s.key() for s in specs}) == len(specs)


def test_every_builtin_spec_is_within_the_int32_abi():
    for name in builtin_suites():
        for s in load_suite(name).specs:
            assert max(math.prod(s.shape_a), math.prod(s.shape_b), math.prod(s.shape_c)) < 2**31


def test_params_are_packed_as_the_core_was_compiled():
    """specs.py's MBParams against common.h's as the native core laid it out: the same
    fields at the same offsets with the same types, the same size, the same op codes."""
    packed, compiled = kernel_abi(), _core.abi()
    assert packed["params"]["size"] == compiled["params"]["size"] == len(Spec("matmul", "float16", 1, 1, 8, 8).params())
    ours, theirs = packed["params"]["fields"], compiled["params"]["fields"]
    assert ours.keys() == theirs.keys(), (f"only in specs.PARAMS_FIELDS: {sorted(ours.keys() - theirs.keys())}; "
                                          f"only in kernels/include/common.h: {sorted(theirs.keys() - ours.keys())}")
    differ = {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]}
    assert not differ, f"fields packed unlike common.h (specs.py, compiled): {differ}"
    assert packed["ops"] == compiled["ops"]


def _unpack(spec):
    """The spec's packed params read back field by field where the compiled core has them."""
    layout = _core.abi()["params"]
    raw = spec.params()
    assert len(raw) == layout["size"]
    return {name: struct.unpack_from("<" + field["format"], raw, field["offset"])[0]
            for name, field in layout["fields"].items()}


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_params_pack_pitches_and_strides_for_every_layout(ta, tb):
    spec = Spec("matmul_alpha_beta", "float16", batch=3, m=5, n=7, k=11, transpose_a=ta, transpose_b=tb,
                alpha=0.125, beta=-2.0)
    p = _unpack(spec)
    assert (p["batch"], p["m"], p["n"], p["k"]) == (3, 5, 7, 11)
    assert p["lda"] == (5 if ta else 11) and p["ldb"] == (11 if tb else 7) and p["ldc"] == 7
    assert (p["stride_a"], p["stride_b"], p["stride_c"]) == (55, 77, 35)
    assert (p["trans_a"], p["trans_b"], p["op"], p["reserved"]) == (int(ta), int(tb), 2, 0)
    assert (p["alpha"], p["beta"]) == (0.125, -2.0)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_params_address_stored_arrays_as_the_kernel_macros_do(ta, tb):
    """A_AT, B_AT and C_AT of common.h, fed the packed params, must find the logical elements."""
    spec = Spec("matmul", "float32", batch=2, m=3, n=4, k=5, transpose_a=ta, transpose_b=tb)
    p = _unpack(spec)
    a = np.arange(math.prod(spec.shape_a), dtype=np.float64).reshape(spec.shape_a)
    b = np.arange(math.prod(spec.shape_b), dtype=np.float64).reshape(spec.shape_b) * 10
    la = a.transpose(0, 2, 1) if ta else a
    lb = b.transpose(0, 2, 1) if tb else b
    for bi in range(2):
        for i in range(3):
            for kk in range(5):
                off = bi * p["stride_a"] + (kk * p["lda"] + i if p["trans_a"] else i * p["lda"] + kk)
                assert a.reshape(-1)[off] == la[bi, i, kk]
        for kk in range(5):
            for j in range(4):
                off = bi * p["stride_b"] + (j * p["ldb"] + kk if p["trans_b"] else kk * p["ldb"] + j)
                assert b.reshape(-1)[off] == lb[bi, kk, j]
    c = np.arange(math.prod(spec.shape_c)).reshape(spec.shape_c)
    assert c.reshape(-1)[1 * p["stride_c"] + 2 * p["ldc"] + 3] == c[1, 2, 3]


def test_op_codes_follow_ops_order():
    assert OPS == ("matmul", "matmul_bias_add", "matmul_alpha_beta")
    for code, op in enumerate(OPS):
        assert _unpack(Spec(op, "float16", 1, 1, 8, 8))["op"] == code == _core.abi()["ops"][SHORT_OPS[op]]


def test_key_is_canonical_and_ignores_orig():
    spec = Spec("matmul", "float16", 1, 1, 9728, 896, transpose_b=True)
    assert spec.key() == "matmul/float16/1x1x9728x896/nt"
    assert spec.key() == Spec("matmul", "float16", 1, 1, 9728, 896, transpose_b=True,
                              orig=Orig("mps", 0.3, "x")).key()
    ab = Spec("matmul_alpha_beta", "float16", 14, 1, 64, 95, alpha=1, beta=0)
    assert ab.key() == "matmul_alpha_beta/float16/14x1x64x95/nn/alpha=1.0/beta=0.0"
    assert ab == Spec("matmul_alpha_beta", "float16", 14, 1, 64, 95, alpha=1.0, beta=-0.0)
    assert isinstance(ab.alpha, float) and isinstance(ab.beta, float)
    variants = {Spec("matmul_alpha_beta", dt, b, m, 8, 8, ta, tb, al, be).key()
                for dt in ("float16", "float32") for b in (1, 2) for m in (1, 3) for ta in (False, True)
                for tb in (False, True) for al, be in ((1.0, 0.0), (0.5, 0.0), (1.0, 1.0))}
    assert len(variants) == 2 * 2 * 2 * 2 * 2 * 3


def test_labels():
    assert Spec("matmul", "float16", 1, 1, 9728, 896, transpose_b=True).label() == "matmul 1x9728x896 nt"
    ab = Spec("matmul_alpha_beta", "float16", 14, 1, 64, 95, alpha=0.125, beta=1.0)
    assert ab.label() == "alpha_beta 14x1x64x95 nn a=0.125 b=1"
    assert Spec("matmul_bias_add", "float32", 1, 4, 8, 16, True, True).label() == "bias_add 4x8x16 tt float32"


def test_fields_bytes_and_flops():
    spec = Spec("matmul_bias_add", "float16", 2, 3, 5, 7, transpose_b=True)
    assert spec.fields() == {"op": "matmul_bias_add", "dtype": "float16", "batch": 2, "m": 3, "n": 5, "k": 7,
                             "transpose_a": False, "transpose_b": True, "alpha": 1.0, "beta": 0.0, "bias": True,
                             "quant": "", "qbits": 0, "qgroup": 0}
    assert spec.shape_a == (2, 3, 7) and spec.shape_b == (2, 5, 7) and spec.shape_c == (2, 3, 5)
    assert spec.bytes_moved() == 2 * (2 * 21 + 2 * 35 + 2 * 15 + 5)
    assert spec.flops() == 2 * 2 * 3 * 5 * 7
    lm_head = Spec("matmul", "float16", 1, 1, 151936, 896, transpose_b=True)
    assert lm_head.bytes_moved() == 2 * (896 + 151936 * 896 + 151936)
    reads_c = Spec("matmul_alpha_beta", "float32", 1, 2, 3, 4, beta=1.0)
    assert reads_c.bytes_moved() == 4 * (8 + 12 + 6 + 6)
    assert Spec("matmul_alpha_beta", "float32", 1, 2, 3, 4, alpha=2.0).bytes_moved() == 4 * (8 + 12 + 6)


@pytest.mark.parametrize("kwargs, field", [
    ({"op": "gemm"}, "op"),
    ({"dtype": "float64"}, "dtype"),
    ({"n": 0}, "n"),
    ({"k": -5}, "k"),
    ({"m": 2.0}, "m"),
    ({"batch": True}, "batch"),
    ({"transpose_b": 1}, "transpose_b"),
    ({"alpha": float("nan"), "op": "matmul_alpha_beta"}, "alpha"),
    ({"beta": 1e39, "op": "matmul_alpha_beta"}, "beta"),
    ({"beta": 1e-50, "op": "matmul_alpha_beta"}, "beta"),
    ({"alpha": 0.5}, "alpha"),  # only alpha/beta uses it
    ({"beta": 1.0, "op": "matmul_bias_add"}, "beta"),
])
def test_invalid_specs_raise_spec_error_naming_the_field(kwargs, field):
    args = {"op": "matmul", "dtype": "float16", "batch": 1, "m": 1, "n": 8, "k": 8, **kwargs}
    with pytest.raises(SpecError, match=f"field '{field}'"):
        Spec(**args)


def test_int32_abi_limit():
    Spec("matmul", "float16", 1, 1, 2**31 - 1, 1)
    with pytest.raises(SpecError, match="int32"):
        Spec("matmul", "float16", 1, 1, 2**16, 2**15)  # B: 2**31 elements
    with pytest.raises(SpecError, match="'batch' x 'm' x 'n'"):
        Spec("matmul", "float16", 2**11, 2**10, 2**10, 1)


def write(tmp_path, text, name="suite.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
name = "mine"
description = "two specs"
dtype = "float16"
orig_device = "some GPU"
[[spec]]
op = "matmul"
m = 1
n = 64
k = 32
transpose_b = true
orig = { impl = "mps", ms = 0.5 }
[[spec]]
op = "matmul_alpha_beta"
dtype = "float32"
batch = 2
m = 3
n = 5
k = 7
alpha = 2
beta = 1
orig = { impl = "mlx", ms = 1, device = "other GPU" }
"""


def test_a_suite_file_with_defaults_and_overrides(tmp_path):
    path = write(tmp_path, GOOD)
    suite = load_suite(path)
    assert suite.name == "mine" and suite.path == path and len(suite.specs) == 2
    first, second = suite.specs
    assert first == Spec("matmul", "float16", 1, 1, 64, 32, transpose_b=True, orig=Orig("mps", 0.5, "some GPU"))
    assert second == Spec("matmul_alpha_beta", "float32", 2, 3, 5, 7, alpha=2.0, beta=1.0,
                          orig=Orig("mlx", 1.0, "other GPU"))
    assert load_suite(str(path)) == suite


def test_top_level_defaults_apply(tmp_path):
    path = write(tmp_path, """\
        dtype = "float32"
        op = "matmul_alpha_beta"
        batch = 4
        transpose_b = true
        alpha = 0.5
        [[spec]]
        m = 1
        n = 8
        k = 8
        [[spec]]
        op = "matmul"
        alpha = 1
        m = 1
        n = 8
        k = 8
        """)
    first, second = load_suite(path).specs
    assert first == Spec("matmul_alpha_beta", "float32", 4, 1, 8, 8, transpose_b=True, alpha=0.5)
    assert second == Spec("matmul", "float32", 4, 1, 8, 8, transpose_b=True)
    assert load_suite(path).name == "suite"  # the file's stem when not given


def _spec_table(**fields):
    base = {"op": '"matmul"', "dtype": '"float16"', "m": "1", "n": "8", "k": "8"}
    base.update(fields)
    return "[[spec]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


@pytest.mark.parametrize("fields, field, words", [
    ({"tranpose_b": "true"}, "tranpose_b", "did you mean 'transpose_b'"),
    ({"n": "-5"}, "n", "must be a positive integer, got -5"),
    ({"n": "64.0"}, "n", "must be a positive integer, got 64.0"),
    ({"m": "true"}, "m", "got true"),
    ({"transpose_b": "1"}, "transpose_b", "must be true or false"),
    ({"op": '"gemm"'}, "op", "must be one of matmul, matmul_bias_add, matmul_alpha_beta"),
    ({"dtype": '"float64"'}, "dtype", "must be one of float16, float32"),
    ({"alpha": '"half"', "op": '"matmul_alpha_beta"'}, "alpha", "must be a number"),
    ({"k": None}, "k", "missing"),
    ({"orig": '{ impl = "mps", ms = 0.3, devcie = "x" }'}, "orig.devcie", "did you mean 'orig.device'"),
    ({"orig": '{ impl = "mps", ms = -1 }'}, "orig.ms", "positive"),
    ({"orig": '{ impl = "mps" }'}, "orig.ms", "missing"),
    ({"orig": '"mps"'}, "orig", "must be a table"),
])
def test_malformed_specs_name_file_spec_and_field(tmp_path, fields, field, words):
    # The bad spec is the third (index 2): errors count [[spec]] tables from 0.
    text = 'orig_device = "gpu"\n' + _spec_table() + _spec_table(n="16") + _spec_table(**fields)
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    message = str(e.value)
    assert message.startswith(f"{path}: spec 2: field '{field}'"), message
    assert words in message


def test_orig_needs_a_device(tmp_path):
    path = write(tmp_path, _spec_table(orig='{ impl = "mps", ms = 0.3 }'))
    with pytest.raises(SuiteError, match=r"spec 0: field 'orig.device': missing.*orig_device"):
        load_suite(path)


def test_bad_top_level_fields(tmp_path):
    for text, words in [
        ('dtyp = "float16"\n', "field 'dtyp': unknown (did you mean 'dtype'?)"),
        ("batch = 0\n", "top level: field 'batch': must be a positive integer, got 0"),
        ('op = "matmul"\nalpha = 0.5\nbeta = "x"\n', "top level: field 'beta': must be a number"),
        ("name = 3\n", "top level: field 'name': must be a string"),
    ]:
        path = write(tmp_path, text + _spec_table())
        with pytest.raises(SuiteError, match=f"^{path}: ") as e:
            load_suite(path)
        assert words in str(e.value)


def test_suites_without_specs(tmp_path):
    with pytest.raises(SuiteError, match="no \\[\\[spec\\]\\] tables"):
        load_suite(write(tmp_path, 'name = "empty"\n'))
    with pytest.raises(SuiteError, match="not \\[spec\\]"):
        load_suite(write(tmp_path, '[spec]\nop = "matmul"\n'))


def test_a_toml_syntax_error_names_file_and_line(tmp_path):
    text = _spec_table() + "[[spec]]\nop = matmul\n"
    assert text.splitlines()[7] == "op = matmul"
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}: TOML syntax error")
    assert "line 8" in str(e.value)


def test_a_spec_over_the_int32_limit_is_a_suite_error(tmp_path):
    path = write(tmp_path, _spec_table(n="65536", k="32768"))
    with pytest.raises(SuiteError, match=r"spec 0: fields 'batch' x 'k' x 'n': B would hold"):
        load_suite(path)


def test_unknown_suite_names_and_missing_files(tmp_path):
    with pytest.raises(SuiteError, match="built-in: batched-decode, odd, quantized, qwen2.5-0.5b-decode, smoke"):
        load_suite("qwen3")
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "nope.toml")
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite("nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff"\n')
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(bad)
