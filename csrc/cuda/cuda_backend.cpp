// CUDA backend: the driver API and NVRTC opened at run time (cuda_loader.cpp), one
// non-blocking stream per device, compiled kernels cached on disk, GPU time from
// event pairs around launches enqueued behind a gate, and the SM clock from NVML.
// Errors start with "[cuda::operation]".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/registry.h"
#include "cuda_internal.h"
#include "kernel_cache.h"
#include "nvml.h"

namespace mb::cuda {
namespace {

// Launches per held run of timed(), which records two events per launch. The
// driver's queue of pending work is finite: a run far larger than this could block
// cuLaunchKernel while the gate holds the stream.
constexpr size_t kBatch = 64;
// Launches in one timed_batch(), which records only two events in all; the core
// keeps batches within DeviceInfo::max_held_launches. Also the kernels (queue_cost) one
// held run may enqueue: a batch of launches that enqueue several is timed in runs.
constexpr size_t kMaxHeld = 1024;
// A batch whose enqueueing takes longer than this is released anyway: nothing may wait
// on a gate the host cannot open. Launches are never run again after that (an output
// that a launch reads, C with beta != 0, would take the product twice): timed() keeps
// its per-launch times, timed_batch() fails.
constexpr auto kGateTimeout = std::chrono::seconds(2);

// The fallback gate where stream memory operations are missing: one thread spins
// on the mapped word until it reaches the generation (PTX for any sm_50 or later).
const char* const kSpinPtx = R"(
.version 6.0
.target sm_50
.address_size 64
.visible .entry mb_gate_spin(.param .u64 flag, .param .u32 want)
{
  .reg .pred p;
  .reg .b32 v, w, d;
  .reg .b64 a;
  ld.param.u64 a, [flag];
  ld.param.u32 w, [want];
SPIN:
  ld.volatile.global.u32 v, [a];
  sub.s32 d, v, w;
  setp.lt.s32 p, d, 0;
  @p bra SPIN;
  ret;
}
)";

std::string pci_bus_id(CUdevice dev) {
  char id[64] = {};
  check(driver().cuDeviceGetPCIBusId(id, sizeof id - 1, dev), "device", "cuDeviceGetPCIBusId");
  return id;
}

int attribute(CUdevice dev, CUdevice_attribute what) {
  int v = 0;
  check(driver().cuDeviceGetAttribute(&v, what, dev), "device", "cuDeviceGetAttribute");
  return v;
}

std::string version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

// The one compute capability (as 10 major + minor) with sm_90a's instructions, wgmma.mma_async.
constexpr int kHopperA = 90;
// Whether NVRTC compiles for sm_90a here (pick_target).
bool hopper_a(int cc, int nvrtc_major) { return cc == kHopperA && nvrtc_major >= 12; }

DeviceInfo describe(CUdevice dev, int index) {
  DeviceInfo i;
  i.backend = "cuda";
  i.index = index;
  char name[256] = {};
  check(driver().cuDeviceGetName(name, sizeof name - 1, dev), "device", "cuDeviceGetName");
  i.name = name;
  i.vendor = "NVIDIA";
  std::string d = "CUDA " + version_string(driver_load().version);
  std::string kmod = kernel_driver_version();
  if (!kmod.empty()) d += " (driver " + kmod + ")";
  const NvrtcLoad& rtc = nvrtc_load();
  if (rtc.error.empty()) d += ", NVRTC " + std::to_string(rtc.major) + "." + std::to_string(rtc.minor);
  const CublasLoad& blas = cublas_load();
  d += blas.error.empty() ? ", cuBLAS " + std::to_string(blas.version / 10000) + "." +
                                std::to_string((blas.version / 100) % 100) + "." + std::to_string(blas.version % 100)
                          : ", no cuBLAS";
  i.driver = d;
  i.compute_units = attribute(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  size_t mem = 0;
  check(driver().cuDeviceTotalMem(&mem, dev), "device", "cuDeviceTotalMem");
  i.memory_bytes = mem;
  i.cache_bytes = static_cast<uint64_t>(attribute(dev, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE));
  i.max_group_size = attribute(dev, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  i.unified_memory = attribute(dev, CU_DEVICE_ATTRIBUTE_INTEGRATED) != 0;
  i.view_alignment = 256;  // cuMemAlloc's alignment, enough for every vector load
  // The matrix tile's float16 path is mma.sync.aligned.m16n8k16 (and cp.async, ldmatrix):
  // sm_80 and later (kernels/include/cuda.h).
  const int cc_major = attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  const int cc_minor = attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  const int cc_number = 10 * cc_major + cc_minor;
  const std::string cc = std::to_string(cc_major) + "." + std::to_string(cc_minor);
  i.matrix_unit = cc_major >= 8;
  i.matrix_unit_detail = i.matrix_unit ? "tensor cores: mma.sync m16n8k16 f16 -> f32 (compute capability " + cc + ")"
                                       : "none: the tile's mma.sync m16n8k16 needs compute capability 8.0, this "
                                         "GPU has " + cc;
  // wgmma.mma_async is sm_90a's: compute capability 9.0 exactly (later GPUs have other
  // instructions), which compile() targets as sm_90a where NVRTC knows it (pick_target).
  i.warpgroup_mma = hopper_a(cc_number, rtc.error.empty() ? rtc.major : 0);
  i.warpgroup_mma_detail =
      i.warpgroup_mma           ? "wgmma.mma_async m64nNk16 f16 -> f32 (sm_90a, compute capability 9.0)"
      : cc_number != kHopperA   ? "none: wgmma.mma_async needs compute capability 9.0 (sm_90a), this GPU has " + cc
                                : "none: compiling for sm_90a needs NVRTC 12 or later";
  i.thread_block_clusters = cc_major >= 9;
  i.thread_block_clusters_detail =
      i.thread_block_clusters ? "__cluster_dims__ and distributed shared memory (compute capability " + cc + ")"
                              : "none: thread-block clusters need compute capability 9.0, this GPU has " + cc;
  // bfloat16: the prelude's store (cvt.rn.bf16.f32), the tile's bf16 mma and cuBLAS's
  // CUDA_R_16BF GEMMs are sm_80 and later.
  i.bfloat16 = cc_major >= 8;
  i.bfloat16_detail = i.bfloat16 ? "__nv_bfloat16 layout, cvt.rn.bf16.f32, mma.sync m16n8k16 bf16 -> f32 (compute "
                                   "capability " + cc + ")"
                                 : "none: bfloat16 conversions and mma need compute capability 8.0, this GPU has " + cc;
  i.max_held_launches = kMaxHeld;
  Nvml nvml(pci_bus_id(dev));
  i.clock_source = nvml.source();
  i.timing_source = "CUDA events (cuEventRecord around launches, cuEventElapsedTime)";
  i.peak_bandwidth = nvml.peak_bandwidth();
  if (i.peak_bandwidth > 0) {
    i.peak_bandwidth_source = "NVML: maximum memory clock x bus width x 2 (double data rate)";
  } else {
    // kHz and bits; 0 where the driver no longer reports them.
    double khz = attribute(dev, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
    double bits = attribute(dev, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
    i.peak_bandwidth = 2.0 * khz * 1e3 * bits / 8.0;
    if (i.peak_bandwidth > 0) i.peak_bandwidth_source = "CUDA: memory clock x bus width x 2 (double data rate)";
  }
  return i;
}

// The NVRTC target for a device of compute capability `cc` (e.g. 90): its own
// machine code where NVRTC knows the architecture, else the newest machine code of
// the same major version that still runs there, else PTX of the newest
// architecture NVRTC knows, which the driver compiles for the device. Compute capability
// 9.0 gets sm_90a (compute_90a) from NVRTC 12 on (`hopper_a`): the same code plus the
// architecture-specific instructions (wgmma) of that one GPU generation, the device's.
struct Target {
  std::string option;
  bool ptx;
};

Target pick_target(int cc, const std::vector<int>& archs, int nvrtc_major) {
  const std::string suffix = hopper_a(cc, nvrtc_major) ? "a" : "";
  if (archs.empty()) return {"--gpu-architecture=compute_" + std::to_string(cc) + suffix, true};
  int best_sm = 0, best_ptx = 0;
  for (int a : archs) {
    if (a == cc) return {"--gpu-architecture=sm_" + std::to_string(a) + suffix, false};
    if (a / 10 == cc / 10 && a < cc) best_sm = std::max(best_sm, a);
    if (a <= cc) best_ptx = std::max(best_ptx, a);
  }
  if (best_sm) return {"--gpu-architecture=sm_" + std::to_string(best_sm), false};
  if (best_ptx) return {"--gpu-architecture=compute_" + std::to_string(best_ptx), true};
  return {"--gpu-architecture=compute_" + std::to_string(*std::min_element(archs.begin(), archs.end())), true};
}

// The module global in which a kernel states the dynamic group memory its launches need
// (kernels/include/cuda.h, MB_DYNAMIC_SHARED).
constexpr const char* kDynamicShared = "mb_dynamic_shared_bytes";

class CompiledKernel final : public CuKernel {
 public:
  // With the context current and its lock held (the module's global is read on its stream).
  CompiledKernel(std::shared_ptr<Context> ctx, CUmodule module, CUfunction fn, std::string label)
      : ctx_(std::move(ctx)), module_(module), fn_(fn), label_(std::move(label)) {
    int v = 0;
    check(driver().cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn_), "compile",
          label_ + ": cuFuncGetAttribute");
    max_threads_ = static_cast<size_t>(v);
    CUdeviceptr global = 0;
    size_t size = 0;
    if (driver().cuModuleGetGlobal(&global, &size, module_, kDynamicShared) == CUDA_SUCCESS && size == 4) {
      uint32_t bytes = 0;
      check(driver().cuMemcpyDtoHAsync(&bytes, global, 4, ctx_->stream), "compile", label_ + ": reading " +
            std::string(kDynamicShared));
      check(driver().cuStreamSynchronize(ctx_->stream), "compile", label_ + ": reading " + std::string(kDynamicShared));
      int most = 0;
      check(driver().cuDeviceGetAttribute(&most, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, ctx_->device),
            "compile", label_ + ": cuDeviceGetAttribute");
      if (bytes > static_cast<uint32_t>(most) ||
          driver().cuFuncSetAttribute(fn_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(bytes)) !=
              CUDA_SUCCESS) {
        driver().cuModuleUnload(module_);
        throw CompileError("[cuda::compile] " + label_ + ": the kernel asks for " + std::to_string(bytes) +
                               " bytes of dynamic group memory, a block here may have " + std::to_string(most),
                           "");
      }
      shared_bytes_ = bytes;
    }
    // Parameter sizes, where the driver can tell (CUDA 12.4+), to refuse a launch
    // whose arguments do not match the kernel instead of reading past them.
    if (driver().cuFuncGetParamInfo) {
      for (size_t i = 0; i < 64; ++i) {
        size_t offset = 0, size = 0;
        if (driver().cuFuncGetParamInfo(fn_, i, &offset, &size) != CUDA_SUCCESS) break;
        param_sizes_.push_back(size);
      }
      known_params_ = true;
    }
  }
  ~CompiledKernel() override {
    ctx_->make_current();
    driver().cuModuleUnload(module_);
  }
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return max_threads_; }

  std::function<void()> prepare(const Launch& launch) override {
    const size_t n = launch.args.size();
    auto ptrs = std::make_shared<std::vector<CUdeviceptr>>(n, 0);
    auto params = std::make_shared<std::vector<void*>>(n);
    // Holds the buffers and the bytes, so that nothing is freed while the closure may run.
    auto hold = std::make_shared<std::vector<Arg>>(launch.args);
    collect(*hold, ptrs->data(), params->data());
    auto g = launch.groups;
    auto t = launch.threads;
    CUfunction fn = fn_;
    CUstream stream = ctx_->stream;
    const unsigned shared = shared_bytes_;
    const std::string* who = &label_;
    return [=] {
      (void)hold;
      (void)ptrs;
      check(driver().cuLaunchKernel(fn, g[0], g[1], g[2], t[0], t[1], t[2], shared, stream, params->data(), nullptr),
            "launch", *who + ": cuLaunchKernel");
    };
  }

  void launch(const Launch& l) override {
    constexpr size_t kMax = 32;
    if (l.args.size() > kMax) return CuKernel::launch(l);
    CUdeviceptr ptrs[kMax];
    void* params[kMax];
    collect(l.args, ptrs, params);
    check(driver().cuLaunchKernel(fn_, l.groups[0], l.groups[1], l.groups[2], l.threads[0], l.threads[1],
                                  l.threads[2], shared_bytes_, ctx_->stream, params, nullptr),
          "launch", label_ + ": cuLaunchKernel");
  }

 private:
  // Kernel parameters for `args`: buffers by device address (in `ptrs`), bytes in place.
  void collect(const std::vector<Arg>& args, CUdeviceptr* ptrs, void** params) const {
    const size_t n = args.size();
    if (known_params_ && n != param_sizes_.size())
      throw UsageError("[cuda::launch] " + label_ + ": launch has " + std::to_string(n) +
                       " arguments, the kernel takes " + std::to_string(param_sizes_.size()));
    for (size_t i = 0; i < n; ++i) {
      if (const auto* held = std::get_if<std::shared_ptr<Buffer>>(&args[i])) {
        auto* buf = dynamic_cast<CuBuffer*>(held->get());
        if (!buf)
          throw UsageError("[cuda::launch] " + label_ + ": argument " + std::to_string(i) + " is not a CUDA buffer");
        if (known_params_ && param_sizes_[i] != sizeof(CUdeviceptr))
          throw UsageError("[cuda::launch] " + label_ + ": argument " + std::to_string(i) +
                           " is a buffer, the kernel's parameter is " + std::to_string(param_sizes_[i]) + " bytes");
        ptrs[i] = buf->ptr();
        params[i] = &ptrs[i];
      } else {
        const auto& bytes = std::get<std::vector<uint8_t>>(args[i]);
        if (known_params_ && param_sizes_[i] != bytes.size())
          throw UsageError("[cuda::launch] " + label_ + ": argument " + std::to_string(i) + " is " +
                           std::to_string(bytes.size()) + " bytes, the kernel's parameter is " +
                           std::to_string(param_sizes_[i]));
        params[i] = const_cast<uint8_t*>(bytes.data());
      }
    }
  }

  std::shared_ptr<Context> ctx_;
  CUmodule module_;
  CUfunction fn_;
  std::string label_;
  size_t max_threads_ = 0;
  unsigned shared_bytes_ = 0;  // dynamic group memory of every launch (MB_DYNAMIC_SHARED)
  std::vector<size_t> param_sizes_;
  bool known_params_ = false;
};

// Releases the gate if the batch is not enqueued in time (see kGateTimeout).
class Watchdog {
 public:
  Watchdog(Context& ctx, uint32_t generation)
      : thread_([this, &ctx, generation] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (!cv_.wait_for(lock, kGateTimeout, [this] { return done_; })) {
            fired_ = true;
            ctx.release(generation);
          }
        }) {}
  // True when the watchdog had to open the gate.
  bool finish() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
    return fired_;
  }
  ~Watchdog() {
    if (thread_.joinable()) finish();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;
};

class CuDevice final : public Device {
 public:
  CuDevice(CUdevice dev, int index) : ctx_(std::make_shared<Context>()), nvml_(pci_bus_id(dev)) {
    const DriverApi& d = driver();
    ctx_->device = dev;
    info_ = describe(dev, index);
    ctx_->cc_major = attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    ctx_->cc_minor = attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    check(d.cuDevicePrimaryCtxRetain(&ctx_->ctx, dev), "open", "cuDevicePrimaryCtxRetain");
    ctx_->make_current();
    check(d.cuStreamCreate(&ctx_->stream, CU_STREAM_NON_BLOCKING), "open", "cuStreamCreate");
    void* host = nullptr;
    check(d.cuMemHostAlloc(&host, 64, CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE), "open", "cuMemHostAlloc");
    ctx_->gate_host = static_cast<volatile uint32_t*>(host);
    *ctx_->gate_host = 0;
    check(d.cuMemHostGetDevicePointer(&ctx_->gate_dev, host, 0), "open", "cuMemHostGetDevicePointer");
    ctx_->gate_wait_value = d.cuStreamWaitValue32 != nullptr;
  }

  const DeviceInfo& info() const override { return info_; }

  std::shared_ptr<Kernel> compile(const std::string& source, const std::string& entry,
                                  const std::vector<Define>& defines, const std::string& label) override {
    const NvrtcLoad& rtc = nvrtc_load();
    nvrtc();  // throws UnavailableError when NVRTC is missing
    const int cc = ctx_->cc_major * 10 + ctx_->cc_minor;
    Target target = pick_target(cc, rtc.archs, rtc.major);
    if (!rtc.api.nvrtcGetCUBIN)
      target = {"--gpu-architecture=compute_" + std::to_string(cc) + (hopper_a(cc, rtc.major) ? "a" : ""), true};
    std::vector<Define> sorted = defines;
    std::stable_sort(sorted.begin(), sorted.end(), [](const Define& a, const Define& b) { return a.name < b.name; });
    std::vector<std::string> options = {target.option, "--std=c++17", "-DMB_NVRTC=1"};
    for (const auto& def : sorted) options.push_back("-D" + def.name + "=" + def.value);

    // Everything that changes the compiled code is part of the key.
    std::string key_text = "metalbench cuda kernel 1\nnvrtc " + std::to_string(rtc.major) + "." +
                           std::to_string(rtc.minor) + "\ndriver " + std::to_string(driver_load().version) +
                           "\nentry " + entry + "\n";
    for (const auto& o : options) key_text += "option " + o + "\n";
    const std::string key = key_text + "source\n" + source;

    // NVRTC runs outside the device's lock, so that threads may compile side by side.
    Image image;
    bool cached = cache_read(key, image) == CacheLookup::hit && image.ptx == target.ptx;
    if (!cached) {
      image = nvrtc_compile(source, label, options, target.ptx);
      cache_write(key, image);
    }
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    ctx_->make_current();
    CUmodule module = nullptr;
    std::string jit_log;
    CUresult rc = load_module(image, &module, &jit_log);
    if (rc != CUDA_SUCCESS && cached) {  // a stale entry that passed its checksum: build it afresh
      image = nvrtc_compile(source, label, options, target.ptx);
      cache_write(key, image);
      rc = load_module(image, &module, &jit_log);
    }
    if (rc != CUDA_SUCCESS)
      throw CompileError("[cuda::compile] " + label + ": loading the module failed: " + cu_error(rc), jit_log);
    CUfunction fn = nullptr;
    rc = driver().cuModuleGetFunction(&fn, module, entry.c_str());
    if (rc != CUDA_SUCCESS) {
      driver().cuModuleUnload(module);
      throw CompileError("[cuda::compile] " + label + ": no kernel named '" + entry + "' (" + cu_error(rc) +
                             "; declare it extern \"C\")",
                         "");
    }
    return std::make_shared<CompiledKernel>(ctx_, module, fn, label);
  }

  std::shared_ptr<Kernel> builtin(const std::string& name, const std::string& label,
                                  const std::vector<Define>& defines, std::shared_ptr<Kernel> first) override {
    if (name != "cublas")
      throw UsageError("[cuda::builtin] " + label + ": no vendor library routine '" + name +
                       "'; the CUDA backend has 'cublas'");
    auto step = std::dynamic_pointer_cast<CuKernel>(first);
    if (first && !step)
      throw UsageError("[cuda::builtin] " + label + ": its first kernel was not compiled by this backend");
    // MB_DTYPE gives the element type; without it the type is read off the buffers.
    int dtype = -1;
    for (const auto& d : defines)
      if (d.name == "MB_DTYPE") {
        if (d.value != "0" && d.value != "1" && d.value != "2")
          throw UsageError("[cuda::builtin] " + label + ": the define MB_DTYPE must be 0 (float32), 1 (float16) or 2 "
                           "(bfloat16), got '" + d.value + "'");
        dtype = d.value[0] - '0';
      }
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    ctx_->make_current();
    return make_cublas_kernel(ctx_, label, dtype, std::move(step));
  }

  std::shared_ptr<Buffer> allocate(size_t bytes) override { return std::make_shared<CuBuffer>(ctx_, bytes); }

  void run(const Launch& launch) override {
    auto* kernel = kernel_of(launch);
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    ctx_->make_current();
    kernel->launch(launch);
    check(driver().cuStreamSynchronize(ctx_->stream), "launch", kernel->label() + ": cuStreamSynchronize");
  }

  std::vector<uint64_t> timed(const std::vector<Launch>& launches) override {
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    ctx_->make_current();
    std::vector<std::function<void()>> enqueue = prepare_all(launches);
    const DriverApi& d = driver();
    std::vector<uint64_t> out;
    out.reserve(launches.size());
    size_t batch = std::min(kBatch, launches.size());
    ctx_->ensure_events(2 * batch);
    while (out.size() < launches.size()) {
      const size_t first = out.size(), n = std::min(batch, launches.size() - first);
      const std::string& who = launches[first].kernel->label();
      bool forced = held([&] {
        for (size_t i = 0; i < n; ++i) {
          check(d.cuEventRecord(ctx_->events[2 * i], ctx_->stream), "timing", who + ": cuEventRecord");
          enqueue[first + i]();
          check(d.cuEventRecord(ctx_->events[2 * i + 1], ctx_->stream), "timing", who + ": cuEventRecord");
        }
      }, who);
      // A forced gate let the GPU wait on the host between launches, outside each launch's
      // events (inside only between the kernels of a launch that enqueues several), so the
      // times stand; later runs are smaller, so that the gate opens in time.
      if (forced) batch = std::max<size_t>(1, batch / 2);
      for (size_t i = 0; i < n; ++i) out.push_back(elapsed(ctx_->events[2 * i], ctx_->events[2 * i + 1], who));
    }
    return out;
  }

  uint64_t timed_batch(const std::vector<Launch>& launches) override {
    if (launches.size() > kMaxHeld)
      throw UsageError("[cuda::timing] " + launches.front().kernel->label() + ": a batch of " +
                       std::to_string(launches.size()) + " launches exceeds the " +
                       std::to_string(kMaxHeld) + " this backend holds at once");
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    ctx_->make_current();
    std::vector<std::function<void()>> enqueue = prepare_all(launches);
    ctx_->ensure_events(2);
    // Runs of launches whose kernels the driver's queue holds at once, each held and timed
    // on its own; every launch runs once.
    const std::string& who = launches.front().kernel->label();
    const DriverApi& d = driver();
    uint64_t total = 0;
    for (size_t from = 0; from < enqueue.size();) {
      size_t to = from, cost = 0;
      while (to < enqueue.size() && (to == from || cost + kernel_of(launches[to])->queue_cost() <= kMaxHeld))
        cost += kernel_of(launches[to++])->queue_cost();
      bool forced = held([&] {
        check(d.cuEventRecord(ctx_->events[0], ctx_->stream), "timing", who + ": cuEventRecord");
        for (size_t i = from; i < to; ++i) enqueue[i]();
        check(d.cuEventRecord(ctx_->events[1], ctx_->stream), "timing", who + ": cuEventRecord");
      }, who);
      if (forced)
        throw DeviceError("[cuda::timing] " + who + ": enqueueing a batch of " + std::to_string(to - from) +
                          " launches took longer than " + std::to_string(kGateTimeout.count()) +
                          " s, so the GPU may have waited for the host");
      total += elapsed(ctx_->events[0], ctx_->events[1], who);
      from = to;
    }
    return total;
  }

  ClockReading clock() override { return nvml_.read(); }

 private:
  CuKernel* kernel_of(const Launch& launch) {
    auto* k = dynamic_cast<CuKernel*>(launch.kernel.get());
    if (!k) throw UsageError("[cuda::launch] " + launch.kernel->label() + " was not compiled by this backend");
    return k;
  }

  // Each launch checked once and made ready to enqueue (context current, mutex held).
  std::vector<std::function<void()>> prepare_all(const std::vector<Launch>& launches) {
    std::vector<std::function<void()>> out;
    out.reserve(launches.size());
    for (const Launch& l : launches) out.push_back(kernel_of(l)->prepare(l));
    return out;
  }

  // Holds the stream, runs `enqueue`, then opens the gate, so that the GPU runs the
  // enqueued work back to back and never waits for the host inside it; waits for
  // the stream. True when the watchdog had to open the gate (see kGateTimeout).
  template <typename Enqueue>
  bool held(Enqueue enqueue, const std::string& who) {
    uint32_t generation = ctx_->hold();
    std::string failure;
    bool forced = false;
    {
      Watchdog watchdog(*ctx_, generation);
      try {
        enqueue();
      } catch (const std::exception& e) {
        failure = e.what();
      }
      ctx_->release(generation);
      forced = watchdog.finish();
    }
    CUresult rc = driver().cuStreamSynchronize(ctx_->stream);
    if (!failure.empty()) throw DeviceError(failure);
    check(rc, "launch", who + ": cuStreamSynchronize");
    return forced;
  }

  uint64_t elapsed(CUevent start, CUevent end, const std::string& who) {
    float ms = 0.0f;
    check(driver().cuEventElapsedTime(&ms, start, end), "timing", who + ": cuEventElapsedTime");
    return static_cast<uint64_t>(std::llround(double(ms) * 1e6));
  }

  Image nvrtc_compile(const std::string& source, const std::string& label, const std::vector<std::string>& options,
                      bool ptx) {
    const NvrtcApi& r = nvrtc();
    nvrtcProgram prog = nullptr;
    nvrtcResult rc = r.nvrtcCreateProgram(&prog, source.c_str(), (label + ".cu").c_str(), 0, nullptr, nullptr);
    if (rc != NVRTC_SUCCESS)
      throw CompileError("[cuda::compile] " + label + ": nvrtcCreateProgram failed: " + r.nvrtcGetErrorString(rc), "");
    std::vector<const char*> argv;
    for (const auto& o : options) argv.push_back(o.c_str());
    rc = r.nvrtcCompileProgram(prog, static_cast<int>(argv.size()), argv.data());
    std::string log;
    size_t n = 0;
    if (r.nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
      log.resize(n);
      r.nvrtcGetProgramLog(prog, log.data());
      while (!log.empty() && log.back() == '\0') log.pop_back();
    }
    if (rc != NVRTC_SUCCESS) {
      r.nvrtcDestroyProgram(&prog);
      throw CompileError("[cuda::compile] " + label + ": failed: " + r.nvrtcGetErrorString(rc), log);
    }
    Image image;
    image.ptx = ptx;
    n = 0;
    nvrtcResult got = ptx ? r.nvrtcGetPTXSize(prog, &n) : r.nvrtcGetCUBINSize(prog, &n);
    if (got == NVRTC_SUCCESS) {
      image.data.resize(n);
      got = ptx ? r.nvrtcGetPTX(prog, image.data.data()) : r.nvrtcGetCUBIN(prog, image.data.data());
    }
    r.nvrtcDestroyProgram(&prog);
    if (got != NVRTC_SUCCESS || image.data.empty())
      throw CompileError("[cuda::compile] " + label + ": reading the compiled code failed", log);
    return image;
  }

  CUresult load_module(const Image& image, CUmodule* module, std::string* log) {
    const DriverApi& d = driver();
    if (!image.ptx) return d.cuModuleLoadData(module, image.data.data());
    std::string ptx = image.data;
    if (ptx.empty() || ptx.back() != '\0') ptx.push_back('\0');
    std::vector<char> buffer(16384, '\0');
    CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void* values[] = {buffer.data(), reinterpret_cast<void*>(static_cast<uintptr_t>(buffer.size()))};
    CUresult rc = d.cuModuleLoadDataEx(module, ptx.data(), 2, opts, values);
    *log = buffer.data();
    return rc;
  }

  DeviceInfo info_;
  std::shared_ptr<Context> ctx_;
  Nvml nvml_;
};

class CuBackend final : public Backend {
 public:
  std::string name() const override { return "cuda"; }

  std::string unavailable_reason() override {
    std::vector<std::string> missing;
    const DriverLoad& d = driver_load();
    if (!d.error.empty()) missing.push_back(d.error);
    const NvrtcLoad& r = nvrtc_load();
    if (!r.error.empty()) missing.push_back(r.error);
    if (missing.empty()) {
      int n = 0;
      CUresult rc = d.api.cuDeviceGetCount(&n);
      if (rc != CUDA_SUCCESS) missing.push_back("cuDeviceGetCount failed: " + cu_error(rc));
      else if (n == 0) missing.push_back("the CUDA driver found no device");
    }
    std::string s;
    for (const auto& m : missing) s += (s.empty() ? "" : "; ") + m;
    return s;
  }

  std::vector<DeviceInfo> devices() override {
    std::vector<DeviceInfo> out;
    int n = count();
    for (int i = 0; i < n; ++i) out.push_back(describe(device(i), i));
    return out;
  }

  std::shared_ptr<Device> open(int index) override {
    int n = count();
    if (index < 0 || index >= n)
      throw UsageError("[cuda::open] no device " + std::to_string(index) + " (" + std::to_string(n) + " found)");
    return std::make_shared<CuDevice>(device(index), index);
  }

 private:
  int count() {
    int n = 0;
    check(driver().cuDeviceGetCount(&n), "device", "cuDeviceGetCount");
    return n;
  }
  CUdevice device(int index) {
    CUdevice dev = 0;
    check(driver().cuDeviceGet(&dev, index), "device", "cuDeviceGet");
    return dev;
  }
};

// CUDA comes after Metal (0) and before OpenCL (20) in `--backend auto`.
const BackendRegistration kRegistration("cuda", 10, [] { return std::make_unique<CuBackend>(); });

}  // namespace

// ---- Context -----------------------------------------------------------------------------

Context::~Context() {
  const DriverLoad& l = driver_load();
  if (!l.error.empty() || !ctx) return;
  const DriverApi& d = l.api;
  make_current();
  if (blas) destroy_blas(blas.get());
  blas.reset();
  for (CUevent e : events) d.cuEventDestroy(e);
  if (spin_module) d.cuModuleUnload(spin_module);
  if (gate_host) d.cuMemFreeHost(const_cast<uint32_t*>(gate_host));
  if (stream) d.cuStreamDestroy(stream);
  d.cuDevicePrimaryCtxRelease(device);
}

void Context::make_current() const {
  const DriverApi& d = driver();
  CUcontext current = nullptr;
  if (d.cuCtxGetCurrent(&current) != CUDA_SUCCESS || current != ctx) check(d.cuCtxSetCurrent(ctx), "context", "cuCtxSetCurrent");
}

uint32_t Context::hold() {
  const DriverApi& d = driver();
  uint32_t generation = ++gate_generation;
  if (gate_wait_value) {
    CUresult rc = d.cuStreamWaitValue32(stream, gate_dev, generation, CU_STREAM_WAIT_VALUE_GEQ);
    if (rc == CUDA_SUCCESS) return generation;
    gate_wait_value = false;  // not supported here: the spin kernel from now on
  }
  if (!spin) {
    check(d.cuModuleLoadData(&spin_module, kSpinPtx), "gate", "loading the gate kernel");
    check(d.cuModuleGetFunction(&spin, spin_module, "mb_gate_spin"), "gate", "cuModuleGetFunction(mb_gate_spin)");
  }
  CUdeviceptr flag = gate_dev;
  uint32_t want = generation;
  void* params[] = {&flag, &want};
  check(d.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, stream, params, nullptr), "gate", "launching the gate kernel");
  return generation;
}

void Context::release(uint32_t generation) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  *gate_host = generation;
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void Context::ensure_events(size_t n) {
  while (events.size() < n) {
    CUevent e = nullptr;
    check(driver().cuEventCreate(&e, CU_EVENT_DEFAULT), "timing", "cuEventCreate");
    events.push_back(e);
  }
}

// ---- Buffers -----------------------------------------------------------------------------

CuBuffer::CuBuffer(std::shared_ptr<Context> ctx, size_t n) : ctx_(std::move(ctx)), bytes_(n) {
  std::lock_guard<std::mutex> guard(ctx_->mutex);
  ctx_->make_current();
  check(driver().cuMemAlloc(&ptr_, n), "allocate", std::to_string(n) + " bytes");
}

CuBuffer::CuBuffer(std::shared_ptr<Context> ctx, size_t n, Held) : ctx_(std::move(ctx)), bytes_(n) {
  check(driver().cuMemAlloc(&ptr_, n), "allocate", std::to_string(n) + " bytes");
}

CuBuffer::CuBuffer(std::shared_ptr<Context> ctx, std::shared_ptr<CuBuffer> parent, size_t offset, size_t n)
    : ctx_(std::move(ctx)), parent_(std::move(parent)), ptr_(parent_->ptr_ + offset), bytes_(n) {}

CuBuffer::~CuBuffer() {
  if (parent_) return;  // a view: the parent frees the memory
  ctx_->make_current();
  driver().cuMemFree(ptr_);
}

void CuBuffer::write(const void* src, size_t n, size_t offset) {
  std::lock_guard<std::mutex> guard(ctx_->mutex);
  ctx_->make_current();
  check(driver().cuMemcpyHtoDAsync(ptr_ + offset, src, n, ctx_->stream), "write", "cuMemcpyHtoDAsync");
  check(driver().cuStreamSynchronize(ctx_->stream), "write", "cuStreamSynchronize");
}

void CuBuffer::read(void* dst, size_t n, size_t offset) const {
  std::lock_guard<std::mutex> guard(ctx_->mutex);
  ctx_->make_current();
  check(driver().cuMemcpyDtoHAsync(dst, ptr_ + offset, n, ctx_->stream), "read", "cuMemcpyDtoHAsync");
  check(driver().cuStreamSynchronize(ctx_->stream), "read", "cuStreamSynchronize");
}

void CuBuffer::fill(uint8_t value) {
  std::lock_guard<std::mutex> guard(ctx_->mutex);
  ctx_->make_current();
  check(driver().cuMemsetD8Async(ptr_, value, bytes_, ctx_->stream), "fill", "cuMemsetD8Async");
  check(driver().cuStreamSynchronize(ctx_->stream), "fill", "cuStreamSynchronize");
}

void CuBuffer::copy_from(const Buffer& source) {
  auto* src = dynamic_cast<const CuBuffer*>(&source);
  if (!src) throw UsageError("[cuda::copy] the source is not a CUDA buffer");
  std::lock_guard<std::mutex> guard(ctx_->mutex);
  ctx_->make_current();
  check(driver().cuMemcpyDtoDAsync(ptr_, src->ptr_, bytes_, ctx_->stream), "copy", "cuMemcpyDtoDAsync");
  check(driver().cuStreamSynchronize(ctx_->stream), "copy", "cuStreamSynchronize");
}

std::shared_ptr<Buffer> CuBuffer::view(size_t offset, size_t n) {
  return std::make_shared<CuBuffer>(ctx_, shared_from_this(), offset, n);
}

CuBuffer& buffer_arg(const Launch& launch, size_t index) {
  const auto* held = std::get_if<std::shared_ptr<Buffer>>(&launch.args.at(index));
  auto* buf = held ? dynamic_cast<CuBuffer*>(held->get()) : nullptr;
  if (!buf)
    throw UsageError("[cuda::launch] " + launch.kernel->label() + ": argument " + std::to_string(index) +
                     (held ? " is not a CUDA buffer" : " must be a buffer"));
  return *buf;
}

}  // namespace mb::cuda
