// `mps/baseline`: MPSMatrixMultiplication behind the GEMM kernel ABI. It takes the
// same six arguments as a portable kernel (a, b, c, bias, ws, MBParams) and does
// every op, layout and batch natively: transposes, alpha and beta are MPS's own.
// matmul_bias_add first writes bias[j] into every row of C with a small kernel,
// then multiplies with beta = 1: C = A.B + bias, rounded once, as the portable
// kernels round it.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#import <MetalPerformanceShaders/MetalPerformanceShaders.h>

#include <array>
#include <cstring>
#include <mutex>
#include <string>

#include "../../kernels/include/common.h"
#include "metal/metal_internal.h"

static_assert(sizeof(MBParams) == 64, "MBParams is the 64-byte kernel ABI (kernels/include/common.h)");

namespace mb::metal {
namespace {

const char* const kBiasSource = R"msl(
#include <metal_stdlib>
using namespace metal;
#if MB_F16
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

class MpsLaunch final : public PreparedLaunch {
 public:
  void encode(id<MTLCommandBuffer> cb) const override {
    if (bias_pipeline) encode_dispatch(cb, bias_pipeline, bias_args, bias_groups, MTLSizeMake(kBiasGroup, 1, 1));
    [multiply encodeToCommandBuffer:cb leftMatrix:a rightMatrix:b resultMatrix:c];
  }

  MPSMatrixMultiplication* multiply = nil;
  MPSMatrix* a = nil;
  MPSMatrix* b = nil;
  MPSMatrix* c = nil;
  id<MTLComputePipelineState> bias_pipeline = nil;  // set for matmul_bias_add only
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
  MpsKernel(std::shared_ptr<Context> ctx, std::string label, bool f16, id<MTLComputePipelineState> bias)
      : ctx_(std::move(ctx)), label_(std::move(label)), f16_(f16), bias_(bias) {}
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return 0; }  // MPS picks its own geometry
  size_t simd_width() const override { return 1; }

  // The core launches one Launch many times over; its MPS objects are built once.
  std::shared_ptr<const PreparedLaunch> prepare(const Launch& launch) override {
    if (launch.args.size() != 6)
      throw UsageError(label_ + ": takes the 6 GEMM arguments (a, b, c, bias, ws, params), got " +
                       std::to_string(launch.args.size()));
    std::array<MetalBuffer*, 5> buffers{};
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i] = &buffer_arg(launch, i);
    const auto* bytes = std::get_if<std::vector<uint8_t>>(&launch.args[5]);
    if (!bytes || bytes->size() != sizeof(MBParams))
      throw UsageError(label_ + ": argument 5 must be the " + std::to_string(sizeof(MBParams)) +
                       " bytes of MBParams");
    std::string key(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    for (size_t i = 0; i < 4; ++i) {
      const void* handle = (__bridge const void*)buffers[i]->handle();
      key.append(reinterpret_cast<const char*>(&handle), sizeof handle);
    }

    std::lock_guard<std::mutex> guard(mutex_);
    if (last_ && key == last_key_) return last_;
    MBParams p;
    std::memcpy(&p, bytes->data(), sizeof p);
    @autoreleasepool {
      last_ = build(p, buffers);
    }
    last_key_ = std::move(key);
    return last_;
  }

 private:
  std::shared_ptr<const PreparedLaunch> build(const MBParams& p, const std::array<MetalBuffer*, 5>& buf) {
    if (p.batch < 1 || p.m < 1 || p.n < 1 || p.k < 1)
      throw UsageError(label_ + ": batch, m, n and k must be positive");
    if (p.op < MB_OP_MATMUL || p.op > MB_OP_ALPHA_BETA)
      throw UsageError(label_ + ": unknown op " + std::to_string(p.op));
    if (p.lda < 0 || p.ldb < 0 || p.ldc < 0 || p.stride_a < 0 || p.stride_b < 0 || p.stride_c < 0)
      throw UsageError(label_ + ": row pitches and batch strides must not be negative");
    const size_t es = f16_ ? 2 : 4, batch = size_t(p.batch), m = size_t(p.m), n = size_t(p.n), k = size_t(p.k);
    const Stored a{"A", p.trans_a ? k : m, p.trans_a ? m : k, size_t(p.lda), size_t(p.stride_a), buf[0]};
    const Stored b{"B", p.trans_b ? n : k, p.trans_b ? k : n, size_t(p.ldb), size_t(p.stride_b), buf[1]};
    const Stored c{"C", m, n, size_t(p.ldc), size_t(p.stride_c), buf[2]};
    // MPS asserts rather than reports on a matrix its buffer cannot hold, so the
    // layout rules of MPSMatrix are checked here first: a batch stride is a whole
    // number of rows, at least one matrix, and the buffer reaches the last element.
    for (const Stored* s : {&a, &b, &c}) {
      if (s->pitch < s->columns)
        throw UsageError(label_ + ": " + s->name + " has a row pitch of " + std::to_string(s->pitch) +
                         " elements for " + std::to_string(s->columns) + " columns");
      if (batch > 1 && (s->stride < s->rows * s->pitch || s->stride % s->pitch != 0))
        throw UsageError(label_ + ": " + s->name + "'s batch stride " + std::to_string(s->stride) +
                         " is not a whole number of rows of at least one matrix, as MPS needs");
      size_t need = ((batch - 1) * s->stride + (s->rows - 1) * s->pitch + s->columns) * es;
      if (need > s->buffer->bytes())
        throw UsageError(label_ + ": " + s->name + " needs " + std::to_string(need) + " bytes, its buffer has " +
                         std::to_string(s->buffer->bytes()));
    }
    if (p.op == MB_OP_BIAS_ADD && buf[3]->bytes() < n * es)
      throw UsageError(label_ + ": bias needs " + std::to_string(n * es) + " bytes, its buffer has " +
                       std::to_string(buf[3]->bytes()));

    auto out = std::make_shared<MpsLaunch>();
    const MPSDataType type = f16_ ? MPSDataTypeFloat16 : MPSDataTypeFloat32;
    auto matrix = [&](const Stored& s) {
      size_t matrix_elements = batch > 1 ? s.stride : s.rows * s.pitch;
      MPSMatrixDescriptor* d = [MPSMatrixDescriptor matrixDescriptorWithRows:s.rows
                                                                     columns:s.columns
                                                                    matrices:batch
                                                                    rowBytes:s.pitch * es
                                                                 matrixBytes:matrix_elements * es
                                                                    dataType:type];
      MPSMatrix* matrix = [[MPSMatrix alloc] initWithBuffer:s.buffer->handle() descriptor:d];
      if (!matrix) throw DeviceError("mps: no MPSMatrix for a " + std::to_string(s.rows) + " x " +
                                     std::to_string(s.columns) + " operand of " + label_);
      return matrix;
    };
    out->a = matrix(a);
    out->b = matrix(b);
    out->c = matrix(c);
    double alpha = p.op == MB_OP_ALPHA_BETA ? p.alpha : 1.0;
    double beta = p.op == MB_OP_ALPHA_BETA ? p.beta : (p.op == MB_OP_BIAS_ADD ? 1.0 : 0.0);
    out->multiply = [[MPSMatrixMultiplication alloc] initWithDevice:ctx_->device
                                                      transposeLeft:p.trans_a != 0
                                                     transposeRight:p.trans_b != 0
                                                         resultRows:m
                                                      resultColumns:n
                                                    interiorColumns:k
                                                              alpha:alpha
                                                               beta:beta];
    if (!out->multiply) throw DeviceError("mps: MPSMatrixMultiplication refused " + label_);
    out->multiply.batchStart = 0;
    out->multiply.batchSize = batch;
    if (p.op == MB_OP_BIAS_ADD) {
      BiasShape shape{uint32_t(m), uint32_t(n), uint32_t(p.ldc), uint32_t(p.stride_c)};
      std::vector<uint8_t> shape_bytes(sizeof shape);
      std::memcpy(shape_bytes.data(), &shape, sizeof shape);
      out->bias_pipeline = bias_;
      out->bias_args = {{buf[3]->handle(), {}}, {buf[2]->handle(), {}}, {nil, std::move(shape_bytes)}};
      out->bias_groups = MTLSizeMake((n + kBiasGroup - 1) / kBiasGroup, m, batch);
    }
    return out;
  }

  std::shared_ptr<Context> ctx_;
  std::string label_;
  bool f16_;
  id<MTLComputePipelineState> bias_;
  std::mutex mutex_;
  std::shared_ptr<const PreparedLaunch> last_;
  std::string last_key_;  // its MBParams bytes, then its a, b, c and bias buffers
};

}  // namespace

std::shared_ptr<MetalKernel> make_mps_kernel(std::shared_ptr<Context> ctx, const std::string& label, bool f16) {
  // Hosted macOS runners' "Apple Paravirtual device" is one MPS does not support.
  if (!MPSSupportsMTLDevice(ctx->device))
    throw UnavailableError("metal: " + label + ": MPS does not support " + ctx->name);
  id<MTLComputePipelineState> bias =
      build_pipeline(*ctx, kBiasSource, "mb_broadcast_bias", {{"MB_F16", f16 ? "1" : "0"}}, label + " (bias)");
  return std::make_shared<MpsKernel>(std::move(ctx), label, f16, bias);
}

}  // namespace mb::metal
