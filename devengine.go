package megaio

import (
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The device engine: how READs and WRITEs whose destination is device
// memory are served (devplanner.go decides how; devicebuffer.go has the public
// types). It is a guest of the cycle: the loop calls it at a few points
// (nil-safe methods: the engine exists from the first device buffer), and
// it asks the loop for only what engineHost offers. Everything runs on the loop's thread:
//
//	claim    -> plan, take: plan the request, queue its record
//	issue       cut queued records into pieces while staging chunks and
//	            GDS batch entries are free; bounce IOs go to the lanes'
//	            batches (engineHost.queueIO), GDS pieces fill a cuFile batch
//	flush       the staged IOs go to the kernel as usual
//	drain    -> reaped: a staged READ landed: queue its copy to the
//	            device; a staged WRITE left: the piece has ended
//	poll        copies whose event completed, and GDS IOs that reported:
//	            pieces end; a record whose pieces have all ended finishes
//	            (engineHost.finish)
//
// Nothing blocks: copies are queued on the engine's own stream and their
// events queried, GDS batches are polled with a zero timeout.

// devTag marks the user_data of an IO the engine queued: devTag | chunk
// index. Without it, user_data is a record index (Loop.engineIO routes).
const devTag = uint64(1) << 62

// engineHost is all the device engine asks of the loop.
type engineHost interface {
	// queueIO adds s to lane's batch for the next flush; its completion
	// comes back through reaped.
	queueIO(lane uint8, s sqe)
	// finish completes record i with result and releases it.
	finish(i uint32, result int64)
	// deviceFault keeps err as the loop's last device error (DeviceErr).
	deviceFault(err error)
}

// GDS piece states. (A bounce piece's stage needs no word of its own: its
// chunk is either in the copying FIFO or has an IO in a lane.)
const (
	pieceFree     = iota
	pieceStaged   // in a batch not yet submitted
	pieceInflight // submitted
)

// bouncePiece is the piece that holds one staging chunk (indexed alike).
type bouncePiece struct {
	rec          uint32
	write        bool
	start, n     uint64 // the request bytes it delivers
	ioOff, ioLen uint64 // the file range it reads or writes
	ioDone       uint64 // bytes of the IO done so far
	got          uint64 // READ: bytes copied to the device
	dev          uint64 // device address of start
}

// gdsPiece is one IO of a cuFile batch (indexed batch*entries + k).
type gdsPiece struct {
	rec      uint32
	state    uint8
	start, n uint64
}

// gdsBatchState tracks one batch handle: IOs staged for the next submit,
// IOs submitted and not yet reported.
type gdsBatchState struct {
	b        *gdsBatch
	staged   int
	out      int
	retries  int   // "retry later" answers in a row to the staged IOs' submission
	cancelAt int64 // when Stop's deadline cancelled it (ns, loop epoch), 0 otherwise
}

// devRec is the engine's state of a record whose destination is device
// memory (the engine's recs are indexed like the loop's records).
type devRec struct {
	buf       *DeviceBuffer
	base      uint64 // device address where the request's first byte goes
	off, end  uint64 // the request's file range
	next      uint64 // first byte not yet handed to a piece
	stopAt    uint64 // first byte that will not be delivered (end when all goes well)
	err       int64  // the error at stopAt, if one put it there
	out       int32  // pieces in flight
	plan      planParams
	f         *devFile // the file, held until the request finishes; nil: not a device record
	write     bool
	lane      uint8 // the lane its file's IOs go to
	queued    bool  // in the waiting FIFO
	issuing   bool  // issue is cutting it into pieces
	waited    bool  // has waited for a chunk or batch entry (counted once)
	cancelled bool
}

// devFileState is the engine's state of a registered file (indexed like
// the loop's file table).
type devFileState struct {
	f      *devFile // the device paths' hold on the file; nil: none
	gdsWhy string   // why GDS does or does not serve the file
}

// devEngine is a loop's device state, made by the first device buffer.
type devEngine struct {
	host    engineHost
	cfg     DeviceConfig
	gpu     *GPU
	epoch   time.Time // the loop's, so times compare with its
	staging *Buffer
	chunk   uint64
	cs      *copyStream
	chunks  chunkPool
	bounce  []bouncePiece
	copying fifo[uint32] // chunks with a copy queued, in stream order
	waiting fifo[uint32] // records with pieces left to issue
	recs    []devRec
	files   []devFileState

	gdsErr  error // why GDS is off; nil when on
	batches []gdsBatchState
	gds     []gdsPiece
	entries int
	open    int // batch being filled, or -1
	gdsOut  int // GDS IOs submitted, all batches

	bufs []*DeviceBuffer

	cancelling bool // Stop's deadline passed: no new pieces, IOs are cancelled
	failed     bool // the loop's backend failed
	st         devCounters
}

// chunkPool hands out the staging chunks. A request takes one chunk per
// piece, only when one is free, and gives it back when the piece's copy
// has completed: it never holds an idle chunk while it waits for another,
// so every chunk taken is in flight and comes back without anyone waiting
// on it (no request can wait on a chunk held by itself).
type chunkPool struct {
	free []uint32
	n    int
}

func newChunkPool(n int) chunkPool {
	p := chunkPool{free: make([]uint32, n), n: n}
	for i := range p.free {
		p.free[i] = uint32(n - 1 - i)
	}
	return p
}

func (p *chunkPool) get() (uint32, bool) {
	if len(p.free) == 0 {
		return 0, false
	}
	c := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return c, true
}

func (p *chunkPool) put(c uint32) { p.free = append(p.free, c) }
func (p *chunkPool) inUse() int   { return p.n - len(p.free) }

func (e *devEngine) now() int64 { return int64(time.Since(e.epoch)) }

// fault counts a CUDA or cuFile error a piece met and hands it to the loop
// for DeviceErr.
func (e *devEngine) fault(err error) {
	e.st.errors++
	e.host.deviceFault(err)
}

// setupGDS opens cuFile and makes the batch handles.
func (e *devEngine) setupGDS() error {
	if err := openCuFile(); err != nil {
		return err
	}
	e.entries = e.cfg.GDSBatchEntries
	if cufile.maxBatch > 0 && cufile.maxBatch < e.entries {
		e.entries = cufile.maxBatch
	}
	for i := 0; i < e.cfg.GDSBatches; i++ {
		b, err := newGDSBatch(e.entries)
		if err != nil {
			for _, s := range e.batches {
				s.b.destroy()
			}
			e.batches = nil
			return errorf("%w: %w", ErrGDSUnavailable, err)
		}
		e.batches = append(e.batches, gdsBatchState{b: b})
	}
	e.gds = make([]gdsPiece, len(e.batches)*e.entries)
	return nil
}

// take takes planned request req as record i (the engine's half of cycle.take); its file's IOs go to lane.
func (e *devEngine) take(i uint32, req *requestSlot, d *destination, p planParams, lane uint8) {
	f := e.files[req.file].f
	end := req.fileOffset + req.length
	e.recs[i] = devRec{buf: d.dev, base: d.addr + req.destOffset, off: req.fileOffset, end: end, next: req.fileOffset,
		stopAt: end, plan: p, f: f, write: req.op.spec().write, lane: lane, queued: true}
	f.refs++ // released when the request finishes
	if p.gds && alignUp(req.fileOffset, gdsAlign) < alignDown(end, gdsAlign) {
		e.st.gdsReqs++
		if req.fileOffset%gdsAlign != 0 || end%gdsAlign != 0 {
			e.st.splitReqs++ // an unaligned head or tail goes through the bounce path
		}
	} else {
		e.st.bounceReqs++ // bounce only, or too small and unaligned for any GDS body
	}
	e.waiting.push(i)
}

// issue cuts queued records into pieces while resources last. A record
// that cannot get a chunk or a batch entry goes to the back of the queue,
// so others still get theirs; each record is looked at once per cycle.
func (e *devEngine) issue() {
	if e == nil || e.cancelling || e.failed {
		return
	}
	for tries := e.waiting.len(); tries > 0; tries-- {
		i := e.waiting.pop()
		r := &e.recs[i]
		r.queued = false
		blocked := false
		// A piece can end at once (a copy refused, a batch refused):
		// issuing keeps pieceEnded from finishing the record under us.
		r.issuing = true
		for r.next < r.stopAt && int(r.out) < e.cfg.MaxPiecesPerRequest {
			sp := nextPiece(r.off, r.end, r.next, r.plan)
			r.next, r.out = sp.start+sp.n, r.out+1 // before the piece can end
			var ok bool
			if sp.gds {
				ok = e.gdsAdd(i, r, sp)
			} else {
				ok = e.bounceStart(i, r, sp)
			}
			if !ok {
				r.next, r.out = sp.start, r.out-1
				if !r.waited {
					r.waited = true
					e.st.stagingWaits++
				}
				blocked = true
				break
			}
		}
		r.issuing = false
		switch {
		case blocked:
			e.waiting.push(i)
			r.queued = true
		case r.out == 0:
			e.finish(i) // every piece has ended (some perhaps while it was queued)
		}
	}
	e.gdsSubmit()
}

// bounceStart takes a chunk for sp and starts it: a READ's file IO, or a
// WRITE's copy from the device. false: no chunk is free.
func (e *devEngine) bounceStart(i uint32, r *devRec, sp span) bool {
	c, ok := e.chunks.get()
	if !ok {
		return false
	}
	p := &e.bounce[c]
	*p = bouncePiece{rec: i, write: r.write, start: sp.start, n: sp.n, ioOff: sp.ioOff, ioLen: sp.ioLen,
		dev: r.base + (sp.start - r.off)}
	if !p.write {
		e.stagedIO(c, p, r)
		return true
	}
	if err := e.cs.copy(false, e.stagingAddr(c), p.dev, p.n, int(c)); err != nil {
		e.fault(err)
		e.bounceEnded(c, 0, -int64(unix.EIO))
		return true
	}
	e.copying.push(c)
	return true
}

func (e *devEngine) stagingAddr(c uint32) uintptr {
	return uintptr(unsafe.Pointer(&e.staging.mem[uint64(c)*e.chunk]))
}

// stagedIO queues the rest of piece c's file IO in its record's lane.
func (e *devEngine) stagedIO(c uint32, p *bouncePiece, r *devRec) {
	s := sqe{userData: devTag | uint64(c), off: p.ioOff + p.ioDone, addr: uint64(e.stagingAddr(c)) + p.ioDone,
		len: uint32(p.ioLen - p.ioDone), bufIndex: e.staging.index, file: int32(r.f.fd), flags: sqeRawFD,
		op: sqeRead}
	if p.write {
		s.op = sqeWrite
	}
	e.host.queueIO(r.lane, s)
}

// reaped handles the completion of staged IO c.
func (e *devEngine) reaped(c uint32, res int64) {
	p := &e.bounce[c]
	r := &e.recs[p.rec]
	if res < 0 {
		if p.write {
			e.bounceEnded(c, p.ioDone, res)
		} else {
			e.bounceEnded(c, 0, res)
		}
		return
	}
	p.ioDone += uint64(res)
	more := continues(res, p.ioLen-p.ioDone, e.cancelling)
	if p.write {
		if more {
			e.st.shortIO++
			e.stagedIO(c, p, r)
			return
		}
		e.bounceEnded(c, p.ioDone, 0)
		return
	}
	// A short O_DIRECT read is EOF (another read would start unaligned);
	// a short buffered read goes on where it stopped.
	if more && r.plan.align == 1 {
		e.st.shortIO++
		e.stagedIO(c, p, r)
		return
	}
	skew := p.start - p.ioOff
	if p.ioDone <= skew {
		e.bounceEnded(c, 0, 0) // EOF before this piece's first byte
		return
	}
	p.got = min(p.ioDone-skew, p.n)
	if err := e.cs.copy(true, e.stagingAddr(c)+uintptr(skew), p.dev, p.got, int(c)); err != nil {
		e.fault(err)
		e.bounceEnded(c, 0, -int64(unix.EIO))
		return
	}
	e.copying.push(c)
}

// poll ends pieces whose copies completed (in stream order, so the first
// one not done ends the scan) and GDS IOs that reported. It returns how
// many pieces it advanced.
func (e *devEngine) poll() int {
	if e == nil {
		return 0
	}
	n := 0
	for e.copying.len() > 0 {
		c := e.copying.peek()
		done, err := e.cs.done(int(c))
		if !done {
			break
		}
		e.copying.pop()
		n++
		p := &e.bounce[c]
		switch {
		case err != nil:
			e.fault(err)
			e.bounceEnded(c, 0, -int64(unix.EIO))
		case !p.write:
			e.bounceEnded(c, p.got, 0)
		case e.cancelling:
			e.bounceEnded(c, 0, -int64(unix.ECANCELED))
		default:
			e.stagedIO(c, p, &e.recs[p.rec])
		}
	}
	if e.gdsOut > 0 {
		n += e.gdsPoll()
	}
	return n
}

// bounceEnded ends piece c: got bytes delivered from its start, or err.
func (e *devEngine) bounceEnded(c uint32, got uint64, err int64) {
	p := &e.bounce[c]
	i, start, n := p.rec, p.start, p.n
	e.chunks.put(c)
	e.st.bounceBytes += got
	e.pieceEnded(i, start, n, got, err)
}

// pieceEnded accounts one ended piece of record i and finishes the record
// when its last piece is in. The result is the bytes delivered without a
// gap from the request's start; an error counts only when it comes before
// any byte.
func (e *devEngine) pieceEnded(i uint32, start, n, got uint64, err int64) {
	d := &e.recs[i]
	d.out--
	e.st.bytes += got
	if err < 0 && start < d.stopAt {
		d.stopAt, d.err = start+min(got, n), err
	} else if got < n && start+got < d.stopAt {
		d.stopAt, d.err = start+got, 0 // EOF or a short transfer: nothing after it counts
	}
	if e.cancelling && !d.cancelled {
		d.cancelled = true
		d.stopAt = min(d.stopAt, d.next)
	}
	if d.issuing {
		return // issue decides what comes next
	}
	if d.out > 0 || (d.next < d.stopAt && !d.cancelled && !e.failed) {
		if !d.queued && d.next < d.stopAt && !d.cancelled {
			e.waiting.push(i)
			d.queued = true
		}
		return
	}
	if d.queued {
		return // finished when it leaves the queue (cancel and fail sweep it)
	}
	e.finish(i)
}

// finish hands device record i's result to the loop and drops its hold on
// the file.
func (e *devEngine) finish(i uint32) {
	d := &e.recs[i]
	f, res := d.f, d.result()
	*d = devRec{}
	e.host.finish(i, res)
	f.unref()
}

// result is a finished device request's completion value.
func (d *devRec) result() int64 {
	return transferResult(d.stopAt-d.off, d.err, d.cancelled)
}

// gdsAdd puts sp into the batch being filled. false: every batch is busy.
func (e *devEngine) gdsAdd(i uint32, r *devRec, sp span) bool {
	if e.open < 0 {
		for b := range e.batches {
			if e.batches[b].staged == 0 && e.batches[b].out == 0 && e.batches[b].cancelAt == 0 {
				e.open = b
				break
			}
		}
		if e.open < 0 {
			return false
		}
	}
	bs := &e.batches[e.open]
	k := bs.staged
	id := e.open*e.entries + k
	e.gds[id] = gdsPiece{rec: i, state: pieceStaged, start: sp.start, n: sp.n}
	buf := r.buf
	bs.b.set(k, r.write, r.f.fh, buf.ptr, r.base-buf.ptr+(sp.start-r.off), sp.start, sp.n, uint64(id))
	bs.staged++
	if bs.staged == e.entries {
		e.gdsSubmit()
	}
	return true
}

// gdsSubmit submits the batch being filled. cuFile's "queue full" and
// "retry later" answers leave it filled for the next cycle, up to
// Device.GDSRetryLimit answers in a row; past that, and on other errors,
// its pieces end with -EIO.
func (e *devEngine) gdsSubmit() {
	if e.open < 0 {
		return
	}
	bs := &e.batches[e.open]
	base := e.open * e.entries
	if bs.staged == 0 {
		return
	}
	if err := bs.b.submit(bs.staged); err != nil {
		if cf, ok := err.(*CuFileError); ok && cf.retryable() {
			e.st.gdsRetries++
			if bs.retries++; bs.retries < e.cfg.GDSRetryLimit {
				return
			}
			e.st.gdsGiveUps++
			err = errorf("%w (%d answers in a row; Device.GDSRetryLimit)", err, bs.retries)
		}
		bs.retries = 0
		e.fault(err)
		e.gdsDropStaged(-int64(unix.EIO))
		return
	}
	bs.retries = 0
	for k := 0; k < bs.staged; k++ {
		e.gds[base+k].state = pieceInflight
	}
	bs.out, e.gdsOut = bs.out+bs.staged, e.gdsOut+bs.staged
	bs.staged, e.open = 0, -1
}

// gdsDropStaged ends the open batch's IOs, never submitted, with err.
func (e *devEngine) gdsDropStaged(err int64) {
	if e.open < 0 {
		return
	}
	bs := &e.batches[e.open]
	base, n := e.open*e.entries, bs.staged
	bs.staged, e.open = 0, -1
	for k := 0; k < n; k++ {
		e.gdsEnded(base+k, 0, err)
	}
}

// gdsPoll collects reported IOs from every batch with IOs out.
func (e *devEngine) gdsPoll() int {
	n := 0
	for b := range e.batches {
		bs := &e.batches[b]
		if bs.out == 0 {
			continue
		}
		got, err := bs.b.poll()
		if err != nil {
			e.fault(err)
		}
		for _, ev := range bs.b.got[:got] {
			id := int(ev.cookie)
			if id < b*e.entries || id >= (b+1)*e.entries || e.gds[id].state != pieceInflight {
				continue // not an IO of this submission: cuFile reported it already
			}
			bs.out--
			e.gdsOut--
			n++
			p := &e.gds[id]
			switch {
			case ev.status == gdsComplete && ev.ret >= 0:
				e.gdsEnded(id, uint64(min(ev.ret, int64(p.n))), 0)
			case ev.status == gdsCanceled:
				e.gdsEnded(id, 0, -int64(unix.ECANCELED))
			default:
				e.gdsEnded(id, 0, gdsErrno(ev.ret))
			}
		}
		if bs.cancelAt != 0 && bs.out > 0 && e.now()-bs.cancelAt > int64(gdsCancelGrace) {
			e.gdsAbandon(b)
		}
		if bs.out == 0 {
			bs.cancelAt = 0
		}
	}
	return n
}

// maxErrnoValue is the largest errno the kernel returns as -errno (its
// MAX_ERRNO): a cuFile ret below -maxErrnoValue is no errno.
const maxErrnoValue = 4095

// gdsErrno turns a failed IO's ret into a negative errno.
func gdsErrno(ret int64) int64 {
	if ret < 0 && ret >= -maxErrnoValue {
		return ret
	}
	return -int64(unix.EIO)
}

// gdsCancelGrace is how long a cancelled batch may go on reporting before
// its unreported IOs are taken as cancelled and the handle is replaced.
const gdsCancelGrace = 2 * time.Second

// gdsEnded ends GDS piece id.
func (e *devEngine) gdsEnded(id int, got uint64, err int64) {
	p := &e.gds[id]
	i, start, n := p.rec, p.start, p.n
	p.state = pieceFree
	e.st.gdsBytes += got
	e.pieceEnded(i, start, n, got, err)
}

// gdsAbandon gives up on a cancelled batch that stopped reporting: its
// IOs end as cancelled, and a fresh handle replaces it so a late report
// cannot reach a reused piece.
func (e *devEngine) gdsAbandon(b int) {
	bs := &e.batches[b]
	for id := b * e.entries; id < (b+1)*e.entries; id++ {
		if e.gds[id].state == pieceInflight {
			bs.out--
			e.gdsOut--
			e.gdsEnded(id, 0, -int64(unix.ECANCELED))
		}
	}
	bs.b.destroy()
	nb, err := newGDSBatch(e.entries)
	if err != nil {
		e.fault(err)
		bs.b, bs.cancelAt = nil, -1 // never used again
		return
	}
	bs.b, bs.cancelAt = nb, 0
}

// begin readies the engine for a run (Start).
func (e *devEngine) begin() {
	if e != nil {
		e.cancelling = false
	}
}

// cancel runs when Stop's deadline passes: queued records stop taking
// pieces, staged GDS IOs end unsubmitted, and submitted batches are
// cancelled. Pieces in flight end as they report. It returns how many
// requests finished without reaching the kernel.
func (e *devEngine) cancel() uint64 {
	if e == nil {
		return 0
	}
	e.cancelling = true
	var never uint64
	for e.waiting.len() > 0 {
		i := e.waiting.pop()
		r := &e.recs[i]
		r.queued, r.cancelled = false, true
		r.stopAt = min(r.stopAt, r.next)
		if r.out == 0 {
			if r.next == r.off {
				never++
			}
			e.finish(i)
		}
	}
	e.gdsDropStaged(-int64(unix.ECANCELED))
	for b := range e.batches {
		if bs := &e.batches[b]; bs.out > 0 && bs.cancelAt == 0 {
			if err := bs.b.cancel(); err != nil {
				e.fault(err)
			}
			bs.cancelAt = max(e.now(), 1)
		}
	}
	return never
}

// dropIO ends staged IO c that was never submitted (Stop's deadline).
func (e *devEngine) dropIO(c uint32) {
	p := &e.bounce[c]
	got := uint64(0)
	if p.write {
		got = p.ioDone
	}
	e.bounceEnded(c, got, -int64(unix.ECANCELED))
}

// fail runs when the loop's backend failed, before the loop completes
// every record with -EIO: make sure nothing still writes into device
// memory or staging (wait for the stream, cancel the batches), forget every
// piece, and drop the records' holds on their files.
func (e *devEngine) fail() {
	if e == nil {
		return
	}
	e.failed = true
	if err := e.cs.sync(); err != nil {
		e.fault(err)
	}
	for b := range e.batches {
		bs := &e.batches[b]
		if bs.out > 0 && bs.b != nil {
			bs.b.cancel()
		}
		bs.staged, bs.out = 0, 0
	}
	for id := range e.gds {
		e.gds[id].state = pieceFree
	}
	e.open, e.gdsOut = -1, 0
	e.chunks = newChunkPool(e.cfg.StagingChunks)
	e.copying = newFIFO[uint32](e.cfg.StagingChunks)
	e.waiting = newFIFO[uint32](len(e.recs))
	for i := range e.recs {
		if f := e.recs[i].f; f != nil {
			e.recs[i] = devRec{}
			f.unref()
		}
	}
}

// busy: copies are queued (they finish in microseconds: keep polling).
func (e *devEngine) busy() bool { return e != nil && e.copying.len() > 0 }

// ioOut: GDS IOs are out (they take as long as disk IO: poll with the
// in-flight backoff).
func (e *devEngine) ioOut() bool { return e != nil && e.gdsOut > 0 }

// counters are the engine's counters, zero before it exists.
func (e *devEngine) counters() devCounters {
	if e == nil {
		return devCounters{}
	}
	return e.st
}

// registerFile gives file slot i (descriptor fd) its devFile, registering
// it with cuFile when GDS is on. An error leaves the file usable for host
// destinations only.
func (e *devEngine) registerFile(i, fd int) error {
	if e == nil {
		return nil
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		e.files[i].gdsWhy = "duplicating the descriptor for the device paths: " + err.Error()
		return errorf("duplicating the descriptor for the device paths: %w", err)
	}
	f := &devFile{fd: dup, direct: isDirect(dup)}
	fs := &e.files[i]
	*fs = devFileState{f: f}
	switch {
	case e.gdsErr != nil:
		fs.gdsWhy = "GDS is off for this loop: " + e.gdsErr.Error()
	case !f.direct:
		fs.gdsWhy = "not opened with O_DIRECT, which GDS needs"
	default:
		if f.fh, err = cufileHandle(dup); err != nil {
			fs.gdsWhy = err.Error()
		} else {
			fs.gdsWhy = "cuFile registered the file (cuFileHandleRegister)"
		}
	}
	return nil
}

// unregisterFile lets go of slot i's devFile, at once or when the last
// device request holding it finishes.
func (e *devEngine) unregisterFile(i int) {
	if e == nil {
		return
	}
	fs := &e.files[i]
	if fs.f != nil {
		fs.f.closed = true
		if fs.f.refs == 0 {
			fs.f.release()
		}
	}
	*fs = devFileState{}
}

// filePath says how file slot i meets device destinations, and why.
func (e *devEngine) filePath(i int) (DevicePath, string) {
	if e == nil || e.files[i].gdsWhy == "" {
		return DevicePathBounce, "no device buffer yet"
	}
	if f := e.files[i].f; f != nil && f.fh != nil {
		return DevicePathGDS, e.files[i].gdsWhy
	}
	return DevicePathBounce, e.files[i].gdsWhy
}

// close releases the engine's CUDA and cuFile resources. Runs on the
// loop's thread after the loop stopped, before the backend closes (the
// staging buffer is unmapped with the other buffers).
func (e *devEngine) close() error {
	if e == nil {
		return nil
	}
	var errs []error
	if e.cs != nil {
		if err := e.cs.sync(); err != nil {
			errs = append(errs, err)
		}
		e.cs.close()
	}
	for _, bs := range e.batches {
		if bs.b != nil {
			bs.b.destroy()
		}
	}
	e.batches = nil
	for _, b := range e.bufs {
		if b.path == DevicePathGDS {
			if err := cufileBufDeregister(b.ptr); err != nil {
				errs = append(errs, err)
			}
		}
		if b.owned {
			if err := b.gpu.Free(b.ptr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	e.bufs = nil
	if e.staging != nil {
		if err := e.gpu.UnregisterHost(e.staging.mem); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
