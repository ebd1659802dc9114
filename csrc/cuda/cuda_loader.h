// Finding and opening the CUDA libraries at run time.
//
// libcuda.so.1 comes with the NVIDIA driver. NVRTC and cuBLAS come from a CUDA
// toolkit or from NVIDIA's Python wheels (nvidia-cuda-nvrtc, nvidia-cublas); they
// are searched, in this order:
//   1. METALBENCH_NVRTC / METALBENCH_CUBLAS: a library file or the folder holding it;
//   2. a copy this process has already loaded (torch, cupy, ...), so both agree;
//   3. the dynamic loader's own search (LD_LIBRARY_PATH, ldconfig);
//   4. CUDA_HOME, CUDA_PATH, /usr/local/cuda, /usr/local/cuda-*, /opt/cuda;
//   5. the nvidia/ wheels of the site-packages metalbench is installed in, and of
//      every PYTHONPATH entry (nvidia/cu13/lib, nvidia/cu12/lib, nvidia/cuda_nvrtc/lib,
//      nvidia/cublas/lib).
// Where several are found, the first whose major version the driver supports wins.
#pragma once

#include <string>
#include <vector>

#include "cuda_api.h"

namespace mb::cuda {

struct DriverLoad {
  DriverApi api;
  std::string error;  // why the driver cannot be used ("" when it can)
  int version = 0;    // cuDriverGetVersion: 1000 * major + 10 * minor
  std::string path;
};

struct NvrtcLoad {
  NvrtcApi api;
  std::string error;
  std::string path;
  int major = 0, minor = 0;
  std::vector<int> archs;  // compute capabilities NVRTC can target, e.g. 90
};

struct CublasLoad {
  CublasApi api;
  std::string error;
  std::string path;  // of libcublas
  int version = 0;   // cublasLtGetVersion, e.g. 130000
};

// Each is loaded once per process; `error` says what is missing and how to get it.
const DriverLoad& driver_load();
const NvrtcLoad& nvrtc_load();
const CublasLoad& cublas_load();

// The loaded API, or UnavailableError naming what is missing.
const DriverApi& driver();
const NvrtcApi& nvrtc();
const CublasApi& cublas();

// "CUDA_ERROR_ILLEGAL_ADDRESS (700): an illegal memory access was encountered"
std::string cu_error(CUresult code);
// Throws DeviceError("[cuda::<op>] <what> failed: <cu_error>") unless code is CUDA_SUCCESS.
void check(CUresult code, const char* op, const std::string& what);

// The driver's own version string (e.g. "580.159.04"), or "" where it cannot be read.
std::string kernel_driver_version();

}  // namespace mb::cuda
