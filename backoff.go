package megaio

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Backoff says how an idle loop waits for work: Spins polls without
// sleeping, then sleeps that grow exponentially from MinSleep to MaxSleep.
// While requests are in flight there is no spinning: the sleep is a bounded
// wait for a completion (it ends early when one arrives), so new requests
// are claimed at most MaxSleep late. Stop and the loop's commands wake a sleeping loop at once.
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
	return b
}

func (b Backoff) validate() error {
	if b.Spins < 0 || b.MinSleep <= 0 || b.MaxSleep < b.MinSleep {
		return configError("backoff %+v: want Spins >= 0 and 0 < MinSleep <= MaxSleep", b)
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
// timeout has the kernel's hrtimer precision.
type waker struct {
	word atomic.Uint32 // 1: a wake is pending
}

// sleep blocks for at most d unless a wake is pending or arrives.
func (w *waker) sleep(d time.Duration) {
	futexWait(&w.word, 0, d)
	w.word.Store(0)
}

// wake ends a sleep in progress or makes the next one return at once. The
// caller sets the flag that the loop should see before calling wake.
func (w *waker) wake() {
	w.word.Store(1)
	futexWake(&w.word, 1)
}

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
