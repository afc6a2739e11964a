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

// Loop serves one or more queues (AddQueue, multiqueue.go): one goroutine
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
	epoch        time.Time                 // the loop's clock starts here (now); read-only
}

// cycle is the loop's thread state: the backends, the records, the queues
// as served, the counters being counted. Only the loop's goroutine holds
// the *cycle (thread makes it and passes it down); other goroutines reach
// it only through a command, exec(func(*cycle) error), which runs on that
// goroutine. So the compiler, not a comment, keeps the two apart: a Loop
// method has no *cycle to touch.
type cycle struct {
	l *Loop // the handle: configuration, lifecycle flags, published counters

	qs           []*served // the queues served, in claim order (multiqueue.go)
	lanes        [2]lane   // the backend, and the pool for FUSE files on io_uring (see fuseLane)
	tab          tables
	gpu          *GPU       // set by MapForGPU
	dev          *devEngine // device destinations (devengine.go), from the first device buffer
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
	cycles       uint64
	quietSince   int64         // when the loop last had work (ns since epoch), -1 while it has
	streaming    bool          // the last cycle claimed several requests, and no hold-off followed yet (holdOff)
	lingerUntil  int64         // poll, not wait in the kernel, until then (Backoff.Linger; ns since epoch)
	deepD        time.Duration // the last deep-idle sleep
	phase        phase         // serving, stopping, cancelling or failed
	cancelIssued bool          // cancelling: the backends were asked to cancel what they hold
}

// phase is where a run of the loop is. A run begins serving (beginRun);
// Stop moves it to stopping, and Stop's deadline to cancelling; a fatal
// backend error moves it to failed from any phase, and it stays failed
// through Stop (Start refuses a failed loop: close it and make another).
type phase uint8

const (
	phaseServing    phase = iota // claims take records and run
	phaseStopping                // Stop began: claims complete with -ECANCELED, what runs runs to its end
	phaseCancelling              // Stop's deadline passed: pending requests complete, in-flight ones are cancelled
	phaseFailed                  // the backend failed: claims complete with -EIO
)

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
	dev       bool      // the device engine's (devengine.go): not cancelled one by one
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
	fn   func(*cycle) error
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
	l := &Loop{cfg: cfg, cmds: make(chan command, commandQueue), pub: newPublished[counters](), wk: &waker{},
		epoch: time.Now()}
	// The cycle is made here and handed to the thread: from then on only
	// the loop's goroutine has it.
	cy := &cycle{l: l, tab: newTables(cfg.MaxFiles, cfg.MaxBuffers)}
	if q != nil {
		if err := q.attach(l); err != nil {
			return nil, err
		}
		cy.qs = []*served{newServed(q, 0, cfg.MaxInflight)}
	}
	cy.showQueues()
	cy.recs = make([]record, cfg.MaxInflight)
	cy.free = make([]uint32, cfg.MaxInflight)
	for i := range cy.free {
		cy.free[i] = uint32(cfg.MaxInflight - 1 - i)
	}
	cy.pending = newFIFO[uint32](cfg.MaxInflight)
	for i := range cy.lanes {
		cy.lanes[i].sqes = make([]sqe, 0, cfg.MaxInflight)
		cy.lanes[i].cqes = make([]cqe, cfg.MaxInflight+1)
	}
	cy.bo.cfg = cfg.Backoff
	ready := make(chan error)
	go l.thread(cy, open, ready)
	if err := <-ready; err != nil {
		if q != nil {
			q.detach()
		}
		return nil, err
	}
	return l, nil
}

// thread owns the backend for the loop's whole life.
func (l *Loop) thread(cy *cycle, open func() (backend, BackendInfo, error), ready chan<- error) {
	// Never unlocked: the backend (a SINGLE_ISSUER ring) belongs to this
	// thread, and the thread exits with the goroutine.
	runtime.LockOSThread()
	setTimerSlack(1) // its sleeps are 10-100 µs: the default 50 µs slack would stretch them by half
	if err := bindCPUs(l.cfg.CPUs); err != nil {
		ready <- err
		return
	}
	l.cpuClock = threadCPUClock(unix.Gettid())
	be, info, err := open()
	if err != nil {
		ready <- err
		return
	}
	info.Description = be.describe()
	cy.lanes[0].be, l.info = be, info
	ready <- nil
	for c := range l.cmds {
		switch c.kind {
		case cmdFunc:
			c.done <- c.fn(cy)
		case cmdServe:
			cy.beginRun() // the queue is open before Start returns
			c.done <- nil
			cy.serve()
			close(l.runDone)
		case cmdClose:
			// The order keeps every pin valid: the loop has stopped;
			// CUDA lets go, then io_uring, then the memory is unmapped.
			gpuErr := errors.Join(cy.dev.close(), cy.unmapGPU())
			for _, ln := range cy.lanes {
				if ln.be != nil {
					ln.be.close()
				}
			}
			cy.tab.release()
			c.done <- gpuErr
			return
		}
	}
}

// serve runs the cycle until Stop completes. The whole cycle is here; the
// steps live in the functions below and in multiqueue.go (claiming, round the
// queues), admit.go (a request's checks and its record), ops.go (what each
// op is), cancel.go, fence.go, backoff.go and the backend.
func (cy *cycle) serve() {
	for {
		drained := cy.drain() // completions reaped by the last flush -> their slots
		claimed := cy.claim() // newly published requests; bad ones complete at once
		if claimed > 0 {
			cy.streaming = claimed > 1 // producers publish faster than one a cycle (holdOff)
		}
		cy.dispatch() // claimed requests -> SQE batch
		if len(cy.cancels) > 0 {
			cy.cancelStep() // requests asked to end early (cancel.go)
		}
		advanced := cy.dev.poll() // the device engine (devengine.go): finished copies and GDS IOs
		cy.dev.issue()            // and its queued requests -> staged IOs, copies, GDS batches
		if cy.l.stopReq.Load() && cy.stopStep() {
			return
		}
		busy := drained > 0 || claimed > 0 || advanced > 0 || len(cy.lanes[0].sqes) > 0 || len(cy.lanes[1].sqes) > 0 ||
			cy.dev.busy()
		cy.flush(cy.wait(busy)) // one crossing: submit the batch, wait (bounded) if idle, reap
		if cy.cycles++; cy.cycles%publishEvery == 0 {
			cy.publish()
		}
		if len(cy.l.cmds) > 0 {
			cy.runCommands()
		}
	}
}

func (cy *cycle) beginRun() {
	if cy.phase != phaseFailed {
		cy.phase = phaseServing
	}
	cy.cancelIssued = false
	cy.cancels = cy.cancels[:0] // records of the last run: all complete
	cy.bo.reset()
	cy.quietSince = -1
	cy.dev.begin()
	cy.setState(stateOpen)
}

// drain completes the records whose completions the last flush reaped,
// continuing short transfers. It returns how many completions it handled.
func (cy *cycle) drain() int {
	n := cy.lanes[0].nreaped + cy.lanes[1].nreaped
	if n == 0 {
		return 0
	}
	now := cy.l.now()
	if cy.l.cfg.Backoff.Linger > 0 {
		cy.lingerUntil = now + int64(cy.l.cfg.Backoff.Linger) // their producers publish next (wait)
	}
	for k := range cy.lanes {
		ln := &cy.lanes[k]
		for _, c := range ln.cqes[:ln.nreaped] {
			if c.userData == cancelUserData {
				continue
			}
			ln.inflight--
			cy.inflight--
			if io, ok := engineIO(c.userData); ok {
				cy.dev.reaped(io, int64(c.res))
			} else {
				cy.reaped(uint32(c.userData), int64(c.res), now)
			}
		}
		ln.nreaped = 0
	}
	return n
}

// reaped handles one completion of record i.
func (cy *cycle) reaped(i uint32, res int64, now int64) {
	r := &cy.recs[i]
	if !r.op.spec().transfer() { // FSYNC: its result as it is
		cy.finishAt(i, res, now)
		return
	}
	if res > 0 {
		r.done += uint64(res)
		r.remaining -= uint64(res)
		cy.st.bytes += uint64(res)
	}
	if continues(res, r.remaining, cy.phase == phaseCancelling || r.cancel != notCancelled) {
		// Short transfer: go on from where it stopped. A READ that
		// reaches EOF gets 0 next and ends.
		r.fileOff += uint64(res)
		r.addr += uint64(res)
		cy.st.shortIO++
		cy.pending.push(i)
		return
	}
	cy.finishAt(i, transferResult(r.done, res, false), now)
}

// dispatch turns pending records into SQEs for the next flush, or copies
// short READs from memory-backed files at once (readInline). While
// cancelling at Stop's deadline, it completes them instead.
func (cy *cycle) dispatch() {
	if cy.phase == phaseCancelling {
		cy.abandonUnsubmitted()
		return
	}
	for cy.pending.len() > 0 {
		i := cy.pending.pop()
		r := &cy.recs[i]
		if r.cancel != notCancelled { // between two pieces of a short transfer
			cy.finishCancelled(i, cy.l.now())
			continue
		}
		if r.op == OpRead && int64(r.remaining) <= int64(cy.l.cfg.InlineMax) && cy.tab.files[r.file].inlineOK() {
			cy.readInline(i, r) // may push i again: a short read goes on
			continue
		}
		s := sqe{userData: uint64(i), off: r.fileOff, addr: r.addr, len: uint32(r.remaining), bufIndex: r.buf,
			file: int32(r.file), op: r.op.spec().sqe}
		ln := &cy.lanes[r.lane]
		ln.sqes = append(ln.sqes, s) // room: a record is in at most one batch
	}
}

// wait decides how the flush waits: not at all while there is work or
// while lingering (Backoff.Linger); while IO is in flight, a wait in the
// kernel of up to MaxSleep, which ends at the first completion (spinning
// there would cost a syscall a poll and take the CPU the kernel's workers
// need); and when nothing is in flight, Backoff.Spins polls of the queues'
// heads, then futex sleeps. It returns how the flush waits.
func (cy *cycle) wait(busy bool) waitFor {
	if busy || (cy.l.cfg.Backoff.Poll && (cy.inflight > 0 || cy.dev.ioOut())) ||
		(cy.inflight > 0 && cy.lingerUntil > 0 && cy.l.now() < cy.lingerUntil) {
		cy.bo.reset()
		cy.quietSince, cy.deepD = -1, 0
	} else if d := cy.bo.next(cy.inflight > 0 || cy.dev.ioOut()); d == 0 {
		if cy.streaming { // once after each cycle that claimed several
			cy.streaming = false
			cy.holdOff()
		}
	} else {
		cy.st.sleeps++
		cy.publish()
		switch {
		case cy.inflight > 0:
			// MaxSleep at once, not the growing steps: Linger has just
			// polled for the producers' next requests, and the kernel
			// ends this wait at the first completion. Each step's timer
			// wakes the CPU while the device works; on the virtual
			// machine measured, a busy CPU slowed the disk itself (4 KiB
			// O_DIRECT at depth 1: 8.0K -> 10.0K IOPS; docs/BENCHMARKS.md).
			return waitFor(cy.l.cfg.Backoff.MaxSleep)
		case cy.deepIdle():
			cy.deepSleep()
		default:
			cy.l.wk.sleep(d)
		}
	}
	if cy.inflight > 0 {
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
func (cy *cycle) holdOff() {
	for start := cy.l.now(); cy.l.now()-start < int64(holdOffTime); {
		spin.Pause(8)
	}
}

const holdOffTime = 1500 * time.Nanosecond

// deepIdle reports whether the loop has been quiet (nothing claimed,
// nothing in flight, no device work) for Backoff.IdleAfter.
func (cy *cycle) deepIdle() bool {
	if cy.l.cfg.Backoff.IdleAfter < 0 || cy.dev.ioOut() || cy.dev.busy() {
		return false
	}
	now := cy.l.now()
	if cy.quietSince < 0 {
		cy.quietSince = now
	}
	return now-cy.quietSince >= int64(cy.l.cfg.Backoff.IdleAfter)
}

// deepSleep sleeps unless a request is published: deep is stored first,
// then the queues are looked at (see waker.wakeIfDeep). The sleeps double
// from MaxSleep up to Backoff.IdleSleep, so none is longer than the quiet
// time before it.
func (cy *cycle) deepSleep() {
	cy.st.deepSleeps++
	cy.deepD = min(max(2*cy.deepD, 2*cy.l.cfg.Backoff.MaxSleep), cy.l.cfg.Backoff.IdleSleep)
	cy.l.wk.deep.Store(true)
	published := false
	for _, s := range cy.qs {
		published = published || atomic.LoadUint64(&s.q.slots[s.q.head&s.q.mask].seq) == s.q.head+1
	}
	if !published && cy.l.wk.sleep(cy.deepD) {
		cy.st.deepWakes++
	}
	cy.l.wk.deep.Store(false)
}

// flush hands the batch to the backend and reaps completions (one cgo
// crossing for io_uring). SQEs that did not fit stay at the batch's front.
// The FUSE lane, when there is one, is served first and never waited on:
// the main lane's wait is bounded, and skipped when the FUSE lane reaped.
func (cy *cycle) flush(wait waitFor) {
	if cy.phase == phaseFailed {
		return
	}
	if aux := &cy.lanes[fuseLane]; aux.be != nil && (len(aux.sqes) > 0 || aux.inflight > 0) {
		if cy.enterLane(aux, skipKernel) && wait > 0 {
			wait = reapNow
		}
	}
	if main := &cy.lanes[0]; len(main.sqes) > 0 || main.inflight > 0 || cy.phase == phaseCancelling || wait > 0 {
		cy.enterLane(main, wait)
	}
	cy.st.maxInflight = max(cy.st.maxInflight, uint64(cy.inflight))
}

// enterLane runs one backend's enter and reports whether it reaped any.
func (cy *cycle) enterLane(ln *lane, wait waitFor) bool {
	taken, reaped, err := ln.be.enter(ln.sqes, ln.cqes, wait)
	ln.inflight += taken
	cy.inflight += taken
	if taken < len(ln.sqes) {
		cy.st.sqFullStalls++
	}
	ln.sqes = ln.sqes[:copy(ln.sqes, ln.sqes[taken:])]
	ln.nreaped = reaped
	if err != nil {
		if isRetryable(err) {
			cy.st.retries++
			return reaped > 0
		}
		cy.drain()
		cy.fail(err)
	}
	return reaped > 0
}

// stopStep runs each cycle once Stop began. It returns true when the run is
// over: every claimed request has completed and the final sweep is done.
func (cy *cycle) stopStep() bool {
	if cy.phase == phaseServing {
		cy.phase = phaseStopping
	}
	if cy.l.pastDeadline.Load() && !cy.cancelIssued {
		if cy.phase != phaseFailed {
			cy.phase = phaseCancelling
		}
		cy.abandonUnsubmitted()
		cy.l.abandoned.Add(cy.dev.cancel())
		cy.cancelIssued = true
		for _, ln := range cy.lanes {
			if ln.be != nil && ln.inflight > 0 && ln.be.cancelAll() != nil {
				cy.cancelIssued = false // the SQ is full: again next cycle
			}
		}
	}
	if cy.cancelIssued {
		for _, ln := range cy.lanes {
			if in, ok := ln.be.(interrupter); ok && ln.inflight > 0 {
				in.interrupt() // again each cycle: a signal can land just before a worker's system call
			}
		}
	}
	if len(cy.free) < len(cy.recs) || cy.nwaiting > 0 {
		return false
	}
	// Final sweep: what is published now completes with -ECANCELED, at
	// most one ring's worth per queue, so producers that keep publishing
	// cannot hold Stop here (what they publish later stays for the next
	// Start). Then tell each queue's producers where serving stopped:
	// claim_head, then state.
	now := cy.l.now()
	for _, sq := range cy.qs {
		for swept, capacity := 0, int(sq.q.mask+1); swept < capacity; {
			n := cy.claimFrom(sq, claimBatch, &now)
			if n == 0 {
				break
			}
			swept += n
		}
		sq.q.publishClaimHead()
	}
	cy.setState(stateStopped)
	for _, sq := range cy.qs { // goroutines parked on unclaimed tickets see ErrStopped
		if ws := sq.q.waiters.Load(); ws != nil {
			for i := range *ws {
				(*ws)[i].wake()
			}
		}
	}
	cy.publish()
	return true
}

// abandonUnsubmitted completes every record that is not in the backend: the
// bytes moved so far, or -ECANCELED.
func (cy *cycle) abandonUnsubmitted() {
	now := cy.l.now()
	for k := range cy.lanes {
		for _, s := range cy.lanes[k].sqes {
			if io, ok := engineIO(s.userData); ok {
				cy.dev.dropIO(io)
			} else {
				cy.abandon(uint32(s.userData), now)
			}
		}
		cy.lanes[k].sqes = cy.lanes[k].sqes[:0]
	}
	for cy.pending.len() > 0 {
		cy.abandon(cy.pending.pop(), now)
	}
}

func (cy *cycle) abandon(i uint32, now int64) {
	cy.l.abandoned.Add(1)
	cy.finishCancelled(i, now) // the bytes moved so far, or -ECANCELED
}

// fail ends the backend's use after a fatal error: every claimed request
// completes with -EIO so no producer waits forever, and from now on every
// claim does too, until Stop.
func (cy *cycle) fail(err error) {
	err = errorf("%w: %w", ErrRingFailed, err)
	cy.l.fatal.Store(&err)
	cy.phase = phaseFailed
	cy.dev.fail() // nothing may still write into device memory or staging
	now := cy.l.now()
	cy.inflight = 0
	for k := range cy.lanes {
		cy.lanes[k].sqes, cy.lanes[k].inflight, cy.lanes[k].nreaped = cy.lanes[k].sqes[:0], 0, 0
	}
	for cy.pending.len() > 0 {
		cy.pending.pop()
	}
	cy.cancels = cy.cancels[:0]
	isFree := make([]bool, len(cy.recs))
	for _, i := range cy.free {
		isFree[i] = true
	}
	for i := range cy.recs {
		if !isFree[i] {
			r := &cy.recs[i]
			cy.complete(cy.qs[r.queue], r.ticket, r.cid, -int64(unix.EIO), now-r.claimedAt)
			cy.release(uint32(i))
		}
	}
	for _, sq := range cy.qs {
		sq.fence = newFences(len(cy.recs))
	}
}

// finishAt is finish at time now (ns since the loop's epoch): it completes
// record i and releases it; fences of its queue waiting on it may complete
// too.
func (cy *cycle) finishAt(i uint32, result int64, now int64) {
	r := &cy.recs[i]
	s := cy.qs[r.queue]
	cy.complete(s, r.ticket, r.cid, result, now-r.claimedAt)
	s.fence.done(r)
	cy.release(i)
	cy.retireFences(s, now)
}

// release returns record i to the free list.
func (cy *cycle) release(i uint32) {
	cy.recs[i].live = false
	cy.free = append(cy.free, i)
}

// complete publishes the result of queue s's ticket t into its completion
// cid (L3): result first, then done with release. claim checked cid
// against the table.
func (cy *cycle) complete(s *served, t uint64, cid uint32, result int64, latency int64) {
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
	cy.st.complete(result, bucket)
	s.st.completed++
	s.st.latency[bucket]++
}

func (l *Loop) now() int64 { return int64(time.Since(l.epoch)) }

// engineIO routes a completion: the device engine's staged IO (devTag),
// with its index, or else a record's.
func engineIO(userData uint64) (uint32, bool) {
	return uint32(userData &^ devTag), userData&devTag != 0
}

// The loop's side of the device engine's seam (engineHost, devengine.go).

func (cy *cycle) queueIO(lane uint8, s sqe) {
	ln := &cy.lanes[lane]
	ln.sqes = append(ln.sqes, s) // room: reserveIOs
}

func (cy *cycle) finish(i uint32, result int64) { cy.finishAt(i, result, cy.l.now()) }

func (cy *cycle) deviceFault(err error) { cy.l.devErr.Store(&err) }

// reserveIOs makes room in the lanes' batches for n more IOs than the
// records' own (a guest engine's staged IOs), once rather than per cycle.
func (cy *cycle) reserveIOs(n int) {
	for k := range cy.lanes {
		ln := &cy.lanes[k]
		if want := len(cy.recs) + n; cap(ln.sqes) < want {
			s := make([]sqe, len(ln.sqes), want)
			copy(s, ln.sqes)
			ln.sqes = s
		}
	}
}

// publish copies the counters, the loop's and each queue's, where other
// goroutines read them (Stats).
func (cy *cycle) publish() {
	cy.st.dev = cy.dev.counters()
	cy.l.pub.publish(&cy.st)
	for _, s := range cy.qs {
		s.pub.publish(&s.st)
	}
}

func (cy *cycle) runCommands() {
	for {
		select {
		case c := <-cy.l.cmds:
			c.done <- c.fn(cy) // only cmdFunc arrives while serving
		default:
			return
		}
	}
}

// exec runs fn on the loop's thread, idle or serving, and returns its error.
func (l *Loop) exec(fn func(*cycle) error) error {
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
		return errorf("the loop cannot start again after its ring failed (close it and make a new one): %w", *l.fatal.Load())
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
// far) and Stop waits up to Config.StopGrace (default 100 ms) more for
// them to leave the kernel. It returns nil, or an error wrapping ctx.Err()
// when the deadline passed, once the loop has stopped: the kernel can no
// longer write into any registered buffer, and the queues' state is
// STOPPED. It also returns the ring's fatal error, if any (see Err).
//
// When requests are still in the kernel after the grace, Stop returns an
// error matching ErrStopIncomplete (and ctx.Err()) that names their
// tickets, and the loop has not stopped: those requests run to their end
// and may still write into their buffers, whose bytes may change until
// then; buffers, files and queues stay registered and mapped; Start and
// Close refuse with ErrStopIncomplete; and requests published meanwhile
// are still claimed and completed with -ECANCELED (the queue's state is
// not STOPPED until the last one is out). Stop again waits for them (until
// its own ctx ends) and returns nil once the loop has stopped. The usual
// cause is IO already at the device that no cancel reaches: a deep
// O_DIRECT queue on a slow disk; the other is a wait the kernel does not
// interrupt (a hung network or FUSE file system).
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
		grace := time.NewTimer(l.cfg.StopGrace)
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
		ctxErr = errorf("Stop's deadline passed with requests in flight: %d not yet in the kernel completed with -ECANCELED, "+
			"the rest were asked to cancel and waited for: %w", l.abandoned.Load(), ctxErr)
	}
	return errors.Join(ctxErr, l.Err())
}

// defaultStopGrace is Config.StopGrace's default: far longer than a
// cancelled io_uring request or an interrupted pool worker takes to leave
// the kernel, short enough that a caller's deadline still means something.
const defaultStopGrace = 100 * time.Millisecond

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
	l.exec(func(cy *cycle) error { tickets = cy.inKernel(); return nil })
	return errorf("%w: %d request(s) still in the kernel %v after Stop's deadline (tickets %v): IO at the device "+
		"that no cancel reaches (a deep O_DIRECT queue), or a wait the kernel does not interrupt (a hung network "+
		"or FUSE file system). They may still write into their buffers, which stay mapped; requests published "+
		"meanwhile complete with -ECANCELED; Start and Close refuse until they are out (Stop again to wait for "+
		"them): %w", ErrStopIncomplete, len(tickets), l.cfg.StopGrace, tickets, cause)
}

// inKernel lists the tickets of the records the loop still holds.
func (cy *cycle) inKernel() []uint64 {
	held := make([]bool, len(cy.recs))
	for i := range held {
		held[i] = true
	}
	for _, i := range cy.free {
		held[i] = false
	}
	var tickets []uint64
	for i, h := range held {
		if h {
			tickets = append(tickets, cy.recs[i].ticket)
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
