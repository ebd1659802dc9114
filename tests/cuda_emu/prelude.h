/* A CPU stand-in for the parts of kernels/include/cuda.h that native float16 kernels use
 * with warp-level tensor-core code (kernels/cuda/tcgemv.cu), so that such a kernel's own
 * source runs without a GPU: every CUDA thread of a thread-block cluster is a std::thread,
 * and the collective steps (mma.sync, __syncthreads, the cluster barrier) are barriers
 * over the threads that take part. tests/test_cuda_emu.py builds it with g++.
 *
 * What it checks beyond the arithmetic: every global load and store is inside one of the
 * launch's buffers and aligned to its width (a fault on the GPU, an abort here), group
 * memory starts as NaN, and mt_mma computes what the PTX ISA defines for
 * mma.m16n8k16.row.col.f32.f16.f16.f32, from the fragment layout that cuda.h documents
 * (and tests/test_tiles.py checks ldmatrix's addressing against):
 *   A: register q of lane l holds A(g + 8 (q & 1), 2t + 8 (q >> 1) + h), h the half;
 *   B: register q holds B(2t + 8q + h, g); C: v[q] is C(g + 8 (q >> 1), 2t + (q & 1)),
 * with g = l / 4 and t = l % 4; and ldmatrix hands lanes what the PTX ISA says (lanes
 * 8q .. 8q + 7 point at the rows of matrix q; without .trans lane l gets row l / 4,
 * columns 2 (l % 4) and + 1, in register q; with .trans rows 2 (l % 4) and + 1 of column
 * l / 4). cp.async copies at once: the waits have nothing to wait for. The float16 pair
 * arithmetic (mb_hsub2, mb_hfma2) rounds each half once, as the PTX instructions do.
 *
 * wgmma.mma_async (sm_90a) is modelled as late as the hardware may run it: each thread
 * queues its instructions and computes them at the wg_wait that lets them finish, from
 * group memory as it is then, so that a kernel that overwrites a tile before its wait
 * gets wrong sums. The operands are read through the matrix descriptors as the PTX ISA
 * defines them (K-major, 128-byte swizzle: the address's bits 4-6 XOR its bits 7-9), and
 * dynamic group memory starts 16 bytes past a 1024-byte boundary, as alignment on the
 * GPU is not promised. */
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define MB_BACKEND_CUDA 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __cluster_dims__(x, y, z)

struct mb_half {
  unsigned short bits;
};
#define T mb_half
#define MB_VEC16 8

struct uint4 {
  unsigned x, y, z, w;
};
struct uint2 {
  unsigned x, y;
};
struct float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

inline float emu_h2f(unsigned short bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return (float)h;
}
inline unsigned short emu_f2h(float f) {
  _Float16 h = (_Float16)f; /* round to nearest even, as cvt.rn.f16.f32 */
  unsigned short bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

/* ---- the launch: its buffers, and each thread's place in it ---- */
struct EmuDim {
  int x, y, z;
};
struct EmuBuffer {
  const char* base;
  size_t bytes;
};
struct EmuCluster;
struct EmuThread {
  EmuDim thread_idx, block_idx, block_dim, grid_dim;
  int rank;           /* block within the cluster */
  size_t shared_top;  /* bytes of the block's group memory handed out so far */
  EmuCluster* cluster;
};
struct EmuWarp {
  std::barrier<>* sync;
  unsigned a[32][4], b[32][2];
  float c[32][4];
  const unsigned short* row[32]; /* ldmatrix: the row each lane points at */
};
struct EmuCluster {
  int blocks, threads; /* blocks of the cluster, threads per block */
  std::vector<std::vector<char>> shared; /* each block's group memory */
  std::vector<std::barrier<>*> block_sync;
  std::barrier<>* cluster_sync;
  std::vector<EmuWarp> warps; /* block * (threads / 32) + warp */
};
static std::vector<EmuBuffer> emu_buffers;
static thread_local EmuThread emu_self;
static const size_t EMU_SHARED = 228 * 1024;

#define threadIdx (emu_self.thread_idx)
#define blockIdx (emu_self.block_idx)
#define blockDim (emu_self.block_dim)
#define gridDim (emu_self.grid_dim)

[[noreturn]] inline void emu_fail(const char* what, const void* p) {
  std::fprintf(stderr, "emu: %s at %p (thread %d of block %d,%d,%d)\n", what, p, emu_self.thread_idx.x,
               emu_self.block_idx.x, emu_self.block_idx.y, emu_self.block_idx.z);
  std::abort();
}
/* A global access of `bytes` at p: inside one buffer, aligned to its width. */
inline void emu_check(const void* p, size_t bytes) {
  if ((uintptr_t)p % bytes) emu_fail("misaligned global access", p);
  for (const EmuBuffer& b : emu_buffers)
    if ((const char*)p >= b.base && (const char*)p + bytes <= b.base + b.bytes) return;
  emu_fail("global access outside every buffer", p);
}

#define LOAD(ptr, i) (emu_check(&(ptr)[i], 2), emu_h2f((ptr)[i].bits))
#define STORE(ptr, i, v) (emu_check(&(ptr)[i], 2), (ptr)[i].bits = emu_f2h(v))

inline uint4 mb_ld16(const T* p) {
  emu_check(p, 16);
  uint4 r;
  std::memcpy(&r, p, 16);
  return r;
}
inline uint4 mb_ld16_stream(const T* p) { return mb_ld16(p); }
template <int BYTES>
inline uint4 mb_ld16_stream_pf(const T* p) { return mb_ld16(p); } /* a cache hint: nothing to emulate */
inline uint2 __ldg(const uint2* p) {
  emu_check(p, 8);
  return *p;
}

/* What common.h's kernel-side part (its `#ifdef DEVICE_FN` blocks: the split-K hand-off
 * and the quantized format's macros) takes from a prelude. */
#define DEVICE_FN inline
#define GLOBAL_PTR
inline int emu_float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline float emu_int_as_float(int i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
#define FLOAT_AS_INT(x) emu_float_as_int(x)
#define INT_AS_FLOAT(i) emu_int_as_float(i)
inline int emu_exchange(int* p, int v) { return std::atomic_ref<int>(*p).exchange(v); }
#define ATOMIC_XCHG(ptr, v) emu_exchange((int*)(ptr), (int)(v))

/* cuda.h's raw 16-bit load and float16 pair arithmetic: each half computed exactly
 * (in double) and rounded once to float16, as sub.rn.f16x2 and fma.rn.f16x2 round. */
inline unsigned mb_ldh(const T* p) {
  emu_check(p, 2);
  return p->bits;
}
inline _Float16 emu_half(unsigned w, int h) {
  _Float16 x;
  const unsigned short bits = (unsigned short)(h ? w >> 16 : w & 0xffff);
  std::memcpy(&x, &bits, 2);
  return x;
}
inline unsigned emu_pack(_Float16 lo, _Float16 hi) {
  unsigned short l, h;
  std::memcpy(&l, &lo, 2);
  std::memcpy(&h, &hi, 2);
  return l | ((unsigned)h << 16);
}
template <unsigned MASK, unsigned BITS>
inline unsigned mb_and_or(unsigned x) {
  return (x & MASK) | BITS;
}
inline unsigned mb_hsub2(unsigned a, unsigned b) {
  return emu_pack((_Float16)((double)emu_half(a, 0) - (double)emu_half(b, 0)),
                  (_Float16)((double)emu_half(a, 1) - (double)emu_half(b, 1)));
}
inline unsigned mb_hfma2(unsigned a, unsigned b, unsigned c) {
  return emu_pack((_Float16)((double)emu_half(a, 0) * (double)emu_half(b, 0) + (double)emu_half(c, 0)),
                  (_Float16)((double)emu_half(a, 1) * (double)emu_half(b, 1) + (double)emu_half(c, 1)));
}
inline unsigned mb_dup_lo(unsigned x) {
  return (x & 0xffffu) | (x << 16);
}

inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t bytes = ((uint64_t)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= (unsigned)((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}

/* ---- group memory: `__shared__ X name[...]` becomes `auto& name = *emu_shared<X[...]>()` ---- */
template <class X>
X* emu_shared() {
  /* Every thread of a block makes the same declarations in the same order, so each
   * computes the same offset into its block's memory. */
  const size_t at = (emu_self.shared_top + 15) / 16 * 16;
  emu_self.shared_top = at + sizeof(X);
  if (emu_self.shared_top > EMU_SHARED) emu_fail("group memory exhausted", nullptr);
  return reinterpret_cast<X*>(emu_self.cluster->shared[emu_self.rank].data() + at);
}
inline unsigned mt_smem(const void* p) {
  return (unsigned)((const char*)p - emu_self.cluster->shared[emu_self.rank].data());
}
inline void __syncthreads() { emu_self.cluster->block_sync[emu_self.rank]->arrive_and_wait(); }
inline void mb_cluster_sync() { emu_self.cluster->cluster_sync->arrive_and_wait(); }
inline float mb_ld_cluster(unsigned addr, unsigned rank) {
  if (rank >= (unsigned)emu_self.cluster->blocks || addr % 4 || addr + 4 > EMU_SHARED)
    emu_fail("distributed shared memory read outside the cluster", nullptr);
  float v;
  std::memcpy(&v, emu_self.cluster->shared[rank].data() + addr, 4);
  return v;
}
inline float4 mb_ld_cluster4(unsigned addr, unsigned rank) {
  if (addr % 16) emu_fail("misaligned distributed shared memory read", nullptr);
  return float4{mb_ld_cluster(addr, rank), mb_ld_cluster(addr + 4, rank), mb_ld_cluster(addr + 8, rank),
                mb_ld_cluster(addr + 12, rank)};
}

/* ---- the matrix tile, float16 ---- */
struct mt_acc {
  float v[4];
};
struct mt_a {
  unsigned r[4];
};
struct mt_b {
  unsigned r[2];
};
inline void mt_zero(mt_acc& c) { c.v[0] = c.v[1] = c.v[2] = c.v[3] = 0.0f; }
/* cuda.h's accumulator positions, for kernels that store by hand; mt_mma below states the
 * layout on its own, from the PTX ISA, so that a wrong position here is caught
 * (tests/test_cuda_emu.py requires these two lines to be cuda.h's). */
#define MT_ACC_ROW(l, q) (((l) >> 2) + 8 * ((q) >> 1))
#define MT_ACC_COL(l, q) (2 * ((l) & 3) + ((q) & 1))
inline float emu_half_of(unsigned word, int h) { return emu_h2f((unsigned short)(h ? word >> 16 : word & 0xffff)); }
inline void mt_mma(mt_acc& c, const mt_a& a, const mt_b& b) {
  const int tid = emu_self.thread_idx.x, lane = tid % 32;
  EmuWarp& w = emu_self.cluster->warps[emu_self.rank * (emu_self.cluster->threads / 32) + tid / 32];
  std::memcpy(w.a[lane], a.r, sizeof a.r);
  std::memcpy(w.b[lane], b.r, sizeof b.r);
  std::memcpy(w.c[lane], c.v, sizeof c.v);
  w.sync->arrive_and_wait();
  const int g = lane / 4, t = lane % 4;
  for (int q = 0; q < 4; ++q) {
    const int row = g + 8 * (q >> 1), col = 2 * t + (q & 1);
    float s = w.c[lane][q];
    for (int kk = 0; kk < 16; ++kk) {
      /* A(row, kk): lane 4 (row % 8) + (kk % 8) / 2, register (row >= 8) + 2 (kk >= 8) */
      const float x = emu_half_of(w.a[4 * (row % 8) + (kk % 8) / 2][(row >= 8) + 2 * (kk >= 8)], kk % 2);
      /* B(kk, col): lane 4 col + (kk % 8) / 2, register kk >= 8 */
      const float y = emu_half_of(w.b[4 * col + (kk % 8) / 2][kk >= 8], kk % 2);
      s += x * y;
    }
    c.v[q] = s;
  }
  w.sync->arrive_and_wait(); /* nobody posts the next fragments before everyone has read these */
}

/* ---- ldmatrix and cp.async ---- */
inline void mt_ldsm(unsigned* r, const T* p, bool trans, int count) {
  const int tid = emu_self.thread_idx.x, lane = tid % 32;
  EmuWarp& w = emu_self.cluster->warps[emu_self.rank * (emu_self.cluster->threads / 32) + tid / 32];
  const char* base = emu_self.cluster->shared[emu_self.rank].data();
  if (lane < 8 * count && ((const char*)p < base || (const char*)p + 16 > base + EMU_SHARED || (uintptr_t)p % 16))
    emu_fail("ldmatrix row outside group memory or not 16-byte aligned", p);
  w.row[lane] = (const unsigned short*)p;
  w.sync->arrive_and_wait();
  const int g = lane / 4, t = lane % 4;
  for (int q = 0; q < count; ++q) {
    unsigned short lo, hi;
    if (trans) {
      lo = w.row[8 * q + 2 * t][g];
      hi = w.row[8 * q + 2 * t + 1][g];
    } else {
      lo = w.row[8 * q + g][2 * t];
      hi = w.row[8 * q + g][2 * t + 1];
    }
    r[q] = lo | ((unsigned)hi << 16);
  }
  w.sync->arrive_and_wait();
}
inline void mt_ldsm4(unsigned* r, const T* p, bool trans) { mt_ldsm(r, p, trans, 4); }
inline const T* emu_shared_at(unsigned addr) {
  return reinterpret_cast<const T*>(emu_self.cluster->shared[emu_self.rank].data() + addr);
}
inline void mt_ldsm4_at(unsigned* r, unsigned addr, bool trans) { mt_ldsm(r, emu_shared_at(addr), trans, 4); }
inline void mt_ldsm2(unsigned* r, const T* p, bool trans) { mt_ldsm(r, p, trans, 2); }
#define MT_SHARED __shared__
inline void mt_copy16_at(unsigned addr, const void* g) {
  emu_check(g, 16);
  if (addr % 16 || addr + 16 > EMU_SHARED) emu_fail("cp.async outside group memory or not 16-byte aligned", g);
  std::memcpy(const_cast<T*>(emu_shared_at(addr)), g, 16);
}
#define MT_COPY_VEC(s, si, g, gi) (emu_check((g) + (gi), 16), std::memcpy((s) + (si), (g) + (gi), 16))
#define MT_COPY_COMMIT() ((void)0)
#define MT_COPY_WAIT(n) ((void)0)

/* ---- wgmma.mma_async (cuda.h's warpgroup section) ---- */
#define __CUDA_ARCH_FEAT_SM90_ALL 1
#define WG_N 128
#define MB_DYNAMIC_SHARED(bytes) static const unsigned mb_dynamic_shared_bytes = (bytes)
/* `extern __shared__ X name[];` becomes `X* name = emu_shared_dynamic<X>(mb_dynamic_shared_bytes);` */
template <class X>
X* emu_shared_dynamic(unsigned bytes) {
  const size_t at = (emu_self.shared_top + 1023) / 1024 * 1024 + 16;
  if (bytes > 227 * 1024 || at + bytes > EMU_SHARED) emu_fail("dynamic group memory beyond a block's 227 KiB", nullptr);
  emu_self.shared_top = at + bytes;
  return reinterpret_cast<X*>(emu_self.cluster->shared[emu_self.rank].data() + at);
}
/* cuda.h's encoding (tests/test_cuda_emu.py requires these lines to be cuda.h's); the
 * decoding below is the PTX ISA's. */
inline unsigned long long wg_desc(unsigned addr) {
  return (unsigned long long)((addr & 0x3ffffu) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
         (1ull << 62);
}
inline unsigned long long wg_desc_mn(unsigned addr, unsigned atoms_apart) {
  return (unsigned long long)((addr & 0x3ffffu) >> 4) | ((unsigned long long)(atoms_apart >> 4) << 16) |
         ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}
inline void wg_fence_shared() {}
inline void wg_fence() {}
inline void wg_hold(float (&)[64]) {}
struct EmuWgmma {
  float* d;
  unsigned long long a, b;
  bool b_mn;
};
static thread_local std::vector<std::vector<EmuWgmma>> emu_wg_groups;
static thread_local std::vector<EmuWgmma> emu_wg_open;
template <int B_MN>
inline void wg_mma(float (&d)[64], unsigned long long a, unsigned long long b) {
  emu_wg_open.push_back({d, a, b, B_MN != 0});
}
inline void wg_commit() {
  emu_wg_groups.push_back(emu_wg_open);
  emu_wg_open.clear();
}
/* Element (r, k) of a float16 operand in the 128-byte swizzle, r < 64 or 128 (m or n), k <
 * 16, as the PTX ISA's canonical layouts place it. K-major: row r of 64 halves of k, 8-row
 * groups the stride byte offset apart. MN-major: row k of 64 halves of r, 8-row groups the
 * stride byte offset apart and the next 64 of r the leading byte offset on. The swizzle
 * acts on the address bits: chunk bits 4-6 xor row bits 7-9. */
inline float emu_wg_operand(unsigned long long desc, int r, int k, bool mn) {
  const unsigned start = (unsigned)(desc & 0x3fff) << 4, sbo = (unsigned)((desc >> 32) & 0x3fff) << 4;
  const unsigned lbo = (unsigned)((desc >> 16) & 0x3fff) << 4;
  if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0) emu_fail("wgmma descriptor: not the 128-byte swizzle, base offset 0", nullptr);
  const unsigned linear = mn ? start + (r / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + 2 * (r % 64)
                             : start + (r / 8) * sbo + (r % 8) * 128 + 2 * k;
  const unsigned at = linear ^ (((linear >> 7) & 7) << 4);
  if (at + 2 > EMU_SHARED) emu_fail("wgmma operand outside group memory", nullptr);
  unsigned short bits;
  std::memcpy(&bits, emu_self.cluster->shared[emu_self.rank].data() + at, 2);
  return emu_h2f(bits);
}
/* D's layout for .m64nNk16 (PTX ISA): thread t0 + 4 t1 of warp w of the warpgroup, value
 * v0 + 2 v1 + 4 v2, is row t1 + 8 v1 + 16 w, column 2 t0 + v0 + 8 v2. */
inline void emu_wg_run(const EmuWgmma& op) {
  const int t = emu_self.thread_idx.x % 128, w = t / 32, t0 = t % 4, t1 = t % 32 / 4;
  for (int v = 0; v < 64; ++v) {
    const int row = t1 + 8 * ((v >> 1) & 1) + 16 * w, col = 2 * t0 + (v & 1) + 8 * (v >> 2);
    float s = op.d[v];
    for (int k = 0; k < 16; ++k) s += emu_wg_operand(op.a, row, k, false) * emu_wg_operand(op.b, col, k, op.b_mn);
    op.d[v] = s;
  }
}
template <int N>
inline void wg_wait() {
  while (emu_wg_groups.size() > (size_t)N) {
    for (const EmuWgmma& op : emu_wg_groups.front()) emu_wg_run(op);
    emu_wg_groups.erase(emu_wg_groups.begin());
  }
}
