/* persistgemv: C(1 x n) = A(1 x k) . B with B stored n x k (nt), two techniques:
 *
 * - software-pipelined loads, DEPTH = 1, 2 or 3 buffers: each lane keeps the FLOAT4s of
 *   DEPTH steps of k in registers and issues the loads of step s + DEPTH - 1 before it
 *   multiplies step s, so DEPTH - 1 steps of B are in flight behind the arithmetic
 *   (DEPTH 3: triple-buffered). The step loop is unrolled by DEPTH, so every buffer
 *   index is a constant and the buffers stay in registers;
 * - CAP > 0: a persistent grid of CAP groups (fewer if there are fewer tiles) that
 *   take tiles from an atomic counter in the workspace until none are left (work
 *   stealing: a group that finishes early takes more). CAP = 0 is the plain grid, one
 *   tile per group.
 *
 * A tile is BN rows of one batch entry; tiles are numbered batch entry by batch entry.
 * The group's NSG SIMD groups own ROWS = BN / NSG rows each (interleaved), their lanes
 * split k four elements at a time (FLOAT4 loads of A and B when aligned, else scalar),
 * and SIMD_SUM reduces each row. On OpenCL (SIMD_WIDTH 1) each thread owns whole rows.
 *
 * The counter: thread 0 takes ticket = ATOMIC_INC(counter) and shares it through
 * threadgroup memory; tickets below the tile count are tiles, and a group stops at its
 * first ticket past them. So the counter ends at tiles + G (G groups, each with one
 * ticket too many), and the group that draws the last ticket, tiles + G - 1, knows that
 * every other increment came before its own in the counter's modification order (each
 * returned a smaller value): it resets the counter to 0 right after, leaving the
 * workspace zero for the next launch. That needs atomicity of the one word only, which
 * CUDA, MSL (relaxed atomics) and OpenCL 1.2 all give; no fence is involved.
 *
 * Tails: rows past n are read from row n - 1 and never stored; the k % 4 tail goes
 * through a scalar loop after the pipelined one.
 *
 * Defines (MB_ + the grid key): MB_BN, MB_TG, MB_DEPTH (1 .. 3), MB_CAP (0 or the group
 * count). Groups: CAP == 0: (ceil(n / BN), 1, batch); else (min(CAP, tiles), 1, 1).
 * Threads: (TG, 1, 1). Workspace: 1 int (the counter). Requires m == 1, B transposed. */

#if MB_DEPTH < 1 || MB_DEPTH > 3
#error "DEPTH must be 1, 2 or 3"
#endif

#define NSG (MB_TG / SIMD_WIDTH)
#define ROWS ((MB_BN + NSG - 1) / NSG)
#if NSG < MB_BN && MB_BN % NSG != 0
#error "BN must be a multiple of the SIMD groups per threadgroup"
#endif

#define A_EL(kk) LOAD(a, a0 + (kk) * a_ks)

/* Step st of this lane: elements 4 q .. 4 q + 3 with q = lane + st * SIMD_WIDTH, into
 * buffer d; zeros past the last whole FLOAT4, so the multiply needs no test. */
#define LOAD_STEP(d, st)                                                                        \
  do {                                                                                          \
    const int q_ = lane + (st) * SIMD_WIDTH;                                                    \
    if (q_ < nq) {                                                                              \
      const int kk_ = 4 * q_;                                                                   \
      xb[d] = va ? LOAD4(a, a0 + kk_) : MAKE_FLOAT4(A_EL(kk_), A_EL(kk_ + 1), A_EL(kk_ + 2), A_EL(kk_ + 3)); \
      for (int r_ = 0; r_ < ROWS; ++r_) wb[d][r_] = LOAD4_IF(vb, b, row[r_] + kk_);             \
    } else {                                                                                    \
      xb[d] = MAKE_FLOAT4(0.0f, 0.0f, 0.0f, 0.0f);                                              \
      for (int r_ = 0; r_ < ROWS; ++r_) wb[d][r_] = MAKE_FLOAT4(0.0f, 0.0f, 0.0f, 0.0f);        \
    }                                                                                           \
  } while (0)

MB_KERNEL(persistgemv) {
#if MB_CAP
  SHARED int ticket_s;
  GLOBAL_PTR int* counter = (GLOBAL_PTR int*)ws;
#endif
  const int t = LOCAL_ID(0);
  const int lane = SIMD_LANE;
  const int sg = SIMD_GROUP;
  const int ntiles = (p.n + MB_BN - 1) / MB_BN;
  const int k4 = p.k >> 2;                                  /* whole FLOAT4s of k */
  const int steps = (k4 + SIMD_WIDTH - 1) / SIMD_WIDTH;   /* the same in every lane */
  const int a_ks = p.trans_a ? p.lda : 1;

#if MB_CAP
  const int total = ntiles * p.batch;
  for (;;) {
    if (t == 0) {
      const int ticket = ATOMIC_INC(counter);
      if (ticket == total + NUM_GROUPS(0) - 1) ATOMIC_STORE_ZERO(counter); /* the last ticket */
      ticket_s = ticket;
    }
    BARRIER();
    const int tile = ticket_s;
    BARRIER(); /* everyone has read it before thread 0 writes the next */
    if (tile >= total) break;
    const int bi = tile / ntiles;
    const int j0 = (tile - bi * ntiles) * MB_BN;
#else
  {
    const int bi = GROUP_ID(2);
    const int j0 = GROUP_ID(0) * MB_BN;
#endif
    const int a0 = A_AT(bi, 0, 0);
    const int va = a_ks == 1 && a0 % 4 == 0;
    const int vb = p.ldb % 4 == 0 && (bi * p.stride_b) % 4 == 0;
    /* OpenCL only: threads past BN have no row. They run every loop zero times but
     * still reach SIMD_SUM: no SIMD operation is ever inside a branch. */
    const int active = sg < MB_BN;
    const int nq = active ? k4 : 0; /* whole FLOAT4s this thread reads */
    const int my_steps = active ? steps : 0;
    const int my_k = active ? p.k : 0;
    int row[ROWS];
    float acc[ROWS];
    FLOAT4 xb[MB_DEPTH];
    FLOAT4 wb[MB_DEPTH][ROWS];
    for (int r = 0; r < ROWS; ++r) {
      const int jr = j0 + sg + r * NSG;
      row[r] = bi * p.stride_b + p.ldb * (jr < p.n ? jr : p.n - 1);
      acc[r] = 0.0f;
    }
    /* Prologue: steps 0 .. DEPTH - 2 into buffers 0 .. DEPTH - 2. */
    for (int d = 0; d < MB_DEPTH - 1; ++d) LOAD_STEP(d, d);
    for (int s0 = 0; s0 < my_steps; s0 += MB_DEPTH) {
      for (int d = 0; d < MB_DEPTH; ++d) {
        /* Step s0 + d is in buffer d; first send for step s0 + d + DEPTH - 1. */
        LOAD_STEP((d + MB_DEPTH - 1) % MB_DEPTH, s0 + d + MB_DEPTH - 1);
        const FLOAT4 x = xb[d];
        for (int r = 0; r < ROWS; ++r) {
          const FLOAT4 w = wb[d][r];
          acc[r] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
        }
      }
    }
    for (int kk = 4 * k4 + lane; kk < my_k; kk += SIMD_WIDTH) { /* the k % 4 tail */
      const float x = A_EL(kk);
      for (int r = 0; r < ROWS; ++r) acc[r] += x * LOAD(b, row[r] + kk);
    }
    for (int r = 0; r < ROWS; ++r) {
      const float v = SIMD_SUM(acc[r]);
      const int jr = j0 + sg + r * NSG;
      if (lane == 0 && sg + r * NSG < MB_BN && jr < p.n) MB_STORE_C(C_AT(bi, 0, jr), jr, v);
    }
  }
}
