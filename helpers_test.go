package megaio

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// harness is a queue, a started loop, the host producer side and one
// buffer, closed at the end of the test.
type harness struct {
	t    testing.TB
	q    *Queue
	l    *Loop
	p    *HostProducer
	buf  *Buffer
	dest DestHandle

	more []*Queue // queues added to the loop (addQueue), closed after it

	// keepMapped: a kernel that may still touch the queue and buffers did
	// not end; the loop is stopped at the end of the test but neither it
	// nor its queues are closed, so nothing is unmapped under it.
	keepMapped bool
}

func newHarness(t testing.TB, qcfg QueueConfig, cfg Config, bufSize int) *harness {
	t.Helper()
	if cfg.StopGrace == 0 {
		cfg.StopGrace = testStopGrace
	}
	q, err := NewQueue(qcfg)
	if err != nil {
		t.Fatalf("NewQueue: %v", err)
	}
	l, err := NewLoop(q, cfg)
	if err != nil {
		q.Close()
		t.Fatalf("NewLoop: %v", err)
	}
	h := &harness{t: t, q: q, l: l}
	t.Cleanup(func() {
		// Every test's loop ends with its accounting whole.
		if err := l.Stop(context.Background()); err == nil {
			if err := l.exec((*cycle).checkIdle); err != nil && !errors.Is(err, ErrClosed) { // the test may have closed it
				t.Errorf("after the test: %v", err)
			}
		}
		if h.keepMapped {
			t.Logf("the loop and its queues stay open: a kernel may still use them")
			return
		}
		if err := l.Close(); err != nil {
			t.Errorf("Loop.Close: %v", err)
		}
		for _, q := range append([]*Queue{q}, h.more...) {
			if err := q.Close(); err != nil {
				t.Errorf("Queue.Close: %v", err)
			}
		}
	})
	if h.p, err = q.HostProducer(); err != nil {
		t.Fatalf("HostProducer: %v", err)
	}
	if h.buf, err = l.NewBuffer(bufSize, BufferOptions{}); err != nil {
		t.Fatalf("NewBuffer: %v", err)
	}
	if h.dest, err = l.AddDestination(h.buf, 0, uint64(len(h.buf.Bytes()))); err != nil {
		t.Fatalf("AddDestination: %v", err)
	}
	if err := l.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return h
}

// addQueues stops the loop, adds n new queues and starts it again. It
// returns the queues and their host producers.
func (h *harness) addQueues(n int, qcfg QueueConfig) ([]*Queue, []*HostProducer) {
	h.t.Helper()
	if err := h.l.Stop(context.Background()); err != nil {
		h.t.Fatalf("Stop: %v", err)
	}
	var qs []*Queue
	var ps []*HostProducer
	for range n {
		q, err := NewQueue(qcfg)
		if err != nil {
			h.t.Fatalf("NewQueue: %v", err)
		}
		if err := h.l.AddQueue(q); err != nil {
			q.Close()
			h.t.Fatalf("AddQueue: %v", err)
		}
		h.more = append(h.more, q)
		p, err := q.HostProducer()
		if err != nil {
			h.t.Fatalf("HostProducer: %v", err)
		}
		qs, ps = append(qs, q), append(ps, p)
	}
	if err := h.l.Start(); err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	return qs, ps
}

// do submits r and waits for its result, failing the test on a protocol
// error.
func (h *harness) do(r Request) Result {
	h.t.Helper()
	res, err := h.p.Do(r)
	if err != nil {
		h.t.Fatalf("Do(%+v): %v", r, err)
	}
	return res
}

// register opens path with flags and registers it.
func (h *harness) register(path string, flags int) FileHandle {
	h.t.Helper()
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		h.t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	fh, err := h.l.RegisterFile(f)
	if err != nil {
		h.t.Fatalf("RegisterFile: %v", err)
	}
	return fh
}

// patternFile writes size pseudo-random bytes to dir and returns its path
// and contents.
func patternFile(t testing.TB, dir string, size int, seed uint64) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	f, err := os.CreateTemp(dir, "megaio-test-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(f.Name()) })
	return f.Name(), data
}

// tmpfsDir is a directory on tmpfs (/dev/shm), or the test's temp dir when
// there is none.
func tmpfsDir(t testing.TB) string {
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC && unix.Access("/dev/shm", unix.W_OK) == nil {
		d, err := os.MkdirTemp("/dev/shm", "megaio-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// diskDir is a directory on a disk file system (not tmpfs): the system temp
// dir, else the package directory.
func diskDir(t testing.TB) string {
	var st unix.Statfs_t
	if d := t.TempDir(); unix.Statfs(d, &st) == nil && st.Type != unix.TMPFS_MAGIC {
		return d
	}
	d, err := os.MkdirTemp(".", ".megaio-test-")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(d)
	t.Cleanup(func() { os.RemoveAll(abs) })
	return abs
}

// pipe returns a pipe whose read end is registered with the loop: a READ
// from it stays in flight until the test writes to the write end.
func (h *harness) pipe() (FileHandle, *os.File) {
	h.t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { r.Close(); w.Close() })
	fh, err := h.l.RegisterFile(r)
	if err != nil {
		h.t.Fatal(err)
	}
	return fh, w
}

// testStopGrace is the tests' Config.StopGrace, unless a test sets its own:
// what Stop cancels at its deadline leaves the kernel in microseconds, but
// a loaded machine may take far longer to run the threads that return it,
// and a grace that ran out would turn a cancelled request into
// ErrStopIncomplete. A request no cancel reaches still holds Stop only
// this long (the tests of ErrStopIncomplete set the default grace).
var testStopGrace = stallLimit

// stopWithin stops l with a deadline d: for tests of what Stop does at its
// deadline (stopLoop, in watchdog_test.go, is the plain Stop of a test).
func stopWithin(t testing.TB, l *Loop, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Stop(ctx)
}

// publish publishes req's fields as written (flags, reserved words and all),
// as a producer that breaks the rules would, with a completion id from the
// pool. It takes its ticket even from a stopped queue, as a producer that
// saw the queue open just before Stop would.
func (p *HostProducer) publish(req *requestSlot) Ticket {
	id, ok := p.ids.get()
	if !ok {
		panic("publish: no free completion id")
	}
	t := p.takeIgnoringStop()
	atomic.StoreUint64(&p.ids.owner[id], t+1)
	p.fill(t, id, req)
	return Ticket{n: t, id: id}
}

// fill writes req into ticket t's slot as it is, with completion id id, and
// publishes it (P3, P4).
func (p *HostProducer) fill(t uint64, id uint32, req *requestSlot) {
	slot := &p.q.slots[t&p.q.mask]
	slot.op, slot.flags, slot.file, slot.dest, slot.completion = req.op, req.flags, req.file, req.dest, id
	slot.fileOffset, slot.destOffset, slot.length = req.fileOffset, req.destOffset, req.length
	slot.tag, slot.reserved1 = req.tag, req.reserved1
	atomic.StoreUint64(&slot.seq, t+1)
}

// publishWithID publishes req with completion id id as it is, even one
// outside the table, without the pool: the loop must cope.
func (p *HostProducer) publishWithID(req *requestSlot, id uint32) uint64 {
	t := p.takeIgnoringStop()
	p.fill(t, id, req)
	return t
}

// takeIgnoringStop takes the next ticket once its slot is free, whatever
// the queue's state.
func (p *HostProducer) takeIgnoringStop() uint64 {
	for {
		n := atomic.LoadUint64(&p.side.nextTicket)
		if !ringFull(n, atomic.LoadUint64(&p.q.hdr.claimHead), p.q.mask+1) &&
			atomic.CompareAndSwapUint64(&p.side.nextTicket, n, n+1) {
			return n
		}
		runtime.Gosched()
	}
}

// checkIDPool fails the test unless the pool holds every completion id
// exactly once (call it when no request of p is in flight).
func checkIDPool(t testing.TB, p *HostProducer) {
	t.Helper()
	seen := make(map[uint32]bool)
	var ids []uint32
	for {
		id, ok := p.ids.get()
		if !ok {
			break
		}
		if seen[id] {
			t.Errorf("completion id %d is in the pool twice", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if len(ids) != len(p.q.comps) {
		t.Errorf("the pool holds %d ids, want all %d", len(ids), len(p.q.comps))
	}
	for _, id := range ids {
		p.ids.put(id)
	}
}

// checkIdle checks a stopped loop's accounting: every record free exactly
// once, and with device paths, every chunk free, nothing queued, copying or
// out with cuFile. Runs on the loop's thread (exec).
func (cy *cycle) checkIdle() error {
	seen := make([]bool, len(cy.recs))
	for _, i := range cy.free {
		if seen[i] {
			return fmt.Errorf("record %d is free twice", i)
		}
		seen[i] = true
	}
	if len(cy.free) != len(cy.recs) {
		return fmt.Errorf("%d of %d records free", len(cy.free), len(cy.recs))
	}
	waiting := 0
	for k, s := range cy.qs {
		waiting += s.waiting.len()
		if h := atomic.LoadUint64(&s.q.hdr.claimHead); h != s.q.head {
			return fmt.Errorf("queue %d: claim_head %d, but the loop claimed up to %d", k, h, s.q.head)
		}
		if st := atomic.LoadUint32(&s.q.hdr.state); st != stateStopped {
			return fmt.Errorf("queue %d: state %d, want stopped", k, st)
		}
		if int(s.index) != k {
			return fmt.Errorf("queue %d has index %d", k, s.index)
		}
	}
	if waiting != 0 || cy.nwaiting != 0 {
		return fmt.Errorf("%d claimed requests still wait for a record (counted %d)", waiting, cy.nwaiting)
	}
	if e := cy.dev; e != nil && (e.chunks.inUse() != 0 || e.gdsOut != 0 || e.waiting.len() != 0 || e.copying.len() != 0) {
		return fmt.Errorf("%d chunks in use, %d GDS IOs out, %d queued, %d copying", e.chunks.inUse(), e.gdsOut,
			e.waiting.len(), e.copying.len())
	}
	return nil
}

// forBackends runs a behaviour test against each backend: they must not be
// told apart.
func forBackends(t *testing.T, f func(t *testing.T, be BackendKind)) {
	for _, be := range []BackendKind{BackendIOUring, BackendPool} {
		t.Run(be.String(), func(t *testing.T) {
			if be == BackendIOUring {
				requireIOUring(t)
			}
			f(t, be)
		})
	}
}

var iouringProbe struct {
	once sync.Once
	err  error
}

// requireIOUring skips, saying why, where io_uring is refused (a container's
// default seccomp profile, kernel.io_uring_disabled); any other set-up error
// fails the test.
func requireIOUring(t *testing.T) {
	t.Helper()
	iouringProbe.once.Do(func() {
		be, err := openURing(8, 16, 1, 1)
		if err == nil {
			be.close()
		}
		iouringProbe.err = err
	})
	switch err := iouringProbe.err; {
	case errors.Is(err, ErrIOUringUnavailable):
		t.Skipf("skipping: io_uring is refused here (%v); run with deploy/seccomp-io_uring.json to test it", err)
	case err != nil:
		t.Fatalf("io_uring set-up: %v", err)
	}
}

// openTestBackend opens cfg.Backend (not auto) for tests that wrap it.
func openTestBackend(cfg Config) (backend, BackendInfo, error) {
	if cfg.Backend == BackendPool {
		be, err := openPool(cfg.PoolWorkers, cfg.RingEntries, cfg.MaxInflight, cfg.MaxFiles)
		return be, BackendInfo{Kind: BackendPool}, err
	}
	be, err := openURing(cfg.RingEntries, 2048, uint32(cfg.MaxFiles), uint32(cfg.MaxBuffers))
	return be, BackendInfo{Kind: BackendIOUring}, err
}
