// Metal backend: every device Metal reports, MSL compiled at run time, buffers in
// shared storage, and GPU time from each command buffer's own GPU timestamps.
// Warm-up, sample counts, statistics and launch checks stay in csrc/core.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/registry.h"
#include "metal/metal_internal.h"

namespace mb::metal {
namespace {

std::string str(NSString* s) {
  const char* utf8 = s ? s.UTF8String : nullptr;
  return utf8 ? std::string(utf8) : std::string();
}

NSString* ns(const std::string& s, const char* what) {
  NSString* out = [[NSString alloc] initWithBytes:s.data() length:s.size() encoding:NSUTF8StringEncoding];
  if (!out) throw UsageError(std::string("metal: ") + what + " is not valid UTF-8");
  return out;
}

// Metal reports no cache size. An Apple GPU's last level is the system-level cache
// it shares with the CPU, whose size Apple does not publish; 128 MiB is above every
// figure reported so far (96 MB on Ultra parts), and a flush larger than the cache
// costs only time: the core's cold mode writes twice this before each launch.
constexpr uint64_t kCacheBoundBytes = 128ull << 20;

// How timed() turns command buffers into samples. METALBENCH_METAL_TIMING picks it
// ("launch", the default, or "batched[:N]"); the mode is written into
// DeviceInfo::driver, so the report shows it and results of one mode are never
// reused for the other (the driver string is part of every result key).
struct TimingMode {
  unsigned per_buffer = 1;
  std::string text;
};

constexpr unsigned kDefaultBatch = 8;

TimingMode timing_mode() {
  const char* env = std::getenv("METALBENCH_METAL_TIMING");
  std::string value = env ? env : "";
  const std::string batched = "batched";
  if (value.empty() || value == "launch") return {1, "GPU time per launch from its own command buffer"};
  if (value.compare(0, batched.size(), batched) == 0) {
    unsigned n = kDefaultBatch;
    std::string rest = value.substr(batched.size());
    bool ok = rest.empty();
    if (!ok && rest[0] == ':' && rest.size() > 1 && rest.size() <= 5 &&
        rest.find_first_not_of("0123456789", 1) == std::string::npos) {
      n = static_cast<unsigned>(std::stoul(rest.substr(1)));
      ok = n >= 2 && n <= 1024;
    }
    if (ok)
      return {n, "GPU time per launch as 1/" + std::to_string(n) + " of a command buffer of " +
                     std::to_string(n) + " launches (METALBENCH_METAL_TIMING=" + value + ")"};
  }
  throw UsageError("METALBENCH_METAL_TIMING must be 'launch', 'batched' or 'batched:N' with N from 2 to 1024, not '" +
                   value + "'");
}

// The system default device first (the one an app would get), then every other.
std::vector<id<MTLDevice>> enumerate() {
  std::vector<id<MTLDevice>> out;
  @autoreleasepool {
    id<MTLDevice> preferred = MTLCreateSystemDefaultDevice();
    if (preferred) out.push_back(preferred);
    NSArray<id<MTLDevice>>* all = MTLCopyAllDevices();
    for (id<MTLDevice> d in all) {
      if (!preferred || d.registryID != preferred.registryID) out.push_back(d);
    }
  }
  return out;
}

DeviceInfo describe(id<MTLDevice> d, int index, const TimingMode& mode) {
  DeviceInfo i;
  @autoreleasepool {
    i.backend = "metal";
    i.index = index;
    i.name = str(d.name);
    i.vendor = i.name.substr(0, i.name.find(' '));  // "Apple", or "AMD" / "Intel" on Intel Macs
    i.driver = "Metal, macOS " + str([NSProcessInfo processInfo].operatingSystemVersionString) + "; " + mode.text;
    i.compute_units = 0;  // Metal reports no core count
    i.memory_bytes = d.recommendedMaxWorkingSetSize;
    i.cache_bytes = kCacheBoundBytes;
    i.max_group_size = static_cast<int>(d.maxThreadsPerThreadgroup.width);
    i.unified_memory = d.hasUnifiedMemory;
  }
  return i;
}

const char* status_name(MTLCommandBufferStatus s) {
  switch (s) {
    case MTLCommandBufferStatusNotEnqueued: return "NotEnqueued";
    case MTLCommandBufferStatusEnqueued: return "Enqueued";
    case MTLCommandBufferStatusCommitted: return "Committed";
    case MTLCommandBufferStatusScheduled: return "Scheduled";
    case MTLCommandBufferStatusCompleted: return "Completed";
    case MTLCommandBufferStatusError: return "Error";
  }
  return "unknown";
}

// After waitUntilCompleted: a command buffer that did not complete becomes a
// DeviceError, which the runner records against this variant before going on.
void check_completed(id<MTLCommandBuffer> cb, const std::string& who) {
  MTLCommandBufferStatus s = cb.status;
  if (s == MTLCommandBufferStatusCompleted) return;
  std::string why = cb.error ? str(cb.error.localizedDescription) : "no error reported";
  throw DeviceError("metal: " + who + ": command buffer ended with status " + status_name(s) + " (" +
                    std::to_string(static_cast<unsigned long>(s)) + "): " + why);
}

id<MTLCommandBuffer> new_command_buffer(const Context& ctx, const std::string& who) {
  id<MTLCommandBuffer> cb = [ctx.queue commandBuffer];
  if (!cb) throw DeviceError("metal: " + who + ": the queue gave no command buffer");
  return cb;
}

MTLSize size3(const std::array<uint32_t, 3>& d) { return MTLSizeMake(d[0], d[1], d[2]); }

class PipelineLaunch final : public PreparedLaunch {
 public:
  PipelineLaunch(id<MTLComputePipelineState> pipeline, std::vector<Binding> args, MTLSize groups, MTLSize threads)
      : pipeline_(pipeline), args_(std::move(args)), groups_(groups), threads_(threads) {}
  void encode(id<MTLCommandBuffer> cb) const override { encode_dispatch(cb, pipeline_, args_, groups_, threads_); }

 private:
  id<MTLComputePipelineState> pipeline_;
  std::vector<Binding> args_;
  MTLSize groups_, threads_;
};

// A compiled (or loaded) kernel. The group-size limit it reports is what
// check_launch in the core enforces; nothing here checks it again.
class PipelineKernel final : public MetalKernel {
 public:
  PipelineKernel(id<MTLComputePipelineState> pipeline, std::string label)
      : pipeline_(pipeline), label_(std::move(label)) {}
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return pipeline_.maxTotalThreadsPerThreadgroup; }
  size_t simd_width() const override { return pipeline_.threadExecutionWidth; }

  std::shared_ptr<const PreparedLaunch> prepare(const Launch& launch) override {
    std::vector<Binding> args;
    for (size_t i = 0; i < launch.args.size(); ++i) {
      if (std::holds_alternative<std::shared_ptr<Buffer>>(launch.args[i])) {
        args.push_back({buffer_arg(launch, i).handle(), {}});
        continue;
      }
      const auto& bytes = std::get<std::vector<uint8_t>>(launch.args[i]);
      // setBytes:length:atIndex: is for data under 4 KiB; an empty one binds nothing.
      if (bytes.empty() || bytes.size() >= 4096)
        throw UsageError(label_ + ": argument " + std::to_string(i) + " passes " + std::to_string(bytes.size()) +
                         " bytes by value; Metal takes 1 to 4095");
      args.push_back({nil, bytes});
    }
    return std::make_shared<PipelineLaunch>(pipeline_, std::move(args), size3(launch.groups),
                                            size3(launch.threads));
  }

 private:
  id<MTLComputePipelineState> pipeline_;
  std::string label_;
};

id<MTLComputePipelineState> pipeline_of(const Context& ctx, id<MTLLibrary> library, const std::string& entry,
                                        const std::string& label) {
  id<MTLFunction> fn = [library newFunctionWithName:ns(entry, "the entry name")];
  if (!fn) throw CompileError("metal: " + label + " has no kernel named '" + entry + "'", "");
  NSError* error = nil;
  id<MTLComputePipelineState> pipeline = [ctx.device newComputePipelineStateWithFunction:fn error:&error];
  if (!pipeline)
    throw CompileError("metal: building the pipeline of " + label + " failed",
                       error ? str(error.localizedDescription) : "");
  return pipeline;
}

MetalKernel& kernel_of(const Launch& launch) {
  auto* k = dynamic_cast<MetalKernel*>(launch.kernel.get());
  if (!k) throw UsageError(launch.kernel->label() + " was not compiled by the Metal backend");
  return *k;
}

class MetalDevice final : public Device {
 public:
  MetalDevice(id<MTLDevice> device, int index, const TimingMode& mode)
      : info_(describe(device, index, mode)), mode_(mode), ctx_(std::make_shared<Context>()) {
    ctx_->device = device;
    ctx_->name = info_.name;
    ctx_->queue = [device newCommandQueueWithMaxCommandBufferCount:kQueueDepth];
    if (!ctx_->queue) throw DeviceError("metal: " + info_.name + " gave no command queue");
  }

  const DeviceInfo& info() const override { return info_; }

  std::shared_ptr<Kernel> compile(const std::string& source, const std::string& entry,
                                  const std::vector<Define>& defines, const std::string& label) override {
    @autoreleasepool {
      return std::make_shared<PipelineKernel>(build_pipeline(*ctx_, source, entry, defines, label), label);
    }
  }

  std::shared_ptr<Kernel> load(const std::string& path, const std::string& entry,
                               const std::string& label) override {
    @autoreleasepool {
      NSError* error = nil;
      NSURL* url = [NSURL fileURLWithPath:ns(path, "the library path")];
      id<MTLLibrary> library = [ctx_->device newLibraryWithURL:url error:&error];
      if (!library)
        throw CompileError("metal: loading " + path + " for " + label + " failed",
                           error ? str(error.localizedDescription) : "");
      return std::make_shared<PipelineKernel>(pipeline_of(*ctx_, library, entry, label), label);
    }
  }

  std::shared_ptr<Kernel> builtin(const std::string& name, const std::string& label,
                                  const std::vector<Define>& defines) override {
    if (name != "mps")
      throw UsageError("metal: no vendor library routine '" + name + "' (asked for by " + label +
                       "); this backend has 'mps'");
    const Define* f16 = nullptr;
    for (const auto& d : defines)
      if (d.name == "MB_F16") f16 = &d;
    if (!f16 || (f16->value != "0" && f16->value != "1"))
      throw UsageError("metal: " + label + ": the mps builtin needs the define MB_F16 = 0 or 1");
    @autoreleasepool {
      return make_mps_kernel(ctx_, label, f16->value == "1");
    }
  }

  std::shared_ptr<Buffer> allocate(size_t bytes) override { return std::make_shared<MetalBuffer>(ctx_, bytes); }

  void run(const Launch& launch) override {
    MetalKernel& kernel = kernel_of(launch);
    auto prepared = kernel.prepare(launch);
    @autoreleasepool {
      id<MTLCommandBuffer> cb = new_command_buffer(*ctx_, kernel.label());
      prepared->encode(cb);
      [cb commit];
      [cb waitUntilCompleted];
      check_completed(cb, kernel.label());
    }
  }

  // Command buffers are all encoded first, then committed back to back and only
  // then waited on, so the GPU never idles waiting for the host (past the queue's
  // depth, earlier ones run while later ones are encoded). Each sample is one
  // command buffer's GPUEndTime - GPUStartTime over the launches it holds; they
  // bind the same buffers, so hazard tracking runs them one after another. A
  // cold-mode fill goes into a command buffer of its own just ahead, untimed.
  std::vector<uint64_t> timed(const Launch& launch, size_t count, Buffer* flush) override {
    MetalKernel& kernel = kernel_of(launch);
    const std::string& who = kernel.label();
    const unsigned per = mode_.per_buffer;
    if (flush && per > 1)
      throw UsageError("metal: " + who + ": cold mode needs each launch in a command buffer of its own, so that "
                       "the cache flush stays outside the timed span; unset METALBENCH_METAL_TIMING");
    auto* flush_buffer = flush ? dynamic_cast<MetalBuffer*>(flush) : nullptr;
    if (flush && !flush_buffer) throw UsageError("metal: " + who + ": the flush buffer is not a Metal buffer");
    auto prepared = kernel.prepare(launch);
    id<MTLBuffer> next = nil;  // what orders a fill before its launch (encode_fill)
    for (const auto& arg : launch.args) {
      const auto* held = std::get_if<std::shared_ptr<Buffer>>(&arg);
      auto* buffer = held ? dynamic_cast<MetalBuffer*>(held->get()) : nullptr;
      if (!next && buffer && buffer->bytes() >= 4) next = buffer->handle();
    }
    if (flush_buffer && (!next || flush_buffer->bytes() < 4))
      throw UsageError("metal: " + who + ": cold mode needs a buffer argument and a flush buffer of 4 bytes or more");

    std::vector<id<MTLCommandBuffer>> all, samples, pending;
    all.reserve(count * 2);
    samples.reserve(count);
    auto submit = [&] {
      for (id<MTLCommandBuffer> cb : pending) [cb commit];
      pending.clear();
    };
    for (size_t i = 0; i < count; ++i) {
      // Two more would exceed what the queue lends out uncompleted.
      if (pending.size() + 2 > kQueueDepth) submit();
      @autoreleasepool {
        if (flush_buffer) {
          id<MTLCommandBuffer> fill = new_command_buffer(*ctx_, who);
          flush_buffer->encode_fill(fill, static_cast<uint8_t>(i), next);
          all.push_back(fill);
          pending.push_back(fill);
        }
        id<MTLCommandBuffer> cb = new_command_buffer(*ctx_, who);
        for (unsigned j = 0; j < per; ++j) prepared->encode(cb);
        all.push_back(cb);
        pending.push_back(cb);
        samples.push_back(cb);
      }
    }
    submit();
    std::vector<uint64_t> out;
    out.reserve(count);
    @autoreleasepool {
      for (id<MTLCommandBuffer> cb : all) [cb waitUntilCompleted];
      for (id<MTLCommandBuffer> cb : all) check_completed(cb, who);
      for (id<MTLCommandBuffer> cb : samples) {
        CFTimeInterval start = cb.GPUStartTime, end = cb.GPUEndTime;
        if (!(end > start) || start <= 0)
          throw DeviceError("metal: " + who + ": the device reported no GPU time for a completed command buffer "
                            "(GPUStartTime " + std::to_string(start) + " s, GPUEndTime " + std::to_string(end) +
                            " s)");
        out.push_back(static_cast<uint64_t>(std::llround((end - start) * 1e9 / per)));
      }
    }
    return out;
  }

 private:
  DeviceInfo info_;
  TimingMode mode_;
  std::shared_ptr<Context> ctx_;
};

class MetalBackend final : public Backend {
 public:
  std::string name() const override { return "metal"; }
  std::string unavailable_reason() override {
    if (enumerate().empty())
      return "Metal reports no GPU (MTLCreateSystemDefaultDevice and MTLCopyAllDevices found none)";
    return "";
  }
  std::vector<DeviceInfo> devices() override {
    TimingMode mode = timing_mode();
    auto found = enumerate();
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < found.size(); ++i) out.push_back(describe(found[i], static_cast<int>(i), mode));
    return out;
  }
  std::shared_ptr<Device> open(int index) override {
    TimingMode mode = timing_mode();
    auto found = enumerate();
    if (index < 0 || size_t(index) >= found.size())
      throw UsageError("metal: no device " + std::to_string(index) + " (" + std::to_string(found.size()) +
                       " found)");
    return std::make_shared<MetalDevice>(found[index], index, mode);
  }
};

// Metal is the first choice of `--backend auto` wherever it is built (Apple only).
const BackendRegistration kRegistration("metal", 0, [] { return std::make_unique<MetalBackend>(); });

}  // namespace

MetalBuffer::MetalBuffer(std::shared_ptr<Context> ctx, size_t bytes) : ctx_(std::move(ctx)), bytes_(bytes) {
  buffer_ = [ctx_->device newBufferWithLength:bytes options:MTLResourceStorageModeShared];
  if (!buffer_)
    throw DeviceError("metal: cannot allocate " + std::to_string(bytes) + " bytes on " + ctx_->name +
                      " (its largest buffer is " + std::to_string(ctx_->device.maxBufferLength) + " bytes)");
}

// Shared storage: the CPU sees the buffer's memory directly, and every launch
// waits for completion, so a copy never races the GPU.
void MetalBuffer::write(const void* src, size_t n, size_t offset) {
  if (offset > bytes_ || n > bytes_ - offset) throw UsageError("metal: write past the end of a buffer");
  std::memcpy(static_cast<uint8_t*>(buffer_.contents) + offset, src, n);
}

void MetalBuffer::read(void* dst, size_t n, size_t offset) const {
  if (offset > bytes_ || n > bytes_ - offset) throw UsageError("metal: read past the end of a buffer");
  std::memcpy(dst, static_cast<const uint8_t*>(buffer_.contents) + offset, n);
}

// A blit, so that in cold mode the fill goes through the GPU's own caches; macOS
// blits take whole 4-byte words only, so other sizes are set from the CPU.
void MetalBuffer::fill(uint8_t value) {
  if (bytes_ % 4 != 0) {
    std::memset(buffer_.contents, value, bytes_);
    return;
  }
  @autoreleasepool {
    id<MTLCommandBuffer> cb = new_command_buffer(*ctx_, "filling a buffer");
    encode_fill(cb, value);
    [cb commit];
    [cb waitUntilCompleted];
    check_completed(cb, "filling a buffer");
  }
}

// Encoders are nullable in Metal's headers: a nil one would drop the fill silently.
static id<MTLBlitCommandEncoder> blit_encoder(id<MTLCommandBuffer> cb) {
  id<MTLBlitCommandEncoder> blit = [cb blitCommandEncoder];
  if (!blit) throw DeviceError("metal: the command buffer gave no blit encoder");
  return blit;
}

void MetalBuffer::encode_fill(id<MTLCommandBuffer> cb, uint8_t value, id<MTLBuffer> next) const {
  NSUInteger words = bytes_ & ~size_t(3);  // a flush need not reach the last odd bytes
  if (words == 0) return;
  id<MTLBlitCommandEncoder> blit = blit_encoder(cb);
  [blit fillBuffer:buffer_ range:NSMakeRange(0, words) value:value];
  [blit endEncoding];
  if (!next) return;
  // next's first word copied out after the fill and back again, unchanged: a write
  // to `next` that waits for the fill and that the launch must wait for. Separate
  // passes, since Metal orders passes (not commands within one) by what they share.
  for (bool back : {false, true}) {
    blit = blit_encoder(cb);
    [blit copyFromBuffer:(back ? buffer_ : next) sourceOffset:0 toBuffer:(back ? next : buffer_)
       destinationOffset:0 size:4];
    [blit endEncoding];
  }
}

MetalBuffer& buffer_arg(const Launch& launch, size_t index) {
  const std::string& who = launch.kernel->label();
  if (index >= launch.args.size())
    throw UsageError(who + ": argument " + std::to_string(index) + " is missing (" +
                     std::to_string(launch.args.size()) + " given)");
  const auto* held = std::get_if<std::shared_ptr<Buffer>>(&launch.args[index]);
  if (!held) throw UsageError(who + ": argument " + std::to_string(index) + " must be a buffer, not bytes");
  auto* buffer = dynamic_cast<MetalBuffer*>(held->get());
  if (!buffer) throw UsageError(who + ": argument " + std::to_string(index) + " is not a Metal buffer");
  return *buffer;
}

id<MTLComputePipelineState> build_pipeline(const Context& ctx, const std::string& source, const std::string& entry,
                                           const std::vector<Define>& defines, const std::string& label) {
  NSMutableDictionary<NSString*, NSObject*>* macros = [NSMutableDictionary dictionary];
  for (const auto& d : defines) {
    // Integers go as NSNumber, whose meaning as a macro body is unambiguous.
    size_t digits = d.value.size() - (d.value.rfind('-', 0) == 0 ? 1 : 0);
    bool integer = digits >= 1 && digits <= 18 &&
                   d.value.find_first_not_of("0123456789", d.value.size() - digits) == std::string::npos;
    NSObject* value = integer ? (NSObject*)[NSNumber numberWithLongLong:std::stoll(d.value)]
                              : (NSObject*)ns(d.value, "a define's value");
    [macros setObject:value forKey:ns(d.name, "a define's name")];
  }
  MTLCompileOptions* options = [[MTLCompileOptions alloc] init];
  options.preprocessorMacros = macros;
  NSError* error = nil;
  id<MTLLibrary> library = [ctx.device newLibraryWithSource:ns(source, "the kernel source") options:options
                                                      error:&error];
  if (!library)
    throw CompileError("metal: compiling " + label + " failed", error ? str(error.localizedDescription) : "");
  return pipeline_of(ctx, library, entry, label);
}

void encode_dispatch(id<MTLCommandBuffer> cb, id<MTLComputePipelineState> pipeline, const std::vector<Binding>& args,
                     MTLSize groups, MTLSize threads) {
  id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoder];
  if (!enc) throw DeviceError("metal: the command buffer gave no compute encoder");
  [enc setComputePipelineState:pipeline];
  for (NSUInteger i = 0; i < args.size(); ++i) {
    if (args[i].buffer)
      [enc setBuffer:args[i].buffer offset:0 atIndex:i];
    else
      [enc setBytes:args[i].bytes.data() length:args[i].bytes.size() atIndex:i];
  }
  [enc dispatchThreadgroups:groups threadsPerThreadgroup:threads];
  [enc endEncoding];
}

}  // namespace mb::metal
