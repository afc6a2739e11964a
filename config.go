package megaio

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Config tunes a Loop. Zero fields take the defaults.
type Config struct {
	// RingEntries is the io_uring submission queue size, a power of two
	// (default 256). More claimed requests than fit wait in Go.
	RingEntries uint32
	// MaxInflight is the most requests the loop holds claimed at once
	// (default 1024). Beyond it requests stay published in the queue
	// until the loop has room: backpressure, never an error.
	MaxInflight int
	// MaxFiles and MaxBuffers size the registered file and buffer tables
	// (defaults 64 and 16).
	MaxFiles   int
	MaxBuffers int
	// Backoff is how an idle loop waits.
	Backoff Backoff
	// Backend picks what runs the IO (default BackendAuto).
	Backend BackendKind
	// PoolWorkers is the pool backend's thread count (default 16).
	PoolWorkers int
	// Device tunes device destinations: GPUDirect Storage or the bounce
	// path (devicebuffer.go).
	Device DeviceConfig
	// InlineMax is the longest READ from a memory-backed file (tmpfs
	// without swap, ramfs, hugetlbfs) that the loop copies itself, with
	// pread on its own thread, instead of handing it to the backend
	// (default 64 KiB; -1: never). Such a read waits on memory only, and
	// the kernel would hand it to an io-wq worker thread (inline.go).
	InlineMax int
	// CPUs, when set, binds the loop's thread to these CPUs
	// (sched_setaffinity; default: wherever the scheduler puts it). The
	// loop reaps completions and wakes on them: on a device whose
	// completion interrupts all arrive on one CPU (a single-queue disk;
	// /proc/interrupts names it), the loop on that CPU skips a cross-CPU
	// wake-up a request. NVMe, with a queue and an interrupt per CPU,
	// completes on the submitting CPU anyway. The kernel's io-wq workers
	// and the pool backend's threads are not bound. A CPU the process may
	// not run on fails NewLoop with ErrConfig (and EINVAL).
	// MEGAIO_LOOP_CPUS sets it from the environment.
	CPUs []int
	// StopGrace is how long Stop waits, once its context has ended, for
	// the requests it cancelled to leave the kernel (default 100 ms; a
	// negative value: not at all). Cancelled io_uring requests and
	// interrupted pool workers leave within microseconds. What outlasts
	// the grace is IO that no cancel reaches: reads and writes already at
	// the device (a deep O_DIRECT queue drains at the disk's pace: 84
	// reads of up to 1 MiB were still at a virtio disk 100 ms after the
	// deadline), or a wait the kernel does not interrupt (a hung network
	// or FUSE file system). Stop then returns ErrStopIncomplete (see Stop).
	// Raise it where Stop should rather wait out a deep device queue.
	StopGrace time.Duration
}

// BackendKind selects the IO backend.
type BackendKind int

const (
	// BackendAuto uses io_uring, and the worker pool where io_uring is
	// refused (ErrIOUringUnavailable: EPERM, ENOSYS, io_uring_disabled).
	BackendAuto BackendKind = iota
	// BackendIOUring uses io_uring or fails with its error.
	BackendIOUring
	// BackendPool uses a pool of threads doing pread, pwrite and fdatasync.
	BackendPool
)

var backendNames = []string{BackendAuto: "auto", BackendIOUring: "io_uring", BackendPool: "pool"}

func (k BackendKind) String() string { return enumName(k, backendNames, "BackendKind") }

// ParseBackend parses "auto", "io_uring" or "pool".
func ParseBackend(s string) (BackendKind, error) {
	return parseEnum[BackendKind](s, backendNames, "backend")
}

// enumName is the name of v in names (indexed by value), or type(v).
func enumName[T ~int](v T, names []string, typ string) string {
	if v >= 0 && int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", typ, int(v))
}

// parseEnum finds s in names (indexed by value).
func parseEnum[T ~int](s string, names []string, what string) (T, error) {
	for v, name := range names {
		if s == name {
			return T(v), nil
		}
	}
	return 0, configError("%s %q: want %s", what, s, strings.Join(names, ", "))
}

// BackendInfo says which backend serves a loop and why.
type BackendInfo struct {
	Kind        BackendKind // BackendIOUring or BackendPool
	Description string      // its set-up, e.g. "io_uring (sq 256, cq 2048, SINGLE_ISSUER|DEFER_TASKRUN)"
	Reason      string      // why this one and not the other
}

func (c Config) withDefaults() (Config, error) {
	if c.RingEntries == 0 {
		c.RingEntries = 256
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1024
	}
	if c.MaxFiles == 0 {
		c.MaxFiles = 64
	}
	if c.MaxBuffers == 0 {
		c.MaxBuffers = 16
	}
	if c.PoolWorkers == 0 {
		c.PoolWorkers = 16
	}
	if c.InlineMax == 0 {
		c.InlineMax = defaultInlineMax
	}
	switch {
	case c.StopGrace == 0:
		c.StopGrace = defaultStopGrace
	case c.StopGrace < 0:
		c.StopGrace = 0
	}
	c.Backoff = c.Backoff.withDefaults()
	var err error
	if c.Device, err = c.Device.withDefaults(); err != nil {
		return c, err
	}
	switch {
	case c.RingEntries > 32768 || c.RingEntries&(c.RingEntries-1) != 0:
		return c, configError("RingEntries %d: want a power of two up to 32768", c.RingEntries)
	case c.MaxInflight < 1 || c.MaxInflight > 1<<16:
		return c, configError("MaxInflight %d: want 1 to 65536", c.MaxInflight)
	case c.MaxFiles < 1 || c.MaxFiles > 1<<16:
		return c, configError("MaxFiles %d: want 1 to 65536", c.MaxFiles)
	case c.MaxBuffers < 1 || c.MaxBuffers > 1<<14:
		return c, configError("MaxBuffers %d: want 1 to 16384 (io_uring's limit)", c.MaxBuffers)
	case c.PoolWorkers < 1 || c.PoolWorkers > 4096:
		return c, configError("PoolWorkers %d: want 1 to 4096", c.PoolWorkers)
	case c.InlineMax < -1 || c.InlineMax > maxInlineMax:
		return c, configError("InlineMax %d: want -1 (never) or up to %d", c.InlineMax, maxInlineMax)
	case c.Backend < BackendAuto || c.Backend > BackendPool:
		return c, configError("Backend %v: want BackendAuto, BackendIOUring or BackendPool", c.Backend)
	}
	for _, cpu := range c.CPUs {
		if cpu < 0 || cpu >= maxCPU {
			return c, configError("CPUs: CPU %d: want 0 to %d", cpu, maxCPU-1)
		}
	}
	return c, c.Backoff.validate()
}

// maxCPU bounds Config.CPUs: the CPUs a unix.CPUSet holds.
const maxCPU = 1024

// bindCPUs binds the calling thread (the loop's, locked to its goroutine)
// to cpus; none leaves it where it is.
func bindCPUs(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var set unix.CPUSet
	for _, cpu := range cpus {
		set.Set(cpu)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		// EINVAL: none of them is online or allowed to this process.
		return errorf("%w: CPUs %v: sched_setaffinity: %w", ErrConfig, cpus, err)
	}
	return nil
}
