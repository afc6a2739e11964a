package megaio

import (
	"sync"
	"sync/atomic"
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
		return nil, errorf("mapping a %d-byte queue: %w", size, err)
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
