package megaio

// FENCE, per queue: every request a queue claims is counted in its
// current epoch, and a FENCE closes the epoch; it completes once every
// epoch up to its own has drained, in claim order.

// retireFences completes, in order, every fence of queue s whose earlier
// requests have all completed.
func (cy *cycle) retireFences(s *served, now int64) {
	for {
		i, ok := s.fence.retire()
		if !ok {
			return
		}
		r := &cy.recs[i]
		cy.complete(s, r.ticket, r.cid, 0, now-r.claimedAt)
		cy.release(i)
	}
}

// fences implements FENCE: requests are counted by epoch, and each FENCE
// closes the current epoch. A fence completes when every epoch up to its
// own has no request left, in claim order.
type fences struct {
	cur, oldest uint64   // open epochs are [oldest, cur]
	count       []int32  // requests outstanding, by epoch
	rec         []uint32 // the fence record that closed an epoch
	mask        uint64
}

func newFences(maxRecords int) fences {
	n := ceilPow2(uint32(maxRecords) + 1)
	return fences{count: make([]int32, n), rec: make([]uint32, n), mask: uint64(n - 1)}
}

// add counts a request claimed now.
func (f *fences) add(r *record) { r.epoch = f.cur; f.count[f.cur&f.mask]++ }

// done uncounts a finished request (fences are not counted).
func (f *fences) done(r *record) {
	if r.op != OpFence {
		f.count[r.epoch&f.mask]--
	}
}

// open makes fence record i close the current epoch.
func (f *fences) open(i uint32, r *record) {
	r.epoch = f.cur
	f.rec[f.cur&f.mask] = i
	f.cur++
	f.count[f.cur&f.mask] = 0
}

// retire returns the oldest fence whose epochs have drained.
func (f *fences) retire() (uint32, bool) {
	if f.oldest == f.cur || f.count[f.oldest&f.mask] != 0 {
		return 0, false
	}
	i := f.rec[f.oldest&f.mask]
	f.oldest++
	return i, true
}
