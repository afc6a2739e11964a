package megaio

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The ops, one row each: everything the loop, the device engine and the
// backends know of an op that is not in its own case of admit. Adding an op
// is a row here and a few lines in other files, C and the header included:
// docs/ARCHITECTURE.md, "Adding an op", lists every one. A number with no
// row is refused with -EINVAL by admit, and the shims refuse an sqe op they
// do not know with -EINVAL too (TestUnknownOps).

// opKind is how admit handles an op.
type opKind uint8

const (
	kindNone     opKind = iota // not an op: -EINVAL
	kindNop                    // completes at once, with 0
	kindTransfer               // bytes between a file and a destination, range-checked
	kindFile                   // an op on a file alone (no destination)
	kindFence                  // completes after every request of its queue claimed before it
)

// opSpec is one op's row.
type opSpec struct {
	name string
	kind opKind
	// sqe is the backend op that runs it (0: none; the loop completes it).
	sqe uint8
	// write: bytes flow from the destination to the file (the device
	// engine stages them before the IO, not after).
	write bool
}

var ops = [numOps]opSpec{
	OpNop:   {name: "NOP", kind: kindNop},
	OpRead:  {name: "READ", kind: kindTransfer, sqe: sqeRead},
	OpWrite: {name: "WRITE", kind: kindTransfer, sqe: sqeWrite, write: true},
	OpFence: {name: "FENCE", kind: kindFence},
	OpFsync: {name: "FSYNC", kind: kindFile, sqe: sqeFsync},
}

// spec is op's row; kind kindNone for a number with none.
func (o Op) spec() opSpec {
	if o < numOps {
		return ops[o]
	}
	return opSpec{}
}

// record reports whether a request with this op holds a loop record while
// it runs (everything but NOP and the numbers that are not ops).
func (s opSpec) record() bool {
	return s.kind == kindTransfer || s.kind == kindFile || s.kind == kindFence
}

// transfer reports whether the op moves bytes: its range is checked, a
// short transfer goes on from where it stopped, it may target device
// memory, and a per-request cancel may end it.
func (s opSpec) transfer() bool { return s.kind == kindTransfer }

func (o Op) String() string {
	if s := o.spec(); s.kind != kindNone {
		return s.name
	}
	return fmt.Sprintf("Op(%d)", uint16(o))
}

// A transfer's life, the same for a host record (loop.go's reaped) and a
// device request's pieces (devengine.go): an IO that moved some bytes but not
// all goes on from where it stopped (continues); once it ends, its result
// is transferResult. Host records and device pieces keep their own
// bookkeeping (a record's next file offset and address; a piece's staging
// chunk and alignment), but decide alike.

// continues reports whether a transfer goes on after an IO that returned
// res with left bytes still to move: only when the IO moved bytes (0 is
// EOF, a negative value an error) and the request is not being cancelled.
func continues(res int64, left uint64, cancelling bool) bool {
	return res > 0 && left > 0 && !cancelling
}

// transferResult is the result of a transfer that delivered moved bytes
// without a gap from its start and then ended: the count when it moved
// any, else the error that ended it (err < 0), else -ECANCELED when it was
// cancelled, else 0 (EOF at its first byte). An error after some bytes
// moved is not reported: the count says where it stopped.
func transferResult(moved uint64, err int64, cancelled bool) int64 {
	switch {
	case moved > 0:
		return int64(moved)
	case err < 0:
		return err
	case cancelled:
		return -int64(unix.ECANCELED)
	}
	return 0
}
