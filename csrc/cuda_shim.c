/* cuda_shim.c - see cuda_shim.h. Compiled through cuda_cgo.go's preamble. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "cuda_shim.h"
#include "dl.h"

/* The CUDA version whose entry-point ABIs these declarations describe:
 * cuGetProcAddress returns the variant of each function that matches it
 * (e.g. cuMemHostRegister_v2, cuMemAlloc_v2). */
#define MEGAIO_CUDA_ABI 12000

/* Each entry point by its base name, for cuGetProcAddress, and its
 * exported (versioned) symbol, for dlsym. */
#define E(base, versioned) {#base, versioned, offsetof(struct megaio_cuda, base)}
static const struct megaio_symbol entries[] = {
	E(cuInit, "cuInit"),
	E(cuDriverGetVersion, "cuDriverGetVersion"),
	E(cuDeviceGetCount, "cuDeviceGetCount"),
	E(cuDeviceGet, "cuDeviceGet"),
	E(cuDeviceGetName, "cuDeviceGetName"),
	E(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
	E(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
	E(cuCtxSetCurrent, "cuCtxSetCurrent"),
	E(cuCtxSynchronize, "cuCtxSynchronize"),
	E(cuMemHostRegister, "cuMemHostRegister_v2"),
	E(cuMemHostUnregister, "cuMemHostUnregister"),
	E(cuMemHostGetDevicePointer, "cuMemHostGetDevicePointer_v2"),
	E(cuMemAlloc, "cuMemAlloc_v2"),
	E(cuMemFree, "cuMemFree_v2"),
	E(cuMemcpyHtoD, "cuMemcpyHtoD_v2"),
	E(cuMemcpyDtoH, "cuMemcpyDtoH_v2"),
	E(cuModuleLoadData, "cuModuleLoadData"),
	E(cuModuleUnload, "cuModuleUnload"),
	E(cuModuleGetFunction, "cuModuleGetFunction"),
	E(cuLaunchKernel, "cuLaunchKernel"),
	E(cuMemGetAddressRange, "cuMemGetAddressRange_v2"),
	E(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"),
	E(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"),
	E(cuStreamCreate, "cuStreamCreate"),
	E(cuStreamDestroy, "cuStreamDestroy_v2"),
	E(cuStreamSynchronize, "cuStreamSynchronize"),
	E(cuEventCreate, "cuEventCreate"),
	E(cuEventDestroy, "cuEventDestroy_v2"),
	E(cuEventRecord, "cuEventRecord"),
	E(cuEventQuery, "cuEventQuery"),
	E(cuGetErrorName, "cuGetErrorName"),
	E(cuGetErrorString, "cuGetErrorString"),
};

/* The driver's own resolver (CUDA 11.3+): the variant of each entry point
 * that matches MEGAIO_CUDA_ABI. */
static void *resolve(void *lib, const char *name)
{
	megaio_cuGetProcAddress_t gpa = (megaio_cuGetProcAddress_t)dlsym(lib, "cuGetProcAddress");
	void *fn = NULL;
	if (gpa && gpa(name, &fn, MEGAIO_CUDA_ABI, 0) != MEGAIO_CUDA_SUCCESS)
		fn = NULL;
	return fn;
}

int megaio_cuda_load(struct megaio_cuda *c, const char *libname, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if (!(c->lib = megaio_dlopen(libname, err, errlen)))
		return -1;
	if (megaio_load_symbols(&c->lib, c, entries, sizeof(entries) / sizeof(entries[0]), resolve, err, errlen))
		return -2;
	return 0;
}

megaio_CUresult megaio_cuda_launch(struct megaio_cuda *c, megaio_CUfunction f, const unsigned grid[3],
				   const unsigned block[3], unsigned shmem, megaio_CUstream stream, const uint64_t *args,
				   int nargs)
{
	uint64_t vals[8];
	void *params[8];
	for (int i = 0; i < nargs && i < 8; i++) {
		vals[i] = args[i];
		params[i] = &vals[i];
	}
	return c->cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2], shmem, stream, params,
				 NULL);
}

const char *megaio_cuda_code_name(int code)
{
	switch (code) {
#define MEGAIO_NAME(c, name) \
	case c:              \
		return #name;
		MEGAIO_CUDA_CODES(MEGAIO_NAME)
#undef MEGAIO_NAME
	}
	return NULL;
}
