"""The CUDA backend. Without a GPU: the loader's messages, and the CUDA prelude with
every kernel body (the planted faults' of tests/faults too) compiled by a local nvcc.
With one (`-m gpu`), through the public API only: every variant verified by the
runner on the odd and smoke suites, cuBLAS on every op, layout and batch (through the
runner, and with its element type inferred through the embedded timer), planted
faults that each cost one result (correct once but wrong when timed, hung, illegal
address), NVML clock readings, the compiled-kernel cache and where set_cache_dir puts
it, and the embedded timer."""

import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import FAULT_KERNELS, Recorder, results_of, sweep
from rich.console import Console

import metalbench
from metalbench import _core, metrics, report, variants
from metalbench.reference import ReferenceCache, make_inputs
from metalbench.specs import Spec


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def _nvrtc_wheel() -> bool:
    """Whether an NVIDIA wheel (nvidia-cuda-nvrtc, or one that brings it) put NVRTC where the loader looks."""
    try:
        import nvidia  # the namespace package of NVIDIA's wheels
    except ImportError:
        return False
    return any(list(Path(base).glob("*/lib/libnvrtc.so*")) for base in nvidia.__path__)


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
    if _loads("libnvrtc.so") or list(Path("/usr/local").glob("cuda*/lib*/libnvrtc.so*")) or _nvrtc_wheel():
        pytest.skip("this machine has NVRTC in a standard place (a toolkit, or a wheel the loader finds)")
    assert "NVRTC" in out and "nvidia-cuda-nvrtc" in out and "METALBENCH_NVRTC" in out


def _nvcc() -> str | None:
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def _representatives() -> list:
    """Per CUDA family (the planted faults' too) and dtype, the first and the last variant of its grid."""
    out = []
    for family in variants.load_families([FAULT_KERNELS]):
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
    assert {v.family.name for v, _ in cases} >= {"naive", "warpgemv", "splitkgemv", "nngemv", "hang", "once"}

    def compile_one(i_case):
        i, (v, dtype) = i_case
        # Defines as #define lines: nvcc's own headers come first and must not see them.
        defines = "".join(f"#define {k} {val}\n" for k, val in v.defines(dtype).items())
        src = tmp_path / f"k{i}.cu"
        src.write_text(defines + v.source("cuda"))
        # sm_90a, as the backend compiles for an H100 or H200 (wggemm's wgmma needs it)
        r = subprocess.run([nvcc, "-arch=sm_90a", "-c", str(src), "-o", str(tmp_path / f"k{i}.o")],
                           capture_output=True, text=True)
        return v.id, dtype, r.returncode, r.stderr

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(compile_one, enumerate(cases)))
    failed = [f"{vid} {dtype}:\n{err}" for vid, dtype, rc, err in results if rc != 0]
    assert not failed, "\n".join(failed)


# ---- on a CUDA GPU ---------------------------------------------------------------------

BAD = ("failed", "wrong", "timeout", "crashed")


@pytest.fixture(scope="module")
def cuda():
    reason = _cuda_reason()
    if reason:
        pytest.skip(f"no CUDA device: {reason}")
    return metalbench.open_device("cuda", 0)


@pytest.fixture
def needs_cuda():
    """For tests that only sweep: the device is opened in the runner's worker processes."""
    reason = _cuda_reason()
    if reason:
        pytest.skip(f"no CUDA device: {reason}")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One kernel and reference cache for the sweeps of every variant, so that the second
    compiles nothing (the worker compiles one variant after another)."""
    return tmp_path_factory.mktemp("cuda-cache")


def cuda_sweep(tmp_path, suite, patterns=(), **options):
    """The CUDA variants matching `patterns`, with cuBLAS (the baseline), over `suite`, every pair measured now."""
    return sweep(tmp_path, patterns, suite=suite, backend="cuda", force=True, **options)


def spec_toml(specs):
    """A suite file holding `specs`."""
    lines = ['name = "test"']
    for s in specs:
        lines += ["[[spec]]", f'op = "{s.op}"', f'dtype = "{s.dtype}"', f"batch = {s.batch}", f"m = {s.m}",
                  f"n = {s.n}", f"k = {s.k}", f"transpose_a = {str(s.transpose_a).lower()}",
                  f"transpose_b = {str(s.transpose_b).lower()}", f"alpha = {s.alpha!r}", f"beta = {s.beta!r}"]
    return "\n".join(lines) + "\n"


def every_op_layout_and_batch(dtype):
    return [Spec(op, dtype, batch, m, 40, 72, ta, tb, alpha, beta)
            for op, alpha, beta in (("matmul", 1.0, 0.0), ("matmul_bias_add", 1.0, 0.0),
                                    ("matmul_alpha_beta", 0.75, -0.5))
            for ta in (False, True) for tb in (False, True) for batch, m in ((1, 1), (3, 5))]


@pytest.mark.gpu
def test_device_info(cuda):
    info = cuda.info
    assert info["backend"] == "cuda" and info["vendor"] == "NVIDIA"
    assert info["compute_units"] > 0 and info["cache_bytes"] > 0 and info["memory_bytes"] > 0
    assert info["max_group_size"] >= 1024 and info["max_held_launches"] > 0
    assert info["driver"].startswith("CUDA ") and "NVRTC" in info["driver"]


@pytest.mark.gpu
@pytest.mark.parametrize("suite", ["odd", "smoke"])
def test_the_runner_verifies_every_cuda_variant(needs_cuda, tmp_path, suite, shared_cache, monkeypatch):
    monkeypatch.setenv("METALBENCH_CACHE_DIR", str(shared_cache))
    run, rep = cuda_sweep(tmp_path, suite)
    bad = [(r.variant, run.specs[r.spec_index]["label"], r.status, r.message) for r in run.results if r.status in BAD]
    assert not bad, bad[:20]
    # Every family that takes a spec of the suite verified on at least one (a pair raced
    # out was verified before the race ended its timing). tcgemm and wggemm take none of
    # smoke's: their tiles are for prefill.
    verified = {r.variant.split("/")[0] for r in run.results if r.status in ("ok", "raced")}
    runs = {r.variant.split("/")[0] for r in run.results if r.status != "unsupported"}
    assert verified == runs
    # The quantized families (and cublas-dequant) take only quantized specs: the test below.
    quantized = {v.family.name for v in variants.load_variants("cuda") if v.family.quant}
    assert runs >= {v.family.name for v in variants.load_variants("cuda")} - {"tcgemm", "wggemm"} - quantized


@pytest.mark.gpu
def test_quantized_specs_verify_beside_dequantize_then_cublas(needs_cuda, tmp_path, shared_cache, monkeypatch):
    """Every q* variant and the quantized specs' baseline, cublas-dequant (B dequantized to the dtype in a
    scratch buffer, then cuBLAS, one launch), verified on every bit width, group size, op, m 1..16 and batch
    of test_quant_families' suite; each spec compared against that baseline."""
    from test_quant_families import SUITE

    monkeypatch.setenv("METALBENCH_CACHE_DIR", str(shared_cache))
    run, rep = cuda_sweep(tmp_path, SUITE, ["q*"])
    bad = [(r.variant, run.specs[r.spec_index]["label"], r.status, r.message) for r in run.results if r.status in BAD]
    assert not bad, bad[:20]
    verified = {r.variant.split("/")[0] for r in run.results if r.status in ("ok", "raced")}
    assert verified == {v.family.name for v in variants.load_variants("cuda") if v.family.quant}
    assert all(s.baseline == "cublas-dequant/baseline" and s.baseline_us for s in rep.specs)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cublas_on_every_op_layout_and_batch_through_the_runner(needs_cuda, tmp_path, dtype):
    specs = every_op_layout_and_batch(dtype)
    run, rep = cuda_sweep(tmp_path, spec_toml(specs), ["cublas/*"])
    blas = results_of(run, "cublas/baseline")
    assert len(blas) == len(specs) == 24
    assert all(r.status == "ok" for r in blas), [(run.specs[r.spec_index]["label"], r.message) for r in blas
                                                 if r.status != "ok"]
    assert all(s.best == "cublas/baseline" for s in rep.specs)


def exact_buffers(device, spec):
    """The spec's inputs in buffers of exactly their size (as the builtin reads the element type
    off them), C at its initial state, and what checking the output needs."""
    inputs = make_inputs(spec)
    ref, _ = ReferenceCache().get(spec, inputs)
    c0 = metrics.initial_c(spec, inputs)
    bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
    a, b, c, bias_buf = (device.allocate(x.nbytes) for x in (inputs.a, inputs.b, c0, bias))
    for buf, x in ((a, inputs.a), (b, inputs.b), (c, c0), (bias_buf, bias)):
        buf.write(np.ascontiguousarray(x))
    ws = device.allocate(4)
    ws.fill(0)
    return [a, b, c, bias_buf, ws, spec.params()], ref, c0


def check_output(spec, c, ref, c0):
    out = np.empty_like(c0)
    c.read(out)
    return metrics.check(spec, out, ref, c0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cublas_infers_the_element_type_from_the_buffers(cuda, dtype):
    inferred = cuda.builtin("cublas", "cublas/baseline")  # no MB_DTYPE: read off the buffers' sizes
    assert inferred.max_group_size == 0
    for spec in every_op_layout_and_batch(dtype):
        args, ref, c0 = exact_buffers(cuda, spec)
        cuda.run(inferred, args, [1], [1])
        check = check_output(spec, args[2], ref, c0)
        assert check.verdict == "ok", f"{spec.label()}: {check.reason}"
    # Timed through the embedded timer, a held batch included (cuBLAS must not allocate
    # or synchronize while the stream waits).
    r = cuda.measure(inferred, args, [1], [1], warmup=1, min_samples=5, max_samples=20, min_time=0, max_time=2.0,
                     max_noise=1.0, rank_by="batch")
    assert r["batch"]["count"] >= 5 and r["batch"]["median"] > 0 and r["batch_size"] >= 1
    if dtype == "float16":  # told float32 about float16 buffers: refused, not read past their end
        told_wrong = cuda.builtin("cublas", "x", {"MB_DTYPE": "0"})
        spec = Spec("matmul", "float16", 1, 1, 40, 72, False, True)
        args, _, _ = exact_buffers(cuda, spec)
        with pytest.raises(metalbench.UsageError, match="smaller than the params"):
            cuda.run(told_wrong, args, [1], [1])


def _compile_in_subprocess(cache: Path, source: str, cache_dir: str | None = None) -> str:
    """Compiles `source` in a process of its own, with METALBENCH_CACHE_DIR `cache` and, given
    `cache_dir`, _core.set_cache_dir(cache_dir) first; returns what it printed: the seconds
    the compile took."""
    code = textwrap.dedent(f"""
        import time
        import metalbench
        if {cache_dir!r} is not None:
            metalbench._core.set_cache_dir({cache_dir!r})
        dev = metalbench.open_device("cuda", 0)
        t = time.perf_counter()
        dev.compile({source!r}, "twice", {{"SCALE": "3"}}, "test/twice")
        print(time.perf_counter() - t)
    """)
    env = {**os.environ, "METALBENCH_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout


TWICE = 'extern "C" __global__ void twice(float* x, int n) { int i = threadIdx.x; if (i < n) x[i] *= SCALE; }\n'


@pytest.mark.gpu
def test_second_process_compiles_nothing_and_damage_is_rebuilt(cuda, tmp_path):
    root = tmp_path / "cache"
    cache = root / "kernels" / "cuda"  # METALBENCH_CACHE_DIR/kernels, one folder per backend
    _compile_in_subprocess(root, TWICE)
    entries = list(cache.glob("*.bin"))
    assert len(entries) == 1
    first = entries[0].read_bytes()
    stamp = entries[0].stat().st_mtime_ns
    _compile_in_subprocess(root, TWICE)
    assert list(cache.glob("*.bin")) == entries
    assert entries[0].stat().st_mtime_ns == stamp  # read, not written again
    # Another define is another entry.
    _compile_in_subprocess(root, TWICE.replace("SCALE", "(SCALE + 1)"))
    assert len(list(cache.glob("*.bin"))) == 2
    # An intact entry of another key under this name (a file-name collision) is not used.
    (other,) = set(cache.glob("*.bin")) - set(entries)
    entries[0].write_bytes(other.read_bytes())
    _compile_in_subprocess(root, TWICE)
    assert entries[0].read_bytes() == first
    # A damaged entry is detected by its checksum, removed and compiled again.
    damaged = bytearray(first)
    damaged[len(damaged) // 2] ^= 0xFF
    entries[0].write_bytes(bytes(damaged))
    _compile_in_subprocess(root, TWICE)
    assert entries[0].read_bytes() == first
    entries[0].write_bytes(first[:40])  # truncated
    _compile_in_subprocess(root, TWICE)
    assert entries[0].read_bytes() == first


@pytest.mark.gpu
def test_set_cache_dir_moves_the_kernel_cache_and_an_empty_path_turns_it_off(cuda, tmp_path):
    # In processes of their own: the setting is process-wide and would outlive this test.
    env, chosen = tmp_path / "env", tmp_path / "chosen"
    _compile_in_subprocess(env, TWICE, cache_dir=str(chosen))
    assert len(list((chosen / "cuda").glob("*.bin"))) == 1
    assert not (env / "kernels").exists()  # not where METALBENCH_CACHE_DIR would put it
    _compile_in_subprocess(env, TWICE.replace("SCALE", "(SCALE + 1)"), cache_dir="")
    assert len(list((chosen / "cuda").glob("*.bin"))) == 1 and not (env / "kernels").exists()
    _compile_in_subprocess(env, TWICE)  # unset: METALBENCH_CACHE_DIR/kernels
    assert len(list((env / "kernels" / "cuda").glob("*.bin"))) == 1


@pytest.mark.gpu
def test_compile_error_carries_the_log(cuda):
    with pytest.raises(metalbench.CompileError) as e:
        cuda.compile('extern "C" __global__ void broken() { undeclared = 1; }', "broken", {}, "test/broken")
    assert "undeclared" in e.value.log
    with pytest.raises(metalbench.CompileError, match="no kernel named"):
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
    with pytest.raises(metalbench.UsageError, match="arguments"):
        cuda.run(k, [x], [1], [64])
    with pytest.raises(metalbench.UsageError):
        cuda.run(k, [x, struct.pack("<q", 64)], [1], [64])  # 8 bytes for an int
    with pytest.raises(metalbench.UsageError, match="no vendor library routine"):
        cuda.builtin("cudnn", "x/y")


COUNT = 'extern "C" __global__ void count(int* c) { if (threadIdx.x == 0) c[0] += 1; }\n'


@pytest.mark.gpu
def test_timer_clocks_stop_rules_slots_and_resets(cuda):
    k = cuda.compile(TWICE, "twice", {"SCALE": "1"}, "test/twice")
    x = cuda.allocate(4 * 256)
    args = [x, struct.pack("<i", 256)]
    # The per-launch clock ranks: with no noise allowed it runs to its sample cap (unless
    # every sample is the same, which events' 0.5 us resolution makes possible).
    r = cuda.measure(k, args, [1], [256], warmup=2, min_samples=10, max_samples=150, min_time=0, max_time=30.0,
                     max_noise=0.0, rank_by="gpu")
    assert r["rank_by"] == "gpu" and (r["gpu_ns"] > 0).all()
    assert (r["gpu"]["stop"] == "sample-cap" and r["gpu_ns"].shape == (150,)) or \
        (r["gpu"]["stop"] == "converged" and r["gpu"]["rel_stdev"] == 0)
    assert r["batch"]["stop"] == "enough" and r["cpu"]["stop"] == "enough"
    assert r["gpu"]["median"] < 1e6 and r["cpu"]["median"] >= r["gpu"]["min"]
    # The batch clock: batches long enough for 0.5 ms, within what the backend holds.
    r = cuda.measure(k, args, [1], [256], min_samples=12, min_time=0, max_noise=1.0, max_time=30.0)
    assert r["batch"]["stop"] == "converged" and r["batch"]["count"] == 12
    assert 1 <= r["batch_size"] <= cuda.info["max_held_launches"]
    assert r["batch_size"] * r["gpu"]["median"] >= 4e5 or r["batch_size"] == cuda.info["max_held_launches"]
    # A cap on the time keeps at least one sample.
    r = cuda.measure(k, args, [1], [256], min_samples=1000, max_samples=1000, max_time=1e-6)
    assert r["batch"]["stop"] == "time-cap" and r["batch"]["count"] >= 1
    # Slots (one argument list each) taken in turn, every one reset before each round:
    # no slot is ever launched twice between resets.
    counter = cuda.compile(COUNT, "count", {}, "test/count")
    slots = 6
    arena, zeros = cuda.allocate(256 * slots), cuda.allocate(256 * slots)
    zeros.fill(0)
    views = [[arena.view(256 * i, 4)] for i in range(slots)]
    r = cuda.measure(counter, views, [1], [1], min_samples=3, max_samples=30, max_time=10.0, resets=[(arena, zeros)])
    got = np.empty(64 * slots, dtype=np.int32)
    arena.read(got)
    counts = got[::64]
    assert set(counts) <= {0, 1}
    last = {(r["first_slot"] + i) % slots for i in range(r["last_round"])}
    assert last and all(counts[i] == 1 for i in last)
    assert r["batch_size"] <= slots


@pytest.mark.gpu
def test_cublas_times_over_slots_in_a_held_batch(cuda):
    spec = Spec("matmul_bias_add", "float16", 1, 1, 896, 896, False, True)
    blas = cuda.builtin("cublas", "cublas/baseline", {"MB_DTYPE": "1"})
    slots = []
    for _ in range(4):  # each slot its own C (and inputs), as the runner's output slots are
        args, ref, c0 = exact_buffers(cuda, spec)
        slots.append(args)
    r = cuda.measure(blas, slots, [1], [1], warmup=1, min_samples=10, max_samples=200, max_time=5.0)
    assert r["batch"]["count"] >= 10 and r["batch"]["median"] > 0 and r["batch_size"] >= 1
    for args in slots:  # every slot was launched and left the right answer
        assert check_output(spec, args[2], ref, c0).verdict == "ok"


@pytest.mark.gpu
def test_nvml_clock_readings_reach_the_report(cuda, tmp_path):
    reading = cuda.clock()
    assert reading is not None, f"no clock: {cuda.info['clock_source']}"
    assert 0 < reading["mhz"] <= reading["max_mhz"] * 1.05 and isinstance(reading["throttled"], bool)
    spec = Spec("matmul", "float16", 1, 1, 896, 896, False, True)
    run, rep = cuda_sweep(tmp_path, spec_toml([spec]), ["cublas/*"])
    assert re.match(r"\d+-\d+ MHz \(maximum \d+\)", rep.clock_note), rep.clock_note
    console = Console(record=True, width=200)
    report.render(rep, console)
    assert re.search(r"^clock: \d+-\d+ MHz", console.export_text(), re.MULTILINE)


# ---- planted faults: each costs its own result --------------------------------------------------------------------

def faults_only_on_k(folder, k):
    """A copy of tests/faults/kernels whose faults are planted only on specs of this k (the
    grid parameter only_k of planted.c): on the others each kernel is correct."""
    shutil.copytree(FAULT_KERNELS, folder)
    for manifest in folder.glob("*.toml"):
        manifest.write_text(manifest.read_text().replace("[grid]\n", f"[grid]\nonly_k = [{k}]\n"))
    return folder


ONE_SPEC = spec_toml([Spec("matmul", "float16", 1, 1, 96, 64, False, True)])
# Two specs with k = 29 (where a fault is planted) around one with k = 64.
THREE_SPECS = spec_toml([Spec("matmul", "float16", 1, 1, 45, 29, False, True),
                         Spec("matmul", "float16", 1, 1, 96, 64, False, True),
                         Spec("matmul", "float16", 2, 3, 45, 29, False, False)])


@pytest.mark.gpu
def test_a_kernel_correct_once_but_skipping_its_work_later_is_wrong(needs_cuda, tmp_path):
    # tests/faults/kernels/cuda/once.cu: a counter in a __device__ global, which outlives
    # the launch, makes every launch after the first return at once.
    run, rep = cuda_sweep(tmp_path, ONE_SPEC, ["once/*"], kernels=[FAULT_KERNELS])
    (once,) = results_of(run, "once/tg64")
    assert once.status == "wrong" and once.message.startswith("correct once, wrong when timed"), once.message
    assert "never written" in once.message
    assert rep.specs[0].best == "cublas/baseline"


@pytest.mark.gpu
@pytest.mark.slow
def test_a_hung_kernel_times_out_and_the_sweep_goes_on(needs_cuda, tmp_path):
    run, rep = cuda_sweep(tmp_path, THREE_SPECS, ["hang/*"], kernels=[FAULT_KERNELS], timeout=5)
    hung = results_of(run, "hang/tg64")
    assert [r.status for r in hung] == ["timeout"] * 3
    assert all("longer than 5 s" in r.message for r in hung), [r.message for r in hung]
    # cuBLAS still ran on every spec, after each hang, in a new worker.
    assert all(s.best == "cublas/baseline" for s in rep.specs)
    assert rep.counts["timeout"] == 3 and rep.counts["failed"] == 0 and rep.counts["crashed"] == 0


@pytest.mark.gpu
@pytest.mark.parametrize("fault", ["null", "far"])  # an illegal address; a terabyte past C
def test_a_kernel_fault_costs_one_result_and_a_new_worker_goes_on(needs_cuda, tmp_path, fault):
    """A fault poisons the CUDA context of its worker: that pair fails with the driver's
    error, the worker, whose device no longer works, is replaced, and the sweep goes on."""
    kernels = faults_only_on_k(tmp_path / "k", 29)
    events = Recorder()
    run, rep = cuda_sweep(tmp_path, THREE_SPECS, [f"{fault}/*"], kernels=[kernels], events=events)
    faults = results_of(run, f"{fault}/tg64")
    # On the k = 64 spec it is correct: ok, or raced out by cuBLAS after a brief timing.
    assert [r.status for r in faults] in (["failed", "ok", "failed"], ["failed", "raced", "failed"]), \
        [r.message for r in faults]
    assert faults[0].category == faults[2].category == "runtime"
    for r in (faults[0], faults[2]):
        assert "CUDA_ERROR_" in r.message, r.message
        label = run.specs[r.spec_index]["label"]
        assert any(f"the device stopped working after {fault}/tg64 on {label}" in n and "starting a new worker" in n
                   for n in events.notes), events.notes
    # cuBLAS ran on every spec, before and after each fault.
    assert all(r.status == "ok" for r in results_of(run, "cublas/baseline"))
    assert rep.counts["failed"] == 2 and rep.counts["crashed"] == 0
