/*
 * uring_shim.h - the thin, batched C side of megaio's io_uring backend.
 *
 * Each function is one cgo crossing that does a whole batch of work: the
 * cycle calls megaio_ring_enter once per turn to prepare and submit every new
 * SQE, optionally wait (bounded) and copy every ready CQE into Go memory.
 * Every function runs on the loop's locked OS thread (the ring is created
 * with IORING_SETUP_SINGLE_ISSUER where the kernel allows it).
 */
#ifndef MEGAIO_URING_SHIM_H
#define MEGAIO_URING_SHIM_H

#include <stdint.h>

#include "backend.h"

struct megaio_ring;

/* Set-up flags the kernel accepted, for Stats. */
enum {
	MEGAIO_RING_SINGLE_ISSUER = 1,
	MEGAIO_RING_DEFER_TASKRUN = 2,
	MEGAIO_RING_COOP_TASKRUN = 4
};

/* Steps of megaio_ring_open, reported with its error. */
enum { MEGAIO_STEP_SETUP = 1, MEGAIO_STEP_FILES = 2, MEGAIO_STEP_BUFFERS = 3, MEGAIO_STEP_ALLOC = 4 };

/* Creates a ring with sq_entries SQEs and cq_entries CQEs, trying
 * SINGLE_ISSUER|DEFER_TASKRUN, then SINGLE_ISSUER|COOP_TASKRUN, then
 * COOP_TASKRUN, then none, dropping a set when the kernel refuses it with
 * EINVAL. Registers sparse tables of nfiles files and nbufs buffers.
 * Returns 0, or -errno with *step set to the step that failed. */
int megaio_ring_open(struct megaio_ring **out, unsigned sq_entries, unsigned cq_entries, unsigned nfiles,
		     unsigned nbufs, unsigned *ring_flags, int *step);

/* Prepares sqes[0..n) while the SQ has room (*taken says how many: the
 * rest is backpressure), submits every prepared SQE, and copies up to max
 * ready CQEs into cqes (*reaped). wait_ns < 0: enter the kernel only when
 * there is something to submit; 0: also enter to collect completions;
 * > 0: wait up to wait_ns for the first completion when none is ready.
 * Returns 0 or the -errno of io_uring_enter (SQEs stay prepared and are
 * submitted by the next call). */
int megaio_ring_enter(struct megaio_ring *r, const struct megaio_sqe *sqes, unsigned n, unsigned *taken,
		      struct megaio_cqe *cqes, unsigned max, unsigned *reaped, int64_t wait_ns);

/* Queues an IORING_OP_ASYNC_CANCEL of every request in flight; the next
 * megaio_ring_enter submits it. Returns 0 or -EBUSY when the SQ is full. */
int megaio_ring_cancel_all(struct megaio_ring *r);

/* Queues an IORING_OP_ASYNC_CANCEL of the request in flight with user_data;
 * the next megaio_ring_enter submits it. The request completes as usual:
 * with -ECANCELED, or its own result when it was past cancelling (a read
 * of a regular file the kernel is already copying). Returns 0 or -EBUSY
 * when the SQ is full. */
int megaio_ring_cancel(struct megaio_ring *r, uint64_t user_data);

/* Points registered file slot idx at fd (-1 clears it). Returns 0 or -errno. */
int megaio_ring_set_file(struct megaio_ring *r, unsigned idx, int fd);

/* Points registered buffer idx at [addr, addr+len) (len 0 clears it). */
int megaio_ring_set_buffer(struct megaio_ring *r, unsigned idx, uint64_t addr, uint64_t len);

/* Tears the ring down. The caller has reaped every request first. */
void megaio_ring_close(struct megaio_ring *r);

#endif
