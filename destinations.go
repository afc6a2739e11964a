package megaio

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileHandle names a file registered with a loop. Producers name files only
// by handle: a request can never reach a descriptor that was not registered.
type FileHandle uint32

// DestHandle names a destination: a region of a registered buffer.
type DestHandle uint32

// maxBufferSize is io_uring's limit for one registered buffer.
const maxBufferSize = 1 << 30

// Buffer is page-aligned anonymous memory registered with the loop's
// backend (io_uring registered buffer index Index). READs land in it and
// WRITEs come from it. It stays mapped until the loop is closed.
type Buffer struct {
	mem      []byte
	index    uint16
	devPtr   uint64 // device address, once the loop is mapped for a GPU
	internal bool   // the loop's own staging memory (devengine.go): never a destination
}

// DevicePointer is the buffer's address on the GPU the loop is mapped for
// (Loop.MapForGPU), or 0.
func (b *Buffer) DevicePointer() uint64 { return b.devPtr }

// Bytes is the buffer's memory. Bytes inside a destination that a request in
// flight reads into may change until its completion is published.
func (b *Buffer) Bytes() []byte { return b.mem }

// Index is the buffer's registered index.
func (b *Buffer) Index() uint16 { return b.index }

// BufferOptions shape NewBuffer's memory. Without options, a buffer of 2
// MiB or more asks for transparent huge pages (MADV_HUGEPAGE) before it is
// populated, so large READs land in few physically contiguous runs.
type BufferOptions struct {
	// Hugepages maps the buffer with 2 MiB pages from the reserved pool
	// (MAP_HUGETLB); it needs pages reserved in /proc/sys/vm/nr_hugepages.
	Hugepages bool
}

// fileEntry is one slot of the loop's file table; its index is the handle
// and the io_uring fixed-file index.
type fileEntry struct {
	fd     int // the loop's own dup of the caller's descriptor; -1 when free
	valid  bool
	lane   uint8 // which backend serves it (fuseLane: FUSE on an io_uring loop)
	inline bool  // memory-backed: READs up to Config.InlineMax are copied by the loop (inline.go)
}

// destination is one entry of the loop's destination table.
type destination struct {
	buf    uint16
	addr   uint64 // address of the destination's first byte (a device address for dev)
	length uint64
	valid  bool
	dev    *DeviceBuffer // a device destination (devicebuffer.go), or nil
}

// addDest puts d in the first free slot and returns its handle.
func (t *tables) addDest(d destination) DestHandle {
	for i := range t.dests {
		if !t.dests[i].valid {
			t.dests[i] = d
			return DestHandle(i)
		}
	}
	t.dests = append(t.dests, d)
	return DestHandle(len(t.dests) - 1)
}

// tables are the loop's registered files, buffers and destinations. Only
// the loop's thread reads or changes them (through commands), so the hot
// path reads them without locks.
type tables struct {
	files []fileEntry
	bufs  []*Buffer
	dests []destination

	calls   *callTable  // call destinations (calldest.go), or nil
	scratch destination // the call destination checkRange returned last
}

func newTables(nfiles, nbufs int) tables {
	t := tables{files: make([]fileEntry, nfiles), bufs: make([]*Buffer, nbufs)}
	for i := range t.files {
		t.files[i].fd = -1
	}
	return t
}

// RegisterFile registers f with the loop and returns its handle. The loop
// keeps its own duplicate of the descriptor, so f may be closed afterwards.
// On an io_uring loop, a file on a FUSE file system is served by a small
// pool of pread workers instead (see fuseLane in loop.go for the kernel
// defect this avoids). A file on tmpfs (while no swap is on), ramfs or
// hugetlbfs has its READs up to Config.InlineMax copied by the loop itself
// (inline.go).
// For O_DIRECT, open f with O_DIRECT and keep offsets, lengths and
// destination addresses aligned to the device's logical block size; an
// unaligned request completes with -EINVAL.
func (l *Loop) RegisterFile(f *os.File) (FileHandle, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, errorf("duplicating %s: %w", f.Name(), err)
	}
	var h FileHandle
	lane := uint8(0)
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil {
		st.Type = 0 // unknown: served as any file
	}
	if l.info.Kind == BackendIOUring && st.Type == unix.FUSE_SUPER_MAGIC {
		lane = fuseLane
	}
	inline := l.cfg.InlineMax > 0 && memoryBacked(st.Type)
	err = l.exec(func(cy *cycle) error {
		for i := range cy.tab.files {
			if cy.tab.files[i].valid {
				continue
			}
			be, err := cy.laneBackend(lane)
			if err != nil {
				return err
			}
			if err := be.setFile(uint32(i), fd); err != nil {
				return err
			}
			cy.tab.files[i] = fileEntry{fd: fd, valid: true, lane: lane, inline: inline}
			if err := cy.dev.registerFile(i, fd); err != nil {
				cy.dev.unregisterFile(i)
				cy.tab.files[i] = fileEntry{fd: -1}
				be.setFile(uint32(i), -1)
				return err
			}
			h = FileHandle(i)
			return nil
		}
		return errorf("%w: all %d file slots are taken; raise Config.MaxFiles", ErrTableFull, len(cy.tab.files))
	})
	if err != nil {
		unix.Close(fd)
		return 0, err
	}
	return h, nil
}

// laneBackend returns lane's backend, starting the FUSE lane's pool on
// first use. Runs on the loop's thread.
func (cy *cycle) laneBackend(lane uint8) (backend, error) {
	ln := &cy.lanes[lane]
	if ln.be == nil {
		p, err := openPool(min(cy.l.cfg.PoolWorkers, fuseLaneWorkers), cy.l.cfg.RingEntries, cy.l.cfg.MaxInflight, cy.l.cfg.MaxFiles)
		if err != nil {
			return nil, err
		}
		ln.be = p
		note := " + " + p.describe() + " for FUSE files"
		cy.l.fuseNote.Store(&note)
	}
	return ln.be, nil
}

// UnregisterFile removes a file. Requests claimed afterwards fail with
// -EBADF; requests already in flight finish (the kernel holds its own
// reference to the file).
func (l *Loop) UnregisterFile(h FileHandle) error {
	return l.exec(func(cy *cycle) error {
		if uint32(h) >= uint32(len(cy.tab.files)) || !cy.tab.files[h].valid {
			return errorf("%w: file handle %d", ErrNotRegistered, h)
		}
		e := &cy.tab.files[h]
		e.valid = false
		cy.dev.unregisterFile(int(h))
		err := cy.lanes[e.lane].be.setFile(uint32(h), -1)
		unix.Close(e.fd)
		e.fd = -1
		return err
	})
}

// NewBuffer maps size bytes (rounded up to a page) and registers them with
// the loop's backend. Registered memory is pinned and counts against
// RLIMIT_MEMLOCK (ErrMemlock says how to raise it) unless the process has
// CAP_IPC_LOCK. A buffer is at most 1 GiB.
func (l *Loop) NewBuffer(size int, opts BufferOptions) (*Buffer, error) {
	page := os.Getpagesize()
	size = (size + page - 1) &^ (page - 1)
	if size <= 0 || size > maxBufferSize {
		return nil, configError("buffer size %d: want 1 byte to 1 GiB", size)
	}
	mem, err := mapBuffer(size, opts.Hugepages)
	if err != nil {
		if opts.Hugepages {
			return nil, errorf("mapping %d bytes of hugepages (reserve them in /proc/sys/vm/nr_hugepages): %w", size, err)
		}
		return nil, errorf("mapping a %d-byte buffer: %w", size, err)
	}
	b := &Buffer{mem: mem}
	err = l.exec(func(cy *cycle) error { return cy.installBuffer(b) })
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	return b, nil
}

// installBuffer gives b a slot of the buffer table, registers it with the
// backend and, when the loop is mapped for a GPU, with CUDA. Runs on the
// loop's thread.
func (cy *cycle) installBuffer(b *Buffer) error {
	for i := range cy.tab.bufs {
		if cy.tab.bufs[i] != nil {
			continue
		}
		if err := cy.lanes[0].be.setBuffer(uint16(i), b.mem); err != nil {
			return err
		}
		if cy.gpu != nil && !b.internal {
			d, err := cy.gpu.RegisterHost(b.mem)
			if err != nil {
				cy.lanes[0].be.setBuffer(uint16(i), nil)
				return err
			}
			b.devPtr = d
		}
		b.index = uint16(i)
		cy.tab.bufs[i] = b
		return nil
	}
	return errorf("%w: all %d buffer slots are taken; raise Config.MaxBuffers", ErrTableFull, len(cy.tab.bufs))
}

// FreeBuffer unregisters b and unmaps its memory, giving its slot back. It
// refuses with ErrInUse while a destination of b remains (RemoveDestination
// first) or a request in flight uses it (free it once they complete), and
// with ErrNotRegistered for a buffer of no loop or of another. Afterwards
// b.Bytes() is nil, and a slice of the old memory must not be touched: it
// is unmapped, as after unix.Munmap.
func (l *Loop) FreeBuffer(b *Buffer) error { return l.freeBuffer(b, false) }

// freeBuffer is FreeBuffer; with dropDests it removes b's destinations
// itself, in the same step (once no request in flight uses b).
func (l *Loop) freeBuffer(b *Buffer, dropDests bool) error {
	if b == nil {
		return configError("FreeBuffer: a nil *Buffer")
	}
	return l.exec(func(cy *cycle) error {
		if int(b.index) >= len(cy.tab.bufs) || cy.tab.bufs[b.index] != b {
			return errorf("%w: the buffer belongs to no loop or another loop", ErrNotRegistered)
		}
		if b.internal {
			return errorf("%w: the buffer is the loop's own", ErrInUse)
		}
		for i := range cy.recs {
			if r := &cy.recs[i]; r.live && r.op.spec().transfer() && !r.dev && r.buf == b.index {
				return errorf("%w: a request in flight (ticket %d) uses the buffer", ErrInUse, r.ticket)
			}
		}
		for h := range cy.tab.dests {
			if d := &cy.tab.dests[h]; d.valid && d.dev == nil && d.buf == b.index {
				if !dropDests {
					return errorf("%w: destination %d of the buffer remains; RemoveDestination it first", ErrInUse, h)
				}
				d.valid = false
			}
		}
		var err error
		if cy.gpu != nil && b.devPtr != 0 {
			err = cy.gpu.UnregisterHost(b.mem)
			b.devPtr = 0
		}
		cy.uninstallBuffer(b)
		return err
	})
}

// uninstallBuffer undoes installBuffer for a buffer no request can use (a
// failed set-up, FreeBuffer) and unmaps it. Runs on the loop's thread.
func (cy *cycle) uninstallBuffer(b *Buffer) {
	cy.lanes[0].be.setBuffer(b.index, nil)
	cy.tab.bufs[b.index] = nil
	unix.Munmap(b.mem)
	b.mem = nil
}

// AddDestination makes [base, base+length) of b a destination and returns
// its handle. Every request's range is checked against it before it is
// submitted (-EFAULT when outside).
func (l *Loop) AddDestination(b *Buffer, base, length uint64) (DestHandle, error) {
	if b == nil || base > uint64(len(b.mem)) || length == 0 || length > uint64(len(b.mem))-base {
		return 0, configError("destination [%d, +%d) does not fit the buffer", base, length)
	}
	var h DestHandle
	err := l.exec(func(cy *cycle) error {
		if int(b.index) >= len(cy.tab.bufs) || cy.tab.bufs[b.index] != b {
			return errorf("%w: the buffer belongs to no loop or another loop", ErrNotRegistered)
		}
		if b.internal {
			return errorf("%w: the buffer is the loop's own", ErrInUse)
		}
		h = cy.tab.addDest(destination{buf: b.index, addr: uint64(uintptr(unsafe.Pointer(&b.mem[0]))) + base, length: length, valid: true})
		return nil
	})
	return h, err
}

// RemoveDestination removes a destination; requests claimed afterwards fail
// with -ENXIO, requests in flight finish.
func (l *Loop) RemoveDestination(h DestHandle) error {
	return l.exec(func(cy *cycle) error {
		if uint32(h) >= uint32(len(cy.tab.dests)) || !cy.tab.dests[h].valid {
			return errorf("%w: destination handle %d", ErrNotRegistered, h)
		}
		cy.tab.dests[h].valid = false
		return nil
	})
}

// release closes the loop's descriptors and unmaps its buffers. It runs
// after the backend is closed, when nothing can write into a buffer.
func (t *tables) release() {
	for i := range t.files {
		if t.files[i].fd >= 0 {
			unix.Close(t.files[i].fd)
		}
		t.files[i] = fileEntry{fd: -1}
	}
	for i, b := range t.bufs {
		if b != nil {
			unix.Munmap(b.mem)
			b.mem = nil
			t.bufs[i] = nil
		}
	}
	t.dests = nil
}
