"""The matrix tile of the portable dialect (kernels/README.md, "The matrix tile") on its own,
in one small kernel built the way Variant.source builds a body (prelude + common.h +
#line + body) that computes one TILE_M x TILE_N tile of A . B over two TILE_K steps, A
and B stored either way, loaded from group memory (staged element by element, with
zeros past the valid extent, or by MT_COPY_VEC) or straight from device memory (zero
outside the extent the load is given):

- run by PoCL (OpenCL's emulation, and again with 32-lane SIMD groups emulated as CUDA
  lays its mma.sync fragments out), every result checked exactly;
- the CUDA mapping's ldmatrix addressing checked against the PTX ISA's ldmatrix and
  mma.m16n8k16 fragment layouts, and the whole kernel compiled by NVRTC for sm_90
  (where NVRTC is installed: `pip install nvidia-cuda-nvrtc-cu12`; benchmarks/nvcc_check.py --nvrtc
  compiles every CUDA variant so);
- parsed as Metal Shading Language against tests/metal_shim, whose simdgroup_matrix
  declarations follow the MSL specification;
- run on a CUDA GPU, an Apple GPU (`-m gpu`) and every other OpenCL device (the NVIDIA
  driver beside PoCL), where there is one;
- the device trait: a variant that needs the matrix unit is unsupported, with the
  missing unit named, on a device without one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, patched
from simd32.check import SIMD32_SLOTS

from metalbench import _core, paths, variants
from metalbench.specs import Spec

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "kernels" / "include"
SHIM = ROOT / "tests" / "metal_shim"
SIMD32 = ROOT / "tests" / "simd32" / "opencl_simd32.h"
CLANG = shutil.which("clang++-14")
sys.path.insert(0, str(ROOT / "benchmarks"))

from nvrtc import Nvrtc  # noqa: E402

LD = 40  # leading dimension of every stored operand, a multiple of 8 as group-memory loads want
ROWS = 32  # stored rows of each operand buffer: enough for every backend's tiles
MODES = {"staged": 0, "device": 1, "vector": 2}

BODY = """
#define KT (2 * TILE_K)
#define LD 40
MB_KERNEL(tile_product) {
  MT_SHARED MT_T as[32 * LD];
  MT_SHARED MT_T bs[32 * LD];
  SHARED float cs[TILE_M * (TILE_N + 3)];
  SHARED float scr[MT_SCRATCH];
  const int t = LOCAL_LINEAR_ID;
  const int mode = p.reserved; /* 0: staged by elements, 1: from device memory, 2: staged by MT_COPY_VEC */
  /* Stored extents: A is TILE_M x KT (or KT x TILE_M, trans_a), B KT x TILE_N (TILE_N x KT, trans_b). */
  const int ar = p.trans_a ? KT : TILE_M, ac = p.trans_a ? TILE_M : KT;
  const int br = p.trans_b ? TILE_N : KT, bc = p.trans_b ? KT : TILE_N;
  if (mode == 2) {
    for (int e = t * MT_VEC; e < 32 * LD; e += GROUP_SIZE(0) * MT_VEC) {
      MT_COPY_VEC(as, e, a, e);
      MT_COPY_VEC(bs, e, b, e);
    }
    MT_COPY_COMMIT();
    MT_COPY_WAIT(0);
  } else if (mode == 0) {
    /* Only A(i < m, kk < k) and B(kk < k, j < n) are copied; the rest is zero. */
    for (int e = t; e < 32 * LD; e += GROUP_SIZE(0)) {
      const int r = e / LD, c = e % LD;
      const int ai = p.trans_a ? c : r, ak = p.trans_a ? r : c;
      const int bk = p.trans_b ? c : r, bj = p.trans_b ? r : c;
      if (r < ar && c < ac && ai < p.m && ak < p.k) MT_COPY(as, e, a, e); else MT_PUT(as, e, 0.0f);
      if (r < br && c < bc && bk < p.k && bj < p.n) MT_COPY(bs, e, b, e); else MT_PUT(bs, e, 0.0f);
    }
  }
  BARRIER();
  if (SIMD_GROUP == 0) {
    MT_ACC_T acc;
    MT_A_T fa;
    MT_B_T fb;
    MT_ZERO(acc);
    for (int s = 0; s < 2; ++s) {
      const int k0 = s * TILE_K;
      const int aoff = p.trans_a ? k0 * LD : k0, boff = p.trans_b ? k0 : k0 * LD;
      if (mode == 1) {
        if (p.trans_a) MT_LOAD_AT_G(fa, a, aoff, LD, p.m, p.k - k0, scr);
        else MT_LOAD_A_G(fa, a, aoff, LD, p.m, p.k - k0, scr);
        if (p.trans_b) MT_LOAD_BT_G(fb, b, boff, LD, p.k - k0, p.n, scr);
        else MT_LOAD_B_G(fb, b, boff, LD, p.k - k0, p.n, scr);
      } else {
        if (p.trans_a) MT_LOAD_AT(fa, as, aoff, LD);
        else MT_LOAD_A(fa, as, aoff, LD);
        if (p.trans_b) MT_LOAD_BT(fb, bs, boff, LD);
        else MT_LOAD_B(fb, bs, boff, LD);
      }
      MT_MMA(acc, fa, fb);
    }
    MT_STORE(acc, cs, 0, TILE_N + 3);
    MT_SYNC();
    for (int e = SIMD_LANE; e < TILE_M * TILE_N; e += SIMD_WIDTH)
      STORE(c, e, cs[(e / TILE_N) * (TILE_N + 3) + e % TILE_N]);
    if (SIMD_LANE == 0) {
      STORE(c, TILE_M * TILE_N, (float)TILE_M);
      STORE(c, TILE_M * TILE_N + 1, (float)TILE_N);
      STORE(c, TILE_M * TILE_N + 2, (float)TILE_K);
    }
  }
}
"""


def source(backend: str, body: str = BODY, simd32: bool = False) -> str:
    prelude = (INCLUDE / f"{backend}.h").read_text() + ("\n" + SIMD32.read_text() if simd32 else "")
    return "".join([prelude, "\n", (INCLUDE / "common.h").read_text(), '\n#line 1 "tile_product.c"\n', body])


def test_the_emulation_scratch_size_is_one_number():
    defined = re.search(r"#define MB_SIM_SLOTS (\d+)", SIMD32.read_text())
    assert defined and int(defined.group(1)) == SIMD32_SLOTS


def test_the_emulation_has_cudas_tile_sizes():
    """opencl_simd32.h mirrors cuda.h's tile sizes, so that bodies are checked at them on PoCL."""
    def sizes(path: Path) -> list[tuple[str, str]]:
        return re.findall(r"#define (TILE_[MNK]) (\d+)", path.read_text())

    assert sizes(SIMD32) == sizes(INCLUDE / "cuda.h")


def _params(m: int, n: int, k: int, trans_a: bool, trans_b: bool, mode: int) -> bytes:
    """MBParams for the tile's operands (rows of LD elements; C 8 wide), the mode in `reserved`."""
    spec = Spec("matmul", "float32", 1, m, n, k, trans_a, trans_b)
    return patched(spec, lda=LD, ldb=LD, ldc=8, stride_a=0, stride_b=0, stride_c=0, reserved=mode)


def _operands(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Quarters from -1 to 1: every product and sum is exact in fp32, so results compare exactly."""
    rng = np.random.default_rng(11)
    return tuple((rng.integers(-4, 5, size=ROWS * LD) / 4).astype(dtype) for _ in range(2))  # type: ignore[return-value]


def _expected(a: np.ndarray, b: np.ndarray, tiles: tuple[int, int, int], m: int, n: int, k: int, trans_a: bool,
              trans_b: bool) -> np.ndarray:
    tm, tn, tk = tiles
    kt = 2 * tk
    sa = a.astype(np.float64).reshape(ROWS, LD)
    sb = b.astype(np.float64).reshape(ROWS, LD)
    la = sa[:kt, :tm].T.copy() if trans_a else sa[:tm, :kt].copy()
    lb = sb[:tn, :kt].T.copy() if trans_b else sb[:kt, :tn].copy()
    la[m:, :] = 0
    la[:, k:] = 0
    lb[k:, :] = 0
    lb[:, n:] = 0
    return la @ lb


# (m, n, k): the whole tile, and a corner that leaves rows, columns and k partly empty.
EXTENTS = [(99, 99, 99), (5, 3, 11)]
CASES = [(mode, ta, tb, ext) for mode in MODES for ta in (False, True) for tb in (False, True) for ext in EXTENTS
         if mode != "vector" or ext == EXTENTS[0]]


def run_tile(dev, kernel, dtype: type, case: tuple, scratch: bool) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One launch of the tile kernel: (what it computed, what it should have, its tile sizes)."""
    mode, ta, tb, (m, n, k) = case
    a, b = _operands(dtype)
    bufs = []
    for x in (a, b):
        bufs.append(dev.allocate(x.nbytes))
        bufs[-1].write(x)
    out_len = 16 * 8 + 3
    c = dev.allocate(4 * out_len)
    c.fill(0)
    args = [bufs[0], bufs[1], c, dev.allocate(16), dev.allocate(16), _params(m, n, k, ta, tb, MODES[mode])]
    if scratch:
        args.append(dev.allocate(4 * SIMD32_SLOTS * 32))
    dev.run(kernel, args, [1], [32])
    out = np.empty(out_len, dtype)
    c.read(out)
    for tm, tn in ((8, 8), (16, 8)):
        if out[tm * tn] == tm and out[tm * tn + 1] == tn:
            break
    else:
        raise AssertionError(f"the kernel reported no tile size: {out[-8:]}")
    tiles = (tm, tn, int(out[tm * tn + 2]))
    got = out[: tm * tn].astype(np.float64).reshape(tm, tn)
    return got, _expected(a, b, tiles, m, n, k, ta, tb), tiles


def check_every_case(dev, backend: str, dtype: type, want_tiles: tuple, simd32: bool = False) -> None:
    """The tile kernel on `dev` for every case: exact results, at the backend's tile sizes."""
    f16 = "1" if dtype == np.float16 else "0"
    kernel = dev.compile(source(backend, simd32=simd32), "tile_product", {"MB_DTYPE": f16},
                         f"tile{'@simd32' if simd32 else ''}")
    for case in CASES:
        got, want, tiles = run_tile(dev, kernel, dtype, case, scratch=simd32)
        assert tiles == want_tiles, (dev.info["name"], case)
        assert np.array_equal(got, want), (dev.info["name"], case, got, want)


def cuda_tiles(dtype: type) -> tuple:
    return (16, 8, 16 if dtype == np.float16 else 8)


DTYPES = pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["float16", "float32"])


# ---- PoCL ------------------------------------------------------------------------------------------------


@DTYPES
@pytest.mark.parametrize("width", [1, 32], ids=["opencl", "simd32"])
def test_the_tile_computes_exactly_on_opencl(opencl, dtype, width):
    check_every_case(opencl, "opencl", dtype, (8, 8, 8) if width == 1 else cuda_tiles(dtype), simd32=width == 32)


def _other_opencl_devices() -> list[int]:
    """OpenCL devices past the first (the NVIDIA driver beside PoCL on a GPU machine)."""
    if "opencl" not in _core.backends() or _core.unavailable_reason("opencl"):
        return []
    return list(range(1, len(_core.devices("opencl"))))


@pytest.mark.parametrize("index", _other_opencl_devices() or [pytest.param(None, marks=pytest.mark.skip(
    reason="one OpenCL device (the first is covered above)"))])
def test_the_tile_computes_exactly_on_every_other_opencl_device(index):
    dev = _core.open("opencl", index)
    for dtype in (np.float16, np.float32):
        check_every_case(dev, "opencl", dtype, (8, 8, 8))


# ---- CUDA without a GPU: the ldmatrix addressing against the PTX ISA ------------------------------------


def _macro(name: str):
    """A MT_LDSM_* macro of cuda.h as a function of the lane (its C integer expression)."""
    text = (INCLUDE / "cuda.h").read_text()
    found = re.search(rf"#define {name}\(l\) (.*)", text)
    assert found, f"cuda.h defines no {name}"
    expr = found.group(1).strip()
    assert re.fullmatch(r"[\sl0-9()&>+<*]*", expr), f"{name} is no longer plain integer arithmetic: {expr}"
    return lambda lane: eval(expr, {"l": lane})  # noqa: S307 - the text is checked above


def _ldmatrix(rows_of, cols_of, count: int, trans: bool) -> dict:
    """What each lane receives from ldmatrix.sync.aligned.m8n8.x{count}[.trans].b16, as
    {(lane, register, half): (stored row, stored column)}, given the (row, column) each lane
    points at (PTX ISA, "ldmatrix"): lanes 8q .. 8q + 7 give the rows of matrix q; without
    .trans lane l gets row l / 4, columns 2 (l % 4) and + 1 of each matrix; with .trans it
    gets rows 2 (l % 4) and + 1 of column l / 4."""
    got = {}
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for q in range(count):
            for h in range(2):
                row_lane, col = (8 * q + 2 * t + h, g) if trans else (8 * q + g, 2 * t + h)
                got[(lane, q, h)] = (rows_of(row_lane), cols_of(row_lane) + col)
    return got


def _mma_a(lane: int, q: int, h: int) -> tuple[int, int]:
    """(row, k) of element 2q + h of a lane's A fragment, mma.m16n8k16 .f16 (PTX ISA)."""
    g, t, i = lane // 4, lane % 4, 2 * q + h
    return g + (8 if i in (2, 3, 6, 7) else 0), 2 * t + (i & 1) + (8 if i >= 4 else 0)


def _mma_b(lane: int, q: int, h: int) -> tuple[int, int]:
    """(k, column) of element 2q + h of a lane's B fragment."""
    g, t, i = lane // 4, lane % 4, 2 * q + h
    return 2 * t + (i & 1) + (8 if i >= 2 else 0), g


@pytest.mark.parametrize("form", ["A", "AT", "B", "BT"])
def test_cuda_ldmatrix_addressing_gives_the_mma_fragment_layout(form):
    """cuda.h's MT_LDSM_* (the row and column each lane points ldmatrix at), run through
    ldmatrix's documented semantics, must hand every lane the elements the mma fragment
    layout says it holds. The stored tile is A (i, kk) as is, A transposed (kk, i), B
    (kk, j) as is or B transposed (j, kk)."""
    rows_of, cols_of = _macro(f"MT_LDSM_{form}_ROW"), _macro(f"MT_LDSM_{form}_COL")
    a_form = form.startswith("A")
    trans = form in ("AT", "B")  # the forms whose fragment pairs are not contiguous in memory
    got = _ldmatrix(rows_of, cols_of, 4 if a_form else 2, trans)
    for (lane, q, h), (r, c) in got.items():
        logical = (r, c) if form in ("A", "B") else (c, r)  # (i, kk) for A, (kk, j) for B
        want = _mma_a(lane, q, h) if a_form else _mma_b(lane, q, h)
        assert logical == want, (form, lane, q, h, logical, want)
        assert rows_of(lane) < 16 and cols_of(lane) % 8 == 0  # 16-byte aligned rows inside the tile


def _nvrtc() -> Nvrtc | None:
    try:
        return Nvrtc()
    except OSError:
        return None


NVRTC = _nvrtc()
needs_nvrtc = pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")


@needs_nvrtc
@pytest.mark.parametrize("f16", ["1", "0"])
def test_the_tile_compiles_for_sm_90_with_nvrtc(f16):
    ok, log = NVRTC.compile(source("cuda"), "tile_product.cu",
                            ["--gpu-architecture=sm_90", "--std=c++17", "-DMB_NVRTC=1", f"-DMB_DTYPE={f16}"])
    assert ok, log


@needs_nvrtc
def test_a_wrong_instruction_fails_nvrtc(tmp_path):
    """The control: ptxas checks the inline PTX, so a broken mma does not compile."""
    broken = source("cuda").replace("mma.sync.aligned.m16n8k16.row.col", "mma.sync.aligned.m16n8k16.col.col")
    ok, _ = NVRTC.compile(broken, "broken.cu", ["--gpu-architecture=sm_90", "--std=c++17", "-DMB_DTYPE=1"])
    assert not ok


# ---- Metal Shading Language against the shim ---------------------------------------------------------------


def _parse_msl(tmp_path: Path, text: str, f16: str, version: int = 300) -> subprocess.CompletedProcess:
    path = tmp_path / f"tile{f16}_{version}_{abs(hash(text))}.metal"
    path.write_text(text)
    return subprocess.run([CLANG, "-fsyntax-only", "-x", "c++", "-std=c++17", "-Wno-unknown-attributes", "-I",
                           str(SHIM), f"-D__METAL_VERSION__={version}", f"-DMB_DTYPE={f16}", str(path)],
                          capture_output=True, text=True, timeout=120)


needs_clang = pytest.mark.skipif(CLANG is None, reason="clang++-14 is not installed")


@needs_clang
@pytest.mark.parametrize("version", [300, 320])
@pytest.mark.parametrize("f16", ["0", "1"])
def test_the_tile_parses_as_msl(tmp_path, f16, version):
    r = _parse_msl(tmp_path, source("metal"), f16, version)
    assert r.returncode == 0, r.stderr


# What the MSL specification does not allow must fail against the shim too.
MSL_MUTATIONS = {
    # One element type per call (Table 6.10): no half matrix into a float accumulator.
    "half fragments, float accumulator": ("#define MT_A_T simdgroup_float8x8", "#define MT_A_T simdgroup_half8x8"),
    # simdgroup_load reads memory of the matrix's own element type (Table 6.9).
    "half memory into a float matrix": ("#define MT_T float", "#define MT_T half"),
    "misspelt multiply": ("simdgroup_multiply_accumulate((c)", "simdgroup_multiply_add((c)"),
    "unknown matrix name": ("#define MT_ACC_T simdgroup_float8x8", "#define MT_ACC_T simdgroup_float16x16"),
}


@needs_clang
@pytest.mark.parametrize("name", MSL_MUTATIONS)
def test_msl_the_specification_does_not_allow_fails(tmp_path, name):
    old, new = MSL_MUTATIONS[name]
    text = source("metal")
    assert old in text, f"the mutation '{name}' no longer matches metal.h; update it"
    r = _parse_msl(tmp_path, text.replace(old, new), "1")
    assert r.returncode != 0, f"a tile with {name} parsed"


# ---- the device trait --------------------------------------------------------------------------------------


def _a_tile_variant():
    needing = [v for v in variants.load_variants() if "matrix_unit" in v.family.needs]
    assert needing, "no family needs the matrix unit"
    return needing[0]


def test_a_device_without_a_matrix_unit_leaves_tile_variants_unsupported():
    v = _a_tile_variant()
    spec = next(s for s in _specs_for(v))
    assert v.unsupported_reason(spec) is None  # without a device: the manifest alone
    sm75 = {"matrix_unit": False, "matrix_unit_detail": "none: the tile's mma.sync m16n8k16 needs compute "
                                                        "capability 8.0, this GPU has 7.5"}
    reason = v.unsupported_reason(spec, sm75)
    assert reason == f"needs matrix_unit: {sm75['matrix_unit_detail']}"
    assert v.unsupported_reason(spec, {"matrix_unit": True, "matrix_unit_detail": "tensor cores"}) is None


def _specs_for(v) -> list[Spec]:
    shapes = [Spec("matmul", "float16", 1, m, 256, 256, False, tb) for m in (1, 4, 16, 64, 128, 256)
              for tb in (False, True)]
    return [s for s in shapes if v.unsupported_reason(s) is None]


def test_the_runner_stores_tile_variants_as_unsupported_without_a_matrix_unit(opencl, tmp_path, monkeypatch):
    """The runner decides with the device's info: here an OpenCL device made to say it has none."""
    from metalbench import runner, worker
    from metalbench.specs import load_suite
    from metalbench.store import Store

    real = worker.ProcessPool.describe

    def without_unit(pool):
        return {**real(pool), "matrix_unit": False, "matrix_unit_detail": "none: made up for the test"}

    monkeypatch.setattr(worker.ProcessPool, "describe", without_unit)
    store = Store(tmp_path / "results.sqlite")
    smoke = load_suite("smoke")
    chosen = runner.with_baseline(variants.load_variants("opencl"), "opencl", ["mtskinny/*"], specs=smoke.specs)
    run = store.load_run(runner.run(smoke, chosen, backend="opencl", store=store, isolated=False,
                                    settings=FAST))
    tiles = [r for r in run.results if r.variant.startswith("mtskinny/")]
    assert tiles and all(r.status == "unsupported" for r in tiles)
    assert any(r.message == "needs matrix_unit: none: made up for the test" for r in tiles)


def test_every_device_says_whether_it_has_a_matrix_unit(opencl):
    info = opencl.info
    assert info["matrix_unit"] is True and info["matrix_unit_detail"].startswith("emulated")
    assert info["warpgroup_mma"] is False and info["warpgroup_mma_detail"].startswith("none: ")
    assert info["thread_block_clusters"] is False and info["thread_block_clusters_detail"].startswith("none: ")


def test_a_gpu_without_wgmma_leaves_warpgroup_variants_unsupported():
    """wggemm needs sm_90a's wgmma: an A100 (8.0) or a Blackwell GPU (10.0) has mma.sync but
    not it, and each of its variants says so, in the device's words."""
    (v,) = variants.select(variants.load_variants("cuda"), ["wggemm/nt_bm128_bn128_w1_cl1"])
    spec = Spec("matmul", "float16", 1, 512, 2048, 2048, False, True)
    sm80 = {"matrix_unit": True, "matrix_unit_detail": "tensor cores", "warpgroup_mma": False,
            "warpgroup_mma_detail": "none: wgmma.mma_async needs compute capability 9.0 (sm_90a), this GPU has 8.0"}
    assert v.unsupported_reason(spec, sm80) == f"needs warpgroup_mma: {sm80['warpgroup_mma_detail']}"
    assert v.unsupported_reason(spec, {**sm80, "warpgroup_mma": True}) is None


def test_a_gpu_without_clusters_leaves_only_the_cluster_variants_unsupported():
    """Before compute capability 9.0 a kernel with __cluster_dims__ does not compile: its
    variants are unsupported with the device's reason, the others of the family run."""
    sm80 = {"matrix_unit": True, "matrix_unit_detail": "tensor cores", "thread_block_clusters": False,
            "thread_block_clusters_detail": "none: thread-block clusters need compute capability 9.0, this GPU has 8.0"}
    spec = Spec("matmul", "float16", 1, 512, 2048, 2048, False, True)
    one, two = variants.select(variants.load_variants("cuda"),
                               ["tcgemm/bm64_bn128_w1x2_cl1", "tcgemm/bm64_bn128_w1x2_cl2"])
    assert one.unsupported_reason(spec, sm80) is None
    assert two.unsupported_reason(spec, sm80) == f"needs thread_block_clusters: {sm80['thread_block_clusters_detail']}"
    assert two.unsupported_reason(spec, {**sm80, "thread_block_clusters": True}) is None


def test_every_family_with_clusters_needs_them():
    """The kernels that declare __cluster_dims__ are those whose manifests need clusters for CL > 1."""
    for family in variants.load_families():
        if family.source is None or family.source.suffix != ".cu":
            continue
        declares = "__cluster_dims__" in family.source.read_text()
        assert declares == ("thread_block_clusters if CL > 1" in family.needs), family.name


def test_a_need_whose_condition_names_no_parameter_is_a_manifest_error(tmp_path):
    (tmp_path / "k.c").write_text("MB_KERNEL(k) {}\n")
    (tmp_path / "k.toml").write_text('name = "k"\nsource = "k.c"\nentry = "k"\nconfig = "x{X}"\n'
                                     'needs = ["thread_block_clusters if CL > 1"]\n[grid]\nX = [1]\n'
                                     '[dispatch]\ngroups = [1, 1, 1]\nthreads = [1, 1, 1]\n')
    with pytest.raises(variants.ManifestError, match="needs: unknown name 'CL'"):
        variants.load_families([tmp_path])


def test_the_dynamic_group_memory_global_has_one_name():
    """The backend reads the size a kernel states with MB_DYNAMIC_SHARED (cuda.h) from a
    module global: both spell its name, and the emulation's macro defines the same one."""
    backend = (Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "cuda_backend.cpp").read_text()
    (name,) = re.findall(r'kDynamicShared = "(\w+)"', backend)
    cuda = (paths.kernels_dir() / "include" / "cuda.h").read_text()
    emu = (Path(__file__).parent / "cuda_emu" / "prelude.h").read_text()
    for text in (cuda, emu):
        (line,) = [x for x in text.splitlines() if x.startswith("#define MB_DYNAMIC_SHARED(bytes)")]
        assert f" {name} = (bytes)" in line


def test_an_unknown_need_is_a_manifest_error(tmp_path):
    (tmp_path / "k.c").write_text("MB_KERNEL(k) {}\n")
    (tmp_path / "k.toml").write_text('name = "k"\nsource = "k.c"\nentry = "k"\nconfig = "x"\n'
                                     'needs = ["warp_specialisation"]\n[dispatch]\ngroups = [1]\nthreads = [32]\n')
    with pytest.raises(variants.ManifestError, match=r"k.toml: field 'needs': unknown need 'warp_specialisation'"):
        variants.parse_family(tmp_path / "k.toml")


# ---- on a CUDA GPU ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda():
    reason = _core.unavailable_reason("cuda") if "cuda" in _core.backends() else "not built"
    if reason:
        pytest.skip(f"no CUDA device: {reason}")
    dev = _core.open("cuda", 0)
    if not dev.info["matrix_unit"]:
        pytest.skip(f"no matrix unit: {dev.info['matrix_unit_detail']}")
    return dev


@pytest.mark.gpu
@DTYPES
def test_the_tile_computes_exactly_on_cuda(cuda, dtype):
    check_every_case(cuda, "cuda", dtype, cuda_tiles(dtype))


# ---- on an Apple GPU ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metal():
    reason = _core.unavailable_reason("metal") if "metal" in _core.backends() else "not built (macOS only)"
    if reason:
        pytest.skip(f"no Metal device: {reason}")
    dev = _core.open("metal", 0)
    if not dev.info["matrix_unit"]:
        pytest.skip(f"no matrix unit: {dev.info['matrix_unit_detail']}")
    return dev


@pytest.mark.gpu
@DTYPES
def test_the_tile_computes_exactly_on_metal(metal, dtype):
    """simdgroup_load and simdgroup_store (with elements_per_row, transposed or not, from
    threadgroup and device memory), make_filled_simdgroup_matrix and
    simdgroup_multiply_accumulate behave as the MSL specification says, on a real GPU."""
    check_every_case(metal, "metal", dtype, (8, 8, 8))
