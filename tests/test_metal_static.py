"""What Linux can check of the Metal backend, which only a Mac can build and run.

1. csrc/metal/*.mm parse as Objective-C++ (ARC) against tests/metal_shim, a
   declaration shim of exactly the Foundation, Metal and MPS API they use; a
   misspelt selector, a wrong argument type or a missing import fails, which the
   mutation tests below prove on temporary copies.
2. Every portable kernel, as the Metal backend compiles it (kernels/include/metal.h
   + common.h + body, with each variant's defines), parses as C++17 against
   tests/metal_shim/msl.h, a shim of the MSL builtins; so does a body that uses
   every macro of the dialect, and a prelude macro that expands to broken MSL
   fails it.
3. No exception can leave an autorelease pool undrained: every @autoreleasepool
   block of the backend catches everything inside it (the one in `pooled`).
4. The host-side rules of held runs (csrc/metal/metal_held.h: windows behind gates,
   timestamps checked before their order), which are plain C++, compile and run here.

The real-SDK check (shared/tools/metal-sdk-check) goes further where Apple's
headers are at hand; these run everywhere clang-14 does (CI installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "tests" / "metal_shim"
METAL_SOURCES = sorted((ROOT / "csrc" / "metal").glob("*.mm"))
CLANG = shutil.which("clang++-14")

needs_clang = pytest.mark.skipif(
    CLANG is None, reason="clang++-14 is not installed (CI installs it: apt-get install clang-14)"
)

OBJC_FLAGS = ["-fsyntax-only", "-x", "objective-c++", "-std=c++17", "-fobjc-runtime=macosx-13.0", "-fobjc-arc",
              "-Werror=objc-method-access"]
# MSL is C++14-based; its attributes ([[buffer(0)]], ...) are unknown to clang.
MSL_FLAGS = ["-fsyntax-only", "-x", "c++", "-std=c++17", "-Wno-unknown-attributes", "-I", str(SHIM)]
# macOS 13, the wheels' deployment target, compiles MSL 3.0; 3.2 (macOS 15) adds
# the device-scope fence the prelude uses where it can.
MSL_VERSIONS = (300, 320)


def _clang(args: list[str], source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLANG, *args, str(source)], capture_output=True, text=True, timeout=120)


def _include_path() -> list[str]:
    """The _core target's include folders, as CMakeLists.txt gives them."""
    found = re.search(r"target_include_directories\(_core PRIVATE ([^)]*)\)", (ROOT / "CMakeLists.txt").read_text())
    assert found, "CMakeLists.txt no longer sets _core's include folders as this test reads them"
    return found.group(1).split()


def _objc(tree: Path, source: Path) -> subprocess.CompletedProcess:
    includes = [flag for folder in _include_path() for flag in ("-I", str(tree / folder))]
    return _clang([*OBJC_FLAGS, *includes, "-I", str(SHIM)], source)


# --- 1. the Objective-C++ backend against the declaration shim ---------------------------------------


def test_the_metal_backend_sources_are_there():
    assert {p.name for p in METAL_SOURCES} >= {"metal_backend.mm", "metal_buffer.mm", "metal_held.mm",
                                               "metal_timing.mm", "mps_baseline.mm"}


@needs_clang
@pytest.mark.parametrize("source", METAL_SOURCES, ids=lambda p: p.name)
def test_backend_parses_against_the_shim(source):
    r = _objc(ROOT, source)
    assert r.returncode == 0, r.stderr


def _copy_tree(tmp_path: Path) -> Path:
    """csrc/ and kernels/include/ as laid out in the repository (csrc/core/kernel_abi.h includes common.h)."""
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    shutil.copytree(ROOT / "kernels" / "include", tmp_path / "kernels" / "include")
    return tmp_path


# (file, text in it, replacement, what the compiler must say)
MUTATIONS = {
    "misspelt selector": ("metal_backend.mm", "[cb waitUntilCompleted];", "[cb waitUntilComplete];",
                          "waitUntilComplete"),
    "misspelt MPS selector": ("mps_baseline.mm", "interiorColumns:k", "interiorColumn:k", "interiorColumn:"),
    "misspelt property": ("metal_backend.mm", "pipeline_.threadExecutionWidth", "pipeline_.threadExecutionWidths",
                          "threadExecutionWidths"),
    "wrong argument type": ("metal_buffer.mm", "range:NSMakeRange(offset_, bytes_)", "range:bytes_", "NSRange"),
    "wrong receiver type": ("metal_backend.mm", "[ctx.queue commandBuffer]", "[ctx.device commandBuffer]",
                            "commandBuffer"),
    "missing import": ("mps_baseline.mm", "#import <MetalPerformanceShaders/MetalPerformanceShaders.h>\n", "",
                       "MPSMatrix"),
    # The calls the timing, the storage modes and the MPS views added.
    "misspelt sample index": ("metal_timing.mm", "at.startOfEncoderSampleIndex", "at.startOfEncoderSample",
                              "startOfEncoderSample"),
    "misspelt event selector": ("metal_held.mm", "encodeWaitForEvent:ctx_.gate value:value",
                                "encodeWaitForEvent:ctx_.gate withValue:value", "encodeWaitForEvent:withValue:"),
    "event value set on the wrong object": ("metal_held.mm", "ctx_.gate.signaledValue", "ctx_.queue.signaledValue",
                                            "signaledValue"),
    "timestamps by value": ("metal_timing.mm", "sampleTimestamps:&cpu gpuTimestamp:&gpu",
                            "sampleTimestamps:cpu gpuTimestamp:gpu", "MTLTimestamp"),
    "misspelt storage mode": ("metal_buffer.mm", "? MTLResourceStorageModePrivate", "? MTLResourceStorageModePrivat",
                              "MTLResourceStorageModePrivat"),
    "wrong MPS argument type": ("mps_baseline.mm", "vectorDescriptorWithLength:length dataType:type()]",
                                "vectorDescriptorWithLength:length dataType:length]", "MPSDataType"),
    "misspelt MPS class": ("mps_baseline.mm", "[MPSMatrixFullyConnected alloc]", "[MPSMatrixFullyConected alloc]",
                           "MPSMatrixFullyConected"),
}


@needs_clang
def test_an_unchanged_copy_parses(tmp_path):
    """The control for the mutations: the copied tree itself is fine."""
    tree = _copy_tree(tmp_path)
    for source in METAL_SOURCES:
        r = _objc(tree, tree / "csrc" / "metal" / source.name)
        assert r.returncode == 0, r.stderr


@needs_clang
@pytest.mark.parametrize("name", MUTATIONS)
def test_a_broken_backend_fails_the_check(tmp_path, name):
    file, old, new, expected = MUTATIONS[name]
    tree = _copy_tree(tmp_path)
    path = tree / "csrc" / "metal" / file
    text = path.read_text()
    assert old in text, f"the mutation '{name}' no longer matches {file}; update it"
    path.write_text(text.replace(old, new, 1))
    r = _objc(tree, path)
    assert r.returncode != 0, f"clang accepted {file} with a {name}"
    assert expected in r.stderr, r.stderr


# --- 2. the portable kernels as Metal Shading Language -----------------------------------------------

# Every macro of the dialect (kernels/README.md) once, so that the prelude's whole
# mapping is parsed even where no shipped body uses a macro yet.
EXERCISE = """\
DEVICE_FN float twice(float x) { return 2.0f * x; }
DEVICE_FN float first(GLOBAL_PTR const T* v) { return LOAD(v, 0); }
DEVICE_FN void put(SHARED_PTR float* s, int i, float x) { s[i] = x; }

MB_KERNEL(exercise) {
  SHARED float s[64];
  SHARED int last;
  const int t = LOCAL_LINEAR_ID;
  float acc = LOAD(a, t) + first(b) + LOAD(bias, 0);
  FLOAT4 v = LOAD4(b, 4 * t);
  FLOAT4 w = MAKE_FLOAT4(v.x, v.y, v.z, v.w);
  acc += twice(w.x + w.y + w.z + w.w);
  acc = SIMD_SUM(acc);
  if (SIMD_LANE == 0) put(s, SIMD_GROUP % SIMD_WIDTH, acc);
  BARRIER();
  acc = s[t % 64] + (float)(GROUP_ID(0) + GROUP_SIZE(1) + NUM_GROUPS(2) + LOCAL_ID(0));
  ws[t] = acc;
  STORE(c, t, acc);
  DEVICE_FENCE();
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + 1);
  if (t == 0) last = ATOMIC_INC(counter) == NUM_GROUPS(0) - 1;
  BARRIER();
  if (last && t == 0) ATOMIC_STORE_ZERO(counter);
  WS_PUT(ws + 2 + t, acc);
  acc += WS_TAKE(ws + 2 + t);
  acc += INT_AS_FLOAT(FLOAT_AS_INT(acc) ^ ATOMIC_XCHG(counter, 0));
  acc += SIMD_BROADCAST(acc, SIMD_WIDTH - 1);
  FLOAT4 u = LOAD4_IF(t % 2 == 0, a, 4 * t);
  acc += u.x + u.y + u.z + u.w;
  UINT4 q = LOAD_UINT4((GLOBAL_PTR const unsigned int*)b, 4 * t);
  acc += INT_AS_FLOAT(q.x ^ q.y ^ q.z ^ q.w);
  MB_STORE_C(C_AT(GROUP_ID(2), GROUP_ID(1), t), t, acc);
}
"""


def _metal_source(include: Path, body: str, name: str) -> str:
    # The layout Variant.source gives every backend (python/metalbench/variants.py).
    return "".join([(include / "metal.h").read_text(), "\n", (include / "common.h").read_text(),
                    f'\n#line 1 "{name}"\n', body])


def _parse_msl(tmp: Path, text: str, defines: dict[str, str], version: int) -> subprocess.CompletedProcess:
    key = abs(hash((text, tuple(sorted(defines.items())), version)))
    path = tmp / f"k{key}.metal"
    path.write_text(text)
    flags = [*MSL_FLAGS, f"-D__METAL_VERSION__={version}", *(f"-D{k}={v}" for k, v in defines.items())]
    return _clang(flags, path)


def _portable_families() -> list:
    """Every family whose source is a portable body, read from this repository's kernels/."""
    from metalbench import paths, variants

    with mock.patch.object(paths, "kernels_dir", lambda: ROOT / "kernels"):
        return [variants.parse_family(m) for m in sorted((ROOT / "kernels").glob("*.toml"))]


def _family_ids() -> list[str]:
    try:
        return [f.name for f in _portable_families() if f.source is not None and f.source.parent.name == "portable"]
    except Exception as e:  # noqa: BLE001 - reported by the test below, not at collection
        return [f"<manifests: {e}>"]


def _versions(dtype: str, versions: tuple[int, ...] = MSL_VERSIONS) -> tuple[int, ...]:
    """The MSL versions a dtype is parsed at: bfloat16 (MSL's bfloat) exists from 3.1 on."""
    return tuple(v for v in versions if v >= 310) or (320,) if dtype == "bfloat16" else versions


@needs_clang
@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
@pytest.mark.parametrize("version", MSL_VERSIONS)
def test_every_dialect_macro_parses_as_msl(tmp_path, dtype, version):
    from metalbench.dtypes import define

    text = _metal_source(ROOT / "kernels" / "include", EXERCISE, "exercise.c")
    r = _parse_msl(tmp_path, text, define(dtype), version)
    if version not in _versions(dtype):
        assert r.returncode != 0 and "bfloat16 needs MSL 3.1" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr


@needs_clang
@pytest.mark.parametrize("family", _family_ids())
def test_every_portable_variant_parses_as_msl(tmp_path, family):
    """Each variant of the family, in each of its dtypes, exactly as the backend would compile it."""
    from metalbench import paths, variants

    found = [f for f in _portable_families() if f.name == family]
    assert found, family
    fam = found[0]
    body = fam.source.read_text()
    versions = MSL_VERSIONS if "DEVICE_FENCE" in body else MSL_VERSIONS[:1]
    jobs = {}  # one parse per distinct (source, defines, version), named by its first variant
    with mock.patch.object(paths, "kernels_dir", lambda: ROOT / "kernels"):
        # A builtin's first step (cublas-dequant's) runs where its library does; its body
        # is still portable, so it still parses as MSL.
        assert fam.builtin or "metal" in fam.backends, f"{fam.manifest}: a portable family must run on Metal too"
        for v in variants.expand(fam):
            for dtype in fam.dtypes:
                for version in _versions(dtype, versions):
                    text, defines = v.source("metal"), v.defines(dtype)
                    key = (text, tuple(sorted(defines.items())), version)
                    jobs.setdefault(key, ((v.id, dtype, version), text, defines))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 4) as pool:
        results = list(pool.map(lambda j: (j[0], _parse_msl(tmp_path, j[1], j[2], j[0][2])), jobs.values()))
    failures = [f"{vid} {dtype} MSL {version}:\n{r.stderr}" for (vid, dtype, version), r in results if r.returncode]
    assert not failures, f"{len(failures)} of {len(results)} fail; first:\n" + failures[0]


def test_every_portable_body_belongs_to_a_family():
    """A body no manifest names gets no defines, so it could not be checked above."""
    bodies = {p.name for p in (ROOT / "kernels" / "portable").glob("*.c")}
    named = {f.source.name for f in _portable_families() if f.source is not None}
    assert bodies <= named, f"portable bodies without a manifest: {sorted(bodies - named)}"


# A prelude that expands to broken MSL must fail the parse: (text in metal.h, replacement).
PRELUDE_MUTATIONS = {
    "misspelt barrier flag": ("mem_flags::mem_threadgroup", "mem_flags::mem_threadgrup"),
    "unscoped barrier flag": ("threadgroup_barrier(mem_flags::mem_threadgroup)",
                              "threadgroup_barrier(mem_threadgroup)"),
    "wrong SIMD builtin": ("simd_sum(x)", "simd_add(x)"),
    "wrong broadcast builtin": ("simd_broadcast((float)(x)", "simd_bcast((float)(x)"),
    "half4 not widened": ("float4(*(device const MB_T4*)", "(*(device const MB_T4*)"),
    "atomic on a plain int": ("atomic_fetch_add_explicit((device atomic_int*)(ptr)",
                              "atomic_fetch_add_explicit((ptr)"),
    "exchange on a plain int": ("atomic_exchange_explicit((device atomic_int*)(ptr), (int)(v)",
                                "atomic_exchange_explicit((ptr), (int)(v)"),
    "bit cast to a wider type": ("as_type<int>((float)(x))", "as_type<long>((float)(x))"),
    "missing id parameter": ("uint3 mb_num_groups [[", "uint3 mb_groups [["),
    "dropped semicolon in STORE": ("((ptr)[i] = (T)(v))", "((ptr)[i] = (T)(v)"),
}


@needs_clang
@pytest.mark.parametrize("name", PRELUDE_MUTATIONS)
def test_a_broken_prelude_fails_the_parse(tmp_path, name):
    old, new = PRELUDE_MUTATIONS[name]
    include = tmp_path / "include"
    shutil.copytree(ROOT / "kernels" / "include", include)
    prelude = (include / "metal.h").read_text()
    assert old in prelude, f"the mutation '{name}' no longer matches metal.h; update it"
    (include / "metal.h").write_text(prelude.replace(old, new))
    r = _parse_msl(tmp_path, _metal_source(include, EXERCISE, "exercise.c"), {"MB_DTYPE": "1"}, 300)
    assert r.returncode != 0, f"a prelude with a {name} parsed"


@needs_clang
def test_a_broken_body_fails_the_parse(tmp_path):
    body = re.sub(r"BARRIER\(\);", "BARRIER()", EXERCISE, count=1)  # a dropped semicolon
    r = _parse_msl(tmp_path, _metal_source(ROOT / "kernels" / "include", body, "exercise.c"), {"MB_DTYPE": "0"}, 300)
    assert r.returncode != 0
    assert "exercise.c:" in r.stderr  # messages name the body's own file, through #line


# --- 3. autorelease pools and exceptions ------------------------------------------------------------


def _code(text: str) -> str:
    """`text` with comments and string and character literals blanked, lengths kept."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731
    return re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', blank, text, flags=re.S)


def _block(code: str, open_brace: int) -> int:
    """The index just past the brace that closes the one at `open_brace`."""
    depth = 0
    for i in range(open_brace, len(code)):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        if depth == 0:
            return i + 1
    raise ValueError("unbalanced braces")


def unsafe_pools(text: str) -> list[int]:
    """Lines of @autoreleasepool blocks an exception could leave: every one must hold
    exactly one statement, a try whose last handler is catch (...). clang pops a pool on
    the normal way out only, so an exception leaving the block skips the pop."""
    code = _code(text)
    found = []
    for m in re.finditer(r"@autoreleasepool\s*\{", code):
        body = code[m.end():_block(code, m.end() - 1) - 1].strip()
        ok = body.startswith("try")
        if ok:
            end = _block(body, body.index("{"))
            handlers = []
            while (h := re.match(r"\s*catch\s*\(([^)]*)\)\s*\{", body[end:])):
                handlers.append(h.group(1).strip())
                end = _block(body, end + h.end() - 1)
            ok = bool(handlers) and handlers[-1] == "..." and not body[end:].strip()
        if not ok:
            found.append(code.count("\n", 0, m.start()) + 1)
    return found


def test_no_exception_can_leave_an_autorelease_pool():
    sources = [*METAL_SOURCES, *sorted((ROOT / "csrc" / "metal").glob("*.h"))]
    unsafe = {p.name: lines for p in sources if (lines := unsafe_pools(p.read_text()))}
    assert not unsafe, f"@autoreleasepool blocks an exception can leave (use pooled()): {unsafe}"
    pools = sum(_code(p.read_text()).count("@autoreleasepool") for p in sources)
    assert pools == 2, "every pool of the backend is pooled()'s (metal_internal.h)"


@pytest.mark.parametrize("snippet, unsafe", [
    ("@autoreleasepool { id x = f(); if (!x) throw DeviceError(\"none\"); }", True),
    ("@autoreleasepool { submit_and_wait(cb, who); }", True),
    ("@autoreleasepool { try { f(); } catch (const std::exception& e) { g(); } }", True),
    ("@autoreleasepool { try { f(); } catch (...) { e = std::current_exception(); } g(); }", True),
    ("@autoreleasepool { try { f(\"}\"); } catch (...) { e = std::current_exception(); } }", False),
    ("@autoreleasepool {\n  // a comment: throw\n  try { f(); } catch (int) {} catch (...) { e = 1; }\n}", False),
], ids=["throw", "throwing-call", "typed-catch-only", "call-after-try", "brace-in-string", "catch-all-last"])
def test_the_pool_rule_tells_safe_pools_from_unsafe(snippet, unsafe):
    assert bool(unsafe_pools("void f() {\n" + snippet + "\n}\n")) == unsafe


def test_the_pool_rule_finds_the_pools_of_the_first_review():
    """The backend as it was before pooled(): a throw inside @autoreleasepool."""
    before = """\
  std::shared_ptr<Kernel> load(const std::string& path) override {
    @autoreleasepool {
      id<MTLLibrary> library = [ctx_->device newLibraryWithURL:url error:&error];
      if (!library) throw CompileError(where("load", label) + "loading " + path + " failed", "");
      return std::make_shared<PipelineKernel>(ctx_, pipeline_of(*ctx_, library, entry, label), label);
    }
  }
"""
    assert unsafe_pools(before) == [2]


# --- 4. the rules of held runs, compiled and run -------------------------------------------------------

HELD_DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include "metal/metal_held.h"

using mb::metal::Timeline;

// Prints what run_in_windows asks of its steps, one line each.
struct Recorder {
  std::string pattern;  // command buffers of unit u: pattern[u % size]
  long fail_at;         // the unit whose commit throws (-1: none)
  size_t buffers(size_t u) const { return size_t(pattern[u % pattern.size()] - '0'); }
  void gate(size_t u) { std::printf("gate %zu\n", u); }
  void commit(size_t u) {
    if (long(u) == fail_at) throw mb::DeviceError("commit failed");
    std::printf("commit %zu %zu\n", u, buffers(u));
  }
  void open() { std::printf("open\n"); }
  void finish(size_t first, size_t end) { std::printf("finish %zu %zu\n", first, end); }
  void abandon() { std::printf("abandon\n"); }
};

template <typename T>
void timeline(int argc, char** argv, T (*parse)(const char*)) {
  Timeline<T> line("[metal::timing] test: ", "timestamp");
  double rate = std::atof(argv[3]);
  for (int i = 4; i + 1 < argc; i += 2)
    std::printf("%llu\n", (unsigned long long)line.add(size_t((i - 4) / 2), parse(argv[i]), parse(argv[i + 1]), rate));
}

int main(int argc, char** argv) {
  try {
    if (!std::strcmp(argv[1], "windows")) {
      Recorder r{argv[4], argc > 5 ? std::atol(argv[5]) : -1};
      mb::metal::run_in_windows(size_t(std::atol(argv[2])), size_t(std::atol(argv[3])), r);
    } else if (!std::strcmp(argv[1], "timeline") && !std::strcmp(argv[2], "seconds")) {
      timeline<double>(argc, argv, [](const char* s) { return std::strtod(s, nullptr); });
    } else {
      timeline<uint64_t>(argc, argv, [](const char* s) { return uint64_t(std::strtoull(s, nullptr, 10)); });
    }
    std::printf("done\n");
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
  }
}
"""


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """The driver above, built against csrc/metal/metal_held.h: run it with arguments, get its lines."""
    if CLANG is None:
        pytest.skip("clang++-14 is not installed (CI installs it: apt-get install clang-14)")
    folder = tmp_path_factory.mktemp("held")
    (folder / "driver.cpp").write_text(HELD_DRIVER)
    exe = folder / "driver"
    r = subprocess.run([CLANG, "-std=c++17", "-Wall", "-Werror", "-I", str(ROOT / "csrc"), "-o", str(exe),
                        str(folder / "driver.cpp")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return lambda *args: subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                                        timeout=60, check=True).stdout.splitlines()


def test_a_missing_timestamp_is_missing_not_an_overlap(held):
    """Issue 22, defect 6: launch 1's GPUStartTime is 0; the order check must not speak first."""
    out = held("timeline", "seconds", 1e9, 1.0, 1.5, 0, 2.5)
    assert out[0] == "500000000"
    assert out[1].startswith("error: [metal::timing] test: the device reported no timestamp for launch 1"), out
    assert "concurrently" not in out[1]
    assert "no timestamp for launch 0" in held("timeline", "ticks", 1.0, 0, 10)[0]
    assert "no timestamp" in held("timeline", "seconds", 1e9, "nan", 2.0)[0]


def test_timelines_check_each_launch_then_the_order(held):
    assert held("timeline", "ticks", 0.5, 100, 150, 150, 170) == ["25", "10", "done"]
    back = held("timeline", "ticks", 1.0, 100, 150, 160, 155)
    assert back[1] == "error: [metal::timing] test: launch 1 of a timed run ended before it started " \
                      "(timestamp 160 to 155)"
    overlap = held("timeline", "seconds", 1e9, 1.0, 2.0, 1.5, 3.0)
    assert "launch 1 of a timed run started before launch 0 ended" in overlap[1] and "concurrently" in overlap[1]


def _replay(lines: list[str], units: int, window: int, depth: int) -> list[tuple[int, int]]:
    """Checks a run_in_windows trace against its rules and returns the windows, as unit ranges."""
    windows: list[list[int]] = []
    uncompleted = 0  # command buffers committed and not finished: the queue's count
    flight: list[tuple[int, int]] = []  # windows committed, not finished: their gate and unit buffers
    sizes: dict[int, int] = {}
    opened = True
    for line in lines:
        word, *args = line.split()
        if word == "gate":
            assert opened, "a gate before the window before it was opened"
            assert len(flight) < 2, "a third window while two are in flight"
            windows.append([int(args[0])])
            uncompleted += 1
            opened = False
        elif word == "commit":
            unit, need = int(args[0]), int(args[1])
            assert not opened and unit == windows[-1][0] + len(windows[-1]) - 1, "a unit outside its window"
            windows[-1].append(unit)
            sizes[unit] = need
            uncompleted += need
        elif word == "open":
            assert not opened
            opened = True
            units_of = windows[-1][1:]
            used = sum(sizes[u] for u in units_of)
            assert units_of and (used <= window or len(units_of) == 1), f"window of {used} command buffers"
            flight.append((units_of[0], units_of[-1] + 1))
        elif word == "finish":
            first, end = int(args[0]), int(args[1])
            assert flight and flight[0] == (first, end), "windows finish oldest first, whole"
            flight.pop(0)
            uncompleted -= 1 + sum(sizes[u] for u in range(first, end))
        assert uncompleted <= depth, f"{uncompleted} command buffers uncompleted, the queue lends {depth}"
    assert lines[-1] == "done" and not flight and opened
    assert [u for w in windows for u in w[1:]] == list(range(units)), "every unit once, in order"
    return [(w[1], w[-1] + 1) for w in windows]


QUEUE_DEPTH, WINDOW = 1024, 511  # metal_internal.h: kQueueDepth, kWindowBuffers = kQueueDepth / 2 - 1


def test_the_window_constants_are_the_backends():
    header = (ROOT / "csrc" / "metal" / "metal_internal.h").read_text()
    assert f"constexpr NSUInteger kQueueDepth = {QUEUE_DEPTH};" in header
    assert "constexpr size_t kWindowBuffers = kQueueDepth / 2 - 1;" in header and WINDOW == QUEUE_DEPTH // 2 - 1


def test_a_warm_round_fits_in_one_window():
    """The most output slots a warm spec gets, hence launches in a round of the ranking clock, take one window:
    the slots are views of one arena, so no launch needs a join (one command buffer each)."""
    from metalbench.measure import plan_slots
    from metalbench.specs import Spec

    tiny = Spec(op="matmul", dtype="float16", batch=1, m=1, n=8, k=8)
    assert plan_slots(tiny, copies=1, alignment=256, max_held=4096) <= WINDOW


@pytest.mark.parametrize("units, pattern, expected", [
    (1, "1", [(0, 1)]),
    (501, "1", [(0, 501)]),  # a warm core round (plan_slots: 501 at most) shares its allocations: one window
    (511, "1", [(0, 511)]),
    (512, "1", [(0, 511), (511, 512)]),
    (1500, "1", [(0, 511), (511, 1022), (1022, 1500)]),
    (600, "12", None),  # launches alternating between two sets of buffers: a join before every other
    (3000, "2", None),
], ids=lambda x: str(x) if not isinstance(x, list) else f"{len(x)}w")
def test_held_runs_go_in_windows_within_the_queue(held, units, pattern, expected):
    """Issue 22, defect 7: a round of any length is paced in windows of at most WINDOW command buffers,
    each behind its own gate, two at most in flight, so the queue's depth is never exceeded."""
    windows = _replay(held("windows", units, WINDOW, pattern), units, WINDOW, QUEUE_DEPTH)
    if expected is not None:
        assert windows == expected


def test_counter_windows(held):
    """With counters a unit is a command buffer of 1024 launches; windows of 4 use the pool of 8 sample buffers."""
    assert _replay(held("windows", 9, 4, "1"), 9, 4, 10) == [(0, 4), (4, 8), (8, 9)]


def test_a_failed_commit_opens_the_gate_and_waits(held):
    out = held("windows", 1200, WINDOW, "1", 700)
    assert out[-2:] == ["abandon", "error: commit failed"]
    assert out.count("open") == 1 and "commit 699 1" in out and "commit 700 1" not in out
