/* tcgemv: C (m x n) = A (m x k) . B for a few rows of A (m <= MR <= 16: a few sequences
 * decoded together; m = 1 too with weights stored k x n), float16, on the tensor cores,
 * with the weights loaded straight into registers: no group memory on the way in.
 * Native CUDA (mma.sync needs sm_80; CL > 1 needs sm_90's thread-block clusters).
 *
 * Why: every weight is read once and used m times. fp32 FMAs (with a conversion per
 * half) keep up with HBM up to m of about 4 to 8 and fall behind at 16 (skinny); staging
 * the weights through group memory for ldmatrix (mtskinny) costs barriers and a second
 * trip per element. mma.sync m16n8k16 does the multiply-adds for next to nothing, and it
 * sums over k: the k slots of a fragment can hold any k, in any order, so long as the
 * weights (A fragment) and the activations (B fragment) put the same k in the same slot.
 * So each lane loads 16 contiguous bytes of weights and uses them as they come.
 *
 * The product is computed transposed, C^T (n x m) = B^T (n x k) . A^T (k x m): the weights
 * are the mma's A operand (16 rows of n), the activations its B operand (8 columns of m,
 * MR / 8 such blocks). Fragments (PTX ISA, "mma.m16n8k16" with .f16, as kernels/include/
 * cuda.h describes them): with g = lane / 4 and t = lane % 4, a lane holds A rows g and
 * g + 8 at k slots 2t, 2t+1 (registers 0, 1) and 2t+8, 2t+9 (registers 2, 3), B column g
 * at the same slots (registers 0, 1), and C rows g and g + 8 at columns 2t and 2t + 1.
 *
 * layout_nt (B stored n x k, a linear layer's weight): a step is 32 of k. Lane (g, t)
 * loads chunk c = 4 step + t (k = 8c .. 8c + 7) of weight rows g and g + 8 (16 bytes
 * each; four lanes read 64 contiguous bytes of a row) and of activation row g. Halves
 * 0-3 of the chunk fill slots 2t, 2t+1, 2t+8, 2t+9 of one mma, halves 4-7 those of a
 * second. RT tiles of 16 rows per warp share the activations' loads.
 *
 * layout_nn (B stored k x n, the fused QKV projection): a step is 16 of k and 64 of n.
 * Lane (g, t) loads k rows 4t .. 4t + 3 (for its slots 2t, 2t+1, 2t+8, 2t+9) at columns
 * 8g .. 8g + 7 (16 bytes each; eight lanes read 128 contiguous bytes of a row) and
 * activation row g at k 4t .. 4t + 3 (8 bytes). Column 8g + 2f + h is row g + 8h of mma
 * tile f (f < 4), so a register of the A fragment pairs one column's halves from two
 * rows of k: one byte permute.
 *
 * WB (nt only; so far only benchmarks/experiments sets it) swaps the operands: the
 * weights are the mma's B operand (8 rows of n per mma: a lane's two registers are words
 * 0, 1 or 2, 3 of its own row's 16 bytes, as they were loaded), the activations its A
 * operand (16 rows of A: rows g and g + 8). The mma's A fragment interleaves two rows, so
 * whichever operand holds rows g and g + 8 is assembled with register moves; with WB
 * that is the activations, shared by the RT tiles, rather than the weights of every
 * tile. The mmas per 16 rows of n: 2 either way at MR 16, 2 rather than 1 at MR 8 (half
 * of the 16 rows of A unused).
 *
 * Split of k: the CL blocks of a cluster and the KW warps of each block take consecutive
 * ranges of steps, U steps in flight per lane. Sums: each warp's accumulators go to group
 * memory and the block adds its warps'; with CL > 1 each block then finishes every CL-th
 * output from the cluster's sums in distributed shared memory (rank order: deterministic;
 * no workspace, no atomics, no second pass through L2). The epilogue's operand (bias, or
 * beta C) is read before the weights, so its latency hides behind theirs.
 *
 * Tails: weight rows past n read row n - 1 and are never stored (nt); a 16-byte group of
 * columns is all in or all out (nn, n % 8 == 0) and reads nothing when out; rows of A past
 * m and steps past a slice's end read nothing: zeros go into both fragments, which leaves
 * every stored sum as it was. Requires (manifest): A stored m x k, k % 8 == 0 (16-byte
 * aligned rows), and n % 8 == 0 for nn.
 *
 * Everything GPU-specific comes from the prelude (mt_mma, mb_ld16, mb_ld16_stream_pf for the
 * weights, mb_ld_cluster, mb_cluster_sync), so tests/cuda_emu runs this source on the CPU.
 *
 * Defines (MB_ + the grid key): MB_layout_nt or MB_layout_nn, MB_MR (8 or 16), MB_RT
 * (nt: 16-row tiles per warp), MB_KW (warps per block), MB_U (steps in flight), MB_CL,
 * MB_WB (nt: 1 for the weights as the mma's B operand; 0 unless defined).
 * Groups: (ceil(n / BNB), CL, batch), BNB = 16 RT (nt) or 64 (nn); threads: (32 KW, 1, 1). */

#if MB_DTYPE != 1
#error "tcgemv is float16 only (tf32 tensor cores would miss an fp32 tolerance)"
#endif
#if MB_MR != 8 && MB_MR != 16
#error "MR must be 8 or 16"
#endif

#ifndef MB_L2PF /* the weights' loads' L2 prefetch size: only benchmarks/experiments sets one */
#define MB_L2PF 0
#endif
#ifndef MB_WB /* for the experiment grids that compile this source without WB */
#define MB_WB 0
#endif
#if MB_WB && !MB_layout_nt
#error "WB is for layout nt"
#endif
#define MH (MB_MR / 8) /* blocks of 8 rows of A: the mma's n */
#define NTH (32 * MB_KW)
#if MB_layout_nt
#define BNB (16 * MB_RT) /* outputs along n per block */
#define KSTEP 32
#define TILES MB_RT /* mma tiles of 16 rows of n per warp */
#elif MB_layout_nn
#define BNB 64
#define KSTEP 16
#define TILES 4
#else
#error "define layout_nt or layout_nn"
#endif
#define NACC (MB_WB ? 8 * MB_RT : TILES * MH * 4) /* accumulators per lane */
#define NOUT (BNB * MB_MR)               /* outputs per block, i-major */
#define NPRE ((NOUT + NTH - 1) / NTH)    /* outputs per thread */

#if MB_CL > 1
#define MB_CLUSTER_DIMS __cluster_dims__(1, MB_CL, 1)
#else
#define MB_CLUSTER_DIMS
#endif

__device__ __forceinline__ unsigned tc_word(uint4 v, int f) { return f == 0 ? v.x : f == 1 ? v.y : f == 2 ? v.z : v.w; }

/* Which lane holds output (i, jj) of the block (jj < BNB), and in which accumulator:
 * the inverse of the fragment mapping above. */
__device__ __forceinline__ int tc_holder(int i, int jj, int* e) {
#if MB_WB
  /* Tile jj / 8 holds rows g and g + 8 of A and columns 2t, 2t + 1 of its 8 rows of n. */
  const int g = i % 8, t = (jj % 8) / 2;
  *e = (jj / 8) * 4 + 2 * (i / 8) + jj % 2;
#else
  const int mh = i / 8, t = (i % 8) / 2, v = i % 2;
#if MB_layout_nt
  const int g = jj % 8, h = (jj % 16) / 8;
  *e = ((jj / 16) * MH + mh) * 4 + 2 * h + v;
#else
  const int g = jj / 8, h = jj % 2;
  *e = (((jj % 8) / 2) * MH + mh) * 4 + 2 * h + v;
#endif
#endif
  return 4 * g + t;
}

extern "C" __global__ void MB_CLUSTER_DIMS __launch_bounds__(NTH)
    tcgemv(const T* __restrict__ a, const T* __restrict__ b, T* c, const T* __restrict__ bias, float* ws,
           const MBParams p) {
  __shared__ float red[MB_KW][NACC][32];
#if MB_CL > 1
  __shared__ float sum[NOUT];
#endif
  const int tid = threadIdx.x;
  const int lane = tid % 32, warp = tid / 32;
  const int g = lane >> 2, t = lane & 3;
  const int j0 = blockIdx.x * BNB;
  const int rank = blockIdx.y; /* in the cluster: its dims are (1, CL, 1) and the grid's y is CL */
  const int bi = blockIdx.z;
  const T* A = a + (long long)bi * p.stride_a;
  const T* B = b + (long long)bi * p.stride_b;

  /* Thread tid finishes outputs o = tid + q * NTH, C(o / BNB, j0 + o % BNB) (with CL > 1,
   * those with o % CL == rank): their epilogue operands first. */
  float pre[NPRE];
#pragma unroll
  for (int q = 0; q < NPRE; ++q) {
    const int o = tid + q * NTH;
    pre[q] = o < NOUT && o % MB_CL == rank ? MB_EPILOGUE_AT(bi, o / BNB, j0 + o % BNB) : 0.0f;
  }

  /* This warp's steps of k. */
  const int steps = (p.k + KSTEP - 1) / KSTEP;
  const int per = (steps + MB_CL * MB_KW - 1) / (MB_CL * MB_KW);
  const int s0 = (rank * MB_KW + warp) * per;
  const int s1 = min(steps, s0 + per);

  const T* arow[MH];
  bool aok[MH];
#pragma unroll
  for (int mh = 0; mh < MH; ++mh) {
    aok[mh] = 8 * mh + g < p.m;
    arow[mh] = A + (long long)(aok[mh] ? 8 * mh + g : 0) * p.lda;
  }
  mt_acc acc[NACC / 4]; /* tile (r or f, mh) */
#pragma unroll
  for (int e = 0; e < NACC / 4; ++e) mt_zero(acc[e]);

#if MB_layout_nt
  const int nchunks = p.k / 8;
  const T* wrow[MB_RT][2];
#pragma unroll
  for (int r = 0; r < MB_RT; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) wrow[r][h] = B + (long long)min(j0 + 16 * r + 8 * h + g, p.n - 1) * p.ldb;
  for (int s = s0; s < s1; s += MB_U) {
    uint4 w[MB_U][MB_RT][2], x[MB_U][MH];
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      const int ch = 4 * (s + u) + t;
      const bool ok = s + u < s1 && ch < nchunks;
#pragma unroll
      for (int r = 0; r < MB_RT; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) w[u][r][h] = ok ? mb_ld16_stream_pf<MB_L2PF>(wrow[r][h] + 8 * ch) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int mh = 0; mh < MH; ++mh) x[u][mh] = ok && aok[mh] ? mb_ld16(arow[mh] + 8 * ch) : make_uint4(0, 0, 0, 0);
    }
#if MB_WB
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      /* Rows g and g + 8 of A (zeros where MR is 8): halves 0-3 of the chunk, then 4-7. */
      const uint4 x8 = MH > 1 ? x[u][MH - 1] : make_uint4(0, 0, 0, 0);
      const mt_a xlo = {{x[u][0].x, x8.x, x[u][0].y, x8.y}}, xhi = {{x[u][0].z, x8.z, x[u][0].w, x8.w}};
#pragma unroll
      for (int r = 0; r < MB_RT; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const mt_b lo = {{w[u][r][h].x, w[u][r][h].y}}, hi = {{w[u][r][h].z, w[u][r][h].w}};
          mt_mma(acc[2 * r + h], xlo, lo);
          mt_mma(acc[2 * r + h], xhi, hi);
        }
    }
#else
#pragma unroll
    for (int u = 0; u < MB_U; ++u)
#pragma unroll
      for (int r = 0; r < MB_RT; ++r)
#pragma unroll
        for (int mh = 0; mh < MH; ++mh) {
          /* Halves 0-3 of the chunk, then halves 4-7. */
          const mt_a lo = {{w[u][r][0].x, w[u][r][1].x, w[u][r][0].y, w[u][r][1].y}};
          const mt_a hi = {{w[u][r][0].z, w[u][r][1].z, w[u][r][0].w, w[u][r][1].w}};
          const mt_b xlo = {{x[u][mh].x, x[u][mh].y}}, xhi = {{x[u][mh].z, x[u][mh].w}};
          mt_mma(acc[r * MH + mh], lo, xlo);
          mt_mma(acc[r * MH + mh], hi, xhi);
        }
#endif
  }
#else
  const int jc = j0 + 8 * g; /* this lane's 8 columns */
  const bool cok = jc < p.n;
  const T* wcol = B + (cok ? jc : 0);
  for (int s = s0; s < s1; s += MB_U) {
    uint4 w[MB_U][4];
    uint2 x[MB_U][MH];
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      const int kr = KSTEP * (s + u) + 4 * t; /* k rows kr .. kr + 3: k % 8 == 0, so all in or all out */
      const bool ok = s + u < s1 && kr < p.k;
#pragma unroll
      for (int q = 0; q < 4; ++q)
        w[u][q] = ok && cok ? mb_ld16_stream_pf<MB_L2PF>(wcol + (long long)(kr + q) * p.ldb) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int mh = 0; mh < MH; ++mh)
        x[u][mh] = ok && aok[mh] ? __ldg(reinterpret_cast<const uint2*>(arow[mh] + kr)) : make_uint2(0, 0);
    }
#pragma unroll
    for (int u = 0; u < MB_U; ++u)
#pragma unroll
      for (int f = 0; f < 4; ++f) {
        /* Column 8g + 2f in the low halves (row g), 8g + 2f + 1 in the high (row g + 8). */
        const mt_a wf = {{__byte_perm(tc_word(w[u][0], f), tc_word(w[u][1], f), 0x5410),
                          __byte_perm(tc_word(w[u][0], f), tc_word(w[u][1], f), 0x7632),
                          __byte_perm(tc_word(w[u][2], f), tc_word(w[u][3], f), 0x5410),
                          __byte_perm(tc_word(w[u][2], f), tc_word(w[u][3], f), 0x7632)}};
#pragma unroll
        for (int mh = 0; mh < MH; ++mh) {
          const mt_b xf = {{x[u][mh].x, x[u][mh].y}};
          mt_mma(acc[f * MH + mh], wf, xf);
        }
      }
  }
#endif

  /* ---- the warps' sums, then the cluster's ---- */
#pragma unroll
  for (int e = 0; e < NACC; ++e) red[warp][e][lane] = acc[e / 4].v[e % 4];
  __syncthreads();
#pragma unroll
  for (int q = 0; q < NPRE; ++q) {
    const int o = tid + q * NTH;
    const int i = o / BNB, jj = o % BNB;
    if (o < NOUT && i < p.m) {
      int e;
      const int l = tc_holder(i, jj, &e);
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < MB_KW; ++w) s += red[w][e][l];
#if MB_CL == 1
      if (j0 + jj < p.n) MB_STORE_C_IN(C_AT(bi, i, j0 + jj), s, pre[q]);
#else
      sum[o] = s;
#endif
    }
  }
#if MB_CL > 1
  mb_cluster_sync();
  const unsigned base = mt_smem(sum);
#pragma unroll
  for (int q = 0; q < NPRE; ++q) {
    const int o = tid + q * NTH;
    const int i = o / BNB, jj = o % BNB;
    if (o < NOUT && o % MB_CL == rank && i < p.m && j0 + jj < p.n) {
      float s = 0.0f;
#pragma unroll
      for (int r = 0; r < MB_CL; ++r) s += mb_ld_cluster(base + 4u * o, r);
      MB_STORE_C_IN(C_AT(bi, i, j0 + jj), s, pre[q]);
    }
  }
  mb_cluster_sync(); /* no block leaves while another still reads its group memory */
#endif
}
