"""How fast can a decode-sized kernel be on this GPU, whatever it computes?

    python benchmarks/cuda_floor.py [--json PATH]

Times a ladder of kernels that do less and less of what the attention GEMVs of the
default suite do (14 heads, 64 x 64 halves of B each, 114 KB in all): an empty
kernel on one thread; an empty kernel on their grid (14 x 4 blocks of 128 threads);
one that only stores C; one that loads all of B once and stores C; one that also
reads each head's row of A and C before storing it, as alpha/beta with beta = 1
does; and that one again through the GEMM kernel ABI with its shapes read at run
time. None does arithmetic to speak of. The last is the floor no such GEMV can beat:
what separates a real kernel from it is its own work, what separates it from the
empty kernel is launch width and memory latency.

Each kernel is timed by the embedded timer (Device.measure), by its batch clock (N
launches back to back between one pair of events, over N: what a decode loop pays)
and its per-launch clock (each launch between its own events), warm and cold:
- warm: one set of buffers, so every launch finds its bytes in L2;
- cold: as the runner's cold mode does it, many sets of buffers (one argument list
  per slot), together at least twice the L2, taken in turn, so that a launch's
  bytes were last touched some 2 x L2 of traffic earlier and are no longer cached.
  An empty kernel reads nothing, so it has no cold figure.

Then the read ceiling: the best bandwidth of a kernel that only reads every 16-byte
word of a buffer the size of the LM head's weights (151936 x 896 halves, 272 MB, far
past L2, so warm and cold are one), over a few unrollings and grid sizes, by the
batch clock. No GEMV over that many bytes can beat it.
"""

from __future__ import annotations

import math
import struct
import sys

from _common import cuda_args, say, table, write_json

import metalbench
from metalbench import _core
from metalbench.specs import Spec

HEADS, ROWS, K = 14, 64, 64  # the suite's alpha/beta specs: batch 14, n 64, k 64 (fp16)
SETTINGS = {"warmup": 10, "min_samples": 20, "max_samples": 2000, "min_time": 0.02, "max_time": 4.0,
            "max_noise": 0.005, "rank_by": "batch"}

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
struct AbiParams {
  int f[PARAMS_WORDS]; /* sizeof(MBParams) / 4, from _core.abi() */
};
extern "C" __global__ void load_all_store_abi(const uint4* __restrict__ a, const uint4* __restrict__ b,
                                              unsigned short* c, const void* bias, float* ws, AbiParams p) {
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


# Every 16-byte word of a buffer read once (UNROLL loads in flight per thread, grid-stride), nothing else.
READ = r"""
extern "C" __global__ void mb_read(const uint4* __restrict__ p, unsigned long long n, unsigned* sink) {
  unsigned acc = 0;
  const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += UNROLL * step) {
    uint4 v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) v[u] = i + u * step < n ? __ldg(p + i + u * step) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}
"""
LM_HEAD_BYTES = 151936 * 896 * 2
# The ladder's last rung: what no GEMV of an attention spec can beat.
FLOOR = "the same, shapes at run time"


def read_ceiling(dev: metalbench.Device) -> dict:
    """The best bandwidth (bytes / batch time) of mb_read over LM_HEAD_BYTES, and how it was had."""
    buf, sink = dev.allocate(LM_HEAD_BYTES), dev.allocate(16)
    buf.fill(1)
    sms = int(dev.info["compute_units"])
    tried = []
    for unroll in (2, 4, 8, 16):
        kernel = dev.compile(READ, "mb_read", {"UNROLL": str(unroll)}, f"floor/read_u{unroll}")
        for blocks_per_sm in (4, 16, 64):
            for threads in (256, 512):
                m = dev.measure(kernel, [buf, struct.pack("<Q", LM_HEAD_BYTES // 16), sink], [sms * blocks_per_sm],
                                [threads], **{**SETTINGS, "min_samples": 10, "max_time": 1.0})
                tried.append({"unroll": unroll, "blocks_per_sm": blocks_per_sm, "threads": threads,
                              "batch_us": m["batch"]["median"] / 1e3,
                              "gbps": LM_HEAD_BYTES / m["batch"]["median"]})
    best = max(tried, key=lambda t: t["gbps"])
    return {"bytes": LM_HEAD_BYTES, "best": best, "tried": tried}


class Slots:
    """`count` copies of A, B, C and the workspace, each copy a view at an aligned offset of one
    allocation per role; slot i's arguments are the i-th copies."""

    SIZES = {"a": HEADS * K * 2, "b": HEADS * ROWS * K * 2, "c": HEADS * ROWS * 2, "ws": 4}

    def __init__(self, dev: metalbench.Device, count: int) -> None:
        align = int(dev.info["view_alignment"])
        self.count = count
        self.views: dict[str, list] = {}
        for role, size in self.SIZES.items():
            stride = -(-size // align) * align
            arena = dev.allocate(stride * count)
            arena.fill(1)
            self.views[role] = [arena.view(i * stride, size) for i in range(count)]

    @classmethod
    def bytes_per_slot(cls) -> int:
        return sum(cls.SIZES.values())

    def args(self, roles: list[str], params: bytes | None = None) -> list[list]:
        """One argument list per slot: the named roles' copies ('c' twice for the bias), then params."""
        out = []
        for i in range(self.count):
            args = [self.views[r][i] for r in roles]
            out.append(args + ([params] if params is not None else []))
        return out


def ladder(dev: metalbench.Device, only: str | None = None) -> list[dict]:
    """Every rung of the ladder (or only the one labelled `only`) timed warm and cold, by the
    batch and per-launch clocks."""
    info = dev.info
    defines = {"HEADS": str(HEADS), "ROWS": str(ROWS), "K": str(K),
               "PARAMS_WORDS": str(_core.abi()["params"]["size"] // 4)}
    cold_count = math.ceil(2 * int(info["cache_bytes"]) / Slots.bytes_per_slot())
    warm, cold = Slots(dev, 1), Slots(dev, cold_count)
    pieces = HEADS * ROWS * K // 8
    params = Spec("matmul", "float16", HEADS, 1, ROWS, K, transpose_b=True).params()  # the kernel reads batch, m, n, k
    cases = [
        ("empty, 1 thread", "empty", [], None, [1], [1]),
        ("empty, 56 blocks of 128", "empty", [], None, [HEADS * 4], [128]),
        ("store C only", "store_only", ["c"], None, [HEADS * ROWS // 128], [128]),
        ("load B once, store C", "load_store", ["b", "c"], None, [pieces // 128], [128]),
        ("load B, A and C, store C", "load_all_store", ["b", "a", "c"], None, [pieces // 128], [128]),
        (FLOOR, "load_all_store_abi", ["a", "b", "c", "c", "ws"], params, [pieces // 128], [128]),
    ]
    say(f"{info['name']} | {info['driver']} | L2 {int(info['cache_bytes']) >> 20} MiB | cold: {cold_count} slots of "
        f"{Slots.bytes_per_slot()} bytes")
    rows, built = [], {}
    for label, name, roles, extra, groups, threads in cases:
        if only is not None and label != only:
            continue
        row = {"kernel": label}
        if name not in built:  # only the rungs asked for; two share the empty kernel
            built[name] = dev.compile(LADDER, name, defines, f"floor/{name}")
        kernel = built[name]
        for mode, slots in (("warm", warm), ("cold", cold)):
            if not roles and mode == "cold":
                continue  # reads nothing: no cache state to speak of
            slot_args = slots.args(roles, extra) if roles else []
            m = dev.measure(kernel, slot_args, groups, threads, **SETTINGS)
            row[mode] = {"batch_us": m["batch"]["median"] / 1e3, "launch_us": m["gpu"]["median"] / 1e3,
                         "batch_noise": m["batch"]["rel_stdev"], "batch_size": m["batch_size"],
                         "stop": m["batch"]["stop"], "slots": slots.count if roles else 1}
        rows.append(row)
        say(f"{label}: done")
    return rows


def main() -> int:
    args = cuda_args(__doc__, "the CUDA time floor")
    if args is None:
        return 2
    dev = metalbench.open_device("cuda", args.device)
    info = dev.info
    rows = ladder(dev)
    ceiling = read_ceiling(dev)
    best = ceiling["best"]
    peak = float(info["peak_bandwidth"])

    def us(row: dict, mode: str, clock: str) -> str:
        return f"{row[mode][clock]:.2f}" if mode in row else "-"

    print(table(f"time floor of decode-sized kernels: {info['name']} ({info['driver']}), microseconds per launch",
                ["kernel", "batch warm", "batch cold", "launch warm", "launch cold"],
                [[r["kernel"], us(r, "warm", "batch_us"), us(r, "cold", "batch_us"), us(r, "warm", "launch_us"),
                  us(r, "cold", "launch_us")] for r in rows]))
    print()
    print(table(f"read ceiling over {LM_HEAD_BYTES / 1e6:.0f} MB (the LM head's weights), best of "
                f"{len(ceiling['tried'])} grids",
                ["kernel", "batch us", "TB/s", "of peak", "how"],
                [["read every 16-byte word once", f"{best['batch_us']:.2f}", f"{best['gbps'] / 1e3:.3f}",
                  f"{best['gbps'] * 1e9 / peak:.0%}" if peak else "-",
                  f"unroll {best['unroll']}, {best['blocks_per_sm']} blocks/SM of {best['threads']}"]]))
    write_json(args.json, {"device": info, "shape": {"heads": HEADS, "rows": ROWS, "k": K}, "settings": SETTINGS,
                           "rows": rows, "read_ceiling": ceiling})
    return 0


if __name__ == "__main__":
    sys.exit(main())
