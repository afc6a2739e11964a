/*
 * cuda_shim.h - megaio's own minimal declarations of the CUDA driver API
 * entry points it uses, loaded at run time with dlopen("libcuda.so.1"):
 * nothing links -lcuda, so megaio builds and runs where CUDA is absent.
 * These are written from the driver API's documented types; csrc/cuda_check.c
 * checks them against the real cuda.h wherever one is installed.
 */
#ifndef MEGAIO_CUDA_SHIM_H
#define MEGAIO_CUDA_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef MEGAIO_CUDA_CHECK
typedef CUresult megaio_CUresult; /* cuda_check.c: compare against the real enum */
#else
typedef int megaio_CUresult; /* CUresult: an enum, returned like an int */
#endif
typedef int megaio_CUdevice;               /* CUdevice */
typedef struct megaio_CUctx_st *megaio_CUcontext;
typedef struct megaio_CUmod_st *megaio_CUmodule;
typedef struct megaio_CUfunc_st *megaio_CUfunction;
typedef struct megaio_CUstream_st *megaio_CUstream;
typedef struct megaio_CUevent_st *megaio_CUevent;
typedef unsigned long long megaio_CUdeviceptr; /* CUdeviceptr_v2 */

#define MEGAIO_CUDA_SUCCESS 0
#define MEGAIO_CUDA_ERROR_NO_DEVICE 100
#define MEGAIO_CUDA_ERROR_INVALID_DEVICE 101
#define MEGAIO_CUDA_ERROR_NOT_READY 600
#define MEGAIO_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED 712
#define MEGAIO_CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED 713

/* The CUresult codes megaio names when the driver cannot (it is not loaded,
 * or too old to name one): X(code, name). csrc/cuda_check.c checks each
 * against cuda.h. */
#define MEGAIO_CUDA_CODES(X)                         \
	X(1, CUDA_ERROR_INVALID_VALUE)                   \
	X(2, CUDA_ERROR_OUT_OF_MEMORY)                   \
	X(3, CUDA_ERROR_NOT_INITIALIZED)                 \
	X(100, CUDA_ERROR_NO_DEVICE)                     \
	X(101, CUDA_ERROR_INVALID_DEVICE)                \
	X(200, CUDA_ERROR_INVALID_IMAGE)                 \
	X(209, CUDA_ERROR_NO_BINARY_FOR_GPU)             \
	X(500, CUDA_ERROR_NOT_FOUND)                     \
	X(600, CUDA_ERROR_NOT_READY)                     \
	X(712, CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED) \
	X(713, CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED)    \
	X(719, CUDA_ERROR_LAUNCH_FAILED)                 \
	X(801, CUDA_ERROR_NOT_SUPPORTED)

/* The name of a code in the table above, or NULL. */
const char *megaio_cuda_code_name(int code);
#define MEGAIO_CU_MEMHOSTREGISTER_PORTABLE 0x01
#define MEGAIO_CU_MEMHOSTREGISTER_DEVICEMAP 0x02
#define MEGAIO_CU_STREAM_NON_BLOCKING 0x1
#define MEGAIO_CU_EVENT_DISABLE_TIMING 0x2

/* The entry points, as function-pointer types. */
typedef megaio_CUresult (*megaio_cuInit_t)(unsigned int flags);
typedef megaio_CUresult (*megaio_cuDriverGetVersion_t)(int *version);
typedef megaio_CUresult (*megaio_cuDeviceGetCount_t)(int *count);
typedef megaio_CUresult (*megaio_cuDeviceGet_t)(megaio_CUdevice *dev, int ordinal);
typedef megaio_CUresult (*megaio_cuDeviceGetName_t)(char *name, int len, megaio_CUdevice dev);
typedef megaio_CUresult (*megaio_cuDevicePrimaryCtxRetain_t)(megaio_CUcontext *ctx, megaio_CUdevice dev);
typedef megaio_CUresult (*megaio_cuDevicePrimaryCtxRelease_t)(megaio_CUdevice dev);
typedef megaio_CUresult (*megaio_cuCtxSetCurrent_t)(megaio_CUcontext ctx);
typedef megaio_CUresult (*megaio_cuCtxSynchronize_t)(void);
typedef megaio_CUresult (*megaio_cuMemHostRegister_t)(void *p, size_t bytes, unsigned int flags);
typedef megaio_CUresult (*megaio_cuMemHostUnregister_t)(void *p);
typedef megaio_CUresult (*megaio_cuMemHostGetDevicePointer_t)(megaio_CUdeviceptr *dptr, void *p, unsigned int flags);
typedef megaio_CUresult (*megaio_cuMemAlloc_t)(megaio_CUdeviceptr *dptr, size_t bytes);
typedef megaio_CUresult (*megaio_cuMemFree_t)(megaio_CUdeviceptr dptr);
typedef megaio_CUresult (*megaio_cuMemcpyHtoD_t)(megaio_CUdeviceptr dst, const void *src, size_t bytes);
typedef megaio_CUresult (*megaio_cuMemcpyDtoH_t)(void *dst, megaio_CUdeviceptr src, size_t bytes);
typedef megaio_CUresult (*megaio_cuModuleLoadData_t)(megaio_CUmodule *mod, const void *image);
typedef megaio_CUresult (*megaio_cuModuleUnload_t)(megaio_CUmodule mod);
typedef megaio_CUresult (*megaio_cuModuleGetFunction_t)(megaio_CUfunction *fn, megaio_CUmodule mod, const char *name);
typedef megaio_CUresult (*megaio_cuLaunchKernel_t)(megaio_CUfunction f, unsigned gx, unsigned gy, unsigned gz,
						  unsigned bx, unsigned by, unsigned bz, unsigned shmem,
						  megaio_CUstream stream, void **params, void **extra);
typedef megaio_CUresult (*megaio_cuMemGetAddressRange_t)(megaio_CUdeviceptr *base, size_t *size, megaio_CUdeviceptr p);
typedef megaio_CUresult (*megaio_cuMemcpyHtoDAsync_t)(megaio_CUdeviceptr dst, const void *src, size_t bytes,
						      megaio_CUstream stream);
typedef megaio_CUresult (*megaio_cuMemcpyDtoHAsync_t)(void *dst, megaio_CUdeviceptr src, size_t bytes,
						      megaio_CUstream stream);
typedef megaio_CUresult (*megaio_cuStreamCreate_t)(megaio_CUstream *stream, unsigned int flags);
typedef megaio_CUresult (*megaio_cuStreamDestroy_t)(megaio_CUstream stream);
typedef megaio_CUresult (*megaio_cuStreamSynchronize_t)(megaio_CUstream stream);
typedef megaio_CUresult (*megaio_cuEventCreate_t)(megaio_CUevent *event, unsigned int flags);
typedef megaio_CUresult (*megaio_cuEventDestroy_t)(megaio_CUevent event);
typedef megaio_CUresult (*megaio_cuEventRecord_t)(megaio_CUevent event, megaio_CUstream stream);
typedef megaio_CUresult (*megaio_cuEventQuery_t)(megaio_CUevent event);
typedef megaio_CUresult (*megaio_cuGetErrorName_t)(megaio_CUresult err, const char **name);
typedef megaio_CUresult (*megaio_cuGetErrorString_t)(megaio_CUresult err, const char **str);
/* cuGetProcAddress as the driver exports it under that name (CUDA 11.3+). */
typedef megaio_CUresult (*megaio_cuGetProcAddress_t)(const char *symbol, void **pfn, int cuda_version,
						    uint64_t flags); /* cuuint64_t */

struct megaio_cuda {
	void *lib;
	megaio_cuInit_t cuInit;
	megaio_cuDriverGetVersion_t cuDriverGetVersion;
	megaio_cuDeviceGetCount_t cuDeviceGetCount;
	megaio_cuDeviceGet_t cuDeviceGet;
	megaio_cuDeviceGetName_t cuDeviceGetName;
	megaio_cuDevicePrimaryCtxRetain_t cuDevicePrimaryCtxRetain;
	megaio_cuDevicePrimaryCtxRelease_t cuDevicePrimaryCtxRelease;
	megaio_cuCtxSetCurrent_t cuCtxSetCurrent;
	megaio_cuCtxSynchronize_t cuCtxSynchronize;
	megaio_cuMemHostRegister_t cuMemHostRegister;
	megaio_cuMemHostUnregister_t cuMemHostUnregister;
	megaio_cuMemHostGetDevicePointer_t cuMemHostGetDevicePointer;
	megaio_cuMemAlloc_t cuMemAlloc;
	megaio_cuMemFree_t cuMemFree;
	megaio_cuMemcpyHtoD_t cuMemcpyHtoD;
	megaio_cuMemcpyDtoH_t cuMemcpyDtoH;
	megaio_cuModuleLoadData_t cuModuleLoadData;
	megaio_cuModuleUnload_t cuModuleUnload;
	megaio_cuModuleGetFunction_t cuModuleGetFunction;
	megaio_cuLaunchKernel_t cuLaunchKernel;
	megaio_cuMemGetAddressRange_t cuMemGetAddressRange;
	megaio_cuMemcpyHtoDAsync_t cuMemcpyHtoDAsync;
	megaio_cuMemcpyDtoHAsync_t cuMemcpyDtoHAsync;
	megaio_cuStreamCreate_t cuStreamCreate;
	megaio_cuStreamDestroy_t cuStreamDestroy;
	megaio_cuStreamSynchronize_t cuStreamSynchronize;
	megaio_cuEventCreate_t cuEventCreate;
	megaio_cuEventDestroy_t cuEventDestroy;
	megaio_cuEventRecord_t cuEventRecord;
	megaio_cuEventQuery_t cuEventQuery;
	megaio_cuGetErrorName_t cuGetErrorName;
	megaio_cuGetErrorString_t cuGetErrorString;
};

/* Loads the driver library (libname, normally "libcuda.so.1") and resolves
 * every entry point. Returns 0; -1 when the library cannot be opened (the
 * dlerror text is copied to err); -2 when an entry point is missing (its
 * name is copied to err). */
int megaio_cuda_load(struct megaio_cuda *c, const char *libname, char *err, size_t errlen);

/* Calls a kernel on stream with up to 8 pointer-sized arguments, each
 * passed by value from args. grid and block are x, y, z. */
megaio_CUresult megaio_cuda_launch(struct megaio_cuda *c, megaio_CUfunction f, const unsigned grid[3],
				   const unsigned block[3], unsigned shmem, megaio_CUstream stream, const uint64_t *args,
				   int nargs);

#endif
