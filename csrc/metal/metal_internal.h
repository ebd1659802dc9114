// Shared by the Metal backend's translation units (Objective-C++ with ARC only):
//   metal_buffer.mm   buffers and views, in shared or private storage;
//   metal_timing.mm   how launches are ordered and encoded, and the timestamp counters;
//   metal_held.mm     held runs: timed() and timed_batch(), paced as metal_held.h says;
//   metal_backend.mm  devices, compiled kernels, run();
//   mps_baseline.mm   the MPS builtins.
// They meet at PreparedLaunch. Errors start with "[metal::operation] ".
#pragma once

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "core/device.h"

namespace mb::metal {

// "[metal::operation] " + who + ": ", the start of every message of this backend.
std::string where(const char* operation, const std::string& who);

std::string str(NSString* s);

// Runs `body` inside an autorelease pool and returns what it returns. clang pops an
// @autoreleasepool block's pool on the normal way out only: an exception leaving the
// block skips the pop, and what the block autoreleased (command buffers, with every
// buffer they retain) lives until the thread ends. So the exception is caught inside
// the pool and thrown again once the pool is drained. Every pool of the backend is this
// one (tests/test_metal_static.py checks that no other @autoreleasepool exists).
template <typename Body>
auto pooled(Body&& body) -> decltype(body()) {
  using Result = decltype(body());
  std::exception_ptr error;
  if constexpr (std::is_void_v<Result>) {
    @autoreleasepool {
      try {
        body();
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  } else {
    std::optional<Result> out;
    @autoreleasepool {
      try {
        out.emplace(body());
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return std::move(*out);
  }
}

// Everything one opened device needs; every object it hands out holds it, so that
// Python may drop them in any order.
struct Context {
  id<MTLDevice> device;
  id<MTLCommandQueue> queue;
  std::string name;
  // Buffers live in private storage, reached through staging blits: on GPUs without
  // unified memory (AMD and Intel GPUs of Intel Macs), or when METALBENCH_METAL_STORAGE
  // asks for it.
  bool private_storage = false;
  // Held by everything that submits to `queue` and waits (launches, timed runs,
  // staging copies), so that one device is used by one thread at a time. A timed run
  // holds up to a window of command buffers behind a gate; a second thread asking the
  // queue for more could wait for one of them to complete, which cannot happen before
  // the first thread opens the gate. The core also holds Device::measuring for a whole
  // measurement; this lock covers run() and buffer copies called from other threads in
  // between.
  std::mutex mutex;
  // The join kernel (metal_timing.mm), built when the device is opened, and a 16-byte
  // buffer it binds where its launches bind none.
  id<MTLComputePipelineState> join;
  id<MTLBuffer> scratch;
  // The gates of held runs (metal_held.h): a shared event the host raises to open one,
  // and the last value a gate waited for; each gate waits for a new one.
  id<MTLSharedEvent> gate;
  uint64_t gate_value = 0;
};

// Uncompleted command buffers the queue lends out; [queue commandBuffer] blocks
// beyond it.
constexpr NSUInteger kQueueDepth = 1024;
// Command buffers one window of a held run commits besides its gate, with command-buffer
// times (one per launch, and one per join): two windows in flight, gates included, stay
// within the queue's depth, and a warm round of the core's fits in one (about 500
// launches, measure.py's plan_slots, whose slots share their allocations and so need no
// join; tests/test_metal_static.py checks it). Cold rounds can be longer: several windows.
constexpr size_t kWindowBuffers = kQueueDepth / 2 - 1;

id<MTLCommandBuffer> new_command_buffer(const Context& ctx, const std::string& who);
// After waitUntilCompleted: a command buffer that did not complete is a DeviceError.
void check_completed(id<MTLCommandBuffer> cb, const std::string& who);
// Commits `cb`, waits for it and checks that it completed.
void submit_and_wait(id<MTLCommandBuffer> cb, const std::string& who);

class MetalBuffer final : public Buffer, public std::enable_shared_from_this<MetalBuffer> {
 public:
  // A new allocation of `bytes` (rounded up to whole 4-byte words, which macOS blits need).
  MetalBuffer(std::shared_ptr<Context> ctx, size_t bytes);
  // Bytes [offset, offset + bytes) of `root`'s allocation.
  MetalBuffer(std::shared_ptr<MetalBuffer> root, size_t offset, size_t bytes);

  size_t bytes() const override { return bytes_; }
  void write(const void* src, size_t n, size_t offset) override;
  void read(void* dst, size_t n, size_t offset) const override;
  void fill(uint8_t value) override;
  void copy_from(const Buffer& src) override;
  std::shared_ptr<Buffer> view(size_t offset, size_t bytes) override;

  // The allocation (a view's root's) and where this buffer's bytes start in it: what
  // setBuffer:offset:atIndex: and MPS's initWithBuffer:offset:descriptor: take.
  id<MTLBuffer> handle() const { return buffer_; }
  size_t offset() const { return offset_; }
  const Context& context() const { return *ctx_; }

 private:
  std::shared_ptr<Context> ctx_;
  std::shared_ptr<MetalBuffer> root_;  // set for views: keeps the allocation alive
  id<MTLBuffer> buffer_;
  size_t offset_ = 0;
  size_t bytes_;
};

// One kernel argument: a buffer at an offset, or bytes passed by value (buffer nil).
struct Binding {
  id<MTLBuffer> buffer;
  NSUInteger offset = 0;
  std::vector<uint8_t> bytes;
};

// One launch with its arguments resolved, ready to be encoded any number of times.
// Encoding cannot fail half-way, so no command encoder is ever left open. It holds
// its buffers only as long as the caller keeps it: nothing of a launch outlives the
// run() or timed() call that prepared it.
class PreparedLaunch {
 public:
  virtual ~PreparedLaunch() = default;
  // True for one dispatch of a pipeline, which can share a compute pass with others
  // (dispatch()); false for a launch that encodes passes of its own (MPS: encode()).
  virtual bool single_dispatch() const = 0;
  // Encodes the dispatch into an open compute pass (single_dispatch() only).
  virtual void dispatch(id<MTLComputeCommandEncoder> enc) const = 0;
  // Encodes the whole launch into `cb`, in passes of its own.
  virtual void encode(id<MTLCommandBuffer> cb) const = 0;
  // Every allocation the launch binds, each once: what orders it against its
  // neighbours (metal_timing.mm).
  const std::vector<id<MTLBuffer>>& resources() const { return resources_; }

 protected:
  void add_resource(id<MTLBuffer> buffer);
  std::vector<id<MTLBuffer>> resources_;
};

class MetalKernel : public Kernel {
 public:
  // Checks `launch` against what this kernel takes and resolves its arguments;
  // throws UsageError naming the argument at fault.
  virtual std::shared_ptr<const PreparedLaunch> prepare(const Launch& launch) = 0;
};

// The argument as a Metal buffer of `ctx`, or UsageError naming the kernel and index.
MetalBuffer& buffer_arg(const Context& ctx, const Launch& launch, size_t index);

// Compiles MSL `source` and returns the pipeline of `entry`; CompileError carries
// the compiler's message.
id<MTLComputePipelineState> build_pipeline(const Context& ctx, const std::string& source,
                                           const std::string& entry, const std::vector<Define>& defines,
                                           const std::string& label);

// Binds args[i] to [[buffer(i)]] of the open pass and dispatches.
void encode_dispatch(id<MTLComputeCommandEncoder> enc, id<MTLComputePipelineState> pipeline,
                     const std::vector<Binding>& args, MTLSize groups, MTLSize threads);
// The same in a compute pass of its own.
void encode_dispatch(id<MTLCommandBuffer> cb, id<MTLComputePipelineState> pipeline,
                     const std::vector<Binding>& args, MTLSize groups, MTLSize threads);

// The MPS builtins (mps_baseline.mm) for data of `dtype`, MB_DTYPE's value (0 float32,
// 1 float16, 2 bfloat16: macOS 14 or later): "mps" (MPSMatrixMultiplication,
// MPSMatrixFullyConnected for a bias in the nn layout) and "mps-gemv"
// (MPSMatrixVectorMultiplication, m = 1).
std::shared_ptr<MetalKernel> make_mps_kernel(std::shared_ptr<Context> ctx, const std::string& name,
                                             const std::string& label, int dtype);

// ---- ordering, encoding and counters (metal_timing.mm) -----------------------------------------

// Where the two timestamps of one timed span go: sample indices of a counter sample
// buffer, or nothing (buffer nil) when command buffers are timed instead.
struct Span {
  id<MTLCounterSampleBuffer> samples;
  NSUInteger start = MTLCounterDontSample;
  NSUInteger end = MTLCounterDontSample;
};

// Timestamps of the GPU's stage-boundary counters, calibrated to nanoseconds.
class Counters {
 public:
  // The device's timestamp counters if they can time compute passes here, checked by
  // a probe run; nullptr (and `why`) otherwise.
  static std::unique_ptr<Counters> open(Context& ctx, std::string* why);

  // Sample buffer `i` of a pool (each holds kSamplesPerBuffer samples), reused by
  // every run; runs on one device never overlap (Context::mutex).
  id<MTLCounterSampleBuffer> buffer(size_t i);
  // The first `count` samples of `buffer` in counter ticks; DeviceError if any is
  // missing (zero or MTLCounterErrorValue).
  std::vector<uint64_t> resolve(id<MTLCounterSampleBuffer> buffer, size_t count, const std::string& who);
  // Nanoseconds per counter tick, calibrated against the host clock; `who` starts
  // any error message ("[metal::timing] label: ").
  double ns_per_tick(const std::string& who);
  // "1 ns per tick" or "0.52 ns per tick", for DeviceInfo::timing_source.
  std::string describe_rate();

  static constexpr size_t kSamplesPerBuffer = 2048;

 private:
  struct Stamp {
    double host_ns = 0;
    uint64_t gpu = 0;
  };
  explicit Counters(Context& ctx, id<MTLCounterSet> set) : ctx_(ctx), set_(set) {}
  Stamp stamp() const;
  bool probe(std::string* why);

  Context& ctx_;
  id<MTLCounterSet> set_;
  std::vector<id<MTLCounterSampleBuffer>> pool_;
  Stamp anchor_;
  double rate_ = 0;  // ns per tick, 0 until calibrated
};

// One launch into `cb`, untimed by counters: a kernel's dispatch in a compute pass of
// its own, or MPS's passes.
void encode_launch(id<MTLCommandBuffer> cb, const PreparedLaunch& launch);
// Launches timed by counters, every one the same way, kernels and MPS alike: launch j
// spans from the end of the join pass before it (sample 2j of `samples`) to the start
// of the join pass after it (sample 2j + 1). `prev` is the launch before the first
// (nullptr at the start of a run): the first join waits for it, so the order holds
// across command buffers too.
void encode_timed(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<const PreparedLaunch*>& launches,
                  id<MTLCounterSampleBuffer> samples, const PreparedLaunch* prev);
// The whole run (timed_batch): consecutive dispatches share one serial compute pass.
// With counters, `span` samples the end of a join pass before the first launch and the
// start of one after the last, as encode_timed times a single launch.
void encode_all(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<const PreparedLaunch*>& launches,
                const Span& span);
// A pass that orders what comes after it after `a` and `b` (metal_timing.mm says how).
void encode_join(const Context& ctx, id<MTLCommandBuffer> cb, const PreparedLaunch* a, const PreparedLaunch* b,
                 const Span& span);
// Whether `b` right after `a` needs a join pass to wait for it.
bool needs_join(const PreparedLaunch* a, const PreparedLaunch& b);
// The join kernel's pipeline, built once per device.
id<MTLComputePipelineState> build_join_pipeline(const Context& ctx);

// ---- held runs (metal_held.mm) ------------------------------------------------------------------

// Device::timed: each launch's GPU time in nanoseconds, by counters where `counters` is
// set, else by each launch's own command buffer. `who` starts every message.
std::vector<uint64_t> timed_run(Context& ctx, Counters* counters, const std::vector<const PreparedLaunch*>& run,
                                const std::string& who);
// Device::timed_batch: the GPU time of all of `run`, in one command buffer.
uint64_t timed_batch_run(Context& ctx, Counters* counters, const std::vector<const PreparedLaunch*>& run,
                         const std::string& who);

}  // namespace mb::metal
