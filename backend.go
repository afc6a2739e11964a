package megaio

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// backend is the seam between the cycle (loop.go) and what runs the IO:
// io_uring (uring_cgo.go) or, where io_uring is refused, a worker pool.
// Every method is called on the loop's locked OS thread.
type backend interface {
	// enter hands sqes to the backend (it may take a prefix: the rest is
	// backpressure and is offered again), then reaps up to len(cqes)
	// completions, waiting as wait says. A returned error is retryable
	// when isRetryable says so; any other error is fatal for the backend.
	enter(sqes []sqe, cqes []cqe, wait waitFor) (taken, reaped int, err error)
	// cancelAll asks every request in flight to end early; each still
	// completes through enter (with -ECANCELED or its real result).
	cancelAll() error
	// cancel asks the request in flight with userData (a record index)
	// to end early. With ended, the backend gave it back unrun: it will
	// not complete through enter, and the caller completes it. Otherwise
	// it still completes through enter; for an interrupter, call cancel
	// again each cycle until it does (a signal can land just before a
	// worker's system call).
	cancel(userData uint64) (ended bool, err error)
	// setFile points registered file index at fd (-1 clears it).
	setFile(index uint32, fd int) error
	// setBuffer points registered buffer index at mem (nil clears it).
	setBuffer(index uint16, mem []byte) error
	// describe names the backend and its set-up, for Stats.
	describe() string
	// close releases the backend; nothing is in flight.
	close()
}

// waitFor is how enter waits for completions: skipKernel, reapNow, or a
// positive duration: up to that long for the first completion when none is
// ready. The shims take it as nanoseconds, skipKernel as -1.
type waitFor time.Duration

const (
	// skipKernel: do not wait, and do not call into the kernel when there
	// is nothing to submit; reap what has already arrived.
	skipKernel waitFor = -1
	// reapNow: call into the kernel to submit and reap, without waiting.
	reapNow waitFor = 0
)

// interrupter is a backend whose requests may sit in a blocking system call
// that cancelAll alone does not end (the pool's workers). While cancelling,
// the loop calls interrupt every cycle until those requests complete.
type interrupter interface {
	// interrupt signals the threads still in a system call for a request
	// cancelled earlier, and returns how many it signalled.
	interrupt() int
}

// sqe is one request to the backend. Its layout, and the constants below,
// mirror csrc/backend.h (TestLayout pins them, through internal/clayout).
type sqe struct {
	userData uint64 // record index
	off      uint64 // file offset
	addr     uint64 // address inside registered buffer bufIndex
	len      uint32
	bufIndex uint16
	op       uint8 // sqeRead, sqeWrite, sqeFsync
	flags    uint8 // sqeRawFD
	file     int32 // registered file index, or a descriptor with sqeRawFD
	_        uint32
}

// cqe is one completion, mirroring struct megaio_cqe.
type cqe struct {
	userData uint64
	res      int32
	_        uint32 // flags: the loop reads none
}

const (
	sqeRead  = 1
	sqeWrite = 2
	sqeFsync = 3

	// sqeRawFD: file is a descriptor the loop keeps open until the IO
	// completes (the device paths' staged IOs), not a registered index.
	sqeRawFD = 1

	// sqeNoBuf (bufIndex): addr is plain memory of this process (a call
	// destination, calldest.go), not inside a registered buffer.
	sqeNoBuf = 0xffff

	// cancelUserData marks the loop's own cancel request; its completion
	// belongs to no record.
	cancelUserData = ^uint64(0)
)

// isRetryable reports whether an error of enter is passing: the same call
// may succeed later.
func isRetryable(err error) bool {
	return errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBUSY)
}
