package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/internal/benchrun"
)

type soakConfig struct {
	duration, cycle time.Duration
	producers       int
	backend         megaio.BackendKind
	dir             string
	seed            uint64
}

func runSoak(args []string) error {
	var c soakConfig
	fs := newFlagSet("soak")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long producers publish")
	fs.DurationVar(&c.cycle, "cycle", time.Second, "Stop and Start the loop this often (0: never)")
	fs.IntVar(&c.producers, "producers", 8, "host producer goroutines")
	backend := fs.String("backend", "auto", "auto, io_uring or pool")
	fs.StringVar(&c.dir, "dir", defaultDir(), "directory for the data and scratch files")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed: the same seed replays the same mix of requests (printed with the result)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if c.backend, err = megaio.ParseBackend(*backend); err != nil {
		return usageError{err}
	}
	if c.producers < 1 || c.duration <= 0 {
		return usageErrorf("soak: want -producers >= 1 and -duration > 0")
	}
	rep, err := soak(c, os.Stdout)
	if err != nil {
		return err
	}
	if err := rep.verdict(); err != nil {
		fmt.Println("FAIL:", err)
		return err
	}
	fmt.Println("PASS: nothing lost, every READ verified, every result as expected")
	return nil
}

// soakReport is what a soak counted. Lost = Published - Completed must be 0.
type soakReport struct {
	Backend                       string
	Seed                          uint64
	Duration                      time.Duration
	Published, Completed, Lost    int64
	Reads, Writes, Fences, Fsyncs int64
	Nops, Invalid                 int64
	Cancelled                     int64 // -ECANCELED: claimed while a Stop was under way
	BytesVerified                 int64
	Mismatches, Unexpected        int64
	Cycles                        int64
	LongestWait                   time.Duration
	ByErrno                       map[string]int64
	firstProblems                 []string
}

func (r *soakReport) verdict() error {
	if r.Lost != 0 || r.Mismatches != 0 || r.Unexpected != 0 {
		return fmt.Errorf("soak FAILED: lost %d, mismatches %d, unexpected results %d", r.Lost, r.Mismatches, r.Unexpected)
	}
	return nil
}

func (r *soakReport) print(out io.Writer) {
	fmt.Fprintf(out, "soak: %v on %s, seed %d, %d Stop/Start cycles\n", r.Duration.Round(time.Millisecond), r.Backend, r.Seed, r.Cycles)
	fmt.Fprintf(out, "requests: published %d, completed %d, lost %d (%.0f/s)\n", r.Published, r.Completed, r.Lost,
		float64(r.Completed)/r.Duration.Seconds())
	fmt.Fprintf(out, "mix: %d READ, %d WRITE, %d FENCE, %d FSYNC, %d NOP, %d invalid\n", r.Reads, r.Writes, r.Fences, r.Fsyncs, r.Nops, r.Invalid)
	fmt.Fprintf(out, "verified: %d bytes read, %d mismatches, %d unexpected results, %d cancelled by a Stop\n",
		r.BytesVerified, r.Mismatches, r.Unexpected, r.Cancelled)
	var names []string
	for n := range r.ByErrno {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprint(out, "errors by errno (the invalid requests' are intended):")
	for _, n := range names {
		fmt.Fprintf(out, " %s %d", n, r.ByErrno[n])
	}
	fmt.Fprintf(out, "\nlongest wait for a completion: %v\n", r.LongestWait.Round(time.Microsecond))
	for _, p := range r.firstProblems {
		fmt.Fprintln(out, "problem:", p)
	}
}

// soakShared is what the producers share.
type soakShared struct {
	prod     *megaio.HostProducer
	data     []byte
	dataFH   megaio.FileHandle
	writeFH  megaio.FileHandle
	mem      []byte
	dests    []megaio.DestHandle
	mu       sync.Mutex
	rep      soakReport
	longest  atomic.Int64
	deadline time.Time
}

const soakRegion = 64 << 10

func soak(c soakConfig, out io.Writer) (*soakReport, error) {
	data := make([]byte, 8<<20)
	benchrun.Fill(rand.NewChaCha8([32]byte{'s', 'o', 'a', 'k'}), data)
	dataPath, err := writeTemp(c.dir, data)
	if err != nil {
		return nil, err
	}
	defer os.Remove(dataPath)
	scratch, err := os.CreateTemp(c.dir, "megaio-soak-w-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(scratch.Name())
	defer scratch.Close()

	// Tickets start just below 2^64, so they wrap during the soak.
	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 256, FirstTicket: ^uint64(0) - 20_000})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	l, err := megaio.NewLoop(q, megaio.Config{Backend: c.backend, RingEntries: 16, MaxInflight: 64})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	sh := &soakShared{data: data, rep: soakReport{Seed: c.seed, Backend: l.Backend().Description, ByErrno: map[string]int64{}}}
	f, err := os.Open(dataPath)
	if err != nil {
		return nil, err
	}
	sh.dataFH, err = l.RegisterFile(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	if sh.writeFH, err = l.RegisterFile(scratch); err != nil {
		return nil, err
	}
	buf, err := l.NewBuffer(c.producers*soakRegion, megaio.BufferOptions{})
	if err != nil {
		return nil, err
	}
	sh.mem = buf.Bytes()
	for p := 0; p < c.producers; p++ {
		d, err := l.AddDestination(buf, uint64(p*soakRegion), soakRegion)
		if err != nil {
			return nil, err
		}
		sh.dests = append(sh.dests, d)
	}
	if sh.prod, err = q.HostProducer(); err != nil {
		return nil, err
	}
	if err := l.Start(); err != nil {
		return nil, err
	}

	start := time.Now()
	sh.deadline = start.Add(c.duration)
	var wg sync.WaitGroup
	for p := 0; p < c.producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh.produce(p, rand.New(rand.NewPCG(c.seed, uint64(p))))
		}()
	}

	// The cycler stops and restarts the loop under the producers' feet.
	var cycles atomic.Int64
	var cycleErr error
	stopCycling := make(chan struct{})
	cyclerDone := make(chan struct{})
	go func() {
		defer close(cyclerDone)
		if c.cycle <= 0 {
			return
		}
		rng := rand.New(rand.NewPCG(c.seed, 999))
		for {
			select {
			case <-stopCycling:
				return
			case <-time.After(c.cycle):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := l.Stop(ctx)
			cancel()
			if err != nil && cycleErr == nil {
				cycleErr = fmt.Errorf("Stop in cycle %d: %w", cycles.Load(), err)
			}
			time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
			if err := l.Start(); err != nil && cycleErr == nil {
				cycleErr = fmt.Errorf("Start in cycle %d: %w", cycles.Load(), err)
			}
			cycles.Add(1)
		}
	}()
	progressDone := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				sh.mu.Lock()
				fmt.Fprintf(out, "soak: %v: %d completed, %d in flight, %d cycles\n", time.Since(start).Round(time.Second),
					sh.rep.Completed, sh.rep.Published-sh.rep.Completed, cycles.Load())
				sh.mu.Unlock()
			}
		}
	}()

	// Producers stop publishing at the deadline; a stopped loop is started
	// again so that every published request is served.
	time.Sleep(time.Until(sh.deadline))
	close(stopCycling)
	<-cyclerDone
	if err := l.Start(); err != nil && !errors.Is(err, megaio.ErrRunning) {
		return nil, err
	}
	wg.Wait()
	close(progressDone)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		return nil, fmt.Errorf("final Stop: %w", err)
	}
	rep := &sh.rep
	rep.Duration = time.Since(start)
	rep.Cycles = cycles.Load()
	rep.Lost = rep.Published - rep.Completed
	rep.LongestWait = time.Duration(sh.longest.Load())
	if st := l.Stats(); st.Completed < uint64(rep.Completed) {
		rep.Unexpected++
		rep.firstProblems = append(rep.firstProblems, fmt.Sprintf("the loop counted %d completions, producers saw %d", st.Completed, rep.Completed))
	}
	rep.print(out)
	if cycleErr != nil {
		return rep, cycleErr
	}
	return rep, nil
}

// produce publishes random requests one at a time until the deadline and
// checks each result.
func (sh *soakShared) produce(p int, rng *rand.Rand) {
	region := sh.mem[p*soakRegion : (p+1)*soakRegion]
	dest := sh.dests[p]
	for time.Now().Before(sh.deadline) {
		r, want, kind := sh.pick(rng, dest)
		var t megaio.Ticket
		var err error
		for {
			if t, err = sh.prod.Submit(r); !errors.Is(err, megaio.ErrStopped) {
				break
			}
			time.Sleep(100 * time.Microsecond) // stopped: nothing was published; try again
		}
		if err != nil {
			sh.problem(fmt.Sprintf("Submit: %v", err))
			return
		}
		sh.count(func(rep *soakReport) { rep.Published++ })
		start := time.Now()
		var res megaio.Result
		for {
			if res, err = sh.prod.Wait(t); !errors.Is(err, megaio.ErrStopped) {
				break
			}
			time.Sleep(100 * time.Microsecond) // published, not yet served: the loop restarts soon
		}
		wait := int64(time.Since(start))
		for old := sh.longest.Load(); wait > old && !sh.longest.CompareAndSwap(old, wait); old = sh.longest.Load() {
		}
		if err != nil {
			sh.problem(fmt.Sprintf("Wait: %v", err))
			return
		}
		sh.check(r, res, want, kind, region)
	}
}

// pick chooses a request and its expected result.
func (sh *soakShared) pick(rng *rand.Rand, dest megaio.DestHandle) (megaio.Request, megaio.Result, string) {
	size := uint64(len(sh.data))
	switch n := rng.IntN(100); {
	case n < 40: // READ, sometimes across or past EOF
		off, length := rng.Uint64N(size+16<<10), 1+rng.Uint64N(soakRegion)
		want := megaio.Result(0)
		if off < size {
			want = megaio.Result(min(length, size-off))
		}
		return megaio.Request{Op: megaio.OpRead, File: sh.dataFH, Dest: dest, FileOffset: off, Length: length}, want, "read"
	case n < 55:
		length := 1 + rng.Uint64N(soakRegion)
		return megaio.Request{Op: megaio.OpWrite, File: sh.writeFH, Dest: dest, FileOffset: rng.Uint64N(16 << 20), Length: length},
			megaio.Result(length), "write"
	case n < 60:
		return megaio.Request{Op: megaio.OpFence}, 0, "fence"
	case n < 65:
		return megaio.Request{Op: megaio.OpFsync, File: sh.writeFH}, 0, "fsync"
	case n < 85:
		return megaio.Request{Op: megaio.OpNop}, 0, "nop"
	}
	read := megaio.Request{Op: megaio.OpRead, File: sh.dataFH, Dest: dest, Length: 4096}
	switch rng.IntN(7) {
	case 0:
		read.File = 999
		return read, -megaio.Result(unix.EBADF), "invalid"
	case 1:
		read.Dest = 9999
		return read, -megaio.Result(unix.ENXIO), "invalid"
	case 2:
		read.Length = 0
		return read, -megaio.Result(unix.EINVAL), "invalid"
	case 3:
		read.Length = megaio.MaxLength + 1
		return read, -megaio.Result(unix.E2BIG), "invalid"
	case 4:
		read.FileOffset = 1<<63 - 10
		return read, -megaio.Result(unix.EOVERFLOW), "invalid"
	case 5:
		read.DestOffset = soakRegion - 100
		return read, -megaio.Result(unix.EFAULT), "invalid"
	default:
		return megaio.Request{Op: 42}, -megaio.Result(unix.EINVAL), "invalid"
	}
}

func (sh *soakShared) check(r megaio.Request, res, want megaio.Result, kind string, region []byte) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	rep := &sh.rep
	rep.Completed++
	switch kind {
	case "read":
		rep.Reads++
	case "write":
		rep.Writes++
	case "fence":
		rep.Fences++
	case "fsync":
		rep.Fsyncs++
	case "nop":
		rep.Nops++
	default:
		rep.Invalid++
	}
	if res < 0 {
		rep.ByErrno[unix.ErrnoName(unix.Errno(-res))]++
	}
	switch {
	case errors.Is(res.Err(), unix.ECANCELED):
		rep.Cancelled++ // claimed after a Stop began: allowed
	case res != want:
		rep.Unexpected++
		if len(rep.firstProblems) < 10 {
			rep.firstProblems = append(rep.firstProblems, fmt.Sprintf("%s %+v = %d (%v), want %d", kind, r, res, res.Err(), want))
		}
	case kind == "read" && res > 0:
		if !bytes.Equal(region[r.DestOffset:r.DestOffset+uint64(res)], sh.data[r.FileOffset:r.FileOffset+uint64(res)]) {
			rep.Mismatches++
			if len(rep.firstProblems) < 10 {
				rep.firstProblems = append(rep.firstProblems, fmt.Sprintf("READ %+v: bytes differ from the file", r))
			}
		} else {
			rep.BytesVerified += int64(res)
		}
	}
}

func (sh *soakShared) count(f func(*soakReport)) {
	sh.mu.Lock()
	f(&sh.rep)
	sh.mu.Unlock()
}

func (sh *soakShared) problem(s string) {
	sh.mu.Lock()
	sh.rep.Unexpected++
	if len(sh.rep.firstProblems) < 10 {
		sh.rep.firstProblems = append(sh.rep.firstProblems, s)
	}
	sh.mu.Unlock()
}

func writeTemp(dir string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, "megaio-soak-r-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
