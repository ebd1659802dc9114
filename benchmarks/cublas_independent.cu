// An independent measurement of what metalbench's CUDA backend measures, written
// as a plain CUDA C++ program against NVIDIA's own headers (benchmarks/cuda_decode.py
// builds it with nvcc on the GPU machine and compares).
//
//   cublas_independent SPECS OUT.json [ITERATIONS] [clean|fill] [held]
//
// SPECS has one GEMM per line: op batch m n k transpose_a transpose_b alpha beta dtype
// (op 0 matmul, 1 bias add, 2 alpha/beta; dtype 16 or 32), row-major data as in
// metalbench's ABI. Each is run through the same cuBLAS calls as the `cublas` builtin
// (cublasGemmStridedBatchedEx with fp32 compute; cublasLtMatmul with the bias
// epilogue for op 1) and timed the usual way: an L2 flush (cudaMemsetAsync of twice
// the L2 size) before each call, CUDA events around the call, the median of the
// per-call times. The stream is not held: the flush gives the host time to run ahead.
// "clean" (the default, as the backend's METALBENCH_CUDA_FLUSH) also reads the flush
// buffer's first half after the fill, so the fill's dirty lines are written back
// before the timed call; "fill" leaves them for the timed call to write back.
//
// It also times an empty kernel the way the backend does (the stream held on a
// host-mapped word with cuStreamWaitValue32 until every launch is enqueued; event
// pairs) and its launch-to-completion round trip (launch + cudaStreamSynchronize).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));  \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)
#define CHECK_CU(x)                                                                            \
  do {                                                                                         \
    CUresult e_ = (x);                                                                         \
    if (e_ != CUDA_SUCCESS) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: CUresult %d\n", __FILE__, __LINE__, #x, int(e_));        \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)
#define CHECK_BLAS(x)                                                                          \
  do {                                                                                         \
    cublasStatus_t s_ = (x);                                                                   \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
      std::fprintf(stderr, "%s:%d %s: cublas status %d\n", __FILE__, __LINE__, #x, int(s_));   \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

__global__ void empty_kernel() {}

// "clean" flush: read the flush buffer's first half after filling it, so that the
// fill's dirty lines are written back before the timed call (as the backend does).
__global__ void flush_read(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x5bd1e995u) *sink = acc;
}

struct Spec {
  int op, batch, m, n, k, ta, tb;
  float alpha, beta;
  int dtype;
};

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SPECS OUT.json [ITERATIONS] [clean|fill]\n", argv[0]);
    return 2;
  }
  const int iters = argc > 3 ? std::atoi(argv[3]) : 100;
  const bool clean = !(argc > 4 && std::string(argv[4]) == "fill");
  // "held": hold the stream on a host-mapped word until each batch of 64 calls is
  // enqueued, as the backend does (a diagnostic; the comparison runs without it).
  const bool held = argc > 5 && std::string(argv[5]) == "held";
  std::vector<Spec> specs;
  {
    std::ifstream f(argv[1]);
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream in(line);
      Spec s{};
      in >> s.op >> s.batch >> s.m >> s.n >> s.k >> s.ta >> s.tb >> s.alpha >> s.beta >> s.dtype;
      specs.push_back(s);
    }
  }
  CHECK_CUDA(cudaSetDevice(0));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t handle;
  cublasLtHandle_t lt;
  CHECK_BLAS(cublasCreate(&handle));
  CHECK_BLAS(cublasSetStream(handle, stream));
  const size_t ws_bytes = size_t(32) << 20;
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  CHECK_BLAS(cublasSetWorkspace(handle, ws, ws_bytes));
  CHECK_BLAS(cublasLtCreate(&lt));
  const size_t flush_bytes = 2 * size_t(prop.l2CacheSize);
  void* flush = nullptr;
  CHECK_CUDA(cudaMalloc(&flush, flush_bytes));
  unsigned* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&sink, 16));
  unsigned* gate_host = nullptr;
  CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&gate_host), 64, cudaHostAllocMapped | cudaHostAllocPortable));
  *reinterpret_cast<volatile unsigned*>(gate_host) = 0;
  CUdeviceptr gate_dev = 0;
  CHECK_CU(cuMemHostGetDevicePointer(&gate_dev, gate_host, 0));
  unsigned generation = 0;
  // Load every kernel of this program now: a module loaded lazily at its first launch
  // must not wait on a held stream.
  flush_read<<<1, 1, 0, stream>>>(static_cast<const uint4*>(nullptr), 0, sink);
  empty_kernel<<<1, 1, 0, stream>>>();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<cudaEvent_t> ev(2 * std::max(iters, 64));
  for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));

  std::ostringstream json;
  json << "{\"device\": \"" << prop.name << "\", \"l2_bytes\": " << prop.l2CacheSize << ", \"flush\": \""
       << (clean ? "clean" : "fill") << "\", \"specs\": [";
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (size_t si = 0; si < specs.size(); ++si) {
    const Spec s = specs[si];
    const size_t es = s.dtype == 16 ? 2 : 4;
    const cudaDataType type = s.dtype == 16 ? CUDA_R_16F : CUDA_R_32F;
    const int lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n, ldc = s.n;
    const long long sa = (long long)s.m * s.k, sb = (long long)s.k * s.n, sc = (long long)s.m * s.n;
    auto fill = [&](size_t elems) {
      void* p = nullptr;
      CHECK_CUDA(cudaMalloc(&p, elems * es));
      std::vector<unsigned char> host(elems * es);
      for (size_t i = 0; i < elems; ++i) {
        float v = uni(rng);
        if (es == 4) {
          std::memcpy(&host[4 * i], &v, 4);
        } else {
          __half h = __float2half(v);
          std::memcpy(&host[2 * i], &h, 2);
        }
      }
      CHECK_CUDA(cudaMemcpy(p, host.data(), host.size(), cudaMemcpyHostToDevice));
      return p;
    };
    void* A = fill(size_t(s.batch) * sa);
    void* B = fill(size_t(s.batch) * sb);
    void* C = fill(size_t(s.batch) * sc);
    void* bias = fill(size_t(s.n));
    const float alpha = s.op == 2 ? s.alpha : 1.0f, beta = s.op == 2 ? s.beta : 0.0f;
    const cublasOperation_t op_a = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's A is our B
    const cublasOperation_t op_b = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N;

    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    cublasLtMatmulHeuristicResult_t heur{};
    if (s.op == 1) {
      CHECK_BLAS(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      int32_t ta = op_a, tb = op_b;
      uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
      auto layout = [&](cublasLtMatrixLayout_t* l, uint64_t rows, uint64_t cols, int64_t ld, int64_t stride) {
        CHECK_BLAS(cublasLtMatrixLayoutCreate(l, type, rows, cols, ld));
        if (s.batch > 1) {
          int32_t count = s.batch;
          CHECK_BLAS(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
          CHECK_BLAS(
              cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
        }
      };
      if (op_a == CUBLAS_OP_T) layout(&la, s.k, s.n, ldb, sb); else layout(&la, s.n, s.k, ldb, sb);
      if (op_b == CUBLAS_OP_T) layout(&lb, s.m, s.k, lda, sa); else layout(&lb, s.k, s.m, lda, sa);
      layout(&lc, s.n, s.m, ldc, sc);
      cublasLtMatmulPreference_t pref;
      CHECK_BLAS(cublasLtMatmulPreferenceCreate(&pref));
      uint64_t wsb = ws_bytes;
      CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
      int returned = 0;
      CHECK_BLAS(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &heur, &returned));
      if (returned < 1) {
        std::fprintf(stderr, "no cuBLASLt algorithm for spec %zu\n", si);
        return 1;
      }
      cublasLtMatmulPreferenceDestroy(pref);
    }
    auto call = [&] {
      if (s.op == 1) {
        CHECK_BLAS(cublasLtMatmul(lt, desc, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &heur.algo, ws, ws_bytes,
                                  stream));
      } else {
        CHECK_BLAS(cublasGemmStridedBatchedEx(handle, op_a, op_b, s.n, s.m, s.k, &alpha, B, type, ldb, sb, A, type,
                                              lda, sa, &beta, C, type, ldc, sc, s.batch, CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
      }
    };
    for (int i = 0; i < 3; ++i) call();
    CHECK_CUDA(cudaStreamSynchronize(stream));
    for (int i = 0; i < iters; ++i) {
      if (held && i % 64 == 0) {
        if (i) {
          __atomic_store_n(gate_host, generation, __ATOMIC_SEQ_CST);
          CHECK_CUDA(cudaStreamSynchronize(stream));
        }
        ++generation;
        CHECK_CU(cuStreamWaitValue32(reinterpret_cast<CUstream>(stream), gate_dev, generation,
                                     CU_STREAM_WAIT_VALUE_GEQ));
      }
      // The driver's memset, as the backend's Buffer::fill uses.
      CHECK_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(flush), (unsigned char)(i & 0xff), flush_bytes,
                               reinterpret_cast<CUstream>(stream)));
      if (clean) flush_read<<<1024, 256, 0, stream>>>(static_cast<const uint4*>(flush), flush_bytes / 32, sink);
      CHECK_CUDA(cudaEventRecord(ev[2 * i], stream));
      call();
      CHECK_CUDA(cudaEventRecord(ev[2 * i + 1], stream));
    }
    if (held) __atomic_store_n(gate_host, generation, __ATOMIC_SEQ_CST);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::vector<double> us;
    for (int i = 0; i < iters; ++i) {
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
      us.push_back(ms * 1e3);
    }
    json << (si ? ", " : "") << "{\"index\": " << si << ", \"median_us\": " << median(us)
         << ", \"min_us\": " << *std::min_element(us.begin(), us.end()) << "}";
    if (desc) {
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatmulDescDestroy(desc);
    }
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    cudaFree(bias);
  }
  json << "]";

  // The empty kernel: GPU time with the stream held, and launch + synchronize.
  {
    const int empty_iters = 2000;
    for (int i = 0; i < 10; ++i) empty_kernel<<<1, 1, 0, stream>>>();
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::vector<double> gpu, cpu;
    for (int done = 0; done < empty_iters;) {
      const int n = std::min(64, empty_iters - done);
      ++generation;
      CHECK_CU(cuStreamWaitValue32(reinterpret_cast<CUstream>(stream), gate_dev, generation, CU_STREAM_WAIT_VALUE_GEQ));
      for (int i = 0; i < n; ++i) {
        CHECK_CUDA(cudaEventRecord(ev[2 * i], stream));
        empty_kernel<<<1, 1, 0, stream>>>();
        CHECK_CUDA(cudaEventRecord(ev[2 * i + 1], stream));
      }
      __atomic_store_n(gate_host, generation, __ATOMIC_SEQ_CST);
      CHECK_CUDA(cudaStreamSynchronize(stream));
      for (int i = 0; i < n; ++i) {
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
        gpu.push_back(ms * 1e3);
      }
      done += n;
    }
    for (int i = 0; i < empty_iters; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      empty_kernel<<<1, 1, 0, stream>>>();
      CHECK_CUDA(cudaStreamSynchronize(stream));
      cpu.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    CHECK_CUDA(cudaGetLastError());
    json << ", \"empty_gpu_us\": " << median(gpu) << ", \"empty_cpu_us\": " << median(cpu);
  }
  json << "}\n";
  std::ofstream(argv[2]) << json.str();
  std::printf("%s", json.str().c_str());
  return 0;
}
