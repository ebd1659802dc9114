/* kpargemv: C(1 x n) = A(1 x k) . B with B stored n x k (nt), for large k and small n:
 * a K-parallel reduction inside the threadgroup. One batch entry per GROUP_ID(2).
 *
 * A lane group of LPR = 64 .. 512 threads (2 .. 16 SIMD groups) owns ROWS = 1, 2 or 4
 * rows of B and splits their k between all its threads, four elements per thread and
 * step (FLOAT4 loads of A and B when aligned, else scalar loads), so a long row is
 * read by many threads at once and each group has few outputs: enough groups and
 * bytes in flight even when n is small. Each SIMD group reduces its partial dots with
 * SIMD_SUM, and the LPR / SIMD_WIDTH SIMD groups of a lane group add theirs in
 * threadgroup memory. A threadgroup holds TG / LPR lane groups: BN = TG / LPR * ROWS
 * outputs.
 *
 * On OpenCL (SIMD_WIDTH 1) SIMD_SUM is the identity and all LPR partial dots of a row
 * go through threadgroup memory: the same sums.
 *
 * Tails: rows past n are read from row n - 1 and never stored; the last k % 4 elements
 * go through a scalar loop.
 *
 * Defines (MB_ + the grid key): MB_LPR, MB_TG, MB_ROWS.
 * Groups: (ceil(n / (TG / LPR * ROWS)), 1, batch); threads: (TG, 1, 1). Requires m == 1,
 * B transposed. */

#define LG (MB_TG / MB_LPR)          /* lane groups per threadgroup */
#define BNK (LG * MB_ROWS)           /* outputs per threadgroup */
#define NSG (MB_TG / SIMD_WIDTH)     /* SIMD groups per threadgroup */
#define SPL (MB_LPR / SIMD_WIDTH)    /* SIMD groups per lane group */
#if MB_TG % MB_LPR != 0 || MB_LPR % 32 != 0
#error "LPR must be a multiple of 32 dividing TG"
#endif

#define A_EL(kk) LOAD(a, a0 + (kk) * a_ks)

MB_KERNEL(kpargemv) {
  SHARED float red[NSG * MB_ROWS]; /* red[simd group * ROWS + r] */
  const int t = LOCAL_ID(0);
  const int li = t % MB_LPR; /* thread within the lane group */
  const int g = t / MB_LPR;  /* lane group */
  const int j0 = GROUP_ID(0) * BNK + g * MB_ROWS;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int va = a_ks == 1 && a0 % 4 == 0;
  const int vb = p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  const int k4 = p.k & ~3;
  int row[MB_ROWS];
  float acc[MB_ROWS];
  for (int r = 0; r < MB_ROWS; ++r) {
    row[r] = bi * p.stride_b + p.ldb * (j0 + r < p.n ? j0 + r : p.n - 1);
    acc[r] = 0.0f;
  }
  for (int kk = 4 * li; kk < k4; kk += 4 * MB_LPR) {
    const FLOAT4 x =
        va ? LOAD4(a, a0 + kk) : MAKE_FLOAT4(A_EL(kk), A_EL(kk + 1), A_EL(kk + 2), A_EL(kk + 3));
    for (int r = 0; r < MB_ROWS; ++r) {
      const FLOAT4 w = LOAD4_IF(vb, b, row[r] + kk);
      acc[r] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
    }
  }
  for (int kk = k4 + li; kk < p.k; kk += MB_LPR) { /* the k % 4 tail */
    const float x = A_EL(kk);
    for (int r = 0; r < MB_ROWS; ++r) acc[r] += x * LOAD(b, row[r] + kk);
  }

  for (int r = 0; r < MB_ROWS; ++r) {
    const float v = SIMD_SUM(acc[r]);
    if (SIMD_LANE == 0) red[SIMD_GROUP * MB_ROWS + r] = v;
  }
  BARRIER();
  if (li < MB_ROWS && j0 + li < p.n) {
    /* The lane group's SIMD groups are g * SPL .. g * SPL + SPL - 1. */
    float s = 0.0f;
    for (int w = 0; w < SPL; ++w) s += red[(g * SPL + w) * MB_ROWS + li];
    MB_STORE_C(C_AT(bi, 0, j0 + li), j0 + li, s);
  }
}
