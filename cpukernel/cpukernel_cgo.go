//go:build cgo

package cpukernel

// The CPU launcher's loader (cpukernel.go has its types and what it is for).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int (*megaio_cpu_abi_fn)(void);
typedef int (*megaio_cpu_launch_fn)(const char *, const unsigned *, const unsigned *, const uint64_t *, int, int,
				    void **, char *, size_t);
typedef int (*megaio_cpu_wait_fn)(void *, long long, char *, size_t);
typedef void (*megaio_cpu_describe_fn)(void *, char *, size_t);
typedef unsigned (*megaio_cpu_returned_fn)(void *);
typedef void (*megaio_cpu_abort_fn)(void *, const char *);
typedef int (*megaio_cpu_release_fn)(void *);

struct megaio_cpu_lib {
	void *lib;
	megaio_cpu_launch_fn launch;
	megaio_cpu_wait_fn wait;
	megaio_cpu_describe_fn describe;
	megaio_cpu_returned_fn returned;
	megaio_cpu_abort_fn abort;
	megaio_cpu_release_fn release;
};

// Opens path and resolves the launcher's entry points: 0, -1 (dlopen or a
// missing entry point: err says which) or the library's launcher ABI when
// it is not want.
static int megaio_cpu_open(struct megaio_cpu_lib *m, const char *path, int want, char *err, size_t len)
{
	m->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!m->lib) {
		const char *e = dlerror();
		snprintf(err, len, "%s", e ? e : "dlopen failed");
		return -1;
	}
	megaio_cpu_abi_fn abi = (megaio_cpu_abi_fn)dlsym(m->lib, "megaio_cpu_abi");
	m->launch = (megaio_cpu_launch_fn)dlsym(m->lib, "megaio_cpu_launch");
	m->wait = (megaio_cpu_wait_fn)dlsym(m->lib, "megaio_cpu_wait");
	m->describe = (megaio_cpu_describe_fn)dlsym(m->lib, "megaio_cpu_describe");
	m->returned = (megaio_cpu_returned_fn)dlsym(m->lib, "megaio_cpu_returned");
	m->abort = (megaio_cpu_abort_fn)dlsym(m->lib, "megaio_cpu_abort");
	m->release = (megaio_cpu_release_fn)dlsym(m->lib, "megaio_cpu_release");
	if (!abi || !m->launch || !m->wait || !m->describe || !m->returned || !m->abort || !m->release) {
		snprintf(err, len, "%s has no megaio_cpu_* entry points: was it built from a file that includes "
			 "megaio_device.cuh, with a host compiler?", path);
		dlclose(m->lib);
		return -1;
	}
	int v = abi();
	if (v != want) {
		dlclose(m->lib);
		return v;
	}
	return 0;
}
static int megaio_cpu_call_launch(struct megaio_cpu_lib *m, const char *k, const unsigned *g, const unsigned *b,
				  const uint64_t *a, int n, int mode, void **out, char *err, size_t len)
{
	return m->launch(k, g, b, a, n, mode, out, err, len);
}
static int megaio_cpu_call_wait(struct megaio_cpu_lib *m, void *l, long long ns, char *msg, size_t len)
{
	return m->wait(l, ns, msg, len);
}
static void megaio_cpu_call_describe(struct megaio_cpu_lib *m, void *l, char *msg, size_t len) { m->describe(l, msg, len); }
static unsigned megaio_cpu_call_returned(struct megaio_cpu_lib *m, void *l) { return m->returned(l); }
static void megaio_cpu_call_abort(struct megaio_cpu_lib *m, void *l, const char *why) { m->abort(l, why); }
static int megaio_cpu_call_release(struct megaio_cpu_lib *m, void *l) { return m->release(l); }
*/
import "C"

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unsafe"
)

// cpuABI is the launcher ABI (MEGAIO_CPU_ABI in include/megaio_cpu.h) this
// package speaks.
const cpuABI = 2

// Available reports whether the launcher can run here: nil, or (built
// without cgo) ErrCgoRequired.
func Available() error { return nil }

// Module is a library of kernels built for the CPU launcher
// (include/megaio_cpu.h). Its kernels run on OS threads, one per CUDA
// thread, and see memory by its host address: give them the queue's
// Memory(), a producer side copied from Queue.DeviceProducerSide into memory
// that stays put (not the Go heap: mmap it), and buffers' Bytes().
type Module struct {
	lib C.struct_megaio_cpu_lib
}

// Load opens a library built for the CPU launcher. The library is
// never unloaded: a kernel that does not end keeps running its code.
func Load(path string) (*Module, error) {
	m := &Module{}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var msg [512]C.char
	switch r := C.megaio_cpu_open(&m.lib, cpath, cpuABI, &msg[0], C.size_t(len(msg))); {
	case r == -1:
		return nil, configError("Load: %s", C.GoString(&msg[0]))
	case r != 0:
		return nil, configError("Load: %s speaks CPU launcher ABI %d, this package %d: rebuild it "+
			"against this version's include/megaio_cpu.h", path, int(r), cpuABI)
	}
	return m, nil
}

// Run is a kernel running on CPU threads.
type Run struct {
	m        *Module
	kernel   string
	h        unsafe.Pointer
	mu       sync.Mutex
	ended    bool
	err      error
	returned int // threads returned, once ended (the launch is freed then)
}

func (d Dim3) c() [3]C.uint {
	one := func(v int) C.uint {
		if v == 0 {
			return 1
		}
		return C.uint(v)
	}
	return [3]C.uint{one(d.X), one(d.Y), one(d.Z)}
}

// Launch starts kernel on grid x block threads (every block at once, one OS
// thread per CUDA thread, at most 1024 a block and 16384 in all) with
// args, each a 64-bit word (integers and pointers). It does not wait.
func (m *Module) Launch(kernel string, grid, block Dim3, opts LaunchOptions, args ...uint64) (*Run, error) {
	if min(grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z) < 0 {
		return nil, configError("Module.Launch: grid %+v, block %+v: negative dimension", grid, block)
	}
	ck := C.CString(kernel)
	defer C.free(unsafe.Pointer(ck))
	g, b := grid.c(), block.c()
	a := make([]C.uint64_t, len(args)+1) // never empty: &a[0] is valid
	for i, v := range args {
		a[i] = C.uint64_t(v)
	}
	var msg [512]C.char
	var h unsafe.Pointer
	if C.megaio_cpu_call_launch(&m.lib, ck, &g[0], &b[0], &a[0], C.int(len(args)), C.int(opts.ActiveMask), &h,
		&msg[0], C.size_t(len(msg))) != 0 {
		return nil, configError("Module.Launch: %s", C.GoString(&msg[0]))
	}
	return &Run{m: m, kernel: kernel, h: h}, nil
}

// Wait waits for every thread of the launch to return. It returns nil;
// an error matching ErrAborted when a thread broke a rule of the
// model (the message names the kernel, block, warp and lanes); or, when ctx
// ends first, an error matching ErrRunning that says what the threads
// were doing. The launch is then aborted: its threads leave at their next
// barrier, warp operation or __nanosleep. If they do within grace, the
// error says so and the launch is over; if not, the error says the threads
// still run, and the memory they use must stay mapped (Ended reports
// whether they left later).
func (l *Run) Wait(ctx context.Context, grace time.Duration) error {
	for {
		step := 50 * time.Millisecond
		if d, ok := ctx.Deadline(); ok && time.Until(d) < step {
			step = max(time.Until(d), 0)
		}
		// The lock is held a step at a time, so that Returned answers
		// while a Wait goes on.
		l.mu.Lock()
		if l.ended || l.waitFor(step) {
			err := l.err
			l.mu.Unlock()
			return err
		}
		if ctx.Err() != nil {
			break // with the lock held
		}
		l.mu.Unlock()
	}
	defer l.mu.Unlock()
	var msg [2048]C.char
	C.megaio_cpu_call_describe(&l.m.lib, l.h, &msg[0], C.size_t(len(msg)))
	state := C.GoString(&msg[0])
	why := C.CString("the launch's wait ended before its threads returned")
	C.megaio_cpu_call_abort(&l.m.lib, l.h, why)
	C.free(unsafe.Pointer(why))
	if C.megaio_cpu_call_wait(&l.m.lib, l.h, C.longlong(grace), &msg[0], C.size_t(len(msg))) != 1 {
		return l.end(fmt.Errorf("%w: kernel %s did not end before %v (%s); its threads left when asked",
			ErrRunning, l.kernel, context.Cause(ctx), state))
	}
	return fmt.Errorf("%w: kernel %s did not end before %v (%s), and its threads did not leave within %v: keep "+
		"the memory they use mapped", ErrRunning, l.kernel, context.Cause(ctx), state, grace)
}

// Returned reports how many of the launch's threads have returned so far:
// what a waiter can watch move while a long kernel ends.
func (l *Run) Returned() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return l.returned
	}
	return int(C.megaio_cpu_call_returned(&l.m.lib, l.h))
}

// waitFor waits up to d for the launch to end; when it has, it records the
// outcome (nil, or ErrAborted with the abort's message), frees the
// launch and returns true. Called with l.mu held.
func (l *Run) waitFor(d time.Duration) bool {
	var msg [2048]C.char
	switch C.megaio_cpu_call_wait(&l.m.lib, l.h, C.longlong(d), &msg[0], C.size_t(len(msg))) {
	case 0:
		l.end(nil)
	case 2:
		l.end(fmt.Errorf("%w: %s", ErrAborted, C.GoString(&msg[0])))
	}
	return l.ended
}

// end records the launch's outcome and frees it (every thread has returned).
func (l *Run) end(err error) error {
	l.returned = int(C.megaio_cpu_call_returned(&l.m.lib, l.h))
	C.megaio_cpu_call_release(&l.m.lib, l.h)
	l.ended, l.err = true, err
	return err
}

// Ended reports whether every thread of the launch has returned.
func (l *Run) Ended() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended || l.waitFor(0)
}
