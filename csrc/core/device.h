// The contract between the backend-neutral core and each backend.
//
// A backend implements only primitives: enumerate devices, compile, allocate,
// views and copies of buffers, one blocking launch, and two held runs of launches:
// one that reports each launch's GPU time and one that reports the whole run's.
// Everything that is policy (warm-up, stopping rules, clock checks, statistics)
// lives in measure.cpp and is shared by every backend.
//
// Errors start with where they came from, "[backend::operation] ", so that a user
// knows at once which layer failed: "[cuda::compile] gemv/nt_bn2: ...".
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
  uint64_t cache_bytes = 0;  // last-level cache that cold inputs must not be found in
  int max_group_size = 0;
  bool unified_memory = false;
  // The device is a processor of the host itself (OpenCL's CL_DEVICE_TYPE_CPU, as PoCL):
  // its kernels run on the cores that also build, verify and run every other worker.
  bool cpu = false;
  size_t view_alignment = 256;  // Buffer::view offsets must be multiples of this
  size_t max_held_launches = 0; // most launches one timed_batch takes (0: no limit)
  // Peak DRAM bandwidth in bytes per second where an API gives it (0: unknown), and how.
  double peak_bandwidth = 0;
  std::string peak_bandwidth_source;
  // How the backend reads the GPU's clock for ClockReading, or why it cannot.
  std::string clock_source;
  // Which device timestamps GPU times come from (events, profiling, counters), in words.
  std::string timing_source;
  // Whether the matrix tile of kernels/README.md runs here (the backend's matrix unit,
  // or OpenCL's emulation, which runs everywhere), and in words what runs it or, when
  // false, what is missing. Variants whose manifest `needs` "matrix_unit" are
  // unsupported where it is false.
  bool matrix_unit = false;
  std::string matrix_unit_detail;
  // Whether native kernels here may use Hopper's warpgroup matrix instruction
  // (wgmma.mma_async, sm_90a; kernels/include/cuda.h), and in words why or why not.
  // Variants whose manifest `needs` "warpgroup_mma" are unsupported where it is false.
  bool warpgroup_mma = false;
  std::string warpgroup_mma_detail = "none: wgmma.mma_async is an instruction of NVIDIA GPUs of compute capability 9.0";
  // Whether native kernels here may group blocks into thread-block clusters that share
  // their group memory (CUDA's __cluster_dims__, distributed shared memory), and in words
  // why or why not. A manifest's "thread_block_clusters if CL > 1" makes the variants
  // with clusters unsupported where it is false.
  bool thread_block_clusters = false;
  std::string thread_block_clusters_detail = "none: thread-block clusters are CUDA's, on compute capability 9.0 and later";
  // Whether kernels and vendor builtins here take bfloat16 data (the spec dtype), and in
  // words how or, when false, what is missing. Variants are unsupported for bfloat16 specs
  // where it is false.
  bool bfloat16 = false;
  std::string bfloat16_detail;
};

// The GPU's core clock at one moment, where the backend can read it.
struct ClockReading {
  bool known = false;       // false: the backend exposes no clock (OpenCL, Metal)
  double mhz = 0;           // current graphics/SM clock
  double max_mhz = 0;       // the highest it may run at
  bool throttled = false;   // slowed by power or thermal limits right now
};

struct Define {
  std::string name;
  std::string value;
};

// Where a kernel or buffer came from, as the bindings record it (0: not recorded, not
// checked): the serial of the Device that made it, so that one used with another
// device, or after its own was closed, is refused by name rather than failing inside
// the driver ("unknown OpenCL error").
struct Origin {
  uint64_t device = 0;
  const void* memory = nullptr;  // the allocation a buffer (or the view it is) lies in
  size_t offset = 0;             // and where in it
};

class Buffer {
 public:
  virtual ~Buffer() = default;
  Origin origin;
  virtual size_t bytes() const = 0;
  virtual void write(const void* src, size_t n, size_t offset = 0) = 0;
  virtual void read(void* dst, size_t n, size_t offset = 0) const = 0;
  // Sets every byte and returns once done.
  virtual void fill(uint8_t value) = 0;
  // Copies all of `src`, a buffer of the same device and size, into this one on the
  // device, and returns once done.
  virtual void copy_from(const Buffer& src) = 0;
  // Bytes [offset, offset + bytes) of this buffer as a buffer of their own, sharing
  // its memory (a kernel bound to the view sees only those bytes at its address 0).
  // `offset` is a multiple of DeviceInfo::view_alignment. The view keeps its parent alive.
  virtual std::shared_ptr<Buffer> view(size_t offset, size_t bytes) = 0;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  Origin origin;
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

inline uint64_t next_serial() {
  static std::atomic<uint64_t> count{0};
  return ++count;
}

// Objects a backend hands out (devices, kernels, buffers) keep alive whatever
// they need (contexts, libraries), so Python may drop them in any order.
class Device {
 public:
  virtual ~Device() = default;
  // Unique for the life of the process: a new device never takes a closed one's serial.
  const uint64_t serial = next_serial();
  virtual const DeviceInfo& info() const = 0;

  // Compiles `source`, whose kernel is `entry`, with `defines` as preprocessor
  // macros. Throws CompileError carrying the compiler log; `label` names the
  // variant in messages. A source may hold several kernels; a backend may keep
  // what it built and give another entry of the same source and defines from it
  // (OpenCL does, for python/metalbench/batch.py).
  virtual std::shared_ptr<Kernel> compile(const std::string& source, const std::string& entry,
                                          const std::vector<Define>& defines,
                                          const std::string& label) = 0;

  // A vendor-library routine presented as a kernel (cuBLAS, MPS). It takes the
  // same arguments as a portable GEMM kernel. `defines` are the variant's: a
  // library call has no MB_DTYPE compiled in, so that is how it learns its element
  // type. `first`, when set, is a kernel of this device that each launch runs before
  // the library call, with the launch's own arguments and geometry (the dequantize step
  // of a quantized B: kernels/cublas_dequant.toml); the two are one launch to time.
  // Throws UsageError when the backend has no such builtin, or it takes no `first`.
  virtual std::shared_ptr<Kernel> builtin(const std::string& name, const std::string& label,
                                          const std::vector<Define>& defines,
                                          std::shared_ptr<Kernel> first = nullptr) = 0;

  // Kernel `entry` of a precompiled library file (a .metallib), where defines can
  // no longer apply. Throws CompileError with the loader's message, or UsageError
  // where the backend takes no precompiled code.
  virtual std::shared_ptr<Kernel> load(const std::string& path, const std::string& entry,
                                       const std::string& label) {
    throw UsageError("[" + info().backend + "::load] " + label + ": cannot load kernel '" + entry +
                     "' from the precompiled library " + path + "; this backend takes no precompiled code");
  }

  virtual std::shared_ptr<Buffer> allocate(size_t bytes) = 0;

  // Submits one launch and blocks until it completed. The core measures the CPU
  // time of a caller around this call.
  virtual void run(const Launch& launch) = 0;

  // Runs `launches` in order and returns each one's GPU time in nanoseconds, each
  // between its own device timestamps. The GPU must never wait for the host between
  // them: the backend holds the queue until all are enqueued, or enqueues far enough
  // ahead, for any number of launches.
  virtual std::vector<uint64_t> timed(const std::vector<Launch>& launches) = 0;

  // Runs `launches` back to back as above and returns the GPU time from the start of
  // the first to the end of the last, in nanoseconds: one pair of device timestamps
  // around the whole run, so no per-launch timestamp work falls between launches.
  virtual uint64_t timed_batch(const std::vector<Launch>& launches) = 0;

  // The core clock now; the default knows none.
  virtual ClockReading clock() { return {}; }

  // Held by measure() for its whole run: one measurement per device at a time, so
  // two threads timing on one device (the GIL is released) never interleave their
  // held runs or exhaust a queue's depth between them.
  std::mutex measuring;
  // When measure() last finished on this device (under `measuring`; empty before the
  // first): how long the device sat idle before the next, which decides whether its
  // warm-up must bring a clock that dropped back up (MeasureConfig::ramp_idle).
  std::optional<std::chrono::steady_clock::time_point> measured_until;
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
