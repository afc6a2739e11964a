package megaio

// Admission: what happens to a request between its claim (multiqueue.go) and
// the batch (dispatch, loop.go). A request goes one way: admit reads its
// op's row (ops.go), checks it against the tables (checkRange, checkFile,
// below), hands device-memory requests to the device engine (devengine.go, which
// answers only through engineHost), takes a record and queues it for
// dispatch; a request that fails a check completes here, with its errno.

import "golang.org/x/sys/unix"

// admit validates a request claimed from queue s: bad ones, and all while
// stopping or failed, complete at once; NOPs complete; the rest take a
// record.
func (cy *cycle) admit(s *served, t uint64, req *requestSlot, now int64) {
	if req.op < numOps {
		cy.st.requests[req.op]++
	} else {
		cy.st.badOps++
	}
	var res int64
	spec := req.op.spec()
	switch {
	case cy.phase == phaseFailed:
		res = -int64(unix.EIO)
	case cy.phase != phaseServing:
		res = -int64(unix.ECANCELED)
	case req.flags != 0 || req.reserved1 != 0:
		res = -int64(unix.EINVAL)
	case spec.kind == kindNop:
		res = 0
	case spec.kind == kindFence:
		i := cy.take(s, t, req.completion, req.op, now)
		s.fence.open(i, &cy.recs[i])
		cy.retireFences(s, now)
		return
	case spec.kind == kindTransfer:
		d, e := cy.tab.checkRange(s.q, req.file, req.dest, req.fileOffset, req.destOffset, req.length)
		if e != 0 {
			res = e
			break
		}
		if d.dev != nil { // device memory: the device engine's (devengine.go)
			p, e := cy.dev.plan(req, d)
			if e != 0 {
				res = e
				break
			}
			i := cy.take(s, t, req.completion, req.op, now)
			cy.recs[i].dev = true
			s.fence.add(&cy.recs[i])
			cy.dev.take(i, req, d, p, cy.tab.files[req.file].lane)
			return
		}
		i := cy.take(s, t, req.completion, req.op, now)
		r := &cy.recs[i]
		r.file, r.buf, r.fileOff, r.addr, r.remaining = req.file, d.buf, req.fileOffset, d.addr+req.destOffset, req.length
		r.lane = cy.tab.files[req.file].lane
		s.fence.add(r)
		cy.pending.push(i)
		return
	case spec.kind == kindFile:
		if res = cy.tab.checkFile(req.file); res != 0 {
			break
		}
		i := cy.take(s, t, req.completion, req.op, now)
		cy.recs[i].file, cy.recs[i].lane = req.file, cy.tab.files[req.file].lane
		s.fence.add(&cy.recs[i])
		cy.pending.push(i)
		return
	default: // kindNone: not an op
		res = -int64(unix.EINVAL)
	}
	cy.complete(s, t, req.completion, res, 0)
}

// take allocates a record for ticket t of queue s, completing into id cid.
func (cy *cycle) take(s *served, t uint64, cid uint32, op Op, now int64) uint32 {
	i := cy.free[len(cy.free)-1]
	cy.free = cy.free[:len(cy.free)-1]
	cy.taken++
	s.taken++
	s.othersAtTake = cy.taken - s.taken
	cy.recs[i] = record{ticket: t, cid: cid, queue: s.index, op: op, claimedAt: now, live: true}
	return i
}

// checkRange validates a READ or WRITE of queue q against the tables and
// returns its destination (valid until the next call), or the negative
// errno that completes the request.
func (t *tables) checkRange(q *Queue, file, dest uint32, fileOffset, destOffset, length uint64) (*destination, int64) {
	if file >= uint32(len(t.files)) || !t.files[file].valid {
		return nil, -int64(unix.EBADF)
	}
	var d *destination
	if dest&callDestBit != 0 {
		cd, ok := t.calls.lookup(q, dest)
		if !ok {
			return nil, -int64(unix.ENXIO)
		}
		t.scratch = cd
		d = &t.scratch
	} else if dest >= uint32(len(t.dests)) || !t.dests[dest].valid {
		return nil, -int64(unix.ENXIO)
	} else {
		d = &t.dests[dest]
	}
	switch {
	case length == 0:
		return nil, -int64(unix.EINVAL)
	case length > MaxLength:
		return nil, -int64(unix.E2BIG)
	case fileOffset > 1<<63-1-length:
		return nil, -int64(unix.EOVERFLOW)
	}
	if destOffset > d.length || length > d.length-destOffset {
		return nil, -int64(unix.EFAULT)
	}
	return d, 0
}

func (t *tables) checkFile(file uint32) int64 {
	if file >= uint32(len(t.files)) || !t.files[file].valid {
		return -int64(unix.EBADF)
	}
	return 0
}
