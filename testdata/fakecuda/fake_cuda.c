/*
 * fake_cuda.c - a stand-in for libcuda.so.1 that megaio's tests load in a
 * child process (TestDeviceFakeDriver), so the device paths run end to end
 * on machines without a GPU. Written by the megaio team from the driver
 * API's documented behaviour; it is not NVIDIA code.
 *
 * "Device memory" is host memory: a device pointer is the address of a
 * cuMemAlloc'd block. What the fake checks, so the tests catch misuse:
 *   - async copies use host memory registered with cuMemHostRegister
 *     (pinned staging) and device ranges inside one allocation;
 *   - copies on a stream run later, on the stream's own thread, after
 *     FAKE_CUDA_COPY_DELAY_US microseconds (default 50): an event queried
 *     too early answers CUDA_ERROR_NOT_READY, so a completion posted before
 *     its copy finished shows up as wrong bytes;
 *   - FAKE_CUDA_FAIL_COPY=N makes the Nth async copy fail (its event
 *     reports CUDA_ERROR_ILLEGAL_ADDRESS); FAKE_CUDA_REFUSE_COPY=N makes
 *     the Nth async copy call itself fail (CUDA_ERROR_INVALID_VALUE);
 *   - kernels "load" from any image and "run" instantly, but a launch on
 *     the legacy default stream (NULL, CU_STREAM_LEGACY or
 *     CU_STREAM_PER_THREAD) or on a stream made without
 *     CU_STREAM_NON_BLOCKING is refused with CUDA_ERROR_INVALID_HANDLE: a
 *     persistent kernel there blocks every synchronous copy of the process;
 *     launches check their grid and block shapes are nonzero; async copies
 *     are refused on such streams too.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_dma.h"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum { OK = 0, INVALID_VALUE = 1, INVALID_HANDLE = 400, NOT_READY = 600, ILLEGAL_ADDRESS = 700, NOT_SUPPORTED = 801,
       ALREADY_REGISTERED = 712, NOT_REGISTERED = 713 };

#define MAXREG 256
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct { uintptr_t p; size_t n; } hostreg[MAXREG], allocs[MAXREG];
static long copies, fail_copy = -1, refuse_copy = -1, delay_us = 50;

static int find(uintptr_t p, size_t n, int host)
{
	for (int i = 0; i < MAXREG; i++) {
		uintptr_t b = host ? hostreg[i].p : allocs[i].p;
		size_t len = host ? hostreg[i].n : allocs[i].n;
		if (b && p >= b && p - b <= len && n <= len - (p - b))
			return i;
	}
	return -1;
}

CUresult cuInit(unsigned f)
{
	(void)f;
	const char *s = getenv("FAKE_CUDA_COPY_DELAY_US");
	if (s)
		delay_us = atol(s);
	if ((s = getenv("FAKE_CUDA_FAIL_COPY")))
		fail_copy = atol(s);
	if ((s = getenv("FAKE_CUDA_REFUSE_COPY")))
		refuse_copy = atol(s);
	return OK;
}
CUresult cuDriverGetVersion(int *v) { *v = 12040; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *d, int i) { *d = i; return i == 0 ? OK : 101; }
CUresult cuDeviceGetName(char *s, int n, int d) { (void)d; strncpy(s, "megaio fake GPU", n); return OK; }
static int ctx_token;
CUresult cuDevicePrimaryCtxRetain(void **c, int d) { (void)d; *c = &ctx_token; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int d) { (void)d; return OK; }
CUresult cuCtxSetCurrent(void *c) { return c == &ctx_token ? OK : INVALID_VALUE; }

CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned f)
{
	(void)f;
	pthread_mutex_lock(&mu);
	int r = INVALID_VALUE;
	if (find((uintptr_t)p, 1, 1) >= 0)
		r = ALREADY_REGISTERED;
	else
		for (int i = 0; i < MAXREG; i++)
			if (!hostreg[i].p) {
				hostreg[i].p = (uintptr_t)p, hostreg[i].n = n, r = OK;
				break;
			}
	pthread_mutex_unlock(&mu);
	return r;
}
CUresult cuMemHostUnregister(void *p)
{
	pthread_mutex_lock(&mu);
	int r = NOT_REGISTERED;
	for (int i = 0; i < MAXREG; i++)
		if (hostreg[i].p == (uintptr_t)p) {
			hostreg[i].p = 0, r = OK;
			break;
		}
	pthread_mutex_unlock(&mu);
	return r;
}
CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *d, void *p, unsigned f)
{
	(void)f;
	*d = (CUdeviceptr)(uintptr_t)p;
	return OK;
}
CUresult cuMemAlloc_v2(CUdeviceptr *d, size_t n)
{
	dma_begin(); /* device memory: no CPU thread's write (under ThreadSanitizer) */
	void *p = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
	dma_end();
	if (!p)
		return 2;
	pthread_mutex_lock(&mu);
	int r = 2;
	for (int i = 0; i < MAXREG; i++)
		if (!allocs[i].p) {
			allocs[i].p = (uintptr_t)p, allocs[i].n = n, r = OK;
			break;
		}
	pthread_mutex_unlock(&mu);
	if (r)
		free(p);
	*d = (CUdeviceptr)(uintptr_t)p;
	return r;
}
CUresult cuMemFree_v2(CUdeviceptr d)
{
	pthread_mutex_lock(&mu);
	int r = INVALID_VALUE;
	for (int i = 0; i < MAXREG; i++)
		if (allocs[i].p == (uintptr_t)d) {
			allocs[i].p = 0, r = OK;
			break;
		}
	pthread_mutex_unlock(&mu);
	if (!r) {
		dma_begin();
		free((void *)(uintptr_t)d);
		dma_end();
	}
	return r;
}
CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
	pthread_mutex_lock(&mu);
	int i = find((uintptr_t)p, 0, 0);
	if (i >= 0)
		*base = allocs[i].p, *size = allocs[i].n;
	pthread_mutex_unlock(&mu);
	return i >= 0 ? OK : INVALID_VALUE;
}
static CUresult check_dev(CUdeviceptr d, size_t n)
{
	pthread_mutex_lock(&mu);
	int i = find((uintptr_t)d, n, 0);
	pthread_mutex_unlock(&mu);
	return i >= 0 ? OK : INVALID_VALUE;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n)
{
	if (check_dev(d, n))
		return INVALID_VALUE;
	memcpy((void *)(uintptr_t)d, s, n);
	return OK;
}
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n)
{
	if (check_dev(s, n))
		return INVALID_VALUE;
	memcpy(d, (void *)(uintptr_t)s, n);
	return OK;
}
CUresult cuCtxSynchronize(void) { return OK; }
static int module_token, function_token;
CUresult cuModuleLoadData(void **m, const void *img)
{
	if (!img)
		return INVALID_VALUE;
	*m = &module_token;
	return OK;
}
CUresult cuModuleUnload(void *m) { return m == &module_token ? OK : INVALID_HANDLE; }
CUresult cuModuleGetFunction(void **f, void *m, const char *n)
{
	if (m != &module_token || !n || !*n)
		return INVALID_VALUE;
	*f = &function_token;
	return OK;
}
struct stream;
static int stream_nonblocking(struct stream *s);
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
			unsigned sh, struct stream *s, void **p, void **x)
{
	(void)sh, (void)x;
	if (f != &function_token || !p || !gx || !gy || !gz || !bx || !by || !bz)
		return INVALID_VALUE;
	if ((uintptr_t)s <= 2 || !stream_nonblocking(s))
		return INVALID_HANDLE;
	return OK;
}
CUresult cuGetErrorName(CUresult r, const char **s)
{
	*s = r == NOT_READY ? "CUDA_ERROR_NOT_READY" : r == ILLEGAL_ADDRESS ? "CUDA_ERROR_ILLEGAL_ADDRESS" : "FAKE_CUDA_ERROR";
	return OK;
}
CUresult cuGetErrorString(CUresult r, const char **s) { return cuGetErrorName(r, s); }

/* Streams: a FIFO of operations run by the stream's thread. */
struct op {
	int kind; /* 0 copy, 1 event */
	void *dst;
	const void *src;
	size_t n;
	int fail;
	struct event *ev;
	struct op *next;
};
struct event {
	pthread_mutex_t mu;
	unsigned long recorded, reached; /* generations */
	int err;
};
struct stream {
	unsigned flags;
	pthread_mutex_t mu;
	pthread_cond_t cv, idle;
	struct op *head, *tail;
	int busy, quit;
	pthread_t th;
};

static void *stream_main(void *arg)
{
	struct stream *s = arg;
	int failed = 0;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->head && !s->quit)
			pthread_cond_wait(&s->cv, &s->mu);
		if (!s->head) {
			pthread_mutex_unlock(&s->mu);
			return NULL;
		}
		struct op *o = s->head;
		s->head = o->next;
		if (!s->head)
			s->tail = NULL;
		s->busy = 1;
		pthread_mutex_unlock(&s->mu);
		if (o->kind == 0) {
			if (delay_us > 0)
				usleep(delay_us);
			if (o->fail) {
				failed = 1;
			} else {
				dma_begin();
				memcpy(o->dst, o->src, o->n);
				dma_end();
			}
		} else {
			pthread_mutex_lock(&o->ev->mu);
			o->ev->reached++;
			o->ev->err = failed ? ILLEGAL_ADDRESS : OK;
			pthread_mutex_unlock(&o->ev->mu);
			failed = 0;
		}
		free(o);
		pthread_mutex_lock(&s->mu);
		s->busy = 0;
		if (!s->head)
			pthread_cond_broadcast(&s->idle);
	}
}

static void push(struct stream *s, struct op *o)
{
	pthread_mutex_lock(&s->mu);
	if (s->tail)
		s->tail->next = o;
	else
		s->head = o;
	s->tail = o;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static int stream_nonblocking(struct stream *s) { return s->flags & 1; /* CU_STREAM_NON_BLOCKING */ }
CUresult cuStreamCreate(struct stream **out, unsigned flags)
{
	struct stream *s = calloc(1, sizeof(*s));
	s->flags = flags;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_cond_init(&s->idle, NULL);
	pthread_create(&s->th, NULL, stream_main, s);
	*out = s;
	return OK;
}
CUresult cuStreamSynchronize(struct stream *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->head || s->busy)
		pthread_cond_wait(&s->idle, &s->mu);
	pthread_mutex_unlock(&s->mu);
	return OK;
}
CUresult cuStreamDestroy_v2(struct stream *s)
{
	cuStreamSynchronize(s);
	pthread_mutex_lock(&s->mu);
	s->quit = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->th, NULL);
	free(s);
	return OK;
}
static CUresult copy_async(void *dst, const void *src, size_t n, void *host, CUdeviceptr dev, struct stream *s)
{
	pthread_mutex_lock(&mu);
	int ok = find((uintptr_t)host, n, 1) >= 0 && find((uintptr_t)dev, n, 0) >= 0;
	long k = ++copies;
	pthread_mutex_unlock(&mu);
	/* The bounce path's copies must run on the loop's non-blocking stream:
	 * on the legacy stream they would wait for the persistent kernel. */
	if (!ok || (uintptr_t)s <= 2 || !stream_nonblocking(s) || k == refuse_copy)
		return INVALID_VALUE; /* unpinned host memory, or outside an allocation */
	struct op *o = calloc(1, sizeof(*o));
	o->kind = 0, o->dst = dst, o->src = src, o->n = n, o->fail = (k == fail_copy);
	push(s, o);
	return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, struct stream *s)
{
	return copy_async((void *)(uintptr_t)d, h, n, (void *)h, d, s);
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, struct stream *s)
{
	return copy_async(h, (const void *)(uintptr_t)d, n, h, d, s);
}
CUresult cuEventCreate(struct event **out, unsigned flags)
{
	(void)flags;
	struct event *e = calloc(1, sizeof(*e));
	pthread_mutex_init(&e->mu, NULL);
	*out = e;
	return OK;
}
CUresult cuEventDestroy_v2(struct event *e)
{
	free(e);
	return OK;
}
CUresult cuEventRecord(struct event *e, struct stream *s)
{
	pthread_mutex_lock(&e->mu);
	e->recorded++;
	pthread_mutex_unlock(&e->mu);
	struct op *o = calloc(1, sizeof(*o));
	o->kind = 1, o->ev = e;
	push(s, o);
	return OK;
}
CUresult cuEventQuery(struct event *e)
{
	pthread_mutex_lock(&e->mu);
	CUresult r = e->reached < e->recorded ? NOT_READY : e->err;
	pthread_mutex_unlock(&e->mu);
	return r;
}
