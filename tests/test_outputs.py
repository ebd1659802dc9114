"""What a run is turned into: roofline figures, CSV, Markdown, the HTML page, and the
exported dispatch table whose sources compile with no metalbench (on PoCL)."""

import csv
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import cli, sweep

import metalbench
from metalbench import _core, export, formats, html, metrics, paths, report, roofline, runner, variants, worker
from metalbench.reference import ReferenceCache, make_inputs
from metalbench.settings import Settings
from metalbench.specs import SHORT_OPS, load_suite, spec_from_key
from metalbench.store import Store

# A few families, splitk among them for its workspace; naive/default joins as the baseline.
PATTERNS = ["simdgemv/*", "splitk/*", "tiled/bm16_bn32_bk8_tm1_tn2"]


@pytest.fixture(scope="module")
def swept(opencl, tmp_path_factory):
    """One sweep of the smoke suite, shared by this module's tests: (store, run id, report)."""
    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METALBENCH_CACHE_DIR", str(root / "cache"))
        run, rep = sweep(root, PATTERNS)
    return Store(root / "results.sqlite"), run.id, rep


def test_spec_keys_parse_back_to_their_specs():
    for spec in load_suite("smoke").specs:
        back = spec_from_key(spec.key())
        assert back.key() == spec.key() and back.bytes_moved() == spec.bytes_moved()
    with pytest.raises(ValueError, match="not a spec key"):
        spec_from_key("matmul/float16/1x2x3/nt")


def test_roofline_figures_are_bytes_and_flops_over_time():
    spec = spec_from_key("matmul_alpha_beta/float16/1x4x8x16/nn/alpha=1.0/beta=0.5")
    f = roofline.figures(spec, 2.0, 1e10)
    # A 4x16, B 16x8, C 4x8 written and read (beta != 0): 2 bytes each.
    assert f.bytes == 2 * (64 + 128 + 32 + 32) and f.flops == 2 * 4 * 8 * 16
    assert f.gbps == pytest.approx(f.bytes / 2e-6 / 1e9)
    assert f.pct_peak == pytest.approx(100 * f.bytes / 2e-6 / 1e10)
    assert roofline.figures(spec, 2.0, None).pct_peak is None


class _Counted:
    """A pool that measures the memory in its worker process and counts how often it was asked."""

    def __init__(self) -> None:
        self.pool, self.asked = worker.ProcessPool("opencl", [0], Settings(), 120), 0

    def measure_peak(self):
        self.asked += 1
        return self.pool.measure_peak()


def test_the_memory_is_measured_once_per_device_by_a_worker_and_stored(opencl, tmp_path):
    store = Store(tmp_path / "r.sqlite")
    info = opencl.info
    assert info["peak_bandwidth"] == 0  # OpenCL gives none: it must be measured
    counted = _Counted()
    try:
        first = runner._with_memory(info, store, counted, print)
        assert counted.asked == 1 and counted.pool.workers[0] is not None  # measured in a worker process
        assert first["peak_bandwidth"] > 1e8 and first["peak_bandwidth_source"].startswith("measured: ")
        assert "the last-level cache" in first["peak_bandwidth_source"]
        key = roofline.device_key(info)
        assert store.peak(key) == (first["peak_bandwidth"], first["peak_bandwidth_source"])
        assert store.cache(key) == (first["llc_bytes"], first["llc_source"]) and first["llc_bytes"] > 0
        # The second time both come from the store, and a device's own peak is left alone.
        assert runner._with_memory(info, store, counted, print) == first
        own = {**info, "peak_bandwidth": 3.35e12, "peak_bandwidth_source": "NVML"}
        again = runner._with_memory(own, store, counted, print)
        assert again["peak_bandwidth"] == 3.35e12 and again["llc_bytes"] == first["llc_bytes"]
        assert counted.asked == 1
    finally:
        counted.pool.close()


def test_what_an_earlier_probe_measured_is_measured_again(opencl, tmp_path):
    from metalbench.peak import method
    from metalbench.pool import PeakUnavailable

    store = Store(tmp_path / "r.sqlite")
    info = opencl.info
    key = roofline.device_key(info)
    store.put_cache(key, 1 << 20, "measured: an earlier probe", [(1 << 20, 1e9)], method="earlier")
    store.put_peak(key, 1e9, "measured: an earlier probe", method="earlier")

    class Failing:
        def measure_peak(self):
            raise PeakUnavailable("the device is busy")

    notes, said = [], []
    # A probe that cannot be made again leaves the earlier figures standing, and says so.
    kept = runner._with_memory(info, store, Failing(), notes.append, said.append)
    assert kept["llc_bytes"] == 1 << 20 and kept["peak_bandwidth"] == 1e9
    assert "again" in said[0] and "earlier probe's figures stand" in notes[0]
    counted = _Counted()
    try:
        found = runner._with_memory(info, store, counted, notes.append)
        assert counted.asked == 1 and found["llc_source"] != "measured: an earlier probe"
        assert store.cache(key, method()) == (found["llc_bytes"], found["llc_source"])
        assert store.peak(key, method()) == (found["peak_bandwidth"], found["peak_bandwidth_source"])
        assert runner._with_memory(info, store, counted, notes.append) == found and counted.asked == 1
    finally:
        counted.pool.close()


def test_every_row_has_roofline_figures_against_the_runs_peak(swept):
    _, _, rep = swept
    assert rep.peak_bandwidth and rep.peak_source.startswith("measured")
    for spec in rep.specs:
        assert spec.bytes == spec_from_key(spec.key).bytes_moved() and spec.flops > 0
        for row in spec.rows:
            t = row.clocks[rep.rank_by]
            assert row.gbps == pytest.approx(spec.bytes / (t.median_us * 1e-6) / 1e9)
            assert row.pct_peak == pytest.approx(100 * row.gbps * 1e9 / rep.peak_bandwidth)
    data = report.to_dict(rep)
    assert data["schema"] == report.JSON_SCHEMA and data["peak_bandwidth"] == rep.peak_bandwidth
    assert "pct_peak" in data["specs"][0]["rows"][0]


def test_csv_has_one_line_per_row_with_the_figures(swept):
    _, run_id, rep = swept
    lines = list(csv.DictReader(io.StringIO(formats.to_csv(rep))))
    # Racing (on by default) leaves variants that could not tie with a brief time only: a line each.
    assert len(lines) == sum(len(s.rows) + len(s.raced) for s in rep.specs)
    assert sum(line["status"] == "raced" for line in lines) == sum(len(s.raced) for s in rep.specs) > 0
    assert set(lines[0]) == set(formats.CSV_COLUMNS)
    best = next(line for line in lines if "best" in line["tags"].split())
    spec = rep.specs[int(best["spec_index"])]
    row = spec.best_row()
    assert best["variant"] == spec.best and float(best[f"{rep.rank_by}_us"]) == row.clocks[rep.rank_by].median_us
    assert float(best["pct_peak"]) == pytest.approx(row.pct_peak) and best["run"] == str(run_id)


def test_markdown_is_github_tables(swept):
    _, _, rep = swept
    text = formats.to_markdown(rep)
    assert text.startswith(f"# metalbench run {rep.run_id}: smoke")
    tables = [line for line in text.splitlines() if line.startswith("|")]
    # Every row of a table has as many cells as its header (escaped pipes aside).
    widths = [len(re.split(r"(?<!\\)\|", line)) for line in tables]
    assert widths and all(w >= 4 for w in widths)
    for spec in rep.specs:
        assert f"[{spec.index}] {spec.label}" in text
        assert f"`{spec.best}`" in text
    assert text.count("<details>") == text.count("</details>") == len(rep.specs)


def test_html_page_is_self_contained_and_holds_the_charts_data(swept, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    _, _, rep = swept
    path = tmp_path / "r.html"
    html.write_html(rep, path)
    page = path.read_text()
    # One roofline and one chart per spec, all inline SVG; nothing fetched.
    assert page.count("<svg") == 1 + sum(1 for s in rep.specs if s.rows)
    assert not re.search(r"(src|href)=['\"]https?:", page)
    data = json.loads(re.search(r"id='metalbench-data'>(.*?)</script>", page, re.S).group(1).replace("<\\/", "</"))
    assert data == json.loads(json.dumps(html.chart_data(rep)))
    for spec, charted in zip(rep.specs, data["specs"], strict=True):
        assert charted["best"] == spec.best and len(charted["variants"]) == len(spec.rows)
        assert {v["variant"] for v in charted["variants"]} == {r.variant for r in spec.rows}
        # Each variant's name is drawn in its chart (SVG text stays text).
        assert all(v["variant"] in page for v in charted["variants"])
    assert data["roofline"]["peak_gbps"] == pytest.approx(rep.peak_bandwidth / 1e9)
    assert sum(p["best"] for p in data["roofline"]["points"]) == sum(1 for s in rep.specs if s.best)


def test_html_without_matplotlib_is_one_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(html.MissingExtra, match=r"pip install 'metalbench\[plot\]'"):
        html.require_plotting()


def _run_exported(device, source, entry, spec, groups, threads, workspace):
    """Compiles `source` as it is (no defines) and runs it once on the spec's inputs; the output."""
    kernel = device.compile(source, entry, {}, f"exported/{entry}")
    inputs = make_inputs(spec)
    c0 = metrics.initial_c(spec, inputs)
    bias = inputs.bias if inputs.bias is not None else np.zeros(1, dtype=inputs.a.dtype)
    bufs = []
    for array in (inputs.a, inputs.b, c0, bias):
        buf = device.allocate(max(4, array.nbytes))
        buf.write(np.ascontiguousarray(array))
        bufs.append(buf)
    ws = device.allocate(4 * max(1, workspace))
    ws.fill(0)
    device.run(kernel, [*bufs, ws, spec.params()], groups, threads)
    out = np.empty_like(c0)
    bufs[2].read(out)
    return out, c0


def test_exported_sources_compile_alone_and_are_correct(swept, tmp_path):
    store, run_id, rep = swept
    run = store.load_run(run_id)
    done = export.write_export(run, rep, variants.load_variants(), tmp_path / "out")
    table = json.loads(done.table.read_text())
    assert table["schema"] == export.EXPORT_SCHEMA and table["backend"] == "opencl"
    assert table["device"]["name"] == run.device["name"] and table["rank_by"] == rep.rank_by
    header = done.header.read_text()
    device = metalbench.open_device("opencl")
    cache = ReferenceCache()
    kernels = [e for e in table["specs"] if e["kind"] == "kernel"]
    assert len(kernels) == len(rep.specs)  # OpenCL has no vendor library: every winner is a kernel
    for e in kernels:
        spec = spec_from_key(e["spec_key"])
        assert e["variant"] == rep.specs[e["spec_index"]].best
        assert e["times"][rep.rank_by]["median_us"] == rep.specs[e["spec_index"]].best_row().us(rep.rank_by)
        source = (tmp_path / "out" / e["file"]).read_text()
        assert "#line" not in source and '#include "' not in source
        for name, value in e["defines"].items():
            assert f"#define {name} {value}\n" in source
        out, c0 = _run_exported(device, source, e["entry"], spec, e["groups"], e["threads"], e["workspace_floats"])
        ref, _ = cache.get(spec, make_inputs(spec))
        check = metrics.check(spec, out, ref, c0)
        assert check.verdict == "ok", (e["file"], check.reason)
        assert json.dumps(e["spec_key"]) in header and json.dumps(e["file"]) in header


def test_the_dispatch_header_has_the_compiled_params_and_compiles_as_c(swept, tmp_path):
    """Host C that includes metalbench_dispatch.h (alone, and after common.h itself) sees
    MBParams and the op codes exactly as the native core was compiled with them."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    store, run_id, rep = swept
    table, _ = export.build_table(store.load_run(run_id), rep, variants.load_variants())
    (tmp_path / "metalbench_dispatch.h").write_text(export.header_source(table))
    abi = _core.abi()
    checks = [f"_Static_assert(sizeof(MBParams) == {abi['params']['size']}, \"size\");",
              *(f"_Static_assert(offsetof(MBParams, {name}) == {f['offset']}, \"{name}\");"
                for name, f in abi["params"]["fields"].items()),
              *(f"_Static_assert(MB_OP_{name.upper()} == {code}, \"{name}\");" for name, code in abi["ops"].items())]
    program = "\n".join(["#include <stddef.h>", "#include <stdio.h>", "{include}", '#include "metalbench_dispatch.h"',
                         *checks, "int main(void) {",
                         "  for (int i = 0; i < MB_DISPATCH_COUNT; ++i) printf(\"%d\\n\", mb_dispatch[i].op);",
                         "  return 0;", "}", ""])
    include = paths.kernels_dir() / "include"
    expected = "".join(f"{abi['ops'][SHORT_OPS[e['spec']['op']]]}\n" for e in table["specs"])
    for first in ("", '#include "common.h"'):
        (tmp_path / "main.c").write_text(program.replace("{include}", first))
        built = subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", str(include), "-o", str(tmp_path / "main"),
                                str(tmp_path / "main.c")], capture_output=True, text=True, cwd=tmp_path)
        assert built.returncode == 0, built.stderr
        ran = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True)
        assert ran.stdout == expected


def test_a_vendor_winner_is_exported_as_use_the_library(swept, tmp_path):
    store, run_id, rep = swept
    run = store.load_run(run_id)
    # Make naive/default a vendor builtin, as cuBLAS and MPS are, and let it win spec 0.
    naive = next(v for v in variants.load_variants() if v.id == "naive/default")
    vendor = variants.Variant(naive.family.__class__(**{**naive.family.__dict__, "builtin": "cublas",
                                                        "baseline": "vendor"}), naive.config, naive.params)
    rep.specs[0].best = "naive/default"
    try:
        others = [v for v in variants.load_variants() if v.id != vendor.id]
        table, sources = export.build_table(run, rep, [vendor, *others])
    finally:
        rep.specs[0].best = report.build(run).specs[0].best
    entry = table["specs"][0]
    assert entry["kind"] == "vendor" and entry["library"] == "cuBLAS" and "use the vendor library" in entry["note"]
    assert "file" not in entry and "groups" not in entry
    assert all(not name.startswith("naive") for name in sources)


def test_a_changed_source_is_not_exported(swept, tmp_path):
    store, run_id, rep = swept
    run = store.load_run(run_id)
    first = next(r for r in run.results if r.spec_index == 0 and r.variant == rep.specs[0].best)
    first.detail["source_hash"] = "0" * 64
    with pytest.raises(export.ExportError, match="changed since run"):
        export.build_table(run, rep, variants.load_variants())


def test_cli_writes_every_format_and_exports(opencl, tmp_path):
    run = cli("run", "--suite", "smoke", "--backend", "opencl", "--variants", "simdgemv/nt_bn4_vec4",
              "--max-samples", "3", "--min-samples", "2", "--max-time", "0.05", "--csv", str(tmp_path / "r.csv"),
              "--markdown", str(tmp_path / "r.md"))
    assert run.returncode == 0, run.stderr
    assert "% peak" in run.stdout and "roofline: % peak = GB/s over" in run.stdout
    assert (tmp_path / "r.csv").read_text().startswith("run,spec_index,")
    assert (tmp_path / "r.md").read_text().startswith("# metalbench run 1: smoke")
    exported = cli("export", "--out", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "dispatch.json").is_file() and (tmp_path / "out" / "metalbench_dispatch.h").is_file()
    assert "simdgemv-nt_bn4_vec4-f16.cl" in exported.stdout
    missing = cli("report", "--html", str(tmp_path / "r.html"), before="import sys; sys.modules['matplotlib'] = None")
    assert missing.returncode == 2 and not (tmp_path / "r.html").exists()
    assert missing.stderr.strip() == ("metalbench: error: --html needs matplotlib, which is not installed: "
                                      "pip install 'metalbench[plot]'")
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    page = cli("report", "--html", str(tmp_path / "r.html"))
    assert page.returncode == 0, page.stderr
    assert "<svg" in (tmp_path / "r.html").read_text()
