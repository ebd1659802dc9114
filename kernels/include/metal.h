/* Portable dialect -> Metal Shading Language. The backend compiles this prelude,
 * common.h and a body with MTLDevice newLibraryWithSource, the variant's defines
 * given as preprocessor macros.
 *
 * Metal differs from the other two where a body can notice:
 * - Thread and group ids are kernel parameters ([[threadgroup_position_in_grid]]
 *   and friends), not functions: GROUP_ID, LOCAL_ID, GROUP_SIZE and NUM_GROUPS
 *   work in the kernel body only, not in DEVICE_FN helpers (pass the ids in).
 * - SIMD_WIDTH is 32, the SIMD-group width of every Apple GPU. The GPUs of Intel
 *   Macs may run other widths; a pipeline whose threadExecutionWidth is not this
 *   SIMD_WIDTH is stored unsupported with its width (python/metalbench/measure.py,
 *   unsupported_here, reads the define below).
 * - DEVICE_FENCE must be reached by every thread of the group: before MSL 3.2
 *   (macOS 15) the only device-memory fence is a group barrier. */
#include <metal_stdlib>
using namespace metal;

#define MB_BACKEND_METAL 1

#if MB_F16
#define T half
#define MB_T4 half4
#else
#define T float
#define MB_T4 float4
#endif

#define LOAD(ptr, i) ((float)(ptr)[i])
/* float -> half conversion rounds to nearest even. */
#define STORE(ptr, i, v) ((ptr)[i] = (T)(v))
/* i is a multiple of 4 (kernels/README.md) and buffers start page-aligned, so
 * the vector load is naturally aligned. */
#define LOAD4(ptr, i) float4(*(device const MB_T4*)((ptr) + (i)))

/* The ABI of kernels/README.md: a, b, c, bias, ws and p at buffer indices 0 to 5,
 * in the order the backend binds launch arguments; the ids follow as hidden
 * parameters. */
#define MB_KERNEL(name)                                                                                  \
  kernel void name(device const T* a [[buffer(0)]], device const T* b [[buffer(1)]],                     \
                   device T* c [[buffer(2)]], device const T* bias [[buffer(3)]],                        \
                   device float* ws [[buffer(4)]], constant MBParams& p [[buffer(5)]],                   \
                   uint3 mb_group_id [[threadgroup_position_in_grid]],                                   \
                   uint3 mb_local_id [[thread_position_in_threadgroup]],                                 \
                   uint3 mb_group_size [[threads_per_threadgroup]],                                      \
                   uint3 mb_num_groups [[threadgroups_per_grid]])

#define GROUP_ID(d) ((int)mb_group_id[d])
#define LOCAL_ID(d) ((int)mb_local_id[d])
#define GROUP_SIZE(d) ((int)mb_group_size[d])
#define NUM_GROUPS(d) ((int)mb_num_groups[d])

#define SHARED threadgroup
#define SHARED_PTR threadgroup
#define GLOBAL_PTR device
#define BARRIER() threadgroup_barrier(mem_flags::mem_threadgroup)
#define DEVICE_FN inline
#define FLOAT4 float4
#define MAKE_FLOAT4(x, y, z, w) float4((x), (y), (z), (w))

/* Apple GPUs form SIMD groups from consecutive linear thread ids, which is what
 * common.h's SIMD_LANE and SIMD_GROUP assume. */
#define SIMD_WIDTH 32
#define SIMD_SUM(x) simd_sum(x)
/* simd_broadcast wants the same lane in every thread of the SIMD group (the spec
 * leaves any other use undefined), which SIMD_BROADCAST requires of its callers. */
#define SIMD_BROADCAST(x, lane) simd_broadcast((float)(x), (ushort)(lane))

/* Cross-group hand-off (split-K). MSL device atomics take memory_order_relaxed only.
 * From MSL 3.2 (macOS 15) atomic_thread_fence with thread_scope_device orders memory
 * between groups; before it the only device-memory fence is
 * threadgroup_barrier(mem_flags::mem_device), which orders device memory for the
 * threads of one group and nothing beyond. So a relaxed counter alone could tell the
 * last group that every group has arrived while their partial sums are not yet
 * visible to it. The hand-off data therefore goes through atomics as well (common.h's
 * WS_PUT / WS_TAKE): each word is coherent on its own, and WS_TAKE waits for its word,
 * so the result never depends on a fence; where the 3.2 fence exists it only makes
 * that wait end at once. */
#if __METAL_VERSION__ >= 320
#define DEVICE_FENCE() atomic_thread_fence(mem_flags::mem_device, memory_order_seq_cst, thread_scope_device)
#else
#define DEVICE_FENCE() threadgroup_barrier(mem_flags::mem_device)
#endif
#define ATOMIC_INC(ptr) atomic_fetch_add_explicit((device atomic_int*)(ptr), 1, memory_order_relaxed)
#define ATOMIC_STORE_ZERO(ptr) atomic_exchange_explicit((device atomic_int*)(ptr), 0, memory_order_relaxed)
#define ATOMIC_XCHG(ptr, v) atomic_exchange_explicit((device atomic_int*)(ptr), (int)(v), memory_order_relaxed)
#define FLOAT_AS_INT(x) as_type<int>((float)(x))
#define INT_AS_FLOAT(i) as_type<float>((int)(i))
