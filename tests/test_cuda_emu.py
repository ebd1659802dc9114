"""Native CUDA tensor-core kernels (kernels/cuda/tcgemv.cu, qtcgemv.cu, tcgemm.cu, wggemm.cu) run on the CPU,
from their own source, through tests/cuda_emu: a stand-in for the CUDA prelude in which
every CUDA thread is a std::thread, mma.sync, __syncthreads and the cluster barrier are
barriers, and wgmma runs at the latest wait that lets it finish (prelude.h says what it
models). Each launch is checked as the runner checks a GPU's:
inputs from reference.make_inputs, C pre-filled with the never-written sentinel, the
float64 reference and metrics.check; the emulation also aborts on a global access outside
the buffers or misaligned for its width, and on ldmatrix rows outside group memory. So
the fragment and lane arithmetic, the tails, the split of k over warps and clusters and
the swizzled stages of tcgemm and wggemm are verified here, without a GPU; the
GPU run (tests/test_cuda.py, benchmarks/check.py) remains the word on the hardware."""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from metalbench import metrics, paths, reference, variants
from metalbench.quant import b_buffer
from metalbench.specs import Spec

EMU = Path(__file__).parent / "cuda_emu"
GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no g++ (the emulation builds with g++ -std=c++20)")

# One variant per path through the kernel: each layout, MR 8 and 16, RT 1 and 2, U 2 and
# 4, one block, warps splitting k, and clusters of 2 to 8 blocks adding up in distributed
# shared memory.
VARIANTS = [
    "tcgemv/nt_mr8_rt1_kw2_u2_cl1",
    "tcgemv/nt_mr16_rt2_kw4_u4_cl1",
    "tcgemv/nt_mr8_rt1_kw4_u4_cl8",
    "tcgemv/nt_mr16_rt1_kw16_u4_cl2",
    "tcgemv/nn_mr8_rt1_kw2_u2_cl1",
    "tcgemv/nn_mr16_rt1_kw4_u4_cl8",
    "tcgemv/nn_mr8_rt1_kw16_u4_cl2",
    "tcgemm/bm64_bn128_w1x2_cl1",
    "tcgemm/bm64_bn128_w2x2_cl2",
    "tcgemm/bm64_bn128_w1x4_cl4",
    "tcgemm/bm128_bn128_w2x4_cl1",
    "wggemm/nt_bm64_bn128_w1_cl1",
    "wggemm/nt_bm128_bn256_w0_cl1",
    "wggemm/nt_bm128_bn128_w1_cl2",
    "wggemm/nt_bm64_bn256_w0_cl2",
    "wggemm/nn_bm64_bn128_w1_cl1",
    "wggemm/nn_bm128_bn256_w0_cl1",
    "wggemm/nn_bm128_bn128_w1_cl2",
    "wggemm/nn_bm64_bn256_w0_cl2",
]
# qtcgemv: each bit width, MR 8 and 16, RT 1 to 4, U 1 and 2, warps splitting k; PIPE
# (the next iteration's loads before this one's arithmetic) and LEAN (whole iterations
# untested, the ragged last one apart) over odd and even counts of iterations.
QUANT_VARIANTS = [
    "qtcgemv/b4_mr8_rt1_kw1_u1_pipe0_lean0",
    "qtcgemv/b4_mr8_rt2_kw2_u2_pipe0_lean0",
    "qtcgemv/b4_mr16_rt4_kw1_u1_pipe0_lean0",
    "qtcgemv/b4_mr8_rt1_kw8_u2_pipe0_lean0",
    "qtcgemv/b8_mr8_rt2_kw1_u2_pipe0_lean0",
    "qtcgemv/b8_mr16_rt1_kw4_u1_pipe0_lean0",
    "qtcgemv/b8_mr8_rt4_kw2_u1_pipe0_lean0",
    "qtcgemv/b4_mr8_rt1_kw1_u1_pipe1_lean0",
    "qtcgemv/b4_mr8_rt1_kw4_u2_pipe1_lean1",
    "qtcgemv/b8_mr8_rt1_kw2_u2_pipe1_lean0",
    "qtcgemv/b4_mr8_rt1_kw1_u2_pipe0_lean1",
    "qtcgemv/b4_mr8_rt2_kw4_u1_pipe0_lean1",
    "qtcgemv/b8_mr8_rt4_kw2_u1_pipe0_lean1",
]
# The experiment grids of benchmarks/experiments (not shipped) where they take paths no
# shipped variant does: RT 4 in tcgemv, U 4 and 8 in qtcgemv, each with an L2 prefetch
# size (a hint, which the emulation ignores); tcgemv's weights as the mma's B operand (WB)
# at MR 8 and 16; qtcgemv's DUP, ADDR and XC, together and apart.
EXPERIMENTS = Path(__file__).parents[1] / "benchmarks" / "experiments"
EXPERIMENT_VARIANTS = [
    "tcgemv-pf/nt_mr16_rt4_kw2_u2_cl1_l2pf256",
    "qtcgemv-pf/b4_mr8_rt1_kw1_u8_l2pf128",
    "qtcgemv-pf/b4_mr8_rt1_kw2_u4_l2pf256",
    "tcgemv-wb/nt_mr16_rt2_kw4_u4_wb1",
    "tcgemv-wb/nt_mr8_rt1_kw2_u2_wb1",
    "tcgemv-wb/nt_mr16_rt1_kw16_u4_wb1",
    "qtcgemv-ops/b4_mr8_rt2_kw4_u1_pipe0_lean1_dup1_addr1_xc1",
    "qtcgemv-ops/b4_mr8_rt1_kw2_u2_pipe0_lean1_dup1_addr0_xc1",
    "qtcgemv-ops/b4_mr8_rt1_kw4_u1_pipe0_lean1_dup0_addr1_xc0",
]
# Tails everywhere: n not a multiple of a tile, k not a multiple of a step, m below MR,
# batches, every op (bias, alpha and beta reading C).
SPECS = [
    Spec(op="matmul", dtype="float16", batch=1, m=5, n=40, k=104, transpose_b=True),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=3, n=24, k=1064, transpose_b=True),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=2, m=7, n=33, k=64, transpose_b=True, alpha=0.125, beta=1.0),
    Spec(op="matmul", dtype="float16", batch=1, m=13, n=50, k=1032, transpose_b=True),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=16, n=18, k=136, transpose_b=True),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=1, n=136, k=96),
    Spec(op="matmul", dtype="float16", batch=1, m=6, n=72, k=520),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=3, m=4, n=64, k=48, alpha=0.5, beta=-1.0),
    Spec(op="matmul", dtype="float16", batch=1, m=11, n=200, k=1032),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=16, n=104, k=64),
    Spec(op="matmul", dtype="float16", batch=1, m=70, n=136, k=96, transpose_b=True),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=2, m=64, n=130, k=64, transpose_b=True, alpha=2.0, beta=0.5),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=130, n=40, k=160, transpose_b=True),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=2, m=65, n=136, k=1120, transpose_b=True, alpha=1.0, beta=2.0),
    # k in steps of 64 (wggemm), enough of them for every ring of stages to wrap and every
    # cluster rank to get several
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=130, n=136, k=1024, transpose_b=True),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=2, m=64, n=260, k=1280, transpose_b=True, alpha=0.5,
         beta=-1.0),
    # B stored k x n (wggemm nn): n a multiple of 8 but not of a tile, the columns' last
    # chunk clamped
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=130, n=136, k=1024),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=2, m=64, n=264, k=1280, alpha=0.5, beta=-1.0),
]
# Quantized B: every group size, k not a whole number of steps (of 4 chunks), n not a
# multiple of a tile, m = 1 and m up to 16, batches, every op.
QUANT_SPECS = [
    Spec(op="matmul", dtype="float16", batch=1, m=1, n=40, k=96, transpose_b=True, quant="affine-q4-g32"),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=1, n=72, k=640, transpose_b=True, quant="affine-q4-g64"),
    Spec(op="matmul", dtype="float16", batch=2, m=3, n=33, k=384, transpose_b=True, quant="affine-q4-g128"),
    Spec(op="matmul_alpha_beta", dtype="float16", batch=1, m=13, n=24, k=256, transpose_b=True, alpha=0.5,
         beta=-1.0, quant="affine-q4-g64"),
    Spec(op="matmul_bias_add", dtype="float16", batch=1, m=2, n=20, k=1088, transpose_b=True, quant="affine-q4-g64"),
    Spec(op="matmul", dtype="float16", batch=1, m=1, n=50, k=160, transpose_b=True, quant="affine-q8-g32"),
    Spec(op="matmul_bias_add", dtype="float16", batch=2, m=5, n=18, k=512, transpose_b=True, quant="affine-q8-g64"),
    Spec(op="matmul", dtype="float16", batch=1, m=16, n=36, k=384, transpose_b=True, quant="affine-q8-g128"),
]


def _program(v: variants.Variant, folder: Path) -> Path:
    """g++ of the emulation's prelude, common.h, the variant's body (group memory declared
    through the emulation) and the launch."""
    body = v.family.source.read_text()
    body = re.sub(r"extern\s+__shared__\s+(\w+(?:\s+\w+)?)\s+(\w+)\[\];",
                  r"\1* \2 = emu_shared_dynamic<\1>(mb_dynamic_shared_bytes);", body)
    body = re.sub(r"(?:__shared__|MT_SHARED)\s+(\w+)\s+(\w+)((?:\[[^\]]+\])+);", r"auto& \2 = *emu_shared<\1\3>();",
                  body)
    common = (paths.kernels_dir() / "include" / "common.h").read_text()
    src = folder / f"{v.config}.cpp"
    src.write_text("\n".join([(EMU / "prelude.h").read_text(), common, body, (EMU / "launch.cpp").read_text()]))
    exe = folder / v.config
    defines = [f"-D{k}={val}" for k, val in sorted(v.defines("float16").items())]
    r = subprocess.run([GXX, "-std=c++20", "-O1", "-pthread", "-w", *defines, f"-DEMU_ENTRY={v.family.entry}",
                        str(src), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, f"{v.id}: g++ failed:\n{r.stderr[-3000:]}"
    return exe


def _run(exe: Path, v: variants.Variant, spec: Spec, folder: Path) -> metrics.Check:
    inputs = reference.make_inputs(spec)
    ref = reference.compute_reference(spec, inputs)
    c0 = metrics.initial_c(spec, inputs)
    groups, threads = v.geometry(spec)
    cl = int(v.params.get("CL", 1))
    cluster = [1, cl, 1] if v.family.name == "tcgemv" else [1, 1, cl]  # their __cluster_dims__
    bias = inputs.bias if inputs.bias is not None else np.zeros(1, np.float16)
    layout = spec.b_layout()
    b = inputs.b if layout is None else b_buffer(inputs.q, layout).view(np.uint16)  # as measure.py lays it out
    arrays = [inputs.a, b, c0, bias]
    head = spec.params() + struct.pack("<9i", *groups, *threads, *cluster)
    head += struct.pack("<5q", *(x.size for x in arrays), v.workspace_floats(spec))
    launch, out = folder / "launch.bin", folder / "c.bin"
    launch.write_bytes(head + b"".join(np.ascontiguousarray(x).view(np.uint16).tobytes() for x in arrays))
    r = subprocess.run([str(exe), str(launch), str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{v.id} on {spec.label()}: exit {r.returncode}\n{r.stderr[-2000:]}"
    c = np.frombuffer(out.read_bytes(), np.uint16).view(np.float16).reshape(spec.shape_c)
    return metrics.check(spec, c, ref, c0, v.family.rounds_b)


def _verify(v: variants.Variant, tmp_path: Path) -> None:
    specs = [s for s in (QUANT_SPECS if v.family.quant else SPECS) if v.unsupported_reason(s) is None]
    assert specs, f"{v.id} supports none of the test's specs"
    exe = _program(v, tmp_path)
    for spec in specs:
        got = _run(exe, v, spec, tmp_path)
        assert got.verdict == "ok", f"{v.id} on {spec.label()}: {got.reason}"


@needs_gxx
@pytest.mark.parametrize("vid", VARIANTS + QUANT_VARIANTS)
def test_tensor_core_kernels_are_correct_in_the_emulation(vid, tmp_path):
    (v,) = variants.select(variants.load_variants("cuda"), [vid])
    _verify(v, tmp_path)


@needs_gxx
@pytest.mark.parametrize("vid", EXPERIMENT_VARIANTS)
def test_the_experiment_grids_are_correct_in_the_emulation(vid, tmp_path):
    (v,) = variants.select(variants.load_variants("cuda", [EXPERIMENTS]), [vid])
    _verify(v, tmp_path)


@needs_gxx
def test_the_emulation_catches_a_wrong_fragment(tmp_path):
    """The check can fail: with two k slots of the weights' fragment swapped (halves 0-3
    of each chunk put in the wrong registers), the products come out wrong."""
    (v,) = variants.select(variants.load_variants("cuda"), ["tcgemv/nt_mr8_rt1_kw2_u2_cl1"])
    body = v.family.source.read_text()
    wrong = body.replace("{{w[u][r][0].x, w[u][r][1].x, w[u][r][0].y, w[u][r][1].y}}",
                         "{{w[u][r][0].y, w[u][r][1].x, w[u][r][0].x, w[u][r][1].y}}")
    assert wrong != body
    source = tmp_path / "tcgemv.cu"
    source.write_text(wrong)
    broken = dataclasses.replace(v, family=dataclasses.replace(v.family, source=source))
    exe = _program(broken, tmp_path)
    got = _run(exe, broken, SPECS[0], tmp_path)
    assert got.verdict == "wrong"


@needs_gxx
@pytest.mark.parametrize("vid, change", [
    ("wggemm/nt_bm64_bn128_w1_cl1", ("wg_wait<MB_W>();", "wg_wait<MB_W + 1>();")),
    ("wggemm/nt_bm64_bn128_w1_cl1", ("((tid & 7) ^ ((tid >> 3) & 7))", "((tid & 7) ^ ((tid >> 4) & 7))")),
    ("wggemm/nn_bm64_bn128_w1_cl1", ("(((nc % 8) ^ (kr % 8)) << 4)", "((nc % 8) << 4)")),
    ("wggemm/nn_bm64_bn128_w1_cl1", ("BK * ROW_BYTES));", "BK * ROW_BYTES / 2));")),
], ids=["a stage refilled while its wgmma may still read it", "another swizzle", "B nn unswizzled",
        "B nn's blocks of 64 columns placed closer than the descriptor says"])
def test_the_emulation_catches_a_wrong_warpgroup_pipeline(vid, change, tmp_path):
    """The check can fail where wggemm depends on the model of wgmma: with one more group
    of instructions left in flight, the stage that the copies refill is still being read
    (computed at the latest wait, the emulation reads the new tile); with the chunks
    stored in another order than the 128-byte swizzle that the descriptors ask for, or B
    nn's 64-column blocks another distance apart than its descriptor's leading byte
    offset, the operands are wrong."""
    (v,) = variants.select(variants.load_variants("cuda"), [vid])
    body = v.family.source.read_text()
    wrong = body.replace(*change)
    assert wrong != body
    source = tmp_path / "wggemm.cu"
    source.write_text(wrong)
    broken = dataclasses.replace(v, family=dataclasses.replace(v.family, source=source))
    exe = _program(broken, tmp_path)
    got = _run(exe, broken, next(s for s in SPECS if s.k == 1024 and v.unsupported_reason(s) is None), tmp_path)
    assert got.verdict == "wrong"


def test_the_emulation_places_accumulators_as_cuda_h_does():
    """The kernels' MT_ACC_ROW and MT_ACC_COL are one definition: the emulation's copy is
    cuda.h's, word for word (its mt_mma checks them against the PTX ISA's layout)."""
    cuda = (paths.kernels_dir() / "include" / "cuda.h").read_text()
    emu = (EMU / "prelude.h").read_text()
    for name in ("MT_ACC_ROW", "MT_ACC_COL"):
        (line,) = re.findall(rf"^#define {name}\(.*$", cuda, re.M)
        assert line in emu.splitlines(), name


def test_the_emulation_encodes_wgmma_descriptors_as_cuda_h_does():
    """wg_desc and wg_desc_mn are one definition each: the emulation's are cuda.h's, line
    for line (its wgmma decodes a descriptor as the PTX ISA defines it, so a wrong field
    is caught)."""
    def body(text: str, name: str) -> str:
        (found,) = re.findall(rf"{name}\((unsigned addr[^)]*)\) \{{\n(.*?\n)\}}", text, re.S)
        return "".join(found)
    cuda = (paths.kernels_dir() / "include" / "cuda.h").read_text()
    emu = (EMU / "prelude.h").read_text()
    for name in ("wg_desc", "wg_desc_mn"):
        assert body(cuda, name) == body(emu, name), name
