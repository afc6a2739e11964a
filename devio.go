package megaio

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The device engine: how the cycle serves READs and WRITEs whose
// destination is device memory (device.go has the paths and the planning).
// Everything here runs on the loop's thread, inside the cycle:
//
//	claim  -> admitDevice: plan the request, queue its record
//	dispatch -> devIssue: cut queued records into pieces while staging
//	           chunks and GDS batch entries are free; bounce READs become
//	           SQEs in the lanes' batches, GDS pieces fill a cuFile batch
//	flush  -> the SQEs go to the kernel as usual
//	drain  -> devIODone: a staged READ landed: queue its copy to the
//	           device; a staged WRITE left: the piece is done
//	devPoll -> copies whose event completed, and GDS IOs that reported:
//	           pieces done; a record whose pieces are all done completes
//
// Nothing blocks: copies are queued on the loop's own stream and their
// events queried, GDS batches are polled with a zero timeout.

// devTag marks the user_data of a staged IO: devTag | chunk index.
const devTag = uint64(1) << 62

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

// devRec is a record's state when its destination is device memory.
type devRec struct {
	buf       *DeviceBuffer
	base      uint64 // device address where the request's first byte goes
	off, end  uint64 // the request's file range
	next      uint64 // first byte not yet handed to a piece
	stopAt    uint64 // first byte that will not be delivered (end when all goes well)
	err       int64  // the error at stopAt, if one put it there
	out       int32  // pieces in flight
	plan      planParams
	f         *devFile // the file, held until the request completes
	queued    bool     // in the waiting FIFO
	issuing   bool     // devIssue is cutting it into pieces
	waited    bool     // has waited for a chunk or batch entry (counted once)
	cancelled bool
}

// devEngine is a loop's device state, made by the first device buffer.
type devEngine struct {
	cfg     DeviceConfig
	gpu     *GPU
	staging *Buffer
	chunk   uint64
	cs      *copyStream
	chunks  chunkPool
	bounce  []bouncePiece
	copying fifo[uint32] // chunks with a copy queued, in stream order
	waiting fifo[uint32] // records with pieces left to issue

	gdsErr  error // why GDS is off; nil when on
	batches []gdsBatchState
	gds     []gdsPiece
	entries int
	open    int // batch being filled, or -1
	gdsOut  int // GDS IOs submitted, all batches

	bufs []*DeviceBuffer
}

// devFault counts a CUDA or cuFile error a piece met and keeps it for
// DeviceErr.
func (l *Loop) devFault(err error) {
	l.st.devErrors++
	l.devErr.Store(&err)
}

// DeviceErr returns the last CUDA or cuFile error a device request met (its
// slot got -EIO), or nil.
func (l *Loop) DeviceErr() error {
	if p := l.devErr.Load(); p != nil {
		return *p
	}
	return nil
}

// devSetup makes the device engine on g: the staging pool (registered with
// the backend and pinned for CUDA), the copy stream, and, unless
// Device.Path is bounce, cuFile's driver and batch handles. Runs on the
// loop's thread.
func (l *Loop) devSetup(g *GPU) error {
	if l.dev != nil {
		if l.dev.gpu != g {
			return fmt.Errorf("%w: the loop's device buffers are on another GPU (one GPU per loop)", ErrInUse)
		}
		return nil
	}
	if l.gpu != nil && l.gpu != g {
		return fmt.Errorf("%w: the loop is mapped for another GPU (one GPU per loop)", ErrInUse)
	}
	cfg := l.cfg.Device
	if err := g.makeCurrent(); err != nil {
		return err
	}
	e := &devEngine{cfg: cfg, gpu: g, chunk: uint64(cfg.ChunkSize), open: -1}
	mem, err := mapAnonymous(cfg.StagingChunks*cfg.ChunkSize, false)
	if err != nil {
		return fmt.Errorf("megaio: mapping the %d-byte staging pool: %w", cfg.StagingChunks*cfg.ChunkSize, err)
	}
	e.staging = &Buffer{mem: mem, internal: true}
	if err := l.installBuffer(e.staging); err != nil {
		unix.Munmap(mem)
		return fmt.Errorf("megaio: registering the staging pool: %w", err)
	}
	if _, err := g.RegisterHost(mem); err != nil {
		l.uninstallBuffer(e.staging)
		return fmt.Errorf("megaio: pinning the staging pool for CUDA: %w", err)
	}
	if e.cs, err = newCopyStream(cfg.StagingChunks); err != nil {
		g.UnregisterHost(mem)
		l.uninstallBuffer(e.staging)
		return err
	}
	e.chunks = newChunkPool(cfg.StagingChunks)
	e.bounce = make([]bouncePiece, cfg.StagingChunks)
	e.copying = newFIFO[uint32](cfg.StagingChunks)
	e.waiting = newFIFO[uint32](len(l.recs))
	e.gdsErr = fmt.Errorf("%w: Device.Path is bounce", ErrGDSUnavailable)
	if cfg.Path != DevicePathBounce {
		e.gdsErr = e.setupGDS()
		if e.gdsErr != nil && cfg.Path == DevicePathGDS {
			e.close()
			l.uninstallBuffer(e.staging)
			return fmt.Errorf("megaio: Device.Path is gds: %w", e.gdsErr)
		}
	}
	// Staged IOs join the lanes' batches: make room once, not per cycle.
	for k := range l.lanes {
		ln := &l.lanes[k]
		if cap(ln.sqes) < len(l.recs)+cfg.StagingChunks {
			s := make([]sqe, len(ln.sqes), len(l.recs)+cfg.StagingChunks)
			copy(s, ln.sqes)
			ln.sqes = s
		}
	}
	l.dev = e
	desc := fmt.Sprintf("device: bounce (%d x %d KiB staging chunks)", cfg.StagingChunks, cfg.ChunkSize>>10)
	if e.gdsErr == nil {
		desc += fmt.Sprintf(" + GDS (cuFile, %d batches x %d IOs)", len(e.batches), e.entries)
	} else {
		desc += "; GDS off: " + e.gdsErr.Error()
	}
	l.devNote.Store(&desc)
	for i := range l.tab.files {
		if l.tab.files[i].valid {
			if err := l.devRegisterFile(i); err != nil {
				l.tab.files[i].gdsWhy = err.Error() // its device requests fail with -EBADF
			}
		}
	}
	return nil
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
			return fmt.Errorf("%w: %w", ErrGDSUnavailable, err)
		}
		e.batches = append(e.batches, gdsBatchState{b: b})
	}
	e.gds = make([]gdsPiece, len(e.batches)*e.entries)
	return nil
}

// admitDevice takes a READ or WRITE of queue s whose destination d is
// device memory.
func (l *Loop) admitDevice(s *served, t uint64, req *requestSlot, d *destination, now int64) {
	e := l.dev
	fe := &l.tab.files[req.file]
	if fe.devf == nil {
		l.complete(s, t, req.completion, -int64(unix.EBADF), 0) // the device paths hold no descriptor for it (see gdsWhy)
		return
	}
	write := req.op == OpWrite
	p, errno := requestPlan(e.cfg.Path, d.dev.path == DevicePathGDS, fe.devf.fh != nil, fe.direct, write,
		req.fileOffset, req.length, e.cfg)
	if errno != 0 {
		l.complete(s, t, req.completion, errno, 0)
		return
	}
	i := l.take(s, t, req.completion, req.op, now)
	r := &l.recs[i]
	r.file, r.lane = req.file, fe.lane
	end := req.fileOffset + req.length
	r.dev = devRec{buf: d.dev, base: d.addr + req.destOffset, off: req.fileOffset, end: end, next: req.fileOffset,
		stopAt: end, plan: p, f: fe.devf}
	fe.devf.refs++ // released when the request completes (devFinish)
	if p.gds && alignUp(req.fileOffset, gdsAlign) < alignDown(end, gdsAlign) {
		l.st.devGDSReqs++
		if req.fileOffset%gdsAlign != 0 || end%gdsAlign != 0 {
			l.st.devSplitReqs++ // an unaligned head or tail goes through the bounce path
		}
	} else {
		l.st.devBounceReqs++ // bounce only, or too small and unaligned for any GDS body
	}
	s.fence.add(r)
	e.waiting.push(i)
	r.dev.queued = true
}

// devIssue cuts queued records into pieces while resources last. A record
// that cannot get a chunk or a batch entry goes to the back of the queue,
// so others still get theirs; each record is looked at once per cycle.
func (l *Loop) devIssue() {
	e := l.dev
	for tries := e.waiting.len(); tries > 0; tries-- {
		i := e.waiting.pop()
		r := &l.recs[i]
		r.dev.queued = false
		blocked := false
		// A piece can end at once (a copy refused, a batch refused):
		// issuing keeps pieceDone from completing the record under us.
		r.dev.issuing = true
		for r.dev.next < r.dev.stopAt && int(r.dev.out) < e.cfg.MaxPiecesPerRequest {
			sp := nextPiece(r.dev.off, r.dev.end, r.dev.next, r.dev.plan)
			r.dev.next, r.dev.out = sp.start+sp.n, r.dev.out+1 // before the piece can end
			var ok bool
			if sp.gds {
				ok = l.gdsAdd(i, r, sp)
			} else {
				ok = l.bounceStart(i, r, sp)
			}
			if !ok {
				r.dev.next, r.dev.out = sp.start, r.dev.out-1
				if !r.dev.waited {
					r.dev.waited = true
					l.st.devStagingWaits++
				}
				blocked = true
				break
			}
		}
		r.dev.issuing = false
		switch {
		case blocked:
			e.waiting.push(i)
			r.dev.queued = true
		case r.dev.out == 0:
			l.devFinish(i) // every piece has ended (some perhaps while it was queued)
		}
	}
	l.gdsSubmit()
}

// bounceStart takes a chunk for sp and starts it: a READ's file IO, or a
// WRITE's copy from the device. false: no chunk is free.
func (l *Loop) bounceStart(i uint32, r *record, sp span) bool {
	e := l.dev
	c, ok := e.chunks.get()
	if !ok {
		return false
	}
	p := &e.bounce[c]
	*p = bouncePiece{rec: i, write: r.op == OpWrite, start: sp.start, n: sp.n, ioOff: sp.ioOff, ioLen: sp.ioLen,
		dev: r.dev.base + (sp.start - r.dev.off)}
	if !p.write {
		l.stagedIO(c, p, r)
		return true
	}
	if err := e.cs.copy(false, e.stagingAddr(c), p.dev, p.n, int(c)); err != nil {
		l.devFault(err)
		l.bounceDone(c, 0, -int64(unix.EIO))
		return true
	}
	e.copying.push(c)
	return true
}

func (e *devEngine) stagingAddr(c uint32) uintptr {
	return uintptr(unsafe.Pointer(&e.staging.mem[uint64(c)*e.chunk]))
}

// stagedIO queues the rest of piece c's file IO in its record's lane.
func (l *Loop) stagedIO(c uint32, p *bouncePiece, r *record) {
	s := sqe{userData: devTag | uint64(c), off: p.ioOff + p.ioDone, addr: uint64(l.dev.stagingAddr(c)) + p.ioDone,
		len: uint32(p.ioLen - p.ioDone), bufIndex: l.dev.staging.index, file: int32(r.dev.f.fd), flags: sqeRawFD,
		op: sqeRead}
	if p.write {
		s.op = sqeWrite
	}
	ln := &l.lanes[r.lane]
	ln.sqes = append(ln.sqes, s)
}

// devIODone handles the completion of staged IO c.
func (l *Loop) devIODone(c uint32, res int64) {
	e := l.dev
	p := &e.bounce[c]
	r := &l.recs[p.rec]
	if res < 0 {
		if p.write {
			l.bounceDone(c, p.ioDone, res)
		} else {
			l.bounceDone(c, 0, res)
		}
		return
	}
	p.ioDone += uint64(res)
	more := res > 0 && p.ioDone < p.ioLen && !l.cancelling
	if p.write {
		if more {
			l.st.shortIO++
			l.stagedIO(c, p, r)
			return
		}
		l.bounceDone(c, p.ioDone, 0)
		return
	}
	// A short O_DIRECT read is EOF (another read would start unaligned);
	// a short buffered read goes on where it stopped.
	if more && r.dev.plan.align == 1 {
		l.st.shortIO++
		l.stagedIO(c, p, r)
		return
	}
	skew := p.start - p.ioOff
	if p.ioDone <= skew {
		l.bounceDone(c, 0, 0) // EOF before this piece's first byte
		return
	}
	p.got = min(p.ioDone-skew, p.n)
	if err := e.cs.copy(true, e.stagingAddr(c)+uintptr(skew), p.dev, p.got, int(c)); err != nil {
		l.devFault(err)
		l.bounceDone(c, 0, -int64(unix.EIO))
		return
	}
	e.copying.push(c)
}

// devPoll finishes copies whose events completed (in stream order, so the
// first one not done ends the scan) and collects GDS IOs that reported. It
// returns how many pieces it advanced.
func (l *Loop) devPoll() int {
	e := l.dev
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
			l.devFault(err)
			l.bounceDone(c, 0, -int64(unix.EIO))
		case !p.write:
			l.bounceDone(c, p.got, 0)
		case l.cancelling:
			l.bounceDone(c, 0, -int64(unix.ECANCELED))
		default:
			l.stagedIO(c, p, &l.recs[p.rec])
		}
	}
	if e.gdsOut > 0 {
		n += l.gdsPoll()
	}
	return n
}

// bounceDone ends piece c: got bytes delivered from its start, or err.
func (l *Loop) bounceDone(c uint32, got uint64, err int64) {
	e := l.dev
	p := &e.bounce[c]
	i, start, n := p.rec, p.start, p.n
	e.chunks.put(c)
	l.st.devBounceBytes += got
	l.pieceDone(i, start, n, got, err)
}

// pieceDone accounts one finished piece of record i and completes the
// record when its last piece is in. The result is the bytes delivered
// without a gap from the request's start; an error counts only when it
// comes before any byte.
func (l *Loop) pieceDone(i uint32, start, n, got uint64, err int64) {
	r := &l.recs[i]
	d := &r.dev
	d.out--
	l.st.bytes += got
	if err < 0 && start < d.stopAt {
		d.stopAt, d.err = start+min(got, n), err
	} else if got < n && start+got < d.stopAt {
		d.stopAt, d.err = start+got, 0 // EOF or a short transfer: nothing after it counts
	}
	if l.cancelling && !d.cancelled {
		d.cancelled = true
		d.stopAt = min(d.stopAt, d.next)
	}
	if d.issuing {
		return // devIssue decides what comes next
	}
	if d.out > 0 || (d.next < d.stopAt && !d.cancelled && !l.failed) {
		if !d.queued && d.next < d.stopAt && !d.cancelled {
			l.dev.waiting.push(i)
			d.queued = true
		}
		return
	}
	if d.queued {
		return // finished when it leaves the queue (cancel and fail sweep it)
	}
	l.devFinish(i)
}

// devFinish completes device record i and drops its hold on the file.
func (l *Loop) devFinish(i uint32) {
	r := &l.recs[i]
	f := r.dev.f
	l.finish(i, r.dev.result(), l.now())
	f.unref()
}

// result is a finished device request's completion value.
func (d *devRec) result() int64 {
	n := int64(d.stopAt - d.off)
	switch {
	case n > 0:
		return n
	case d.err < 0:
		return d.err
	case d.cancelled:
		return -int64(unix.ECANCELED)
	}
	return 0
}

// gdsAdd puts sp into the batch being filled. false: every batch is busy.
func (l *Loop) gdsAdd(i uint32, r *record, sp span) bool {
	e := l.dev
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
	buf := r.dev.buf
	bs.b.set(k, r.op == OpWrite, r.dev.f.fh, buf.ptr, r.dev.base-buf.ptr+(sp.start-r.dev.off), sp.start, sp.n, uint64(id))
	bs.staged++
	if bs.staged == e.entries {
		l.gdsSubmit()
	}
	return true
}

// gdsSubmit submits the batch being filled. cuFile's "queue full" and
// "retry later" answers leave it filled for the next cycle, up to
// Device.GDSRetryLimit answers in a row; past that, and on other errors,
// its pieces end with -EIO.
func (l *Loop) gdsSubmit() {
	e := l.dev
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
			l.st.devGDSRetries++
			if bs.retries++; bs.retries < e.cfg.GDSRetryLimit {
				return
			}
			l.st.devGDSGiveUps++
			err = fmt.Errorf("%w (%d answers in a row; Device.GDSRetryLimit)", err, bs.retries)
		}
		bs.retries = 0
		l.devFault(err)
		l.gdsDropStaged(-int64(unix.EIO))
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
func (l *Loop) gdsDropStaged(err int64) {
	e := l.dev
	if e.open < 0 {
		return
	}
	bs := &e.batches[e.open]
	base, n := e.open*e.entries, bs.staged
	bs.staged, e.open = 0, -1
	for k := 0; k < n; k++ {
		l.gdsDone(base+k, 0, err)
	}
}

// gdsPoll collects reported IOs from every batch with IOs out.
func (l *Loop) gdsPoll() int {
	e := l.dev
	n := 0
	for b := range e.batches {
		bs := &e.batches[b]
		if bs.out == 0 {
			continue
		}
		got, err := bs.b.poll()
		if err != nil {
			l.devFault(err)
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
				l.gdsDone(id, uint64(min(ev.ret, int64(p.n))), 0)
			case ev.status == gdsCanceled:
				l.gdsDone(id, 0, -int64(unix.ECANCELED))
			default:
				l.gdsDone(id, 0, gdsErrno(ev.ret))
			}
		}
		if bs.cancelAt != 0 && bs.out > 0 && l.now()-bs.cancelAt > int64(gdsCancelGrace) {
			l.gdsAbandon(b)
		}
		if bs.out == 0 {
			bs.cancelAt = 0
		}
	}
	return n
}

// gdsErrno turns a failed IO's ret into a negative errno.
func gdsErrno(ret int64) int64 {
	if ret < 0 && ret > -4096 {
		return ret
	}
	return -int64(unix.EIO)
}

// gdsCancelGrace is how long a cancelled batch may go on reporting before
// its unreported IOs are taken as cancelled and the handle is replaced.
const gdsCancelGrace = 2 * time.Second

// gdsDone ends GDS piece id.
func (l *Loop) gdsDone(id int, got uint64, err int64) {
	e := l.dev
	p := &e.gds[id]
	i, start, n := p.rec, p.start, p.n
	p.state = pieceFree
	l.st.devGDSBytes += got
	l.pieceDone(i, start, n, got, err)
}

// gdsAbandon gives up on a cancelled batch that stopped reporting: its
// IOs complete as cancelled, and a fresh handle replaces it so a late
// report cannot reach a reused piece.
func (l *Loop) gdsAbandon(b int) {
	e := l.dev
	bs := &e.batches[b]
	for id := b * e.entries; id < (b+1)*e.entries; id++ {
		if e.gds[id].state == pieceInflight {
			bs.out--
			e.gdsOut--
			l.gdsDone(id, 0, -int64(unix.ECANCELED))
		}
	}
	bs.b.destroy()
	nb, err := newGDSBatch(e.entries)
	if err != nil {
		l.devFault(err)
		bs.b, bs.cancelAt = nil, -1 // never used again
		return
	}
	bs.b, bs.cancelAt = nb, 0
}

// devCancel runs when Stop's deadline passes: queued records stop taking
// pieces, staged GDS IOs end unsubmitted, and submitted batches are
// cancelled. Pieces in flight complete as they report.
func (l *Loop) devCancel() {
	e := l.dev
	for e.waiting.len() > 0 {
		i := e.waiting.pop()
		r := &l.recs[i]
		r.dev.queued, r.dev.cancelled = false, true
		r.dev.stopAt = min(r.dev.stopAt, r.dev.next)
		if r.dev.out == 0 {
			if r.dev.next == r.dev.off {
				l.cancelled.Add(1) // never reached the kernel, as Stop's error counts
			}
			l.devFinish(i)
		}
	}
	l.gdsDropStaged(-int64(unix.ECANCELED))
	for b := range e.batches {
		if bs := &e.batches[b]; bs.out > 0 && bs.cancelAt == 0 {
			if err := bs.b.cancel(); err != nil {
				l.devFault(err)
			}
			bs.cancelAt = max(l.now(), 1)
		}
	}
}

// devDropIO ends staged IO c that was never submitted (Stop's deadline).
func (l *Loop) devDropIO(c uint32) {
	p := &l.dev.bounce[c]
	got := uint64(0)
	if p.write {
		got = p.ioDone
	}
	l.bounceDone(c, got, -int64(unix.ECANCELED))
}

// devFail runs when the backend failed: the loop completes every record
// with -EIO, so first make sure nothing still writes into device memory
// or staging: wait for the stream, cancel the batches, forget every piece.
func (l *Loop) devFail() {
	e := l.dev
	if err := e.cs.sync(); err != nil {
		l.devFault(err)
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
	e.waiting = newFIFO[uint32](len(l.recs))
}

// devBusy: copies are queued (they finish in microseconds: keep polling).
func (l *Loop) devBusy() bool { return l.dev != nil && l.dev.copying.len() > 0 }

// devWaiting: GDS IOs are out (they take as long as disk IO: poll with the
// in-flight backoff).
func (l *Loop) devWaiting() bool { return l.dev != nil && l.dev.gdsOut > 0 }

// close releases the engine's CUDA and cuFile resources. Runs on the
// loop's thread after the loop stopped, before the backend closes (the
// staging buffer is unmapped with the other buffers).
func (e *devEngine) close() error {
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
