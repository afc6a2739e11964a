/* uring_shim.c - see uring_shim.h. Compiled into the Go package through
 * uring_cgo.go's preamble; liburing is linked statically. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <liburing.h>

#include "uring_shim.h"

struct megaio_ring {
	struct io_uring ring;
	unsigned flags; /* MEGAIO_RING_* */
};

_Static_assert(sizeof(struct megaio_sqe) == 40, "megaio_sqe layout is mirrored in Go");
_Static_assert(sizeof(struct megaio_cqe) == 16, "megaio_cqe layout is mirrored in Go");

int megaio_ring_open(struct megaio_ring **out, unsigned sq_entries, unsigned cq_entries, unsigned nfiles,
		     unsigned nbufs, unsigned *ring_flags, int *step)
{
	static const struct {
		unsigned setup, flags;
	} tries[] = {
		{IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		 MEGAIO_RING_SINGLE_ISSUER | MEGAIO_RING_DEFER_TASKRUN},
		{IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
		 MEGAIO_RING_SINGLE_ISSUER | MEGAIO_RING_COOP_TASKRUN},
		{IORING_SETUP_COOP_TASKRUN, MEGAIO_RING_COOP_TASKRUN},
		{0, 0},
	};
	struct megaio_ring *r = calloc(1, sizeof(*r));
	int ret = -EINVAL;
	unsigned i;

	if (!r) {
		*step = MEGAIO_STEP_ALLOC;
		return -ENOMEM;
	}
	for (i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = tries[i].setup | IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
		ret = io_uring_queue_init_params(sq_entries, &r->ring, &p);
		if (ret == 0) {
			r->flags = tries[i].flags;
			break;
		}
		if (ret != -EINVAL) /* EPERM, ENOSYS, ENOMEM...: not a flag problem */
			break;
	}
	if (ret < 0) {
		*step = MEGAIO_STEP_SETUP;
		free(r);
		return ret;
	}
	ret = io_uring_register_files_sparse(&r->ring, nfiles);
	if (ret < 0) {
		*step = MEGAIO_STEP_FILES;
		goto fail;
	}
	ret = io_uring_register_buffers_sparse(&r->ring, nbufs);
	if (ret < 0) {
		*step = MEGAIO_STEP_BUFFERS;
		goto fail;
	}
	*ring_flags = r->flags;
	*out = r;
	return 0;
fail:
	io_uring_queue_exit(&r->ring);
	free(r);
	return ret;
}

int megaio_ring_enter(struct megaio_ring *r, const struct megaio_sqe *sqes, unsigned n, unsigned *taken,
		      struct megaio_cqe *cqes, unsigned max, unsigned *reaped, int64_t wait_ns)
{
	struct io_uring *ring = &r->ring;
	struct io_uring_cqe *cqe;
	unsigned i, head, got = 0;
	int ret = 0;

	for (i = 0; i < n; i++) {
		const struct megaio_sqe *d = &sqes[i];
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		if (!sqe)
			break;
		switch (d->op) {
		case MEGAIO_SQE_READ:
			if (d->buf_index == MEGAIO_SQE_NO_BUF)
				io_uring_prep_read(sqe, d->file, (void *)(uintptr_t)d->addr, d->len, d->off);
			else
				io_uring_prep_read_fixed(sqe, d->file, (void *)(uintptr_t)d->addr, d->len, d->off,
							 d->buf_index);
			break;
		case MEGAIO_SQE_WRITE:
			if (d->buf_index == MEGAIO_SQE_NO_BUF)
				io_uring_prep_write(sqe, d->file, (const void *)(uintptr_t)d->addr, d->len, d->off);
			else
				io_uring_prep_write_fixed(sqe, d->file, (const void *)(uintptr_t)d->addr, d->len,
							  d->off, d->buf_index);
			break;
		case MEGAIO_SQE_FSYNC:
			io_uring_prep_fsync(sqe, d->file, IORING_FSYNC_DATASYNC);
			break;
		default:
			/* An op this shim does not know: refused, never guessed at.
			 * An opcode past every kernel's last is failed by the kernel
			 * with -EINVAL before it looks at anything else. */
			io_uring_prep_nop(sqe);
			sqe->opcode = 0xff;
			break;
		}
		if (!(d->flags & MEGAIO_SQE_RAW_FD))
			sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data64(sqe, d->user_data);
	}
	*taken = i;

	if (wait_ns > 0 && io_uring_cq_ready(ring) == 0) {
		struct __kernel_timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
		ret = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
		if (ret == -ETIME)
			ret = 0;
	} else if (io_uring_sq_ready(ring) > 0 || wait_ns == 0) {
		ret = io_uring_submit_and_get_events(ring);
	}

	io_uring_for_each_cqe(ring, head, cqe)
	{
		if (got == max)
			break;
		cqes[got].user_data = io_uring_cqe_get_data64(cqe);
		cqes[got].res = cqe->res;
		cqes[got].flags = cqe->flags;
		got++;
	}
	io_uring_cq_advance(ring, got);
	*reaped = got;
	return ret < 0 ? ret : 0;
}

int megaio_ring_cancel_all(struct megaio_ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
	io_uring_sqe_set_data64(sqe, MEGAIO_CANCEL_USER_DATA);
	return 0;
}

int megaio_ring_cancel(struct megaio_ring *r, uint64_t user_data)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, user_data, 0);
	io_uring_sqe_set_data64(sqe, MEGAIO_CANCEL_USER_DATA);
	return 0;
}

int megaio_ring_set_file(struct megaio_ring *r, unsigned idx, int fd)
{
	int ret = io_uring_register_files_update(&r->ring, idx, &fd, 1);
	return ret < 0 ? ret : 0;
}

int megaio_ring_set_buffer(struct megaio_ring *r, unsigned idx, uint64_t addr, uint64_t len)
{
	struct iovec iov = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
	__u64 tag = 0;
	int ret = io_uring_register_buffers_update_tag(&r->ring, idx, &iov, &tag, 1);
	return ret < 0 ? ret : 0;
}

void megaio_ring_close(struct megaio_ring *r)
{
	io_uring_queue_exit(&r->ring);
	free(r);
}
