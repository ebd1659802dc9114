// Shared by the Metal backend's translation units (Objective-C++ with ARC only).
// metal_backend.mm owns devices, buffers, compiled kernels and timing;
// mps_baseline.mm owns the MPS builtin. They meet at MetalKernel::prepare.
#pragma once

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"

namespace mb::metal {

// Every object of one opened device holds this, so Python may drop them in any order.
struct Context {
  id<MTLDevice> device;
  id<MTLCommandQueue> queue;
  std::string name;
};

// Uncompleted command buffers one queue may hold; [queue commandBuffer] blocks
// beyond it, so a timed batch submits whenever it has encoded this many.
constexpr NSUInteger kQueueDepth = 256;

class MetalBuffer final : public Buffer {
 public:
  MetalBuffer(std::shared_ptr<Context> ctx, size_t bytes);
  size_t bytes() const override { return bytes_; }
  void write(const void* src, size_t n, size_t offset) override;
  void read(void* dst, size_t n, size_t offset) const override;
  void fill(uint8_t value) override;
  // The GPU-side fill of a timed batch (cold mode), in a command buffer of its own.
  // A queue starts command buffers in order but may run them overlapped; `next`,
  // a buffer the timed launch binds, is made to depend on the fill, so that Metal's
  // hazard tracking holds the launch until the fill is done.
  void encode_fill(id<MTLCommandBuffer> cb, uint8_t value, id<MTLBuffer> next = nil) const;
  id<MTLBuffer> handle() const { return buffer_; }

 private:
  std::shared_ptr<Context> ctx_;
  id<MTLBuffer> buffer_;
  size_t bytes_;
};

// One launch with its arguments resolved, ready to be encoded any number of times.
// Encoding cannot fail half-way, so no command encoder is ever left open.
class PreparedLaunch {
 public:
  virtual ~PreparedLaunch() = default;
  virtual void encode(id<MTLCommandBuffer> cb) const = 0;
};

class MetalKernel : public Kernel {
 public:
  // Checks `launch` against what this kernel takes and resolves its arguments;
  // throws UsageError naming the argument at fault.
  virtual std::shared_ptr<const PreparedLaunch> prepare(const Launch& launch) = 0;
};

// The argument as a Metal buffer, or UsageError naming the kernel and index.
MetalBuffer& buffer_arg(const Launch& launch, size_t index);

// Compiles MSL `source` and returns the pipeline of `entry`; CompileError carries
// the compiler's message.
id<MTLComputePipelineState> build_pipeline(const Context& ctx, const std::string& source,
                                           const std::string& entry, const std::vector<Define>& defines,
                                           const std::string& label);

// One kernel argument: a buffer, or bytes passed by value (buffer nil).
struct Binding {
  id<MTLBuffer> buffer;
  std::vector<uint8_t> bytes;
};

// Binds args[i] to [[buffer(i)]] and dispatches, in a compute pass of its own.
void encode_dispatch(id<MTLCommandBuffer> cb, id<MTLComputePipelineState> pipeline,
                     const std::vector<Binding>& args, MTLSize groups, MTLSize threads);

// The MPS baseline (mps_baseline.mm), for `f16` or float data.
std::shared_ptr<MetalKernel> make_mps_kernel(std::shared_ptr<Context> ctx, const std::string& label, bool f16);

}  // namespace mb::metal
