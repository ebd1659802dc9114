"""A family's variants built as one program (batch.py), on OpenCL: each keeps its own
macros, a variant that does not compile fails alone, and a compiler that hangs in a batch
is still blamed on the one variant it hangs on."""

import pytest
from conftest import FAST, FAULT_SUITE, write_family

from metalbench import batch, measure, report, runner, variants
from metalbench.specs import load_suite
from metalbench.store import Store

# Correct only where STRIDE, the body's own macro, is its own TG: STRIDE takes TG's value
# when it is defined, under #ifndef, so it would keep the first variant's value in every
# later body of the program if it were not undone after each.
BODY = """\
#ifndef STRIDE
#if MB_TG == 32
#define STRIDE 32
#elif MB_TG == 64
#define STRIDE 64
#else
#define STRIDE 128
#endif
#endif
#if MB_TG == {broken}
#error this variant does not compile
#endif
MB_KERNEL({name}) {{
  int j = GROUP_ID(0) * MB_TG + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
  if (j >= p.n) return;
  float acc = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
  MB_STORE_C(C_AT(bi, i, j), j, acc * (float)STRIDE / (float)MB_TG);
}}
"""


def family(folder, name, broken=0):
    """A family of three variants `name`/tg32, tg64, tg128; the one with TG `broken` does not compile."""
    return write_family(folder, name, BODY.format(name=name, broken=broken), tgs=(32, 64, 128))


def sweep(tmp_path, folder, names, timeout=60.0):
    store = Store(tmp_path / "results.sqlite")
    suite = load_suite(FAULT_SUITE)
    chosen = runner.with_baseline(variants.load_variants("opencl", [folder]), "opencl", [f"{n}/*" for n in names],
                                  specs=suite.specs)
    run_id = runner.run(suite, chosen, backend="opencl", store=store, settings=FAST, timeout=timeout, race=False)
    run = store.load_run(run_id)
    return {(r.variant, r.spec_index): r for r in run.results if r.status != "unsupported"}, report.build(run)


def test_batches_hold_one_body_each_and_at_most_batch_variants():
    every = variants.load_variants("opencl", [])
    groups = batch.batches(every)
    assert [v.id for g in groups for v in g] != [] and sorted(v.id for g in groups for v in g) == sorted(
        v.id for v in every)
    for g in groups:
        assert 1 <= len(g) <= batch.BATCH
        assert len({(v.family.source, v.family.entry) for v in g}) == 1
        if g[0].family.builtin or g[0].family.source is None:
            assert len(g) == 1
    # A family of more than BATCH variants fills whole batches first, in its own order.
    tilegemv = [v for v in every if v.family.name == "tilegemv"]
    assert len(tilegemv) > batch.BATCH
    mine = [g for g in groups if g[0].family.name == "tilegemv"]
    assert [len(g) for g in mine] == [batch.BATCH] * (len(tilegemv) // batch.BATCH) + (
        [len(tilegemv) % batch.BATCH] if len(tilegemv) % batch.BATCH else [])
    assert [v.id for g in mine for v in g] == [v.id for v in tilegemv]


class CountingDevice:
    """The worker's device, counting the distinct programs (source and defines) it is asked to compile."""

    def __init__(self, device):
        self._device, self.sources = device, set()

    def compile(self, source, entry, defines, label):
        self.sources.add((source, tuple(sorted(defines.items()))))
        return self._device.compile(source, entry, defines, label)

    def __getattr__(self, name):
        return getattr(self._device, name)


def test_a_worker_builds_a_familys_variants_as_one_program(opencl, tmp_path):
    chosen = variants.select(variants.load_variants("opencl", [family(tmp_path / "k", "lone")]), ["lone/*"])
    worker = measure.Worker("opencl", 0)
    worker.device = CountingDevice(worker.device)
    begun, done = [], []
    worker.build(chosen, "float32", begun.append, done.append)
    assert len(worker.device.sources) == 1
    assert sorted(begun) == sorted(done) == ["lone/tg128", "lone/tg32", "lone/tg64"]
    assert all(not isinstance(worker.kernels[(v.id, "float32")], Exception) for v in chosen)
    # One at a time (after a worker died with several builds under way), each has its own.
    again = measure.Worker("opencl", 0)
    again.device = CountingDevice(again.device)
    again.build(chosen, "float32", begun.append, done.append, one_at_a_time=True)
    assert len(again.device.sources) == 3


def test_a_body_with_functions_of_its_own_builds_alone_after_one_try_as_a_batch(opencl, tmp_path):
    folder = family(tmp_path / "k", "helper")
    body = (folder / "helper.c").read_text().replace("MB_KERNEL(", "DEVICE_FN float twice(float x) { return x + x; }\n"
                                                     "MB_KERNEL(", 1)
    (folder / "helper.c").write_text(body)
    chosen = variants.select(variants.load_variants("opencl", [folder]), ["helper/*"])
    worker = measure.Worker("opencl", 0)
    worker.device = calls = CountingDevice(worker.device)
    worker.build(chosen, "float32", lambda _: None, lambda _: None)
    assert all(not isinstance(worker.kernels[(v.id, "float32")], Exception) for v in chosen)
    assert len(calls.sources) == 1 + 3  # the batch that failed, then each alone
    calls.sources.clear()
    worker.build(chosen, "float16", lambda _: None, lambda _: None)
    assert len(calls.sources) == 3


def test_each_variant_of_a_batch_keeps_its_own_macros_and_a_broken_one_fails_alone(opencl, tmp_path):
    folder = family(tmp_path / "k", "good")
    family(folder, "mixed", broken=64)
    results, rep = sweep(tmp_path, folder, ["good", "mixed"])
    for tg in (32, 64, 128):
        for spec in (0, 1):
            good = results[(f"good/tg{tg}", spec)]
            assert good.status == "ok", (good.variant, good.message)
            mixed = results[(f"mixed/tg{tg}", spec)]
            if tg == 64:
                assert mixed.status == "failed" and mixed.category == "compile", mixed.message
                assert "mixed/tg64" in mixed.message
            else:
                assert mixed.status == "ok", (mixed.variant, mixed.message)
    assert rep.counts["wrong"] == 0


def test_a_compiler_hung_in_a_batch_is_blamed_on_its_variant_alone(opencl, tmp_path, monkeypatch):
    monkeypatch.setenv("METALBENCH_TEST_BUILD_FAULT", "hung/tg64=hang")
    results, _ = sweep(tmp_path, family(tmp_path / "k", "hung"), ["hung"], timeout=4)
    for tg in (32, 64, 128):
        for spec in (0, 1):
            r = results[(f"hung/tg{tg}", spec)]
            if tg == 64:
                assert r.status == "timeout" and r.category == "compile", r.message
                assert r.message.startswith("compiling hung/tg64 took longer than 4 s"), r.message
            else:
                assert r.status == "ok", (r.variant, r.message)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_batch_source_defines_each_variants_macros_before_its_body_and_undoes_them_after(dtype):
    chosen = [v for v in variants.load_variants("opencl", []) if v.family.name == "tilegemv"][:3]
    text, entries = batch.source("opencl", chosen, dtype)
    head, body = variants.prelude_parts("opencl", chosen[0].family.source)
    assert text.startswith(head) and len(set(entries)) == 3
    pieces = text[len(head):].split(body)
    assert len(pieces) == 4  # before the first body, between bodies, after the last
    for i, (v, entry) in enumerate(zip(chosen, entries, strict=True)):
        before, after = pieces[i], pieces[i + 1].split("#define")[0]
        own = {k: x for k, x in v.defines(dtype).items() if k != "MB_DTYPE"}
        assert own and all(f"#define {k} {x}\n" in before for k, x in own.items())
        assert f"#define {v.family.entry} {entry}\n" in before
        assert all(f"#undef {k}\n" in after for k in [*own, v.family.entry])
