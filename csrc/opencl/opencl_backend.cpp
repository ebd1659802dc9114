// OpenCL backend: libOpenCL.so.1 opened at run time, one in-order profiling
// queue per device, kernel timing from profiling events. Errors start with
// "[opencl::operation]".
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cl_api.h"
#include "core/registry.h"

namespace mb::cl {
namespace {

// Library names the ICD loader goes by, most specific first.
const char* const kLibraries[] = {"libOpenCL.so.1", "libOpenCL.so",
                                  "/System/Library/Frameworks/OpenCL.framework/OpenCL"};

struct Loaded {
  Api api;
  std::string error;  // why loading failed; empty when it did not
};

const Loaded& load() {
  static Loaded loaded = [] {
    Loaded l;
    void* handle = nullptr;
    std::string tried;
    for (const char* name : kLibraries) {
      handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (handle) break;
      const char* why = dlerror();
      tried += std::string(tried.empty() ? "" : "; ") + (why ? why : name);
    }
    if (!handle) {
      l.error = "cannot load the OpenCL ICD loader (" + tried +
                "). On Debian or Ubuntu: apt-get install ocl-icd-libopencl1 pocl-opencl-icd";
      return l;
    }
#define MB_CL_RESOLVE(name, ret, params)                                          \
  l.api.name = reinterpret_cast<ret(*) params>(dlsym(handle, #name));             \
  if (!l.api.name && l.error.empty()) l.error = "libOpenCL has no symbol " #name;
    MB_CL_FUNCTIONS(MB_CL_RESOLVE)
#undef MB_CL_RESOLVE
    return l;
  }();
  return loaded;
}

const Api& api() {
  const Loaded& l = load();
  if (!l.error.empty()) throw UnavailableError("[opencl::load] " + l.error);
  return l.api;
}

// `what` is "operation] detail": the error reads "[opencl::operation] detail failed: ...".
void check(cl_int code, const std::string& what) {
  if (code != CL_SUCCESS)
    throw DeviceError("[opencl::" + what + " failed: " + error_name(code) + " (" + std::to_string(code) + ")");
}

std::string device_string(cl_device_id d, cl_device_info what) {
  size_t n = 0;
  check(api().clGetDeviceInfo(d, what, 0, nullptr, &n), "device] clGetDeviceInfo");
  std::string s(n, '\0');
  check(api().clGetDeviceInfo(d, what, n, s.data(), nullptr), "device] clGetDeviceInfo");
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

template <typename T>
T device_value(cl_device_id d, cl_device_info what) {
  T v{};
  check(api().clGetDeviceInfo(d, what, sizeof(T), &v, nullptr), "device] clGetDeviceInfo");
  return v;
}

struct Found {
  cl_platform_id platform;
  cl_device_id device;
};

// Every device of every platform, numbered in that order.
std::vector<Found> enumerate() {
  cl_uint np = 0;
  cl_int rc = api().clGetPlatformIDs(0, nullptr, &np);
  if (rc != CL_SUCCESS || np == 0) return {};  // -1001: the loader found no driver
  std::vector<cl_platform_id> platforms(np);
  check(api().clGetPlatformIDs(np, platforms.data(), nullptr), "device] clGetPlatformIDs");
  std::vector<Found> out;
  for (cl_platform_id p : platforms) {
    cl_uint nd = 0;
    if (api().clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, nullptr, &nd) != CL_SUCCESS || nd == 0) continue;
    std::vector<cl_device_id> devs(nd);
    check(api().clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, nd, devs.data(), nullptr), "device] clGetDeviceIDs");
    for (cl_device_id d : devs) out.push_back({p, d});
  }
  return out;
}

DeviceInfo describe(const Found& f, int index) {
  DeviceInfo i;
  i.backend = "opencl";
  i.index = index;
  i.name = device_string(f.device, CL_DEVICE_NAME);
  i.vendor = device_string(f.device, CL_DEVICE_VENDOR);
  size_t n = 0;
  std::string platform_version;
  if (api().clGetPlatformInfo(f.platform, CL_PLATFORM_VERSION, 0, nullptr, &n) == CL_SUCCESS && n > 0) {
    platform_version.resize(n);
    api().clGetPlatformInfo(f.platform, CL_PLATFORM_VERSION, n, platform_version.data(), nullptr);
    while (!platform_version.empty() && platform_version.back() == '\0') platform_version.pop_back();
  }
  i.driver = device_string(f.device, CL_DRIVER_VERSION) + " (" + platform_version + ")";
  i.compute_units = static_cast<int>(device_value<cl_uint>(f.device, CL_DEVICE_MAX_COMPUTE_UNITS));
  i.memory_bytes = device_value<cl_ulong>(f.device, CL_DEVICE_GLOBAL_MEM_SIZE);
  i.cache_bytes = device_value<cl_ulong>(f.device, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE);
  i.max_group_size = static_cast<int>(device_value<size_t>(f.device, CL_DEVICE_MAX_WORK_GROUP_SIZE));
  i.unified_memory = device_value<cl_bool>(f.device, CL_DEVICE_HOST_UNIFIED_MEMORY) != 0;
  i.cpu = (device_value<cl_device_type>(f.device, CL_DEVICE_TYPE) & CL_DEVICE_TYPE_CPU) != 0;
  // In bits. Sub-buffer origins must be multiples of it; 256 bytes at least keeps
  // views aligned for every vector load a kernel makes.
  i.view_alignment = std::max<size_t>(256, device_value<cl_uint>(f.device, CL_DEVICE_MEM_BASE_ADDR_ALIGN) / 8);
  i.clock_source = "none: OpenCL reports no current clock";
  i.timing_source = "OpenCL profiling events (CL_PROFILING_COMMAND_START/END of each launch)";
  i.matrix_unit = true;  // kernels/include/opencl.h emulates the tile on any device
  i.matrix_unit_detail = "emulated: each work-item holds its tiles in private memory (OpenCL 1.2 has no matrix unit)";
  i.bfloat16 = true;  // kernels/include/opencl.h converts in integer arithmetic on any device
  i.bfloat16_detail = "emulated: bit patterns in ushort, converted in integer arithmetic (OpenCL C has no bfloat16)";
  return i;
}

// The context and queue every object of one opened device shares.
struct Context {
  cl_device_id device = nullptr;
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;
  std::mutex mutex;  // OpenCL kernel arguments are per-object state
  ~Context() {
    if (queue) api().clReleaseCommandQueue(queue);
    if (context) api().clReleaseContext(context);
  }
};

// A buffer, or a view of one (a sub-buffer of the root allocation: OpenCL makes no
// sub-buffer of a sub-buffer, so a view of a view is cut from the root).
class ClBuffer final : public Buffer, public std::enable_shared_from_this<ClBuffer> {
 public:
  ClBuffer(std::shared_ptr<Context> ctx, size_t n) : ctx_(std::move(ctx)), bytes_(n) {
    cl_int rc = CL_SUCCESS;
    mem_ = api().clCreateBuffer(ctx_->context, CL_MEM_READ_WRITE, n, nullptr, &rc);
    check(rc, "allocate] " + std::to_string(n) + " bytes");
  }
  ClBuffer(std::shared_ptr<Context> ctx, std::shared_ptr<ClBuffer> root, size_t offset, size_t n)
      : ctx_(std::move(ctx)), root_(std::move(root)), offset_(offset), bytes_(n) {
    cl_buffer_region region{offset, n};
    cl_int rc = CL_SUCCESS;
    mem_ = api().clCreateSubBuffer(root_->mem_, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &rc);
    check(rc, "view] " + std::to_string(n) + " bytes at offset " + std::to_string(offset));
  }
  ~ClBuffer() override { api().clReleaseMemObject(mem_); }
  size_t bytes() const override { return bytes_; }
  void write(const void* src, size_t n, size_t offset) override {
    check(api().clEnqueueWriteBuffer(ctx_->queue, mem_, CL_TRUE, offset, n, src, 0, nullptr, nullptr),
          "write] clEnqueueWriteBuffer");
  }
  void read(void* dst, size_t n, size_t offset) const override {
    check(api().clEnqueueReadBuffer(ctx_->queue, mem_, CL_TRUE, offset, n, dst, 0, nullptr, nullptr),
          "read] clEnqueueReadBuffer");
  }
  void fill(uint8_t value) override {
    check(api().clEnqueueFillBuffer(ctx_->queue, mem_, &value, 1, 0, bytes_, 0, nullptr, nullptr),
          "fill] clEnqueueFillBuffer");
    check(api().clFinish(ctx_->queue), "fill] clFinish");
  }
  void copy_from(const Buffer& source) override {
    auto* src = dynamic_cast<const ClBuffer*>(&source);
    if (!src) throw UsageError("[opencl::copy] the source is not an OpenCL buffer");
    check(api().clEnqueueCopyBuffer(ctx_->queue, src->mem_, mem_, 0, 0, bytes_, 0, nullptr, nullptr),
          "copy] clEnqueueCopyBuffer");
    check(api().clFinish(ctx_->queue), "copy] clFinish");
  }
  std::shared_ptr<Buffer> view(size_t offset, size_t n) override {
    std::shared_ptr<ClBuffer> root = root_ ? root_ : shared_from_this();
    return std::make_shared<ClBuffer>(ctx_, root, offset_ + offset, n);
  }
  cl_mem mem() const { return mem_; }

 private:
  std::shared_ptr<Context> ctx_;
  std::shared_ptr<ClBuffer> root_;  // set for views
  size_t offset_ = 0;               // within the root
  cl_mem mem_ = nullptr;
  size_t bytes_;
};

// A built program, shared by every kernel made from it (a source may hold many:
// python/metalbench/batch.py puts a family's variants in one).
struct Program {
  cl_program handle;
  explicit Program(cl_program p) : handle(p) {}
  ~Program() { api().clReleaseProgram(handle); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
};

class ClKernel final : public Kernel {
 public:
  ClKernel(std::shared_ptr<Context> ctx, std::shared_ptr<Program> program, cl_kernel kernel, std::string label)
      : ctx_(std::move(ctx)), program_(std::move(program)), kernel_(kernel), label_(std::move(label)) {
    check(api().clGetKernelWorkGroupInfo(kernel_, ctx_->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof(size_t),
                                         &max_group_, nullptr),
          "compile] " + label_ + ": CL_KERNEL_WORK_GROUP_SIZE");
    check(api().clGetKernelWorkGroupInfo(kernel_, ctx_->device, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                         sizeof(size_t), &simd_, nullptr),
          "compile] " + label_ + ": CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE");
  }
  ~ClKernel() override { api().clReleaseKernel(kernel_); }
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return max_group_; }
  size_t simd_width() const override { return simd_ > 0 ? simd_ : 1; }
  cl_kernel handle() const { return kernel_; }

 private:
  std::shared_ptr<Context> ctx_;
  std::shared_ptr<Program> program_;
  cl_kernel kernel_;
  std::string label_;
  size_t max_group_ = 0, simd_ = 1;
};

class ClDevice final : public Device {
 public:
  ClDevice(const Found& f, int index) : info_(describe(f, index)), ctx_(std::make_shared<Context>()) {
    ctx_->device = f.device;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, reinterpret_cast<cl_context_properties>(f.platform), 0};
    cl_int rc = CL_SUCCESS;
    ctx_->context = api().clCreateContext(props, 1, &f.device, nullptr, nullptr, &rc);
    check(rc, "open] clCreateContext");
    ctx_->queue = api().clCreateCommandQueue(ctx_->context, f.device, CL_QUEUE_PROFILING_ENABLE, &rc);
    check(rc, "open] clCreateCommandQueue");
  }

  const DeviceInfo& info() const override { return info_; }

  // Another entry of a source built before (and still held by a kernel) costs no
  // build: what a build costs is mostly the compiler's own start and headers (PoCL
  // parses clang's 900 KB opencl-c.h in each, about 0.3 s), not the kernels in it.
  std::shared_ptr<Kernel> compile(const std::string& source, const std::string& entry,
                                  const std::vector<Define>& defines, const std::string& label) override {
    std::string options = "-cl-std=CL1.2";
    for (const auto& d : defines) options += " -D" + d.name + "=" + d.value;
    std::string key = options + '\0' + source;
    std::shared_ptr<Program> program = built(key);
    if (!program) {
      program = build(source, options, label);
      // Checked again under the lock: another thread may have built the same source
      // meanwhile; the first one kept is the one every later kernel shares.
      std::lock_guard<std::mutex> guard(programs_mutex_);
      std::shared_ptr<Program> other = programs_[key].lock();
      if (other) {
        program = other;
      } else {
        for (auto it = programs_.begin(); it != programs_.end();) {
          it = it->second.expired() ? programs_.erase(it) : std::next(it);
        }
        programs_[key] = program;
      }
    }
    cl_int rc = CL_SUCCESS;
    cl_kernel kernel = api().clCreateKernel(program->handle, entry.c_str(), &rc);
    if (rc != CL_SUCCESS) {
      throw CompileError("[opencl::compile] " + label + ": no kernel named '" + entry + "' (" + error_name(rc) + ")",
                         "");
    }
    return std::make_shared<ClKernel>(ctx_, std::move(program), kernel, label);
  }

  std::shared_ptr<Kernel> builtin(const std::string& name, const std::string& label, const std::vector<Define>&,
                                  std::shared_ptr<Kernel>) override {
    throw UsageError("[opencl::builtin] " + label + ": no vendor library routine '" + name + "' on OpenCL");
  }

  std::shared_ptr<Buffer> allocate(size_t bytes) override { return std::make_shared<ClBuffer>(ctx_, bytes); }

  void run(const Launch& launch) override {
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    enqueue(launch, 0, nullptr, nullptr);
    check(api().clFinish(ctx_->queue), "launch] " + launch.kernel->label() + ": clFinish");
  }

  std::vector<uint64_t> timed(const std::vector<Launch>& launches) override {
    std::vector<cl_event> events = held(launches, /*every=*/true);
    std::vector<uint64_t> out;
    out.reserve(events.size());
    std::string failure;
    for (cl_event e : events) {
      if (failure.empty()) {
        auto [start, end] = span(e, e, launches.front().kernel->label(), &failure);
        out.push_back(end - start);
      }
      api().clReleaseEvent(e);
    }
    if (!failure.empty()) throw DeviceError(failure);
    return out;
  }

  uint64_t timed_batch(const std::vector<Launch>& launches) override {
    std::vector<cl_event> events = held(launches, /*every=*/false);
    std::string failure;
    auto [start, end] = span(events.front(), events.back(), launches.front().kernel->label(), &failure);
    for (cl_event e : events) api().clReleaseEvent(e);
    if (!failure.empty()) throw DeviceError(failure);
    return end - start;
  }

 private:
  std::shared_ptr<Program> built(const std::string& key) {
    std::lock_guard<std::mutex> guard(programs_mutex_);
    auto found = programs_.find(key);
    return found == programs_.end() ? nullptr : found->second.lock();
  }

  std::shared_ptr<Program> build(const std::string& source, const std::string& options, const std::string& label) {
    const char* text = source.c_str();
    size_t length = source.size();
    cl_int rc = CL_SUCCESS;
    cl_program program = api().clCreateProgramWithSource(ctx_->context, 1, &text, &length, &rc);
    check(rc, "compile] " + label + ": clCreateProgramWithSource");
    auto made = std::make_shared<Program>(program);
    rc = api().clBuildProgram(program, 1, &ctx_->device, options.c_str(), nullptr, nullptr);
    if (rc != CL_SUCCESS) {
      throw CompileError("[opencl::compile] " + label + ": failed: " + error_name(rc), build_log(program));
    }
    return made;
  }

  // Enqueues `launches` behind a user event, then opens it and waits: the in-order
  // queue makes every launch wait behind the first, so nothing runs until all are
  // enqueued and the device never idles waiting for the host between them. Returns
  // the profiling event of every launch (`every`), or of the first and last only.
  std::vector<cl_event> held(const std::vector<Launch>& launches, bool every) {
    if (launches.empty()) throw UsageError("[opencl::launch] nothing to launch");
    std::lock_guard<std::mutex> guard(ctx_->mutex);
    cl_int rc = CL_SUCCESS;
    cl_event gate = api().clCreateUserEvent(ctx_->context, &rc);
    check(rc, "launch] " + launches.front().kernel->label() + ": clCreateUserEvent");
    std::vector<cl_event> events;
    std::string failure;
    try {
      for (size_t i = 0; i < launches.size(); ++i) {
        bool timed = every || i == 0 || i + 1 == launches.size();
        cl_event done = nullptr;
        // OpenCL wants a null wait list whenever its count is zero.
        enqueue(launches[i], i == 0 ? 1 : 0, i == 0 ? &gate : nullptr, timed ? &done : nullptr);
        if (timed) events.push_back(done);
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
    api().clSetUserEventStatus(gate, CL_COMPLETE);
    cl_int finished = api().clFinish(ctx_->queue);
    api().clReleaseEvent(gate);
    if (failure.empty() && finished != CL_SUCCESS)
      failure = "[opencl::launch] " + launches.front().kernel->label() + ": clFinish failed: " +
                error_name(finished) + " (" + std::to_string(finished) + ")";
    if (!failure.empty()) {
      for (cl_event e : events) api().clReleaseEvent(e);
      throw DeviceError(failure);
    }
    return events;
  }

  // The start of `first` and the end of `last` from their profiling information;
  // `label` names the launches in an error.
  std::pair<cl_ulong, cl_ulong> span(cl_event first, cl_event last, const std::string& label, std::string* failure) {
    cl_ulong start = 0, end = 0;
    cl_int rc = api().clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof start, &start, nullptr);
    if (rc == CL_SUCCESS) rc = api().clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof end, &end, nullptr);
    if (rc != CL_SUCCESS)
      *failure = "[opencl::timing] " + label + ": reading profiling info failed: " + error_name(rc);
    return {start, end > start ? end : start};
  }

  std::string build_log(cl_program program) {
    size_t n = 0;
    if (api().clGetProgramBuildInfo(program, ctx_->device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &n) != CL_SUCCESS)
      return "";
    std::string log(n, '\0');
    api().clGetProgramBuildInfo(program, ctx_->device, CL_PROGRAM_BUILD_LOG, n, log.data(), nullptr);
    while (!log.empty() && log.back() == '\0') log.pop_back();
    return log;
  }

  void enqueue(const Launch& launch, cl_uint waits, const cl_event* wait, cl_event* done) {
    auto* kernel = dynamic_cast<ClKernel*>(launch.kernel.get());
    if (!kernel) throw UsageError("[opencl::launch] " + launch.kernel->label() + " was not compiled by this backend");
    const std::string& who = kernel->label();
    for (size_t i = 0; i < launch.args.size(); ++i) {
      cl_int rc;
      if (const auto* buf = std::get_if<std::shared_ptr<Buffer>>(&launch.args[i])) {
        auto* clbuf = dynamic_cast<ClBuffer*>(buf->get());
        if (!clbuf) throw UsageError("[opencl::launch] " + who + ": argument " + std::to_string(i) +
                                     " is not an OpenCL buffer");
        cl_mem mem = clbuf->mem();
        rc = api().clSetKernelArg(kernel->handle(), static_cast<cl_uint>(i), sizeof(cl_mem), &mem);
      } else {
        const auto& bytes = std::get<std::vector<uint8_t>>(launch.args[i]);
        rc = api().clSetKernelArg(kernel->handle(), static_cast<cl_uint>(i), bytes.size(), bytes.data());
      }
      check(rc, "launch] " + who + ": setting argument " + std::to_string(i));
    }
    size_t global[3], local[3];
    for (int d = 0; d < 3; ++d) {
      local[d] = launch.threads[d];
      global[d] = size_t(launch.groups[d]) * launch.threads[d];
    }
    check(api().clEnqueueNDRangeKernel(ctx_->queue, kernel->handle(), 3, nullptr, global, local, waits, wait, done),
          "launch] " + who + ": clEnqueueNDRangeKernel");
  }

  DeviceInfo info_;
  std::shared_ptr<Context> ctx_;
  std::mutex programs_mutex_;
  // Built programs by options and source; a program lives as long as a kernel of it.
  std::unordered_map<std::string, std::weak_ptr<Program>> programs_;
};

class ClBackend final : public Backend {
 public:
  std::string name() const override { return "opencl"; }
  std::string unavailable_reason() override {
    if (!load().error.empty()) return load().error;
    if (enumerate().empty())
      return "the OpenCL loader found no device; install a driver (on Debian or Ubuntu: "
             "apt-get install pocl-opencl-icd)";
    return "";
  }
  std::vector<DeviceInfo> devices() override {
    auto found = enumerate();
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < found.size(); ++i) out.push_back(describe(found[i], static_cast<int>(i)));
    return out;
  }
  std::shared_ptr<Device> open(int index) override {
    auto found = enumerate();
    if (index < 0 || size_t(index) >= found.size())
      throw UsageError("[opencl::open] no device " + std::to_string(index) + " (" + std::to_string(found.size()) +
                       " found)");
    return std::make_shared<ClDevice>(found[index], index);
  }
};

// OpenCL is the fallback of `--backend auto`: Metal (0) and CUDA (10) go first.
const BackendRegistration kRegistration("opencl", 20, [] { return std::make_unique<ClBackend>(); });

}  // namespace

const char* error_name(cl_int code) {
  switch (code) {
    case 0: return "CL_SUCCESS";
    case -1: return "CL_DEVICE_NOT_FOUND";
    case -2: return "CL_DEVICE_NOT_AVAILABLE";
    case -3: return "CL_COMPILER_NOT_AVAILABLE";
    case -4: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case -5: return "CL_OUT_OF_RESOURCES";
    case -6: return "CL_OUT_OF_HOST_MEMORY";
    case -11: return "CL_BUILD_PROGRAM_FAILURE";
    case -13: return "CL_MISALIGNED_SUB_BUFFER_OFFSET";
    case -30: return "CL_INVALID_VALUE";
    case -36: return "CL_INVALID_COMMAND_QUEUE";
    case -38: return "CL_INVALID_MEM_OBJECT";
    case -44: return "CL_INVALID_PROGRAM";
    case -45: return "CL_INVALID_PROGRAM_EXECUTABLE";
    case -46: return "CL_INVALID_KERNEL_NAME";
    case -48: return "CL_INVALID_KERNEL";
    case -49: return "CL_INVALID_ARG_INDEX";
    case -50: return "CL_INVALID_ARG_VALUE";
    case -51: return "CL_INVALID_ARG_SIZE";
    case -52: return "CL_INVALID_KERNEL_ARGS";
    case -53: return "CL_INVALID_WORK_DIMENSION";
    case -54: return "CL_INVALID_WORK_GROUP_SIZE";
    case -55: return "CL_INVALID_WORK_ITEM_SIZE";
    case -57: return "CL_INVALID_EVENT_WAIT_LIST";
    case -58: return "CL_INVALID_EVENT";
    case -61: return "CL_INVALID_BUFFER_SIZE";
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
  }
}

}  // namespace mb::cl
