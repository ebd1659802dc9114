/* Portable dialect -> OpenCL C 1.2. Half data goes through vload_half and
 * vstore_half_rte, which need no cl_khr_fp16 (PoCL on x86 has none). OpenCL 1.2
 * has no portable sub-group reduction, so SIMD_WIDTH is 1 and SIMD_SUM is the
 * identity: a body written for any width then reduces through group memory. */
#define MB_BACKEND_OPENCL 1

#if MB_F16
#define T half
#define LOAD(ptr, i) vload_half((i), (ptr))
#define STORE(ptr, i, v) vstore_half_rte((v), (i), (ptr))
#define LOAD4(ptr, i) vload_half4(0, (ptr) + (i))
#else
#define T float
#define LOAD(ptr, i) ((ptr)[i])
#define STORE(ptr, i, v) ((ptr)[i] = (v))
#define LOAD4(ptr, i) vload4(0, (ptr) + (i))
#endif

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
#define DEVICE_FN inline
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
