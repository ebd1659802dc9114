"""Each spec's baseline (runner.baseline_of): the vendor library's variant that takes the
spec, else the fallback family's. A quantized spec's differs from an unquantized one's, and
the report compares each spec against its own."""

import json

import pytest
from conftest import sweep

from metalbench import report, runner, variants
from metalbench.results import Run
from metalbench.specs import load_suite

MIXED = """
name = "mixed"
transpose_b = true
[[spec]]
op = "matmul"
m = 1
n = 64
k = 256
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
quant = "affine-q8-g64"
dtype = "float32"
[[spec]]
op = "matmul"
m = 3
n = 48
k = 128
"""
FAST_ONE = "qgemv/b0_rpg8_tpr32_vpt32_fold"


def test_every_spec_is_compared_with_its_own_baseline(opencl, tmp_path):
    # Racing on: whichever of the baseline and qgemv is slower on this device, the baseline stays measured.
    run, rep = sweep(tmp_path, [FAST_ONE], suite=MIXED, race=True)
    assert rep.counts["failed"] == rep.counts["wrong"] == 0, rep.failures
    want = ["naive/default", "qnaive/default", "qnaive/default", "naive/default"]
    assert [s.baseline for s in rep.specs] == want
    assert [run.baseline_of(i) for i in range(len(run.specs))] == want
    assert run.baseline == rep.baseline == "naive/default, qnaive/default"
    for spec in rep.specs:
        base = next(row for row in spec.rows if row.variant == spec.baseline)
        assert base.tags[:1] == ["baseline"] and spec.baseline_us == base.us(rep.rank_by)
        assert [row.variant for row in spec.rows if "baseline" in row.tags] == [spec.baseline]
        assert all(row.vs_baseline_pct is not None for row in spec.rows)
    quantized = [s for s in rep.specs if "quant=" in s.key]
    assert quantized and all(FAST_ONE in {row.variant for row in s.rows} | {v for v, _ in s.raced} for s in quantized)
    # Neither baseline ran where it cannot: each is unsupported on the other kind of spec.
    for r in run.results:
        quant = "quant=" in run.specs[r.spec_index]["key"]
        if r.variant == ("naive/default" if quant else "qnaive/default"):
            assert r.status == "unsupported", r
    path = tmp_path / "report.json"
    report.write_json(rep, path)
    assert [s["baseline"] for s in json.loads(path.read_text())["specs"]] == want


@pytest.mark.parametrize(("backend", "plain", "quantized"), [
    ("opencl", "naive/default", "qnaive/default"),
    ("metal", "mps/baseline", "qnaive/default"),
    ("cuda", "cublas/baseline", "cublas-dequant/baseline"),
])
def test_the_vendor_library_comes_first_on_each_kind_of_spec(backend, plain, quantized):
    every = variants.load_variants(backend)
    q4, unquantized = load_suite("quantized").specs[0], load_suite("smoke").specs[0]
    assert runner.baseline_of(every, backend, unquantized).id == plain
    assert runner.baseline_of(every, backend, q4).id == quantized
    chosen = runner.with_baseline(every, backend, [FAST_ONE], specs=[unquantized, q4])
    assert sorted(v.id for v in chosen) == sorted([plain, quantized, FAST_ONE])
    assert [v.id for v in runner.with_baseline(every, backend, [FAST_ONE], specs=[unquantized])] == [plain, FAST_ONE]


def test_a_run_stored_before_per_spec_baselines_uses_the_runs_for_every_spec():
    old = Run(1, 0.0, 1.0, "complete", "smoke", "opencl", {}, {}, "naive/default",
              [{"key": "a", "label": "a"}, {"key": "b", "label": "b"}], [])
    assert [old.baseline_of(i) for i in range(2)] == ["naive/default", "naive/default"]
    new = Run(2, 0.0, 1.0, "complete", "mixed", "opencl", {}, {}, "naive/default",
              [{"key": "a", "label": "a", "baseline": None}, {"key": "b", "label": "b", "baseline": "naive/default"}],
              [])
    assert [new.baseline_of(i) for i in range(2)] == [None, "naive/default"]
