// Command warpread runs a kernel in which every warp reads large chunks of
// a file through a megaio loop, one READ per warp, and sums them with its
// 32 lanes; the host copies each warp's sum out of the kernels' memory
// after the kernel ends and checks it. It runs on a GPU where one opens
// and on CPU threads otherwise, the same source either way, and says which.
//
//	go run ./examples/warpread                    # a 32 MiB file of its own, 1 MiB chunks
//	go run ./examples/warpread -file data.bin -chunk 4194304
package main

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/kernels"
)

//go:embed warpread.cu
var source []byte

type options struct {
	file            string
	size, chunk     int
	blocks, threads int
	target          kernels.Target
}

func main() {
	o := options{}
	flag.StringVar(&o.file, "file", "", "the file to read (default: a new file of -size random bytes)")
	flag.IntVar(&o.size, "size", 32<<20, "the size of the file made when -file is not given")
	flag.IntVar(&o.chunk, "chunk", 1<<20, "bytes a READ (one per warp at a time)")
	flag.IntVar(&o.blocks, "blocks", 4, "blocks of the grid")
	flag.IntVar(&o.threads, "threads", 64, "threads a block (a warp per 32)")
	target := flag.String("target", "auto", "where the kernel runs: auto (a GPU where one opens), gpu or cpu")
	flag.Parse()
	var err error
	if o.target, err = kernels.ParseTarget(*target); err == nil {
		err = run(o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "warpread:", err)
		os.Exit(1)
	}
}

func run(o options, w io.Writer) (err error) {
	if o.size <= 0 || o.chunk <= 0 || o.chunk > 1<<30 || o.blocks <= 0 || o.threads <= 0 {
		return fmt.Errorf("-size, -blocks and -threads must be positive, -chunk 1 to 1 GiB")
	}
	warps := o.blocks * ((o.threads + 31) / 32)
	k, err := kernels.Open(kernels.Config{Code: source, Name: "warpread", Target: o.target})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, k.Close()) }() // runs last: after the loop is closed
	fmt.Fprintf(w, "warpread: the kernel runs on %s\n", k.Where())

	path, data := o.file, []byte(nil)
	if path == "" {
		dir, err := os.MkdirTemp("", "megaio-warpread-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path, data = filepath.Join(dir, "data"), make([]byte, o.size)
		r := rand.New(rand.NewPCG(3, 4))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	} else if data, err = os.ReadFile(path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	// A completion id per warp (megaio_dev_warp_cid(1, 0)).
	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 256, Completions: uint32(warps)})
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
	buf, err := l.NewBuffer(warps*o.chunk, megaio.BufferOptions{})
	if err != nil {
		return err
	}
	dest, err := l.AddDestination(buf, 0, uint64(warps*o.chunk))
	if err != nil {
		return err
	}
	if err := l.Start(); err != nil {
		return err
	}
	kq, err := k.Attach(l, q)
	if err != nil {
		return err
	}
	// The results live in the kernels' own memory (device memory on a
	// GPU): a sum and an error count per warp, copied out at the end.
	results, err := k.Alloc(16 * warps)
	if err != nil {
		return err
	}
	args, err := k.Args(kq.Queue, kq.Side, k.BufferAddress(buf), uint64(fh), uint64(dest), uint64(len(data)),
		uint64(o.chunk), results)
	if err != nil {
		return err
	}
	start := time.Now()
	run, err := k.Launch("warpread", megaio.Dim3{X: o.blocks}, megaio.Dim3{X: o.threads}, args)
	if err != nil {
		return err
	}
	if err := run.Wait(context.Background()); err != nil {
		return err
	}
	elapsed := time.Since(start)
	out := make([]byte, 16*warps)
	if err := k.CopyOut(out, results); err != nil {
		return err
	}

	want := make([]uint64, warps)
	for c := 0; c*o.chunk < len(data); c++ {
		for i := c * o.chunk; i < min((c+1)*o.chunk, len(data)); i++ {
			want[c%warps] += uint64(data[i]) * (uint64(i)%65521 + 1)
		}
	}
	for wp := 0; wp < warps; wp++ {
		if e := binary.LittleEndian.Uint64(out[8*(warps+wp):]); e != 0 {
			return fmt.Errorf("warp %d: %d READs with a wrong result", wp, e)
		}
		if got := binary.LittleEndian.Uint64(out[8*wp:]); got != want[wp] {
			return fmt.Errorf("warp %d: the kernel's sum %#x, the host's %#x", wp, got, want[wp])
		}
	}
	st := l.Stats()
	fmt.Fprintf(w, "warpread: verified: %d warps, %d READs of up to %d KiB (one per warp at a time), %.1f MB in %v; "+
		"every warp's sum equals the host's\n", warps, st.Requests[megaio.OpRead], o.chunk>>10, float64(st.Bytes)/1e6,
		elapsed.Round(time.Millisecond))
	return nil
}
