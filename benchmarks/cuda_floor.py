"""How fast can a decode-sized kernel be on this GPU, whatever it computes?

    python benchmarks/cuda_floor.py [--json PATH]

Times, warm and cold (L2 flushed before each launch, untimed), a ladder of
kernels that do less and less of what the attention GEMVs of the default suite
do (14 heads, 64 x 64 halves of B each, 114 KB in all): an empty kernel on one
thread; an empty kernel on their grid (14 x 4 blocks of 128 threads); one that
only stores C; one that loads all of B once and stores C; one that also reads
each head's row of A and C before storing it, as alpha/beta with beta = 1 does;
and that one again through the GEMM kernel ABI with its shapes read at run time.
None does arithmetic to speak of. The last is the floor no such GEMV can beat
with this timing: what separates a real kernel from it is its own work, what
separates it from the empty kernel is launch width and memory latency.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_harness import open_cuda  # noqa: E402

HEADS, ROWS, K = 14, 64, 64  # the suite's alpha/beta specs: batch 14, n 64, k 64 (fp16)

LADDER = r"""
extern "C" __global__ void empty() {}

extern "C" __global__ void store_only(unsigned short* c) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j < HEADS * ROWS) c[j] = 0x3c00;
}

/* Each thread reads one 16-byte piece of B; the 8 threads of a row fold theirs, one stores it. */
extern "C" __global__ void load_store(const uint4* __restrict__ b, unsigned short* c) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned v = 0;
  if (t < HEADS * ROWS * (K / 8)) {
    uint4 w = __ldg(b + t);
    v = w.x ^ w.y ^ w.z ^ w.w;
  }
  v ^= __shfl_xor_sync(0xffffffffu, v, 4);
  v ^= __shfl_xor_sync(0xffffffffu, v, 2);
  v ^= __shfl_xor_sync(0xffffffffu, v, 1);
  if (t % 8 == 0 && t / 8 < HEADS * ROWS) c[t / 8] = (unsigned short)v;
}

/* The alpha/beta spec's whole traffic: B once, each head's row of A, C read and written. */
extern "C" __global__ void load_all_store(const uint4* __restrict__ b, const uint4* __restrict__ a,
                                          unsigned short* c) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned v = 0, old = 0;
  if (t < HEADS * ROWS * (K / 8)) {
    if (t % 8 == 0) old = c[t / 8];
    uint4 w = __ldg(b + t), x = __ldg(a + (t / (ROWS * (K / 8))) * (K / 8) + t % (K / 8));
    v = w.x ^ w.y ^ w.z ^ w.w ^ x.x ^ x.y ^ x.z ^ x.w;
  }
  v ^= __shfl_xor_sync(0xffffffffu, v, 4);
  v ^= __shfl_xor_sync(0xffffffffu, v, 2);
  v ^= __shfl_xor_sync(0xffffffffu, v, 1);
  if (t % 8 == 0 && t / 8 < HEADS * ROWS) c[t / 8] = (unsigned short)(v ^ old);
}

/* The same through the GEMM kernel ABI's six arguments, its shapes read from the
 * params at run time (as every GEMM kernel's are): batch, m, n, k first. */
struct Params64 {
  int f[16];
};
extern "C" __global__ void load_all_store_abi(const uint4* __restrict__ a, const uint4* __restrict__ b,
                                              unsigned short* c, const void* bias, float* ws, Params64 p) {
  const int heads = p.f[0], rows = p.f[2], kv = p.f[3] / 8;
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned v = 0, old = 0;
  if (t < heads * rows * kv) {
    if (t % 8 == 0) old = c[t / 8];
    uint4 w = __ldg(b + t), x = __ldg(a + (t / (rows * kv)) * kv + t % kv);
    v = w.x ^ w.y ^ w.z ^ w.w ^ x.x ^ x.y ^ x.z ^ x.w;
  }
  v ^= __shfl_xor_sync(0xffffffffu, v, 4);
  v ^= __shfl_xor_sync(0xffffffffu, v, 2);
  v ^= __shfl_xor_sync(0xffffffffu, v, 1);
  if (t % 8 == 0 && t / 8 < heads * rows) c[t / 8] = (unsigned short)(v ^ old);
}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=Path("cuda_floor.json"))
    args = ap.parse_args()
    dev = open_cuda()
    if dev is None:
        return 2
    defines = {"HEADS": str(HEADS), "ROWS": str(ROWS), "K": str(K)}
    kernels = {name: dev.compile(LADDER, name, defines, f"floor/{name}") for name in ("empty", "store_only",
                                                                                    "load_store", "load_all_store",
                                                                                    "load_all_store_abi")}
    b = dev.allocate(HEADS * ROWS * K * 2)
    b.fill(1)
    a = dev.allocate(HEADS * K * 2)
    a.fill(1)
    c = dev.allocate(HEADS * ROWS * 2)
    ws = dev.allocate(4)
    pieces = HEADS * ROWS * K // 8
    params = struct.pack("<16i", HEADS, 1, ROWS, K, *([0] * 12))  # MBParams' batch, m, n, k
    cases = [
        ("empty, 1 thread", "empty", [], [1], [1]),
        ("empty, 56 blocks of 128", "empty", [], [HEADS * 4], [128]),
        ("store C only", "store_only", [c], [HEADS * ROWS // 128], [128]),
        ("load B once, store C", "load_store", [b, c], [pieces // 128], [128]),
        ("load B, A and C, store C", "load_all_store", [b, a, c], [pieces // 128], [128]),
        ("the same, shapes at run time", "load_all_store_abi", [a, b, c, c, ws, params], [pieces // 128], [128]),
    ]
    rows = []
    print(f"{dev.info['name']} | {dev.info['driver']}")
    print(f"{'kernel':<30} {'warm us':>8} {'cold us':>8}")
    for label, name, kargs, groups, threads in cases:
        row = {"kernel": label}
        for mode in ("warm", "cold"):
            m = dev.measure(kernels[name], kargs, groups, threads, warmup=10, iterations=args.iterations,
                            min_iterations=args.iterations, max_seconds=30.0, cold=mode == "cold")
            row[mode + "_us"] = m["gpu"]["median"] / 1e3
        rows.append(row)
        print(f"{label:<30} {row['warm_us']:8.2f} {row['cold_us']:8.2f}")
    shape = {"heads": HEADS, "rows": ROWS, "k": K}
    args.json.write_text(json.dumps({"device": dev.info, "shape": shape, "rows": rows}, indent=1))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
