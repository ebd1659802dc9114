/* Test-only: appended to kernels/include/opencl.h, it makes OpenCL (PoCL on a CPU)
 * behave like a backend with 32-lane SIMD groups, so that the paths a portable body
 * takes on Metal and CUDA (SIMD_WIDTH 32: lane arithmetic, SIMD_SUM over 32 lanes,
 * SIMD_BROADCAST) are checked for their results on a machine without a GPU.
 *
 * SIMD_SUM and SIMD_BROADCAST go through a scratch buffer, MB_SIM_SLOTS floats per
 * thread, which MB_KERNEL adds as a seventh argument, with group barriers around it
 * (global memory is consistent within a work-group at a barrier). So every thread of
 * the group must reach each call the same number of times: stricter than the
 * dialect's rule (every lane of the SIMD group), which is what a body that passes here
 * must also meet. SIMD groups are 32 consecutive linear ids, as on Apple GPUs and CUDA.
 *
 * The matrix tile is emulated as CUDA maps it (kernels/include/cuda.h): 16 x 8 tiles,
 * TILE_K 16 for float16 and 8 for float32, each lane holding the elements of the PTX
 * mma.m16n8k16 (m16n8k8) fragment layout, so that a body's lane and tile arithmetic is
 * checked at CUDA's tile sizes too. MT_MMA exchanges the fragments through the scratch
 * buffer, so it is a group barrier as well; MT_SYNC is one. */
#undef SIMD_WIDTH
#undef SIMD_SUM
#undef SIMD_BROADCAST
#undef MB_KERNEL

#define SIMD_WIDTH 32
/* Scratch floats per thread: slot 0 for SIMD_SUM and SIMD_BROADCAST, 0-11 for MT_MMA. */
#define MB_SIM_SLOTS 16

#define MB_KERNEL(name)                                                                     \
  __kernel void name(__global const T* a, __global const T* b, __global T* c,               \
                     __global const T* bias, __global float* ws, const MBParams p,          \
                     __global float* mb_scratch)

inline int mb_sim_lid(void) {
  return (int)(get_local_id(0) + get_local_size(0) * (get_local_id(1) + get_local_size(1) * get_local_id(2)));
}

inline __global float* mb_sim_slots(__global float* scratch) {
  const int size = (int)(get_local_size(0) * get_local_size(1) * get_local_size(2));
  const int group = (int)(get_group_id(0) + get_num_groups(0) * (get_group_id(1) + get_num_groups(1) * get_group_id(2)));
  return scratch + group * size * MB_SIM_SLOTS;
}

/* Lane `lane` of the caller's SIMD group, or the sum over it when lane < 0. */
inline float mb_sim_exchange(__global float* scratch, float x, int lane) {
  __global float* s = mb_sim_slots(scratch);
  const int lid = mb_sim_lid();
  const int base = lid - lid % 32;
  barrier(CLK_GLOBAL_MEM_FENCE);
  s[lid * MB_SIM_SLOTS] = x;
  barrier(CLK_GLOBAL_MEM_FENCE);
  float r = 0.0f;
  if (lane < 0) {
    for (int i = 0; i < 32; ++i) r += s[(base + i) * MB_SIM_SLOTS];
  } else {
    r = s[(base + lane) * MB_SIM_SLOTS];
  }
  barrier(CLK_GLOBAL_MEM_FENCE);
  return r;
}

#define SIMD_SUM(x) mb_sim_exchange(mb_scratch, (x), -1)
#define SIMD_BROADCAST(x, lane) mb_sim_exchange(mb_scratch, (float)(x), (lane))

/* ---- the matrix tile, laid out as CUDA's mma.sync fragments ---- */
#undef TILE_M
#undef TILE_N
#undef TILE_K
#undef MT_ACC_T
#undef MT_A_T
#undef MT_B_T
#undef MT_ZERO
#undef MT_LOAD_A
#undef MT_LOAD_AT
#undef MT_LOAD_B
#undef MT_LOAD_BT
#undef MT_LOAD_A_G
#undef MT_LOAD_AT_G
#undef MT_LOAD_B_G
#undef MT_LOAD_BT_G
#undef MT_MMA
#undef MT_STORE
#undef MT_SYNC

#define TILE_M 16
#define TILE_N 8
#if MB_DTYPE != 0 /* the m16n8k16 shape of CUDA's 16-bit mma */
#define TILE_K 16
#else
#define TILE_K 8
#endif
#define MB_SIM_NA (TILE_M * TILE_K / 32) /* A elements per lane */
#define MB_SIM_NB (TILE_K * TILE_N / 32) /* B elements per lane */

typedef struct {
  float v[4];
} mb_sim_acc;
typedef struct {
  float v[8];
} mb_sim_a;
typedef struct {
  float v[4];
} mb_sim_b;
#define MT_ACC_T mb_sim_acc
#define MT_A_T mb_sim_a
#define MT_B_T mb_sim_b

/* With g = lane / 4 and t = lane % 4, as the PTX ISA lays the fragments out: element e
 * of a lane's A is (g + 8 ((e / 2) % 2), 2t + e % 2 + 8 (e / 4)); of its B,
 * (2t + e % 2 + 8 (e / 2), g); of its C, (g + 8 (e / 2), 2t + e % 2). */
inline int mb_sim_a_row(int l, int e) { return l / 4 + 8 * ((e / 2) % 2); }
inline int mb_sim_a_col(int l, int e) { return 2 * (l % 4) + e % 2 + 8 * (e / 4); }
inline int mb_sim_b_row(int l, int e) { return 2 * (l % 4) + e % 2 + 8 * (e / 2); }
inline int mb_sim_b_col(int l, int e) { return l / 4; }
inline int mb_sim_c_row(int l, int e) { return l / 4 + 8 * (e / 2); }
inline int mb_sim_c_col(int l, int e) { return 2 * (l % 4) + e % 2; }

inline void mb_sim_zero(mb_sim_acc* c) {
  for (int e = 0; e < 4; ++e) c->v[e] = 0.0f;
}
/* A: (r, c) = (row, k); B: (r, c) = (k, column); at off + r * rs + c * cs. */
inline void mb_sim_load_a_s(mb_sim_a* f, __local const float* s, int off, int rs, int cs) {
  const int l = mb_sim_lid() % 32;
  for (int e = 0; e < MB_SIM_NA; ++e) f->v[e] = s[off + mb_sim_a_row(l, e) * rs + mb_sim_a_col(l, e) * cs];
}
inline void mb_sim_load_b_s(mb_sim_b* f, __local const float* s, int off, int rs, int cs) {
  const int l = mb_sim_lid() % 32;
  for (int e = 0; e < MB_SIM_NB; ++e) f->v[e] = s[off + mb_sim_b_row(l, e) * rs + mb_sim_b_col(l, e) * cs];
}
inline void mb_sim_load_a_g(mb_sim_a* f, __global const T* g, int off, int rs, int cs, int rows, int cols) {
  const int l = mb_sim_lid() % 32;
  for (int e = 0; e < MB_SIM_NA; ++e) {
    const int r = mb_sim_a_row(l, e), c = mb_sim_a_col(l, e);
    f->v[e] = r < rows && c < cols ? LOAD(g, off + r * rs + c * cs) : 0.0f;
  }
}
inline void mb_sim_load_b_g(mb_sim_b* f, __global const T* g, int off, int rs, int cs, int rows, int cols) {
  const int l = mb_sim_lid() % 32;
  for (int e = 0; e < MB_SIM_NB; ++e) {
    const int r = mb_sim_b_row(l, e), c = mb_sim_b_col(l, e);
    f->v[e] = r < rows && c < cols ? LOAD(g, off + r * rs + c * cs) : 0.0f;
  }
}
/* Every lane puts its fragments in its scratch slots; after a barrier each computes its
 * four outputs from the lanes that hold their rows of A and columns of B. */
inline void mb_sim_mma(__global float* scratch, mb_sim_acc* c, const mb_sim_a* a, const mb_sim_b* b) {
  __global float* s = mb_sim_slots(scratch);
  const int lid = mb_sim_lid();
  const int base = lid - lid % 32, l = lid % 32;
  barrier(CLK_GLOBAL_MEM_FENCE);
  for (int e = 0; e < MB_SIM_NA; ++e) s[lid * MB_SIM_SLOTS + e] = a->v[e];
  for (int e = 0; e < MB_SIM_NB; ++e) s[lid * MB_SIM_SLOTS + 8 + e] = b->v[e];
  barrier(CLK_GLOBAL_MEM_FENCE);
  for (int e = 0; e < 4; ++e) {
    const int i = mb_sim_c_row(l, e), j = mb_sim_c_col(l, e);
    float sum = c->v[e];
    for (int kk = 0; kk < TILE_K; ++kk) {
      /* The lane holding A(i, kk) and its element index; then the one holding B(kk, j). */
      const int la = 4 * (i % 8) + (kk % 8) / 2, ea = 2 * ((i / 8) + 2 * (kk / 8)) + kk % 2;
      const int lb = 4 * j + (kk % 8) / 2, eb = 2 * (kk / 8) + kk % 2;
      sum += s[(base + la) * MB_SIM_SLOTS + ea] * s[(base + lb) * MB_SIM_SLOTS + 8 + eb];
    }
    c->v[e] = sum;
  }
  barrier(CLK_GLOBAL_MEM_FENCE);
}
inline void mb_sim_store(const mb_sim_acc* c, __local float* s, int off, int ld) {
  const int l = mb_sim_lid() % 32;
  for (int e = 0; e < 4; ++e) s[off + mb_sim_c_row(l, e) * ld + mb_sim_c_col(l, e)] = c->v[e];
}

#define MT_ZERO(c) mb_sim_zero(&(c))
#define MT_LOAD_A(f, s, off, ld) mb_sim_load_a_s(&(f), (s), (off), (ld), 1)
#define MT_LOAD_AT(f, s, off, ld) mb_sim_load_a_s(&(f), (s), (off), 1, (ld))
#define MT_LOAD_B(f, s, off, ld) mb_sim_load_b_s(&(f), (s), (off), (ld), 1)
#define MT_LOAD_BT(f, s, off, ld) mb_sim_load_b_s(&(f), (s), (off), 1, (ld))
#define MT_LOAD_A_G(f, g, off, ld, rows, cols, scr) ((void)(scr), mb_sim_load_a_g(&(f), (g), (off), (ld), 1, (rows), (cols)))
#define MT_LOAD_AT_G(f, g, off, ld, rows, cols, scr) ((void)(scr), mb_sim_load_a_g(&(f), (g), (off), 1, (ld), (rows), (cols)))
#define MT_LOAD_B_G(f, g, off, ld, rows, cols, scr) ((void)(scr), mb_sim_load_b_g(&(f), (g), (off), (ld), 1, (rows), (cols)))
#define MT_LOAD_BT_G(f, g, off, ld, rows, cols, scr) ((void)(scr), mb_sim_load_b_g(&(f), (g), (off), 1, (ld), (rows), (cols)))
#define MT_MMA(c, a, b) mb_sim_mma(mb_scratch, &(c), &(a), &(b))
#define MT_STORE(c, s, off, ld) mb_sim_store(&(c), (s), (off), (ld))
#define MT_SYNC() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)
