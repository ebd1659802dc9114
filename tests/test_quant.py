"""MLX's affine quantization in metalbench (quant.py): the format, bit for bit against
mlx.core where mlx is installed (the `test` extra, where its wheel exists), and the
spec field `quant` with its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from metalbench import quant as Q
from metalbench.dtypes import round_from, to_float64
from metalbench.reference import compute_reference, make_inputs
from metalbench.specs import Spec, SpecError, SuiteError, load_suite, spec_from_key

try:
    import mlx.core as mx
except ImportError:  # the test extra installs mlx[cpu] only where MLX ships a wheel
    mx = None
needs_mlx = pytest.mark.skipif(mx is None, reason="mlx is not installed (mlx[cpu] has wheels for Linux x86_64 "
                                                  "and macOS arm64 only)")
FORMATS = [Q.Quant(bits, group) for bits in Q.BITS for group in Q.GROUPS]
DTYPES = [np.float16, np.float32]


def _weights(rng: np.random.Generator, dtype, n: int = 24, k: int = 256) -> np.ndarray:
    """Rows of very different ranges, and the groups MLX's rule treats apart: a constant one,
    one of tiny values (q0 = 0: bias 0), one all positive and one all negative."""
    w = rng.uniform(-1, 1, (n, k)) * rng.uniform(0.01, 4, (n, 1))
    w[0, :128] = 0.5
    w[1, :128] = 1e-9
    w[2, :128] = rng.uniform(0, 1, 128)
    w[3, :128] = -rng.uniform(0, 1, 128)
    return w.astype(dtype)


def _bits(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x)).view(np.uint8)


@needs_mlx
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_metalbench_quantizes_as_mlx_bit_for_bit(fmt, dtype):
    w = _weights(np.random.default_rng(fmt.bits * 1000 + fmt.group), dtype)
    ours = Q.quantize(w, fmt)
    codes, scales, biases = mx.quantize(mx.array(w), group_size=fmt.group, bits=fmt.bits)
    assert np.array_equal(np.array(codes), ours.codes)
    assert np.array_equal(_bits(scales), _bits(ours.scales)) and np.array(scales).dtype == ours.scales.dtype
    assert np.array_equal(_bits(biases), _bits(ours.biases))


@needs_mlx
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_weights_move_both_ways_between_mlx_and_metalbench(fmt, dtype):
    rng = np.random.default_rng(fmt.bits * 7 + fmt.group)
    # metalbench -> MLX: our packed codes, scales and biases, dequantized by MLX.
    ours = Q.quantize(_weights(rng, dtype), fmt)
    theirs = mx.dequantize(mx.array(ours.codes), mx.array(ours.scales), mx.array(ours.biases),
                           group_size=fmt.group, bits=fmt.bits)
    assert np.array_equal(_bits(theirs), _bits(Q.dequantize(ours, dtype)))
    # MLX -> metalbench: codes of every value (not only what mx.quantize makes) unpacked here.
    codes = rng.integers(0, 1 << fmt.bits, (8, 256), dtype=np.uint8)
    scales = rng.uniform(-1, 1, (8, 256 // fmt.group)).astype(dtype)
    biases = rng.uniform(-1, 1, (8, 256 // fmt.group)).astype(dtype)
    packed = Q.pack(codes, fmt.bits)
    assert np.array_equal(Q.unpack(packed, fmt.bits), codes)
    mlx_w = np.array(mx.dequantize(mx.array(packed), mx.array(scales), mx.array(biases),
                                   group_size=fmt.group, bits=fmt.bits))
    loaded = Q.QuantWeights(fmt, packed, scales, biases)
    assert np.array_equal(_bits(mlx_w), _bits(Q.dequantize(loaded, dtype)))
    # And MLX's own packing of mx.quantize's codes unpacks to the codes it dequantizes.
    c, s, b = mx.quantize(mx.array(_weights(rng, dtype)), group_size=fmt.group, bits=fmt.bits)
    back = Q.QuantWeights(fmt, np.array(c), np.array(s), np.array(b))
    assert np.array_equal(_bits(mx.dequantize(c, s, b, group_size=fmt.group, bits=fmt.bits)),
                          _bits(Q.dequantize(back, dtype)))


@needs_mlx
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_bfloat16_weights_quantize_as_mlx_and_move_both_ways(fmt):
    """bfloat16 is uint16 bit patterns on the host (dtypes.py): the dtype is named, and the
    bits are MLX's (mx.array(...).view(mx.bfloat16) reads the same patterns)."""
    w = round_from(_weights(np.random.default_rng(fmt.bits + fmt.group), np.float32), "bfloat16")
    ours = Q.quantize(w, fmt, "bfloat16")
    codes, scales, biases = mx.quantize(mx.array(w).view(mx.bfloat16), group_size=fmt.group, bits=fmt.bits)
    assert np.array_equal(np.array(codes), ours.codes)
    assert np.array_equal(np.array(scales.view(mx.uint16)), ours.scales)
    assert np.array_equal(np.array(biases.view(mx.uint16)), ours.biases)
    # MLX -> metalbench: its arrays, named bfloat16, dequantize (in float64) to what MLX's do,
    # but for MLX rounding its products and sums to bfloat16.
    back = Q.QuantWeights(fmt, np.array(codes), np.array(scales.view(mx.uint16)), np.array(biases.view(mx.uint16)),
                          "bfloat16")
    theirs = np.array(mx.dequantize(codes, scales, biases, group_size=fmt.group, bits=fmt.bits).astype(mx.float32))
    ours64 = Q.dequantize(back)
    # Two roundings to bfloat16 (u = 2^-8), each at most u times the size of its terms.
    groups = Q.unpack(back.codes, fmt.bits).reshape(*back.scales.shape, fmt.group)
    terms = (groups * np.abs(to_float64(back.scales, "bfloat16"))[..., None]
             + np.abs(to_float64(back.biases, "bfloat16"))[..., None]).reshape(ours64.shape)
    assert np.all(np.abs(theirs - ours64) <= 2.0**-7 * terms)
    # Unnamed, uint16 arrays are refused rather than read as integers.
    with pytest.raises(Q.QuantError, match="name their dtype"):
        Q.quantize(w, fmt)


def test_codes_are_a_little_endian_bit_stream_that_straddles_words():
    # 3-bit codes: code 10 of a row takes bits 30..32, the top two of word 0 and bit 0 of word 1.
    codes = np.zeros((1, 32), dtype=np.uint8)
    codes[0, 10] = 0b101
    words = Q.pack(codes, 3)
    assert words.shape == (1, 3) and words[0, 0] == 1 << 30 and words[0, 1] == 1 and words[0, 2] == 0
    codes6 = np.zeros((1, 32), dtype=np.uint8)
    codes6[0, 5] = 0b111111  # bits 30..35
    assert list(Q.pack(codes6, 6)[0, :2]) == [0b11 << 30, 0b1111]


@needs_mlx
@pytest.mark.parametrize("fmt", [Q.Quant(4, 64), Q.Quant(8, 64), Q.Quant(3, 32), Q.Quant(6, 128)],
                         ids=lambda f: f.name)
def test_the_reference_agrees_with_mlx_quantized_matmul(fmt):
    spec = Spec("matmul", "float32", 1, 3, 40, 256, transpose_b=True, quant=fmt.name)
    inputs = make_inputs(spec)
    ref = compute_reference(spec, inputs)
    q = inputs.q
    assert q is not None and q.codes.shape == (1, 40, 256 * fmt.bits // 32)
    out = mx.quantized_matmul(mx.array(inputs.a[0]), mx.array(q.codes[0]), mx.array(q.scales[0]),
                              mx.array(q.biases[0]), transpose=True, group_size=fmt.group, bits=fmt.bits)
    # MLX accumulates in float32; the reference is float64 of the same dequantized weights.
    np.testing.assert_allclose(np.array(out), ref.out[0], rtol=0, atol=1e-5 * ref.mag.max())


def test_spec_key_label_and_byte_counts_carry_the_quantization():
    spec = Spec("matmul", "float16", 1, 1, 896, 4864, transpose_b=True, quant="affine-q4-g64")
    assert spec.key() == "matmul/float16/1x1x896x4864/nt/quant=affine-q4-g64"
    assert spec_from_key(spec.key()) == spec and "affine-q4-g64" in spec.label()
    # Codes: 4 bits a weight; a float16 scale and bias per 64 weights.
    weights = 896 * 4864
    assert spec.b_bytes() == weights // 2 + 2 * 2 * weights // 64
    plain = Spec("matmul", "float16", 1, 1, 896, 4864, transpose_b=True)
    assert spec.bytes_read() == plain.bytes_read() - 2 * weights + spec.b_bytes()
    assert spec.fields()["qbits"] == 4 and spec.fields()["qgroup"] == 64 and plain.fields()["quant"] == ""


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"quant": "affine-q4-g48"}, "group size 48 is not one of MLX's"),
    ({"quant": "affine-q7-g64"}, "bit width 7 is not one of MLX's"),
    ({"quant": "gptq-4"}, "must be affine-q<bits>-g<group>"),
    ({"quant": "affine-q4-g64", "k": 96}, "group size 64 does not divide k = 96"),
    ({"quant": "affine-q4-g64", "transpose_b": False}, "stored n x k"),
])
def test_bad_quant_specs_name_the_field(kwargs, needle):
    args = {"op": "matmul", "dtype": "float16", "batch": 1, "m": 1, "n": 64, "k": 256, "transpose_b": True, **kwargs}
    with pytest.raises(SpecError, match="field 'quant'") as e:
        Spec(**args)
    assert needle in str(e.value)


def test_arrays_of_the_wrong_shape_are_refused_by_name():
    fmt = Q.Quant(4, 64)
    codes = np.zeros((8, 32), dtype=np.uint32)  # 256 codes a row: 4 groups
    good = np.zeros((8, 4), dtype=np.float16)
    Q.QuantWeights(fmt, codes, good, good).check()
    for scales, biases, needle in [(np.zeros((8, 2), np.float16), good, "scales: shape (8, 2)"),
                                   (good, np.zeros((4, 4), np.float16), "biases: shape (4, 4)"),
                                   (good, good.astype(np.float32), "biases: dtype float32")]:
        with pytest.raises(Q.QuantError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            Q.QuantWeights(fmt, codes, scales, biases).check()
    with pytest.raises(Q.QuantError, match="codes: must be uint32"):
        Q.QuantWeights(fmt, codes.astype(np.int32), good, good).check()


def _suite(tmp_path, spec_lines: str) -> str:
    path = tmp_path / "q.toml"
    path.write_text(f'name = "q"\n[[spec]]\nop = "matmul"\nm = 1\nn = 64\nk = 256\ntranspose_b = true\n{spec_lines}')
    return str(path)


def test_suite_files_take_quant_on_b_and_refuse_it_on_a(tmp_path):
    assert load_suite(_suite(tmp_path, 'quant = "affine-q8-g32"\n')).specs[0].quant == "affine-q8-g32"
    assert load_suite(_suite(tmp_path, 'quant = { b = "affine-q4-g64" }\n')).specs[0].quant == "affine-q4-g64"
    with pytest.raises(SuiteError, match=r"spec 0: field 'quant.a': only B, the weights, can be quantized"):
        load_suite(_suite(tmp_path, 'quant = { a = "affine-q4-g64" }\n'))


@pytest.mark.parametrize(("line", "needle"), [
    ('quant = { a = "affine-q4-g64" }', "field 'quant.a'"),
    ('quant = "affine-q4-g256"', "group size 256 is not one of MLX's"),
    ('quant = "affine-q1-g64"', "bit width 1 is not one of MLX's"),
    ('quant = "affine-q4-g128"\nk = 192', "group size 128 does not divide k = 192"),
])
def test_bad_quant_in_a_suite_is_one_line_exit_2_and_nothing_stored(tmp_path, line, needle):
    path = tmp_path / "q.toml"
    path.write_text(f'name = "q"\n[[spec]]\nop = "matmul"\nm = 1\nn = 64\ntranspose_b = true\n{line}\n'
                    + ("k = 256\n" if "k =" not in line else ""))
    db = tmp_path / "store.sqlite"
    result = cli("run", "--suite", str(path), "--db", str(db), "--backend", "opencl")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "spec 0" in lines[0], lines
    assert not db.exists()


def test_from_config_quantizes_the_weight_products(tmp_path):
    config = json.loads((Path(__file__).parent / "data" / "qwen2.5-0.5b.json").read_text())
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(config))
    out = tmp_path / "q.toml"
    made = cli("suite", "from-config", str(plain), "--quant", "affine-q8-g64", "--context", "256", "--out", str(out))
    assert made.returncode == 0, made.stderr
    weights = [s for s in load_suite(out).specs if s.op != "matmul_alpha_beta"]
    assert len(weights) == 5 and all(s.quant == "affine-q8-g64" and s.transpose_b for s in weights)
    assert all(s.quant is None for s in load_suite(out).specs if s.op == "matmul_alpha_beta")
    # A config that carries mlx-community's quantization block is read as it says.
    mlx = tmp_path / "mlx.json"
    mlx.write_text(json.dumps({**config, "quantization": {"group_size": 64, "bits": 4}}))
    made = cli("suite", "from-config", str(mlx), "--context", "256", "--out", str(out))
    assert made.returncode == 0 and {s.quant for s in load_suite(out).specs if s.transpose_b and s.k >= 896} == \
        {"affine-q4-g64"}
    for args, needle in [(["--quant", "affine-q8-g64"], "already quantized as affine-q4-g64"),
                         (["--quant", "affine-q4-g48"], "--quant: group size 48")]:
        bad = cli("suite", "from-config", str(mlx), *args, "--out", str(tmp_path / "bad.toml"))
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and needle in bad.stderr, bad.stderr
        assert not (tmp_path / "bad.toml").exists()
