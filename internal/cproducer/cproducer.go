// Package cproducer runs megaio's plain-C host producer functions
// (include/megaio.h) from C threads, for the package's tests: cgo is not
// allowed in _test.go files. It also reports the C layout of the ABI so the
// Go mirrors can be checked against the header itself.
//
// megaio.h in this directory is a symbolic link to include/megaio.h: the go
// command hashes the headers of a package's own directory, so an edit of
// the header rebuilds this package instead of testing a stale layout.
package cproducer

/*
#cgo CFLAGS: -O2 -Wall -Werror -std=c11 -I${SRCDIR}/../../include
#cgo LDFLAGS: -lpthread
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "megaio.h"

// Runs fn on n threads, thread k with the job at jobs + k * size, and waits
// for them all.
static void run_threads(int n, void *(*fn)(void *), void *jobs, size_t size)
{
	pthread_t *tids = calloc(n, sizeof(*tids));
	for (int k = 0; k < n; k++)
		pthread_create(&tids[k], NULL, fn, (char *)jobs + (size_t)k * size);
	for (int k = 0; k < n; k++)
		pthread_join(tids[k], NULL);
	free(tids);
}

struct job {
	megaio_queue q;
	megaio_producer_side *side;
	uint32_t id;
	const megaio_request *reqs;
	int64_t *results;
	int n;
	int err;
};

static void *run_job(void *arg)
{
	struct job *j = arg;
	for (int i = 0; i < j->n; i++) {
		uint64_t t;
		megaio_request req = j->reqs[i];
		req.completion = j->id;
		int r = megaio_host_submit(&j->q, j->side, &req, &t);
		if (r < 0) {
			j->err = r;
			return NULL;
		}
		r = megaio_host_wait(&j->q, j->id, t, &j->results[i]);
		if (r < 0) {
			j->err = r;
			return NULL;
		}
	}
	return NULL;
}

// Runs threads producers; producer k submits reqs[k*per .. (k+1)*per) one
// at a time and stores each result. Returns 0 or a negative errno.
static int run_producers(void *queue, size_t qlen, void *side, const uint32_t *ids, const megaio_request *reqs,
			 int64_t *results, int threads, int per)
{
	megaio_queue q;
	int ret = megaio_attach(queue, qlen, &q);
	if (ret < 0)
		return ret;
	struct job *jobs = calloc(threads, sizeof(*jobs));
	for (int k = 0; k < threads; k++)
		jobs[k] = (struct job){q, side, ids[k], reqs + (size_t)k * per, results + (size_t)k * per, per, 0};
	run_threads(threads, run_job, jobs, sizeof(*jobs));
	for (int k = 0; k < threads; k++)
		if (jobs[k].err < 0)
			ret = jobs[k].err;
	free(jobs);
	return ret;
}

// A producer that keeps up to `depth` tickets in flight, with completion ids
// ids[0..depth), and collects them in random order (xorshift seeded per
// thread).
struct many_job {
	megaio_queue q;
	megaio_producer_side *side;
	const uint32_t *ids;
	int n, depth, err;
	uint64_t seed, served;
};

static void *run_many(void *arg)
{
	struct many_job *j = arg;
	uint64_t tk[64];
	uint32_t id[64];
	int held = 0, sent = 0;
	megaio_request nop;
	memset(&nop, 0, sizeof nop);
	for (int k = 0; k < j->depth; k++)
		id[k] = j->ids[k];
	while (sent < j->n || held > 0) {
		j->seed ^= j->seed << 13, j->seed ^= j->seed >> 7, j->seed ^= j->seed << 17;
		if (sent < j->n && held < j->depth && (held == 0 || j->seed % 3 != 0)) {
			nop.completion = id[held]; // id[held..depth) are free
			int r = megaio_host_submit(&j->q, j->side, &nop, &tk[held]);
			if (r < 0) { j->err = r; return NULL; }
			held++, sent++;
			continue;
		}
		int k = (int)(j->seed % (uint64_t)held);
		int64_t res;
		int r = megaio_host_wait(&j->q, id[k], tk[k], &res);
		if (r < 0) { j->err = r; return NULL; }
		if (res != 0) { j->err = -EIO; return NULL; }
		held--;
		uint64_t t = tk[k]; uint32_t c = id[k];
		tk[k] = tk[held], id[k] = id[held];
		tk[held] = t, id[held] = c;
		__atomic_fetch_add(&j->served, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static int run_many_producers(void *queue, size_t qlen, void *side, const uint32_t *ids, int threads, int per,
			      int depth, uint64_t *served)
{
	megaio_queue q;
	int ret = megaio_attach(queue, qlen, &q);
	if (ret < 0)
		return ret;
	if (depth > 64)
		return -EINVAL;
	struct many_job *jobs = calloc(threads, sizeof(*jobs));
	for (int k = 0; k < threads; k++)
		jobs[k] = (struct many_job){q, side, ids + (size_t)k * depth, per, depth, 0, 0x9e3779b97f4a7c15ull * (k + 1), 0};
	run_threads(threads, run_many, jobs, sizeof(*jobs));
	for (int k = 0; k < threads; k++) {
		if (jobs[k].err < 0)
			ret = jobs[k].err;
		*served += jobs[k].served;
	}
	free(jobs);
	return ret;
}

static int attach_only(void *queue, size_t qlen) { megaio_queue q; return megaio_attach(queue, qlen, &q); }

static int init_side(void *queue, size_t qlen, void *side)
{
	megaio_queue q;
	int ret = megaio_attach(queue, qlen, &q);
	if (ret == 0)
		megaio_producer_side_init(side, &q);
	return ret;
}

static uint64_t c_initial_seq(uint64_t first, uint64_t cap, uint64_t s) { return megaio_initial_seq(first, cap, s); }
static uint64_t c_initial_done(uint64_t first) { return megaio_initial_done(first); }

// Takes tickets with megaio_host_try_submit until the ring is full, NOPs
// with completion id `id` that nobody waits for. Returns how many were
// taken, or a negative errno other than -EAGAIN.
static int fill_ring(void *queue, size_t qlen, void *side, uint32_t id)
{
	megaio_queue q;
	int ret = megaio_attach(queue, qlen, &q), n = 0;
	if (ret < 0)
		return ret;
	megaio_request nop;
	memset(&nop, 0, sizeof nop);
	nop.completion = id;
	for (;;) {
		uint64_t t;
		int r = megaio_host_try_submit(&q, side, &nop, &t);
		if (r == -MEGAIO_EAGAIN)
			return n;
		if (r < 0)
			return r;
		n++;
	}
}

static int try_submit_id(void *queue, size_t qlen, void *side, uint32_t id)
{
	megaio_queue q;
	int ret = megaio_attach(queue, qlen, &q);
	if (ret < 0)
		return ret;
	megaio_request nop;
	memset(&nop, 0, sizeof nop);
	nop.completion = id;
	uint64_t t;
	return megaio_host_try_submit(&q, side, &nop, &t);
}

#define OFF(t, f) (uint64_t)offsetof(t, f)
static void layout(uint64_t *out)
{
	uint64_t v[] = {
		sizeof(megaio_queue_header), OFF(megaio_queue_header, abi_version), OFF(megaio_queue_header, capacity),
		OFF(megaio_queue_header, first_ticket), OFF(megaio_queue_header, slots_offset),
		OFF(megaio_queue_header, completions_offset), OFF(megaio_queue_header, state),
		OFF(megaio_queue_header, claim_head), OFF(megaio_queue_header, completions),
		OFF(megaio_queue_header, bad_ids), OFF(megaio_queue_header, last_bad_seq),
		sizeof(megaio_request), OFF(megaio_request, seq), OFF(megaio_request, op), OFF(megaio_request, flags),
		OFF(megaio_request, file), OFF(megaio_request, dest), OFF(megaio_request, completion),
		OFF(megaio_request, file_offset), OFF(megaio_request, dest_offset), OFF(megaio_request, length),
		OFF(megaio_request, tag), OFF(megaio_request, reserved1),
		sizeof(megaio_completion), OFF(megaio_completion, result), OFF(megaio_completion, done),
		sizeof(megaio_producer_side), OFF(megaio_producer_side, next_ticket), OFF(megaio_producer_side, capacity),
		OFF(megaio_producer_side, completions), OFF(megaio_producer_side, claim_seen),
		MEGAIO_MAGIC, MEGAIO_ABI_VERSION, MEGAIO_MAX_LENGTH, MEGAIO_MAX_COMPLETIONS,
		MEGAIO_OP_NOP, MEGAIO_OP_READ, MEGAIO_OP_WRITE, MEGAIO_OP_FENCE, MEGAIO_OP_FSYNC,
		MEGAIO_EBADF, MEGAIO_ENXIO, MEGAIO_EFAULT, MEGAIO_EINVAL, MEGAIO_E2BIG, MEGAIO_EOVERFLOW,
		MEGAIO_ECANCELED, MEGAIO_ESHUTDOWN, MEGAIO_EIO, MEGAIO_EAGAIN,
	};
	memcpy(out, v, sizeof(v));
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Request mirrors megaio_request (seq is ignored on submit).
type Request struct {
	Seq        uint64
	Op         uint16
	Flags      uint16
	File       uint32
	Dest       uint32
	Completion uint32 // set by Run and RunMany
	FileOffset uint64
	DestOffset uint64
	Length     uint64
	Tag        uint64
	Reserved1  uint64
}

// Run has threads C producers submit reqs (len(reqs) / threads each, in
// order) through megaio_host_submit and megaio_host_wait, and returns each
// request's result. Producer k uses completion id ids[k].
func Run(queue, side []byte, ids []uint32, reqs []Request, threads int) ([]int64, error) {
	if threads < 1 || len(reqs)%threads != 0 || len(reqs) == 0 || len(ids) < threads {
		return nil, fmt.Errorf("cproducer: %d requests and %d ids do not split over %d threads", len(reqs), len(ids), threads)
	}
	results := make([]int64, len(reqs))
	ret := C.run_producers(unsafe.Pointer(&queue[0]), C.size_t(len(queue)), unsafe.Pointer(&side[0]),
		(*C.uint32_t)(unsafe.Pointer(&ids[0])), (*C.megaio_request)(unsafe.Pointer(&reqs[0])), (*C.int64_t)(unsafe.Pointer(&results[0])),
		C.int(threads), C.int(len(reqs)/threads))
	if ret < 0 {
		return results, fmt.Errorf("cproducer: errno %d", -ret)
	}
	return results, nil
}

// RunMany has threads C producers send per NOPs each, keeping up to depth
// (at most 64) in flight and collecting them in random order; producer k
// uses completion ids ids[k*depth .. (k+1)*depth). It returns how many
// completed.
func RunMany(queue, side []byte, ids []uint32, threads, per, depth int) (uint64, error) {
	if len(ids) < threads*depth {
		return 0, fmt.Errorf("cproducer: %d ids for %d threads of depth %d", len(ids), threads, depth)
	}
	var served C.uint64_t
	ret := C.run_many_producers(unsafe.Pointer(&queue[0]), C.size_t(len(queue)), unsafe.Pointer(&side[0]),
		(*C.uint32_t)(unsafe.Pointer(&ids[0])), C.int(threads), C.int(per), C.int(depth), &served)
	if ret < 0 {
		return uint64(served), fmt.Errorf("cproducer: errno %d", -ret)
	}
	return uint64(served), nil
}

// Attach runs megaio_attach and returns its result (0 or -EINVAL).
func Attach(queue []byte) int {
	return int(C.attach_only(unsafe.Pointer(&queue[0]), C.size_t(len(queue))))
}

// InitSide runs megaio_producer_side_init on side.
func InitSide(queue, side []byte) int {
	return int(C.init_side(unsafe.Pointer(&queue[0]), C.size_t(len(queue)), unsafe.Pointer(&side[0])))
}

// InitialSeq is megaio_initial_seq.
func InitialSeq(first, capacity, s uint64) uint64 {
	return uint64(C.c_initial_seq(C.uint64_t(first), C.uint64_t(capacity), C.uint64_t(s)))
}

// InitialDone is megaio_initial_done.
func InitialDone(first uint64) uint64 { return uint64(C.c_initial_done(C.uint64_t(first))) }

// FillRing publishes NOPs with completion id id through
// megaio_host_try_submit until it answers -EAGAIN (the ring is full), and
// returns how many it published, or a negative errno.
func FillRing(queue, side []byte, id uint32) int {
	return int(C.fill_ring(unsafe.Pointer(&queue[0]), C.size_t(len(queue)), unsafe.Pointer(&side[0]), C.uint32_t(id)))
}

// TrySubmit publishes one NOP with completion id id through
// megaio_host_try_submit and returns its answer (0 or a negative errno).
func TrySubmit(queue, side []byte, id uint32) int {
	return int(C.try_submit_id(unsafe.Pointer(&queue[0]), C.size_t(len(queue)), unsafe.Pointer(&side[0]), C.uint32_t(id)))
}

// LayoutNames names the values Layout returns, in order.
var LayoutNames = []string{
	"header", "header.abi_version", "header.capacity", "header.first_ticket", "header.slots_offset",
	"header.completions_offset", "header.state", "header.claim_head", "header.completions", "header.bad_ids",
	"header.last_bad_seq",
	"request", "request.seq", "request.op", "request.flags", "request.file", "request.dest",
	"request.completion", "request.file_offset", "request.dest_offset", "request.length", "request.tag",
	"request.reserved1",
	"completion", "completion.result", "completion.done",
	"producer_side", "producer_side.next_ticket", "producer_side.capacity", "producer_side.completions",
	"producer_side.claim_seen",
	"MAGIC", "ABI_VERSION", "MAX_LENGTH", "MAX_COMPLETIONS",
	"OP_NOP", "OP_READ", "OP_WRITE", "OP_FENCE", "OP_FSYNC",
	"EBADF", "ENXIO", "EFAULT", "EINVAL", "E2BIG", "EOVERFLOW", "ECANCELED", "ESHUTDOWN", "EIO", "EAGAIN",
}

// Layout returns the sizes, offsets and constants of include/megaio.h as C
// compiles them, keyed by LayoutNames.
func Layout() map[string]uint64 {
	v := make([]uint64, len(LayoutNames))
	C.layout((*C.uint64_t)(unsafe.Pointer(&v[0])))
	m := make(map[string]uint64, len(v))
	for i, n := range LayoutNames {
		m[n] = v[i]
	}
	return m
}
