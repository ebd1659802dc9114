/* m = 2 .. 8 over quantized weights (B stored n x k in MLX's affine format: common.h,
 * QB_*): qmv (portable/qmv.c, whose comment gives the reasons) with MR rows of A. What
 * qmv does per row of B, this does per row of B for all m rows of A at once: each code
 * is made a float from its bits once (QB_HALF_CODE) and multiplied into MR dot products,
 * so a few rows of A cost little more than one; the weights' bytes, which bound the
 * time, are read once. Each row of A has its own sum x per piece for the fold, and
 * MR x RPT x (16 / bits) dot products live in registers, hence MR * RPT <= 8.
 *
 * Rows of A past m read row m - 1 (in bounds, never stored), rows of B past n row n - 1,
 * so that no branch guards a load. A stored k x m (transpose_a) is read element by
 * element along k; stored m x k, four at a time (LOAD4: k is a multiple of 32). LPR,
 * KS and the reduction are qmv's; U is 1 (each code's work grows with MR, so fewer
 * loads need be in flight).
 * Groups: (ceil(n / (TEAMS / KS * 32 / LPR * RPT)), batch). */
#define QMVM_TEAMS MB_TEAMS
#define QMVM_LANES 32 /* threads per team: the manifest's dispatch says so too */
#define QMVM_SETS (QMVM_TEAMS / MB_KS)
#define QMVM_CPW (32 / MB_BITS)
#define QMVM_CPH (16 / MB_BITS)
#define QMVM_CPP (4 * QMVM_CPW)
#define QMVM_OUT (MB_MR * MB_RPT) /* outputs per thread */
#define QMVM_RG (QMVM_LANES / MB_LPR)
#define QMVM_ROWS (QMVM_SETS * QMVM_RG * MB_RPT) /* rows of B per work-group */
#if MB_LPR % SIMD_WIDTH == 0
#define QMVM_W SIMD_WIDTH
#else
#define QMVM_W 1
#endif
#define QMVM_SLOTS (QMVM_TEAMS * QMVM_LANES / QMVM_W)

#define QMVM_WORD(v, i) ((i) == 0 ? (v).x : (i) == 1 ? (v).y : (i) == 2 ? (v).z : (v).w)
/* A(row, kk .. kk + 3) of the row starting at element off (A_AT(bi, row, 0)). */
#define QMVM_X4(off, kk)                                                                       \
  (p.trans_a ? MAKE_FLOAT4(LOAD(a, (off) + (kk) * p.lda), LOAD(a, (off) + ((kk) + 1) * p.lda), \
                           LOAD(a, (off) + ((kk) + 2) * p.lda), LOAD(a, (off) + ((kk) + 3) * p.lda)) \
             : LOAD4(a, (off) + (kk)))

MB_KERNEL(qmvm) {
#if MB_KS * MB_LPR > QMVM_W
  SHARED float red[QMVM_SLOTS * QMVM_OUT];
#endif
  const int tid = LOCAL_ID(0);
  const int lane = tid % QMVM_LANES;
  const int team = tid / QMVM_LANES;
  const int slice = team % MB_KS;
  const int set = team / MB_KS;
  const int rg = lane / MB_LPR;
  const int pl = lane % MB_LPR;
  const int j0 = ((GROUP_ID(0) * QMVM_SETS + set) * QMVM_RG + rg) * MB_RPT;
  const int bi = GROUP_ID(1);
  const int pieces = p.k / QMVM_CPP;
  int jr[MB_RPT], ar[MB_MR];
  float acc[MB_MR][MB_RPT];
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r) jr[r] = min(j0 + r, p.n - 1);
#pragma unroll
  for (int i = 0; i < MB_MR; ++i) {
    ar[i] = A_AT(bi, min(i, p.m - 1), 0);
#pragma unroll
    for (int r = 0; r < MB_RPT; ++r) acc[i][r] = 0.0f;
  }
  for (int pc0 = slice * MB_LPR + pl; pc0 < pieces; pc0 += MB_U * MB_KS * MB_LPR) {
    UINT4 w[MB_U][MB_RPT];
    float scale[MB_U][MB_RPT], bias[MB_U][MB_RPT];
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      /* A step past the row's end reads piece 0 again: in bounds, and its math is skipped. */
      const int pc = pc0 + u * MB_KS * MB_LPR < pieces ? pc0 + u * MB_KS * MB_LPR : 0;
      const int g = pc * QMVM_CPP / p.qgroup;
#pragma unroll
      for (int r = 0; r < MB_RPT; ++r) {
        w[u][r] = LOAD_UINT4(QB_WORDS(bi, jr[r]), 4 * pc);
        scale[u][r] = QB_SCALE(bi, jr[r], g);
        bias[u][r] = QB_BIAS(bi, jr[r], g);
      }
    }
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      const int pc = pc0 + u * MB_KS * MB_LPR;
      if (pc < pieces) {
        float dot[MB_MR][MB_RPT][QMVM_CPH], sum[MB_MR];
#pragma unroll
        for (int i = 0; i < MB_MR; ++i) {
          sum[i] = 0.0f;
#pragma unroll
          for (int r = 0; r < MB_RPT; ++r)
#pragma unroll
            for (int e = 0; e < QMVM_CPH; ++e) dot[i][r][e] = 0.0f;
        }
#pragma unroll
        for (int c4 = 0; c4 < QMVM_CPP; c4 += 4) {
          float x[MB_MR][4];
#pragma unroll
          for (int i = 0; i < MB_MR; ++i) {
            const FLOAT4 x4 = QMVM_X4(ar[i], pc * QMVM_CPP + c4);
            x[i][0] = x4.x;
            x[i][1] = x4.y;
            x[i][2] = x4.z;
            x[i][3] = x4.w;
            sum[i] += (x4.x + x4.y) + (x4.z + x4.w);
          }
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int wi = (c4 + c) / QMVM_CPW, h = (c4 + c) % QMVM_CPW / QMVM_CPH, e = (c4 + c) % QMVM_CPH;
#pragma unroll
            for (int r = 0; r < MB_RPT; ++r) {
              const float q = QB_HALF_CODE(QMVM_WORD(w[u][r], wi), h, e, MB_BITS);
#pragma unroll
              for (int i = 0; i < MB_MR; ++i) dot[i][r][e] += x[i][c] * q;
            }
          }
        }
#pragma unroll
        for (int i = 0; i < MB_MR; ++i)
#pragma unroll
          for (int r = 0; r < MB_RPT; ++r) {
            float d = dot[i][r][QMVM_CPH - 1];
#pragma unroll
            for (int e = QMVM_CPH - 2; e >= 0; --e) d = d * (1.0f / (float)(1 << MB_BITS)) + dot[i][r][e];
            acc[i][r] += scale[u][r] * d + bias[u][r] * sum[i];
          }
      }
    }
  }
  /* Every thread gets here, rows past n and m included: no SIMD operation is inside a branch. */
#if QMVM_W > 1
#pragma unroll
  for (int i = 0; i < MB_MR; ++i)
#pragma unroll
    for (int r = 0; r < MB_RPT; ++r) acc[i][r] = SIMD_SUM(acc[i][r]);
#endif
#if MB_KS * MB_LPR == QMVM_W
  /* A row of B is one SIMD group, and every lane has its sums: output o = i * RPT + r is
   * stored by lane o (QMVM_OUT <= 8 lanes). */
#pragma unroll
  for (int i = 0; i < MB_MR; ++i)
#pragma unroll
    for (int r = 0; r < MB_RPT; ++r)
      if (lane == i * MB_RPT + r && i < p.m && j0 + r < p.n) MB_STORE_C(C_AT(bi, i, j0 + r), j0 + r, acc[i][r]);
#else
  if (tid % QMVM_W == 0) {
#pragma unroll
    for (int i = 0; i < MB_MR; ++i)
#pragma unroll
      for (int r = 0; r < MB_RPT; ++r) red[(tid / QMVM_W * MB_MR + i) * MB_RPT + r] = acc[i][r];
  }
  BARRIER();
  /* Threads o, o + TEAMS * 32, ... add up output o of the group: row oi of A, row
   * (s * QMVM_RG + g) * RPT + r of the group's rows of B; its slots are those of lanes
   * g * LPR .. + LPR - 1 of the set's KS teams (qmv's reduction, MR rows of A over). */
  for (int o = tid; o < QMVM_ROWS * MB_MR; o += QMVM_TEAMS * QMVM_LANES) {
    const int oi = o / QMVM_ROWS, lr = o % QMVM_ROWS;
    const int os = lr / (QMVM_RG * MB_RPT), og = lr / MB_RPT % QMVM_RG, orow = lr % MB_RPT;
    const int j = GROUP_ID(0) * QMVM_ROWS + lr;
    float total = 0.0f;
    for (int s = 0; s < MB_KS; ++s)
      for (int q = 0; q < MB_LPR / QMVM_W; ++q)
        total += red[((((os * MB_KS + s) * QMVM_LANES + og * MB_LPR) / QMVM_W + q) * MB_MR + oi) * MB_RPT + orow];
    if (oi < p.m && j < p.n) MB_STORE_C(C_AT(bi, oi, j), j, total);
  }
#endif
}
