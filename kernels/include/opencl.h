/* Portable dialect -> OpenCL C 1.2. Half data goes through vload_half and
 * vstore_half_rte, which need no cl_khr_fp16 (PoCL on x86 has none). OpenCL C has no
 * bfloat16 type at all, so bfloat16 data is its bit patterns in ushort, converted in
 * integer arithmetic (a bfloat16 is the top half of a float32): a load shifts the bits
 * up, a store rounds to nearest even on the bits, as metalbench/dtypes.py does on the
 * host. OpenCL 1.2 has no portable sub-group reduction, so SIMD_WIDTH is 1 and SIMD_SUM
 * is the identity: a body written for any width then reduces through group memory.
 *
 * MB_DTYPE selects the element type: 0 float32, 1 float16, 2 bfloat16 (the numbers of
 * metalbench/dtypes.py's CODES). */
#define MB_BACKEND_OPENCL 1
#define MB_F16 (MB_DTYPE == 1)
#define MB_BF16 (MB_DTYPE == 2)

/* static: a helper no kernel calls is then dropped before code generation. Plain
 * inline helpers were compiled in every program: with them, the unused matrix-tile,
 * bfloat16 and workspace helpers of this prelude and common.h made a typical PoCL 3.1
 * build about 12% longer (130 ms against 114, kpargemv). */
#define DEVICE_FN static inline

#if MB_F16
#define T half
#define LOAD(ptr, i) vload_half((i), (ptr))
#define STORE(ptr, i, v) vstore_half_rte((v), (i), (ptr))
#define LOAD4(ptr, i) vload_half4(0, (ptr) + (i))
#elif MB_BF16
#define T ushort
DEVICE_FN float mb_bf2f(ushort h) { return as_float((uint)h << 16); }
DEVICE_FN float4 mb_bf2f4(ushort4 h) { return as_float4(convert_uint4(h) << 16); }
DEVICE_FN float8 mb_bf2f8(ushort8 h) { return as_float8(convert_uint8(h) << 16); }
/* Round to nearest even: adding 0x7fff plus the kept part's lowest bit carries into the
 * kept part exactly when the dropped part is past half, or at half with the kept part
 * odd; the carry may run into the exponent (the next binade, or infinity), which is the
 * right answer too. A NaN keeps its sign and upper payload and is made quiet, so that
 * dropping its low bits never turns it into infinity. */
DEVICE_FN ushort mb_f2bf(float f) {
  const uint u = as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
  return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#define LOAD(ptr, i) mb_bf2f((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = mb_f2bf(v))
#define LOAD4(ptr, i) mb_bf2f4(vload4(0, (ptr) + (i)))
#else
#define T float
#define LOAD(ptr, i) ((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = (v))
#define LOAD4(ptr, i) vload4(0, (ptr) + (i))
#endif
/* Four 32-bit words (ptr a __global const uint*): vload4 needs only the words' own
 * alignment, so it is correct wherever the caller's 16-byte guarantee holds and beyond. */
#define UINT4 uint4
#define LOAD_UINT4(ptr, i) vload4(0, (ptr) + (i))

#define MB_KERNEL(name)                                                                     \
  __kernel void name(__global const T* a, __global const T* b, __global T* c,               \
                     __global const T* bias, __global float* ws, const MBParams p)

#define GROUP_ID(d) ((int)get_group_id(d))
#define LOCAL_ID(d) ((int)get_local_id(d))
#define GROUP_SIZE(d) ((int)get_local_size(d))
#define NUM_GROUPS(d) ((int)get_num_groups(d))

#define SHARED __local
#define SHARED_PTR __local
#define GLOBAL_PTR __global
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
#define FLOAT4 float4
#define MAKE_FLOAT4(x, y, z, w) ((float4)((x), (y), (z), (w)))

#define SIMD_WIDTH 1
#define SIMD_SUM(x) (x)
/* The SIMD group is the calling work-item alone: lane 0 is the only lane, and what
 * it broadcasts is its own x. A body that has each of SIMD_WIDTH lanes load one value
 * and then broadcasts lanes 0 .. SIMD_WIDTH - 1 in turn reads every value exactly once
 * at this width too. `lane` is still evaluated, so it may not be left undefined. */
#define SIMD_BROADCAST(x, lane) ((void)(lane), (float)(x))

/* Cross-group hand-off (split-K). OpenCL 1.2 promises no memory consistency between
 * work-groups during a kernel (spec section 3.3.1): mem_fence only orders this
 * work-item's own loads and stores, and no fence reaches other groups. What it does
 * promise is that each 32-bit global atomic (core since 1.1) is performed atomically
 * on its one location, so the hand-off data itself goes through atomics: common.h's
 * WS_PUT / WS_TAKE, built on ATOMIC_XCHG and the bit casts below. */
#define DEVICE_FENCE() mem_fence(CLK_GLOBAL_MEM_FENCE)
#define ATOMIC_INC(ptr) atomic_inc(ptr)
#define ATOMIC_STORE_ZERO(ptr) atomic_xchg((ptr), 0)
/* ptr is a __global int*: the int overload of atomic_xchg, never the float one. */
#define ATOMIC_XCHG(ptr, v) atomic_xchg((__global int*)(ptr), (int)(v))
#define FLOAT_AS_INT(x) as_int((float)(x))
#define INT_AS_FLOAT(i) as_float((int)(i))

/* ---- The matrix tile (kernels/README.md, "The matrix tile") --------------------------
 * OpenCL 1.2 has no matrix unit and no SIMD group wider than the thread (SIMD_WIDTH 1),
 * so the tile is a correct emulation: the calling work-item owns the whole tile, an
 * 8 x 8 accumulator and 8 x 8 fragments in private memory, row-major, and multiplies
 * them with float arithmetic. Group memory holds floats (MT_T), converted from half
 * or bfloat16 when staged, so every backend's body stages the same values. Nothing here needs the
 * SIMD group's other lanes: MT_SYNC orders nothing (the thread reads what it wrote). */
#define TILE_M 8
#define TILE_N 8
#define TILE_K 8
#define MT_T float
#define MT_T_BYTES 4
#define MT_SHARED __local
#define MT_SCRATCH 1
/* The local memory OpenCL 1.2 promises every full-profile device. */
#define MT_GROUP_BYTES 32768

typedef struct {
  float v[TILE_M * TILE_N];
} mt_acc;
typedef struct {
  float v[TILE_M * TILE_K];
} mt_a;
typedef struct {
  float v[TILE_K * TILE_N];
} mt_b;
#define MT_ACC_T mt_acc
#define MT_A_T mt_a
#define MT_B_T mt_b

DEVICE_FN void mt_zero(mt_acc* c) {
  for (int e = 0; e < TILE_M * TILE_N; ++e) c->v[e] = 0.0f;
}
/* Element (r, c) of a fragment of R x C, at off + r * rs + c * cs; from group memory
 * always in range, from device memory zero outside rows x cols. */
DEVICE_FN void mt_load_s(float* f, int R, int C, __local const float* s, int off, int rs, int cs) {
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) f[r * C + c] = s[off + r * rs + c * cs];
}
DEVICE_FN void mt_load_g(float* f, int R, int C, __global const T* g, int off, int rs, int cs, int rows, int cols) {
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) f[r * C + c] = r < rows && c < cols ? LOAD(g, off + r * rs + c * cs) : 0.0f;
}
DEVICE_FN void mt_mma(mt_acc* c, const mt_a* a, const mt_b* b) {
  for (int i = 0; i < TILE_M; ++i)
    for (int j = 0; j < TILE_N; ++j) {
      float s = c->v[i * TILE_N + j];
      for (int kk = 0; kk < TILE_K; ++kk) s += a->v[i * TILE_K + kk] * b->v[kk * TILE_N + j];
      c->v[i * TILE_N + j] = s;
    }
}
DEVICE_FN void mt_store(const mt_acc* c, __local float* s, int off, int ld) {
  for (int i = 0; i < TILE_M; ++i)
    for (int j = 0; j < TILE_N; ++j) s[off + i * ld + j] = c->v[i * TILE_N + j];
}

#define MT_ZERO(c) mt_zero(&(c))
#define MT_LOAD_A(f, s, off, ld) mt_load_s((f).v, TILE_M, TILE_K, (s), (off), (ld), 1)
#define MT_LOAD_AT(f, s, off, ld) mt_load_s((f).v, TILE_M, TILE_K, (s), (off), 1, (ld))
#define MT_LOAD_B(f, s, off, ld) mt_load_s((f).v, TILE_K, TILE_N, (s), (off), (ld), 1)
#define MT_LOAD_BT(f, s, off, ld) mt_load_s((f).v, TILE_K, TILE_N, (s), (off), 1, (ld))
#define MT_LOAD_A_G(f, g, off, ld, rows, cols, scr) \
  ((void)(scr), mt_load_g((f).v, TILE_M, TILE_K, (g), (off), (ld), 1, (rows), (cols)))
#define MT_LOAD_AT_G(f, g, off, ld, rows, cols, scr) \
  ((void)(scr), mt_load_g((f).v, TILE_M, TILE_K, (g), (off), 1, (ld), (rows), (cols)))
#define MT_LOAD_B_G(f, g, off, ld, rows, cols, scr) \
  ((void)(scr), mt_load_g((f).v, TILE_K, TILE_N, (g), (off), (ld), 1, (rows), (cols)))
#define MT_LOAD_BT_G(f, g, off, ld, rows, cols, scr) \
  ((void)(scr), mt_load_g((f).v, TILE_K, TILE_N, (g), (off), 1, (ld), (rows), (cols)))
#define MT_MMA(c, a, b) mt_mma(&(c), &(a), &(b))
#define MT_STORE(c, s, off, ld) mt_store(&(c), (s), (off), (ld))
#define MT_SYNC() ((void)0)

/* Staging: group memory holds floats, so every copy converts (vload_half for float16,
 * a shift for bfloat16). */
#define MT_PUT(s, i, v) ((s)[i] = (v))
#define MT_COPY(s, si, g, gi) ((s)[si] = LOAD((g), (gi)))
#if MB_F16
#define MT_COPY_VEC(s, si, g, gi) vstore8(vload_half8(0, (g) + (gi)), 0, (s) + (si))
#elif MB_BF16
#define MT_COPY_VEC(s, si, g, gi) vstore8(mb_bf2f8(vload8(0, (g) + (gi))), 0, (s) + (si))
#else
#define MT_COPY_VEC(s, si, g, gi) vstore4(vload4(0, (g) + (gi)), 0, (s) + (si))
#endif
#define MT_COPY_COMMIT() ((void)0)
#define MT_COPY_WAIT(n) ((void)0)
