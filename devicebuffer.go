package megaio

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device destinations: READs that land in GPU device memory and WRITEs that
// come from it. Two paths serve them (docs/DEVICE.md has the whole design):
//
//   - GPUDirect Storage (GDS): cuFile's batch API moves the bytes between
//     the file and device memory by DMA, with no copy through host memory.
//     It needs libcufile.so.0, the nvidia-fs driver (or a platform cuFile
//     supports), files opened with O_DIRECT and 4 KiB-aligned file ranges.
//   - The bounce path: io_uring reads into pinned host staging chunks, and a
//     CUDA stream owned by the loop copies each chunk to the device
//     (cuMemcpyHtoDAsync); WRITEs run the other way. Large requests are cut
//     into chunks that are read and copied at the same time.
//
// The pieces of one request may take both: the 4 KiB-aligned body through
// GDS, an unaligned head and tail through the bounce path.

// DevicePath picks how device destinations are served.
type DevicePath int

const (
	// DevicePathAuto uses GDS where cuFile accepts the buffer and the file,
	// and the bounce path elsewhere; a buffer that falls back comes with a
	// *PathWarning.
	DevicePathAuto DevicePath = iota
	// DevicePathGDS uses GDS or fails: registering a device buffer that
	// cuFile refuses is an error (ErrGDSUnavailable), and a request from a
	// file cuFile refused completes with -EOPNOTSUPP. Unaligned heads and
	// tails still go through the bounce path.
	DevicePathGDS
	// DevicePathBounce never uses GDS.
	DevicePathBounce
)

var devicePathNames = []string{DevicePathAuto: "auto", DevicePathGDS: "gds", DevicePathBounce: "bounce"}

func (p DevicePath) String() string { return enumName(p, devicePathNames, "DevicePath") }

// ParseDevicePath parses "auto", "gds" or "bounce".
func ParseDevicePath(s string) (DevicePath, error) {
	return parseEnum[DevicePath](s, devicePathNames, "device path")
}

// DeviceConfig tunes device destinations (Config.Device). Zero fields take
// the defaults.
type DeviceConfig struct {
	// Path: DevicePathAuto (default), DevicePathGDS or DevicePathBounce.
	Path DevicePath
	// StagingChunks and ChunkSize shape the bounce path's pinned staging
	// pool (defaults 16 and 1 MiB). ChunkSize is a multiple of 4 KiB, at
	// most 64 MiB; the pool is at most 1 GiB.
	StagingChunks int
	ChunkSize     int
	// MaxPiecesPerRequest bounds how many chunks (or GDS IOs) one request
	// holds in flight, so a large request cannot starve the others
	// (default StagingChunks/2, at least 1).
	MaxPiecesPerRequest int
	// GDSBatches is how many cuFile batch handles the loop keeps (default
	// 4); GDSBatchEntries the IOs per batch (default 32, at most 128 and at
	// most the driver's max_batch_io_size: larger batches are reported to
	// fail).
	GDSBatches      int
	GDSBatchEntries int
	// GDSMaxIO is the largest single GDS IO, a multiple of 4 KiB (default
	// 16 MiB, cuFile's default max_direct_io_size).
	GDSMaxIO int
	// GDSRetryLimit bounds how many "queue full" or "internal error - retry
	// later" answers in a row cuFile may give one batch submission (it is
	// tried again each loop cycle) before the batch's IOs fail with -EIO
	// and Stats.Device.GDSGiveUps counts it (default 1000).
	GDSRetryLimit int
	// GDSThreshold sends requests shorter than this many bytes through the
	// bounce path even where GDS serves the file and the buffer (default 0:
	// every request GDS can take): small IOs can cost less as a copy than
	// as a GDS submission. DevicePathGDS ignores it.
	GDSThreshold int
}

const (
	gdsAlign        = 4096 // O_DIRECT and GDS alignment used for file ranges
	maxGDSBatchSize = 128
)

func (c DeviceConfig) withDefaults() (DeviceConfig, error) {
	if c.StagingChunks == 0 {
		c.StagingChunks = 16
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = 1 << 20
	}
	if c.MaxPiecesPerRequest == 0 {
		c.MaxPiecesPerRequest = max(1, c.StagingChunks/2)
	}
	if c.GDSBatches == 0 {
		c.GDSBatches = 4
	}
	if c.GDSBatchEntries == 0 {
		c.GDSBatchEntries = 32
	}
	if c.GDSMaxIO == 0 {
		c.GDSMaxIO = 16 << 20
	}
	if c.GDSRetryLimit == 0 {
		c.GDSRetryLimit = 1000
	}
	switch {
	case c.Path < DevicePathAuto || c.Path > DevicePathBounce:
		return c, configError("Device.Path %v: want auto, gds or bounce", c.Path)
	case c.ChunkSize < gdsAlign || c.ChunkSize%gdsAlign != 0 || c.ChunkSize > 64<<20:
		return c, configError("Device.ChunkSize %d: want a multiple of 4 KiB up to 64 MiB", c.ChunkSize)
	case c.StagingChunks < 1 || c.StagingChunks > 1<<14 || c.StagingChunks*c.ChunkSize > maxBufferSize:
		return c, configError("Device.StagingChunks %d x %d bytes: want 1 or more chunks and at most 1 GiB in all",
			c.StagingChunks, c.ChunkSize)
	case c.MaxPiecesPerRequest < 1 || c.MaxPiecesPerRequest > 1<<15:
		return c, configError("Device.MaxPiecesPerRequest %d: want 1 to 32768", c.MaxPiecesPerRequest)
	case c.GDSBatches < 1 || c.GDSBatches > 64:
		return c, configError("Device.GDSBatches %d: want 1 to 64", c.GDSBatches)
	case c.GDSBatchEntries < 1 || c.GDSBatchEntries > maxGDSBatchSize:
		return c, configError("Device.GDSBatchEntries %d: want 1 to %d", c.GDSBatchEntries, maxGDSBatchSize)
	case c.GDSMaxIO < gdsAlign || c.GDSMaxIO%gdsAlign != 0 || c.GDSMaxIO > MaxLength:
		return c, configError("Device.GDSMaxIO %d: want a multiple of 4 KiB up to 1 GiB", c.GDSMaxIO)
	case c.GDSRetryLimit < 1:
		return c, configError("Device.GDSRetryLimit %d: want 1 or more", c.GDSRetryLimit)
	case c.GDSThreshold < 0:
		return c, configError("Device.GDSThreshold %d: want 0 or more", c.GDSThreshold)
	}
	return c, nil
}

// DeviceBuffer is GPU device memory registered with a loop as a place
// READs land and WRITEs come from. It lives until the loop is closed; memory
// the loop allocated (NewDeviceBuffer) is freed then, memory handed in
// (RegisterDeviceMemory) stays the caller's.
type DeviceBuffer struct {
	ptr, size uint64
	owned     bool
	gpu       *GPU
	path      DevicePath // DevicePathGDS or DevicePathBounce
	reason    string
	index     int
}

// Pointer is the buffer's device address; Size its length.
func (b *DeviceBuffer) Pointer() uint64 { return b.ptr }
func (b *DeviceBuffer) Size() uint64    { return b.size }

// Path says which path serves the buffer: DevicePathGDS (cuFile registered
// it; requests from files cuFile accepted go by DMA) or DevicePathBounce.
// PathReason says why.
func (b *DeviceBuffer) Path() DevicePath   { return b.path }
func (b *DeviceBuffer) PathReason() string { return b.reason }

// PathWarning is returned beside a usable DeviceBuffer when GPUDirect
// Storage was wanted (DevicePathAuto) but the bounce path serves it. Cause
// says why; it matches ErrGDSUnavailable when GDS is missing here.
type PathWarning struct {
	Cause error
}

func (w *PathWarning) Error() string {
	return "megaio: GPUDirect Storage is not used for this buffer; the bounce path serves it: " + w.Cause.Error()
}
func (w *PathWarning) Unwrap() error { return w.Cause }

// devFile is a registered file as the device paths see it: its own
// duplicate of the descriptor (staged IOs use it directly, not the
// registered slot) and, when cuFile accepted it, its cuFile handle. Every
// device request holds a reference from claim to completion, so
// unregistering the file (or reusing its slot) while requests are in flight
// only marks it; the last request releases it.
type devFile struct {
	fd     int
	fh     unsafe.Pointer // CUfileHandle_t, or nil: GDS does not serve the file
	direct bool           // opened with O_DIRECT
	refs   int
	closed bool
}

func (f *devFile) unref() {
	if f.refs--; f.refs == 0 && f.closed {
		f.release()
	}
}

func (f *devFile) release() {
	if f.fh != nil {
		cufileHandleRelease(f.fh)
		f.fh = nil
	}
	unix.Close(f.fd)
	f.fd = -1
}

// NewDeviceBuffer allocates size bytes of device memory on g (cuMemAlloc)
// and registers them with the loop. The first device buffer sets up the
// loop's device paths on g (one GPU per loop). The *PathWarning, when not
// nil, says the bounce path serves the buffer although GDS was wanted; the
// buffer is usable either way.
func (l *Loop) NewDeviceBuffer(g *GPU, size int) (*DeviceBuffer, *PathWarning, error) {
	if size <= 0 || size > maxBufferSize {
		return nil, nil, configError("device buffer size %d: want 1 byte to 1 GiB", size)
	}
	if g == nil {
		return nil, nil, configError("NewDeviceBuffer: no GPU (a nil *GPU: OpenGPU's answer where there is none)")
	}
	ptr, err := g.Alloc(size)
	if err != nil {
		return nil, nil, err
	}
	b, w, err := l.registerDevice(g, ptr, uint64(size), true)
	if err != nil {
		g.Free(ptr)
	}
	return b, w, err
}

// RegisterDeviceMemory registers device memory the caller allocated (a
// framework's tensor, say): [ptr, ptr+size) must lie inside one allocation
// on g (checked with cuMemGetAddressRange). The memory must stay allocated
// until the loop is closed.
func (l *Loop) RegisterDeviceMemory(g *GPU, ptr, size uint64) (*DeviceBuffer, *PathWarning, error) {
	if size == 0 || size > maxBufferSize {
		return nil, nil, configError("device memory size %d: want 1 byte to 1 GiB", size)
	}
	base, n, err := g.DeviceRange(ptr)
	if err != nil {
		return nil, nil, errorf("%#x is not device memory of this GPU: %w", ptr, err)
	}
	if ptr-base > n || size > n-(ptr-base) {
		return nil, nil, configError("device memory [%#x, +%d) overruns its allocation [%#x, +%d)", ptr, size, base, n)
	}
	return l.registerDevice(g, ptr, size, false)
}

func (l *Loop) registerDevice(g *GPU, ptr, size uint64, owned bool) (*DeviceBuffer, *PathWarning, error) {
	b := &DeviceBuffer{ptr: ptr, size: size, owned: owned, gpu: g}
	var warn *PathWarning
	err := l.exec(func(cy *cycle) error {
		if err := cy.devSetup(g); err != nil {
			return err
		}
		e := cy.dev
		gdsErr := e.gdsErr
		if gdsErr == nil && l.cfg.Device.Path != DevicePathBounce {
			gdsErr = cufileBufRegister(ptr, size)
		}
		path, w, err := chooseBufferPath(l.cfg.Device.Path, gdsErr)
		if err != nil {
			return err
		}
		b.path, warn = path, w
		switch {
		case path == DevicePathGDS:
			b.reason = "cuFile registered the buffer (cuFileBufRegister)"
		case l.cfg.Device.Path == DevicePathBounce:
			b.reason = "Device.Path is bounce"
		default:
			b.reason = gdsErr.Error()
		}
		b.index = len(e.bufs)
		e.bufs = append(e.bufs, b)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return b, warn, nil
}

// AddDeviceDestination makes [base, base+length) of b a destination and
// returns its handle; requests name it like any destination, and their
// ranges are checked against it the same way (-EFAULT when outside).
func (l *Loop) AddDeviceDestination(b *DeviceBuffer, base, length uint64) (DestHandle, error) {
	if b == nil || base > b.size || length == 0 || length > b.size-base {
		return 0, configError("device destination [%d, +%d) does not fit the buffer", base, length)
	}
	var h DestHandle
	err := l.exec(func(cy *cycle) error {
		if cy.dev == nil || b.index >= len(cy.dev.bufs) || cy.dev.bufs[b.index] != b {
			return errorf("%w: the device buffer belongs to no loop or another loop", ErrNotRegistered)
		}
		h = cy.tab.addDest(destination{addr: b.ptr + base, length: length, valid: true, dev: b})
		return nil
	})
	return h, err
}

// FileDevicePath says how READs and WRITEs between file h and device
// destinations are served, and why: DevicePathGDS when cuFile accepted the
// file, else DevicePathBounce. Before the loop's first device buffer it
// reports DevicePathBounce with "no device buffer yet".
func (l *Loop) FileDevicePath(h FileHandle) (DevicePath, string, error) {
	var p DevicePath
	var why string
	err := l.exec(func(cy *cycle) error {
		if uint32(h) >= uint32(len(cy.tab.files)) || !cy.tab.files[h].valid {
			return errorf("%w: file handle %d", ErrNotRegistered, h)
		}
		p, why = cy.dev.filePath(int(h))
		return nil
	})
	return p, why, err
}

// DeviceErr returns the last CUDA or cuFile error a device request met (its
// slot got -EIO), or nil.
func (l *Loop) DeviceErr() error {
	if p := l.devErr.Load(); p != nil {
		return *p
	}
	return nil
}

// devSetup makes the device engine on g: the staging pool (registered with
// the backend and pinned for CUDA), the copy stream, and, unless
// Device.Path is bounce, cuFile's driver and batch handles. Runs on the
// loop's thread.
func (cy *cycle) devSetup(g *GPU) error {
	if cy.dev != nil {
		if cy.dev.gpu != g {
			return errorf("%w: the loop's device buffers are on another GPU (one GPU per loop)", ErrInUse)
		}
		return nil
	}
	if cy.gpu != nil && cy.gpu != g {
		return errorf("%w: the loop is mapped for another GPU (one GPU per loop)", ErrInUse)
	}
	cfg := cy.l.cfg.Device
	if err := g.makeCurrent(); err != nil {
		return err
	}
	e := &devEngine{host: cy, cfg: cfg, gpu: g, epoch: cy.l.epoch, chunk: uint64(cfg.ChunkSize), open: -1}
	mem, err := mapBuffer(cfg.StagingChunks*cfg.ChunkSize, false)
	if err != nil {
		return errorf("mapping the %d-byte staging pool: %w", cfg.StagingChunks*cfg.ChunkSize, err)
	}
	e.staging = &Buffer{mem: mem, internal: true}
	if err := cy.installBuffer(e.staging); err != nil {
		unix.Munmap(mem)
		return errorf("registering the staging pool: %w", err)
	}
	if _, err := g.RegisterHost(mem); err != nil {
		cy.uninstallBuffer(e.staging)
		return errorf("pinning the staging pool for CUDA: %w", err)
	}
	if e.cs, err = newCopyStream(cfg.StagingChunks); err != nil {
		g.UnregisterHost(mem)
		cy.uninstallBuffer(e.staging)
		return err
	}
	e.chunks = newChunkPool(cfg.StagingChunks)
	e.bounce = make([]bouncePiece, cfg.StagingChunks)
	e.copying = newFIFO[uint32](cfg.StagingChunks)
	e.waiting = newFIFO[uint32](len(cy.recs))
	e.recs = make([]devRec, len(cy.recs))
	e.files = make([]devFileState, len(cy.tab.files))
	e.gdsErr = errorf("%w: Device.Path is bounce", ErrGDSUnavailable)
	if cfg.Path != DevicePathBounce {
		e.gdsErr = e.setupGDS()
		if e.gdsErr != nil && cfg.Path == DevicePathGDS {
			e.close()
			cy.uninstallBuffer(e.staging)
			return errorf("Device.Path is gds: %w", e.gdsErr)
		}
	}
	cy.reserveIOs(cfg.StagingChunks) // one staged IO per chunk joins the lanes' batches
	cy.dev = e
	desc := fmt.Sprintf("device: bounce (%d x %d KiB staging chunks)", cfg.StagingChunks, cfg.ChunkSize>>10)
	if e.gdsErr == nil {
		desc += fmt.Sprintf(" + GDS (cuFile, %d batches x %d IOs)", len(e.batches), e.entries)
	} else {
		desc += "; GDS off: " + e.gdsErr.Error()
	}
	cy.l.devNote.Store(&desc)
	for i, f := range cy.tab.files {
		if f.valid {
			e.registerFile(i, f.fd) // an error leaves the file's device requests failing with -EBADF (gdsWhy says why)
		}
	}
	return nil
}

// isDirect reports whether fd was opened with O_DIRECT.
func isDirect(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_DIRECT != 0
}
