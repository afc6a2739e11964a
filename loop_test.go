package megaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestEveryOp(t *testing.T) { forBackends(t, testEveryOp) }

func testEveryOp(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	path, data := patternFile(t, tmpfsDir(t), 64<<10, 1)
	fh := h.register(path, os.O_RDWR)
	buf := h.buf.Bytes()

	if got := h.do(Request{Op: OpNop}); got != 0 {
		t.Errorf("NOP = %d, want 0", got)
	}
	if got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 8192, DestOffset: 100, Length: 4096}); got != 4096 {
		t.Fatalf("READ = %d (%v), want 4096", got, got.Err())
	}
	if !bytes.Equal(buf[100:100+4096], data[8192:8192+4096]) {
		t.Errorf("READ: destination bytes differ from the file")
	}

	out := filepath.Join(tmpfsDir(t), "written")
	wfh := h.register(out, os.O_RDWR|os.O_CREATE)
	copy(buf[1<<19:], data[:5000])
	if got := h.do(Request{Op: OpWrite, File: wfh, Dest: h.dest, FileOffset: 10, DestOffset: 1 << 19, Length: 5000}); got != 5000 {
		t.Fatalf("WRITE = %d (%v), want 5000", got, got.Err())
	}
	if got := h.do(Request{Op: OpFsync, File: wfh}); got != 0 {
		t.Errorf("FSYNC = %d (%v), want 0", got, got.Err())
	}
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(make([]byte, 10), data[:5000]...); !bytes.Equal(written, want) {
		t.Errorf("WRITE: file holds %d bytes that differ from what was written", len(written))
	}
	if got := h.do(Request{Op: OpFence}); got != 0 {
		t.Errorf("FENCE = %d, want 0", got)
	}

	if err := stopLoop(t, h.l); err != nil {
		t.Fatal(err)
	}
	st := h.l.Stats()
	want := [numOps]uint64{OpNop: 1, OpRead: 1, OpWrite: 1, OpFence: 1, OpFsync: 1}
	if diff := cmp.Diff(want, st.Requests); diff != "" {
		t.Errorf("Stats.Requests (-want +got):\n%s", diff)
	}
	if st.Completed != 5 || st.OK != 5 || st.Bytes != 4096+5000 || st.Latency.Count() != 5 {
		t.Errorf("Stats: completed %d ok %d bytes %d latency samples %d; want 5 5 9096 5",
			st.Completed, st.OK, st.Bytes, st.Latency.Count())
	}
	if st.Backend == "" {
		t.Errorf("Stats.Backend is empty")
	}
}

// TestReads reads random ranges from tmpfs and from disk and checks every byte.
func TestReads(t *testing.T) { forBackends(t, testReads) }

func testReads(t *testing.T, be BackendKind) {
	for _, fs := range []struct {
		name string
		dir  func(testing.TB) string
	}{{"tmpfs", tmpfsDir}, {"disk", diskDir}} {
		t.Run(fs.name, func(t *testing.T) {
			h := newHarness(t, QueueConfig{Capacity: 256}, Config{Backend: be}, 4<<20)
			const size = 3<<20 + 123
			path, data := patternFile(t, fs.dir(t), size, 2)
			fh := h.register(path, os.O_RDONLY)
			rng := newRand(3)
			for i := 0; i < 300; i++ {
				n := 1 + rng.IntN(256<<10)
				off := rng.IntN(size - n)
				doff := rng.IntN(len(h.buf.Bytes()) - n)
				got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(off), DestOffset: uint64(doff), Length: uint64(n)})
				if got != Result(n) {
					t.Fatalf("READ %d at %d = %d (%v)", n, off, got, got.Err())
				}
				if !bytes.Equal(h.buf.Bytes()[doff:doff+n], data[off:off+n]) {
					t.Fatalf("READ %d at %d: bytes differ", n, off)
				}
			}
		})
	}
}

func TestODirect(t *testing.T) { forBackends(t, testODirect) }

func testODirect(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	path, data := patternFile(t, diskDir(t), 1<<20, 4)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("skipping: the file system under %s refuses O_DIRECT", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	fh, err := h.l.RegisterFile(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		off := uint64((i * 7919) % 240 * 4096)
		got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: off, DestOffset: uint64(i%16) * 4096, Length: 16384})
		if got != 16384 {
			t.Fatalf("aligned O_DIRECT READ at %d = %d (%v)", off, got, got.Err())
		}
		if !bytes.Equal(h.buf.Bytes()[(i%16)*4096:][:16384], data[off:][:16384]) {
			t.Fatalf("aligned O_DIRECT READ at %d: bytes differ", off)
		}
	}
	for _, r := range []Request{
		{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 1, Length: 4096},                // file offset
		{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 0, DestOffset: 1, Length: 4096}, // memory
		{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 0, Length: 100},                 // length
	} {
		if got := h.do(r); got != -Result(unix.EINVAL) {
			t.Errorf("unaligned O_DIRECT READ %+v = %d, want -EINVAL", r, got)
		}
	}
}

func TestEOFShortCounts(t *testing.T) { forBackends(t, testEOFShortCounts) }

func testEOFShortCounts(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	path, data := patternFile(t, tmpfsDir(t), 10000, 5)
	fh := h.register(path, os.O_RDONLY)
	for _, c := range []struct {
		off, n uint64
		want   Result
	}{{8192, 4096, 10000 - 8192}, {0, 20000, 10000}, {10000, 4096, 0}, {1 << 40, 4096, 0}} {
		got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: c.off, Length: c.n})
		if got != c.want {
			t.Errorf("READ %d at %d of a 10000-byte file = %d, want %d", c.n, c.off, got, c.want)
		}
		if c.want > 0 && !bytes.Equal(h.buf.Bytes()[:c.want], data[c.off:c.off+uint64(c.want)]) {
			t.Errorf("READ %d at %d: bytes differ", c.n, c.off)
		}
	}
}

// TestBadRequests sends each class of bad request and checks its errno and
// that the loop goes on serving.
func TestBadRequests(t *testing.T) { forBackends(t, testBadRequests) }

func testBadRequests(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	path, data := patternFile(t, tmpfsDir(t), 1<<16, 6)
	fh := h.register(path, os.O_RDONLY)
	bufLen := uint64(len(h.buf.Bytes()))
	read := func(s requestSlot) requestSlot {
		s.op, s.file, s.dest = OpRead, uint32(fh), uint32(h.dest)
		if s.length == 0 {
			s.length = 4096
		}
		return s
	}
	cases := []struct {
		name string
		slot requestSlot
		want unix.Errno
	}{
		{"unknown op", requestSlot{op: 77}, unix.EINVAL},
		{"flags set", requestSlot{op: OpNop, flags: 1}, unix.EINVAL},
		{"reserved set", requestSlot{op: OpNop, reserved1: 9}, unix.EINVAL},
		{"unregistered file", requestSlot{op: OpRead, file: 999, dest: uint32(h.dest), length: 1}, unix.EBADF},
		{"unregistered file, fsync", requestSlot{op: OpFsync, file: 3}, unix.EBADF},
		{"unregistered destination", requestSlot{op: OpRead, file: uint32(fh), dest: 12345, length: 1}, unix.ENXIO},
		{"zero length", requestSlot{op: OpWrite, file: uint32(fh), dest: uint32(h.dest)}, unix.EINVAL},
		{"oversized length", read(requestSlot{length: MaxLength + 1}), unix.E2BIG},
		{"file offset overflow", read(requestSlot{fileOffset: 1<<63 - 100}), unix.EOVERFLOW},
		{"destination out of bounds", read(requestSlot{destOffset: bufLen - 10}), unix.EFAULT},
		{"destination offset overflow", read(requestSlot{destOffset: ^uint64(0) - 10}), unix.EFAULT},
	}
	for _, c := range cases {
		tk := h.p.publish(&c.slot)
		got, err := h.p.Wait(tk)
		if err != nil || !errors.Is(got.Err(), c.want) {
			t.Errorf("%s: result %d (%v), err %v; want -%v", c.name, got, got.Err(), err, c.want)
		}
		// The loop still serves.
		if got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 4096, Length: 4096}); got != 4096 ||
			!bytes.Equal(h.buf.Bytes()[:4096], data[4096:8192]) {
			t.Fatalf("after %s: READ = %d (%v)", c.name, got, got.Err())
		}
	}
	if err := stopLoop(t, h.l); err != nil {
		t.Fatal(err)
	}
	st := h.l.Stats()
	want := map[unix.Errno]uint64{unix.EINVAL: 4, unix.EBADF: 2, unix.ENXIO: 1, unix.E2BIG: 1, unix.EOVERFLOW: 1, unix.EFAULT: 2}
	if diff := cmp.Diff(want, st.Errors); diff != "" {
		t.Errorf("Stats.Errors (-want +got):\n%s", diff)
	}
	if st.BadOps != 1 {
		t.Errorf("Stats.BadOps = %d, want 1", st.BadOps)
	}
}

// TestShortReadContinued reads from a pipe that delivers its bytes in
// pieces: the loop continues the READ until the full length.
func TestShortReadContinued(t *testing.T) { forBackends(t, testShortReadContinued) }

func testShortReadContinued(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	fh, w := h.pipe()
	tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 3000})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("megaio!"), 3000/7+1)[:3000]
	for _, part := range [][]byte{want[:100], want[100:2500], want[2500:]} {
		if _, done, _ := h.p.Poll(tk); done {
			t.Fatalf("READ completed before the pipe delivered all its bytes")
		}
		if _, err := w.Write(part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // lets the loop see a short read (not required for correctness)
	}
	got, err := h.p.Wait(tk)
	if err != nil || got != 3000 {
		t.Fatalf("READ from pipe = %d, %v; want 3000", got, err)
	}
	if !bytes.Equal(h.buf.Bytes()[:3000], want) {
		t.Errorf("pipe READ: bytes differ")
	}
	eventually(t, "ShortIO to be published", func() bool { return h.l.Stats().ShortIO > 0 })
}

// TestFenceOrdering: a FENCE completes only after every request claimed
// before it, while requests after it are not held back.
func TestFenceOrdering(t *testing.T) { forBackends(t, testFenceOrdering) }

func testFenceOrdering(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	fh, w := h.pipe()
	path, _ := patternFile(t, tmpfsDir(t), 8192, 7)
	ffh := h.register(path, os.O_RDONLY)

	slow, _ := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 10})
	fence1, _ := h.p.Submit(Request{Op: OpFence})
	fast, _ := h.p.Submit(Request{Op: OpRead, File: ffh, Dest: h.dest, DestOffset: 4096, Length: 4096})
	fence2, _ := h.p.Submit(Request{Op: OpFence})

	// Requests after a fence run: the fast READ completes while the slow
	// one is provably pending (the pipe is empty).
	if got, err := h.p.Wait(fast); err != nil || got != 4096 {
		t.Fatalf("READ after a fence = %d, %v", got, err)
	}
	for i := 0; i < 50; i++ {
		for _, f := range []Ticket{fence1, fence2} {
			if _, done, _ := h.p.Poll(f); done {
				t.Fatalf("FENCE %d completed while a READ claimed before it was in flight", f)
			}
		}
		time.Sleep(time.Millisecond)
	}
	w.Write([]byte("0123456789"))
	if got, err := h.p.Wait(slow); err != nil || got != 10 {
		t.Fatalf("slow READ = %d, %v", got, err)
	}
	for _, f := range []Ticket{fence1, fence2} {
		if got, err := h.p.Wait(f); err != nil || got != 0 {
			t.Fatalf("FENCE = %d, %v", got, err)
		}
	}
}

// TestBackpressure: 8 ring entries, thousands of requests outstanding.
func TestBackpressure(t *testing.T) { forBackends(t, testBackpressure) }

func testBackpressure(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 4096}, Config{Backend: be, RingEntries: 8, MaxInflight: 32, InlineMax: -1}, 4<<20)
	const producers, each, block = 8, 500, 512
	path, data := patternFile(t, tmpfsDir(t), producers*each*block, 8)
	fh := h.register(path, os.O_RDONLY)
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tickets := make([]Ticket, each)
			for i := range tickets { // all outstanding at once
				off := uint64((p*each + i) * block)
				tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: off, DestOffset: off, Length: block})
				if err != nil {
					errs <- err
					return
				}
				tickets[i] = tk
			}
			for _, tk := range tickets {
				if got, err := h.p.Wait(tk); err != nil || got != block {
					errs <- errors.Join(err, got.Err())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !bytes.Equal(h.buf.Bytes()[:len(data)], data) {
		t.Fatal("bytes differ after backpressure")
	}
	if err := stopLoop(t, h.l); err != nil {
		t.Fatal(err)
	}
	st := h.l.Stats()
	if st.Completed != producers*each || st.MaxInflight > 32 || st.SQFullStalls == 0 {
		t.Errorf("completed %d (want %d), max in flight %d (cap 32), SQ-full stalls %d (want > 0)",
			st.Completed, producers*each, st.MaxInflight, st.SQFullStalls)
	}
}

// TestTicketWrap runs tickets across 2^32 and across 2^64.
func TestTicketWrap(t *testing.T) { forBackends(t, testTicketWrap) }

func testTicketWrap(t *testing.T, be BackendKind) {
	for _, first := range []uint64{1<<32 - 300, ^uint64(0) - 300} {
		h := newHarness(t, QueueConfig{Capacity: 64, FirstTicket: first}, Config{Backend: be}, 1<<20)
		path, data := patternFile(t, tmpfsDir(t), 1<<16, 9)
		fh := h.register(path, os.O_RDONLY)
		var wg sync.WaitGroup
		var failed sync.Once
		for p := 0; p < 4; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 250; i++ {
					off := uint64((p*250 + i) % 16 * 4096)
					r := Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: off, DestOffset: uint64(p) * 4096, Length: 4096}
					if i%3 == 0 {
						r = Request{Op: OpNop}
					}
					got, err := h.p.Do(r)
					want := Result(4096)
					if r.Op == OpNop {
						want = 0
					}
					if err != nil || got != want || (r.Op == OpRead && !bytes.Equal(h.buf.Bytes()[p*4096:][:4096], data[off:][:4096])) {
						failed.Do(func() { t.Errorf("first ticket %#x: %v = %d, %v", first, r.Op, got, err) })
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := stopLoop(t, h.l); err != nil {
			t.Fatal(err)
		}
		if h.q.head != first+1000 {
			t.Errorf("head = %#x, want %#x", h.q.head, first+1000)
		}
	}
}

// TestStopDeadline: Stop with a READ that cannot finish cancels it, and no
// byte of the buffer changes after Stop returns.
func TestStopDeadline(t *testing.T) { forBackends(t, testStopDeadline) }

func testStopDeadline(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	fh, w := h.pipe()
	tk, _ := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, DestOffset: 512, Length: 64})
	eventually(t, "the READ to be in flight", func() bool { return h.l.Stats().MaxInflight > 0 })

	// io_uring cancels the pipe READ; the pool interrupts its worker in
	// read(2). Either way the bytes written later stay in the pipe.
	wrote := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond)
		w.Write(bytes.Repeat([]byte{0xAB}, 64))
		close(wrote)
	}()
	err := stopWithin(t, h.l, 50*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want an error matching context.DeadlineExceeded", err)
	}
	before := bytes.Clone(h.buf.Bytes())
	got, err := h.p.Wait(tk)
	switch {
	case err != nil:
		t.Fatalf("Wait after Stop: %v", err)
	case !errors.Is(got.Err(), unix.ECANCELED):
		t.Fatalf("in-flight READ after Stop's deadline = %d (%v), want -ECANCELED", got, got.Err())
	}
	<-wrote
	w.Write(bytes.Repeat([]byte{0xCD}, 64))
	time.Sleep(20 * time.Millisecond)
	if !bytes.Equal(before, h.buf.Bytes()) {
		t.Fatal("the buffer changed after Stop returned")
	}
	if _, err := h.p.Submit(Request{Op: OpNop}); !errors.Is(err, ErrStopped) {
		t.Errorf("Submit after Stop = %v, want ErrStopped", err)
	}
}

// TestStopLetsInFlightFinish: Stop waits for a READ in flight; requests
// published after Stop began complete with -ECANCELED.
func TestStopLetsInFlightFinish(t *testing.T) { forBackends(t, testStopLetsInFlightFinish) }

func testStopLetsInFlightFinish(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 1<<20)
	fh, w := h.pipe()
	tk, _ := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 5})
	eventually(t, "the READ to be in flight", func() bool { return h.l.Stats().MaxInflight > 0 })
	stopped := make(chan error)
	go func() { stopped <- h.l.Stop(context.Background()) }()
	eventually(t, "Stop to begin", h.l.stopReq.Load)

	if got, err := h.p.Do(Request{Op: OpNop}); err != nil || !errors.Is(got.Err(), unix.ECANCELED) {
		t.Fatalf("NOP published after Stop began = %d, %v; want -ECANCELED", got, err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a READ was in flight", err)
	default:
	}
	w.Write([]byte("hello"))
	if got, err := h.p.Wait(tk); err != nil || got != 5 || string(h.buf.Bytes()[:5]) != "hello" {
		t.Fatalf("READ in flight at Stop = %d, %v", got, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop = %v", err)
	}
}

// TestRestart: a request published after Stop (by a producer that took its
// ticket before the queue was marked stopped) is served by the next Start.
func TestRestart(t *testing.T) { forBackends(t, testRestart) }

func testRestart(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 8}, Config{Backend: be}, 1<<20)
	for cycle := 0; cycle < 5; cycle++ {
		for i := 0; i < 20; i++ { // wraps the 8 slots
			if got := h.do(Request{Op: OpNop}); got != 0 {
				t.Fatalf("cycle %d: NOP = %d", cycle, got)
			}
		}
		if err := stopLoop(t, h.l); err != nil {
			t.Fatal(err)
		}
		tk := h.p.publish(&requestSlot{op: OpNop}) // the racing producer
		if _, _, err := h.p.Poll(tk); !errors.Is(err, ErrStopped) {
			t.Fatalf("Poll of a request published after Stop = %v, want ErrStopped", err)
		}
		if err := h.l.Start(); err != nil {
			t.Fatal(err)
		}
		if got, err := h.p.Wait(tk); err != nil || got != 0 {
			t.Fatalf("after restart: %d, %v", got, err)
		}
	}
}

// TestCProducer drives the loop from C threads through megaio_host_submit
// and megaio_host_wait.
func TestCProducer(t *testing.T) { forBackends(t, testCProducer) }

func testCProducer(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 128}, Config{Backend: be}, 2<<20)
	path, data := patternFile(t, tmpfsDir(t), 2<<20, 10)
	fh := h.register(path, os.O_RDONLY)
	results, err := runCProducers(h, fh, 4, 128, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r != 4096 {
			t.Fatalf("C request %d = %d", i, r)
		}
	}
	if !bytes.Equal(h.buf.Bytes()[:512*4096], data[:512*4096]) {
		t.Fatal("bytes read by C producers differ")
	}
	if err := stopLoop(t, h.l); err != nil {
		t.Fatal(err)
	}
	if _, err := runCProducers(h, fh, 1, 1, 4096); err == nil {
		t.Fatal("C producer on a stopped queue succeeded, want -ESHUTDOWN")
	}
}

// TestRingFailure: a fatal backend error completes every claimed request
// with -EIO, later ones too, and is reported by Err and Stop.
func TestRingFailure(t *testing.T) { forBackends(t, testRingFailure) }

func testRingFailure(t *testing.T, be BackendKind) {
	q, err := NewQueue(QueueConfig{Capacity: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cfg, _ := Config{Backend: be}.withDefaults()
	fb := &failingBackend{}
	l, err := newLoop(q, cfg, func() (backend, BackendInfo, error) {
		inner, info, err := openTestBackend(cfg)
		fb.backend = inner
		return fb, info, err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := &harness{t: t, q: q, l: l}
	h.p, _ = q.HostProducer()
	h.buf, _ = l.NewBuffer(4096, BufferOptions{})
	h.dest, _ = l.AddDestination(h.buf, 0, 4096)
	fh, w := h.pipe()
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	tk, _ := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 10})
	eventually(t, "the READ to be in flight", func() bool { return l.Stats().MaxInflight > 0 })
	fb.fail.Store(true)
	if got, err := h.p.Wait(tk); err != nil || !errors.Is(got.Err(), unix.EIO) {
		t.Fatalf("READ in flight at the failure = %d, %v; want -EIO", got, err)
	}
	if got := h.do(Request{Op: OpNop}); !errors.Is(got.Err(), unix.EIO) {
		t.Fatalf("NOP after the failure = %d, want -EIO", got)
	}
	if !errors.Is(l.Err(), ErrRingFailed) || !errors.Is(l.Err(), unix.EBADFD) {
		t.Errorf("Err() = %v, want ErrRingFailed wrapping EBADFD", l.Err())
	}
	if err := stopLoop(t, l); !errors.Is(err, ErrRingFailed) {
		t.Errorf("Stop = %v, want ErrRingFailed", err)
	}
	if err := l.Start(); err == nil {
		t.Errorf("Start after a ring failure succeeded")
	}
	w.Close() // ends the pool worker's read(2), which Close waits for

}

// failingBackend is the io_uring backend until fail is set; then every
// enter fails as a broken ring would.
type failingBackend struct {
	backend
	fail atomic.Bool
}

func (f *failingBackend) enter(s []sqe, c []cqe, wait waitFor) (int, int, error) {
	if f.fail.Load() {
		return 0, 0, unix.EBADFD
	}
	return f.backend.enter(s, c, wait)
}

func TestRegistration(t *testing.T) { forBackends(t, testRegistration) }

func testRegistration(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 16}, Config{Backend: be, MaxFiles: 2, MaxBuffers: 2}, 4096)
	path, _ := patternFile(t, tmpfsDir(t), 4096, 11)
	a := h.register(path, os.O_RDONLY)
	h.register(path, os.O_RDONLY)
	f, _ := os.Open(path)
	defer f.Close()
	if _, err := h.l.RegisterFile(f); !errors.Is(err, ErrTableFull) {
		t.Errorf("third RegisterFile with MaxFiles 2 = %v, want ErrTableFull", err)
	}
	if err := h.l.UnregisterFile(a); err != nil {
		t.Fatal(err)
	}
	if got := h.do(Request{Op: OpRead, File: a, Dest: h.dest, Length: 10}); !errors.Is(got.Err(), unix.EBADF) {
		t.Errorf("READ of an unregistered file = %d, want -EBADF", got)
	}
	if err := h.l.UnregisterFile(a); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("second UnregisterFile = %v, want ErrNotRegistered", err)
	}
	if _, err := h.l.AddDestination(h.buf, 4000, 200); !errors.Is(err, ErrConfig) {
		t.Errorf("AddDestination past the buffer = %v, want ErrConfig", err)
	}
	if _, err := h.l.NewBuffer(4096, BufferOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.l.NewBuffer(4096, BufferOptions{}); !errors.Is(err, ErrTableFull) {
		t.Errorf("third NewBuffer with MaxBuffers 2 = %v, want ErrTableFull", err)
	}
	if err := h.l.RemoveDestination(h.dest); err != nil {
		t.Fatal(err)
	}
	if got := h.do(Request{Op: OpRead, File: 1, Dest: h.dest, Length: 10}); !errors.Is(got.Err(), unix.ENXIO) {
		t.Errorf("READ into a removed destination = %d, want -ENXIO", got)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := NewQueue(QueueConfig{Capacity: 3}); !errors.Is(err, ErrConfig) {
		t.Errorf("NewQueue(capacity 3) = %v, want ErrConfig", err)
	}
	q, err := NewQueue(QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, cfg := range []Config{{RingEntries: 3}, {MaxInflight: -1}, {MaxBuffers: 1 << 15},
		{Backoff: Backoff{MinSleep: time.Millisecond, MaxSleep: time.Microsecond}}, {CPUs: []int{-1}}, {CPUs: []int{maxCPU}}} {
		if _, err := NewLoop(q, cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("NewLoop(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	l, err := NewLoop(q, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLoop(q, Config{}); !errors.Is(err, ErrInUse) {
		t.Errorf("second NewLoop on one queue = %v, want ErrInUse", err)
	}
	if err := q.Close(); !errors.Is(err, ErrInUse) {
		t.Errorf("Queue.Close with a loop attached = %v, want ErrInUse", err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); !errors.Is(err, ErrRunning) {
		t.Errorf("second Start = %v, want ErrRunning", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.NewBuffer(4096, BufferOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("NewBuffer after Close = %v, want ErrClosed", err)
	}
}

// TestLoopCPUs: Config.CPUs binds the loop's thread, and a set the process
// may not use is a configuration error that names the errno.
func TestLoopCPUs(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	last := -1
	for c := range maxCPU {
		if allowed.IsSet(c) {
			last = c
		}
	}
	q, err := NewQueue(QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	l, err := NewLoop(q, Config{CPUs: []int{last}})
	if err != nil {
		t.Fatal(err)
	}
	var got unix.CPUSet
	if err := l.exec(func(*cycle) error { return unix.SchedGetaffinity(0, &got) }); err != nil {
		t.Fatal(err)
	}
	if got.Count() != 1 || !got.IsSet(last) {
		t.Errorf("loop thread's CPUs: %d of them, CPU %d set: %v; want only CPU %d", got.Count(), last, got.IsSet(last), last)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last+1 < maxCPU && !allowed.IsSet(last+1) { // a CPU beyond the allowed ones
		_, err := NewLoop(q, Config{CPUs: []int{last + 1}})
		if !errors.Is(err, ErrConfig) || !errors.Is(err, unix.EINVAL) {
			t.Errorf("NewLoop(CPUs: [%d], not allowed) = %v, want ErrConfig and EINVAL", last+1, err)
		}
	}
}

func TestSetupErrors(t *testing.T) {
	for _, c := range []struct {
		errno unix.Errno
		kind  error
	}{{unix.EPERM, ErrIOUringUnavailable}, {unix.ENOSYS, ErrIOUringUnavailable}, {unix.ENOMEM, ErrMemlock}} {
		err := uringSetupError(1, c.errno)
		if !errors.Is(err, c.kind) || !errors.Is(err, c.errno) {
			t.Errorf("setup failing with %v = %v; want it to match %v and the errno", c.errno, err, c.kind)
		}
	}
	if err := uringSetupError(3, unix.ENOMEM); !bytes.Contains([]byte(err.Error()), []byte("RLIMIT_MEMLOCK")) {
		t.Errorf("memlock error %q does not name RLIMIT_MEMLOCK", err)
	}
}

// TestZeroAllocs: serving requests allocates nothing in the steady state
// (counted across all goroutines, the loop's included).
func TestZeroAllocs(t *testing.T) { forBackends(t, testZeroAllocs) }

func testZeroAllocs(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 256}, Config{Backend: be}, 1<<20)
	path, _ := patternFile(t, tmpfsDir(t), 1<<20, 12)
	fh := h.register(path, os.O_RDONLY)
	run := func() {
		for i := 0; i < 500; i++ {
			h.p.Do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i%200) * 4096, Length: 4096})
			h.p.Do(Request{Op: OpNop})
		}
	}
	run()
	// A request that allocated would cost 1000 allocations a run, every
	// run. The runtime's own (a waiting goroutine's sudog cache refilled,
	// more often when a loaded machine makes waits long) cost one now and
	// then: the best of three measurements is the steady state's.
	var tries []float64
	for range 3 {
		allocs := testing.AllocsPerRun(5, run)
		if allocs < 1 {
			return
		}
		tries = append(tries, allocs)
	}
	t.Errorf("%v allocations per 1000 requests in three measurements, want 0", tries)
}

func TestBackoff(t *testing.T) {
	b := backoff{cfg: Backoff{Spins: 2, MinSleep: 10 * time.Microsecond, MaxSleep: 40 * time.Microsecond}}
	var got []time.Duration
	for i := 0; i < 7; i++ {
		got = append(got, b.next(false))
	}
	b.reset()
	got = append(got, b.next(false), b.next(true))
	us := time.Microsecond
	want := []time.Duration{0, 0, 10 * us, 20 * us, 40 * us, 40 * us, 40 * us, 0, 10 * us}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backoff sequence (-want +got):\n%s", diff)
	}
}

// TestStopWakesSleepingLoop: a loop asleep in a long backoff stops at once.
func TestStopWakesSleepingLoop(t *testing.T) { forBackends(t, testStopWakesSleepingLoop) }

func testStopWakesSleepingLoop(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 16}, Config{Backend: be, Backoff: Backoff{Spins: 1, MinSleep: time.Hour, MaxSleep: time.Hour}}, 4096)
	eventually(t, "the loop to sleep", func() bool { return h.l.Stats().Sleeps > 0 })
	if err := stopLoop(t, h.l); err != nil {
		t.Fatalf("Stop of a loop sleeping for an hour = %v", err)
	}
}

func TestHistogram(t *testing.T) {
	for i := 0; i < histBuckets; i++ {
		if got := histIndex(histLower(i)); got != i {
			t.Fatalf("histIndex(histLower(%d)) = %d", i, got)
		}
		if i > 0 && histLower(i) <= histLower(i-1) {
			t.Fatalf("bucket bounds not increasing at %d", i)
		}
	}
	var h Histogram
	for v := uint64(1); v <= 1000; v++ {
		h.Buckets[histIndex(v*1000)]++
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 500 * time.Microsecond}, {99, 990 * time.Microsecond}} {
		got := h.Percentile(c.p)
		// p99's bucket, [918µs, 1049µs), holds samples only up to 1000µs:
		// the even spread assumed is off there by 4%.
		if math.Abs(float64(got-c.want)) > 0.05*float64(c.want) {
			t.Errorf("p%v of evenly spread samples = %v, want within 5%% of %v", c.p, got, c.want)
		}
	}
	var one Histogram // a single sample: the percentile is in its bucket, whatever p
	one.Buckets[histIndex(70_000)]++
	for _, p := range []float64{1, 50, 100} {
		if got, lo := one.Percentile(p), histLower(histIndex(70_000)); uint64(got) < lo || uint64(got) >= histLower(histIndex(70_000)+1) {
			t.Errorf("p%v of one sample of 70µs = %v, outside its bucket [%v, %v)", p, got, time.Duration(lo),
				time.Duration(histLower(histIndex(70_000)+1)))
		}
	}
}

// flakyBackend answers the first n enters with a retryable errno, as
// io_uring_enter does under signals or memory pressure.
type flakyBackend struct {
	backend
	left  int
	errno unix.Errno
}

func (f *flakyBackend) enter(s []sqe, c []cqe, wait waitFor) (int, int, error) {
	if f.left > 0 && len(s) > 0 {
		f.left--
		return 0, 0, f.errno
	}
	return f.backend.enter(s, c, wait)
}

// TestRetryableEnterErrors: EINTR, EAGAIN and EBUSY are retried; the
// requests complete normally.
func TestRetryableEnterErrors(t *testing.T) { forBackends(t, testRetryableEnterErrors) }

func testRetryableEnterErrors(t *testing.T, be BackendKind) {
	for _, errno := range []unix.Errno{unix.EINTR, unix.EAGAIN, unix.EBUSY} {
		q, err := NewQueue(QueueConfig{Capacity: 16})
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := Config{Backend: be, InlineMax: -1}.withDefaults() // every READ through the backend
		l, err := newLoop(q, cfg, func() (backend, BackendInfo, error) {
			inner, info, err := openTestBackend(cfg)
			return &flakyBackend{backend: inner, left: 5, errno: errno}, info, err
		})
		if err != nil {
			t.Fatal(err)
		}
		h := &harness{t: t, q: q, l: l}
		h.p, _ = q.HostProducer()
		h.buf, _ = l.NewBuffer(4096, BufferOptions{})
		h.dest, _ = l.AddDestination(h.buf, 0, 4096)
		path, data := patternFile(t, tmpfsDir(t), 4096, 13)
		fh := h.register(path, os.O_RDONLY)
		l.Start()
		for i := 0; i < 3; i++ {
			if got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 4096}); got != 4096 || !bytes.Equal(h.buf.Bytes(), data) {
				t.Fatalf("%v: READ = %d (%v)", errno, got, got.Err())
			}
		}
		if err := stopLoop(t, l); err != nil {
			t.Fatalf("%v: Stop = %v", errno, err)
		}
		if st := l.Stats(); st.Retries != 5 {
			t.Errorf("%v: Stats.Retries = %d, want 5", errno, st.Retries)
		}
		l.Close()
		q.Close()
	}
}

func TestHugepageBuffer(t *testing.T) { forBackends(t, testHugepageBuffer) }

func testHugepageBuffer(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 16}, Config{Backend: be}, 4096)
	b, err := h.l.NewBuffer(1<<21, BufferOptions{Hugepages: true})
	if err != nil {
		nr, _ := os.ReadFile("/proc/sys/vm/nr_hugepages")
		t.Skipf("skipping: no 2 MiB hugepage could be mapped (vm.nr_hugepages = %s): %v", bytes.TrimSpace(nr), err)
	}
	path, data := patternFile(t, tmpfsDir(t), 1<<21, 14)
	fh := h.register(path, os.O_RDONLY)
	dh, err := h.l.AddDestination(b, 0, 1<<21)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.do(Request{Op: OpRead, File: fh, Dest: dh, Length: 1 << 21}); got != 1<<21 || !bytes.Equal(b.Bytes(), data) {
		t.Fatalf("READ into a hugepage buffer = %d (%v)", got, got.Err())
	}
}

func TestCPUTime(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backoff: Backoff{Spins: 1 << 30}}, 4096) // spins: uses CPU
	before := h.l.CPUTime()
	eventually(t, "a spinning loop to use 20 ms of CPU", func() bool { return h.l.CPUTime()-before >= 20*time.Millisecond },
		meter{"the loop's CPU time (ns)", func() uint64 { return uint64(h.l.CPUTime()) }})
}

// TestDeepIdle: after Backoff.IdleAfter of quiet the loop sleeps deeply
// (Stats.DeepSleeps), and a host producer's Submit cuts the sleep short
// (Stats.DeepWakes counts it; a sleep that ran out instead would not be
// counted), as Stop does.
func TestDeepIdle(t *testing.T) { forBackends(t, testDeepIdle) }

func testDeepIdle(t *testing.T, be BackendKind) {
	bo := Backoff{Spins: 1, MaxSleep: 50 * time.Microsecond, IdleAfter: time.Millisecond, IdleSleep: time.Hour}
	h := newHarness(t, QueueConfig{Capacity: 16}, Config{Backend: be, Backoff: bo}, 4096)
	for round := range 3 {
		// Eight deep sleeps in, the next lasts some 25 ms. Stats are
		// published just before a sleep begins, so wait 2 ms more: the
		// Submit lands inside that sleep, not in the microseconds before it
		// (where the loop would see the request and not sleep at all).
		deep := h.l.Stats().DeepSleeps
		eventually(t, "the loop to sleep deeply", func() bool { return h.l.Stats().DeepSleeps >= deep+8 })
		time.Sleep(2 * time.Millisecond)
		done := make(chan error, 1)
		go func() {
			res, err := h.p.Do(Request{Op: OpNop})
			if err == nil && res != 0 {
				err = fmt.Errorf("NOP: %d", res)
			}
			done <- err
		}()
		if err := await(t, fmt.Sprintf("round %d: a Submit waking the loop from deep idle", round), done); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := h.l.Stats(); s.DeepWakes < 3 {
		t.Errorf("%d of 3 deep sleeps cut short by a Submit (%d deep sleeps)", s.DeepWakes, s.DeepSleeps)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the loop to sleep deeply", func() bool { return h.l.Stats().DeepSleeps > 0 })
	if err := stopLoop(t, h.l); err != nil {
		t.Fatalf("Stop of a loop in deep idle: %v", err)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestUnknownOps: an op number the ABI does not define is refused with
// -EINVAL at each layer that takes one: the loop's admit (every number from
// 5 to 300 and the largest, published into a queue) and each backend (every
// sqe op the shims do not know, handed to enter directly), and nothing is
// run in its place.
func TestUnknownOps(t *testing.T) { forBackends(t, testUnknownOps) }

func testUnknownOps(t *testing.T, be BackendKind) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{Backend: be}, 4096)
	path, _ := patternFile(t, tmpfsDir(t), 4096, 3)
	fh := h.register(path, os.O_RDWR)
	before := h.l.Stats().BadOps
	bad := []Op{0xffff}
	for op := Op(numOps); op <= 300; op++ {
		bad = append(bad, op)
	}
	for _, op := range bad {
		if res := h.do(Request{Op: op, File: fh, Dest: h.dest, Length: 16}); res != -Result(unix.EINVAL) {
			t.Fatalf("op %d published into a queue: %d, want -EINVAL", op, res)
		}
	}
	eventually(t, "BadOps counted", func() bool { return h.l.Stats().BadOps-before == uint64(len(bad)) })

	// The backend alone, on the loop's thread (which owns it), while the
	// loop is stopped.
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := h.l.exec(func(cy *cycle) error {
		b := cy.lanes[0].be
		cqes := make([]cqe, 8)
		for op := 0; op < 256; op++ {
			if op == sqeRead || op == sqeWrite || op == sqeFsync {
				continue
			}
			s := []sqe{{userData: uint64(op), op: uint8(op), file: int32(fh), len: 16, bufIndex: sqeNoBuf,
				addr: uint64(uintptr(unsafe.Pointer(&h.buf.Bytes()[0])))}}
			taken, reaped, err := b.enter(s, cqes, waitFor(time.Second))
			for reaped == 0 && err == nil { // the pool's worker may not have answered within the wait
				_, reaped, err = b.enter(nil, cqes, waitFor(time.Second))
			}
			if err != nil || taken != 1 || reaped != 1 || cqes[0].userData != uint64(op) || cqes[0].res != -int32(unix.EINVAL) {
				return fmt.Errorf("sqe op %d: taken %d, reaped %d, %+v, %v; want one completion with -EINVAL", op, taken, reaped, cqes[0], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestLinger: after a cycle that completed requests, a loop with IO still
// in flight polls (reaps without waiting in the kernel) until Linger has
// passed, then waits there as before; without IO in flight Linger changes
// nothing.
func TestLinger(t *testing.T) {
	cfg, err := Config{Backoff: Backoff{Spins: 1, Linger: time.Hour}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	l := &Loop{cfg: cfg, epoch: time.Now(), pub: newPublished[counters]()}
	cy := &cycle{l: l, bo: backoff{cfg: cfg.Backoff}, inflight: 1}
	cy.lingerUntil = l.now() + int64(time.Hour)
	for i := 0; i < 3; i++ {
		if w := cy.wait(false); w != reapNow {
			t.Fatalf("lingering with IO in flight: wait = %v, want reapNow (poll)", time.Duration(w))
		}
	}
	if cy.st.sleeps != 0 {
		t.Errorf("lingering loop slept %d times", cy.st.sleeps)
	}
	cy.lingerUntil = l.now() - 1 // Linger has passed: a wait in the kernel of MaxSleep at once
	for i := 1; i <= 3; i++ {
		if w := cy.wait(false); time.Duration(w) != cfg.Backoff.MaxSleep || cy.st.sleeps != uint64(i) {
			t.Errorf("after Linger, wait %d: %v, sleeps %d; want a wait in the kernel of MaxSleep (%v)",
				i, time.Duration(w), cy.st.sleeps, cfg.Backoff.MaxSleep)
		}
	}
	cy.inflight, cy.lingerUntil = 0, l.now()+int64(time.Hour) // nothing in flight: the idle backoff as before
	cy.bo.reset()
	if w := cy.wait(false); w != skipKernel {
		t.Errorf("nothing in flight, spinning: wait = %v, want skipKernel", time.Duration(w))
	}
	if def, _ := (Config{}).withDefaults(); def.Backoff.Linger != 50*time.Microsecond {
		t.Errorf("default Linger %v", def.Backoff.Linger)
	}
}
