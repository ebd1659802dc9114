/* Portable dialect -> CUDA C++, compiled by NVRTC (which has no system headers:
 * nothing is included here) or by nvcc. Half data is a 2-byte struct converted
 * with the PTX cvt instructions, so no cuda_fp16.h is needed; it has __half's size,
 * alignment and bits, so buffers are interchangeable with __half. SIMD groups are
 * warps of 32 lanes; SIMD_SUM needs every lane of the warp active (group sizes a
 * multiple of 32). Native kernels under kernels/cuda/ get this prelude too. */
#define MB_BACKEND_CUDA 1

struct mb_half {
  unsigned short bits;
};

__device__ __forceinline__ float mb_h2f(mb_half h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
  return f;
}

__device__ __forceinline__ mb_half mb_f2h(float f) {
  mb_half h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
  return h;
}

/* Two halves packed in a 32-bit word (low half first in memory) -> floats. */
__device__ __forceinline__ float mb_lo(unsigned int w) {
  mb_half h;
  h.bits = (unsigned short)(w & 0xffffu);
  return mb_h2f(h);
}
__device__ __forceinline__ float mb_hi(unsigned int w) {
  mb_half h;
  h.bits = (unsigned short)(w >> 16);
  return mb_h2f(h);
}

/* LOAD4: one 64-bit load of four halves, or one 128-bit load of four floats. */
__device__ __forceinline__ float4 mb_load4(const mb_half* p) {
  uint2 u = *reinterpret_cast<const uint2*>(p);
  return make_float4(mb_lo(u.x), mb_hi(u.x), mb_lo(u.y), mb_hi(u.y));
}
__device__ __forceinline__ float4 mb_load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ float mb_simd_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 16);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v;
}

#if MB_F16
#define T mb_half
#define LOAD(ptr, i) mb_h2f((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = mb_f2h(v))
#else
#define T float
#define LOAD(ptr, i) ((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = (v))
#endif
#define LOAD4(ptr, i) mb_load4((ptr) + (i))

/* For native kernels: 16-byte loads through the read-only path (__ldg, so the
 * compiler never hoists one out of the branch that guards it) and their unpacking
 * into MB_VEC16 floats. */
#define MB_VEC16 (16 / (int)sizeof(T))
__device__ __forceinline__ uint4 mb_ld16(const T* ptr) { return __ldg(reinterpret_cast<const uint4*>(ptr)); }
__device__ __forceinline__ void mb_unpack16(uint4 u, float* f) {
#if MB_F16
  f[0] = mb_lo(u.x);
  f[1] = mb_hi(u.x);
  f[2] = mb_lo(u.y);
  f[3] = mb_hi(u.y);
  f[4] = mb_lo(u.z);
  f[5] = mb_hi(u.z);
  f[6] = mb_lo(u.w);
  f[7] = mb_hi(u.w);
#else
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z);
  f[3] = __uint_as_float(u.w);
#endif
}

#define MB_KERNEL(name)                                                                          \
  extern "C" __global__ void name(const T* __restrict__ a, const T* __restrict__ b, T* c,        \
                                  const T* __restrict__ bias, float* ws, const MBParams p)

#define MB_DIM(v, d) ((int)((d) == 0 ? (v).x : (d) == 1 ? (v).y : (v).z))
#define GROUP_ID(d) MB_DIM(blockIdx, d)
#define LOCAL_ID(d) MB_DIM(threadIdx, d)
#define GROUP_SIZE(d) MB_DIM(blockDim, d)
#define NUM_GROUPS(d) MB_DIM(gridDim, d)

#define SHARED __shared__
#define SHARED_PTR
#define GLOBAL_PTR
#define BARRIER() __syncthreads()
#define DEVICE_FN __device__ __forceinline__
#define FLOAT4 float4
#define MAKE_FLOAT4(x, y, z, w) make_float4((x), (y), (z), (w))

#define SIMD_WIDTH 32
#define SIMD_SUM(x) mb_simd_sum(x)
/* Every lane of the warp takes part (full mask), so every lane must reach it. */
#define SIMD_BROADCAST(x, lane) __shfl_sync(0xffffffffu, (float)(x), (lane))

/* Cross-group hand-off (split-K). __threadfence is a device-scope fence (PTX
 * fence.sc.gpu), so a fence, a group barrier, then one thread's atomic publishes every
 * thread's earlier writes to any group that reads that atomic and then fences. The
 * workspace words still go through atomics (common.h's WS_PUT / WS_TAKE): atomicExch
 * works at L2, so the taker can never read a stale L1 line of another group's word. */
#define DEVICE_FENCE() __threadfence()
#define ATOMIC_INC(ptr) atomicAdd((ptr), 1)
#define ATOMIC_STORE_ZERO(ptr) atomicExch((ptr), 0)
#define ATOMIC_XCHG(ptr, v) atomicExch((int*)(ptr), (int)(v))
#define FLOAT_AS_INT(x) __float_as_int(x)
#define INT_AS_FLOAT(i) __int_as_float(i)
