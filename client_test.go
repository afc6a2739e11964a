package megaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newTestClient makes a client with small pieces (16 KiB), so that requests
// are split at test sizes.
func newTestClient(t *testing.T, be BackendKind) *Client {
	t.Helper()
	if be == BackendIOUring {
		requireIOUring(t) // skips, saying why, where io_uring is refused (a container's default seccomp profile)
	}
	// NoCallerIO: these tests are of the loop's path; TestClientCallerIO
	// tests the caller's.
	c, err := NewClient(ClientConfig{Loop: Config{Backend: be, StopGrace: testStopGrace}, TaskSize: 16 << 10,
		NoCallerIO: true})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Client.Close: %v", err)
		}
	})
	return c
}

// TestClientReadAt checks ReadAt against io.ReaderAt's contract
// (testing/iotest through a SectionReader), into plain slices (staged) and
// into client buffers (no copy), split into pieces, at the end of the file
// and past it, on both backends.
func TestClientReadAt(t *testing.T) {
	for _, be := range []BackendKind{BackendIOUring, BackendPool} {
		t.Run(be.String(), func(t *testing.T) {
			c := newTestClient(t, be)
			const size = 300<<10 + 123
			path, data := patternFile(t, tmpfsDir(t), size, 3)
			f, err := c.OpenFile(path, os.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			// (A short section: iotest reads it a byte at a time too.)
			if err := iotest.TestReader(io.NewSectionReader(f, size-3000, 3000), data[size-3000:]); err != nil {
				t.Errorf("iotest.TestReader: %v", err)
			}

			// A plain slice longer than the staging memory, at an odd offset.
			p := make([]byte, 100<<10)
			if n, err := f.ReadAt(p, 1001); n != len(p) || err != nil || !bytes.Equal(p, data[1001:1001+len(p)]) {
				t.Errorf("ReadAt(100 KiB at 1001) = %d, %v, bytes equal %v", n, err, bytes.Equal(p[:n], data[1001:1001+n]))
			}
			// The end of the file: the bytes there, then io.EOF.
			if n, err := f.ReadAt(p, size-5000); n != 5000 || err != io.EOF || !bytes.Equal(p[:n], data[size-5000:]) {
				t.Errorf("ReadAt at the end = %d, %v; want 5000, io.EOF", n, err)
			}
			if n, err := f.ReadAt(p, size+10); n != 0 || err != io.EOF {
				t.Errorf("ReadAt past the end = %d, %v; want 0, io.EOF", n, err)
			}

			// Into a client buffer: no staging, pieces in parallel.
			buf, err := c.NewBuffer(256 << 10)
			if err != nil {
				t.Fatal(err)
			}
			before := c.Loop().Stats().Requests[OpRead]
			dst := buf.Bytes()[4096 : 4096+200000]
			fu := f.ReadAtAsync(dst, 777)
			if n, err := fu.Wait(context.Background()); n != len(dst) || err != nil || !bytes.Equal(dst, data[777:777+len(dst)]) {
				t.Errorf("ReadAtAsync into a buffer = %d, %v", n, err)
			}
			if n, err := fu.Wait(context.Background()); n != len(dst) || err != nil {
				t.Errorf("a second Wait = %d, %v; want the same result", n, err)
			}
			if pieces := len(fu.pieces); pieces != (200000+16383)/16384 {
				t.Errorf("200000 bytes in 16 KiB pieces took %d requests, want %d", pieces, (200000+16383)/16384)
			}
			eventually(t, "the loop's counters show the pieces", func() bool {
				return c.Loop().Stats().Requests[OpRead]-before >= uint64(len(fu.pieces))
			})
			// The async forms take client buffers only.
			if _, err := f.ReadAtAsync(p, 0).Wait(context.Background()); !errors.Is(err, ErrNotRegistered) {
				t.Errorf("ReadAtAsync into a plain slice: %v, want ErrNotRegistered", err)
			}
			// A failing request's errno comes back.
			d, err := c.OpenFile(filepath.Dir(path), os.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.ReadAt(p, 0); !errors.Is(err, unix.EISDIR) || !strings.Contains(err.Error(), filepath.Dir(path)) {
				t.Errorf("ReadAt of a directory: %v, want EISDIR naming it", err)
			}
			if err := d.Close(); err != nil {
				t.Errorf("File.Close: %v", err)
			}
		})
	}
}

// TestClientWriteAt writes through plain slices and client buffers and
// reads the file back with the os package.
func TestClientWriteAt(t *testing.T) {
	for _, be := range []BackendKind{BackendIOUring, BackendPool} {
		t.Run(be.String(), func(t *testing.T) {
			c := newTestClient(t, be)
			path := filepath.Join(tmpfsDir(t), "out")
			f, err := c.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			_, data := patternFile(t, t.TempDir(), 150<<10, 9)
			if n, err := f.WriteAt(data[:90<<10], 0); n != 90<<10 || err != nil {
				t.Errorf("WriteAt = %d, %v", n, err)
			}
			buf, err := c.NewBuffer(len(data))
			if err != nil {
				t.Fatal(err)
			}
			tail := buf.Bytes()[:len(data)-90<<10]
			copy(tail, data[90<<10:])
			if n, err := f.WriteAtAsync(tail, 90<<10).Wait(context.Background()); n != len(tail) || err != nil {
				t.Errorf("WriteAtAsync = %d, %v", n, err)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("the file holds %d bytes (%v), equal to what was written: %v", len(got), err, bytes.Equal(got, data))
			}
		})
	}
}

// TestClientWaitContext: a Wait whose context ends returns its error and
// leaves the future to be waited again; Close with a deadline cancels what
// is still in flight, and the client then refuses new requests.
func TestClientWaitContext(t *testing.T) {
	c := newTestClient(t, BackendIOUring)
	f, w := openPipe(t, c)
	buf, err := c.NewBuffer(4096)
	if err != nil {
		t.Fatal(err)
	}
	fu := f.ReadAtAsync(buf.Bytes()[:5], 0) // a pipe READ waits for a writer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := fu.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), f.Name()+" at 0") {
		t.Fatalf("Wait with a 20 ms deadline: %v, want DeadlineExceeded naming the file and offset", err)
	}
	w.WriteString("hello")
	if n, err := fu.Wait(context.Background()); n != 5 || err != nil || string(buf.Bytes()[:5]) != "hello" {
		t.Errorf("Wait again = %d, %v, %q", n, err, buf.Bytes()[:5])
	}

	// A goroutine blocked in Wait does not hold Close past its deadline,
	// and its Wait ends with the cancelled READ.
	stuck := f.ReadAtAsync(buf.Bytes()[:5], 0)
	waited := make(chan error, 1)
	go func() {
		_, err := stuck.Wait(context.Background())
		waited <- err
	}()
	time.Sleep(5 * time.Millisecond) // let it block (either order is correct)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()
	if err := await(t, "Close with a deadline while a Wait is under way", closed); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a deadline and a READ that never ends: %v, want DeadlineExceeded", err)
	}
	if err := await(t, "a Wait under way to end when Close stopped the loop", waited); !errors.Is(err, unix.ECANCELED) &&
		!errors.Is(err, ErrClosed) {
		t.Errorf("the READ in flight at Close: %v, want ECANCELED or ErrClosed", err)
	}
	if _, err := f.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestClientReadAtContext: a context that ends cancels the IO in flight,
// on both backends. Two READs of a pipe wait for a writer (with the pool's
// single worker, one in its system call and one queued behind it); each is
// ended by its own context, in turn, while the other goes on waiting; the
// slices are untouched and the bytes written afterwards go to the next
// read, so neither cancelled READ was left running. A context already ended
// starts nothing; a read that completes ignores its context.
func TestClientReadAtContext(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		c, err := NewClient(ClientConfig{Loop: Config{Backend: be, PoolWorkers: 1}, TaskSize: 16 << 10, NoCallerIO: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) }) // after openPipe's: the pipe's READs end first
		f, w := openPipe(t, c)

		type outcome struct {
			n   int
			err error
		}
		start := func(ctx context.Context, p []byte) chan outcome {
			out := make(chan outcome, 1)
			go func() {
				n, err := f.ReadAtContext(ctx, p, 0)
				out <- outcome{n, err}
			}()
			return out
		}
		ctx1, cancel1 := context.WithCancel(context.Background())
		defer cancel1()
		ctx2, cancel2 := context.WithCancel(context.Background())
		defer cancel2()
		p1, p2 := make([]byte, 5), make([]byte, 5)
		out1 := start(ctx1, p1)
		eventually(t, "the first READ claimed", func() bool { return c.Loop().Stats().Requests[OpRead] == 1 })
		out2 := start(ctx2, p2)
		eventually(t, "the second READ claimed", func() bool { return c.Loop().Stats().Requests[OpRead] == 2 })

		cancel2()
		if o := await(t, "ReadAtContext to return after its context was cancelled", out2,
			loopMeters(c.Loop())...); o.n != 0 || !errors.Is(o.err, context.Canceled) {
			t.Errorf("the cancelled second READ = %d, %v; want 0 and context.Canceled", o.n, o.err)
		}
		select {
		case o := <-out1:
			t.Fatalf("the first READ ended with the second's context: %d, %v", o.n, o.err)
		case <-time.After(20 * time.Millisecond):
		}
		cancel1()
		if o := await(t, "ReadAtContext to return after its context was cancelled", out1,
			loopMeters(c.Loop())...); o.n != 0 || !errors.Is(o.err, context.Canceled) {
			t.Errorf("the cancelled first READ = %d, %v; want 0 and context.Canceled", o.n, o.err)
		}
		if !bytes.Equal(p1, make([]byte, 5)) || !bytes.Equal(p2, make([]byte, 5)) {
			t.Errorf("a cancelled READ wrote into its slice: %q %q", p1, p2)
		}
		if st := c.Stats(); st.Cancelled != 2 {
			t.Errorf("ClientStats.Cancelled = %d, want 2", st.Cancelled)
		}

		w.WriteString("hello")
		p := make([]byte, 5)
		if n, err := f.ReadAtContext(context.Background(), p, 0); n != 5 || err != nil || string(p) != "hello" {
			t.Errorf("a READ after the cancelled ones = %d, %v, %q; want hello: a cancelled READ took the bytes", n, err, p)
		}
		done, stop := context.WithCancel(context.Background())
		stop()
		if n, err := f.ReadAtContext(done, p, 0); n != 0 || !errors.Is(err, context.Canceled) {
			t.Errorf("ReadAtContext with an ended context = %d, %v; want context.Canceled", n, err)
		}
		eventually(t, "the third READ counted", func() bool { return c.Loop().Stats().Requests[OpRead] >= 3 })
		time.Sleep(5 * time.Millisecond) // Stats are published every few cycles
		if got := c.Loop().Stats().Requests[OpRead]; got != 3 {
			t.Errorf("the loop saw %d READs, want 3: a call with an ended context published one", got)
		}

		path, data := patternFile(t, tmpfsDir(t), 100<<10, 5)
		g, err := c.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		q := make([]byte, len(data))
		if n, err := g.ReadAtContext(ctx, q, 0); n != len(data) || err != nil || !bytes.Equal(q, data) {
			t.Errorf("ReadAtContext of a tmpfs file = %d, %v", n, err)
		}
		if n, err := g.WriteAtContext(ctx, q[:100], 7); n != 100 || err != nil {
			t.Errorf("WriteAtContext = %d, %v", n, err)
		}
	})
}

// TestClientCancelWaiting: a call whose request waits for a record (every
// record held by READs of an empty pipe) ends when its context does, and
// takes no bytes: the two READs holding the records get all ten written
// afterwards.
func TestClientCancelWaiting(t *testing.T) {
	forBackends(t, func(t *testing.T, be BackendKind) {
		c, err := NewClient(ClientConfig{Loop: Config{Backend: be, MaxInflight: 2, PoolWorkers: 2}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) }) // after openPipe's: the pipe's READs end first
		f, w := openPipe(t, c)
		got := make(chan string, 2)
		for range 2 {
			go func() {
				p := make([]byte, 5)
				n, err := f.ReadAt(p, 0)
				if err != nil {
					t.Errorf("a READ holding a record: %d, %v", n, err)
				}
				got <- string(p[:n])
			}()
		}
		eventually(t, "both records held", func() bool { return c.Loop().Stats().Requests[OpRead] == 2 })
		ctx, cancel := context.WithCancel(context.Background())
		ended := make(chan error, 1)
		go func() {
			_, err := f.ReadAtContext(ctx, make([]byte, 5), 0)
			ended <- err
		}()
		eventually(t, "the third READ waiting for a record", func() bool { return c.Loop().Stats().Waited == 1 })
		cancel()
		if err := await(t, "a READ waiting for a record to end with its context", ended,
			loopMeters(c.Loop())...); !errors.Is(err, context.Canceled) {
			t.Errorf("the waiting READ: %v, want context.Canceled", err)
		}
		w.WriteString("helloworld")
		a, b := <-got, <-got
		if len(a+b) != 10 {
			t.Errorf("the READs holding the records got %q and %q; want all ten bytes", a, b)
		}
	})
}

// TestClientCancelStorm: goroutines read with contexts that end at random
// moments, mid-request (requests of up to 13 pieces), on both backends:
// every call returns; the n bytes it reports are the file's, whatever its
// error; the only errors are the calls' own contexts; and the loop ends with
// every record free.
func TestClientCancelStorm(t *testing.T) {
	calls := 300
	if testing.Short() {
		calls = 50
	}
	path, data := patternFile(t, tmpfsDir(t), 1<<20, 29)
	forBackends(t, func(t *testing.T, be BackendKind) {
		c := newTestClient(t, be)
		f, err := c.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var ended, whole atomic.Int64
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), uint64(be)))
				for k := 0; k < calls; k++ {
					size, off := 1+r.IntN(200<<10), r.IntN(1<<20)
					p := make([]byte, size)
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(300))*time.Microsecond)
					n, err := f.ReadAtContext(ctx, p, int64(off))
					cancel()
					if !bytes.Equal(p[:n], data[off:off+n]) {
						errs <- fmt.Errorf("ReadAtContext(%d at %d) = %d, %v: wrong bytes", size, off, n, err)
						return
					}
					switch {
					case err == nil || err == io.EOF:
						whole.Add(1)
					case errors.Is(err, context.DeadlineExceeded):
						ended.Add(1)
					default:
						errs <- fmt.Errorf("ReadAtContext(%d at %d) = %d, %v", size, off, n, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if ended.Load() == 0 {
			t.Errorf("no call was ended by its context (%d whole): the test did not test cancelling", whole.Load())
		}
		t.Logf("%d calls whole, %d ended by their context; ClientStats %+v", whole.Load(), ended.Load(), c.Stats())
		eventually(t, "every request completed", func() bool { return c.Loop().Stats().Queues[0].InFlight == 0 })
	})
}

// TestClientEnv: MEGAIO_* variables fill the fields a program leaves zero,
// a field set in code wins, and a value that does not parse is an ErrConfig
// naming the variable.
func TestClientEnv(t *testing.T) {
	t.Setenv(EnvBackend, "pool")
	t.Setenv(EnvPoolWorkers, "3")
	c := newTestClient(t, BackendAuto)
	if got := c.Loop().Backend().Kind; got != BackendPool {
		t.Errorf("%s=pool: backend %v", EnvBackend, got)
	}
	if got := c.Loop().cfg.PoolWorkers; got != 3 {
		t.Errorf("%s=3: %d workers", EnvPoolWorkers, got)
	}
	if c := newTestClient(t, BackendIOUring); c.Loop().Backend().Kind != BackendIOUring {
		t.Errorf("Config.Backend io_uring lost to %s=pool", EnvBackend)
	}
	t.Setenv(EnvGDSThreshold, "64KiB")
	if cfg, err := (Config{}).withEnv(); err != nil || cfg.Device.GDSThreshold != 64<<10 {
		t.Errorf("%s=64KiB: %d, %v", EnvGDSThreshold, cfg.Device.GDSThreshold, err)
	}
	for v, want := range map[string]int{"off": -1, "16K": 16 << 10} {
		t.Setenv(EnvInlineMax, v)
		if cfg, err := (Config{}).withEnv(); err != nil || cfg.InlineMax != want {
			t.Errorf("%s=%s: %d, %v; want %d", EnvInlineMax, v, cfg.InlineMax, err, want)
		}
	}
	t.Setenv(EnvInlineMax, "")
	t.Setenv(EnvLoopCPUs, "0,2-3")
	if cfg, err := (Config{}).withEnv(); err != nil || !slices.Equal(cfg.CPUs, []int{0, 2, 3}) {
		t.Errorf("%s=0,2-3: %v, %v", EnvLoopCPUs, cfg.CPUs, err)
	}
	if cfg, err := (Config{CPUs: []int{1}}).withEnv(); err != nil || !slices.Equal(cfg.CPUs, []int{1}) {
		t.Errorf("Config.CPUs [1] lost to %s=0,2-3: %v, %v", EnvLoopCPUs, cfg.CPUs, err)
	}
	t.Setenv(EnvLoopCPUs, "")
	for _, bad := range []struct{ name, value string }{
		{EnvBackend, "uring"}, {EnvPoolWorkers, "0"}, {EnvDevicePath, "dma"}, {EnvGDSThreshold, "big"}, {EnvInlineMax, "lots"},
		{EnvLoopCPUs, "1-"}, {EnvLoopCPUs, "3-2"},
		{EnvTaskSize, "4M4"}, {EnvTaskSize, "1000"},
	} {
		t.Run(bad.name+"="+bad.value, func(t *testing.T) {
			t.Setenv(bad.name, bad.value)
			c, err := NewClient(ClientConfig{})
			if err == nil {
				c.Close(context.Background())
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), bad.name) {
				t.Errorf("NewClient: %v; want ErrConfig naming %s", err, bad.name)
			}
		})
	}
}

// TestDeviceClient reads a file into device memory and writes it back out
// through a Client, split into pieces (TestDeviceFakeDriver runs it against
// the stand-in driver, with and without cuFile).
func TestDeviceClient(t *testing.T) {
	g := requireGPU(t)
	c := newTestClient(t, BackendAuto)
	const size = 200<<10 + 5
	path, data := patternFile(t, diskDir(t), size, 11)
	f, err := c.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	db, warn, err := c.NewDeviceBuffer(g, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device buffer path %v (warning: %v)", db.Path(), warn)
	if n, err := f.ReadToDevice(db, 4096, size, 0).Wait(context.Background()); n != size || err != nil {
		t.Fatalf("ReadToDevice = %d, %v", n, err)
	}
	got := make([]byte, size)
	if err := g.CopyFromDevice(got, db.Pointer()+4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("the device buffer does not hold the file's bytes")
	}
	out, err := c.OpenFile(filepath.Join(t.TempDir(), "out"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := out.WriteFromDevice(db, 4096, size, 0).Wait(context.Background()); n != size || err != nil {
		t.Fatalf("WriteFromDevice = %d, %v", n, err)
	}
	if back, err := os.ReadFile(filepath.Join(filepath.Dir(out.Name()), "out")); err != nil || !bytes.Equal(back, data) {
		t.Errorf("written back: %d bytes (%v), equal %v", len(back), err, bytes.Equal(back, data))
	}
	other := &DeviceBuffer{}
	if _, err := f.ReadToDevice(other, 0, 10, 0).Wait(context.Background()); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("ReadToDevice into a foreign buffer: %v, want ErrNotRegistered", err)
	}
}

// TestDeviceClientCloseRace closes a client at random moments while
// goroutines move bytes into and out of device buffers (TestDeviceFakeDriver
// runs it against the stand-in driver, with and without cuFile) beside
// plain-slice reads: every call ends with its bytes or ErrClosed, ErrStopped
// or -ECANCELED, the plain slices hold the file's bytes, and calls after
// Close return ErrClosed.
func TestDeviceClientCloseRace(t *testing.T) {
	g := requireGPU(t)
	path, data := patternFile(t, diskDir(t), 1<<20, 31)
	rng := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < 40; round++ {
		c, f, w := raceClient(t, ClientConfig{TaskSize: 64 << 10}, path)
		db, _, err := c.NewDeviceBuffer(g, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		raceClose(t, c, rng, 4, 5*time.Millisecond, func(r *rand.Rand) (error, error) {
			size, off := 1+r.IntN(200<<10), r.IntN(800<<10)
			var n int
			var err error
			switch r.IntN(3) {
			case 0:
				n, err = f.ReadToDevice(db, uint64(r.IntN(800<<10)), size, int64(off)).Wait(context.Background())
			case 1:
				n, err = w.WriteFromDevice(db, uint64(r.IntN(800<<10)), size, int64(off)).Wait(context.Background())
			default:
				plain := make([]byte, size)
				if n, err = f.ReadAt(plain, int64(off)); !bytes.Equal(plain[:n], data[off:off+n]) {
					return err, fmt.Errorf("a plain-slice ReadAt of %d at %d returned wrong bytes", size, off)
				}
			}
			if err == nil || err == io.EOF || errors.Is(err, ErrClosed) || errors.Is(err, ErrStopped) || errors.Is(err, unix.ECANCELED) {
				return err, nil
			}
			return err, fmt.Errorf("%d bytes, %w", n, err)
		})
	}
}

// TestDoContext: DoContext gives up when its context ends; the request
// still runs, and its completion id comes back to the pool once it does.
func TestDoContext(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{}, 4096)
	fh, w := h.pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.p.DoContext(ctx, Request{Op: OpRead, File: fh, Dest: h.dest, Length: 3}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DoContext on a silent pipe: %v, want DeadlineExceeded", err)
	}
	if _, err := h.p.DoContext(ctx, Request{Op: OpNop}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DoContext with an ended context: %v, want DeadlineExceeded", err)
	}
	w.WriteString("abc")
	eventually(t, "the abandoned READ's completion id comes back", func() bool {
		return h.l.Stats().Completed == 1 && freeIDs(h.p) == len(h.q.comps)
	})
	if got := string(h.buf.Bytes()[:3]); got != "abc" {
		t.Errorf("the abandoned READ wrote %q, want abc", got)
	}
	checkIDPool(t, h.p)
}

// freeIDs counts the ids in p's pool (taking them all, then putting them
// back).
func freeIDs(p *HostProducer) int {
	var ids []uint32
	for id, ok := p.ids.get(); ok; id, ok = p.ids.get() {
		ids = append(ids, id)
	}
	for _, id := range ids {
		p.ids.put(id)
	}
	return len(ids)
}

// TestClientFullRing: a request split into more pieces than the ring has
// slots still completes (the client waits for the loop to claim between
// pieces), and its bytes are right.
func TestClientFullRing(t *testing.T) {
	c, err := NewClient(ClientConfig{Queue: QueueConfig{Capacity: 4}, TaskSize: 4096, NoCallerIO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	path, data := patternFile(t, tmpfsDir(t), 256<<10, 5)
	f, err := c.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := c.NewBuffer(256 << 10)
	if err != nil {
		t.Fatal(err)
	}
	fu := f.ReadAtAsync(buf.Bytes(), 0)
	if len(fu.pieces) != 64 {
		t.Errorf("%d pieces, want 64", len(fu.pieces))
	}
	if n, err := fu.Wait(context.Background()); n != len(data) || err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("64 pieces through a 4-slot ring: %d, %v", n, err)
	}
}

// TestClientCloseRace closes a client at a random moment while goroutines
// read and write through plain slices and client buffers, some with
// contexts that end mid-call (a per-request cancel racing Close), on both
// backends, many rounds (run it under -race): nothing panics, faults or
// races; every call ends with its bytes or with ErrClosed, ErrStopped or
// -ECANCELED; bytes read into plain slices are the file's; and every call
// after Close returns ErrClosed.
func TestClientCloseRace(t *testing.T) {
	rounds := 150
	if testing.Short() {
		rounds = 20
	}
	path, data := patternFile(t, tmpfsDir(t), 1<<20, 23)
	forBackends(t, func(t *testing.T, be BackendKind) {
		rng := rand.New(rand.NewPCG(uint64(be), 1))
		var outcomes [5]atomic.Int64 // bytes, ErrClosed, ErrStopped, ECANCELED, the call's context
		for round := 0; round < rounds; round++ {
			c, f, w := raceClient(t, ClientConfig{Loop: Config{Backend: be}, TaskSize: 16 << 10}, path)
			buf, err := c.NewBuffer(256 << 10)
			if err != nil {
				t.Fatal(err)
			}
			cb := buf.Bytes() // not touched after Close: it is unmapped then
			raceClose(t, c, rng, 6, 3*time.Millisecond, func(r *rand.Rand) (error, error) {
				size, off := 1+r.IntN(100<<10), r.IntN(1<<20)
				var n int
				var err error
				var plain []byte
				var ctx context.Context = context.Background()
				switch r.IntN(5) {
				case 0:
					plain = make([]byte, size)
					n, err = f.ReadAt(plain, int64(off))
				case 1:
					n, err = w.WriteAt(make([]byte, size), int64(off))
				case 2:
					n, err = f.ReadAt(cb[:size], int64(off))
				case 3:
					n, err = f.ReadAtAsync(cb[:size], int64(off)).Wait(context.Background())
				default: // a context that may end first: the loop asked to cancel
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, time.Duration(r.IntN(200))*time.Microsecond)
					plain = make([]byte, size)
					n, err = f.ReadAtContext(ctx, plain, int64(off))
					cancel()
				}
				if plain != nil && !bytes.Equal(plain[:n], data[off:off+n]) { // whatever the error, n bytes are the file's
					return err, fmt.Errorf("a plain-slice ReadAt of %d at %d returned wrong bytes", size, off)
				}
				switch {
				case err == nil || err == io.EOF:
					outcomes[0].Add(1)
				case errors.Is(err, ErrClosed):
					outcomes[1].Add(1)
				case errors.Is(err, ErrStopped):
					outcomes[2].Add(1)
				case errors.Is(err, unix.ECANCELED):
					outcomes[3].Add(1)
				case ctx.Err() != nil && errors.Is(err, ctx.Err()):
					outcomes[4].Add(1)
				default:
					return err, err
				}
				return err, nil
			})
			if _, err := c.NewBuffer(4096); !errors.Is(err, ErrClosed) {
				t.Fatalf("NewBuffer after Close: %v, want ErrClosed", err)
			}
		}
		t.Logf("%d rounds: %d calls with their bytes, %d ErrClosed, %d ErrStopped, %d -ECANCELED, %d ended by their context",
			rounds, outcomes[0].Load(), outcomes[1].Load(), outcomes[2].Load(), outcomes[3].Load(), outcomes[4].Load())
	})
}

// raceClose runs workers goroutines calling call (each with its own random
// source) over and over, closes c after a random pause of up to maxPause,
// and waits for them: each stops after the first call it started after
// Close, which must fail with ErrClosed. call returns the call's error and
// a problem (a wrong outcome), which fails the test.
func raceClose(t *testing.T, c *Client, rng *rand.Rand, workers int, maxPause time.Duration, call func(r *rand.Rand) (err, problem error)) {
	t.Helper()
	var wg sync.WaitGroup
	var closed atomic.Bool
	problems := make(chan error, workers)
	for range workers {
		seed := rng.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 2))
			for {
				wasClosed := closed.Load()
				err, problem := call(r)
				if problem != nil {
					problems <- problem
					return
				}
				if wasClosed {
					if !errors.Is(err, ErrClosed) {
						problems <- fmt.Errorf("a call started after Close returned %v; want ErrClosed", err)
					}
					return
				}
			}
		}()
	}
	time.Sleep(time.Duration(rng.Int64N(int64(maxPause))))
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed.Store(true)
	wg.Wait()
	close(problems)
	for err := range problems {
		t.Fatal(err)
	}
}

// TestClientFileAsOSFile: what users of os.File expect of a File: Stat,
// ESPIPE for what has no offsets, os.ErrClosed after Close, NewBuffer's
// error naming a bad size, Future.Done without waiting, and the backend's
// reason naming MEGAIO_BACKEND when the variable chose it.
func TestClientFileAsOSFile(t *testing.T) {
	c := newTestClient(t, BackendIOUring)
	path, data := patternFile(t, tmpfsDir(t), 12345, 9)
	f, err := c.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != int64(len(data)) || !fi.Mode().IsRegular() || fi.Name() != filepath.Base(path) {
		t.Fatalf("Stat = %v, %v; want a regular file of %d bytes named %s", fi, err, len(data), filepath.Base(path))
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := c.Register(r); !errors.Is(err, unix.ESPIPE) {
		t.Errorf("Register(a pipe) = %v; want ESPIPE, as os.File.ReadAt gives", err)
	}

	if _, err := c.NewBuffer(-1); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "NewBuffer(-1)") {
		t.Errorf("NewBuffer(-1) = %v; want ErrConfig naming -1", err)
	}

	// Done: a READ of a pipe (registered below the Client's check) is not
	// done until the pipe has bytes.
	buf, err := c.NewBuffer(4096)
	if err != nil {
		t.Fatal(err)
	}
	pf := registerPipe(t, c, r)
	fu := pf.ReadAtAsync(buf.Bytes()[:3], 0)
	time.Sleep(20 * time.Millisecond)
	if fu.Done() {
		t.Fatal("Future.Done before the pipe had bytes")
	}
	w.WriteString("abc")
	eventually(t, "Future.Done once the pipe has bytes", fu.Done)
	if n, err := fu.Wait(context.Background()); n != 3 || err != nil || string(buf.Bytes()[:3]) != "abc" {
		t.Errorf("Wait after Done = %d, %v (%q)", n, err, buf.Bytes()[:3])
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("File.Close twice = %v; want os.ErrClosed", err)
	}
	if _, err := f.ReadAt(make([]byte, 10), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt after File.Close = %v; want os.ErrClosed", err)
	}
	if _, err := f.ReadAtAsync(buf.Bytes()[:10], 0).Wait(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAtAsync after File.Close = %v; want os.ErrClosed", err)
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Stat after File.Close = %v; want os.ErrClosed", err)
	}

	t.Setenv(EnvBackend, "pool")
	pc, err := NewClient(ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	if why := pc.Loop().Backend().Reason; !strings.Contains(why, EnvBackend) {
		t.Errorf("backend chosen by %s: reason %q does not name it", EnvBackend, why)
	}
}

// raceClient makes a Client with cfg and opens through it path, read-only,
// and a new scratch file, read-write: what the Close races act on.
func raceClient(t *testing.T, cfg ClientConfig, path string) (c *Client, f, w *File) {
	t.Helper()
	cfg.NoCallerIO = true // the races are with the loop's path
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if f, err = c.OpenFile(path, os.O_RDONLY, 0); err != nil {
		t.Fatal(err)
	}
	if w, err = c.OpenFile(filepath.Join(t.TempDir(), "w"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		t.Fatal(err)
	}
	return c, f, w
}

// openPipe makes a pipe whose read end is registered with c as a File (a
// READ of it waits for a writer), and returns that File and the write end.
// Both ends are closed at the test's cleanup, before the cleanups
// registered earlier (a Client's Close then finds no READ waiting).
func openPipe(t *testing.T, c *Client) (*File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	return registerPipe(t, c, r), w
}

// registerPipe registers the read end of a pipe with c's loop as a File,
// past Register's refusal: a READ of it waits until the pipe has bytes,
// which is how the tests hold a request in flight.
func registerPipe(t *testing.T, c *Client, r *os.File) *File {
	t.Helper()
	h, err := c.Loop().RegisterFile(r)
	if err != nil {
		t.Fatal(err)
	}
	return &File{c: c, h: h, name: r.Name(), fd: -1}
}

// TestClientInPlace: plain slices are read into and written from in place
// (no copy: ClientStats.InPlace), on both backends, across pieces; an
// O_DIRECT file takes aligned calls straight to the disk and a slice,
// offset or length it would refuse through its buffered descriptor
// (ClientStats.PageCache), with the right bytes either way and the two
// coherent; and only the Client's own queue may name a call destination.
func TestClientInPlace(t *testing.T) {
	for _, be := range []BackendKind{BackendIOUring, BackendPool} {
		t.Run(be.String(), func(t *testing.T) {
			c := newTestClient(t, be)
			path, data := patternFile(t, tmpfsDir(t), 300<<10+17, 41)
			f, err := c.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, size := range []int{1, 4096, 100<<10 + 3, 300<<10 + 17} {
				p := make([]byte, size)
				if n, err := f.ReadAt(p, 0); n != size || (err != nil && err != io.EOF) || !bytes.Equal(p, data[:size]) {
					t.Fatalf("ReadAt(%d) = %d, %v; equal %v", size, n, err, bytes.Equal(p, data[:size]))
				}
			}
			w := bytes.Repeat([]byte("megaio"), 20000)
			if n, err := f.WriteAt(w, 5); n != len(w) || err != nil {
				t.Fatalf("WriteAt = %d, %v", n, err)
			}
			back := make([]byte, len(w))
			if n, err := f.ReadAt(back, 5); n != len(w) || err != nil || !bytes.Equal(back, w) {
				t.Fatalf("read back = %d, %v; equal %v", n, err, bytes.Equal(back, w))
			}
			if st := c.Stats(); st.InPlace != 6 || st.PageCache != 0 {
				t.Errorf("ClientStats %+v: want 6 calls in place, none through the page cache", st)
			}

			// O_DIRECT: aligned calls go straight to the disk; a slice,
			// offset or length it would refuse goes through the file's
			// buffered descriptor, and the two stay coherent.
			dpath, ddata := patternFile(t, diskDir(t), 256<<10, 43)
			df, err := c.OpenFile(dpath, os.O_RDWR|unix.O_DIRECT, 0)
			if err != nil {
				t.Fatalf("opening %s with O_DIRECT: %v", dpath, err)
			}
			mem, err := unix.Mmap(-1, 0, 256<<10+4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(mem)
			if n, err := df.ReadAt(mem[:128<<10], 64<<10); n != 128<<10 || err != nil || !bytes.Equal(mem[:n], ddata[64<<10:192<<10]) {
				t.Fatalf("aligned O_DIRECT ReadAt = %d, %v", n, err)
			}
			if st := c.Stats(); st.InPlace != 7 || st.PageCache != 0 {
				t.Errorf("ClientStats %+v: want the aligned O_DIRECT call in place, not through the page cache", st)
			}
			for _, u := range []struct {
				name          string
				at, off, size int
			}{{"slice", 1, 4096, 64 << 10}, {"offset", 0, 4097, 64 << 10}, {"length", 0, 8192, 64<<10 + 5}} {
				p := mem[u.at : u.at+u.size]
				if n, err := df.ReadAt(p, int64(u.off)); n != u.size || err != nil || !bytes.Equal(p, ddata[u.off:u.off+u.size]) {
					t.Fatalf("O_DIRECT ReadAt with an unaligned %s = %d, %v", u.name, n, err)
				}
			}
			odd := bytes.Repeat([]byte("O_DIRECT"), 700) // 5600 bytes at 10: unaligned
			if n, err := df.WriteAt(odd, 10); n != len(odd) || err != nil {
				t.Fatalf("unaligned O_DIRECT WriteAt = %d, %v", n, err)
			}
			if n, err := df.ReadAt(mem[:8192], 0); n != 8192 || err != nil || !bytes.Equal(mem[10:10+len(odd)], odd) ||
				!bytes.Equal(mem[:10], ddata[:10]) {
				t.Fatalf("an aligned O_DIRECT read after an unaligned write = %d, %v: the write is not seen", n, err)
			}
			if st := c.Stats(); st.InPlace != 12 || st.PageCache != 4 {
				t.Errorf("ClientStats %+v: want 12 calls in place, the 4 unaligned ones through the page cache", st)
			}
			// Without the buffered descriptor (its open failed: no /proc),
			// an unaligned call says so; aligned ones go on.
			df.buffered, df.bufErr = false, errors.New("stand-in: /proc is not mounted")
			if _, err := df.ReadAt(mem[1:4097], 0); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "/proc is not mounted") {
				t.Errorf("an unaligned O_DIRECT call without the buffered descriptor: %v; want EINVAL saying why", err)
			}
			if n, err := df.ReadAt(mem[:4096], 4096); n != 4096 || err != nil {
				t.Errorf("an aligned O_DIRECT call without the buffered descriptor: %d, %v", n, err)
			}
			df.buffered = true
			if err := df.Close(); err != nil {
				t.Errorf("closing the O_DIRECT file (both registrations): %v", err)
			}

			// A call destination belongs to the Client's queue only.
			pinned := make([]byte, 4096)
			var pin runtime.Pinner
			pin.Pin(&pinned[0])
			defer pin.Unpin()
			d, ok := c.calls.acquire(uintptr(unsafe.Pointer(&pinned[0])), len(pinned))
			if !ok {
				t.Fatal("no call destination free")
			}
			defer c.calls.release(d)
			if err := c.l.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			other, err := NewQueue(QueueConfig{Capacity: 16})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.l.AddQueue(other); err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if err := c.l.Start(); err != nil {
				t.Fatal(err)
			}
			op, err := other.HostProducer()
			if err != nil {
				t.Fatal(err)
			}
			fh := f.h
			if res, err := op.Do(Request{Op: OpRead, File: fh, Dest: d, Length: 10}); err != nil || !errors.Is(res.Err(), unix.ENXIO) {
				t.Errorf("another queue naming the Client's call destination: %d (%v), %v; want -ENXIO", res, res.Err(), err)
			}
			want := append(append([]byte{}, data[:5]...), w[:5]...) // the WRITE above landed at 5
			if res, err := c.p.Do(Request{Op: OpRead, File: fh, Dest: d, Length: 10}); err != nil || res != 10 || !bytes.Equal(pinned[:10], want) {
				t.Errorf("the Client's queue naming it: %d, %v", res, err)
			}
			if res, err := c.p.Do(Request{Op: OpRead, File: fh, Dest: d, DestOffset: 4090, Length: 10}); err != nil || !errors.Is(res.Err(), unix.EFAULT) {
				t.Errorf("past the call destination's end: %d, %v; want -EFAULT", res, err)
			}
			runtime.KeepAlive(f) // its handle is used above: a File collected gives its slot back
		})
	}
}

// TestCallTable: entries are handed out once each, refused when all are
// held, and a released entry reads as not held.
func TestCallTable(t *testing.T) {
	q, err := NewQueue(QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	c := newCallTable(q)
	seen := map[DestHandle]bool{}
	for i := 0; i < callDestCount; i++ {
		d, ok := c.acquire(uintptr(4096*(i+1)), 100)
		if !ok || seen[d] || uint32(d)&callDestBit == 0 {
			t.Fatalf("entry %d: %#x, %v", i, uint32(d), ok)
		}
		seen[d] = true
	}
	if _, ok := c.acquire(1, 1); ok {
		t.Fatal("an entry beyond the table's size was handed out")
	}
	for d := range seen {
		if got, ok := c.lookup(q, uint32(d)); !ok || got.length != 100 || got.buf != sqeNoBuf {
			t.Fatalf("lookup(%#x) = %+v, %v", uint32(d), got, ok)
		}
		if _, ok := c.lookup(nil, uint32(d)); ok {
			t.Fatal("another queue looked an entry up")
		}
		c.release(d)
		if _, ok := c.lookup(q, uint32(d)); ok {
			t.Fatalf("a released entry %#x is still found", uint32(d))
		}
	}
}
