package megaio

// Transfers on the caller's goroutine. A READ of bytes the page cache
// already holds, or of a file kept in memory, waits on no device: handing it
// to the loop's thread costs two wake-ups and a thread hop for a copy the
// caller can make itself, as os.File does. So the Client's ReadAt and
// WriteAt first try the transfer here without blocking, and hand the loop
// only what would block:
//
//   - files in memory only (tmpfs without swap, ramfs, hugetlbfs: the same
//     test as the loop's inline reads, inline.go): plain pread and pwrite;
//   - any other file opened without O_DIRECT: preadv2 and pwritev2 with
//     RWF_NOWAIT, which move what they can without waiting (the cached
//     part of a READ; a buffered WRITE the file system can take at once)
//     and answer EAGAIN for what would wait (or EOPNOTSUPP where the file
//     system does not offer it: the file's calls then go to the loop);
//   - O_DIRECT files never: their IO is the device's.
//
// What is left (all of it on EAGAIN, the rest of a partial transfer) goes
// to the loop as before. ClientConfig.NoCallerIO turns it off;
// ClientStats.CallerIO counts the calls served wholly here.

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// callerMode says how a file's calls may run on the caller's goroutine.
type callerMode uint8

const (
	callerNever  callerMode = iota // O_DIRECT, or turned off: always the loop
	callerNoWait                   // preadv2/pwritev2 with RWF_NOWAIT
	callerMemory                   // in memory only: plain pread/pwrite
)

// callerIndex is op's entry in File.caller: READs and WRITEs apart, since a
// file system may offer RWF_NOWAIT for one and not the other.
func callerIndex(op Op) int {
	if op == OpWrite {
		return 1
	}
	return 0
}

// callerModeOf decides for descriptor fd opened with flags; disabled is
// ClientConfig.NoCallerIO.
func callerModeOf(fd, flags int, disabled bool) callerMode {
	if disabled || flags&unix.O_DIRECT != 0 {
		return callerNever
	}
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) == nil && memoryBacked(int64(st.Type)) {
		return callerMemory
	}
	return callerNoWait
}

// callerTransfer moves what it can of p at off on this goroutine without
// waiting on a device. It returns the bytes moved and whether the call is
// over: a transfer that moved everything, a READ that met the end of the
// file (n short, eof), or an error the loop would meet too. When not over,
// the rest, p[n:] at off+n, is the loop's.
func (f *File) callerTransfer(op Op, p []byte, off int64) (n int, over, eof bool, err error) {
	// f's finalizer closes f.fd: f stays reachable until the system calls
	// on f.fd have returned.
	defer runtime.KeepAlive(f)
	for n < len(p) {
		var m int
		switch f.caller[callerIndex(op)].Load() {
		case uint32(callerMemory):
			if op == OpRead {
				m, err = unix.Pread(f.fd, p[n:], off+int64(n))
			} else {
				m, err = unix.Pwrite(f.fd, p[n:], off+int64(n))
			}
		case uint32(callerNoWait):
			m, err = rwNoWait(f.fd, op, p[n:], off+int64(n))
		default:
			return n, false, false, nil
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return n, false, false, nil // the rest would wait: the loop's
		case err == unix.EOPNOTSUPP:
			f.caller[callerIndex(op)].Store(uint32(callerNever)) // this file system has no RWF_NOWAIT for op
			return n, false, false, nil
		case err != nil:
			return n, false, false, nil // the loop meets it afresh, and reports it as every other error
		case m == 0 && op == OpRead:
			return n, true, true, nil // the end of the file
		case m == 0:
			return n, false, false, nil
		}
		n += m
	}
	return n, true, false, nil
}

// rwNoWait is preadv2 or pwritev2 of p at off with RWF_NOWAIT, one iovec
// on the stack (unix.Preadv2 would allocate its slice of them).
func rwNoWait(fd int, op Op, p []byte, off int64) (int, error) {
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	nr := uintptr(unix.SYS_PREADV2)
	if op == OpWrite {
		nr = unix.SYS_PWRITEV2
	}
	// pos_l, pos_h: the whole offset in pos_l on 64-bit kernels.
	n, _, e := unix.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, uintptr(off), 0, unix.RWF_NOWAIT)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// errNegativeOffset is os.File's answer to a negative offset, in the same
// words.
var errNegativeOffset = errorString("negative offset")

type errorString string

func (e errorString) Error() string { return string(e) }
