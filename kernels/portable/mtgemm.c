/* mtgemm: C = A . B on the matrix tile (kernels/README.md, "The matrix tile"), BM x BN
 * outputs per group, k in steps of BK through group memory in a pipeline of STAGES
 * buffers, optionally split along k across SPLITS groups. One body for the prefill
 * family (mtgemm.toml: large tiles) and the skinny one (mtskinny.toml: BM of 16 to 64
 * rows for m = 2 .. 64, split-K where n is small).
 *
 * Work: the group's 32 * WM * WN threads are WM x WN SIMD groups of 32 lanes on CUDA and
 * Metal, each owning a (BM / WM) x (BN / WN) region of C as FM x FN matrix tiles. On
 * OpenCL a SIMD group is one work-item (MT_SPLIT = 32 of them per 32 threads): each
 * region is divided among up to 32 of them (SPM along m, SPN along n), so every
 * work-item holds a few tiles, not one work-item all of them.
 *
 * Staging: A's BM x BK tile as rows of k (As[i][kk]); B's as it is stored, rows of k for
 * nt (Bs[j][kk], B stored n x k) or rows of n for nn (Bs[kk][j], B stored k x n), so
 * that the copies run along memory: MT_COPY_VEC (16 bytes; CUDA's cp.async) where the
 * pitch, batch offset and extent allow, else element by element; everything past m, n
 * or the split's end of k is zero. A stored k x m (trans_a) is transposed on the way in,
 * element by element. Rows are padded by 8 elements (ldmatrix reads 16-byte rows, and
 * the padding spreads a tile's rows over banks).
 *
 * Pipeline: tile t + NST - 1 is copied while tile t is multiplied. NST, the buffers in
 * use, is STAGES or fewer where group memory is short (MT_GROUP_BYTES: 48 KiB on CUDA,
 * 32 KiB where group memory holds floats, Metal and OpenCL), and where it holds floats
 * and a stage of BK would not fit at all, the k step is BK / 2. On CUDA the copies are asynchronous
 * (cp.async groups, MT_COPY_WAIT); elsewhere they complete as they are issued and the
 * same code is a plain loop with one barrier per tile.
 *
 * Epilogue: the accumulators go through group memory (the stage buffers, as floats) in
 * chunks of CH rows, and the group writes each chunk to C along n. With SPLITS > 1 each
 * group puts its partial sums into the workspace (WS_PUT), counts itself in on its
 * tile's counter, and the last to arrive takes the SPLITS partials back in split order
 * (WS_TAKE), so the sum does not depend on arrival order, stores C and resets the
 * counter: the workspace is left zero (splitk.c has the argument in full).
 *
 * Workspace (floats, SPLITS > 1): batch * SPLITS * m * n partials, partial (bi, s, i, j)
 * at ((bi * SPLITS + s) * m + i) * n + j, then one int counter per output tile.
 *
 * Defines (MB_ + the grid key): MB_BM, MB_BN, MB_BK, MB_WM, MB_WN, MB_STAGES, MB_SPLITS,
 * MB_layout_nt or MB_layout_nn.
 * Groups: (ceil(m / BM), ceil(n / BN), batch * SPLITS): the m tiles that share a column
 * of B run side by side, so B is read from memory once; threads: (32 * WM * WN, 1, 1). */

#if !MB_layout_nt && !MB_layout_nn
#error "define layout_nt or layout_nn"
#endif

#define NT (32 * MB_WM * MB_WN) /* threads */
#define WTM (MB_BM / MB_WM)     /* a 32-lane SIMD group's region */
#define WTN (MB_BN / MB_WN)
#if WTM % TILE_M != 0 || WTN % TILE_N != 0 || MB_BK % 16 != 0
#error "BM / WM must be a multiple of TILE_M, BN / WN of TILE_N, BK of 16"
#endif

/* Group memory of one stage for a k step of bk: A's rows, then B's, padded by 8. */
#if MB_layout_nt
#define STAGE_ELEMS_FOR(bk) (MB_BM * ((bk) + 8) + MB_BN * ((bk) + 8))
#else
#define STAGE_ELEMS_FOR(bk) (MB_BM * ((bk) + 8) + (bk) * (MB_BN + 8))
#endif
/* BK, or half of it where group memory holds floats and a stage of BK would not fit. */
#if STAGE_ELEMS_FOR(MB_BK) * MT_T_BYTES <= MT_GROUP_BYTES
#define BK MB_BK
#elif MB_BK % 32 == 0 && STAGE_ELEMS_FOR(MB_BK / 2) * MT_T_BYTES <= MT_GROUP_BYTES
#define BK (MB_BK / 2)
#else
#error "one stage does not fit in group memory"
#endif
#define FMW (WTM / TILE_M) /* tiles of a region */
#define FNW (WTN / TILE_N)
#define SPM (MT_SPLIT < FMW ? MT_SPLIT : FMW) /* SIMD groups along m and n in a region */
#define SPN ((MT_SPLIT / SPM) < FNW ? (MT_SPLIT / SPM) : FNW)
#if FMW % SPM != 0 || FNW % SPN != 0
#error "the tiles of a region must divide evenly among its SIMD groups"
#endif
#define FM (FMW / SPM) /* tiles of one SIMD group */
#define FN (FNW / SPN)

#define LDA (BK + 8)
#define A_ELEMS (MB_BM * LDA)
#if MB_layout_nt
#define LDB (BK + 8)
#else
#define LDB (MB_BN + 8)
#endif
#define STAGE_ELEMS STAGE_ELEMS_FOR(BK)
#define STAGE_BYTES (STAGE_ELEMS * MT_T_BYTES)
#if MB_STAGES * STAGE_BYTES <= MT_GROUP_BYTES
#define NST MB_STAGES
#else
#define NST (MT_GROUP_BYTES / STAGE_BYTES)
#endif

/* Epilogue chunks: CH rows of BN floats (pitch LDE) in the stage memory, at least TILE_M
 * rows, for which the stage memory is made large enough. */
#define LDE (MB_BN + 4)
#define EPI_MIN_ELEMS ((TILE_M * LDE * 4 + MT_T_BYTES - 1) / MT_T_BYTES)
#define SMEM_ELEMS (NST * STAGE_ELEMS > EPI_MIN_ELEMS ? NST * STAGE_ELEMS : EPI_MIN_ELEMS)
#define CH_FIT ((SMEM_ELEMS * MT_T_BYTES / 4) / LDE / TILE_M * TILE_M)
#define CH (CH_FIT < MB_BM ? CH_FIT : MB_BM)

MB_KERNEL(mtgemm) {
  MT_SHARED MT_T smem[SMEM_ELEMS];
#if MB_SPLITS > 1
  SHARED int last;
#endif
  const int t = LOCAL_LINEAR_ID;
  const int i0 = GROUP_ID(0) * MB_BM;
  const int j0 = GROUP_ID(1) * MB_BN;
  const int bi = GROUP_ID(2) / MB_SPLITS;
  const int split = GROUP_ID(2) % MB_SPLITS;
  /* This split's range of k: a whole number of BK tiles (the last may be short). */
  const int kc = ((p.k + MB_SPLITS - 1) / MB_SPLITS + BK - 1) / BK * BK;
  const int kbeg = split * kc;
  const int kend = kbeg + kc < p.k ? kbeg + kc : p.k;
  const int nk = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;

  const int a_base = bi * p.stride_a;
  const int b_base = bi * p.stride_b;
  const int va = !p.trans_a && p.lda % MT_VEC == 0 && a_base % MT_VEC == 0;
  const int vb = p.ldb % MT_VEC == 0 && b_base % MT_VEC == 0;

  /* This SIMD group's tiles: region (wm, wn), share (sm, sn) of it. */
  const int sg = SIMD_GROUP;
  const int region = sg / MT_SPLIT;
  const int share = sg % MT_SPLIT;
  const int active = share < SPM * SPN;
  const int row0 = (region % MB_WM) * WTM + (share % SPM) * FM * TILE_M;
  const int col0 = (region / MB_WM) * WTN + ((share / SPM) % SPN) * FN * TILE_N;

  MT_ACC_T acc[FM * FN];
  for (int e = 0; e < FM * FN; ++e) MT_ZERO(acc[e]);

/* Copies k tile `kt` of this split into stage buffer `buf`. */
#define LOAD_TILE(kt, buf)                                                                                    \
  {                                                                                                           \
    SHARED_PTR MT_T* as_ = smem + (buf) * STAGE_ELEMS;                                                        \
    SHARED_PTR MT_T* bs_ = as_ + A_ELEMS;                                                                     \
    const int k0_ = kbeg + (kt) * BK;                                                                      \
    if (va) {                                                                                                 \
      for (int e = t; e < MB_BM * (BK / MT_VEC); e += NT) {                                                \
        const int r = e / (BK / MT_VEC), q = (e % (BK / MT_VEC)) * MT_VEC;                              \
        const int gi = i0 + r, gk = k0_ + q;                                                                  \
        if (gi < p.m && gk + MT_VEC <= kend) {                                                                \
          MT_COPY_VEC(as_, r * LDA + q, a, a_base + gi * p.lda + gk);                                         \
        } else {                                                                                              \
          for (int v = 0; v < MT_VEC; ++v) {                                                                  \
            if (gi < p.m && gk + v < kend) MT_COPY(as_, r * LDA + q + v, a, a_base + gi * p.lda + gk + v);    \
            else MT_PUT(as_, r * LDA + q + v, 0.0f);                                                          \
          }                                                                                                   \
        }                                                                                                     \
      }                                                                                                       \
    } else {                                                                                                  \
      /* Along i when A is stored k x m, so that neighbouring threads read neighbouring elements. */         \
      for (int e = t; e < MB_BM * BK; e += NT) {                                                           \
        const int r = p.trans_a ? e % MB_BM : e / BK, q = p.trans_a ? e / MB_BM : e % BK;               \
        const int gi = i0 + r, gk = k0_ + q;                                                                  \
        if (gi < p.m && gk < kend) MT_COPY(as_, r * LDA + q, a, A_AT(bi, gi, gk));                            \
        else MT_PUT(as_, r * LDA + q, 0.0f);                                                                  \
      }                                                                                                       \
    }                                                                                                         \
    LOAD_B(bs_, k0_)                                                                                          \
  }

#if MB_layout_nt
/* Bs[j][kk] from B stored n x k: along k. */
#define LOAD_B(bs_, k0_)                                                                                      \
  for (int e = t; e < MB_BN * (BK / MT_VEC); e += NT) {                                                    \
    const int r = e / (BK / MT_VEC), q = (e % (BK / MT_VEC)) * MT_VEC;                                  \
    const int gj = j0 + r, gk = (k0_) + q;                                                                    \
    if (vb && gj < p.n && gk + MT_VEC <= kend) {                                                              \
      MT_COPY_VEC(bs_, r * LDB + q, b, b_base + gj * p.ldb + gk);                                             \
    } else {                                                                                                  \
      for (int v = 0; v < MT_VEC; ++v) {                                                                      \
        if (gj < p.n && gk + v < kend) MT_COPY(bs_, r * LDB + q + v, b, b_base + gj * p.ldb + gk + v);        \
        else MT_PUT(bs_, r * LDB + q + v, 0.0f);                                                              \
      }                                                                                                       \
    }                                                                                                         \
  }
#else
/* Bs[kk][j] from B stored k x n: along n. */
#define LOAD_B(bs_, k0_)                                                                                      \
  for (int e = t; e < BK * (MB_BN / MT_VEC); e += NT) {                                                    \
    const int r = e / (MB_BN / MT_VEC), q = (e % (MB_BN / MT_VEC)) * MT_VEC;                                  \
    const int gk = (k0_) + r, gj = j0 + q;                                                                    \
    if (vb && gk < kend && gj + MT_VEC <= p.n) {                                                              \
      MT_COPY_VEC(bs_, r * LDB + q, b, b_base + gk * p.ldb + gj);                                             \
    } else {                                                                                                  \
      for (int v = 0; v < MT_VEC; ++v) {                                                                      \
        if (gk < kend && gj + v < p.n) MT_COPY(bs_, r * LDB + q + v, b, b_base + gk * p.ldb + gj + v);        \
        else MT_PUT(bs_, r * LDB + q + v, 0.0f);                                                              \
      }                                                                                                       \
    }                                                                                                         \
  }
#endif

/* acc += the stage buffer's A tile . B tile, TILE_K at a time. */
#define COMPUTE(buf)                                                                                          \
  if (active) {                                                                                               \
    SHARED_PTR MT_T* as_ = smem + (buf) * STAGE_ELEMS;                                                        \
    SHARED_PTR MT_T* bs_ = as_ + A_ELEMS;                                                                     \
    for (int kk = 0; kk < BK; kk += TILE_K) {                                                              \
      MT_A_T fa[FM];                                                                                          \
      MT_B_T fb[FN];                                                                                          \
      for (int fm = 0; fm < FM; ++fm) MT_LOAD_A(fa[fm], as_, (row0 + fm * TILE_M) * LDA + kk, LDA);           \
      for (int fn = 0; fn < FN; ++fn) LOAD_B_FRAG(fb[fn], bs_, col0 + fn * TILE_N, kk);                       \
      for (int fm = 0; fm < FM; ++fm)                                                                         \
        for (int fn = 0; fn < FN; ++fn) MT_MMA(acc[fm * FN + fn], fa[fm], fb[fn]);                            \
    }                                                                                                         \
  }
#if MB_layout_nt
#define LOAD_B_FRAG(f, bs_, j, kk) MT_LOAD_BT((f), (bs_), (j) * LDB + (kk), LDB)
#else
#define LOAD_B_FRAG(f, bs_, j, kk) MT_LOAD_B((f), (bs_), (kk) * LDB + (j), LDB)
#endif

#if NST == 1
  for (int kt = 0; kt < nk; ++kt) {
    BARRIER(); /* every thread is done with the previous tile */
    LOAD_TILE(kt, 0)
    MT_COPY_COMMIT();
    MT_COPY_WAIT(0);
    BARRIER();
    COMPUTE(0)
  }
#else
  for (int st = 0; st < NST - 1; ++st) {
    if (st < nk) LOAD_TILE(st, st)
    MT_COPY_COMMIT();
  }
  for (int kt = 0; kt < nk; ++kt) {
    /* Tile kt has landed once all but this thread's NST - 2 latest groups have; the
     * barrier makes every thread's copies visible and ends every thread's work on tile
     * kt - 1, whose buffer the copy below refills. */
    MT_COPY_WAIT(NST - 2);
    BARRIER();
    if (kt + NST - 1 < nk) LOAD_TILE(kt + NST - 1, (kt + NST - 1) % NST)
    MT_COPY_COMMIT();
    COMPUTE(kt % NST)
  }
#endif
  MT_COPY_WAIT(0); /* nothing may land in the stage memory the epilogue reuses */
  BARRIER();

  /* ---- epilogue: CH rows at a time through the stage memory, as floats ---- */
  SHARED_PTR float* epi = (SHARED_PTR float*)smem;
#if MB_SPLITS > 1
  GLOBAL_PTR float* part = ws + (GROUP_ID(2) * p.m) * p.n; /* (bi * SPLITS + split) * m * n */
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + p.batch * MB_SPLITS * p.m * p.n) +
                            (bi * NUM_GROUPS(1) + GROUP_ID(1)) * NUM_GROUPS(0) + GROUP_ID(0);
#endif
  for (int c0 = 0; c0 < MB_BM; c0 += CH) {
    if (active) {
      for (int fm = 0; fm < FM; ++fm) {
        const int r = row0 + fm * TILE_M;
        if (r >= c0 && r < c0 + CH)
          for (int fn = 0; fn < FN; ++fn) MT_STORE(acc[fm * FN + fn], epi, (r - c0) * LDE + col0 + fn * TILE_N, LDE);
      }
    }
    BARRIER();
    /* The last chunk may be short: rows past BM are the next group's. */
    const int rows = MB_BM - c0 < CH ? MB_BM - c0 : CH;
    for (int e = t; e < rows * MB_BN; e += NT) {
      const int gi = i0 + c0 + e / MB_BN, gj = j0 + e % MB_BN;
      if (gi < p.m && gj < p.n) {
#if MB_SPLITS > 1
        WS_PUT(part + gi * p.n + gj, epi[(e / MB_BN) * LDE + e % MB_BN]);
#else
        MB_STORE_C(C_AT(bi, gi, gj), gj, epi[(e / MB_BN) * LDE + e % MB_BN]);
#endif
      }
    }
    BARRIER();
  }

#if MB_SPLITS > 1
  /* Count in; the last group adds the partials in split order (splitk.c: why this needs
   * no cross-group memory ordering, and why the counter ends at 0). */
  WS_ARRIVE(counter, MB_SPLITS, last);
  if (last) {
    /* A column per thread, four rows at a time, so that their takes overlap. */
    GLOBAL_PTR float* parts = ws + (bi * MB_SPLITS) * p.m * p.n;
    for (int e = t; e < MB_BN; e += NT) {
      const int gj = j0 + e;
      for (int gi = i0; gj < p.n && gi < i0 + MB_BM && gi < p.m; gi += 4) {
        const int count = p.m - gi < 4 ? p.m - gi : 4;
        const MBSum4 sum = WS_TAKE_SUM4(parts + gi * p.n + gj, p.n, count, p.m * p.n, MB_SPLITS);
        for (int u = 0; u < count; ++u) MB_STORE_C(C_AT(bi, gi + u, gj), gj, sum.v[u]);
      }
    }
    if (t == 0) ATOMIC_STORE_ZERO(counter);
  }
#endif
}
