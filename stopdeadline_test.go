package megaio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
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
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: BackendPool, StopGrace: defaultStopGrace}, 1<<20)
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

// TestStopDeepDeviceQueue: Stop with a 1 ms deadline over a deep queue of
// large O_DIRECT READs, most of them at the disk, where no cancel reaches.
// Either Stop waits for them (the grace is long enough) and reports the
// deadline, or it returns ErrStopIncomplete naming tickets that were in
// flight; then Start refuses until they are out, a request published
// meanwhile is answered -ECANCELED (or, if the last READ left first,
// ErrStopped, or its result once a Start got in), and Stop again waits and
// returns nil. In both cases every READ ends with its
// bytes (the file's, for the count it reports) or -ECANCELED, and no byte
// of the buffer changes after the call that reported the loop stopped. On
// both backends, with the default grace and with none (StopGrace -1, which
// makes ErrStopIncomplete all but certain).
func TestStopDeepDeviceQueue(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		for _, c := range []struct {
			name  string
			grace time.Duration
		}{{"default-grace", defaultStopGrace}, {"no-grace", -1}} {
			t.Run(c.name, func(t *testing.T) { testStopDeepDeviceQueue(t, be, c.grace) })
		}
	})
}

func testStopDeepDeviceQueue(t *testing.T, be BackendKind, grace time.Duration) {
	const reads, each = 128, 256 << 10
	h := newHarness(t, QueueConfig{Capacity: 256}, Config{Backend: be, StopGrace: grace}, reads*each)
	path, data := patternFile(t, diskDir(t), reads*each, 61)
	if f, err := os.Open(path); err == nil { // written back now, not by the first O_DIRECT READ
		f.Sync()
		f.Close()
	}
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	tickets := make([]Ticket, reads)
	inFlight := map[uint64]bool{}
	for i := range tickets {
		tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i * each),
			DestOffset: uint64(i * each), Length: each})
		if err != nil {
			t.Fatal(err)
		}
		tickets[i] = tk
		inFlight[tk.n] = true
	}
	eventually(t, "the loop to claim every READ", func() bool { return h.l.Stats().Requests[OpRead] == reads },
		loopMeters(h.l)...)
	done := h.l.Stats().Completed
	err := stopWithin(t, h.l, time.Millisecond)
	t.Logf("%v, grace %v: %d of %d READs done before Stop; Stop(1 ms): %v", be, h.l.cfg.StopGrace, done, reads, err)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop(1 ms) = %v; want nil or an error wrapping the deadline", err)
	}
	if errors.Is(err, ErrStopIncomplete) {
		named := regexp.MustCompile(`tickets \[([0-9 ]*)\]`).FindStringSubmatch(err.Error())
		if named == nil || named[1] == "" {
			t.Fatalf("ErrStopIncomplete names no ticket: %v", err)
		}
		for _, f := range strings.Fields(named[1]) {
			if n, _ := strconv.ParseUint(f, 10, 64); !inFlight[n] {
				t.Errorf("ErrStopIncomplete names ticket %s, which was not one of the READs", f)
			}
		}
		// The READs may leave the disk at any moment now: Start refuses
		// while one is there, and once they are out it starts the loop
		// (which the Stop below stops again). Close's refusal, which would
		// end the test either way, is TestStopDeadlineUninterruptible's,
		// where a file system holds the request for as long as it likes.
		err := h.l.Start()
		if err != nil && !errors.Is(err, ErrStopIncomplete) {
			t.Errorf("Start while READs may be at the disk = %v, want ErrStopIncomplete or (once they are out) nil", err)
		}
		started := err == nil
		t.Logf("Start while the READs finish: %v", err)
		if tk, err := h.p.Submit(Request{Op: OpNop}); err == nil {
			res, err := h.p.Wait(tk)
			t.Logf("a NOP published while the READs finish: %d (%v), %v", res, res.Err(), err)
			if !errors.Is(err, ErrStopped) && (err != nil || !errors.Is(res.Err(), unix.ECANCELED)) && !(started && res == 0) {
				t.Errorf("a NOP published while the READs finish: %d (%v), %v; want -ECANCELED or ErrStopped", res,
					res.Err(), err)
			}
		} else if !errors.Is(err, ErrStopped) {
			t.Errorf("Submit while the READs finish = %v, want a ticket or ErrStopped", err)
		}
		if err := stopLoop(t, h.l); err != nil {
			t.Fatalf("Stop again, to wait for the READs at the disk = %v, want nil", err)
		}
	}
	// The loop has stopped: nothing may write into the buffer from here on.
	after := bytes.Clone(h.buf.Bytes())
	full, partial, cancelled := 0, 0, 0
	for i, tk := range tickets {
		res, ok, err := h.p.Poll(tk)
		switch {
		case err != nil || !ok:
			t.Fatalf("READ %d has no result after Stop: %v, %v", i, ok, err)
		case res == each:
			full++
		case res >= 0 && res < each:
			partial++
		case errors.Is(res.Err(), unix.ECANCELED):
			cancelled++
			continue
		default:
			t.Fatalf("READ %d: %d (%v); want bytes or -ECANCELED", i, res, res.Err())
		}
		if got, want := after[i*each:i*each+int(res)], data[i*each:i*each+int(res)]; !bytes.Equal(got, want) {
			t.Errorf("READ %d reported %d bytes, not the file's", i, res)
		}
	}
	t.Logf("READs: %d whole, %d partial, %d -ECANCELED", full, partial, cancelled)
	time.Sleep(100 * time.Millisecond) // a READ still at the disk would land within this
	if !bytes.Equal(after, h.buf.Bytes()) {
		t.Fatal("the buffer changed after the loop reported it had stopped")
	}
	if err := h.l.Start(); err != nil {
		t.Fatalf("Start after the stop = %v", err)
	}
}
