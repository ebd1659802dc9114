/* simdgemv: C(1 x n) = A(1 x k) . B for tiny shapes (attention's q.K^T and P.V over a
 * short context, k or n of a few dozen): every threadgroup is a single SIMD group of
 * 32 threads. No threadgroup memory, no barriers: the least set-up per group, and as
 * many groups as the shape has work. One batch entry per GROUP_ID(2).
 *
 * layout_nt (B stored n x k): the group owns BN rows. Each SIMD group (the one on Metal
 * and CUDA) takes rows g, g + NSG, ...; its lanes split k, VEC = 1 or 4 elements per
 * lane and step (FLOAT4 loads of A and B when VEC is 4 and aligned), and SIMD_SUM
 * reduces each row. On OpenCL (SIMD_WIDTH 1) each of the 32 threads is its own SIMD
 * group and takes whole rows.
 *
 * layout_nn (B stored k x n): the group owns BN = 32 * VEC * CPL columns; thread t has
 * VEC adjacent columns (a FLOAT4 of B when VEC is 4 and aligned) at each of CPL column
 * blocks t, t + 32, ... and walks all of k alone: no reduction at all, A(kk) read by
 * all lanes at once.
 *
 * Tails: rows past n are read from row n - 1 and never stored; columns past n are
 * neither read nor stored; the k % 4 tail goes through a scalar loop.
 *
 * Defines (MB_ + the grid key): MB_BN, MB_VEC (1 or 4), MB_CPL (nn: BN = 32 VEC CPL),
 * MB_layout_nt or MB_layout_nn.
 * Groups: (ceil(n / BN), 1, batch); threads: (32, 1, 1). Requires m == 1. */

#if MB_VEC != 1 && MB_VEC != 4
#error "VEC must be 1 or 4"
#endif
#if !MB_layout_nt && !MB_layout_nn
#error "define layout_nt or layout_nn"
#endif

#define SG_THREADS 32 /* the threadgroup: one SIMD group on Metal and CUDA */
#define A_EL(kk) LOAD(a, a0 + (kk) * a_ks)

#if MB_layout_nt
#define NSG (SG_THREADS / SIMD_WIDTH)
#define ROWS ((MB_BN + NSG - 1) / NSG)

MB_KERNEL(simdgemv) {
  const int lane = SIMD_LANE;
  const int sg = SIMD_GROUP;
  const int j0 = GROUP_ID(0) * MB_BN;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int va = a_ks == 1 && a0 % 4 == 0;
  const int vb = p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  /* OpenCL only: more threads than rows. Those past BN run the loops zero times but
   * still reach SIMD_SUM: no SIMD operation is ever inside a branch. */
  const int my_k = sg < MB_BN ? p.k : 0;
  int row[ROWS];
  float acc[ROWS];
  for (int r = 0; r < ROWS; ++r) {
    const int jr = j0 + sg + r * NSG;
    row[r] = bi * p.stride_b + p.ldb * (jr < p.n ? jr : p.n - 1);
    acc[r] = 0.0f;
  }
#if MB_VEC == 4
  const int k4 = my_k & ~3;
  for (int kk = 4 * lane; kk < k4; kk += 4 * SIMD_WIDTH) {
    const FLOAT4 x =
        va ? LOAD4(a, a0 + kk) : MAKE_FLOAT4(A_EL(kk), A_EL(kk + 1), A_EL(kk + 2), A_EL(kk + 3));
    for (int r = 0; r < ROWS; ++r) {
      const FLOAT4 w = LOAD4_IF(vb, b, row[r] + kk);
      acc[r] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
    }
  }
  for (int kk = k4 + lane; kk < my_k; kk += SIMD_WIDTH) {
#else
  for (int kk = lane; kk < my_k; kk += SIMD_WIDTH) {
#endif
    const float x = A_EL(kk);
    for (int r = 0; r < ROWS; ++r) acc[r] += x * LOAD(b, row[r] + kk);
  }
  for (int r = 0; r < ROWS; ++r) {
    const float v = SIMD_SUM(acc[r]);
    const int jr = j0 + sg + r * NSG;
    if (lane == 0 && sg + r * NSG < MB_BN && jr < p.n) MB_STORE_C(C_AT(bi, 0, jr), jr, v);
  }
}

#else /* layout_nn */
#if MB_BN != SG_THREADS * MB_VEC * MB_CPL
#error "nn: BN must be 32 * VEC * CPL"
#endif

MB_KERNEL(simdgemv) {
  const int t = LOCAL_ID(0);
  const int j0 = GROUP_ID(0) * MB_BN;
  const int bi = GROUP_ID(2);
  const int a0 = A_AT(bi, 0, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int b0 = bi * p.stride_b + j0;
  const int vb = MB_VEC == 4 && p.n % 4 == 0 && p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  float acc[MB_CPL * MB_VEC];
  for (int e = 0; e < MB_CPL * MB_VEC; ++e) acc[e] = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) {
    const float x = A_EL(kk);
    for (int cb = 0; cb < MB_CPL; ++cb) {
      const int col = (t + cb * SG_THREADS) * MB_VEC; /* first column of the block, from j0 */
      if (j0 + col < p.n) {
#if MB_VEC == 4
        if (vb) {
          const FLOAT4 w = LOAD4(b, b0 + kk * p.ldb + col);
          acc[cb * 4] += x * w.x;
          acc[cb * 4 + 1] += x * w.y;
          acc[cb * 4 + 2] += x * w.z;
          acc[cb * 4 + 3] += x * w.w;
        } else {
          for (int v = 0; v < 4; ++v)
            if (j0 + col + v < p.n) acc[cb * 4 + v] += x * LOAD(b, b0 + kk * p.ldb + col + v);
        }
#else
        acc[cb] += x * LOAD(b, b0 + kk * p.ldb + col);
#endif
      }
    }
  }
  for (int cb = 0; cb < MB_CPL; ++cb)
    for (int v = 0; v < MB_VEC; ++v) {
      const int jj = j0 + (t + cb * SG_THREADS) * MB_VEC + v;
      if (jj < p.n) MB_STORE_C(C_AT(bi, 0, jj), jj, acc[cb * MB_VEC + v]);
    }
}
#endif
