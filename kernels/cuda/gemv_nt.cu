/* gemv_nt: C(m x n) = A(m x k) . B(k x n) with B stored n x k (transpose_b: the
 * weight layout of a linear layer), for small m (m <= MR). Native CUDA; it gets the
 * cuda.h prelude and common.h like a portable body.
 *
 * A lane group of LPR threads owns R rows of B (R outputs per row of A) at a time.
 * Each lane reads 16 bytes of each of its R rows per step, U steps unrolled, so
 * R * U independent 128-bit loads are in flight per lane before the first multiply;
 * the row of A is read with the same 16-byte loads (it stays in L1 and L2).
 *   LPR <= 32 (warpgemv): several lane groups per warp, reduced with shuffles only;
 *   LPR >= 64 (splitkgemv): a group spans LPR / 32 warps that split k between them,
 *     reduced with shuffles, then through shared memory.
 * Blocks take tiles of WARPS * 32 / LPR * R rows in a grid-stride loop (CAP > 0 caps
 * the grid, making it persistent). Partial dots are fp32; the op's epilogue operand
 * (bias, or C for beta != 0) is read before the main loop, so its latency hides
 * behind the weights'.
 *
 * The 16-byte path needs k, the pitches and batch strides to be multiples of
 * 16 / sizeof(T) elements and A stored row-major (or m == 1 with lda == 1); any other
 * shape takes a scalar path, slower but correct.
 *
 * Defines (MB_ + the grid key): MB_LPR, MB_R, MB_U, MB_WARPS, MB_MR, MB_CAP, MB_HINT
 * (1: weights bypass L1), MB_PF (1, with CAP: bulk prefetch of the block's next tile
 * into L2, sm_90).
 * Groups: (ceil(n / RPB) or CAP, 1, batch); threads: (32 * WARPS, 1, 1). */

#define VW MB_VEC16 /* elements per 16-byte load */
#define GROUPS_PER_BLOCK ((32 * MB_WARPS) / MB_LPR)
#define RPB (GROUPS_PER_BLOCK * MB_R) /* rows of B per block and tile */
#define WPG (MB_LPR > 32 ? MB_LPR / 32 : 1) /* warps per lane group */

/* The weights' 16-byte loads: through L1, or with HINT past it. */
__device__ __forceinline__ uint4 mb_ld_weights(const T* ptr) {
#if MB_HINT
  return mb_ld16_stream(ptr);
#else
  return mb_ld16(ptr);
#endif
}

extern "C" __global__ void __launch_bounds__(32 * MB_WARPS)
    gemv_nt(const T* __restrict__ a, const T* __restrict__ b, T* c, const T* __restrict__ bias, float* ws,
            const MBParams p) {
#if MB_LPR > 32
  __shared__ float red[MB_WARPS][MB_MR * MB_R];
#endif
  const int tid = threadIdx.x;
  const int lane = tid % MB_LPR;  /* lane within the group */
  const int group = tid / MB_LPR; /* group within the block */
  const int bi = blockIdx.z;
  const T* A = a + (long long)bi * p.stride_a;
  const T* B = b + (long long)bi * p.stride_b;
  const int a_is = p.trans_a ? 1 : p.lda; /* distance between rows of A */
  const int a_ks = p.trans_a ? p.lda : 1; /* distance along k */
  const bool vec = a_ks == 1 && p.k % VW == 0 && p.ldb % VW == 0 && p.stride_b % VW == 0 &&
                   (p.m == 1 || a_is % VW == 0) && (p.batch == 1 || p.stride_a % VW == 0);
  const int nvec = p.k / VW;
  const int ntiles = (p.n + RPB - 1) / RPB;

  for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
#if MB_PF
    /* Persistent grid: ask L2 for this block's next tile while this one is read
     * (one bulk request, sm_90), so DRAM streams in large contiguous pieces. */
    if (threadIdx.x == 0 && vec && tile + (int)gridDim.x < ntiles) {
      const int next = (tile + gridDim.x) * RPB;
      const int rows = min(RPB, p.n - next);
      const T* from = B + (long long)next * p.ldb;
      const unsigned bytes = (unsigned)((long long)(rows - 1) * p.ldb + p.k) * (unsigned)sizeof(T) & ~15u;
      if (bytes) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(from), "r"(bytes) : "memory");
    }
#endif
    const int row0 = tile * RPB + group * MB_R;
    const T* rowp[MB_R];
#pragma unroll
    for (int r = 0; r < MB_R; ++r) rowp[r] = B + (long long)min(row0 + r, p.n - 1) * p.ldb; /* past n: read, not stored */
    float acc[MB_MR][MB_R];
#pragma unroll
    for (int i = 0; i < MB_MR; ++i)
#pragma unroll
      for (int r = 0; r < MB_R; ++r) acc[i][r] = 0.0f;
#if MB_LPR > 32
    const float pre = lane < MB_MR * MB_R ? MB_EPILOGUE_AT(bi, lane / MB_R, row0 + lane % MB_R) : 0.0f;
#else
    float pre[MB_MR][MB_R];
#pragma unroll
    for (int i = 0; i < MB_MR; ++i)
#pragma unroll
      for (int r = 0; r < MB_R; ++r) pre[i][r] = lane == (i * MB_R + r) % MB_LPR ? MB_EPILOGUE_AT(bi, i, row0 + r) : 0.0f;
#endif

    if (vec) {
      for (int v0 = lane; v0 < nvec; v0 += MB_LPR * MB_U) {
        uint4 w[MB_U][MB_R];
#pragma unroll
        for (int u = 0; u < MB_U; ++u) {
          const int v = v0 + u * MB_LPR;
#pragma unroll
          for (int r = 0; r < MB_R; ++r) w[u][r] = v < nvec ? mb_ld_weights(rowp[r] + v * VW) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < MB_U; ++u) {
          const int v = v0 + u * MB_LPR;
          if (v < nvec) {
            float wf[MB_R][VW];
#pragma unroll
            for (int r = 0; r < MB_R; ++r) mb_unpack16(w[u][r], wf[r]);
#pragma unroll
            for (int i = 0; i < MB_MR; ++i) {
              if (i < p.m) {
                float xf[VW];
                mb_unpack16(mb_ld16(A + i * a_is + v * VW), xf);
#pragma unroll
                for (int r = 0; r < MB_R; ++r)
#pragma unroll
                  for (int e = 0; e < VW; ++e) acc[i][r] = fmaf(xf[e], wf[r][e], acc[i][r]);
              }
            }
          }
        }
      }
    } else {
      for (int kk = lane; kk < p.k; kk += MB_LPR) {
#pragma unroll
        for (int i = 0; i < MB_MR; ++i) {
          if (i < p.m) {
            const float x = LOAD(A, i * a_is + kk * a_ks);
#pragma unroll
            for (int r = 0; r < MB_R; ++r) acc[i][r] = fmaf(x, LOAD(rowp[r], kk), acc[i][r]);
          }
        }
      }
    }

    /* Reduce over the group's lanes: within the warp by shuffles ... */
#pragma unroll
    for (int i = 0; i < MB_MR; ++i)
#pragma unroll
      for (int r = 0; r < MB_R; ++r)
#pragma unroll
        for (int o = (MB_LPR < 32 ? MB_LPR : 32) / 2; o > 0; o /= 2) acc[i][r] += __shfl_xor_sync(0xffffffffu, acc[i][r], o);

#if MB_LPR > 32
    /* ... then across the group's warps through shared memory. */
    const int warp = tid / 32;
    if (tid % 32 == 0) {
#pragma unroll
      for (int i = 0; i < MB_MR; ++i)
#pragma unroll
        for (int r = 0; r < MB_R; ++r) red[warp][i * MB_R + r] = acc[i][r];
    }
    __syncthreads();
    if (lane < MB_MR * MB_R) {
      const int i = lane / MB_R, r = lane % MB_R;
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < WPG; ++w) s += red[group * WPG + w][lane];
      const int j = row0 + r;
      if (i < p.m && j < p.n) MB_STORE_C_IN(C_AT(bi, i, j), s, pre);
    }
    __syncthreads(); /* red is reused by the next tile */
#else
    /* Lane e of the group stores output e (spreads the stores over the lanes). */
#pragma unroll
    for (int i = 0; i < MB_MR; ++i)
#pragma unroll
      for (int r = 0; r < MB_R; ++r) {
        const int j = row0 + r;
        if (lane == (i * MB_R + r) % MB_LPR && i < p.m && j < p.n) MB_STORE_C_IN(C_AT(bi, i, j), acc[i][r], pre[i][r]);
      }
#endif
  }
}
