package megaio

import (
	"sync/atomic"
)

// A loop serves several queues: one per GPU, or one per persistent kernel,
// or one for a GPU kernel and one for host code, all reading the same files
// into the same buffers. Each queue keeps its own ring, producer side and
// completion table (ABI v2); the loop's registered files, buffers and
// destinations are shared by all of them: a handle means the same thing in
// every queue. (Per-queue visibility of handles would fence tenants apart,
// but megaio's queues live in one process that already shares its memory
// with every producer; a tenant boundary belongs to separate processes, each
// with its own loop.)
//
// Fairness. Claims go round the queues, starting one further each cycle,
// and take at most claimBudget requests from each, so a queue that floods
// cannot keep another's requests in its ring. When every record is taken,
// the requests claimed meanwhile wait in their own queue's list, and freed
// records go round the queues too: a trickling queue's request waits for at
// most one freed record per queue, never behind a flood's backlog.
//
// FENCE orders the requests of its own queue only: it completes once every
// request claimed before it from the same queue has completed. Requests of
// other queues are neither waited for nor held back.

// MaxQueues is the most queues one loop serves.
const MaxQueues = 256

// served is one queue as its loop serves it; only the loop's thread touches
// it, apart from pub.
type served struct {
	q       *Queue
	index   uint16        // in l.qs; records name their queue by it
	waiting fifo[claimed] // claimed requests waiting for a record, in claim order
	fence   fences
	st      queueCounters
	pub     publishedCounters[queueCounters]
	gpuAddr uint64 // where the loop's GPU sees the queue (MapForGPU), or 0
	// Fairness (QueueStats.MaxOvertaken): records taken for this queue's
	// requests, and for other queues' when this one last took one.
	taken, othersAtTake uint64
}

func newServed(q *Queue, index int, maxInflight int) *served {
	return &served{q: q, index: uint16(index), waiting: newFIFO[claimed](maxInflight), fence: newFences(maxInflight),
		pub: newPublished[queueCounters]()}
}

// claimBudget is the most requests claimed from one queue in one cycle: the
// cycle's claimBatch shared out, but at least minClaimBudget.
func (cy *cycle) claimBudget() int { return max(claimBatch/max(len(cy.qs), 1), minClaimBudget) }

// AddQueue makes the loop serve q as well, from the next Start: its ring,
// producer side and completions stay q's own; files, buffers and
// destinations are the loop's, shared by all its queues. The loop must be
// stopped (or not yet started); a queue is served by one loop at a time.
// When the loop is mapped for a GPU (MapForGPU), q is registered with it
// too (Loop.QueueAddress).
func (l *Loop) AddQueue(q *Queue) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.changeable("add a queue"); err != nil {
		return err
	}
	if err := q.attach(l); err != nil {
		return err
	}
	err := l.exec(func(cy *cycle) error {
		if len(cy.qs) >= MaxQueues {
			return errorf("%w: the loop already serves %d queues (MaxQueues)", ErrConfig, MaxQueues)
		}
		s := newServed(q, len(cy.qs), l.cfg.MaxInflight)
		if err := cy.mapQueue(s); err != nil {
			return err
		}
		cy.qs = append(cy.qs, s)
		cy.showQueues()
		return nil
	})
	if err != nil {
		q.detach()
	}
	return err
}

// DetachQueue stops serving q: the loop must be stopped, and q then holds
// no request in the loop (Stop completed every request claimed from it).
// What producers publish into q afterwards waits in its ring for the next
// loop q is given to (NewLoop or AddQueue), which resumes at the first
// unclaimed ticket. It fails with ErrNotRegistered when the loop does not
// serve q.
func (l *Loop) DetachQueue(q *Queue) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.changeable("detach a queue"); err != nil {
		return err
	}
	err := l.exec(func(cy *cycle) error {
		k := cy.servedIndex(q)
		if k < 0 {
			return errorf("%w: the queue is not served by this loop", ErrNotRegistered)
		}
		if err := cy.unmapQueue(cy.qs[k]); err != nil {
			return err
		}
		cy.qs = append(cy.qs[:k], cy.qs[k+1:]...)
		for i, s := range cy.qs {
			s.index = uint16(i) // no record holds an index: the loop is stopped
		}
		cy.showQueues()
		return nil
	})
	if err == nil {
		q.detach()
	}
	return err
}

// Queues lists the queues the loop serves, in the order of Stats.Queues.
func (l *Loop) Queues() []*Queue {
	view := l.queuesView.Load()
	if view == nil {
		return nil
	}
	qs := make([]*Queue, len(*view))
	for i, s := range *view {
		qs[i] = s.q
	}
	return qs
}

// changeable says why the set of queues cannot change now, or nil. The
// caller holds l.mu.
func (l *Loop) changeable(what string) error {
	switch {
	case l.closed:
		return errorf("%w: the loop", ErrClosed)
	case l.running:
		return errorf("%w: Stop the loop to %s", ErrRunning, what)
	case l.unfinished():
		return errorf("%w: the last Stop left requests in the kernel; Stop again to wait for them, then %s",
			ErrStopIncomplete, what)
	}
	return nil
}

// servedIndex is q's place in l.qs, or -1.
func (cy *cycle) servedIndex(q *Queue) int {
	for i, s := range cy.qs {
		if s.q == q {
			return i
		}
	}
	return -1
}

// showQueues publishes the list of served queues to other goroutines
// (Stats, Queues). Runs on the loop's thread after the list changed.
func (cy *cycle) showQueues() {
	view := append([]*served(nil), cy.qs...)
	cy.l.queuesView.Store(&view)
}

// setState stores state into every served queue's header (release): what
// producers read to learn that the loop serves, or stopped.
func (cy *cycle) setState(state uint32) {
	for _, s := range cy.qs {
		atomic.StoreUint32(&s.q.hdr.state, state)
	}
}

// claimBatch bounds the requests claimed in one cycle, so completions are
// reaped and submissions flushed between long runs of claims.
const claimBatch = 256

// minClaimBudget is the least a queue may claim in one cycle however many
// queues share claimBatch, so a busy queue does not pay a
// cycle for each handful.
const minClaimBudget = 16

// claim takes newly published requests from every queue, round the queues
// from a different one each cycle and at most claimBudget from each, so no
// queue starves another. It returns how many it claimed.
func (cy *cycle) claim() int {
	if cy.phase == phaseServing && cy.l.stopReq.Load() {
		cy.phase = phaseStopping // so a request published after Stop began is cancelled
	}
	now := int64(-1)
	if cy.nwaiting > 0 {
		now = cy.l.now()
		cy.admitWaiting(now)
	}
	n, k, budget := 0, len(cy.qs), cy.claimBudget()
	for j := range k {
		n += cy.claimFrom(cy.qs[(cy.nextClaim+j)%k], budget, &now)
	}
	if k > 0 {
		cy.nextClaim = (cy.nextClaim + 1) % k
	}
	return n
}

// claimFrom takes up to budget newly published requests from one queue in
// ticket order (L1) and then tells its producers how far it got: their
// slots are free again, whatever happens to the IO. A request that needs a
// record while every record is taken waits in the queue's own list
// (s.waiting, at most MaxInflight long), so a slow request holds a record,
// never the ring; only when that list is full too do requests stay in the
// ring. now is the claim time, read once a cycle when first needed.
func (cy *cycle) claimFrom(s *served, budget int, now *int64) int {
	q, n := s.q, 0
	for n < budget {
		head := q.head
		slot := &q.slots[head&q.mask]
		if atomic.LoadUint64(&slot.seq) != head+1 {
			break // nothing new: this was the idle poll's one cache line
		}
		mustWait := cy.needsRecord(slot.op) && (len(cy.free) == 0 || s.waiting.len() > 0)
		if mustWait && s.waiting.full() {
			break
		}
		req := *slot // the producer wrote it before publishing seq (P3, P4)
		q.head = head + 1
		n++
		s.st.claimed++
		switch {
		case req.completion >= uint32(len(q.comps)):
			cy.badCompletionID(s, head)
		case mustWait:
			s.waiting.push(claimed{ticket: head, req: req, others: cy.taken - s.taken})
			cy.nwaiting++
			cy.st.waited++
			s.st.waited++
		default:
			if *now < 0 {
				*now = cy.l.now()
			}
			cy.admit(s, head, &req, *now)
		}
	}
	// Tell producers how far the claims went (frees the slots copied out
	// above): when a quarter of the ring has been claimed since the last
	// time, or when nothing new was found. Producers read claim_head only
	// when their cached copy says the ring is full, so under load the
	// store (a fence) is paid once a quarter lap, not once a cycle; a full
	// ring is claimed a quarter at once, so they never wait for it long.
	if q.head != q.claimPublished && (n == 0 || q.head-q.claimPublished >= (q.mask+1)/4) {
		q.publishClaimHead()
	}
	return n
}

// needsRecord reports whether a request with op would take a record now.
func (cy *cycle) needsRecord(op Op) bool {
	return op.spec().record() && cy.phase == phaseServing
}

// admitWaiting admits claimed requests that waited for a record while
// records are free (or at once when stopping or failed: they then complete
// without one): in claim order within a queue, and round the queues, one
// request each, so a freed record goes to every queue in turn.
func (cy *cycle) admitWaiting(now int64) {
	for cy.nwaiting > 0 && (len(cy.free) > 0 || cy.phase != phaseServing) {
		s := cy.qs[cy.nextAdmit]
		cy.nextAdmit = (cy.nextAdmit + 1) % len(cy.qs)
		if s.waiting.len() > 0 {
			c := s.waiting.pop()
			cy.nwaiting--
			if c.cancelled {
				continue // its result is out already
			}
			// Records that went to other queues since this one last got
			// one or since c began to wait, whichever is later.
			s.st.maxOvertaken = max(s.st.maxOvertaken, cy.taken-s.taken-max(c.others, s.othersAtTake))
			cy.admit(s, c.ticket, &c.req, now)
		}
	}
}

// badCompletionID drops a request whose completion id is outside its
// queue's table: there is nowhere to write its result, so it is not run. It
// is counted in Stats and in the queue header's diagnosis line.
func (cy *cycle) badCompletionID(s *served, t uint64) {
	cy.st.badIDs++
	s.st.badIDs++
	atomic.StoreUint64(&s.q.hdr.lastBadSeq, t+1)
	atomic.StoreUint64(&s.q.hdr.badIDs, s.st.badIDs)
}

// claimed is a request the loop copied out of the ring, with its ticket,
// while it waits for a record.
type claimed struct {
	ticket    uint64
	others    uint64 // records taken for other queues when it began to wait
	req       requestSlot
	cancelled bool // completed by cancelRequest while it waited: skipped when its turn comes
}
