package megaio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStopDeadlineBlockedForever: READs that would block forever (pipes
// nobody writes, a FUSE file whose server waits) do not hold Stop past its
// deadline: Stop returns while they still block (the pipes are written and
// the server released only after it returned: its returning at all shows
// it did not wait for them; how long it took is logged, not asserted, since
// a loaded machine may take any time to run the cancel), with nothing left
// in the kernel; a pool worker in read(2) is interrupted, the READ completes
// with -ECANCELED having moved nothing, the buffer does not change after
// Stop returns, and after Start the pool serves again, the bytes the
// cancelled READs did not take still in the pipe. On the pool backend,
// with 1 and with all 16 workers blocked; on io_uring, where pipes are
// cancelled by io_uring itself and FUSE files go to the pool lane.
func TestStopDeadlineBlockedForever(t *testing.T) {
	for _, c := range []struct {
		name  string
		be    BackendKind
		pipes int
		fuse  bool
	}{
		{"pool/pipe", BackendPool, 1, false},
		{"pool/16-pipes-16-workers", BackendPool, 16, false},
		{"pool/fuse", BackendPool, 0, true},
		{"io_uring/pipe", BackendIOUring, 1, false},
		{"io_uring/fuse-lane", BackendIOUring, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.be == BackendIOUring {
				requireIOUring(t)
			}
			var gate, reads chan struct{}
			var fusePath string
			if c.fuse { // mounted before the loop exists, so unmounted after it is closed
				_, data := patternFile(t, tmpfsDir(t), 8192, 41)
				gate = make(chan struct{})
				slow := &faultFile{data: data, eioFrom: -1, gate: gate, reads: make(chan struct{}, 1)}
				fusePath, reads = faultFS(t, map[string]*faultFile{"slow": slow})["slow"], slow.reads
			}
			h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: c.be, PoolWorkers: 16}, 1<<20)
			var files []FileHandle
			var writers []*os.File
			for i := 0; i < c.pipes; i++ {
				fh, w := h.pipe()
				files, writers = append(files, fh), append(writers, w)
			}
			if c.fuse {
				files = append(files, h.register(fusePath, os.O_RDONLY))
			}
			var tickets []Ticket
			for i, fh := range files {
				tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, DestOffset: uint64(i) * 4096, Length: 4096})
				if err != nil {
					t.Fatal(err)
				}
				tickets = append(tickets, tk)
			}
			if reads != nil {
				// The server has the read. (FUSE forwards a signal as an
				// interrupt only for a request its server has taken;
				// before that the kernel waits uninterruptibly, and Stop
				// would answer ErrStopIncomplete, as in the test below.)
				<-reads
			}
			time.Sleep(50 * time.Millisecond) // into read(2)
			start := time.Now()
			err := stopWithin(t, h.l, 50*time.Millisecond)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrStopIncomplete) {
				t.Fatalf("Stop = %v; want the deadline reported, nothing left in the kernel", err)
			}
			t.Logf("Stop(50 ms) returned after %v", took.Round(100*time.Microsecond))
			after := bytes.Clone(h.buf.Bytes())
			for i, tk := range tickets {
				if res, err := h.p.Wait(tk); err != nil || !errors.Is(res.Err(), unix.ECANCELED) {
					t.Errorf("blocked READ %d: %d (%v), %v; want -ECANCELED", i, res, res.Err(), err)
				}
			}
			for _, w := range writers {
				w.Write([]byte("late bytes"))
			}
			if gate != nil {
				close(gate) // faultFS's cleanup sees it closed
			}
			time.Sleep(20 * time.Millisecond)
			if !bytes.Equal(after, h.buf.Bytes()) {
				t.Fatal("the buffer changed after Stop returned")
			}
			if err := h.l.Start(); err != nil {
				t.Fatal(err)
			}
			for i, fh := range files {
				res := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, DestOffset: uint64(i) * 4096, Length: 10})
				if res != 10 {
					t.Errorf("READ %d after Start = %d (%v), want 10", i, res, res.Err())
				}
			}
			for i := range writers {
				if got := string(h.buf.Bytes()[i*4096 : i*4096+10]); got != "late bytes" {
					t.Errorf("pipe %d: READ after Start got %q: the cancelled READ took bytes", i, got)
				}
			}
		})
	}
}

// TestStopDeadlineUninterruptible: a FUSE server that ignores interrupts
// keeps a pool worker in the kernel. Stop returns, after its deadline and
// the grace, while the server still holds the READ, with ErrStopIncomplete
// naming the request; Start and Close refuse
// while it is there; once the server answers, Stop returns, the READ has
// its bytes, and the loop starts and closes normally.
func TestStopDeadlineUninterruptible(t *testing.T) {
	_, data := patternFile(t, tmpfsDir(t), 8192, 42)
	gate := make(chan struct{})
	slow := &faultFile{data: data, eioFrom: -1, gate: gate, deaf: true, reads: make(chan struct{}, 1)}
	paths := faultFS(t, map[string]*faultFile{"slow": slow}) // its cleanup opens the gate
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: BackendPool}, 1<<20)
	fh := h.register(paths["slow"], os.O_RDONLY)
	tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 4096})
	if err != nil {
		t.Fatal(err)
	}
	<-slow.reads
	start := time.Now()
	err = stopWithin(t, h.l, 50*time.Millisecond)
	took := time.Since(start)
	if !errors.Is(err, ErrStopIncomplete) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want ErrStopIncomplete wrapping the deadline", err)
	}
	t.Logf("Stop returned after %v: %v", took.Round(time.Millisecond), err)
	if err := h.l.Start(); !errors.Is(err, ErrStopIncomplete) {
		t.Errorf("Start with a request in the kernel = %v, want ErrStopIncomplete", err)
	}
	if err := h.l.Close(); !errors.Is(err, ErrStopIncomplete) {
		t.Errorf("Close with a request in the kernel = %v, want ErrStopIncomplete", err)
	}
	close(gate)
	if err := stopLoop(t, h.l); err != nil {
		t.Fatalf("Stop once the server answered = %v", err)
	}
	if res, err := h.p.Wait(tk); err != nil || res != 4096 || !bytes.Equal(h.buf.Bytes()[:4096], data[:4096]) {
		t.Fatalf("the READ the server finally answered: %d (%v), %v", res, res.Err(), err)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
	if res := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 4096, Length: 4096}); res != 4096 {
		t.Fatalf("READ after Start = %d", res)
	}
}
