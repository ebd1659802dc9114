/* m = 1 over quantized weights (B stored n x k in MLX's affine format: common.h, QB_*),
 * built to run at the speed of reading the codes. qgemv, its elder, stays well short of
 * that on a GPU with HBM; each choice below removes one of its limits.
 *
 * Converting a code to float with an int -> float instruction is slow on NVIDIA's GPUs
 * (16 per clock per SM on sm_80 / sm_90, an eighth of the FMA rate: CUDA C Programming
 * Guide, "Arithmetic Instructions"), too slow for two 4-bit codes per byte of HBM. So the
 * float is made from bits (common.h, QB_HALF_CODE): a code q masked in place at bit s of
 * a 16-bit half of its word becomes q 2^s exactly with one and-or and a subtraction. The
 * 2^s stays on the product: each position s in a half has its own dot product, and they
 * are scaled back by 2^-s (exact) once per piece.
 *
 * The fold: per piece, sum x q and sum x, then scale * dot + bias * sum x once, so that a
 * code costs one subtraction and one multiply-add. A piece (16 bytes: 32 4-bit or 16
 * 8-bit codes) never straddles a group of scales: groups are multiples of 32 codes and
 * pieces start at multiples of their own size.
 *
 * A thread owns RPT rows at the same k: the x of a piece is loaded (and summed) once and
 * used for all of them. The 32 lanes of a team (a SIMD group on CUDA and Metal) read 32
 * consecutive pieces of a row, one 16-byte load each (LOAD_UINT4, so the rows' word
 * pitch must keep 16-byte alignment: `requires`), i.e. 512 contiguous bytes per row;
 * each thread issues U steps' loads (words, scales and biases of its RPT rows) before
 * any of their arithmetic, so that U * RPT 16-byte loads are in flight per thread.
 *
 * A work-group is TEAMS teams. KS of them share a row set and split its k: team s
 * of the KS reads spans s, s + KS, ... of 512 bytes, so that products with few rows
 * still fill the GPU. The partial sums go through SIMD_SUM, then group memory to add
 * the KS teams (none when KS is 1 and a team is one SIMD group). On OpenCL, whose SIMD
 * groups are one thread, every lane's partial goes through group memory.
 * Groups: (ceil(n / (TEAMS / KS * RPT)), batch). */
#define QMV_TEAMS MB_TEAMS
#define QMV_LANES 32 /* threads per team: the manifest's dispatch says so too */
#define QMV_SETS (QMV_TEAMS / MB_KS)            /* row sets per work-group */
#define QMV_CPW (32 / MB_BITS)                  /* codes per word */
#define QMV_CPH (16 / MB_BITS)                  /* codes per 16-bit half of a word */
#define QMV_CPP (4 * QMV_CPW)                   /* codes per 16-byte piece */
#define QMV_SPR (MB_KS * QMV_LANES / SIMD_WIDTH) /* SIMD groups per row set */
#define QMV_SGS (QMV_TEAMS * QMV_LANES / SIMD_WIDTH)

/* Word i (0..3, a constant once unrolled) of a UINT4. */
#define QMV_WORD(v, i) ((i) == 0 ? (v).x : (i) == 1 ? (v).y : (i) == 2 ? (v).z : (v).w)

MB_KERNEL(qmv) {
#if QMV_SPR > 1
  SHARED float red[QMV_SGS * MB_RPT];
#endif
  const int tid = LOCAL_ID(0);
  const int lane = tid % QMV_LANES;
  const int team = tid / QMV_LANES;
  const int slice = team % MB_KS;
  const int set = team / MB_KS;
  const int j0 = (GROUP_ID(0) * QMV_SETS + set) * MB_RPT;
  const int bi = GROUP_ID(1);
  const int pieces = p.k / QMV_CPP;
  const int a0 = A_AT(bi, 0, 0); /* m == 1: A's k values are contiguous in either layout */
  /* Rows past n read row n - 1 (in bounds, never stored), so that no branch guards a load. */
  int jr[MB_RPT];
  float acc[MB_RPT];
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r) {
    jr[r] = min(j0 + r, p.n - 1);
    acc[r] = 0.0f;
  }
  for (int pc0 = slice * QMV_LANES + lane; pc0 < pieces; pc0 += MB_U * MB_KS * QMV_LANES) {
    UINT4 w[MB_U][MB_RPT];
    float scale[MB_U][MB_RPT], bias[MB_U][MB_RPT];
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      /* A step past the row's end reads piece 0 again: in bounds, and its math is skipped. */
      const int pc = pc0 + u * MB_KS * QMV_LANES < pieces ? pc0 + u * MB_KS * QMV_LANES : 0;
      const int g = pc * QMV_CPP / p.qgroup;
#pragma unroll
      for (int r = 0; r < MB_RPT; ++r) {
        w[u][r] = LOAD_UINT4(QB_WORDS(bi, jr[r]), 4 * pc);
        scale[u][r] = QB_SCALE(bi, jr[r], g);
        bias[u][r] = QB_BIAS(bi, jr[r], g);
      }
    }
#pragma unroll
    for (int u = 0; u < MB_U; ++u) {
      const int pc = pc0 + u * MB_KS * QMV_LANES;
      if (pc < pieces) {
        float dot[MB_RPT][QMV_CPH];
#pragma unroll
        for (int r = 0; r < MB_RPT; ++r)
#pragma unroll
          for (int e = 0; e < QMV_CPH; ++e) dot[r][e] = 0.0f;
        float sum = 0.0f;
#pragma unroll
        for (int c4 = 0; c4 < QMV_CPP; c4 += 4) {
          const FLOAT4 x4 = LOAD4(a, a0 + pc * QMV_CPP + c4);
          const float x[4] = {x4.x, x4.y, x4.z, x4.w};
          sum += (x[0] + x[1]) + (x[2] + x[3]);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            /* Code c4 + i of the piece: its word, its half of the word, its place in the half. */
            const int wi = (c4 + i) / QMV_CPW, h = (c4 + i) % QMV_CPW / QMV_CPH, e = (c4 + i) % QMV_CPH;
#pragma unroll
            for (int r = 0; r < MB_RPT; ++r) dot[r][e] += x[i] * QB_HALF_CODE(QMV_WORD(w[u][r], wi), h, e, MB_BITS);
          }
        }
#pragma unroll
        for (int r = 0; r < MB_RPT; ++r) {
          float d = dot[r][QMV_CPH - 1];
#pragma unroll
          for (int e = QMV_CPH - 2; e >= 0; --e) d = d * (1.0f / (float)(1 << MB_BITS)) + dot[r][e];
          acc[r] += scale[u][r] * d + bias[u][r] * sum;
        }
      }
    }
  }
  /* Every thread gets here, rows past n included: no SIMD operation is inside a branch. */
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r) acc[r] = SIMD_SUM(acc[r]);
#if QMV_SPR == 1
#pragma unroll
  for (int r = 0; r < MB_RPT; ++r)
    if (lane == r && j0 + r < p.n) MB_STORE_C(C_AT(bi, 0, j0 + r), j0 + r, acc[r]);
#else
  if (SIMD_LANE == 0) {
#pragma unroll
    for (int r = 0; r < MB_RPT; ++r) red[SIMD_GROUP * MB_RPT + r] = acc[r];
  }
  BARRIER();
  const int in_set = tid % (MB_KS * QMV_LANES);
  if (in_set < MB_RPT && j0 + in_set < p.n) {
    float total = 0.0f;
    for (int s = 0; s < QMV_SPR; ++s) total += red[(set * QMV_SPR + s) * MB_RPT + in_set];
    MB_STORE_C(C_AT(bi, 0, j0 + in_set), j0 + in_set, total);
  }
#endif
}
