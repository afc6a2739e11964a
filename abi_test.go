package megaio

import (
	"testing"
	"time"

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
	finished := false
	select {
	case n := <-done:
		finished = true
		if n != capacity*laps {
			t.Fatalf("NOP %d of %d failed", n+1, capacity*laps)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("NOPs around a blocked READ did not complete within 10 s: the slow request holds the ring")
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
	if !finished {
		<-done // the NOPs go on once the READ is out of the way
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
	select {
	case o := <-done:
		if o.err != nil || o.n != threads*per {
			t.Fatalf("%d of %d served: %v", o.n, threads*per, o.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("C producers with %d tickets in flight each on a ring of 8 made no progress in 60 s: deadlock", depth)
	}
}
