// Package clayout reports the C layout and constants of csrc/backend.h
// (what the cycle hands a backend), so the package's tests can pin the Go
// mirrors (types sqe and cqe, the sqe constants in backend.go) to them: cgo
// is not allowed in _test.go files, and the production package keeps no
// test-only code.
//
// backend.h here is a symbolic link to csrc/backend.h, so an edit of the
// header rebuilds this package (see internal/cproducer).
package clayout

/*
#cgo CFLAGS: -O2 -Wall -Werror -std=c11
#include <stddef.h>
#include "backend.h"
*/
import "C"

import "unsafe"

// Layout is the sizes and offsets of struct megaio_sqe and struct
// megaio_cqe, and backend.h's constants, by name.
func Layout() map[string]uint64 {
	var s C.struct_megaio_sqe
	var q C.struct_megaio_cqe
	return map[string]uint64{
		"sqe": uint64(unsafe.Sizeof(s)), "sqe.user_data": uint64(unsafe.Offsetof(s.user_data)),
		"sqe.off": uint64(unsafe.Offsetof(s.off)), "sqe.addr": uint64(unsafe.Offsetof(s.addr)),
		"sqe.len": uint64(unsafe.Offsetof(s.len)), "sqe.buf_index": uint64(unsafe.Offsetof(s.buf_index)),
		"sqe.op": uint64(unsafe.Offsetof(s.op)), "sqe.flags": uint64(unsafe.Offsetof(s.flags)),
		"sqe.file": uint64(unsafe.Offsetof(s.file)),
		"cqe":      uint64(unsafe.Sizeof(q)), "cqe.user_data": uint64(unsafe.Offsetof(q.user_data)),
		"cqe.res":  uint64(unsafe.Offsetof(q.res)),
		"SQE_READ": C.MEGAIO_SQE_READ, "SQE_WRITE": C.MEGAIO_SQE_WRITE, "SQE_FSYNC": C.MEGAIO_SQE_FSYNC,
		"SQE_RAW_FD": C.MEGAIO_SQE_RAW_FD, "SQE_NO_BUF": C.MEGAIO_SQE_NO_BUF,
		"CANCEL_USER_DATA": C.MEGAIO_CANCEL_USER_DATA,
	}
}
