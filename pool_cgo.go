package megaio

/*
#cgo CFLAGS: -O2 -Wall -I${SRCDIR}/include -I${SRCDIR}/csrc
#cgo LDFLAGS: -lpthread
#include "pool_shim.c"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poolBackend serves requests with a fixed pool of C threads doing pread,
// pwrite and fdatasync straight into the registered buffers
// (csrc/pool_shim.c): the backend for machines where io_uring is refused
// (Docker's and Kubernetes' default seccomp profiles,
// kernel.io_uring_disabled). Its semantics are the io_uring backend's: the
// cycle cannot tell them apart, and the same tests run against both.
type poolBackend struct {
	pool          *C.struct_megaio_pool
	workers, sq   uint32
	taken, reaped C.uint // out-parameters kept off the stack: enter allocates nothing
}

func openPool(workers int, sqEntries uint32, maxInflight int, nfiles int) (*poolBackend, error) {
	p := &poolBackend{workers: uint32(workers), sq: sqEntries}
	sq, cq := max(ceilPow2(sqEntries), 2), max(ceilPow2(uint32(maxInflight)+1), 2) // the shim's queues want powers of two
	if ret := C.megaio_pool_open(&p.pool, C.uint(workers), C.uint(sq), C.uint(cq), C.uint(nfiles), C.uint(maxInflight)); ret < 0 {
		return nil, errorf("starting %d pool workers: %w", workers, unix.Errno(-ret))
	}
	return p, nil
}

func (p *poolBackend) enter(sqes []sqe, cqes []cqe, wait waitFor) (int, int, error) {
	var sp *C.struct_megaio_sqe
	if len(sqes) > 0 {
		sp = (*C.struct_megaio_sqe)(unsafe.Pointer(&sqes[0]))
	}
	C.megaio_pool_enter(p.pool, sp, C.uint(len(sqes)), &p.taken,
		(*C.struct_megaio_cqe)(unsafe.Pointer(&cqes[0])), C.uint(len(cqes)), &p.reaped, C.int64_t(wait))
	return int(p.taken), int(p.reaped), nil
}

// cancelAll makes every job queued so far complete with -ECANCELED without
// running, and interrupts the workers inside a system call for one
// (megaio_pool_interrupt): a read blocked on a pipe or an interruptible
// FUSE file fails with EINTR and completes with -ECANCELED. A worker in an
// uninterruptible wait runs to its end; Stop returns ErrStopIncomplete
// meanwhile and the buffers stay mapped, so no worker writes into freed
// memory.
func (p *poolBackend) cancelAll() error {
	C.megaio_pool_cancel_all(p.pool)
	p.interrupt()
	return nil
}

// cancel ends one job: one no worker has taken yet is given back (ended);
// one in its system call has its worker signalled (megaio_pool_cancel).
func (p *poolBackend) cancel(userData uint64) (bool, error) {
	return C.megaio_pool_cancel(p.pool, C.uint64_t(userData)) == 1, nil
}

func (p *poolBackend) interrupt() int { return int(C.megaio_pool_interrupt(p.pool)) }

func (p *poolBackend) setFile(index uint32, fd int) error {
	if ret := C.megaio_pool_set_file(p.pool, C.uint(index), C.int(fd)); ret < 0 {
		return errorf("registering file slot %d with the worker pool: %w", index, unix.Errno(-ret))
	}
	return nil
}

// setBuffer has nothing to do: workers write through plain addresses, and
// the loop has bounds-checked every request against its destination.
func (p *poolBackend) setBuffer(uint16, []byte) error { return nil }

func (p *poolBackend) describe() string {
	return fmt.Sprintf("pool (%d worker threads, sq %d)", p.workers, p.sq)
}

func (p *poolBackend) close() { C.megaio_pool_close(p.pool) }
