"""Verifies every CUDA variant (portable families, native families, cuBLAS) on shapes
that cover every op, both layouts of each operand, batches, small m and tails, plus
the smoke and default suites.

    python benchmarks/cuda_check.py [--variants GLOB]... [--json PATH]

Runs through metalbench._core directly (benchmarks/cuda_harness.py), not the runner,
so it checks the backend and the kernels alone. Exits 1 if any pair is wrong or fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_harness import CHECK_SPECS, open_cuda, suite_specs, verify_all  # noqa: E402

from metalbench import variants  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", action="append", default=[])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--measure", action="store_true", help="also time a few launches of each pair")
    args = ap.parse_args()
    dev = open_cuda()
    if dev is None:
        return 2
    print(dev.info)
    chosen = variants.select(variants.load_variants("cuda"), args.variants)
    t0 = time.time()
    shapes = CHECK_SPECS + suite_specs("smoke") + suite_specs("qwen2.5-0.5b-decode")
    rows = verify_all(dev, chosen, shapes, measure=args.measure)
    failures = sum(1 for r in rows if "error" in r or "wrong" in r)
    print(f"{len(rows)} checks of {len(chosen)} variants, {failures} failed, {time.time() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
