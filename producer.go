package megaio

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

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
		return nil, errorf("mapping the host producer side: %w", err)
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
			return 0, errorf("waiting for ticket %d: %w", t.n, ctx.Err())
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
			return 0, errorf("waiting for ticket %d: %w", t.n, err)
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
			return 0, errorf("%w", err)
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
