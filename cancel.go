package megaio

// Ending one request early: the Client's ReadAtContext and WriteAtContext
// when their context ends. Stop cancels everything at its deadline
// (stopStep); this is the same thing for one request, and it takes the
// same paths through the backends (backend.cancel: IORING_OP_ASYNC_CANCEL,
// or the pool's per-job cancel and signal).
//
// A request is in one of five places while the loop holds it, and each has
// its way out:
//
//	unclaimed: not yet the loop's to end; cancelRequest reports it not
//	  found and the caller asks again (the Client does, until the request
//	  is found or complete);
//	claimed and waiting for a record (every record held): cancelRequest
//	  completes it at once with -ECANCELED and marks it, so admitWaiting
//	  skips it when its turn comes;
//	pending (between two pieces of a short transfer): dispatch completes
//	  it instead of issuing the next piece;
//	in a lane's batch, not yet taken by the backend: cancelStep takes it
//	  out and completes it;
//	in the backend: cancelStep asks the backend to end it (once for
//	  io_uring, whose cancel either ends the request or finds it past
//	  cancelling; every cycle for the pool, whose signal can land just
//	  before a worker's system call), and reaped completes it with what it
//	  moved, never issuing another piece. The pool gives a job no worker
//	  has taken yet straight back, and cancelStep completes it.
//
// Either way the request completes through its completion id like any
// other, with the bytes moved before the cancel took effect, or
// -ECANCELED when none were. A request the kernel is already copying for
// runs to its end: a cancel is a request, not a guarantee.

import (
	"golang.org/x/sys/unix"
)

// cancelTicket asks the loop to end queue q's request t early, and reports
// whether the loop had it (claimed and holding a record, or already
// complete is the caller's to see through Poll). It runs on the loop's
// thread, idle or serving (exec): not a hot-path call.
func (l *Loop) cancelTicket(q *Queue, t Ticket) (found bool, err error) {
	err = l.exec(func(cy *cycle) error {
		found = cy.cancelRequest(q, t.n)
		return nil
	})
	return found, err
}

// cancelRequest marks the record of queue q's ticket seq to end early
// (cancelStep does the rest next cycle). Loop thread only. A device
// request, or an op that is not a READ or WRITE, runs to its end; it is
// reported found, since asking again would not change that.
func (cy *cycle) cancelRequest(q *Queue, seq uint64) bool {
	for i := range cy.recs {
		r := &cy.recs[i]
		if !r.live || r.ticket != seq || cy.qs[r.queue].q != q {
			continue
		}
		if r.cancel == notCancelled && !r.dev && r.op.spec().transfer() {
			r.cancel = cancelWanted
			cy.cancels = append(cy.cancels, uint32(i))
		}
		return true
	}
	for _, s := range cy.qs {
		if s.q != q {
			continue
		}
		for k := range s.waiting.len() {
			c := s.waiting.at(k)
			if c.ticket != seq {
				continue
			}
			if !c.cancelled && c.req.op.spec().transfer() {
				c.cancelled = true
				cy.complete(s, c.ticket, c.req.completion, -int64(unix.ECANCELED), 0)
			}
			return true
		}
	}
	return false
}

// cancelStep runs each cycle while records are asked to end early, after
// dispatch (which has completed those that were pending) and before the
// flush that submits the backends' cancels. It keeps in l.cancels the
// records still in a backend.
func (cy *cycle) cancelStep() {
	keep := cy.cancels[:0]
	for _, i := range cy.cancels {
		r := &cy.recs[i]
		if !r.live || r.cancel == notCancelled {
			continue // completed since (and maybe taken again)
		}
		ln := &cy.lanes[r.lane]
		if k := batchIndex(ln.sqes, i); k >= 0 {
			ln.sqes = append(ln.sqes[:k], ln.sqes[k+1:]...)
			cy.finishCancelled(i, cy.l.now())
			continue
		}
		_, again := ln.be.(interrupter)
		if r.cancel == cancelWanted || again {
			ended, err := ln.be.cancel(uint64(i))
			if ended { // given back unrun: it will not be reaped
				ln.inflight--
				cy.inflight--
				cy.finishCancelled(i, cy.l.now())
				continue
			}
			if err == nil { // else the SQ is full: next cycle
				r.cancel = cancelSent
			}
		}
		keep = append(keep, i)
	}
	cy.cancels = keep
}

// batchIndex is where record i's SQE sits in a lane's batch, or -1.
func batchIndex(sqes []sqe, i uint32) int {
	for k := range sqes {
		if sqes[k].userData == uint64(i) {
			return k
		}
	}
	return -1
}

// finishCancelled completes record i, cancelled before (another of) its
// pieces reached the backend: with the bytes moved so far, or -ECANCELED.
// Stop's deadline ends records the same way (abandon).
func (cy *cycle) finishCancelled(i uint32, now int64) {
	cy.finishAt(i, transferResult(cy.recs[i].done, 0, true), now)
}
