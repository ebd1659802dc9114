// Metal backend: every device Metal reports, MSL compiled at run time, buffers in
// shared or private storage (metal_buffer.mm), and GPU time from timestamp counters
// sampled at the passes around each launch where the GPU samples them at stage
// boundaries, or from each launch's own command buffer where it does not
// (metal_timing.mm, metal_held.mm). Warm-up, sample counts, statistics and launch
// checks stay in csrc/core. Errors start with "[metal::operation]".
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/registry.h"
#include "metal/metal_internal.h"

namespace mb::metal {

std::string where(const char* operation, const std::string& who) {
  return std::string("[metal::") + operation + "] " + (who.empty() ? std::string() : who + ": ");
}

std::string str(NSString* s) {
  const char* utf8 = s ? s.UTF8String : nullptr;
  return utf8 ? std::string(utf8) : std::string();
}

namespace {

NSString* ns(const std::string& s, const char* operation, const std::string& who, const char* what) {
  NSString* out = [[NSString alloc] initWithBytes:s.data() length:s.size() encoding:NSUTF8StringEncoding];
  if (!out) throw UsageError(where(operation, who) + what + " is not valid UTF-8");
  return out;
}

// Metal reports no cache size. An Apple GPU's last level is the system-level cache
// it shares with the CPU, whose size Apple does not publish; 128 MiB is above every
// figure reported so far (96 MB on Ultra parts). Cold inputs rotate through enough
// copies that none is found in a cache this large.
constexpr uint64_t kCacheBoundBytes = 128ull << 20;
// Launches one timed_batch takes: one command buffer holds them all.
constexpr size_t kMaxHeld = 4096;
constexpr size_t kView = 256;  // DeviceInfo::view_alignment; metal_buffer.mm checks it

// METALBENCH_METAL_TIMING: "auto" (default: counters where the probe passes),
// "counters" (fail where they cannot be used) or "command-buffer".
enum class TimingMode { automatic, counters, command_buffers };
// METALBENCH_METAL_STORAGE: "auto" (default: shared with unified memory, private
// without), "shared" or "private" (to test the staging path on Apple silicon).
enum class StorageMode { automatic, shared, private_ };

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

TimingMode timing_mode() {
  std::string v = env("METALBENCH_METAL_TIMING");
  if (v.empty() || v == "auto") return TimingMode::automatic;
  if (v == "counters") return TimingMode::counters;
  if (v == "command-buffer") return TimingMode::command_buffers;
  throw UsageError(where("open", "") + "METALBENCH_METAL_TIMING must be 'auto', 'counters' or 'command-buffer', not '" +
                   v + "'");
}

StorageMode storage_mode() {
  std::string v = env("METALBENCH_METAL_STORAGE");
  if (v.empty() || v == "auto") return StorageMode::automatic;
  if (v == "shared") return StorageMode::shared;
  if (v == "private") return StorageMode::private_;
  throw UsageError(where("open", "") + "METALBENCH_METAL_STORAGE must be 'auto', 'shared' or 'private', not '" + v +
                   "'");
}

bool private_storage(id<MTLDevice> d, StorageMode mode) {
  if (mode == StorageMode::automatic) return !d.hasUnifiedMemory;
  return mode == StorageMode::private_;
}

// What a device offers before it is opened (the probe runs at open).
bool stage_counters(id<MTLDevice> d) {
  if (![d supportsCounterSampling:MTLCounterSamplingPointAtStageBoundary]) return false;
  for (id<MTLCounterSet> set in d.counterSets) {
    if ([set.name isEqualToString:MTLCommonCounterSetTimestamp]) return true;
  }
  return false;
}

const char* const kCountersSource =
    "Metal stage-boundary counters: each launch from the end of the pass before it to the start of the pass after "
    "it (MTLCounterSampleBuffer), ";
const char* const kBuffersSource =
    "Metal command buffers: each launch in a command buffer of its own, GPUEndTime - GPUStartTime (includes the "
    "command buffer's fixed cost); ";

// The system default device first (the one an app would get), then every other.
std::vector<id<MTLDevice>> enumerate() {
  std::vector<id<MTLDevice>> out;
  pooled([&] {
    id<MTLDevice> preferred = MTLCreateSystemDefaultDevice();
    if (preferred) out.push_back(preferred);
    NSArray<id<MTLDevice>>* all = MTLCopyAllDevices();
    for (id<MTLDevice> d in all) {
      if (!preferred || d.registryID != preferred.registryID) out.push_back(d);
    }
  });
  return out;
}

// `timing` and `storage` name what the device will use; they go into the driver
// string, which is part of every result key, so that results of one way of timing
// are never reused for another.
DeviceInfo describe(id<MTLDevice> d, int index, const std::string& timing, const std::string& timing_source,
                    bool private_buffers) {
  DeviceInfo i;
  pooled([&] {
    i.backend = "metal";
    i.index = index;
    i.name = str(d.name);
    i.vendor = i.name.substr(0, i.name.find(' '));  // "Apple", or "AMD" / "Intel" on Intel Macs
    i.driver = "Metal, macOS " + str([NSProcessInfo processInfo].operatingSystemVersionString) + "; " + timing +
               (private_buffers ? "; private storage" : "");
    i.compute_units = 0;  // Metal reports no core count
    i.memory_bytes = d.recommendedMaxWorkingSetSize;
    i.cache_bytes = kCacheBoundBytes;
    i.max_group_size = static_cast<int>(d.maxThreadsPerThreadgroup.width);
    i.unified_memory = d.hasUnifiedMemory;
    i.view_alignment = kView;
    i.max_held_launches = kMaxHeld;
    i.clock_source = "none: Metal exposes no GPU clock";
    i.timing_source = timing_source;
    // simdgroup_matrix (MSL 2.4 and 6.7): GPUs of the Apple7 family (A14, M1) and later.
    i.matrix_unit = [d supportsFamily:MTLGPUFamilyApple7];
    i.matrix_unit_detail = i.matrix_unit ? "simdgroup_matrix 8x8 (GPU family Apple7 or later)"
                                         : "none: simdgroup_matrix needs a GPU of the Apple7 family (A14, M1) or "
                                           "later";
    // MSL's bfloat type (MSL 3.1) and MPSDataTypeBFloat16 both arrive with macOS 14.
    if (@available(macOS 14.0, *)) {
      i.bfloat16 = true;
      i.bfloat16_detail = "MSL 3.1 bfloat and MPSDataTypeBFloat16 (macOS 14 or later)";
    } else {
      i.bfloat16 = false;
      i.bfloat16_detail = "none: MSL's bfloat (MSL 3.1) and MPS's bfloat16 need macOS 14, this is macOS " +
                          str([NSProcessInfo processInfo].operatingSystemVersionString);
    }
  });
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

MTLSize size3(const std::array<uint32_t, 3>& d) { return MTLSizeMake(d[0], d[1], d[2]); }

class PipelineLaunch final : public PreparedLaunch {
 public:
  PipelineLaunch(id<MTLComputePipelineState> pipeline, std::vector<Binding> args, MTLSize groups, MTLSize threads)
      : pipeline_(pipeline), args_(std::move(args)), groups_(groups), threads_(threads) {
    for (const Binding& b : args_) add_resource(b.buffer);
  }
  bool single_dispatch() const override { return true; }
  void dispatch(id<MTLComputeCommandEncoder> enc) const override {
    encode_dispatch(enc, pipeline_, args_, groups_, threads_);
  }
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
  PipelineKernel(std::shared_ptr<Context> ctx, id<MTLComputePipelineState> pipeline, std::string label)
      : ctx_(std::move(ctx)), pipeline_(pipeline), label_(std::move(label)) {}
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return pipeline_.maxTotalThreadsPerThreadgroup; }
  size_t simd_width() const override { return pipeline_.threadExecutionWidth; }

  std::shared_ptr<const PreparedLaunch> prepare(const Launch& launch) override {
    std::vector<Binding> args;
    for (size_t i = 0; i < launch.args.size(); ++i) {
      if (std::holds_alternative<std::shared_ptr<Buffer>>(launch.args[i])) {
        MetalBuffer& b = buffer_arg(*ctx_, launch, i);
        args.push_back({b.handle(), b.offset(), {}});
        continue;
      }
      const auto& bytes = std::get<std::vector<uint8_t>>(launch.args[i]);
      // setBytes:length:atIndex: is for data under 4 KiB; an empty one binds nothing.
      if (bytes.empty() || bytes.size() >= 4096)
        throw UsageError(where("launch", label_) + "argument " + std::to_string(i) + " passes " +
                         std::to_string(bytes.size()) + " bytes by value; Metal takes 1 to 4095");
      args.push_back({nil, 0, bytes});
    }
    return std::make_shared<PipelineLaunch>(pipeline_, std::move(args), size3(launch.groups),
                                            size3(launch.threads));
  }

 private:
  std::shared_ptr<Context> ctx_;
  id<MTLComputePipelineState> pipeline_;
  std::string label_;
};

id<MTLComputePipelineState> pipeline_of(const Context& ctx, id<MTLLibrary> library, const std::string& entry,
                                        const std::string& label) {
  id<MTLFunction> fn = [library newFunctionWithName:ns(entry, "compile", label, "the entry name")];
  if (!fn) throw CompileError(where("compile", label) + "no kernel named '" + entry + "'", "");
  NSError* error = nil;
  id<MTLComputePipelineState> pipeline = [ctx.device newComputePipelineStateWithFunction:fn error:&error];
  if (!pipeline)
    throw CompileError(where("compile", label) + "building the pipeline failed",
                       error ? str(error.localizedDescription) : "");
  return pipeline;
}

MetalKernel& kernel_of(const Launch& launch) {
  auto* k = dynamic_cast<MetalKernel*>(launch.kernel.get());
  if (!k) throw UsageError(where("launch", launch.kernel->label()) + "was not compiled by the Metal backend");
  return *k;
}

bool same_launch(const Launch& a, const Launch& b) {
  return a.kernel == b.kernel && a.args == b.args && a.groups == b.groups && a.threads == b.threads;
}

class MetalDevice final : public Device {
 public:
  MetalDevice(id<MTLDevice> device, int index, TimingMode timing, StorageMode storage)
      : ctx_(std::make_shared<Context>()) {
    ctx_->device = device;
    ctx_->name = str(device.name);
    ctx_->private_storage = private_storage(device, storage);
    ctx_->queue = [device newCommandQueueWithMaxCommandBufferCount:kQueueDepth];
    if (!ctx_->queue) throw DeviceError(where("open", ctx_->name) + "the device gave no command queue");
    ctx_->gate = [device newSharedEvent];
    if (!ctx_->gate) throw DeviceError(where("open", ctx_->name) + "the device gave no shared event");
    ctx_->scratch = [device newBufferWithLength:16 options:MTLResourceStorageModeShared];
    if (!ctx_->scratch) throw DeviceError(where("open", ctx_->name) + "the device gave no 16-byte buffer");
    ctx_->join = build_join_pipeline(*ctx_);
    std::string why = "METALBENCH_METAL_TIMING=command-buffer";
    if (timing != TimingMode::command_buffers) {
      counters_ = Counters::open(*ctx_, &why);
      if (!counters_ && timing == TimingMode::counters)
        throw UnavailableError(where("open", ctx_->name) + "METALBENCH_METAL_TIMING=counters, but " + why);
    }
    if (counters_)
      info_ = describe(device, index, "pass counters", kCountersSource + counters_->describe_rate(),
                       ctx_->private_storage);
    else
      info_ = describe(device, index, "command-buffer times", kBuffersSource + why, ctx_->private_storage);
  }

  const DeviceInfo& info() const override { return info_; }

  std::shared_ptr<Kernel> compile(const std::string& source, const std::string& entry,
                                  const std::vector<Define>& defines, const std::string& label) override {
    return pooled([&]() -> std::shared_ptr<Kernel> {
      return std::make_shared<PipelineKernel>(ctx_, build_pipeline(*ctx_, source, entry, defines, label), label);
    });
  }

  std::shared_ptr<Kernel> load(const std::string& path, const std::string& entry,
                               const std::string& label) override {
    return pooled([&]() -> std::shared_ptr<Kernel> {
      NSError* error = nil;
      NSURL* url = [NSURL fileURLWithPath:ns(path, "load", label, "the library path")];
      id<MTLLibrary> library = [ctx_->device newLibraryWithURL:url error:&error];
      if (!library)
        throw CompileError(where("load", label) + "loading " + path + " failed",
                           error ? str(error.localizedDescription) : "");
      return std::make_shared<PipelineKernel>(ctx_, pipeline_of(*ctx_, library, entry, label), label);
    });
  }

  std::shared_ptr<Kernel> builtin(const std::string& name, const std::string& label,
                                  const std::vector<Define>& defines, std::shared_ptr<Kernel> first) override {
    if (name != "mps" && name != "mps-gemv")
      throw UsageError(where("builtin", label) + "no vendor library routine '" + name +
                       "'; this backend has 'mps' and 'mps-gemv'");
    // Quantized B on Metal is measured against qnaive: no MPS builtin dequantizes first.
    if (first)
      throw UsageError(where("builtin", label) + "the " + name + " builtin runs no kernel before it (a family's "
                       "`source` beside `builtin`); on Metal a dequantize step has no MPS builtin to feed");
    const Define* dtype = nullptr;
    for (const auto& d : defines)
      if (d.name == "MB_DTYPE") dtype = &d;
    if (!dtype || (dtype->value != "0" && dtype->value != "1" && dtype->value != "2"))
      throw UsageError(where("builtin", label) + "the " + name +
                       " builtin needs the define MB_DTYPE = 0 (float32), 1 (float16) or 2 (bfloat16)");
    if (dtype->value == "2" && !info_.bfloat16)
      throw UnavailableError(where("builtin", label) + "bfloat16: " + info_.bfloat16_detail);
    return pooled([&]() -> std::shared_ptr<Kernel> {
      return make_mps_kernel(ctx_, name, label, dtype->value[0] - '0');
    });
  }

  std::shared_ptr<Buffer> allocate(size_t bytes) override {
    return pooled([&]() -> std::shared_ptr<Buffer> { return std::make_shared<MetalBuffer>(ctx_, bytes); });
  }

  void run(const Launch& launch) override {
    const std::string who = where("launch", launch.kernel->label());
    std::lock_guard<std::mutex> hold(ctx_->mutex);
    pooled([&] {
      auto prepared = kernel_of(launch).prepare(launch);
      id<MTLCommandBuffer> cb = new_command_buffer(*ctx_, who);
      encode_launch(cb, *prepared);
      submit_and_wait(cb, who);
    });
  }

  std::vector<uint64_t> timed(const std::vector<Launch>& launches) override {
    if (launches.empty()) throw UsageError(where("timing", ctx_->name) + "nothing to launch");
    const std::string who = where("timing", launches.front().kernel->label());
    std::lock_guard<std::mutex> hold(ctx_->mutex);
    return pooled([&] {
      std::vector<std::shared_ptr<const PreparedLaunch>> keep;
      return timed_run(*ctx_, counters_.get(), prepare_all(launches, keep), who);
    });
  }

  uint64_t timed_batch(const std::vector<Launch>& launches) override {
    if (launches.empty()) throw UsageError(where("timing", ctx_->name) + "nothing to launch");
    const std::string who = where("timing", launches.front().kernel->label());
    if (launches.size() > kMaxHeld)
      throw UsageError(who + "a batch of " + std::to_string(launches.size()) + " launches exceeds the " +
                       std::to_string(kMaxHeld) + " this backend holds in one command buffer");
    std::lock_guard<std::mutex> hold(ctx_->mutex);
    return pooled([&] {
      std::vector<std::shared_ptr<const PreparedLaunch>> keep;
      return timed_batch_run(*ctx_, counters_.get(), prepare_all(launches, keep), who);
    });
  }

 private:
  // Each launch prepared once; equal launches (a round cycles over a few slots)
  // share one prepared launch.
  std::vector<const PreparedLaunch*> prepare_all(const std::vector<Launch>& launches,
                                                 std::vector<std::shared_ptr<const PreparedLaunch>>& keep) {
    std::vector<const Launch*> seen;
    std::vector<const PreparedLaunch*> out;
    out.reserve(launches.size());
    for (const Launch& l : launches) {
      size_t k = 0;
      while (k < seen.size() && !same_launch(*seen[k], l)) ++k;
      if (k == seen.size()) {
        seen.push_back(&l);
        keep.push_back(kernel_of(l).prepare(l));
      }
      out.push_back(keep[k].get());
    }
    return out;
  }

  std::shared_ptr<Context> ctx_;
  DeviceInfo info_;
  std::unique_ptr<Counters> counters_;
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
    TimingMode timing = timing_mode();
    StorageMode storage = storage_mode();
    auto found = enumerate();
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < found.size(); ++i) {
      id<MTLDevice> d = found[i];
      bool counters = timing != TimingMode::command_buffers && stage_counters(d);
      out.push_back(describe(d, static_cast<int>(i), counters ? "pass counters" : "command-buffer times",
                             counters ? std::string(kCountersSource) + "if the probe at open passes"
                                      : std::string(kBuffersSource) +
                                            (timing == TimingMode::command_buffers
                                                 ? "METALBENCH_METAL_TIMING=command-buffer"
                                                 : "the GPU does not sample timestamps at stage boundaries"),
                             private_storage(d, storage)));
    }
    return out;
  }
  std::shared_ptr<Device> open(int index) override {
    TimingMode timing = timing_mode();
    StorageMode storage = storage_mode();
    auto found = enumerate();
    if (index < 0 || size_t(index) >= found.size())
      throw UsageError(where("open", "") + "no device " + std::to_string(index) + " (" +
                       std::to_string(found.size()) + " found)");
    return std::make_shared<MetalDevice>(found[index], index, timing, storage);
  }
};

// Metal is the first choice of `--backend auto` wherever it is built (Apple only).
const BackendRegistration kRegistration("metal", 0, [] { return std::make_unique<MetalBackend>(); });

}  // namespace

id<MTLCommandBuffer> new_command_buffer(const Context& ctx, const std::string& who) {
  id<MTLCommandBuffer> cb = [ctx.queue commandBuffer];
  if (!cb) throw DeviceError(who + "the queue gave no command buffer");
  return cb;
}

void check_completed(id<MTLCommandBuffer> cb, const std::string& who) {
  MTLCommandBufferStatus s = cb.status;
  if (s == MTLCommandBufferStatusCompleted) return;
  std::string why = cb.error ? str(cb.error.localizedDescription) : "no error reported";
  throw DeviceError(who + "command buffer ended with status " + status_name(s) + " (" +
                    std::to_string(static_cast<unsigned long>(s)) + "): " + why);
}

void submit_and_wait(id<MTLCommandBuffer> cb, const std::string& who) {
  [cb commit];
  [cb waitUntilCompleted];
  check_completed(cb, who);
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
                              : (NSObject*)ns(d.value, "compile", label, "a define's value");
    [macros setObject:value forKey:ns(d.name, "compile", label, "a define's name")];
  }
  MTLCompileOptions* options = [[MTLCompileOptions alloc] init];
  options.preprocessorMacros = macros;
  NSError* error = nil;
  id<MTLLibrary> library = [ctx.device newLibraryWithSource:ns(source, "compile", label, "the kernel source")
                                                    options:options
                                                      error:&error];
  if (!library)
    throw CompileError(where("compile", label) + "the Metal compiler failed", error ? str(error.localizedDescription) : "");
  return pipeline_of(ctx, library, entry, label);
}

void encode_dispatch(id<MTLComputeCommandEncoder> enc, id<MTLComputePipelineState> pipeline,
                     const std::vector<Binding>& args, MTLSize groups, MTLSize threads) {
  [enc setComputePipelineState:pipeline];
  for (NSUInteger i = 0; i < args.size(); ++i) {
    if (args[i].buffer)
      [enc setBuffer:args[i].buffer offset:args[i].offset atIndex:i];
    else
      [enc setBytes:args[i].bytes.data() length:args[i].bytes.size() atIndex:i];
  }
  [enc dispatchThreadgroups:groups threadsPerThreadgroup:threads];
}

void encode_dispatch(id<MTLCommandBuffer> cb, id<MTLComputePipelineState> pipeline, const std::vector<Binding>& args,
                     MTLSize groups, MTLSize threads) {
  id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoder];
  if (!enc) throw DeviceError(where("launch", "encode") + "the command buffer gave no compute encoder");
  encode_dispatch(enc, pipeline, args, groups, threads);
  [enc endEncoding];
}

}  // namespace mb::metal
