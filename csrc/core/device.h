// The contract between the backend-neutral core and each backend.
//
// A backend implements only primitives: enumerate devices, compile, allocate,
// copy, one blocking launch, and a held batch of launches that reports per-launch
// GPU time. Everything that is policy (warm-up, iteration control, cache flushing,
// statistics, guard checks) lives in measure.cpp and is shared by every backend.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace mb {

// Raised for anything the user can fix (bad launch geometry, missing driver).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The backend's driver or runtime cannot be loaded or has no device.
struct UnavailableError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A kernel failed to compile; `log` is the compiler's own output, unedited.
struct CompileError : std::runtime_error {
  CompileError(const std::string& what, std::string log)
      : std::runtime_error(what), log(std::move(log)) {}
  std::string log;
};

// The device reported an error while running work (launch failure, command
// buffer error, out of resources).
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DeviceInfo {
  std::string backend;  // "opencl", "cuda", "metal"
  int index = 0;
  std::string name;
  std::string vendor;
  std::string driver;      // driver / runtime version string
  int compute_units = 0;
  uint64_t memory_bytes = 0;
  uint64_t cache_bytes = 0;  // last-level cache the cold mode must flush
  int max_group_size = 0;
  bool unified_memory = false;
};

struct Define {
  std::string name;
  std::string value;
};

class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual size_t bytes() const = 0;
  virtual void write(const void* src, size_t n, size_t offset = 0) = 0;
  virtual void read(void* dst, size_t n, size_t offset = 0) const = 0;
  // Sets every byte and returns once done; used to pre-fill sentinels and, in
  // cold mode, to evict caches.
  virtual void fill(uint8_t value) = 0;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual const std::string& label() const = 0;
  // The most threads one group of this kernel may have (0: no kernel-level limit,
  // as for a vendor-library builtin that chooses its own geometry).
  virtual size_t max_group_size() const = 0;
  // Threads that execute in lock step (SIMD/warp width); 1 when unknown.
  virtual size_t simd_width() const = 0;
};

// One argument of a launch: a device buffer, or bytes passed by value
// (a small params struct).
using Arg = std::variant<std::shared_ptr<Buffer>, std::vector<uint8_t>>;

struct Launch {
  std::shared_ptr<Kernel> kernel;
  std::vector<Arg> args;
  std::array<uint32_t, 3> groups{1, 1, 1};   // number of groups in each dimension
  std::array<uint32_t, 3> threads{1, 1, 1};  // threads per group
};

// Objects a backend hands out (devices, kernels, buffers) keep alive whatever
// they need (contexts, libraries), so Python may drop them in any order.
class Device {
 public:
  virtual ~Device() = default;
  virtual const DeviceInfo& info() const = 0;

  // Compiles `source`, whose kernel is `entry`, with `defines` as preprocessor
  // macros. Throws CompileError carrying the compiler log; `label` names the
  // variant in messages.
  virtual std::shared_ptr<Kernel> compile(const std::string& source, const std::string& entry,
                                          const std::vector<Define>& defines,
                                          const std::string& label) = 0;

  // A vendor-library routine presented as a kernel (cuBLAS, MPS). It takes the
  // same arguments as a portable GEMM kernel. `defines` are the variant's: a
  // library call has no MB_F16 compiled in, so that is how it learns its element
  // type. Throws UsageError when the backend has no such builtin.
  virtual std::shared_ptr<Kernel> builtin(const std::string& name, const std::string& label,
                                          const std::vector<Define>& defines) = 0;

  // Kernel `entry` of a precompiled library file (a .metallib), where defines can
  // no longer apply. Throws CompileError with the loader's message, or UsageError
  // where the backend takes no precompiled code.
  virtual std::shared_ptr<Kernel> load(const std::string& path, const std::string& entry,
                                       const std::string& label) {
    throw UsageError(info().backend + ": cannot load kernel '" + entry + "' from the precompiled library " + path +
                     " (asked for by " + label + ")");
  }

  virtual std::shared_ptr<Buffer> allocate(size_t bytes) = 0;

  // Submits one launch and blocks until it completed. The core measures the CPU
  // time of a caller around this call.
  virtual void run(const Launch& launch) = 0;

  // Enqueues `count` launches and returns each one's GPU time in nanoseconds.
  // The GPU must never wait for the host between them: the backend holds the
  // queue until all are enqueued, or enqueues far enough ahead. If `flush` is
  // given, it is filled before each launch and that fill is not timed.
  virtual std::vector<uint64_t> timed(const Launch& launch, size_t count, Buffer* flush) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Why the backend cannot be used here (driver missing, no device), or "" if it can.
  virtual std::string unavailable_reason() = 0;
  virtual std::vector<DeviceInfo> devices() = 0;
  virtual std::shared_ptr<Device> open(int index) = 0;
};

}  // namespace mb
