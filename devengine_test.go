package megaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The device paths end to end. The TestDevice* tests need a GPU: on a GPU
// machine they run against the real driver (and cuFile where installed);
// elsewhere TestDeviceFakeDriver runs them in child processes against the
// stand-in driver and cuFile of testdata/fakecuda, which move the bytes with
// memcpy and pread but keep the asynchrony (copies land late, on another
// thread) and check how they are called.

// fakeDriverEnv, in a child, names the directory holding the stand-ins;
// fakeCuFileEnv=absent makes cuFile unloadable (with the stand-ins or the
// real driver).
const (
	fakeDriverEnv = "MEGAIO_TEST_FAKE_DRIVER"
	fakeCuFileEnv = "MEGAIO_TEST_FAKE_CUFILE"
)

func init() {
	// Runs before TestMain: point the loaders at the stand-ins.
	if dir := os.Getenv(fakeDriverEnv); dir != "" {
		cudaLibrary = filepath.Join(dir, "libcuda.so.1")
		cufileLibrary = filepath.Join(dir, "libcufile.so.0")
	}
	// absent also works with the real driver: the GPU bundle runs the device
	// tests once without cuFile, to cover the bounce path.
	if os.Getenv(fakeCuFileEnv) == "absent" {
		cufileLibrary = "libmegaio-absent-cufile.so.0"
	}
}

// TestDeviceFakeDriver builds the stand-ins and runs the TestDevice tests
// against them three times: with cuFile (the GDS path), without it (auto
// falls back to the bounce path and says so), and with cuFile refusing
// every file and one copy failing.
func TestDeviceFakeDriver(t *testing.T) {
	if os.Getenv(fakeDriverEnv) != "" {
		t.Skip("skipping: this is the child")
	}
	all := []string{"TestDeviceReads", "TestDeviceWrites", "TestDeviceConcurrent", "TestDeviceStop",
		"TestDeviceUnregisterInFlight", "TestDeviceForcedPaths", "TestDeviceMemory", "TestDeviceZeroAllocs", "TestDeviceRandom", "TestDeviceClient", "TestDeviceClientCloseRace"}
	for _, run := range []struct {
		name  string
		env   []string
		tests []string
	}{
		{"with cuFile", nil, all},
		{"without cuFile", []string{fakeCuFileEnv + "=absent"}, all},
		{"cuFile refuses files, copies fail", []string{"FAKE_CUFILE_REFUSE_FILES=1", "FAKE_CUDA_FAIL_COPY=3",
			"FAKE_CUDA_REFUSE_COPY=7"}, []string{"TestDeviceCopyFailure"}},
		{"cuFile submissions busy and failing", []string{"FAKE_CUFILE_BUSY_SUBMITS=3", "FAKE_CUFILE_FAIL_SUBMIT=5"},
			[]string{"TestDeviceGDSFaults"}},
		{"cancelled cuFile IOs never report", []string{"FAKE_CUFILE_SILENT_CANCEL=1", "FAKE_CUFILE_HOLD_UNTIL_CANCEL=1"},
			[]string{"TestDeviceGDSSilentCancel"}},
		{"cuFile answers retry later", []string{"FAKE_CUFILE_RETRY_SUBMITS=7"},
			[]string{"TestDeviceGDSRetryLimit"}},
		{"kernel launches", nil, []string{"TestDeviceLaunchStream"}},
	} {
		t.Run(run.name, func(t *testing.T) { checkChild(t, run.tests, run.env) })
	}
}

// checkChild runs tests against the stand-ins (runWithStandIns) and fails
// unless the child passed every one of them and skipped none.
func checkChild(t *testing.T, tests, env []string) {
	t.Helper()
	out, err := runWithStandIns(t, tests, env)
	t.Logf("child output:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	for _, name := range tests {
		if !bytes.Contains(out, []byte("--- PASS: "+name+" ")) {
			t.Errorf("the child did not pass %s", name)
		}
	}
	// A skip in the child is a failure, but for io_uring's where it is
	// refused (a container's default seccomp profile): those skip here too.
	if skips := bytes.Count(out, []byte("--- SKIP")); skips > bytes.Count(out, []byte("skipping: io_uring is refused here")) {
		t.Errorf("a test skipped in the child")
	}
}

// standIns is the directory of the built stand-in driver and cuFile.
var standIns struct {
	once sync.Once
	dir  string
	err  error
}

// runWithStandIns runs tests in a child process of this test binary
// against the stand-in driver and cuFile (built once), with env added.
func runWithStandIns(t *testing.T, tests, env []string) ([]byte, error) {
	t.Helper()
	standIns.once.Do(func() {
		if _, err := exec.LookPath("gcc"); err != nil {
			standIns.err = fmt.Errorf("gcc is needed to build the stand-in driver: %v", err)
			return
		}
		if standIns.dir, standIns.err = os.MkdirTemp("", "megaio-fakecuda-"); standIns.err != nil {
			return
		}
		for lib, src := range map[string]string{"libcuda.so.1": "fake_cuda.c", "libcufile.so.0": "fake_cufile.c"} {
			out, err := exec.Command("gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o",
				filepath.Join(standIns.dir, lib), filepath.Join("testdata", "fakecuda", src), "-lpthread").CombinedOutput()
			if err != nil {
				standIns.err = fmt.Errorf("building %s: %v\n%s", lib, err, out)
				return
			}
		}
	})
	if standIns.err != nil {
		t.Fatal(standIns.err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^("+strings.Join(tests, "|")+")$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), fakeDriverEnv+"="+standIns.dir), env...)
	return cmd.CombinedOutput()
}

// devHarness is a harness with a device buffer of size bytes as
// destination devDest.
type devHarness struct {
	*harness
	g       *GPU
	db      *DeviceBuffer
	warn    *PathWarning
	devDest DestHandle
}

func newDevHarness(t testing.TB, cfg Config, size int) *devHarness {
	t.Helper()
	g := requireGPU(t)
	h := &devHarness{harness: newHarness(t, QueueConfig{Capacity: 256}, cfg, 1<<16), g: g}
	var err error
	if h.db, h.warn, err = h.l.NewDeviceBuffer(g, size); err != nil {
		t.Fatalf("NewDeviceBuffer: %v", err)
	}
	if h.devDest, err = h.l.AddDeviceDestination(h.db, 0, uint64(size)); err != nil {
		t.Fatalf("AddDeviceDestination: %v", err)
	}
	t.Logf("buffer path %v (%s); %s", h.db.Path(), h.db.PathReason(), h.l.Stats().Device.Setup)
	return h
}

// submitReads publishes n READs: request i reads length bytes at file
// offset i*each+skew(i) of files[i%len(files)] into device offset i*each.
func (h *devHarness) submitReads(files []FileHandle, n, each, length int, skew func(i int) int) []Ticket {
	h.t.Helper()
	tickets := make([]Ticket, n)
	for i := range tickets {
		var err error
		if tickets[i], err = h.p.Submit(Request{Op: OpRead, File: files[i%len(files)], Dest: h.devDest,
			FileOffset: uint64(i*each + skew(i)), DestOffset: uint64(i * each), Length: uint64(length)}); err != nil {
			h.t.Fatal(err)
		}
	}
	return tickets
}

// checkReads compares the first results[i] bytes at device offset i*each
// with the file's bytes at i*each+skew(i) (results: every request's count).
func (h *devHarness) checkReads(data []byte, each int, results []int, skew func(i int) int) {
	h.t.Helper()
	got := h.device()
	for i, n := range results {
		off := i*each + skew(i)
		if j := firstDiff(got[i*each:i*each+n], data[off:off+n]); j >= 0 {
			h.t.Fatalf("request %d (%d bytes): byte %d differs", i, n, j)
		}
	}
}

func repeatInt(v, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// fill sets the whole device buffer to v.
func (h *devHarness) fill(v byte) {
	h.t.Helper()
	if err := h.g.CopyToDevice(h.db.Pointer(), bytes.Repeat([]byte{v}, int(h.db.Size()))); err != nil {
		h.t.Fatal(err)
	}
}

// device returns the device buffer's bytes.
func (h *devHarness) device() []byte {
	h.t.Helper()
	b := make([]byte, h.db.Size())
	if err := h.g.CopyFromDevice(b, h.db.Pointer()); err != nil {
		h.t.Fatal(err)
	}
	return b
}

// checkWarning: a buffer served by the bounce path although GDS was wanted
// comes with a warning, and only then.
func (h *devHarness) checkWarning(mode DevicePath) {
	h.t.Helper()
	wantWarn := mode == DevicePathAuto && h.db.Path() == DevicePathBounce
	if (h.warn != nil) != wantWarn {
		h.t.Fatalf("mode %v, path %v: warning %v", mode, h.db.Path(), h.warn)
	}
	if h.warn != nil && !errors.Is(h.warn, ErrGDSUnavailable) && !errors.As(h.warn.Cause, new(*CuFileError)) {
		h.t.Fatalf("warning %v: its cause is neither ErrGDSUnavailable nor a cuFile error", h.warn)
	}
}

func devConfig(mode DevicePath) Config {
	return Config{Device: DeviceConfig{Path: mode, StagingChunks: 4, ChunkSize: 64 << 10, GDSMaxIO: 128 << 10,
		GDSBatchEntries: 8}}
}

func TestDeviceReads(t *testing.T) {
	for _, mode := range []DevicePath{DevicePathBounce, DevicePathAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newDevHarness(t, devConfig(mode), 2<<20)
			h.checkWarning(mode)
			const size = 1<<20 + 123
			bufPath, data := patternFile(t, tmpfsDir(t), size, 1)
			directPath, _ := patternFile(t, diskDir(t), size, 1)
			files := map[string]FileHandle{"buffered": h.register(bufPath, os.O_RDONLY),
				"O_DIRECT": h.register(directPath, os.O_RDONLY|unix.O_DIRECT)}
			for name, fh := range files {
				p, why, err := h.l.FileDevicePath(fh)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s file: %v (%s)", name, p, why)
				if p == DevicePathGDS && (name != "O_DIRECT" || h.db.Path() != DevicePathGDS || mode == DevicePathBounce) {
					t.Fatalf("%s file on GDS with buffer path %v, mode %v", name, h.db.Path(), mode)
				}
			}
			const chunk = 64 << 10
			for _, c := range []struct {
				off, n, destOff uint64
				want            int64
			}{
				{0, 1, 0, 1},
				{0, 4096, 0, 4096},
				{123, 5000, 7, 5000},
				{4095, 3*chunk + 17, 0, 3*chunk + 17},
				{8192, 8 * chunk, 4096, 8 * chunk}, // aligned: all GDS where GDS serves
				{0, size, 100, size},               // the whole file
				{size - 100, 1000, 0, 100},         // across EOF: short
				{size, 10, 0, 0},                   // at EOF
				{size + 4096, 4096, 0, 0},          // past EOF
			} {
				for name, fh := range files {
					h.fill(0xEE)
					res := h.do(Request{Op: OpRead, File: fh, Dest: h.devDest, FileOffset: c.off, DestOffset: c.destOff,
						Length: c.n})
					if int64(res) != c.want {
						t.Fatalf("%s READ [%d,+%d) -> +%d: result %d, want %d", name, c.off, c.n, c.destOff, res, c.want)
					}
					got := h.device()
					want := bytes.Repeat([]byte{0xEE}, len(got))
					if c.want > 0 {
						copy(want[c.destOff:], data[c.off:c.off+uint64(c.want)])
					}
					if i := firstDiff(got, want); i >= 0 {
						t.Fatalf("%s READ [%d,+%d) -> +%d: device byte %d is %#x, want %#x", name, c.off, c.n, c.destOff,
							i, got[i], want[i])
					}
				}
			}
			// Host destinations work beside device ones.
			if res := h.do(Request{Op: OpRead, File: files["buffered"], Dest: h.dest, Length: 4096}); res != 4096 ||
				!bytes.Equal(h.buf.Bytes()[:4096], data[:4096]) {
				t.Fatalf("host READ beside device ones: %d", res)
			}
			st := h.stopped()
			t.Logf("device stats %+v", st.Device)
			if st.Device.BounceRequests == 0 || st.Device.BounceBytes == 0 {
				t.Errorf("no request went through the bounce path: %+v", st.Device)
			}
			if h.db.Path() == DevicePathGDS {
				if st.Device.GDSRequests == 0 || st.Device.GDSBytes == 0 || st.Device.SplitRequests == 0 {
					t.Errorf("GDS serves the buffer but counted no GDS or split requests: %+v", st.Device)
				}
			} else if st.Device.GDSRequests != 0 || st.Device.GDSBytes != 0 {
				t.Errorf("bounce-only buffer counted GDS requests: %+v", st.Device)
			}
		})
	}
}

// stopped stops the loop, checks that everything went back where it
// belongs, and returns the final stats.
func (h *devHarness) stopped() Stats {
	h.t.Helper()
	if err := h.l.Stop(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	if err := h.l.exec((*cycle).checkIdle); err != nil {
		h.t.Fatal(err)
	}
	return h.l.Stats()
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return len(a)
	}
	return -1
}

func TestDeviceWrites(t *testing.T) {
	for _, mode := range []DevicePath{DevicePathBounce, DevicePathAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newDevHarness(t, devConfig(mode), 1<<20)
			src := make([]byte, 1<<20)
			for i := range src {
				src[i] = byte(i*7 + i>>11)
			}
			if err := h.g.CopyToDevice(h.db.Pointer(), src); err != nil {
				t.Fatal(err)
			}
			bufPath, old := patternFile(t, tmpfsDir(t), 300<<10, 2)
			directPath, oldDirect := patternFile(t, diskDir(t), 600<<10, 3)
			buffered := h.register(bufPath, os.O_RDWR)
			direct := h.register(directPath, os.O_RDWR|unix.O_DIRECT)
			for _, c := range []struct {
				name           string
				fh             FileHandle
				path           string
				old            []byte
				off, n, srcOff uint64
				want           int64
			}{
				{"buffered, unaligned", buffered, bufPath, old, 100, 70000, 5, 70000},
				{"buffered, past the end", buffered, bufPath, old, 290 << 10, 20 << 10, 0, 20 << 10},
				{"O_DIRECT, aligned", direct, directPath, oldDirect, 8192, 3 * 64 << 10, 4096, 3 * 64 << 10},
				{"O_DIRECT, unaligned", direct, directPath, oldDirect, 100, 4096, 0, -int64(unix.EINVAL)},
			} {
				res := h.do(Request{Op: OpWrite, File: c.fh, Dest: h.devDest, FileOffset: c.off, DestOffset: c.srcOff,
					Length: c.n})
				if int64(res) != c.want {
					t.Fatalf("%s: WRITE result %d, want %d", c.name, res, c.want)
				}
				got, err := os.ReadFile(c.path)
				if err != nil {
					t.Fatal(err)
				}
				want := append([]byte(nil), c.old...)
				if c.want > 0 {
					if end := int(c.off + c.n); end > len(want) {
						want = append(want, make([]byte, end-len(want))...)
					}
					copy(want[c.off:], src[c.srcOff:c.srcOff+c.n])
					copy(c.old, want) // later cases build on this content
				}
				if i := firstDiff(got, want); i >= 0 {
					t.Fatalf("%s: file byte %d differs (len %d, want %d)", c.name, i, len(got), len(want))
				}
				if c.want > 0 && c.fh == buffered {
					old = want
				}
			}
		})
	}
}

// TestDeviceConcurrent runs many multi-chunk requests at once through a
// staging pool far too small for them: they wait for chunks, never for
// themselves, and every byte lands where it should.
func TestDeviceConcurrent(t *testing.T) {
	for _, mode := range []DevicePath{DevicePathBounce, DevicePathAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := devConfig(mode)
			cfg.Device.MaxPiecesPerRequest = 2
			const n, each = 48, 200<<10 + 300
			h := newDevHarness(t, cfg, n*each)
			h.fill(0)
			path, data := patternFile(t, diskDir(t), n*each, 4)
			files := []FileHandle{h.register(path, os.O_RDONLY), h.register(path, os.O_RDONLY|unix.O_DIRECT)}
			skew := func(i int) int { return i % 3 }
			tickets := h.submitReads(files, n, each, each-3, skew)
			// A FENCE completes only after every device request before it.
			fence, err := h.p.Submit(Request{Op: OpFence})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.p.Wait(fence); err != nil {
				t.Fatal(err)
			}
			for i, tk := range tickets {
				res, done, err := h.p.Poll(tk)
				if err != nil || !done || res != each-3 {
					t.Fatalf("request %d when the fence completed: %d, done %v, %v", i, res, done, err)
				}
			}
			h.checkReads(data, each, repeatInt(each-3, n), skew)
			st := h.stopped()
			t.Logf("device stats %+v", st.Device)
			if st.Device.StagingWaits == 0 {
				t.Errorf("%d requests of %d bytes never waited for one of 4 chunks", n, each)
			}
		})
	}
}

// TestDeviceStop stops the loop with copies and reads in flight: without a
// deadline everything completes in full; with one, each request completes
// with its full length, a prefix, or -ECANCELED, and once Stop returns
// nothing writes into device memory any more.
func TestDeviceStop(t *testing.T) {
	for _, deadline := range []time.Duration{0, time.Millisecond} {
		t.Run(fmt.Sprint("deadline ", deadline), func(t *testing.T) {
			const n, each = 64, 256 << 10
			h := newDevHarness(t, devConfig(DevicePathAuto), n*each)
			h.fill(0)
			path, data := patternFile(t, diskDir(t), n*each, 5)
			files := []FileHandle{h.register(path, os.O_RDONLY), h.register(path, os.O_RDONLY|unix.O_DIRECT)}
			noSkew := func(int) int { return 0 }
			tickets := h.submitReads(files, n, each, each, noSkew)
			// Stop cancels what it has not claimed yet: let the loop claim
			// everything first, so the requests are in flight.
			eventually(t, "the loop to claim every request", func() bool { return h.l.Stats().Requests[OpRead] == n })
			ctx := context.Background()
			if deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, deadline)
				defer cancel()
			}
			err := h.l.Stop(ctx)
			if deadline == 0 && err != nil {
				t.Fatalf("Stop: %v", err)
			}
			after := h.device()
			full, partial, cancelled := 0, 0, 0
			results := make([]int, n)
			for i, tk := range tickets {
				res, ok, err := h.p.Poll(tk)
				if err != nil || !ok {
					t.Fatalf("request %d has no result after Stop returned", i)
				}
				switch {
				case res == each:
					full++
				case res > 0 && res < each:
					partial++
				case res == -Result(unix.ECANCELED):
					cancelled++
				default:
					t.Fatalf("request %d: result %d", i, res)
				}
				results[i] = max(0, int(res))
			}
			h.checkReads(data, each, results, noSkew)
			t.Logf("Stop(%v): %v; %d full, %d partial, %d cancelled", deadline, err, full, partial, cancelled)
			if deadline == 0 && full != n {
				t.Fatalf("Stop without deadline: %d of %d full", full, n)
			}
			time.Sleep(20 * time.Millisecond)
			if i := firstDiff(h.device(), after); i >= 0 {
				t.Fatalf("device byte %d changed after Stop returned", i)
			}
			// Every record, chunk and batch entry came back, and the loop
			// serves device requests again after a restart.
			if err := h.l.exec((*cycle).checkIdle); err != nil {
				t.Fatal(err)
			}
			if err := h.l.Start(); err != nil {
				t.Fatal(err)
			}
			h.fill(0)
			if res := h.do(Request{Op: OpRead, File: files[1], Dest: h.devDest, Length: 4 * each}); res != 4*each ||
				!bytes.Equal(h.device()[:4*each], data[:4*each]) {
				t.Fatalf("READ after restart: %d", res)
			}
		})
	}
}

// TestDeviceUnregisterInFlight unregisters the file and removes the
// destination while device requests on them are in flight: those finish
// with the right bytes, later ones fail with -EBADF and -ENXIO.
func TestDeviceUnregisterInFlight(t *testing.T) {
	const n, each = 16, 256 << 10
	h := newDevHarness(t, devConfig(DevicePathAuto), n*each)
	path, data := patternFile(t, diskDir(t), n*each, 12)
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	tickets := make([]Ticket, n)
	for i := range tickets {
		var err error
		if tickets[i], err = h.p.Submit(Request{Op: OpRead, File: fh, Dest: h.devDest, FileOffset: uint64(i*each + 512),
			DestOffset: uint64(i * each), Length: each - 512}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the loop to claim every request", func() bool { return h.l.Stats().Requests[OpRead] == n })
	if err := h.l.UnregisterFile(fh); err != nil {
		t.Fatal(err)
	}
	if err := h.l.RemoveDestination(h.devDest); err != nil {
		t.Fatal(err)
	}
	for i, tk := range tickets {
		res, err := h.p.Wait(tk)
		if err != nil || res != each-512 {
			t.Fatalf("request %d: %d, %v", i, res, err)
		}
	}
	got := h.device()
	for i := 0; i < n; i++ {
		if j := firstDiff(got[i*each:i*each+each-512], data[i*each+512:(i+1)*each]); j >= 0 {
			t.Fatalf("request %d: byte %d differs", i, j)
		}
	}
	if res := h.do(Request{Op: OpRead, File: fh, Dest: h.devDest, Length: 4096}); res != -Result(unix.EBADF) {
		t.Fatalf("READ from the unregistered file: %d, want -EBADF", res)
	}
	path2, _ := patternFile(t, diskDir(t), 4096, 13)
	fh2 := h.register(path2, os.O_RDONLY|unix.O_DIRECT) // may reuse the slot
	if res := h.do(Request{Op: OpRead, File: fh2, Dest: h.devDest, Length: 4096}); res != -Result(unix.ENXIO) {
		t.Fatalf("READ into the removed destination: %d, want -ENXIO", res)
	}
}

// TestDeviceForcedPaths: DevicePathGDS fails loudly where GDS cannot
// serve; DevicePathBounce never uses it.
func TestDeviceForcedPaths(t *testing.T) {
	g := requireGPU(t)
	gdsErr := openCuFile()
	t.Run("gds", func(t *testing.T) {
		h := newHarness(t, QueueConfig{Capacity: 64}, devConfig(DevicePathGDS), 4096)
		db, warn, err := h.l.NewDeviceBuffer(g, 1<<20)
		if gdsErr != nil {
			if !errors.Is(err, ErrGDSUnavailable) || db != nil || warn != nil {
				t.Fatalf("forced GDS without cuFile (%v): %v, %v, %v", gdsErr, db, warn, err)
			}
			t.Logf("forced GDS without cuFile: %v", err)
			return
		}
		if err != nil || warn != nil || db.Path() != DevicePathGDS {
			t.Fatalf("forced GDS: %v, %v, %v", db, warn, err)
		}
		dest, err := h.l.AddDeviceDestination(db, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		path, _ := patternFile(t, tmpfsDir(t), 8192, 6)
		fh := h.register(path, os.O_RDONLY) // no O_DIRECT: GDS cannot serve it
		if res := h.do(Request{Op: OpRead, File: fh, Dest: dest, Length: 4096}); res != -Result(unix.EOPNOTSUPP) {
			t.Fatalf("forced GDS from a buffered file: %d, want -EOPNOTSUPP", res)
		}
	})
	t.Run("bounce", func(t *testing.T) {
		h := newDevHarness(t, devConfig(DevicePathBounce), 1<<20)
		if h.db.Path() != DevicePathBounce || h.warn != nil {
			t.Fatalf("forced bounce: %v, %v", h.db.Path(), h.warn)
		}
		path, data := patternFile(t, diskDir(t), 1<<20, 7)
		fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
		if p, _, _ := h.l.FileDevicePath(fh); p != DevicePathBounce {
			t.Fatalf("forced bounce: the O_DIRECT file is on %v", p)
		}
		if res := h.do(Request{Op: OpRead, File: fh, Dest: h.devDest, Length: 1 << 20}); res != 1<<20 ||
			!bytes.Equal(h.device(), data) {
			t.Fatalf("forced bounce READ: %d", res)
		}
		if st := h.stopped(); st.Device.GDSRequests != 0 || st.Device.BounceRequests != 1 {
			t.Fatalf("forced bounce: %+v", st.Device)
		}
	})
}

// TestDeviceMemory registers memory the caller allocated, checks its range
// against the allocation, and reads into it.
func TestDeviceMemory(t *testing.T) {
	g := requireGPU(t)
	h := newHarness(t, QueueConfig{Capacity: 64}, devConfig(DevicePathAuto), 4096)
	ptr, err := g.Alloc(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Free(ptr) })
	if _, _, err := h.l.RegisterDeviceMemory(g, ptr+4096, 1<<20); !errors.Is(err, ErrConfig) {
		t.Fatalf("a range overrunning its allocation: %v, want ErrConfig", err)
	}
	if _, _, err := h.l.RegisterDeviceMemory(g, 4096, 4096); err == nil {
		t.Fatal("address 4096 registered as device memory")
	}
	db, warn, err := h.l.RegisterDeviceMemory(g, ptr+64<<10, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("caller's memory: path %v, warning %v", db.Path(), warn)
	dest, err := h.l.AddDeviceDestination(db, 0, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.l.AddDeviceDestination(db, 1, 512<<10); !errors.Is(err, ErrConfig) {
		t.Fatalf("a destination overrunning the buffer: %v", err)
	}
	path, data := patternFile(t, diskDir(t), 512<<10, 8)
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	if res := h.do(Request{Op: OpRead, File: fh, Dest: dest, DestOffset: 4096, Length: 256 << 10}); res != 256<<10 {
		t.Fatalf("READ into the caller's memory: %d", res)
	}
	if res := h.do(Request{Op: OpRead, File: fh, Dest: dest, DestOffset: 400 << 10, Length: 256 << 10}); res != -Result(unix.EFAULT) {
		t.Fatalf("READ past the destination: %d, want -EFAULT", res)
	}
	got := make([]byte, 256<<10)
	if err := g.CopyFromDevice(got, ptr+64<<10+4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[:256<<10]) {
		t.Fatal("the caller's memory holds the wrong bytes")
	}
}

// TestDeviceZeroAllocs: a device READ allocates nothing in the loop or the
// producer.
func TestDeviceZeroAllocs(t *testing.T) {
	h := newDevHarness(t, devConfig(DevicePathAuto), 1<<20)
	path, _ := patternFile(t, diskDir(t), 1<<20, 9)
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	r := Request{Op: OpRead, File: fh, Dest: h.devDest, FileOffset: 100, Length: 200 << 10}
	h.do(r) // warm up
	if a := testing.AllocsPerRun(50, func() {
		if res, err := h.p.Do(r); err != nil || res != 200<<10 {
			t.Fatalf("%d, %v", res, err)
		}
	}); a != 0 {
		t.Fatalf("%.1f allocations per device READ", a)
	}
}

// TestDeviceCopyFailure: a copy that fails (the third, on the stream) or is
// refused (the seventh, when queued: a WRITE's first step, while its
// request is being cut into pieces) completes its request with -EIO
// (DeviceErr says why) and harms no other request. Only the stand-in driver
// can make copies fail on purpose.
func TestDeviceCopyFailure(t *testing.T) {
	if os.Getenv("FAKE_CUDA_FAIL_COPY") == "" {
		t.Skip("skipping: needs the stand-in driver's fault injection (run by TestDeviceFakeDriver)")
	}
	h := newDevHarness(t, devConfig(DevicePathAuto), 1<<20)
	path, data := patternFile(t, diskDir(t), 1<<20, 10)
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	if p, why, _ := h.l.FileDevicePath(fh); p != DevicePathBounce || !strings.Contains(why, "5008") {
		t.Fatalf("cuFile refuses files here, yet the file is on %v (%s)", p, why)
	}
	var eio, ok int
	for i := 0; i < 6; i++ { // one 4 KiB copy each: the third fails
		h.fill(0)
		res := h.do(Request{Op: OpRead, File: fh, Dest: h.devDest, FileOffset: uint64(i) * 4096, Length: 4096})
		switch res {
		case -Result(unix.EIO):
			eio++
		case 4096:
			ok++
			if !bytes.Equal(h.device()[:4096], data[i*4096:(i+1)*4096]) {
				t.Fatalf("request %d: wrong bytes", i)
			}
		default:
			t.Fatalf("request %d: %d", i, res)
		}
	}
	if eio != 1 || ok != 5 || h.l.DeviceErr() == nil {
		t.Fatalf("%d -EIO, %d full, DeviceErr %v: want 1, 5 and the copy's error", eio, ok, h.l.DeviceErr())
	}
	wpath, _ := patternFile(t, tmpfsDir(t), 8192, 17)
	wf := h.register(wpath, os.O_RDWR)
	for i, want := range []Result{-Result(unix.EIO), 4096} { // copies 7 (refused) and 8
		if res := h.do(Request{Op: OpWrite, File: wf, Dest: h.devDest, FileOffset: uint64(i) * 4096, Length: 4096}); res != want {
			t.Fatalf("WRITE %d: %d, want %d", i, res, want)
		}
	}
	t.Logf("DeviceErr: %v", h.l.DeviceErr())
	if st := h.stopped(); st.Device.Errors != 2 {
		t.Fatalf("Stats.Device.Errors %d, want 2", st.Device.Errors)
	}
}

// TestDeviceGDSFaults: cuFile's "queue full" answers are retried; a
// submission it refuses fails only its own request (-EIO). The stand-in
// cuFile answers the first 3 submissions "full" and refuses the 5th.
func TestDeviceGDSFaults(t *testing.T) {
	if os.Getenv("FAKE_CUFILE_FAIL_SUBMIT") == "" {
		t.Skip("skipping: needs the stand-in cuFile's fault injection (run by TestDeviceFakeDriver)")
	}
	h := newDevHarness(t, devConfig(DevicePathGDS), 1<<20)
	// One GDS IO, one submission each.
	readChunksExpecting(t, h, 16, []Result{64 << 10, -Result(unix.EIO), 64 << 10, 64 << 10})
	var cf *CuFileError
	if !errors.As(h.l.DeviceErr(), &cf) || cf.Code != 5035 {
		t.Fatalf("DeviceErr %v, want cuFile error 5035", h.l.DeviceErr())
	}
	if st := h.stopped(); st.Device.GDSRetries != 3 || st.Device.Errors != 1 || st.Device.GDSRequests != 4 {
		t.Fatalf("stats %+v: want 3 retries, 1 error, 4 GDS requests", st.Device)
	}
}

// readChunksExpecting reads 64 KiB chunk i of a 1 MiB O_DIRECT pattern file
// (seed) into the device buffer, one request at a time, and checks its
// result against want[i] and its bytes against the file.
func readChunksExpecting(t *testing.T, h *devHarness, seed uint64, want []Result) {
	t.Helper()
	path, data := patternFile(t, diskDir(t), 1<<20, seed)
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	for i, w := range want {
		h.fill(0)
		res := h.do(Request{Op: OpRead, File: fh, Dest: h.devDest, FileOffset: uint64(i) * 64 << 10, Length: 64 << 10})
		if res != w {
			t.Fatalf("request %d: %d, want %d", i, res, w)
		}
		if res > 0 && !bytes.Equal(h.device()[:res], data[i*64<<10:][:res]) {
			t.Fatalf("request %d: wrong bytes", i)
		}
	}
}

// TestDeviceGDSRetryLimit: cuFile answering "retry later" to every
// submission costs a request -EIO after Device.GDSRetryLimit answers, not a
// stall until Stop; the next request is served once cuFile accepts again.
// The stand-in answers the first 7 submissions so; the limit is 5.
func TestDeviceGDSRetryLimit(t *testing.T) {
	if os.Getenv("FAKE_CUFILE_RETRY_SUBMITS") == "" {
		t.Skip("skipping: needs the stand-in cuFile's fault injection (run by TestDeviceFakeDriver)")
	}
	cfg := devConfig(DevicePathGDS)
	cfg.Device.GDSRetryLimit = 5
	h := newDevHarness(t, cfg, 1<<20)
	// 5 refusals, then 2 more and a submission.
	readChunksExpecting(t, h, 17, []Result{-Result(unix.EIO), 64 << 10})
	var cf *CuFileError
	if !errors.As(h.l.DeviceErr(), &cf) || cf.Code != 5040 || !strings.Contains(h.l.DeviceErr().Error(), "GDSRetryLimit") {
		t.Fatalf("DeviceErr %v, want cuFile error 5040 naming the limit", h.l.DeviceErr())
	}
	if st := h.stopped(); st.Device.GDSRetries != 7 || st.Device.GDSGiveUps != 1 || st.Device.Errors != 1 {
		t.Fatalf("stats %+v: want 7 retries, 1 give-up, 1 error", st.Device)
	}
}

// BenchmarkDevice measures READ throughput into GPU memory, 1 MiB requests
// from an O_DIRECT file at depth 8, by path: GDS, the bounce path, and
// READs into mapped host memory (what a kernel would then read across
// PCIe) for comparison. It needs a GPU; the GDS case also needs cuFile.
func BenchmarkDevice(b *testing.B) {
	const req, depth, fileSize = 1 << 20, 8, 256 << 20
	for _, c := range []struct {
		name string
		path DevicePath
	}{{"gds", DevicePathGDS}, {"bounce", DevicePathBounce}, {"mapped-host", -1}} {
		b.Run(c.name, func(b *testing.B) {
			g := requireGPU(b)
			cfg := Config{Device: DeviceConfig{Path: DevicePathBounce}}
			if c.path >= 0 {
				cfg.Device.Path = c.path
			}
			h := newHarness(b, QueueConfig{Capacity: 256}, cfg, depth*req)
			dest := h.dest
			if c.path >= 0 {
				db, _, err := h.l.NewDeviceBuffer(g, depth*req)
				if errors.Is(err, ErrGDSUnavailable) {
					b.Skipf("skipping: %v", err)
				}
				if err != nil {
					b.Fatal(err)
				}
				if dest, err = h.l.AddDeviceDestination(db, 0, depth*req); err != nil {
					b.Fatal(err)
				}
			} else if _, err := h.l.MapForGPU(g); err != nil {
				b.Fatal(err)
			}
			path, _ := patternFile(b, diskDir(b), fileSize, 11)
			fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
			var tickets [depth]Ticket
			b.SetBytes(req)
			cpu0 := h.l.CPUTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % depth
				if i >= depth {
					if res, err := h.p.Wait(tickets[k]); err != nil || res != req {
						b.Fatalf("READ: %d, %v", res, err)
					}
				}
				var err error
				tickets[k], err = h.p.Submit(Request{Op: OpRead, File: fh, Dest: dest, DestOffset: uint64(k * req),
					FileOffset: uint64(i%(fileSize/req)) * req, Length: req})
				if err != nil {
					b.Fatal(err)
				}
			}
			for i := max(0, b.N-depth); i < b.N; i++ {
				h.p.Wait(tickets[i%depth])
			}
			b.StopTimer()
			b.ReportMetric(float64((h.l.CPUTime()-cpu0).Microseconds())/float64(b.N), "loop-cpu-µs/op")
		})
	}
}

// TestDeviceGDSSilentCancel: Stop's deadline cancels GDS batches whose
// cancelled IOs never report (the stand-in cuFile's fault injection, which
// also holds every IO until it is cancelled, so none can finish before the
// deadline on any machine); the loop gives up on them after
// gdsCancelGrace, every request completes with -ECANCELED, and a fresh
// batch handle serves after a restart.
func TestDeviceGDSSilentCancel(t *testing.T) {
	if os.Getenv("FAKE_CUFILE_SILENT_CANCEL") == "" {
		t.Skip("skipping: needs the stand-in cuFile's fault injection (run by TestDeviceFakeDriver)")
	}
	const n, each = 8, 64 << 10
	h := newDevHarness(t, devConfig(DevicePathGDS), n*each)
	path, data := patternFile(t, diskDir(t), n*each, 18)
	fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
	tickets := h.submitReads([]FileHandle{fh}, n, each, each, func(int) int { return 0 })
	eventually(t, "the loop to claim every request", func() bool { return h.l.Stats().Requests[OpRead] == n })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	err := h.l.Stop(ctx)
	if errors.Is(err, ErrStopIncomplete) {
		// Stop's grace (Config.StopGrace) is shorter than the loop's patience
		// with a silent batch (gdsCancelGrace): Stop again waits for it.
		t.Logf("first Stop: %v", err)
		err = h.l.Stop(context.Background())
	}
	cancelled := 0
	for i, tk := range tickets {
		res, ok, perr := h.p.Poll(tk)
		switch {
		case perr != nil || !ok:
			t.Fatalf("request %d has no result after Stop: %v", i, perr)
		case res == -Result(unix.ECANCELED):
			cancelled++
		case res != each:
			t.Fatalf("request %d: %d", i, res)
		}
	}
	t.Logf("Stop: %v; %d of %d cancelled", err, cancelled, n)
	if cancelled != n { // the stand-in holds every IO until the first cancel
		t.Fatalf("%d of %d requests cancelled, want all", cancelled, n)
	}
	if err := h.l.exec((*cycle).checkIdle); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_CUFILE_HOLD_UNTIL_CANCEL", "0") // the stand-in runs IOs again
	if err := h.l.Start(); err != nil {
		t.Fatal(err)
	}
	h.fill(0)
	if res := h.do(Request{Op: OpRead, File: fh, Dest: h.devDest, Length: each}); res != each ||
		!bytes.Equal(h.device()[:each], data[:each]) {
		t.Fatalf("READ after restart: %d", res)
	}
}

// TestDeviceRandom drives the device paths with random requests through a
// tiny staging pool and tiny GDS batches (so pieces, waits and splits are
// the rule), with Stops at random deadlines and restarts between rounds;
// every completed byte is checked against the file.
func TestDeviceRandom(t *testing.T) { forBackends(t, testDeviceRandom) }

func testDeviceRandom(t *testing.T, be BackendKind) {
	const slots, slotSize, fileSize = 16, 96 << 10, 1<<20 + 777
	cfg := Config{Backend: be, Device: DeviceConfig{StagingChunks: 3, ChunkSize: 16 << 10, MaxPiecesPerRequest: 2,
		GDSMaxIO: 32 << 10, GDSBatches: 2, GDSBatchEntries: 4}}
	h := newDevHarness(t, cfg, slots*slotSize)
	seed := uint64(2026)
	if s := os.Getenv("MEGAIO_TEST_SEED"); s != "" { // to explore: MEGAIO_TEST_SEED=n
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	path, data := patternFile(t, diskDir(t), fileSize, 14)
	files := []FileHandle{h.register(path, os.O_RDONLY), h.register(path, os.O_RDONLY|unix.O_DIRECT)}
	wpath, _ := patternFile(t, tmpfsDir(t), slots*slotSize, 15)
	wfile := h.register(wpath, os.O_RDWR)
	wf, err := os.Open(wpath)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()

	type op struct {
		tk              Ticket
		write           bool
		off, n, destOff uint64
	}
	var inflight [slots]*op
	var done, partial, writes int
	check := func(k int, o *op, res Result, stopped bool) {
		t.Helper()
		switch {
		case res < 0 && stopped && res == -Result(unix.ECANCELED):
			return
		case res < 0:
			t.Fatalf("slot %d %+v: %d", k, *o, res)
		case !stopped && !o.write && int64(res) != int64(min(o.n, uint64(fileSize)-min(o.off, uint64(fileSize)))):
			t.Fatalf("slot %d READ %+v: %d bytes", k, *o, res)
		case !stopped && o.write && uint64(res) != o.n:
			t.Fatalf("slot %d WRITE %+v: %d bytes", k, *o, res)
		}
		if uint64(res) < o.n {
			partial++
		}
		dev := make([]byte, res)
		if res > 0 {
			if err := h.g.CopyFromDevice(dev, h.db.Pointer()+uint64(k*slotSize)+o.destOff); err != nil {
				t.Fatal(err)
			}
		}
		var want []byte
		if o.write {
			want = make([]byte, res)
			if _, err := wf.ReadAt(want, int64(o.off)); err != nil && res > 0 {
				t.Fatal(err)
			}
		} else {
			want = data[min(o.off, uint64(fileSize)):][:res]
		}
		if i := firstDiff(dev, want); i >= 0 {
			t.Fatalf("slot %d %+v (result %d): byte %d differs", k, *o, res, i)
		}
		done++
	}
	for round := 0; round < 6; round++ {
		for i := 0; i < 300; i++ {
			k := rng.IntN(slots)
			if o := inflight[k]; o != nil {
				res, err := h.p.Wait(o.tk)
				if err != nil {
					t.Fatal(err)
				}
				check(k, o, res, false)
			}
			o := &op{write: rng.IntN(5) == 0, destOff: uint64(rng.IntN(4096))}
			o.n = uint64(1 + rng.IntN(slotSize-int(o.destOff)))
			r := Request{Op: OpRead, File: files[rng.IntN(2)], Dest: h.devDest, DestOffset: uint64(k*slotSize) + o.destOff,
				Length: o.n}
			if o.write {
				// Buffered WRITEs into the slot's own file region, from
				// bytes a READ left in the slot.
				o.off = uint64(k*slotSize) + uint64(rng.IntN(slotSize-int(o.n)+1))
				r.Op, r.File, r.FileOffset = OpWrite, wfile, o.off
				writes++
			} else {
				o.off = uint64(rng.IntN(fileSize + 8192))
				r.FileOffset = o.off
			}
			if o.tk, err = h.p.Submit(r); err != nil {
				t.Fatal(err)
			}
			inflight[k] = o
		}
		// A Stop at a random deadline (0: none), then a restart.
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(3))*time.Millisecond+1)
		if round%2 == 0 {
			ctx, cancel = context.WithCancel(context.Background())
		}
		h.l.Stop(ctx)
		cancel()
		for k, o := range inflight {
			if o != nil {
				res, ok, err := h.p.Poll(o.tk)
				if err != nil || !ok {
					t.Fatalf("slot %d: no result after Stop (%v)", k, err)
				}
				check(k, o, res, true)
				inflight[k] = nil
			}
		}
		if err := h.l.Start(); err != nil {
			t.Fatal(err)
		}
	}
	st := h.stopped()
	t.Logf("%d requests checked (%d writes, %d cut short by Stop); device stats %+v", done, writes, partial, st.Device)
	if st.Device.StagingWaits == 0 || st.Device.Errors != 0 {
		t.Fatalf("want staging waits and no device errors: %+v", st.Device)
	}
}

// TestDeviceLaunchStream: Launch puts kernels on the GPU's own
// non-blocking stream, never the legacy default stream, where a persistent
// kernel would block every synchronous copy of the process. The stand-in
// driver refuses launches on the legacy stream or on a blocking stream.
func TestDeviceLaunchStream(t *testing.T) {
	if os.Getenv(fakeDriverEnv) == "" {
		t.Skip("skipping: needs the stand-in driver, which checks the launch stream (TestDeviceFakeDriver runs it); " +
			"on a GPU the TestGPU* tests launch real kernels")
	}
	g, err := OpenGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := g.LoadModule([]byte("stand-in image"))
	if err != nil {
		t.Fatal(err)
	}
	if err := mod.Launch("k", Dim3{X: 4}, Dim3{X: 128}, 0, 1, 2, 3); err != nil {
		t.Fatalf("Launch on the GPU's own stream: %v", err)
	}
	own, err := g.Stream()
	if err != nil || own == nil {
		t.Fatalf("GPU.Stream = %v, %v", own, err)
	}
	if again, _ := g.Stream(); again != own {
		t.Error("GPU.Stream made a second stream")
	}
	s, err := g.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := mod.LaunchOn(s, "k", Dim3{X: 2, Y: 2}, Dim3{X: 16, Y: 8, Z: 2}, 0, 7); err != nil {
		t.Fatalf("LaunchOn a caller's stream with 3-D shapes: %v", err)
	}
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mod.Launch("k", Dim3{X: 1}, Dim3{X: 1}, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9); !errors.Is(err, ErrConfig) {
		t.Errorf("Launch with 9 arguments = %v, want ErrConfig", err)
	}
	if err := mod.Unload(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("GPU.Close (destroys its stream): %v", err)
	}
	if _, err := g.Stream(); !errors.Is(err, ErrClosed) {
		t.Errorf("GPU.Stream after Close = %v, want ErrClosed", err)
	}
}
