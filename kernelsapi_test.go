package megaio

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// waitForWord: one thread waits, with __nanosleep, until the host sets a
// word, then writes 42 into the kernels' memory at out.
const waitForWord = `
#include "megaio_device.cuh"
extern "C" __global__ void wait_for_word(unsigned long long word, unsigned long long out)
{
	while (!megaio_dev_load_host((const unsigned long long *)word))
		__nanosleep(1000);
	*(unsigned long long *)out = 42;
}
MEGAIO_CPU_KERNEL(wait_for_word);
`

// TestKernels: the Kernels calls on CPU threads, and their refusals: a
// wait that ends before the kernel does leaves it running and says so;
// Close refuses while it runs; memory, arguments and launches are checked;
// nothing works after Close, and nothing panics.
func TestKernels(t *testing.T) {
	requireCPUToolchain(t)
	if _, err := OpenKernels(KernelsConfig{}); !errors.Is(err, ErrConfig) {
		t.Errorf("OpenKernels with nothing to build = %v, want ErrConfig", err)
	}
	if _, err := OpenKernels(KernelsConfig{Source: "a.cu", Code: []byte("x")}); !errors.Is(err, ErrConfig) {
		t.Errorf("OpenKernels with Source and Code = %v, want ErrConfig", err)
	}
	if _, err := OpenKernels(KernelsConfig{Code: []byte("this is not C++"), Target: TargetCPU}); !errors.Is(err, ErrConfig) ||
		!strings.Contains(err.Error(), "building") {
		t.Errorf("OpenKernels of a source that does not compile = %v, want ErrConfig with the compiler's output", err)
	}
	if _, err := OpenKernels(KernelsConfig{Code: []byte(waitForWord), Target: KernelTarget(7)}); !errors.Is(err, ErrConfig) {
		t.Errorf("OpenKernels with Target 7 = %v, want ErrConfig", err)
	}
	dir := t.TempDir()
	k, err := OpenKernels(KernelsConfig{Code: []byte(waitForWord), Name: "wait", Target: TargetCPU, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if k.OnGPU() || k.GPU() != nil || k.Where() != "CPU threads" {
		t.Errorf("TargetCPU: OnGPU %v, GPU %v, Where %q", k.OnGPU(), k.GPU(), k.Where())
	}
	if _, err := os.Stat(dir + "/wait.so"); err != nil {
		t.Errorf("the library is not in Dir: %v", err)
	}
	if _, err := k.Attach(nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("Attach(nil, nil) = %v, want ErrConfig", err)
	}
	if k.BufferAddress(nil) != 0 {
		t.Error("BufferAddress(nil) != 0")
	}
	if _, err := k.Alloc(0); !errors.Is(err, ErrConfig) {
		t.Errorf("Alloc(0) = %v, want ErrConfig", err)
	}
	word, err := k.Alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	out, err := k.Alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.CopyIn(word+4, make([]byte, 8)); !errors.Is(err, ErrConfig) {
		t.Errorf("CopyIn past an allocation = %v, want ErrConfig", err)
	}
	if _, err := k.Launch("wait_for_word", Dim3{X: 1}, Dim3{X: 1}, make([]uint64, 9)...); !errors.Is(err, ErrConfig) {
		t.Errorf("Launch with 9 arguments = %v, want ErrConfig", err)
	}
	if _, err := k.Launch("nope", Dim3{X: 1}, Dim3{X: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("Launch of a kernel the library lacks = %v, want ErrConfig", err)
	}
	args, err := k.Args(word, out)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	if err := k.CopyOut(got, args); err != nil || leUint64(got) != word || leUint64(got[8:]) != out {
		t.Fatalf("Args wrote %x (%v), want the words %#x %#x", got, err, word, out)
	}

	run, err := k.Launch("wait_for_word", Dim3{X: 1}, Dim3{X: 1}, word, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := run.Wait(ctx); !errors.Is(err, ErrKernelRunning) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait that ends before the kernel = %v, want ErrKernelRunning and the deadline", err)
	}
	if err := k.Close(); !errors.Is(err, ErrInUse) {
		t.Errorf("Close while a kernel runs = %v, want ErrInUse", err)
	}
	if run.Ended() {
		t.Fatal("the kernel ended before its word was set")
	}
	k.mu.Lock()
	w, err := k.hostRange(word, 8)
	k.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&w[0])), 1) // the host's store; the kernel's acquire load
	stopped := make(chan error, 1)
	go func() { stopped <- run.Wait(context.Background()) }()
	if err := await(t, "the kernel to end once its word is set", stopped, meter{"ended", func() uint64 {
		if run.Ended() {
			return 1
		}
		return 0
	}}); err != nil {
		t.Fatal(err)
	}
	if err := k.CopyOut(got[:8], out); err != nil || leUint64(got) != 42 {
		t.Errorf("the kernel's result: %d, %v; want 42", leUint64(got), err)
	}

	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Errorf("a second Close = %v", err)
	}
	if _, err := k.Alloc(8); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close = %v, want ErrClosed", err)
	}
	if _, err := k.Launch("wait_for_word", Dim3{X: 1}, Dim3{X: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Launch after Close = %v, want ErrClosed", err)
	}
	if err := k.CopyIn(word, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("CopyIn after Close = %v, want ErrClosed", err)
	}
	if err := k.CopyOut(got[:8], out); !errors.Is(err, ErrClosed) {
		t.Errorf("CopyOut after Close = %v, want ErrClosed", err)
	}
}
