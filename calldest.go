package megaio

import "sync/atomic"

// Call destinations: a Client's caller's own memory (a plain []byte, pinned
// for the call) as the destination of the call's requests, with no
// registration, no staging copy, no locked memory and no round trip to the
// loop's thread.
//
// A request still names a destination handle and an offset, never an
// address, and the loop still checks the range. Handles with callDestBit
// set name an entry of the loop's call table, which holds an address and a
// length. Only the queue the table was made for (the Client's) may name
// them; a request of any other queue naming one gets -ENXIO.
//
// The ordering, for entry e and a call's requests (Go atomics are
// sequentially consistent, so each pair below is a happens-before edge):
//
//	C1  the caller takes e from the free pool (no one else holds it)
//	C2  store(e.addr), store(e.length = n)       before the requests' seq
//	C3  publish the requests (release of seq)     pairs with the loop's L1
//	L1  the loop claims a request (acquire of seq) and only then loads
//	    e.length and e.addr: it sees C2's values, never an older call's
//	L2  the IO runs into [addr, addr+n); the loop publishes the completion
//	    (release of done) only after the kernel is done with the memory,
//	    including continuations after a short transfer
//	C4  the caller sees every request's done (acquire), so every IO into
//	    the memory happened before; then store(e.length = 0), unpin, and
//	    put e back (C1 of the next call)
//
// A request the loop claims after C4 (one the caller never published: a
// producer breaking the contract) sees length 0 and gets -ENXIO, or the
// next call's entry, whose range it is still checked against.
// If Close stops the loop with IO still in the kernel (ErrStopIncomplete),
// the requests are not complete, so the caller still waits and its memory
// stays pinned.
const (
	callDestBit   = 1 << 31
	callDestCount = 1024 // calls in flight at once; more take the staging path
)

type callDest struct {
	addr   atomic.Uint64
	length atomic.Uint64 // 0: free
}

// callTable is a loop's call destinations.
type callTable struct {
	q    *Queue // the queue whose requests may name them
	ents [callDestCount]callDest
	free *idPool
}

func newCallTable(q *Queue) *callTable { return &callTable{q: q, free: newIDPool(callDestCount)} }

// acquire takes a free entry for n bytes at addr (C1, C2); false when
// every entry is held.
func (c *callTable) acquire(addr uintptr, n int) (DestHandle, bool) {
	id, ok := c.free.get()
	if !ok {
		return 0, false
	}
	e := &c.ents[id]
	e.addr.Store(uint64(addr))
	e.length.Store(uint64(n))
	return DestHandle(callDestBit | id), true
}

// release retires an entry whose requests have all completed (C4).
func (c *callTable) release(d DestHandle) {
	id := uint32(d) &^ callDestBit
	c.ents[id].length.Store(0)
	c.free.put(id)
}

// lookup is the loop's L1: the entry dest names, for a request of queue q,
// as a destination; false if q may not name it or it is not held.
func (c *callTable) lookup(q *Queue, dest uint32) (destination, bool) {
	id := dest &^ callDestBit
	if c == nil || q != c.q || id >= callDestCount {
		return destination{}, false
	}
	e := &c.ents[id]
	n := e.length.Load()
	if n == 0 {
		return destination{}, false
	}
	return destination{buf: sqeNoBuf, addr: e.addr.Load(), length: n, valid: true}, true
}
