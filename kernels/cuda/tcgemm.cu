/* tcgemm: C = A . B for prefill (m of 64 and more), float16, B stored n x k (a linear
 * layer's weight), on the tensor cores. Native CUDA (mma.sync, ldmatrix, cp.async: sm_80).
 *
 * Why another GEMM beside the portable mtgemm: at these sizes the product is bound by how
 * many bytes reach each SM per multiply, and by how many k steps are in flight. A BM x BN
 * tile reads (BM + BN) x 32 halves per step of 32 for BM x BN x 32 multiply-adds, so
 * tiles of 128 x 128 need half the L2 traffic of 64 x 64 per FLOP; and a tile of 128 x 128
 * x 32 is 16 KiB, so CUDA's 48 KiB of static shared memory holds three stages of it only
 * without the 8 halves of padding per row that mtgemm spends against bank conflicts.
 * Here rows are not padded: the four 16-byte chunks of each 64-byte row are stored in
 * the order chunk ^ ((row / 2) % 4), which puts the eight rows that one ldmatrix phase
 * reads (and the eight chunks that eight neighbouring cp.async write) on eight different
 * groups of banks. Warps own 64 x 64 or 64 x 32 (32 x ...) regions of C, so that the
 * ldmatrix traffic per mma stays below shared memory's bandwidth.
 *
 * Pipeline: STAGES buffers (as many as 48 KiB holds, up to 4); the copies of tile
 * t + STAGES - 1 are issued (cp.async, one commit group per tile) before tile t is
 * multiplied; one barrier per tile. Rows past m or n are copied from row m - 1 or n - 1
 * (in bounds) and never stored. Epilogue: straight from the accumulators (mma's C layout:
 * a lane holds rows g and g + 8, columns 2t and 2t + 1 of each 16 x 8 tile).
 *
 * Requires (manifest): A stored m x k, B stored n x k, k % 32 == 0 (whole, 16-byte
 * aligned steps).
 *
 * Split-K (CL > 1, sm_90): the CL blocks of a thread-block cluster take consecutive
 * ranges of k tiles, for the products whose tiles alone leave SMs idle or one block per
 * SM (m = 512, n = 2048: 128 tiles of 64 x 128); their partial sums meet in distributed
 * shared memory (the stage memory, reused), no workspace and no atomics.
 *
 * Defines (MB_ + the grid key): MB_BM (64 or 128), MB_BN (128), MB_WM, MB_WN (warps along
 * m and n), MB_CL. Groups: (ceil(m / BM), ceil(n / BN), batch * CL): the m tiles that
 * share a column tile of B run side by side, so B streams from memory once; threads:
 * (32 WM WN, 1, 1). */

#if MB_DTYPE != 1
#error "tcgemm is float16 only (tf32 tensor cores would miss an fp32 tolerance)"
#endif

#define BK 32
#define NTH (32 * MB_WM * MB_WN)
#define WTM (MB_BM / MB_WM) /* a warp's region of C */
#define WTN (MB_BN / MB_WN)
#define FM (WTM / 16)       /* its 16 x 8 tiles */
#define FN (WTN / 8)
#if WTM % 16 != 0 || WTN % 16 != 0
#error "a warp's region must be a whole number of 16 x 16 pieces"
#endif
#define TILE_ELEMS ((MB_BM + MB_BN) * BK)
#define LDE (MB_BN + 4) /* split-K partials, as floats in the stage memory */
#define STAGES_FIT (49152 / (TILE_ELEMS * 2))
#define STAGES (STAGES_FIT < 4 ? STAGES_FIT : 4)
#if STAGES < 2
#error "two stages do not fit in 48 KiB"
#endif

#if MB_CL > 1
#if MB_BM * LDE * 4 > STAGES * TILE_ELEMS * 2 || MB_BM % MB_CL != 0 || (MB_BM / MB_CL * MB_BN) % (4 * NTH) != 0
#error "split-K partials must fit the stage memory and split evenly"
#endif
#define MB_CLUSTER_DIMS __cluster_dims__(1, 1, MB_CL)
#else
#define MB_CLUSTER_DIMS
#endif

/* Element offset of chunk ch (8 halves) of row r in a tile of 32-half rows. */
__device__ __forceinline__ int tc_swz(int r, int ch) { return r * BK + ((ch ^ ((r >> 1) & 3)) << 3); }

extern "C" __global__ void MB_CLUSTER_DIMS __launch_bounds__(NTH)
    tcgemm(const T* __restrict__ a, const T* __restrict__ b, T* c, const T* __restrict__ bias, float* ws,
           const MBParams p) {
  MT_SHARED T smem[STAGES][TILE_ELEMS]; /* per stage: A's BM rows, then B's BN rows */
  const int tid = threadIdx.x;
  const int lane = tid % 32, warp = tid / 32;
  const int wm = warp % MB_WM, wn = warp / MB_WM;
  const int i0 = blockIdx.x * MB_BM, j0 = blockIdx.y * MB_BN;
  const int rank = blockIdx.z % MB_CL; /* in the cluster, whose dims are (1, 1, CL) */
  const int bi = blockIdx.z / MB_CL;
  const T* A = a + (long long)bi * p.stride_a;
  const T* B = b + (long long)bi * p.stride_b;
  /* This block's k tiles: the CL blocks of a cluster split them. */
  const int per = (p.k / BK + MB_CL - 1) / MB_CL;
  const int kt0 = rank * per;
  const int nk = max(0, min(p.k / BK - kt0, per));

  /* The chunks this thread copies per tile: rows clamped into the matrix. */
#define CHUNKS ((MB_BM + MB_BN) * 4)
#define PER ((CHUNKS + NTH - 1) / NTH)
  const T* src[PER];
  int dst[PER];
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int e = tid + q * NTH;
    const int r = e >> 2, ch = e & 3;
    dst[q] = e < CHUNKS ? tc_swz(r, ch) : -1;
    if (r < MB_BM)
      src[q] = A + (long long)min(i0 + r, p.m - 1) * p.lda + ch * 8;
    else
      src[q] = B + (long long)min(j0 + r - MB_BM, p.n - 1) * p.ldb + ch * 8;
  }
#define LOAD_TILE(kt, st)                                                                     \
  _Pragma("unroll") for (int q = 0; q < PER; ++q) if (dst[q] >= 0)                            \
      MT_COPY_VEC(smem[st], dst[q], src[q], (kt0 + (kt)) * BK);

  mt_acc acc[FM][FN];
#pragma unroll
  for (int fm = 0; fm < FM; ++fm)
#pragma unroll
    for (int fn = 0; fn < FN; ++fn) mt_zero(acc[fm][fn]);

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nk) LOAD_TILE(s, s)
    MT_COPY_COMMIT();
  }
  for (int kt = 0; kt < nk; ++kt) {
    /* Tile kt has landed once at most STAGES - 2 of this thread's groups are in flight;
     * the barrier shows every thread's copies and ends the reads of tile kt - 1, whose
     * buffer the next copies refill. */
    MT_COPY_WAIT(STAGES - 2);
    __syncthreads();
    if (kt + STAGES - 1 < nk) LOAD_TILE(kt + STAGES - 1, (kt + STAGES - 1) % STAGES)
    MT_COPY_COMMIT();
    const T* sa = smem[kt % STAGES];
    const T* sb = sa + MB_BM * BK;
#pragma unroll
    for (int kc = 0; kc < BK / 8; kc += 2) { /* 16 of k: chunks kc and kc + 1 */
      mt_a fa[FM];
      mt_b fb[FN];
#pragma unroll
      for (int fm = 0; fm < FM; ++fm) /* lanes 0-15: rows 0-15 at chunk kc; 16-31: at kc + 1 */
        mt_ldsm4(fa[fm].r, sa + tc_swz(wm * WTM + fm * 16 + (lane & 15), kc + (lane >> 4)), false);
#pragma unroll
      for (int fp = 0; fp < FN / 2; ++fp) { /* two 8-column tiles: matrices (j 0-7 | 8-15) x (kc | kc + 1) */
        unsigned r[4];
        mt_ldsm4(r, sb + tc_swz(wn * WTN + fp * 16 + (lane & 7) + ((lane >> 4) << 3), kc + ((lane >> 3) & 1)),
                 false);
        fb[2 * fp].r[0] = r[0];
        fb[2 * fp].r[1] = r[1];
        fb[2 * fp + 1].r[0] = r[2];
        fb[2 * fp + 1].r[1] = r[3];
      }
#pragma unroll
      for (int fm = 0; fm < FM; ++fm)
#pragma unroll
        for (int fn = 0; fn < FN; ++fn) mt_mma(acc[fm][fn], fa[fm], fb[fn]);
    }
  }
  MT_COPY_WAIT(0);

#if MB_CL == 1
#pragma unroll
  for (int fm = 0; fm < FM; ++fm)
#pragma unroll
    for (int fn = 0; fn < FN; ++fn)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int i = i0 + wm * WTM + fm * 16 + MT_ACC_ROW(lane, q);
        const int j = j0 + wn * WTN + fn * 8 + MT_ACC_COL(lane, q);
        if (i < p.m && j < p.n) MB_STORE_C(C_AT(bi, i, j), j, acc[fm][fn].v[q]);
      }
#else
  /* The partial sums into the stage memory as floats, then rank r of the cluster finishes
   * rows r, r + CL, ... of the tile from every block's partials (distributed shared memory,
   * 16 bytes a read, in rank order: deterministic). */
  __syncthreads(); /* every warp is done reading the stages */
  float* epi = reinterpret_cast<float*>(&smem[0][0]);
#pragma unroll
  for (int fm = 0; fm < FM; ++fm)
#pragma unroll
    for (int fn = 0; fn < FN; ++fn)
#pragma unroll
      for (int q = 0; q < 4; ++q)
        epi[(wm * WTM + fm * 16 + MT_ACC_ROW(lane, q)) * LDE + wn * WTN + fn * 8 + MT_ACC_COL(lane, q)] =
            acc[fm][fn].v[q];
  mb_cluster_sync();
  const unsigned base = mt_smem(epi);
#pragma unroll
  for (int e = 4 * tid; e < MB_BM / MB_CL * MB_BN; e += 4 * NTH) {
    const int r = rank + MB_CL * (e / MB_BN), col = e % MB_BN;
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int q = 0; q < MB_CL; ++q) {
      const float4 v = mb_ld_cluster4(base + 4u * (r * LDE + col), q);
      s[0] += v.x;
      s[1] += v.y;
      s[2] += v.z;
      s[3] += v.w;
    }
    const int i = i0 + r;
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (i < p.m && j0 + col + u < p.n) MB_STORE_C(C_AT(bi, i, j0 + col + u), j0 + col + u, s[u]);
  }
  mb_cluster_sync(); /* no block leaves while another still reads its shared memory */
#endif
}
