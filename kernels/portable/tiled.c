/* tiled: C = A . B in BM x BN tiles per group, k in steps of BK through group memory.
 *
 * (BM / TM) x (BN / TN) threads; each keeps a TM x TN block of accumulators whose
 * rows and columns are interleaved with the other threads' (row ty + i * (BM / TM),
 * column tx + j * (BN / TN)), so group-memory reads spread over banks and the
 * stores of neighbouring threads are contiguous. Tiles are loaded with the thread
 * index running along whichever dimension is contiguous in memory (coalesced for
 * every transpose), zero-filled past m, n and k, so every shape and layout works.
 *
 * Defines (MB_ + the grid key): MB_BM, MB_BN, MB_BK, MB_TM, MB_TN.
 * Groups: (ceil(n / BN), ceil(m / BM), batch); threads: ((BM / TM) * (BN / TN), 1, 1). */

#define NTX (MB_BN / MB_TN)
#define NTY (MB_BM / MB_TM)
#define NT (NTX * NTY)

MB_KERNEL(tiled) {
  SHARED float As[MB_BK * MB_BM]; /* As[kk * BM + i] */
  SHARED float Bs[MB_BK * MB_BN]; /* Bs[kk * BN + j] */
  const int t = LOCAL_ID(0);
  const int tx = t % NTX;
  const int ty = t / NTX;
  const int j0 = GROUP_ID(0) * MB_BN;
  const int i0 = GROUP_ID(1) * MB_BM;
  const int bi = GROUP_ID(2);
  /* A(i, kk) is a_base + i * a_is + kk * a_ks; B(kk, j) is b_base + kk * b_ks + j * b_js. */
  const int a_base = bi * p.stride_a;
  const int a_is = p.trans_a ? 1 : p.lda;
  const int a_ks = p.trans_a ? p.lda : 1;
  const int b_base = bi * p.stride_b;
  const int b_ks = p.trans_b ? 1 : p.ldb;
  const int b_js = p.trans_b ? p.ldb : 1;
  float acc[MB_TM * MB_TN];
  for (int e = 0; e < MB_TM * MB_TN; ++e) acc[e] = 0.0f;

  for (int k0 = 0; k0 < p.k; k0 += MB_BK) {
    for (int e = t; e < MB_BM * MB_BK; e += NT) {
      /* Consecutive threads take consecutive addresses: along i if A is stored k x m. */
      const int r = p.trans_a ? e % MB_BM : e / MB_BK;
      const int q = p.trans_a ? e / MB_BM : e % MB_BK;
      const int gi = i0 + r;
      const int gk = k0 + q;
      As[q * MB_BM + r] = (gi < p.m && gk < p.k) ? LOAD(a, a_base + gi * a_is + gk * a_ks) : 0.0f;
    }
    for (int e = t; e < MB_BK * MB_BN; e += NT) {
      /* Along k if B is stored n x k, along j otherwise. */
      const int q = p.trans_b ? e % MB_BK : e / MB_BN;
      const int cj = p.trans_b ? e / MB_BK : e % MB_BN;
      const int gk = k0 + q;
      const int gj = j0 + cj;
      Bs[q * MB_BN + cj] = (gk < p.k && gj < p.n) ? LOAD(b, b_base + gk * b_ks + gj * b_js) : 0.0f;
    }
    BARRIER();
    for (int kk = 0; kk < MB_BK; ++kk) {
      float av[MB_TM];
      float bv[MB_TN];
      for (int i = 0; i < MB_TM; ++i) av[i] = As[kk * MB_BM + ty + i * NTY];
      for (int j = 0; j < MB_TN; ++j) bv[j] = Bs[kk * MB_BN + tx + j * NTX];
      for (int i = 0; i < MB_TM; ++i)
        for (int j = 0; j < MB_TN; ++j) acc[i * MB_TN + j] += av[i] * bv[j];
    }
    BARRIER();
  }

  for (int i = 0; i < MB_TM; ++i) {
    const int gi = i0 + ty + i * NTY;
    if (gi >= p.m) continue;
    for (int j = 0; j < MB_TN; ++j) {
      const int gj = j0 + tx + j * NTX;
      if (gj < p.n) MB_STORE_C(C_AT(bi, gi, gj), gj, acc[i * MB_TN + j]);
    }
  }
}
