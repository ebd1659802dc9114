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
 * Pipeline: STAGES buffers (as many as 48 KiB holds, up to 4), all filled before the
 * loop (cp.async, one commit group per tile); the ldmatrix fragments are double-buffered,
 * those of the next 16 of k loaded while the mma of these 16 run, across tiles too; one
 * barrier per tile, before the fragments of tile t + 1 are loaded, after which tile t's
 * buffer (read by then) takes tile t + STAGES. Addresses stay 32-bit shared-window offsets
 * (mt_ldsm4_at, mt_copy16_at): rebuilt from pointers they cost more instructions than the
 * loop's mma (an H100's profile: the tensor pipe 49% busy before, 60% after). Rows past m
 * or n are copied from row m - 1 or n - 1 (in bounds) and never stored. Epilogue: straight from the accumulators (mma's C layout:
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
  const MBSplitK split = mb_split_k(p.k / BK, MB_CL);
  const int rank = split.rank, bi = split.bi, kt0 = split.kt0, nk = split.nk;
  const T* A = a + (long long)bi * p.stride_a;
  const T* B = b + (long long)bi * p.stride_b;

  /* The chunks this thread copies per tile (rows clamped into the matrix): their sources,
   * advanced by BK a tile, and their places in a stage as shared-window addresses, so that
   * the loop adds constants rather than rebuild addresses from pointers. */
#define CHUNKS ((MB_BM + MB_BN) * 4)
#define PER ((CHUNKS + NTH - 1) / NTH)
#define TILE_BYTES (TILE_ELEMS * 2)
  const unsigned s0 = mt_smem(&smem[0][0]);
  const T* src[PER];
  unsigned dst[PER];
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int e = tid + q * NTH;
    const int r = e >> 2, ch = e & 3;
    dst[q] = e < CHUNKS ? s0 + 2 * tc_swz(r, ch) : 0u;
    if (r < MB_BM)
      src[q] = A + (long long)min(i0 + r, p.m - 1) * p.lda + ch * 8 + kt0 * BK;
    else
      src[q] = B + (long long)min(j0 + r - MB_BM, p.n - 1) * p.ldb + ch * 8 + kt0 * BK;
  }
#define LOAD_TILE(st)                                                                        \
  {                                                                                          \
    _Pragma("unroll") for (int q = 0; q < PER; ++q) {                                        \
      if (CHUNKS % NTH == 0 || tid + q * NTH < CHUNKS) mt_copy16_at(dst[q] + (st) * TILE_BYTES, src[q]); \
      src[q] += BK;                                                                          \
    }                                                                                        \
  }

  /* This lane's ldmatrix rows for k chunks 0 and 1 (A) or 0 (B) of its warp's first 16
   * rows, in bytes from a stage's start: the next 16 rows are 16 * 64 bytes on (their
   * (row / 2) % 4 is the same), and chunks 2 and 3 are the same offsets XOR 32 (the chunk's
   * bit 1 is the offset's bit 5, and the swizzle only XORs chunks). */
  const unsigned aoff = 2 * tc_swz(wm * WTM + (lane & 15), lane >> 4);
  const unsigned boff = 2 * (MB_BM * BK + tc_swz(wn * WTN + (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1));

  mt_acc acc[FM][FN];
#pragma unroll
  for (int fm = 0; fm < FM; ++fm)
#pragma unroll
    for (int fn = 0; fn < FN; ++fn) mt_zero(acc[fm][fn]);

  /* Fragments for step ks (16 of k) of the tile in stage `st`. */
  mt_a fa[2][FM];
  mt_b fb[2][FN];
#define LOAD_FRAGS(buf, st, ks)                                                               \
  {                                                                                          \
    const unsigned base = s0 + (st) * TILE_BYTES, x = (ks) * 32;                             \
    _Pragma("unroll") for (int fm = 0; fm < FM; ++fm)                                        \
        mt_ldsm4_at(fa[buf][fm].r, base + ((aoff ^ x) + fm * 16 * 2 * BK), false);           \
    _Pragma("unroll") for (int fp = 0; fp < FN / 2; ++fp) {                                  \
      unsigned r4[4];                                                                        \
      mt_ldsm4_at(r4, base + ((boff ^ x) + fp * 16 * 2 * BK), false);                        \
      fb[buf][2 * fp].r[0] = r4[0];                                                          \
      fb[buf][2 * fp].r[1] = r4[1];                                                          \
      fb[buf][2 * fp + 1].r[0] = r4[2];                                                      \
      fb[buf][2 * fp + 1].r[1] = r4[3];                                                      \
    }                                                                                        \
  }

  /* Pipeline: every stage is filled before the loop (tile s in stage s). In tile kt, the
   * fragments of the next 16 of k are loaded while the mma of these 16 run; before the
   * last step's, tile kt + 1 must have landed: the barrier there shows every thread's
   * copies, and since every warp has by then read all of tile kt, its stage takes tile
   * kt + STAGES at once. So STAGES tiles are in flight, each issued STAGES - 1 tiles of
   * work before it is read. */
#pragma unroll
  for (int s = 0; s < STAGES; ++s) {
    if (s < nk) LOAD_TILE(s)
    MT_COPY_COMMIT();
  }
  MT_COPY_WAIT(STAGES - 1);
  __syncthreads();
  if (nk > 0) LOAD_FRAGS(0, 0, 0)
  int st = 0; /* tile kt's stage */
  for (int kt = 0; kt < nk; ++kt) {
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      if (ks == BK / 16 - 1) {
        MT_COPY_WAIT(STAGES - 2);
        __syncthreads();
        if (kt + STAGES < nk) LOAD_TILE(st)
        MT_COPY_COMMIT();
        const int next = st + 1 == STAGES ? 0 : st + 1;
        if (kt + 1 < nk) LOAD_FRAGS((ks + 1) % 2, next, 0)
      } else {
        LOAD_FRAGS((ks + 1) % 2, st, ks + 1)
      }
#pragma unroll
      for (int fm = 0; fm < FM; ++fm)
#pragma unroll
        for (int fn = 0; fn < FN; ++fn) mt_mma(acc[fm][fn], fa[ks % 2][fm], fb[ks % 2][fn]);
    }
    st = st + 1 == STAGES ? 0 : st + 1;
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
  /* The partial sums into the stage memory as floats, added up over the cluster (common.h). */
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
  mb_cluster_sum<MB_BM, MB_BN, LDE, MB_CL, NTH>(mt_smem(epi), rank, [&](int r, int col, const float* s) {
    const int i = i0 + r;
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (i < p.m && j0 + col + u < p.n) MB_STORE_C(C_AT(bi, i, j0 + col + u), j0 + col + u, s[u]);
  });
#endif
}
