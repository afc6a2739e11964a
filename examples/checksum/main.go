// Command checksum runs a persistent kernel that reads a file through a
// megaio loop and checksums it, pass after pass, until told to stop; then
// it checks every block's sum against the host's. It runs on a GPU where
// one opens (nvcc builds the kernel for it) and on CPU threads otherwise,
// the same source either way, and says which.
//
//	go run ./examples/checksum                      # a 16 MiB file of its own, 3 passes
//	go run ./examples/checksum -file data.bin -passes 10
//	go run ./examples/checksum -device              # into GPU memory (GDS or the bounce path); needs a GPU
//	go run ./examples/checksum -target cpu          # CPU threads even where there is a GPU
//
// What a service does, in order: build and load the kernels
// (kernels.Open), make a queue and a loop and register the file and
// the destination, start the loop, attach the queue for the kernels,
// launch, watch the kernel's progress words, store the stop word, wait for
// the kernel to end, and only then stop and close the loop: the kernel
// uses its queue and buffers until it has ended.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/kernels"
)

//go:embed checksum.cu
var source []byte

type options struct {
	file            string
	size            int
	chunk           int
	blocks, threads int
	passes          uint64
	device          bool
	target          kernels.Target
	// stall is how long the kernel may make no progress (no block
	// finishing a pass) before the run is called stuck.
	stall time.Duration
}

func main() {
	o := options{}
	flag.StringVar(&o.file, "file", "", "the file to checksum (default: a new file of -size random bytes)")
	flag.IntVar(&o.size, "size", 16<<20, "the size of the file made when -file is not given")
	flag.IntVar(&o.chunk, "chunk", 256<<10, "bytes a READ")
	flag.IntVar(&o.blocks, "blocks", 8, "blocks of the grid")
	flag.IntVar(&o.threads, "threads", 128, "threads a block")
	flag.Uint64Var(&o.passes, "passes", 3, "passes every block makes over its chunks before the kernel is told to stop")
	flag.BoolVar(&o.device, "device", false, "read into GPU memory (GDS or the bounce path) instead of mapped host memory")
	target := flag.String("target", "auto", "where the kernel runs: auto (a GPU where one opens), gpu or cpu")
	flag.DurationVar(&o.stall, "stall", time.Minute, "how long the kernel may make no progress before the run fails")
	flag.Parse()
	var err error
	if o.target, err = kernels.ParseTarget(*target); err == nil {
		err = run(o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "checksum:", err)
		os.Exit(1)
	}
}

// errNeedsGPU: -device where the kernels run on CPU threads.
var errNeedsGPU = errors.New("device memory needs a GPU")

// The control words, in a buffer of the loop that the kernel reaches
// (mapped for the GPU by Attach): the stop word the host writes; each
// block's pass count and sum; the kernel's error word.
const stopWord = 0

func passWord(b int) int     { return 1 + 2*b }
func sumWord(b int) int      { return 2 + 2*b }
func errWord(blocks int) int { return 1 + 2*blocks }

func run(o options, w io.Writer) (err error) {
	if o.chunk <= 0 || o.blocks <= 0 || o.blocks > 200 || o.threads <= 0 || o.passes == 0 {
		return fmt.Errorf("-chunk, -threads and -passes must be positive, -blocks 1 to 200")
	}
	k, err := kernels.Open(kernels.Config{Code: source, Name: "checksum", Target: o.target})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, k.Close()) }() // runs last: after the loop is closed
	fmt.Fprintf(w, "checksum: the kernel runs on %s\n", k.Where())
	if o.device && !k.OnGPU() {
		return fmt.Errorf("-device: %w, and the kernel runs on %s", errNeedsGPU, k.Where())
	}

	path, data, cleanup, err := input(o)
	if err != nil {
		return err
	}
	defer cleanup()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	// One completion id per block: each block keeps one READ in flight.
	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 256, Completions: uint32(o.blocks)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, q.Close()) }()
	l, err := megaio.NewLoop(q, megaio.Config{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }() // stops the loop too
	fh, err := l.RegisterFile(f)
	if err != nil {
		return err
	}
	control, err := l.NewBuffer(4096, megaio.BufferOptions{})
	if err != nil {
		return err
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&control.Bytes()[0])), len(control.Bytes())/8)

	// The destination: a region of o.chunk bytes per block, in mapped
	// host memory or in GPU memory.
	region := uint64(o.blocks * o.chunk)
	var dest megaio.DestHandle
	var hostDest *megaio.Buffer
	var devDest *megaio.DeviceBuffer
	if o.device {
		var warn *megaio.PathWarning
		if devDest, warn, err = l.NewDeviceBuffer(k.GPU(), int(region)); err != nil {
			return err
		}
		if warn != nil {
			fmt.Fprintf(w, "checksum: %v\n", warn)
		}
		if dest, err = l.AddDeviceDestination(devDest, 0, region); err != nil {
			return err
		}
		fmt.Fprintf(w, "checksum: reading into GPU memory by %v\n", devDest.Path())
	} else {
		if hostDest, err = l.NewBuffer(int(region), megaio.BufferOptions{}); err != nil {
			return err
		}
		if dest, err = l.AddDestination(hostDest, 0, region); err != nil {
			return err
		}
	}
	if err := l.Start(); err != nil {
		return err
	}
	kq, err := k.Attach(l, q) // maps the queue and buffers for a GPU
	if err != nil {
		return err
	}
	destAddr := k.BufferAddress(hostDest)
	if devDest != nil {
		destAddr = devDest.Pointer()
	}
	ctl := k.BufferAddress(control)
	args, err := k.Args(kq.Queue, kq.Side, destAddr, uint64(fh), uint64(dest), uint64(len(data)), uint64(o.chunk),
		ctl, ctl+8*uint64(errWord(o.blocks)))
	if err != nil {
		return err
	}

	start := time.Now()
	run, err := k.Launch("checksum", megaio.Dim3{X: o.blocks}, megaio.Dim3{X: o.threads}, args)
	if err != nil {
		return err
	}
	// Watch the blocks' pass counts; once every block has made o.passes,
	// tell the kernel to stop. A kernel that makes no progress for o.stall
	// is told to stop too, and reported.
	least, last, moved := uint64(0), uint64(0), time.Now()
	for !run.Ended() {
		least = ^uint64(0)
		var total uint64
		for b := 0; b < o.blocks; b++ {
			p := atomic.LoadUint64(&words[passWord(b)])
			least, total = min(least, p), total+p
		}
		if total != last {
			last, moved = total, time.Now()
		}
		if least >= o.passes || time.Since(moved) > o.stall {
			break
		}
		time.Sleep(time.Millisecond)
	}
	atomic.StoreUint64(&words[stopWord], 1)
	if err := run.Wait(context.Background()); err != nil {
		return err
	}
	elapsed := time.Since(start)
	if least < o.passes {
		return fmt.Errorf("the kernel made no progress for %v: the slowest block finished %d of %d passes", o.stall,
			least, o.passes)
	}

	// Every block's sum against the host's, over the same chunks.
	want := make([]uint64, o.blocks)
	for c := 0; c*o.chunk < len(data); c++ {
		for i := c * o.chunk; i < min((c+1)*o.chunk, len(data)); i++ {
			want[c%o.blocks] += uint64(data[i]) * (uint64(i)%65521 + 1)
		}
	}
	var total uint64
	for b := 0; b < o.blocks; b++ {
		if got := atomic.LoadUint64(&words[sumWord(b)]); got != want[b] {
			return fmt.Errorf("block %d: the kernel's sum %#x, the host's %#x", b, got, want[b])
		}
		total += atomic.LoadUint64(&words[passWord(b)])
	}
	if atomic.LoadUint64(&words[errWord(o.blocks)]) != 0 {
		return fmt.Errorf("the kernel saw a READ with a wrong result or a pass whose sum changed")
	}
	st := l.Stats()
	fmt.Fprintf(w, "checksum: verified: %d blocks x %d threads, %d passes in all (at least %d each), %d READs, "+
		"%.1f MB through the loop in %v; every block's sum equals the host's\n", o.blocks, o.threads, total, least,
		st.Requests[megaio.OpRead], float64(st.Bytes)/1e6, elapsed.Round(time.Millisecond))
	return nil
}

// input is the file to read and its bytes: o.file, or a new file of
// o.size random bytes, which cleanup removes.
func input(o options) (path string, data []byte, cleanup func(), err error) {
	if o.file != "" {
		data, err := os.ReadFile(o.file)
		return o.file, data, func() {}, err
	}
	data = make([]byte, o.size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	dir, err := os.MkdirTemp("", "megaio-checksum-")
	if err != nil {
		return "", nil, nil, err
	}
	path = filepath.Join(dir, "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		os.RemoveAll(dir)
		return "", nil, nil, err
	}
	return path, data, func() { os.RemoveAll(dir) }, nil
}
