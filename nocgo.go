//go:build !cgo

package megaio

// Built without cgo (CGO_ENABLED=0, or no C compiler), megaio has no
// io_uring, no worker pool and no CUDA: this file stands in for the four
// files that call C (uring_cgo.go, pool_cgo.go, cuda_cgo.go, cufile_cgo.go),
// so that a program importing megaio still compiles, and every constructor
// that needs C (NewLoop, NewClient, OpenGPU) returns ErrCgoRequired. The
// queue itself (NewQueue, HostProducer) is plain Go and works.

import (
	"fmt"
	"sync"
	"unsafe"
)

func errNoCgo(what string) error { return errorf("%w (%s)", ErrCgoRequired, what) }

// noBackend is what the backend openers return: never used, since they
// fail.
type noBackend struct{}

func (noBackend) enter([]sqe, []cqe, waitFor) (int, int, error) { return 0, 0, errNoCgo("enter") }
func (noBackend) cancelAll() error                              { return errNoCgo("cancel") }
func (noBackend) cancel(uint64) (bool, error)                   { return false, errNoCgo("cancel") }
func (noBackend) setFile(uint32, int) error                     { return errNoCgo("register a file") }
func (noBackend) setBuffer(uint16, []byte) error                { return errNoCgo("register a buffer") }
func (noBackend) describe() string                              { return "none (built without cgo)" }
func (noBackend) close()                                        {}

type uringBackend struct{ noBackend }
type poolBackend struct{ noBackend }

func (*poolBackend) interrupt() int { return 0 }

func openURing(sqEntries, cqEntries, nfiles, nbufs uint32) (*uringBackend, error) {
	return nil, errNoCgo("io_uring")
}

func openPool(workers int, sqEntries uint32, maxInflight int, nfiles int) (*poolBackend, error) {
	return nil, errNoCgo("the worker pool")
}

// CUresult is a CUDA driver API result code.
type CUresult int

func (r CUresult) Error() string { return fmt.Sprintf("CUDA error %d", int(r)) }

// Is matches nothing: without cgo no CUDA call is made.
func (r CUresult) Is(error) bool { return false }

var cudaLibrary = "libcuda.so.1"
var cufileLibrary = "libcufile.so.0"

// GPU is one CUDA device. Without cgo OpenGPU fails, so no GPU exists.
type GPU struct{ _ sync.Mutex }

// OpenGPU fails with ErrCgoRequired.
func OpenGPU(ordinal int) (*GPU, error) { return nil, errNoCgo("CUDA") }

func (g *GPU) Name() string                                        { return "" }
func (g *GPU) DriverVersion() int                                  { return 0 }
func (g *GPU) RegisterHost(mem []byte) (uint64, error)             { return 0, errNoCgo("CUDA") }
func (g *GPU) UnregisterHost(mem []byte) error                     { return errNoCgo("CUDA") }
func (g *GPU) Alloc(n int) (uint64, error)                         { return 0, errNoCgo("CUDA") }
func (g *GPU) Free(d uint64) error                                 { return errNoCgo("CUDA") }
func (g *GPU) CopyToDevice(dst uint64, src []byte) error           { return errNoCgo("CUDA") }
func (g *GPU) CopyFromDevice(dst []byte, src uint64) error         { return errNoCgo("CUDA") }
func (g *GPU) Synchronize() error                                  { return errNoCgo("CUDA") }
func (g *GPU) LoadModule(image []byte) (*Module, error)            { return nil, errNoCgo("CUDA") }
func (g *GPU) NewStream() (*Stream, error)                         { return nil, errNoCgo("CUDA") }
func (g *GPU) Stream() (*Stream, error)                            { return nil, errNoCgo("CUDA") }
func (g *GPU) Close() error                                        { return nil }
func (g *GPU) DeviceRange(p uint64) (base, size uint64, err error) { return 0, 0, errNoCgo("CUDA") }
func (g *GPU) makeCurrent() error                                  { return errNoCgo("CUDA") }

// Module is a loaded CUDA module.
type Module struct{}

func (m *Module) Launch(kernel string, grid, block Dim3, sharedBytes int, args ...uint64) error {
	return errNoCgo("CUDA")
}
func (m *Module) LaunchOn(s *Stream, kernel string, grid, block Dim3, sharedBytes int, args ...uint64) error {
	return errNoCgo("CUDA")
}
func (m *Module) Unload() error { return errNoCgo("CUDA") }

// Dim3 is a launch's grid or block size.
type Dim3 struct{ X, Y, Z int }

// Stream is a CUDA stream.
type Stream struct{}

func (s *Stream) Synchronize() error { return errNoCgo("CUDA") }
func (s *Stream) Close() error       { return nil }

// GPUMapping is where a loop's memory appears to a GPU.
type GPUMapping struct {
	Queue   uint64
	Queues  []uint64
	Buffers map[uint16]uint64
}

// MapForGPU fails with ErrCgoRequired.
func (l *Loop) MapForGPU(g *GPU) (GPUMapping, error) { return GPUMapping{}, errNoCgo("CUDA") }

// QueueAddress is 0: no queue is mapped for a GPU without cgo.
func (l *Loop) QueueAddress(q *Queue) uint64 { return 0 }

func (cy *cycle) mapQueue(s *served) error   { return errNoCgo("CUDA") }
func (cy *cycle) unmapQueue(s *served) error { return nil }
func (cy *cycle) unmapGPU() error            { return nil }

type copyStream struct{}

func newCopyStream(n int) (*copyStream, error) { return nil, errNoCgo("CUDA") }
func (s *copyStream) copy(toDevice bool, host uintptr, dev uint64, n uint64, ev int) error {
	return errNoCgo("CUDA")
}
func (s *copyStream) done(ev int) (bool, error) { return false, errNoCgo("CUDA") }
func (s *copyStream) sync() error               { return nil }
func (s *copyStream) close()                    {}

// CuFileError is an error from cuFile.
type CuFileError struct {
	Op     string
	Code   int
	CUCode int
}

func (e *CuFileError) Error() string        { return fmt.Sprintf("megaio: %s: cuFile error %d", e.Op, e.Code) }
func (e *CuFileError) Is(target error) bool { return target == ErrGDSUnavailable }
func (e *CuFileError) retryable() bool      { return false }

var cufile struct{ maxBatch int }

func openCuFile() error { return errNoCgo("cuFile") }

// CheckCuFile fails with ErrCgoRequired (and matches ErrGDSUnavailable).
func CheckCuFile() error { return fmt.Errorf("%w: %w", ErrGDSUnavailable, errNoCgo("cuFile")) }

func cufileHandle(fd int) (unsafe.Pointer, error) { return nil, errNoCgo("cuFile") }
func cufileHandleRelease(fh unsafe.Pointer)       {}
func cufileBufRegister(p, n uint64) error         { return errNoCgo("cuFile") }
func cufileBufDeregister(p uint64) error          { return nil }

type gdsEvent struct {
	cookie uint64
	ret    int64
	status int
}

const (
	gdsCanceled = 1
	gdsComplete = 2
)

type gdsBatch struct{ got []gdsEvent }

func newGDSBatch(n int) (*gdsBatch, error) { return nil, errNoCgo("cuFile") }
func (b *gdsBatch) set(k int, write bool, fh unsafe.Pointer, devBase uint64, devOff, fileOff, size uint64, cookie uint64) {
}
func (b *gdsBatch) submit(n int) error { return errNoCgo("cuFile") }
func (b *gdsBatch) poll() (int, error) { return 0, errNoCgo("cuFile") }
func (b *gdsBatch) cancel() error      { return nil }
func (b *gdsBatch) destroy()           {}
