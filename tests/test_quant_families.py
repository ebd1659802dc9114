"""The quantized families (qnaive, qgemv, qmv, qmvm, qskinny: kernels/*.toml with quant = true)
verified on PoCL through the runner: every bit width MLX has, every group size, every op,
batches, the three dtypes, m = 1 and m up to 16, and the built-in `quantized` suite's shapes."""

import pytest
from conftest import sweep

from metalbench import variants
from metalbench.specs import load_suite

FAMILIES = ("qnaive", "qgemv", "qmv", "qmvm", "qskinny")

SUITE = """
name = "quantized-small"
transpose_b = true
[[spec]]
op = "matmul"
m = 1
n = 72
k = 256
quant = "affine-q4-g64"
[[spec]]
op = "matmul_bias_add"
m = 1
n = 40
k = 192
quant = "affine-q3-g32"
dtype = "float32"
[[spec]]
op = "matmul"
batch = 2
m = 1
n = 33
k = 384
quant = "affine-q8-g128"
[[spec]]
op = "matmul_alpha_beta"
alpha = 0.5
beta = 1.0
m = 1
n = 17
k = 320
quant = "affine-q5-g64"
[[spec]]
op = "matmul"
m = 1
n = 20
k = 256
quant = "affine-q6-g128"
transpose_a = true
[[spec]]
op = "matmul"
m = 1
n = 9
k = 128
quant = "affine-q2-g32"
[[spec]]
op = "matmul_bias_add"
m = 3
n = 40
k = 192
quant = "affine-q3-g32"
dtype = "float32"
[[spec]]
op = "matmul"
batch = 2
m = 2
n = 33
k = 384
quant = "affine-q6-g128"
[[spec]]
op = "matmul_alpha_beta"
alpha = 0.5
beta = 1.0
m = 5
n = 17
k = 320
quant = "affine-q5-g64"
[[spec]]
op = "matmul"
m = 16
n = 24
k = 256
quant = "affine-q2-g128"
transpose_a = true
[[spec]]
op = "matmul"
m = 9
n = 30
k = 128
quant = "affine-q8-g32"
[[spec]]
op = "matmul_bias_add"
m = 1
n = 40
k = 256
quant = "affine-q4-g64"
dtype = "bfloat16"
[[spec]]
op = "matmul"
m = 4
n = 24
k = 192
quant = "affine-q6-g32"
dtype = "bfloat16"
[[spec]]
op = "matmul_alpha_beta"
alpha = 0.5
beta = 1.0
m = 1
n = 19
k = 4864
quant = "affine-q4-g32"
transpose_a = true
[[spec]]
op = "matmul_bias_add"
batch = 3
m = 1
n = 13
k = 1152
quant = "affine-q8-g64"
dtype = "bfloat16"
[[spec]]
op = "matmul"
batch = 2
m = 3
n = 21
k = 1152
quant = "affine-q4-g64"
transpose_a = true
[[spec]]
op = "matmul_bias_add"
m = 8
n = 17
k = 512
quant = "affine-q8-g32"
dtype = "bfloat16"
[[spec]]
op = "matmul_alpha_beta"
alpha = 0.5
beta = 1.0
m = 2
n = 40
k = 4864
quant = "affine-q4-g128"
dtype = "float32"
[[spec]]
op = "matmul"
m = 2
n = 24
k = 640
quant = "affine-q8-g64"
"""


def test_every_quantized_variant_verifies(opencl, tmp_path):
    _, rep = sweep(tmp_path, [f"{f}/*" for f in FAMILIES], suite=SUITE, race=False)
    assert rep.counts["failed"] == 0, rep.failures[:5]
    assert rep.counts["wrong"] == 0, rep.failures[:5]
    measured = {row.variant for s in rep.specs for row in s.rows}
    chosen = {v.id for v in variants.load_variants("opencl") if v.family.name in FAMILIES}
    assert chosen <= measured, sorted(chosen - measured)[:5]


def test_plain_families_refuse_quantized_weights_and_quantized_ones_plain():
    spec = load_suite("quantized").specs[0]
    plain = load_suite("smoke").specs[0]
    for v in variants.load_variants("opencl"):
        if v.family.quant:
            assert "not quantized" in (v.unsupported_reason(plain) or ""), v.id
        else:
            assert "B is quantized" in (v.unsupported_reason(spec) or ""), v.id


@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_grids_fit_an_apple_gpu_and_the_suite(family):
    """Whole 32-lane SIMD groups, at most 1024 threads; every variant runs some spec of
    the built-in `quantized` suite (m = 1 and 4) or, for qmvm (m = 2, and 8 bits, too),
    of the small one."""
    specs = list(load_suite("quantized").specs)
    if family == "qmvm":
        specs += list(load_suite_text(SUITE).specs)
    for v in [v for v in variants.load_variants("metal") if v.family.name == family]:
        supported = [s for s in specs if v.unsupported_reason(s) is None]
        assert supported, f"{v.id} supports no spec of the quantized suite"
        for s in supported:
            _, threads = v.geometry(s)
            count = threads[0] * threads[1] * threads[2]
            assert count <= 1024 and count % 32 == 0, (v.id, threads)


def test_qgemv_reduces_right_with_32_lane_simd_groups(opencl):
    """qgemv sums a row with SIMD_SUM where the row is whole SIMD groups: checked with
    CUDA's and Metal's 32 lanes emulated (tests/simd32), both reductions (TPR 32: SIMD_SUM
    alone; TPR 16: group memory), on every bit width and both dtypes."""
    from simd32.check import verify_simd32

    specs = [s for s in load_suite_text(SUITE).specs if s.m == 1]
    chosen = [v for v in variants.load_variants("opencl") if v.family.name == "qgemv" and v.params["RPG"] == 2
              and v.params["VPT"] == 32 and v.params["DQ"] == "fold"]
    assert {v.params["TPR"] for v in chosen} == {16, 32}
    rows = verify_simd32(opencl, chosen, specs, log=lambda _: None)
    assert rows and not [r for r in rows if "wrong" in r or "error" in r]
    assert {r["variant"] for r in rows} == {v.id for v in chosen}


def test_qmv_reduces_right_with_32_lane_simd_groups(opencl):
    """qmv adds a row's lanes with SIMD_SUM where they are whole SIMD groups (LPR 32), then
    its KS teams in group memory (none when KS is 1), and rows that share a SIMD group (LPR
    8) all in group memory: checked with 32-lane SIMD groups emulated, every RPT, KS and
    LPR, both bit widths, on rows of fewer pieces than a team's lanes and of several spans
    (k = 4864, 1152)."""
    from simd32.check import verify_simd32

    specs = [s for s in load_suite_text(SUITE).specs if s.m == 1]
    chosen = [v for v in variants.load_variants("opencl")
              if v.family.name == "qmv" and (v.params["U"] == 2 or v.params["RPT"] in (1, 8))]
    assert {(v.params["RPT"], v.params["KS"], v.params["LPR"]) for v in chosen} == \
        {(r, s, lpr) for r in (1, 2, 4, 8) for s in (1, 4) for lpr in (8, 32)}
    rows = verify_simd32(opencl, chosen, specs, log=lambda _: None)
    assert rows and not [r for r in rows if "wrong" in r or "error" in r]
    assert {r["variant"] for r in rows} == {v.id for v in chosen}


def test_qmvm_reduces_right_with_32_lane_simd_groups(opencl):
    """qmvm as qmv above, with MR rows of A: every variant (every MR, RPT, KS and LPR, both
    bit widths), A in both layouts, m below MR (rows of A past m read but never stored)."""
    from simd32.check import verify_simd32

    specs = [s for s in load_suite_text(SUITE).specs if 2 <= s.m <= 8]
    chosen = [v for v in variants.load_variants("opencl") if v.family.name == "qmvm"]
    assert {(v.params["MR"], v.params["RPT"], v.params["KS"], v.params["LPR"]) for v in chosen} == \
        {(mr, r, s, lpr) for mr in (2, 4, 8) for r in (1, 2, 4) for s in (1, 4) for lpr in (8, 32) if mr * r <= 8}
    rows = verify_simd32(opencl, chosen, specs, log=lambda _: None)
    assert rows and not [r for r in rows if "wrong" in r or "error" in r]
    assert {r["variant"] for r in rows} == {v.id for v in chosen}


def load_suite_text(text: str):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.toml"
        path.write_text(text)
        return load_suite(path)
