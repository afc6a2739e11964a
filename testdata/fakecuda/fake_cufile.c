/*
 * fake_cufile.c - a stand-in for libcufile.so.0 (GPUDirect Storage) for
 * megaio's tests on machines without a GPU; see fake_cuda.c. Written by the
 * megaio team from the cuFile API's documented behaviour; not NVIDIA code.
 *
 * Device memory is host memory, as in fake_cuda.c, and IO is pread/pwrite
 * run by one thread per batch handle. What the fake checks, so the tests
 * catch misuse:
 *   - files are registered with O_DIRECT (CU_FILE_DIO_NOT_SET otherwise);
 *   - every IO's devPtr_base was registered with cuFileBufRegister and
 *     [devPtr_offset, +size) lies inside it;
 *   - file offsets and sizes are 4 KiB aligned (megaio sends only aligned
 *     bodies to GDS) - a misaligned IO fails with -EINVAL;
 *   - a batch handle carries one submission at a time
 *     (CU_FILE_BATCH_FULL while the previous one has unreported IOs), and
 *     nr is at most the set-up size;
 *   - each finished IO is reported once by cuFileBatchIOGetStatus.
 * FAKE_CUFILE_REFUSE_FILES=1 makes cuFileHandleRegister refuse every file
 * (CU_FILE_IO_NOT_SUPPORTED); FAKE_CUFILE_DELAY_US delays each IO (default
 * 100); FAKE_CUFILE_MAX_BATCH sets max_batch_io_size (default 128);
 * FAKE_CUFILE_BUSY_SUBMITS=N answers the first N submissions "queue full"
 * (CU_FILE_BATCH_FULL); FAKE_CUFILE_FAIL_SUBMIT=N refuses the Nth with
 * CU_FILE_BATCH_SUBMIT_FAILED; FAKE_CUFILE_RETRY_SUBMITS=N answers the
 * first N submissions CU_FILE_INTERNAL_BATCH_SUBMIT_ERROR ("retry later");
 * FAKE_CUFILE_SILENT_CANCEL=1 makes the IOs
 * that cuFileBatchIOCancel stops never report at all;
 * FAKE_CUFILE_HOLD_UNTIL_CANCEL=1 makes every IO that starts while it is
 * set wait, without completing, until cuFileBatchIOCancel stops it: IOs
 * that are certainly in flight when Stop's deadline passes, whatever the
 * machine's speed (a test sets it to 0 to run IOs again).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef struct { int err; int cu_err; } CUfileError_t;
typedef struct {
	int type;
	union { int fd; void *handle; } handle;
	const void *fs_ops;
} CUfileDescr_t;
typedef struct {
	struct { unsigned major, minor; size_t poll, maxio; unsigned s, c; } nvfs;
	unsigned fflags, cache, per_buf, pinned, max_batch_io_size, timeout;
} CUfileDrvProps_t;
typedef struct {
	int mode;
	union { struct { void *devPtr_base; off_t file_offset; off_t devPtr_offset; size_t size; } batch; } u;
	void *fh;
	int opcode;
	void *cookie;
} CUfileIOParams_t;
typedef struct { void *cookie; int status; size_t ret; } CUfileIOEvents_t;

enum { WAITING = 1, PENDING = 2, INVALID = 4, CANCELED = 8, COMPLETE = 0x10, FAILED = 0x40 };
static CUfileError_t E(int e) { CUfileError_t r = {e, 0}; return r; }

static long delay_us = 100, submits;
static int opened;

static int holding(void)
{
	const char *s = getenv("FAKE_CUFILE_HOLD_UNTIL_CANCEL");
	return s && atoi(s);
}

#define MAXBUF 256
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct { uintptr_t p; size_t n; } bufs[MAXBUF];

CUfileError_t cuFileDriverOpen(void)
{
	const char *s = getenv("FAKE_CUFILE_DELAY_US");
	if (s)
		delay_us = atol(s);
	opened = 1;
	return E(0);
}
CUfileError_t cuFileDriverGetProperties(CUfileDrvProps_t *p)
{
	memset(p, 0, sizeof(*p));
	const char *s = getenv("FAKE_CUFILE_MAX_BATCH");
	p->max_batch_io_size = s ? (unsigned)atoi(s) : 128;
	return E(0);
}

struct handle { int fd; };
CUfileError_t cuFileHandleRegister(void **fh, CUfileDescr_t *d)
{
	if (!opened)
		return E(5001);
	if (getenv("FAKE_CUFILE_REFUSE_FILES") && atoi(getenv("FAKE_CUFILE_REFUSE_FILES")))
		return E(5008);
	if (d->type != 1)
		return E(5022);
	int fl = fcntl(d->handle.fd, F_GETFL);
	if (fl < 0)
		return E(5022);
	if (!(fl & O_DIRECT))
		return E(5020);
	struct handle *h = malloc(sizeof(*h));
	h->fd = d->handle.fd;
	*fh = h;
	return E(0);
}
void cuFileHandleDeregister(void *fh) { free(fh); }
CUfileError_t cuFileBufRegister(const void *p, size_t n, int flags)
{
	(void)flags;
	pthread_mutex_lock(&mu);
	int r = 5030;
	for (int i = 0; i < MAXBUF; i++)
		if (bufs[i].p == (uintptr_t)p) {
			r = 5023;
			break;
		}
	if (r != 5023)
		for (int i = 0; i < MAXBUF; i++)
			if (!bufs[i].p) {
				bufs[i].p = (uintptr_t)p, bufs[i].n = n, r = 0;
				break;
			}
	pthread_mutex_unlock(&mu);
	return E(r);
}
CUfileError_t cuFileBufDeregister(const void *p)
{
	pthread_mutex_lock(&mu);
	int r = 5024;
	for (int i = 0; i < MAXBUF; i++)
		if (bufs[i].p == (uintptr_t)p) {
			bufs[i].p = 0, r = 0;
			break;
		}
	pthread_mutex_unlock(&mu);
	return E(r);
}
static size_t buf_len(uintptr_t p)
{
	pthread_mutex_lock(&mu);
	size_t n = 0;
	for (int i = 0; i < MAXBUF; i++)
		if (bufs[i].p == p)
			n = bufs[i].n;
	pthread_mutex_unlock(&mu);
	return n;
}

struct entry {
	CUfileIOParams_t p;
	int status, reported, cancel;
	int held; /* waiting for the first cancel (FAKE_CUFILE_HOLD_UNTIL_CANCEL) */
	long ret;
};
struct batch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned cap, n, next; /* next: first entry the thread has not started */
	int quit;
	struct entry *e;
	pthread_t th;
};

#include "fake_dma.h"

static long run_io(CUfileIOParams_t *p)
{
	size_t len = buf_len((uintptr_t)p->u.batch.devPtr_base);
	if (!len || p->u.batch.devPtr_offset < 0 || (size_t)p->u.batch.devPtr_offset > len ||
	    p->u.batch.size > len - (size_t)p->u.batch.devPtr_offset)
		return -EFAULT; /* not a registered buffer, or outside it */
	if (p->u.batch.file_offset % 4096 || p->u.batch.size % 4096)
		return -EINVAL;
	int fd = ((struct handle *)p->fh)->fd;
	char *dev = (char *)p->u.batch.devPtr_base + p->u.batch.devPtr_offset;
	/* cuFile accepts device addresses that are not 4 KiB aligned (it
	 * bounces them internally); O_DIRECT on host memory does not, so the
	 * fake goes through an aligned buffer. */
	char *io = dev;
	if ((uintptr_t)dev % 4096) {
		io = aligned_alloc(4096, p->u.batch.size);
		if (p->opcode == 1)
			memcpy(io, dev, p->u.batch.size);
	}
	size_t done = 0;
	long ret = 0;
	while (done < p->u.batch.size) {
		ssize_t r = p->opcode == 0 ? pread(fd, io + done, p->u.batch.size - done, p->u.batch.file_offset + done)
					   : pwrite(fd, io + done, p->u.batch.size - done, p->u.batch.file_offset + done);
		if (r < 0) {
			ret = done ? 0 : -errno;
			break;
		}
		if (r == 0)
			break;
		done += r;
	}
	if (io != dev) {
		if (p->opcode == 0)
			memcpy(dev, io, done);
		free(io);
	}
	return ret < 0 ? ret : (long)done;
}

/* One IO, as the DMA it stands for. */
static long run(CUfileIOParams_t *p)
{
	dma_begin();
	long r = run_io(p);
	dma_end();
	return r;
}

static void *batch_main(void *arg)
{
	struct batch *b = arg;
	pthread_mutex_lock(&b->mu);
	for (;;) {
		while (b->next >= b->n && !b->quit)
			pthread_cond_wait(&b->cv, &b->mu);
		if (b->quit) {
			pthread_mutex_unlock(&b->mu);
			return NULL;
		}
		struct entry *e = &b->e[b->next++];
		if (e->cancel) {
			const char *silent = getenv("FAKE_CUFILE_SILENT_CANCEL");
			e->status = silent && atoi(silent) ? PENDING : CANCELED; /* PENDING forever: never reported */
			continue;
		}
		e->status = PENDING;
		if (holding()) {
			e->held = 1;
			while (!e->cancel)
				pthread_cond_wait(&b->cv, &b->mu);
			e->held = 0;
			const char *silent = getenv("FAKE_CUFILE_SILENT_CANCEL");
			e->status = silent && atoi(silent) ? PENDING : CANCELED;
			pthread_cond_broadcast(&b->cv);
			continue;
		}
		pthread_mutex_unlock(&b->mu);
		if (delay_us > 0)
			usleep(delay_us);
		long r = run(&e->p);
		pthread_mutex_lock(&b->mu);
		e->ret = r;
		e->status = r < 0 ? FAILED : COMPLETE;
		pthread_cond_broadcast(&b->cv);
	}
}

CUfileError_t cuFileBatchIOSetUp(void **out, unsigned nr)
{
	if (!opened)
		return E(5001);
	struct batch *b = calloc(1, sizeof(*b));
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	b->cap = nr;
	b->e = calloc(nr, sizeof(struct entry));
	pthread_create(&b->th, NULL, batch_main, b);
	*out = b;
	return E(0);
}
CUfileError_t cuFileBatchIOSubmit(void *h, unsigned nr, CUfileIOParams_t *p, unsigned flags)
{
	struct batch *b = h;
	(void)flags;
	if (nr == 0 || nr > b->cap)
		return E(5022);
	for (unsigned i = 0; i < nr; i++)
		if (p[i].mode != 1 || (p[i].opcode != 0 && p[i].opcode != 1) || !p[i].fh)
			return E(5022);
	const char *busy = getenv("FAKE_CUFILE_BUSY_SUBMITS"), *fail = getenv("FAKE_CUFILE_FAIL_SUBMIT");
	const char *later = getenv("FAKE_CUFILE_RETRY_SUBMITS");
	long k = __atomic_add_fetch(&submits, 1, __ATOMIC_SEQ_CST);
	if (busy && k <= atol(busy))
		return E(5037);
	if (later && k <= atol(later))
		return E(5040); /* CU_FILE_INTERNAL_BATCH_SUBMIT_ERROR: "retry later" */
	if (fail && k == atol(fail))
		return E(5035);
	pthread_mutex_lock(&b->mu);
	for (unsigned i = 0; i < b->n; i++)
		if (!b->e[i].reported) {
			pthread_mutex_unlock(&b->mu);
			return E(5037); /* the previous submission is still out */
		}
	for (unsigned i = 0; i < nr; i++) {
		memset(&b->e[i], 0, sizeof(b->e[i]));
		b->e[i].p = p[i];
		b->e[i].status = WAITING;
	}
	b->n = nr, b->next = 0;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	return E(0);
}
CUfileError_t cuFileBatchIOGetStatus(void *h, unsigned min_nr, unsigned *nr, CUfileIOEvents_t *ev, struct timespec *t)
{
	struct batch *b = h;
	(void)min_nr, (void)t; /* megaio polls with a zero timeout */
	unsigned k = 0;
	pthread_mutex_lock(&b->mu);
	for (unsigned i = 0; i < b->n && k < *nr; i++) {
		struct entry *e = &b->e[i];
		if (!e->reported && (e->status == COMPLETE || e->status == FAILED || e->status == CANCELED)) {
			ev[k].cookie = e->p.cookie;
			ev[k].status = e->status;
			ev[k].ret = (size_t)e->ret;
			e->reported = 1;
			k++;
		}
	}
	pthread_mutex_unlock(&b->mu);
	*nr = k;
	return E(0);
}
CUfileError_t cuFileBatchIOCancel(void *h)
{
	struct batch *b = h;
	pthread_mutex_lock(&b->mu);
	for (unsigned i = b->next; i < b->n; i++)
		b->e[i].cancel = 1;
	if (b->next > 0 && b->e[b->next - 1].held) {
		b->e[b->next - 1].cancel = 1; /* a held IO stops; one that runs runs to its end */
		pthread_cond_broadcast(&b->cv);
	}
	/* Returns when nothing of the batch runs any more. */
	while (b->next < b->n || (b->n && b->e[b->next - 1].status == PENDING && !b->e[b->next - 1].cancel)) {
		pthread_cond_broadcast(&b->cv);
		pthread_mutex_unlock(&b->mu);
		usleep(100);
		pthread_mutex_lock(&b->mu);
	}
	pthread_mutex_unlock(&b->mu);
	return E(0);
}
void cuFileBatchIODestroy(void *h)
{
	struct batch *b = h;
	cuFileBatchIOCancel(b);
	pthread_mutex_lock(&b->mu);
	b->quit = 1;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	pthread_join(b->th, NULL);
	free(b->e);
	free(b);
}
