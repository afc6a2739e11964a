package megaio

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Backoff says how an idle loop waits for work: Spins polls without
// sleeping, then sleeps that grow exponentially from MinSleep to MaxSleep.
// While requests are in flight there is no spinning and no growing: the
// sleep is a wait in the kernel of MaxSleep for a completion (it ends early
// when one arrives), so new requests are claimed at most MaxSleep late;
// except for Linger after a cycle that completed requests, when the loop
// polls, because their producers are about to publish the next ones. Stop and the loop's commands wake a
// sleeping loop at once.
//
// After IdleAfter with nothing claimed and nothing in flight, the loop goes
// into deep idle: its sleeps go on doubling past MaxSleep, up to IdleSleep.
// A host producer's Submit wakes it at once. A request published by a GPU
// thread is claimed at most one sleep (plus the scheduler's delay) after it
// is published: never more than IdleSleep, and never more than the quiet
// time before it. Deep idle is what keeps a loop that waits all day for a
// GPU's first request below 1% of a core instead of 15-28%
// (docs/BENCHMARKS.md).
//
// The default spin is long (4096 polls of the queue's head, some 40-100µs)
// because a futex sleep and wake-up cost tens of microseconds on the
// virtual machines we measured: with 64 spins (the reference loop's value)
// 4 KiB tmpfs READs at depth 8 ran at 0.4x the throughput of 4096 spins
// (docs/BENCHMARKS.md). The loop thread is dedicated to serving, so
// spinning costs no one else's work; lower Spins to trade latency for CPU.
type Backoff struct {
	Spins    int           // default 4096
	MinSleep time.Duration // default 10µs
	MaxSleep time.Duration // default 100µs
	// Poll keeps the loop polling, never sleeping, while requests are in
	// flight: it reaps without waiting in the kernel every cycle. For
	// machines with a core to spare: the loop's thread then uses all of
	// one while IO is in flight (docs/BENCHMARKS.md has the figures).
	Poll bool
	// Linger: after a cycle that completed requests while others are still
	// in flight, the loop polls (reaps without waiting in the kernel) this
	// long before it waits there. The producers of the requests it just
	// completed publish their next within a round trip (a GPU's: a PCIe
	// round trip or two), and a loop waiting in the kernel would claim
	// those only at the next completion or the end of its wait: a GPU
	// producer makes no system call that could end it. Default 50µs;
	// negative: none. The loop's CPU is spent only while completions
	// flow; docs/BENCHMARKS.md ("Where the depth goes") has the figures.
	Linger    time.Duration
	IdleAfter time.Duration // quiet time before deep idle (default 10ms; negative: never)
	IdleSleep time.Duration // the longest deep-idle sleep (default 20ms, or MaxSleep if longer)
}

func (b Backoff) withDefaults() Backoff {
	if b.Spins == 0 {
		b.Spins = 4096
	}
	if b.MinSleep == 0 {
		b.MinSleep = 10 * time.Microsecond
	}
	if b.MaxSleep == 0 {
		b.MaxSleep = 100 * time.Microsecond
	}
	if b.Linger == 0 {
		b.Linger = 50 * time.Microsecond
	}
	if b.IdleAfter == 0 {
		b.IdleAfter = 10 * time.Millisecond
	}
	if b.IdleSleep == 0 {
		b.IdleSleep = max(20*time.Millisecond, b.MaxSleep)
	}
	return b
}

func (b Backoff) validate() error {
	if b.Spins < 0 || b.MinSleep <= 0 || b.MaxSleep < b.MinSleep || b.IdleSleep < b.MaxSleep {
		return configError("backoff %+v: want Spins >= 0, 0 < MinSleep <= MaxSleep <= IdleSleep", b)
	}
	return nil
}

// backoff is the loop's idle state.
type backoff struct {
	cfg   Backoff
	polls int
	sleep time.Duration
}

func (b *backoff) reset() { b.polls, b.sleep = 0, 0 }

// next returns 0 while the loop should keep spinning, else how long to
// sleep; noSpin skips the spinning.
func (b *backoff) next(noSpin bool) time.Duration {
	b.polls++
	if b.polls <= b.cfg.Spins && !noSpin {
		return 0
	}
	if b.sleep == 0 {
		b.sleep = b.cfg.MinSleep
	} else if b.sleep < b.cfg.MaxSleep {
		b.sleep = min(2*b.sleep, b.cfg.MaxSleep)
	}
	return b.sleep
}

// futex(2) operations (linux/futex.h): FUTEX_WAIT or FUTEX_WAKE with
// FUTEX_PRIVATE_FLAG (128); x/sys/unix does not define them.
const (
	futexWaitPrivate = 0 | 128
	futexWakePrivate = 1 | 128
)

// waker lets other goroutines interrupt the loop's sleep. Go's timers sleep
// about a millisecond at the least, so the loop sleeps on a futex, whose
// timeout has the kernel's hrtimer precision (and the loop's thread sets
// its timer slack to 1 ns: setTimerSlack). A futex sleep, in a system call,
// is also what costs least in deep idle: measured against parking the
// goroutine on a Go timer, it wakes fewer of the runtime's threads
// (docs/BENCHMARKS.md).
type waker struct {
	word atomic.Uint32 // 1: a wake is pending
	deep atomic.Bool   // the loop is in (or about to begin) a deep-idle sleep
}

// sleep blocks for at most d unless a wake is pending or arrives, and
// reports whether one did.
func (w *waker) sleep(d time.Duration) bool {
	futexWait(&w.word, 0, d)
	return w.word.Swap(0) == 1
}

// wake ends a sleep in progress or makes the next one return at once. The
// caller sets the flag that the loop should see before calling wake.
func (w *waker) wake() {
	w.word.Store(1)
	futexWake(&w.word, 1)
}

// wakeIfDeep wakes the loop only when it is in deep idle: what a host
// producer does after publishing (one atomic load when it is not). The
// producer's publish and this load, against the loop's store of deep and
// its look at the queues (Loop.deepSleep), are a Dekker pair: either the
// loop sees the request or the producer sees deep and wakes it.
func (w *waker) wakeIfDeep() {
	if w.deep.Load() {
		w.wake()
	}
}

// setTimerSlack sets the calling thread's timer slack (prctl
// PR_SET_TIMERSLACK): the kernel may end its sleeps this much late, 50 µs
// by default, which would make the loop's 10-100 µs sleeps 60-150 µs.
func setTimerSlack(ns uintptr) { unix.Prctl(unix.PR_SET_TIMERSLACK, ns, 0, 0, 0) }

// futexWait sleeps while *addr == val, for at most d (or until futexWake).
func futexWait(addr *atomic.Uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWake wakes up to n sleepers on addr.
func futexWake(addr *atomic.Uint32, n int) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakePrivate, uintptr(n), 0, 0, 0)
}
