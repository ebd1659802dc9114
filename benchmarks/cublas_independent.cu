// The plain program: what metalbench's batch clock measures on CUDA, measured by a
// plain CUDA C++ program against NVIDIA's own headers, with none of metalbench's
// code. benchmarks/measurement.py builds it with nvcc and compares.
//
//   cublas_independent SPECS OUT.json [REPEATS]
//
// SPECS has one GEMM per line: op batch m n k transpose_a transpose_b alpha beta dtype
// (op 0 matmul, 1 bias add, 2 alpha/beta; dtype 16 or 32), row-major data as in
// metalbench's kernel ABI. Each spec is run through the calls the `cublas` builtin
// makes (csrc/cuda/cublas_builtin.cpp): cublasGemmStridedBatchedEx with fp32 compute,
// or for op 1 cublasLtMatmul with the bias epilogue, on a stream of its own with a
// 32 MiB workspace set explicitly.
//
// Back to back, as the batch clock does it: the stream is held on a host-mapped word
// (cuStreamWaitValue32) while N calls are enqueued between one pair of events, then
// released; the batch's time / N is one sample. N is chosen so that a batch spans at
// least 0.5 ms (at most 1024 calls, as many as the backend holds at once); the figure
// is the median of REPEATS samples (21 by default, at least 15). A watchdog thread
// opens the gate if enqueueing takes over 2 s, and the program then fails rather than
// report a batch the GPU may have waited in. Unlike the harness, every call writes
// the same C (the harness gives each launch of a batch its own copy of C); inputs
// are warm.
//
// The empty kernel (one thread) is timed the same way, and for context: each launch
// between its own events behind the gate (64 per held run, the backend's per-launch
// clock), launch + cudaStreamSynchronize on the host's clock, and a CUDA graph of N
// launches replayed between two events (per launch).
//
// OUT.json: {"device", "l2_bytes", "repeats", "empty": {...}, "specs": [{...}]}, every
// time in microseconds per call.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
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

namespace {

constexpr double kBatchSeconds = 5e-4;  // a batch spans at least this much GPU time
constexpr int kMaxBatch = 1024;         // calls enqueued behind the gate at most
constexpr int kPerLaunchRun = 64;       // launches per held run of the per-launch clock
constexpr auto kGateTimeout = std::chrono::seconds(2);

struct Spec {
  int op, batch, m, n, k, ta, tb;
  float alpha, beta;
  int dtype;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string json_list(const std::vector<double>& v) {
  std::ostringstream out;
  out.precision(6);
  out << "[";
  for (size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << v[i];
  out << "]";
  return out.str();
}

// A stream and the gate that holds it: work enqueued between hold() and release()
// starts only once every call of it is enqueued, so the GPU never waits for the host
// inside it.
class Gate {
 public:
  explicit Gate(cudaStream_t stream) : stream_(stream) {
    CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&host_), 64, cudaHostAllocMapped | cudaHostAllocPortable));
    store(0);
    CHECK_CU(cuMemHostGetDevicePointer(&dev_, host_, 0));
  }
  ~Gate() { cudaFreeHost(host_); }

  // Runs `enqueue` behind the gate and waits for the stream. Exits the program if the
  // watchdog had to open the gate (the GPU may have waited for the host).
  void held(const std::function<void()>& enqueue) {
    const uint32_t generation = ++generation_;
    CHECK_CU(cuStreamWaitValue32(reinterpret_cast<CUstream>(stream_), dev_, generation, CU_STREAM_WAIT_VALUE_GEQ));
    bool done = false, fired = false;
    std::mutex mutex;
    std::condition_variable cv;
    std::thread watchdog([&] {
      std::unique_lock<std::mutex> lock(mutex);
      if (!cv.wait_for(lock, kGateTimeout, [&] { return done; })) {
        fired = true;
        store(generation);
      }
    });
    enqueue();
    {
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
    }
    cv.notify_all();
    watchdog.join();
    store(generation);
    CHECK_CUDA(cudaStreamSynchronize(stream_));
    if (fired) {
      std::fprintf(stderr, "enqueueing a held batch took longer than 2 s: the GPU may have waited for the host\n");
      std::exit(1);
    }
  }

 private:
  void store(uint32_t value) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    *reinterpret_cast<volatile uint32_t*>(host_) = value;
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

  cudaStream_t stream_;
  uint32_t* host_ = nullptr;
  CUdeviceptr dev_ = 0;
  uint32_t generation_ = 0;
};

struct Timer {
  cudaStream_t stream;
  Gate& gate;
  cudaEvent_t start, stop;

  float elapsed_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    return ms;
  }

  // n calls back to back between one pair of events, behind the gate: microseconds per call.
  double batch(const std::function<void()>& call, int n) {
    gate.held([&] {
      CHECK_CUDA(cudaEventRecord(start, stream));
      for (int i = 0; i < n; ++i) call();
      CHECK_CUDA(cudaEventRecord(stop, stream));
    });
    return 1e3 * elapsed_ms(start, stop) / n;
  }

  // Calls per batch: enough that a batch spans kBatchSeconds, from a first estimate.
  int batch_size(const std::function<void()>& call) {
    double estimate = batch(call, 16);
    estimate = std::min(estimate, batch(call, 16));
    int n = int(std::ceil(kBatchSeconds * 1e6 / std::max(estimate, 1e-3)));
    return std::clamp(n, 1, kMaxBatch);
  }
};

struct Measured {
  int n = 0;
  std::vector<double> samples;  // microseconds per call, one per batch
};

Measured back_to_back(Timer& t, const std::function<void()>& call, int repeats) {
  for (int i = 0; i < 3; ++i) call();
  CHECK_CUDA(cudaStreamSynchronize(t.stream));
  Measured m;
  m.n = t.batch_size(call);
  for (int r = 0; r < repeats; ++r) m.samples.push_back(t.batch(call, m.n));
  return m;
}

std::string measured_json(const Measured& m) {
  std::ostringstream out;
  out.precision(6);
  out << "\"n\": " << m.n << ", \"batch_us\": " << median(m.samples) << ", \"min_us\": "
      << *std::min_element(m.samples.begin(), m.samples.end()) << ", \"samples_us\": " << json_list(m.samples);
  return out.str();
}

// Largest power of two (at most 256) dividing every value, as the builtin computes the
// alignment cuBLASLt may assume.
uint32_t alignment(std::initializer_list<uint64_t> values) {
  uint32_t a = 256;
  for (uint64_t v : values)
    while (a > 1 && v % a != 0) a /= 2;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SPECS OUT.json [REPEATS]\n", argv[0]);
    return 2;
  }
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 21;
  if (repeats < 15) {
    std::fprintf(stderr, "REPEATS must be at least 15, got %d\n", repeats);
    return 2;
  }
  std::vector<Spec> specs;
  {
    std::ifstream f(argv[1]);
    if (!f) {
      std::fprintf(stderr, "cannot read %s\n", argv[1]);
      return 2;
    }
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream in(line);
      Spec s{};
      if (!(in >> s.op >> s.batch >> s.m >> s.n >> s.k >> s.ta >> s.tb >> s.alpha >> s.beta >> s.dtype) ||
          s.op < 0 || s.op > 2 || (s.dtype != 16 && s.dtype != 32)) {
        std::fprintf(stderr, "bad spec line: %s\n", line.c_str());
        return 2;
      }
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
  const size_t ws_bytes = size_t(32) << 20;  // the builtin's
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  CHECK_BLAS(cublasSetWorkspace(handle, ws, ws_bytes));
  CHECK_BLAS(cublasLtCreate(&lt));
  Gate gate(stream);
  Timer timer{stream, gate, nullptr, nullptr};
  CHECK_CUDA(cudaEventCreate(&timer.start));
  CHECK_CUDA(cudaEventCreate(&timer.stop));
  // Load this program's kernel now: a module loaded lazily at its first launch must
  // not wait on a held stream.
  empty_kernel<<<1, 1, 0, stream>>>();
  CHECK_CUDA(cudaStreamSynchronize(stream));

  std::ostringstream json;
  json.precision(6);
  json << "{\"device\": \"" << prop.name << "\", \"l2_bytes\": " << prop.l2CacheSize << ", \"repeats\": " << repeats;

  // The empty kernel.
  {
    auto launch = [&] { empty_kernel<<<1, 1, 0, stream>>>(); };
    for (int i = 0; i < 10; ++i) launch();
    CHECK_CUDA(cudaGetLastError());
    Measured batch = back_to_back(timer, launch, repeats);

    // Per launch: each between its own pair of events, 64 per held run.
    std::vector<cudaEvent_t> ev(2 * kPerLaunchRun);
    for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
    std::vector<double> per_launch;
    for (int run = 0; run < 20; ++run) {
      gate.held([&] {
        for (int i = 0; i < kPerLaunchRun; ++i) {
          CHECK_CUDA(cudaEventRecord(ev[2 * i], stream));
          launch();
          CHECK_CUDA(cudaEventRecord(ev[2 * i + 1], stream));
        }
      });
      for (int i = 0; i < kPerLaunchRun; ++i) per_launch.push_back(1e3 * timer.elapsed_ms(ev[2 * i], ev[2 * i + 1]));
    }
    for (auto& e : ev) cudaEventDestroy(e);

    // Launch + synchronize, on the host's clock.
    std::vector<double> round_trip;
    for (int i = 0; i < 2000; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      launch();
      CHECK_CUDA(cudaStreamSynchronize(stream));
      round_trip.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }

    // A CUDA graph of batch.n launches, replayed between two events.
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < batch.n; ++i) launch();
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::vector<double> replay;
    for (int r = 0; r < repeats; ++r) {
      CHECK_CUDA(cudaEventRecord(timer.start, stream));
      CHECK_CUDA(cudaGraphLaunch(exec, stream));
      CHECK_CUDA(cudaEventRecord(timer.stop, stream));
      CHECK_CUDA(cudaStreamSynchronize(stream));
      replay.push_back(1e3 * timer.elapsed_ms(timer.start, timer.stop) / batch.n);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);

    json << ", \"empty\": {" << measured_json(batch) << ", \"event_pair_us\": " << median(per_launch)
         << ", \"launch_sync_us\": " << median(round_trip) << ", \"graph_us\": " << median(replay) << "}";
    std::printf("empty kernel: back to back %.3f us (batches of %d), event pair %.3f us, launch+sync %.3f us, "
                "graph replay %.3f us\n",
                median(batch.samples), batch.n, median(per_launch), median(round_trip), median(replay));
  }

  // cuBLAS, each spec.
  json << ", \"specs\": [";
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (size_t si = 0; si < specs.size(); ++si) {
    const Spec s = specs[si];
    const size_t es = s.dtype == 16 ? 2 : 4;
    const cudaDataType type = s.dtype == 16 ? CUDA_R_16F : CUDA_R_32F;
    // Row pitches as stored, and contiguous batch entries (MBParams).
    const int lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n, ldc = s.n;
    const long long sa = (long long)s.m * s.k, sb = (long long)s.k * s.n, sc = (long long)s.m * s.n;
    auto upload = [&](size_t elems) {
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
    void* A = upload(size_t(s.batch) * sa);
    void* B = upload(size_t(s.batch) * sb);
    void* C = upload(size_t(s.batch) * sc);
    void* bias = upload(size_t(s.n));
    const float alpha = s.op == 2 ? s.alpha : 1.0f, beta = s.op == 2 ? s.beta : 0.0f;
    // Row-major C = A.B is column-major C^T = B^T A^T: cuBLAS's A is our B.
    const cublasOperation_t op_a = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N;

    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    cublasLtMatmulHeuristicResult_t heur{};
    if (s.op == 1) {
      CHECK_BLAS(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      int32_t ta = op_a, tb = op_b;
      uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
      CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
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
      const bool batched = s.batch > 1;
      uint32_t align_a = alignment({uint64_t(reinterpret_cast<uintptr_t>(B)), uint64_t(sb) * es * batched});
      uint32_t align_b = alignment({uint64_t(reinterpret_cast<uintptr_t>(A)), uint64_t(sa) * es * batched});
      uint32_t align_c = alignment({uint64_t(reinterpret_cast<uintptr_t>(C)), uint64_t(sc) * es * batched});
      cublasLtMatmulPreference_t pref;
      CHECK_BLAS(cublasLtMatmulPreferenceCreate(&pref));
      uint64_t wsb = ws_bytes;
      CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
      CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                      sizeof align_a));
      CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                      sizeof align_b));
      CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                      sizeof align_c));
      CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                      sizeof align_c));
      int returned = 0;
      CHECK_BLAS(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &heur, &returned));
      cublasLtMatmulPreferenceDestroy(pref);
      if (returned < 1) {
        std::fprintf(stderr, "no cuBLASLt algorithm for spec %zu\n", si);
        return 1;
      }
    }
    auto call = [&] {
      if (s.op == 1) {
        // As the builtin: the bias pointer set as each call is enqueued.
        CHECK_BLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        CHECK_BLAS(cublasLtMatmul(lt, desc, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &heur.algo, ws, ws_bytes,
                                  stream));
      } else {
        CHECK_BLAS(cublasGemmStridedBatchedEx(handle, op_a, op_b, s.n, s.m, s.k, &alpha, B, type, ldb, sb, A, type,
                                              lda, sa, &beta, C, type, ldc, sc, s.batch, CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
      }
    };
    Measured m = back_to_back(timer, call, repeats);
    CHECK_CUDA(cudaGetLastError());
    json << (si ? ", " : "") << "{\"index\": " << si << ", " << measured_json(m) << "}";
    std::printf("spec %zu: %.3f us (batches of %d)\n", si, median(m.samples), m.n);
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
  json << "]}\n";
  std::ofstream out(argv[2]);
  out << json.str();
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", argv[2]);
    return 1;
  }
  return 0;
}
