/* gemv_nn: C(m x n) = A(m x k) . B(k x n) with B stored k x n (not transposed), for
 * small m (m <= MR) and any batch: attention's P.V (a few columns, a long k, one
 * batch entry per head) and any GEMV whose weights are stored k x n. Native CUDA.
 *
 * A block owns CW columns of one batch entry. TPC = CW / VW threads span them with
 * 16-byte loads (coalesced along n); the block's other threads are KS slices that
 * take interleaved rows of k, U rows in flight per thread; A is read as scalars
 * (every thread of a slice reads the same element: one broadcast). Slices are summed
 * with shuffles inside each warp, then across warps through shared memory.
 *
 * SPLITS > 1 also splits k across SPLITS blocks (grid y): each writes its partial
 * sums to the workspace and counts itself in on the tile's counter; the last to
 * arrive adds the partials in split order (the result does not depend on arrival
 * order), applies the op, and zeroes its partials and the counter, leaving the
 * workspace zero as it found it.
 *
 * CL > 1 splits k across the CL blocks of a thread-block cluster (sm_90) instead:
 * each block sums its slice in shared memory, and after a cluster barrier every
 * block adds up its share of the columns from all CL blocks' shared memory
 * (distributed shared memory): no workspace, no atomics, no second pass through L2.
 *
 * Workspace (floats, SPLITS > 1): batch * m * SPLITS * n partials, then
 * batch * ceil(n / CW) int counters. TPC must be at most 32 (CW <= 256 for float16,
 * 128 for float32). The 16-byte path needs n, ldb and the batch stride of B to be
 * multiples of 16 / sizeof(T); other shapes take a scalar path.
 *
 * Defines (MB_ + the grid key): MB_CW, MB_WARPS, MB_U, MB_SPLITS, MB_CL, MB_MR (SPLITS or CL is 1).
 * Groups: (ceil(n / CW), SPLITS * CL, batch); threads: (32 * WARPS, 1, 1). */

#define VW MB_VEC16 /* elements per 16-byte load */
#define TPC (MB_CW / VW)                /* threads across the columns */
#define KS ((32 * MB_WARPS) / TPC)      /* slices of k per block */
#define SPW (32 / TPC)               /* slices per warp */

#if MB_CL > 1
#define MB_CLUSTER_DIMS __cluster_dims__(1, MB_CL, 1)
#else
#define MB_CLUSTER_DIMS
#endif

extern "C" __global__ void MB_CLUSTER_DIMS __launch_bounds__(32 * MB_WARPS)
    gemv_nn(const T* __restrict__ a, const T* __restrict__ b, T* c, const T* __restrict__ bias, float* ws,
            const MBParams p) {
  __shared__ float red[MB_WARPS][MB_MR][MB_CW];
#if MB_SPLITS > 1
  __shared__ int last;
#endif
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int cg = tid % TPC;               /* column group: columns cg * VW .. + VW */
  const int slice = tid / TPC;            /* 0 .. KS - 1 */
  const int j0 = blockIdx.x * MB_CW;
  const int j = j0 + cg * VW;
  const int split = blockIdx.y; /* SPLITS > 1: the split; CL > 1: the rank in the cluster */
  const int bi = blockIdx.z;
  const T* A = a + (long long)bi * p.stride_a;
  const T* B = b + (long long)bi * p.stride_b;
  const int a_is = p.trans_a ? 1 : p.lda;
  const int a_ks = p.trans_a ? p.lda : 1;
  const int chunk = (p.k + MB_SPLITS * MB_CL - 1) / (MB_SPLITS * MB_CL);
  const int k0 = split * chunk;
  const int k1 = min(p.k, k0 + chunk);
  const bool vec = p.n % VW == 0 && p.ldb % VW == 0 && (p.batch == 1 || p.stride_b % VW == 0);

  float acc[MB_MR][VW];
#pragma unroll
  for (int i = 0; i < MB_MR; ++i)
#pragma unroll
    for (int e = 0; e < VW; ++e) acc[i][e] = 0.0f;
#if MB_SPLITS == 1
  /* Thread t stores output t, t + 32 * WARPS, ... of the tile (see the end). */
  float pre[(MB_MR * MB_CW + 32 * MB_WARPS - 1) / (32 * MB_WARPS)];
#pragma unroll
  for (int q = 0; q < (MB_MR * MB_CW + 32 * MB_WARPS - 1) / (32 * MB_WARPS); ++q) {
    const int t = tid + q * 32 * MB_WARPS;
    pre[q] = 0.0f;
#if MB_CL > 1
    if (t < MB_MR * MB_CW && t % MB_CL == split) pre[q] = MB_EPILOGUE_AT(bi, t / MB_CW, j0 + t % MB_CW);
#else
    if (t < MB_MR * MB_CW) pre[q] = MB_EPILOGUE_AT(bi, t / MB_CW, j0 + t % MB_CW);
#endif
  }
#endif

  if (vec) {
    if (j < p.n) {
      for (int kk = k0 + slice; kk < k1; kk += KS * MB_U) {
        uint4 w[MB_U];
#pragma unroll
        for (int u = 0; u < MB_U; ++u) {
          const int q = kk + u * KS;
          w[u] = q < k1 ? mb_ld16(B + (long long)q * p.ldb + j) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < MB_U; ++u) {
          const int q = kk + u * KS;
          if (q < k1) {
            float wf[VW];
            mb_unpack16(w[u], wf);
#pragma unroll
            for (int i = 0; i < MB_MR; ++i) {
              if (i < p.m) {
                const float x = LOAD(A, i * a_is + q * a_ks);
#pragma unroll
                for (int e = 0; e < VW; ++e) acc[i][e] = fmaf(x, wf[e], acc[i][e]);
              }
            }
          }
        }
      }
    }
  } else {
    for (int q = k0 + slice; q < k1; q += KS) {
#pragma unroll
      for (int i = 0; i < MB_MR; ++i) {
        if (i < p.m) {
          const float x = LOAD(A, i * a_is + q * a_ks);
#pragma unroll
          for (int e = 0; e < VW; ++e)
            if (j + e < p.n) acc[i][e] = fmaf(x, LOAD(B, (long long)q * p.ldb + j + e), acc[i][e]);
        }
      }
    }
  }

  /* Slices of one warp: lanes cg, cg + TPC, cg + 2 TPC, ... hold the same columns. */
#pragma unroll
  for (int i = 0; i < MB_MR; ++i)
#pragma unroll
    for (int e = 0; e < VW; ++e)
#pragma unroll
      for (int o = TPC; o < 32; o *= 2) acc[i][e] += __shfl_xor_sync(0xffffffffu, acc[i][e], o);
  if (tid % 32 < TPC) {
#pragma unroll
    for (int i = 0; i < MB_MR; ++i)
#pragma unroll
      for (int e = 0; e < VW; ++e) red[warp][i][cg * VW + e] = acc[i][e];
  }
  __syncthreads();

#if MB_SPLITS == 1 && MB_CL == 1
#pragma unroll
  for (int q = 0; q < (MB_MR * MB_CW + 32 * MB_WARPS - 1) / (32 * MB_WARPS); ++q) {
    const int t = tid + q * 32 * MB_WARPS;
    const int i = t / MB_CW, col = t % MB_CW, jj = j0 + col;
    if (t < MB_MR * MB_CW && i < p.m && jj < p.n) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < MB_WARPS; ++w) s += red[w][i][col];
      MB_STORE_C_IN(C_AT(bi, i, jj), s, pre[q]);
    }
  }
#elif MB_CL > 1
  /* This block's sum of its slice, then every block finishes every CL-th output
   * from all the cluster's sums. */
  __shared__ float sum[MB_MR * MB_CW];
  for (int t = tid; t < MB_MR * MB_CW; t += 32 * MB_WARPS) {
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < MB_WARPS; ++w) s += red[w][t / MB_CW][t % MB_CW];
    sum[t] = s;
  }
  mb_cluster_sync();
  const unsigned base = mt_smem(sum);
#pragma unroll
  for (int q = 0; q < (MB_MR * MB_CW + 32 * MB_WARPS - 1) / (32 * MB_WARPS); ++q) {
    const int t = tid + q * 32 * MB_WARPS;
    const int i = t / MB_CW, col = t % MB_CW, jj = j0 + col;
    if (t < MB_MR * MB_CW && t % MB_CL == split && i < p.m && jj < p.n) {
      float s = 0.0f;
#pragma unroll
      for (int r = 0; r < MB_CL; ++r) s += mb_ld_cluster(base + 4u * t, r); /* in rank order: deterministic */
      MB_STORE_C_IN(C_AT(bi, i, jj), s, pre[q]);
    }
  }
  mb_cluster_sync(); /* no block leaves while another still reads its shared memory */
#else
  const int ntiles = (p.n + MB_CW - 1) / MB_CW;
  float* part = ws + (long long)bi * p.m * MB_SPLITS * p.n; /* partial (i, s, jj) at (i * SPLITS + s) * n + jj */
  int* counter = (int*)(ws + (long long)p.batch * p.m * MB_SPLITS * p.n) + bi * ntiles + blockIdx.x;
  for (int t = tid; t < MB_MR * MB_CW; t += 32 * MB_WARPS) {
    const int i = t / MB_CW, col = t % MB_CW, jj = j0 + col;
    if (i < p.m && jj < p.n) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < MB_WARPS; ++w) s += red[w][i][col];
      part[(i * MB_SPLITS + split) * p.n + jj] = s;
    }
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(counter, 1) == MB_SPLITS - 1;
  __syncthreads();
  if (last) {
    __threadfence();
    for (int t = tid; t < MB_MR * MB_CW; t += 32 * MB_WARPS) {
      const int i = t / MB_CW, col = t % MB_CW, jj = j0 + col;
      if (i < p.m && jj < p.n) {
        float s = 0.0f;
        /* volatile: the other blocks' partials must come from L2, not a stale L1 line */
#pragma unroll
        for (int q = 0; q < MB_SPLITS; ++q) s += ((volatile float*)part)[(i * MB_SPLITS + q) * p.n + jj];
#pragma unroll
        for (int q = 0; q < MB_SPLITS; ++q) part[(i * MB_SPLITS + q) * p.n + jj] = 0.0f;
        MB_STORE_C(C_AT(bi, i, jj), jj, s);
      }
    }
    if (tid == 0) atomicExch(counter, 0);
  }
#endif
}
