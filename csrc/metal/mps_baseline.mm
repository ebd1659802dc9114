// The MPS builtins behind the GEMM kernel ABI. Each takes the same six arguments as
// a portable kernel (a, b, c, bias, ws, MBParams); any buffer may be a view (an
// allocation at an offset), which MPS takes through initWithBuffer:offset:descriptor:.
//
// "mps" (`mps/baseline`): MPSMatrixMultiplication, C = alpha op(A) op(B) + beta C,
// with MPS's own transposes, alpha, beta and batches. matmul_bias_add in the nn
// layout (neither operand transposed) with one batch goes to MPSMatrixFullyConnected,
// which computes y = alpha x W + bias in one kernel, x being A (m x k) and W being B
// as stored (k x n); its header offers no transposed weights, so every other bias
// case first writes bias[j] into every row of C with a small kernel, then multiplies
// with beta = 1: C = A.B + bias.
//
// "mps-gemv" (`mps-gemv/*`, m = 1 only): MPSMatrixVectorMultiplication,
// y = alpha op(B) x + beta y, with x the row of A and y the row of C; B stored n x k
// is taken as it is, B stored k x n transposed. A bias goes through C first as above.
//
// The MPS kernel objects of a spec are built once and cached by its MBParams; they
// hold no buffer. The MPSMatrix and MPSVector objects that wrap buffers are made for
// each prepared launch and die with it, at the end of the run() or timed() call, so
// nothing keeps a spec's buffers alive after it.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#import <MetalPerformanceShaders/MetalPerformanceShaders.h>

#include <array>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/kernel_abi.h"
#include "core/gemm_args.h"
#include "metal/metal_internal.h"

namespace mb::metal {
namespace {

const char* const kBiasSource = R"msl(
#include <metal_stdlib>
using namespace metal;
#if MB_DTYPE == 2
typedef bfloat T;
#elif MB_DTYPE == 1
typedef half T;
#else
typedef float T;
#endif
struct BiasShape { uint m, n, ldc, stride_c; };
kernel void mb_broadcast_bias(device const T* bias [[buffer(0)]], device T* c [[buffer(1)]],
                              constant BiasShape& s [[buffer(2)]],
                              uint3 at [[thread_position_in_grid]]) {
  if (at.x < s.n && at.y < s.m) c[at.z * s.stride_c + at.y * s.ldc + at.x] = bias[at.x];
}
)msl";

struct BiasShape {
  uint32_t m, n, ldc, stride_c;
};
constexpr uint32_t kBiasGroup = 64;
// Specs whose MPS kernel objects are kept (a suite has a few dozen; a sweep visits
// each once per variant that runs on it).
constexpr size_t kPlans = 8;

enum class Route { multiply, fully_connected, vector };

// The MPS kernel object of one spec, without any buffer.
struct Plan {
  Route route = Route::multiply;
  bool bias_first = false;  // a pass writes the bias into C, then MPS adds with beta = 1
  MPSMatrixMultiplication* multiply = nil;
  MPSMatrixFullyConnected* connected = nil;
  MPSMatrixVectorMultiplication* vector = nil;
};

class MpsLaunch final : public PreparedLaunch {
 public:
  bool single_dispatch() const override { return false; }
  void dispatch(id<MTLComputeCommandEncoder>) const override {
    throw std::logic_error(where("launch", "") + "an MPS launch encodes passes of its own");
  }
  void encode(id<MTLCommandBuffer> cb) const override {
    if (plan->bias_first) encode_dispatch(cb, bias_pipeline, bias_args, bias_groups, MTLSizeMake(kBiasGroup, 1, 1));
    switch (plan->route) {
      case Route::multiply:
        [plan->multiply encodeToCommandBuffer:cb leftMatrix:a rightMatrix:b resultMatrix:c];
        break;
      case Route::fully_connected:
        [plan->connected encodeToCommandBuffer:cb inputMatrix:a weightMatrix:b biasVector:bias resultMatrix:c];
        break;
      case Route::vector:
        [plan->vector encodeToCommandBuffer:cb inputMatrix:b inputVector:x resultVector:y];
        break;
    }
  }
  void uses(const MetalBuffer& buffer) { add_resource(buffer.handle()); }

  std::shared_ptr<const Plan> plan;
  MPSMatrix* a = nil;  // multiply, fully_connected
  MPSMatrix* b = nil;  // every route (the matrix of mps-gemv)
  MPSMatrix* c = nil;  // multiply, fully_connected
  MPSVector* bias = nil;  // fully_connected
  MPSVector* x = nil;     // vector: the row of A
  MPSVector* y = nil;     // vector: the row of C
  id<MTLComputePipelineState> bias_pipeline = nil;  // plan->bias_first
  std::vector<Binding> bias_args;
  MTLSize bias_groups = MTLSizeMake(1, 1, 1);
};

// One operand as stored: rows x columns with a row pitch, batch entries `stride`
// elements apart (all in elements).
struct Stored {
  const char* name;
  size_t rows, columns, pitch, stride;
  MetalBuffer* buffer;
};

class MpsKernel final : public MetalKernel {
 public:
  MpsKernel(std::shared_ptr<Context> ctx, std::string name, std::string label, int dtype,
            id<MTLComputePipelineState> bias)
      : ctx_(std::move(ctx)), name_(std::move(name)), label_(std::move(label)), dtype_(dtype), bias_(bias) {}
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return 0; }  // MPS picks its own geometry
  size_t simd_width() const override { return 1; }

  std::shared_ptr<const PreparedLaunch> prepare(const Launch& launch) override {
    const std::string who = where("launch", label_);
    const MBParams p = gemm_params(launch, who);
    std::array<MetalBuffer*, 5> buffers{};
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i] = &buffer_arg(*ctx_, launch, i);
    check(launch, p, buffers, who);
    return pooled([&] {
      std::shared_ptr<const Plan> plan = plan_of(p, who);
      return wrap(p, plan, buffers, who);
    });
  }

 private:
  bool gemv() const { return name_ == "mps-gemv"; }
  size_t element() const { return dtype_ ? 2 : 4; }
  MPSDataType type() const {
    // MPSDataTypeBFloat16 of the macOS 14 SDK, MPSDataTypeAlternateEncodingBit (0x80000000) |
    // MPSDataTypeFloat16, spelt out so that older SDKs still build the backend; only
    // reached on macOS 14 or later (make_mps_kernel refuses it before).
    if (dtype_ == 2) return MPSDataType(0x80000000u | MPSDataTypeFloat16);
    return dtype_ == 1 ? MPSDataTypeFloat16 : MPSDataTypeFloat32;
  }

  // MPS asserts rather than reports on a matrix its buffer cannot hold, so the layout
  // rules of MPSMatrix are checked here first: beyond what every builtin checks
  // (core/gemm_args.h: the buffer, or view, reaches the last element), a batch stride
  // is a whole number of rows, at least one matrix.
  void check(const Launch& launch, const MBParams& p, const std::array<MetalBuffer*, 5>& buf,
             const std::string& who) const {
    if (p.qbits != 0)
      throw UsageError(who + "B is quantized (params qbits " + std::to_string(p.qbits) +
                       "): MPS reads B as stored, in the element type");
    if (gemv() && p.m != 1) throw UsageError(who + "mps-gemv takes m = 1, not " + std::to_string(p.m));
    if (gemv() && p.trans_a && p.lda != 1)
      throw UsageError(who + "mps-gemv needs the row of A contiguous (A stored k x 1 with lda 1)");
    for (const Stored& s : stored(p, buf))
      if (p.batch > 1 && (s.stride < s.rows * s.pitch || s.stride % s.pitch != 0))
        throw UsageError(who + s.name + "'s batch stride " + std::to_string(s.stride) +
                         " is not a whole number of rows of at least one matrix, as MPS needs");
    const std::string short_by = gemm_buffers_short(launch, p, element());
    if (!short_by.empty()) throw UsageError(who + short_by);
  }

  static std::array<Stored, 3> stored(const MBParams& p, const std::array<MetalBuffer*, 5>& buf) {
    const std::array<StoredMatrix, 3> m = stored_matrices(p);
    std::array<Stored, 3> out;
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = {m[i].name, m[i].rows, m[i].columns, m[i].pitch, m[i].stride, buf[i]};
    return out;
  }

  // The cached plan of this spec, or a new one (the oldest of kPlans is dropped).
  std::shared_ptr<const Plan> plan_of(const MBParams& p, const std::string& who) {
    std::string key(reinterpret_cast<const char*>(&p), sizeof p);
    std::lock_guard<std::mutex> guard(mutex_);
    for (auto it = plans_.begin(); it != plans_.end(); ++it) {
      if (it->first != key) continue;
      plans_.splice(plans_.begin(), plans_, it);
      return plans_.front().second;
    }
    auto plan = std::make_shared<Plan>();
    const NSUInteger m = NSUInteger(p.m), n = NSUInteger(p.n), k = NSUInteger(p.k);
    const double alpha = p.op == MB_OP_ALPHA_BETA ? p.alpha : 1.0;
    const double beta = p.op == MB_OP_ALPHA_BETA ? p.beta : (p.op == MB_OP_BIAS_ADD ? 1.0 : 0.0);
    if (gemv()) {
      plan->route = Route::vector;
      plan->bias_first = p.op == MB_OP_BIAS_ADD;
      // op(B) is n x k: B as stored when it is n x k (nt), transposed when k x n (nn).
      plan->vector = [[MPSMatrixVectorMultiplication alloc] initWithDevice:ctx_->device
                                                                 transpose:p.trans_b == 0
                                                                      rows:n
                                                                   columns:k
                                                                     alpha:alpha
                                                                      beta:beta];
      if (!plan->vector) throw DeviceError(who + "MPSMatrixVectorMultiplication refused this spec");
      plan->vector.batchStart = 0;
      plan->vector.batchSize = NSUInteger(p.batch);
    } else if (p.op == MB_OP_BIAS_ADD && !p.trans_a && !p.trans_b && p.batch == 1) {
      plan->route = Route::fully_connected;
      plan->connected = [[MPSMatrixFullyConnected alloc] initWithDevice:ctx_->device];
      if (!plan->connected) throw DeviceError(who + "MPSMatrixFullyConnected refused this spec");
      // Each defaults to "all the matrix has"; said exactly instead.
      plan->connected.sourceNumberOfFeatureVectors = m;
      plan->connected.sourceInputFeatureChannels = k;
      plan->connected.sourceOutputFeatureChannels = n;
      plan->connected.alpha = 1.0;
    } else {
      plan->route = Route::multiply;
      plan->bias_first = p.op == MB_OP_BIAS_ADD;
      plan->multiply = [[MPSMatrixMultiplication alloc] initWithDevice:ctx_->device
                                                         transposeLeft:p.trans_a != 0
                                                        transposeRight:p.trans_b != 0
                                                            resultRows:m
                                                         resultColumns:n
                                                       interiorColumns:k
                                                                 alpha:alpha
                                                                  beta:beta];
      if (!plan->multiply) throw DeviceError(who + "MPSMatrixMultiplication refused this spec");
      plan->multiply.batchStart = 0;
      plan->multiply.batchSize = NSUInteger(p.batch);
    }
    plans_.emplace_front(std::move(key), plan);
    if (plans_.size() > kPlans) plans_.pop_back();
    return plan;
  }

  MPSMatrix* matrix(const Stored& s, size_t batch, const std::string& who) const {
    const size_t es = element();
    size_t matrix_elements = batch > 1 ? s.stride : s.rows * s.pitch;
    MPSMatrixDescriptor* d = [MPSMatrixDescriptor matrixDescriptorWithRows:s.rows
                                                                   columns:s.columns
                                                                  matrices:batch
                                                                  rowBytes:s.pitch * es
                                                               matrixBytes:matrix_elements * es
                                                                  dataType:type()];
    MPSMatrix* out = [[MPSMatrix alloc] initWithBuffer:s.buffer->handle() offset:s.buffer->offset() descriptor:d];
    if (!out)
      throw DeviceError(who + "no MPSMatrix for the " + std::to_string(s.rows) + " x " + std::to_string(s.columns) +
                        " operand " + s.name);
    return out;
  }

  // `length` elements; `count` of them `stride` elements apart.
  MPSVector* vector(const MetalBuffer& buffer, size_t length, size_t count, size_t stride, const char* name,
                    const std::string& who) const {
    MPSVectorDescriptor* d = count > 1 ? [MPSVectorDescriptor vectorDescriptorWithLength:length
                                                                                 vectors:count
                                                                             vectorBytes:stride * element()
                                                                                dataType:type()]
                                       : [MPSVectorDescriptor vectorDescriptorWithLength:length dataType:type()];
    MPSVector* out = [[MPSVector alloc] initWithBuffer:buffer.handle() offset:buffer.offset() descriptor:d];
    if (!out) throw DeviceError(who + "no MPSVector for " + name);
    return out;
  }

  std::shared_ptr<const PreparedLaunch> wrap(const MBParams& p, std::shared_ptr<const Plan> plan,
                                             const std::array<MetalBuffer*, 5>& buf, const std::string& who) {
    auto out = std::make_shared<MpsLaunch>();
    const size_t batch = size_t(p.batch), n = size_t(p.n), k = size_t(p.k);
    const std::array<Stored, 3> s = stored(p, buf);
    out->b = matrix(s[1], batch, who);
    if (plan->route == Route::vector) {
      out->x = vector(*buf[0], k, batch, size_t(p.stride_a), "the row of A", who);
      out->y = vector(*buf[2], n, batch, size_t(p.stride_c), "the row of C", who);
    } else {
      out->a = matrix(s[0], batch, who);
      out->c = matrix(s[2], batch, who);
    }
    if (plan->route == Route::fully_connected) out->bias = vector(*buf[3], n, 1, n, "the bias", who);
    if (plan->bias_first) {
      BiasShape shape{uint32_t(p.m), uint32_t(p.n), uint32_t(p.ldc), uint32_t(p.stride_c)};
      std::vector<uint8_t> shape_bytes(sizeof shape);
      std::memcpy(shape_bytes.data(), &shape, sizeof shape);
      out->bias_pipeline = bias_;
      out->bias_args = {{buf[3]->handle(), buf[3]->offset(), {}},
                        {buf[2]->handle(), buf[2]->offset(), {}},
                        {nil, 0, std::move(shape_bytes)}};
      out->bias_groups = MTLSizeMake((n + kBiasGroup - 1) / kBiasGroup, size_t(p.m), batch);
    }
    out->uses(*buf[0]);
    out->uses(*buf[1]);
    out->uses(*buf[2]);
    if (p.op == MB_OP_BIAS_ADD) out->uses(*buf[3]);
    out->plan = std::move(plan);
    return out;
  }

  std::shared_ptr<Context> ctx_;
  std::string name_, label_;
  int dtype_;  // MB_DTYPE: 0 float32, 1 float16, 2 bfloat16
  id<MTLComputePipelineState> bias_;
  std::mutex mutex_;
  std::list<std::pair<std::string, std::shared_ptr<const Plan>>> plans_;  // newest first
};

}  // namespace

std::shared_ptr<MetalKernel> make_mps_kernel(std::shared_ptr<Context> ctx, const std::string& name,
                                             const std::string& label, int dtype) {
  // Hosted macOS runners' "Apple Paravirtual device" is one MPS does not support.
  if (!MPSSupportsMTLDevice(ctx->device))
    throw UnavailableError(where("builtin", label) + "MPS does not support " + ctx->name);
  id<MTLComputePipelineState> bias =
      build_pipeline(*ctx, kBiasSource, "mb_broadcast_bias", {{"MB_DTYPE", std::to_string(dtype)}}, label + " (bias)");
  return std::make_shared<MpsKernel>(std::move(ctx), name, label, dtype, bias);
}

}  // namespace mb::metal
