// The parts of the CUDA driver API, NVRTC, cuBLAS and cuBLASLt this backend calls,
// declared from NVIDIA's public documentation so that building needs no CUDA SDK:
// every library is opened at run time (libcuda.so.1 from the driver; NVRTC and
// cuBLAS from a CUDA toolkit or the nvidia-* Python wheels).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mb::cuda {

// ---- Driver API -------------------------------------------------------------------------

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;  // 64-bit, the _v2 entry points
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;
using CUdevice_attribute = int;
using CUfunction_attribute = int;
using CUjit_option = int;

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_NOT_INITIALIZED = 3;
constexpr CUresult CUDA_ERROR_DEINITIALIZED = 4;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
constexpr CUresult CUDA_ERROR_NOT_FOUND = 500;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr CUresult CUDA_ERROR_NOT_SUPPORTED = 801;

constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_INTEGRATED = 18;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY = 19;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr CUdevice_attribute CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;

constexpr CUfunction_attribute CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
constexpr CUfunction_attribute CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
constexpr CUfunction_attribute CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

constexpr unsigned CU_STREAM_NON_BLOCKING = 0x1;
constexpr unsigned CU_EVENT_DEFAULT = 0x0;
constexpr unsigned CU_STREAM_WAIT_VALUE_GEQ = 0x0;
constexpr unsigned CU_MEMHOSTALLOC_PORTABLE = 0x01;
constexpr unsigned CU_MEMHOSTALLOC_DEVICEMAP = 0x02;

constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

// X(field, return type, parameters, symbol names to try in order). Symbols are the
// versioned names cuda.h maps its macros to (cuMemAlloc -> cuMemAlloc_v2).
#define MB_CU_REQUIRED(X)                                                                            \
  X(cuInit, CUresult, (unsigned), "cuInit")                                                          \
  X(cuDriverGetVersion, CUresult, (int*), "cuDriverGetVersion")                                      \
  X(cuGetErrorName, CUresult, (CUresult, const char**), "cuGetErrorName")                            \
  X(cuGetErrorString, CUresult, (CUresult, const char**), "cuGetErrorString")                        \
  X(cuDeviceGetCount, CUresult, (int*), "cuDeviceGetCount")                                          \
  X(cuDeviceGet, CUresult, (CUdevice*, int), "cuDeviceGet")                                          \
  X(cuDeviceGetName, CUresult, (char*, int, CUdevice), "cuDeviceGetName")                            \
  X(cuDeviceGetAttribute, CUresult, (int*, CUdevice_attribute, CUdevice), "cuDeviceGetAttribute")    \
  X(cuDeviceTotalMem, CUresult, (size_t*, CUdevice), "cuDeviceTotalMem_v2")                          \
  X(cuDevicePrimaryCtxRetain, CUresult, (CUcontext*, CUdevice), "cuDevicePrimaryCtxRetain")          \
  X(cuDevicePrimaryCtxRelease, CUresult, (CUdevice), "cuDevicePrimaryCtxRelease_v2",                 \
    "cuDevicePrimaryCtxRelease")                                                                     \
  X(cuCtxSetCurrent, CUresult, (CUcontext), "cuCtxSetCurrent")                                       \
  X(cuCtxGetCurrent, CUresult, (CUcontext*), "cuCtxGetCurrent")                                      \
  X(cuStreamCreate, CUresult, (CUstream*, unsigned), "cuStreamCreate")                               \
  X(cuStreamDestroy, CUresult, (CUstream), "cuStreamDestroy_v2", "cuStreamDestroy")                  \
  X(cuStreamSynchronize, CUresult, (CUstream), "cuStreamSynchronize")                                \
  X(cuMemAlloc, CUresult, (CUdeviceptr*, size_t), "cuMemAlloc_v2")                                   \
  X(cuMemFree, CUresult, (CUdeviceptr), "cuMemFree_v2")                                              \
  X(cuMemcpyHtoDAsync, CUresult, (CUdeviceptr, const void*, size_t, CUstream), "cuMemcpyHtoDAsync_v2") \
  X(cuMemcpyDtoHAsync, CUresult, (void*, CUdeviceptr, size_t, CUstream), "cuMemcpyDtoHAsync_v2")     \
  X(cuMemsetD8Async, CUresult, (CUdeviceptr, unsigned char, size_t, CUstream), "cuMemsetD8Async")    \
  X(cuMemcpyDtoDAsync, CUresult, (CUdeviceptr, CUdeviceptr, size_t, CUstream), "cuMemcpyDtoDAsync_v2") \
  X(cuDeviceGetPCIBusId, CUresult, (char*, int, CUdevice), "cuDeviceGetPCIBusId")                    \
  X(cuMemHostAlloc, CUresult, (void**, size_t, unsigned), "cuMemHostAlloc")                          \
  X(cuMemFreeHost, CUresult, (void*), "cuMemFreeHost")                                               \
  X(cuMemHostGetDevicePointer, CUresult, (CUdeviceptr*, void*, unsigned), "cuMemHostGetDevicePointer_v2") \
  X(cuModuleLoadData, CUresult, (CUmodule*, const void*), "cuModuleLoadData")                        \
  X(cuModuleLoadDataEx, CUresult, (CUmodule*, const void*, unsigned, CUjit_option*, void**),         \
    "cuModuleLoadDataEx")                                                                            \
  X(cuModuleUnload, CUresult, (CUmodule), "cuModuleUnload")                                          \
  X(cuModuleGetFunction, CUresult, (CUfunction*, CUmodule, const char*), "cuModuleGetFunction")      \
  X(cuFuncGetAttribute, CUresult, (int*, CUfunction_attribute, CUfunction), "cuFuncGetAttribute")    \
  X(cuFuncSetAttribute, CUresult, (CUfunction, CUfunction_attribute, int), "cuFuncSetAttribute")     \
  X(cuModuleGetGlobal, CUresult, (CUdeviceptr*, size_t*, CUmodule, const char*), "cuModuleGetGlobal_v2") \
  X(cuLaunchKernel, CUresult,                                                                        \
    (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,     \
     void**, void**),                                                                                \
    "cuLaunchKernel")                                                                                \
  X(cuEventCreate, CUresult, (CUevent*, unsigned), "cuEventCreate")                                  \
  X(cuEventDestroy, CUresult, (CUevent), "cuEventDestroy_v2", "cuEventDestroy")                      \
  X(cuEventRecord, CUresult, (CUevent, CUstream), "cuEventRecord")                                   \
  X(cuEventElapsedTime, CUresult, (float*, CUevent, CUevent), "cuEventElapsedTime_v2",               \
    "cuEventElapsedTime")

// Missing from older drivers; the backend has a fallback for each.
#define MB_CU_OPTIONAL(X)                                                                            \
  X(cuStreamWaitValue32, CUresult, (CUstream, CUdeviceptr, uint32_t, unsigned),                      \
    "cuStreamWaitValue32_v2", "cuStreamWaitValue32")                                                 \
  X(cuFuncGetParamInfo, CUresult, (CUfunction, size_t, size_t*, size_t*), "cuFuncGetParamInfo")

// ---- NVRTC ------------------------------------------------------------------------------

using nvrtcResult = int;
using nvrtcProgram = struct _nvrtcProgram*;
constexpr nvrtcResult NVRTC_SUCCESS = 0;

#define MB_NVRTC_REQUIRED(X)                                                                         \
  X(nvrtcVersion, nvrtcResult, (int*, int*), "nvrtcVersion")                                         \
  X(nvrtcGetErrorString, const char*, (nvrtcResult), "nvrtcGetErrorString")                          \
  X(nvrtcCreateProgram, nvrtcResult,                                                                 \
    (nvrtcProgram*, const char*, const char*, int, const char* const*, const char* const*),          \
    "nvrtcCreateProgram")                                                                            \
  X(nvrtcDestroyProgram, nvrtcResult, (nvrtcProgram*), "nvrtcDestroyProgram")                        \
  X(nvrtcCompileProgram, nvrtcResult, (nvrtcProgram, int, const char* const*), "nvrtcCompileProgram") \
  X(nvrtcGetProgramLogSize, nvrtcResult, (nvrtcProgram, size_t*), "nvrtcGetProgramLogSize")          \
  X(nvrtcGetProgramLog, nvrtcResult, (nvrtcProgram, char*), "nvrtcGetProgramLog")                    \
  X(nvrtcGetPTXSize, nvrtcResult, (nvrtcProgram, size_t*), "nvrtcGetPTXSize")                        \
  X(nvrtcGetPTX, nvrtcResult, (nvrtcProgram, char*), "nvrtcGetPTX")

// CUDA 11.1 and later; without them the backend compiles to PTX for the driver to finish.
#define MB_NVRTC_OPTIONAL(X)                                                                         \
  X(nvrtcGetCUBINSize, nvrtcResult, (nvrtcProgram, size_t*), "nvrtcGetCUBINSize")                    \
  X(nvrtcGetCUBIN, nvrtcResult, (nvrtcProgram, char*), "nvrtcGetCUBIN")                              \
  X(nvrtcGetNumSupportedArchs, nvrtcResult, (int*), "nvrtcGetNumSupportedArchs")                     \
  X(nvrtcGetSupportedArchs, nvrtcResult, (int*), "nvrtcGetSupportedArchs")

// ---- cuBLAS and cuBLASLt ----------------------------------------------------------------

using cublasStatus_t = int;
using cublasHandle_t = struct cublasContext*;
using cublasLtHandle_t = struct cublasLtContext*;
using cudaDataType = int;
using cublasComputeType_t = int;
using cublasOperation_t = int;

struct cublasLtMatrixLayoutOpaque_t { uint64_t data[14]; };
struct cublasLtMatmulDescOpaque_t { uint64_t data[32]; };
struct cublasLtMatmulPreferenceOpaque_t { uint64_t data[12]; };
using cublasLtMatrixLayout_t = cublasLtMatrixLayoutOpaque_t*;
using cublasLtMatmulDesc_t = cublasLtMatmulDescOpaque_t*;
using cublasLtMatmulPreference_t = cublasLtMatmulPreferenceOpaque_t*;
struct cublasLtMatmulAlgo_t { uint64_t data[8]; };
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;
constexpr cublasOperation_t CUBLAS_OP_N = 0;
constexpr cublasOperation_t CUBLAS_OP_T = 1;
constexpr cudaDataType CUDA_R_32F = 0;
constexpr cudaDataType CUDA_R_16F = 2;
constexpr cudaDataType CUDA_R_16BF = 14;
constexpr cublasComputeType_t CUBLAS_COMPUTE_32F = 68;
constexpr int CUBLAS_GEMM_DEFAULT = -1;

constexpr int CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5;           // int32_t
constexpr int CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6;  // int64_t
constexpr int CUBLASLT_MATMUL_DESC_TRANSA = 3;                  // int32_t
constexpr int CUBLASLT_MATMUL_DESC_TRANSB = 4;                  // int32_t
constexpr int CUBLASLT_MATMUL_DESC_EPILOGUE = 7;                // uint32_t
constexpr int CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8;            // const void*
constexpr uint32_t CUBLASLT_EPILOGUE_BIAS = 4;
constexpr int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;    // uint64_t
constexpr int CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = 3;  // uint32_t
constexpr uint32_t CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE = 2;  // split-K partials summed in the compute type
constexpr int CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16;  // cublasMath_t flag, same meaning
constexpr int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5;  // uint32_t, B C D follow
constexpr int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
constexpr int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
constexpr int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;

#define MB_CUBLAS_REQUIRED(X)                                                                        \
  X(cublasCreate, cublasStatus_t, (cublasHandle_t*), "cublasCreate_v2")                              \
  X(cublasDestroy, cublasStatus_t, (cublasHandle_t), "cublasDestroy_v2")                             \
  X(cublasGetVersion, cublasStatus_t, (cublasHandle_t, int*), "cublasGetVersion_v2")                 \
  X(cublasSetStream, cublasStatus_t, (cublasHandle_t, CUstream), "cublasSetStream_v2")               \
  X(cublasSetWorkspace, cublasStatus_t, (cublasHandle_t, void*, size_t), "cublasSetWorkspace_v2")    \
  X(cublasSetMathMode, cublasStatus_t, (cublasHandle_t, int), "cublasSetMathMode")                   \
  X(cublasGemmStridedBatchedEx, cublasStatus_t,                                                      \
    (cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*,  \
     cudaDataType, int, long long, const void*, cudaDataType, int, long long, const void*, void*,    \
     cudaDataType, int, long long, int, cublasComputeType_t, int),                                   \
    "cublasGemmStridedBatchedEx")

#define MB_CUBLASLT_REQUIRED(X)                                                                      \
  X(cublasLtCreate, cublasStatus_t, (cublasLtHandle_t*), "cublasLtCreate")                           \
  X(cublasLtDestroy, cublasStatus_t, (cublasLtHandle_t), "cublasLtDestroy")                          \
  X(cublasLtGetVersion, size_t, (), "cublasLtGetVersion")                                            \
  X(cublasLtMatmulDescCreate, cublasStatus_t, (cublasLtMatmulDesc_t*, cublasComputeType_t, cudaDataType), \
    "cublasLtMatmulDescCreate")                                                                      \
  X(cublasLtMatmulDescDestroy, cublasStatus_t, (cublasLtMatmulDesc_t), "cublasLtMatmulDescDestroy")  \
  X(cublasLtMatmulDescSetAttribute, cublasStatus_t, (cublasLtMatmulDesc_t, int, const void*, size_t), \
    "cublasLtMatmulDescSetAttribute")                                                                \
  X(cublasLtMatrixLayoutCreate, cublasStatus_t,                                                      \
    (cublasLtMatrixLayout_t*, cudaDataType, uint64_t, uint64_t, int64_t), "cublasLtMatrixLayoutCreate") \
  X(cublasLtMatrixLayoutDestroy, cublasStatus_t, (cublasLtMatrixLayout_t), "cublasLtMatrixLayoutDestroy") \
  X(cublasLtMatrixLayoutSetAttribute, cublasStatus_t, (cublasLtMatrixLayout_t, int, const void*, size_t), \
    "cublasLtMatrixLayoutSetAttribute")                                                              \
  X(cublasLtMatmulPreferenceCreate, cublasStatus_t, (cublasLtMatmulPreference_t*),                   \
    "cublasLtMatmulPreferenceCreate")                                                                \
  X(cublasLtMatmulPreferenceDestroy, cublasStatus_t, (cublasLtMatmulPreference_t),                   \
    "cublasLtMatmulPreferenceDestroy")                                                               \
  X(cublasLtMatmulPreferenceSetAttribute, cublasStatus_t,                                            \
    (cublasLtMatmulPreference_t, int, const void*, size_t), "cublasLtMatmulPreferenceSetAttribute")  \
  X(cublasLtMatmulAlgoGetHeuristic, cublasStatus_t,                                                  \
    (cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,         \
     cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,                \
     cublasLtMatmulHeuristicResult_t*, int*),                                                        \
    "cublasLtMatmulAlgoGetHeuristic")                                                                \
  X(cublasLtMatmul, cublasStatus_t,                                                                  \
    (cublasLtHandle_t, cublasLtMatmulDesc_t, const void*, const void*, cublasLtMatrixLayout_t,       \
     const void*, cublasLtMatrixLayout_t, const void*, const void*, cublasLtMatrixLayout_t, void*,   \
     cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*, void*, size_t, CUstream),                  \
    "cublasLtMatmul")

#define MB_CUDA_POINTER(name, ret, params, ...) ret(*name) params = nullptr;

struct DriverApi {
  MB_CU_REQUIRED(MB_CUDA_POINTER)
  MB_CU_OPTIONAL(MB_CUDA_POINTER)
};

struct NvrtcApi {
  MB_NVRTC_REQUIRED(MB_CUDA_POINTER)
  MB_NVRTC_OPTIONAL(MB_CUDA_POINTER)
};

struct CublasApi {
  MB_CUBLAS_REQUIRED(MB_CUDA_POINTER)
  MB_CUBLASLT_REQUIRED(MB_CUDA_POINTER)
};

}  // namespace mb::cuda
