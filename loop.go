package megaio

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio/internal/spin"
)

// publishEvery is how many cycles a busy loop runs between publications of
// its counters (an idle one publishes before each sleep).
const publishEvery = 256

// commandQueue is how many commands (exec, Start, Close) may wait for the
// loop's thread before senders block.
const commandQueue = 16

// fuseLaneWorkers is the most workers of the FUSE lane's pool (fuseLane).
const fuseLaneWorkers = 4

// Loop serves one or more queues (AddQueue, queues.go): one goroutine
// locked to its OS thread owns the io_uring, the registered files and
// buffers, and runs the cycle. Methods may be called from any goroutine.
type Loop struct {
	cfg Config

	// Control: any goroutine.
	mu           sync.Mutex // serialises Start, Stop and Close
	running      bool
	runDone      chan struct{} // closed when a run's serve returns
	cmdMu        sync.RWMutex  // guards closed against exec
	closed       bool
	cmds         chan command
	wk           *waker
	stopReq      atomic.Bool // Stop began
	pastDeadline atomic.Bool // Stop's deadline passed
	fatal        atomic.Pointer[error]
	abandoned    atomic.Uint64 // requests completed at a deadline before reaching the kernel (abandon)
	pub          publishedCounters[counters]
	info         BackendInfo               // set before NewLoop returns; read-only after
	fuseNote     atomic.Pointer[string]    // set when the FUSE lane starts
	devNote      atomic.Pointer[string]    // set when the device engine starts
	devErr       atomic.Pointer[error]     // the last device-path error (DeviceErr)
	cpuClock     int32                     // the loop thread's CPU-time clock
	queuesView   atomic.Pointer[[]*served] // a copy of qs for Stats and Queues

	// Loop thread only.
	qs           []*served // the queues served, in claim order (queues.go)
	lanes        [2]lane   // the backend, and the pool for FUSE files on io_uring (see fuseLane)
	tab          tables
	gpu          *GPU       // set by MapForGPU
	dev          *devEngine // device destinations (devio.go), from the first device buffer
	recs         []record
	free         []uint32     // free record indices
	cancels      []uint32     // records asked to end early (cancelStep)
	pending      fifo[uint32] // records waiting for a slot in the SQE batch
	nwaiting     int          // claimed requests waiting for a record, all queues
	nextClaim    int          // the queue the next cycle claims from first
	nextAdmit    int          // the queue the next freed record goes to, if it waits
	taken        uint64       // records taken since NewLoop, all queues (fairness: QueueStats.MaxOvertaken)
	inflight     int          // records in the backends, both lanes
	st           counters
	bo           backoff
	epoch        time.Time
	cycles       uint64
	quietSince   int64         // when the loop last had work (ns since epoch), -1 while it has
	streaming    bool          // the last cycle claimed several requests, and no hold-off followed yet (holdOff)
	deepD        time.Duration // the last deep-idle sleep
	stopping     bool          // claims complete with -ECANCELED
	cancelling   bool          // pending requests complete, in-flight ones are cancelled
	cancelIssued bool          // the backends were asked to cancel what they hold
	failed       bool          // the backend failed; claims complete with -EIO
}

// lane is one backend with its batch: what the loop submits to it and
// what it reaped.
type lane struct {
	be       backend
	sqes     []sqe // batch for the next flush (front: not yet taken)
	cqes     []cqe // completions reaped by the last flush
	nreaped  int
	inflight int
}

// fuseLane serves FUSE files when the loop runs io_uring. On the kernels we
// tested (6.18), io_uring's own retry of a short read on a FUSE direct-IO
// file re-reads the same offset: a READ across EOF returns its full length
// with the bytes before EOF repeated (TestFUSEFaults shows it). pread
// workers return the short count, so FUSE files go to a pool instead.
const fuseLane = 1

// record is one claimed request while the loop holds it.
type record struct {
	ticket    uint64
	cid       uint32 // the completion id the result goes to
	claimedAt int64  // ns since the loop's epoch
	epoch     uint64
	fileOff   uint64 // next byte of the file
	addr      uint64 // next byte of the destination
	remaining uint64
	done      uint64 // bytes moved so far
	file      uint32
	buf       uint16
	queue     uint16 // index in l.qs
	op        Op
	lane      uint8
	live      bool      // taken and not yet completed
	dev       bool      // the device engine's (devio.go): not cancelled one by one
	cancel    cancelled // asked to end early (cancelRequest)
}

// cancelled is how far a record's cancel went.
type cancelled uint8

const (
	notCancelled cancelled = iota
	cancelWanted           // asked; the backend not yet told
	cancelSent             // the backend was asked to end it
)

type command struct {
	fn   func() error
	kind int
	done chan error
}

const (
	cmdFunc = iota
	cmdServe
	cmdClose
)

// NewLoop creates a loop serving q (AddQueue adds more; q may be nil): it starts the loop's thread and sets up the
// backend there (Config.Backend). The loop is idle until Start. Set-up
// errors match ErrIOUringUnavailable, ErrMemlock or ErrConfig with
// errors.Is.
func NewLoop(q *Queue, cfg Config) (*Loop, error) {
	forcedBy := "Config.Backend"
	if cfg.Backend == BackendAuto {
		if _, ok := lookupEnv(EnvBackend); ok {
			forcedBy = EnvBackend // withEnv fills only a zero field
		}
	}
	cfg, err := cfg.withEnv()
	if err != nil {
		return nil, err
	}
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	cq := ceilPow2(max(2*cfg.RingEntries, uint32(cfg.MaxInflight)+1))
	uring := func() (backend, error) {
		return openURing(cfg.RingEntries, cq, uint32(cfg.MaxFiles), uint32(cfg.MaxBuffers))
	}
	pool := func() (backend, error) {
		return openPool(cfg.PoolWorkers, cfg.RingEntries, cfg.MaxInflight, cfg.MaxFiles)
	}
	return newLoop(q, cfg, func() (backend, BackendInfo, error) {
		switch cfg.Backend {
		case BackendIOUring:
			be, err := uring()
			return be, BackendInfo{Kind: BackendIOUring, Reason: "io_uring forced by " + forcedBy}, err
		case BackendPool:
			be, err := pool()
			return be, BackendInfo{Kind: BackendPool, Reason: "pool forced by " + forcedBy}, err
		}
		be, err := uring()
		if err == nil {
			return be, BackendInfo{Kind: BackendIOUring, Reason: "io_uring is available (auto)"}, nil
		}
		if errors.Is(err, ErrIOUringUnavailable) {
			be, perr := pool()
			return be, BackendInfo{Kind: BackendPool, Reason: "io_uring refused (auto fell back): " + err.Error()}, perr
		}
		return nil, BackendInfo{}, err
	})
}

func newLoop(q *Queue, cfg Config, open func() (backend, BackendInfo, error)) (*Loop, error) {
	l := &Loop{cfg: cfg, cmds: make(chan command, commandQueue), tab: newTables(cfg.MaxFiles, cfg.MaxBuffers),
		pub: newPublished[counters](), wk: &waker{}}
	if q != nil {
		if err := q.attach(l); err != nil {
			return nil, err
		}
		l.qs = []*served{newServed(q, 0, cfg.MaxInflight)}
	}
	l.showQueues()
	l.recs = make([]record, cfg.MaxInflight)
	l.free = make([]uint32, cfg.MaxInflight)
	for i := range l.free {
		l.free[i] = uint32(cfg.MaxInflight - 1 - i)
	}
	l.pending = newFIFO[uint32](cfg.MaxInflight)
	for i := range l.lanes {
		l.lanes[i].sqes = make([]sqe, 0, cfg.MaxInflight)
		l.lanes[i].cqes = make([]cqe, cfg.MaxInflight+1)
	}
	l.bo.cfg = cfg.Backoff
	l.epoch = time.Now()
	ready := make(chan error)
	go l.thread(open, ready)
	if err := <-ready; err != nil {
		if q != nil {
			q.detach()
		}
		return nil, err
	}
	return l, nil
}

// thread owns the backend for the loop's whole life.
func (l *Loop) thread(open func() (backend, BackendInfo, error), ready chan<- error) {
	// Never unlocked: the backend (a SINGLE_ISSUER ring) belongs to this
	// thread, and the thread exits with the goroutine.
	runtime.LockOSThread()
	setTimerSlack(1) // its sleeps are 10-100 µs: the default 50 µs slack would stretch them by half
	l.cpuClock = threadCPUClock(unix.Gettid())
	be, info, err := open()
	if err != nil {
		ready <- err
		return
	}
	info.Description = be.describe()
	l.lanes[0].be, l.info = be, info
	ready <- nil
	for c := range l.cmds {
		switch c.kind {
		case cmdFunc:
			c.done <- c.fn()
		case cmdServe:
			l.beginRun() // the queue is open before Start returns
			c.done <- nil
			l.serve()
			close(l.runDone)
		case cmdClose:
			// The order keeps every pin valid: the loop has stopped;
			// CUDA lets go, then io_uring, then the memory is unmapped.
			gpuErr := errors.Join(l.dev.close(), l.unmapGPU())
			for _, ln := range l.lanes {
				if ln.be != nil {
					ln.be.close()
				}
			}
			l.tab.release()
			c.done <- gpuErr
			return
		}
	}
}

// serve runs the cycle until Stop completes. The whole cycle is here; the
// steps live in the functions below and in queues.go (claiming, round the
// queues), ops.go (what each op is), destinations.go (the checks),
// cancel.go, fence.go, backoff.go and the backend.
func (l *Loop) serve() {
	for {
		drained := l.drain() // completions reaped by the last flush -> their slots
		claimed := l.claim() // newly published requests; bad ones complete at once
		if claimed > 0 {
			l.streaming = claimed > 1 // producers publish faster than one a cycle (holdOff)
		}
		l.dispatch() // claimed requests -> SQE batch
		if len(l.cancels) > 0 {
			l.cancelStep() // requests asked to end early (cancel.go)
		}
		advanced := l.dev.poll() // the device engine (devio.go): finished copies and GDS IOs
		l.dev.issue()            // and its queued requests -> staged IOs, copies, GDS batches
		if l.stopReq.Load() && l.stopStep() {
			return
		}
		busy := drained > 0 || claimed > 0 || advanced > 0 || len(l.lanes[0].sqes) > 0 || len(l.lanes[1].sqes) > 0 ||
			l.dev.busy()
		l.flush(l.wait(busy)) // one crossing: submit the batch, wait (bounded) if idle, reap
		if l.cycles++; l.cycles%publishEvery == 0 {
			l.publish()
		}
		if len(l.cmds) > 0 {
			l.runCommands()
		}
	}
}

func (l *Loop) beginRun() {
	l.stopping, l.cancelling, l.cancelIssued = false, false, false
	l.cancels = l.cancels[:0] // records of the last run: all complete
	l.bo.reset()
	l.quietSince = -1
	l.dev.begin()
	l.setState(stateOpen)
}

// drain completes the records whose completions the last flush reaped,
// continuing short transfers. It returns how many completions it handled.
func (l *Loop) drain() int {
	n := l.lanes[0].nreaped + l.lanes[1].nreaped
	if n == 0 {
		return 0
	}
	now := l.now()
	for k := range l.lanes {
		ln := &l.lanes[k]
		for _, c := range ln.cqes[:ln.nreaped] {
			if c.userData == cancelUserData {
				continue
			}
			ln.inflight--
			l.inflight--
			if io, ok := engineIO(c.userData); ok {
				l.dev.reaped(io, int64(c.res))
			} else {
				l.reaped(uint32(c.userData), int64(c.res), now)
			}
		}
		ln.nreaped = 0
	}
	return n
}

// reaped handles one completion of record i.
func (l *Loop) reaped(i uint32, res int64, now int64) {
	r := &l.recs[i]
	if !r.op.spec().transfer() { // FSYNC: its result as it is
		l.finish(i, res, now)
		return
	}
	if res > 0 {
		r.done += uint64(res)
		r.remaining -= uint64(res)
		l.st.bytes += uint64(res)
		if r.remaining > 0 && !l.cancelling && r.cancel == notCancelled {
			// Short transfer: go on from where it stopped. A READ
			// that reaches EOF gets 0 next and ends.
			r.fileOff += uint64(res)
			r.addr += uint64(res)
			l.st.shortIO++
			l.pending.push(i)
			return
		}
	}
	result := int64(r.done)
	if res < 0 && r.done == 0 {
		result = res // an error before any byte moved; after some, the count
	}
	l.finish(i, result, now)
}

// admit validates a request claimed from queue s: bad ones, and all while
// stopping or failed, complete at once; NOPs complete; the rest take a
// record.
func (l *Loop) admit(s *served, t uint64, req *requestSlot, now int64) {
	if req.op < numOps {
		l.st.requests[req.op]++
	} else {
		l.st.badOps++
	}
	var res int64
	spec := req.op.spec()
	switch {
	case l.failed:
		res = -int64(unix.EIO)
	case l.stopping:
		res = -int64(unix.ECANCELED)
	case req.flags != 0 || req.reserved1 != 0:
		res = -int64(unix.EINVAL)
	case spec.kind == kindNop:
		res = 0
	case spec.kind == kindFence:
		i := l.take(s, t, req.completion, req.op, now)
		s.fence.open(i, &l.recs[i])
		l.retireFences(s, now)
		return
	case spec.kind == kindTransfer:
		d, e := l.tab.checkRange(s.q, req.file, req.dest, req.fileOffset, req.destOffset, req.length)
		if e != 0 {
			res = e
			break
		}
		if d.dev != nil { // device memory: the device engine's (devio.go)
			p, e := l.dev.plan(req, d)
			if e != 0 {
				res = e
				break
			}
			i := l.take(s, t, req.completion, req.op, now)
			l.recs[i].dev = true
			s.fence.add(&l.recs[i])
			l.dev.admit(i, req, d, p, l.tab.files[req.file].lane)
			return
		}
		i := l.take(s, t, req.completion, req.op, now)
		r := &l.recs[i]
		r.file, r.buf, r.fileOff, r.addr, r.remaining = req.file, d.buf, req.fileOffset, d.addr+req.destOffset, req.length
		r.lane = l.tab.files[req.file].lane
		s.fence.add(r)
		l.pending.push(i)
		return
	case spec.kind == kindFile:
		if res = l.tab.checkFile(req.file); res != 0 {
			break
		}
		i := l.take(s, t, req.completion, req.op, now)
		l.recs[i].file, l.recs[i].lane = req.file, l.tab.files[req.file].lane
		s.fence.add(&l.recs[i])
		l.pending.push(i)
		return
	default: // kindNone: not an op
		res = -int64(unix.EINVAL)
	}
	l.complete(s, t, req.completion, res, 0)
}

// dispatch turns pending records into SQEs for the next flush, or copies
// short READs from memory-backed files at once (readInline). While
// cancelling at Stop's deadline, it completes them instead.
func (l *Loop) dispatch() {
	if l.cancelling {
		l.abandonUnsubmitted()
		return
	}
	for l.pending.len() > 0 {
		i := l.pending.pop()
		r := &l.recs[i]
		if r.cancel != notCancelled { // between two pieces of a short transfer
			l.finishCancelled(i, l.now())
			continue
		}
		if r.op == OpRead && int64(r.remaining) <= int64(l.cfg.InlineMax) && l.tab.files[r.file].inlineOK() {
			l.readInline(i, r) // may push i again: a short read goes on
			continue
		}
		s := sqe{userData: uint64(i), off: r.fileOff, addr: r.addr, len: uint32(r.remaining), bufIndex: r.buf,
			file: int32(r.file), op: r.op.spec().sqe}
		ln := &l.lanes[r.lane]
		ln.sqes = append(ln.sqes, s) // room: a record is in at most one batch
	}
}

// wait decides how the flush waits: not at all while there is work; while
// IO is in flight, a bounded wait in the kernel, which ends at the first
// completion (spinning there would cost a syscall a poll and take the CPU
// the kernel's workers need); and when nothing is in flight, Backoff.Spins
// polls of the queues' heads, then futex sleeps. It returns how the flush
// waits.
func (l *Loop) wait(busy bool) waitFor {
	if busy || (l.cfg.Backoff.Poll && (l.inflight > 0 || l.dev.ioOut())) {
		l.bo.reset()
		l.quietSince, l.deepD = -1, 0
	} else if d := l.bo.next(l.inflight > 0 || l.dev.ioOut()); d == 0 {
		if l.streaming { // once after each cycle that claimed several
			l.streaming = false
			l.holdOff()
		}
	} else {
		l.st.sleeps++
		l.publish()
		switch {
		case l.inflight > 0:
			return waitFor(d) // the kernel ends this wait early at the first completion
		case l.deepIdle():
			l.deepSleep()
		default:
			l.wk.sleep(d)
		}
	}
	if l.inflight > 0 {
		return reapNow
	}
	return skipKernel
}

// holdOff leaves the queues' head slots alone for holdOffTime while
// producers stream. The loop's idle poll reads the slot the next request
// will be written into; a producer on another core then finds that cache
// line shared, and its publishing store waits for the line to come back (in
// perf, the store of seq took most of HostProducer.Submit's time). Pausing
// lets a streaming producer fill several slots in its own cache, and the
// next cycle claims them together.
//
// It runs once after each cycle that claimed several requests, so it adds
// at most holdOffTime to a claim and does not stretch the idle spin. After a
// cycle that claimed one request the loop polls at full speed, so a lone
// request's round trip is unchanged (BenchmarkNOP depth=1); with IO in
// flight the loop waits in the kernel instead (wait). Measured on 2 vCPUs,
// NOPs at depth 64, 10 rounds paired with the loop without it: 8.5M -> 11.4M
// a second from a producer on its own thread, 7.5M -> 10.6M through
// HostProducer.Wait (docs/BENCHMARKS.md).
func (l *Loop) holdOff() {
	for start := l.now(); l.now()-start < int64(holdOffTime); {
		spin.Pause(8)
	}
}

const holdOffTime = 1500 * time.Nanosecond

// deepIdle reports whether the loop has been quiet (nothing claimed,
// nothing in flight, no device work) for Backoff.IdleAfter.
func (l *Loop) deepIdle() bool {
	if l.cfg.Backoff.IdleAfter < 0 || l.dev.ioOut() || l.dev.busy() {
		return false
	}
	now := l.now()
	if l.quietSince < 0 {
		l.quietSince = now
	}
	return now-l.quietSince >= int64(l.cfg.Backoff.IdleAfter)
}

// deepSleep sleeps unless a request is published: deep is stored first,
// then the queues are looked at (see waker.wakeIfDeep). The sleeps double
// from MaxSleep up to Backoff.IdleSleep, so none is longer than the quiet
// time before it.
func (l *Loop) deepSleep() {
	l.st.deepSleeps++
	l.deepD = min(max(2*l.deepD, 2*l.cfg.Backoff.MaxSleep), l.cfg.Backoff.IdleSleep)
	l.wk.deep.Store(true)
	published := false
	for _, s := range l.qs {
		published = published || atomic.LoadUint64(&s.q.slots[s.q.head&s.q.mask].seq) == s.q.head+1
	}
	if !published && l.wk.sleep(l.deepD) {
		l.st.deepWakes++
	}
	l.wk.deep.Store(false)
}

// flush hands the batch to the backend and reaps completions (one cgo
// crossing for io_uring). SQEs that did not fit stay at the batch's front.
// The FUSE lane, when there is one, is served first and never waited on:
// the main lane's wait is bounded, and skipped when the FUSE lane reaped.
func (l *Loop) flush(wait waitFor) {
	if l.failed {
		return
	}
	if aux := &l.lanes[fuseLane]; aux.be != nil && (len(aux.sqes) > 0 || aux.inflight > 0) {
		if l.enterLane(aux, skipKernel) && wait > 0 {
			wait = reapNow
		}
	}
	if main := &l.lanes[0]; len(main.sqes) > 0 || main.inflight > 0 || l.cancelling || wait > 0 {
		l.enterLane(main, wait)
	}
	l.st.maxInflight = max(l.st.maxInflight, uint64(l.inflight))
}

// enterLane runs one backend's enter and reports whether it reaped any.
func (l *Loop) enterLane(ln *lane, wait waitFor) bool {
	taken, reaped, err := ln.be.enter(ln.sqes, ln.cqes, wait)
	ln.inflight += taken
	l.inflight += taken
	if taken < len(ln.sqes) {
		l.st.sqFullStalls++
	}
	ln.sqes = ln.sqes[:copy(ln.sqes, ln.sqes[taken:])]
	ln.nreaped = reaped
	if err != nil {
		if isRetryable(err) {
			l.st.retries++
			return reaped > 0
		}
		l.drain()
		l.fail(err)
	}
	return reaped > 0
}

// stopStep runs each cycle once Stop began. It returns true when the run is
// over: every claimed request has completed and the final sweep is done.
func (l *Loop) stopStep() bool {
	l.stopping = true
	if l.pastDeadline.Load() && !l.cancelIssued {
		l.cancelling = true
		l.abandonUnsubmitted()
		l.abandoned.Add(l.dev.cancel())
		l.cancelIssued = true
		for _, ln := range l.lanes {
			if ln.be != nil && ln.inflight > 0 && ln.be.cancelAll() != nil {
				l.cancelIssued = false // the SQ is full: again next cycle
			}
		}
	}
	if l.cancelIssued {
		for _, ln := range l.lanes {
			if in, ok := ln.be.(interrupter); ok && ln.inflight > 0 {
				in.interrupt() // again each cycle: a signal can land just before a worker's system call
			}
		}
	}
	if len(l.free) < len(l.recs) || l.nwaiting > 0 {
		return false
	}
	// Final sweep: what is published now completes with -ECANCELED, at
	// most one ring's worth per queue, so producers that keep publishing
	// cannot hold Stop here (what they publish later stays for the next
	// Start). Then tell each queue's producers where serving stopped:
	// claim_head, then state.
	now := l.now()
	for _, sq := range l.qs {
		for swept, capacity := 0, int(sq.q.mask+1); swept < capacity; {
			n := l.claimFrom(sq, claimBatch, &now)
			if n == 0 {
				break
			}
			swept += n
		}
		sq.q.publishClaimHead()
	}
	l.setState(stateStopped)
	for _, sq := range l.qs { // goroutines parked on unclaimed tickets see ErrStopped
		if ws := sq.q.waiters.Load(); ws != nil {
			for i := range *ws {
				(*ws)[i].wake()
			}
		}
	}
	l.publish()
	return true
}

// abandonUnsubmitted completes every record that is not in the backend: the
// bytes moved so far, or -ECANCELED.
func (l *Loop) abandonUnsubmitted() {
	now := l.now()
	for k := range l.lanes {
		for _, s := range l.lanes[k].sqes {
			if io, ok := engineIO(s.userData); ok {
				l.dev.dropIO(io)
			} else {
				l.abandon(uint32(s.userData), now)
			}
		}
		l.lanes[k].sqes = l.lanes[k].sqes[:0]
	}
	for l.pending.len() > 0 {
		l.abandon(l.pending.pop(), now)
	}
}

func (l *Loop) abandon(i uint32, now int64) {
	res := -int64(unix.ECANCELED)
	if d := l.recs[i].done; d > 0 {
		res = int64(d)
	}
	l.abandoned.Add(1)
	l.finish(i, res, now)
}

// fail ends the backend's use after a fatal error: every claimed request
// completes with -EIO so no producer waits forever, and from now on every
// claim does too, until Stop.
func (l *Loop) fail(err error) {
	err = errorf("%w: %w", ErrRingFailed, err)
	l.fatal.Store(&err)
	l.failed = true
	l.dev.fail() // nothing may still write into device memory or staging
	now := l.now()
	l.inflight = 0
	for k := range l.lanes {
		l.lanes[k].sqes, l.lanes[k].inflight, l.lanes[k].nreaped = l.lanes[k].sqes[:0], 0, 0
	}
	for l.pending.len() > 0 {
		l.pending.pop()
	}
	l.cancels = l.cancels[:0]
	isFree := make([]bool, len(l.recs))
	for _, i := range l.free {
		isFree[i] = true
	}
	for i := range l.recs {
		if !isFree[i] {
			r := &l.recs[i]
			l.complete(l.qs[r.queue], r.ticket, r.cid, -int64(unix.EIO), now-r.claimedAt)
			l.release(uint32(i))
		}
	}
	for _, sq := range l.qs {
		sq.fence = newFences(len(l.recs))
	}
}

// take allocates a record for ticket t of queue s, completing into id cid.
func (l *Loop) take(s *served, t uint64, cid uint32, op Op, now int64) uint32 {
	i := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	l.taken++
	s.taken++
	s.othersAtTake = l.taken - s.taken
	l.recs[i] = record{ticket: t, cid: cid, queue: s.index, op: op, claimedAt: now, live: true}
	return i
}

// finish completes record i and releases it; fences of its queue waiting
// on it may complete too.
func (l *Loop) finish(i uint32, result int64, now int64) {
	r := &l.recs[i]
	s := l.qs[r.queue]
	l.complete(s, r.ticket, r.cid, result, now-r.claimedAt)
	s.fence.done(r)
	l.release(i)
	l.retireFences(s, now)
}

// release returns record i to the free list.
func (l *Loop) release(i uint32) {
	l.recs[i].live = false
	l.free = append(l.free, i)
}

// complete publishes the result of queue s's ticket t into its completion
// cid (L3): result first, then done with release. claim checked cid
// against the table.
func (l *Loop) complete(s *served, t uint64, cid uint32, result int64, latency int64) {
	c := &s.q.comps[cid]
	// A plain store: only the issuer reads result, and only after it has
	// seen done (acquire), which the atomic store below publishes. (An
	// atomic store here would be one more locked instruction per request.)
	c.result = result
	atomic.StoreUint64(&c.done, t+1)
	if ws := s.q.waiters.Load(); ws != nil { // a host producer's goroutine may be parked on it
		(*ws)[cid].wake()
	}
	bucket := histIndex(uint64(max(latency, 0))) // one bucket for the loop's histogram and the queue's
	l.st.complete(result, bucket)
	s.st.completed++
	s.st.latency[bucket]++
}

func (l *Loop) now() int64 { return int64(time.Since(l.epoch)) }

// engineIO routes a completion: the device engine's staged IO (devTag),
// with its index, or else a record's.
func engineIO(userData uint64) (uint32, bool) {
	return uint32(userData &^ devTag), userData&devTag != 0
}

// The loop's side of the device engine's seam (engineHost, devio.go).

func (l *Loop) queueIO(lane uint8, s sqe) {
	ln := &l.lanes[lane]
	ln.sqes = append(ln.sqes, s) // room: reserveIOs
}

func (l *Loop) finishRecord(i uint32, result int64) { l.finish(i, result, l.now()) }

func (l *Loop) deviceFault(err error) { l.devErr.Store(&err) }

// reserveIOs makes room in the lanes' batches for n more IOs than the
// records' own (a guest engine's staged IOs), once rather than per cycle.
func (l *Loop) reserveIOs(n int) {
	for k := range l.lanes {
		ln := &l.lanes[k]
		if want := len(l.recs) + n; cap(ln.sqes) < want {
			s := make([]sqe, len(ln.sqes), want)
			copy(s, ln.sqes)
			ln.sqes = s
		}
	}
}

// publish copies the counters, the loop's and each queue's, where other
// goroutines read them (Stats).
func (l *Loop) publish() {
	l.st.dev = l.dev.counters()
	l.pub.publish(&l.st)
	for _, s := range l.qs {
		s.pub.publish(&s.st)
	}
}

func (l *Loop) runCommands() {
	for {
		select {
		case c := <-l.cmds:
			c.done <- c.fn() // only cmdFunc arrives while serving
		default:
			return
		}
	}
}

// exec runs fn on the loop's thread, idle or serving, and returns its error.
func (l *Loop) exec(fn func() error) error {
	l.cmdMu.RLock()
	if l.closed {
		l.cmdMu.RUnlock()
		return errorf("%w: the loop", ErrClosed)
	}
	done := make(chan error, 1)
	l.cmds <- command{fn: fn, kind: cmdFunc, done: done}
	l.cmdMu.RUnlock()
	l.wk.wake()
	return <-done
}

// Start begins serving the loop's queues. A loop may be started again
// after Stop; it resumes each queue at the first ticket it has not claimed.
func (l *Loop) Start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return errorf("%w: the loop", ErrClosed)
	case l.running:
		return errorf("%w: Start called twice", ErrRunning)
	case l.fatal.Load() != nil:
		return errorf("megaio: the loop cannot start again after its ring failed (close it and make a new one): %w", *l.fatal.Load())
	case l.unfinished():
		return errorf("%w: the last Stop left requests in the kernel; Stop again to wait for them", ErrStopIncomplete)
	case len(*l.queuesView.Load()) == 0:
		return errorf("%w: the loop serves no queue (AddQueue)", ErrConfig)
	}
	l.stopReq.Store(false)
	l.pastDeadline.Store(false)
	l.runDone = make(chan struct{})
	done := make(chan error, 1)
	l.cmds <- command{kind: cmdServe, done: done}
	l.wk.wake()
	<-done
	l.running = true
	return nil
}

// Stop stops serving. Claiming goes on until every published request has a
// result: requests claimed before Stop run to their end, requests claimed
// after it began complete with -ECANCELED. When ctx ends first, requests in
// flight are cancelled (their slots get -ECANCELED, or the bytes moved so
// far) and Stop returns an error wrapping ctx.Err(). Either way Stop returns
// only when the kernel can no longer write into any registered buffer. It
// also returns the ring's fatal error, if any (see Err).
func (l *Loop) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stop(ctx)
}

func (l *Loop) stop(ctx context.Context) error {
	if !l.running {
		return l.awaitUnfinished(ctx)
	}
	l.stopReq.Store(true)
	l.wk.wake()
	var ctxErr error
	select {
	case <-l.runDone:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		l.pastDeadline.Store(true)
		l.wk.wake()
		grace := time.NewTimer(stopGrace)
		defer grace.Stop()
		select {
		case <-l.runDone:
		case <-grace.C:
			l.running = false // the run ends by itself once the kernel lets go
			return l.incomplete(ctxErr)
		}
	}
	l.running = false
	if ctxErr != nil {
		ctxErr = errorf("megaio: Stop's deadline passed with requests in flight: %d not yet in the kernel completed with -ECANCELED, "+
			"the rest were asked to cancel and waited for: %w", l.abandoned.Load(), ctxErr)
	}
	return errors.Join(ctxErr, l.Err())
}

// stopGrace is how long Stop waits after its deadline for the requests it
// cancelled. Cancelled io_uring requests and interrupted pool workers end
// within microseconds; a request still in the kernel after this sits in an
// uninterruptible wait (a hung network or FUSE file system), and Stop
// returns ErrStopIncomplete instead of waiting for it.
const stopGrace = 100 * time.Millisecond

// unfinished reports whether a stopped run still waits for requests in the
// kernel (Stop returned ErrStopIncomplete).
func (l *Loop) unfinished() bool {
	if l.running || l.runDone == nil {
		return false
	}
	select {
	case <-l.runDone:
		return false
	default:
		return true
	}
}

// awaitUnfinished waits, until ctx ends, for the end of a run that Stop
// left with requests in the kernel.
func (l *Loop) awaitUnfinished(ctx context.Context) error {
	if !l.unfinished() {
		return nil
	}
	select {
	case <-l.runDone:
		return l.Err()
	case <-ctx.Done():
		return l.incomplete(ctx.Err())
	}
}

// incomplete is Stop's error when requests are still in the kernel after
// its deadline and grace: it names them.
func (l *Loop) incomplete(cause error) error {
	var tickets []uint64
	l.exec(func() error { tickets = l.inKernel(); return nil })
	return errorf("%w: %d request(s) still in the kernel %v after Stop's deadline (tickets %v), in a wait the "+
		"kernel does not interrupt; their buffers stay mapped, and Start and Close refuse until they are out "+
		"(Stop again to wait for them): %w", ErrStopIncomplete, len(tickets), stopGrace, tickets, cause)
}

// inKernel lists the tickets of the records the loop still holds.
func (l *Loop) inKernel() []uint64 {
	held := make([]bool, len(l.recs))
	for i := range held {
		held[i] = true
	}
	for _, i := range l.free {
		held[i] = false
	}
	var tickets []uint64
	for i, h := range held {
		if h {
			tickets = append(tickets, l.recs[i].ticket)
		}
	}
	return tickets
}

// Err returns the ring's fatal error (it matches ErrRingFailed), or nil.
func (l *Loop) Err() error {
	if p := l.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// Stats returns the loop's latest published counters.
func (l *Loop) Stats() Stats {
	c := l.pub.load()
	s := c.stats()
	for _, sq := range *l.queuesView.Load() {
		qc := sq.pub.load()
		s.Queues = append(s.Queues, qc.stats())
	}
	info := l.Backend()
	s.Backend, s.BackendReason = info.Description, info.Reason
	if note := l.devNote.Load(); note != nil {
		s.Device.Setup = *note
	}
	return s
}

// CPUTime is the CPU time the loop's thread has used since NewLoop: the
// cost of serving, apart from the producers' and the pool workers'.
func (l *Loop) CPUTime() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(l.cpuClock, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// threadCPUClock is the clock id of thread tid's CPU time, built as the
// kernel defines it (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED), what glibc's
// pthread_getcpuclockid returns).
func threadCPUClock(tid int) int32 { return int32(^uint32(tid)<<3 | 6) }

// Backend says which backend serves the loop, and why.
func (l *Loop) Backend() BackendInfo {
	info := l.info
	if note := l.fuseNote.Load(); note != nil {
		info.Description += *note
	}
	return info
}

// Close stops the loop (waiting for requests in flight, without deadline),
// tears the ring down, closes the loop's descriptors and unmaps its buffers,
// in that order, and detaches its queues. The queues themselves stay mapped
// (Queue.Close unmaps each).
func (l *Loop) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if l.unfinished() {
		return errorf("%w: the loop keeps its buffers mapped until the requests in the kernel are out; "+
			"Stop to wait for them, then Close", ErrStopIncomplete)
	}
	err := l.stop(context.Background())
	l.cmdMu.Lock()
	l.closed = true
	l.cmdMu.Unlock()
	done := make(chan error, 1)
	l.cmds <- command{kind: cmdClose, done: done}
	l.wk.wake()
	err = errors.Join(err, <-done)
	for _, s := range *l.queuesView.Load() {
		s.q.detach()
	}
	return err
}
