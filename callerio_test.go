package megaio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClientCallerIO: with the caller's transfers on (the default), ReadAt
// and WriteAt answer as os.File does, byte for byte, at random offsets and
// sizes, past the end of the file included: on tmpfs (plain pread and
// pwrite on the caller's goroutine) and on a disk file system (RWF_NOWAIT:
// cached ranges here, the rest, evicted first, through the loop). The
// counters say which path served.
func TestClientCallerIO(t *testing.T) {
	for _, fs := range []struct {
		name string
		dir  func(testing.TB) string
	}{{"tmpfs", tmpfsDir}, {"disk", diskDir}} {
		t.Run(fs.name, func(t *testing.T) {
			c, err := NewClient(ClientConfig{TaskSize: 16 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			const size = 300<<10 + 123
			path, data := patternFile(t, fs.dir(t), size, 17)
			f, err := c.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			of, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer of.Close()
			r := rand.New(rand.NewPCG(5, 6))
			for i := 0; i < 300; i++ {
				n := r.IntN(64 << 10)
				off := r.Int64N(size + 8192)
				if i%3 == 0 && fs.name == "disk" {
					// Evicted: RWF_NOWAIT answers EAGAIN, the loop reads it.
					unix.Fadvise(int(of.Fd()), 0, 0, unix.FADV_DONTNEED)
				}
				got, want := make([]byte, n), make([]byte, n)
				gn, gerr := f.ReadAt(got, off)
				wn, werr := of.ReadAt(want, off)
				if gn != wn || (gerr == nil) != (werr == nil) || (werr == io.EOF) != errors.Is(gerr, io.EOF) ||
					!bytes.Equal(got[:gn], want[:wn]) {
					t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; os.File: %d, %v (bytes equal %v)", n, off, gn, gerr, wn,
						werr, bytes.Equal(got[:min(gn, n)], want[:min(wn, n)]))
				}
			}
			// Writes, then every byte read back by os.File.
			for i := 0; i < 50; i++ {
				n, off := 1+r.IntN(32<<10), r.Int64N(size)
				p := make([]byte, n)
				for k := range p {
					p[k] = byte(r.Uint32())
				}
				if m, err := f.WriteAt(p, off); m != n || err != nil {
					t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", n, off, m, err)
				}
				if int(off)+n > len(data) {
					data = append(data, make([]byte, int(off)+n-len(data))...)
				}
				copy(data[off:], p)
			}
			if back, err := os.ReadFile(path); err != nil || !bytes.Equal(back, data) {
				t.Fatalf("the file after the writes differs from what was written (%v)", err)
			}
			st := c.Stats()
			t.Logf("%+v; the loop claimed %d READs and %d WRITEs", st, c.Loop().Stats().Requests[OpRead],
				c.Loop().Stats().Requests[OpWrite])
			if fs.name == "tmpfs" && TmpfsInline() && (st.CallerIO == 0 || c.Loop().Stats().Requests[OpRead] != 0) {
				t.Errorf("tmpfs: %d calls on the caller's goroutine, %d READs through the loop; want all of them "+
					"on the caller's", st.CallerIO, c.Loop().Stats().Requests[OpRead])
			}
			if fs.name == "disk" && c.Loop().Stats().Requests[OpRead] == 0 {
				t.Errorf("disk: no READ reached the loop, though a third of the calls read evicted ranges")
			}
		})
	}
}

// TestClientEdges: the Client's File answers as os.File does at its edges:
// WriteAt on O_APPEND, negative offsets, closed files and clients (zero
// lengths included), Stat().Sys(), Sync, Fd; nil arguments are errors.
func TestClientEdges(t *testing.T) {
	c, err := NewClient(ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	dir := tmpfsDir(t)
	path, _ := patternFile(t, dir, 8192, 3)

	af, err := c.OpenFile(dir+"/append", os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if n, err := af.WriteAt([]byte("abcd"), 0); n != 0 || !errors.Is(err, ErrAppendWriteAt) {
			t.Errorf("WriteAt on O_APPEND = %d, %v; want 0 and ErrAppendWriteAt", n, err)
		}
	}
	if fi, err := os.Stat(dir + "/append"); err != nil || fi.Size() != 0 {
		t.Errorf("the O_APPEND file after refused WriteAts: %v, %v; want it empty", fi, err)
	}
	af.Close()

	f, err := c.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{nil, make([]byte, 10)} {
		if n, err := f.ReadAt(p, -1); n != 0 || err == nil || !strings.Contains(err.Error(), "negative offset") {
			t.Errorf("ReadAt(%d bytes, -1) = %d, %v; want os.File's negative offset", len(p), n, err)
		}
		if n, err := f.WriteAt(p, -1); n != 0 || err == nil || !strings.Contains(err.Error(), "negative offset") {
			t.Errorf("WriteAt(%d bytes, -1) = %d, %v; want os.File's negative offset", len(p), n, err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Size != 8192 {
		t.Errorf("Stat().Sys() = %T (%v), want a *syscall.Stat_t of the file", fi.Sys(), ok)
	}
	if f.Fd() == 0 || f.Fd() == ^uintptr(0) {
		t.Errorf("Fd() = %d", f.Fd())
	}
	if _, err := f.WriteAt([]byte("synced"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("Sync = %v", err)
	}
	if c.Loop().Stats().Requests[OpFsync] != 1 {
		t.Errorf("Sync: %d FSYNCs through the loop, want 1", c.Loop().Stats().Requests[OpFsync])
	}
	if _, _, err := c.NewDeviceBuffer(nil, 4096); !errors.Is(err, ErrConfig) {
		t.Errorf("NewDeviceBuffer(nil GPU) = %v, want ErrConfig", err)
	}
	if _, err := f.ReadToDevice(nil, 0, 10, 0).Wait(context.Background()); !errors.Is(err, ErrConfig) {
		t.Errorf("ReadToDevice(nil buffer) = %v, want ErrConfig", err)
	}
	f.Close()
	for _, p := range [][]byte{nil, make([]byte, 10)} {
		if _, err := f.ReadAt(p, 0); !errors.Is(err, os.ErrClosed) {
			t.Errorf("ReadAt(%d bytes) after File.Close = %v, want os.ErrClosed", len(p), err)
		}
	}
	if err := f.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Sync after File.Close = %v, want os.ErrClosed", err)
	}

	g, err := c.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{nil, make([]byte, 10)} {
		if _, err := g.ReadAt(p, 0); !errors.Is(err, ErrClosed) {
			t.Errorf("ReadAt(%d bytes) after Client.Close = %v, want ErrClosed", len(p), err)
		}
	}
}

// TestClientIDsBackpressure: a ReadAt or WriteAt whose pieces outnumber the
// completion ids waits for ids (collecting its own pieces as it goes)
// rather than failing part-way: one call of 256 pieces over 32 ids, and 8
// such calls at once, every byte checked; a context still bounds the wait.
func TestClientIDsBackpressure(t *testing.T) {
	c, err := NewClient(ClientConfig{Queue: QueueConfig{Capacity: 64, Completions: 32}, TaskSize: 4096,
		NoCallerIO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	const size = 1 << 20
	path, data := patternFile(t, tmpfsDir(t), size, 23)
	f, err := c.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, size)
	if n, err := f.ReadAt(p, 0); n != size || err != nil || !bytes.Equal(p, data) {
		t.Fatalf("ReadAt of 256 pieces over 32 ids = %d, %v (bytes equal %v)", n, err, bytes.Equal(p, data))
	}
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			q := make([]byte, size)
			n, err := f.ReadAt(q, 0)
			if err == nil && (n != size || !bytes.Equal(q, data)) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	for g := 0; g < 8; g++ {
		if err := await(t, "8 concurrent ReadAts over 32 ids", errs, loopMeters(c.Loop())...); err != nil {
			t.Errorf("concurrent ReadAt: %v", err)
		}
	}
	w := bytes.Repeat([]byte{0x5a}, size)
	if n, err := f.WriteAt(w, 0); n != size || err != nil {
		t.Fatalf("WriteAt of 256 pieces over 32 ids = %d, %v", n, err)
	}
	if back, err := os.ReadFile(path); err != nil || !bytes.Equal(back, w) {
		t.Fatalf("the file after the WriteAt is not what was written (%v)", err)
	}
	// Async calls cannot wait: holding every id in futures not yet waited
	// for, the next Async says ErrBusy.
	buf, err := c.NewBuffer(size)
	if err != nil {
		t.Fatal(err)
	}
	fu := f.ReadAtAsync(buf.Bytes(), 0) // 256 pieces: it takes every id, and its 33rd piece finds none
	if _, err := fu.Wait(context.Background()); !errors.Is(err, ErrBusy) {
		t.Errorf("an Async call of more pieces than ids = %v, want ErrBusy", err)
	}
}

// TestClientTables: a Client has room for many files (100 O_DIRECT files,
// two slots each, past the loop's default 64), and a File dropped without
// Close gives its slots back once collected, as an os.File gives back its
// descriptor: 40 files opened and dropped one after another through a
// table of 8 slots.
func TestClientTables(t *testing.T) {
	c := newTestClient(t, BackendIOUring)
	path, _ := patternFile(t, diskDir(t), 8192, 29)
	var files []*File
	for i := 0; i < 100; i++ {
		f, err := c.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			t.Fatalf("O_DIRECT file %d: %v", i+1, err)
		}
		files = append(files, f)
	}
	for _, f := range files {
		f.Close()
	}

	small, err := NewClient(ClientConfig{Loop: Config{MaxFiles: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close(context.Background())
	for i := 0; i < 40; i++ {
		var f *File
		eventually(t, "a dropped File's slot to come back", func() bool {
			runtime.GC()
			var err error
			if f, err = small.OpenFile(path, os.O_RDONLY, 0); err != nil && !errors.Is(err, ErrTableFull) {
				t.Fatal(err)
			}
			return err == nil
		})
		p := make([]byte, 16)
		if n, err := f.ReadAt(p, 0); n != 16 || err != nil {
			t.Fatalf("file %d: ReadAt = %d, %v", i, n, err)
		}
		f = nil // dropped without Close
	}
}

// TestCheckCuFileQuiet: CheckCuFile called from a program prints nothing
// and writes no cufile.log into the working directory (cuFile, asked to
// open without a CUDA device, does both).
func TestCheckCuFileQuiet(t *testing.T) {
	if os.Getenv("MEGAIO_TEST_CHECKCUFILE_CHILD") != "" {
		err := CheckCuFile()
		if !errors.Is(err, ErrGDSUnavailable) && err != nil {
			t.Fatalf("CheckCuFile = %v", err)
		}
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCheckCuFileQuiet$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MEGAIO_TEST_CHECKCUFILE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(out)), "PASS")); got != "" {
		t.Errorf("CheckCuFile printed %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("CheckCuFile left %v in the working directory", entries[0].Name())
	}
}

// TestFreeBuffer: a buffer is given back once nothing uses it: Loop refuses
// while a destination of it remains or a request in flight uses it, then
// frees it; its slot serves the next NewBuffer. The Client's FreeBuffer
// removes its destination itself; 40 buffers through a table of 4.
func TestFreeBuffer(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 64}, Config{MaxBuffers: 4}, 4096)
	fh, w := h.pipe()
	tk, err := h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 5})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the READ in flight", func() bool { return h.l.Stats().Requests[OpRead] == 1 }, loopMeters(h.l)...)
	if err := h.l.FreeBuffer(h.buf); !errors.Is(err, ErrInUse) {
		t.Errorf("FreeBuffer with a READ in flight = %v, want ErrInUse", err)
	}
	w.Write([]byte("hello"))
	if res, err := h.p.Wait(tk); res != 5 || err != nil {
		t.Fatalf("the READ: %d, %v", res, err)
	}
	if err := h.l.FreeBuffer(h.buf); !errors.Is(err, ErrInUse) {
		t.Errorf("FreeBuffer with its destination in place = %v, want ErrInUse", err)
	}
	if err := h.l.RemoveDestination(h.dest); err != nil {
		t.Fatal(err)
	}
	if err := h.l.FreeBuffer(h.buf); err != nil || h.buf.Bytes() != nil {
		t.Fatalf("FreeBuffer = %v (Bytes %d); want it freed", err, len(h.buf.Bytes()))
	}
	if err := h.l.FreeBuffer(h.buf); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("a second FreeBuffer = %v, want ErrNotRegistered", err)
	}
	if err := h.l.FreeBuffer(nil); !errors.Is(err, ErrConfig) {
		t.Errorf("FreeBuffer(nil) = %v, want ErrConfig", err)
	}

	c, err := NewClient(ClientConfig{Loop: Config{MaxBuffers: 4}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	path, data := patternFile(t, tmpfsDir(t), 64<<10, 31)
	f, err := c.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 40; i++ {
		b, err := c.NewBuffer(64 << 10)
		if err != nil {
			t.Fatalf("buffer %d: %v", i, err)
		}
		if n, err := f.ReadAtAsync(b.Bytes(), 0).Wait(context.Background()); n != len(data) || err != nil ||
			!bytes.Equal(b.Bytes(), data) {
			t.Fatalf("buffer %d: ReadAtAsync = %d, %v", i, n, err)
		}
		if err := c.FreeBuffer(b); err != nil {
			t.Fatalf("buffer %d: FreeBuffer = %v", i, err)
		}
	}
	if err := c.FreeBuffer(&Buffer{}); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Client.FreeBuffer of a stranger = %v, want ErrNotRegistered", err)
	}
}
