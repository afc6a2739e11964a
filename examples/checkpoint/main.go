// Command checkpoint runs a kernel that spills its results to a file
// through a megaio loop: each block computes a region, WRITEs it, and
// FSYNCs the file after its last step. Then the host reads the file back
// and checks every byte. It runs on a GPU where one opens and on CPU
// threads otherwise, the same source either way, and says which.
//
//	go run ./examples/checkpoint                  # into a new file, removed at the end
//	go run ./examples/checkpoint -file ckpt.bin -steps 16
package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/kernels"
)

//go:embed checkpoint.cu
var source []byte

type options struct {
	file                   string
	region                 int
	blocks, threads, steps int
	target                 kernels.Target
}

func main() {
	o := options{}
	flag.StringVar(&o.file, "file", "", "the checkpoint file, created or truncated (default: a new file, removed at the end)")
	flag.IntVar(&o.region, "region", 128<<10, "bytes a block writes a step")
	flag.IntVar(&o.blocks, "blocks", 8, "blocks of the grid")
	flag.IntVar(&o.threads, "threads", 128, "threads a block")
	flag.IntVar(&o.steps, "steps", 4, "steps every block computes and writes")
	target := flag.String("target", "auto", "where the kernel runs: auto (a GPU where one opens), gpu or cpu")
	flag.Parse()
	var err error
	if o.target, err = kernels.ParseTarget(*target); err == nil {
		err = run(o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "checkpoint:", err)
		os.Exit(1)
	}
}

// expected is what block b computes at step s: byte i is
// (i*131 + b*7 + s*13) mod 251, as in checkpoint.cu.
func expected(region, b, s int) []byte {
	p := make([]byte, region)
	for i := range p {
		p[i] = byte((i*131 + b*7 + s*13) % 251)
	}
	return p
}

func run(o options, w io.Writer) (err error) {
	if o.region <= 0 || o.blocks <= 0 || o.blocks > 256 || o.threads <= 0 || o.steps <= 0 {
		return fmt.Errorf("-region, -threads and -steps must be positive, -blocks 1 to 256")
	}
	k, err := kernels.Open(kernels.Config{Code: source, Name: "checkpoint", Target: o.target})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, k.Close()) }() // runs last: after the loop is closed
	fmt.Fprintf(w, "checkpoint: the kernel runs on %s\n", k.Where())

	path := o.file
	if path == "" {
		dir, err := os.MkdirTemp("", "megaio-checkpoint-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "checkpoint")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()

	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 256, Completions: uint32(o.blocks)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, q.Close()) }()
	l, err := megaio.NewLoop(q, megaio.Config{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	fh, err := l.RegisterFile(f)
	if err != nil {
		return err
	}
	// The staging buffer the kernel computes into and the loop writes from,
	// one region per block; and the host words: each block's done count,
	// then each block's error (an errno).
	staging, err := l.NewBuffer(o.blocks*o.region, megaio.BufferOptions{})
	if err != nil {
		return err
	}
	dest, err := l.AddDestination(staging, 0, uint64(o.blocks*o.region))
	if err != nil {
		return err
	}
	control, err := l.NewBuffer(4096, megaio.BufferOptions{})
	if err != nil {
		return err
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&control.Bytes()[0])), 2*o.blocks)
	if err := l.Start(); err != nil {
		return err
	}
	kq, err := k.Attach(l, q)
	if err != nil {
		return err
	}
	args, err := k.Args(kq.Queue, kq.Side, k.BufferAddress(staging), uint64(fh), uint64(dest), uint64(o.region),
		uint64(o.steps), k.BufferAddress(control))
	if err != nil {
		return err
	}
	start := time.Now()
	run, err := k.Launch("checkpoint", megaio.Dim3{X: o.blocks}, megaio.Dim3{X: o.threads}, args)
	if err != nil {
		return err
	}
	if err := run.Wait(context.Background()); err != nil {
		return err
	}
	elapsed := time.Since(start)
	for b := 0; b < o.blocks; b++ {
		if e := atomic.LoadUint64(&words[o.blocks+b]); e != 0 {
			return fmt.Errorf("block %d: a WRITE or FSYNC failed: %v", b, syscall.Errno(e))
		}
		if d := atomic.LoadUint64(&words[b]); d != uint64(o.steps) {
			return fmt.Errorf("block %d reported %d steps written, want %d", b, d, o.steps)
		}
	}

	// The file, read back by the host, holds every step of every block.
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if want := o.steps * o.blocks * o.region; len(got) != want {
		return fmt.Errorf("the checkpoint has %d bytes, want %d", len(got), want)
	}
	for s := 0; s < o.steps; s++ {
		for b := 0; b < o.blocks; b++ {
			off := (s*o.blocks + b) * o.region
			if !bytes.Equal(got[off:off+o.region], expected(o.region, b, s)) {
				return fmt.Errorf("step %d of block %d (file offset %d) is not what the block computed", s, b, off)
			}
		}
	}
	st := l.Stats()
	fmt.Fprintf(w, "checkpoint: verified: %d blocks x %d steps, %d WRITEs and %d FSYNCs, %.1f MB written in %v; "+
		"every byte of the file is what the kernel computed\n", o.blocks, o.steps, st.Requests[megaio.OpWrite],
		st.Requests[megaio.OpFsync], float64(st.Bytes)/1e6, elapsed.Round(time.Millisecond))
	return nil
}
