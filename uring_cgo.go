package megaio

/*
#cgo CFLAGS: -O2 -Wall -I${SRCDIR}/include -I${SRCDIR}/csrc
#cgo LDFLAGS: -Wl,-Bstatic -luring -Wl,-Bdynamic
#include "uring_shim.c"
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uringBackend serves requests through one io_uring owned by the loop's
// locked OS thread.
type uringBackend struct {
	ring  *C.struct_megaio_ring
	flags C.uint
	sq    uint32
	cq    uint32
	// Out-parameters of megaio_ring_enter. Pointers handed to C escape,
	// so they live here rather than on the stack: enter allocates nothing.
	taken, reaped C.uint
}

// openURing creates the ring with sparse tables of nfiles files and nbufs
// buffers, probing SINGLE_ISSUER, DEFER_TASKRUN and COOP_TASKRUN.
func openURing(sqEntries, cqEntries, nfiles, nbufs uint32) (*uringBackend, error) {
	b := &uringBackend{sq: sqEntries, cq: cqEntries}
	var step C.int
	ret := C.megaio_ring_open(&b.ring, C.uint(sqEntries), C.uint(cqEntries), C.uint(nfiles), C.uint(nbufs),
		&b.flags, &step)
	if ret < 0 {
		return nil, uringSetupError(int(step), unix.Errno(-ret))
	}
	return b, nil
}

func uringSetupError(step int, errno unix.Errno) error {
	names := map[int]string{C.MEGAIO_STEP_SETUP: "io_uring_setup", C.MEGAIO_STEP_FILES: "register_files_sparse",
		C.MEGAIO_STEP_BUFFERS: "register_buffers_sparse", C.MEGAIO_STEP_ALLOC: "allocating the ring"}
	e := &SetupError{Step: names[step], Errno: errno, Kind: ErrIOUringUnavailable}
	switch {
	case errno == unix.ENOMEM:
		e.Kind, e.Hint = ErrMemlock, memlockHint()
	case errno == unix.EPERM || errno == unix.ENOSYS || errno == unix.EACCES:
		e.Hint = "io_uring is refused here (kernel.io_uring_disabled, a seccomp profile such as " +
			"Docker's default, or a kernel without io_uring); see the README's container section"
	case step == C.MEGAIO_STEP_SETUP:
		e.Kind = ErrConfig
		e.Hint = fmt.Sprintf("the kernel refused the ring's sizes")
	}
	return e
}

func (b *uringBackend) enter(sqes []sqe, cqes []cqe, wait waitFor) (int, int, error) {
	var sp *C.struct_megaio_sqe
	if len(sqes) > 0 {
		sp = (*C.struct_megaio_sqe)(unsafe.Pointer(&sqes[0]))
	}
	ret := C.megaio_ring_enter(b.ring, sp, C.uint(len(sqes)), &b.taken,
		(*C.struct_megaio_cqe)(unsafe.Pointer(&cqes[0])), C.uint(len(cqes)), &b.reaped, C.int64_t(wait))
	if ret < 0 {
		return int(b.taken), int(b.reaped), unix.Errno(-ret)
	}
	return int(b.taken), int(b.reaped), nil
}

func (b *uringBackend) cancelAll() error {
	if ret := C.megaio_ring_cancel_all(b.ring); ret < 0 {
		return unix.Errno(-ret)
	}
	return nil
}

func (b *uringBackend) cancel(userData uint64) (bool, error) {
	if ret := C.megaio_ring_cancel(b.ring, C.uint64_t(userData)); ret < 0 {
		return false, unix.Errno(-ret)
	}
	return false, nil
}

func (b *uringBackend) setFile(index uint32, fd int) error {
	if ret := C.megaio_ring_set_file(b.ring, C.uint(index), C.int(fd)); ret < 0 {
		return errorf("registering file slot %d with io_uring: %w", index, unix.Errno(-ret))
	}
	return nil
}

func (b *uringBackend) setBuffer(index uint16, mem []byte) error {
	var addr, n uint64
	if len(mem) > 0 {
		addr, n = uint64(uintptr(unsafe.Pointer(&mem[0]))), uint64(len(mem))
	}
	if ret := C.megaio_ring_set_buffer(b.ring, C.uint(index), C.uint64_t(addr), C.uint64_t(n)); ret < 0 {
		errno := unix.Errno(-ret)
		if errno == unix.ENOMEM {
			return &SetupError{Step: "registering a buffer with io_uring", Errno: errno, Kind: ErrMemlock,
				Hint: memlockHint()}
		}
		return errorf("registering buffer %d (%d bytes) with io_uring: %w", index, n, errno)
	}
	return nil
}

func (b *uringBackend) describe() string {
	var f []string
	if b.flags&C.MEGAIO_RING_SINGLE_ISSUER != 0 {
		f = append(f, "SINGLE_ISSUER")
	}
	if b.flags&C.MEGAIO_RING_DEFER_TASKRUN != 0 {
		f = append(f, "DEFER_TASKRUN")
	}
	if b.flags&C.MEGAIO_RING_COOP_TASKRUN != 0 {
		f = append(f, "COOP_TASKRUN")
	}
	if len(f) == 0 {
		f = append(f, "no set-up flags")
	}
	return fmt.Sprintf("io_uring (sq %d, cq %d, %s)", b.sq, b.cq, strings.Join(f, "|"))
}

func (b *uringBackend) close() { C.megaio_ring_close(b.ring) }
