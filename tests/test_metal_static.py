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
    assert {p.name for p in METAL_SOURCES} >= {"metal_backend.mm", "metal_buffer.mm", "metal_timing.mm",
                                               "mps_baseline.mm"}


@needs_clang
@pytest.mark.parametrize("source", METAL_SOURCES, ids=lambda p: p.name)
def test_backend_parses_against_the_shim(source):
    r = _objc(ROOT, source)
    assert r.returncode == 0, r.stderr


def _copy_tree(tmp_path: Path) -> Path:
    """csrc/ and kernels/include/ as laid out in the repository (mps_baseline.mm includes common.h)."""
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
    "misspelt event selector": ("metal_backend.mm", "encodeWaitForEvent:event_ value:value_",
                                "encodeWaitForEvent:event_ withValue:value_", "encodeWaitForEvent:withValue:"),
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


@needs_clang
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("version", MSL_VERSIONS)
def test_every_dialect_macro_parses_as_msl(tmp_path, dtype, version):
    text = _metal_source(ROOT / "kernels" / "include", EXERCISE, "exercise.c")
    r = _parse_msl(tmp_path, text, {"MB_F16": "1" if dtype == "float16" else "0"}, version)
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
        assert "metal" in fam.backends, f"{fam.manifest}: a portable family must run on Metal too"
        for v in variants.expand(fam):
            for dtype in fam.dtypes:
                for version in versions:
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
    r = _parse_msl(tmp_path, _metal_source(include, EXERCISE, "exercise.c"), {"MB_F16": "1"}, 300)
    assert r.returncode != 0, f"a prelude with a {name} parsed"


@needs_clang
def test_a_broken_body_fails_the_parse(tmp_path):
    body = re.sub(r"BARRIER\(\);", "BARRIER()", EXERCISE, count=1)  # a dropped semicolon
    r = _parse_msl(tmp_path, _metal_source(ROOT / "kernels" / "include", body, "exercise.c"), {"MB_F16": "0"}, 300)
    assert r.returncode != 0
    assert "exercise.c:" in r.stderr  # messages name the body's own file, through #line
