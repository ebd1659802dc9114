/* Portable dialect -> CUDA C++, compiled by NVRTC (which has no system headers:
 * nothing is included here) or by nvcc. Half data is a 2-byte struct converted
 * with the PTX cvt instructions, so no cuda_fp16.h is needed; it has __half's size,
 * alignment and bits, so buffers are interchangeable with __half. bfloat16 data is
 * the same struct with __nv_bfloat16's bits (cuda_bf16.h is not needed either): a
 * load shifts the bits into a float's top half, a store is cvt.rn.bf16.f32 (sm_80;
 * the device trait bfloat16 says whether this GPU has it). SIMD groups are
 * warps of 32 lanes; SIMD_SUM needs every lane of the warp active (group sizes a
 * multiple of 32). Native kernels under kernels/cuda/ get this prelude too.
 *
 * MB_DTYPE selects the element type: 0 float32, 1 float16, 2 bfloat16 (the numbers of
 * metalbench/dtypes.py's CODES). MB_HALFWORD is 1 for both 16-bit types. */
#define MB_BACKEND_CUDA 1
#define MB_F16 (MB_DTYPE == 1)
#define MB_BF16 (MB_DTYPE == 2)
#define MB_HALFWORD (MB_DTYPE != 0)

struct mb_half {
  unsigned short bits;
};

__device__ __forceinline__ float mb_h2f(mb_half h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
  return f;
}

__device__ __forceinline__ mb_half mb_f2h(float f) {
  mb_half h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
  return h;
}

/* bfloat16 <-> float: exact widening, and rounding to nearest even (NaN stays NaN). */
__device__ __forceinline__ float mb_bf2f(mb_half h) { return __uint_as_float((unsigned)h.bits << 16); }
__device__ __forceinline__ mb_half mb_f2bf(float f) {
  mb_half h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
  return h;
}

/* The element type's 16-bit patterns -> float. */
__device__ __forceinline__ float mb_bits2f(unsigned short b) {
  mb_half h;
  h.bits = b;
#if MB_BF16
  return mb_bf2f(h);
#else
  return mb_h2f(h);
#endif
}
/* Two 16-bit elements packed in a 32-bit word (low one first in memory) -> floats. */
__device__ __forceinline__ float mb_lo(unsigned int w) { return mb_bits2f((unsigned short)(w & 0xffffu)); }
__device__ __forceinline__ float mb_hi(unsigned int w) { return mb_bits2f((unsigned short)(w >> 16)); }

/* LOAD4: one 64-bit load of four 16-bit elements, or one 128-bit load of four floats. */
__device__ __forceinline__ float4 mb_load4(const mb_half* p) {
  uint2 u = *reinterpret_cast<const uint2*>(p);
  return make_float4(mb_lo(u.x), mb_hi(u.x), mb_lo(u.y), mb_hi(u.y));
}
__device__ __forceinline__ float4 mb_load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

/* LOAD_UINT4: four 32-bit words in one 128-bit load. The caller guarantees that
 * ptr + i is 16-byte aligned (kernels/README.md), which is what makes the reinterpret_cast
 * of the word pointer to a uint4 pointer a legal access; __ldg, the read-only path, as
 * the words are weights no launch writes. */
#define UINT4 uint4
__device__ __forceinline__ uint4 mb_load_uint4(const unsigned int* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

__device__ __forceinline__ float mb_simd_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 16);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v;
}

#if MB_F16
#define T mb_half
#define LOAD(ptr, i) mb_h2f((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = mb_f2h(v))
#elif MB_BF16
#define T mb_half
#define LOAD(ptr, i) mb_bf2f((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = mb_f2bf(v))
#else
#define T float
#define LOAD(ptr, i) ((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = (v))
#endif
#define LOAD4(ptr, i) mb_load4((ptr) + (i))
#define LOAD_UINT4(ptr, i) mb_load_uint4((ptr) + (i))

/* For native kernels: 16-byte loads through the read-only path (__ldg, so the
 * compiler never hoists one out of the branch that guards it) and their unpacking
 * into MB_VEC16 floats. */
#define MB_VEC16 (16 / (int)sizeof(T))
__device__ __forceinline__ uint4 mb_ld16(const T* ptr) { return __ldg(reinterpret_cast<const uint4*>(ptr)); }
/* The same past L1 (L1::no_allocate), for data read once, so that it does not evict what
 * the kernel rereads. volatile, so that it is never hoisted out of the guard that keeps
 * it in bounds. */
__device__ __forceinline__ uint4 mb_ld16_stream(const T* ptr) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(ptr));
  return r;
}
/* The same, asking L2 to fetch BYTES around the address (128 or 256: .L2::128B,
 * .L2::256B), so that a stream makes fewer, larger DRAM requests; 0 asks nothing. No
 * shipped grid asks for it: benchmarks/experiments measures it. */
template <int BYTES>
__device__ __forceinline__ uint4 mb_ld16_stream_pf(const T* ptr) {
  static_assert(BYTES == 0 || BYTES == 128 || BYTES == 256, "an L2 prefetch size is 0, 128 or 256 bytes");
  if constexpr (BYTES == 0) {
    return mb_ld16_stream(ptr);
  } else {
    uint4 r;
    if constexpr (BYTES == 128)
      asm volatile("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                   : "l"(ptr));
    else
      asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                   : "l"(ptr));
    return r;
  }
}
__device__ __forceinline__ void mb_unpack16(uint4 u, float* f) {
#if MB_HALFWORD
  f[0] = mb_lo(u.x);
  f[1] = mb_hi(u.x);
  f[2] = mb_lo(u.y);
  f[3] = mb_hi(u.y);
  f[4] = mb_lo(u.z);
  f[5] = mb_hi(u.z);
  f[6] = mb_lo(u.w);
  f[7] = mb_hi(u.w);
#else
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z);
  f[3] = __uint_as_float(u.w);
#endif
}

/* For native kernels that make float16 weights from quantized codes: the raw bits of one
 * 16-bit element (a scale or a bias), through the read-only path, and arithmetic on two
 * float16 values packed in a 32-bit register (low half first: mma.sync's f16x2 operands),
 * each half rounded to nearest even as PTX sub.rn.f16x2 and fma.rn.f16x2 do. */
#if MB_HALFWORD
__device__ __forceinline__ unsigned mb_ldh(const T* ptr) { return __ldg(&ptr->bits); }
#endif
/* (x & MASK) | BITS in one instruction: written as C, the two constants make it two. */
template <unsigned MASK, unsigned BITS>
__device__ __forceinline__ unsigned mb_and_or(unsigned x) {
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(x), "n"(MASK), "n"(BITS));
  return r;
}
__device__ __forceinline__ unsigned mb_hsub2(unsigned a, unsigned b) {
  unsigned r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ unsigned mb_hfma2(unsigned a, unsigned b, unsigned c) {
  unsigned r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}
/* x's low half in both halves. Written as a pack of two 16-bit registers, an f16x2
 * instruction that takes the result reads it through its operand's .H0_H0 selector
 * (NVRTC 12.9, sm_90a), where __byte_perm(x, 0, 0x1010) is a PRMT of its own. */
__device__ __forceinline__ unsigned mb_dup_lo(unsigned x) {
  unsigned r;
  asm("{.reg .b16 l, h; mov.b32 {l, h}, %1; mov.b32 %0, {l, l};}" : "=r"(r) : "r"(x));
  return r;
}

#define MB_KERNEL(name)                                                                          \
  extern "C" __global__ void name(const T* __restrict__ a, const T* __restrict__ b, T* c,        \
                                  const T* __restrict__ bias, float* ws, const MBParams p)

#define MB_DIM(v, d) ((int)((d) == 0 ? (v).x : (d) == 1 ? (v).y : (v).z))
#define GROUP_ID(d) MB_DIM(blockIdx, d)
#define LOCAL_ID(d) MB_DIM(threadIdx, d)
#define GROUP_SIZE(d) MB_DIM(blockDim, d)
#define NUM_GROUPS(d) MB_DIM(gridDim, d)

#define SHARED __shared__
#define SHARED_PTR
#define GLOBAL_PTR
#define BARRIER() __syncthreads()
#define DEVICE_FN __device__ __forceinline__
#define FLOAT4 float4
#define MAKE_FLOAT4(x, y, z, w) make_float4((x), (y), (z), (w))

#define SIMD_WIDTH 32
#define SIMD_SUM(x) mb_simd_sum(x)
/* Every lane of the warp takes part (full mask), so every lane must reach it. */
#define SIMD_BROADCAST(x, lane) __shfl_sync(0xffffffffu, (float)(x), (lane))

/* Cross-group hand-off (split-K). __threadfence is a device-scope fence (PTX
 * fence.sc.gpu), so a fence, a group barrier, then one thread's atomic publishes every
 * thread's earlier writes to any group that reads that atomic and then fences. The
 * workspace words still go through atomics (common.h's WS_PUT / WS_TAKE): atomicExch
 * works at L2, so the taker can never read a stale L1 line of another group's word. */
#define DEVICE_FENCE() __threadfence()
#define ATOMIC_INC(ptr) atomicAdd((ptr), 1)
#define ATOMIC_STORE_ZERO(ptr) atomicExch((ptr), 0)
#define ATOMIC_XCHG(ptr, v) atomicExch((int*)(ptr), (int)(v))
#define FLOAT_AS_INT(x) __float_as_int(x)
#define INT_AS_FLOAT(i) __int_as_float(i)

/* ---- The matrix tile (kernels/README.md, "The matrix tile") --------------------------
 * One warp owns a TILE_M x TILE_N fp32 accumulator tile.
 *
 * float16 and bfloat16: tensor cores, mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (.bf16 for bfloat16; sm_80 and
 * later: the device trait matrix_unit says whether this GPU has it). Fragments hold the
 * PTX ISA's layout for that shape ("Matrix Fragments for mma.m16n8k16 with floating
 * point type"): with g = lane / 4 and t = lane % 4, a lane holds A(g, 2t..2t+1),
 * A(g+8, 2t..), A(g, 2t+8..), A(g+8, 2t+8..) (four .f16x2 registers, lower index in
 * the low half), B(2t..2t+1, g), B(2t+8..2t+9, g) (two) and C(g, 2t..2t+1),
 * C(g+8, 2t..2t+1) (four floats). Loads from group memory are ldmatrix (.trans for the
 * layouts whose pairs are not contiguous), which wants every row it reads 16-byte
 * aligned: hence the offset and leading dimension multiples of 8.
 *
 * float32: tf32 tensor cores round inputs to 10 mantissa bits, far outside an fp32
 * tolerance (metrics.tolerance), so float32 tiles are FMA emulation in the same
 * accumulator layout: a lane holds A's rows g and g + 8 and B's columns 2t and 2t + 1
 * over all TILE_K = 8 of k, loaded redundantly (each element by 4 or 8 lanes), and
 * computes its four outputs with fmaf. Correct on any GPU; not fast. */
#define TILE_M 16
#define TILE_N 8
#if MB_HALFWORD
#define TILE_K 16
#else
#define TILE_K 8
#endif
#define MT_T T
#define MT_T_BYTES (MB_HALFWORD ? 2 : 4)
/* Group memory for tiles: ldmatrix and cp.async want 16-byte aligned rows. */
#define MT_SHARED __shared__ __align__(16)
#define MT_SCRATCH 1
/* Static __shared__ memory a block may declare. */
#define MT_GROUP_BYTES 49152

struct mt_acc {
  float v[4];
};
#if MB_HALFWORD
struct mt_a {
  unsigned r[4];
};
struct mt_b {
  unsigned r[2];
};
#else
struct mt_a {
  float v[2][TILE_K]; /* rows g and g + 8 */
};
struct mt_b {
  float v[2][TILE_K]; /* columns 2t and 2t + 1 */
};
#endif
#define MT_ACC_T mt_acc
/* Where value q (0..3) of lane l's accumulator sits in the TILE_M x TILE_N tile, in both
 * mappings above: row g + 8 (q / 2), column 2t + q % 2. Native kernels that store or
 * stage their accumulators by hand use these. */
#define MT_ACC_ROW(l, q) (((l) >> 2) + 8 * ((q) >> 1))
#define MT_ACC_COL(l, q) (2 * ((l) & 3) + ((q) & 1))
#define MT_A_T mt_a
#define MT_B_T mt_b

__device__ __forceinline__ int mt_lane() {
  unsigned l;
  asm("mov.u32 %0, %%laneid;" : "=r"(l));
  return (int)l;
}
/* The shared-window address of a pointer into group memory, as ldmatrix and cp.async take it. */
__device__ __forceinline__ unsigned mt_smem(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

/* Thread-block clusters (sm_90), for native kernels whose blocks of one cluster add up
 * each other's sums in distributed shared memory: the float at shared-window address
 * `addr` (mt_smem) of the cluster's block `rank` (or the four from there), and a barrier of the whole cluster
 * that orders every block's shared-memory writes before it against reads after it. */
__device__ __forceinline__ float mb_ld_cluster(unsigned addr, unsigned rank) {
  unsigned remote;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
}
__device__ __forceinline__ float4 mb_ld_cluster4(unsigned addr, unsigned rank) { /* addr 16-byte aligned */
  unsigned remote;
  float4 v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(remote)
               : "memory");
  return v;
}
__device__ __forceinline__ void mb_cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

__device__ __forceinline__ void mt_zero(mt_acc& c) {
  c.v[0] = c.v[1] = c.v[2] = c.v[3] = 0.0f;
}

/* Element (r, c) of a tile read from device memory, 0 outside rows x cols: as the bits
 * of a 16-bit element or as a float. */
__device__ __forceinline__ unsigned mt_bits(const T* g, int off, int rs, int cs, int r, int c, int rows, int cols) {
#if MB_HALFWORD
  return r < rows && c < cols ? (unsigned)g[off + r * rs + c * cs].bits : 0u;
#else
  return r < rows && c < cols ? __float_as_uint(g[off + r * rs + c * cs]) : 0u;
#endif
}

#if MB_HALFWORD
/* ldmatrix from a shared-window address (mt_smem), for kernels that keep their addresses
 * as 32-bit offsets rather than rebuild them from pointers at every step. */
__device__ __forceinline__ void mt_ldsm4_at(unsigned* r, unsigned addr, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
__device__ __forceinline__ void mt_ldsm4(unsigned* r, const T* p, bool trans) { mt_ldsm4_at(r, mt_smem(p), trans); }
__device__ __forceinline__ void mt_ldsm2(unsigned* r, const T* p, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(mt_smem(p)) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(mt_smem(p)) : "memory");
}

/* The row and column of the stored tile that lane l points ldmatrix at, for each load
 * form (tests/test_tiles.py checks them against the PTX ISA's ldmatrix and mma layouts). */
#define MT_LDSM_A_ROW(l) ((l) & 15)
#define MT_LDSM_A_COL(l) (((l) >> 4) << 3)
#define MT_LDSM_AT_ROW(l) (((l) & 7) + (((l) >> 4) << 3))
#define MT_LDSM_AT_COL(l) ((((l) >> 3) & 1) << 3)
#define MT_LDSM_B_ROW(l) ((l) & 15)
#define MT_LDSM_B_COL(l) 0
#define MT_LDSM_BT_ROW(l) ((l) & 7)
#define MT_LDSM_BT_COL(l) ((((l) >> 3) & 1) << 3)

/* A(i, kk) at s[off + i * ld + kk]: lanes 0-15 point at rows 0-15 (k 0-7), lanes 16-31
 * at rows 0-15 (k 8-15); the four 8x8 matrices land in a0a1, a2a3, a4a5, a6a7. */
__device__ __forceinline__ void mt_load_a(mt_a& f, const T* s, int off, int ld) {
  const int l = mt_lane();
  mt_ldsm4(f.r, s + off + MT_LDSM_A_ROW(l) * ld + MT_LDSM_A_COL(l), false);
}
/* A(i, kk) at s[off + kk * ld + i]: matrix q = lane / 8 is k rows 8 (q / 2) .. +7 of i
 * columns 8 (q % 2) .. +7, transposed on the way in. */
__device__ __forceinline__ void mt_load_at(mt_a& f, const T* s, int off, int ld) {
  const int l = mt_lane();
  mt_ldsm4(f.r, s + off + MT_LDSM_AT_ROW(l) * ld + MT_LDSM_AT_COL(l), true);
}
/* B(kk, j) at s[off + kk * ld + j]: k rows 0-7 and 8-15, transposed on the way in. */
__device__ __forceinline__ void mt_load_b(mt_b& f, const T* s, int off, int ld) {
  const int l = mt_lane();
  mt_ldsm2(f.r, s + off + MT_LDSM_B_ROW(l) * ld + MT_LDSM_B_COL(l), true);
}
/* B(kk, j) at s[off + j * ld + kk]: j rows 0-7, k 0-7 then k 8-15, as stored. */
__device__ __forceinline__ void mt_load_bt(mt_b& f, const T* s, int off, int ld) {
  const int l = mt_lane();
  mt_ldsm2(f.r, s + off + MT_LDSM_BT_ROW(l) * ld + MT_LDSM_BT_COL(l), false);
}

/* From device memory, zero outside rows x cols: element by element (any alignment).
 * (rs, cs) are the strides of the fragment's first and second index. */
__device__ __forceinline__ void mt_load_a_g(mt_a& f, const T* g, int off, int rs, int cs, int rows, int cols) {
  const int l = mt_lane(), gr = l >> 2, c = (l & 3) << 1;
  for (int q = 0; q < 4; ++q) {
    const int r = gr + ((q & 1) << 3), k = c + ((q >> 1) << 3);
    f.r[q] = mt_bits(g, off, rs, cs, r, k, rows, cols) | (mt_bits(g, off, rs, cs, r, k + 1, rows, cols) << 16);
  }
}
__device__ __forceinline__ void mt_load_b_g(mt_b& f, const T* g, int off, int rs, int cs, int rows, int cols) {
  const int l = mt_lane(), j = l >> 2, k = (l & 3) << 1;
  for (int q = 0; q < 2; ++q)
    f.r[q] = mt_bits(g, off, rs, cs, k + (q << 3), j, rows, cols) |
             (mt_bits(g, off, rs, cs, k + (q << 3) + 1, j, rows, cols) << 16);
}

/* bf16 has the f16 shape's fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16
 * with floating point type"): only the instruction's types differ. */
#if MB_BF16
#define MT_MMA_TYPES "bf16.bf16"
#else
#define MT_MMA_TYPES "f16.f16"
#endif
__device__ __forceinline__ void mt_mma(mt_acc& c, const mt_a& a, const mt_b& b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32." MT_MMA_TYPES ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c.v[0]), "+f"(c.v[1]), "+f"(c.v[2]), "+f"(c.v[3])
      : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
#else  /* float32: FMA emulation */
/* Fragment element (h, kk): A's row g + 8h, or B's column 2t + h, at k = kk, read with
 * strides (rs, cs) of the tile's first and second index; zero outside rows x cols. */
__device__ __forceinline__ void mt_load_a_g(mt_a& f, const float* g, int off, int rs, int cs, int rows, int cols) {
  const int gr = mt_lane() >> 2;
  for (int h = 0; h < 2; ++h)
    for (int kk = 0; kk < TILE_K; ++kk) f.v[h][kk] = __uint_as_float(mt_bits(g, off, rs, cs, gr + 8 * h, kk, rows, cols));
}
__device__ __forceinline__ void mt_load_b_g(mt_b& f, const float* g, int off, int rs, int cs, int rows, int cols) {
  const int c = (mt_lane() & 3) << 1;
  for (int h = 0; h < 2; ++h)
    for (int kk = 0; kk < TILE_K; ++kk) f.v[h][kk] = __uint_as_float(mt_bits(g, off, rs, cs, kk, c + h, rows, cols));
}
__device__ __forceinline__ void mt_load_a(mt_a& f, const float* s, int off, int ld) {
  mt_load_a_g(f, s, off, ld, 1, TILE_M, TILE_K);
}
__device__ __forceinline__ void mt_load_at(mt_a& f, const float* s, int off, int ld) {
  mt_load_a_g(f, s, off, 1, ld, TILE_M, TILE_K);
}
__device__ __forceinline__ void mt_load_b(mt_b& f, const float* s, int off, int ld) {
  mt_load_b_g(f, s, off, ld, 1, TILE_K, TILE_N);
}
__device__ __forceinline__ void mt_load_bt(mt_b& f, const float* s, int off, int ld) {
  mt_load_b_g(f, s, off, 1, ld, TILE_K, TILE_N);
}
__device__ __forceinline__ void mt_mma(mt_acc& c, const mt_a& a, const mt_b& b) {
  for (int kk = 0; kk < TILE_K; ++kk) {
    c.v[0] = fmaf(a.v[0][kk], b.v[0][kk], c.v[0]);
    c.v[1] = fmaf(a.v[0][kk], b.v[1][kk], c.v[1]);
    c.v[2] = fmaf(a.v[1][kk], b.v[0][kk], c.v[2]);
    c.v[3] = fmaf(a.v[1][kk], b.v[1][kk], c.v[3]);
  }
}
#endif

/* The accumulators to group memory (float), C(i, j) at s[off + i * ld + j]. */
__device__ __forceinline__ void mt_store(const mt_acc& c, float* s, int off, int ld) {
  const int l = mt_lane();
  for (int q = 0; q < 4; ++q) s[off + MT_ACC_ROW(l, q) * ld + MT_ACC_COL(l, q)] = c.v[q];
}

#define MT_ZERO(c) mt_zero(c)
#define MT_LOAD_A(f, s, off, ld) mt_load_a((f), (s), (off), (ld))
#define MT_LOAD_AT(f, s, off, ld) mt_load_at((f), (s), (off), (ld))
#define MT_LOAD_B(f, s, off, ld) mt_load_b((f), (s), (off), (ld))
#define MT_LOAD_BT(f, s, off, ld) mt_load_bt((f), (s), (off), (ld))
#define MT_LOAD_A_G(f, g, off, ld, rows, cols, scr) (mt_load_a_g((f), (g), (off), (ld), 1, (rows), (cols)), (void)(scr))
#define MT_LOAD_AT_G(f, g, off, ld, rows, cols, scr) (mt_load_a_g((f), (g), (off), 1, (ld), (rows), (cols)), (void)(scr))
#define MT_LOAD_B_G(f, g, off, ld, rows, cols, scr) (mt_load_b_g((f), (g), (off), (ld), 1, (rows), (cols)), (void)(scr))
#define MT_LOAD_BT_G(f, g, off, ld, rows, cols, scr) (mt_load_b_g((f), (g), (off), 1, (ld), (rows), (cols)), (void)(scr))
#define MT_MMA(c, a, b) mt_mma((c), (a), (b))
#define MT_STORE(c, s, off, ld) mt_store((c), (s), (off), (ld))
#define MT_SYNC() __syncwarp()

/* Staging into group memory of MT_T: MT_PUT converts a float, MT_COPY copies one element
 * as it is, MT_COPY_VEC copies MT_VEC elements (16 bytes) with cp.async (sm_80), which
 * completes in the background: MT_COPY_COMMIT closes a group of copies, MT_COPY_WAIT(n)
 * waits until at most n of this thread's groups are still in flight. */
#if MB_F16
#define MT_PUT(s, i, v) ((s)[i] = mb_f2h(v))
#elif MB_BF16
#define MT_PUT(s, i, v) ((s)[i] = mb_f2bf(v))
#else
#define MT_PUT(s, i, v) ((s)[i] = (v))
#endif
#define MT_COPY(s, si, g, gi) ((s)[si] = (g)[gi])
/* 16 bytes from global memory to a shared-window address, with cp.async. */
__device__ __forceinline__ void mt_copy16_at(unsigned addr, const void* g) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(addr), "l"(g) : "memory");
}
#define MT_COPY_VEC(s, si, g, gi) mt_copy16_at(mt_smem((s) + (si)), (g) + (gi))
#define MT_COPY_COMMIT() asm volatile("cp.async.commit_group;" ::: "memory")
#define MT_COPY_WAIT(n) asm volatile("cp.async.wait_group %0;" ::"n"(n) : "memory")

/* ---- Warpgroup matrix multiply (sm_90a: wgmma.mma_async) ------------------------------
 * For native kernels on compute capability 9.0 exactly (the device trait warpgroup_mma;
 * the backend compiles for sm_90a there). Four warps (a warpgroup, 128 threads) multiply a
 * 64 x 16 tile of A by a 16 x 128 tile of B that both sit in group memory, adding into
 * 64 fp32 registers per thread, asynchronously: wg_commit closes a group of these, and
 * wg_wait<n> waits until at most n groups of the warpgroup are still running. Until then
 * the tensor cores may still read the tiles, and the accumulators must not be touched.
 *
 * Operands are matrix descriptors (PTX ISA, "Matrix Descriptor Format"): bits 0-13 the
 * start address >> 4, 16-29 the leading byte offset >> 4, 32-45 the stride byte offset
 * >> 4, 49-51 a base offset, 62-63 the swizzle mode. wg_desc describes a K-major tile
 * (rows of 64 halves, 128 bytes, consecutive) in the 128-byte swizzle: 16-byte chunk c of
 * row r lives at chunk c ^ (r % 8), so the tile must start 1024-byte aligned (base offset
 * 0) and groups of 8 rows are 1024 bytes apart (the stride byte offset; the leading one is
 * unused in this mode). The 16 halves of k from k0 on start at address + 2 k0: the
 * hardware applies the swizzle to the address bits, not to the descriptor.
 *
 * The accumulators' layout (PTX ISA, "Register Fragments and Shared Memory Matrix Layouts"
 * for wgmma .m64nNk16): warp w of the warpgroup holds rows 16 w .. 16 w + 15, as mma.sync
 * holds its 16 x 8 tile, 8 columns per 4 registers: d[i] is row 16 w + MT_ACC_ROW(lane,
 * i % 4), column 8 (i / 4) + MT_ACC_COL(lane, i % 4). */
#define WG_N 128
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr) {
  return (unsigned long long)((addr & 0x3ffffu) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
         (1ull << 62);
}
/* An MN-major tile (for B stored k x n: rows of k, each 64 halves of n), in the same
 * 128-byte swizzle, as the PTX ISA's canonical MN-major layout has it: 16-byte chunk c of
 * row r of an 8-row group at chunk c ^ (r % 8), groups of 8 rows 1024 bytes apart (the
 * stride byte offset), and the next 64 of n `atoms_apart` bytes on (the leading byte
 * offset). wg_mma<1> reads B through it. */
__device__ __forceinline__ unsigned long long wg_desc_mn(unsigned addr, unsigned atoms_apart) {
  return (unsigned long long)((addr & 0x3ffffu) >> 4) | ((unsigned long long)(atoms_apart >> 4) << 16) |
         ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}
/* The instructions exist only in code for sm_90a; elsewhere (other GPUs, nvcc's passes for
 * other targets) they trap, and the trait warpgroup_mma keeps such kernels from running. */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ASM(...) asm volatile(__VA_ARGS__)
#else
#define WG_ASM(...) __trap()
#endif
/* Group memory written by this thread (cp.async, stores) made visible to wgmma's reads
 * (the async proxy); a barrier then shows it to the warpgroups of the block. */
__device__ __forceinline__ void wg_fence_shared() { WG_ASM("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void wg_fence() { WG_ASM("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { WG_ASM("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() {
  WG_ASM("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
/* The compiler sees the accumulators as written when the wgmma is issued: this ties them
 * to a point after a wg_wait, so that no read of them moves above it. */
__device__ __forceinline__ void wg_hold(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
/* d (64 x 128, fp32) += A (64 x 16) B (16 x 128), both float16, A K-major, B K-major
 * (B_MN 0: wg_desc) or MN-major (B_MN 1: wg_desc_mn). After the descriptors: scale-d 1
 * (add to d rather than overwrite it), A and B not negated (1, 1), A not transposed (0),
 * B transposed or not (B_MN). */
template <int B_MN>
__device__ __forceinline__ void wg_mma(float (&d)[64], unsigned long long a, unsigned long long b) {
  WG_ASM(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, "
      "%43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, 1, 1, 1, 0, %66;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "n"(B_MN));
}

/* Group memory beyond the 48 KiB a block may declare statically: a kernel that declares
 * `extern __shared__` memory states its size with MB_DYNAMIC_SHARED(bytes), and the backend
 * (cuda_backend.cpp, kDynamicShared) reads it from the module, raises the kernel's limit to
 * it and passes it to every launch. */
#define MB_DYNAMIC_SHARED(bytes) extern "C" __device__ const unsigned mb_dynamic_shared_bytes = (bytes)
