package megaio

// The short path for Go code that wants file bytes in host or device memory
// without writing a producer: a Client owns a queue, a loop serving it and
// the queue's host producer, and gives files ReadAt and WriteAt.
//
//	c, err := megaio.NewClient(megaio.ClientConfig{})
//	f, err := c.OpenFile("weights.bin", os.O_RDONLY, 0)
//	n, err := f.ReadAt(p, off)             // any []byte, in place: io.ReaderAt
//	n, err = f.ReadAtContext(ctx, p, off)  // ctx ends it early, IO in flight included
//	buf, err := c.NewBuffer(64 << 20)      // registered: no copy
//	fut := f.ReadAtAsync(buf.Bytes(), off) // runs while you do other work
//	n, err = fut.Wait(ctx)
//	err = c.Close(ctx)                     // ctx bounds the wait for IO in flight
//
// Requests longer than ClientConfig.TaskSize are split into pieces of that
// size, all published at once, so the loop runs them in parallel. A GPU's
// own producers use the same loop through c.Loop() and c.Queue().

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Client's table sizes where ClientConfig.Loop leaves them at zero
// (Loop's own defaults are 64 files and 16 buffers).
const (
	clientMaxFiles   = 4096
	clientMaxBuffers = 1024
)

// ClientConfig sets up a Client. Zero fields take the environment's value
// (MEGAIO_*, see EnvBackend) and then the defaults: a Client's loop has
// room for 4096 file slots (an O_DIRECT file takes two) and 1024 buffers
// unless Loop says otherwise; past them OpenFile and NewBuffer fail with
// ErrTableFull.
type ClientConfig struct {
	Loop  Config      // the loop's settings
	Queue QueueConfig // the queue's size
	// TaskSize is the largest piece a request is split into (default 4
	// MiB; MEGAIO_TASK_SIZE). At least 4 KiB, a multiple of 4 KiB.
	TaskSize int
	// NoCallerIO sends every ReadAt and WriteAt to the loop. By default a
	// call first moves on the caller's goroutine what it can without
	// waiting on a device (cached bytes, files in memory: callerio.go)
	// and hands the loop only the rest.
	NoCallerIO bool
}

// Client is a loop, its queue and a host producer for Go code. Its methods
// are safe for concurrent use.
type Client struct {
	q    *Queue
	l    *Loop
	p    *HostProducer
	task uint64
	// noCallerIO: ClientConfig.NoCallerIO.
	noCallerIO bool

	// Two locks order use against Close. publishing is held (shared)
	// while a request's pieces are published, briefly; Close takes it to
	// set closing, after which nothing is published. mapped is held
	// (shared) while a Future waits, however long; Close takes it only
	// once the loop has stopped, when every published request has its
	// result and those waits end, and then unmaps the queue (closed).
	// So a Wait blocked on a slow request never delays Close's deadline.
	publishing sync.RWMutex
	closing    bool
	closingNow atomic.Bool // closing, for the calls' lock-free first look
	mapped     sync.RWMutex
	closed     bool

	calls     *callTable    // plain slices as call destinations (calldest.go)
	inPlace   atomic.Uint64 // ClientStats.InPlace
	pageCache atomic.Uint64 // ClientStats.PageCache
	cancelled atomic.Uint64 // ClientStats.Cancelled
	callerIO  atomic.Uint64 // ClientStats.CallerIO
	callerB   atomic.Uint64 // ClientStats.CallerBytes

	mu   sync.Mutex     // guards the tables below
	bufs []clientBuffer // buffers from NewBuffer
	devs map[*DeviceBuffer]DestHandle
}

type clientBuffer struct {
	base, end uintptr
	dest      DestHandle
}

// NewClient makes a queue and a loop, starts the loop and returns the
// Client. Errors wrap ErrConfig for bad settings (including a MEGAIO_*
// variable that does not parse), ErrIOUringUnavailable, ErrMemlock and the
// others of NewLoop.
func NewClient(cfg ClientConfig) (*Client, error) {
	taskEnv, fromEnv := lookupEnv(EnvTaskSize)
	fromEnv = fromEnv && cfg.TaskSize == 0
	if err := envSize(EnvTaskSize, &cfg.TaskSize); err != nil {
		return nil, err
	}
	if cfg.TaskSize == 0 {
		cfg.TaskSize = 4 << 20
	}
	if cfg.TaskSize < 4096 || cfg.TaskSize%4096 != 0 || cfg.TaskSize > maxBufferSize {
		err := configError("TaskSize %d: want a multiple of 4 KiB up to 1 GiB", cfg.TaskSize)
		if fromEnv {
			err = envError(EnvTaskSize, taskEnv, err)
		}
		return nil, err
	}
	// A Client opens files and buffers as its caller asks, so its tables
	// are sized for many (an O_DIRECT file takes two file slots); the
	// slots are sparse, so size costs next to nothing until used.
	if cfg.Loop.MaxFiles == 0 {
		cfg.Loop.MaxFiles = clientMaxFiles
	}
	if cfg.Loop.MaxBuffers == 0 {
		cfg.Loop.MaxBuffers = clientMaxBuffers
	}
	q, err := NewQueue(cfg.Queue)
	if err != nil {
		return nil, err
	}
	l, err := NewLoop(q, cfg.Loop)
	if err != nil {
		q.Close()
		return nil, err
	}
	c := &Client{q: q, l: l, task: uint64(cfg.TaskSize), devs: map[*DeviceBuffer]DestHandle{}, calls: newCallTable(q),
		noCallerIO: cfg.NoCallerIO}
	err = l.exec(func(cy *cycle) error { cy.tab.calls = c.calls; return nil })
	if err == nil {
		c.p, err = q.HostProducer()
	}
	if err == nil {
		err = l.Start()
	}
	if err != nil {
		l.Close()
		q.Close()
		return nil, err
	}
	return c, nil
}

// ClientStats count how a Client's ReadAt and WriteAt calls (and their
// Context forms) moved their bytes. No call copies: there is no staging.
type ClientStats struct {
	// CallerIO: calls served wholly on the caller's goroutine, without
	// the loop (cached bytes, files in memory: ClientConfig.NoCallerIO);
	// CallerBytes: the bytes moved there, by those calls and by the first
	// parts of calls whose rest went to the loop.
	CallerIO, CallerBytes uint64
	// InPlace: calls on plain slices (outside the Client's buffers), read
	// into or written from the caller's slice itself, pinned for the call.
	InPlace uint64
	// PageCache: calls on an O_DIRECT file whose slice, offset or length
	// is not aligned as the file needs, sent through the file's second
	// descriptor, opened without O_DIRECT (so through the page cache).
	PageCache uint64
	// Cancelled: calls whose context ended before their IO did, and that
	// asked the loop to cancel it.
	Cancelled uint64
}

// Stats returns the Client's counters; the loop's are Loop().Stats().
func (c *Client) Stats() ClientStats {
	return ClientStats{InPlace: c.inPlace.Load(), PageCache: c.pageCache.Load(), Cancelled: c.cancelled.Load(),
		CallerIO: c.callerIO.Load(), CallerBytes: c.callerB.Load()}
}

// Loop is the client's loop: for its Stats, Backend, MapForGPU and the
// registrations a GPU producer needs.
func (c *Client) Loop() *Loop { return c.l }

// Queue is the client's queue, for GPU producers (Loop().MapForGPU).
func (c *Client) Queue() *Queue { return c.q }

// Close stops the loop, waiting for requests in flight until ctx ends (then
// they are cancelled and the error wraps ctx.Err()), and closes the loop
// and the queue; Waits under way return. After an error
// wrapping ErrStopIncomplete (the kernel still holds requests) nothing is
// closed: call Close again. Requests cut short complete with -ECANCELED
// (or ErrStopped, never claimed); a Future first waited for after Close
// returns ErrClosed, since its results went with the queue.
func (c *Client) Close(ctx context.Context) error {
	c.mapped.RLock()
	done := c.closed
	c.mapped.RUnlock()
	if done {
		return nil
	}
	c.publishing.Lock()
	c.closing = true // no request is being published now, and none will be
	c.closingNow.Store(true)
	c.publishing.Unlock()
	stopErr := c.l.Stop(ctx)
	if errors.Is(stopErr, ErrStopIncomplete) {
		return stopErr
	}
	// Every published request has its result: the waits under way end.
	c.mapped.Lock()
	defer c.mapped.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return errors.Join(stopErr, c.l.Close(), c.q.Close())
}

// NewBuffer maps a registered host buffer of size bytes (Loop.NewBuffer).
// ReadAt, WriteAt and their Async forms move bytes straight between a file
// and any slice of it, with no copy.
func (c *Client) NewBuffer(size int) (*Buffer, error) {
	if size <= 0 {
		return nil, configError("Client.NewBuffer(%d): want 1 byte to 1 GiB", size)
	}
	b, err := c.l.NewBuffer(size, BufferOptions{})
	if err != nil {
		return nil, err
	}
	d, err := c.l.AddDestination(b, 0, uint64(len(b.mem)))
	if err != nil {
		return nil, err
	}
	base := uintptr(unsafe.Pointer(&b.mem[0]))
	c.mu.Lock()
	c.bufs = append(c.bufs, clientBuffer{base: base, end: base + uintptr(len(b.mem)), dest: d})
	c.mu.Unlock()
	return b, nil
}

// FreeBuffer gives back a buffer from NewBuffer: its memory is unmapped
// and its slot freed. It refuses with ErrInUse while a call moves bytes
// through it (free it once they have returned); afterwards a slice of its
// old memory must not be touched.
func (c *Client) FreeBuffer(b *Buffer) error {
	if b == nil {
		return configError("Client.FreeBuffer: a nil *Buffer")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, cb := range c.bufs {
		if len(b.mem) > 0 && cb.base == uintptr(unsafe.Pointer(&b.mem[0])) {
			if err := c.l.freeBuffer(b, true); err != nil {
				return err
			}
			c.bufs = append(c.bufs[:i], c.bufs[i+1:]...)
			return nil
		}
	}
	return errorf("%w: the buffer is not one of this client's", ErrNotRegistered)
}

// NewDeviceBuffer allocates size bytes on g for the client's files to read
// into and write from (Loop.NewDeviceBuffer: the warning says when the path
// is not the one asked for).
func (c *Client) NewDeviceBuffer(g *GPU, size int) (*DeviceBuffer, *PathWarning, error) {
	b, warn, err := c.l.NewDeviceBuffer(g, size)
	if err != nil {
		return nil, nil, err
	}
	d, err := c.l.AddDeviceDestination(b, 0, uint64(size))
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	c.devs[b] = d
	c.mu.Unlock()
	return b, warn, nil
}

// File is a file registered with a Client's loop.
type File struct {
	c      *Client
	h      FileHandle
	name   string
	fd     int         // the Client's own descriptor, for Stat and the caller's transfers (the loop has another)
	closed atomic.Bool // Close was called
	// appendMode: opened with O_APPEND, where WriteAt is refused, as
	// os.File refuses it (the kernel would ignore the offset).
	appendMode bool
	// caller is the file's callerMode (callerio.go) for READs and WRITEs:
	// how its calls may move bytes on the caller's goroutine.
	caller [2]atomic.Uint32

	// An O_DIRECT file: the alignment it needs (statx's STATX_DIOALIGN, or
	// 4 KiB, which covers every logical block size, where the kernel does
	// not say), and a second registration of the file opened without
	// O_DIRECT, for the calls that are not aligned (KvikIO's way). When
	// the second open failed, buffered is false and unaligned calls get
	// the kernel's EINVAL, with bufErr saying why.
	direct             bool
	memAlign, offAlign int64
	buffered           bool
	hb                 FileHandle
	bufErr             error
}

// OpenFile opens name (os.OpenFile's flags, O_DIRECT included) and
// registers it. The Client keeps its own descriptor.
func (c *Client) OpenFile(name string, flag int, perm os.FileMode) (*File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return c.Register(f)
}

// Register registers an open file; the Client keeps a duplicate of its
// descriptor, so f may be closed. A file that cannot be read or written at
// an offset (a pipe, socket or terminal) is refused with an error matching
// unix.ESPIPE, as os.File.ReadAt fails on one.
func (c *Client) Register(f *os.File) (*File, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	// Through Control, not f.Fd(), which would put f in blocking mode.
	fd, fl := -1, 0
	var perr, derr error
	if err := raw.Control(func(sfd uintptr) {
		// A zero-length pread: ESPIPE where offsets mean nothing.
		if _, perr = unix.Pread(int(sfd), nil, 0); errors.Is(perr, unix.ESPIPE) {
			return
		}
		if fd, derr = unix.FcntlInt(sfd, unix.F_DUPFD_CLOEXEC, 0); derr == nil {
			fl, derr = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		}
	}); err != nil {
		return nil, err
	}
	switch {
	case errors.Is(perr, unix.ESPIPE):
		return nil, errorf("registering %s: %w (a pipe, socket or terminal has no offsets to read at)",
			f.Name(), perr)
	case derr != nil:
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, errorf("duplicating %s: %w", f.Name(), derr)
	}
	h, err := c.l.RegisterFile(f)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	file := &File{c: c, h: h, name: f.Name(), fd: fd, direct: fl&unix.O_DIRECT != 0, appendMode: fl&unix.O_APPEND != 0}
	mode := callerModeOf(fd, fl, c.noCallerIO)
	file.caller[0].Store(uint32(mode))
	file.caller[1].Store(uint32(mode))
	if file.direct {
		file.memAlign, file.offAlign = dioAlign(fd)
		file.hb, file.bufErr = c.registerBuffered(fd, fl, f.Name())
		file.buffered = file.bufErr == nil
	}
	// A File dropped without Close gives its slots back, as an os.File
	// dropped gives its descriptor back.
	runtime.SetFinalizer(file, func(f *File) {
		if !f.closed.Load() {
			f.Close()
		}
		unix.Close(f.fd)
	})
	return file, nil
}

// dioAlign is the alignment O_DIRECT IO on fd needs in memory and in the
// file (offset and length): statx's STATX_DIOALIGN (Linux 6.1), else 4 KiB.
func dioAlign(fd int) (mem, off int64) {
	var st unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st) == nil &&
		st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_mem_align > 0 && st.Dio_offset_align > 0 {
		return int64(st.Dio_mem_align), int64(st.Dio_offset_align)
	}
	return 4096, 4096
}

// registerBuffered opens the O_DIRECT file fd again without O_DIRECT
// (through /proc/self/fd, with the same access mode) and registers that
// descriptor, for the calls O_DIRECT would refuse. The kernel keeps the two
// coherent: an O_DIRECT read writes back the range's dirty pages first, and
// an O_DIRECT write drops the range's cached pages.
func (c *Client) registerBuffered(fd, flags int, name string) (FileHandle, error) {
	bf, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), flags&unix.O_ACCMODE|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, errorf("opening %s a second time without O_DIRECT: %w", name, err)
	}
	defer bf.Close()
	return c.l.RegisterFile(bf)
}

// Name is the name the file was opened with.
func (f *File) Name() string { return f.name }

// Stat returns the file's FileInfo (fstat of the Client's descriptor), as
// os.File.Stat does; Size() is its length now.
func (f *File) Stat() (os.FileInfo, error) {
	if f.closed.Load() {
		return nil, &os.PathError{Op: "stat", Path: f.name, Err: os.ErrClosed}
	}
	var st syscall.Stat_t // what os.File's FileInfo.Sys() holds
	err := syscall.Fstat(f.fd, &st)
	runtime.KeepAlive(f) // its finalizer closes f.fd
	if err != nil {
		return nil, &os.PathError{Op: "stat", Path: f.name, Err: err}
	}
	return fileInfo{name: filepath.Base(f.name), st: st}, nil
}

// Sync commits the file's data to stable storage, as os.File.Sync does:
// an FSYNC through the loop (fdatasync: the data and what is needed to read
// it back, as the loop's OpFsync does).
func (f *File) Sync() error { return f.SyncContext(context.Background()) }

// SyncContext is Sync with a context that bounds the wait.
func (f *File) SyncContext(ctx context.Context) error {
	if f.closed.Load() {
		return &os.PathError{Op: "sync", Path: f.name, Err: os.ErrClosed}
	}
	fu := &Future{f: f, op: OpFsync}
	var full waitSteps
	for {
		t, err := f.c.publish(Request{Op: OpFsync, File: f.h})
		if errors.Is(err, ErrFull) || errors.Is(err, ErrBusy) {
			if err := ctx.Err(); err != nil {
				return f.errorf(OpFsync, 0, "%w", err)
			}
			full.step()
			continue
		}
		if err != nil {
			return f.errorf(OpFsync, 0, "%w", err)
		}
		fu.pieces = []piece{{t: t}}
		break
	}
	_, err := fu.wait(ctx, false)
	return err
}

// Fd is the Client's own descriptor of the file (not the one it was
// registered from): valid until Close, and not to be closed by the caller.
func (f *File) Fd() uintptr { return uintptr(f.fd) }

// Close unregisters the file; requests in flight on it finish. A second
// Close returns an error matching os.ErrClosed, as os.File's does, and so
// does every call on the file after the first.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return &os.PathError{Op: "close", Path: f.name, Err: os.ErrClosed}
	}
	err := f.c.l.UnregisterFile(f.h)
	if f.buffered {
		err = errors.Join(err, f.c.l.UnregisterFile(f.hb))
	}
	return err
}

// ReadAt reads len(p) bytes at off into p (io.ReaderAt: fewer bytes come
// with io.EOF at the end of the file, or with the failing request's error).
// p is read into in place, with no copy: a p inside a buffer from
// NewBuffer as it is, any other p pinned for the call. On an O_DIRECT file,
// a call whose p, off or len(p) is not aligned as the file needs goes
// through the file's second, buffered descriptor (ClientStats.PageCache).
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.transfer(context.Background(), OpRead, p, off)
}

// WriteAt writes p at off (io.WriterAt), like ReadAt the other way.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	return f.transfer(context.Background(), OpWrite, p, off)
}

// ReadAtContext is ReadAt that ctx can end early. When ctx ends before the
// read has completed, the loop is asked to cancel what is still in flight
// (io_uring's ASYNC_CANCEL; the pool signals its worker), ReadAtContext
// waits until every piece has ended, and returns the bytes read before
// the first piece that did not finish, with an error wrapping ctx.Err().
// A read that was already being copied runs to its end: a read that
// finished despite ctx returns its bytes and no error. Either way p is the
// caller's again when it returns.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return f.transfer(ctx, OpRead, p, off)
}

// WriteAtContext is WriteAt that ctx can end early, as ReadAtContext.
// Bytes of a cancelled write may or may not have reached the file.
func (f *File) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return f.transfer(ctx, OpWrite, p, off)
}

func (f *File) transfer(ctx context.Context, op Op, p []byte, off int64) (int, error) {
	switch {
	case f.closed.Load():
		return 0, f.errorf(op, off, "%w", os.ErrClosed)
	case f.c.closingNow.Load():
		return 0, f.errorf(op, off, "%w: the client", ErrClosed)
	case off < 0:
		return 0, &os.PathError{Op: map[Op]string{OpRead: "readat", OpWrite: "writeat"}[op], Path: f.name,
			Err: errNegativeOffset}
	case op == OpWrite && f.appendMode:
		return 0, f.errorf(op, off, "%w", ErrAppendWriteAt)
	case len(p) == 0:
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, f.errorf(op, off, "%w", err)
	}
	// First what moves without waiting, here (callerio.go).
	var early int
	if f.caller[callerIndex(op)].Load() != uint32(callerNever) {
		n, over, eof, _ := f.callerTransfer(op, p, off)
		f.c.callerB.Add(uint64(n))
		if over {
			f.c.callerIO.Add(1)
			if eof {
				return n, io.EOF
			}
			return n, nil
		}
		early, p, off = n, p[n:], off+int64(n)
	}
	n, err := f.loopTransfer(ctx, op, p, off)
	return early + n, err
}

// loopTransfer is a ReadAt or WriteAt through the loop.
func (f *File) loopTransfer(ctx context.Context, op Op, p []byte, off int64) (int, error) {
	h, err := f.handleFor(op, p, off)
	if err != nil {
		return 0, err
	}
	d, base, ok := f.c.hostDest(p)
	if !ok {
		// A plain slice: a call destination for it, pinned, until every
		// piece has completed (calldest.go). Wait wins only when every
		// entry is in use: that many calls in flight at once.
		addr := uintptr(unsafe.Pointer(&p[0]))
		var w waitSteps
		for d, ok = f.c.calls.acquire(addr, len(p)); !ok; d, ok = f.c.calls.acquire(addr, len(p)) {
			if err := ctx.Err(); err != nil {
				return 0, f.errorf(op, off, "%w", err)
			}
			w.step()
		}
		var pin runtime.Pinner
		pin.Pin(&p[0]) // the kernel writes or reads it until every piece completes
		defer func() {
			// wait returned with every published piece complete (or the
			// client closed, after its loop stopped with nothing in the
			// kernel): the loop is done with p.
			pin.Unpin()
			f.c.calls.release(d)
		}()
		f.c.inPlace.Add(1)
	}
	n, err := f.startWaiting(ctx, h, op, d, base, len(p), off).wait(ctx, true)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		f.c.cancelled.Add(1)
	}
	return n, err
}

// handleFor is the registration a call on p at off goes through: the
// file's own, or for an O_DIRECT file and a call O_DIRECT would refuse, the
// buffered one.
// When the buffered one could not be opened, such a call fails here with
// an error matching unix.EINVAL that says why, rather than with the
// kernel's bare EINVAL.
func (f *File) handleFor(op Op, p []byte, off int64) (FileHandle, error) {
	if !f.direct {
		return f.h, nil
	}
	addr := int64(uintptr(unsafe.Pointer(&p[0])))
	if addr%f.memAlign == 0 && off%f.offAlign == 0 && int64(len(p))%f.offAlign == 0 {
		return f.h, nil
	}
	if !f.buffered {
		return 0, f.errorf(op, off, "%w: O_DIRECT needs the slice aligned to %d bytes and the offset and length to %d, "+
			"and the file's buffered descriptor is missing (%v)", unix.EINVAL, f.memAlign, f.offAlign, f.bufErr)
	}
	f.c.pageCache.Add(1)
	return f.hb, nil
}

// ReadAtAsync starts reading len(p) bytes at off into p, which must lie
// inside a buffer from NewBuffer (else the future fails with
// ErrNotRegistered): p belongs to the read until Wait returns.
func (f *File) ReadAtAsync(p []byte, off int64) *Future {
	return f.async(OpRead, p, off)
}

// WriteAtAsync starts writing p at off, like ReadAtAsync the other way.
func (f *File) WriteAtAsync(p []byte, off int64) *Future {
	return f.async(OpWrite, p, off)
}

func (f *File) async(op Op, p []byte, off int64) *Future {
	d, base, ok := f.c.hostDest(p)
	if !ok && len(p) > 0 {
		return &Future{done: true, err: f.errorf(op, off, "%w: the slice is not inside a buffer from Client.NewBuffer", ErrNotRegistered)}
	}
	h := f.h
	if len(p) > 0 {
		var err error
		if h, err = f.handleFor(op, p, off); err != nil {
			return &Future{done: true, err: err}
		}
	}
	return f.start(h, op, d, base, len(p), off)
}

// ReadToDevice starts reading n bytes at file offset off into b at
// bufOff; b comes from the Client's NewDeviceBuffer.
func (f *File) ReadToDevice(b *DeviceBuffer, bufOff uint64, n int, off int64) *Future {
	return f.device(OpRead, b, bufOff, n, off)
}

// WriteFromDevice starts writing n bytes of b at bufOff to file offset off.
func (f *File) WriteFromDevice(b *DeviceBuffer, bufOff uint64, n int, off int64) *Future {
	return f.device(OpWrite, b, bufOff, n, off)
}

func (f *File) device(op Op, b *DeviceBuffer, bufOff uint64, n int, off int64) *Future {
	if b == nil {
		return &Future{f: f, op: op, off: off, done: true, err: f.errorf(op, off, "%w: a nil *DeviceBuffer", ErrConfig)}
	}
	f.c.mu.Lock()
	d, ok := f.c.devs[b]
	f.c.mu.Unlock()
	if !ok {
		return &Future{done: true, err: f.errorf(op, off, "%w: the device buffer is not from Client.NewDeviceBuffer", ErrNotRegistered)}
	}
	return f.start(f.h, op, d, bufOff, n, off)
}

// hostDest finds the client buffer holding p: its destination and p's
// offset in it.
func (c *Client) hostDest(p []byte) (DestHandle, uint64, bool) {
	if len(p) == 0 {
		return 0, 0, false
	}
	start := uintptr(unsafe.Pointer(&p[0]))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bufs {
		if start >= b.base && start+uintptr(len(p)) <= b.end {
			return b.dest, uint64(start - b.base), true
		}
	}
	return 0, 0, false
}

func (f *File) errorf(op Op, off int64, format string, args ...any) error {
	return errorf("%v %s at %d: %w", op, f.name, off, fmt.Errorf(format, args...))
}

// Future is a request started by an Async call: its pieces are in flight.
type Future struct {
	mu     sync.Mutex
	f      *File
	op     Op
	off    int64
	pieces []piece
	done   bool
	n      int
	err    error
}

type piece struct {
	t    Ticket
	n    uint64
	res  Result
	err  error // ErrStopped: the loop stopped before claiming it
	done bool
}

// start publishes the pieces of one request: n bytes at offset off of
// the file's registration h to or from destination d at dOff. A piece that
// cannot be published (the loop stopped, every completion id held) ends the
// request there: Wait reports what the published pieces did, then that
// error. (An Async call has nothing to wait with: ErrBusy is its answer when
// the caller holds every id in futures not yet waited for.)
func (f *File) start(h FileHandle, op Op, d DestHandle, dOff uint64, n int, off int64) *Future {
	return f.startWaiting(nil, h, op, d, dOff, n, off)
}

// startWaiting is start for a call that waits for its result (ReadAt,
// WriteAt): load is backpressure, not an error. When every completion id
// is held, it collects this call's own oldest piece in flight, which frees
// its id, or, holding none, waits for other calls to free theirs, until
// ctx ends.
func (f *File) startWaiting(ctx context.Context, h FileHandle, op Op, d DestHandle, dOff uint64, n int, off int64) *Future {
	fu := &Future{f: f, op: op, off: off}
	if f.closed.Load() {
		fu.done, fu.err = true, f.errorf(op, off, "%w", os.ErrClosed)
		return fu
	}
	if off < 0 || n < 0 {
		fu.done, fu.err = true, f.errorf(op, off, "%w: negative offset or length", ErrConfig)
		return fu
	}
	fu.pieces = make([]piece, 0, (uint64(n)+f.c.task-1)/f.c.task)
	var full waitSteps
	for at := uint64(0); at < uint64(n); {
		size := min(f.c.task, uint64(n)-at)
		t, err := f.c.publish(Request{Op: op, File: h, Dest: d, FileOffset: uint64(off) + at, DestOffset: dOff + at, Length: size})
		if errors.Is(err, ErrFull) {
			full.step() // the loop has not claimed a lap back yet
			continue
		}
		if errors.Is(err, ErrBusy) && ctx != nil {
			if werr := fu.collectOldest(ctx); werr == nil {
				continue
			} else {
				err = werr
			}
		}
		if err != nil {
			fu.err = f.errorf(op, off+int64(at), "%w", err)
			break
		}
		fu.pieces = append(fu.pieces, piece{t: t, n: size})
		at += size
	}
	if len(fu.pieces) == 0 {
		fu.done = true
	}
	return fu
}

// collectOldest frees a completion id for the next piece of fu: it waits
// for fu's oldest piece not yet collected, or, when fu has none in flight,
// for a moment (other calls collect theirs). It fails only when ctx ends
// or the client closes.
func (fu *Future) collectOldest(ctx context.Context) error {
	c := fu.f.c
	for i := range fu.pieces {
		pc := &fu.pieces[i]
		if pc.done {
			continue
		}
		c.mapped.RLock()
		defer c.mapped.RUnlock()
		if c.closed {
			return errorf("%w: the client", ErrClosed)
		}
		res, err := c.p.WaitContext(ctx, pc.t)
		if err != nil && ctx.Err() != nil {
			return err // wait, with cancel, ends the pieces in flight
		}
		pc.res, pc.err, pc.done = res, err, true
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.isClosing() {
		return errorf("%w: the client", ErrClosed)
	}
	time.Sleep(50 * time.Microsecond)
	return nil
}

// isClosing reports whether Close has begun.
func (c *Client) isClosing() bool {
	c.publishing.RLock()
	defer c.publishing.RUnlock()
	return c.closing
}

// publish publishes one piece unless the client is closing. It never waits
// for room in the ring (ErrFull): the caller waits outside the lock, so
// Close is never kept behind a full ring.
func (c *Client) publish(r Request) (Ticket, error) {
	c.publishing.RLock()
	defer c.publishing.RUnlock()
	if c.closing {
		return Ticket{}, errorf("%w: the client", ErrClosed)
	}
	return c.p.TrySubmit(r)
}

// Wait waits for every piece and returns the bytes moved: the pieces'
// total up to the first that came back short or failed. A READ that ends at
// the end of the file returns io.EOF with the bytes before it; a short
// WRITE returns io.ErrShortWrite; a failed piece its errno
// (errors.Is(err, unix.EIO)). When ctx ends first, Wait returns an error
// wrapping ctx.Err() and the future stays valid: wait again to collect it
// (until then its pieces hold completion ids).
func (fu *Future) Wait(ctx context.Context) (int, error) {
	return fu.wait(ctx, false)
}

// wait is Wait; with cancel, a ctx that ends first asks the loop to cancel
// the pieces not yet complete, waits for all of them, and returns the bytes
// moved with an error wrapping ctx.Err() (none when every piece completed
// in full anyway).
func (fu *Future) wait(ctx context.Context, cancel bool) (int, error) {
	fu.mu.Lock()
	defer fu.mu.Unlock()
	if fu.done {
		return fu.n, fu.err
	}
	c := fu.f.c
	c.mapped.RLock()
	defer c.mapped.RUnlock()
	if c.closed { // the results went with the queue
		return 0, fu.f.errorf(fu.op, fu.off, "%w: the client", ErrClosed)
	}
	var ended error // ctx.Err(), once the pieces left were asked to end
	for i := range fu.pieces {
		pc := &fu.pieces[i]
		if pc.done {
			continue
		}
		if ended == nil {
			res, err := c.p.WaitContext(ctx, pc.t)
			if err == nil || ctx.Err() == nil {
				pc.res, pc.err, pc.done = res, err, true
				continue
			}
			if !cancel {
				return 0, fu.f.errorf(fu.op, fu.off, "%w", err) // names the file and offset, not a ticket
			}
			ended = ctx.Err()
			fu.cancelFrom(i)
			if pc.done {
				continue
			}
		}
		pc.res, pc.err = c.p.WaitContext(context.Background(), pc.t)
		pc.done = true
	}
	fu.done = true
	fu.n, fu.err = fu.total()
	if ended != nil && !fu.complete() {
		fu.err = fu.f.errorf(fu.op, fu.off, "%w (%d bytes moved before it took effect)", ended, fu.n)
	}
	return fu.n, fu.err
}

// cancelFrom asks the loop to end pieces i onward that are not yet
// complete. A piece not yet claimed (or waiting for a record) is not yet
// the loop's to end: it is asked again shortly, until the loop has it or it
// has completed. The caller holds fu.mu and c.mapped.
func (fu *Future) cancelFrom(i int) {
	c := fu.f.c
	for k := i; k < len(fu.pieces); k++ {
		pc := &fu.pieces[k]
		var w waitSteps
		for !pc.done {
			res, done, err := c.p.Poll(pc.t)
			if done || err != nil {
				pc.res, pc.err, pc.done = res, err, true
				break
			}
			found, err := c.l.cancelTicket(c.q, pc.t)
			if found || err != nil {
				break // wait collects it
			}
			w.step()
		}
	}
}

// complete reports whether every piece moved all its bytes.
func (fu *Future) complete() bool {
	for _, pc := range fu.pieces {
		if pc.err != nil || pc.res < 0 || uint64(pc.res) != pc.n {
			return false
		}
	}
	return fu.err == nil
}

// Done reports, without waiting, whether every piece of the request has
// its result (Wait then returns at once). It collects the results that are
// in. While another goroutine is in Wait on fu it reports false.
func (fu *Future) Done() bool {
	if !fu.mu.TryLock() {
		return false
	}
	defer fu.mu.Unlock()
	if fu.done {
		return true
	}
	c := fu.f.c
	c.mapped.RLock()
	defer c.mapped.RUnlock()
	if c.closed { // Wait says ErrClosed at once
		return true
	}
	for i := range fu.pieces {
		pc := &fu.pieces[i]
		if pc.done {
			continue
		}
		res, done, err := c.p.Poll(pc.t)
		if !done && err == nil {
			return false
		}
		pc.res, pc.err, pc.done = res, err, true
	}
	fu.done = true
	fu.n, fu.err = fu.total()
	return true
}

// total adds the pieces up to the first that came back short or failed.
func (fu *Future) total() (int, error) {
	var n uint64
	for _, pc := range fu.pieces {
		switch {
		case pc.err != nil: // the loop stopped without claiming it
			return int(n), fu.f.errorf(fu.op, fu.off+int64(n), "%w", pc.err)
		case pc.res < 0:
			return int(n), fu.f.errorf(fu.op, fu.off+int64(n), "%w", pc.res.Err())
		case uint64(pc.res) < pc.n && fu.op == OpRead:
			return int(n + uint64(pc.res)), io.EOF
		case uint64(pc.res) < pc.n:
			return int(n + uint64(pc.res)), io.ErrShortWrite
		}
		n += pc.n
	}
	return int(n), fu.err // fu.err: a piece that was never published
}

// fileInfo is os.FileInfo from fstat.
type fileInfo struct {
	name string
	st   syscall.Stat_t
}

func (fi fileInfo) Name() string { return fi.name }
func (fi fileInfo) Size() int64  { return fi.st.Size }
func (fi fileInfo) Mode() os.FileMode {
	m := os.FileMode(fi.st.Mode & 0o777)
	switch fi.st.Mode & syscall.S_IFMT {
	case unix.S_IFDIR:
		m |= os.ModeDir
	case unix.S_IFBLK:
		m |= os.ModeDevice
	case unix.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFIFO:
		m |= os.ModeNamedPipe
	case unix.S_IFLNK:
		m |= os.ModeSymlink
	case unix.S_IFSOCK:
		m |= os.ModeSocket
	}
	return m
}
func (fi fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi fileInfo) IsDir() bool        { return fi.st.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (fi fileInfo) Sys() any           { return &fi.st }
