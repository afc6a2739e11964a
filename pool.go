package megaio

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// poolBackend serves requests with a fixed pool of worker threads doing
// pread, pwrite and fdatasync straight into the registered buffers: the
// backend for machines where io_uring is refused (Docker's and Kubernetes'
// default seccomp profiles, kernel.io_uring_disabled). Its semantics are the
// io_uring backend's: the cycle cannot tell them apart.
//
// Jobs go to the workers through a bounded lock-free queue (the SQ) and
// results come back through another (the CQ); the loop and the workers
// sleep on futexes only when their queue is empty.
type poolBackend struct {
	sq, cq  mpmc[poolJob]
	workers int

	// fds is the registered file table: the pool's own dup of each file,
	// read by workers when a job starts, -1 when free.
	fds []atomic.Int32
	// stream marks files without offsets (pipes, sockets, character
	// devices): read(2) and write(2) serve them, as io_uring does.
	stream []atomic.Bool
	// graveyard holds cleared descriptors until nothing is in flight: a
	// queued job may still name their slot, and closing a descriptor
	// early could let open(2) reuse its number for another file.
	graveyard []int32
	inflight  int // jobs pushed and not reaped; loop thread only

	workSeq   atomic.Uint32 // futex word workers sleep on; bumped on new work
	sleepers  atomic.Int32  // workers asleep or about to be
	compSeq   atomic.Uint32 // futex word the loop sleeps on; bumped per completion
	loopWaits atomic.Int32  // 1 while the loop waits for a completion
	cancelGen atomic.Uint64 // jobs queued before cancelAll started see a newer generation
	stopping  atomic.Bool
	wg        sync.WaitGroup
	ringSize  uint32
}

// poolJob is one request and the cancel generation it was queued in.
type poolJob struct {
	sqe
	gen uint64
	res int32
}

// workerSpins is how often an idle worker polls before it sleeps: short,
// because on small machines a spinning worker takes the loop's core.
const workerSpins = 64

func openPool(workers int, sqEntries uint32, maxInflight int, nfiles int) *poolBackend {
	p := &poolBackend{workers: workers, ringSize: sqEntries}
	p.sq.init(sqEntries)
	p.cq.init(uint32(maxInflight) + 1)
	p.fds = make([]atomic.Int32, nfiles)
	p.stream = make([]atomic.Bool, nfiles)
	for i := range p.fds {
		p.fds[i].Store(-1)
	}
	for range workers {
		p.wg.Add(1)
		go p.worker()
	}
	return p
}

func (p *poolBackend) enter(sqes []sqe, cqes []cqe, wait time.Duration) (int, int, error) {
	taken := 0
	gen := p.cancelGen.Load()
	for i := range sqes {
		if !p.sq.push(poolJob{sqe: sqes[i], gen: gen}) {
			break // the SQ is full: backpressure
		}
		taken++
	}
	if taken > 0 {
		p.inflight += taken
		p.workSeq.Add(1)
		if n := p.sleepers.Load(); n > 0 {
			futexWake(&p.workSeq, int(min(n, int32(taken))))
		}
	}
	reaped := p.reap(cqes)
	if reaped == 0 && wait > 0 && p.inflight > 0 {
		p.loopWaits.Store(1)
		seq := p.compSeq.Load()
		if p.cq.empty() {
			futexWait(&p.compSeq, seq, wait)
		}
		p.loopWaits.Store(0)
		reaped = p.reap(cqes)
	}
	return taken, reaped, nil
}

func (p *poolBackend) reap(cqes []cqe) int {
	n := 0
	for n < len(cqes) {
		j, ok := p.cq.pop()
		if !ok {
			break
		}
		cqes[n] = cqe{userData: j.userData, res: j.res}
		n++
	}
	p.inflight -= n
	if p.inflight == 0 && len(p.graveyard) > 0 {
		for _, fd := range p.graveyard {
			unix.Close(int(fd))
		}
		p.graveyard = p.graveyard[:0]
	}
	return n
}

// worker runs jobs until the pool closes.
func (p *poolBackend) worker() {
	runtime.LockOSThread() // a worker blocked in pread holds only its own thread
	defer p.wg.Done()
	idle := 0
	for {
		j, ok := p.sq.pop()
		if !ok {
			if p.stopping.Load() {
				return
			}
			if idle++; idle < workerSpins {
				continue
			}
			p.sleepers.Add(1)
			seq := p.workSeq.Load()
			if p.sq.empty() && !p.stopping.Load() {
				futexWait(&p.workSeq, seq, time.Second)
			}
			p.sleepers.Add(-1)
			continue
		}
		idle = 0
		j.res = p.run(&j)
		if !p.cq.push(j) {
			panic("megaio: pool completion queue overflow") // sized above the in-flight cap
		}
		p.compSeq.Add(1)
		if p.loopWaits.Load() != 0 {
			futexWake(&p.compSeq, 1)
		}
	}
}

// run does one job's syscall and returns its result, as io_uring would.
func (p *poolBackend) run(j *poolJob) int32 {
	if j.gen != p.cancelGen.Load() {
		return -int32(unix.ECANCELED)
	}
	if j.file < 0 || int(j.file) >= len(p.fds) {
		return -int32(unix.EBADF)
	}
	fd := p.fds[j.file].Load()
	if fd < 0 {
		return -int32(unix.EBADF)
	}
	stream := p.stream[j.file].Load()
	for {
		var r uintptr
		var e unix.Errno
		switch {
		case j.op == sqeRead && stream:
			r, _, e = unix.Syscall(unix.SYS_READ, uintptr(fd), uintptr(j.addr), uintptr(j.len))
		case j.op == sqeRead:
			r, _, e = unix.Syscall6(unix.SYS_PREAD64, uintptr(fd), uintptr(j.addr), uintptr(j.len), uintptr(j.off), 0, 0)
		case j.op == sqeWrite && stream:
			r, _, e = unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(j.addr), uintptr(j.len))
		case j.op == sqeWrite:
			r, _, e = unix.Syscall6(unix.SYS_PWRITE64, uintptr(fd), uintptr(j.addr), uintptr(j.len), uintptr(j.off), 0, 0)
		default:
			r, _, e = unix.Syscall(unix.SYS_FDATASYNC, uintptr(fd), 0, 0)
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -int32(e)
		}
		return int32(r)
	}
}

// cancelAll makes every job queued so far complete with -ECANCELED without
// running. A job already inside its syscall runs to its end: Stop waits for
// it, so no worker writes into a buffer after Stop returns.
func (p *poolBackend) cancelAll() error {
	p.cancelGen.Add(1)
	return nil
}

func (p *poolBackend) setFile(index uint32, fd int) error {
	if int(index) >= len(p.fds) {
		return fmt.Errorf("megaio: file slot %d out of range", index)
	}
	if old := p.fds[index].Swap(-1); old >= 0 {
		if p.inflight == 0 {
			unix.Close(int(old))
		} else {
			p.graveyard = append(p.graveyard, old)
		}
	}
	if fd < 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("megaio: fstat of a file for the worker pool: %w", err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("megaio: duplicating a file for the worker pool: %w", err)
	}
	mode := st.Mode & unix.S_IFMT
	p.stream[index].Store(mode == unix.S_IFIFO || mode == unix.S_IFSOCK || mode == unix.S_IFCHR)
	p.fds[index].Store(int32(dup))
	return nil
}

// setBuffer has nothing to do: workers write through plain addresses, and
// the loop has bounds-checked every request against its destination.
func (p *poolBackend) setBuffer(uint16, []byte) error { return nil }

func (p *poolBackend) describe() string {
	return fmt.Sprintf("pool (%d workers, sq %d)", p.workers, p.ringSize)
}

func (p *poolBackend) close() {
	p.stopping.Store(true)
	p.workSeq.Add(1)
	futexWake(&p.workSeq, p.workers)
	p.wg.Wait()
	for i := range p.fds {
		if fd := p.fds[i].Swap(-1); fd >= 0 {
			unix.Close(int(fd))
		}
	}
	for _, fd := range p.graveyard {
		unix.Close(int(fd))
	}
}

// mpmc is a bounded lock-free queue (Dmitry Vyukov's design): each cell
// carries a sequence number that says whether it is free for the push of
// position pos (seq == pos) or holds the value for the pop of pos
// (seq == pos+1). Producers and consumers claim positions with a CAS.
type mpmc[T any] struct {
	cells []mpmcCell[T]
	mask  uint64
	_     [64]byte
	enq   atomic.Uint64
	_     [56]byte
	deq   atomic.Uint64
	_     [56]byte
}

type mpmcCell[T any] struct {
	seq atomic.Uint64
	v   T
}

// init sizes q to a power of two of at least size cells.
func (q *mpmc[T]) init(size uint32) {
	size = ceilPow2(max(size, 2))
	q.cells, q.mask = make([]mpmcCell[T], size), uint64(size-1)
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
}

func (q *mpmc[T]) push(v T) bool {
	pos := q.enq.Load()
	for {
		c := &q.cells[pos&q.mask]
		switch d := int64(c.seq.Load() - pos); {
		case d == 0:
			if q.enq.CompareAndSwap(pos, pos+1) {
				c.v = v
				c.seq.Store(pos + 1)
				return true
			}
			pos = q.enq.Load()
		case d < 0:
			return false // full
		default:
			pos = q.enq.Load()
		}
	}
}

func (q *mpmc[T]) pop() (T, bool) {
	pos := q.deq.Load()
	for {
		c := &q.cells[pos&q.mask]
		switch d := int64(c.seq.Load() - (pos + 1)); {
		case d == 0:
			if q.deq.CompareAndSwap(pos, pos+1) {
				v := c.v
				c.seq.Store(pos + q.mask + 1)
				return v, true
			}
			pos = q.deq.Load()
		case d < 0:
			var zero T
			return zero, false // empty
		default:
			pos = q.deq.Load()
		}
	}
}

// empty reports whether a pop would find nothing right now.
func (q *mpmc[T]) empty() bool {
	pos := q.deq.Load()
	return int64(q.cells[pos&q.mask].seq.Load()-(pos+1)) < 0
}
