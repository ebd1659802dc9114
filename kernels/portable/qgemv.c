/* m = 1 over quantized weights (B stored n x k in MLX's affine format: common.h, QB_*).
 * A group takes RPG rows of B, TPR threads each; a thread walks its row in chunks of VPT
 * consecutive codes (VPT * bits a whole number of words, and inside one group of
 * scales: every group size is a multiple of 32), loads the chunk's words once and
 * unpacks them in registers. Where dequantization happens (DQ):
 *   reg   w = scale * q + bias for every code, then x * w;
 *   fold  sum x * q and sum x over the chunk, then scale * dot + bias * sum once per
 *         chunk: a multiply-add per code fewer.
 * BITS: the bit width compiled in (unpacking folds to shifts and masks), or 0 for any
 * width read from p at run time. The TPR partials of a row are summed with SIMD_SUM
 * where a row is whole SIMD groups (TPR a multiple of SIMD_WIDTH: TPR 32 on CUDA and
 * Metal, every TPR on OpenCL, whose SIMD groups are one thread), then the row's SIMD
 * groups' sums in group memory (none, and no barrier, when a row is one SIMD group);
 * where a SIMD group spans several rows (TPR 16 on a 32-wide SIMD), all in group memory.
 * Groups: (ceil(n / RPG), batch). */
#if MB_BITS
#define QBITS MB_BITS
#define NW_MAX (MB_VPT * MB_BITS / 32)
#else
#define QBITS p.qbits
#define NW_MAX (MB_VPT * 8 / 32)
#endif

/* Code e of a chunk whose words are w[]: bits e * bits .. of their little-endian stream.
 * A macro rather than a function, so that w stays a private array (MSL would need its
 * address space spelled out in a helper's parameter). */
#define QGEMV_POS(e, bits) ((e) * (bits))
#define QGEMV_CODE(w, e, bits)                                                                           \
  ((float)(((w[QGEMV_POS(e, bits) >> 5] >> (QGEMV_POS(e, bits) & 31)) |                                 \
            ((QGEMV_POS(e, bits) & 31) + (bits) > 32 ? w[(QGEMV_POS(e, bits) >> 5) + 1]                 \
                                                           << (32 - (QGEMV_POS(e, bits) & 31))         \
                                                     : 0u)) &                                            \
           ((1u << (bits)) - 1u)))

#if MB_TPR % SIMD_WIDTH == 0 && MB_TPR / SIMD_WIDTH == 1
#define QGEMV_SHARED 0 /* a row is one SIMD group: SIMD_SUM alone */
#else
#define QGEMV_SHARED 1
#endif

MB_KERNEL(qgemv) {
#if QGEMV_SHARED
  SHARED float red[MB_RPG * MB_TPR];
#endif
  int tid = LOCAL_ID(0);
  int r = tid / MB_TPR;
  int t = tid % MB_TPR;
  int j = GROUP_ID(0) * MB_RPG + r;
  int bi = GROUP_ID(1);
  float acc = 0.0f;
  if (j < p.n) {
    GLOBAL_PTR const unsigned int* row = QB_WORDS(bi, j);
    int bits = QBITS;
    int nw = MB_VPT * bits / 32;
    int a0 = A_AT(bi, 0, 0); /* m == 1: A's k values are contiguous in either layout */
    for (int c0 = t * MB_VPT; c0 < p.k; c0 += MB_TPR * MB_VPT) {
      unsigned int w[NW_MAX];
      int w0 = c0 * bits / 32;
      for (int e = 0; e < NW_MAX; ++e) w[e] = e < nw ? row[w0 + e] : 0u;
      int g = c0 / p.qgroup;
      float scale = QB_SCALE(bi, j, g);
      float bias = QB_BIAS(bi, j, g);
#if MB_DQ_fold
      float dot = 0.0f, sum = 0.0f;
#endif
      for (int e = 0; e < MB_VPT; e += 4) {
        FLOAT4 x = LOAD4(a, a0 + c0 + e);
        float q0 = QGEMV_CODE(w, e, bits), q1 = QGEMV_CODE(w, e + 1, bits);
        float q2 = QGEMV_CODE(w, e + 2, bits), q3 = QGEMV_CODE(w, e + 3, bits);
#if MB_DQ_fold
        dot += x.x * q0 + x.y * q1 + x.z * q2 + x.w * q3;
        sum += x.x + x.y + x.z + x.w;
#else
        acc += x.x * (scale * q0 + bias) + x.y * (scale * q1 + bias) + x.z * (scale * q2 + bias) +
               x.w * (scale * q3 + bias);
#endif
      }
#if MB_DQ_fold
      acc += scale * dot + bias * sum;
#endif
    }
  }
  /* Every thread gets here, rows past n included: no SIMD operation is inside a branch. */
#if MB_TPR % SIMD_WIDTH == 0
#define QGEMV_SPR (MB_TPR / SIMD_WIDTH) /* SIMD groups per row */
  acc = SIMD_SUM(acc);
#if QGEMV_SPR > 1
  if (SIMD_LANE == 0) red[r * QGEMV_SPR + t / SIMD_WIDTH] = acc;
  BARRIER();
  for (int s = QGEMV_SPR / 2; s > 0; s >>= 1) {
    if (t < s) red[r * QGEMV_SPR + t] += red[r * QGEMV_SPR + t + s];
    BARRIER();
  }
  acc = red[r * QGEMV_SPR];
#endif
#else
  red[tid] = acc;
  BARRIER();
  for (int s = MB_TPR / 2; s > 0; s >>= 1) {
    if (t < s) red[tid] += red[tid + s];
    BARRIER();
  }
  acc = red[tid];
#endif
  if (t == 0 && j < p.n) MB_STORE_C(C_AT(bi, 0, j), j, acc);
}
