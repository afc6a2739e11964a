/*
 * cufile_shim.h - megaio's own declarations of the part of NVIDIA's cuFile
 * API (GPUDirect Storage) it uses, loaded at run time with
 * dlopen("libcufile.so.0"): nothing links -lcufile, so megaio builds and
 * runs where GDS is absent and falls back to its bounce path.
 *
 * Written from the documented API (the GPUDirect Storage API reference);
 * csrc/cufile_check.c checks every type and prototype against the real
 * cufile.h wherever one is installed.
 */
#ifndef MEGAIO_CUFILE_SHIM_H
#define MEGAIO_CUFILE_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* CUfileError_t: returned by value, two 32-bit enums. */
typedef struct {
	int err;    /* CUfileOpError: 0 success, 5000+ cuFile errors */
	int cu_err; /* CUresult, when err is CU_FILE_CUDA_DRIVER_ERROR */
} megaio_CUfileError;

#define MEGAIO_CU_FILE_SUCCESS 0
#define MEGAIO_CU_FILE_DRIVER_NOT_INITIALIZED 5001
#define MEGAIO_CU_FILE_PLATFORM_NOT_SUPPORTED 5007
#define MEGAIO_CU_FILE_IO_NOT_SUPPORTED 5008
#define MEGAIO_CU_FILE_DIO_NOT_SET 5020
#define MEGAIO_CU_FILE_CUDA_DRIVER_ERROR 5011

/* The CUfileOpError codes megaio tells apart: X(code, name, kind), where
 * kind says what megaio does with it:
 *   MEGAIO_CUFILE_PLAIN        an error of the call (-EIO for its IOs)
 *   MEGAIO_CUFILE_UNAVAILABLE  GDS cannot serve here (ErrGDSUnavailable;
 *                              DevicePathAuto falls back to the bounce path)
 *   MEGAIO_CUFILE_RETRY        "queue full" or "internal error - retry
 *                              later": submitted again, a bounded number of
 *                              times (Config.Device.GDSRetryLimit)
 * Codes appear in cuFile over time: CU_FILE_BATCH_FULL (5037) in 1.5.1,
 * the retry-later codes (5039-5043) and 5049 later still; in cuFile 1.4 5037
 * is CU_FILE_IO_MAX_ERROR, the end marker of the list, which no call
 * returns. csrc/cufile_codes_check.cc checks this table against the
 * installed cufile.h with that history in mind. */
#define MEGAIO_CUFILE_PLAIN 0
#define MEGAIO_CUFILE_UNAVAILABLE 1
#define MEGAIO_CUFILE_RETRY 2
#define MEGAIO_CUFILE_CODES(X)                                          \
	X(5001, CU_FILE_DRIVER_NOT_INITIALIZED, MEGAIO_CUFILE_UNAVAILABLE)  \
	X(5007, CU_FILE_PLATFORM_NOT_SUPPORTED, MEGAIO_CUFILE_UNAVAILABLE)  \
	X(5008, CU_FILE_IO_NOT_SUPPORTED, MEGAIO_CUFILE_UNAVAILABLE)        \
	X(5009, CU_FILE_DEVICE_NOT_SUPPORTED, MEGAIO_CUFILE_UNAVAILABLE)    \
	X(5011, CU_FILE_CUDA_DRIVER_ERROR, MEGAIO_CUFILE_PLAIN)             \
	X(5012, CU_FILE_CUDA_POINTER_INVALID, MEGAIO_CUFILE_PLAIN)          \
	X(5018, CU_FILE_INVALID_FILE_TYPE, MEGAIO_CUFILE_UNAVAILABLE)       \
	X(5019, CU_FILE_INVALID_FILE_OPEN_FLAG, MEGAIO_CUFILE_UNAVAILABLE)  \
	X(5020, CU_FILE_DIO_NOT_SET, MEGAIO_CUFILE_UNAVAILABLE)             \
	X(5022, CU_FILE_INVALID_VALUE, MEGAIO_CUFILE_PLAIN)                 \
	X(5023, CU_FILE_MEMORY_ALREADY_REGISTERED, MEGAIO_CUFILE_PLAIN)     \
	X(5024, CU_FILE_MEMORY_NOT_REGISTERED, MEGAIO_CUFILE_PLAIN)         \
	X(5025, CU_FILE_PERMISSION_DENIED, MEGAIO_CUFILE_UNAVAILABLE)       \
	X(5026, CU_FILE_DRIVER_ALREADY_OPEN, MEGAIO_CUFILE_PLAIN)           \
	X(5030, CU_FILE_INTERNAL_ERROR, MEGAIO_CUFILE_PLAIN)                \
	X(5034, CU_FILE_IO_DISABLED, MEGAIO_CUFILE_UNAVAILABLE)             \
	X(5035, CU_FILE_BATCH_SUBMIT_FAILED, MEGAIO_CUFILE_PLAIN)           \
	X(5037, CU_FILE_BATCH_FULL, MEGAIO_CUFILE_RETRY)                    \
	X(5039, CU_FILE_INTERNAL_BATCH_SETUP_ERROR, MEGAIO_CUFILE_RETRY)    \
	X(5040, CU_FILE_INTERNAL_BATCH_SUBMIT_ERROR, MEGAIO_CUFILE_RETRY)   \
	X(5041, CU_FILE_INTERNAL_BATCH_GETSTATUS_ERROR, MEGAIO_CUFILE_RETRY) \
	X(5042, CU_FILE_INTERNAL_BATCH_CANCEL_ERROR, MEGAIO_CUFILE_RETRY)   \
	X(5043, CU_FILE_NOMEM_ERROR, MEGAIO_CUFILE_RETRY)                   \
	X(5049, CU_FILE_BATCH_NOCOMPAT_ERROR, MEGAIO_CUFILE_UNAVAILABLE)

/* The name ("CU_FILE_BATCH_FULL") and kind of a code in the table above:
 * NULL and MEGAIO_CUFILE_PLAIN for one it lacks. */
const char *megaio_cufile_code_name(int code);
int megaio_cufile_code_kind(int code);

/* CUfileDescr_t with CU_FILE_HANDLE_TYPE_OPAQUE_FD. */
#define MEGAIO_CU_FILE_HANDLE_TYPE_OPAQUE_FD 1
typedef struct {
	int type; /* enum CUfileFileHandleType */
	union {
		int fd;
		void *handle;
	} handle;
	const void *fs_ops; /* NULL: the kernel's file system */
} megaio_CUfileDescr;

/* CUfileDrvProps_t: only max_batch_io_size is read. */
typedef struct {
	struct {
		unsigned int major_version;
		unsigned int minor_version;
		size_t poll_thresh_size;
		size_t max_direct_io_size;
		unsigned int dstatusflags;
		unsigned int dcontrolflags;
	} nvfs;
	unsigned int fflags;
	unsigned int max_device_cache_size;
	unsigned int per_buffer_cache_size;
	unsigned int max_device_pinned_mem_size;
	unsigned int max_batch_io_size;
	unsigned int max_batch_io_timeout_msecs;
} megaio_CUfileDrvProps;

/* Batch API types. */
#define MEGAIO_CUFILE_READ 0
#define MEGAIO_CUFILE_WRITE 1
#define MEGAIO_CUFILE_BATCH 1
/* CUfileStatus_t */
#define MEGAIO_CUFILE_WAITING 0x01
#define MEGAIO_CUFILE_PENDING 0x02
#define MEGAIO_CUFILE_INVALID 0x04
#define MEGAIO_CUFILE_CANCELED 0x08
#define MEGAIO_CUFILE_COMPLETE 0x10
#define MEGAIO_CUFILE_TIMEOUT 0x20
#define MEGAIO_CUFILE_FAILED 0x40

typedef struct {
	int mode; /* CUfileBatchMode_t: CUFILE_BATCH */
	union {
		struct {
			void *devPtr_base;
			off_t file_offset;
			off_t devPtr_offset;
			size_t size;
		} batch;
	} u;
	void *fh;   /* CUfileHandle_t */
	int opcode; /* CUfileOpcode_t */
	void *cookie;
} megaio_CUfileIOParams;

typedef struct {
	void *cookie;
	int status;  /* CUfileStatus_t */
	size_t ret;  /* bytes moved, or a negative error stored in a size_t */
} megaio_CUfileIOEvents;

/* The entry points' types are written with these names so that
 * cufile_check.c can put NVIDIA's types in their place and have the compiler
 * compare every prototype with cufile.h. */
#ifndef MEGAIO_CUFILE_ERROR_T
#define MEGAIO_CUFILE_ERROR_T megaio_CUfileError
#define MEGAIO_CUFILE_PROPS_T megaio_CUfileDrvProps
#define MEGAIO_CUFILE_DESCR_T megaio_CUfileDescr
#define MEGAIO_CUFILE_PARAMS_T megaio_CUfileIOParams
#define MEGAIO_CUFILE_EVENTS_T megaio_CUfileIOEvents
#endif
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileDriverOpen_t)(void);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileDriverGetProperties_t)(MEGAIO_CUFILE_PROPS_T *props);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileHandleRegister_t)(void **fh, MEGAIO_CUFILE_DESCR_T *descr);
typedef void (*megaio_cuFileHandleDeregister_t)(void *fh);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileBufRegister_t)(const void *base, size_t length, int flags);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileBufDeregister_t)(const void *base);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileBatchIOSetUp_t)(void **batch, unsigned nr);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileBatchIOSubmit_t)(void *batch, unsigned nr, MEGAIO_CUFILE_PARAMS_T *iocbp,
							   unsigned int flags);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileBatchIOGetStatus_t)(void *batch, unsigned min_nr, unsigned *nr,
							      MEGAIO_CUFILE_EVENTS_T *iocbp, struct timespec *timeout);
typedef MEGAIO_CUFILE_ERROR_T (*megaio_cuFileBatchIOCancel_t)(void *batch);
typedef void (*megaio_cuFileBatchIODestroy_t)(void *batch);

struct megaio_cufile {
	void *lib;
	megaio_cuFileDriverOpen_t cuFileDriverOpen;
	megaio_cuFileDriverGetProperties_t cuFileDriverGetProperties;
	megaio_cuFileHandleRegister_t cuFileHandleRegister;
	megaio_cuFileHandleDeregister_t cuFileHandleDeregister;
	megaio_cuFileBufRegister_t cuFileBufRegister;
	megaio_cuFileBufDeregister_t cuFileBufDeregister;
	megaio_cuFileBatchIOSetUp_t cuFileBatchIOSetUp;
	megaio_cuFileBatchIOSubmit_t cuFileBatchIOSubmit;
	megaio_cuFileBatchIOGetStatus_t cuFileBatchIOGetStatus;
	megaio_cuFileBatchIOCancel_t cuFileBatchIOCancel;
	megaio_cuFileBatchIODestroy_t cuFileBatchIODestroy;
};

/* Loads libname and resolves every entry point: 0; -1 when the library
 * cannot be opened; -2 when an entry point is missing (its name in err). */
int megaio_cufile_load(struct megaio_cufile *c, const char *libname, char *err, size_t errlen);

/* One IO of a batch, as Go fills it (flat: no unions, no C pointers held
 * in Go memory as pointers). */
struct megaio_gds_io {
	uint64_t dev_base; /* registered device buffer (cuFileBufRegister) */
	int64_t file_off;
	int64_t dev_off; /* offset from dev_base */
	uint64_t size;
	uint64_t fh;     /* CUfileHandle_t */
	uint64_t cookie; /* returned in the IO's event */
	int32_t opcode;  /* MEGAIO_CUFILE_READ or _WRITE */
	int32_t pad;
};

/* One finished IO, for Go. */
struct megaio_gds_event {
	uint64_t cookie;
	int64_t ret; /* bytes, or a negative error */
	int32_t status;
	int32_t pad;
};

/* Submits n IOs on batch (one cgo crossing); params is scratch for n
 * entries. Returns cuFile's error code (0 success). */
int megaio_gds_submit(struct megaio_cufile *c, void *batch, const struct megaio_gds_io *ios, unsigned n,
		      megaio_CUfileIOParams *params);

/* Collects up to max finished IOs of batch without waiting (a zero
 * timeout). Returns how many, or -(cuFile error code). raw is scratch for
 * max events. */
int megaio_gds_poll(struct megaio_cufile *c, void *batch, struct megaio_gds_event *out, unsigned max,
		    megaio_CUfileIOEvents *raw);

#endif
