/* splitnn: C (1 x n) = A (1 x k) . B with B stored k x n (the fused QKV projection of
 * models that keep weights in x out; attention's P.V), one batch entry per GROUP_ID(2).
 * Built to read B at the memory roof, as the nt GEMVs do:
 *
 * - coalesced along n: NX = CW / 4 threads span the group's CW columns with FLOAT4 loads
 *   (LOAD4_IF: scalar loads where n, ldb or the batch offset is not a multiple of 4);
 * - k split inside the group: KS = TG / NX slices of threads take interleaved rows of
 *   k, U rows in flight per thread (U independent loads before any is used);
 * - k split across groups: SPLITS groups per column tile each take a range of k, so a
 *   product with few column tiles (n = 3072 is 24 tiles of 128) still fills the GPU.
 *   Each puts its CW partial sums into the workspace (WS_PUT), counts itself in
 *   (WS_ARRIVE), and the last adds the partials in split order (WS_TAKE_SUM), applies
 *   the op and resets the counter: the workspace is left zero.
 *
 * A's element for a row of k is read by every thread of a slice at once (one broadcast
 * load). The slices' sums meet in group memory.
 *
 * Workspace (floats, SPLITS > 1): batch * SPLITS * n partials, partial (bi, s, j) at
 * (bi * SPLITS + s) * n + j, then batch * ceil(n / CW) int counters.
 *
 * Defines (MB_ + the grid key): MB_CW, MB_TG, MB_U, MB_SPLITS.
 * Groups: (ceil(n / CW), SPLITS, batch); threads: (TG, 1, 1). Requires m == 1. */

#define NX (MB_CW / 4)  /* threads across n */
#define KS (MB_TG / NX) /* slices of k */
#if MB_CW % 4 != 0 || MB_TG % NX != 0
#error "CW must be a multiple of 4 and TG of CW / 4"
#endif

MB_KERNEL(splitnn) {
  SHARED float red[KS * MB_CW];
#if MB_SPLITS > 1
  SHARED int last;
#endif
  const int t = LOCAL_LINEAR_ID;
  const int tx = t % NX;
  const int ks = t / NX;
  const int j0 = GROUP_ID(0) * MB_CW;
  const int j = j0 + 4 * tx;
  const int split = GROUP_ID(1);
  const int bi = GROUP_ID(2);
  const int kc = (p.k + MB_SPLITS - 1) / MB_SPLITS;
  const int kbeg = split * kc;
  const int kend = kbeg + kc < p.k ? kbeg + kc : p.k;
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int b0 = bi * p.stride_b + j; /* B(kk, j) is b0 + kk * ldb */
  const int vb = p.n % 4 == 0 && p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;

  if (j < p.n) {
    int kk = kbeg + ks;
    /* U rows of k per step, all loads issued before the first is used. */
    for (; kk + (MB_U - 1) * KS < kend; kk += MB_U * KS) {
      FLOAT4 w[MB_U];
      float x[MB_U];
      for (int u = 0; u < MB_U; ++u) {
        const int r = kk + u * KS;
        w[u] = vb ? LOAD4(b, b0 + r * p.ldb)
                  : MAKE_FLOAT4(LOAD(b, b0 + r * p.ldb), j + 1 < p.n ? LOAD(b, b0 + r * p.ldb + 1) : 0.0f,
                                j + 2 < p.n ? LOAD(b, b0 + r * p.ldb + 2) : 0.0f,
                                j + 3 < p.n ? LOAD(b, b0 + r * p.ldb + 3) : 0.0f);
        x[u] = LOAD(a, a0 + r * a_ks);
      }
      for (int u = 0; u < MB_U; ++u) {
        acc0 += x[u] * w[u].x;
        acc1 += x[u] * w[u].y;
        acc2 += x[u] * w[u].z;
        acc3 += x[u] * w[u].w;
      }
    }
    for (; kk < kend; kk += KS) { /* fewer than U rows left */
      const FLOAT4 w = vb ? LOAD4(b, b0 + kk * p.ldb)
                          : MAKE_FLOAT4(LOAD(b, b0 + kk * p.ldb), j + 1 < p.n ? LOAD(b, b0 + kk * p.ldb + 1) : 0.0f,
                                        j + 2 < p.n ? LOAD(b, b0 + kk * p.ldb + 2) : 0.0f,
                                        j + 3 < p.n ? LOAD(b, b0 + kk * p.ldb + 3) : 0.0f);
      const float x = LOAD(a, a0 + kk * a_ks);
      acc0 += x * w.x;
      acc1 += x * w.y;
      acc2 += x * w.z;
      acc3 += x * w.w;
    }
  }
  red[ks * MB_CW + 4 * tx] = acc0;
  red[ks * MB_CW + 4 * tx + 1] = acc1;
  red[ks * MB_CW + 4 * tx + 2] = acc2;
  red[ks * MB_CW + 4 * tx + 3] = acc3;
  BARRIER();

#if MB_SPLITS > 1
  GLOBAL_PTR float* part = ws + (bi * MB_SPLITS + split) * p.n;
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + p.batch * MB_SPLITS * p.n) + bi * NUM_GROUPS(0) + GROUP_ID(0);
#endif
  for (int col = t; col < MB_CW; col += MB_TG) {
    if (j0 + col < p.n) {
      float s = 0.0f;
      for (int q = 0; q < KS; ++q) s += red[q * MB_CW + col];
#if MB_SPLITS > 1
      WS_PUT(part + j0 + col, s);
#else
      MB_STORE_C(C_AT(bi, 0, j0 + col), j0 + col, s);
#endif
    }
  }
#if MB_SPLITS > 1
  WS_ARRIVE(counter, MB_SPLITS, last);
  if (last) {
    for (int col = t; col < MB_CW; col += MB_TG)
      if (j0 + col < p.n)
        MB_STORE_C(C_AT(bi, 0, j0 + col), j0 + col, WS_TAKE_SUM(ws + bi * MB_SPLITS * p.n + j0 + col, p.n, MB_SPLITS));
    if (t == 0) ATOMIC_STORE_ZERO(counter);
  }
#endif
}
