/* Test-only: appended to kernels/include/opencl.h, it makes OpenCL (PoCL on a CPU)
 * behave like a backend with 32-lane SIMD groups, so that the paths a portable body
 * takes on Metal and CUDA (SIMD_WIDTH 32: lane arithmetic, SIMD_SUM over 32 lanes,
 * SIMD_BROADCAST) are checked for their results on a machine without a GPU.
 *
 * SIMD_SUM and SIMD_BROADCAST go through a scratch buffer, one float per thread,
 * which MB_KERNEL adds as a seventh argument, with group barriers around it (global
 * memory is consistent within a work-group at a barrier). So every thread of the
 * group must reach each call the same number of times: stricter than the dialect's
 * rule (every lane of the SIMD group), which is what a body that passes here must
 * also meet. SIMD groups are 32 consecutive linear ids, as on Apple GPUs and CUDA. */
#undef SIMD_WIDTH
#undef SIMD_SUM
#undef SIMD_BROADCAST
#undef MB_KERNEL

#define SIMD_WIDTH 32

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
  return scratch + group * size;
}

/* Lane `lane` of the caller's SIMD group, or the sum over it when lane < 0. */
inline float mb_sim_exchange(__global float* scratch, float x, int lane) {
  __global float* s = mb_sim_slots(scratch);
  const int lid = mb_sim_lid();
  const int base = lid - lid % 32;
  barrier(CLK_GLOBAL_MEM_FENCE);
  s[lid] = x;
  barrier(CLK_GLOBAL_MEM_FENCE);
  float r = 0.0f;
  if (lane < 0) {
    for (int i = 0; i < 32; ++i) r += s[base + i];
  } else {
    r = s[base + lane];
  }
  barrier(CLK_GLOBAL_MEM_FENCE);
  return r;
}

#define SIMD_SUM(x) mb_sim_exchange(mb_scratch, (x), -1)
#define SIMD_BROADCAST(x, lane) mb_sim_exchange(mb_scratch, (float)(x), (lane))
