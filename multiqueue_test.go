package megaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQueuesFreedRecordsGoRound: when one queue's requests hold every
// record and fill its waiting list, a request of another queue waits for at
// most one freed record per queue served, not behind the flood's backlog.
// The flood's requests are 1-byte READs of a pipe, released one byte at a
// time, so the count is exact.
func TestQueuesFreedRecordsGoRound(t *testing.T) { forBackends(t, testQueuesFreedRecordsGoRound) }

func testQueuesFreedRecordsGoRound(t *testing.T, be BackendKind) {
	const records, backlog = 4, 24 // backlog: more than records + the waiting list
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be, MaxInflight: records}, 1<<16)
	_, ps := h.addQueues(1, QueueConfig{Capacity: 64})
	flood, trickle := h.p, ps[0]
	fh, w := h.pipe()
	path, data := patternFile(t, tmpfsDir(t), 4096, 3)
	file := h.register(path, os.O_RDONLY)

	var floods []Ticket
	for i := range backlog {
		tk, err := flood.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, DestOffset: uint64(8192 + i), Length: 1})
		if err != nil {
			t.Fatal(err)
		}
		floods = append(floods, tk)
	}
	eventually(t, "the flood to hold every record and fill its waiting list", func() bool {
		s := h.l.Stats()
		return s.Queues[0].Waited >= records && s.Queues[0].InFlight == 2*records
	})
	tk, err := trickle.Submit(Request{Op: OpRead, File: file, Dest: h.dest, Length: 4096})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the trickle's request to wait for a record", func() bool { return h.l.Stats().Queues[1].Waited == 1 })

	// Release the flood's READs one at a time. Once the loop has completed
	// the one released, it has also handed the freed record on (the same
	// cycle admits waiting requests): see whether the trickle's got it.
	released := 0
	for {
		if released == backlog {
			t.Fatal("every flood request was released and the trickle's request still waits")
		}
		if _, err := w.Write([]byte{byte(released)}); err != nil {
			t.Fatal(err)
		}
		released++
		eventually(t, "a flood READ to complete", func() bool { return h.l.Stats().Queues[0].Completed == uint64(released) })
		var waiting int
		h.l.exec(func(cy *cycle) error { waiting = cy.qs[1].waiting.len(); return nil })
		if waiting == 0 {
			break
		}
	}
	if res, err := trickle.Wait(tk); err != nil || res != 4096 || !bytes.Equal(h.buf.Bytes()[:4096], data) {
		t.Fatalf("the trickle's READ: %v, %v", res, err)
	}
	if released > 2 {
		t.Errorf("the trickle's request waited for %d freed records; with 2 queues served, want at most 2", released)
	}
	t.Logf("the trickle's request was served after %d freed record(s), with %d flood requests behind", released, backlog-released)
	for i := released; i < backlog; i++ {
		w.Write([]byte{byte(i)})
	}
	for i, tk := range floods {
		if res, err := flood.Wait(tk); err != nil || res != 1 {
			t.Fatalf("flood READ %d: %v, %v", i, res, err)
		}
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := h.l.Stats().Queues[1]; s.MaxOvertaken != uint64(released-1) || s.Completed != 1 {
		t.Errorf("the trickle's stats: %+v; want 1 completed, overtaken by %d", s, released-1)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestQueuesFloodAndTrickle: two queues flooded by many producers, with
// requests always waiting for a record, and one trickling a request at a
// time. The bound, in the loop's own terms: a trickle request is claimed in
// the first cycle after it is published (every queue is visited each
// cycle), and while it waits for a record at most one record goes to each
// other queue (MaxOvertaken <= 2 here), where one list for all queues
// would put it behind the floods' whole backlog (up to MaxInflight per
// queue). The floods too get a record at least every third one. The
// wall-clock figures are logged, not asserted.
func TestQueuesFloodAndTrickle(t *testing.T) { forBackends(t, testQueuesFloodAndTrickle) }

func testQueuesFloodAndTrickle(t *testing.T, be BackendKind) {
	const producers, each, trickles = 16, 4, 300
	h := newHarness(t, QueueConfig{Capacity: 256}, Config{Backend: be, MaxInflight: 16}, 1<<20)
	more, ps := h.addQueues(2, QueueConfig{Capacity: 256})
	floods := []*HostProducer{h.p, ps[0]}
	trickle := ps[1]
	_ = more
	path, data := patternFile(t, tmpfsDir(t), 1<<20, 5)
	fh := h.register(path, os.O_RDONLY)
	const size = 4096

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, producers+1)
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tks []Ticket
			for i := 0; !stop.Load(); i++ {
				for len(tks) < each {
					tk, err := floods[g%2].Submit(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i%128) * size,
						DestOffset: uint64(g) * 8 * size, Length: size})
					if err != nil {
						errs <- err
						return
					}
					tks = append(tks, tk)
				}
				if res, err := floods[g%2].Wait(tks[0]); err != nil || res != size {
					errs <- fmt.Errorf("flood READ: %v, %v", res, err)
					return
				}
				tks = tks[1:]
			}
			for _, tk := range tks {
				floods[g%2].Wait(tk)
			}
		}()
	}
	eventually(t, "the floods to wait for records", func() bool {
		s := h.l.Stats()
		return s.Queues[0].Waited > 100 && s.Queues[1].Waited > 100
	})
	dest := uint64(producers) * 8 * size
	for i := range trickles {
		off := uint64(i%200) * size
		res, err := trickle.Do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: off, DestOffset: dest, Length: size})
		if err != nil || res != size {
			t.Fatalf("trickle READ %d: %v, %v", i, res, err)
		}
		if !bytes.Equal(h.buf.Bytes()[dest:dest+size], data[off:off+size]) {
			t.Fatalf("trickle READ %d: wrong bytes", i)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := h.l.Stats()
	f, tr := s.Queues[0], s.Queues[2]
	t.Logf("flood 1: %d requests, %d waited for a record (overtaken at most %d), claim to completion p50 %v p99 %v; "+
		"trickle: %d requests, %d waited (overtaken at most %d), p50 %v p99 %v",
		f.Completed, f.Waited, f.MaxOvertaken, f.Latency.Percentile(50), f.Latency.Percentile(99),
		tr.Completed, tr.Waited, tr.MaxOvertaken, tr.Latency.Percentile(50), tr.Latency.Percentile(99))
	if tr.Completed != trickles || tr.Claimed != trickles || tr.InFlight != 0 {
		t.Errorf("trickle counters: %+v", tr)
	}
	if tr.Waited == 0 {
		t.Error("no trickle request waited for a record: the floods did not hold them all")
	}
	for k, qs := range s.Queues {
		if qs.MaxOvertaken > 2 {
			t.Errorf("queue %d: %d records in a row went to others while it waited; with 3 queues, want at most 2", k, qs.MaxOvertaken)
		}
	}
	if sum := s.Queues[0].Completed + s.Queues[1].Completed + tr.Completed; s.Completed != sum {
		t.Errorf("the loop completed %d, the queues %d", s.Completed, sum)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestQueuesFence: a FENCE orders its own queue and no other. Queue A's
// FENCE waits for A's blocked READ; queue B's FENCE, published after it,
// completes at once, as do B's requests around A's blocked one.
func TestQueuesFence(t *testing.T) { forBackends(t, testQueuesFence) }

func testQueuesFence(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<16)
	_, ps := h.addQueues(1, QueueConfig{Capacity: 64})
	a, b := h.p, ps[0]
	pipe, w := h.pipe()
	path := tmpfsDir(t) + "/fenced"
	if err := os.WriteFile(path, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	file := h.register(path, os.O_RDWR)
	copy(h.buf.Bytes(), bytes.Repeat([]byte("B"), 4096))

	blocked, err := a.Submit(Request{Op: OpRead, File: pipe, Dest: h.dest, DestOffset: 8192, Length: 1})
	if err != nil {
		t.Fatal(err)
	}
	fenceA, err := a.Submit(Request{Op: OpFence})
	if err != nil {
		t.Fatal(err)
	}
	// B: a WRITE, its FENCE, a READ back: all complete while A is blocked.
	for i, r := range []Request{
		{Op: OpWrite, File: file, Dest: h.dest, Length: 4096},
		{Op: OpFence},
		{Op: OpRead, File: file, Dest: h.dest, DestOffset: 16384, Length: 4096},
	} {
		res, err := b.Do(r)
		if err != nil || res < 0 {
			t.Fatalf("queue B request %d (%v): %v, %v", i, r.Op, res, err)
		}
	}
	if !bytes.Equal(h.buf.Bytes()[16384:16384+4096], h.buf.Bytes()[:4096]) {
		t.Error("queue B read back other bytes than it wrote")
	}
	time.Sleep(20 * time.Millisecond) // time for a wrong FENCE to complete: not a bound, the check below is
	if _, done, err := a.Poll(fenceA); err != nil || done {
		t.Fatalf("queue A's FENCE completed (%v) before A's READ: it must order its own queue", err)
	}
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if res, err := a.Wait(blocked); err != nil || res != 1 {
		t.Fatalf("A's READ: %v, %v", res, err)
	}
	if res, err := a.Wait(fenceA); err != nil || res != 0 {
		t.Fatalf("A's FENCE: %v, %v", res, err)
	}
}

// TestQueuesStopStartBusy: three queues, each with producers mixing READs
// and NOPs, across several Stops (some with a deadline) and Starts: every
// request gets its bytes, or -ECANCELED, or a refusal to publish, and
// every queue's accounting is whole after each Stop.
func TestQueuesStopStartBusy(t *testing.T) { forBackends(t, testQueuesStopStartBusy) }

func testQueuesStopStartBusy(t *testing.T, be BackendKind) {
	const size, rounds = 4096, 6
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be, MaxInflight: 32}, 1<<20)
	_, more := h.addQueues(2, QueueConfig{Capacity: 64})
	ps := append([]*HostProducer{h.p}, more...)
	path, data := patternFile(t, tmpfsDir(t), 1<<20, 9)
	fh := h.register(path, os.O_RDONLY)

	var stop atomic.Bool
	var served, cancelled, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for k, p := range ps {
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dest := uint64(k*3+g) * size
				for i := 0; !stop.Load(); i++ {
					r := Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i%256) * size, DestOffset: dest, Length: size}
					if i%3 == 0 {
						r = Request{Op: OpNop}
					}
					res, err := p.Do(r)
					switch {
					case errors.Is(err, ErrStopped):
						refused.Add(1)
						time.Sleep(100 * time.Microsecond)
					case err != nil:
						errs <- err
						return
					case res == -Result(unix.ECANCELED):
						cancelled.Add(1)
					case r.Op == OpNop && res == 0:
						served.Add(1)
					case res != size || !bytes.Equal(h.buf.Bytes()[dest:dest+size], data[r.FileOffset:r.FileOffset+size]):
						errs <- fmt.Errorf("queue %d READ: %v", k, res)
						return
					default:
						served.Add(1)
					}
				}
			}()
		}
	}
	for i := range rounds {
		time.Sleep(20 * time.Millisecond)
		var err error
		if i%2 == 0 {
			err = h.l.Stop(context.Background())
		} else {
			err = stopWithin(t, h.l, time.Millisecond)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop %d: %v", i, err)
		}
		if err := h.l.exec((*cycle).checkIdle); err != nil {
			t.Fatalf("after Stop %d: %v", i, err)
		}
		time.Sleep(5 * time.Millisecond)
		if err := h.l.Start(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d served, %d cancelled, %d refused at publication", served.Load(), cancelled.Load(), refused.Load())
	if served.Load() == 0 {
		t.Error("nothing was served")
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := h.l.Stats()
	var sum uint64
	for k, qs := range s.Queues {
		if qs.InFlight != 0 || qs.Completed+qs.BadIDs != qs.Claimed {
			t.Errorf("queue %d: %+v", k, qs)
		}
		sum += qs.Completed
	}
	if sum != s.Completed {
		t.Errorf("the queues completed %d, the loop %d", sum, s.Completed)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestQueueAddedWhileStopped: queues are added and detached only while the
// loop is stopped; requests published into a queue before it is added wait
// in its ring and are served from the next Start; a detached queue is
// served by the next loop it is given to, from its first unclaimed ticket.
func TestQueueAddedWhileStopped(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 16}, Config{}, 4096)
	q2, err := NewQueue(QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	if err := h.l.AddQueue(q2); !errors.Is(err, ErrRunning) {
		t.Fatalf("AddQueue while running: %v, want ErrRunning", err)
	}
	if err := h.l.DetachQueue(h.q); !errors.Is(err, ErrRunning) {
		t.Fatalf("DetachQueue while running: %v, want ErrRunning", err)
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2, err := q2.HostProducer()
	if err != nil {
		t.Fatal(err)
	}
	// Published before the queue has a loop: a new queue is open, and its
	// requests wait in the ring for the loop it is given to.
	early, err := p2.TrySubmit(Request{Op: OpNop})
	if err != nil {
		t.Fatalf("TrySubmit into a new queue: %v", err)
	}
	if err := h.l.AddQueue(q2); err != nil {
		t.Fatal(err)
	}
	if err := h.l.AddQueue(q2); !errors.Is(err, ErrInUse) {
		t.Fatalf("adding a queue twice: %v, want ErrInUse", err)
	}
	if got := h.l.Queues(); len(got) != 2 || got[0] != h.q || got[1] != q2 {
		t.Fatalf("Queues() = %v", got)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
	if res, err := p2.Wait(early); err != nil || res != 0 {
		t.Fatalf("the request published before AddQueue: %v, %v", res, err)
	}
	if res, err := p2.Do(Request{Op: OpNop}); err != nil || res != 0 {
		t.Fatalf("a NOP on the added queue: %v, %v", res, err)
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := h.l.Stats(); len(s.Queues) != 2 || s.Queues[1].Completed != 2 || s.Queues[1].Claimed != 2 {
		t.Fatalf("Stats.Queues = %+v", s.Queues)
	}

	// Detach q2; what is published into it now waits for the next loop.
	if err := h.l.DetachQueue(q2); err != nil {
		t.Fatal(err)
	}
	if err := h.l.DetachQueue(q2); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("detaching it again: %v, want ErrNotRegistered", err)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
	late := p2.publish(&requestSlot{op: OpNop})
	if res, err := h.p.Do(Request{Op: OpNop}); err != nil || res != 0 { // the loop goes on serving its first queue
		t.Fatalf("a NOP on the first queue: %v, %v", res, err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, done, _ := p2.Poll(late); done {
		t.Fatal("a detached queue's request was served")
	}
	l2, err := NewLoop(q2, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := l2.Start(); err != nil {
		t.Fatal(err)
	}
	if res, err := p2.Wait(late); err != nil || res != 0 {
		t.Fatalf("the detached queue's request on its next loop: %v, %v", res, err)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLoopWithoutQueue: a loop made without a queue refuses to start until
// one is added; Stats lists no queue.
func TestLoopWithoutQueue(t *testing.T) {
	l, err := NewLoop(nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Start(); !errors.Is(err, ErrConfig) {
		t.Fatalf("Start with no queue: %v, want ErrConfig", err)
	}
	if s := l.Stats(); len(s.Queues) != 0 {
		t.Fatalf("Stats.Queues = %v", s.Queues)
	}
	q, err := NewQueue(QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := l.AddQueue(q); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	p, _ := q.HostProducer()
	if res, err := p.Do(Request{Op: OpNop}); err != nil || res != 0 {
		t.Fatalf("NOP: %v, %v", res, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.AddQueue(q); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddQueue after Close: %v, want ErrClosed", err)
	}
}

// TestZeroAllocsQueues: serving requests of several queues allocates
// nothing in the steady state.
func TestZeroAllocsQueues(t *testing.T) { forBackends(t, testZeroAllocsQueues) }

func testZeroAllocsQueues(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 256}, Config{Backend: be}, 1<<20)
	_, more := h.addQueues(3, QueueConfig{Capacity: 256})
	ps := append([]*HostProducer{h.p}, more...)
	path, _ := patternFile(t, tmpfsDir(t), 1<<20, 12)
	fh := h.register(path, os.O_RDONLY)
	run := func() {
		for i := range 400 {
			p := ps[i%len(ps)]
			p.Do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i%200) * 4096, Length: 4096})
			p.Do(Request{Op: OpNop})
		}
	}
	run()
	if allocs := testing.AllocsPerRun(5, run); allocs >= 1 {
		t.Errorf("%.1f allocations per 800 requests over %d queues, want 0", allocs, len(ps))
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := h.l.Stats()
	for k, qs := range s.Queues {
		if qs.Completed < uint64(6*400/len(ps)) {
			t.Errorf("queue %d completed %d requests", k, qs.Completed)
		}
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}
