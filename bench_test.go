package megaio

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkNOP measures the loop's own overhead: host producers publish NOPs
// and wait for their results. depth is requests in flight per producer.
// wait=Wait collects with HostProducer.Wait, as Go code does; wait=spin
// stands in for a GPU thread: the producer has an OS thread of its own
// (LockOSThread) and polls without yielding or parking. (A locked
// goroutine that yields hands its P to another thread and back, a futex
// wake-up each time; an unlocked one moves between threads and their
// caches: either way the figure then measures Go's scheduler, not the loop.)
func BenchmarkNOP(b *testing.B) {
	for _, c := range []struct {
		producers, depth int
		spin             bool
	}{{1, 1, false}, {1, 64, false}, {1, 64, true}} {
		name := fmt.Sprintf("producers=%d/depth=%d/wait=Wait", c.producers, c.depth)
		if c.spin {
			name = fmt.Sprintf("producers=%d/depth=%d/wait=spin", c.producers, c.depth)
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, QueueConfig{Capacity: 4096}, Config{}, 4096)
			collect := h.p.Wait
			if c.spin {
				collect = spinCollect(h.p)
			}
			runPipelinedWith(b, h, c.producers, c.depth, func(int) Request { return Request{Op: OpNop} }, c.spin, collect)
		})
	}
}

// spinCollect polls t until it completes, never yielding: a GPU thread's
// wait. Only for producers on threads of their own.
func spinCollect(p *HostProducer) func(Ticket) (Result, error) {
	return func(t Ticket) (Result, error) {
		for {
			if res, done, err := p.Poll(t); done || err != nil {
				return res, err
			}
		}
	}
}

// BenchmarkRead4K reads random 4 KiB blocks of a tmpfs file, on each
// backend.
func BenchmarkRead4K(b *testing.B) {
	for _, c := range []struct {
		be      BackendKind
		depth   int
		workers int
	}{{BackendIOUring, 1, 0}, {BackendIOUring, 32, 0}, {BackendPool, 1, 0}, {BackendPool, 32, 2}, {BackendPool, 32, 4}, {BackendPool, 32, 16}} {
		b.Run(fmt.Sprintf("%v/tmpfs/depth=%d/workers=%d", c.be, c.depth, c.workers), func(b *testing.B) {
			depth := c.depth
			h := newHarness(b, QueueConfig{Capacity: 4096}, Config{Backend: c.be, PoolWorkers: c.workers}, depth*4096)
			path, _ := patternFile(b, tmpfsDir(b), 64<<20, 1)
			fh := h.register(path, os.O_RDONLY)
			runPipelined(b, h, 1, depth, func(i int) Request {
				return Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i*7919%16384) * 4096,
					DestOffset: uint64(i%depth) * 4096, Length: 4096}
			})
		})
	}
}

// runPipelined has producers goroutines each keep depth requests in flight
// until b.N requests have completed, collecting with HostProducer.Wait, and
// reports requests per second.
func runPipelined(b *testing.B, h *harness, producers, depth int, req func(i int) Request) {
	runPipelinedWith(b, h, producers, depth, req, false, h.p.Wait)
}

// runPipelinedWith is runPipelined collecting with collect, each producer
// on an OS thread of its own when locked.
func runPipelinedWith(b *testing.B, h *harness, producers, depth int, req func(i int) Request, locked bool,
	collect func(Ticket) (Result, error)) {
	b.ReportAllocs()
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for p := 0; p < producers; p++ {
		n := b.N / producers
		wg.Add(1)
		go func() {
			defer wg.Done()
			if locked {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
			}
			ring := make([]Ticket, depth)
			for i := 0; i < n+depth; i++ {
				if i >= depth {
					if res, err := collect(ring[i%depth]); err != nil || res < 0 {
						b.Errorf("request: %d, %v", res, err)
						return
					}
				}
				if i < n {
					t, err := h.p.Submit(req(i))
					if err != nil {
						b.Error(err)
						return
					}
					ring[i%depth] = t
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	b.StopTimer()
	st := h.l.Stats()
	b.ReportMetric(float64(st.Sleeps)/float64(b.N), "sleeps/req")
}

// BenchmarkIdleLoop measures what a started loop with no traffic costs: the
// process's CPU (the loop, Go's runtime, everything) over 10 s, as a share
// of one core, and its voluntary context switches (wake-ups) per second.
// Run it alone: `go test -run '^$' -bench BenchmarkIdleLoop -benchtime 1x`.
func BenchmarkIdleLoop(b *testing.B) {
	for _, c := range []struct {
		name string
		bo   Backoff
	}{
		{"deep-idle=off", Backoff{IdleAfter: -1}},
		{"deep-idle=5ms", Backoff{IdleSleep: 5 * time.Millisecond}},
		{"deep-idle=20ms (default)", Backoff{}},
	} {
		b.Run(c.name, func(b *testing.B) { benchIdle(b, c.bo) })
	}
}

func benchIdle(b *testing.B, bo Backoff) {
	const window = 10 * time.Second
	h := newHarness(b, QueueConfig{Capacity: 64}, Config{Backoff: bo}, 4096)
	if res, err := h.p.Do(Request{Op: OpNop}); err != nil || res != 0 { // the loop has served, then idles
		b.Fatal(res, err)
	}
	for range b.N {
		var ru0, ru1 unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru0)
		loop0 := h.l.CPUTime()
		time.Sleep(window)
		unix.Getrusage(unix.RUSAGE_SELF, &ru1)
		cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
		b.ReportMetric(100*cpu.Seconds()/window.Seconds(), "%core-process")
		b.ReportMetric(100*(h.l.CPUTime()-loop0).Seconds()/window.Seconds(), "%core-loop")
		b.ReportMetric(float64(ru1.Nvcsw-ru0.Nvcsw)/window.Seconds(), "wakeups/s")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkGoroutinePerRequest compares what a Go user writes first, one
// goroutine per request calling Do (so Wait), with one producer keeping
// the same depth in flight: 4 KiB random READs at depth 32, on tmpfs and
// with O_DIRECT on disk. Interleave the two when comparing
// (-count 3 runs them A B A B A B).
func BenchmarkGoroutinePerRequest(b *testing.B) {
	const depth, block = 32, 4096
	for _, fs := range []struct {
		name   string
		direct bool
	}{{"tmpfs", false}, {"direct", true}} {
		for _, mode := range []string{"one-producer", "goroutines"} {
			b.Run(fs.name+"/"+mode, func(b *testing.B) {
				h := newHarness(b, QueueConfig{Capacity: 4096}, Config{}, depth*block)
				dir, flags := tmpfsDir(b), os.O_RDONLY
				if fs.direct {
					dir, flags = diskDir(b), os.O_RDONLY|unix.O_DIRECT
				}
				path, _ := patternFile(b, dir, 64<<20, 1)
				fh := h.register(path, flags)
				req := func(i int) Request {
					return Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(i*7919%16384) * block,
						DestOffset: uint64(i%depth) * block, Length: block}
				}
				if mode == "one-producer" {
					runPipelined(b, h, 1, depth, req)
					return
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for g := range depth {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
							r := req(int(i))
							r.DestOffset = uint64(g) * block
							if res, err := h.p.Do(r); err != nil || res != block {
								b.Errorf("READ: %d, %v", res, err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			})
		}
	}
}

// BenchmarkClientReadAt: Client.ReadAt into a plain slice (in place),
// into a Client buffer, and os.File.ReadAt, side by side, for 4 KiB to 16
// MiB, from 1 and 8 goroutines (each reading random aligned offsets), on a
// tmpfs file, on a buffered disk file (cached: the file was just written,
// and os.File's and the Client's reads keep it in the page cache while the
// machine leaves it there) and on a disk file opened with O_DIRECT (both
// megaio and os.File; every slice page-aligned). Compare the engines within
// one run:
//
//	go test -run '^$' -bench 'BenchmarkClientReadAt' -benchtime 2000x -count 3 .
func BenchmarkClientReadAt(b *testing.B) {
	c, err := NewClient(ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	bufs := make([]*Buffer, 8) // one a goroutine, for the largest size
	for i := range bufs {
		if bufs[i], err = c.NewBuffer(16 << 20); err != nil {
			b.Fatal(err)
		}
	}
	// Plain slices, page-aligned (as O_DIRECT needs), one a goroutine.
	plain, err := unix.Mmap(-1, 0, 8*16<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(plain)
	for _, fs := range []struct {
		name string
		dir  func(testing.TB) string
		flag int
		size int64
	}{{"tmpfs", tmpfsDir, 0, 64 << 20}, {"cached", diskDir, 0, 64 << 20}, {"direct", diskDir, unix.O_DIRECT, 256 << 20}} {
		path, _ := patternFile(b, fs.dir(b), int(fs.size), 5)
		f, err := c.OpenFile(path, os.O_RDONLY|fs.flag, 0)
		if err != nil {
			b.Fatal(err)
		}
		of, err := os.OpenFile(path, os.O_RDONLY|fs.flag, 0)
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range []int{4 << 10, 64 << 10, 1 << 20, 16 << 20} {
			for _, par := range []int{1, 8} {
				for _, engine := range []string{"client-plain", "client-buffer", "os.File"} {
					b.Run(fmt.Sprintf("%s/%s/%dK/g%d", fs.name, engine, size>>10, par), func(b *testing.B) {
						b.SetBytes(int64(size))
						var next atomic.Int64
						var wg sync.WaitGroup
						b.ResetTimer()
						for g := 0; g < par; g++ {
							wg.Add(1)
							go func(g int) {
								defer wg.Done()
								p := plain[g*16<<20:][:size]
								if engine == "client-buffer" {
									p = bufs[g].Bytes()[:size]
								}
								for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
									off := (i * 7919 % (fs.size / int64(size))) * int64(size)
									var n int
									var err error
									if engine == "os.File" {
										n, err = of.ReadAt(p, off)
									} else {
										n, err = f.ReadAt(p, off)
									}
									if n != size || err != nil {
										b.Errorf("%s: ReadAt = %d, %v", engine, n, err)
										return
									}
								}
							}(g)
						}
						wg.Wait()
					})
				}
			}
		}
		of.Close()
		f.Close()
	}
	if st := c.Stats(); st.PageCache != 0 {
		b.Errorf("ClientStats %+v: an aligned O_DIRECT read went through the page cache", st)
	}
}

// BenchmarkLoops: the loop's cost as the work grows. loops=N runs N loops
// side by side, each serving its own queue with its own producer keeping 32
// 4 KiB READs of one tmpfs file in flight (copied inline: the loop's own
// CPU is the cost); queues=Q is one loop serving Q queues, one busy and the
// rest idle, whose polls the busy queue's requests pay for. It reports the
// requests per second of all loops together and the loops' CPU per request.
//
//	go test -run '^$' -bench BenchmarkLoops -benchtime 200000x -count 3 .
func BenchmarkLoops(b *testing.B) {
	path, _ := patternFile(b, tmpfsDir(b), 64<<20, 1)
	const depth = 32
	for _, c := range []struct{ loops, queues int }{{1, 1}, {2, 1}, {1, 4}, {1, 16}} {
		b.Run(fmt.Sprintf("loops=%d/queues=%d", c.loops, c.queues), func(b *testing.B) {
			hs := make([]*harness, c.loops)
			fhs := make([]FileHandle, c.loops)
			for k := range hs {
				hs[k] = newHarness(b, QueueConfig{Capacity: 4096}, Config{}, depth*4096)
				fhs[k] = hs[k].register(path, os.O_RDONLY)
				if c.queues > 1 {
					hs[k].addQueues(c.queues-1, QueueConfig{Capacity: 64})
				}
			}
			cpu0 := make([]time.Duration, c.loops)
			for k, h := range hs {
				cpu0[k] = h.l.CPUTime()
			}
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for k, h := range hs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ring := make([]Ticket, depth)
					n := b.N / len(hs)
					for i := 0; i < n+depth; i++ {
						if i >= depth {
							if res, err := h.p.Wait(ring[i%depth]); err != nil || res != 4096 {
								b.Errorf("READ: %d, %v", res, err)
								return
							}
						}
						if i < n {
							t, err := h.p.Submit(Request{Op: OpRead, File: fhs[k], Dest: h.dest,
								FileOffset: uint64(i*7919%16384) * 4096, DestOffset: uint64(i%depth) * 4096, Length: 4096})
							if err != nil {
								b.Error(err)
								return
							}
							ring[i%depth] = t
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			var cpu time.Duration
			for k, h := range hs {
				cpu += h.l.CPUTime() - cpu0[k]
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(b.N), "loop-µs/req")
		})
	}
}
