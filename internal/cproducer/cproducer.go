// Package cproducer runs megaio's plain-C host producer functions
// (include/megaio.h) from C threads, for the package's tests: cgo is not
// allowed in _test.go files. It also reports the C layout of the ABI so the
// Go mirrors can be checked against the header itself.
package cproducer

/*
#cgo CFLAGS: -O2 -Wall -Werror -std=c11 -I${SRCDIR}/../../include
#cgo LDFLAGS: -lpthread
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "megaio.h"

struct job {
	megaio_queue q;
	megaio_producer_side *side;
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
		int r = megaio_host_submit(&j->q, j->side, &j->reqs[i], &t);
		if (r < 0) {
			j->err = r;
			return NULL;
		}
		r = megaio_host_wait(&j->q, j->side, t, &j->results[i]);
		if (r < 0) {
			j->err = r;
			return NULL;
		}
	}
	return NULL;
}

// Runs threads producers; producer k submits reqs[k*per .. (k+1)*per) one
// at a time and stores each result. Returns 0 or a negative errno.
static int run_producers(void *queue, size_t qlen, void *side, const megaio_request *reqs, int64_t *results,
			 int threads, int per)
{
	megaio_queue q;
	int ret = megaio_attach(queue, qlen, &q);
	if (ret < 0)
		return ret;
	struct job *jobs = calloc(threads, sizeof(*jobs));
	pthread_t *tids = calloc(threads, sizeof(*tids));
	for (int k = 0; k < threads; k++) {
		jobs[k] = (struct job){q, side, reqs + (size_t)k * per, results + (size_t)k * per, per, 0};
		pthread_create(&tids[k], NULL, run_job, &jobs[k]);
	}
	for (int k = 0; k < threads; k++) {
		pthread_join(tids[k], NULL);
		if (jobs[k].err < 0)
			ret = jobs[k].err;
	}
	free(jobs);
	free(tids);
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

#define OFF(t, f) (uint64_t)offsetof(t, f)
static void layout(uint64_t *out)
{
	uint64_t v[] = {
		sizeof(megaio_queue_header), OFF(megaio_queue_header, abi_version), OFF(megaio_queue_header, capacity),
		OFF(megaio_queue_header, first_ticket), OFF(megaio_queue_header, slots_offset),
		OFF(megaio_queue_header, completions_offset), OFF(megaio_queue_header, state),
		OFF(megaio_queue_header, stop_head),
		sizeof(megaio_request), OFF(megaio_request, seq), OFF(megaio_request, op), OFF(megaio_request, flags),
		OFF(megaio_request, file), OFF(megaio_request, dest), OFF(megaio_request, reserved0),
		OFF(megaio_request, file_offset), OFF(megaio_request, dest_offset), OFF(megaio_request, length),
		OFF(megaio_request, tag), OFF(megaio_request, reserved1),
		sizeof(megaio_completion), OFF(megaio_completion, result), OFF(megaio_completion, done),
		sizeof(megaio_producer_side), OFF(megaio_producer_side, next_ticket), OFF(megaio_producer_side, capacity),
		MEGAIO_MAGIC, MEGAIO_ABI_VERSION, MEGAIO_MAX_LENGTH,
		MEGAIO_OP_NOP, MEGAIO_OP_READ, MEGAIO_OP_WRITE, MEGAIO_OP_FENCE, MEGAIO_OP_FSYNC,
		MEGAIO_EBADF, MEGAIO_ENXIO, MEGAIO_EFAULT, MEGAIO_EINVAL, MEGAIO_E2BIG, MEGAIO_EOVERFLOW,
		MEGAIO_ECANCELED, MEGAIO_ESHUTDOWN, MEGAIO_EIO,
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
	Reserved0  uint32
	FileOffset uint64
	DestOffset uint64
	Length     uint64
	Tag        uint64
	Reserved1  uint64
}

// Run has threads C producers submit reqs (len(reqs) / threads each, in
// order) through megaio_host_submit and megaio_host_wait, and returns each
// request's result.
func Run(queue, side []byte, reqs []Request, threads int) ([]int64, error) {
	if threads < 1 || len(reqs)%threads != 0 || len(reqs) == 0 {
		return nil, fmt.Errorf("cproducer: %d requests do not split over %d threads", len(reqs), threads)
	}
	results := make([]int64, len(reqs))
	ret := C.run_producers(unsafe.Pointer(&queue[0]), C.size_t(len(queue)), unsafe.Pointer(&side[0]),
		(*C.megaio_request)(unsafe.Pointer(&reqs[0])), (*C.int64_t)(unsafe.Pointer(&results[0])),
		C.int(threads), C.int(len(reqs)/threads))
	if ret < 0 {
		return results, fmt.Errorf("cproducer: errno %d", -ret)
	}
	return results, nil
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

// LayoutNames names the values Layout returns, in order.
var LayoutNames = []string{
	"header", "header.abi_version", "header.capacity", "header.first_ticket", "header.slots_offset",
	"header.completions_offset", "header.state", "header.stop_head",
	"request", "request.seq", "request.op", "request.flags", "request.file", "request.dest",
	"request.reserved0", "request.file_offset", "request.dest_offset", "request.length", "request.tag",
	"request.reserved1",
	"completion", "completion.result", "completion.done",
	"producer_side", "producer_side.next_ticket", "producer_side.capacity",
	"MAGIC", "ABI_VERSION", "MAX_LENGTH",
	"OP_NOP", "OP_READ", "OP_WRITE", "OP_FENCE", "OP_FSYNC",
	"EBADF", "ENXIO", "EFAULT", "EINVAL", "E2BIG", "EOVERFLOW", "ECANCELED", "ESHUTDOWN", "EIO",
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
