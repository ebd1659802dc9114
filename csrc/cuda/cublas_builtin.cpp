// The `cublas` builtin: cuBLAS presented as a kernel of the GEMM ABI.
//
// It takes the same six arguments as every kernel (a, b, c, bias, ws, MBParams)
// and ignores the launch geometry. Data is row-major, cuBLAS column-major, so
// C = A.B is computed as C^T = B^T A^T: cuBLAS's "A" is our B and its "B" our A.
// A row-major matrix read column-major is its own transpose, so our transposes
// pass straight through (B stored n x k, the weight layout, becomes op T).
//
//   matmul, matmul_alpha_beta: cublasGemmStridedBatchedEx, fp32 compute
//     (CUBLAS_COMPUTE_32F), alpha = 1 / beta = 0 or the params' alpha and beta;
//   matmul_bias_add: cublasLtMatmul with the CUBLASLT_EPILOGUE_BIAS epilogue, the
//     bias added in the kernel's own epilogue before the output is rounded, as the
//     portable kernels do (one launch, no extra pass over C).
//
//   quantized B (p.qbits != 0; kernels/cublas_dequant.toml): the builtin was made with a
//     first kernel (kernels/portable/qdequant.c), which dequantizes B as T, n x k, into a
//     scratch buffer of the builtin's own (passed as that kernel's `ws`); the GEMM above
//     then reads it there. Both are enqueued by one launch, so they are timed together:
//     what an app without a fused kernel pays. Not the launch's own workspace: the ABI
//     has a kernel leave that zero, and zeroing it again would be a pass an app never makes.
//
// The element type is not in MBParams: it comes from the variant's MB_DTYPE define
// (Device::builtin's defines): float32, float16 or bfloat16 (CUDA_R_16BF, still with
// fp32 compute). Without one it is read off the buffers, which the runner allocates
// to the exact size: float32 when a, b and c each hold 4 bytes per element the params
// address, float16 when they hold 2 (bfloat16 data needs the define). Either way the
// buffers are checked to hold everything the params address.
#include <map>

#include "core/kernel_abi.h"
#include "core/gemm_args.h"
#include "cuda_internal.h"

namespace mb::cuda {

void destroy_blas(BlasState* b) {
  const CublasLoad& l = cublas_load();
  if (!l.error.empty()) return;
  if (b->lt) l.api.cublasLtDestroy(b->lt);
  if (b->handle) l.api.cublasDestroy(b->handle);
  if (b->workspace) driver().cuMemFree(b->workspace);
}

namespace {

// `op` is the operation an error names: "builtin" while the handle is made, else "launch".
void check_blas(cublasStatus_t s, const std::string& what, const char* op = "launch") {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw DeviceError(std::string("[cuda::") + op + "] " + what + " failed: cuBLAS status " + std::to_string(s));
}

BlasState& blas_state(Context& ctx) {
  if (ctx.blas) return *ctx.blas;
  const CublasApi& b = cublas();
  auto s = std::make_unique<BlasState>();
  check(driver().cuMemAlloc(&s->workspace, s->workspace_bytes), "builtin", "allocating the cuBLAS workspace");
  try {
    check_blas(b.cublasCreate(&s->handle), "cublasCreate", "builtin");
    check_blas(b.cublasSetStream(s->handle, ctx.stream), "cublasSetStream", "builtin");
    // An explicit workspace: cuBLAS never allocates (and so never synchronizes) in a timed batch.
    check_blas(b.cublasSetWorkspace(s->handle, reinterpret_cast<void*>(s->workspace), s->workspace_bytes),
               "cublasSetWorkspace", "builtin");
    // Split-K partials summed in fp32, never in the output's fp16: the baseline is held to
    // the tolerance every kernel is (one rounding to the output type), and on the odd
    // suite an fp16 reduction exceeded it.
    check_blas(b.cublasSetMathMode(s->handle, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION),
               "cublasSetMathMode", "builtin");
    check_blas(b.cublasLtCreate(&s->lt), "cublasLtCreate", "builtin");
  } catch (...) {
    destroy_blas(s.get());
    throw;
  }
  ctx.blas = std::move(s);
  return *ctx.blas;
}

// Largest power of two (at most 256) dividing every value: the alignment cuBLASLt may assume.
uint32_t alignment(std::initializer_list<uint64_t> values) {
  uint32_t a = 256;
  for (uint64_t v : values)
    while (a > 1 && v % a != 0) a /= 2;
  return a;
}

// A cuBLASLt matmul with the bias epilogue, planned once per shape and alignment.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  ~LtPlan() {
    const CublasLoad& l = cublas_load();
    if (!l.error.empty()) return;
    for (auto* layout : {a, b, c})
      if (layout) l.api.cublasLtMatrixLayoutDestroy(layout);
    if (desc) l.api.cublasLtMatmulDescDestroy(desc);
  }
};

class BlasKernel final : public CuKernel {
 public:
  BlasKernel(std::shared_ptr<Context> ctx, std::string label, int dtype, std::shared_ptr<CuKernel> first)
      : ctx_(std::move(ctx)), label_(std::move(label)), dtype_(dtype), first_(std::move(first)) {
    blas_state(*ctx_);
  }
  ~BlasKernel() override {
    plans_.clear();
  }
  const std::string& label() const override { return label_; }
  size_t max_group_size() const override { return 0; }  // cuBLAS picks its own geometry
  // The dequantize step, then what one cuBLAS call may enqueue: its GEMM and, where it
  // splits k, a reduction, a workspace clear and C's scaling. The driver's queue fills by
  // bytes as well as by entries, and cuBLAS's kernels take large parameter blocks: at 3
  // per launch, a held run of 341 cublas-dequant launches blocked on an H100 (the odd
  // suite's 5x29x96 alpha/beta and 2x19x160 bfloat16 specs), so 8 leaves a margin.
  size_t queue_cost() const override { return (first_ ? 1 : 0) + 8; }

  std::function<void()> prepare(const Launch& launch) override {
    const std::string where = "[cuda::launch] " + label_ + ": ";
    MBParams p = gemm_params(launch, where);
    CuBuffer& a = buffer_arg(launch, 0);
    CuBuffer& b = buffer_arg(launch, 1);
    CuBuffer& c = buffer_arg(launch, 2);
    CuBuffer& bias = buffer_arg(launch, 3);
    buffer_arg(launch, 4);
    if ((p.qbits != 0) != bool(first_))
      throw UsageError(where + (first_ ? "dequantizes B first, but B is not quantized (params qbits 0)"
                                       : "B is quantized (params qbits " + std::to_string(p.qbits) +
                                             "): cuBLAS reads B as stored; the family cublas-dequant dequantizes "
                                             "it first"));
    // Without MB_DTYPE the element size is the one at which the buffers hold the problem.
    size_t es = dtype_ < 0 ? 0 : dtype_ == 0 ? 4 : 2;
    if (!es) es = gemm_buffers_short(launch, p, 4).empty() ? 4 : 2;
    const std::string short_by = gemm_buffers_short(launch, p, es);
    if (!short_by.empty())
      throw UsageError(where + short_by + (dtype_ >= 0 ? "" : " (no MB_DTYPE define: tried 4 and 2 bytes an element)"));
    const cudaDataType type = dtype_ == 2 ? CUDA_R_16BF : es == 2 ? CUDA_R_16F : CUDA_R_32F;
    // A quantized B: the first kernel writes it to the scratch buffer as T, n x k per
    // batch entry, and cuBLAS multiplies that.
    std::function<void()> dequantize;
    CUdeviceptr pb = b.ptr();
    if (first_) {
      const size_t need = size_t(p.batch) * size_t(p.n) * size_t(p.k) * es;
      // Made here, with the context's lock held (prepare's caller holds it). A larger one
      // replaces it; launches prepared with the old one hold that until they are done.
      if (!scratch_ || scratch_->bytes() < need) scratch_ = std::make_shared<CuBuffer>(ctx_, need, CuBuffer::Held{});
      const size_t threads = size_t(launch.threads[0]) * launch.threads[1] * launch.threads[2];
      if (threads > first_->max_group_size())
        throw UsageError(where + "a group of " + std::to_string(threads) + " threads is more than the " +
                         std::to_string(first_->max_group_size()) + " its first kernel takes");
      Launch step = launch;
      step.kernel = first_;
      step.args[4] = std::static_pointer_cast<Buffer>(scratch_);
      dequantize = first_->prepare(step);  // holds its arguments, the scratch buffer among them
      pb = scratch_->ptr();
      p.ldb = p.k;
      p.stride_b = p.n * p.k;
      p.qbits = p.qgroup = p.qscales = p.qbiases = 0;
    }
    const cublasOperation_t op_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's A is our B
    const cublasOperation_t op_b = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's B is our A
    const float alpha = p.op == MB_OP_ALPHA_BETA ? p.alpha : 1.0f;
    const float beta = p.op == MB_OP_ALPHA_BETA ? p.beta : 0.0f;
    const CUdeviceptr pa = a.ptr(), pc = c.ptr(), pbias = bias.ptr();
    const CublasApi& api = cublas();
    BlasState& s = blas_state(*ctx_);
    auto hold = std::make_shared<std::vector<Arg>>(launch.args);
    const std::string* who = &label_;

    if (p.op != MB_OP_BIAS_ADD) {
      return [=, &api, &s] {
        (void)hold;
        if (dequantize) dequantize();
        check_blas(api.cublasGemmStridedBatchedEx(
                       s.handle, op_a, op_b, p.n, p.m, p.k, &alpha, reinterpret_cast<const void*>(pb), type, p.ldb,
                       p.stride_b, reinterpret_cast<const void*>(pa), type, p.lda, p.stride_a, &beta,
                       reinterpret_cast<void*>(pc), type, p.ldc, p.stride_c, p.batch, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT),
                   *who + ": cublasGemmStridedBatchedEx");
      };
    }

    // The bias epilogue: D (n x m column-major) = op(B^T) op(A^T) + bias[n] per column.
    const uint32_t align_a = alignment({pb, uint64_t(p.stride_b) * es * (p.batch > 1)});
    const uint32_t align_b = alignment({pa, uint64_t(p.stride_a) * es * (p.batch > 1)});
    const uint32_t align_c = alignment({pc, uint64_t(p.stride_c) * es * (p.batch > 1)});
    const uint32_t align_bias = alignment({pbias});
    std::string key(reinterpret_cast<const char*>(&p), sizeof p);
    for (uint32_t v : {uint32_t(type), align_a, align_b, align_c, align_bias})
      key.append(reinterpret_cast<const char*>(&v), sizeof v);
    auto found = plans_.find(key);
    if (found == plans_.end()) found = plans_.emplace(key, plan(p, type, op_a, op_b, pbias, align_a, align_b,
                                                                align_c, s)).first;
    LtPlan* lt = found->second.get();
    const void* bias_ptr = reinterpret_cast<const void*>(pbias);
    CUstream stream = ctx_->stream;
    return [=, &api, &s] {
      (void)hold;
      if (dequantize) dequantize();
      // The plan is shared by every launch of this shape, each with its own bias (the
      // slots of a timed run): set it as this launch is enqueued, not when prepared.
      check_blas(api.cublasLtMatmulDescSetAttribute(lt->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                                    sizeof bias_ptr),
                 *who + ": setting the bias pointer");
      check_blas(api.cublasLtMatmul(s.lt, lt->desc, &alpha, reinterpret_cast<const void*>(pb), lt->a,
                                    reinterpret_cast<const void*>(pa), lt->b, &beta, reinterpret_cast<const void*>(pc),
                                    lt->c, reinterpret_cast<void*>(pc), lt->c, &lt->algo,
                                    reinterpret_cast<void*>(s.workspace), s.workspace_bytes, stream),
                 *who + ": cublasLtMatmul");
    };
  }

 private:
  std::unique_ptr<LtPlan> plan(const MBParams& p, cudaDataType type, cublasOperation_t op_a, cublasOperation_t op_b,
                               CUdeviceptr bias, uint32_t align_a, uint32_t align_b, uint32_t align_c,
                               BlasState& s) {
    const CublasApi& api = cublas();
    auto lt = std::make_unique<LtPlan>();
    const std::string& who = label_;
    check_blas(api.cublasLtMatmulDescCreate(&lt->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), who + ": cublasLtMatmulDescCreate");
    int32_t ta = op_a, tb = op_b;
    uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const void* bias_ptr = reinterpret_cast<const void*>(bias);
    check_blas(api.cublasLtMatmulDescSetAttribute(lt->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), who + ": TRANSA");
    check_blas(api.cublasLtMatmulDescSetAttribute(lt->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), who + ": TRANSB");
    check_blas(api.cublasLtMatmulDescSetAttribute(lt->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue),
               who + ": EPILOGUE");
    check_blas(api.cublasLtMatmulDescSetAttribute(lt->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof bias_ptr),
               who + ": BIAS_POINTER");
    // Stored shapes, column-major: our B is k x n (n x k when transposed) read as its transpose.
    auto layout = [&](cublasLtMatrixLayout_t* out, uint64_t rows, uint64_t cols, int64_t ld, int64_t stride) {
      check_blas(api.cublasLtMatrixLayoutCreate(out, type, rows, cols, ld), who + ": cublasLtMatrixLayoutCreate");
      if (p.batch > 1) {
        int32_t count = p.batch;
        check_blas(api.cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
                   who + ": BATCH_COUNT");
        check_blas(api.cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                        sizeof stride),
                   who + ": STRIDED_BATCH_OFFSET");
      }
    };
    if (op_a == CUBLAS_OP_T)
      layout(&lt->a, p.k, p.n, p.ldb, p.stride_b);
    else
      layout(&lt->a, p.n, p.k, p.ldb, p.stride_b);
    if (op_b == CUBLAS_OP_T)
      layout(&lt->b, p.m, p.k, p.lda, p.stride_a);
    else
      layout(&lt->b, p.k, p.m, p.lda, p.stride_a);
    layout(&lt->c, p.n, p.m, p.ldc, p.stride_c);

    cublasLtMatmulPreference_t pref = nullptr;
    check_blas(api.cublasLtMatmulPreferenceCreate(&pref), who + ": cublasLtMatmulPreferenceCreate");
    uint64_t ws = s.workspace_bytes;
    api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;  // as cublasSetMathMode above
    api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction,
                                             sizeof reduction);
    api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof align_a);
    api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof align_b);
    api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c);
    api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof align_c);
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    cublasStatus_t st = api.cublasLtMatmulAlgoGetHeuristic(s.lt, lt->desc, lt->a, lt->b, lt->c, lt->c, pref, 1,
                                                           &result, &returned);
    api.cublasLtMatmulPreferenceDestroy(pref);
    check_blas(st, who + ": cublasLtMatmulAlgoGetHeuristic");
    if (returned < 1 || result.state != CUBLAS_STATUS_SUCCESS)
      throw DeviceError("[cuda::launch] " + who + ": cuBLASLt has no algorithm for this bias GEMM (m " + std::to_string(p.m) +
                        ", n " + std::to_string(p.n) + ", k " + std::to_string(p.k) + ", batch " +
                        std::to_string(p.batch) + ")");
    lt->algo = result.algo;
    lt->workspace = result.workspaceSize;
    return lt;
  }

  std::shared_ptr<Context> ctx_;
  std::string label_;
  int dtype_;
  std::shared_ptr<CuKernel> first_;  // dequantizes a quantized B into scratch_; null otherwise
  std::shared_ptr<CuBuffer> scratch_;
  std::map<std::string, std::unique_ptr<LtPlan>> plans_;
};

}  // namespace

std::shared_ptr<CuKernel> make_cublas_kernel(std::shared_ptr<Context> ctx, const std::string& label, int dtype,
                                             std::shared_ptr<CuKernel> first) {
  return std::make_shared<BlasKernel>(std::move(ctx), label, dtype, std::move(first));
}

}  // namespace mb::cuda
