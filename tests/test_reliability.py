"""Faulty kernels and hostile inputs on PoCL: each costs its own result, never the sweep.
The faulty kernels are the planted faults of tests/faults (its README.md says which).

Categories (the reliability issue): a hung or crashing kernel is contained in its
worker; writes past a buffer, into an input or into a dirty workspace are caught;
the timed launches are checked, not only the first; odd values fail one variant or
spec with a reason. The CLI's own errors are in test_cli.py, the store's in
test_store.py.
"""

import os
import re
import signal
import time

import numpy as np
import pytest
from conftest import FAST, FAULT_KERNELS, FAULT_SUITE, TamperedDevice, results_of, sweep, write_family

from metalbench import variants
from metalbench.measure import Worker
from metalbench.specs import Spec
from metalbench.store import Store


def faults(tmp_path, patterns, **options):
    """The planted faults matching `patterns` (tests/faults), with the baseline, on their suite."""
    return sweep(tmp_path, patterns, suite=FAULT_SUITE, kernels=[FAULT_KERNELS], **options)


def test_every_planted_fault_names_its_own_code():
    """A manifest whose fault planted.c has no code for would plant nothing: a correct kernel."""
    source = (FAULT_KERNELS / "planted.c").read_text()
    planted = [f for f in variants.load_families([FAULT_KERNELS]) if f.source == FAULT_KERNELS / "planted.c"]
    assert len(planted) >= 9
    for family in planted:
        assert family.grid.get("fault") == [family.name], family.manifest
        assert re.search(rf"\bMB_fault_{family.name}\b", source), family.name


# --- 2. a hung or crashing kernel costs one result -----------------------------------------------------------------

@pytest.mark.slow
def test_a_hung_kernel_times_out_and_the_sweep_goes_on(opencl, tmp_path):
    run, rep = faults(tmp_path, ["hang/*"], timeout=4)
    hung = results_of(run, "hang/tg64")
    assert [r.status for r in hung] == ["timeout", "timeout"]
    assert all("longer than 4 s" in r.message for r in hung)
    # The seconds each ran before its worker was stopped, which no step recorded (eta.py's pace).
    assert all(4 <= r.measure["seconds"]["lost"] < 30 for r in hung), [r.measure for r in hung]
    # The baseline still ran on both specs, after each hang, in a new worker.
    assert all(s.best == "naive/default" for s in rep.specs)
    assert rep.counts["timeout"] == 2 and rep.counts["failed"] == 0
    # A rerun does not try them again; --force does.
    again, rep2 = faults(tmp_path, ["hang/*"], timeout=4)
    assert rep2.counts["reused"] == 4 and rep2.counts["measured"] == 0
    assert [r.status for r in results_of(again, "hang/tg64")] == ["timeout", "timeout"]


@pytest.mark.parametrize("name", ["far", "null"])
def test_a_kernel_that_writes_far_out_of_bounds_crashes_only_its_worker(opencl, tmp_path, name):
    run, rep = faults(tmp_path, [f"{name}/*"])
    crashed = results_of(run, f"{name}/tg64")
    assert [r.status for r in crashed] == ["crashed", "crashed"]
    assert all("SIGSEGV" in r.message or "SIGBUS" in r.message for r in crashed), [r.message for r in crashed]
    assert all(0 <= r.measure["seconds"]["lost"] < 60 for r in crashed), [r.measure for r in crashed]
    assert all(s.best == "naive/default" for s in rep.specs)
    assert rep.counts["crashed"] == 2


# --- 3. out-of-bounds writes are caught --------------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("past", "wrote 16 bytes past the end of C"),
    ("before", "wrote 2 bytes before the start of C"),
    ("intob", "changed its input B"),
    ("wspast", "before the start of the workspace"),
    ("dirty", "left its workspace dirty"),
    ("stray", "wrote into C outside the slots it was launched on"),
])
def test_writes_where_a_kernel_must_not_are_wrong_with_a_reason(opencl, tmp_path, name, reason):
    run, rep = faults(tmp_path, [f"{name}/*"])
    for r in results_of(run, f"{name}/tg64"):
        assert r.status == "wrong" and reason in r.message, r.message
    # Never best; and the next variant of the spec saw its inputs as uploaded.
    assert all(s.best == "naive/default" for s in rep.specs)
    assert rep.counts["wrong"] == 2 and all(r.status == "ok" for r in results_of(run, "naive/default"))


# --- 4. the timed launches are checked -----------------------------------------------------------------------------

def test_every_timed_launch_starts_from_a_fresh_c(opencl, tmp_path):
    # A kernel that would skip its work when C already holds a value writes garbage
    # instead: were any timed launch to see an earlier launch's output, the last
    # round would be wrong. It is correct, so every launch found C reset.
    kernels = write_family(tmp_path / "k", "seen", """\
        MB_KERNEL(seen) {
          int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
          if (j >= p.n) return;
          if (LOAD(c, C_AT(bi, i, j)) == LOAD(c, C_AT(bi, i, j))) {  /* not NaN: a value */
            STORE(c, C_AT(bi, i, j), 12345.0f);
            return;
          }
          float acc = 0.0f;
          for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
          MB_STORE_C(C_AT(bi, i, j), j, acc);
        }
        """, extra='requires = ["op == \'matmul\'"]')
    # Without racing: a brief lap that finds it slower than the baseline would store it as
    # raced, and this is about the full measurement's rounds.
    run, _ = sweep(tmp_path, ["seen/*"], suite=FAULT_SUITE, kernels=[kernels], race=False)
    seen = results_of(run, "seen/tg64")
    assert [r.status for r in seen] == ["ok"], [r.message for r in seen]
    assert seen[0].batch["count"] >= 1 and seen[0].measure["slots"] > 1


class _SkipsWhenTimed(TamperedDevice):
    """The device of a kernel that skips its work in the timed launches: after the real
    timing, the last round's output slots hold C's initial state again, as a launch
    that did nothing leaves them."""

    def tamper(self, timing: dict) -> None:
        c = self._buffers.c
        slot = (timing["first_slot"] + timing["last_round"] - 1) % self._buffers.slots
        c.buffer.write(np.ascontiguousarray(self._buffers.c_initial).reshape(-1).view(np.uint8), c.offset(slot))


def test_a_kernel_correct_once_but_not_when_timed_is_wrong(opencl):
    worker = Worker("opencl", 0)
    spec = Spec("matmul", "float16", 1, 1, 96, 64, False, True)
    prepared = worker.prepare(spec, FAST)
    naive = next(v for v in variants.load_variants("opencl") if v.id == "naive/default")
    detail = {"groups": naive.geometry(spec)[0], "threads": naive.geometry(spec)[1],
              "workspace": naive.workspace_floats(spec)}
    assert worker.measure(prepared, naive, "k", detail, FAST).status == "ok"
    worker.device = _SkipsWhenTimed(worker.device, prepared.buffers)
    result = worker.measure(prepared, naive, "k", detail, FAST)
    assert result.status == "wrong"
    assert result.message.startswith("correct once, wrong when timed:") and "never written" in result.message


def test_the_last_rounds_slots_are_read_back_wrapping_and_the_rest_compared_on_the_device(opencl):
    worker = Worker("opencl", 0)
    prepared = worker.prepare(Spec("matmul", "float16", 1, 1, 96, 64, False, True), FAST)
    buffers = prepared.buffers
    n = buffers.slots
    assert n > 4 and buffers.runs(n - 2, 5) == [(n - 2, 2), (0, 3)] and buffers.runs(1, 2) == [(1, 2)]
    c = buffers.c
    for slot, value in ((n - 2, 1), (n - 1, 2), (0, 3), (2, 4)):
        c.buffer.write(np.full(96, value, dtype=np.float16), c.offset(slot))
    outputs, band = buffers.outputs(n - 2, 5)
    assert band is None and [float(o.reshape(-1)[0]) for o in outputs][:3] == [1, 2, 3]
    assert float(outputs[4].reshape(-1)[0]) == 4
    assert buffers.strays(n - 2, 5) is None  # every slot written lies in the run
    assert "outside the slots" in buffers.strays(n - 2, 4)  # slot 2 is not in it


# --- 5. odd values fail one variant or spec, never the sweep -------------------------------------------------------

@pytest.mark.parametrize("groups, workspace, needle", [
    ('"n - 100000"', None, "must be an integer from 1 to 4294967295"),
    ('"n * 2**32"', None, "must be an integer from 1 to 4294967295"),
    ('"9**9**9"', None, "out of range"),
    ('"ceil_div(n, TG)"', '"2**40"', "workspace"),
    ('"ceil_div(n, TG)"', '"2**31"', "does not fit the device's memory"),
])
def test_odd_dispatch_and_workspace_values_fail_that_variant(opencl, tmp_path, groups, workspace, needle):
    # It never launches: the dispatch or the workspace fails it first.
    kernels = write_family(tmp_path / "k", "odd", "MB_KERNEL(odd) { }\n")
    manifest = (kernels / "odd.toml").read_text().replace('"ceil_div(n, TG)"', groups)
    if workspace:
        manifest = manifest.replace('config = "tg{TG}"', f'config = "tg{{TG}}"\nworkspace = {workspace}')
    (kernels / "odd.toml").write_text(manifest)
    run, rep = sweep(tmp_path, ["odd/*"], suite=FAULT_SUITE, kernels=[kernels])
    odd = results_of(run, "odd/tg64")
    assert len(odd) == 2 and all(r.status == "failed" and needle in r.message for r in odd), \
        [r.message for r in odd]
    assert all(s.best == "naive/default" for s in rep.specs)


def test_a_spec_too_big_for_the_machine_fails_with_a_reason(opencl, tmp_path):
    huge = FAULT_SUITE.read_text() + "[[spec]]\nop = \"matmul\"\nm = 1\nn = 1000000000\nk = 2\ntranspose_b = true\n"
    run, rep = sweep(tmp_path, ["naive/*"], suite=huge)
    big = [r for r in run.results if r.spec_index == 2 and r.status != "unsupported"]
    assert big and all(r.status == "failed" and "memory" in r.message for r in big), [r.message for r in big]
    assert rep.specs[0].best is not None and rep.specs[1].best is not None


# --- the CLI around a hung kernel: Ctrl-C, kill -9 -----------------------------------------------------------------

def _run_hang(start_cli, *extra):
    return start_cli("run", "--suite", str(FAULT_SUITE), "--backend", "opencl", "--kernels", str(FAULT_KERNELS),
                     "--variants", "hang/*", "--max-time", "0.05", "--timeout", "600", "--no-race", *extra)


def _wait_for_hang(store_path, deadline=180.0):
    """Until the run has stored its first result (the baseline's) and is inside the hung kernel."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if store_path.exists():
            try:
                store = Store(store_path, readonly=True)
                run = store.load_run(store.latest_run())
                if any(r.variant == "naive/default" for r in run.results):
                    time.sleep(2)
                    return
            except Exception:  # noqa: BLE001 - the store is being created
                pass
        time.sleep(0.2)
    raise AssertionError("the run never got to the hung kernel")


@pytest.mark.slow
def test_ctrl_c_stops_a_run_inside_a_hung_kernel_and_keeps_its_results(opencl, tmp_path, start_cli):
    proc = _run_hang(start_cli)
    _wait_for_hang(tmp_path / "results.sqlite")
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - start < 10
    assert "interrupted: every result measured so far is stored" in err and "Traceback" not in err
    run = Store(tmp_path / "results.sqlite").load_run(1)
    assert run.status == "interrupted" and results_of(run, "naive/default")[0].status == "ok"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes through /proc")
def test_a_killed_run_is_marked_abandoned_by_the_next(opencl, tmp_path, start_cli):
    proc = _run_hang(start_cli)
    _wait_for_hang(tmp_path / "results.sqlite")
    workers = _children(proc.pid)
    assert workers
    proc.kill()
    proc.communicate(timeout=30)
    # Its worker, stuck in the kernel, notices its parent is gone and ends too.
    time.sleep(3)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    again = _run_hang(start_cli, "--timeout", "3")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "run 1 was left 'running'" in err and "marked 'abandoned'" in err
    store = Store(tmp_path / "results.sqlite")
    assert store.load_run(1).status == "abandoned"
    assert [r.status for r in results_of(store.load_run(2), "hang/tg64")] == ["timeout", "timeout"]


def _children(pid):
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found
