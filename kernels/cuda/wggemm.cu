/* wggemm: C = A . B for prefill (m of 64 and more), float16, with the Hopper warpgroup
 * instruction (wgmma.mma_async, sm_90a), for B stored n x k (layout nt, a linear layer's
 * weight) or k x n (layout nn, the fused QKV projection's).
 *
 * Why beside tcgemm: mma.sync takes its operands from registers, so each warp first reads
 * them from group memory with ldmatrix, and those loads and their address arithmetic
 * share the issue slots with the mma: on an H100 tcgemm keeps the tensor pipe about 60%
 * busy. wgmma reads both tiles from group memory itself, through matrix descriptors, and
 * runs asynchronously: a warpgroup (4 warps) issues a whole tile's 4 x FN instructions and
 * goes on to copy the next tiles while the tensor cores work. The tiles are larger too
 * (64 x 128 per warpgroup and instruction, k 64 per stage), and the stages live in
 * dynamic group memory (up to 227 KiB) rather than the 48 KiB tcgemm may declare.
 *
 * Layout of a stage: A's BM rows, each the 64 halves of this k tile (128 bytes) in the
 * 128-byte swizzle that wgmma reads (cuda.h, wg_desc: chunk c of row r at chunk c ^ (r %
 * 8)), then B's tile in the same swizzle: for nt, BN rows of 64 halves of k (K-major, as
 * A); for nn, as B is stored, BN / 64 blocks of 64 columns, each the tile's 64 rows of k
 * of 128 bytes (MN-major, wg_desc_mn, the blocks 8 KiB apart), which wgmma reads
 * transposed. Every stage starts 1024-byte aligned. cp.async copies the chunks, eight
 * neighbouring threads one row's 128 bytes (of A, of B nt) and BN / 8 one row of k of B
 * nn. Rows past m or n are copied from row m - 1 or n - 1, and for nn the columns past n
 * from the last 8 (all in bounds); none of them is stored.
 *
 * Pipeline over ST stages (as many as fit, up to 6), k tile t in stage t % ST, with H = W + 1
 * stages held by the tensor cores: in iteration t, a thread waits for its copies of tile
 * t, fences them for the async proxy, and the barrier shows everyone's; the copies of tile
 * t + ST - H then go into the stage of tile t - H, which every warpgroup has finished
 * reading (each waited for it in iteration t - 1, before this barrier); then the
 * warpgroup issues tile t's wgmma and waits until at most W groups are in flight. W = 1
 * keeps the tensor cores fed across the barrier; W = 0 frees one more stage for copies,
 * ST - 1 tiles in flight rather than ST - 2, for products bound by the bytes that reach
 * each SM from L2 (on an H100, 128 x 256 tiles with W = 1 kept 96 KiB in flight and
 * fetched about 21 bytes a clock per SM; benchmarks/CUDA.md).
 * Epilogue: straight from the accumulators.
 *
 * Split-K (CL > 1): the CL blocks of a thread-block cluster take consecutive ranges of k
 * tiles, for products with too few tiles to fill the GPU (m = 512, n = 2048); their
 * partial sums meet in distributed shared memory (the stage memory, reused).
 *
 * Requires (manifest): the device trait warpgroup_mma (compute capability 9.0); A stored
 * m x k, k % 64 == 0; for nn, n % 8 == 0 (B's rows of whole 16-byte chunks).
 *
 * Defines (MB_ + the grid key): MB_layout_nt or MB_layout_nn, MB_BM (64 x warpgroups),
 * MB_BN (128 x FN), MB_W, MB_CL.
 * Groups: (ceil(m / BM), ceil(n / BN), batch * CL), so the m tiles that share a column
 * tile of B run side by side and B streams from memory once; threads: (2 BM, 1, 1). */

#if MB_DTYPE != 1
#error "wggemm is float16 only"
#endif
#if !MB_layout_nt && !MB_layout_nn
#error "define layout_nt or layout_nn"
#endif

#define BK 64                /* halves of k per stage: one 128-byte swizzled row */
#define NWG (MB_BM / 64)     /* warpgroups, each owning 64 rows of the tile */
#define NTH (128 * NWG)
#define FN (MB_BN / WG_N)    /* wgmma instructions per 16 of k, side by side along n */
#define ROW_BYTES (BK * 2)
#define STAGE_BYTES ((MB_BM + MB_BN) * ROW_BYTES)
/* An SM has 228 KiB of group memory, 1 KiB of which a block reserves; 1 KiB more here lets
 * the stages start 1024-byte aligned. One block per SM: its 4 or 8 warps issue enough. */
#define BUDGET (233472 - 2048)
#define ST_FIT (BUDGET / STAGE_BYTES)
#define ST (ST_FIT < 6 ? ST_FIT : 6)
#define HELD (MB_W + 1)
#if ST < HELD + 2
#error "too few stages fit"
#endif
#define LDE (MB_BN + 4) /* split-K partials, as floats in the stage memory */
#define STAGE_MEM (ST * STAGE_BYTES)
#define PART_MEM (MB_CL > 1 ? MB_BM * LDE * 4 : 0)
MB_DYNAMIC_SHARED((STAGE_MEM > PART_MEM ? STAGE_MEM : PART_MEM) + 1024);

#if MB_CL > 1
#if PART_MEM > BUDGET || MB_BM % MB_CL != 0 || (MB_BM / MB_CL * MB_BN) % (4 * NTH) != 0
#error "split-K partials must fit the group memory and split evenly"
#endif
#define MB_CLUSTER_DIMS __cluster_dims__(1, 1, MB_CL)
#else
#define MB_CLUSTER_DIMS
#endif

extern "C" __global__ void MB_CLUSTER_DIMS __launch_bounds__(NTH, 1)
    wggemm(const T* __restrict__ a, const T* __restrict__ b, T* c, const T* __restrict__ bias, float* ws,
           const MBParams p) {
  extern __shared__ unsigned char wg_shared[];
  const unsigned s0 = (mt_smem(wg_shared) + 1023u) & ~1023u;
  const int tid = threadIdx.x;
  const int lane = tid % 32, warp = tid / 32, wg = warp / 4;
  const int i0 = blockIdx.x * MB_BM, j0 = blockIdx.y * MB_BN;
  const MBSplitK split = mb_split_k(p.k / BK, MB_CL);
  const int rank = split.rank, bi = split.bi, kt0 = split.kt0, nk = split.nk;
  const T* A = a + (long long)bi * p.stride_a;
  const T* B = b + (long long)bi * p.stride_b;

  /* The chunks of A (and of B nt) this thread copies per tile: chunk e is row e / 8's chunk
   * e % 8. Since NTH / 8 rows separate a thread's chunks, a multiple of 8, they share r % 8
   * and with it the swizzle: their places in a stage are one offset apart. */
#if MB_layout_nt
#define ROWS (MB_BM + MB_BN)
#else
#define ROWS MB_BM
#endif
#define PER (ROWS * 8 / NTH)
#if (ROWS * 8) % NTH != 0 || NTH % 64 != 0
#error "a stage's chunks must split evenly over the threads"
#endif
  const unsigned dst0 = s0 + (tid >> 3) * ROW_BYTES + (((tid & 7) ^ ((tid >> 3) & 7)) << 4);
  const T* src[PER];
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int r = (tid >> 3) + q * (NTH / 8), ch = tid & 7;
    if (r < MB_BM)
      src[q] = A + (long long)min(i0 + r, p.m - 1) * p.lda + ch * 8 + kt0 * BK;
    else
      src[q] = B + (long long)min(j0 + r - MB_BM, p.n - 1) * p.ldb + ch * 8 + kt0 * BK;
  }
#if MB_layout_nn
  /* B nn: chunk e of the tile is row of k e / CPR's chunk e % CPR along n, so this thread
   * copies chunk nc of rows kr0, kr0 + RPQ, ... into block nc / 8 of the stage's B. */
#define CPR (MB_BN / 8)
#define RPQ (NTH / CPR)
#define PER_B (BK / RPQ)
#if NTH % CPR != 0 || BK % RPQ != 0
#error "B's chunks must split evenly over the threads"
#endif
  const int nc = tid % CPR, kr0 = tid / CPR;
  const unsigned dst_b = s0 + MB_BM * ROW_BYTES + (nc / 8) * (BK * ROW_BYTES) + kr0 * ROW_BYTES;
  const T* src_b[PER_B];
#pragma unroll
  for (int q = 0; q < PER_B; ++q)
    src_b[q] = B + (long long)(kt0 * BK + kr0 + q * RPQ) * p.ldb + min(j0 + nc * 8, p.n - 8);
  const long long b_tile = (long long)BK * p.ldb;
#define LOAD_B(st)                                                                           \
  _Pragma("unroll") for (int q = 0; q < PER_B; ++q) {                                        \
    const int kr = kr0 + q * RPQ;                                                            \
    mt_copy16_at(dst_b + (st) * STAGE_BYTES + q * RPQ * ROW_BYTES + (((nc % 8) ^ (kr % 8)) << 4), \
                 src_b[q]);                                                                  \
    src_b[q] += b_tile;                                                                      \
  }
#else
#define LOAD_B(st)
#endif
#define LOAD_TILE(st)                                                                        \
  {                                                                                          \
    _Pragma("unroll") for (int q = 0; q < PER; ++q) {                                        \
      mt_copy16_at(dst0 + (st) * STAGE_BYTES + q * (NTH / 8) * ROW_BYTES, src[q]);           \
      src[q] += BK;                                                                          \
    }                                                                                        \
    LOAD_B(st)                                                                               \
  }

  float acc[FN][64];
#pragma unroll
  for (int f = 0; f < FN; ++f)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[f][i] = 0.0f;

  /* This warpgroup's A rows and the B rows of each instruction, at k 0 of stage 0. */
  const unsigned a_at = s0 + wg * 64 * ROW_BYTES;
  const unsigned b_at = s0 + MB_BM * ROW_BYTES;

#pragma unroll
  for (int s = 0; s < ST - HELD; ++s) {
    if (s < nk) LOAD_TILE(s)
    MT_COPY_COMMIT();
  }
  int st = 0;             /* tile kt's stage */
  int fill = ST - HELD;   /* the stage that tile kt + ST - HELD goes to */
  for (int kt = 0; kt < nk; ++kt) {
    MT_COPY_WAIT(ST - HELD - 1);
    wg_fence_shared();
    __syncthreads();
    if (kt + ST - HELD < nk) LOAD_TILE(fill)
    MT_COPY_COMMIT();
    wg_fence();
#pragma unroll
    for (int s = 0; s < BK / 16; ++s)
#pragma unroll
      for (int f = 0; f < FN; ++f)
#if MB_layout_nt
        wg_mma<0>(acc[f], wg_desc(a_at + st * STAGE_BYTES + s * 32),
                  wg_desc(b_at + st * STAGE_BYTES + f * WG_N * ROW_BYTES + s * 32));
#else
        wg_mma<1>(acc[f], wg_desc(a_at + st * STAGE_BYTES + s * 32),
                  wg_desc_mn(b_at + st * STAGE_BYTES + f * (WG_N / 64) * BK * ROW_BYTES + s * 16 * ROW_BYTES,
                             BK * ROW_BYTES));
#endif
    wg_commit();
    wg_wait<MB_W>();
    st = st + 1 == ST ? 0 : st + 1;
    fill = fill + 1 == ST ? 0 : fill + 1;
  }
  wg_wait<0>();
#pragma unroll
  for (int f = 0; f < FN; ++f) wg_hold(acc[f]);
  MT_COPY_WAIT(0);

  const int row0 = wg * 64 + (warp % 4) * 16; /* this warp's rows of the tile */
#if MB_CL == 1
#pragma unroll
  for (int f = 0; f < FN; ++f)
#pragma unroll
    for (int e = 0; e < 64; ++e) {
      const int i = i0 + row0 + MT_ACC_ROW(lane, e % 4);
      const int j = j0 + f * WG_N + 8 * (e / 4) + MT_ACC_COL(lane, e % 4);
      if (i < p.m && j < p.n) MB_STORE_C(C_AT(bi, i, j), j, acc[f][e]);
    }
#else
  /* The partial sums into the stage memory as floats, added up over the cluster (common.h). */
  __syncthreads(); /* every copy has landed and every warpgroup is done reading the stages */
  float* epi = reinterpret_cast<float*>(wg_shared + (s0 - mt_smem(wg_shared)));
#pragma unroll
  for (int f = 0; f < FN; ++f)
#pragma unroll
    for (int e = 0; e < 64; ++e)
      epi[(row0 + MT_ACC_ROW(lane, e % 4)) * LDE + f * WG_N + 8 * (e / 4) + MT_ACC_COL(lane, e % 4)] = acc[f][e];
  mb_cluster_sum<MB_BM, MB_BN, LDE, MB_CL, NTH>(s0, rank, [&](int r, int col, const float* s) {
    const int i = i0 + r;
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (i < p.m && j0 + col + u < p.n) MB_STORE_C(C_AT(bi, i, j0 + col + u), j0 + col + u, s[u]);
  });
#endif
}
