"""bfloat16 end to end on PoCL: the smoke suite's shapes in bfloat16, swept through the
runner over every portable family that lists the dtype, verified against the float64
reference (metrics.tolerance with bfloat16's unit roundoff)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, suite_in_bfloat16, sweep
from simd32.check import verify_simd32

from metalbench import metrics, variants
from metalbench.dtypes import bfloat16_bits, define
from metalbench.reference import compute_reference, make_inputs
from metalbench.specs import Spec, load_suite, spec_from_key
from metalbench.store import Store

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def portable_bf16() -> list[str]:
    return sorted({v.family.name for v in variants.load_variants("opencl")
                   if "bfloat16" in v.family.dtypes and v.family.builtin is None})


def test_the_portable_families_take_bfloat16():
    families = {f.name: f for f in variants.load_families()}
    portable = [f for f in families.values() if f.source is not None and f.source.parent.name == "portable"]
    assert portable and all("bfloat16" in f.dtypes for f in portable), [f.name for f in portable]
    # CUDA-only families stay float16 / float32 (kernels/README.md says why).
    assert "bfloat16" not in families["tcgemv"].dtypes


def test_every_portable_variant_verifies_the_smoke_shapes_in_bfloat16(opencl, tmp_path):
    suite = suite_in_bfloat16("smoke")
    run, rep = sweep(tmp_path, [f"{name}/*" for name in portable_bf16()], suite=suite)
    assert {s.dtype for s in load_suite(tmp_path / "suite.toml").specs} == {"bfloat16"}
    assert rep.counts["failed"] == 0, rep.failures[:5]
    assert rep.counts["wrong"] == 0, rep.failures[:5]
    measured = {row.variant for s in rep.specs for row in s.rows} | {v for s in rep.specs for v, _ in s.raced}
    specs = load_suite(tmp_path / "suite.toml").specs
    wanted = {v.id for v in variants.load_variants("opencl") if v.family.name in portable_bf16()
              and any(v.unsupported_reason(s) is None for s in specs)}
    assert len(wanted) > 100 and wanted <= measured, sorted(wanted - measured)[:5]
    assert run.results and all("/bfloat16/" in r.spec_key for r in run.results), "stored under bfloat16 keys"


def test_tile_and_gemv_families_verify_bfloat16_with_32_lane_simd_groups(opencl, tmp_path):
    """CUDA's 16-bit tile shape (m16n8k16) and 32-lane reductions, emulated on PoCL, in bfloat16."""
    path = tmp_path / "bf16.toml"
    path.write_text(suite_in_bfloat16("smoke"))
    specs = [s for s in load_suite(path).specs if s.k >= 24]
    chosen, names = [], ("mtgemm", "skinny", "tilegemv", "simdgemv")
    for name in names:
        vs = [v for v in variants.load_variants("opencl") if v.family.name == name]
        chosen += [vs[0], vs[-1]]
    rows = verify_simd32(opencl, chosen, specs, log=lambda _: None)
    bad = [r for r in rows if "error" in r or "wrong" in r]
    assert not bad, bad[:5]
    assert {r["variant"].split("/")[0] for r in rows} == set(names)


# ---- the preludes' conversions -----------------------------------------------------------------------------

CONVERT = """
MB_KERNEL(widen) {   /* ws[i] = a[i] as a float, for p.n elements */
  const int i = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  if (i < p.n) ws[i] = LOAD(a, i);
}
MB_KERNEL(narrow) {  /* c[i] = ws[i] rounded to T, for p.n elements */
  const int i = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  if (i < p.n) STORE(c, i, ws[i]);
}
"""


def test_the_opencl_prelude_converts_bfloat16_exactly(opencl, tmp_path):
    """Every bfloat16 pattern widens to its float32 value, and float32 values (every halfway
    point between bfloat16 neighbours, their neighbours, NaNs, infinities, overflow) narrow
    as metalbench/dtypes.py rounds them: to nearest even."""
    body = tmp_path / "convert.c"
    body.write_text(CONVERT)
    source = variants.prelude_source("opencl", body)
    widen = opencl.compile(source, "widen", define("bfloat16"), "convert/widen")
    narrow = opencl.compile(source, "narrow", define("bfloat16"), "convert/narrow")
    lo = np.arange(0, 0x7F7F, dtype=np.uint32)
    mid = (lo << 16) | 0x8000
    values = np.concatenate([mid, mid - 1, mid + 1, mid | 0x80000000, (lo << 16) | 0x7FFF,
                             np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x7F7FFFFF, 0x00000001,
                                       0x80000000], dtype=np.uint32)]).view(np.float32)
    n = max(values.size, 1 << 16)
    a, b, c, bias, ws = (opencl.allocate(4 * n) for _ in range(5))
    a.write(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16))
    for kernel, count in ((widen, 1 << 16), (narrow, values.size)):
        if kernel is narrow:
            ws.write(values)
        params = Spec("matmul", "bfloat16", 1, 1, count, 1).params()
        opencl.run(kernel, [a, b, c, bias, ws, params], [-(-count // 64)], [64])
        if kernel is widen:
            widened = np.empty(1 << 16, dtype=np.uint32)
            ws.read(widened)
            assert (widened == np.arange(1 << 16, dtype=np.uint32) << 16).all()
    narrowed = np.empty(values.size, dtype=np.uint16)
    c.read(narrowed)
    assert (narrowed == bfloat16_bits(values)).all(), np.flatnonzero(narrowed != bfloat16_bits(values))[:5]


@pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine")
def test_the_portable_families_compile_as_cuda_bfloat16(tmp_path):
    """nvcc, sm_80 (bf16 mma and cvt.rn.bf16.f32 need it): one variant of each family."""
    seen: dict[str, variants.Variant] = {}
    for v in variants.load_variants("cuda"):
        if v.family.name in portable_bf16():
            seen.setdefault(v.family.name, v)
    for i, v in enumerate(seen.values()):
        src = tmp_path / f"k{i}.cu"
        src.write_text("".join(f"#define {k} {val}\n" for k, val in v.defines("bfloat16").items()) + v.source("cuda"))
        r = subprocess.run([NVCC, "-arch=sm_80", "--std=c++17", "-DMB_NVRTC=1", "--ptx", str(src), "-o",
                            str(tmp_path / f"k{i}.ptx")], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (v.id, r.stderr[-2000:])
        ptx = (tmp_path / f"k{i}.ptx").read_text()
        assert "cvt.rn.bf16.f32" in ptx, v.id
        if "matrix_unit" in v.family.needs:  # the tile runs on bf16 tensor cores, not f16 ones
            assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in ptx and ".f16.f16" not in ptx, v.id


def test_a_device_without_bfloat16_leaves_every_variant_unsupported_with_its_reason():
    spec = Spec("matmul", "bfloat16", 1, 1, 64, 64, transpose_b=True)
    quantized = Spec("matmul", "bfloat16", 1, 1, 64, 64, transpose_b=True, quant="affine-q4-g64")
    old_mac = {"bfloat16": False, "bfloat16_detail": "none: MSL's bfloat (MSL 3.1) and MPS's bfloat16 need macOS 14"}
    for v in variants.load_variants("metal"):
        if "bfloat16" in v.family.dtypes:
            reason = v.unsupported_reason(quantized if v.family.quant else spec, old_mac)
            assert reason == f"needs bfloat16: {old_mac['bfloat16_detail']}", v.id
    naive = next(v for v in variants.load_variants("metal") if v.family.name == "naive")
    assert naive.unsupported_reason(spec, {"bfloat16": True}) is None
    assert naive.unsupported_reason(Spec("matmul", "float16", 1, 1, 64, 64), old_mac) is None  # float16 unaffected


def test_every_device_says_whether_it_takes_bfloat16(opencl):
    assert opencl.info["bfloat16"] is True and opencl.info["bfloat16_detail"].startswith("emulated")


# ---- through the CLI: a bfloat16 suite run, its winners exported, bad dtypes refused ----------------------

BF16_SUITE = """name = "bf16-mini"
dtype = "bfloat16"
[[spec]]
op = "matmul"
m = 1
n = 96
k = 64
transpose_b = true
[[spec]]
op = "matmul_bias_add"
m = 3
n = 40
k = 72
"""


def test_a_bfloat16_suite_runs_reports_and_exports_through_the_cli(opencl, tmp_path):
    suite = tmp_path / "bf16.toml"
    suite.write_text(BF16_SUITE)
    out = tmp_path / "report.json"
    run = cli("run", "--suite", str(suite), "--backend", "opencl", "--variants", "gemv/*", "--variants", "tiled/*",
              "--max-samples", "3", "--min-samples", "2", "--max-time", "0.05", "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert "0 failed, 0 wrong" in run.stdout and "bfloat16" in run.stdout  # labels name a dtype other than fp16
    data = json.loads(out.read_text())
    assert all("/bfloat16/" in s["key"] for s in data["specs"]), [s["key"] for s in data["specs"]]
    exported = cli("export", "--out", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    table = json.loads((tmp_path / "out" / "dispatch.json").read_text())
    header = (tmp_path / "out" / "metalbench_dispatch.h").read_text()
    assert len(table["specs"]) == 2
    for e in table["specs"]:
        assert e["kind"] == "kernel" and e["file"].endswith("-bf16.cl") and e["spec"]["dtype"] == "bfloat16"
        assert e["defines"]["MB_DTYPE"] == "2"
        source = (tmp_path / "out" / e["file"]).read_text()
        assert "#define MB_DTYPE 2\n" in source
        spec = spec_from_key(e["spec_key"])
        # Compiled alone, as an application would, and run on the spec's inputs: correct.
        kernel = opencl.compile(source, e["entry"], {}, f"exported/{e['entry']}")
        inputs = make_inputs(spec)
        c0 = metrics.initial_c(spec, inputs)
        bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=np.uint16)
        bufs = []
        for array in (inputs.a, inputs.b, c0, bias):
            buf = opencl.allocate(max(4, array.nbytes))
            buf.write(np.ascontiguousarray(array))
            bufs.append(buf)
        ws = opencl.allocate(4 * max(1, e["workspace_floats"]))
        ws.fill(0)
        opencl.run(kernel, [*bufs, ws, spec.params()], e["groups"], e["threads"])
        got = np.empty_like(c0)
        bufs[2].read(got)
        check = metrics.check(spec, got, compute_reference(spec, inputs), c0)
        assert check.verdict == "ok", (e["file"], check.reason)
        assert f"{e['spec_key']!r}".replace("'", '"') in header
    assert "int dtype;" in header and ", 2, 1, " in header  # the dtype column: MB_DTYPE's 2


@pytest.mark.parametrize("text, needle", [
    ('dtype = "bf16"\n' + BF16_SUITE.split("\n", 2)[2], "top level: field 'dtype': must be one of float16, float32, "
                                                        "bfloat16, got 'bf16'"),
    (BF16_SUITE.replace('op = "matmul"\nm = 1', 'op = "matmul"\ndtype = "float64"\nm = 1'),
     "spec 0: field 'dtype': must be one of float16, float32, bfloat16, got 'float64'"),
])
def test_an_unknown_dtype_in_a_suite_is_one_line_exit_2_and_nothing_stored(tmp_path, text, needle):
    suite = tmp_path / "bad.toml"
    suite.write_text(text)
    result = cli("run", "--suite", str(suite), "--backend", "opencl")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metalbench: error: ") and needle in lines[0], lines
    db = Path(os.environ["METALBENCH_DB"])
    assert not db.exists() or not Store(db).runs()
