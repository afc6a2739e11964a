package megaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/megaio/megaio/cpukernel"
	"golang.org/x/sys/unix"
)

// The kernels of csrc/gpu/megakernel.cu run through one set of test bodies
// and two launchers: a GPU (TestGPUX, gpuLauncher) and CPU threads
// (TestCPUX, cpuLauncher: the same source built by g++ against
// include/megaio_cpu.h). Each TestGPUX has a twin TestCPUX with the same
// assertions; the twins run on every machine with a C++ compiler and
// libcu++ (CI installs both), and the GPU bundle runs the GPU side.
//
// How the CPU twins run is set by the environment (build.sh runs them each
// way):
//
//	MEGAIO_CPU_ACTIVEMASK=caller  __activemask() names only the calling lane
//	MEGAIO_CPU_CAPACITY=N         the queues' ring has N slots (default 1024)
//	-tags megaio_tsan             kernels built with -fsanitize=thread, the
//	                              test binary linked with ThreadSanitizer
//	MEGAIO_REQUIRE_CPU_KERNELS=1  a missing compiler or libcu++ fails the
//	                              twins instead of skipping them

// launcher runs the test kernels somewhere.
type launcher interface {
	// harness is a started loop whose queue and buffers the kernels can
	// reach, with a producer side for them at side.
	harness(t *testing.T, cfg Config, bufSize int) (h *harness, queue, side uint64)
	// addr is where the kernels see buffer b of h's loop.
	addr(t *testing.T, h *harness, b *Buffer) uint64
	// alloc is n zeroed bytes of the kernels' own memory ("device memory").
	alloc(t *testing.T, n int) uint64
	// read copies n bytes out of the kernels' memory at p.
	read(t *testing.T, p uint64, n int) []byte
	// run starts kernel and returns a function that waits for its end,
	// failing the test with the kernel's name when nothing moved for
	// stallLimit (no request of h's loop claimed or completed, no thread
	// returned).
	run(t *testing.T, h *harness, kernel string, grid, block Dim3, args ...uint64) (wait func())
	// threads is how many threads a block of n threads on a GPU has here:
	// n, or fewer (never under 2 warps) where each thread costs much more
	// (ThreadSanitizer on CPU threads).
	threads(n int) int
}

// ---- the GPU ----

type gpuLauncher struct {
	g   *GPU
	mod *Module
	m   GPUMapping
}

func newGPULauncher(t *testing.T) *gpuLauncher {
	g := requireGPU(t)
	return &gpuLauncher{g: g, mod: loadKernels(t, g)}
}

func (L *gpuLauncher) harness(t *testing.T, cfg Config, bufSize int) (*harness, uint64, uint64) {
	h := newHarness(t, QueueConfig{Capacity: 1024}, cfg, bufSize)
	var err error
	if L.m, err = h.l.MapForGPU(L.g); err != nil {
		t.Fatalf("MapForGPU: %v", err)
	}
	img := h.q.DeviceProducerSide()
	side := L.alloc(t, len(img))
	if err := L.g.CopyToDevice(side, img); err != nil {
		t.Fatal(err)
	}
	return h, L.m.Queue, side
}

func (L *gpuLauncher) addr(t *testing.T, h *harness, b *Buffer) uint64 {
	p := L.m.Buffers[b.Index()]
	if p == 0 {
		t.Fatalf("buffer %d is not mapped for the GPU", b.Index())
	}
	return p
}

func (L *gpuLauncher) threads(n int) int { return n }

func (L *gpuLauncher) alloc(t *testing.T, n int) uint64 {
	p, err := L.g.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { L.g.Free(p) })
	if err := L.g.CopyToDevice(p, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	return p
}

func (L *gpuLauncher) read(t *testing.T, p uint64, n int) []byte {
	b := make([]byte, n)
	if err := L.g.CopyFromDevice(b, p); err != nil {
		t.Fatal(err)
	}
	return b
}

func (L *gpuLauncher) run(t *testing.T, h *harness, kernel string, grid, block Dim3, args ...uint64) func() {
	stream, err := L.g.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := L.mod.LaunchOn(stream, kernel, grid, block, 0, args...); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- stream.Synchronize() }()
	return func() {
		t.Helper()
		ctx, cancel := stallContext(context.Background(), "kernel "+kernel, loopMeters(h.l)...)
		defer cancel()
		select {
		case err := <-done:
			stream.Close()
			if err != nil {
				t.Fatalf("kernel %s: %v", kernel, err)
			}
		case <-ctx.Done():
			h.keepMapped = true // the kernel still runs: nothing it uses may be unmapped
			t.Fatal(context.Cause(ctx))
		}
	}
}

// ---- CPU threads ----

type cpuLauncher struct {
	mod  *cpukernel.Module
	mode cpukernel.ActiveMask
	mu   sync.Mutex
	mem  map[uint64][]byte // alloc's mappings, by address
}

// cpuKernels are the .cu files built for the CPU launcher, each once per
// test binary, in dir.
var cpuKernels struct {
	once sync.Once
	dir  string
	skip string // why the twins cannot run here
	err  error
	mu   sync.Mutex
	mods map[string]*cpukernel.Module
}

// cpuCompiler is the C++ compiler the kernels are built with: $MEGAIO_CXX,
// else g++.
func cpuCompiler() string {
	if c := os.Getenv("MEGAIO_CXX"); c != "" {
		return c
	}
	return "g++"
}

// buildCPUModule compiles src (a .cu file of kernels) into a library for
// the CPU launcher in dir, with ThreadSanitizer when the test binary has it.
func buildCPUModule(dir, src string) (string, error) {
	inc := cpukernel.LibcuxxInclude()
	out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".cu")+".so")
	args := []string{"-std=c++17", "-O2", "-g", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra", "-Werror",
		"-x", "c++", "-Iinclude", "-I" + inc, src, "-o", out}
	if cpuTSan {
		args = append([]string{"-fsanitize=thread"}, args...)
	}
	if b, err := exec.Command(cpuCompiler(), args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", cpuCompiler(), strings.Join(args, " "), err, b)
	}
	return out, nil
}

// loadCPUModule builds src (a .cu file, relative to the package) for CPU
// threads and loads it, once per test binary; it skips, saying why, where
// there is no C++ compiler or libcu++ (and fails instead under
// MEGAIO_REQUIRE_CPU_KERNELS).
func loadCPUModule(t *testing.T, src string) *cpukernel.Module {
	t.Helper()
	requireCPUToolchain(t)
	cpuKernels.mu.Lock()
	defer cpuKernels.mu.Unlock()
	if m := cpuKernels.mods[src]; m != nil {
		return m
	}
	lib, err := buildCPUModule(cpuKernels.dir, src)
	if err != nil {
		t.Fatalf("building %s for CPU threads: %v", src, err)
	}
	m, err := cpukernel.Load(lib)
	if err != nil {
		t.Fatal(err)
	}
	if cpuKernels.mods == nil {
		cpuKernels.mods = map[string]*cpukernel.Module{}
	}
	cpuKernels.mods[src] = m
	return m
}

// requireCPUToolchain skips the test, saying why, where kernels cannot be
// built for CPU threads (no C++ compiler, no libcu++), or fails it under
// MEGAIO_REQUIRE_CPU_KERNELS.
func requireCPUToolchain(t *testing.T) {
	t.Helper()
	cpuKernels.once.Do(func() {
		if _, err := exec.LookPath(cpuCompiler()); err != nil {
			cpuKernels.skip = fmt.Sprintf("no C++ compiler (%s: %v); install g++", cpuCompiler(), err)
			return
		}
		if cpukernel.LibcuxxInclude() == "" {
			cpuKernels.skip = "no libcu++ (cuda/atomic) under $MEGAIO_LIBCUXX, $CUDA_HOME, /usr/local/cuda or /usr: " +
				"scripts/install-cuda-toolkit.sh installs it"
			return
		}
		cpuKernels.dir, cpuKernels.err = os.MkdirTemp("", "megaio-cpu-kernels-")
	})
	if cpuKernels.skip != "" {
		if os.Getenv("MEGAIO_REQUIRE_CPU_KERNELS") != "" {
			t.Fatalf("the CPU twins cannot run: %s", cpuKernels.skip)
		}
		t.Skipf("skipping: %s", cpuKernels.skip)
	}
	if cpuKernels.err != nil {
		t.Fatal(cpuKernels.err)
	}
}

func newCPULauncher(t *testing.T) *cpuLauncher {
	t.Helper()
	L := &cpuLauncher{mod: loadCPUModule(t, filepath.Join("csrc", "gpu", "megakernel.cu")), mem: map[uint64][]byte{}}
	if os.Getenv("MEGAIO_CPU_ACTIVEMASK") == "caller" {
		L.mode = cpukernel.ActiveMaskCaller
	}
	t.Logf("CPU launcher: __activemask() %v, ring of %d slots, ThreadSanitizer %v", L.mode, cpuCapacity(t), cpuTSan)
	return L
}

// cpuCapacity is the CPU twins' ring size: MEGAIO_CPU_CAPACITY, else 1024.
func cpuCapacity(t *testing.T) int {
	if s := os.Getenv("MEGAIO_CPU_CAPACITY"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("MEGAIO_CPU_CAPACITY=%q: %v", s, err)
		}
		return n
	}
	return 1024
}

// hostAddr is the address of b's first byte.
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

func (L *cpuLauncher) harness(t *testing.T, cfg Config, bufSize int) (*harness, uint64, uint64) {
	h := newHarness(t, QueueConfig{Capacity: uint32(cpuCapacity(t))}, cfg, bufSize)
	img := h.q.DeviceProducerSide()
	side := L.alloc(t, len(img))
	copy(L.mem[side], img)
	return h, hostAddr(h.q.Memory()), side
}

func (L *cpuLauncher) addr(t *testing.T, h *harness, b *Buffer) uint64 { return hostAddr(b.Bytes()) }

// threads: under ThreadSanitizer a CPU thread costs about 40 times as much
// to start and to wake, so blocks are a quarter the size (still several
// warps, barriers and short warps alike).
func (L *cpuLauncher) threads(n int) int {
	if cpuTSan && n >= 256 {
		return n / 4
	}
	return n
}

// alloc maps n bytes outside the Go heap: the kernel's threads keep the
// address. They are unmapped at the end of the test unless a kernel did
// not end (run's wait then marks them kept).
func (L *cpuLauncher) alloc(t *testing.T, n int) uint64 {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	p := hostAddr(b)
	L.mu.Lock()
	L.mem[p] = b
	L.mu.Unlock()
	t.Cleanup(func() {
		L.mu.Lock()
		defer L.mu.Unlock()
		if b, ok := L.mem[p]; ok {
			unix.Munmap(b)
			delete(L.mem, p)
		}
	})
	return p
}

func (L *cpuLauncher) read(t *testing.T, p uint64, n int) []byte {
	L.mu.Lock()
	defer L.mu.Unlock()
	return bytes.Clone(L.mem[p][:n])
}

func (L *cpuLauncher) run(t *testing.T, h *harness, kernel string, grid, block Dim3, args ...uint64) func() {
	launch, err := L.mod.Launch(kernel, cpukernel.Dim3(grid), cpukernel.Dim3(block), cpukernel.LaunchOptions{ActiveMask: L.mode}, args...)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		ctx, cancel := stallContext(context.Background(), "kernel "+kernel,
			append(loopMeters(h.l), launchMeters(launch)...)...)
		defer cancel()
		err := launch.Wait(ctx, 10*time.Second)
		if err != nil && !launch.Ended() {
			// Threads still run: keep every byte they may touch.
			h.keepMapped = true
			L.mu.Lock()
			L.mem = map[uint64][]byte{}
			L.mu.Unlock()
		}
		if err != nil {
			t.Fatalf("kernel %s: %v", kernel, err)
		}
	}
}

// ---- the bodies ----

// testChecksum: a persistent kernel reads files through the queue into
// mapped memory and checksums them; the sum equals the host's, every chunk
// (and the one past EOF, which must read 0 bytes) is one READ. A block of
// 48 threads has a short warp, which the reduction must handle.
func testChecksum(t *testing.T, L launcher) {
	const chunk, blocks = 64 << 10, 8
	for _, c := range []struct{ size, threads int }{{1, 256}, {4096, 256}, {3*chunk + 123, 256}, {5 << 20, 256},
		{3*chunk + 123, 48}} {
		h, queue, side := L.harness(t, Config{}, 2*blocks*chunk)
		path, data := patternFile(t, tmpfsDir(t), c.size, uint64(c.size))
		fh := h.register(path, os.O_RDONLY)
		runChecksum(t, L, h, queue, side, L.addr(t, h, h.buf), fh, h.dest, data, chunk, blocks, L.threads(c.threads))
		stopLoop(t, h.l)
		if got, want := h.l.Stats().Requests[OpRead], uint64((c.size+chunk-1)/chunk+1); got != want {
			t.Errorf("size %d: %d READs, want one per chunk and one past EOF: %d", c.size, got, want)
		}
	}
}

// runChecksum runs the megaio_checksum kernel over file fh (holding data)
// with its chunks landing at buf (destination dest) and checks its sum.
func runChecksum(t *testing.T, L launcher, h *harness, queue, side, buf uint64, fh FileHandle, dest DestHandle,
	data []byte, chunk, blocks, threads int) {
	t.Helper()
	out := L.alloc(t, 16)
	start := time.Now()
	size := len(data)
	L.run(t, h, "megaio_checksum", Dim3{X: blocks}, Dim3{X: threads}, queue, side, buf, uint64(fh)<<32|uint64(dest),
		uint64(size), uint64(chunk), out, out+8)()
	elapsed := time.Since(start)
	res := L.read(t, out, 16)
	sum, errs := leUint64(res[:8]), leUint64(res[8:])
	if want := weightedSum(data); sum != want || errs != 0 {
		t.Errorf("size %d, %d threads a block: kernel checksum %#x with %d bad results, host checksum %#x", size,
			threads, sum, errs, want)
	}
	t.Logf("size %d, %d x %d threads: %d chunks in %v (%.1f MB/s), sum %#x", size, blocks, threads,
		(size+chunk-1)/chunk+1, elapsed, float64(size)/elapsed.Seconds()/1e6, sum)
}

// testDeviceChecksum is testChecksum with the chunks landing in device
// memory of g: the kernel publishes READs into a device destination and
// reads what the bounce path's copies or GDS put there.
func testDeviceChecksum(t *testing.T, L launcher, g *GPU) {
	const chunk, blocks = 64 << 10, 8
	for _, mode := range []DevicePath{DevicePathBounce, DevicePathAuto} {
		for _, size := range []int{4096, 3*chunk + 123, 5 << 20} {
			h, queue, side := L.harness(t, Config{Device: DeviceConfig{Path: mode}}, 4096)
			db, warn, err := h.l.NewDeviceBuffer(g, 2*blocks*chunk)
			if err != nil {
				t.Fatal(err)
			}
			dest, err := h.l.AddDeviceDestination(db, 0, 2*blocks*chunk)
			if err != nil {
				t.Fatal(err)
			}
			path, data := patternFile(t, diskDir(t), size, uint64(size)+1)
			fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
			t.Logf("%v: buffer on %v (warning %v)", mode, db.Path(), warn)
			runChecksum(t, L, h, queue, side, db.Pointer(), fh, dest, data, chunk, blocks, L.threads(256))
			stopLoop(t, h.l)
			st := h.l.Stats().Device
			if st.GDSRequests+st.BounceRequests != uint64((size+chunk-1)/chunk+1) {
				t.Errorf("%v, size %d: %d GDS and %d bounce requests, want one per chunk and one past EOF", mode, size,
					st.GDSRequests, st.BounceRequests)
			}
			t.Logf("device stats %+v", st)
		}
	}
}

// testPingPong times kernel -> host -> kernel NOP round trips from one
// thread and logs their percentiles.
func testPingPong(t *testing.T, L launcher, n int) {
	h, queue, side := L.harness(t, Config{}, 4096)
	times := L.alloc(t, 8*n)
	L.run(t, h, "megaio_pingpong", Dim3{X: 1}, Dim3{X: 1}, queue, side, uint64(n), times)()
	raw := L.read(t, times, 8*n)
	lat := make([]int64, n)
	for i := range lat {
		if lat[i] = int64(leUint64(raw[8*i:])); lat[i] < 0 {
			t.Fatalf("round trip %d failed with %d", i, lat[i])
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return time.Duration(lat[int(p/100*float64(n-1))]) }
	t.Logf("kernel->host->kernel NOP round trip over %d: p50 %v p90 %v p99 %v p99.9 %v max %v", n, pct(50), pct(90),
		pct(99), pct(99.9), pct(100))
	if err := stopLoop(t, h.l); err != nil {
		t.Fatal(err)
	}
	if got := h.l.Stats().Requests[OpNop]; got != uint64(n) {
		t.Errorf("%d NOPs served, want %d", got, n)
	}
}

// testWarp2D: megaio_warp_request publishes exactly one READ per warp and
// every thread of the warp gets its result. 16 x 8 blocks: each warp spans
// two rows, so threadIdx.x % 32 is not its lane; 12 x 4 blocks: 48
// threads, the second warp short.
func testWarp2D(t *testing.T, L launcher) {
	const chunk, blocks = 4096, 3
	for _, block := range []Dim3{{X: 16, Y: 8}, {X: 12, Y: 4}} {
		perBlock := block.X * block.Y
		warps := blocks * ((perBlock + 31) / 32)
		h, queue, side := L.harness(t, Config{}, warps*chunk)
		path, data := patternFile(t, tmpfsDir(t), warps*chunk, 77)
		fh := h.register(path, os.O_RDONLY)
		results := L.alloc(t, 8*blocks*perBlock)
		L.run(t, h, "megaio_warp2d", Dim3{X: blocks}, block, queue, side, uint64(fh)<<32|uint64(h.dest), chunk,
			results)()
		raw := L.read(t, results, 8*blocks*perBlock)
		for i := 0; i < blocks*perBlock; i++ {
			if r := int64(leUint64(raw[8*i:])); r != chunk {
				t.Fatalf("block %v: thread %d (block %d, x %d, y %d): result %d, want %d", block, i, i/perBlock,
					i%perBlock%block.X, i%perBlock/block.X, r, chunk)
			}
		}
		if !bytes.Equal(h.buf.Bytes()[:warps*chunk], data) {
			t.Errorf("block %v: the chunks did not land where the warps asked", block)
		}
		stopLoop(t, h.l)
		if n := h.l.Stats().Requests[OpRead]; n != uint64(warps) {
			t.Errorf("block %v: %d READs for %d warps: want one per warp", block, n, warps)
		}
	}
}

// testStopRestart: 256 threads send NOPs one at a time while the host
// stops and restarts the loop, at least 30 times. Every NOP is answered
// exactly once, with 0 (served) or -ECANCELED (claimed after Stop began:
// the final sweep), the counts agree with the loop's own, the kernel ends
// (no ticket is lost across a stop), and no -ESHUTDOWN answer is given for
// a ticket the loop had served (megaio_dev_wait reads state and claim_head
// with acquire and re-checks done, as megaio_host_poll does). The kernel
// tells a false -ESHUTDOWN by a stop epoch the host keeps in the loop's
// mapped buffer: odd from Stop's return until just before Start.
func testStopRestart(t *testing.T, L launcher, rounds int) {
	const minStops = 30
	threads := L.threads(256)
	h, queue, side := L.harness(t, Config{}, 4096)
	counts := L.alloc(t, 40)
	epoch := (*uint64)(unsafe.Pointer(&h.buf.Bytes()[0]))
	wait := L.run(t, h, "megaio_stop_restart", Dim3{X: 4}, Dim3{X: threads / 4}, queue, side, uint64(rounds), counts,
		L.addr(t, h, h.buf))
	stops := 0
	for ; stops < minStops; stops++ {
		time.Sleep(3 * time.Millisecond)
		if err := h.l.Stop(context.Background()); err != nil {
			t.Fatalf("Stop %d: %v", stops, err)
		}
		atomic.StoreUint64(epoch, uint64(2*stops+1)) // stopped
		time.Sleep(time.Millisecond)
		atomic.StoreUint64(epoch, uint64(2*stops+2)) // about to start
		if err := h.l.Start(); err != nil {
			t.Fatalf("Start %d: %v", stops, err)
		}
	}
	wait()
	raw := L.read(t, counts, 40)
	shutdowns, falseShutdowns, bad, ok, cancelled := leUint64(raw), leUint64(raw[8:]), leUint64(raw[16:]),
		leUint64(raw[24:]), leUint64(raw[32:])
	t.Logf("%d stops, %d NOPs: %d answered 0, %d -ECANCELED, %d -ESHUTDOWN answers (%d false), %d other results",
		stops, threads*rounds, ok, cancelled, shutdowns, falseShutdowns, bad)
	if falseShutdowns != 0 || bad != 0 {
		t.Errorf("%d -ESHUTDOWN answers for served tickets, %d NOPs with a result neither 0 nor -ECANCELED",
			falseShutdowns, bad)
	}
	if ok+cancelled != uint64(threads*rounds) {
		t.Errorf("%d + %d NOPs answered, want %d", ok, cancelled, threads*rounds)
	}
	if shutdowns+cancelled == 0 {
		t.Error("no NOP saw a stop (neither -ESHUTDOWN nor -ECANCELED): the test did not exercise stopping")
	}
	stopLoop(t, h.l)
	st := h.l.Stats()
	if st.Requests[OpNop] != uint64(threads*rounds) || st.OK != ok || st.Errors[unix.ECANCELED] != cancelled {
		t.Errorf("the loop claimed %d NOPs, answered %d with 0 and %d with -ECANCELED; the kernel counted %d, %d, %d",
			st.Requests[OpNop], st.OK, st.Errors[unix.ECANCELED], threads*rounds, ok, cancelled)
	}
}

// testDoublePin: memory pinned by io_uring and by CUDA at once serves
// READs correctly and unregisters cleanly.
func testDoublePin(t *testing.T, g *GPU) {
	h := newHarness(t, QueueConfig{Capacity: 1024}, Config{}, 1<<20)
	m, err := h.l.MapForGPU(g)
	if err != nil {
		t.Fatalf("MapForGPU: %v", err)
	}
	if m.Queue == 0 || m.Buffers[h.buf.Index()] == 0 || h.buf.DevicePointer() == 0 {
		t.Fatalf("mapping %+v: want device addresses for the queue and the buffer", m)
	}
	path, data := patternFile(t, tmpfsDir(t), 1<<20, 31)
	fh := h.register(path, os.O_RDONLY)
	if got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 1 << 20}); got != 1<<20 || !bytes.Equal(h.buf.Bytes(), data) {
		t.Fatalf("READ into doubly pinned memory = %d (%v)", got, got.Err())
	}
	if err := g.Close(); !errors.Is(err, ErrInUse) {
		t.Errorf("GPU.Close while a loop is mapped = %v, want ErrInUse", err)
	}
	if err := h.l.Close(); err != nil {
		t.Fatalf("Loop.Close (stop, CUDA unregister, io_uring unregister, unmap): %v", err)
	}
}

// ---- the tests: each GPU test and its CPU twin ----

func TestGPUChecksum(t *testing.T) { testChecksum(t, newGPULauncher(t)) }
func TestCPUChecksum(t *testing.T) { testChecksum(t, newCPULauncher(t)) }

func TestGPUDeviceChecksum(t *testing.T) {
	L := newGPULauncher(t)
	testDeviceChecksum(t, L, L.g)
}

// TestCPUDeviceChecksum runs the checksum kernel on CPU threads over
// device buffers of the stand-in driver (testdata/fakecuda), whose copies
// land late on a thread of their own, in a child process.
func TestCPUDeviceChecksum(t *testing.T) {
	requireCPUToolchain(t) // here, so that the parent skips rather than its child
	if !inFakeDriverChild(t, "TestCPUDeviceChecksum") {
		return
	}
	testDeviceChecksum(t, newCPULauncher(t), requireGPU(t))
}

func TestGPUPingPong(t *testing.T) { testPingPong(t, newGPULauncher(t), 20000) }
func TestCPUPingPong(t *testing.T) { testPingPong(t, newCPULauncher(t), 5000) }

func TestGPUWarp2D(t *testing.T) { testWarp2D(t, newGPULauncher(t)) }
func TestCPUWarp2D(t *testing.T) { testWarp2D(t, newCPULauncher(t)) }

func TestGPUStopRestart(t *testing.T) { testStopRestart(t, newGPULauncher(t), 2000) }
func TestCPUStopRestart(t *testing.T) { testStopRestart(t, newCPULauncher(t), 200) }

func TestGPUDoublePin(t *testing.T) { testDoublePin(t, requireGPU(t)) }

// TestCPUDoublePin is TestGPUDoublePin against the stand-in driver, in a
// child process: the test is about the driver, not a kernel.
func TestCPUDoublePin(t *testing.T) {
	if !inFakeDriverChild(t, "TestCPUDoublePin") {
		return
	}
	testDoublePin(t, requireGPU(t))
}

// inFakeDriverChild reports whether this process runs against the
// stand-in driver; if not, it runs test in a child that does, checks that
// the child passed it, and returns false.
func inFakeDriverChild(t *testing.T, test string) bool {
	if os.Getenv(fakeDriverEnv) != "" {
		return true
	}
	checkChild(t, []string{test}, nil)
	return false
}

// TestCPULauncher checks the CPU launcher itself with the kernels of
// testdata/cpukernels/launcher.cu: what it promises (block-shared storage
// per block, both __activemask() modes, ballots over a short warp) and what
// it catches (a mask naming lanes a short warp lacks, lanes that disagree
// on a warp operation, a kernel that never ends), and its refusals.
func TestCPULauncher(t *testing.T) {
	mod := loadCPUModule(t, filepath.Join("testdata", "cpukernels", "launcher.cu"))
	L := &cpuLauncher{mod: mod, mem: map[uint64][]byte{}}
	words := func(p uint64, n int) []uint64 {
		raw := L.read(t, p, 8*n)
		w := make([]uint64, n)
		for i := range w {
			w[i] = leUint64(raw[8*i:])
		}
		return w
	}
	run := func(kernel string, grid, block cpukernel.Dim3, mode cpukernel.ActiveMask, args ...uint64) error {
		l, err := mod.Launch(kernel, grid, block, cpukernel.LaunchOptions{ActiveMask: mode}, args...)
		if err != nil {
			t.Fatalf("%s: %v", kernel, err)
		}
		ctx, cancel := stallContext(context.Background(), "kernel "+kernel, launchMeters(l)...)
		defer cancel()
		return l.Wait(ctx, 10*time.Second)
	}

	out := L.alloc(t, 8*4*96)
	if err := run("shared_per_block", cpukernel.Dim3{X: 4}, cpukernel.Dim3{X: 96}, cpukernel.ActiveMaskLive, out); err != nil {
		t.Fatal(err)
	}
	for i, v := range words(out, 4*96) {
		if v != uint64(i/96+1) {
			t.Fatalf("shared_per_block: thread %d of block %d read %d: block-shared storage is not per block", i%96, i/96, v)
		}
	}

	for _, mode := range []cpukernel.ActiveMask{cpukernel.ActiveMaskLive, cpukernel.ActiveMaskCaller} {
		out := L.alloc(t, 8*2*48)
		if err := run("masks", cpukernel.Dim3{X: 1}, cpukernel.Dim3{X: 48}, mode, out); err != nil {
			t.Fatal(err)
		}
		w := words(out, 2*48)
		for i := 0; i < 48; i++ {
			lanes, ballot := uint64(0xffffffff), uint64(0xaaaaaaaa)
			if i >= 32 {
				lanes, ballot = 0xffff, 0xaaaa
			}
			active := lanes
			if mode == cpukernel.ActiveMaskCaller {
				active = 1 << (i % 32)
			}
			if w[2*i] != active || w[2*i+1] != ballot {
				t.Fatalf("masks (%v): thread %d: __activemask %#x, ballot %#x; want %#x, %#x", mode, i, w[2*i],
					w[2*i+1], active, ballot)
			}
		}
	}

	out = L.alloc(t, 8*64)
	if err := run("full_mask_shuffle", cpukernel.Dim3{X: 1}, cpukernel.Dim3{X: 64}, cpukernel.ActiveMaskLive, out); err != nil {
		t.Fatalf("full_mask_shuffle over whole warps: %v", err)
	}
	for i, v := range words(out, 64) {
		if want := uint64(i + 1); i%32 == 31 && v != uint64(i) || i%32 != 31 && v != want {
			t.Fatalf("full_mask_shuffle: lane %d got %d", i, v)
		}
	}
	err := run("full_mask_shuffle", cpukernel.Dim3{X: 1}, cpukernel.Dim3{X: 48}, cpukernel.ActiveMaskLive, L.alloc(t, 8*48))
	if !errors.Is(err, cpukernel.ErrAborted) || !strings.Contains(err.Error(), "kernel full_mask_shuffle, block 0, warp 1") ||
		!strings.Contains(err.Error(), "lanes 16-31") {
		t.Errorf("a full mask in a short warp = %v; want cpukernel.ErrAborted naming the kernel, block, warp and lanes 16-31", err)
	}
	t.Logf("a full mask in a short warp: %v", err)

	err = run("divergent_syncwarp", cpukernel.Dim3{X: 1}, cpukernel.Dim3{X: 32}, cpukernel.ActiveMaskLive, 0)
	if !errors.Is(err, cpukernel.ErrAborted) || !strings.Contains(err.Error(), "__syncwarp") {
		t.Errorf("lanes disagreeing on __syncwarp = %v; want cpukernel.ErrAborted", err)
	}
	t.Logf("lanes disagreeing on __syncwarp: %v", err)

	flag := L.alloc(t, 8)
	l, err := mod.Launch("never_ends", cpukernel.Dim3{X: 2}, cpukernel.Dim3{X: 4}, cpukernel.LaunchOptions{}, flag)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = l.Wait(ctx, stallLimit) // its threads leave at their next __nanosleep
	if !errors.Is(err, cpukernel.ErrRunning) || !strings.Contains(err.Error(), "never_ends") ||
		!strings.Contains(err.Error(), "__nanosleep") || !l.Ended() {
		t.Errorf("a kernel that never ends = %v (ended %v); want cpukernel.ErrRunning naming it and its threads' "+
			"__nanosleep, and the threads gone", err, l.Ended())
	}
	t.Logf("a kernel that never ends: %v", err)

	for _, c := range []struct {
		kernel string
		block  cpukernel.Dim3
		args   []uint64
		want   string
	}{
		{"nope", cpukernel.Dim3{X: 1}, nil, "no kernel nope in this library (it has: "},
		{"masks", cpukernel.Dim3{X: 1}, []uint64{1, 2}, "kernel masks takes 1 arguments, 2 given"},
		{"masks", cpukernel.Dim3{X: 2048}, []uint64{out}, "want 1 to 1024 threads a block"},
		{"masks", cpukernel.Dim3{X: -1}, []uint64{out}, "negative dimension"},
	} {
		if _, err := mod.Launch(c.kernel, cpukernel.Dim3{X: 1}, c.block, cpukernel.LaunchOptions{}, c.args...); !errors.Is(err, cpukernel.ErrConfig) ||
			!strings.Contains(err.Error(), c.want) {
			t.Errorf("Launch(%s, %v, %d args) = %v; want cpukernel.ErrConfig saying %q", c.kernel, c.block, len(c.args), err, c.want)
		}
	}
	if _, err := cpukernel.Load(filepath.Join("testdata", "cpukernels", "launcher.cu")); !errors.Is(err, cpukernel.ErrConfig) {
		t.Errorf("cpukernel.Load of a source file = %v; want cpukernel.ErrConfig", err)
	}
}
