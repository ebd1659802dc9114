/* Shared by every GEMM kernel on every backend; included after the backend's
 * prelude, which supplies T, LOAD, STORE and the thread-id macros.
 *
 * The ABI: every kernel takes (a, b, c, bias, ws, p) with p an MBParams. The runner
 * packs MBParams from the spec (metalbench/specs.py), so its layout is fixed:
 * sixteen 4-byte fields, 64 bytes, no padding on any backend. */
#ifndef MB_COMMON_H
#define MB_COMMON_H

typedef struct {
  int batch, m, n, k;
  int lda, ldb, ldc;                /* row pitch of each matrix as stored, in elements */
  int stride_a, stride_b, stride_c; /* distance between batch entries, in elements */
  int trans_a;                      /* 1: A is stored k x m */
  int trans_b;                      /* 1: B is stored n x k (the usual weight layout) */
  int op;                           /* MB_OP_* */
  float alpha, beta;                /* used by MB_OP_ALPHA_BETA only */
  int reserved;
} MBParams;

#define MB_OP_MATMUL 0
#define MB_OP_BIAS_ADD 1
#define MB_OP_ALPHA_BETA 2

/* Element offsets of logical A[bi](i, kk), B[bi](kk, j) and C[bi](i, j). */
#define A_AT(bi, i, kk) ((bi) * p.stride_a + (p.trans_a ? (kk) * p.lda + (i) : (i) * p.lda + (kk)))
#define B_AT(bi, kk, j) ((bi) * p.stride_b + (p.trans_b ? (j) * p.ldb + (kk) : (kk) * p.ldb + (j)))
#define C_AT(bi, i, j) ((bi) * p.stride_c + (i) * p.ldc + (j))

/* The op's epilogue: C = acc, C = acc + bias[j], or C = alpha acc + beta C.
 * With beta == 0, C is not read (BLAS semantics: C may hold NaN). Split in two so
 * that a kernel can read the epilogue's operand (bias[j], or beta C) before its main
 * loop, where the load's latency hides behind the weights'. */
#define MB_EPILOGUE_IN(ci, j)                                                 \
  (p.op == MB_OP_BIAS_ADD ? LOAD(bias, (j))                                   \
   : (p.op == MB_OP_ALPHA_BETA && p.beta != 0.0f) ? p.beta * LOAD(c, (ci)) \
                                                  : 0.0f)
/* The operand for C[bi](i, j); 0 outside C, so tail lanes may ask. */
#define MB_EPILOGUE_AT(bi, i, j) ((i) < p.m && (j) < p.n ? MB_EPILOGUE_IN(C_AT((bi), (i), (j)), (j)) : 0.0f)
#define MB_STORE_C_IN(ci, acc, in) STORE(c, (ci), (p.op == MB_OP_ALPHA_BETA ? p.alpha * (acc) : (acc)) + (in))
#define MB_STORE_C(ci, j, acc) MB_STORE_C_IN((ci), (acc), MB_EPILOGUE_IN((ci), (j)))

#define LOCAL_LINEAR_ID (LOCAL_ID(0) + GROUP_SIZE(0) * (LOCAL_ID(1) + GROUP_SIZE(1) * LOCAL_ID(2)))
#define SIMD_LANE (LOCAL_LINEAR_ID % SIMD_WIDTH)
#define SIMD_GROUP (LOCAL_LINEAR_ID / SIMD_WIDTH)

#endif
