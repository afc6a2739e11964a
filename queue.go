package megaio

import (
	"context"
	"errors"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The queue ABI of include/megaio.h, mirrored in Go. The protocol (who
// writes which word, which store pairs with which load) is described there;
// the step names P1..P5 and L1..L3 below refer to it.
const (
	abiMagic       = 0x3251454f4947454d
	abiVersion     = 2
	headerSize     = 256
	slotSize       = 64
	completionSize = 16
	minCapacity    = 2
	maxCapacity    = 1 << 20
	maxCompletions = 1 << 24

	// MaxLength is the largest length of one READ or WRITE (io_uring's
	// largest registered buffer). Longer requests fail with -E2BIG.
	MaxLength = 1 << 30

	stateOpen    = 0
	stateStopped = 1
)

// queueHeader mirrors megaio_queue_header.
type queueHeader struct {
	magic             uint64
	abiVersion        uint32
	headerSize        uint32
	slotSize          uint32
	completionSize    uint32
	capacity          uint32
	completions       uint32
	firstTicket       uint64
	slotsOffset       uint64
	completionsOffset uint64
	flags             uint32
	_                 uint32
	// line 1: written by the loop when it starts and stops
	state uint32 // stored (atomically) after claimHead
	_     uint32
	_     [7]uint64
	// line 2: written by the loop as its claims advance (L1)
	claimHead uint64 // every ticket below it was claimed (L1)
	_         [7]uint64
	// line 3: written by the loop, read by people
	badIDs     uint64 // requests dropped for a completion id out of range
	lastBadSeq uint64
	_          [6]uint64
}

// requestSlot mirrors megaio_request.
type requestSlot struct {
	seq        uint64 // ticket+1, stored last by the producer (P4)
	op         Op
	flags      uint16
	file       uint32
	dest       uint32
	completion uint32 // where the loop writes the result
	fileOffset uint64
	destOffset uint64
	length     uint64
	tag        uint64
	reserved1  uint64
}

// completion mirrors megaio_completion.
type completion struct {
	result int64
	done   uint64 // ticket+1, stored last by the loop (L3)
}

// producerSide mirrors megaio_producer_side.
type producerSide struct {
	nextTicket  uint64
	capacity    uint32
	completions uint32
	_           [6]uint64
	claimSeen   uint64 // a claim_head producers saw; only grows
	_           [7]uint64
}

// Op is a request's operation.
type Op uint16

// Operations, as in include/megaio.h; what each is to the loop is its row
// in ops.go.
const (
	OpNop   Op = 0 // completes with 0
	OpRead  Op = 1 // file -> destination
	OpWrite Op = 2 // destination -> file
	OpFence Op = 3 // completes after every request claimed before it
	OpFsync Op = 4 // fdatasync of the file
	numOps     = 5
)

// Request is what a producer asks for. Handles come from the loop's
// RegisterFile and AddDestination.
type Request struct {
	Op         Op
	File       FileHandle
	Dest       DestHandle
	FileOffset uint64
	DestOffset uint64
	Length     uint64
	Tag        uint64 // the producer's own; the loop ignores it
}

// Result is a request's result word: bytes transferred (>= 0) or a negative
// errno. A READ's byte count below its length means EOF.
type Result int64

// Err returns the errno of a failed request (errors.Is(err, unix.EBADF)
// works), or nil.
func (r Result) Err() error {
	if r < 0 {
		return unix.Errno(-r)
	}
	return nil
}

// Ticket names one request of a queue: its ticket number and the
// completion id its result goes to.
type Ticket struct {
	n  uint64
	id uint32
}

// QueueConfig sizes a queue.
type QueueConfig struct {
	// Capacity is the number of request slots, a power of two (default
	// 4096): the most requests producers can have published and the loop
	// not yet claimed. A slot is free again once the loop has claimed its
	// request, however long the IO then takes.
	Capacity uint32
	// Completions is the number of completion ids (default the larger of
	// Capacity and 4096, at most 2^24): the most requests that can be in
	// flight, from publication until their issuers collect the result.
	Completions uint32
	// FirstTicket is the first ticket producers take (default 0). Tests
	// start just below 2^32 or 2^64 to exercise wrap-around.
	FirstTicket uint64
}

// Queue is the request queue in page-aligned host memory: the header, the
// request slots and the completions of include/megaio.h. A loop serves it;
// producers publish into it.
type Queue struct {
	mem   []byte // whole mapping
	hdr   *queueHeader
	slots []requestSlot
	comps []completion
	mask  uint64
	owned bool // mem was mapped by NewQueue

	// head is the next ticket the loop claims (L1). Only the loop serving
	// the queue touches it; it outlives a Stop so a restart resumes there.
	head uint64
	// claimPublished is the claim_head last stored in the header; the loop
	// serving the queue owns it too.
	claimPublished uint64

	wake    atomic.Pointer[waker]    // the attached loop's, for host producers to wake it from deep idle
	waiters atomic.Pointer[[]waiter] // the host producer's, for the loop to wake goroutines in Wait

	mu     sync.Mutex
	loop   *Loop         // the loop attached, if any
	host   *HostProducer // the host producer side, once asked for
	closed bool
}

// NewQueue maps and initialises a queue.
func NewQueue(cfg QueueConfig) (*Queue, error) {
	if cfg.Capacity == 0 {
		cfg.Capacity = 4096
	}
	if cfg.Completions == 0 {
		cfg.Completions = max(cfg.Capacity, 4096)
	}
	c := cfg.Capacity
	if c < minCapacity || c > maxCapacity || c&(c-1) != 0 {
		return nil, configError("queue capacity %d: want a power of two in [%d, %d]", c, minCapacity, maxCapacity)
	}
	if cfg.Completions > maxCompletions {
		return nil, configError("queue completions %d: want 1 to %d", cfg.Completions, maxCompletions)
	}
	size := queueSize(c, cfg.Completions)
	mem, err := mapAnonymous(size, false)
	if err != nil {
		return nil, errorf("megaio: mapping a %d-byte queue: %w", size, err)
	}
	h := (*queueHeader)(unsafe.Pointer(&mem[0]))
	*h = queueHeader{
		magic: abiMagic, abiVersion: abiVersion, headerSize: headerSize, slotSize: slotSize,
		completionSize: completionSize, capacity: c, completions: cfg.Completions, firstTicket: cfg.FirstTicket,
		slotsOffset: headerSize, completionsOffset: headerSize + uint64(c)*slotSize, claimHead: cfg.FirstTicket,
	}
	q, err := AttachQueue(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	q.owned = true
	for s := range q.slots {
		q.slots[s].seq = initialSeq(cfg.FirstTicket, uint64(c), uint64(s))
	}
	for i := range q.comps {
		q.comps[i].done = cfg.FirstTicket // megaio_initial_done
	}
	return q, nil
}

// AttachQueue checks a queue that was initialised elsewhere (by NewQueue in
// another process sharing the memory, say) and returns a Queue over it. The
// memory must stay mapped until the Queue is closed. It fails with
// ErrBadQueue when the magic, ABI version (a version 1 queue is refused),
// sizes or capacity do not match.
func AttachQueue(mem []byte) (*Queue, error) {
	if len(mem) < headerSize || uintptr(unsafe.Pointer(&mem[0]))%64 != 0 {
		return nil, errorf("%w: %d bytes, or not 64-byte aligned", ErrBadQueue, len(mem))
	}
	h := (*queueHeader)(unsafe.Pointer(&mem[0]))
	c, nc := h.capacity, h.completions
	switch {
	case h.magic == abiMagic-1<<56 && h.abiVersion == 1: // "MEGIOEQ1"
		return nil, errorf("%w: an ABI version 1 queue; this library speaks version %d (rebuild the producers with this include/megaio.h)",
			ErrBadQueue, abiVersion)
	case h.magic != abiMagic:
		return nil, errorf("%w: magic %#x, want %#x", ErrBadQueue, h.magic, uint64(abiMagic))
	case h.abiVersion != abiVersion:
		return nil, errorf("%w: ABI version %d, this library speaks %d", ErrBadQueue, h.abiVersion, abiVersion)
	case h.headerSize != headerSize || h.slotSize != slotSize || h.completionSize != completionSize:
		return nil, errorf("%w: sizes header %d slot %d completion %d, want %d %d %d", ErrBadQueue,
			h.headerSize, h.slotSize, h.completionSize, headerSize, slotSize, completionSize)
	case c < minCapacity || c > maxCapacity || c&(c-1) != 0:
		return nil, errorf("%w: capacity %d is not a power of two in [%d, %d]", ErrBadQueue, c, minCapacity, maxCapacity)
	case nc < 1 || nc > maxCompletions:
		return nil, errorf("%w: %d completions, want 1 to %d", ErrBadQueue, nc, maxCompletions)
	case uint64(len(mem)) < uint64(queueSize(c, nc)) || h.slotsOffset != headerSize ||
		h.completionsOffset != headerSize+uint64(c)*slotSize:
		return nil, errorf("%w: %d bytes or offsets do not fit capacity %d and %d completions", ErrBadQueue,
			len(mem), c, nc)
	}
	head := atomic.LoadUint64(&h.claimHead)
	q := &Queue{mem: mem, hdr: h, mask: uint64(c) - 1, head: head, claimPublished: head}
	q.slots = unsafe.Slice((*requestSlot)(unsafe.Pointer(&mem[h.slotsOffset])), c)
	q.comps = unsafe.Slice((*completion)(unsafe.Pointer(&mem[h.completionsOffset])), nc)
	return q, nil
}

func queueSize(capacity, completions uint32) int {
	return headerSize + int(capacity)*slotSize + int(completions)*completionSize
}

// initialSeq is megaio_initial_seq: the seq of slot s before any ticket
// used it, as if the lap before firstTicket had been claimed.
func initialSeq(firstTicket, capacity, s uint64) uint64 {
	return firstTicket + ((s - firstTicket) & (capacity - 1)) - capacity + 1
}

// publishClaimHead stores the loop's head as claim_head (L1, release):
// the slots of every ticket below it are free again. The loop serving the
// queue calls it.
func (q *Queue) publishClaimHead() {
	atomic.StoreUint64(&q.hdr.claimHead, q.head)
	q.claimPublished = q.head
}

// ringFull is megaio_ring_full: whether ticket t's slot is still unclaimed
// from the lap before, given a claim head.
func ringFull(t, claimHead, capacity uint64) bool { return int64(t-claimHead) >= int64(capacity) }

// Capacity is the number of slots.
func (q *Queue) Capacity() int { return len(q.slots) }

// Memory is the queue's memory, to register with a GPU driver or to hand to
// producers written in C (megaio_attach in include/megaio.h).
func (q *Queue) Memory() []byte { return q.mem }

// Close unmaps the queue. It fails with ErrInUse while a loop is attached.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	if q.loop != nil {
		return errorf("%w: close the queue's loop first", ErrInUse)
	}
	q.closed = true
	var err error
	if q.host != nil {
		err = unix.Munmap(q.host.mem)
	}
	if q.owned {
		if e := unix.Munmap(q.mem); err == nil {
			err = e
		}
	}
	return err
}

func (q *Queue) attach(l *Loop) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return errorf("%w: the queue", ErrClosed)
	case q.loop != nil:
		return errorf("%w: the queue already has a loop; close it first", ErrInUse)
	}
	q.loop = l
	q.wake.Store(l.wk)
	return nil
}

func (q *Queue) detach() {
	q.mu.Lock()
	q.loop = nil
	q.wake.Store(nil)
	q.mu.Unlock()
}

// HostProducer is the producer side of a queue for host threads
// (megaio_producer_side, in host memory) together with a pool of the
// queue's completion ids. Any number of goroutines may use it at once. A
// queue has one producer side: do not mix host producers and GPU producers
// on one queue.
//
// No goroutine waits for another. Submit waits only for the loop to claim
// requests (when the ring is full), Wait only for the loop to complete its
// own request. Completion ids are the one thing goroutines share: Submit
// fails with ErrBusy when every id is held by a request not yet collected,
// rather than wait for another goroutine to collect one; Do, which holds no
// id while it waits, waits for one.
type HostProducer struct {
	q       *Queue
	mem     []byte
	side    *producerSide
	ids     *idPool
	waiters []waiter // by completion id: where Wait parks (the loop wakes it)

	// Goroutines blocked in a futex (waitFutex) and how many may be: each
	// holds an OS thread while it waits, as a goroutine in os.File.ReadAt
	// does, so only the first 64 (or GOMAXPROCS, if more) wait that way and
	// the rest park in the Go scheduler. 64 rather than GOMAXPROCS: with 2,
	// 8 goroutines reading 4 KiB O_DIRECT took 43 µs a read against 35.
	futexWaiters atomic.Int32
	maxFutex     int32
}

// waiter is where a goroutine in Wait blocks on one completion id. With
// the loop it is a Dekker pair: Wait stores waiting (parkedChan or
// parkedFutex), then polls done; the loop stores done, then swaps waiting
// to 0 and wakes what it found: a send on ch (never blocking: ch holds one
// token), or seq++ and FUTEX_WAKE. Either Wait sees done or the loop sees
// waiting. A futex waiter reads seq before it stores waiting, so a wake
// between its poll and its FUTEX_WAIT makes the wait return at once.
type waiter struct {
	waiting atomic.Uint32
	seq     atomic.Uint32 // the futex word
	ch      atomic.Pointer[chan struct{}]
}

const (
	parkedChan  = 1 // parked in the Go scheduler, on ch
	parkedFutex = 2 // blocked in FUTEX_WAIT on seq
)

// wake wakes the goroutine waiting on w, if any. The loop calls it after it
// stores a completion, and for every id when it stops.
func (w *waiter) wake() {
	if w.waiting.Load() == 0 {
		return
	}
	switch w.waiting.Swap(0) {
	case parkedChan:
		if ch := w.ch.Load(); ch != nil {
			select {
			case *ch <- struct{}{}:
			default: // a token is already there
			}
		}
	case parkedFutex:
		w.seq.Add(1)
		futexWake(&w.seq, 1)
	}
}

// HostProducer returns the queue's host producer side, creating it on the
// first call. C producers use the same memory (Memory) through
// megaio_host_submit and megaio_host_wait, with completion ids from
// ReserveCompletions.
func (q *Queue) HostProducer() (*HostProducer, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, errorf("%w: the queue", ErrClosed)
	}
	if q.host != nil {
		return q.host, nil
	}
	mem, err := mapAnonymous(int(unsafe.Sizeof(producerSide{})), false)
	if err != nil {
		return nil, errorf("megaio: mapping the host producer side: %w", err)
	}
	p := &HostProducer{q: q, mem: mem, side: q.initProducerSide(mem), ids: newIDPool(len(q.comps)),
		waiters: make([]waiter, len(q.comps)), maxFutex: int32(max(runtime.GOMAXPROCS(0), 64))}
	q.host = p
	q.waiters.Store(&p.waiters)
	return p, nil
}

// DeviceProducerSide returns the initial bytes of a producer side for this
// queue (megaio_producer_side): copy them into device memory for GPU
// producers (include/megaio_device.cuh). A queue has one producer side; do
// not also use its HostProducer. GPU threads choose their completion ids
// themselves (megaio_dev_thread_cid and its kin).
func (q *Queue) DeviceProducerSide() []byte {
	b := make([]byte, unsafe.Sizeof(producerSide{}))
	q.initProducerSide(b)
	return b
}

// initProducerSide writes a fresh producer side into b
// (megaio_producer_side_init): tickets go on from where the loop claims.
func (q *Queue) initProducerSide(b []byte) *producerSide {
	side := (*producerSide)(unsafe.Pointer(&b[0]))
	head := atomic.LoadUint64(&q.hdr.claimHead)
	*side = producerSide{nextTicket: head, capacity: uint32(len(q.slots)), completions: uint32(len(q.comps)),
		claimSeen: head}
	return side
}

// Memory is the producer side's memory (megaio_producer_side), for
// producers written in C. They must use completion ids from
// ReserveCompletions, so that no id is named by two requests at once.
func (p *HostProducer) Memory() []byte { return p.mem }

// ReserveCompletions takes n completion ids out of the producer's pool for
// C producers sharing Memory; Submit never hands them out until
// ReleaseCompletions returns them. It fails with ErrBusy when fewer than n
// are free.
func (p *HostProducer) ReserveCompletions(n int) ([]uint32, error) {
	ids := make([]uint32, 0, n)
	for len(ids) < n {
		id, ok := p.ids.get()
		if !ok {
			p.ReleaseCompletions(ids)
			return nil, errorf("%w: %d completion ids asked for, fewer are free", ErrBusy, n)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ReleaseCompletions gives ids from ReserveCompletions back, once no request
// naming them is in flight.
func (p *HostProducer) ReleaseCompletions(ids []uint32) {
	for _, id := range ids {
		p.ids.put(id)
	}
}

// Submit publishes r (P1, P3, P4) and returns its ticket. While the ring is
// full (the loop has not yet claimed the requests a lap back) it waits for
// the loop, spinning, then yielding, then sleeping. It fails with
// ErrStopped when the queue's loop has stopped, and with ErrBusy when every
// completion id is held by a request not yet collected (collect one with
// Wait or Poll, or size QueueConfig.Completions for the requests you keep in
// flight). Nothing is published on error.
func (p *HostProducer) Submit(r Request) (Ticket, error) {
	id, err := p.takeID()
	if err != nil {
		return Ticket{}, err
	}
	var w waitSteps
	for {
		t, err := p.submitWith(id, &r)
		switch {
		case err == nil:
			return t, nil
		case !errors.Is(err, ErrFull):
			p.ids.put(id)
			return t, err
		}
		w.step()
	}
}

// TrySubmit is Submit without waiting: it fails with ErrFull when the ring
// is full.
func (p *HostProducer) TrySubmit(r Request) (Ticket, error) {
	id, err := p.takeID()
	if err != nil {
		return Ticket{}, err
	}
	t, err := p.submitWith(id, &r)
	if err != nil {
		p.ids.put(id)
	}
	return t, err
}

// takeID takes a completion id from the pool, or fails with ErrBusy.
func (p *HostProducer) takeID() (uint32, error) {
	if id, ok := p.ids.get(); ok {
		return id, nil
	}
	return 0, errorf("%w: all %d completion ids are held by requests not yet collected", ErrBusy, len(p.q.comps))
}

// submitWith takes a ticket and publishes r with completion id id. On error
// the id stays the caller's.
func (p *HostProducer) submitWith(id uint32, r *Request) (Ticket, error) {
	t, err := p.takeTicket()
	if err != nil {
		return Ticket{}, err
	}
	// A plain store: whoever polls this ticket got it from us, and the
	// id's previous holder let go of it (Poll's compare-and-swap, then
	// put) before get handed it to us.
	p.ids.owner[id] = t + 1
	slot := &p.q.slots[t&p.q.mask] // P3: ours alone until we publish
	slot.op, slot.flags, slot.file, slot.dest, slot.completion = r.Op, 0, uint32(r.File), uint32(r.Dest), id
	slot.fileOffset, slot.destOffset, slot.length, slot.tag, slot.reserved1 = r.FileOffset, r.DestOffset, r.Length, r.Tag, 0
	atomic.StoreUint64(&slot.seq, t+1) // P4: publishes the fields above
	if w := p.q.wake.Load(); w != nil {
		w.wakeIfDeep() // a loop in deep idle claims it now, not a sleep later
	}
	return Ticket{n: t, id: id}, nil
}

// takeTicket is P1 (megaio_host_take_ticket): it takes the next ticket if
// its slot is free, and fails with ErrFull or ErrStopped otherwise.
func (p *HostProducer) takeTicket() (uint64, error) {
	q, side := p.q, p.side
	capacity := q.mask + 1
	n := atomic.LoadUint64(&side.nextTicket)
	if atomic.LoadUint32(&q.hdr.state) == stateStopped {
		return 0, ErrStopped
	}
	for {
		if seen := atomic.LoadUint64(&side.claimSeen); ringFull(n, seen, capacity) {
			// The cached claim head is a lap behind: read the loop's,
			// and raise the cache for the others.
			head := atomic.LoadUint64(&q.hdr.claimHead)
			for int64(head-seen) > 0 && !atomic.CompareAndSwapUint64(&side.claimSeen, seen, head) {
				seen = atomic.LoadUint64(&side.claimSeen)
			}
			if ringFull(n, head, capacity) {
				again := atomic.LoadUint64(&side.nextTicket)
				if again == n {
					return 0, errorf("%w: %d requests published and not yet claimed", ErrFull, capacity)
				}
				n = again // another goroutine took n: try the next
				continue
			}
		}
		if atomic.CompareAndSwapUint64(&side.nextTicket, n, n+1) {
			return n, nil
		}
		n = atomic.LoadUint64(&side.nextTicket)
	}
}

// Poll checks ticket t once (P5). When done it returns the result and the
// completion id goes back to the pool: do not poll t again (that fails with
// ErrUnknownTicket). It returns ErrStopped when the loop stopped without
// claiming t; the request stays published, so poll again after a loop
// starts on the queue.
func (p *HostProducer) Poll(t Ticket) (res Result, done bool, err error) {
	q := p.q
	if int(t.id) >= len(q.comps) || atomic.LoadUint64(&p.ids.owner[t.id]) != t.n+1 {
		return 0, false, errorf("%w: ticket %d (completion id %d)", ErrUnknownTicket, t.n, t.id)
	}
	c := &q.comps[t.id]
	if atomic.LoadUint64(&c.done) != t.n+1 {
		if atomic.LoadUint32(&q.hdr.state) != stateStopped {
			return 0, false, nil
		}
		head := atomic.LoadUint64(&q.hdr.claimHead)
		if atomic.LoadUint64(&c.done) != t.n+1 { // the loop stores done before it stops
			if int64(t.n-head) >= 0 {
				return 0, false, ErrStopped
			}
			return 0, false, nil
		}
	}
	res = Result(atomic.LoadInt64(&c.result))
	if !atomic.CompareAndSwapUint64(&p.ids.owner[t.id], t.n+1, 0) {
		return 0, false, errorf("%w: ticket %d was collected by another caller", ErrUnknownTicket, t.n)
	}
	p.ids.put(t.id)
	return res, true, nil
}

// Wait waits for ticket t and returns its result, or ErrStopped (see Poll).
// It spins, then yields, then sleeps in growing steps up to 50µs (a
// nanosleep: Go's timers cannot sleep less than about a millisecond), so a
// long wait leaves the CPU to the loop and the kernel. A goroutine locked to
// its OS thread should poll with Poll and sleep instead: yielding a locked
// goroutine makes the runtime hand its P to another thread and back.
func (p *HostProducer) Wait(t Ticket) (Result, error) {
	return p.WaitContext(context.Background(), t)
}

// WaitContext is Wait that gives up when ctx ends: it then returns an error
// wrapping ctx.Err(), and t stays valid (the request is still in flight;
// wait for it again, or poll it, to collect its result and free its
// completion id).
func (p *HostProducer) WaitContext(ctx context.Context, t Ticket) (Result, error) {
	var w waitSteps
	for i := 0; i < stepsBeforePark; i++ {
		res, done, err := p.Poll(t)
		if done || err != nil {
			return res, err
		}
		w.step()
	}
	pw := p.waiter(t.id)
	if p.futexWaiters.Add(1) <= p.maxFutex {
		defer p.futexWaiters.Add(-1)
		return p.waitFutex(ctx, t, pw)
	}
	p.futexWaiters.Add(-1)
	// Park until the loop completes the request (or stops): a goroutine per
	// request then costs the machine nothing while it waits.
	ch := *pw.ch.Load()
	for {
		pw.waiting.Store(parkedChan) // then look: the loop stores done, then looks at waiting
		res, done, err := p.Poll(t)
		if done || err != nil {
			pw.waiting.Store(0)
			return res, err
		}
		select {
		case <-ch: // a token left by an earlier wake-up only makes us look again
		case <-ctx.Done():
			pw.waiting.Store(0)
			return 0, errorf("megaio: waiting for ticket %d: %w", t.n, ctx.Err())
		}
	}
}

// waitFutex blocks the goroutine's thread in FUTEX_WAIT until the loop
// completes t. Why not park in the Go scheduler: the loop's goroutine wakes
// the parked one into its own P's next slot, and keeps running (it polls
// the queues before it sleeps), so another P steals it only after the
// scheduler's 3 µs usleep, which the default 50 µs timer slack stretches to
// about 55: measured, a 64 KiB tmpfs ReadAt took 130 µs parked and 14-19
// µs not parked. A futex wake costs the loop one system call and needs no
// P. ctx is looked at every millisecond while it can end.
func (p *HostProducer) waitFutex(ctx context.Context, t Ticket, pw *waiter) (Result, error) {
	recheck := 50 * time.Millisecond // not needed for correctness
	if ctx.Done() != nil {
		recheck = time.Millisecond
	}
	for {
		seq := pw.seq.Load()
		pw.waiting.Store(parkedFutex) // then look: the loop stores done, then looks at waiting
		res, done, err := p.Poll(t)
		if done || err != nil {
			pw.waiting.Store(0)
			return res, err
		}
		if err := ctx.Err(); err != nil {
			pw.waiting.Store(0)
			return 0, errorf("megaio: waiting for ticket %d: %w", t.n, err)
		}
		futexWait(&pw.seq, seq, recheck)
	}
}

// stepsBeforePark is how long Wait polls (waitSteps: spins, then yields)
// before it parks. Measured (BenchmarkGoroutinePerRequest, docs/BENCHMARKS.md):
// parking after the yields took a goroutine per request from 0.36x to
// 1.1x of one producer's throughput on O_DIRECT reads, and cost one
// producer collecting 32 tmpfs reads in order about 12%; sleeping 100 µs
// more before parking kept that 12% but halved the gain.
const stepsBeforePark = 2 * spinsBeforeYield

// waiter is completion id id's parking place, made on first use.
func (p *HostProducer) waiter(id uint32) *waiter {
	w := &p.waiters[id]
	if w.ch.Load() == nil {
		ch := make(chan struct{}, 1)
		w.ch.CompareAndSwap(nil, &ch) // the id is ours: no one else makes it
	}
	return w
}

// Do submits r and waits for its result. Unlike Submit it waits for a free
// completion id when all are taken: it holds none meanwhile, so it cannot
// be part of a cycle of goroutines waiting on each other.
func (p *HostProducer) Do(r Request) (Result, error) {
	return p.DoContext(context.Background(), r)
}

// DoContext is Do that gives up waiting when ctx ends, returning an error
// wrapping ctx.Err(). A request published before ctx ended still runs (a
// READ still writes its destination); a goroutine collects and drops its
// result, so its completion id comes back.
func (p *HostProducer) DoContext(ctx context.Context, r Request) (Result, error) {
	var w waitSteps
	for {
		if err := ctx.Err(); err != nil {
			return 0, errorf("megaio: %w", err)
		}
		t, err := p.Submit(r)
		if errors.Is(err, ErrBusy) {
			w.step()
			continue
		}
		if err != nil {
			return 0, err
		}
		res, err := p.WaitContext(ctx, t)
		if err != nil && ctx.Err() != nil {
			go p.Wait(t)
		}
		return res, err
	}
}

// spinsBeforeYield bounds busy-waiting before a producer yields its P: on a
// machine with fewer cores than producers, spinning alone starves the loop.
const spinsBeforeYield = 64

// waitSteps is how host producers wait: spinsBeforeYield polls, as many
// yields, then nanosleeps growing from 1µs to 50µs. (Wait parks after a
// few of the sleeps: stepsBeforePark.)
type waitSteps struct {
	i     int
	sleep time.Duration
}

func (w *waitSteps) step() {
	switch w.i++; {
	case w.i <= spinsBeforeYield:
	case w.i <= 2*spinsBeforeYield:
		runtime.Gosched()
	default:
		w.sleep = min(max(2*w.sleep, time.Microsecond), 50*time.Microsecond)
		ts := unix.NsecToTimespec(int64(w.sleep))
		unix.Nanosleep(&ts, nil)
	}
}

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

// mapBuffer maps size bytes of zeroed, populated memory for IO: with
// hugetlb, 2 MiB pages from the reserved pool (MAP_HUGETLB; size rounded
// up to them); otherwise it asks for transparent huge pages before the
// memory is populated (MADV_HUGEPAGE, which the kernel honours in its
// default "madvise" mode). Fewer, larger physically contiguous runs mean a
// large READ takes fewer DMA descriptors: on a virtio disk without indirect
// descriptors a 1 MiB READ into 4 KiB pages is split and re-issued
// (docs/BENCHMARKS.md).
func mapBuffer(size int, hugetlb bool) ([]byte, error) {
	if hugetlb || size < 1<<21 {
		return mapAnonymous(size, hugetlb)
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	unix.Madvise(mem, unix.MADV_HUGEPAGE)                   // EINVAL where THP is off: small pages, as before
	if unix.Madvise(mem, unix.MADV_POPULATE_WRITE) != nil { // Linux 5.14+
		for i := 0; i < len(mem); i += pageSize {
			mem[i] = 0 // fault every page in now, not during the first READ
		}
	}
	return mem, nil
}

// pageSize is the base page size (mapBuffer populates page by page where
// MADV_POPULATE_WRITE is missing).
var pageSize = unix.Getpagesize()

// mapAnonymous maps size bytes of zeroed, page-aligned, populated memory.
// With hugepages it asks for 2 MiB pages (size rounded up to them).
func mapAnonymous(size int, hugepages bool) ([]byte, error) {
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_POPULATE
	if hugepages {
		flags |= unix.MAP_HUGETLB
		size = (size + 1<<21 - 1) &^ (1<<21 - 1)
	}
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, flags)
}

// ceilPow2 rounds n up to a power of two (n >= 1).
func ceilPow2(n uint32) uint32 {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len32(n-1)
}
