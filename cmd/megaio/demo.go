package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/internal/benchrun"
	"github.com/megaio/megaio/internal/seccomp"
)

type demoConfig struct {
	requests, producers, depth int
	queues                     int
	block, size                int
	dir                        string
	direct                     bool
	backend                    megaio.BackendKind
}

func runDemo(args []string) error {
	var c demoConfig
	fs := newFlagSet("demo")
	fs.IntVar(&c.requests, "requests", 200_000, "READs to serve in all")
	fs.IntVar(&c.producers, "producers", 4, "host producer goroutines (stand-ins for GPU threads)")
	fs.IntVar(&c.depth, "depth", 8, "requests each producer keeps in flight")
	fs.IntVar(&c.queues, "queues", 1, "queues served by the one loop (producer p publishes into queue p mod -queues), as one per GPU would be")
	block, size := int64(4096), int64(128<<20)
	fs.Var(sizeValue{&block}, "block", "bytes per READ (units: 4KiB, 1MiB)")
	fs.Var(sizeValue{&size}, "size", "file size (units: 64MiB, 1GiB)")
	fs.StringVar(&c.dir, "dir", defaultDir(), "directory for the generated file")
	fs.BoolVar(&c.direct, "direct", false, "open the file with O_DIRECT (needs a file system that supports it)")
	backend := fs.String("backend", "auto", "IO backend: auto (io_uring, else the worker pool), io_uring or pool")
	deny := fs.Bool("deny-io-uring", false, "first install a seccomp filter that refuses io_uring, as Docker's default profile does")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if block > 1<<30 || size > 1<<40 {
		return fmt.Errorf("demo: -block at most 1 GiB and -size at most 1 TiB")
	}
	c.block, c.size = int(block), int(size)
	var err error
	if c.backend, err = megaio.ParseBackend(*backend); err != nil {
		return usageError{err}
	}
	if *deny {
		if err := seccomp.DenyIOUring(); err != nil {
			return err
		}
		fmt.Println("seccomp: io_uring_setup, io_uring_enter and io_uring_register now fail with EPERM")
	}
	if c.requests < 1 || c.producers < 1 || c.depth < 1 || c.block < 1 || c.size < c.block {
		return usageErrorf("demo: want positive -requests, -producers, -depth, -block and -size >= -block")
	}
	if c.queues < 1 || c.queues > c.producers || c.queues > megaio.MaxQueues {
		return usageErrorf("demo: want -queues from 1 to -producers (%d)", c.producers)
	}
	return demo(c)
}

func defaultDir() string {
	if unix.Access("/dev/shm", unix.W_OK) == nil {
		return "/dev/shm"
	}
	return os.TempDir()
}

func demo(c demoConfig) error {
	c.queues = max(c.queues, 1)
	fmt.Printf("megaio demo: %d random %s READs of a %s file in %s, %d producers x depth %d, %d queue(s) on one loop\n",
		c.requests, humanBytes(int64(c.block)), humanBytes(int64(c.size)), c.dir, c.producers, c.depth, c.queues)
	path, data, err := makeFile(c.dir, c.size)
	if err != nil {
		return err
	}
	defer os.Remove(path)

	// One loop serves every queue; the queues are closed after it.
	var queues []*megaio.Queue
	defer func() {
		for _, q := range queues {
			q.Close()
		}
	}()
	l, err := megaio.NewLoop(nil, megaio.Config{Backend: c.backend})
	if err != nil {
		return err
	}
	defer l.Close()
	var prods []*megaio.HostProducer
	for range c.queues {
		q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 4096})
		if err != nil {
			return err
		}
		queues = append(queues, q)
		if err := l.AddQueue(q); err != nil {
			return err
		}
		prod, err := q.HostProducer()
		if err != nil {
			return err
		}
		prods = append(prods, prod)
	}
	flags := os.O_RDONLY
	if c.direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return err
	}
	fh, err := l.RegisterFile(f)
	f.Close()
	if err != nil {
		return err
	}
	buf, err := l.NewBuffer(c.producers*c.depth*c.block, megaio.BufferOptions{})
	if err != nil {
		return err
	}
	dest, err := l.AddDestination(buf, 0, uint64(len(buf.Bytes())))
	if err != nil {
		return err
	}
	if err := l.Start(); err != nil {
		return err
	}
	info := l.Backend()
	fmt.Printf("backend: %s\n  because: %s\n", info.Description, info.Reason)

	var served atomic.Int64
	stopProgress := progress(&served, c.requests)
	start := time.Now()
	results := make([]producerResult, c.producers)
	quotas := make([]int, c.queues) // requests published into each queue
	var wg sync.WaitGroup
	for p := range c.producers {
		quota := c.requests / c.producers
		if p < c.requests%c.producers {
			quota++
		}
		quotas[p%c.queues] += quota
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[p] = produce(prods[p%c.queues], fh, dest, buf.Bytes(), data, c, p, quota, &served)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		return err
	}

	var total producerResult
	for _, r := range results {
		total.add(r)
	}
	st := l.Stats()
	fmt.Printf("verified: %d requests, %d bytes, %d mismatches, %d errors\n", total.ok, total.bytes, total.mismatches, total.errors)
	fmt.Printf("throughput: %.0f IOPS, %.2f GB/s over %.3f s\n", float64(total.ok)/elapsed.Seconds(),
		float64(total.bytes)/elapsed.Seconds()/1e9, elapsed.Seconds())
	fmt.Printf("latency, publish to result (producer): p50 %s  p90 %s  p99 %s  p99.9 %s\n",
		latency(total.latency.Percentile(50)), latency(total.latency.Percentile(90)), latency(total.latency.Percentile(99)),
		latency(total.latency.Percentile(99.9)))
	fmt.Printf("latency, claim to completion (loop):   p50 %s  p90 %s  p99 %s  p99.9 %s\n",
		latency(st.Latency.Percentile(50)), latency(st.Latency.Percentile(90)), latency(st.Latency.Percentile(99)),
		latency(st.Latency.Percentile(99.9)))
	fmt.Printf("loop: %d completed, %d copied by the loop itself (inline reads), %d short-IO continuations, %d SQ-full stalls, most in the backend at once %d, %d sleeps\n",
		st.Completed, st.InlineReads, st.ShortIO, st.SQFullStalls, st.MaxInflight, st.Sleeps)
	wrongQueue := 0
	if c.queues > 1 {
		for k, qs := range st.Queues {
			fmt.Printf("queue %d: %d completed, claim to completion p50 %s p99 %s, %d waited for a record (at most %d records in a row to other queues meanwhile)\n",
				k, qs.Completed, latency(qs.Latency.Percentile(50)), latency(qs.Latency.Percentile(99)), qs.Waited, qs.MaxOvertaken)
			if qs.Completed != uint64(quotas[k]) {
				wrongQueue++
			}
		}
	}
	if total.mismatches > 0 || total.errors > 0 || total.ok != int64(c.requests) || wrongQueue > 0 {
		return fmt.Errorf("demo failed: %d of %d requests verified, %d queue(s) with a wrong count", total.ok, c.requests, wrongQueue)
	}
	fmt.Println("PASS: every byte verified")
	return nil
}

type producerResult struct {
	ok, bytes, mismatches, errors int64
	latency                       megaio.Histogram
	firstErr                      error
}

func (r *producerResult) add(o producerResult) {
	r.ok += o.ok
	r.bytes += o.bytes
	r.mismatches += o.mismatches
	r.errors += o.errors
	for i := range r.latency.Buckets {
		r.latency.Buckets[i] += o.latency.Buckets[i]
	}
}

// produce keeps c.depth READs in flight, each into its own region of the
// buffer, and checks each region against the file when its READ completes.
func produce(prod *megaio.HostProducer, fh megaio.FileHandle, dest megaio.DestHandle, mem, data []byte, c demoConfig,
	p, quota int, served *atomic.Int64) producerResult {
	var r producerResult
	rng := rand.New(rand.NewPCG(uint64(p), 42))
	blocks := c.size / c.block
	type inflight struct {
		t      megaio.Ticket
		off    int
		region int
		at     time.Time
	}
	ring := make([]inflight, c.depth)
	issued, done := 0, 0
	for done < quota {
		for k := 0; k < c.depth && issued < quota && issued-done < c.depth; k++ {
			slot := &ring[issued%c.depth]
			slot.region = (p*c.depth + issued%c.depth) * c.block
			slot.off = rng.IntN(blocks) * c.block
			slot.at = time.Now()
			t, err := prod.Submit(megaio.Request{Op: megaio.OpRead, File: fh, Dest: dest, FileOffset: uint64(slot.off),
				DestOffset: uint64(slot.region), Length: uint64(c.block)})
			if err != nil {
				r.errors += int64(quota - done)
				return r
			}
			slot.t = t
			issued++
		}
		slot := &ring[done%c.depth]
		res, err := prod.Wait(slot.t)
		r.latency.Record(time.Since(slot.at))
		done++
		served.Add(1)
		switch {
		case err != nil || res != megaio.Result(c.block):
			r.errors++
			if r.firstErr == nil {
				r.firstErr = errors.Join(err, res.Err())
				fmt.Fprintf(os.Stderr, "\nproducer %d: READ at %d = %d %v\n", p, slot.off, res, r.firstErr)
			}
		case !bytes.Equal(mem[slot.region:slot.region+c.block], data[slot.off:slot.off+c.block]):
			r.mismatches++
		default:
			r.ok++
			r.bytes += int64(c.block)
		}
	}
	return r
}

// makeFile writes size pseudo-random bytes into a new file in dir.
func makeFile(dir string, size int) (string, []byte, error) {
	data := make([]byte, size)
	benchrun.Fill(rand.NewChaCha8([32]byte{'m', 'e', 'g', 'a', 'i', 'o'}), data)
	f, err := os.CreateTemp(dir, "megaio-demo-*")
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		os.Remove(f.Name())
		return "", nil, err
	}
	return f.Name(), data, f.Sync()
}

// progress prints a progress line to stderr every half second until the
// returned function is called; only on a terminal (the line is redrawn with
// carriage returns, which a log file would keep).
func progress(served *atomic.Int64, total int) func() {
	if !isTerminal(os.Stderr) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		start, last, lastT := time.Now(), int64(0), time.Now()
		for {
			select {
			case <-done:
				fmt.Fprintf(os.Stderr, "\r%-72s\r", "")
				return
			case now := <-tick.C:
				n := served.Load()
				fmt.Fprintf(os.Stderr, "\rserved %d/%d (%.0f%%), %.0f IOPS now, %.1f s", n, total,
					100*float64(n)/float64(total), float64(n-last)/now.Sub(lastT).Seconds(), now.Sub(start).Seconds())
				last, lastT = n, now
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
