/* Shared by every GEMM kernel on every backend; included after the backend's
 * prelude, which supplies T, LOAD, STORE and the thread-id macros.
 *
 * The ABI: every kernel takes (a, b, c, bias, ws, p) with p an MBParams. This file is
 * its one definition. The native core compiles against it (the vendor builtins read
 * p; _core.abi() reports each field's offset and type as built), the runner packs p
 * from the spec (metalbench/specs.py, which tests/test_specs.py checks against
 * _core.abi()), and `metalbench export` copies the MBParams block below into the
 * header it writes. */
#ifndef MB_COMMON_H
#define MB_COMMON_H

/* ---- MBParams: from here to its end mark, `metalbench export` copies this block ---- */
#ifndef MB_PARAMS_H
#define MB_PARAMS_H
/* The fields in memory order, as FIELD(type, name), so that the host can list them
 * (csrc/core/abi.cpp). Adding one is a line here and its value in specs.Spec.params().
 * Every field is 4 bytes, so no backend pads the struct. */
#define MB_PARAMS_FIELDS(FIELD)                                                                                 \
  FIELD(int, batch) FIELD(int, m) FIELD(int, n) FIELD(int, k)                                                   \
  FIELD(int, lda) FIELD(int, ldb) FIELD(int, ldc)                /* row pitch as stored, in elements */         \
  FIELD(int, stride_a) FIELD(int, stride_b) FIELD(int, stride_c) /* between batch entries, in elements */       \
  FIELD(int, trans_a)                                            /* 1: A is stored k x m */                     \
  FIELD(int, trans_b)                                            /* 1: B is stored n x k (the weight layout) */ \
  FIELD(int, op)                                                 /* MB_OP_* */                                  \
  FIELD(float, alpha) FIELD(float, beta)                         /* used by MB_OP_ALPHA_BETA only */            \
  FIELD(int, qbits) FIELD(int, qgroup)        /* quantized B (kernels/README.md); 0 when B is in T */           \
  FIELD(int, qscales) FIELD(int, qbiases)     /* where B's scales and biases start, in T elements from b */     \
  FIELD(int, reserved)
#define MB_PARAMS_DECLARE(type, name) type name;
typedef struct {
  MB_PARAMS_FIELDS(MB_PARAMS_DECLARE)
} MBParams;

#define MB_OP_MATMUL 0
#define MB_OP_BIAS_ADD 1
#define MB_OP_ALPHA_BETA 2
#endif
/* ---- end of MBParams ---- */

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

/* Elements i..i+3 of v as a FLOAT4: one vector load when `vec` is true (the caller has
 * checked that v + i is aligned to 4 elements: i, the pitch and the batch offset all
 * multiples of 4), else four scalar loads, which need no alignment. Make `vec` the
 * same in every thread, so that it is a branch the hardware never diverges on. */
#define LOAD4_IF(vec, v, i) \
  ((vec) ? LOAD4(v, i) : MAKE_FLOAT4(LOAD(v, (i)), LOAD(v, (i) + 1), LOAD(v, (i) + 2), LOAD(v, (i) + 3)))

/* Hand-off of floats between groups through the workspace (kernels/README.md). A slot is
 * one 32-bit word of ws: 0 when empty, else the complement of the bits of the float put
 * there. No float is stored as 0: a NaN is stored as the quiet NaN 0x7fc00000, so the
 * only bit pattern whose complement is 0 (0xffffffff, a NaN) never is. The NaN test is
 * on the bits, so fast math cannot fold it away.
 *
 * WS_PUT(slot, x): one atomic exchange fills the empty slot.
 * WS_TAKE(slot): atomic exchanges with 0 until one returns a full slot: the value comes
 *   back and the slot is left empty. Call it only for a slot whose WS_PUT has already
 *   been executed (its group has been counted in); it waits for that write to reach the
 *   word, never for a group that may not have started.
 *
 * Why this is correct on every backend without a device-scope fence: both sides are
 * atomic read-modify-writes of the one word, so they are totally ordered in that word's
 * modification order (OpenCL 1.2, CUDA and MSL all guarantee atomicity per location).
 * The taker sees either 0 (the put is still in flight: it tries again) or the value; it
 * can never see a stale or torn copy. A fence between the put and the arrival counter
 * (DEVICE_FENCE) then only makes the first try succeed where the language has one. */
#ifdef DEVICE_FN /* kernel code only: host code includes this file for MBParams */
DEVICE_FN void mb_ws_put(GLOBAL_PTR float* slot, float x) {
  int bits = FLOAT_AS_INT(x);
  if ((bits & 0x7fffffff) > 0x7f800000) bits = 0x7fc00000;
  ATOMIC_XCHG((GLOBAL_PTR int*)slot, ~bits);
}
DEVICE_FN float mb_ws_take(GLOBAL_PTR float* slot) {
  int word = ATOMIC_XCHG((GLOBAL_PTR int*)slot, 0);
  while (word == 0) word = ATOMIC_XCHG((GLOBAL_PTR int*)slot, 0);
  return INT_AS_FLOAT(~word);
}
/* Split-K reductions: for each of `count` (at most 4) outputs e, the sum in slot order of
 * WS_TAKE of its n slots slot + e * estride + q * stride (q < n). The first exchanges of
 * up to 8 splits of all the outputs are issued before any is waited for, so that their
 * latencies overlap: a group that reduces takes its outputs four at a time. */
typedef struct {
  float v[4];
} MBSum4;
DEVICE_FN MBSum4 mb_ws_take_sum4(GLOBAL_PTR float* slot, int estride, int count, int stride, int n) {
  MBSum4 out;
  for (int e = 0; e < 4; ++e) out.v[e] = 0.0f;
  for (int q0 = 0; q0 < n; q0 += 8) {
    int word[32];
    for (int e = 0; e < 4; ++e)
      for (int q = 0; q < 8; ++q)
        word[e * 8 + q] = e < count && q0 + q < n
                              ? ATOMIC_XCHG((GLOBAL_PTR int*)(slot + e * estride + (q0 + q) * stride), 0)
                              : 0;
    for (int e = 0; e < 4 && e < count; ++e)
      for (int q = 0; q < 8 && q0 + q < n; ++q) {
        while (word[e * 8 + q] == 0)
          word[e * 8 + q] = ATOMIC_XCHG((GLOBAL_PTR int*)(slot + e * estride + (q0 + q) * stride), 0);
        out.v[e] += INT_AS_FLOAT(~word[e * 8 + q]);
      }
  }
  return out;
}
#define WS_PUT(slot, x) mb_ws_put((slot), (x))
#define WS_TAKE(slot) mb_ws_take(slot)
#define WS_TAKE_SUM4(slot, estride, count, stride, n) mb_ws_take_sum4((slot), (estride), (count), (stride), (n))
#define WS_TAKE_SUM(slot, stride, n) mb_ws_take_sum4((slot), 0, 1, (stride), (n)).v[0]

/* The arrival count of a split-K hand-off (kernels/README.md), made by every thread of
 * the group after its WS_PUTs: sets the group-shared int `flag`, in every thread, to
 * whether this group is the last of `n` to count itself in on `counter`. The last one
 * then takes the partials and resets the counter (ATOMIC_STORE_ZERO). */
#define WS_ARRIVE(counter, n, flag)                                              \
  do {                                                                           \
    DEVICE_FENCE();                                                              \
    BARRIER();                                                                   \
    if (LOCAL_LINEAR_ID == 0) (flag) = ATOMIC_INC(counter) == (n) - 1;           \
    BARRIER();                                                                   \
    if (flag) DEVICE_FENCE();                                                    \
  } while (0)
#endif

#if defined(DEVICE_FN) && defined(MB_BACKEND_CUDA)
/* A GEMM block's batch item and k tiles when its grid's z is batch x CL and the CL blocks
 * of each (1, 1, CL) cluster split the `tiles` k tiles in consecutive ranges: this block,
 * the cluster's block `rank`, takes tiles kt0 .. kt0 + nk - 1 (nk may be 0). */
typedef struct {
  int rank, bi, kt0, nk;
} MBSplitK;
DEVICE_FN MBSplitK mb_split_k(int tiles, int cl) {
  MBSplitK s;
  s.rank = (int)blockIdx.z % cl;
  s.bi = (int)blockIdx.z / cl;
  const int per = (tiles + cl - 1) / cl;
  s.kt0 = s.rank * per;
  s.nk = max(0, min(tiles - s.kt0, per));
  return s;
}

/* Split-K over a thread-block cluster (native CUDA, sm_90; tcgemm, wggemm): each of the
 * cluster's CL blocks has left its partial ROWS x COLS tile as floats, row pitch LD, at
 * shared-window address `base` of its own group memory. Block `rank` sums rows rank,
 * rank + CL, ... over every block's tile (distributed shared memory, 16 bytes a read, in
 * rank order: deterministic) and hands each 4 columns to store(r, col, sums). The first
 * cluster barrier shows every block's partials; the last keeps each block's memory until
 * the others have read it. */
template <int ROWS, int COLS, int LD, int CL, int NTH, class Store>
DEVICE_FN void mb_cluster_sum(unsigned base, int rank, Store store) {
  mb_cluster_sync();
#pragma unroll
  for (int e = 4 * (int)threadIdx.x; e < ROWS / CL * COLS; e += 4 * NTH) {
    const int r = rank + CL * (e / COLS), col = e % COLS;
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int q = 0; q < CL; ++q) {
      const float4 v = mb_ld_cluster4(base + 4u * (r * LD + col), q);
      s[0] += v.x;
      s[1] += v.y;
      s[2] += v.z;
      s[3] += v.w;
    }
    store(r, col, s);
  }
  mb_cluster_sync();
}
#endif

/* Quantized B (p.qbits != 0; kernels/README.md, "Quantized weights"): MLX's affine format in
 * B's buffer. Row j of batch entry bi is p.ldb uint32 words of codes from word
 * bi * p.stride_b + j * p.ldb: code kk occupies bits kk * qbits .. of that little-endian
 * stream, so a 3-, 5- or 6-bit code may straddle two words. Its weight is
 * scale * code + bias, with a scale and a bias in T per group of p.qgroup codes, at
 * elements p.qscales and p.qbiases of b, row-major (batch, n, k / qgroup). */
#ifdef DEVICE_FN
#define QB_WORDS(bi, j) ((GLOBAL_PTR const unsigned int*)b + (bi) * p.stride_b + (j) * p.ldb)
#define QB_GROUP_AT(bi, j, g) (((bi) * p.n + (j)) * (p.k / p.qgroup) + (g))
#define QB_SCALE(bi, j, g) LOAD(b, p.qscales + QB_GROUP_AT((bi), (j), (g)))
#define QB_BIAS(bi, j, g) LOAD(b, p.qbiases + QB_GROUP_AT((bi), (j), (g)))
/* Code kk of the row whose words start at `row`, for any bit width up to 8. */
DEVICE_FN int mb_qcode(GLOBAL_PTR const unsigned int* row, int kk, int bits) {
  int pos = kk * bits;
  int off = pos & 31;
  unsigned int v = row[pos >> 5] >> off;
  if (off + bits > 32) v |= row[(pos >> 5) + 1] << (32 - off);
  return (int)(v & ((1u << bits) - 1u));
}
#define QB_CODE(row, kk) mb_qcode((row), (kk), p.qbits)
/* Code e of the 16-bit half h (0 low, 1 high) of word w of a row of 4- or 8-bit codes (a
 * half holds 16 / bits whole codes), times 2^(e * bits), as a float made from bits rather
 * than converted: masked in place, the code q sits at bit s = e * bits < 16 of a float
 * whose exponent makes its mantissa's unit 1, so the float is 2^23 + q 2^s exactly, and
 * subtracting 2^23 leaves q 2^s exactly. One and-or (and the shift of the upper half, once
 * per word) and a subtraction, where an int -> float conversion would be a slow
 * instruction on NVIDIA's GPUs (kernels/portable/qmv.c). The caller takes the 2^s off its
 * sum, exactly, by a power of two. */
#define QB_HALF_CODE(w, h, e, bits) \
  (INT_AS_FLOAT(0x4B000000u | (((h) ? (w) >> 16 : (w)) & (((1u << (bits)) - 1u) << ((e) * (bits))))) - 8388608.0f)
#endif

/* Elements that one MT_COPY_VEC moves: 16 bytes of T, 8 of a 16-bit type or 4 floats
 * (kernels/README.md, "The matrix tile"). */
#define MT_VEC (MB_DTYPE != 0 ? 8 : 4)
/* SIMD groups that share the work a 32-lane SIMD group does on CUDA and Metal: 1 there,
 * 32 on OpenCL, whose SIMD groups are single work-items. */
#define MT_SPLIT (32 / SIMD_WIDTH)

#define LOCAL_LINEAR_ID (LOCAL_ID(0) + GROUP_SIZE(0) * (LOCAL_ID(1) + GROUP_SIZE(1) * LOCAL_ID(2)))
#define SIMD_LANE (LOCAL_LINEAR_ID % SIMD_WIDTH)
#define SIMD_GROUP (LOCAL_LINEAR_ID / SIMD_WIDTH)

#endif
