// What the CUDA backend's files share: the per-device context, buffers, and the
// kernel interface that compiled kernels and the cuBLAS builtin both implement.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/device.h"
#include "cuda_api.h"
#include "cuda_loader.h"

namespace mb::cuda {

// cuBLAS handles of one context, created by the first builtin("cublas").
struct BlasState {
  cublasHandle_t handle = nullptr;
  cublasLtHandle_t lt = nullptr;
  CUdeviceptr workspace = 0;
  size_t workspace_bytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper
};

// One opened device: its primary context, the stream every launch goes to, the
// gate that holds that stream while a timed batch is enqueued, and a pool of events.
struct Context {
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  CUstream stream = nullptr;
  std::mutex mutex;  // one launch sequence at a time
  int cc_major = 0, cc_minor = 0;

  // The gate: a host-mapped word the stream waits on (cuStreamWaitValue32, or a spin
  // kernel where stream memory operations are missing).
  volatile uint32_t* gate_host = nullptr;
  CUdeviceptr gate_dev = 0;
  uint32_t gate_generation = 0;
  bool gate_wait_value = true;
  CUmodule spin_module = nullptr;
  CUfunction spin = nullptr;

  std::vector<CUevent> events;
  std::unique_ptr<BlasState> blas;  // created by the first builtin("cublas")

  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  // Makes this context current on the calling thread (cheap when it already is).
  void make_current() const;
  // Blocks the stream until release(); returns the generation to release.
  uint32_t hold();
  void release(uint32_t generation);
  // At least `n` timing events.
  void ensure_events(size_t n);
};

// A device allocation, or a view of one (its pointer plus an offset; the parent
// owns the memory).
class CuBuffer final : public Buffer, public std::enable_shared_from_this<CuBuffer> {
 public:
  CuBuffer(std::shared_ptr<Context> ctx, size_t n);
  // For a caller that already holds ctx->mutex with the context current (a kernel's prepare).
  struct Held {};
  CuBuffer(std::shared_ptr<Context> ctx, size_t n, Held);
  CuBuffer(std::shared_ptr<Context> ctx, std::shared_ptr<CuBuffer> parent, size_t offset, size_t n);
  ~CuBuffer() override;
  size_t bytes() const override { return bytes_; }
  void write(const void* src, size_t n, size_t offset) override;
  void read(void* dst, size_t n, size_t offset) const override;
  void fill(uint8_t value) override;
  void copy_from(const Buffer& source) override;
  std::shared_ptr<Buffer> view(size_t offset, size_t n) override;
  CUdeviceptr ptr() const { return ptr_; }

 private:
  std::shared_ptr<Context> ctx_;
  std::shared_ptr<CuBuffer> parent_;  // set for views
  CUdeviceptr ptr_ = 0;
  size_t bytes_;
};

// A kernel of this backend. prepare() checks a launch once and returns what
// enqueues it on the context's stream (called with the context current and its
// mutex held), so that a timed batch does the checking only once.
class CuKernel : public Kernel {
 public:
  virtual std::function<void()> prepare(const Launch& launch) = 0;
  // Enqueues one launch now (same conditions); the direct path of Device::run.
  virtual void launch(const Launch& l) { prepare(l)(); }
  // Kernels one launch puts on the driver's queue: a held batch is cut so that the queue
  // takes all of it while the gate is shut (cuda_backend.cpp, kMaxHeld).
  virtual size_t queue_cost() const { return 1; }
  size_t simd_width() const override { return 32; }
};

// The buffer behind argument `index` of `launch`, or UsageError naming the kernel.
CuBuffer& buffer_arg(const Launch& launch, size_t index);

// cublas_builtin.cpp: the `cublas` builtin, which reads the GEMM ABI's MBParams.
// dtype: MB_DTYPE's value (0 float32, 1 float16, 2 bfloat16), or -1 to read the element
// size off the buffers (then 2 bytes means float16). `first`, when set, is launched before
// cuBLAS to dequantize a quantized B into a scratch buffer (Device::builtin); the builtin
// then takes quantized B only.
std::shared_ptr<CuKernel> make_cublas_kernel(std::shared_ptr<Context> ctx, const std::string& label, int dtype,
                                             std::shared_ptr<CuKernel> first = nullptr);
// Releases the cuBLAS handles (called by ~Context with the context current).
void destroy_blas(BlasState* blas);

}  // namespace mb::cuda
