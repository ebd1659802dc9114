/* tiled: C = A . B in BM x BN tiles per group, k in steps of BK through group memory.
 *
 * (BM / TM) x (BN / TN) threads; each keeps a TM x TN block of accumulators whose
 * rows and columns are interleaved with the other threads' (row ty + i * (BM / TM),
 * column tx + j * (BN / TN)), so group-memory reads spread over banks and the
 * stores of neighbouring threads are contiguous. Tiles are loaded with the thread
 * index running along whichever dimension is contiguous in memory (coalesced for
 * every transpose), zero-filled past m, n and k, so every shape and layout works.
 *
 * Defines: BM, BN, BK, TM, TN. Groups: (ceil(n / BN), ceil(m / BM), batch);
 * threads: ((BM / TM) * (BN / TN), 1, 1). */

#define NTX (BN / TN)
#define NTY (BM / TM)
#define NT (NTX * NTY)

MB_KERNEL(tiled) {
  SHARED float As[BK * BM]; /* As[kk * BM + i] */
  SHARED float Bs[BK * BN]; /* Bs[kk * BN + j] */
  const int t = LOCAL_ID(0);
  const int tx = t % NTX;
  const int ty = t / NTX;
  const int j0 = GROUP_ID(0) * BN;
  const int i0 = GROUP_ID(1) * BM;
  const int bi = GROUP_ID(2);
  /* A(i, kk) is a_base + i * a_is + kk * a_ks; B(kk, j) is b_base + kk * b_ks + j * b_js. */
  const int a_base = bi * p.stride_a;
  const int a_is = p.trans_a ? 1 : p.lda;
  const int a_ks = p.trans_a ? p.lda : 1;
  const int b_base = bi * p.stride_b;
  const int b_ks = p.trans_b ? 1 : p.ldb;
  const int b_js = p.trans_b ? p.ldb : 1;
  float acc[TM * TN];
  for (int e = 0; e < TM * TN; ++e) acc[e] = 0.0f;

  for (int k0 = 0; k0 < p.k; k0 += BK) {
    for (int e = t; e < BM * BK; e += NT) {
      /* Consecutive threads take consecutive addresses: along i if A is stored k x m. */
      const int r = p.trans_a ? e % BM : e / BK;
      const int q = p.trans_a ? e / BM : e % BK;
      const int gi = i0 + r;
      const int gk = k0 + q;
      As[q * BM + r] = (gi < p.m && gk < p.k) ? LOAD(a, a_base + gi * a_is + gk * a_ks) : 0.0f;
    }
    for (int e = t; e < BK * BN; e += NT) {
      /* Along k if B is stored n x k, along j otherwise. */
      const int q = p.trans_b ? e % BK : e / BN;
      const int cj = p.trans_b ? e / BK : e % BN;
      const int gk = k0 + q;
      const int gj = j0 + cj;
      Bs[q * BN + cj] = (gk < p.k && gj < p.n) ? LOAD(b, b_base + gk * b_ks + gj * b_js) : 0.0f;
    }
    BARRIER();
    for (int kk = 0; kk < BK; ++kk) {
      float av[TM];
      float bv[TN];
      for (int i = 0; i < TM; ++i) av[i] = As[kk * BM + ty + i * NTY];
      for (int j = 0; j < TN; ++j) bv[j] = Bs[kk * BN + tx + j * NTX];
      for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i * TN + j] += av[i] * bv[j];
    }
    BARRIER();
  }

  for (int i = 0; i < TM; ++i) {
    const int gi = i0 + ty + i * NTY;
    if (gi >= p.m) continue;
    for (int j = 0; j < TN; ++j) {
      const int gj = j0 + tx + j * NTX;
      if (gj < p.n) MB_STORE_C(C_AT(bi, gi, gj), gj, acc[i * TN + j]);
    }
  }
}
