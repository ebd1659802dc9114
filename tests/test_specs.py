import struct

import pytest

from metalbench.specs import Spec, SpecError, SuiteError, builtin_suites, load_suite

DEFAULT = [
    ("matmul", 1, 1, 9728, 896, False, True, "mps", 0.325),
    ("matmul", 1, 1, 896, 4864, False, True, "mps", 0.239),
    ("matmul", 1, 1, 896, 896, False, True, "mlx", 0.235),
    ("matmul", 1, 1, 151936, 896, False, True, "mps", 2.51),
    ("matmul_bias_add", 1, 1, 1152, 896, False, False, "mlx", 0.234),
    *[("matmul_alpha_beta", 14, 1, 64, k, False, False, "mlx", ms)
      for k, ms in zip([95, 16, 88, 83, 69, 67, 68, 84], [0.25, 0.249, 0.219, 0.187, 0.176, 0.172, 0.169, 0.169],
                       strict=True)],
    *[("matmul_alpha_beta", 14, 1, n, 64, False, True, "mlx", ms)
      for n, ms in zip([51, 83, 90, 76, 80, 67, 73], [0.231, 0.216, 0.208, 0.208, 0.176, 0.172, 0.172], strict=True)],
]


def test_default_suite_is_the_traced_decode_step():
    suite = load_suite("qwen2.5-0.5b-decode")
    got = [(s.op, s.batch, s.m, s.n, s.k, s.transpose_a, s.transpose_b, s.orig.impl, s.orig.ms) for s in suite.specs]
    assert got == DEFAULT
    assert {s.dtype for s in suite.specs} == {"float16"}
    assert {s.orig.device for s in suite.specs} == {"Apple M1-class GPU"}
    assert set(builtin_suites()) >= {"qwen2.5-0.5b-decode", "smoke"}


def test_smoke_covers_every_op_layout_and_dtype():
    specs = load_suite("smoke").specs
    assert {s.op for s in specs} == {"matmul", "matmul_bias_add", "matmul_alpha_beta"}
    assert {(s.transpose_a, s.transpose_b) for s in specs} == {(a, b) for a in (False, True) for b in (False, True)}
    assert {s.dtype for s in specs} == {"float16", "float32"}
    assert any(s.m == 1 for s in specs) and any(s.m > 1 for s in specs) and any(s.batch > 1 for s in specs)
    assert any(s.op == "matmul_alpha_beta" and s.beta == 0 for s in specs)
    assert any(s.op == "matmul_alpha_beta" and s.beta != 0 for s in specs)


@pytest.mark.parametrize(("ta", "tb"), [(False, False), (False, True), (True, False), (True, True)])
def test_params_pack_pitches_strides_and_op(ta, tb):
    s = Spec("matmul_alpha_beta", "float16", 3, 5, 7, 11, ta, tb, alpha=0.5, beta=2.0)
    fields = struct.unpack("<13i2fi", s.params())
    assert len(s.params()) == 64
    batch, m, n, k, lda, ldb, ldc, sa, sb, sc, pta, ptb, op, alpha, beta, _ = fields
    assert (batch, m, n, k) == (3, 5, 7, 11)
    assert lda == (5 if ta else 11) and ldb == (11 if tb else 7) and ldc == 7
    assert (sa, sb, sc) == (55, 77, 35)
    assert (pta, ptb, op, alpha, beta) == (int(ta), int(tb), 2, 0.5, 2.0)
    assert s.shape_a == ((3, 11, 5) if ta else (3, 5, 11))
    assert s.shape_b == ((3, 7, 11) if tb else (3, 11, 7))


def test_key_is_semantics_only():
    a = Spec("matmul", "float16", 1, 1, 8, 8, transpose_b=True)
    b = Spec("matmul", "float16", 1, 1, 8, 8, transpose_b=True, alpha=3.0)  # alpha means nothing to matmul
    assert a.key() == b.key()
    assert a.key() != Spec("matmul", "float16", 1, 1, 8, 8).key()
    c = Spec("matmul_alpha_beta", "float16", 1, 1, 8, 8, alpha=3.0)
    assert c.key() != Spec("matmul_alpha_beta", "float16", 1, 1, 8, 8, alpha=2.0).key()


def test_bytes_and_flops():
    s = Spec("matmul_bias_add", "float16", 1, 1, 1152, 896)
    assert s.bytes_moved() == 2 * (896 + 896 * 1152 + 1152 + 1152)
    assert s.flops() == 2 * 1152 * 896


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"op": "gemm"}, "op must be one of"),
    ({"dtype": "bfloat16"}, "dtype must be one of"),
    ({"n": 0}, "n must be a positive integer"),
    ({"m": True}, "m must be a positive integer"),
    ({"n": 2**16, "k": 2**15 + 1, "transpose_b": True}, "32-bit"),
])
def test_spec_validation(kwargs, message):
    args = {"op": "matmul", "dtype": "float16", "batch": 1, "m": 1, "n": 8, "k": 8, **kwargs}
    with pytest.raises(SpecError, match=message):
        Spec(**args)


GOOD = 'name = "t"\norig_device = "Apple M1"\n[[spec]]\nop = "matmul"\nbatch = 1\nm = 1\nn = 8\nk = 8\n'


@pytest.mark.parametrize(("text", "needle"), [
    (GOOD + "colour = 1\n", "spec 0: field 'colour': unknown"),
    (GOOD + "[[spec]]\nop = \"matmul\"\nbatch = 1\nm = 1\nn = -8\nk = 8\n", "spec 1: field 'n'"),
    (GOOD + "[[spec]]\nop = \"matmul\"\nbatch = 1\nm = 1.0\nn = 8\nk = 8\n", "spec 1: field 'm': must be int"),
    (GOOD + "[[spec]]\nop = \"matmul\"\nbatch = 1\nm = 1\nn = 8\nk = 8\ntranspose_b = 1\n",
     "spec 1: field 'transpose_b': must be bool"),
    (GOOD + "[[spec]]\nop = \"mul\"\nbatch = 1\nm = 1\nn = 8\nk = 8\n", "spec 1: field 'op'"),
    (GOOD + "[[spec]]\nop = \"matmul\"\nm = 1\nn = 8\nk = 8\n", "spec 1: field 'batch': missing"),
    (GOOD + "orig = { impl = \"mps\" }\n", "spec 0: field 'orig.ms'"),
    (GOOD.replace('orig_device = "Apple M1"\n', "") + "orig = { impl = \"mps\", ms = 1.0 }\n", "orig.device"),
    ("dtype = 3\n" + GOOD, "field 'dtype': must be str"),
    ("speed = 3\n" + GOOD, "unknown field 'speed'"),
    (GOOD + "[[spec]\n", "line"),
    ('name = "t"\n', "no [[spec]] tables"),
])
def test_malformed_suites_name_file_spec_and_field(tmp_path, text, needle):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_suite_defaults_and_orig(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\ndtype = "float32"\nbatch = 2\nm = 1\norig_device = "Apple M2"\n'
                    '[[spec]]\nop = "matmul"\nn = 8\nk = 4\norig = { impl = "mps", ms = 0.5 }\n'
                    '[[spec]]\nop = "matmul"\nbatch = 3\nn = 8\nk = 4\ndtype = "float16"\n')
    a, b = load_suite(path).specs
    assert (a.dtype, a.batch, a.orig.device, a.orig.ms) == ("float32", 2, "Apple M2", 0.5)
    assert (b.dtype, b.batch, b.orig) == ("float16", 3, None)


def test_unknown_names():
    with pytest.raises(SuiteError, match="no built-in suite 'nope'.*smoke"):
        load_suite("nope")
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite("missing/suite.toml")
