/* skinny: C (m x n) = A (m x k) . B for small m (2 .. 16: a few sequences decoded
 * together) with fp32 FMA: every element of B is loaded once and multiplied into all m
 * rows, so the weights are read once, as a GEMV reads them, for MR rows of output.
 * Cheaper than the matrix tile while FMA keeps up with memory (m up to about 8 on a
 * GPU whose FMA rate is some 30 times its bandwidth in halves).
 *
 * A's rows are staged in group memory KC elements of k at a time (as floats, zero past
 * m and past the chunk's end), where every SIMD group reads them: A is small, B streams.
 *
 * layout_nt (B stored n x k, a linear layer's weight): each SIMD group owns ROWS
 * consecutive rows of B; its lanes split k four elements at a time (FLOAT4 loads of B
 * and of the staged A), each FLOAT4 of B feeding MR x 4 FMAs; then SIMD_SUM per output.
 * On OpenCL every work-item is a SIMD group: ROWS is then ceil(BN / TG), and work-items
 * past BN have no row.
 *
 * layout_nn (B stored k x n, the fused QKV projection): NX = BN / 4 threads across n
 * (FLOAT4 loads along n), KS = TG / NX slices of threads split k, four rows in flight
 * per thread; A is staged
 * transposed (xt[kk][i]) so that one row of k gives each thread its MR values of A in
 * MR / 4 FLOAT4s. The slices are summed in group memory, one output row at a time.
 *
 * SPLITS > 1 splits k across SPLITS groups (grid y): each puts its partial sums into the
 * workspace (WS_PUT), counts itself in (WS_ARRIVE), and the last adds the SPLITS
 * partials in split order (WS_TAKE_SUM), stores C and resets the counter, leaving the
 * workspace zero: for products whose n alone makes too few groups.
 *
 * Tails: rows of B past n are read from row n - 1 and never stored (nt) or not read
 * (nn); vector loads are taken where the run-time alignment test passes (LOAD4_IF),
 * else scalar ones; the k % 4 tail goes through a scalar loop (nt).
 *
 * Workspace (floats, SPLITS > 1): batch * SPLITS * m * n partials, partial (bi, s, i, j)
 * at ((bi * SPLITS + s) * m + i) * n + j, then batch * ceil(n / BN) int counters.
 *
 * Defines (MB_ + the grid key): MB_BN, MB_TG, MB_MR (rows of A held; m <= MR, a multiple
 * of 4 or 2), MB_KC, MB_SPLITS, MB_layout_nt or MB_layout_nn.
 * Groups: (ceil(n / BN), SPLITS, batch); threads: (TG, 1, 1). */

#if !MB_layout_nt && !MB_layout_nn
#error "define layout_nt or layout_nn"
#endif
#if MB_KC % 4 != 0
#error "KC must be a multiple of 4"
#endif

#if MB_layout_nt
#define NSG (MB_TG / SIMD_WIDTH)
#define ROWS ((MB_BN + NSG - 1) / NSG)
#if NSG < MB_BN && MB_BN % NSG != 0
#error "BN must be a multiple of the SIMD groups per group"
#endif
#else
#define NX (MB_BN / 4)
#define KS (MB_TG / NX)
#define RU 4 /* rows of k in flight per thread */
#if MB_BN % 4 != 0 || MB_TG % NX != 0 || MB_MR % 4 != 0
#error "nn: BN must be a multiple of 4, TG of BN / 4, MR of 4"
#endif
#endif

MB_KERNEL(skinny) {
#if MB_layout_nt
  SHARED FLOAT4 xs[MB_MR * (MB_KC / 4)]; /* xs[i * KC / 4 + kk / 4]: A(i, c0 + kk .. + 3) */
#else
  SHARED FLOAT4 xt[MB_KC * (MB_MR / 4)]; /* xt[kk * MR / 4 + i / 4]: A(i .. i + 3, c0 + kk) */
  SHARED float red[KS * MB_BN];
#endif
#if MB_SPLITS > 1
  SHARED int last;
#endif
  const int t = LOCAL_LINEAR_ID;
  const int j0 = GROUP_ID(0) * MB_BN;
  const int split = GROUP_ID(1);
  const int bi = GROUP_ID(2);
  /* This split's range of k, a multiple of 4 long so vector loads stay aligned. */
  const int kc = ((p.k + MB_SPLITS - 1) / MB_SPLITS + 3) / 4 * 4;
  const int kbeg = split * kc;
  const int kend = kbeg + kc < p.k ? kbeg + kc : p.k;
  const int va = !p.trans_a && p.lda % 4 == 0 && (bi * p.stride_a) % 4 == 0;
#if MB_SPLITS > 1
  GLOBAL_PTR float* part = ws + (bi * MB_SPLITS + split) * p.m * p.n;
#endif

#if MB_layout_nt
  const int lane = SIMD_LANE;
  const int sg = SIMD_GROUP;
  const int vb = p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
  int row[ROWS];
#define ACC_N (MB_MR * ROWS)
  float acc[ACC_N];
  for (int r = 0; r < ROWS; ++r) {
    const int jr = j0 + sg * ROWS + r;
    row[r] = bi * p.stride_b + p.ldb * (jr < p.n ? jr : p.n - 1);
  }
#else
  const int tx = t % NX;
  const int ks = t / NX;
  const int j = j0 + 4 * tx;
  const int b0 = bi * p.stride_b + j; /* B(kk, j) is b0 + kk * ldb */
  const int vb = p.n % 4 == 0 && p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
#define ACC_N (MB_MR * 4)
  float acc[ACC_N];
#endif
  for (int e = 0; e < ACC_N; ++e) acc[e] = 0.0f;

  for (int c0 = kbeg; c0 < kend; c0 += MB_KC) {
    const int c1 = c0 + MB_KC < kend ? c0 + MB_KC : kend;
    /* A(0 .. MR, c0 .. c1) into group memory, zero past m and c1. */
    BARRIER(); /* every thread is done with the previous chunk */
    for (int e = t; e < MB_MR * (MB_KC / 4); e += MB_TG) {
      const int i = e / (MB_KC / 4), q = 4 * (e % (MB_KC / 4));
      FLOAT4 x = MAKE_FLOAT4(0.0f, 0.0f, 0.0f, 0.0f);
      if (i < p.m) {
        const int a0 = A_AT(bi, i, c0 + q);
        if (va && c0 + q + 4 <= c1) {
          x = LOAD4(a, a0);
        } else {
          const int ks_ = p.trans_a ? p.lda : 1;
          x = MAKE_FLOAT4(c0 + q < c1 ? LOAD(a, a0) : 0.0f, c0 + q + 1 < c1 ? LOAD(a, a0 + ks_) : 0.0f,
                          c0 + q + 2 < c1 ? LOAD(a, a0 + 2 * ks_) : 0.0f, c0 + q + 3 < c1 ? LOAD(a, a0 + 3 * ks_) : 0.0f);
        }
      }
#if MB_layout_nt
      xs[e] = x;
#else
      /* Transposed: element (i, q + u) goes to xt[(q + u) * MR / 4 + i / 4], component i % 4. */
      {
        const float xv[4] = {x.x, x.y, x.z, x.w};
        SHARED_PTR float* xf = (SHARED_PTR float*)xt;
        for (int u = 0; u < 4; ++u) xf[(q + u) * MB_MR + i] = xv[u];
      }
#endif
    }
    BARRIER();

#if MB_layout_nt
    if (sg < MB_BN) { /* OpenCL: work-items past BN have no row; no SIMD operation in here */
      const int c4 = c0 + ((c1 - c0) & ~3);
      for (int kk = c0 + 4 * lane; kk < c4; kk += 4 * SIMD_WIDTH) {
        FLOAT4 w[ROWS];
        for (int r = 0; r < ROWS; ++r) w[r] = LOAD4_IF(vb, b, row[r] + kk);
        for (int i = 0; i < MB_MR; ++i) {
          const FLOAT4 x = xs[i * (MB_KC / 4) + (kk - c0) / 4];
          for (int r = 0; r < ROWS; ++r)
            acc[i * ROWS + r] += x.x * w[r].x + x.y * w[r].y + x.z * w[r].z + x.w * w[r].w;
        }
      }
      for (int kk = c4 + lane; kk < c1; kk += SIMD_WIDTH) { /* the k % 4 tail of the last chunk */
        SHARED_PTR float* xf = (SHARED_PTR float*)xs;
        for (int r = 0; r < ROWS; ++r) {
          const float w = LOAD(b, row[r] + kk);
          for (int i = 0; i < MB_MR; ++i) acc[i * ROWS + r] += xf[i * MB_KC + (kk - c0)] * w;
        }
      }
    }
#else
    if (j < p.n) {
      /* RU rows of k per step, their loads issued before any is used (the last step may be short). */
      for (int k0 = c0 + ks; k0 < c1; k0 += RU * KS) {
        FLOAT4 w[RU];
        for (int u = 0; u < RU; ++u) {
          const int bk = b0 + (k0 + u * KS < c1 ? k0 + u * KS : k0) * p.ldb;
          w[u] = vb ? LOAD4(b, bk)
                    : MAKE_FLOAT4(LOAD(b, bk), j + 1 < p.n ? LOAD(b, bk + 1) : 0.0f,
                                  j + 2 < p.n ? LOAD(b, bk + 2) : 0.0f, j + 3 < p.n ? LOAD(b, bk + 3) : 0.0f);
        }
        for (int u = 0; u < RU && k0 + u * KS < c1; ++u) {
          for (int i4 = 0; i4 < MB_MR / 4; ++i4) {
            const FLOAT4 x = xt[(k0 + u * KS - c0) * (MB_MR / 4) + i4];
            const float xv[4] = {x.x, x.y, x.z, x.w};
            for (int q = 0; q < 4; ++q) {
              acc[(4 * i4 + q) * 4] += xv[q] * w[u].x;
              acc[(4 * i4 + q) * 4 + 1] += xv[q] * w[u].y;
              acc[(4 * i4 + q) * 4 + 2] += xv[q] * w[u].z;
              acc[(4 * i4 + q) * 4 + 3] += xv[q] * w[u].w;
            }
          }
        }
      }
    }
#endif
  }

  /* ---- each output once: stored, or put into the workspace for the last split ---- */
#if MB_SPLITS > 1
#define EMIT(i, jj, v) WS_PUT(part + (i) * p.n + (jj), (v))
#else
#define EMIT(i, jj, v) MB_STORE_C(C_AT(bi, (i), (jj)), (jj), (v))
#endif
#if MB_layout_nt
  /* Every thread reaches SIMD_SUM (on OpenCL those past BN add their zeros). */
  for (int i = 0; i < MB_MR; ++i) {
    for (int r = 0; r < ROWS; ++r) {
      const float v = SIMD_SUM(acc[i * ROWS + r]);
      const int jr = j0 + sg * ROWS + r;
      if (lane == 0 && i < p.m && sg * ROWS + r < MB_BN && jr < p.n) EMIT(i, jr, v);
    }
  }
#else
  for (int i = 0; i < MB_MR && i < p.m; ++i) {
    BARRIER(); /* the previous row's sums are read */
    for (int u = 0; u < 4; ++u) red[ks * MB_BN + 4 * tx + u] = acc[i * 4 + u];
    BARRIER();
    for (int col = t; col < MB_BN; col += MB_TG) {
      if (j0 + col < p.n) {
        float s = 0.0f;
        for (int q = 0; q < KS; ++q) s += red[q * MB_BN + col];
        EMIT(i, j0 + col, s);
      }
    }
  }
#endif

#if MB_SPLITS > 1
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)(ws + p.batch * MB_SPLITS * p.m * p.n) + bi * NUM_GROUPS(0) + GROUP_ID(0);
  WS_ARRIVE(counter, MB_SPLITS, last);
  if (last) {
    /* A column per thread, four rows at a time, so that their takes overlap. */
    GLOBAL_PTR float* parts = ws + bi * MB_SPLITS * p.m * p.n;
    for (int e = t; e < MB_BN; e += MB_TG) {
      const int jj = j0 + e;
      for (int i = 0; jj < p.n && i < p.m; i += 4) {
        const int count = p.m - i < 4 ? p.m - i : 4;
        const MBSum4 sum = WS_TAKE_SUM4(parts + i * p.n + jj, p.n, count, p.m * p.n, MB_SPLITS);
        for (int u = 0; u < count; ++u) MB_STORE_C(C_AT(bi, i + u, jj), jj, sum.v[u]);
      }
    }
    if (t == 0) ATOMIC_STORE_ZERO(counter);
  }
#endif
}
