"""A launch a built kernel cannot take on this device is `unsupported`, never failed or
wrong: a group over the kernel's thread limit, or a SIMD width other than the one its
prelude assumes (measure.unsupported_here, decided by the worker once the kernel is built).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import sweep, write_family

from metalbench import compare, export, measure, paths, report, variants
from metalbench.store import Store

SUITE = """\
name = "limits"
[[spec]]
op = "matmul"
dtype = "float32"
m = 1
n = 96
k = 64
transpose_b = true
[[spec]]
op = "matmul"
dtype = "float16"
batch = 2
m = 3
n = 40
k = 24
"""


def wide_family(folder: Path, tg: int) -> Path:
    """The naive body as family `wide`, once with 64 threads a group and once with `tg`."""
    body = (paths.kernels_dir() / "portable" / "naive.c").read_text().replace("MB_KERNEL(naive)", "MB_KERNEL(wide)")
    write_family(folder, "wide", body)
    manifest = folder / "wide.toml"
    manifest.write_text(manifest.read_text().replace("TG = [64]", f"TG = [64, {tg}]"))
    return folder


def sweep_wide(tmp_path: Path, kernels: Path) -> int:
    # Without racing: a timing tie-break would decide whether wide/tg64 ends `ok` or `raced`.
    run, _ = sweep(tmp_path, ["wide/*"], suite=SUITE, kernels=[kernels], race=False)
    return run.id


def test_a_group_over_the_kernels_limit_is_unsupported_with_the_limit(opencl, tmp_path):
    body = variants.prelude_source("opencl", paths.kernels_dir() / "portable" / "naive.c")
    probe = opencl.compile(body, "naive", {"MB_DTYPE": "0"}, "probe")
    limit = min(probe.max_group_size, opencl.info["max_group_size"])
    assert limit > 64
    kernels = wide_family(tmp_path / "kernels", 2 * limit)
    store = Store(tmp_path / "results.sqlite")
    first = sweep_wide(tmp_path, kernels)
    run = store.load_run(first)
    by = {(r.variant, r.spec_index): r for r in run.results}
    for spec in range(2):
        ok, wide = by[("wide/tg64", spec)], by[(f"wide/tg{2 * limit}", spec)]
        assert ok.status == "ok", ok.message
        assert (wide.status, wide.category) == ("unsupported", "unsupported")
        assert f"a group of {2 * limit} threads" in wide.message and f"the {limit} this kernel takes" in wide.message
    rep = report.build(run)
    assert rep.counts["failed"] == 0 and rep.counts["wrong"] == 0 and not rep.failures
    assert rep.counts["unsupported"] == 2 + sum(r.status == "unsupported" and r.key is None for r in run.results)
    assert all(not any(row.variant == f"wide/tg{2 * limit}" for row in s.rows) for s in rep.specs)

    # A rerun reuses the verdict (the key holds what decides it), and counts it the same way.
    second = sweep_wide(tmp_path, kernels)
    again = store.load_run(second)
    reused = [r for r in again.results if r.variant == f"wide/tg{2 * limit}"]
    assert [(r.status, r.reused) for r in reused] == [("unsupported", True)] * 2
    assert report.build(again).counts["unsupported"] == rep.counts["unsupported"]

    # compare and export leave it out, as they do pairs a manifest rules out.
    diff = compare.compare(store, first, store, second)
    assert not any(p.variant == f"wide/tg{2 * limit}" for p in diff.pairs) and not diff.regressions
    assert any(p.variant == "wide/tg64" for p in diff.pairs)
    done = export.write_export(again, report.build(again), variants.load_variants("opencl", [kernels]),
                               tmp_path / "exported")
    assert f"wide/tg{2 * limit}" not in done.table.read_text()
    assert {e["variant"] for e in json.loads(done.table.read_text())["specs"]} <= {"wide/tg64", "naive/default"}


def test_unsupported_here_agrees_with_the_cores_launch_check(opencl):
    """The worker's rule and check_launch (csrc/core/checks.cpp) draw the line at the same group size."""
    import metalbench._core as core

    source = "__kernel void k(__global float* x) { x[get_global_id(0)] = 1.0f; }"
    kernel = opencl.compile(source, "k", {}, "limit/probe")
    limit = min(kernel.max_group_size, opencl.info["max_group_size"])
    v = SimpleNamespace(family=SimpleNamespace(builtin=None))
    buf = opencl.allocate(4 * (limit + 1))
    for threads in (limit, limit + 1):
        why = measure.unsupported_here(kernel, v, "opencl", opencl.info, [threads, 1, 1])
        try:
            opencl.run(kernel, [buf], [1], [threads])
            refused = ""
        except core.UsageError as e:
            refused = str(e)
        assert bool(why) == bool(refused), (threads, why, refused)
        assert ("exceeds" in refused) == bool(why)
    out = np.zeros(limit + 1, np.float32)
    buf.read(out)
    assert (out[:limit] == 1).all()


def stand_in(max_group: int, simd: int) -> SimpleNamespace:
    return SimpleNamespace(max_group_size=max_group, simd_width=simd)


SOURCE = SimpleNamespace(family=SimpleNamespace(builtin=None))
BUILTIN = SimpleNamespace(family=SimpleNamespace(builtin="mps"))
APPLE = {"name": "Apple M2", "max_group_size": 1024}


@pytest.mark.parametrize("kernel, v, backend, info, threads, expected", [
    (stand_in(1024, 32), SOURCE, "metal", APPLE, [1024, 1, 1], ""),
    (stand_in(896, 32), SOURCE, "metal", APPLE, [1024, 1, 1], "a group of 1024 threads is more than the 896 "
                                                               "this kernel takes on Apple M2"),
    (stand_in(1024, 32), SOURCE, "metal", {**APPLE, "max_group_size": 512}, [32, 32, 1], "more than the 512"),
    (stand_in(0, 1), BUILTIN, "metal", APPLE, [1, 1, 1], ""),  # MPS: its own geometry, no prelude
    (stand_in(1024, 64), SOURCE, "metal", {**APPLE, "name": "AMD Radeon Pro 5500M"}, [256, 1, 1],
     "its SIMD groups are 64 threads wide on AMD Radeon Pro 5500M; the metal prelude assumes 32"),
    (stand_in(1024, 16), SOURCE, "cuda", APPLE, [256, 1, 1], "the cuda prelude assumes 32"),
    (stand_in(1024, 8), SOURCE, "opencl", APPLE, [256, 1, 1], ""),  # the OpenCL prelude assumes no lock step
], ids=["fits", "pipeline-limit", "device-limit", "builtin", "simd-64", "simd-16", "opencl-any-width"])
def test_unsupported_here(kernel, v, backend, info, threads, expected):
    got = measure.unsupported_here(kernel, v, backend, info, threads)
    assert (got == "") == (expected == "") and expected in got, got


def test_each_prelude_states_the_simd_width_the_readme_gives():
    """kernels/README.md: OpenCL 1, CUDA 32, Metal 32; the preludes are what the worker reads."""
    assert {b: measure.prelude_simd_width(b) for b in variants.BACKENDS} == {"metal": 32, "cuda": 32, "opencl": 1}
    readme = (paths.kernels_dir() / "README.md").read_text()
    assert "(OpenCL: 1 and identity; CUDA: 32 and shuffles; Metal: 32 and `simd_sum`)" in readme

