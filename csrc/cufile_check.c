/*
 * cufile_check.c - compile-time check of csrc/cufile_shim.h against the real
 * cufile.h: every struct's size and field offsets, every constant, and every
 * prototype (assigned to our function-pointer types, so -Werror fails on a
 * drift). build.sh and scripts/gpu-run.sh compile it wherever cufile.h is
 * found; it is never linked. The error codes, some of which exist only in
 * newer cuFile versions, are checked by cufile_codes_check.cc.
 */
#include <stddef.h>
#include <cufile.h>

/* Our entry-point types, spelled with NVIDIA's struct types. */
#define MEGAIO_CUFILE_ERROR_T CUfileError_t
#define MEGAIO_CUFILE_PROPS_T CUfileDrvProps_t
#define MEGAIO_CUFILE_DESCR_T CUfileDescr_t
#define MEGAIO_CUFILE_PARAMS_T CUfileIOParams_t
#define MEGAIO_CUFILE_EVENTS_T CUfileIOEvents_t
#include "cufile_shim.h"

#define SAME_LAYOUT(ours, theirs) _Static_assert(sizeof(ours) == sizeof(theirs), #theirs " size")
#define SAME_OFFSET(ours, of, theirs, tf) \
	_Static_assert(offsetof(ours, of) == offsetof(theirs, tf), #theirs "." #tf " offset")

SAME_LAYOUT(megaio_CUfileError, CUfileError_t);
SAME_OFFSET(megaio_CUfileError, err, CUfileError_t, err);
SAME_OFFSET(megaio_CUfileError, cu_err, CUfileError_t, cu_err);
SAME_LAYOUT(megaio_CUfileDescr, CUfileDescr_t);
SAME_OFFSET(megaio_CUfileDescr, type, CUfileDescr_t, type);
SAME_OFFSET(megaio_CUfileDescr, handle.fd, CUfileDescr_t, handle.fd);
SAME_OFFSET(megaio_CUfileDescr, handle.handle, CUfileDescr_t, handle.handle);
SAME_OFFSET(megaio_CUfileDescr, handle, CUfileDescr_t, handle);
SAME_OFFSET(megaio_CUfileDescr, fs_ops, CUfileDescr_t, fs_ops);
SAME_LAYOUT(megaio_CUfileDrvProps, CUfileDrvProps_t);
SAME_OFFSET(megaio_CUfileDrvProps, nvfs.major_version, CUfileDrvProps_t, nvfs.major_version);
SAME_OFFSET(megaio_CUfileDrvProps, nvfs.minor_version, CUfileDrvProps_t, nvfs.minor_version);
SAME_OFFSET(megaio_CUfileDrvProps, nvfs.poll_thresh_size, CUfileDrvProps_t, nvfs.poll_thresh_size);
SAME_OFFSET(megaio_CUfileDrvProps, nvfs.max_direct_io_size, CUfileDrvProps_t, nvfs.max_direct_io_size);
SAME_OFFSET(megaio_CUfileDrvProps, nvfs.dstatusflags, CUfileDrvProps_t, nvfs.dstatusflags);
SAME_OFFSET(megaio_CUfileDrvProps, nvfs.dcontrolflags, CUfileDrvProps_t, nvfs.dcontrolflags);
SAME_OFFSET(megaio_CUfileDrvProps, fflags, CUfileDrvProps_t, fflags);
SAME_OFFSET(megaio_CUfileDrvProps, max_device_cache_size, CUfileDrvProps_t, max_device_cache_size);
SAME_OFFSET(megaio_CUfileDrvProps, per_buffer_cache_size, CUfileDrvProps_t, per_buffer_cache_size);
SAME_OFFSET(megaio_CUfileDrvProps, max_device_pinned_mem_size, CUfileDrvProps_t, max_device_pinned_mem_size);
SAME_OFFSET(megaio_CUfileDrvProps, max_batch_io_size, CUfileDrvProps_t, max_batch_io_size);
SAME_OFFSET(megaio_CUfileDrvProps, max_batch_io_timeout_msecs, CUfileDrvProps_t, max_batch_io_timeout_msecs);
SAME_LAYOUT(megaio_CUfileIOParams, CUfileIOParams_t);
SAME_OFFSET(megaio_CUfileIOParams, mode, CUfileIOParams_t, mode);
SAME_OFFSET(megaio_CUfileIOParams, u.batch.devPtr_base, CUfileIOParams_t, u.batch.devPtr_base);
SAME_OFFSET(megaio_CUfileIOParams, u.batch.file_offset, CUfileIOParams_t, u.batch.file_offset);
SAME_OFFSET(megaio_CUfileIOParams, u.batch.devPtr_offset, CUfileIOParams_t, u.batch.devPtr_offset);
SAME_OFFSET(megaio_CUfileIOParams, u.batch.size, CUfileIOParams_t, u.batch.size);
SAME_OFFSET(megaio_CUfileIOParams, fh, CUfileIOParams_t, fh);
SAME_OFFSET(megaio_CUfileIOParams, opcode, CUfileIOParams_t, opcode);
SAME_OFFSET(megaio_CUfileIOParams, cookie, CUfileIOParams_t, cookie);
SAME_LAYOUT(megaio_CUfileIOEvents, CUfileIOEvents_t);
SAME_OFFSET(megaio_CUfileIOEvents, cookie, CUfileIOEvents_t, cookie);
SAME_OFFSET(megaio_CUfileIOEvents, status, CUfileIOEvents_t, status);
SAME_OFFSET(megaio_CUfileIOEvents, ret, CUfileIOEvents_t, ret);

_Static_assert(CU_FILE_SUCCESS == MEGAIO_CU_FILE_SUCCESS, "SUCCESS");
_Static_assert(CU_FILE_DRIVER_NOT_INITIALIZED == MEGAIO_CU_FILE_DRIVER_NOT_INITIALIZED, "DRIVER_NOT_INITIALIZED");
_Static_assert(CU_FILE_CUDA_DRIVER_ERROR == MEGAIO_CU_FILE_CUDA_DRIVER_ERROR, "CUDA_DRIVER_ERROR");
_Static_assert(CU_FILE_PLATFORM_NOT_SUPPORTED == MEGAIO_CU_FILE_PLATFORM_NOT_SUPPORTED, "PLATFORM_NOT_SUPPORTED");
_Static_assert(CU_FILE_IO_NOT_SUPPORTED == MEGAIO_CU_FILE_IO_NOT_SUPPORTED, "IO_NOT_SUPPORTED");
_Static_assert(CU_FILE_DIO_NOT_SET == MEGAIO_CU_FILE_DIO_NOT_SET, "DIO_NOT_SET");
_Static_assert(CU_FILE_HANDLE_TYPE_OPAQUE_FD == MEGAIO_CU_FILE_HANDLE_TYPE_OPAQUE_FD, "OPAQUE_FD");
_Static_assert(CUFILE_READ == MEGAIO_CUFILE_READ && CUFILE_WRITE == MEGAIO_CUFILE_WRITE, "opcodes");
_Static_assert(CUFILE_BATCH == MEGAIO_CUFILE_BATCH, "CUFILE_BATCH");
_Static_assert(CUFILE_WAITING == MEGAIO_CUFILE_WAITING && CUFILE_PENDING == MEGAIO_CUFILE_PENDING &&
		       CUFILE_INVALID == MEGAIO_CUFILE_INVALID && CUFILE_CANCELED == MEGAIO_CUFILE_CANCELED &&
		       CUFILE_COMPLETE == MEGAIO_CUFILE_COMPLETE && CUFILE_TIMEOUT == MEGAIO_CUFILE_TIMEOUT &&
		       CUFILE_FAILED == MEGAIO_CUFILE_FAILED,
	       "CUfileStatus_t");

/* Prototypes: each real entry point must convert to our pointer type. */
megaio_cuFileDriverOpen_t check_open = cuFileDriverOpen;
megaio_cuFileDriverGetProperties_t check_props = cuFileDriverGetProperties;
megaio_cuFileHandleRegister_t check_hreg = cuFileHandleRegister;
megaio_cuFileHandleDeregister_t check_hdereg = cuFileHandleDeregister;
megaio_cuFileBufRegister_t check_breg = cuFileBufRegister;
megaio_cuFileBufDeregister_t check_bdereg = cuFileBufDeregister;
megaio_cuFileBatchIOSetUp_t check_setup = cuFileBatchIOSetUp;
megaio_cuFileBatchIOSubmit_t check_submit = cuFileBatchIOSubmit;
megaio_cuFileBatchIOGetStatus_t check_status = cuFileBatchIOGetStatus;
megaio_cuFileBatchIOCancel_t check_cancel = cuFileBatchIOCancel;
megaio_cuFileBatchIODestroy_t check_destroy = cuFileBatchIODestroy;
