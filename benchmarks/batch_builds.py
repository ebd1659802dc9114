"""What building a family's variants as one program (python/metalbench/batch.py) saves.

    python benchmarks/batch_builds.py [--backend opencl] [--device N] [--count 16] [--family NAME]... [--json PATH]

For each family (default: tilegemv, persistgemv, qmv, skinny: the lightest bodies and the
heaviest), builds its first `--count` variants for float16 twice, in one process, each
build from source with the driver's own cache off (POCL_KERNEL_CACHE=0 and
CUDA_CACHE_DISABLE=1, set before the device opens): once as one program (batch.build,
what a sweep does where Traits.batch_builds says so) and once one variant per program
(variants.build_kernel, what it did before, and does on every other backend), the
reference. The order alternates between families so that neither way always comes
first. It also times a program with one empty kernel, the compiler's fixed cost, after
one build that loads the compiler.

Prints a table of seconds and the ratio, and writes them with --json. Wall-clock
seconds of this process: on PoCL, builds in a process run one at a time; on NVIDIA's
OpenCL too, as measured on an H100 (results/check_opencl_batched_h100_stop38.txt).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import say, table, write_json

FAMILIES = ("tilegemv", "persistgemv", "qmv", "skinny")
EMPTY = "__kernel void mb_empty(__global float* x) { x[get_global_id(0)] = %d.0f; }"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="opencl")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--count", type=int, default=16, help="variants of each family (default 16, batch.BATCH)")
    ap.add_argument("--family", action="append", help=f"families to build (default: {', '.join(FAMILIES)})")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["POCL_KERNEL_CACHE"] = "0"
    os.environ["CUDA_CACHE_DISABLE"] = "1"
    from metalbench import _core, batch, open_device, variants  # after the drivers' cache switches

    _core.set_cache_dir("")
    device = open_device(args.backend, args.device)
    say(f"{args.backend} device {args.device}: {device.info.get('name', '?')} ({device.info.get('driver', '?')})")
    device.compile(EMPTY % 0, "mb_empty", {}, "empty")  # loads the compiler
    started = time.perf_counter()
    device.compile(EMPTY % 1, "mb_empty", {}, "empty")
    empty = time.perf_counter() - started
    every = variants.load_variants(args.backend, [])
    rows, out = [], {"device": device.info, "empty_program_s": empty, "families": {}}
    for i, name in enumerate(args.family or FAMILIES):
        chosen = [v for v in every if v.family.name == name and v.family.source and not v.family.builtin]
        chosen = chosen[:args.count]
        if not chosen:
            say(f"{name}: no variant of it builds from source on {args.backend}; skipped")
            continue

        ways = [("one program", lambda c=chosen: batch.build(device, args.backend, c, "float16")),
                ("one by one", lambda c=chosen: [variants.build_kernel(device, args.backend, v, "float16") for v in c])]
        took = {}
        for way, build in ways if i % 2 == 0 else ways[::-1]:
            started = time.perf_counter()
            build()
            took[way] = time.perf_counter() - started
        one, each = took["one program"], took["one by one"]
        rows.append((name, len(chosen), one, each, each / one))
        out["families"][name] = {"variants": len(chosen), "one_program_s": one, "one_by_one_s": each}
    print(table(f"builds of float16 variants, seconds (an empty program: {empty:.3f} s)",
                ["family", "variants", "one program", "one by one", "ratio"], rows))
    write_json(args.json, out)


if __name__ == "__main__":
    main()
