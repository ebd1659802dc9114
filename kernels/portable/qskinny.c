/* m = 2 .. 16 over quantized weights (B stored n x k in MLX's affine format: common.h,
 * QB_*): every weight is unpacked and dequantized once for all m rows of A. A group
 * takes RPG rows of B with TPR threads each and walks k one scale group (p.qgroup codes)
 * at a time. Where dequantization happens (DQ):
 *   reg     each thread unpacks VPT consecutive codes of its row into registers and
 *           multiplies them with the m rows of A;
 *   shared  the group first dequantizes the RPG x qgroup tile into group memory,
 *           each thread a share of it, then every thread reads its row's weights there
 *           (the tile is the unit of reuse, not the thread's registers).
 * MR: the most rows of A a variant holds accumulators for. Groups: (ceil(n / RPG), batch). */
#define QS_TILE (MB_RPG * 128) /* the largest group of scales: 128 codes */

MB_KERNEL(qskinny) {
  SHARED float red[MB_RPG * MB_TPR];
#if MB_DQ_shared
  SHARED float tile[QS_TILE];
#endif
  int tid = LOCAL_ID(0);
  int r = tid / MB_TPR;
  int t = tid % MB_TPR;
  int j = GROUP_ID(0) * MB_RPG + r;
  int bi = GROUP_ID(1);
  int gsize = p.qgroup;
  float acc[MB_MR];
  for (int i = 0; i < MB_MR; ++i) acc[i] = 0.0f;
  for (int g = 0; g < p.k / gsize; ++g) {
#if MB_DQ_shared
    /* Every thread of the group dequantizes a share of the tile (rows past n as 0). */
    for (int e = tid; e < MB_RPG * gsize; e += MB_RPG * MB_TPR) {
      int rr = e / gsize, kk = e % gsize;
      int jj = GROUP_ID(0) * MB_RPG + rr;
      float w = 0.0f;
      if (jj < p.n)
        w = QB_SCALE(bi, jj, g) * (float)QB_CODE(QB_WORDS(bi, jj), g * gsize + kk) + QB_BIAS(bi, jj, g);
      tile[rr * gsize + kk] = w;
    }
    BARRIER();
    for (int kk = t; kk < gsize; kk += MB_TPR) {
      float w = tile[r * gsize + kk];
      for (int i = 0; i < MB_MR; ++i)
        if (i < p.m) acc[i] += LOAD(a, A_AT(bi, i, g * gsize + kk)) * w;
    }
    BARRIER();
#else
    if (j < p.n) {
      GLOBAL_PTR const unsigned int* row = QB_WORDS(bi, j);
      float scale = QB_SCALE(bi, j, g);
      float bias = QB_BIAS(bi, j, g);
      for (int c0 = t * MB_VPT; c0 < gsize; c0 += MB_TPR * MB_VPT) {
        float w[MB_VPT];
        for (int e = 0; e < MB_VPT; ++e) w[e] = scale * (float)QB_CODE(row, g * gsize + c0 + e) + bias;
        for (int i = 0; i < MB_MR; ++i)
          if (i < p.m)
            for (int e = 0; e < MB_VPT; ++e) acc[i] += LOAD(a, A_AT(bi, i, g * gsize + c0 + e)) * w[e];
      }
    }
#endif
  }
  /* The TPR partials of each output, one row of A at a time. */
  for (int i = 0; i < MB_MR; ++i) {
    if (i >= p.m) break; /* the same in every thread: p is uniform */
    red[tid] = acc[i];
    BARRIER();
    for (int s = MB_TPR / 2; s > 0; s >>= 1) {
      if (t < s) red[tid] += red[tid + s];
      BARRIER();
    }
    if (t == 0 && j < p.n) MB_STORE_C(C_AT(bi, i, j), j, red[tid]);
    BARRIER();
  }
}
