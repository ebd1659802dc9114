// Declaration shim of the Metal Shading Language builtins that kernels/include/
// metal.h and the portable bodies use, written from Apple's Metal Shading Language
// Specification, so that tests/test_metal_static.py can parse every portable
// kernel as Metal would see it: prelude + common.h + body, with the variant's
// defines, as C++17 with clang (-Wno-unknown-attributes for [[buffer(n)]] and the
// other MSL attributes). Not Apple's header; nothing here runs.
//
// Address spaces vanish (kernel, device, threadgroup, constant, thread are empty
// macros); half is a class with float conversions, since clang has no _Float16
// on x86-64. Declared are only the builtins in use, with MSL's own overloads, so
// an MSL function a body calls wrongly (or one MSL lacks) fails here. Keywords and
// library calls MSL does not have are poisoned.
#pragma once

namespace metal {

typedef unsigned int uint;
typedef unsigned short ushort;

// Converts implicitly both ways, as MSL's half does; nothing here is ever run.
class half {
 public:
  half() = default;
  half(float f) : value_(f) {}
  operator float() const { return value_; }

 private:
  float value_ = 0;
};

#if __METAL_VERSION__ >= 310
// MSL 3.1 (macOS 14) adds bfloat, converting both ways as half does; before that the
// name does not exist, so a bfloat16 build for an older MSL fails here as it would there.
class bfloat {
 public:
  bfloat() = default;
  bfloat(float f) : value_(f) {}
  operator float() const { return value_; }

 private:
  float value_ = 0;
};
struct bfloat4 {
  bfloat x, y, z, w;
};
#endif

struct uint3 {
  uint x, y, z;
  uint operator[](int i) const { return i == 0 ? x : (i == 1 ? y : z); }
};

struct uint4 {
  uint x, y, z, w;
};

struct half4 {
  half x, y, z, w;
};

// No arithmetic operators: the portable dialect uses FLOAT4 components only.
struct float4 {
  float x, y, z, w;
  float4() = default;
  float4(float x_, float y_, float z_, float w_) : x(x_), y(y_), z(z_), w(w_) {}
  explicit float4(half4 h) : x(h.x), y(h.y), z(h.z), w(h.w) {}
#if __METAL_VERSION__ >= 310
  explicit float4(bfloat4 h) : x(h.x), y(h.y), z(h.z), w(h.w) {}
#endif
};

// Scoped, as MSL spells it: mem_flags::mem_threadgroup.
enum class mem_flags : uint { mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4 };
inline mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(uint(a) | uint(b)); }
void threadgroup_barrier(mem_flags flags);
void simdgroup_barrier(mem_flags flags);

enum memory_order { memory_order_relaxed, memory_order_seq_cst };
enum thread_scope { thread_scope_thread, thread_scope_simdgroup, thread_scope_threadgroup, thread_scope_device };
void atomic_thread_fence(mem_flags flags, memory_order order, thread_scope scope = thread_scope_device);

struct atomic_int {
  int value_;
};
int atomic_load_explicit(const volatile atomic_int* object, memory_order order);
void atomic_store_explicit(volatile atomic_int* object, int desired, memory_order order);
int atomic_exchange_explicit(volatile atomic_int* object, int desired, memory_order order);
int atomic_fetch_add_explicit(volatile atomic_int* object, int operand, memory_order order);
int atomic_fetch_sub_explicit(volatile atomic_int* object, int operand, memory_order order);

// as_type<T>(x): the bits of x read as T, which must have the same size (MSL's
// reinterpreting conversion, like OpenCL's as_int / as_float). The shim's half is
// 4 bytes, so only 32-bit casts between int, uint and float are checked faithfully.
template <typename T, typename U>
T as_type(U x) {
  static_assert(sizeof(T) == sizeof(U), "as_type needs types of the same size");
  return T();
}

typedef unsigned long ulong;
struct ulong2 {
  ulong x, y;
  ulong2(ulong v = 0) : x(v), y(v) {}
  ulong2(ulong x_, ulong y_) : x(x_), y(y_) {}
};

// SIMD-group matrices, from the MSL specification (version 3.2): section 2.4 (the type
// simdgroup_matrix<T,Cols,Rows>, T half, bfloat or float, Cols and Rows 8, the names
// simdgroup_half8x8 and simdgroup_float8x8; bfloat is not used here) and section 6.7,
// Tables 6.9 and 6.10. The specification gives every function one element type T for
// all its matrices and its memory, so a half matrix cannot accumulate into a float one
// or load from float memory here either. It declares load and store once for
// threadgroup and once for device memory; with address spaces gone those are one, and
// the `thread` on the matrix arguments is dropped with them.
template <typename T, int Cols, int Rows>
struct simdgroup_matrix {
  simdgroup_matrix() = default;
  explicit simdgroup_matrix(T dval);  // a diagonal matrix of dval
};
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
template <typename T, int Cols, int Rows>
simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T value);
template <typename T, int Cols, int Rows>
void simdgroup_load(simdgroup_matrix<T, Cols, Rows>& d, const T* src, ulong elements_per_row = Cols,
                    ulong2 matrix_origin = 0, bool transpose_matrix = false);
template <typename T, int Cols, int Rows>
void simdgroup_store(simdgroup_matrix<T, Cols, Rows> a, T* dst, ulong elements_per_row = Cols,
                     ulong2 matrix_origin = 0, bool transpose_matrix = false);
template <typename T, int Cols, int Rows, int K>
void simdgroup_multiply_accumulate(simdgroup_matrix<T, Cols, Rows>& d, simdgroup_matrix<T, K, Rows>& a,
                                   simdgroup_matrix<T, Cols, K>& b, simdgroup_matrix<T, Cols, Rows>& c);

float simd_sum(float x);
int simd_sum(int x);
float simd_max(float x);
float simd_shuffle_down(float x, unsigned short delta);
// T simd_broadcast(T data, ushort broadcast_lane_id): the value of data in the lane
// broadcast_lane_id, which must be the same in every thread of the SIMD group. MSL
// declares it for every scalar and vector type T, hence the template.
template <typename T>
T simd_broadcast(T data, ushort broadcast_lane_id);

int min(int a, int b);
uint min(uint a, uint b);
float min(float a, float b);
int max(int a, int b);
uint max(uint a, uint b);
float max(float a, float b);
float fmin(float a, float b);
float fmax(float a, float b);
int abs(int x);
float fabs(float x);
float sqrt(float x);
float rsqrt(float x);
float exp(float x);
float fma(float a, float b, float c);

}  // namespace metal

#define kernel
#define device
#define threadgroup
#define constant
#define thread

#pragma GCC poison double goto printf malloc free
