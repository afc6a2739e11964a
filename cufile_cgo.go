package megaio

/*
#cgo CFLAGS: -O2 -Wall -I${SRCDIR}/csrc
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "cufile_shim.c"

static megaio_CUfileError gds_driver_open(struct megaio_cufile *c) { return c->cuFileDriverOpen(); }
static megaio_CUfileError gds_props(struct megaio_cufile *c, megaio_CUfileDrvProps *p) { return c->cuFileDriverGetProperties(p); }
static megaio_CUfileError gds_handle_register(struct megaio_cufile *c, void **fh, int fd) {
	megaio_CUfileDescr d;
	memset(&d, 0, sizeof(d));
	d.type = MEGAIO_CU_FILE_HANDLE_TYPE_OPAQUE_FD;
	d.handle.fd = fd;
	return c->cuFileHandleRegister(fh, &d);
}
static void gds_handle_deregister(struct megaio_cufile *c, void *fh) { c->cuFileHandleDeregister(fh); }
static megaio_CUfileError gds_buf_register(struct megaio_cufile *c, uint64_t p, size_t n) { return c->cuFileBufRegister((const void *)(uintptr_t)p, n, 0); }
static megaio_CUfileError gds_buf_deregister(struct megaio_cufile *c, uint64_t p) { return c->cuFileBufDeregister((const void *)(uintptr_t)p); }
static megaio_CUfileError gds_batch_setup(struct megaio_cufile *c, void **b, unsigned n) { return c->cuFileBatchIOSetUp(b, n); }
static megaio_CUfileError gds_batch_cancel(struct megaio_cufile *c, void *b) { return c->cuFileBatchIOCancel(b); }
static void gds_batch_destroy(struct megaio_cufile *c, void *b) { c->cuFileBatchIODestroy(b); }
*/
import "C"

import (
	"fmt"
	"os"
	"sync"
	"unsafe"
)

// cufileLibrary is cuFile's library name; only tests change it (see
// cudaLibrary).
var cufileLibrary = "libcufile.so.0"

// CuFileError is an error from cuFile: its CUfileOpError code and, for
// CU_FILE_CUDA_DRIVER_ERROR, the CUresult beneath.
type CuFileError struct {
	Op     string // the entry point, e.g. "cuFileHandleRegister"
	Code   int    // CUfileOpError (5000 + n)
	CUCode int    // CUresult when Code is CU_FILE_CUDA_DRIVER_ERROR
}

func (e *CuFileError) Error() string {
	name := "unknown"
	if n := C.megaio_cufile_code_name(C.int(e.Code)); n != nil {
		name = C.GoString(n)
	}
	msg := fmt.Sprintf("megaio: %s: cuFile error %d (%s)", e.Op, e.Code, name)
	if e.Code == C.MEGAIO_CU_FILE_CUDA_DRIVER_ERROR {
		msg += ": " + CUresult(e.CUCode).Error()
	}
	return msg
}

// Is matches ErrGDSUnavailable for the codes that mean "GDS cannot serve
// this here" rather than "this call was wrong" (the table in
// csrc/cufile_shim.h).
func (e *CuFileError) Is(target error) bool {
	return target == ErrGDSUnavailable && C.megaio_cufile_code_kind(C.int(e.Code)) == C.MEGAIO_CUFILE_UNAVAILABLE
}

// retryable: cuFile's "queue full" and "internal error - retry later"
// codes.
func (e *CuFileError) retryable() bool {
	return C.megaio_cufile_code_kind(C.int(e.Code)) == C.MEGAIO_CUFILE_RETRY
}

func cufileErr(op string, r C.megaio_CUfileError) error {
	if r.err == 0 {
		return nil
	}
	return &CuFileError{Op: op, Code: int(r.err), CUCode: int(r.cu_err)}
}

// cufile is the cuFile library, loaded and its driver opened once per
// process, on first use; like the CUDA driver it stays open until exit.
var cufile struct {
	once     sync.Once
	c        C.struct_megaio_cufile
	err      error
	maxBatch int // the driver's max_batch_io_size (0: not reported)
}

// openCuFile loads libcufile.so.0 and opens the cuFile driver. Its errors
// match ErrGDSUnavailable.
func openCuFile() error {
	cufile.once.Do(func() {
		// cuFile needs a CUDA device, and without one it prints to the
		// terminal and writes cufile.log into the working directory on its
		// way to failing: the library says so itself, quietly.
		if n, err := cudaDeviceCount(); err != nil || n == 0 {
			if err == nil {
				err = errorf("%w: the driver reports none", ErrNoDevice)
			}
			cufile.err = errorf("%w: cuFile needs a CUDA device: %w", ErrGDSUnavailable, err)
			return
		}
		// Its log goes nowhere unless the program asked for one
		// (CUFILE_LOGFILE_PATH), for the driver's opening.
		if _, set := os.LookupEnv("CUFILE_LOGFILE_PATH"); !set {
			os.Setenv("CUFILE_LOGFILE_PATH", os.DevNull)
			defer os.Unsetenv("CUFILE_LOGFILE_PATH")
		}
		name := C.CString(cufileLibrary)
		defer C.free(unsafe.Pointer(name))
		var msg [256]C.char
		switch C.megaio_cufile_load(&cufile.c, name, &msg[0], C.size_t(len(msg))) {
		case -1:
			cufile.err = errorf("%w: %s", ErrGDSUnavailable, C.GoString(&msg[0]))
			return
		case -2:
			cufile.err = errorf("%w: %s lacks %s (cuFile 1.7 or newer has the batch API)", ErrGDSUnavailable,
				cufileLibrary, C.GoString(&msg[0]))
			return
		}
		if err := cufileErr("cuFileDriverOpen", C.gds_driver_open(&cufile.c)); err != nil {
			cufile.err = errorf("%w: %w", ErrGDSUnavailable, err)
			return
		}
		var p C.megaio_CUfileDrvProps
		if C.gds_props(&cufile.c, &p).err == 0 {
			cufile.maxBatch = int(p.max_batch_io_size)
		}
	})
	return cufile.err
}

// CheckCuFile loads cuFile and opens its driver, as the first device
// buffer of a loop would: nil when GPUDirect Storage can serve here,
// otherwise an error matching ErrGDSUnavailable that says why. It is what
// `megaio check` reports; cuFile stays open for the process. Without a
// CUDA device it does not load cuFile at all (which would print and write
// a log on its way to failing), and it points cuFile's log at /dev/null
// while the driver opens unless CUFILE_LOGFILE_PATH is set.
func CheckCuFile() error { return openCuFile() }

// cufileHandle registers fd (opened with O_DIRECT) with cuFile.
// The handle is C memory (CUfileHandle_t).
func cufileHandle(fd int) (unsafe.Pointer, error) {
	var fh unsafe.Pointer
	if err := cufileErr("cuFileHandleRegister", C.gds_handle_register(&cufile.c, &fh, C.int(fd))); err != nil {
		return nil, err
	}
	return fh, nil
}

func cufileHandleRelease(fh unsafe.Pointer) { C.gds_handle_deregister(&cufile.c, fh) }

// cufileBufRegister registers device memory [p, p+n) for direct DMA.
func cufileBufRegister(p, n uint64) error {
	return cufileErr("cuFileBufRegister", C.gds_buf_register(&cufile.c, C.uint64_t(p), C.size_t(n)))
}

func cufileBufDeregister(p uint64) error {
	return cufileErr("cuFileBufDeregister", C.gds_buf_deregister(&cufile.c, C.uint64_t(p)))
}

// gdsBatch is one cuFile batch handle with room for n IOs: it carries one
// submission at a time (the batch API's rule) and is reused once every IO
// of that submission has reported.
type gdsBatch struct {
	h      unsafe.Pointer // CUfileBatchHandle_t
	ios    []C.struct_megaio_gds_io
	evs    []C.struct_megaio_gds_event
	got    []gdsEvent               // what the last poll collected
	params *C.megaio_CUfileIOParams // C scratch for the submit shim
	raw    *C.megaio_CUfileIOEvents // C scratch for the poll shim
}

func newGDSBatch(n int) (*gdsBatch, error) {
	b := &gdsBatch{ios: make([]C.struct_megaio_gds_io, n), evs: make([]C.struct_megaio_gds_event, n), got: make([]gdsEvent, n)}
	if err := cufileErr("cuFileBatchIOSetUp", C.gds_batch_setup(&cufile.c, &b.h, C.uint(n))); err != nil {
		return nil, err
	}
	b.params = (*C.megaio_CUfileIOParams)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.megaio_CUfileIOParams{}))))
	b.raw = (*C.megaio_CUfileIOEvents)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.megaio_CUfileIOEvents{}))))
	return b, nil
}

// set fills IO k of the next submission.
func (b *gdsBatch) set(k int, write bool, fh unsafe.Pointer, devBase uint64, devOff, fileOff, size uint64, cookie uint64) {
	io := &b.ios[k]
	io.dev_base, io.dev_off, io.file_off, io.size = C.uint64_t(devBase), C.int64_t(devOff), C.int64_t(fileOff), C.uint64_t(size)
	io.fh, io.cookie, io.opcode = C.uint64_t(uintptr(fh)), C.uint64_t(cookie), C.MEGAIO_CUFILE_READ
	if write {
		io.opcode = C.MEGAIO_CUFILE_WRITE
	}
}

// submit hands IOs [0, n) to cuFile.
func (b *gdsBatch) submit(n int) error {
	if r := C.megaio_gds_submit(&cufile.c, b.h, &b.ios[0], C.uint(n), b.params); r != 0 {
		return &CuFileError{Op: "cuFileBatchIOSubmit", Code: int(r)}
	}
	return nil
}

// gdsEvent is one finished IO.
type gdsEvent struct {
	cookie uint64
	ret    int64 // bytes, or a negative errno
	status int   // CUfileStatus_t: gdsComplete, gdsCanceled, ...
}

// The CUfileStatus_t values the loop tells apart; any other final status
// (failed, invalid, timed out) fails the IO.
const (
	gdsCanceled = C.MEGAIO_CUFILE_CANCELED
	gdsComplete = C.MEGAIO_CUFILE_COMPLETE
)

// poll collects the IOs that finished, without waiting, into b.got[:n].
func (b *gdsBatch) poll() (int, error) {
	n := C.megaio_gds_poll(&cufile.c, b.h, &b.evs[0], C.uint(len(b.evs)), b.raw)
	if n < 0 {
		return 0, &CuFileError{Op: "cuFileBatchIOGetStatus", Code: int(-n)}
	}
	for k, e := range b.evs[:n] {
		b.got[k] = gdsEvent{cookie: uint64(e.cookie), ret: int64(e.ret), status: int(e.status)}
	}
	return int(n), nil
}

func (b *gdsBatch) cancel() error {
	return cufileErr("cuFileBatchIOCancel", C.gds_batch_cancel(&cufile.c, b.h))
}

func (b *gdsBatch) destroy() {
	C.gds_batch_destroy(&cufile.c, b.h)
	C.free(unsafe.Pointer(b.params))
	C.free(unsafe.Pointer(b.raw))
}
