/*
 * cuda_check.c - compile-time check of csrc/cuda_shim.h against the real
 * cuda.h. Our opaque handle types are mapped onto NVIDIA's and each real
 * prototype is assigned to our function-pointer type, so -Werror fails the
 * build if a declaration of ours drifts from the driver's. build.sh compiles
 * it wherever cuda.h is found; it is never linked.
 */
#include <cuda.h>
#include <cudaTypedefs.h>

#define MEGAIO_CUDA_CHECK
#define megaio_CUctx_st CUctx_st
#define megaio_CUmod_st CUmod_st
#define megaio_CUfunc_st CUfunc_st
#define megaio_CUstream_st CUstream_st
#define megaio_CUevent_st CUevent_st
#include "cuda_shim.h"

_Static_assert(sizeof(CUdeviceptr) == sizeof(megaio_CUdeviceptr), "CUdeviceptr");
_Static_assert(sizeof(CUresult) == sizeof(int), "CUresult is returned like an int");
_Static_assert(sizeof(CUdevice) == sizeof(megaio_CUdevice), "CUdevice");
_Static_assert(CUDA_SUCCESS == MEGAIO_CUDA_SUCCESS, "SUCCESS");
_Static_assert(CUDA_ERROR_NO_DEVICE == MEGAIO_CUDA_ERROR_NO_DEVICE, "NO_DEVICE");
_Static_assert(CUDA_ERROR_INVALID_DEVICE == MEGAIO_CUDA_ERROR_INVALID_DEVICE, "INVALID_DEVICE");
#define MEGAIO_CHECK_CODE(c, name) _Static_assert(name == c, #name);
MEGAIO_CUDA_CODES(MEGAIO_CHECK_CODE)
#undef MEGAIO_CHECK_CODE
_Static_assert(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED == MEGAIO_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, "712");
_Static_assert(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED == MEGAIO_CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, "713");
_Static_assert(CU_MEMHOSTREGISTER_PORTABLE == MEGAIO_CU_MEMHOSTREGISTER_PORTABLE, "PORTABLE");
_Static_assert(CUDA_ERROR_NOT_READY == MEGAIO_CUDA_ERROR_NOT_READY, "NOT_READY");
_Static_assert(CU_STREAM_NON_BLOCKING == MEGAIO_CU_STREAM_NON_BLOCKING, "NON_BLOCKING");
_Static_assert(CU_EVENT_DISABLE_TIMING == MEGAIO_CU_EVENT_DISABLE_TIMING, "DISABLE_TIMING");
_Static_assert(CU_MEMHOSTREGISTER_DEVICEMAP == MEGAIO_CU_MEMHOSTREGISTER_DEVICEMAP, "DEVICEMAP");

megaio_cuInit_t check_cuInit = cuInit;
megaio_cuDriverGetVersion_t check_cuDriverGetVersion = cuDriverGetVersion;
megaio_cuDeviceGetCount_t check_cuDeviceGetCount = cuDeviceGetCount;
megaio_cuDeviceGet_t check_cuDeviceGet = cuDeviceGet;
megaio_cuDeviceGetName_t check_cuDeviceGetName = cuDeviceGetName;
megaio_cuDevicePrimaryCtxRetain_t check_cuDevicePrimaryCtxRetain = cuDevicePrimaryCtxRetain;
megaio_cuDevicePrimaryCtxRelease_t check_cuDevicePrimaryCtxRelease = cuDevicePrimaryCtxRelease;
megaio_cuCtxSetCurrent_t check_cuCtxSetCurrent = cuCtxSetCurrent;
megaio_cuCtxSynchronize_t check_cuCtxSynchronize = cuCtxSynchronize;
megaio_cuMemHostRegister_t check_cuMemHostRegister = cuMemHostRegister;
megaio_cuMemHostUnregister_t check_cuMemHostUnregister = cuMemHostUnregister;
megaio_cuMemHostGetDevicePointer_t check_cuMemHostGetDevicePointer = cuMemHostGetDevicePointer;
megaio_cuMemAlloc_t check_cuMemAlloc = cuMemAlloc;
megaio_cuMemFree_t check_cuMemFree = cuMemFree;
megaio_cuMemcpyHtoD_t check_cuMemcpyHtoD = cuMemcpyHtoD;
megaio_cuMemcpyDtoH_t check_cuMemcpyDtoH = cuMemcpyDtoH;
megaio_cuModuleLoadData_t check_cuModuleLoadData = cuModuleLoadData;
megaio_cuModuleUnload_t check_cuModuleUnload = cuModuleUnload;
megaio_cuModuleGetFunction_t check_cuModuleGetFunction = cuModuleGetFunction;
megaio_cuLaunchKernel_t check_cuLaunchKernel = cuLaunchKernel;
megaio_cuGetErrorName_t check_cuGetErrorName = cuGetErrorName;
megaio_cuGetErrorString_t check_cuGetErrorString = cuGetErrorString;
megaio_cuMemGetAddressRange_t check_cuMemGetAddressRange = cuMemGetAddressRange;
megaio_cuMemcpyHtoDAsync_t check_cuMemcpyHtoDAsync = cuMemcpyHtoDAsync;
megaio_cuMemcpyDtoHAsync_t check_cuMemcpyDtoHAsync = cuMemcpyDtoHAsync;
megaio_cuStreamCreate_t check_cuStreamCreate = cuStreamCreate;
megaio_cuStreamDestroy_t check_cuStreamDestroy = cuStreamDestroy;
megaio_cuStreamSynchronize_t check_cuStreamSynchronize = cuStreamSynchronize;
megaio_cuEventCreate_t check_cuEventCreate = cuEventCreate;
megaio_cuEventDestroy_t check_cuEventDestroy = cuEventDestroy;
megaio_cuEventRecord_t check_cuEventRecord = cuEventRecord;
megaio_cuEventQuery_t check_cuEventQuery = cuEventQuery;

/* cuGetProcAddress is looked up by dlsym under its plain name, which every
 * driver since CUDA 11.3 exports with the 11.3 signature (4 arguments).
 * From CUDA 12, cuda.h's cuGetProcAddress is a macro for the 5-argument
 * cuGetProcAddress_v2, so there the check is against the typedef of the
 * 11.3 version. */
#if CUDA_VERSION >= 12000
megaio_cuGetProcAddress_t check_cuGetProcAddress = (PFN_cuGetProcAddress_v11030)0;
#else
megaio_cuGetProcAddress_t check_cuGetProcAddress = cuGetProcAddress;
#endif
