// The part of the OpenCL 1.2 API this backend calls, declared from the Khronos
// specification so that building needs no OpenCL SDK: the library itself is
// opened at run time (libOpenCL.so.1, the ICD loader).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mb::cl {

using cl_int = int32_t;
using cl_uint = uint32_t;
using cl_ulong = uint64_t;
using cl_bool = cl_uint;
using cl_bitfield = cl_ulong;
using cl_device_type = cl_bitfield;
using cl_command_queue_properties = cl_bitfield;
using cl_mem_flags = cl_bitfield;
using cl_platform_info = cl_uint;
using cl_device_info = cl_uint;
using cl_program_build_info = cl_uint;
using cl_kernel_work_group_info = cl_uint;
using cl_profiling_info = cl_uint;
using cl_context_properties = intptr_t;
using cl_buffer_create_type = cl_uint;

struct cl_buffer_region {
  size_t origin;
  size_t size;
};

using cl_platform_id = struct _cl_platform_id*;
using cl_device_id = struct _cl_device_id*;
using cl_context = struct _cl_context*;
using cl_command_queue = struct _cl_command_queue*;
using cl_mem = struct _cl_mem*;
using cl_program = struct _cl_program*;
using cl_kernel = struct _cl_kernel*;
using cl_event = struct _cl_event*;

constexpr cl_int CL_SUCCESS = 0;
constexpr cl_int CL_COMPLETE = 0;
constexpr cl_bool CL_TRUE = 1;
constexpr cl_device_type CL_DEVICE_TYPE_CPU = 1 << 1;
constexpr cl_device_type CL_DEVICE_TYPE_ALL = 0xFFFFFFFF;

constexpr cl_platform_info CL_PLATFORM_VERSION = 0x0901;
constexpr cl_platform_info CL_PLATFORM_NAME = 0x0902;

constexpr cl_device_info CL_DEVICE_TYPE = 0x1000;
constexpr cl_device_info CL_DEVICE_MAX_COMPUTE_UNITS = 0x1002;
constexpr cl_device_info CL_DEVICE_MAX_WORK_GROUP_SIZE = 0x1004;
constexpr cl_device_info CL_DEVICE_MAX_MEM_ALLOC_SIZE = 0x1010;
constexpr cl_device_info CL_DEVICE_MEM_BASE_ADDR_ALIGN = 0x1019;
constexpr cl_device_info CL_DEVICE_GLOBAL_MEM_CACHE_SIZE = 0x101E;
constexpr cl_device_info CL_DEVICE_GLOBAL_MEM_SIZE = 0x101F;
constexpr cl_device_info CL_DEVICE_NAME = 0x102B;
constexpr cl_device_info CL_DEVICE_VENDOR = 0x102C;
constexpr cl_device_info CL_DRIVER_VERSION = 0x102D;
constexpr cl_device_info CL_DEVICE_HOST_UNIFIED_MEMORY = 0x1035;

constexpr cl_context_properties CL_CONTEXT_PLATFORM = 0x1084;
constexpr cl_command_queue_properties CL_QUEUE_PROFILING_ENABLE = 1 << 1;
constexpr cl_mem_flags CL_MEM_READ_WRITE = 1 << 0;
constexpr cl_program_build_info CL_PROGRAM_BUILD_LOG = 0x1183;
constexpr cl_buffer_create_type CL_BUFFER_CREATE_TYPE_REGION = 0x1220;
constexpr cl_kernel_work_group_info CL_KERNEL_WORK_GROUP_SIZE = 0x11B0;
constexpr cl_kernel_work_group_info CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE = 0x11B3;
constexpr cl_profiling_info CL_PROFILING_COMMAND_START = 0x1282;
constexpr cl_profiling_info CL_PROFILING_COMMAND_END = 0x1283;

// X(name, return type, parameter list) for every entry point used.
#define MB_CL_FUNCTIONS(X)                                                                          \
  X(clGetPlatformIDs, cl_int, (cl_uint, cl_platform_id*, cl_uint*))                                 \
  X(clGetPlatformInfo, cl_int, (cl_platform_id, cl_platform_info, size_t, void*, size_t*))          \
  X(clGetDeviceIDs, cl_int, (cl_platform_id, cl_device_type, cl_uint, cl_device_id*, cl_uint*))     \
  X(clGetDeviceInfo, cl_int, (cl_device_id, cl_device_info, size_t, void*, size_t*))                \
  X(clCreateContext, cl_context,                                                                    \
    (const cl_context_properties*, cl_uint, const cl_device_id*,                                    \
     void (*)(const char*, const void*, size_t, void*), void*, cl_int*))                            \
  X(clReleaseContext, cl_int, (cl_context))                                                         \
  X(clCreateCommandQueue, cl_command_queue,                                                         \
    (cl_context, cl_device_id, cl_command_queue_properties, cl_int*))                               \
  X(clReleaseCommandQueue, cl_int, (cl_command_queue))                                              \
  X(clCreateBuffer, cl_mem, (cl_context, cl_mem_flags, size_t, void*, cl_int*))                     \
  X(clReleaseMemObject, cl_int, (cl_mem))                                                           \
  X(clCreateSubBuffer, cl_mem, (cl_mem, cl_mem_flags, cl_buffer_create_type, const void*, cl_int*))  \
  X(clCreateProgramWithSource, cl_program,                                                          \
    (cl_context, cl_uint, const char**, const size_t*, cl_int*))                                    \
  X(clBuildProgram, cl_int,                                                                         \
    (cl_program, cl_uint, const cl_device_id*, const char*, void (*)(cl_program, void*), void*))    \
  X(clGetProgramBuildInfo, cl_int,                                                                  \
    (cl_program, cl_device_id, cl_program_build_info, size_t, void*, size_t*))                      \
  X(clReleaseProgram, cl_int, (cl_program))                                                         \
  X(clCreateKernel, cl_kernel, (cl_program, const char*, cl_int*))                                  \
  X(clReleaseKernel, cl_int, (cl_kernel))                                                           \
  X(clSetKernelArg, cl_int, (cl_kernel, cl_uint, size_t, const void*))                              \
  X(clGetKernelWorkGroupInfo, cl_int,                                                               \
    (cl_kernel, cl_device_id, cl_kernel_work_group_info, size_t, void*, size_t*))                   \
  X(clEnqueueWriteBuffer, cl_int,                                                                   \
    (cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void*, cl_uint, const cl_event*,      \
     cl_event*))                                                                                    \
  X(clEnqueueReadBuffer, cl_int,                                                                    \
    (cl_command_queue, cl_mem, cl_bool, size_t, size_t, void*, cl_uint, const cl_event*, cl_event*)) \
  X(clEnqueueCopyBuffer, cl_int,                                                                    \
    (cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t, cl_uint, const cl_event*, cl_event*))  \
  X(clEnqueueFillBuffer, cl_int,                                                                    \
    (cl_command_queue, cl_mem, const void*, size_t, size_t, size_t, cl_uint, const cl_event*,       \
     cl_event*))                                                                                    \
  X(clEnqueueNDRangeKernel, cl_int,                                                                 \
    (cl_command_queue, cl_kernel, cl_uint, const size_t*, const size_t*, const size_t*, cl_uint,    \
     const cl_event*, cl_event*))                                                                   \
  X(clFlush, cl_int, (cl_command_queue))                                                            \
  X(clFinish, cl_int, (cl_command_queue))                                                           \
  X(clCreateUserEvent, cl_event, (cl_context, cl_int*))                                             \
  X(clSetUserEventStatus, cl_int, (cl_event, cl_int))                                               \
  X(clGetEventProfilingInfo, cl_int, (cl_event, cl_profiling_info, size_t, void*, size_t*))         \
  X(clReleaseEvent, cl_int, (cl_event))

struct Api {
#define MB_CL_POINTER(name, ret, params) ret(*name) params = nullptr;
  MB_CL_FUNCTIONS(MB_CL_POINTER)
#undef MB_CL_POINTER
};

// Name of an OpenCL error code, for messages.
const char* error_name(cl_int code);

}  // namespace mb::cl
