"""The CUDA backend. Without a GPU: the loader's messages, the cache setting, and the
CUDA prelude with every kernel body compiled by a local nvcc. With one (`-m gpu`):
every variant verified, cuBLAS on every op and layout, the compiled-kernel cache,
and the timer."""

import ctypes
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from metalbench import _core

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cuda_harness import CHECK_SPECS, Buffers, make_problem, run_checked, suite_specs, verify_all  # noqa: E402

from metalbench import paths, report, runner, variants  # noqa: E402
from metalbench.specs import Spec, load_suite  # noqa: E402
from metalbench.store import Store  # noqa: E402


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def _cuda_reason() -> str:
    return _core.unavailable_reason("cuda") if "cuda" in _core.backends() else "not built"


# ---- no GPU needed ---------------------------------------------------------------------


def test_cuda_backend_is_built_and_imports_anywhere():
    assert "cuda" in _core.backends()
    assert isinstance(_core.unavailable_reason("cuda"), str)


@pytest.mark.skipif(_loads("libcuda.so.1"), reason="this machine has the CUDA driver")
def test_reason_names_the_missing_driver():
    reason = _core.unavailable_reason("cuda")
    assert "libcuda.so.1" in reason and "NVIDIA driver" in reason
    with pytest.raises(_core.UnavailableError, match="libcuda"):
        _core.open("cuda", 0)


def test_reason_names_missing_nvrtc(tmp_path):
    # A process that can see no NVRTC anywhere: the override points at an empty
    # folder and the usual places are hidden by running from a bare environment.
    code = textwrap.dedent("""
        from metalbench import _core
        print(_core.unavailable_reason("cuda"))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH")}
    env["METALBENCH_NVRTC"] = str(tmp_path / "no-such-libnvrtc.so")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    if _loads("libnvrtc.so") or list(Path("/usr/local").glob("cuda*/lib*/libnvrtc.so*")):
        pytest.skip("this machine has NVRTC in a standard place")
    assert "NVRTC" in out and "nvidia-cuda-nvrtc" in out and "METALBENCH_NVRTC" in out


def test_set_cache_dir_takes_a_path(tmp_path):
    _core.set_cache_dir(str(tmp_path / "kernels"))
    _core.set_cache_dir(str(paths.cache_dir() / "kernels"))


def _nvcc() -> str | None:
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def _representatives() -> list:
    """Per CUDA family and dtype, the first and the last variant of its grid."""
    out = []
    for family in variants.load_families():
        if "cuda" not in family.backends or family.builtin:
            continue
        vs = variants.expand(family)
        for dtype in family.dtypes:
            for v in {vs[0].id: vs[0], vs[-1].id: vs[-1]}.values():
                out.append((v, dtype))
    return out


@pytest.mark.skipif(_nvcc() is None, reason="no nvcc on this machine")
def test_prelude_and_every_body_compile_with_nvcc(tmp_path):
    nvcc = _nvcc()
    cases = _representatives()
    assert {v.family.name for v, _ in cases} >= {"naive", "warpgemv", "splitkgemv", "nngemv"}

    def compile_one(i_case):
        i, (v, dtype) = i_case
        # Defines as #define lines: nvcc's own headers come first and must not see them.
        defines = "".join(f"#define {k} {val}\n" for k, val in v.defines(dtype).items())
        src = tmp_path / f"k{i}.cu"
        src.write_text(defines + v.source("cuda"))
        r = subprocess.run([nvcc, "-arch=sm_90", "-c", str(src), "-o", str(tmp_path / f"k{i}.o")],
                           capture_output=True, text=True)
        return v.id, dtype, r.returncode, r.stderr

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(compile_one, enumerate(cases)))
    failed = [f"{vid} {dtype}:\n{err}" for vid, dtype, rc, err in results if rc != 0]
    assert not failed, "\n".join(failed)


# ---- on a CUDA GPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda():
    reason = _cuda_reason()
    if reason:
        pytest.skip(f"no CUDA device: {reason}")
    return _core.open("cuda", 0)


@pytest.mark.gpu
def test_device_info(cuda):
    info = cuda.info
    assert info["backend"] == "cuda" and info["vendor"] == "NVIDIA"
    assert info["compute_units"] > 0 and info["cache_bytes"] > 0 and info["memory_bytes"] > 0
    assert info["max_group_size"] >= 1024
    assert info["driver"].startswith("CUDA ") and "NVRTC" in info["driver"]


@pytest.mark.gpu
def test_every_cuda_variant_verifies(cuda):
    chosen = variants.load_variants("cuda")
    rows = verify_all(cuda, chosen, CHECK_SPECS + suite_specs("smoke"), measure=True)
    bad = [r for r in rows if "error" in r or "wrong" in r]
    assert not bad, bad[:20]
    # Every family ran on at least one shape.
    assert {r["variant"].split("/")[0] for r in rows} == {v.family.name for v in chosen}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cublas_every_op_layout_and_batch(cuda, dtype):
    told = cuda.builtin("cublas", "cublas/baseline", {"MB_F16": "1" if dtype == "float16" else "0"})
    inferred = cuda.builtin("cublas", "cublas/baseline")  # element type read off the buffers
    assert told.max_group_size == 0
    for kernel in (told, inferred):
        _every_op(cuda, kernel, dtype)
    if dtype == "float16":  # told float32 about float16 buffers: refused, not read past their end
        wrong = cuda.builtin("cublas", "x", {"MB_F16": "0"})
        s = Spec("matmul", "float16", 1, 1, 40, 72, False, True)
        with pytest.raises(_core.UsageError, match="smaller than the params"):
            run_checked(cuda, wrong, Buffers(cuda, make_problem(s)), [1], [1])


def _every_op(cuda, kernel, dtype):
    for op, alpha, beta in (("matmul", 1, 0), ("matmul_bias_add", 1, 0), ("matmul_alpha_beta", 0.75, -0.5)):
        for ta in (False, True):
            for tb in (False, True):
                for batch, m in ((1, 1), (3, 5)):
                    s = Spec(op, dtype, batch, m, 40, 72, ta, tb, alpha, beta)
                    why = run_checked(cuda, kernel, Buffers(cuda, make_problem(s)), [1], [1])
                    assert why is None, f"{s.label()}: {why}"


def _compile_in_subprocess(cache: Path, source: str) -> str:
    code = textwrap.dedent(f"""
        import time
        from metalbench import _core
        _core.set_cache_dir({str(cache)!r})
        dev = _core.open("cuda", 0)
        t = time.perf_counter()
        dev.compile({source!r}, "twice", {{"SCALE": "3"}}, "test/twice")
        print(time.perf_counter() - t)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


TWICE = 'extern "C" __global__ void twice(float* x, int n) { int i = threadIdx.x; if (i < n) x[i] *= SCALE; }\n'


@pytest.mark.gpu
def test_second_process_compiles_nothing_and_damage_is_rebuilt(cuda, tmp_path):
    cache = tmp_path / "kernels"
    _compile_in_subprocess(cache, TWICE)
    entries = list((cache / "cuda").glob("*.bin"))
    assert len(entries) == 1
    first = entries[0].read_bytes()
    stamp = entries[0].stat().st_mtime_ns
    _compile_in_subprocess(cache, TWICE)
    assert list((cache / "cuda").glob("*.bin")) == entries
    assert entries[0].stat().st_mtime_ns == stamp  # read, not written again
    # Another define is another entry.
    _compile_in_subprocess(cache, TWICE.replace("SCALE", "(SCALE + 1)"))
    assert len(list((cache / "cuda").glob("*.bin"))) == 2
    # An intact entry of another key under this name (a file-name collision) is not used.
    (other,) = set((cache / "cuda").glob("*.bin")) - set(entries)
    entries[0].write_bytes(other.read_bytes())
    _compile_in_subprocess(cache, TWICE)
    assert entries[0].read_bytes() == first
    # A damaged entry is detected by its checksum, removed and compiled again.
    damaged = bytearray(first)
    damaged[len(damaged) // 2] ^= 0xFF
    entries[0].write_bytes(bytes(damaged))
    _compile_in_subprocess(cache, TWICE)
    assert entries[0].read_bytes() == first
    entries[0].write_bytes(first[:40])  # truncated
    _compile_in_subprocess(cache, TWICE)
    assert entries[0].read_bytes() == first


@pytest.mark.gpu
def test_compile_error_carries_the_log(cuda):
    with pytest.raises(_core.CompileError) as e:
        cuda.compile('extern "C" __global__ void broken() { undeclared = 1; }', "broken", {}, "test/broken")
    assert "undeclared" in e.value.log
    with pytest.raises(_core.CompileError, match="no kernel named"):
        cuda.compile('extern "C" __global__ void here() {}', "elsewhere", {}, "test/missing")


@pytest.mark.gpu
def test_launch_checks(cuda):
    k = cuda.compile(TWICE, "twice", {"SCALE": "2"}, "test/twice")
    x = cuda.allocate(4 * 64)
    x.write(np.arange(64, dtype=np.float32))
    cuda.run(k, [x, struct.pack("<i", 64)], [1], [64])
    out = np.empty(64, np.float32)
    x.read(out)
    np.testing.assert_array_equal(out, 2 * np.arange(64, dtype=np.float32))
    with pytest.raises(_core.UsageError, match="arguments"):
        cuda.run(k, [x], [1], [64])
    with pytest.raises(_core.UsageError):
        cuda.run(k, [x, struct.pack("<q", 64)], [1], [64])  # 8 bytes for an int
    with pytest.raises(_core.UsageError, match="no vendor library routine"):
        cuda.builtin("cudnn", "x/y")


@pytest.mark.gpu
def test_timer_batches_past_the_gate_and_cold_mode(cuda):
    k = cuda.compile(TWICE, "twice", {"SCALE": "1"}, "test/twice")
    x = cuda.allocate(4 * 256)
    args = [x, struct.pack("<i", 256)]
    r = cuda.measure(k, args, [1], [256], warmup=2, iterations=150, min_iterations=150, max_seconds=10.0)
    assert r["gpu_ns"].shape == (150,) and (r["gpu_ns"] > 0).all()
    assert r["gpu"]["median"] < 1e6 and r["cpu"]["median"] >= r["gpu"]["min"]
    cold = cuda.measure(k, args, [1], [256], iterations=20, min_iterations=20, max_seconds=10.0, cold=True)
    assert cold["cold"] and cold["gpu"]["count"] == 20
    # cuBLAS in a held batch too (it must not allocate or synchronize while the stream waits).
    s = Spec("matmul_bias_add", "float16", 1, 1, 896, 896, False, True)
    bufs = Buffers(cuda, make_problem(s))
    blas = cuda.builtin("cublas", "cublas/baseline", {"MB_F16": "1"})
    r = cuda.measure(blas, bufs.args(), [1], [1], iterations=100, min_iterations=100, max_seconds=10.0, cold=True)
    assert r["gpu"]["count"] == 100 and r["gpu"]["median"] > 0


@pytest.mark.gpu
def test_the_runner_verifies_every_cuda_family_on_the_smoke_suite(tmp_path):
    if _cuda_reason():
        pytest.skip("no CUDA device")
    store = Store(tmp_path / "results.sqlite")
    chosen = runner.with_baseline(variants.load_variants("cuda"), "cuda", [])
    settings = runner.Settings(warmup=1, iterations=3, min_iterations=2, max_seconds=0.05)
    run_id = runner.run(load_suite("smoke"), chosen, backend="cuda", store=store, settings=settings)
    rep = report.build(store.load_run(run_id))
    assert rep.counts["failed"] == 0, rep.failures
    assert rep.counts["wrong"] == 0, rep.failures


FAULT = """
MB_KERNEL(fault) {
  if (p.k == 29) ((volatile float*)0x10)[LOCAL_ID(0)] = 1.0f; /* an illegal address on the k = 29 specs */
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
  if (j >= p.n) return;
  float acc = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
  MB_STORE_C(C_AT(bi, i, j), j, acc);
}
"""


@pytest.mark.gpu
def test_a_kernel_fault_stops_the_run_and_each_rerun_gets_past_one(tmp_path):
    """A fault poisons the CUDA context: the run stops with one line naming the
    culprit, and the rerun (a new process, a new context) reuses what was stored."""
    if _cuda_reason():
        pytest.skip("no CUDA device")
    (tmp_path / "fault.cu").write_text(FAULT)
    (tmp_path / "fault.toml").write_text(textwrap.dedent("""\
        name = "fault"
        source = "fault.cu"
        entry = "fault"
        backends = ["cuda"]
        dtypes = ["float16", "float32"]
        config = "tg{TG}"
        [grid]
        TG = [64]
        [dispatch]
        groups = ["ceil_div(n, TG)", "m", "batch"]
        threads = ["TG", 1, 1]
        """))
    faulting = [s.label() for s in load_suite("smoke").specs if s.k == 29]
    assert len(faulting) >= 2
    cmd = [sys.executable, "-m", "metalbench", "run", "--backend", "cuda", "--suite", "smoke", "--kernels",
           str(tmp_path), "--variants", "fault/*", "--iterations", "3", "--db", str(tmp_path / "r.sqlite")]
    for culprit in faulting[:2]:
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert f"the device stopped working after fault/tg64 on {culprit}" in r.stderr
        assert "ILLEGAL_ADDRESS" in r.stderr and "Traceback" not in r.stderr
    store = Store(tmp_path / "r.sqlite")
    last = store.load_run(store.latest_run())
    failed = [r for r in last.results if r.status == "failed"]
    assert [(r.category, r.reused) for r in failed] == [("runtime", True), ("runtime", False)]
