"""Planted faulty kernels on any backend: what each costs, and that the sweep goes on.

    python benchmarks/faults.py [--backend auto] [--device N] [--timeout S] [--json PATH]

Each case is a kernel in the portable dialect (so the same source runs on OpenCL,
CUDA and Metal) that computes C correctly and adds one fault. They run in one
sweep of two small specs through runner.run, with the naive baseline beside them;
the table gives each case's stored verdict and message, and whether the baseline
still measured correctly on every spec after the faults. Exit status 1 if any
case was judged ok (a fault that went unnoticed) or the baseline was hurt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import table, write_json

from metalbench import backends, report, runner, variants
from metalbench.settings import Settings
from metalbench.specs import load_suite
from metalbench.store import Store

SUITE = """\
name = "faults"
[[spec]]
op = "matmul"
m = 1
n = 96
k = 64
transpose_b = true
[[spec]]
op = "matmul_alpha_beta"
batch = 2
m = 3
n = 40
k = 24
alpha = 0.5
beta = 1.0
"""
BODY = """\
MB_KERNEL({name}) {{
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
  {before}
  if (j >= p.n) return;
  float acc = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
  MB_STORE_C(C_AT(bi, i, j), j, acc);
  {after}
}}
"""
LAST = "j == p.n - 1 && i == p.m - 1 && bi == p.batch - 1"
# name: (code before the body's work, code after it, what it plants)
CASES = {
    "hang": ("volatile GLOBAL_PTR int* flag = (volatile GLOBAL_PTR int*)ws; while (flag[0] == 0) {}", "",
             "spins for ever on a workspace word that stays 0"),
    "far": ("", f"if ({LAST}) *((GLOBAL_PTR float*)c + 0x4000000000L) = 1.0f;", "writes a terabyte past C"),
    "null": ("", f"if ({LAST}) *((GLOBAL_PTR float*)0x10) = 1.0f;", "writes to address 0x10"),
    "past": ("", f"if ({LAST}) for (int e = 1; e <= 8; ++e) STORE(c, C_AT(bi, i, j) + e, 0.0f);",
             "writes 8 elements past the end of C"),
    "before": ("", f"if ({LAST}) STORE(c, -1, 0.0f);", "writes the element before C"),
    "intob": ("", f"if ({LAST}) STORE((GLOBAL_PTR T*)b, 0, 7.0f);", "writes into its input B"),
    "dirty": ("", f"if ({LAST}) ws[0] = 1.0f;", "leaves its workspace dirty"),
}


def plant(folder: Path) -> None:
    for name, (before, after, _) in CASES.items():
        (folder / f"{name}.c").write_text(BODY.format(name=name, before=before, after=after))
        (folder / f"{name}.toml").write_text(textwrap.dedent(f"""\
            name = "{name}"
            source = "{name}.c"
            entry = "{name}"
            config = "tg{{TG}}"
            [grid]
            TG = [64]
            [dispatch]
            groups = ["ceil_div(n, TG)", "m", "batch"]
            threads = ["TG", 1, 1]
            """))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="--timeout of the sweep, seconds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backend = backends.pick_backend(args.backend)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kernels = root / "kernels"
        kernels.mkdir()
        plant(kernels)
        (root / "faults.toml").write_text(SUITE)
        store = Store(root / "results.sqlite")
        chosen = runner.with_baseline(variants.load_variants(backend, [kernels]), backend,
                                      [f"{name}/*" for name in CASES])
        start = time.perf_counter()
        run_id = runner.run(load_suite(root / "faults.toml"), chosen, backend=backend, store=store, device=args.device,
                            settings=Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05), race=False,
                            timeout=args.timeout)
        wall = time.perf_counter() - start
        run = store.load_run(run_id)
    rep = report.build(run)
    rows, unnoticed = [], 0
    for name, (_, _, what) in CASES.items():
        for r in (r for r in run.results if r.variant.startswith(f"{name}/")):
            unnoticed += r.status == "ok"
            rows.append([name, what, run.specs[r.spec_index]["label"], r.status, r.message.splitlines()[0][:110]])
    baseline_ok = all(s.best == run.baseline for s in rep.specs)
    title = f"{backend} device {args.device} ({run.device['name']}): {len(CASES)} planted faults, {wall:.0f} s"
    print(table(title, ["case", "plants", "spec", "verdict", "message"], rows, left=5))
    print(f"baseline {run.baseline} best on every spec after the faults: {baseline_ok}; faults judged ok: {unnoticed}")
    if args.json:
        write_json(args.json, {"backend": backend, "device": run.device, "wall_s": wall, "rows": rows,
                               "baseline_ok": baseline_ok, "unnoticed": unnoticed})
    return 1 if unnoticed or not baseline_ok else 0


if __name__ == "__main__":
    sys.exit(main())
