/* tilegemv: C(1 x n) = A(1 x k) . B, one threadgroup per column tile of BN = 64 .. 256
 * outputs, one batch entry per GROUP_ID(2). Three techniques, each a grid parameter:
 *
 * - wide column tiles: BN outputs per group, so A's chunk (below) and the group's
 *   set-up are shared by many outputs;
 * - STAGE = 1: A (the 1 x k activation row) is staged in threadgroup memory, KC floats
 *   at a time (converted from half once), so the group reads it from device memory once
 *   per chunk instead of once per SIMD group; STAGE = 0 reads it from device memory;
 * - vec4 loads of both operands (LOAD4_IF): taken when the run-time alignment test
 *   passes, else the same loop reads four scalars, so any k, n and pitch works.
 *
 * layout_nt (B stored n x k): the group's NSG SIMD groups each own ROWS = BN / NSG rows
 * (interleaved: SIMD group g has rows g, g + NSG, ...). Its lanes split k, four elements
 * per lane and step, each FLOAT4 of A reused for all ROWS rows; every row is reduced by
 * SIMD_SUM and stored by lane 0. No threadgroup memory beyond A's chunk.
 *
 * layout_nn (B stored k x n): BN / 4 threads across n (four columns each, coalesced
 * FLOAT4 loads along n), KSL = TG * 4 / BN slices of threads split k; the slices are
 * summed in threadgroup memory.
 *
 * On OpenCL, SIMD_WIDTH is 1: every thread is a SIMD group, so nt gives each thread
 * whole rows (ROWS is then ceil(BN / TG)); nn does not use SIMD groups.
 *
 * Tails: rows past n (nt) are read from row n - 1 and never stored; columns past n (nn)
 * are neither read nor stored; the last k % 4 elements go through a scalar loop (nt) or
 * are ordinary rows of k (nn).
 *
 * Defines (MB_ + the grid key): MB_BN, MB_TG, MB_STAGE (0/1), MB_KC (floats of A per
 * chunk, a multiple of 4), MB_layout_nt or MB_layout_nn.
 * Groups: (ceil(n / BN), 1, batch); threads: (TG, 1, 1). Requires m == 1. */

#if !MB_layout_nt && !MB_layout_nn
#error "define layout_nt or layout_nn"
#endif
#if MB_STAGE && MB_KC % 4 != 0
#error "KC must be a multiple of 4"
#endif

/* Element kk of A's row, wherever A is stored (m == 1: a row, or a column of lda). */
#define A_EL(kk) LOAD(a, a0 + (kk) * a_ks)
/* A(kk) and A(kk .. kk + 3) in the pass that starts at c0: from the staged chunk, or
 * from device memory (one FLOAT4 load when A's row is aligned). */
#if MB_STAGE
#define X_AT(kk) xs[(kk) - c0]
#define X4_AT(kk) MAKE_FLOAT4(xs[(kk) - c0], xs[(kk) - c0 + 1], xs[(kk) - c0 + 2], xs[(kk) - c0 + 3])
#else
#define X_AT(kk) A_EL(kk)
#define X4_AT(kk) (va ? LOAD4(a, a0 + (kk)) : MAKE_FLOAT4(A_EL(kk), A_EL((kk) + 1), A_EL((kk) + 2), A_EL((kk) + 3)))
#endif

#if MB_layout_nt
#define NSG (MB_TG / SIMD_WIDTH)                 /* SIMD groups per threadgroup */
#define ROWS ((MB_BN + NSG - 1) / NSG)          /* rows per SIMD group */
#if NSG < MB_BN && MB_BN % NSG != 0
#error "BN must be a multiple of the SIMD groups per threadgroup"
#endif
#else
#define NX (MB_BN / 4)   /* threads across n, four columns each */
#define KSL (MB_TG / NX) /* slices of k */
#if MB_BN % 4 != 0 || MB_TG % NX != 0
#error "nn: BN must be a multiple of 4 and TG of BN / 4"
#endif
#endif

MB_KERNEL(tilegemv) {
#if MB_STAGE
  SHARED float xs[MB_KC];
#endif
#if MB_layout_nn
  SHARED float red[KSL * MB_BN];
#endif
  const int t = LOCAL_ID(0);
  const int j0 = GROUP_ID(0) * MB_BN;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int va = a_ks == 1 && a0 % 4 == 0; /* A's row as FLOAT4s */
  const int kc = MB_STAGE ? MB_KC : p.k;   /* k per pass: a chunk of A, or all of k */

#if MB_layout_nt
  const int lane = SIMD_LANE;
  const int sg = SIMD_GROUP;
  const int vb = p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0; /* B's rows as FLOAT4s */
  int row[ROWS];
  float acc[ROWS];
  for (int r = 0; r < ROWS; ++r) {
    const int jr = j0 + sg + r * NSG;
    row[r] = bi * p.stride_b + p.ldb * (jr < p.n ? jr : p.n - 1);
    acc[r] = 0.0f;
  }
#else
  const int tx = t % NX;
  const int ks = t / NX;
  const int j = j0 + 4 * tx;
  const int b0 = bi * p.stride_b + j; /* B(kk, j) is b0 + kk * ldb */
  const int vb = p.n % 4 == 0 && p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
#endif

  for (int c0 = 0; c0 < p.k; c0 += kc) {
    const int c1 = c0 + kc < p.k ? c0 + kc : p.k;
#if MB_STAGE
    /* A(c0 .. c1) into xs: four elements per thread and step. */
    BARRIER(); /* every thread is done with the previous chunk */
    for (int e = 4 * t; e < c1 - c0; e += 4 * MB_TG) {
      if (va && e + 4 <= c1 - c0) {
        const FLOAT4 x = LOAD4(a, a0 + c0 + e);
        xs[e] = x.x;
        xs[e + 1] = x.y;
        xs[e + 2] = x.z;
        xs[e + 3] = x.w;
      } else {
        for (int q = e; q < e + 4 && q < c1 - c0; ++q) xs[q] = A_EL(c0 + q);
      }
    }
    BARRIER();
#endif

#if MB_layout_nt
    if (sg < MB_BN) { /* OpenCL: threads past BN have no row; no SIMD operation in here */
      const int c4 = c0 + ((c1 - c0) & ~3); /* end of the whole FLOAT4s of the pass */
      for (int kk = c0 + 4 * lane; kk < c4; kk += 4 * SIMD_WIDTH) {
        const FLOAT4 x = X4_AT(kk);
        for (int r = 0; r < ROWS; ++r) {
          const FLOAT4 w = LOAD4_IF(vb, b, row[r] + kk);
          acc[r] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
        }
      }
      for (int kk = c4 + lane; kk < c1; kk += SIMD_WIDTH) { /* k % 4 tail of the last pass */
        const float x = X_AT(kk);
        for (int r = 0; r < ROWS; ++r) acc[r] += x * LOAD(b, row[r] + kk);
      }
    }
#else
    if (j < p.n) {
      if (vb) {
        for (int kk = c0 + ks; kk < c1; kk += KSL) {
          const float x = X_AT(kk);
          const FLOAT4 w = LOAD4(b, b0 + kk * p.ldb);
          acc0 += x * w.x;
          acc1 += x * w.y;
          acc2 += x * w.z;
          acc3 += x * w.w;
        }
      } else { /* n, ldb or the batch offset not a multiple of 4: columns one by one */
        for (int kk = c0 + ks; kk < c1; kk += KSL) {
          const float x = X_AT(kk);
          const int bk = b0 + kk * p.ldb;
          acc0 += x * LOAD(b, bk);
          if (j + 1 < p.n) acc1 += x * LOAD(b, bk + 1);
          if (j + 2 < p.n) acc2 += x * LOAD(b, bk + 2);
          if (j + 3 < p.n) acc3 += x * LOAD(b, bk + 3);
        }
      }
    }
#endif
  }

#if MB_layout_nt
  /* Every thread reaches SIMD_SUM (on OpenCL those past BN add their zeros). */
  for (int r = 0; r < ROWS; ++r) {
    const float v = SIMD_SUM(acc[r]);
    const int jr = j0 + sg + r * NSG;
    if (lane == 0 && sg + r * NSG < MB_BN && jr < p.n) MB_STORE_C(C_AT(bi, 0, jr), jr, v);
  }
#else
  red[ks * MB_BN + 4 * tx] = acc0;
  red[ks * MB_BN + 4 * tx + 1] = acc1;
  red[ks * MB_BN + 4 * tx + 2] = acc2;
  red[ks * MB_BN + 4 * tx + 3] = acc3;
  BARRIER();
  for (int col = t; col < MB_BN; col += MB_TG) {
    if (j0 + col < p.n) {
      float s = 0.0f;
      for (int q = 0; q < KSL; ++q) s += red[q * MB_BN + col];
      MB_STORE_C(C_AT(bi, 0, j0 + col), j0 + col, s);
    }
  }
#endif
}
