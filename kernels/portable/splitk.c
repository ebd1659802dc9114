/* splitk: for large k and small n. SPLITS groups share each tile of BN outputs of one
 * row of C, each taking one slice of k; every row i of A (and batch entry) is its
 * own gemv, so the kernel suits small m.
 *
 * Each group computes its slice like gemv (nt: threads stride over k, SIMD_SUM then
 * group memory; nn: BN / VEC threads across n, KS = TG * VEC / BN slices of k) and
 * puts its BN partial sums in the workspace (WS_PUT: atomic, see the end). It then
 * counts its arrival on the tile's int counter; the last group to arrive takes the
 * SPLITS partials back (WS_TAKE, which leaves each word 0) and adds them in slice order
 * (the result does not depend on arrival order), applies the op and resets the
 * counter, leaving the workspace as it found it: zero.
 *
 * Workspace (floats): batch * m * SPLITS * n partials, then batch * m * ceil(n / BN)
 * int counters. Partial (z, s, j) lives at (z * SPLITS + s) * n + j, z = bi * m + i.
 *
 * Defines (MB_ + the grid key): MB_BN, MB_VEC (1 or 4), MB_TG, MB_SPLITS, MB_layout_nt or
 * MB_layout_nn.
 * Groups: (ceil(n / BN), SPLITS, batch * m); threads: (TG, 1, 1).
 * VEC == 4 requires k % 4 == 0 (nt) or n % 4 == 0 (nn). */

#if MB_VEC != 1 && MB_VEC != 4
#error "VEC must be 1 or 4"
#endif
#if !MB_layout_nt && !MB_layout_nn
#error "define layout_nt or layout_nn"
#endif

#define NW (MB_TG / SIMD_WIDTH)
#if MB_layout_nn
#define NX (MB_BN / MB_VEC)
#define KS (MB_TG * MB_VEC / MB_BN)
#define RED_SIZE (KS * MB_BN)
#else
#define RED_SIZE (MB_BN * NW)
#endif

MB_KERNEL(splitk) {
  SHARED float red[RED_SIZE];
  SHARED int last;
  const int t = LOCAL_ID(0);
  const int j0 = GROUP_ID(0) * MB_BN;
  const int s = GROUP_ID(1);
  const int z = GROUP_ID(2);
  const int bi = z / p.m;
  const int i = z - bi * p.m;
  /* The slice: a multiple of 4 long so vector loads stay aligned. */
  const int kc = ((p.k + MB_SPLITS - 1) / MB_SPLITS + 3) / 4 * 4;
  const int k0 = s * kc;
  const int k1 = k0 + kc < p.k ? k0 + kc : p.k;
  const int a0 = A_AT(bi, i, 0);
  const int a_ks = p.trans_a ? p.lda : 1;
  const int ntiles = (p.n + MB_BN - 1) / MB_BN;
  GLOBAL_PTR float* part = ws + z * MB_SPLITS * p.n;
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + p.batch * p.m * MB_SPLITS * p.n) + z * ntiles + GROUP_ID(0);

#if MB_layout_nt
  int row[MB_BN];
  float acc[MB_BN];
  for (int r = 0; r < MB_BN; ++r) {
    row[r] = p.stride_b * bi + p.ldb * (j0 + r < p.n ? j0 + r : p.n - 1); /* rows past n: read, never stored */
    acc[r] = 0.0f;
  }
#if MB_VEC == 4
  for (int kk = k0 + 4 * t; kk < k1; kk += 4 * MB_TG) {
    FLOAT4 x = a_ks == 1 ? LOAD4(a, a0 + kk)
                         : MAKE_FLOAT4(LOAD(a, a0 + kk * a_ks), LOAD(a, a0 + (kk + 1) * a_ks),
                                       LOAD(a, a0 + (kk + 2) * a_ks), LOAD(a, a0 + (kk + 3) * a_ks));
    for (int r = 0; r < MB_BN; ++r) {
      FLOAT4 w = LOAD4(b, row[r] + kk);
      acc[r] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
    }
  }
#else
  for (int kk = k0 + t; kk < k1; kk += MB_TG) {
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
    float sum = 0.0f;
    for (int w = 0; w < NW; ++w) sum += red[t * NW + w];
    WS_PUT(part + s * p.n + j0 + t, sum);
  }

#else /* layout_nn */
  const int tx = t % NX;
  const int ks = t / NX;
  const int j = j0 + tx * MB_VEC;
  const int b0 = p.stride_b * bi + j;
  float acc[MB_VEC];
  for (int v = 0; v < MB_VEC; ++v) acc[v] = 0.0f;
  if (j < p.n) {
    for (int kk = k0 + ks; kk < k1; kk += KS) {
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
  for (int v = 0; v < MB_VEC; ++v) red[ks * MB_BN + tx * MB_VEC + v] = acc[v];
  BARRIER();
  if (t < MB_BN && j0 + t < p.n) {
    float sum = 0.0f;
    for (int q = 0; q < KS; ++q) sum += red[q * MB_BN + t];
    WS_PUT(part + s * p.n + j0 + t, sum);
  }
#endif

  /* Count this group in; the last to arrive reduces. The partials went out through
   * WS_PUT and come back through WS_TAKE, atomics on each word, so the last group can
   * never add a partial that has not reached it: WS_TAKE waits for its word, and every
   * word it waits for was put by a group that has already counted itself in (its
   * threads put, then the barrier, then its thread 0 counts), so the wait ends. That
   * needs no cross-group memory ordering, which MSL before 3.2 and OpenCL 1.2 do not
   * have. DEVICE_FENCE adds that ordering where the language has it (CUDA: a device
   * fence; MSL 3.2: a device-scope fence; elsewhere a group barrier or a fence of this
   * thread only), so there the first WS_TAKE finds its word; correctness never rests
   * on it. Exactly one group reads SPLITS - 1 from the counter (atomic increments of one
   * word), and it resets the counter after its own increment, which is the last in
   * that word's modification order: the counter is left at 0. */
  DEVICE_FENCE();
  BARRIER();
  if (t == 0) last = ATOMIC_INC(counter) == MB_SPLITS - 1;
  BARRIER();
  if (last) {
    DEVICE_FENCE();
    if (t < MB_BN && j0 + t < p.n) {
      /* In slice order, so the sum does not depend on the order of arrival; WS_TAKE
       * leaves each partial's word 0 again. */
      float sum = 0.0f;
      for (int q = 0; q < MB_SPLITS; ++q) sum += WS_TAKE(part + q * p.n + j0 + t);
      MB_STORE_C(C_AT(bi, i, j0 + t), j0 + t, sum);
    }
    if (t == 0) ATOMIC_STORE_ZERO(counter);
  }
}
