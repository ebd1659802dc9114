"""Kernels that cheat the verdict, planted on PoCL: each is wrong, and each would pass
without the defence that catches it (issue 24, section 1).

- keep: answers kept in group memory, which PoCL preserves between launches, copied by
  every launch after the first;
- neighbour: a launch's output copied from the slot launched before it (simulated on the
  host: on PoCL a kernel cannot find the slot before the first without reading outside
  its buffers);
- precomputed: the answer to the spec's fixed inputs shipped in the source;
- guard: a result that depends on the guard pattern next to C;
- racy: a race that loses half of k in about one launch in 150.

The defences: every slot reads its own copy of A, drawn from the run's seed
(reference.fresh_copies), the guard pattern is the run's own (arena.guard_pattern), and
a final round over every slot is verified (measure.Worker._verify_round). The fault
kernels are written with conftest's write_family here until they join the fault folder.
"""

import numpy as np
import pytest
from conftest import TamperedDevice, write_family

from metalbench import arena, measure, variants
from metalbench.measure import Worker
from metalbench.reference import Fresh, compute_reference, make_inputs
from metalbench.settings import Settings
from metalbench.specs import Spec

FAST = Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05)
# One group of 64 threads (n <= 64), one output row: the shape the group-memory cheat needs.
SPEC = Spec("matmul", "float16", 1, 1, 45, 29, transpose_b=True)
DOT = "for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(0, 0, kk)) * LOAD(b, B_AT(0, kk, j));"

KEEP = f"""
MB_KERNEL(keep) {{
  SHARED float kept[65];
  const int j = LOCAL_ID(0);
  /* kept[64] marks answers a launch of this kernel left for this shape */
  const int found = kept[64] == (float)(p.n * 1000 + p.k);
  BARRIER();
  if (found) {{
    if (j < p.n) STORE(c, C_AT(0, 0, j), kept[j]);
    return;
  }}
  if (j < p.n) {{
    float acc = 0.0f;
    {DOT}
    MB_STORE_C(C_AT(0, 0, j), j, acc);
    kept[j] = LOAD(c, C_AT(0, 0, j));
  }}
  BARRIER();
  if (j == 0) kept[64] = (float)(p.n * 1000 + p.k);
}}
"""

# The first two bytes after C, in the fixed pattern's phase there (C's slot 0 starts 1024
# bytes into its arena and holds 90 bytes: byte 1114, phase 2 of a5 5a c3 3c): 0x3cc3.
GUARD = f"""
MB_KERNEL(guard) {{
  const int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  if (j >= p.n) return;
  float acc = 0.0f;
  {DOT}
  acc += LOAD(c, C_AT(0, 0, p.n)) - 1.1904296875f;
  MB_STORE_C(C_AT(0, 0, j), j, acc);
}}
"""

# Whether a launch loses the race: a hash of its C's address and of its row of A (the same
# in every thread of the launch), one in 150.
RACY = """
MB_KERNEL(racy) {
  const int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  if (j >= p.n) return;
  float row = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) row += LOAD(a, A_AT(0, 0, kk)) * (float)(kk + 1);
  ulong h = ((ulong)c >> 8) ^ (ulong)as_uint(row);
  h ^= h >> 33; h *= 0xff51afd7ed558ccdUL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53UL; h ^= h >> 33;
  const int lost = h % 150 == 0;
  float acc = 0.0f;
  for (int kk = 0; kk < (lost ? p.k / 2 : p.k); ++kk) acc += LOAD(a, A_AT(0, 0, kk)) * LOAD(b, B_AT(0, kk, j));
  MB_STORE_C(C_AT(0, 0, j), j, acc);
}
"""


def precomputed_source() -> str:
    """A kernel that stores the answer to SPEC's fixed inputs (make_inputs), as computed in float64."""
    answer = compute_reference(SPEC, make_inputs(SPEC)).out.reshape(-1)
    table = ", ".join(f"{float(np.float16(x))!r}f" for x in answer)
    return f"""
__constant float ANSWER[{answer.size}] = {{{table}}};
MB_KERNEL(precomputed) {{
  const int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  if (j < p.n) STORE(c, C_AT(0, 0, j), ANSWER[j]);
}}
"""


def honest_source() -> str:
    return f"""
MB_KERNEL(honest) {{
  const int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  if (j >= p.n) return;
  float acc = 0.0f;
  {DOT}
  MB_STORE_C(C_AT(0, 0, j), j, acc);
}}
"""


@pytest.fixture(scope="module")
def worker(opencl):
    return Worker("opencl", 0)


def kernel_of(tmp_path, name, source):
    folder = write_family(tmp_path / name, name, source)
    return next(v for v in variants.load_variants("opencl", [folder]) if v.family.name == name)


def measure_once(worker, v, seed, settings=FAST, full=True):
    prepared = worker.prepare(SPEC, settings, seed)
    groups, threads = v.geometry(SPEC)
    detail = {"groups": groups, "threads": threads, "workspace": v.workspace_floats(SPEC)}
    return worker.measure(prepared, v, "key", detail, settings, full=full)


@pytest.fixture
def undefended(monkeypatch):
    """The verification as it was: one set of inputs for every slot, a fixed guard pattern."""

    def same_copies(spec, a, seed, copies):
        t = np.zeros((copies, spec.batch, spec.m, 1))
        return [a.copy() for _ in range(copies)], Fresh(t.astype(np.int64), t, t)

    monkeypatch.setattr(measure, "fresh_copies", same_copies)
    monkeypatch.setattr(measure, "guard_pattern", lambda seed=None: arena.guard_pattern(None))


class _CopiesItsNeighbour(TamperedDevice):
    """The device of a kernel that copies the output of the slot launched before its own:
    after the real timing, every slot of the final round but the first holds what the
    slot before it holds."""

    def tamper(self, timing: dict) -> None:
        c, first, count = self._buffers.c, timing["first_slot"], timing["last_round"]
        for i in range(count - 1, 0, -1):
            slot, before = (first + i) % self._buffers.slots, (first + i - 1) % self._buffers.slots
            data = np.empty(c.size, dtype=np.uint8)
            c.buffer.read(data, c.offset(before))
            c.buffer.write(data, c.offset(slot))


def test_the_honest_kernel_is_ok_with_every_defence(worker, tmp_path):
    result = measure_once(worker, kernel_of(tmp_path, "honest", honest_source()), seed=1)
    assert result.status == "ok", result.message
    verified = result.measure["verified"]
    assert verified["round"] == "final" and verified["launches"] == result.measure["slots"] > 100
    assert result.measure["a_copies"] == result.measure["slots"]


@pytest.mark.parametrize("name", ["keep", "precomputed", "guard"])
def test_a_cheating_kernel_passed_the_old_checks(worker, tmp_path, undefended, name):
    source = {"keep": KEEP, "precomputed": precomputed_source(), "guard": GUARD}[name]
    v = kernel_of(tmp_path, name, source)
    for seed in (1, 2):
        result = measure_once(worker, v, seed)
        assert result.status == "ok", result.message


@pytest.mark.parametrize("name, reason", [
    # Later launches copy a stale answer (so may its first, from an earlier test's launches).
    ("keep", "over tolerance"),
    ("precomputed", "over tolerance"),                # slot 0's A is not the fixed inputs' A
    ("guard", "over tolerance"),                      # the pattern next to C is the run's own
])
def test_a_cheating_kernel_is_wrong(worker, tmp_path, name, reason):
    source = {"keep": KEEP, "precomputed": precomputed_source(), "guard": GUARD}[name]
    v = kernel_of(tmp_path, name, source)
    for seed in (1, 2):
        result = measure_once(worker, v, seed)
        assert result.status == "wrong" and reason in result.message, result.message


def test_outputs_copied_from_the_neighbour_slot_are_wrong(worker, tmp_path, monkeypatch):
    v = kernel_of(tmp_path, "honest", honest_source())
    prepared = worker.prepare(SPEC, FAST, 7)
    groups, threads = v.geometry(SPEC)
    detail = {"groups": groups, "threads": threads, "workspace": 1}
    monkeypatch.setattr(worker, "device", _CopiesItsNeighbour(worker.device, prepared.buffers))
    result = worker.measure(prepared, v, "key", detail, FAST)
    assert result.status == "wrong"
    assert result.message.startswith("correct once, wrong when timed:") and "(slot 1, launch 2 of" in result.message


def test_copying_the_neighbour_slot_passed_the_old_checks(worker, tmp_path, monkeypatch, undefended):
    v = kernel_of(tmp_path, "honest", honest_source())
    prepared = worker.prepare(SPEC, FAST, 7)
    groups, threads = v.geometry(SPEC)
    monkeypatch.setattr(worker, "device", _CopiesItsNeighbour(worker.device, prepared.buffers))
    result = worker.measure(prepared, v, "key", {"groups": groups, "threads": threads, "workspace": 1}, FAST)
    assert result.status == "ok", result.message


def test_a_kernel_that_loses_a_race_one_launch_in_150_is_caught_in_nearly_every_run(worker, tmp_path):
    # With 501 slots, each with its own A, the final round verifies 501 launches: the race
    # is lost in one of them with probability 1 - (149/150)^501 = 96.5%.
    v = kernel_of(tmp_path, "racy", RACY)
    runs = 40
    caught = sum(measure_once(worker, v, seed).status == "wrong" for seed in range(100, 100 + runs))
    assert caught >= 34, f"caught in {caught} of {runs} runs"
