package megaio

import "fmt"

// The ops, one row each: everything the loop, the device engine and the
// backends know of an op that is not in its own case of admit. Adding an op
// is a row here, its number in include/megaio.h's enum (and Op's constants
// in queue.go), and, if a backend runs it, an sqe op with its lines in
// csrc/uring_shim.c and csrc/pool_shim.c. A number with no row is refused
// with -EINVAL by admit, and the shims refuse an sqe op they do not know
// with -EINVAL too (TestUnknownOps).

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
