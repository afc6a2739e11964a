// Package benchrun drives the workloads megaio is measured with, the same
// way for every engine: megaio (host producers publishing through the queue,
// a loop serving on io_uring or the worker pool), plain Go (goroutines
// calling os.File.ReadAt / WriteAt), and fio. The package's benchmarks and
// `megaio bench` both use it, so their figures mean the same.
package benchrun

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
)

// Spec is one workload.
type Spec struct {
	Path     string        // the file (for "nop", unused)
	Size     int64         // bytes of the file used
	Block    int           // bytes per request
	Depth    int           // requests in flight
	Batch    int           // requests submitted, and completions awaited, at a time (1: one by one)
	RW       string        // "randread", "read" (sequential), "randwrite", "write", "nop"
	Direct   bool          // O_DIRECT
	Duration time.Duration // run this long, unless Requests is set
	Requests int64         // run exactly this many requests
	Backend  megaio.BackendKind
	Loop     megaio.Config // megaio: loop settings (Backend is taken from above)
	Huge     bool          // megaio: 2 MiB pages for the destination buffer
	// Producers is megaio's producer threads (default 1), Depth/Producers
	// requests in flight each, collected in the order they were submitted.
	Producers int
	// Independent stands in for GPU threads: each producer thread drives
	// its requests as that many independent producers with one request
	// each, refilling whichever completes first. (One host thread drives
	// them all: a GPU's threads cost the host nothing, and on a small
	// machine Depth OS threads would measure the scheduler, not the loop.)
	Independent bool
}

// Result is what a run measured.
type Result struct {
	Engine    string  `json:"engine"`
	RW        string  `json:"rw"`
	Block     int     `json:"block"`
	Depth     int     `json:"depth"`
	Batch     int     `json:"batch"`
	Direct    bool    `json:"direct"`
	Round     int     `json:"round"`
	Requests  int64   `json:"requests"`
	Seconds   float64 `json:"seconds"`
	IOPS      float64 `json:"iops"`
	MBps      float64 `json:"mb_per_s"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	CPUus     float64 `json:"cpu_us_per_req"`                    // serving CPU per request (see the engines)
	LoopCPUus float64 `json:"loop_cpu_us_per_req"`               // megaio: the loop thread alone
	ProdCPUus float64 `json:"producer_cpu_us_per_req,omitempty"` // megaio: the producer threads
	Inflight  float64 `json:"inflight_avg,omitempty"`            // megaio: requests in the loop on average (IOPS x mean claim-to-completion)
	DiskBusy  float64 `json:"disk_busy,omitempty"`               // the file's disk: share of the run it was busy (/proc/diskstats), direct runs
	DiskQueue float64 `json:"disk_queue,omitempty"`              // the file's disk: requests at it on average (iostat's aqu-sz), direct runs
	RunsMiB   float64 `json:"runs_per_mib,omitempty"`            // megaio: physically contiguous runs per MiB of the destination buffer
	Backend   string  `json:"backend,omitempty"`

	Stats megaio.Stats `json:"-"` // megaio: the loop's counters after the run
}

func (s Spec) withDefaults() Spec {
	if s.Batch < 1 {
		s.Batch = 1
	}
	s.Producers = min(max(s.Producers, 1), s.Depth)
	if s.Batch > s.Depth {
		s.Batch = s.Depth
	}
	return s
}

func (s Spec) write() bool { return s.RW == "randwrite" || s.RW == "write" }

// offsets yields the file offset of each request: uniform block-aligned for
// rand*, sequential (wrapping) otherwise.
type offsets struct {
	rng    *rand.Rand
	blocks int64
	block  int64
	next   int64
	random bool
}

func newOffsets(s Spec, seed uint64) *offsets {
	blocks := s.Size / int64(s.Block)
	if blocks < 1 {
		blocks = 1
	}
	return &offsets{rng: rand.New(rand.NewPCG(seed, 99)), blocks: blocks, block: int64(s.Block),
		random: s.RW == "randread" || s.RW == "randwrite", next: int64(seed) % blocks}
}

func (o *offsets) get() int64 {
	if o.random {
		return o.rng.Int64N(o.blocks) * o.block
	}
	b := o.next % o.blocks
	o.next++
	return b * o.block
}

// processCPU is the process's user + system CPU time.
func processCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// RunMegaio serves the workload through a queue and a loop. Producers host
// producer threads (goroutines locked to their threads, timer slack 1 ns so
// their short sleeps do not oversleep) keep Depth requests in flight
// between them, refilling Batch at a time. CPUus is the process's CPU
// minus the producer threads': what serving costs, since in production the
// producers are GPU threads; ProdCPUus is theirs.
func RunMegaio(s Spec) (Result, error) {
	s = s.withDefaults()
	r := Result{Engine: "megaio-" + s.Backend.String(), RW: s.RW, Block: s.Block, Depth: s.Depth, Batch: s.Batch, Direct: s.Direct}
	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: uint32(max(64, ceilPow2(2*s.Depth)))})
	if err != nil {
		return r, err
	}
	defer q.Close()
	cfg := s.Loop
	cfg.Backend = s.Backend
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = max(1024, 2*s.Depth)
	}
	if cfg.RingEntries == 0 {
		cfg.RingEntries = uint32(max(256, ceilPow2(s.Depth)))
	}
	l, err := megaio.NewLoop(q, cfg)
	if err != nil {
		return r, err
	}
	defer l.Close()
	r.Backend = l.Backend().Description
	buf, err := l.NewBuffer(s.Depth*s.Block, megaio.BufferOptions{Hugepages: s.Huge})
	if err != nil {
		return r, err
	}
	if runs, ok := ContiguousRuns(buf.Bytes()); ok {
		r.RunsMiB = float64(runs) / (float64(len(buf.Bytes())) / (1 << 20))
	}
	dest, err := l.AddDestination(buf, 0, uint64(len(buf.Bytes())))
	if err != nil {
		return r, err
	}
	var fh megaio.FileHandle
	op := megaio.OpNop
	if s.RW != "nop" {
		f, err := openFile(s)
		if err != nil {
			return r, err
		}
		fh, err = l.RegisterFile(f)
		f.Close()
		if err != nil {
			return r, err
		}
		op = megaio.OpRead
		if s.write() {
			op = megaio.OpWrite
		}
	}
	p, err := q.HostProducer()
	if err != nil {
		return r, err
	}
	if err := l.Start(); err != nil {
		return r, err
	}

	disk0, diskOK := disk(s)
	proc0, loop0, t0 := processCPU(), l.CPUTime(), time.Now()
	deadline := t0.Add(s.Duration)
	results := make([]produced, s.Producers)
	var wg sync.WaitGroup
	for k := range s.Producers {
		depth := s.Depth / s.Producers
		if k < s.Depth%s.Producers {
			depth++
		}
		quota := int64(-1)
		if s.Requests > 0 {
			quota = s.Requests / int64(s.Producers)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[k] = produce(p, s, k, depth, quota, deadline, func(i int64, off int64) megaio.Request {
				return megaio.Request{Op: op, File: fh, Dest: dest, FileOffset: uint64(off), DestOffset: uint64(i) * uint64(s.Block),
					Length: uint64(s.Block)}
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	procCPU, loopCPU := processCPU()-proc0, l.CPUTime()-loop0
	if disk1, ok := disk(s); ok && diskOK {
		r.fillDisk(disk0, disk1, elapsed.Milliseconds())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var total produced
	for _, pr := range results {
		total.add(pr)
	}
	if err := l.Stop(ctx); err != nil && total.err == nil {
		total.err = err
	}
	if total.err != nil {
		return r, total.err
	}
	r.fill(total.n, elapsed, &total.lat)
	r.Stats = l.Stats()
	r.CPUus = perReq(procCPU-total.cpu, total.n)
	r.LoopCPUus = perReq(loopCPU, total.n)
	r.ProdCPUus = perReq(total.cpu, total.n)
	r.Inflight = r.IOPS * r.Stats.Latency.Mean().Seconds()
	return r, nil
}

// produced is what one producer thread did.
type produced struct {
	n   int64
	lat megaio.Histogram
	cpu time.Duration
	err error
}

func (p *produced) add(o produced) {
	p.n += o.n
	p.cpu += o.cpu
	for i := range p.lat.Buckets {
		p.lat.Buckets[i] += o.lat.Buckets[i]
	}
	if p.err == nil {
		p.err = o.err
	}
}

// produce is one producer thread: it keeps depth requests in flight (its
// own share of the destination buffer, from slot base on), refilling Batch
// at a time, until the deadline or quota requests.
func produce(p *megaio.HostProducer, s Spec, k, depth int, quota int64, deadline time.Time,
	req func(slot int64, off int64) megaio.Request) produced {
	runtime.LockOSThread() // so its CPU can be told apart from serving
	defer runtime.UnlockOSThread()
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) // its sleeps are microseconds: no 50 µs slack
	var res produced
	base := int64(k) * int64(s.Depth/s.Producers)
	if rem := s.Depth % s.Producers; k < rem {
		base += int64(k)
	} else {
		base += int64(rem)
	}
	off := newOffsets(s, uint64(k)+1)
	tickets := make([]megaio.Ticket, depth)
	started := make([]time.Time, depth)
	batch := min(s.Batch, depth)
	cpu0 := threadCPU()
	var issued, completed int64
	more := func() bool {
		if quota >= 0 {
			return issued < quota
		}
		return issued&63 != 0 || time.Now().Before(deadline)
	}
	if s.Independent {
		// A GPU's threads cost the host nothing: the stand-in runs only on
		// a CPU that the loop and the kernel's io-wq workers leave idle.
		if err := setIdlePolicy(true); err != nil {
			return produced{err: fmt.Errorf("the GPU stand-in's thread: SCHED_IDLE: %w", err)}
		}
		defer setIdlePolicy(false)
		return independent(p, depth, base, off, more, req, cpu0)
	}
	for {
		// Refill: submit a batch while there is room.
		for issued-completed+int64(batch) <= int64(depth) && more() {
			for b := 0; b < batch && more(); b++ {
				i := issued % int64(depth)
				started[i] = time.Now()
				t, err := p.Submit(req(base+i, off.get()))
				if err != nil {
					res.err = err
					return res
				}
				tickets[i] = t
				issued++
			}
		}
		if completed == issued {
			break
		}
		// Collect a batch (or what is left).
		for b := 0; b < batch && completed < issued; b++ {
			i := completed % int64(depth)
			got, err := wait(p, tickets[i])
			if err == nil && got < 0 {
				err = fmt.Errorf("request failed: %w", got.Err())
			}
			if err != nil && res.err == nil {
				res.err = err
			}
			res.lat.Record(time.Since(started[i]))
			completed++
		}
	}
	res.n = completed
	res.cpu = threadCPU() - cpu0
	return res
}

// setIdlePolicy moves the calling thread to SCHED_IDLE (or back to
// SCHED_NORMAL): it then runs only when a CPU would otherwise idle.
func setIdlePolicy(idle bool) error {
	policy := uint32(unix.SCHED_NORMAL)
	if idle {
		policy = unix.SCHED_IDLE
	}
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy}, 0)
}

// independent drives depth producers of one request each from this
// thread: each polls its own ticket and publishes its next request as soon
// as its last completes, in whatever order they complete. Like GPU threads
// it polls without sleeping: its core is the producers' CPU, reported
// apart (on a GPU that cost is the device's, not the host's), and its
// thread is SCHED_IDLE (produce), so that on a small machine it never
// takes a CPU from the loop or the kernel's workers. With sleeps between
// passes (1-50 µs) it left completed requests uncollected: 0.74x fio on
// O_DIRECT against 0.92-0.96x polling (docs/BENCHMARKS.md). At normal
// priority, on 2 vCPUs, it held one CPU while the loop and the io-wq
// worker took turns on the other: 0.55-0.6x the tmpfs IOPS of SCHED_IDLE.
func independent(p *megaio.HostProducer, depth int, base int64, off *offsets, more func() bool,
	req func(slot int64, off int64) megaio.Request, cpu0 time.Duration) produced {
	var res produced
	tickets := make([]megaio.Ticket, depth)
	started := make([]time.Time, depth)
	busy := make([]bool, depth)
	inflight := 0
	submit := func(i int) bool {
		started[i] = time.Now()
		t, err := p.Submit(req(base+int64(i), off.get()))
		if err != nil {
			res.err = err
			return false
		}
		tickets[i], busy[i] = t, true
		inflight++
		return true
	}
	for i := range depth {
		if !more() || !submit(i) {
			break
		}
	}
	for inflight > 0 && res.err == nil {
		for i := range depth {
			if !busy[i] {
				continue
			}
			got, done, err := p.Poll(tickets[i])
			if !done && err == nil {
				continue
			}
			if err == nil && got < 0 {
				err = fmt.Errorf("request failed: %w", got.Err())
			}
			if err != nil && res.err == nil {
				res.err = err
			}
			res.lat.Record(time.Since(started[i]))
			res.n++
			busy[i] = false
			inflight--
			if more() && res.err == nil {
				submit(i)
			}
		}
	}
	res.cpu = threadCPU() - cpu0
	return res
}

// diskSample is the counters of the disk holding a direct run's file
// (/proc/diskstats; Documentation/admin-guide/iostats.rst).
type diskSample struct {
	busyMs     int64 // field 10, io_ticks: time the disk had IO in progress
	weightedMs int64 // field 11: time requests spent at the disk, summed over requests
}

// disk reads s.Path's disk counters, for direct runs; ok is false otherwise
// or when the disk cannot be found.
func disk(s Spec) (d diskSample, ok bool) {
	if !s.Direct || s.Path == "" {
		return d, false
	}
	var st unix.Stat_t
	if unix.Stat(s.Path, &st) != nil {
		return d, false
	}
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return d, false
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 14 || f[0] != strconv.FormatUint(uint64(major), 10) || f[1] != strconv.FormatUint(uint64(minor), 10) {
			continue
		}
		busy, err1 := strconv.ParseInt(f[12], 10, 64)
		weighted, err2 := strconv.ParseInt(f[13], 10, 64)
		return diskSample{busy, weighted}, err1 == nil && err2 == nil
	}
	return d, false
}

// fillDisk sets DiskBusy and DiskQueue from two samples ms milliseconds
// apart.
func (r *Result) fillDisk(d0, d1 diskSample, ms int64) {
	if ms > 0 {
		r.DiskBusy = float64(d1.busyMs-d0.busyMs) / float64(ms)
		r.DiskQueue = float64(d1.weightedMs-d0.weightedMs) / float64(ms)
	}
}

// wait is HostProducer.Wait for a goroutine locked to its thread: it never
// calls runtime.Gosched, which for a locked goroutine hands its P to another
// thread and back (two futex wake-ups a call; measured here as several
// times the CPU of the IO itself). It spins, then sleeps in growing steps.
func wait(p *megaio.HostProducer, t megaio.Ticket) (megaio.Result, error) {
	sleep := time.Microsecond
	for i := 0; ; i++ {
		res, done, err := p.Poll(t)
		if done || err != nil {
			return res, err
		}
		if i >= 64 {
			ts := unix.NsecToTimespec(int64(sleep))
			unix.Nanosleep(&ts, nil)
			sleep = min(2*sleep, 50*time.Microsecond)
		}
	}
}

// RunGo is what a Go programmer writes without megaio: Depth goroutines
// calling ReadAt (or WriteAt) into preallocated buffers. CPUus is the
// process's CPU per request.
func RunGo(s Spec) (Result, error) {
	s = s.withDefaults()
	r := Result{Engine: "go-readat", RW: s.RW, Block: s.Block, Depth: s.Depth, Batch: 1, Direct: s.Direct}
	if s.write() {
		r.Engine = "go-writeat"
	}
	f, err := openFile(s)
	if err != nil {
		return r, err
	}
	defer f.Close()
	mem, err := unix.Mmap(-1, 0, s.Depth*s.Block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return r, err
	}
	defer unix.Munmap(mem)
	var issued atomic.Int64
	var firstErr atomic.Pointer[error]
	lats := make([]megaio.Histogram, s.Depth)
	deadline := time.Now().Add(s.Duration)
	proc0, t0 := processCPU(), time.Now()
	var wg sync.WaitGroup
	for g := 0; g < s.Depth; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := mem[g*s.Block : (g+1)*s.Block]
			off := newOffsets(s, uint64(g)+1)
			for {
				n := issued.Add(1)
				if (s.Requests > 0 && n > s.Requests) || (s.Requests == 0 && n&63 == 0 && time.Now().After(deadline)) {
					return
				}
				start := time.Now()
				var err error
				if s.write() {
					_, err = f.WriteAt(buf, off.get())
				} else {
					_, err = f.ReadAt(buf, off.get())
				}
				if err != nil && !errors.Is(err, io.EOF) {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				lats[g].Record(time.Since(start))
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), processCPU()-proc0
	if p := firstErr.Load(); p != nil {
		return r, *p
	}
	var lat megaio.Histogram
	var n int64
	for i := range lats {
		for k, c := range lats[i].Buckets {
			lat.Buckets[k] += c
			n += int64(c)
		}
	}
	r.fill(n, elapsed, &lat)
	r.CPUus = perReq(cpu, n)
	return r, nil
}

func (r *Result) fill(n int64, elapsed time.Duration, lat *megaio.Histogram) {
	r.Requests = n
	r.Seconds = elapsed.Seconds()
	r.IOPS = float64(n) / elapsed.Seconds()
	r.MBps = r.IOPS * float64(r.Block) / 1e6
	r.P50us = float64(lat.Percentile(50)) / 1e3
	r.P99us = float64(lat.Percentile(99)) / 1e3
}

func perReq(d time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / 1e3 / float64(n)
}

func openFile(s Spec) (*os.File, error) {
	flags := os.O_RDONLY
	if s.write() {
		flags = os.O_RDWR
	}
	if s.Direct {
		flags |= unix.O_DIRECT
	}
	return os.OpenFile(s.Path, flags, 0)
}

// MakeFile writes size bytes of pseudo-random data to a new file in dir.
func MakeFile(dir string, size int64) (string, error) {
	f, err := os.CreateTemp(dir, "megaio-bench-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	src := rand.NewChaCha8([32]byte{'b', 'e', 'n', 'c', 'h'})
	chunk := make([]byte, 4<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(chunk)))
		Fill(src, chunk[:n])
		if _, err := f.Write(chunk[:n]); err != nil {
			os.Remove(f.Name())
			return "", err
		}
		left -= n
	}
	return f.Name(), f.Sync()
}

func ceilPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// Fill fills p with bytes from src (what ChaCha8.Read does from Go 1.23;
// go.mod asks for Go 1.22).
func Fill(src *rand.ChaCha8, p []byte) {
	var w [8]byte
	for len(p) > 0 {
		binary.LittleEndian.PutUint64(w[:], src.Uint64())
		p = p[copy(p, w[:]):]
	}
}
