"""The portable GEMV families that each test one technique (kernels/*.toml): verified on
PoCL through the runner on the smoke suite, again with 32-lane SIMD groups emulated
(the lane arithmetic Metal and CUDA run), and their grids checked against what an
Apple GPU allows."""

import re

import pytest
from conftest import sweep
from simd32.check import verify_simd32

from metalbench import paths, variants
from metalbench.specs import load_suite

FAMILIES = ("tilegemv", "bcastgemv", "kpargemv", "simdgemv", "persistgemv")
# For every shape past m = 1 nt (issue 20): skinny products, prefill, the k x n GEMV.
SHAPE_FAMILIES = ("skinny", "mtskinny", "mtgemm", "splitnn")


def _family_variants(backend: str | None = None) -> list:
    return [v for v in variants.load_variants(backend) if v.family.name in FAMILIES]


def test_the_families_are_there_and_say_what_they_test():
    families = {f.name: f for f in variants.load_families()}
    for name in FAMILIES + SHAPE_FAMILIES:
        family = families[name]
        assert family.backends == ("metal", "cuda", "opencl"), name
        assert len(family.description) > 40, name


def test_the_kernels_readme_lists_every_family_and_no_other():
    """kernels/README.md's table of families names each manifest's family once (its first column holds one or
    more `name`s per row)."""
    text = (paths.kernels_dir() / "README.md").read_text()
    table = text.split("## The families", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    listed = [name for cell in rows for name in re.findall(r"`([^`]+)`", cell)]
    families = sorted(f.name for f in variants.load_families())
    assert sorted(listed) == families, (sorted(set(families) - set(listed)), sorted(set(listed) - set(families)))


def test_every_variant_verifies_on_the_smoke_suite(opencl, tmp_path):
    _, rep = sweep(tmp_path, [f"{f}/*" for f in FAMILIES])
    assert rep.counts["failed"] == 0, rep.failures[:5]
    assert rep.counts["wrong"] == 0, rep.failures[:5]
    # Raced out is verified too: every variant ran, and was correct, on some smoke spec.
    measured = {row.variant for s in rep.specs for row in s.rows} | {v for s in rep.specs for v, _ in s.raced}
    assert {v.id for v in _family_variants("opencl")} <= measured, "every variant runs on some smoke spec"


def test_first_and_last_of_each_family_verify_with_32_lane_simd_groups(opencl):
    """The emulation is slow, so a few variants per family and the m = 1 smoke specs;
    benchmarks/opencl_check.py --simd32 runs them all."""
    chosen = []
    for name in FAMILIES:
        vs = [v for v in _family_variants("opencl") if v.family.name == name]
        chosen += [vs[0], vs[len(vs) // 2], vs[-1]]
    specs = [s for s in load_suite("smoke").specs if s.m == 1]
    rows = verify_simd32(opencl, chosen, specs, log=lambda _: None)
    bad = [r for r in rows if "error" in r or "wrong" in r]
    assert not bad, bad[:5]
    assert {r["variant"] for r in rows} == {v.id for v in chosen}


@pytest.mark.parametrize("family", FAMILIES)
def test_grids_fit_an_apple_gpu(family):
    """Threadgroups of whole 32-lane SIMD groups, at most 1024 threads, on every spec of
    the default suite a variant supports; each variant supports at least one."""
    specs = load_suite("qwen2.5-0.5b-decode").specs
    for v in [v for v in _family_variants("metal") if v.family.name == family]:
        supported = [s for s in specs if v.unsupported_reason(s) is None]
        assert supported, f"{v.id} supports no spec of the default suite"
        for s in supported:
            groups, threads = v.geometry(s)
            size = threads[0] * threads[1] * threads[2]
            assert size % 32 == 0 and size <= 1024, (v.id, s.label(), threads)
            assert all(g >= 1 for g in groups), (v.id, s.label(), groups)


def test_metal_gets_a_hundred_more_variants_for_the_default_suite():
    specs = load_suite("qwen2.5-0.5b-decode").specs
    new = [v for v in _family_variants("metal") if any(v.unsupported_reason(s) is None for s in specs)]
    assert len(new) >= 100


# ---- the families of SHAPE_FAMILIES ----

def _shape_variants(backend: str | None = None) -> list:
    return [v for v in variants.load_variants(backend) if v.family.name in SHAPE_FAMILIES]


def test_the_tile_families_and_only_they_need_a_matrix_unit():
    families = {f.name: f for f in variants.load_families()}
    for name in SHAPE_FAMILIES:
        assert ("matrix_unit" in families[name].needs) == name.startswith("mt"), name


def test_every_shape_variant_verifies_on_the_smoke_and_odd_suites(opencl, tmp_path):
    measured = set()
    for suite in ("smoke", "odd"):
        _, rep = sweep(tmp_path, [f"{f}/*" for f in SHAPE_FAMILIES], suite=suite)
        assert rep.counts["failed"] == 0, rep.failures[:5]
        assert rep.counts["wrong"] == 0, rep.failures[:5]
        measured |= {row.variant for s in rep.specs for row in s.rows} | {v for s in rep.specs for v, _ in s.raced}
    assert {v.id for v in _shape_variants("opencl")} <= measured, "every variant runs on some smoke or odd spec"


def test_first_and_last_of_each_shape_family_verify_with_32_lane_simd_groups(opencl):
    """CUDA's tile sizes and fragment layout, emulated; benchmarks/opencl_check.py --simd32 runs them all."""
    chosen = []
    for name in SHAPE_FAMILIES:
        vs = [v for v in _shape_variants("opencl") if v.family.name == name]
        chosen += [vs[0], vs[len(vs) // 2], vs[-1]]
    specs = [s for s in load_suite("smoke").specs if s.k >= 24]
    rows = verify_simd32(opencl, chosen, specs, log=lambda _: None)
    bad = [r for r in rows if "error" in r or "wrong" in r]
    assert not bad, bad[:5]
    assert len(rows) >= len(SHAPE_FAMILIES)


@pytest.mark.parametrize("family", SHAPE_FAMILIES)
def test_shape_grids_fit_an_apple_gpu(family):
    """As test_grids_fit_an_apple_gpu, on the odd suite's shapes (m > 1 and nn ones)."""
    specs = load_suite("odd").specs
    for v in [v for v in _shape_variants("metal") if v.family.name == family]:
        supported = [s for s in specs if v.unsupported_reason(s) is None]
        for s in supported:
            groups, threads = v.geometry(s)
            size = threads[0] * threads[1] * threads[2]
            assert size % 32 == 0 and size <= 1024, (v.id, s.label(), threads)
            assert all(g >= 1 for g in groups), (v.id, s.label(), groups)
