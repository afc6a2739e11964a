package megaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio/internal/cproducer"
)

// TestSlowRequestHoldsOnlyItself: a READ that never returns (a pipe nobody
// writes) holds its own completion and a record, never the ring: more than
// ten laps of the ring complete around it.
func TestSlowRequestHoldsOnlyItself(t *testing.T) { forBackends(t, testSlowRequestHoldsOnlyItself) }

func testSlowRequestHoldsOnlyItself(t *testing.T, be BackendKind) {
	const capacity, laps = 8, 12
	h := newHarness(t, QueueConfig{Capacity: capacity}, Config{Backend: be}, 4096)
	fh, w := h.pipe()
	slow, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 5})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		n := 0
		for ; n < capacity*laps; n++ {
			if res, err := h.p.Do(Request{Op: OpNop}); err != nil || res != 0 {
				break
			}
		}
		done <- n
	}()
	// A slow request that held the ring would stop the NOPs: nothing would
	// move until the pipe is written, and the watchdog would report it.
	if n := await(t, "NOPs around a blocked READ (a slow request must hold only itself)", done,
		loopMeters(h.l)...); n != capacity*laps {
		t.Fatalf("NOP %d of %d failed", n+1, capacity*laps)
	}
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if res, err := h.p.Wait(slow); err != nil || res != 5 {
		t.Fatalf("the slow READ: %v, %v; want 5", res, err)
	}
	if got := string(h.buf.Bytes()[:5]); got != "hello" {
		t.Errorf("the slow READ wrote %q", got)
	}
}

// TestCProducersManyInFlight: C producers that keep many tickets in flight
// and collect them in random order, far more tickets outstanding than the
// ring has slots, never wait on each other.
func TestCProducersManyInFlight(t *testing.T) { forBackends(t, testCProducersManyInFlight) }

func testCProducersManyInFlight(t *testing.T, be BackendKind) {
	const threads, per, depth = 4, 3000, 16
	h := newHarness(t, QueueConfig{Capacity: 8}, Config{Backend: be}, 4096)
	ids, err := h.p.ReserveCompletions(threads * depth)
	if err != nil {
		t.Fatal(err)
	}
	type out struct {
		n   uint64
		err error
	}
	done := make(chan out, 1)
	go func() {
		n, err := cproducer.RunMany(h.q.Memory(), h.p.Memory(), ids, threads, per, depth)
		done <- out{n, err}
	}()
	o := await(t, fmt.Sprintf("C producers with %d tickets in flight each on a ring of 8 (a deadlock stops the loop's counts)",
		depth), done, loopMeters(h.l)...)
	if o.err != nil || o.n != threads*per {
		t.Fatalf("%d of %d served: %v", o.n, threads*per, o.err)
	}
}

// TestManyProducerThreadsFewCores: eight C producer threads on a machine
// with fewer cores, each with a few tickets in flight: the waits back off
// (spin, then sched_yield), so the loop keeps its CPU and all complete.
func TestManyProducerThreadsFewCores(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		const threads, per, depth = 8, 600, 4
		h := newHarness(t, QueueConfig{Capacity: 8}, Config{Backend: be}, 4096)
		ids, err := h.p.ReserveCompletions(threads * depth)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		var n uint64
		go func() {
			var err error
			n, err = cproducer.RunMany(h.q.Memory(), h.p.Memory(), ids, threads, per, depth)
			done <- err
		}()
		if err := await(t, fmt.Sprintf("%d C producer threads", threads), done, loopMeters(h.l)...); err != nil ||
			n != threads*per {
			t.Fatalf("%d of %d served: %v", n, threads*per, err)
		}
	})
}

// TestBadCompletionID: a request naming a completion id outside the table
// is not run, is counted (Stats and the header's diagnosis line), and the
// loop goes on; the C and Go producer functions refuse such an id.
func TestBadCompletionID(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		h := newHarness(t, QueueConfig{Capacity: 8, Completions: 16}, Config{Backend: be}, 4096)
		path, _ := patternFile(t, tmpfsDir(t), 4096, 3)
		fh := h.register(path, os.O_RDWR)
		copy(h.buf.Bytes(), "must not reach the file")
		bad := h.p.publishWithID(&requestSlot{op: OpWrite, file: uint32(fh), dest: uint32(h.dest), length: 23}, 16)
		if got := h.do(Request{Op: OpNop}); got != 0 {
			t.Fatalf("NOP after the bad id = %d", got)
		}
		if err := stopLoop(t, h.l); err != nil {
			t.Fatal(err)
		}
		if st := h.l.Stats(); st.BadIDs != 1 || st.Completed != 1 || st.Requests[OpWrite] != 0 {
			t.Errorf("BadIDs %d, Completed %d, WRITEs %d; want 1, 1, 0", st.BadIDs, st.Completed, st.Requests[OpWrite])
		}
		if h.q.hdr.badIDs != 1 || h.q.hdr.lastBadSeq != bad+1 {
			t.Errorf("header: bad_ids %d, last_bad_seq %d; want 1, %d", h.q.hdr.badIDs, h.q.hdr.lastBadSeq, bad+1)
		}
		if b, _ := os.ReadFile(path); strings.HasPrefix(string(b), "must not") {
			t.Error("the request with a bad completion id was run")
		}
		if err := h.l.Start(); err != nil {
			t.Fatal(err)
		}
		if r := cproducer.TrySubmit(h.q.Memory(), h.p.Memory(), 16); r != -int(unix.EINVAL) {
			t.Errorf("megaio_host_try_submit with id 16 of 16 = %d, want -EINVAL", r)
		}
	})
}

// TestRingFull: with no loop claiming, a ring of 4 takes 4 tickets; then
// TrySubmit fails with ErrFull, megaio_host_try_submit with -EAGAIN, and
// nothing is published.
func TestRingFull(t *testing.T) {
	q, err := NewQueue(QueueConfig{Capacity: 4, FirstTicket: ^uint64(0) - 1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	p, _ := q.HostProducer()
	for i := 0; i < 4; i++ {
		if _, err := p.TrySubmit(Request{Op: OpNop}); err != nil {
			t.Fatalf("TrySubmit %d: %v", i, err)
		}
	}
	if _, err := p.TrySubmit(Request{Op: OpNop}); !errors.Is(err, ErrFull) {
		t.Fatalf("TrySubmit into a full ring = %v, want ErrFull", err)
	}
	if r := cproducer.TrySubmit(q.Memory(), p.Memory(), 100); r != -int(unix.EAGAIN) {
		t.Errorf("megaio_host_try_submit into a full ring = %d, want -EAGAIN", r)
	}
	if got, want := p.side.nextTicket, q.hdr.firstTicket+4; got != want {
		t.Errorf("next ticket %#x after 4 submits: a refused submit took a ticket", got)
	}
	q2, _ := NewQueue(QueueConfig{Capacity: 8})
	defer q2.Close()
	p2, _ := q2.HostProducer()
	if n := cproducer.FillRing(q2.Memory(), p2.Memory(), 0); n != 8 {
		t.Errorf("megaio_host_try_submit filled %d slots of 8", n)
	}
}

// TestCompletionIDs: Submit fails with ErrBusy when every id is held, Do
// waits for one instead, and a ticket polled to completion cannot be
// polled again.
func TestCompletionIDs(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 8, Completions: 3}, Config{}, 4096)
	var held []Ticket
	for i := 0; i < 3; i++ {
		tk, err := h.p.Submit(Request{Op: OpNop})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, tk)
	}
	if _, err := h.p.Submit(Request{Op: OpNop}); !errors.Is(err, ErrBusy) {
		t.Fatalf("Submit with every id held = %v, want ErrBusy", err)
	}
	did := make(chan error, 1)
	go func() { _, err := h.p.Do(Request{Op: OpNop}); did <- err }()
	if res, err := h.p.Wait(held[1]); err != nil || res != 0 {
		t.Fatalf("Wait: %d, %v", res, err)
	}
	if err := <-did; err != nil {
		t.Fatalf("Do once an id was free: %v", err)
	}
	if _, _, err := h.p.Poll(held[1]); !errors.Is(err, ErrUnknownTicket) {
		t.Errorf("second Poll of a collected ticket = %v, want ErrUnknownTicket", err)
	}
	for _, tk := range []Ticket{held[0], held[2]} {
		if res, err := h.p.Wait(tk); err != nil || res != 0 {
			t.Fatalf("Wait: %d, %v", res, err)
		}
	}
	checkIDPool(t, h.p)
}

// TestRecordsExhausted: with both of the loop's records held by READs that
// do not return, further READs wait in the loop's own list (their slots
// freed), NOPs flow around them for many laps, and everything completes
// with the right bytes once the slow READs return.
func TestRecordsExhausted(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		h := newHarness(t, QueueConfig{Capacity: 8}, Config{Backend: be, MaxInflight: 2}, 4096)
		path, data := patternFile(t, tmpfsDir(t), 4096, 5)
		fh := h.register(path, os.O_RDONLY)
		var slow []Ticket
		var writers []*os.File
		for i := 0; i < 2; i++ {
			pf, w := h.pipe()
			tk, err := h.p.Submit(Request{Op: OpRead, File: pf, Dest: h.dest, DestOffset: uint64(2048 + i), Length: 1})
			if err != nil {
				t.Fatal(err)
			}
			slow, writers = append(slow, tk), append(writers, w)
		}
		eventually(t, "both slow READs in flight", func() bool { return h.l.Stats().Requests[OpRead] == 2 })
		var queued []Ticket
		for i := 0; i < 2; i++ {
			tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i) * 1024,
				DestOffset: uint64(i) * 1024, Length: 1024})
			if err != nil {
				t.Fatal(err)
			}
			queued = append(queued, tk)
		}
		for i := 0; i < 8*12; i++ {
			if got := h.do(Request{Op: OpNop}); got != 0 {
				t.Fatalf("NOP %d = %d", i, got)
			}
		}
		// Stats are published every few hundred cycles and before the loop
		// sleeps: on a loaded machine the copy may lag the NOPs.
		eventually(t, "Stats.Waited == 2", func() bool { return h.l.Stats().Waited == 2 })
		for i, w := range writers {
			w.Write([]byte{byte('a' + i)})
		}
		for i, tk := range append(slow, queued...) {
			want := Result(1)
			if i >= 2 {
				want = 1024
			}
			if res, err := h.p.Wait(tk); err != nil || res != want {
				t.Fatalf("READ %d: %d, %v; want %d", i, res, err, want)
			}
		}
		if b := h.buf.Bytes(); !bytes.Equal(b[:2048], data[:2048]) || string(b[2048:2050]) != "ab" {
			t.Error("wrong bytes")
		}
	})
}

// TestStopWhileSubmitWaits: a producer waiting in Submit for ring space
// when Stop begins gets ErrStopped (no ticket taken), or a ticket that the
// stopping loop answers with -ECANCELED or leaves unserved (ErrStopped
// from Wait); it never waits forever.
func TestStopWhileSubmitWaits(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		h := newHarness(t, QueueConfig{Capacity: 4}, Config{Backend: be, MaxInflight: 1}, 4096)
		pf, w := h.pipe()
		read := Request{Op: OpRead, File: pf, Dest: h.dest, Length: 1}
		var tickets []Ticket
		// One READ holds the record, one waits in the loop's list, four
		// fill the ring.
		for i := 0; i < 6; i++ {
			tk, err := h.p.Submit(read)
			if err != nil {
				t.Fatal(err)
			}
			tickets = append(tickets, tk)
			if i < 2 {
				eventually(t, "the claim", func() bool { return atomic.LoadUint64(&h.q.hdr.claimHead) == tk.n+1 })
			}
		}
		type out struct {
			tk  Ticket
			err error
		}
		blocked := make(chan out, 1)
		go func() { tk, err := h.p.Submit(read); blocked <- out{tk, err} }()
		select {
		case o := <-blocked:
			t.Fatalf("Submit into a full ring returned at once: %v", o.err)
		case <-time.After(50 * time.Millisecond):
		}
		stopped := make(chan error, 1)
		go func() { stopped <- h.l.Stop(context.Background()) }()
		o := await(t, "Submit into a full ring to return after Stop began", blocked,
			meter{"claim_head", func() uint64 { return atomic.LoadUint64(&h.q.hdr.claimHead) }},
			meter{"next ticket", func() uint64 { return atomic.LoadUint64(&h.p.side.nextTicket) }},
			meter{"claim_seen", func() uint64 { return atomic.LoadUint64(&h.p.side.claimSeen) }},
			meter{"state", func() uint64 { return uint64(atomic.LoadUint32(&h.q.hdr.state)) }})
		w.Write([]byte("x")) // the READ in flight returns, so Stop can end
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if o.err != nil {
			if !errors.Is(o.err, ErrStopped) {
				t.Fatalf("Submit = %v, want ErrStopped", o.err)
			}
		} else if res, err := h.p.Wait(o.tk); !errors.Is(err, ErrStopped) && !errors.Is(res.Err(), unix.ECANCELED) {
			t.Fatalf("the ticket Submit got: %d, %v; want -ECANCELED or ErrStopped", res, err)
		}
		for i, tk := range tickets {
			res, err := h.p.Wait(tk)
			if err != nil || (i > 0 && !errors.Is(res.Err(), unix.ECANCELED)) || (i == 0 && res != 1) {
				t.Errorf("ticket %d: %d, %v", i, res, err)
			}
		}
		checkIDPool(t, h.p) // Submit's retries on a full ring used one id, and gave it back once
	})
}

// TestStopUnderFlood: producers that publish as fast as they can, without
// waiting for results, do not hold Stop in its final sweep: it sweeps at
// most one ring's worth, and what they publish after that stays for the
// next Start.
func TestStopUnderFlood(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		h := newHarness(t, QueueConfig{Capacity: 16}, Config{Backend: be}, 4096)
		ids, err := h.p.ReserveCompletions(1)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		for g := 0; g < 2; g++ {
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					select {
					case <-stop:
						return
					default:
					}
					// Nobody waits for these NOPs: all name one id, whose
					// completion the loop overwrites.
					h.p.publishWithID(&requestSlot{op: OpNop}, ids[0])
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		for i := 0; i < 5; i++ {
			if err := stopLoop(t, h.l); err != nil {
				t.Fatalf("Stop %d under a flood: %v", i, err)
			}
			if err := h.l.Start(); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		<-done
		<-done
	})
}

// TestWaitParks: goroutines in Wait on requests that take long block (the
// first maxFutex, here 3, in a futex, the others parked on a channel: they
// do not spin or sleep-poll), and each is woken by its own completion: 8 READs of a
// pipe, released one byte at a time, then the rest cancelled at Stop's
// deadline.
func TestWaitParks(t *testing.T) { forBackends(t, testWaitParks) }

func testWaitParks(t *testing.T, be BackendKind) {
	const n = 8
	h := newHarness(t, QueueConfig{Capacity: 16}, Config{Backend: be}, 4096)
	fh, w := h.pipe()
	h.p.maxFutex = 3 // both ways of waiting
	results := make(chan Result, n)
	for i := range n {
		tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, DestOffset: uint64(i), Length: 1})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			res, err := h.p.Wait(tk)
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	parked := func() int {
		c := 0
		for i := range h.p.waiters {
			if h.p.waiters[i].waiting.Load() != 0 {
				c++
			}
		}
		return c
	}
	eventually(t, "every Wait to park", func() bool { return parked() == n })
	futex := 0
	for i := range h.p.waiters {
		if h.p.waiters[i].waiting.Load() == parkedFutex {
			futex++
		}
	}
	if futex != 3 {
		t.Errorf("%d waiters in a futex, want 3 (maxFutex): the others park on a channel", futex)
	}
	for i := range n / 2 {
		if _, err := w.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if res := <-results; res != 1 {
			t.Fatalf("a READ of one byte: %d", res)
		}
	}
	if err := stopWithin(t, h.l, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop: %v", err)
	}
	for range n / 2 {
		if res := <-results; res != -Result(unix.ECANCELED) {
			t.Fatalf("a READ cancelled at the deadline: %d", res)
		}
	}
	if p := parked(); p != 0 {
		t.Errorf("%d waiters still marked parked", p)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}
