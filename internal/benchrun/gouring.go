package benchrun

// The Go peer: what a Go programmer who wants io_uring without megaio (and
// without cgo) would write, on golang.org/x/sys/unix alone. One goroutine
// locked to its thread owns one ring; the file is registered, the buffers
// are registered (READ_FIXED / WRITE_FIXED), and every completion is
// refilled at once, all refills going in with the next io_uring_enter, which
// also waits for at least one completion. No GPU, no queue, no second thread:
// the figure it gives is what io_uring costs from Go when nothing else is in
// the way.
//
// The structures and constants are the kernel's (include/uapi/linux/io_uring.h);
// only the parts this engine uses are spelled out.

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
)

// uringParams is struct io_uring_params (120 bytes).
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// uringSQE is struct io_uring_sqe (64 bytes), the fields a read or write uses.
type uringSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, rwFlags  uint32
	userData      uint64
	bufIndex      uint16
	_             [22]byte
}

// uringCQE is struct io_uring_cqe (16 bytes).
type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	uringOpReadFixed  = 4
	uringOpWriteFixed = 5
	uringSQEFixedFile = 1 << 0
	uringEnterGetEvts = 1 << 0
	uringFeatSingle   = 1 << 0 // IORING_FEAT_SINGLE_MMAP
	uringRegBuffers   = 0
	uringRegFiles     = 2
	uringOffSQRing    = 0
	uringOffCQRing    = 0x8000000
	uringOffSQEs      = 0x10000000
)

// goRing is one io_uring instance mapped into Go memory.
type goRing struct {
	fd                   int
	sqRing, cqRing, sqes []byte
	sqHead, sqTail       *uint32
	sqMask               uint32
	sqArray              []uint32
	sqeTab               []uringSQE
	cqHead, cqTail       *uint32
	cqMask               uint32
	cqeTab               []uringCQE
	pending              uint32 // SQEs written since the last enter
}

func u32At(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

func newGoRing(entries uint32) (*goRing, error) {
	var p uringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &goRing{fd: int(fd)}
	if p.features&uringFeatSingle == 0 {
		r.close()
		return nil, errors.New("io_uring: kernel without IORING_FEAT_SINGLE_MMAP (5.4 or newer needed)")
	}
	sqSize := p.sqOff.array + p.sqEntries*4
	cqSize := p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(uringCQE{}))
	ringSize := max(sqSize, cqSize)
	mem, err := unix.Mmap(r.fd, uringOffSQRing, int(ringSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring: mmap rings: %w", err)
	}
	r.sqRing, r.cqRing = mem, mem
	sqes, err := unix.Mmap(r.fd, uringOffSQEs, int(p.sqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	r.sqes = sqes
	r.sqHead, r.sqTail = u32At(mem, p.sqOff.head), u32At(mem, p.sqOff.tail)
	r.sqMask = *u32At(mem, p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(u32At(mem, p.sqOff.array), p.sqEntries)
	r.sqeTab = unsafe.Slice((*uringSQE)(unsafe.Pointer(&sqes[0])), p.sqEntries)
	r.cqHead, r.cqTail = u32At(mem, p.cqOff.head), u32At(mem, p.cqOff.tail)
	r.cqMask = *u32At(mem, p.cqOff.ringMask)
	r.cqeTab = unsafe.Slice((*uringCQE)(unsafe.Pointer(&mem[p.cqOff.cqes])), p.cqEntries)
	return r, nil
}

func (r *goRing) close() {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
	}
	if r.sqRing != nil {
		unix.Munmap(r.sqRing)
	}
	unix.Close(r.fd)
}

func (r *goRing) register(op uintptr, arg unsafe.Pointer, n int) error {
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), op, uintptr(arg), uintptr(n), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// push writes one SQE; the caller never has more in flight than the ring
// holds, so there is always room.
func (r *goRing) push(sqe uringSQE) {
	tail := *r.sqTail // only this thread writes the tail
	i := tail & r.sqMask
	r.sqeTab[i] = sqe
	r.sqArray[i] = i
	atomic.StoreUint32(r.sqTail, tail+1) // release: the kernel reads the SQE after it sees the tail
	r.pending++
}

// enter submits what was pushed and waits for at least minComplete completions.
func (r *goRing) enter(minComplete uint32) error {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending), uintptr(minComplete), uringEnterGetEvts, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		r.pending -= uint32(n)
		return nil
	}
}

// RunGoURing is the Go peer (see the top of this file). CPUus is the
// process's CPU per request: the one thread does all the work.
func RunGoURing(s Spec) (Result, error) {
	s = s.withDefaults()
	r := Result{Engine: "go-io_uring", RW: s.RW, Block: s.Block, Depth: s.Depth, Batch: 1, Direct: s.Direct}
	if s.RW == "nop" {
		return r, errors.New("go-io_uring: nop is not a file workload")
	}
	runtime.LockOSThread() // one thread owns the ring, as in C
	defer runtime.UnlockOSThread()
	f, err := openFile(s)
	if err != nil {
		return r, err
	}
	defer f.Close()
	ring, err := newGoRing(uint32(ceilPow2(s.Depth)))
	if err != nil {
		return r, err
	}
	defer ring.close()
	mem, err := unix.Mmap(-1, 0, s.Depth*s.Block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return r, err
	}
	defer unix.Munmap(mem)
	iov := make([]unix.Iovec, s.Depth)
	for i := range iov {
		iov[i].Base = &mem[i*s.Block]
		iov[i].SetLen(s.Block)
	}
	if err := ring.register(uringRegBuffers, unsafe.Pointer(&iov[0]), len(iov)); err != nil {
		return r, fmt.Errorf("io_uring: register buffers: %w (is the memlock limit too low?)", err)
	}
	fds := []int32{int32(f.Fd())}
	if err := ring.register(uringRegFiles, unsafe.Pointer(&fds[0]), 1); err != nil {
		return r, fmt.Errorf("io_uring: register file: %w", err)
	}

	op := uint8(uringOpReadFixed)
	if s.write() {
		op = uringOpWriteFixed
	}
	off := newOffsets(s, 1)
	starts := make([]time.Time, s.Depth)
	issue := func(slot int) {
		starts[slot] = time.Now()
		ring.push(uringSQE{opcode: op, flags: uringSQEFixedFile, fd: 0, off: uint64(off.get()),
			addr: uint64(uintptr(unsafe.Pointer(&mem[slot*s.Block]))), len: uint32(s.Block),
			userData: uint64(slot), bufIndex: uint16(slot)})
	}

	var lat megaio.Histogram
	var done, issued int64
	deadline := time.Now().Add(s.Duration)
	more := func() bool {
		if s.Requests > 0 {
			return issued < s.Requests
		}
		return issued&63 != 0 || time.Now().Before(deadline)
	}
	proc0, t0 := processCPU(), time.Now()
	for slot := 0; slot < s.Depth && more(); slot++ {
		issue(slot)
		issued++
	}
	var firstErr error
	for done < issued {
		if err := ring.enter(1); err != nil {
			return r, err
		}
		head, tail := *ring.cqHead, atomic.LoadUint32(ring.cqTail) // acquire: CQEs are written before the tail
		for ; head != tail; head++ {
			cqe := ring.cqeTab[head&ring.cqMask]
			slot := int(cqe.userData)
			done++
			if cqe.res < 0 && firstErr == nil {
				firstErr = fmt.Errorf("go-io_uring: request at slot %d: %w", slot, unix.Errno(-cqe.res))
			}
			lat.Record(time.Since(starts[slot]))
			if firstErr == nil && more() {
				issue(slot)
				issued++
			}
		}
		atomic.StoreUint32(ring.cqHead, head) // release: the kernel may reuse the CQEs
	}
	elapsed, cpu := time.Since(t0), processCPU()-proc0
	if firstErr != nil {
		return r, firstErr
	}
	r.fill(done, elapsed, &lat)
	r.CPUus = perReq(cpu, done)
	return r, nil
}
