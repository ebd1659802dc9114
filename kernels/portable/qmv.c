/* m = 1 over quantized weights (B stored n x k in MLX's affine format: common.h, QB_*),
 * built to run at the speed of reading the codes. qgemv, its elder, stays well short of
 * that on a GPU with HBM; each choice below removes one of its limits.
 *
 * Converting a code to float with an int -> float instruction is slow on NVIDIA's GPUs
 * (16 per clock per SM on sm_80 / sm_90, an eighth of the FMA rate: CUDA C Programming
 * Guide, "Arithmetic Instructions"), too slow for two 4-bit codes per byte of HBM. So the
 * float is made from bits (common.h, QB_HALF_CODE): a code q masked in place at bit s of
 * a 16-bit half of its word becomes q 2^s exactly with one and-or and a subtraction. The
 * 2^s stays on the product: each position s in a half has its own dot product, and they
 * are scaled back by 2^-s (exact) once per piece.
 *
 * The fold: per piece, sum x q and sum x, then scale * dot + bias * sum x once, so that a
 * code costs one subtraction and one multiply-add. A piece (16 bytes: 32 4-bit or 16
 * 8-bit codes) never straddles a group of scales: groups are multiples of 32 codes and
 * pieces start at multiples of their own size.
 *
 * A thread owns RPT rows at the same k: the x of a piece is loaded (and summed) once and
 * used for all of them. The weights are read 16 bytes at a time (LOAD_UINT4, so the rows'
 * word pitch must keep 16-byte alignment: `requires`), LPR lanes of a team of 32 over
 * consecutive pieces of a row: 16 * LPR contiguous bytes per row per step, whole 128-byte
 * lines at LPR 8. LPR is also what x costs: a lane reads the x of its own piece (64 bytes
 * of float16 x for 32 4-bit codes), so one x load of the team touches the x of 32 pieces
 * at LPR 32, 16 or more cache lines, but of only LPR pieces at LPR 8, where the team's
 * 32 / LPR row groups read the same x; a GPU's L1 serves a load a cache line at a time,
 * so at LPR 32 the x loads, not the weights, can bound the time. Each thread issues U
 * steps' loads (words, scales and biases of its RPT rows) before any of their arithmetic,
 * so that U * RPT 16-byte loads are in flight per thread.
 *
 * A work-group is TEAMS teams. KS of them share a row set and split its k: team s of the
 * KS reads spans s, s + KS, ... of LPR pieces, so that products with few rows still fill
 * the GPU. The partial sums of a row: SIMD_SUM where its lanes are whole SIMD groups (LPR
 * 32 on CUDA and Metal, every LPR on OpenCL, whose SIMD groups are one thread), then group
 * memory to add the SIMD groups (none when that is one: KS 1, LPR 32 on CUDA and Metal);
 * where a SIMD group holds several rows (LPR 8 on a 32-wide SIMD), all in group memory.
 * Groups: (ceil(n / (TEAMS / KS * 32 / LPR * RPT)), batch). */
#define QMV_TEAMS MB_TEAMS
#define QMV_LANES 32 /* threads per team: the manifest's dispatch says so too */
#define QMV_SETS (QMV_TEAMS / MB_KS)            /* row sets per work-group */
#define QMV_RG (QMV_LANES / MB_LPR)             /* row groups per team */
#define QMV_ROWS (QMV_SETS * QMV_RG * MB_RPT)   /* rows per work-group */
#define QMV_CPW (32 / MB_BITS)                  /* codes per word */
#define QMV_CPH (16 / MB_BITS)                  /* codes per 16-bit half of a word */
#define QMV_CPP (4 * QMV_CPW)                   /* codes per 16-byte piece */
#if MB_LPR % SIMD_WIDTH == 0
#define QMV_W SIMD_WIDTH /* lanes summed by SIMD_SUM: a row's lanes are whole SIMD groups */
#else
#define QMV_W 1
#endif
#define QMV_SLOTS (QMV_TEAMS * QMV_LANES / QMV_W) /* group-memory partial sums for each r < RPT */

/* Word i (0..3, a constant once unrolled) of a UINT4. */
#define QMV_WORD(v, i) ((i) == 0 ? (v).x : (i) == 1 ? (v).y : (i) == 2 ? (v).z : (v).w)

MB_KERNEL(qmv) {
#if MB_KS * MB_LPR > QMV_W
  SHARED float red[QMV_SLOTS * MB_RPT];
#endif
  const int tid = LOCAL_ID(0);
  const int lane = tid % QMV_LANES;
  const int team = tid / QMV_LANES;
  const int slice = team % MB_KS;
  const int set = team / MB_KS;
  const int rg = lane / MB_LPR;
  const int pl = lane % MB_LPR;
  const int j0 = ((GROUP_ID(0) * QMV_SETS + set) * QMV_RG + rg) * MB_RPT;
  const int bi = GROUP_ID(1);
  const int pieces = p.k / QMV_CPP;
  const int a0 = A_AT(bi, 0, 0); /* m == 1: A's k values are contiguous in either layout */
  /* Rows past n read row n - 1 (in bounds, never stored), so that no branch guards a load. */
  int jr[MB_RPT];
  float acc[MB_RPT];
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r) {
    jr[r] = min(j0 + r, p.n - 1);
    acc[r] = 0.0f;
  }
  for (int pc0 = slice * MB_LPR + pl; pc0 < pieces; pc0 += MB_U * MB_KS * MB_LPR) {
    UINT4 w[MB_U][MB_RPT];
    float scale[MB_U][MB_RPT], bias[MB_U][MB_RPT];
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      /* A step past the row's end reads piece 0 again: in bounds, and its math is skipped. */
      const int pc = pc0 + u * MB_KS * MB_LPR < pieces ? pc0 + u * MB_KS * MB_LPR : 0;
      const int g = pc * QMV_CPP / p.qgroup;
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
        float dot[MB_RPT][QMV_CPH];
#pragma unroll
        for (int r = 0; r < MB_RPT; ++r)
#pragma unroll
          for (int e = 0; e < QMV_CPH; ++e) dot[r][e] = 0.0f;
        float sum = 0.0f;
#pragma unroll
        for (int c4 = 0; c4 < QMV_CPP; c4 += 4) {
          const FLOAT4 x4 = LOAD4(a, a0 + pc * QMV_CPP + c4);
          const float x[4] = {x4.x, x4.y, x4.z, x4.w};
          sum += (x[0] + x[1]) + (x[2] + x[3]);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            /* Code c4 + i of the piece: its word, its half of the word, its place in the half. */
            const int wi = (c4 + i) / QMV_CPW, h = (c4 + i) % QMV_CPW / QMV_CPH, e = (c4 + i) % QMV_CPH;
#pragma unroll
            for (int r = 0; r < MB_RPT; ++r) dot[r][e] += x[i] * QB_HALF_CODE(QMV_WORD(w[u][r], wi), h, e, MB_BITS);
          }
        }
#pragma unroll
        for (int r = 0; r < MB_RPT; ++r) {
          float d = dot[r][QMV_CPH - 1];
#pragma unroll
          for (int e = QMV_CPH - 2; e >= 0; --e) d = d * (1.0f / (float)(1 << MB_BITS)) + dot[r][e];
          acc[r] += scale[u][r] * d + bias[u][r] * sum;
        }
      }
    }
  }
  /* Every thread gets here, rows past n included: no SIMD operation is inside a branch. */
#if QMV_W > 1
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r) acc[r] = SIMD_SUM(acc[r]);
#endif
#if MB_KS * MB_LPR == QMV_W
  /* A row is one SIMD group, and every lane has its sum. */
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r)
    if (lane == r && j0 + r < p.n) MB_STORE_C(C_AT(bi, 0, j0 + r), j0 + r, acc[r]);
#else
  if (tid % QMV_W == 0) {
#pragma unroll
    for (int r = 0; r < MB_RPT; ++r) red[tid / QMV_W * MB_RPT + r] = acc[r];
  }
  BARRIER();
  /* Thread o adds up row o of the group: row r of row group g of row set s is
   * (s * QMV_RG + g) * RPT + r; its slots are those of lanes g * LPR .. + LPR - 1 of the
   * set's KS teams. */
  if (tid < QMV_ROWS) {
    const int os = tid / (QMV_RG * MB_RPT), og = tid / MB_RPT % QMV_RG, orow = tid % MB_RPT;
    const int j = (GROUP_ID(0) * QMV_SETS + os) * QMV_RG * MB_RPT + og * MB_RPT + orow;
    float total = 0.0f;
    for (int s = 0; s < MB_KS; ++s)
      for (int q = 0; q < MB_LPR / QMV_W; ++q)
        total += red[(((os * MB_KS + s) * QMV_LANES + og * MB_LPR) / QMV_W + q) * MB_RPT + orow];
    if (j < p.n) MB_STORE_C(C_AT(bi, 0, j), j, total);
  }
#endif
}
