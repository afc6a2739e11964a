package megaio

// Waits in tests are bounded by the absence of progress, never by elapsed
// time. A test that waits (for a kernel to end, a Stop to return, a ticket,
// a goroutine, a condition) names what it watches move: a loop's claims,
// completions and bytes, a CPU kernel's threads returned. The wait ends
// when its thing happens; it fails only when nothing it watches has moved
// for stallLimit, and the failure says what moved during the wait and what
// was stuck since when. On a loaded machine the work goes slowly but goes
// on, and the wait goes on with it; a hang is still caught, and reported as
// one.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megaio/megaio/cpukernel"
)

// stallLimit is how long a wait in a test may see nothing move before it is
// called a hang: long enough that a 2-vCPU machine shared with other work
// never reaches it while work goes on, short enough that a hang is
// reported well within the suite's time. MEGAIO_TEST_STALL (a Go duration)
// overrides it, e.g. to check a watchdog's report quickly.
var stallLimit = func() time.Duration {
	if v := os.Getenv("MEGAIO_TEST_STALL"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
		fmt.Fprintf(os.Stderr, "MEGAIO_TEST_STALL=%q is not a positive Go duration; using 60s\n", v)
	}
	return 60 * time.Second
}()

// watchPoll is how often a watchdog reads its meters.
const watchPoll = 50 * time.Millisecond

// A meter is one thing a wait watches move: a count that only grows (or at
// least changes) while the work it stands for goes on.
type meter struct {
	name string
	read func() uint64
}

// loopMeters watch loop l serve: requests claimed, completions published,
// bytes moved.
func loopMeters(l *Loop) []meter {
	if l == nil {
		return nil
	}
	return []meter{
		{"claimed", func() uint64 {
			var n uint64
			for _, r := range l.Stats().Requests {
				n += r
			}
			return n
		}},
		{"completed", func() uint64 { return l.Stats().Completed }},
		{"bytes", func() uint64 { return l.Stats().Bytes }},
	}
}

// launchMeters watch a CPU kernel's threads return.
func launchMeters(l *cpukernel.Run) []meter {
	return []meter{{"threads returned", func() uint64 { return uint64(l.Returned()) }}}
}

// errStalled is the cause of a watchdog's context when nothing moved.
var errStalled = errors.New("no progress")

// progressWatch remembers, for each meter, where it started, where it is,
// and when it last moved.
type progressWatch struct {
	what       string
	meters     []meter
	start, now []uint64
	moved      []time.Time
	began      time.Time
	lastMove   time.Time
}

func newProgressWatch(what string, meters []meter) *progressWatch {
	w := &progressWatch{what: what, meters: meters, began: time.Now()}
	w.lastMove = w.began
	for _, m := range meters {
		v := m.read()
		w.start, w.now, w.moved = append(w.start, v), append(w.now, v), append(w.moved, time.Time{})
	}
	return w
}

// sample reads every meter and reports whether nothing has moved for
// stallLimit.
func (w *progressWatch) sample() (stalled bool) {
	t := time.Now()
	for i, m := range w.meters {
		if v := m.read(); v != w.now[i] {
			w.now[i], w.moved[i], w.lastMove = v, t, t
		}
	}
	return t.Sub(w.lastMove) >= stallLimit
}

// report says what moved during the wait and what was stuck.
func (w *progressWatch) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v: nothing moved for %v (waited %v in all)", w.what, errStalled,
		time.Since(w.lastMove).Round(10*time.Millisecond), time.Since(w.began).Round(10*time.Millisecond))
	if len(w.meters) == 0 {
		b.WriteString("; the awaited event itself is the only progress this wait can see")
	}
	for i, m := range w.meters {
		if w.now[i] == w.start[i] {
			fmt.Fprintf(&b, "; %s stuck at %d for the whole wait", m.name, w.now[i])
		} else {
			fmt.Fprintf(&b, "; %s moved %d -> %d, last %v ago", m.name, w.start[i], w.now[i],
				time.Since(w.moved[i]).Round(10*time.Millisecond))
		}
	}
	return b.String()
}

// stallContext returns a context that is cancelled, with the watch's
// report as its cause, once nothing the meters watch has moved for
// stallLimit. cancel stops the watch.
func stallContext(parent context.Context, what string, meters ...meter) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	w := newProgressWatch(what, meters)
	go func() {
		tick := time.NewTicker(watchPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if w.sample() {
					cancel(errors.New(w.report()))
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// stalledCause is the watchdog's report when ctx ended because nothing
// moved, or "".
func stalledCause(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && strings.Contains(c.Error(), errStalled.Error()) {
		return c.Error()
	}
	return ""
}

// await returns the first value from ch; it fails the test when nothing the
// meters watch moved for stallLimit first.
func await[T any](t testing.TB, what string, ch <-chan T, meters ...meter) T {
	t.Helper()
	ctx, cancel := stallContext(context.Background(), what, meters...)
	defer cancel()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatal(context.Cause(ctx))
		panic("unreachable")
	}
}

// eventually polls cond until it holds; it fails the test when nothing the
// meters watch moved for stallLimit first.
func eventually(t testing.TB, what string, cond func() bool, meters ...meter) {
	t.Helper()
	w := newProgressWatch("waiting for "+what, meters)
	for i := 0; !cond(); i++ {
		if i%256 == 0 && w.sample() { // about every 50 ms
			t.Fatal(w.report())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// stopLoop stops l, waiting as long as the requests in flight go on
// completing; it returns Stop's error, with the watchdog's report added
// when nothing moved for stallLimit (Stop then cancelled what was left, as
// at any deadline).
func stopLoop(t testing.TB, l *Loop) error {
	t.Helper()
	ctx, cancel := stallContext(context.Background(), "Stop", loopMeters(l)...)
	defer cancel()
	err := l.Stop(ctx)
	if c := stalledCause(ctx); c != "" && err != nil {
		err = fmt.Errorf("%w (%s)", err, c)
	}
	return err
}

// TestWatchdog: a watch never fires while a meter moves, however long the
// wait, and once nothing moves it fires, reporting what moved and what was
// stuck. The moving meter moves each time it is read, so no scheduling
// delay can make it look stuck.
func TestWatchdog(t *testing.T) {
	saved := stallLimit
	stallLimit = 300 * time.Millisecond
	t.Cleanup(func() { stallLimit = saved })
	var moving, reads atomic.Uint64
	live := atomic.Bool{}
	live.Store(true)
	ctx, cancel := stallContext(context.Background(), "the test's work",
		meter{"moving", func() uint64 {
			reads.Add(1)
			if live.Load() {
				return moving.Add(1)
			}
			return moving.Load()
		}},
		meter{"idle", func() uint64 { return 7 }})
	defer cancel()
	// Well past the limit in reads, with the meter moving at each.
	for reads.Load() < uint64(3*stallLimit/watchPoll) {
		if ctx.Err() != nil {
			t.Fatalf("the watch fired while a meter moved at every read: %v", context.Cause(ctx))
		}
		time.Sleep(watchPoll)
	}
	live.Store(false)
	<-ctx.Done() // the watch fires; were it broken the suite's own -timeout would report this wait
	report := stalledCause(ctx)
	for _, want := range []string{"the test's work: no progress: nothing moved for", "moving moved ",
		"idle stuck at 7 for the whole wait"} {
		if !strings.Contains(report, want) {
			t.Errorf("report %q lacks %q", report, want)
		}
	}
	t.Log(report)

	// await and eventually fail the test the same way, with no meter at all.
	stallLimit = 100 * time.Millisecond
	for name, wait := range map[string]func(testing.TB){
		"await":      func(tb testing.TB) { await(tb, "a value nobody sends", make(chan int)) },
		"eventually": func(tb testing.TB) { eventually(tb, "a condition that never holds", func() bool { return false }) },
	} {
		rec := &fatalRecorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			wait(rec)
		}()
		<-done
		if !strings.Contains(rec.fatal, "no progress: nothing moved for") ||
			!strings.Contains(rec.fatal, "the awaited event itself is the only progress") {
			t.Errorf("%s: failed with %q; want the watchdog's report", name, rec.fatal)
		}
	}
}

// fatalRecorder records a Fatal instead of failing the test.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}
