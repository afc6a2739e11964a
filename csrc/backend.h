/*
 * backend.h - what the Go cycle hands a backend (struct megaio_sqe) and gets
 * back (struct megaio_cqe), shared by the io_uring shim and the worker pool.
 * Go mirrors both (types sqe and cqe in backend.go; a test pins the layout).
 */
#ifndef MEGAIO_BACKEND_H
#define MEGAIO_BACKEND_H

#include <stdint.h>

/* Operations of megaio_sqe.op. */
enum { MEGAIO_SQE_READ = 1, MEGAIO_SQE_WRITE = 2, MEGAIO_SQE_FSYNC = 3 };

/* megaio_sqe.flags: file is a descriptor the loop keeps open until the IO
 * completes, not an index into the registered file table (the device
 * paths' staged IOs, which outlive the file's registration). */
#define MEGAIO_SQE_RAW_FD 1

/* megaio_sqe.buf_index: addr is plain memory of the loop's own process (a
 * Client's caller's slice, pinned), not inside a registered buffer: the
 * io_uring shim uses READ and WRITE instead of their _FIXED forms. */
#define MEGAIO_SQE_NO_BUF 0xffff

/* user_data of the loop's own cancel SQE; its CQE is not a request's. */
#define MEGAIO_CANCEL_USER_DATA UINT64_MAX

/* One request to the kernel, filled by Go (mirrored by type sqe in Go). */
struct megaio_sqe {
	uint64_t user_data; /* the loop's record index */
	uint64_t off;       /* file offset */
	uint64_t addr;      /* address inside registered buffer buf_index */
	uint32_t len;
	uint16_t buf_index;
	uint8_t op;         /* MEGAIO_SQE_* */
	uint8_t flags;      /* MEGAIO_SQE_RAW_FD */
	int32_t file;       /* index into the registered file table, or a descriptor */
	uint32_t pad1;
};

/* One completion, copied out for Go (mirrored by type cqe in Go). */
struct megaio_cqe {
	uint64_t user_data;
	int32_t res;
	uint32_t flags;
};

#endif
