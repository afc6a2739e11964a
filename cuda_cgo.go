package megaio

/*
#cgo CFLAGS: -O2 -Wall -I${SRCDIR}/csrc
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "cuda_shim.c"

static megaio_CUresult call_init(struct megaio_cuda *c) { return c->cuInit(0); }
static megaio_CUresult call_version(struct megaio_cuda *c, int *v) { return c->cuDriverGetVersion(v); }
static megaio_CUresult call_count(struct megaio_cuda *c, int *n) { return c->cuDeviceGetCount(n); }
static megaio_CUresult call_device(struct megaio_cuda *c, megaio_CUdevice *d, int i) { return c->cuDeviceGet(d, i); }
static megaio_CUresult call_name(struct megaio_cuda *c, char *s, int n, megaio_CUdevice d) { return c->cuDeviceGetName(s, n, d); }
static megaio_CUresult call_retain(struct megaio_cuda *c, megaio_CUcontext *ctx, megaio_CUdevice d) { return c->cuDevicePrimaryCtxRetain(ctx, d); }
static megaio_CUresult call_release(struct megaio_cuda *c, megaio_CUdevice d) { return c->cuDevicePrimaryCtxRelease(d); }
static megaio_CUresult call_setcur(struct megaio_cuda *c, megaio_CUcontext ctx) { return c->cuCtxSetCurrent(ctx); }
static megaio_CUresult call_sync(struct megaio_cuda *c) { return c->cuCtxSynchronize(); }
static megaio_CUresult call_hostreg(struct megaio_cuda *c, void *p, size_t n, unsigned f) { return c->cuMemHostRegister(p, n, f); }
static megaio_CUresult call_hostunreg(struct megaio_cuda *c, void *p) { return c->cuMemHostUnregister(p); }
static megaio_CUresult call_devptr(struct megaio_cuda *c, megaio_CUdeviceptr *d, void *p) { return c->cuMemHostGetDevicePointer(d, p, 0); }
static megaio_CUresult call_alloc(struct megaio_cuda *c, megaio_CUdeviceptr *d, size_t n) { return c->cuMemAlloc(d, n); }
static megaio_CUresult call_free(struct megaio_cuda *c, megaio_CUdeviceptr d) { return c->cuMemFree(d); }
static megaio_CUresult call_htod(struct megaio_cuda *c, megaio_CUdeviceptr d, const void *s, size_t n) { return c->cuMemcpyHtoD(d, s, n); }
static megaio_CUresult call_dtoh(struct megaio_cuda *c, void *d, megaio_CUdeviceptr s, size_t n) { return c->cuMemcpyDtoH(d, s, n); }
static megaio_CUresult call_modload(struct megaio_cuda *c, megaio_CUmodule *m, const void *img) { return c->cuModuleLoadData(m, img); }
static megaio_CUresult call_modunload(struct megaio_cuda *c, megaio_CUmodule m) { return c->cuModuleUnload(m); }
static megaio_CUresult call_getfn(struct megaio_cuda *c, megaio_CUfunction *f, megaio_CUmodule m, const char *n) { return c->cuModuleGetFunction(f, m, n); }
static megaio_CUresult call_addrrange(struct megaio_cuda *c, megaio_CUdeviceptr *base, size_t *size, megaio_CUdeviceptr p) { return c->cuMemGetAddressRange(base, size, p); }
static megaio_CUresult call_stream_create(struct megaio_cuda *c, megaio_CUstream *s) { return c->cuStreamCreate(s, MEGAIO_CU_STREAM_NON_BLOCKING); }
static megaio_CUresult call_stream_destroy(struct megaio_cuda *c, megaio_CUstream s) { return c->cuStreamDestroy(s); }
static megaio_CUresult call_stream_sync(struct megaio_cuda *c, megaio_CUstream s) { return c->cuStreamSynchronize(s); }
static megaio_CUresult call_event_create(struct megaio_cuda *c, megaio_CUevent *e) { return c->cuEventCreate(e, MEGAIO_CU_EVENT_DISABLE_TIMING); }
static megaio_CUresult call_event_destroy(struct megaio_cuda *c, megaio_CUevent e) { return c->cuEventDestroy(e); }
static megaio_CUresult call_event_query(struct megaio_cuda *c, megaio_CUevent e) { return c->cuEventQuery(e); }
// One crossing per staged copy: the copy, then the event that marks its end.
static megaio_CUresult copy_async(struct megaio_cuda *c, int to_device, uint64_t host, megaio_CUdeviceptr dev,
				  size_t n, megaio_CUstream s, megaio_CUevent e) {
	megaio_CUresult r = to_device ? c->cuMemcpyHtoDAsync(dev, (const void *)(uintptr_t)host, n, s)
				      : c->cuMemcpyDtoHAsync((void *)(uintptr_t)host, dev, n, s);
	return r ? r : c->cuEventRecord(e, s);
}
static const char *err_name(struct megaio_cuda *c, megaio_CUresult r) { const char *s = 0; if (c->cuGetErrorName) c->cuGetErrorName(r, &s); return s; }
static const char *err_string(struct megaio_cuda *c, megaio_CUresult r) { const char *s = 0; if (c->cuGetErrorString) c->cuGetErrorString(r, &s); return s; }
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// CUresult is a CUDA driver API result code.
type CUresult int

func (r CUresult) Error() string {
	name, msg := "", "" // the driver's words, else csrc/cuda_shim.h's table
	if s := C.megaio_cuda_code_name(C.int(r)); s != nil {
		name = C.GoString(s)
	}
	if driver.loaded {
		if s := C.err_name(&driver.c, C.megaio_CUresult(r)); s != nil {
			name = C.GoString(s)
		}
		if s := C.err_string(&driver.c, C.megaio_CUresult(r)); s != nil {
			msg = C.GoString(s)
		}
	}
	if name == "" {
		name = "unknown"
	}
	if msg != "" {
		return fmt.Sprintf("CUDA error %d (%s): %s", int(r), name, msg)
	}
	return fmt.Sprintf("CUDA error %d (%s)", int(r), name)
}

// Is matches the sentinels above.
func (r CUresult) Is(target error) bool {
	switch target {
	case ErrNoDevice:
		return r == C.MEGAIO_CUDA_ERROR_NO_DEVICE || r == C.MEGAIO_CUDA_ERROR_INVALID_DEVICE
	case ErrAlreadyRegistered:
		return r == C.MEGAIO_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED
	case ErrNotRegisteredCUDA:
		return r == C.MEGAIO_CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED
	}
	return false
}

func cuErr(what string, r C.megaio_CUresult) error {
	if r == 0 {
		return nil
	}
	return errorf("%s: %w", what, CUresult(r))
}

// cudaLibrary is the driver library's name. Only the package's tests change
// it, to load a stand-in driver (testdata/fakecuda) in a child process.
var cudaLibrary = "libcuda.so.1"

// driver is the CUDA driver library, loaded once: the package's only
// global mutable state.
var driver struct {
	once    sync.Once
	c       C.struct_megaio_cuda
	loaded  bool
	version int
	err     error
}

// loadDriver opens libname and resolves the entry points megaio uses.
func loadDriver(libname string) (C.struct_megaio_cuda, error) {
	var c C.struct_megaio_cuda
	name := C.CString(libname)
	defer C.free(unsafe.Pointer(name))
	var msg [256]C.char
	switch C.megaio_cuda_load(&c, name, &msg[0], C.size_t(len(msg))) {
	case -1:
		return c, errorf("%w (%s)", ErrNoDriver, C.GoString(&msg[0]))
	case -2:
		return c, errorf("%w: it lacks %s; update the NVIDIA driver", ErrNoDriver, C.GoString(&msg[0]))
	}
	return c, nil
}

func initDriver() error {
	driver.once.Do(func() {
		c, err := loadDriver(cudaLibrary)
		if err != nil {
			driver.err = err
			return
		}
		driver.c, driver.loaded = c, true
		if err := cuErr("cuInit", C.call_init(&driver.c)); err != nil {
			driver.err = err
			return
		}
		var v C.int
		C.call_version(&driver.c, &v)
		driver.version = int(v)
	})
	return driver.err
}

// GPU is one CUDA device, used through its primary context.
type GPU struct {
	dev     C.megaio_CUdevice
	ctx     C.megaio_CUcontext
	ordinal int
	name    string

	mu     sync.Mutex
	mapped map[uintptr]int // registered host regions (base -> length)
	stream *Stream         // Launch's stream, made on first use
	closed bool
}

// cudaDeviceCount is how many CUDA devices the driver reports.
func cudaDeviceCount() (int, error) {
	if err := initDriver(); err != nil {
		return 0, err
	}
	var n C.int
	if err := cuErr("cuDeviceGetCount", C.call_count(&driver.c, &n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// OpenGPU retains device ordinal's primary context. It fails with
// ErrNoDriver or ErrNoDevice (errors.Is) where there is no GPU.
func OpenGPU(ordinal int) (*GPU, error) {
	if err := initDriver(); err != nil {
		return nil, err
	}
	var n C.int
	if err := cuErr("cuDeviceGetCount", C.call_count(&driver.c, &n)); err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= int(n) {
		return nil, errorf("%w: device %d of %d", ErrNoDevice, ordinal, int(n))
	}
	g := &GPU{ordinal: ordinal, mapped: map[uintptr]int{}}
	if err := cuErr("cuDeviceGet", C.call_device(&driver.c, &g.dev, C.int(ordinal))); err != nil {
		return nil, err
	}
	var name [256]C.char
	C.call_name(&driver.c, &name[0], C.int(len(name)), g.dev)
	g.name = C.GoString(&name[0])
	if err := cuErr("cuDevicePrimaryCtxRetain", C.call_retain(&driver.c, &g.ctx, g.dev)); err != nil {
		return nil, err
	}
	return g, nil
}

// Name is the device's name; DriverVersion the driver's CUDA version
// (e.g. 12040).
func (g *GPU) Name() string       { return g.name }
func (g *GPU) DriverVersion() int { return driver.version }

// do runs f on this goroutine's OS thread with the context current.
func (g *GPU) do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cuErr("cuCtxSetCurrent", C.call_setcur(&driver.c, g.ctx)); err != nil {
		return err
	}
	return f()
}

// RegisterHost pins mem for the GPU (cuMemHostRegister with DEVICEMAP and
// PORTABLE) and returns its device address. mem must stay mapped until
// UnregisterHost.
func (g *GPU) RegisterHost(mem []byte) (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errorf("%w: the GPU", ErrClosed)
	}
	p := unsafe.Pointer(&mem[0])
	var dptr C.megaio_CUdeviceptr
	err := g.do(func() error {
		if err := cuErr("cuMemHostRegister", C.call_hostreg(&driver.c, p, C.size_t(len(mem)),
			C.MEGAIO_CU_MEMHOSTREGISTER_DEVICEMAP|C.MEGAIO_CU_MEMHOSTREGISTER_PORTABLE)); err != nil {
			return err
		}
		if err := cuErr("cuMemHostGetDevicePointer", C.call_devptr(&driver.c, &dptr, p)); err != nil {
			C.call_hostunreg(&driver.c, p)
			return err
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	g.mapped[uintptr(p)] = len(mem)
	return uint64(dptr), nil
}

// UnregisterHost undoes RegisterHost.
func (g *GPU) UnregisterHost(mem []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := unsafe.Pointer(&mem[0])
	if _, ok := g.mapped[uintptr(p)]; !ok {
		return errorf("%w: %p", ErrNotRegisteredCUDA, p)
	}
	delete(g.mapped, uintptr(p))
	return g.do(func() error { return cuErr("cuMemHostUnregister", C.call_hostunreg(&driver.c, p)) })
}

// Alloc allocates device memory; Free releases it.
func (g *GPU) Alloc(n int) (uint64, error) {
	var d C.megaio_CUdeviceptr
	err := g.do(func() error { return cuErr("cuMemAlloc", C.call_alloc(&driver.c, &d, C.size_t(n))) })
	return uint64(d), err
}

func (g *GPU) Free(d uint64) error {
	return g.do(func() error { return cuErr("cuMemFree", C.call_free(&driver.c, C.megaio_CUdeviceptr(d))) })
}

// CopyToDevice and CopyFromDevice copy synchronously.
func (g *GPU) CopyToDevice(dst uint64, src []byte) error {
	return g.do(func() error {
		return cuErr("cuMemcpyHtoD", C.call_htod(&driver.c, C.megaio_CUdeviceptr(dst), unsafe.Pointer(&src[0]), C.size_t(len(src))))
	})
}

func (g *GPU) CopyFromDevice(dst []byte, src uint64) error {
	return g.do(func() error {
		return cuErr("cuMemcpyDtoH", C.call_dtoh(&driver.c, unsafe.Pointer(&dst[0]), C.megaio_CUdeviceptr(src), C.size_t(len(dst))))
	})
}

// Synchronize waits for every kernel launched in the context.
func (g *GPU) Synchronize() error {
	return g.do(func() error { return cuErr("cuCtxSynchronize", C.call_sync(&driver.c)) })
}

// Module is a loaded CUDA module (cubin, fatbin or PTX image).
type Module struct {
	g   *GPU
	mod C.megaio_CUmodule
}

// LoadModule loads a module image (cuModuleLoadData).
func (g *GPU) LoadModule(image []byte) (*Module, error) {
	cimg := C.CBytes(append(image, 0)) // PTX must end in a NUL; binaries ignore it
	defer C.free(cimg)
	m := &Module{g: g}
	err := g.do(func() error { return cuErr("cuModuleLoadData", C.call_modload(&driver.c, &m.mod, cimg)) })
	return m, err
}

// Dim3 is a grid or block shape; a zero Y or Z counts as 1.
type Dim3 struct{ X, Y, Z int }

func (d Dim3) c() [3]C.uint {
	one := func(v int) C.uint {
		if v == 0 {
			return 1
		}
		return C.uint(v)
	}
	return [3]C.uint{one(d.X), one(d.Y), one(d.Z)}
}

// Launch starts kernel on grid x block threads with sharedBytes of dynamic
// shared memory and up to 8 arguments, each passed as a 64-bit value
// (pointers and 64-bit integers; pass more through a struct in device
// memory, as kernels.Program.Args does), on the GPU's own non-blocking stream
// (GPU.Stream). It does not wait.
//
// A persistent kernel must never sit on the legacy default stream (stream
// 0): every synchronous copy, cuMemAlloc and default-stream launch of the
// process (other libraries' too) would then wait for a kernel that is itself
// waiting for IO, and hang.
func (m *Module) Launch(kernel string, grid, block Dim3, sharedBytes int, args ...uint64) error {
	return m.LaunchOn(nil, kernel, grid, block, sharedBytes, args...)
}

// LaunchOn is Launch on stream s (nil: the GPU's own stream).
func (m *Module) LaunchOn(s *Stream, kernel string, grid, block Dim3, sharedBytes int, args ...uint64) error {
	if len(args) > 8 {
		return configError("Launch takes at most 8 arguments, got %d (pass more through a struct in device memory: "+
			"kernels.Program.Args)", len(args))
	}
	if s == nil {
		var err error
		if s, err = m.g.Stream(); err != nil {
			return err
		}
	}
	if s.g != m.g {
		return configError("LaunchOn: the stream belongs to another GPU")
	}
	name := C.CString(kernel)
	defer C.free(unsafe.Pointer(name))
	gd, bd := grid.c(), block.c()
	return m.g.do(func() error {
		var fn C.megaio_CUfunction
		if err := cuErr("cuModuleGetFunction "+kernel, C.call_getfn(&driver.c, &fn, m.mod, name)); err != nil {
			return err
		}
		var a [8]C.uint64_t
		for i, v := range args {
			a[i] = C.uint64_t(v)
		}
		return cuErr("cuLaunchKernel "+kernel, C.megaio_cuda_launch(&driver.c, fn, &gd[0], &bd[0],
			C.uint(sharedBytes), s.s, &a[0], C.int(len(args))))
	})
}

// Stream is a CUDA stream created with CU_STREAM_NON_BLOCKING: work on it
// never waits for the legacy default stream, nor that stream for it.
type Stream struct {
	g *GPU
	s C.megaio_CUstream
}

// NewStream creates a non-blocking stream; Close destroys it.
func (g *GPU) NewStream() (*Stream, error) {
	s := &Stream{g: g}
	err := g.do(func() error { return cuErr("cuStreamCreate", C.call_stream_create(&driver.c, &s.s)) })
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Stream returns the GPU's own non-blocking stream, where Launch runs
// kernels; GPU.Close destroys it.
func (g *GPU) Stream() (*Stream, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errorf("%w: the GPU", ErrClosed)
	}
	if g.stream == nil {
		s, err := g.NewStream()
		if err != nil {
			return nil, err
		}
		g.stream = s
	}
	return g.stream, nil
}

// Synchronize waits for the work queued on s.
func (s *Stream) Synchronize() error {
	return s.g.do(func() error { return cuErr("cuStreamSynchronize", C.call_stream_sync(&driver.c, s.s)) })
}

// Close waits for the stream's work and destroys it.
func (s *Stream) Close() error {
	return s.g.do(func() error { return cuErr("cuStreamDestroy", C.call_stream_destroy(&driver.c, s.s)) })
}

// Unload unloads the module.
func (m *Module) Unload() error {
	return m.g.do(func() error { return cuErr("cuModuleUnload", C.call_modunload(&driver.c, m.mod)) })
}

// Close releases the primary context. It fails while host memory is still
// registered: close the loops mapped for this GPU first.
func (g *GPU) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	if len(g.mapped) > 0 {
		return errorf("%w: %d host regions are still registered with CUDA; close the loop first", ErrInUse, len(g.mapped))
	}
	g.closed = true
	var errs []error
	if g.stream != nil {
		errs = append(errs, g.stream.Close())
		g.stream = nil
	}
	errs = append(errs, cuErr("cuDevicePrimaryCtxRelease", C.call_release(&driver.c, g.dev)))
	return errors.Join(errs...)
}

// GPUMapping is where the GPU sees a loop's queues and buffers.
type GPUMapping struct {
	Queue   uint64            // device address of the first queue's Memory() (Queues[0])
	Queues  []uint64          // device address of each queue's Memory(), in the order of Loop.Queues
	Buffers map[uint16]uint64 // device address of each buffer, by Buffer.Index
}

// MapForGPU registers the loop's queues and every buffer with g, so a
// kernel can publish requests and read the data in place; buffers made and
// queues added afterwards are registered as they come (Buffer.DevicePointer,
// Loop.QueueAddress). Memory pinned by both io_uring and CUDA is anonymous
// mmap memory pinned twice. Close tears down in the order that keeps every
// pin valid: the loop stops, CUDA unregisters, io_uring unregisters, memory
// is unmapped.
//
// The registration is portable (pinned for every CUDA context), and on
// 64-bit Linux every GPU uses unified addressing, so a machine with several
// GPUs can map one loop for one of them and hand each GPU's kernel the
// address of its own queue. That layout has not yet run on a machine with
// several GPUs (docs/gpu-results.md).
func (l *Loop) MapForGPU(g *GPU) (GPUMapping, error) {
	m := GPUMapping{Buffers: map[uint16]uint64{}}
	err := l.exec(func(cy *cycle) error {
		if cy.gpu != nil {
			return errorf("%w: the loop is already mapped for a GPU", ErrInUse)
		}
		cy.gpu = g
		if err := cy.mapAll(&m); err != nil {
			return errors.Join(err, cy.unmapGPU()) // all or nothing: MapForGPU may be called again
		}
		return nil
	})
	return m, err
}

// mapAll registers the served queues and the buffers with l.gpu, noting
// their addresses in m.
func (cy *cycle) mapAll(m *GPUMapping) error {
	for _, s := range cy.qs {
		if err := cy.mapQueue(s); err != nil {
			return err
		}
		m.Queues = append(m.Queues, s.gpuAddr)
	}
	if len(m.Queues) > 0 {
		m.Queue = m.Queues[0]
	}
	for _, b := range cy.tab.bufs {
		if b != nil && !b.internal {
			var err error
			if b.devPtr, err = cy.gpu.RegisterHost(b.mem); err != nil {
				return err
			}
			m.Buffers[b.index] = b.devPtr
		}
	}
	return nil
}

// QueueAddress is where the GPU the loop is mapped for (MapForGPU) sees q,
// or 0 when the loop is not mapped or does not serve q.
func (l *Loop) QueueAddress(q *Queue) uint64 {
	var addr uint64
	l.exec(func(cy *cycle) error {
		if k := cy.servedIndex(q); k >= 0 {
			addr = cy.qs[k].gpuAddr
		}
		return nil
	})
	return addr
}

// mapQueue registers a served queue with the loop's GPU, if it has one.
// Runs on the loop's thread.
func (cy *cycle) mapQueue(s *served) error {
	if cy.gpu == nil || s.gpuAddr != 0 {
		return nil
	}
	addr, err := cy.gpu.RegisterHost(s.q.Memory())
	s.gpuAddr = addr
	return err
}

// unmapQueue undoes mapQueue. Runs on the loop's thread, with the loop
// stopped.
func (cy *cycle) unmapQueue(s *served) error {
	if cy.gpu == nil || s.gpuAddr == 0 {
		return nil
	}
	s.gpuAddr = 0
	return cy.gpu.UnregisterHost(s.q.Memory())
}

// unmapGPU unregisters everything MapForGPU registered. Runs on the loop's
// thread, after the loop stopped and before the backend closes.
func (cy *cycle) unmapGPU() error {
	if cy.gpu == nil {
		return nil
	}
	var errs []error
	for _, b := range cy.tab.bufs {
		if b != nil && b.devPtr != 0 {
			errs = append(errs, cy.gpu.UnregisterHost(b.mem))
			b.devPtr = 0
		}
	}
	for _, s := range cy.qs {
		errs = append(errs, cy.unmapQueue(s))
	}
	cy.gpu = nil
	return errors.Join(errs...)
}

// DeviceRange returns the allocation that holds device address p: its base
// and size (cuMemGetAddressRange). It is how memory handed in by another
// framework is checked before it becomes a destination.
func (g *GPU) DeviceRange(p uint64) (base, size uint64, err error) {
	var b C.megaio_CUdeviceptr
	var n C.size_t
	err = g.do(func() error {
		return cuErr("cuMemGetAddressRange", C.call_addrrange(&driver.c, &b, &n, C.megaio_CUdeviceptr(p)))
	})
	return uint64(b), uint64(n), err
}

// copyStream is a loop's CUDA stream for staged copies, with one event per
// staging chunk. Its methods run on the loop's thread, where the GPU's
// context is current; none of them blocks but sync.
type copyStream struct {
	stream C.megaio_CUstream
	events []C.megaio_CUevent
}

// newCopyStream makes the stream (non-blocking: it never waits for the
// legacy default stream, so the megakernel and the copies overlap) and n
// events without timing (cheaper to record and query).
func newCopyStream(n int) (*copyStream, error) {
	s := &copyStream{}
	if err := cuErr("cuStreamCreate", C.call_stream_create(&driver.c, &s.stream)); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		var e C.megaio_CUevent
		if err := cuErr("cuEventCreate", C.call_event_create(&driver.c, &e)); err != nil {
			s.close()
			return nil, err
		}
		s.events = append(s.events, e)
	}
	return s, nil
}

// copy queues an n-byte copy between pinned host memory at host and device
// memory at dev (toDevice says which way), then records event ev after it.
func (s *copyStream) copy(toDevice bool, host uintptr, dev uint64, n uint64, ev int) error {
	dir := C.int(0)
	what := "cuMemcpyDtoHAsync"
	if toDevice {
		dir, what = 1, "cuMemcpyHtoDAsync"
	}
	return cuErr(what, C.copy_async(&driver.c, dir, C.uint64_t(host), C.megaio_CUdeviceptr(dev), C.size_t(n),
		s.stream, s.events[ev]))
}

// done reports whether event ev has completed: every copy queued before it
// has landed. A copy that failed reports its error here.
func (s *copyStream) done(ev int) (bool, error) {
	switch r := C.call_event_query(&driver.c, s.events[ev]); r {
	case C.MEGAIO_CUDA_SUCCESS:
		return true, nil
	case C.MEGAIO_CUDA_ERROR_NOT_READY:
		return false, nil
	default:
		return true, cuErr("cuEventQuery", r)
	}
}

// sync waits for every queued copy (Close and the fatal path only).
func (s *copyStream) sync() error {
	return cuErr("cuStreamSynchronize", C.call_stream_sync(&driver.c, s.stream))
}

func (s *copyStream) close() {
	for _, e := range s.events {
		C.call_event_destroy(&driver.c, e)
	}
	s.events = nil
	if s.stream != nil {
		C.call_stream_destroy(&driver.c, s.stream)
		s.stream = nil
	}
}

// makeCurrent makes g's context current on the calling thread, which must
// be locked to its goroutine (the loop's thread is, for its whole life).
func (g *GPU) makeCurrent() error {
	return cuErr("cuCtxSetCurrent", C.call_setcur(&driver.c, g.ctx))
}
