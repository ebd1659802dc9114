/* qtcgemv: C (m x n) = A (m x k) . B for a few rows of A (m <= MR <= 16, m = 1 included),
 * float16, with B in MLX's affine format of 4- or 8-bit codes (kernels/README.md,
 * "Quantized weights"), on the tensor cores. Native CUDA (mma.sync needs sm_80).
 *
 * Why: qmv and qmvm make every code a float on the FP32 pipe (an and-or, a subtraction
 * and a multiply-add per code, and per row), which is close to what an SM can issue
 * while HBM delivers two 4-bit codes a byte. Here two codes at a time become float16
 * weights in one 32-bit register, in three instructions that each do both:
 *   1. an and-or (4 bits) or a byte permute (8 bits) puts each code in the low mantissa
 *      bits of a float16 whose exponent makes the code's unit 1: the half is M + code
 *      exactly (M = 1024, or 64 for a 4-bit code four bits up in its half);
 *   2. a packed subtraction of (M, M) leaves the codes, exactly;
 *   3. a packed multiply-add by (scale, scale) and (bias, bias) makes the weights, each
 *      rounded once to float16 (hence `rounds_b`: cublas-dequant's weights, a rounding
 *      fewer than mx.dequantize's);
 * and mma.sync m16n8k16 does every multiply-add of the product, in float. So the cost
 * of a code is a third of what it is in qmv, and it is shared by the m rows of A.
 *
 * Layout (as tcgemv's nt layout; PTX ISA, "mma.m16n8k16" fragments, g = lane / 4,
 * t = lane % 4): the product is computed transposed, the weights as the mma's A operand
 * (16 rows of n per tile, RT tiles per warp), the activations as its B operand (8 rows
 * of A per block of columns, MR / 8 blocks). A step of k is 4 chunks of 16 bytes of
 * each row: lane (g, t) loads chunk 4 step + t of weight rows g and g + 8 of each tile,
 * with the scale and bias of its group (a chunk never straddles a group: groups of 32,
 * 64 or 128 codes, chunks of 32 or 16 codes, both aligned). The mma sums over its 16 k
 * slots in any order, so a slot pair (2t, 2t+1) or (2t+8, 2t+9) of a lane may hold any
 * two codes of the lane's chunk as long as the activations' fragment holds their x:
 *   4 bits: the pair (a, a + 4) of a word's eight codes sits at bits 4a and 16 + 4a
 *   (a = 0, 1; a = 2, 3 from the word shifted right by 8), the two halves of one
 *   register; a word's pairs 0, 1 fill one mma's slots and pairs 2, 3 another's;
 *   8 bits: the pair (a, a + 2) of a word's four codes (bytes a and a + 2), pairs 0, 1
 *   one mma's slots.
 * The activations are loaded 16 bytes at a time along k and paired to match with one
 * byte permute per register, once per block of columns and shared by the RT tiles.
 * Rows of A past m load nothing (zeros), and weight rows past n read row n - 1 and
 * are never stored; a chunk past the row's end loads nothing, and its zero x leaves
 * the sums as they were.
 *
 * Split of k: the KW warps of a block take consecutive ranges of steps, U steps'
 * loads in flight per lane (with PIPE, the next U steps' loads go out before these U
 * steps' arithmetic); the warps' sums go through group memory, and the block adds them
 * in a fixed order. With one warp (KW 1) each lane stores its own sums.
 *
 * LEAN takes fewer registers: the scales' and biases' addresses as unsigned 32-bit
 * offsets, and (without PIPE) whole iterations loading with no test, the ragged last
 * one apart. ptxas then issues some of an iteration's loads after its first mma, which
 * costs where a warp has few others beside it and pays where registers limited their
 * number; on an H100 it ranged from 1.5x faster to 1.5x slower by shape, so both are in
 * the grid (benchmarks/results/qtcgemv_pipe_h100_stop40.txt).
 * Requires (manifest): A stored m x k (or m = 1), codes of 4 or 8 bits whose rows are
 * whole chunks ((k * bits) % 128 == 0).
 *
 * Defines (MB_ + the grid key): MB_BITS (4 or 8), MB_MR (8 or 16), MB_RT (16-row tiles
 * per warp), MB_KW (warps per block), MB_U (steps in flight), MB_PIPE and MB_LEAN (0 or 1).
 * Groups: (ceil(n / (16 RT)), batch); threads: (32 KW, 1, 1). */

#if MB_DTYPE != 1
#error "qtcgemv is float16 only (its weights are made as float16 pairs)"
#endif
#if MB_BITS != 4 && MB_BITS != 8
#error "BITS must be 4 or 8"
#endif
#if MB_MR != 8 && MB_MR != 16
#error "MR must be 8 or 16"
#endif

#ifndef MB_L2PF /* the weights' loads' L2 prefetch size: only benchmarks/experiments sets one */
#define MB_L2PF 0
#endif
#ifndef MB_PIPE /* for the experiment grids that compile this source without PIPE and LEAN */
#define MB_PIPE 0
#endif
#ifndef MB_LEAN
#define MB_LEAN 0
#endif
/* Three ways to issue fewer instructions a step, measured only by benchmarks/experiments
 * (qtcgemv_ops.toml says what each saves): DUP, the scales and biases duplicated by
 * mb_dup_lo; ADDR, LEAN's scales and biases addressed as 32-bit element indices from b;
 * XC, the rows of A past m reading row m - 1 instead of predicated zeros. */
#ifndef MB_DUP
#define MB_DUP 0
#endif
#ifndef MB_ADDR
#define MB_ADDR 0
#endif
#ifndef MB_XC
#define MB_XC 0
#endif
#define QT_MH (MB_MR / 8)                    /* blocks of 8 rows of A: the mma's n */
#define QT_NTH (32 * MB_KW)
#define QT_BNB (16 * MB_RT)                  /* outputs along n per block */
#define QT_CPC (128 / MB_BITS)               /* codes per 16-byte chunk */
#define QT_XV (QT_CPC / 8)                   /* 16-byte loads of x per chunk */
#define QT_XP (QT_CPC / 2)                   /* code pairs (and x pairs) per chunk: two per mma */
#define QT_PPW (16 / MB_BITS)                /* code pairs per 32-bit word: 4 or 2 */
#define QT_NACC (MB_RT * QT_MH * 4)          /* accumulators per lane */
#define QT_NOUT (QT_BNB * MB_MR)             /* outputs per block, i-major */
#define QT_NPRE ((QT_NOUT + QT_NTH - 1) / QT_NTH) /* outputs per thread */

__device__ __forceinline__ unsigned qt_word(uint4 v, int f) { return f == 0 ? v.x : f == 1 ? v.y : f == 2 ? v.z : v.w; }

/* Code pair a of word w as M + code in each half (step 1 above), and that pair's M. */
__device__ __forceinline__ unsigned qt_biased(unsigned w, int a) {
#if MB_BITS == 4
  const unsigned v = a >= 2 ? w >> 8 : w;
  return a % 2 == 0 ? mb_and_or<0x000F000Fu, 0x64006400u>(v) : mb_and_or<0x00F000F0u, 0x54005400u>(v);
#else
  return __byte_perm(w, 0x64646464u, a == 0 ? 0x4240u : 0x4341u);
#endif
}
__device__ __forceinline__ unsigned qt_magic(int a) { return MB_BITS == 4 && a % 2 ? 0x54005400u : 0x64006400u; }

/* The weights of code pair a of word w: ((M + q) - M) * scale + bias, per half. */
__device__ __forceinline__ unsigned qt_weights(unsigned w, int a, unsigned scale2, unsigned bias2) {
  return mb_hfma2(mb_hsub2(qt_biased(w, a), qt_magic(a)), scale2, bias2);
}

/* x pair e of a chunk (e < QT_XP), from its 16-byte loads: for 4 bits, pair a of word
 * e / 4 is (x a, x a + 4) of that word's eight; for 8 bits, pair a of word e / 2 is
 * (x a, x a + 2) of its four. */
__device__ __forceinline__ unsigned qt_xpair(const uint4* xv, int e) {
  const uint4 v = xv[e / 4];
#if MB_BITS == 4
  const int a = e % 4;
  return __byte_perm(a < 2 ? v.x : v.y, a < 2 ? v.z : v.w, a % 2 ? 0x7632u : 0x5410u);
#else
  const int wi = e / 2 % 2;
  return __byte_perm(wi ? v.z : v.x, wi ? v.w : v.y, e % 2 ? 0x7632u : 0x5410u);
#endif
}

/* Which lane holds output (i, jj) of the block (jj < QT_BNB), and in which accumulator:
 * the inverse of the fragment mapping (for the block's sum when KW > 1). */
__device__ __forceinline__ int qt_holder(int i, int jj, int* e) {
  const int mh = i / 8, t = (i % 8) / 2, v = i % 2;
  const int g = jj % 8, h = (jj % 16) / 8;
  *e = ((jj / 16) * QT_MH + mh) * 4 + 2 * h + v;
  return 4 * g + t;
}

extern "C" __global__ void __launch_bounds__(QT_NTH)
    qtcgemv(const T* __restrict__ a, const T* __restrict__ b, T* c, const T* __restrict__ bias, float* ws,
            const MBParams p) {
#if MB_KW > 1
  __shared__ float red[MB_KW][QT_NACC][32];
#endif
  const int tid = threadIdx.x;
  const int lane = tid % 32, warp = tid / 32;
  const int g = lane >> 2, t = lane & 3;
  const int j0 = blockIdx.x * QT_BNB;
  const int bi = blockIdx.y;

#if MB_KW > 1
  /* Thread tid finishes outputs o = tid + q * QT_NTH, C(o / QT_BNB, j0 + o % QT_BNB): their
   * epilogue operands first, so that their latency hides behind the weights'. */
  float pre[QT_NPRE];
#pragma unroll
  for (int q = 0; q < QT_NPRE; ++q) {
    const int o = tid + q * QT_NTH;
    pre[q] = o < QT_NOUT ? MB_EPILOGUE_AT(bi, o / QT_BNB, j0 + o % QT_BNB) : 0.0f;
  }
#endif

  /* This warp's steps of k. */
  const int nchunks = p.k / QT_CPC;
  const int steps = (nchunks + 3) / 4;
  const int per = (steps + MB_KW - 1) / MB_KW;
  const int s0 = warp * per;
  const int s1 = min(steps, s0 + per);

  /* Pointers at this lane's first chunk, advanced by a whole iteration (4 U chunks) at a
   * time, so that a step's addresses are constant offsets from them. */
  const int c0 = 4 * s0 + t;
  const T* xptr[QT_MH];
  bool aok[QT_MH];
#pragma unroll
  for (int mh = 0; mh < QT_MH; ++mh) {
#if MB_XC
    /* Rows past m read row m - 1: their columns of the sums are never stored. */
    aok[mh] = true;
    xptr[mh] = a + A_AT(bi, min(8 * mh + g, p.m - 1), 0) + c0 * QT_CPC;
#else
    aok[mh] = 8 * mh + g < p.m;
    xptr[mh] = a + A_AT(bi, aok[mh] ? 8 * mh + g : 0, 0) + c0 * QT_CPC;
#endif
  }
  /* Row g + 8h of tile r: its words (as T, two per word) from the lane's first chunk, and
   * its scales and biases (a chunk's group: the chunk's index shifted right by gs). */
  const int gs = p.qgroup == QT_CPC ? 0 : p.qgroup == 2 * QT_CPC ? 1 : p.qgroup == 4 * QT_CPC ? 2 : 3;
  const T* wptr[MB_RT][2];
#if MB_LEAN
  const T* sbase = b + p.qscales;
  const T* bbase = b + p.qbiases;
  unsigned soff[MB_RT][2];
#else
  const T* sptr[MB_RT][2];
  const T* bptr[MB_RT][2];
#endif
#pragma unroll
  for (int r = 0; r < MB_RT; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = min(j0 + 16 * r + 8 * h + g, p.n - 1);
      wptr[r][h] = b + 2 * ((long long)bi * p.stride_b + (long long)j * p.ldb) + 8 * c0;
#if MB_LEAN
      soff[r][h] = (unsigned)QB_GROUP_AT(bi, j, 0);
#else
      sptr[r][h] = b + p.qscales + QB_GROUP_AT(bi, j, 0);
      bptr[r][h] = b + p.qbiases + QB_GROUP_AT(bi, j, 0);
#endif
    }
  mt_acc acc[QT_NACC / 4]; /* tile (r, mh) */
#pragma unroll
  for (int e = 0; e < QT_NACC / 4; ++e) mt_zero(acc[e]);

  /* An iteration's loads: U steps of the lane's chunks, their groups' scales and biases
   * (each half duplicated into a pair) and the activations; the pointers move on by the
   * iteration. */
  struct Loads {
    uint4 w[MB_U][MB_RT][2], xv[MB_U][QT_MH][QT_XV];
    unsigned scale2[MB_U][MB_RT][2], bias2[MB_U][MB_RT][2];
  };
  auto load = [&](Loads& L, int s, bool whole) { /* whole: every step inside the range and the row */
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      const int ch = 4 * (s + u) + t;
      const bool ok = whole || (s + u < s1 && ch < nchunks);
#pragma unroll
      for (int r = 0; r < MB_RT; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          L.w[u][r][h] = ok ? mb_ld16_stream_pf<MB_L2PF>(wptr[r][h] + 32 * u) : make_uint4(0, 0, 0, 0);
#if MB_LEAN
          /* Unsigned 32-bit offsets from the two arrays' starts (order-free: either may come
           * first in b). */
          const unsigned go = soff[r][h] + ((unsigned)ch >> gs);
#if MB_ADDR
          /* Indices from b's start, so that each address is one wide multiply-add from b (the
           * compiler folds sbase + go into a 64-bit add and a shift otherwise): the offsets
           * are below 2^31 (MBParams' are int, LEAN's are too), so their sum fits. */
          const unsigned sc = ok ? mb_ldh(b + (go + (unsigned)p.qscales)) : 0u;
          const unsigned bs = ok ? mb_ldh(b + (go + (unsigned)p.qbiases)) : 0u;
#else
          const unsigned sc = ok ? mb_ldh(sbase + go) : 0u;
          const unsigned bs = ok ? mb_ldh(bbase + go) : 0u;
#endif
#else
          const unsigned sc = ok ? mb_ldh(sptr[r][h] + (ch >> gs)) : 0u;
          const unsigned bs = ok ? mb_ldh(bptr[r][h] + (ch >> gs)) : 0u;
#endif
#if MB_DUP
          L.scale2[u][r][h] = mb_dup_lo(sc);
          L.bias2[u][r][h] = mb_dup_lo(bs);
#else
          L.scale2[u][r][h] = __byte_perm(sc, 0u, 0x1010u);
          L.bias2[u][r][h] = __byte_perm(bs, 0u, 0x1010u);
#endif
        }
#pragma unroll
      for (int mh = 0; mh < QT_MH; ++mh)
#pragma unroll
        for (int v = 0; v < QT_XV; ++v)
          L.xv[u][mh][v] = ok && aok[mh] ? mb_ld16(xptr[mh] + 4 * QT_CPC * u + 8 * v) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int r = 0; r < MB_RT; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) wptr[r][h] += 32 * MB_U;
#pragma unroll
    for (int mh = 0; mh < QT_MH; ++mh) xptr[mh] += 4 * QT_CPC * MB_U;
  };
  auto compute = [&](const Loads& L) {
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      unsigned xp[QT_MH][QT_XP];
#pragma unroll
      for (int mh = 0; mh < QT_MH; ++mh)
#pragma unroll
        for (int e = 0; e < QT_XP; ++e) xp[mh][e] = qt_xpair(L.xv[u][mh], e);
#pragma unroll
      for (int r = 0; r < MB_RT; ++r)
#pragma unroll
        for (int f = 0; f < QT_XP / 2; ++f) {
          /* mma f of the chunk: pair 2f in slots 2t, 2t + 1, pair 2f + 1 in slots 2t + 8, 2t + 9. */
          const int e0 = 2 * f, e1 = 2 * f + 1;
          const mt_a wf = {{qt_weights(qt_word(L.w[u][r][0], e0 / QT_PPW), e0 % QT_PPW, L.scale2[u][r][0], L.bias2[u][r][0]),
                            qt_weights(qt_word(L.w[u][r][1], e0 / QT_PPW), e0 % QT_PPW, L.scale2[u][r][1], L.bias2[u][r][1]),
                            qt_weights(qt_word(L.w[u][r][0], e1 / QT_PPW), e1 % QT_PPW, L.scale2[u][r][0], L.bias2[u][r][0]),
                            qt_weights(qt_word(L.w[u][r][1], e1 / QT_PPW), e1 % QT_PPW, L.scale2[u][r][1], L.bias2[u][r][1])}};
#pragma unroll
          for (int mh = 0; mh < QT_MH; ++mh) {
            const mt_b xf = {{xp[mh][e0], xp[mh][e1]}};
            mt_mma(acc[r * QT_MH + mh], wf, xf);
          }
        }
    }
  };

#if MB_PIPE
  /* The next iteration's loads go out before this one's arithmetic, so that a warp always
   * has loads in flight: two sets of registers, used in turn. */
  Loads L[2];
  if (s0 < s1) load(L[0], s0, false);
  for (int s = s0; s < s1; s += 2 * MB_U) {
    load(L[1], s + MB_U, false);
    compute(L[0]);
    if (s + MB_U >= s1) break;
    load(L[0], s + 2 * MB_U, false);
    compute(L[1]);
  }
#else
  int s = s0;
#if MB_LEAN
  /* Whole iterations load with no test (no predicates, no zeroed registers); the last,
   * which may be ragged, comes apart in the loop below. */
  for (; s + MB_U <= s1 && 4 * (s + MB_U) <= nchunks; s += MB_U) {
    Loads L;
    load(L, s, true);
    compute(L);
  }
#endif
  for (; s < s1; s += MB_U) {
    Loads L;
    load(L, s, false);
    compute(L);
  }
#endif

#if MB_KW == 1
  /* One warp has every sum of its block: each lane stores its own. The product is
   * transposed, so a tile's row is an output's j and its column an output's i. */
#pragma unroll
  for (int r = 0; r < MB_RT; ++r)
#pragma unroll
    for (int mh = 0; mh < QT_MH; ++mh)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int i = 8 * mh + MT_ACC_COL(lane, q), j = j0 + 16 * r + MT_ACC_ROW(lane, q);
        if (i < p.m && j < p.n) MB_STORE_C(C_AT(bi, i, j), j, acc[r * QT_MH + mh].v[q]);
      }
#else
  /* ---- the warps' sums ---- */
#pragma unroll
  for (int e = 0; e < QT_NACC; ++e) red[warp][e][lane] = acc[e / 4].v[e % 4];
  __syncthreads();
#pragma unroll
  for (int q = 0; q < QT_NPRE; ++q) {
    const int o = tid + q * QT_NTH;
    const int i = o / QT_BNB, jj = o % QT_BNB;
    if (o < QT_NOUT && i < p.m && j0 + jj < p.n) {
      int e;
      const int l = qt_holder(i, jj, &e);
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < MB_KW; ++k) sum += red[k][e][l];
      MB_STORE_C_IN(C_AT(bi, i, j0 + jj), sum, pre[q]);
    }
  }
#endif
}
