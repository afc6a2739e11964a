package kernels_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/kernels"
)

// helloKernel: every thread of the grid READs 16 bytes of the file at its
// own offset into its own place in the buffer, then reports its result in
// a host word of its own.
const helloKernel = `
#include "megaio_device.cuh"
extern "C" __global__ void hello(unsigned long long queue, unsigned long long side, unsigned long long file_dest,
				 unsigned long long results)
{
	megaio_dev_queue q = megaio_dev_attach((void *)queue, (void *)side);
	unsigned long long t = blockIdx.x * blockDim.x + threadIdx.x;
	megaio_request r = {};
	r.op = MEGAIO_OP_READ;
	r.file = (uint32_t)(file_dest >> 32);
	r.dest = (uint32_t)file_dest;
	r.file_offset = 16 * t;
	r.dest_offset = 16 * t;
	r.length = 16;
	long long n = megaio_dev_request(q, r, megaio_dev_thread_cid(1, 0));
	megaio_dev_store_host((unsigned long long *)results + t, (unsigned long long)n);
}
MEGAIO_CPU_KERNEL(hello);
`

// ExampleOpen: a kernel source built and launched on a GPU where
// one opens, else on CPU threads (TestExampleOpen runs it there). Its
// 64 threads each READ 16 bytes of a file through the loop; the host checks
// the bytes once the kernel has ended. examples/ has whole programs.
func ExampleOpen() {
	k, err := kernels.Open(kernels.Config{Code: []byte(helloKernel), Name: "hello"})
	if err != nil {
		log.Fatal(err) // no GPU and no g++ or libcu++: the error says what is missing
	}
	defer k.Close() // after the loop is closed (defers run last first)

	f, err := os.CreateTemp("", "hello-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	f.WriteString(strings.Repeat("hello, kernel!\n.", 64)) // 64 x 16 bytes

	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 64, Completions: 64})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	l, err := megaio.NewLoop(q, megaio.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	fh, _ := l.RegisterFile(f)
	buf, _ := l.NewBuffer(4096, megaio.BufferOptions{}) // bytes 0-1023: the data; 1024 on: one result word a thread
	dest, _ := l.AddDestination(buf, 0, 1024)
	if err := l.Start(); err != nil {
		log.Fatal(err)
	}
	kq, err := k.Attach(l, q) // on a GPU: maps the queue and buffers
	if err != nil {
		log.Fatal(err)
	}
	run, err := k.Launch("hello", megaio.Dim3{X: 2}, megaio.Dim3{X: 32}, kq.Queue, kq.Side,
		uint64(fh)<<32|uint64(dest), k.BufferAddress(buf)+1024)
	if err != nil {
		log.Fatal(err)
	}
	if err := run.Wait(context.Background()); err != nil { // the kernel ends by itself
		log.Fatal(err)
	}
	results := unsafe.Slice((*uint64)(unsafe.Pointer(&buf.Bytes()[1024])), 64)
	ok := 0
	for i := range results {
		if atomic.LoadUint64(&results[i]) == 16 && string(buf.Bytes()[16*i:16*i+16]) == "hello, kernel!\n." {
			ok++
		}
	}
	fmt.Printf("%d of 64 threads read their 16 bytes\n", ok)
}

// TestExampleOpen runs ExampleOpen on CPU threads (go test
// runs an example only with an Output comment, which this one cannot have:
// without a GPU and g++ it cannot run).
func TestExampleOpen(t *testing.T) {
	kernels.RequireToolchain(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	ExampleOpen()
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if got, want := string(out), "64 of 64 threads read their 16 bytes\n"; got != want {
		t.Fatalf("ExampleOpen printed %q, want %q", got, want)
	}
}
