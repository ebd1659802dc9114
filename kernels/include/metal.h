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
/* MB_DTYPE selects the element type: 0 float32, 1 float16, 2 bfloat16 (the numbers of
 * metalbench/dtypes.py's CODES). bfloat16 is MSL's bfloat, new in MSL 3.1 (macOS 14);
 * the device trait bfloat16 keeps bfloat16 variants unsupported on older systems, so this
 * error is reached only by a build the runner would not ask for. */
#define MB_F16 (MB_DTYPE == 1)
#define MB_BF16 (MB_DTYPE == 2)
#if MB_BF16 && __METAL_VERSION__ < 310
#error "bfloat16 needs MSL 3.1 (macOS 14): MSL's bfloat type"
#endif

#if MB_F16
#define T half
#define MB_T4 half4
#elif MB_BF16
#define T bfloat
#define MB_T4 bfloat4
#else
#define T float
#define MB_T4 float4
#endif

#define LOAD(ptr, i) ((float)(ptr)[i])
/* float -> half and float -> bfloat conversions round to nearest even (Metal's default
 * for narrowing conversions: MTLFloatingPointConversionRoundingMode). */
#define STORE(ptr, i, v) ((ptr)[i] = (T)(v))
/* i is a multiple of 4 (kernels/README.md) and buffers start page-aligned, so
 * the vector load is naturally aligned. */
#define LOAD4(ptr, i) float4(*(device const MB_T4*)((ptr) + (i)))
/* Four 32-bit words in one 16-byte load; the caller guarantees ptr + i is 16-byte
 * aligned (kernels/README.md), uint4's alignment. */
#define UINT4 uint4
#define LOAD_UINT4(ptr, i) (*(device const uint4*)((ptr) + (i)))

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

/* ---- The matrix tile (kernels/README.md, "The matrix tile") --------------------------
 * simdgroup_matrix (MSL specification sections 2.4 and 6.7; Metal 2.3, GPUs of the
 * Apple7 family and later: the device trait matrix_unit says whether this one has it).
 * The specification declares simdgroup_multiply_accumulate, simdgroup_load and
 * simdgroup_store with one element type T for all their matrices and memory, and leaves
 * the mapping of elements to threads unspecified. So fp32 accumulation of half inputs
 * is done in simdgroup_float8x8 throughout: group memory holds floats (MT_T), converted
 * from half when staged, and a half tile read from device memory goes through the
 * SIMD group's MT_SCRATCH floats of group memory. Every call must be made by all 32
 * threads of the SIMD group together, with the same arguments (uniform control flow,
 * section 2.4). */
#define TILE_M 8
#define TILE_N 8
#define TILE_K 8
#define MT_T float
#define MT_T_BYTES 4
#define MT_SHARED threadgroup
#define MT_SCRATCH 64
/* maxThreadgroupMemoryLength of every Apple GPU. */
#define MT_GROUP_BYTES 32768
#define MT_ACC_T simdgroup_float8x8
#define MT_A_T simdgroup_float8x8
#define MT_B_T simdgroup_float8x8

/* A tile of device memory, element (r, c) at g[off + r * rs + c * cs], zero outside
 * rows x cols. A whole float tile is loaded directly (simdgroup_load with ld, transposed
 * when the rows are strided); anything else goes through `scr`: each thread writes two
 * of its 64 elements, and the SIMD group loads them once they are all there. */
inline void mt_load_g(thread simdgroup_float8x8& f, device const T* g, int off, int rs, int cs, int rows, int cols,
                      threadgroup float* scr, int lane) {
#if MB_DTYPE == 0
  if (rows >= 8 && cols >= 8) {
    if (cs == 1)
      simdgroup_load(f, g + off, (ulong)rs);
    else
      simdgroup_load(f, g + off, (ulong)cs, ulong2(0, 0), true);
    return;
  }
#endif
  for (int e = lane; e < 64; e += 32) {
    const int r = e / 8, c = e % 8;
    scr[e] = r < rows && c < cols ? (float)g[off + r * rs + c * cs] : 0.0f;
  }
  simdgroup_barrier(mem_flags::mem_threadgroup);
  simdgroup_load(f, scr, 8);
  simdgroup_barrier(mem_flags::mem_threadgroup); /* every load done before scr is reused */
}

#define MT_ZERO(c) ((c) = make_filled_simdgroup_matrix<float, 8, 8>(0.0f))
#define MT_LOAD_A(f, s, off, ld) simdgroup_load((f), (s) + (off), (ulong)(ld))
#define MT_LOAD_AT(f, s, off, ld) simdgroup_load((f), (s) + (off), (ulong)(ld), ulong2(0, 0), true)
#define MT_LOAD_B(f, s, off, ld) simdgroup_load((f), (s) + (off), (ulong)(ld))
#define MT_LOAD_BT(f, s, off, ld) simdgroup_load((f), (s) + (off), (ulong)(ld), ulong2(0, 0), true)
#define MT_LOAD_A_G(f, g, off, ld, rows, cols, scr) \
  mt_load_g((f), (g), (off), (ld), 1, (rows), (cols), (scr) + SIMD_GROUP * MT_SCRATCH, SIMD_LANE)
#define MT_LOAD_AT_G(f, g, off, ld, rows, cols, scr) \
  mt_load_g((f), (g), (off), 1, (ld), (rows), (cols), (scr) + SIMD_GROUP * MT_SCRATCH, SIMD_LANE)
#define MT_LOAD_B_G(f, g, off, ld, rows, cols, scr) \
  mt_load_g((f), (g), (off), (ld), 1, (rows), (cols), (scr) + SIMD_GROUP * MT_SCRATCH, SIMD_LANE)
#define MT_LOAD_BT_G(f, g, off, ld, rows, cols, scr) \
  mt_load_g((f), (g), (off), 1, (ld), (rows), (cols), (scr) + SIMD_GROUP * MT_SCRATCH, SIMD_LANE)
#define MT_MMA(c, a, b) simdgroup_multiply_accumulate((c), (a), (b), (c))
#define MT_STORE(c, s, off, ld) simdgroup_store((c), (s) + (off), (ulong)(ld))
#define MT_SYNC() simdgroup_barrier(mem_flags::mem_threadgroup)

/* Staging: group memory holds floats, so every copy converts. */
#define MT_PUT(s, i, v) ((s)[i] = (float)(v))
#define MT_COPY(s, si, g, gi) ((s)[si] = (float)(g)[gi])
inline void mt_copy_vec(threadgroup float* s, device const T* g, int count) {
  for (int e = 0; e < count; e += 4) {
    const float4 v = float4(*(device const MB_T4*)(g + e));
    s[e] = v.x;
    s[e + 1] = v.y;
    s[e + 2] = v.z;
    s[e + 3] = v.w;
  }
}
#define MT_COPY_VEC(s, si, g, gi) mt_copy_vec((s) + (si), (g) + (gi), MT_VEC)
#define MT_COPY_COMMIT() ((void)0)
#define MT_COPY_WAIT(n) ((void)0)
