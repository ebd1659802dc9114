/* bcastgemv: C(1 x n) = A(1 x k) . B with B stored k x n (nn), the activation vector
 * shared across each SIMD group by SIMD_BROADCAST instead of being loaded by every
 * thread. One batch entry per GROUP_ID(2).
 *
 * A group owns BN = NX * VEC columns: NX threads across n (a multiple of 32, so a SIMD
 * group never spans two slices), VEC = 1 or 4 adjacent columns each (FLOAT4 loads of
 * B along n when VEC is 4), and KSL = TG / NX slices of threads that split k in rounds
 * of KB = 4 * SIMD_WIDTH elements. In a round each lane loads one FLOAT4 of A
 * (A(k0 + 4 lane .. + 3): the SIMD group's loads are one contiguous run), then the
 * group broadcasts lane 0's four values, lane 1's, ... and every lane multiplies them
 * into its columns: each element of A is loaded once per SIMD group, not once per
 * thread. The slices are summed in threadgroup memory.
 *
 * Every round is taken by every thread (out-of-range rows of k contribute nothing),
 * and the broadcast loop always runs SIMD_WIDTH times, so every lane of a SIMD group
 * reaches every SIMD_BROADCAST together, as the dialect requires.
 *
 * On OpenCL (SIMD_WIDTH 1) a round is four elements that each thread loads itself:
 * the same sums, no broadcast (kernels/README.md).
 *
 * Tails: columns past n are neither read nor stored (when n, ldb or the batch offset
 * is not a multiple of 4, VEC = 4 falls back to scalar loads of B); elements of A past
 * k read as 0 and their rows of B are skipped.
 *
 * Defines (MB_ + the grid key): MB_BN, MB_VEC (1 or 4), MB_TG.
 * Groups: (ceil(n / BN), 1, batch); threads: (TG, 1, 1). Requires m == 1, B not
 * transposed. */

#if MB_VEC != 1 && MB_VEC != 4
#error "VEC must be 1 or 4"
#endif

#define NX (MB_BN / MB_VEC) /* threads across n */
#define KSL (MB_TG / NX)    /* slices of k */
#define KB (4 * SIMD_WIDTH) /* elements of k per round of a SIMD group */
#if MB_BN % MB_VEC != 0 || MB_TG % NX != 0
#error "BN must be a multiple of VEC and TG of BN / VEC"
#endif

#define A_EL(kk) LOAD(a, a0 + (kk) * a_ks)

MB_KERNEL(bcastgemv) {
#if KSL > 1
  SHARED float red[KSL * MB_BN];
#endif
  const int t = LOCAL_ID(0);
  const int lane = SIMD_LANE;
  const int tx = t % NX;
  const int ks = t / NX;
  const int j0 = GROUP_ID(0) * MB_BN;
  const int j = j0 + MB_VEC * tx;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int va = a_ks == 1 && a0 % 4 == 0;
  const int b0 = bi * p.stride_b + j; /* B(kk, j) is b0 + kk * ldb */
  const int vb = MB_VEC == 4 && p.n % 4 == 0 && p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  const int rounds = (p.k + KSL * KB - 1) / (KSL * KB); /* the same for every thread */
  float acc[MB_VEC];
  for (int v = 0; v < MB_VEC; ++v) acc[v] = 0.0f;

  for (int rd = 0; rd < rounds; ++rd) {
    const int k0 = (rd * KSL + ks) * KB;
    const int ka = k0 + 4 * lane; /* this lane's four elements of A */
    const FLOAT4 xa = (va && ka + 4 <= p.k)
                          ? LOAD4(a, a0 + ka)
                          : MAKE_FLOAT4(ka < p.k ? A_EL(ka) : 0.0f, ka + 1 < p.k ? A_EL(ka + 1) : 0.0f,
                                        ka + 2 < p.k ? A_EL(ka + 2) : 0.0f, ka + 3 < p.k ? A_EL(ka + 3) : 0.0f);
    for (int l = 0; l < SIMD_WIDTH; ++l) {
      float x[4];
      x[0] = SIMD_BROADCAST(xa.x, l);
      x[1] = SIMD_BROADCAST(xa.y, l);
      x[2] = SIMD_BROADCAST(xa.z, l);
      x[3] = SIMD_BROADCAST(xa.w, l);
      const int kb = k0 + 4 * l;
      if (j < p.n) {
        for (int q = 0; q < 4; ++q) {
          const int kk = kb + q;
          if (kk < p.k) {
            const int bk = b0 + kk * p.ldb;
#if MB_VEC == 4
            if (vb) {
              const FLOAT4 w = LOAD4(b, bk);
              acc[0] += x[q] * w.x;
              acc[1] += x[q] * w.y;
              acc[2] += x[q] * w.z;
              acc[3] += x[q] * w.w;
            } else {
              for (int v = 0; v < 4; ++v)
                if (j + v < p.n) acc[v] += x[q] * LOAD(b, bk + v);
            }
#else
            acc[0] += x[q] * LOAD(b, bk);
#endif
          }
        }
      }
    }
  }

#if KSL > 1
  for (int v = 0; v < MB_VEC; ++v) red[ks * MB_BN + MB_VEC * tx + v] = acc[v];
  BARRIER();
  for (int col = t; col < MB_BN; col += MB_TG) {
    if (j0 + col < p.n) {
      float s = 0.0f;
      for (int q = 0; q < KSL; ++q) s += red[q * MB_BN + col];
      MB_STORE_C(C_AT(bi, 0, j0 + col), j0 + col, s);
    }
  }
#else
  for (int v = 0; v < MB_VEC; ++v)
    if (j + v < p.n) MB_STORE_C(C_AT(bi, 0, j + v), j + v, acc[v]);
#endif
}
