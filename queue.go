package megaio

import (
	"fmt"
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
// the step names P1..P6 and L1..L3 below refer to it.
const (
	abiMagic       = 0x3151454f4947454d
	abiVersion     = 1
	headerSize     = 128
	slotSize       = 64
	completionSize = 16
	minCapacity    = 2
	maxCapacity    = 1 << 20

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
	flags             uint32
	firstTicket       uint64
	slotsOffset       uint64
	completionsOffset uint64
	_                 uint64
	// line 1: written by the loop
	state    uint32 // stored (atomically) after stopHead
	_        uint32
	stopHead uint64
	_        [6]uint64
}

// requestSlot mirrors megaio_request.
type requestSlot struct {
	seq        uint64 // ticket+1, stored last by the producer (P4)
	op         Op
	flags      uint16
	file       uint32
	dest       uint32
	reserved0  uint32
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

// producerSideHeader mirrors megaio_producer_side; capacity turn words follow.
type producerSideHeader struct {
	nextTicket uint64
	capacity   uint32
	_          uint32
	_          [6]uint64
}

// Op is a request's operation.
type Op uint16

// Operations, as in include/megaio.h.
const (
	OpNop   Op = 0 // completes with 0
	OpRead  Op = 1 // file -> destination
	OpWrite Op = 2 // destination -> file
	OpFence Op = 3 // completes after every request claimed before it
	OpFsync Op = 4 // fdatasync of the file
	numOps     = 5
)

func (o Op) String() string {
	switch o {
	case OpNop:
		return "NOP"
	case OpRead:
		return "READ"
	case OpWrite:
		return "WRITE"
	case OpFence:
		return "FENCE"
	case OpFsync:
		return "FSYNC"
	}
	return fmt.Sprintf("Op(%d)", uint16(o))
}

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

// Ticket names one request of a queue.
type Ticket uint64

// QueueConfig sizes a queue.
type QueueConfig struct {
	// Capacity is the number of slots, a power of two (default 4096): the
	// most requests producers can have published and not yet collected.
	Capacity uint32
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
	c := cfg.Capacity
	if c < minCapacity || c > maxCapacity || c&(c-1) != 0 {
		return nil, configError("queue capacity %d: want a power of two in [%d, %d]", c, minCapacity, maxCapacity)
	}
	size := queueSize(c)
	mem, err := mapAnonymous(size, false)
	if err != nil {
		return nil, fmt.Errorf("megaio: mapping a %d-byte queue: %w", size, err)
	}
	h := (*queueHeader)(unsafe.Pointer(&mem[0]))
	*h = queueHeader{
		magic: abiMagic, abiVersion: abiVersion, headerSize: headerSize, slotSize: slotSize,
		completionSize: completionSize, capacity: c, firstTicket: cfg.FirstTicket,
		slotsOffset: headerSize, completionsOffset: headerSize + uint64(c)*slotSize,
	}
	q, err := AttachQueue(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	q.owned = true
	for s := uint64(0); s < uint64(c); s++ {
		q.slots[s].seq = initialSeq(cfg.FirstTicket, uint64(c), s)
		q.comps[s].done = q.slots[s].seq
	}
	return q, nil
}

// AttachQueue checks a queue that was initialised elsewhere (by NewQueue in
// another process sharing the memory, say) and returns a Queue over it. The
// memory must stay mapped until the Queue is closed. It fails with
// ErrBadQueue when the magic, ABI version, sizes or capacity do not match.
func AttachQueue(mem []byte) (*Queue, error) {
	if len(mem) < headerSize || uintptr(unsafe.Pointer(&mem[0]))%64 != 0 {
		return nil, fmt.Errorf("%w: %d bytes, or not 64-byte aligned", ErrBadQueue, len(mem))
	}
	h := (*queueHeader)(unsafe.Pointer(&mem[0]))
	c := h.capacity
	switch {
	case h.magic != abiMagic:
		return nil, fmt.Errorf("%w: magic %#x, want %#x", ErrBadQueue, h.magic, uint64(abiMagic))
	case h.abiVersion != abiVersion:
		return nil, fmt.Errorf("%w: ABI version %d, this library speaks %d", ErrBadQueue, h.abiVersion, abiVersion)
	case h.headerSize != headerSize || h.slotSize != slotSize || h.completionSize != completionSize:
		return nil, fmt.Errorf("%w: sizes header %d slot %d completion %d, want %d %d %d", ErrBadQueue,
			h.headerSize, h.slotSize, h.completionSize, headerSize, slotSize, completionSize)
	case c < minCapacity || c > maxCapacity || c&(c-1) != 0:
		return nil, fmt.Errorf("%w: capacity %d is not a power of two in [%d, %d]", ErrBadQueue, c, minCapacity, maxCapacity)
	case uint64(len(mem)) < uint64(queueSize(c)) || h.slotsOffset != headerSize ||
		h.completionsOffset != headerSize+uint64(c)*slotSize:
		return nil, fmt.Errorf("%w: %d bytes or offsets do not fit capacity %d", ErrBadQueue, len(mem), c)
	}
	q := &Queue{mem: mem, hdr: h, mask: uint64(c) - 1, head: h.firstTicket}
	q.slots = unsafe.Slice((*requestSlot)(unsafe.Pointer(&mem[h.slotsOffset])), c)
	q.comps = unsafe.Slice((*completion)(unsafe.Pointer(&mem[h.completionsOffset])), c)
	if atomic.LoadUint32(&h.state) == stateStopped {
		q.head = h.stopHead
	}
	return q, nil
}

func queueSize(capacity uint32) int {
	return headerSize + int(capacity)*(slotSize+completionSize)
}

// initialSeq is megaio_initial_seq: the seq (and done) of slot s before any
// ticket used it, as if the lap before firstTicket had completed.
func initialSeq(firstTicket, capacity, s uint64) uint64 {
	return firstTicketOfSlot(firstTicket, capacity, s) - capacity + 1
}

func firstTicketOfSlot(firstTicket, capacity, s uint64) uint64 {
	return firstTicket + ((s - firstTicket) & (capacity - 1))
}

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
		return fmt.Errorf("%w: close the queue's loop first", ErrInUse)
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
		return fmt.Errorf("%w: the queue", ErrClosed)
	case q.loop != nil:
		return fmt.Errorf("%w: the queue already has a loop; close it first", ErrInUse)
	}
	q.loop = l
	return nil
}

func (q *Queue) detach() {
	q.mu.Lock()
	q.loop = nil
	q.mu.Unlock()
}

// HostProducer is the producer side of a queue for host threads: the ticket
// counter and turn words of megaio_producer_side, in host memory. Any number
// of goroutines may use it at once. A queue has one producer side: do not
// mix host producers and GPU producers on one queue.
//
// Liveness: a goroutine that keeps several requests in flight may block in
// Submit (P2) waiting for a slot whose previous ticket belongs to another
// goroutine, which is itself blocked in Submit and so cannot collect it:
// each waits for the other (megaio.h, "Liveness"). Submit breaks that cycle
// by collecting a completed ticket on its issuer's behalf: it keeps the
// result aside and hands the slot on, and the issuer's Poll or Wait returns
// the kept result. This is off once Memory has been handed to C producers,
// which collect with plain stores of their own.
type HostProducer struct {
	q      *Queue
	mem    []byte
	side   *producerSideHeader
	turns  []uint64
	shared atomic.Bool // Memory was handed out: no collecting on others' behalf

	keptMu sync.Mutex
	kept   map[uint64]Result // results collected on their issuers' behalf, by ticket
}

// HostProducer returns the queue's host producer side, creating it on the
// first call. C producers use the same memory (Memory) through
// megaio_host_submit and megaio_host_wait.
func (q *Queue) HostProducer() (*HostProducer, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, fmt.Errorf("%w: the queue", ErrClosed)
	}
	if q.host != nil {
		return q.host, nil
	}
	mem, err := mapAnonymous(producerSideSize(len(q.slots)), false)
	if err != nil {
		return nil, fmt.Errorf("megaio: mapping the host producer side: %w", err)
	}
	p := &HostProducer{q: q, mem: mem}
	p.side, p.turns = q.initProducerSide(mem)
	q.host = p
	return p, nil
}

// DeviceProducerSide returns the initial bytes of a producer side for this
// queue (megaio_producer_side and its turn words): copy them into device
// memory for GPU producers (include/megaio_device.cuh). A queue has one
// producer side; do not also use its HostProducer.
func (q *Queue) DeviceProducerSide() []byte {
	b := make([]byte, producerSideSize(len(q.slots)))
	q.initProducerSide(b)
	return b
}

func producerSideSize(capacity int) int { return int(unsafe.Sizeof(producerSideHeader{})) + capacity*8 }

// initProducerSide writes a fresh producer side into b
// (megaio_producer_side_init).
func (q *Queue) initProducerSide(b []byte) (*producerSideHeader, []uint64) {
	c := uint64(len(q.slots))
	hdr := int(unsafe.Sizeof(producerSideHeader{}))
	side := (*producerSideHeader)(unsafe.Pointer(&b[0]))
	first := q.hdr.firstTicket
	side.nextTicket, side.capacity = first, uint32(c)
	turns := unsafe.Slice((*uint64)(unsafe.Pointer(&b[hdr])), c)
	for s := range turns {
		turns[s] = firstTicketOfSlot(first, c, uint64(s))
	}
	return side, turns
}

// Memory is the producer side's memory (megaio_producer_side and its turn
// words), for producers written in C.
func (p *HostProducer) Memory() []byte { p.shared.Store(true); return p.mem }

// spinsBeforeYield bounds busy-waiting before a producer yields its P: on a
// machine with fewer cores than producers, spinning alone starves the loop.
const spinsBeforeYield = 64

// Submit publishes r (P1-P4) and returns its ticket. It waits while the
// slot's previous issuer has not yet collected its result. It fails with
// ErrStopped, taking no ticket, when the queue's loop has stopped.
func (p *HostProducer) Submit(r Request) (Ticket, error) {
	if atomic.LoadUint32(&p.q.hdr.state) == stateStopped {
		return 0, ErrStopped
	}
	return p.publish(&requestSlot{op: r.Op, file: uint32(r.File), dest: uint32(r.Dest), fileOffset: r.FileOffset,
		destOffset: r.DestOffset, length: r.Length, tag: r.Tag}), nil
}

// publish takes a ticket and publishes every field of req but seq.
func (p *HostProducer) publish(req *requestSlot) Ticket {
	q := p.q
	t := atomic.AddUint64(&p.side.nextTicket, 1) - 1
	s := t & q.mask
	for i := 0; ; i++ {
		prev := atomic.LoadUint64(&p.turns[s])
		if prev == t {
			break
		}
		if i >= spinsBeforeYield {
			// The slot's previous ticket is not collected yet: if it is
			// complete, collect it for its issuer, which may be blocked
			// here too (see HostProducer).
			if prev == t-q.mask-1 && !p.shared.Load() && atomic.LoadUint64(&q.comps[s].done) == prev+1 {
				if res, ok := p.collect(s, prev); ok {
					p.keptMu.Lock()
					if p.kept == nil {
						p.kept = map[uint64]Result{}
					}
					p.kept[prev] = res
					p.keptMu.Unlock()
					continue
				}
			}
			runtime.Gosched()
		}
	}
	slot := &q.slots[s]
	slot.op, slot.flags, slot.file, slot.dest, slot.reserved0 = req.op, req.flags, req.file, req.dest, req.reserved0
	slot.fileOffset, slot.destOffset, slot.length = req.fileOffset, req.destOffset, req.length
	slot.tag, slot.reserved1 = req.tag, req.reserved1
	atomic.StoreUint64(&slot.seq, t+1) // P4: publishes the fields above
	return Ticket(t)
}

// Poll checks ticket t once (P5). When done it returns the result and hands
// the slot on (P6): do not poll t again. It returns ErrStopped when the loop
// stopped without claiming t; the request stays published, so poll again
// after a loop starts on the queue.
func (p *HostProducer) Poll(t Ticket) (res Result, done bool, err error) {
	q := p.q
	s := uint64(t) & q.mask
	c := &q.comps[s]
	if atomic.LoadUint64(&c.done) == uint64(t)+1 {
		if res, ok := p.collect(s, uint64(t)); ok {
			return res, true, nil
		}
		return p.takeKept(uint64(t)), true, nil // collected by a Submit meanwhile
	}
	if atomic.LoadUint64(&p.turns[s]) != uint64(t) {
		return p.takeKept(uint64(t)), true, nil // collected by a Submit, slot handed on
	}
	if atomic.LoadUint32(&q.hdr.state) == stateStopped {
		stopHead := q.hdr.stopHead
		if atomic.LoadUint64(&c.done) != uint64(t)+1 && int64(uint64(t)-stopHead) >= 0 {
			return 0, false, ErrStopped
		}
	}
	return 0, false, nil
}

// collect reads ticket u's result (its completion was seen done) and hands
// slot s on (P5, P6) unless someone else collected u first: the turn moves
// by compare-and-swap, so exactly one collector wins.
func (p *HostProducer) collect(s, u uint64) (Result, bool) {
	res := Result(atomic.LoadInt64(&p.q.comps[s].result))
	return res, atomic.CompareAndSwapUint64(&p.turns[s], u, u+p.q.mask+1)
}

// takeKept returns the result a Submit collected for ticket u, waiting the
// moment it may take that Submit to file it.
func (p *HostProducer) takeKept(u uint64) Result {
	for {
		p.keptMu.Lock()
		res, ok := p.kept[u]
		if ok {
			delete(p.kept, u)
		}
		p.keptMu.Unlock()
		if ok {
			return res
		}
		runtime.Gosched()
	}
}

// Wait waits for ticket t and returns its result, or ErrStopped (see Poll).
// It spins, then yields, then sleeps in growing steps up to 50µs (a
// nanosleep: Go's timers cannot sleep less than about a millisecond), so a
// long wait leaves the CPU to the loop and the kernel. A goroutine locked to
// its OS thread should poll with Poll and sleep instead: yielding a locked
// goroutine makes the runtime hand its P to another thread and back.
func (p *HostProducer) Wait(t Ticket) (Result, error) {
	sleep := time.Microsecond
	for i := 0; ; i++ {
		res, done, err := p.Poll(t)
		if done || err != nil {
			return res, err
		}
		switch {
		case i < spinsBeforeYield:
		case i < 2*spinsBeforeYield:
			runtime.Gosched()
		default:
			ts := unix.NsecToTimespec(int64(sleep))
			unix.Nanosleep(&ts, nil)
			sleep = min(2*sleep, 50*time.Microsecond)
		}
	}
}

// Do submits r and waits for its result.
func (p *HostProducer) Do(r Request) (Result, error) {
	t, err := p.Submit(r)
	if err != nil {
		return 0, err
	}
	return p.Wait(t)
}

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
