package megaio

import "sync/atomic"

// idPool lends completion ids: the id last put back (hot, one exchange each
// way: a goroutine that collects and submits again reuses its own id), a
// bounded lock-free FIFO queue of the other free ids (Vyukov's, each cell's
// sequence word saying whose turn the cell is), and the ticket each lent id
// belongs to, so that an id goes back exactly once.
//
// FIFO, not a stack: ids are reused least recently released first, so
// consecutive requests use consecutive completions, as ABI v1's slots did.
// A stack reuses the ids of the last few requests, whose completions share
// a few cache lines: the loop then writes one completion of a line while
// the producer polls its neighbour (false sharing), which cost 10-25% of the
// NOP round-trip rate in the benchmarks.
type idPool struct {
	cells []idCell
	mask  uint64
	_     [56]byte      // deq and enq on lines of their own
	deq   atomic.Uint64 // next cell to take an id from
	_     [56]byte
	enq   atomic.Uint64 // next cell to put an id into
	_     [56]byte
	owner []uint64 // owner[i]: ticket + 1 of the request holding id i, or 0
	_     [40]byte
	hot   atomic.Uint64 // the id last put back, plus 1 (0: none), outside the queue
}

// idCell holds a free id when seq == its position + 1, and is free for a
// put at position pos when seq == pos.
type idCell struct {
	seq atomic.Uint64
	id  uint32
}

func newIDPool(n int) *idPool {
	size := uint64(ceilPow2(uint32(n)))
	p := &idPool{cells: make([]idCell, size), mask: size - 1, owner: make([]uint64, n)}
	for i := range p.cells {
		p.cells[i].seq.Store(uint64(i))
	}
	for i := 0; i < n; i++ {
		p.enqueue(uint32(i))
	}
	return p
}

// get takes the id last put back if it is still there, else the least
// recently released free id.
func (p *idPool) get() (uint32, bool) {
	if v := p.hot.Swap(0); v != 0 {
		return uint32(v - 1), true
	}
	for {
		pos := p.deq.Load()
		c := &p.cells[pos&p.mask]
		switch seq := c.seq.Load(); {
		case seq == pos+1:
			if p.deq.CompareAndSwap(pos, pos+1) {
				id := c.id
				c.seq.Store(pos + p.mask + 1) // free for the put a lap later
				return id, true
			}
		case int64(seq-(pos+1)) < 0:
			return 0, false // empty
		}
	}
}

// put returns id to the pool: it becomes the hot id, and the hot id it
// replaces, if any, goes to the queue.
func (p *idPool) put(id uint32) {
	if old := p.hot.Swap(uint64(id) + 1); old != 0 {
		p.enqueue(uint32(old - 1))
	}
}

// enqueue adds id to the queue. The pool holds at most every id once, so a
// cell is always free.
func (p *idPool) enqueue(id uint32) {
	for {
		pos := p.enq.Load()
		c := &p.cells[pos&p.mask]
		if c.seq.Load() == pos && p.enq.CompareAndSwap(pos, pos+1) {
			c.id = id
			c.seq.Store(pos + 1)
			return
		}
	}
}
