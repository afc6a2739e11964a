package kernels

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/megaio/megaio"
)

// RequireToolchain is requireToolchain for the external tests
// (example_test.go); it exists only in test builds.
var RequireToolchain = requireToolchain

// requireToolchain skips the test, saying why, where kernels cannot be
// built for CPU threads (no g++, no libcu++), or fails it under
// MEGAIO_REQUIRE_CPU_KERNELS (./build.sh test sets it).
func requireToolchain(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	if cmds, _ := BuildCommands("k.cu", dir, dir); cmds.CPU == nil {
		if os.Getenv("MEGAIO_REQUIRE_CPU_KERNELS") != "" {
			t.Fatalf("kernels cannot be built for CPU threads: %s", cmds.Missing["cpu"])
		}
		t.Skipf("skipping: %s", cmds.Missing["cpu"])
	}
}

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

// TestProgram: the Program calls on CPU threads, and their refusals: a
// wait that ends before the kernel does leaves it running and says so;
// Close refuses while it runs; memory, arguments and launches are checked;
// nothing works after Close, and nothing panics.
func TestProgram(t *testing.T) {
	requireToolchain(t)
	if _, err := Open(Config{}); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Open with nothing to build = %v, want megaio.ErrConfig", err)
	}
	if _, err := Open(Config{Source: "a.cu", Code: []byte("x")}); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Open with Source and Code = %v, want megaio.ErrConfig", err)
	}
	if _, err := Open(Config{Code: []byte("this is not C++"), Target: TargetCPU}); !errors.Is(err, megaio.ErrConfig) ||
		!strings.Contains(err.Error(), "building") {
		t.Errorf("Open of a source that does not compile = %v, want megaio.ErrConfig with the compiler's output", err)
	}
	if _, err := Open(Config{Code: []byte(waitForWord), Target: Target(7)}); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Open with Target 7 = %v, want megaio.ErrConfig", err)
	}
	dir := t.TempDir()
	k, err := Open(Config{Code: []byte(waitForWord), Name: "wait", Target: TargetCPU, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if k.OnGPU() || k.GPU() != nil || k.Where() != "CPU threads" {
		t.Errorf("TargetCPU: OnGPU %v, GPU %v, Where %q", k.OnGPU(), k.GPU(), k.Where())
	}
	if _, err := os.Stat(dir + "/wait.so"); err != nil {
		t.Errorf("the library is not in Dir: %v", err)
	}
	if _, err := k.Attach(nil, nil); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Attach(nil, nil) = %v, want megaio.ErrConfig", err)
	}
	if k.BufferAddress(nil) != 0 {
		t.Error("BufferAddress(nil) != 0")
	}
	if _, err := k.Alloc(0); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Alloc(0) = %v, want megaio.ErrConfig", err)
	}
	word, err := k.Alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	out, err := k.Alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.CopyIn(word+4, make([]byte, 8)); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("CopyIn past an allocation = %v, want megaio.ErrConfig", err)
	}
	if _, err := k.Launch("wait_for_word", megaio.Dim3{X: 1}, megaio.Dim3{X: 1}, make([]uint64, 9)...); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Launch with 9 arguments = %v, want megaio.ErrConfig", err)
	}
	if _, err := k.Launch("nope", megaio.Dim3{X: 1}, megaio.Dim3{X: 1}); !errors.Is(err, megaio.ErrConfig) {
		t.Errorf("Launch of a kernel the library lacks = %v, want megaio.ErrConfig", err)
	}
	args, err := k.Args(word, out)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	if err := k.CopyOut(got, args); err != nil || binary.LittleEndian.Uint64(got) != word || binary.LittleEndian.Uint64(got[8:]) != out {
		t.Fatalf("Args wrote %x (%v), want the words %#x %#x", got, err, word, out)
	}

	run, err := k.Launch("wait_for_word", megaio.Dim3{X: 1}, megaio.Dim3{X: 1}, word, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := run.Wait(ctx); !errors.Is(err, ErrRunning) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait that ends before the kernel = %v, want ErrRunning and the deadline", err)
	}
	if err := k.Close(); !errors.Is(err, megaio.ErrInUse) {
		t.Errorf("Close while a kernel runs = %v, want megaio.ErrInUse", err)
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
	if err := run.Wait(context.Background()); err != nil {  // it returns once its word is set: a hang is caught by go test's -timeout
		t.Fatal(err)
	}
	if err := k.CopyOut(got[:8], out); err != nil || binary.LittleEndian.Uint64(got) != 42 {
		t.Errorf("the kernel's result: %d, %v; want 42", binary.LittleEndian.Uint64(got), err)
	}

	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Errorf("a second Close = %v", err)
	}
	if _, err := k.Alloc(8); !errors.Is(err, megaio.ErrClosed) {
		t.Errorf("Alloc after Close = %v, want megaio.ErrClosed", err)
	}
	if _, err := k.Launch("wait_for_word", megaio.Dim3{X: 1}, megaio.Dim3{X: 1}); !errors.Is(err, megaio.ErrClosed) {
		t.Errorf("Launch after Close = %v, want megaio.ErrClosed", err)
	}
	if err := k.CopyIn(word, []byte{1}); !errors.Is(err, megaio.ErrClosed) {
		t.Errorf("CopyIn after Close = %v, want megaio.ErrClosed", err)
	}
	if err := k.CopyOut(got[:8], out); !errors.Is(err, megaio.ErrClosed) {
		t.Errorf("CopyOut after Close = %v, want megaio.ErrClosed", err)
	}
}
