/* gemv: C(1 x n) = A(1 x k) . B(k x n), one batch entry per GROUP_ID(2).
 *
 * layout_nt (B stored n x k, the weight layout): a group owns BN outputs, i.e. BN
 * contiguous rows of B. Its TG threads stride over k (VEC elements each, LOAD4 when
 * VEC is 4) and keep BN partial dots; x is loaded once and reused for all BN rows.
 * The partials are reduced with SIMD_SUM, then through group memory.
 *
 * layout_nn (B stored k x n): a group owns BN contiguous columns. BN / VEC threads
 * span the columns (coalesced along n, LOAD4 when VEC is 4) and KS = TG * VEC / BN
 * slices of threads split k between them; the slices are summed in group memory.
 *
 * Defines (MB_ + the grid key): MB_BN, MB_VEC (1 or 4), MB_TG (threads per group),
 * MB_layout_nt or MB_layout_nn.
 * Groups: (ceil(n / BN), 1, batch); threads: (TG, 1, 1). Requires m == 1; VEC == 4
 * requires k % 4 == 0 (nt) or n % 4 == 0 (nn). Tails in n (and k for VEC 1) are
 * handled. A may be stored either way (m == 1: a row or a column). */

#if MB_VEC != 1 && MB_VEC != 4
#error "VEC must be 1 or 4"
#endif

#if MB_layout_nt

#define NW (MB_TG / SIMD_WIDTH) /* SIMD groups per group; TG is a multiple of SIMD_WIDTH */

MB_KERNEL(gemv) {
  SHARED float red[MB_BN * NW];
  const int t = LOCAL_ID(0);
  const int j0 = GROUP_ID(0) * MB_BN;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1; /* distance between A(0, kk) and A(0, kk + 1) */
  int row[MB_BN];
  float acc[MB_BN];
  for (int r = 0; r < MB_BN; ++r) {
    /* Rows past n read row n - 1 (in bounds) and are never stored. */
    row[r] = p.stride_b * bi + p.ldb * (j0 + r < p.n ? j0 + r : p.n - 1);
    acc[r] = 0.0f;
  }
#if MB_VEC == 4
  for (int kk = 4 * t; kk < p.k; kk += 4 * MB_TG) {
    FLOAT4 x = a_ks == 1 ? LOAD4(a, a0 + kk)
                         : MAKE_FLOAT4(LOAD(a, a0 + kk * a_ks), LOAD(a, a0 + (kk + 1) * a_ks),
                                       LOAD(a, a0 + (kk + 2) * a_ks), LOAD(a, a0 + (kk + 3) * a_ks));
    for (int r = 0; r < MB_BN; ++r) {
      FLOAT4 w = LOAD4(b, row[r] + kk);
      acc[r] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
    }
  }
#else
  for (int kk = t; kk < p.k; kk += MB_TG) {
    float x = LOAD(a, a0 + kk * a_ks);
    for (int r = 0; r < MB_BN; ++r) acc[r] += x * LOAD(b, row[r] + kk);
  }
#endif
  for (int r = 0; r < MB_BN; ++r) {
    float v = SIMD_SUM(acc[r]);
    if (SIMD_LANE == 0) red[r * NW + SIMD_GROUP] = v;
  }
  BARRIER();
  if (t < MB_BN && j0 + t < p.n) {
    float s = 0.0f;
    for (int w = 0; w < NW; ++w) s += red[t * NW + w];
    MB_STORE_C(C_AT(bi, 0, j0 + t), j0 + t, s);
  }
}

#elif MB_layout_nn

#define NX (MB_BN / MB_VEC)        /* threads along n */
#define KS (MB_TG * MB_VEC / MB_BN)   /* slices of k */

MB_KERNEL(gemv) {
#if KS > 1
  SHARED float red[KS * MB_BN];
#endif
  const int t = LOCAL_ID(0);
  const int tx = t % NX;
  const int ks = t / NX;
  const int j0 = GROUP_ID(0) * MB_BN;
  const int j = j0 + tx * MB_VEC;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int b0 = p.stride_b * bi + j; /* B(0, j); B(kk, j) is b0 + kk * ldb */
  float acc[MB_VEC];
  for (int v = 0; v < MB_VEC; ++v) acc[v] = 0.0f;
  if (j < p.n) { /* VEC == 4 requires n % 4 == 0, so j < n covers j..j+3 */
    for (int kk = ks; kk < p.k; kk += KS) {
      float x = LOAD(a, a0 + kk * a_ks);
#if MB_VEC == 4
      FLOAT4 w = LOAD4(b, b0 + kk * p.ldb);
      acc[0] += x * w.x;
      acc[1] += x * w.y;
      acc[2] += x * w.z;
      acc[3] += x * w.w;
#else
      acc[0] += x * LOAD(b, b0 + kk * p.ldb);
#endif
    }
  }
#if KS > 1
  for (int v = 0; v < MB_VEC; ++v) red[ks * MB_BN + tx * MB_VEC + v] = acc[v];
  BARRIER();
  if (t < MB_BN && j0 + t < p.n) {
    float s = 0.0f;
    for (int q = 0; q < KS; ++q) s += red[q * MB_BN + t];
    MB_STORE_C(C_AT(bi, 0, j0 + t), j0 + t, s);
  }
#else
  for (int v = 0; v < MB_VEC; ++v)
    if (j + v < p.n) MB_STORE_C(C_AT(bi, 0, j + v), j + v, acc[v]);
#endif
}

#else
#error "define layout_nt or layout_nn"
#endif
