package megaio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCUDANoDriver exercises the loader's error path on every machine: a
// driver library that does not exist is ErrNoDriver.
func TestCUDANoDriver(t *testing.T) {
	_, err := loadDriver("libmegaio-no-such-driver.so.1")
	if !errors.Is(err, ErrNoDriver) {
		t.Fatalf("loading a missing driver = %v, want ErrNoDriver", err)
	}
	if _, err := os.Stat("/dev/nvidia0"); err != nil {
		// No GPU here: OpenGPU must say so with a sentinel, never panic.
		if _, err := OpenGPU(0); !errors.Is(err, ErrNoDriver) && !errors.Is(err, ErrNoDevice) {
			t.Fatalf("OpenGPU without a GPU = %v, want ErrNoDriver or ErrNoDevice", err)
		}
	}
}

func TestCUresult(t *testing.T) {
	for _, c := range []struct {
		r    CUresult
		want error
	}{{712, ErrAlreadyRegistered}, {713, ErrNotRegisteredCUDA}, {100, ErrNoDevice}} {
		if err := error(c.r); !errors.Is(err, c.want) || !bytes.Contains([]byte(err.Error()), []byte("CUDA error")) {
			t.Errorf("CUresult %d: %q does not match %v", int(c.r), err, c.want)
		}
	}
	if errors.Is(CUresult(1), ErrNoDevice) {
		t.Error("CUDA_ERROR_INVALID_VALUE matches ErrNoDevice")
	}
}

// requireGPU opens GPU 0, or skips saying why.
func requireGPU(t testing.TB) *GPU {
	t.Helper()
	g, err := OpenGPU(0)
	if errors.Is(err, ErrNoDriver) || errors.Is(err, ErrNoDevice) {
		t.Skipf("skipping: no GPU: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("GPU.Close: %v", err)
		}
	})
	return g
}

// kernelImage is the compiled csrc/gpu/megakernel.cu: MEGAIO_GPU_KERNELS,
// else build/gpu/megakernel.fatbin (build.sh writes it where nvcc exists).
func kernelImage(t *testing.T) []byte {
	path := os.Getenv("MEGAIO_GPU_KERNELS")
	if path == "" {
		path = filepath.Join("build", "gpu", "megakernel.fatbin")
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the GPU kernels are not built (%v): run ./build.sh where nvcc is installed, or set MEGAIO_GPU_KERNELS", err)
	}
	return img
}

// loadKernels loads the compiled megakernel.cu on g, unloaded when the
// test ends.
func loadKernels(t *testing.T, g *GPU) *Module {
	t.Helper()
	mod, err := g.LoadModule(kernelImage(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Unload() })
	return mod
}

// gpuHarness is a started loop mapped for g, with a producer side in
// device memory.
func gpuHarness(t *testing.T, g *GPU, cfg Config, bufSize int) (*harness, GPUMapping, uint64) {
	h := newHarness(t, QueueConfig{Capacity: 1024}, cfg, bufSize)
	m, err := h.l.MapForGPU(g)
	if err != nil {
		t.Fatalf("MapForGPU: %v", err)
	}
	img := h.q.DeviceProducerSide()
	side, err := g.Alloc(len(img))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Free(side) })
	if err := g.CopyToDevice(side, img); err != nil {
		t.Fatal(err)
	}
	return h, m, side
}

func weightedSum(data []byte) uint64 {
	var s uint64
	for i, b := range data {
		s += uint64(b) * (uint64(i)%65521 + 1)
	}
	return s
}

// TestGPUDoublePin: memory pinned by io_uring and by CUDA at once serves
// READs correctly and unregisters cleanly.
func TestGPUDoublePin(t *testing.T) {
	g := requireGPU(t)
	h, m, _ := gpuHarness(t, g, Config{}, 1<<20)
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

// TestGPUChecksum: a persistent kernel reads files through the queue into
// mapped memory and checksums them on the GPU; the sum equals the host's.
func TestGPUChecksum(t *testing.T) {
	g := requireGPU(t)
	img := kernelImage(t)
	const chunk, blocks = 64 << 10, 8
	for _, size := range []int{1, 4096, 3*chunk + 123, 5 << 20} {
		h, m, side := gpuHarness(t, g, Config{}, 2*blocks*chunk)
		mod, err := g.LoadModule(img)
		if err != nil {
			t.Fatal(err)
		}
		path, data := patternFile(t, tmpfsDir(t), size, uint64(size))
		fh := h.register(path, os.O_RDONLY)
		gpuChecksum(t, g, mod, m.Queue, side, m.Buffers[h.buf.Index()], fh, h.dest, data, chunk, blocks)
		mod.Unload()
		stopWithin(t, h.l, 10*time.Second)
	}
}

// gpuChecksum runs the megaio_checksum kernel over file fh (holding data)
// with its chunks landing at buf (destination dest) and checks its sum.
func gpuChecksum(t *testing.T, g *GPU, mod *Module, queue, side, buf uint64, fh FileHandle, dest DestHandle, data []byte,
	chunk, blocks int) {
	t.Helper()
	out, err := g.Alloc(16)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(out)
	g.CopyToDevice(out, make([]byte, 16))
	start := time.Now()
	size := len(data)
	err = mod.Launch("megaio_checksum", blocks, 256, 0, queue, side, buf, uint64(fh)<<32|uint64(dest), uint64(size),
		uint64(chunk), out, out+8)
	if err == nil {
		err = g.Synchronize()
	}
	if err != nil {
		t.Fatalf("size %d: kernel: %v", size, err)
	}
	elapsed := time.Since(start)
	res := make([]byte, 16)
	g.CopyFromDevice(res, out)
	sum, errs := leUint64(res[:8]), leUint64(res[8:])
	if want := weightedSum(data); sum != want || errs != 0 {
		t.Errorf("size %d: GPU checksum %#x with %d bad results, host checksum %#x", size, sum, errs, want)
	}
	t.Logf("size %d: %d chunks in %v (%.1f MB/s)", size, (size+chunk-1)/chunk+1, elapsed, float64(size)/elapsed.Seconds()/1e6)
}

// TestGPUDeviceChecksum is TestGPUChecksum with the chunks landing in
// device memory: the kernel publishes READs into a device destination and
// reads what the bounce path's copies or GDS put there.
func TestGPUDeviceChecksum(t *testing.T) {
	g := requireGPU(t)
	img := kernelImage(t)
	const chunk, blocks = 64 << 10, 8
	for _, mode := range []DevicePath{DevicePathBounce, DevicePathAuto} {
		for _, size := range []int{4096, 3*chunk + 123, 5 << 20} {
			h, m, side := gpuHarness(t, g, Config{Device: DeviceConfig{Path: mode}}, 4096)
			db, warn, err := h.l.NewDeviceBuffer(g, 2*blocks*chunk)
			if err != nil {
				t.Fatal(err)
			}
			dest, err := h.l.AddDeviceDestination(db, 0, 2*blocks*chunk)
			if err != nil {
				t.Fatal(err)
			}
			mod, err := g.LoadModule(img)
			if err != nil {
				t.Fatal(err)
			}
			path, data := patternFile(t, diskDir(t), size, uint64(size)+1)
			fh := h.register(path, os.O_RDONLY|unix.O_DIRECT)
			t.Logf("%v: buffer on %v (warning %v)", mode, db.Path(), warn)
			gpuChecksum(t, g, mod, m.Queue, side, db.Pointer(), fh, dest, data, chunk, blocks)
			mod.Unload()
			stopWithin(t, h.l, 10*time.Second)
			t.Logf("device stats %+v", h.l.Stats().Device)
		}
	}
}

// TestGPUPingPong times GPU -> host -> GPU NOP round trips with
// %globaltimer and prints their percentiles.
func TestGPUPingPong(t *testing.T) {
	g := requireGPU(t)
	h, m, side := gpuHarness(t, g, Config{}, 4096)
	mod := loadKernels(t, g)
	const n = 20000
	times, err := g.Alloc(8 * n)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(times)
	if err := mod.Launch("megaio_pingpong", 1, 1, 0, m.Queue, side, n, times); err != nil {
		t.Fatal(err)
	}
	if err := g.Synchronize(); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 8*n)
	g.CopyFromDevice(raw, times)
	lat := make([]int64, n)
	for i := range lat {
		if lat[i] = int64(leUint64(raw[8*i:])); lat[i] < 0 {
			t.Fatalf("round trip %d failed with %d", i, lat[i])
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return time.Duration(lat[int(p/100*float64(n-1))]) }
	t.Logf("GPU->host->GPU NOP round trip over %d: p50 %v p90 %v p99 %v p99.9 %v max %v", n, pct(50), pct(90), pct(99), pct(99.9), pct(100))
	if err := h.l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// TestGPUWarp2D: megaio_warp_request in 2-D blocks (16 x 8: each warp
// spans two rows, so threadIdx.x % 32 is not its lane) publishes exactly one
// READ per warp, and every thread of the warp gets its result.
func TestGPUWarp2D(t *testing.T) {
	g := requireGPU(t)
	const chunk, blocks, warpsPerBlock = 4096, 3, 4 // 16 x 8 threads
	warps := blocks * warpsPerBlock
	h, m, side := gpuHarness(t, g, Config{}, warps*chunk)
	mod := loadKernels(t, g)
	path, data := patternFile(t, tmpfsDir(t), warps*chunk, 77)
	fh := h.register(path, os.O_RDONLY)
	results, err := g.Alloc(8 * blocks * 128)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(results)
	if err := mod.LaunchOn(nil, "megaio_warp2d", Dim3{X: blocks}, Dim3{X: 16, Y: 8}, 0, m.Queue, side,
		uint64(fh)<<32|uint64(h.dest), chunk, results); err != nil {
		t.Fatal(err)
	}
	if err := g.Synchronize(); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 8*blocks*128)
	g.CopyFromDevice(raw, results)
	for i := 0; i < blocks*128; i++ {
		if r := int64(leUint64(raw[8*i:])); r != chunk {
			t.Fatalf("thread %d (block %d, x %d, y %d): result %d, want %d", i, i/128, i%128%16, i%128/16, r, chunk)
		}
	}
	if !bytes.Equal(h.buf.Bytes()[:warps*chunk], data) {
		t.Error("the chunks did not land where the warps asked")
	}
	stopWithin(t, h.l, 10*time.Second)
	if n := h.l.Stats().Requests[OpRead]; n != uint64(warps) {
		t.Errorf("%d READs for %d warps: want one per warp", n, warps)
	}
}

// TestGPUStopRestart: 256 GPU threads send NOPs one at a time while the
// host stops and restarts the loop 30 times. Every NOP completes with 0,
// the kernel ends (no ticket is lost across a stop), and no -ESHUTDOWN answer is
// given for a ticket the loop had served (megaio_dev_wait reads state and
// claim_head with acquire and re-checks done, as megaio_host_poll does).
func TestGPUStopRestart(t *testing.T) {
	g := requireGPU(t)
	h, m, side := gpuHarness(t, g, Config{}, 4096)
	mod := loadKernels(t, g)
	counts, err := g.Alloc(24)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(counts)
	g.CopyToDevice(counts, make([]byte, 24))
	const threads, rounds = 256, 2000
	stream, err := g.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if err := mod.LaunchOn(stream, "megaio_stop_restart", Dim3{X: 4}, Dim3{X: threads / 4}, 0, m.Queue, side, rounds,
		counts); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- stream.Synchronize() }()
	stops := 0
	for ; stops < 30; stops++ {
		time.Sleep(3 * time.Millisecond)
		if err := h.l.Stop(context.Background()); err != nil {
			t.Fatalf("Stop %d: %v", stops, err)
		}
		time.Sleep(time.Millisecond)
		if err := h.l.Start(); err != nil {
			t.Fatalf("Start %d: %v", stops, err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the kernel did not end within 60 s of the last restart: a slot's turn was lost")
	}
	raw := make([]byte, 24)
	g.CopyFromDevice(raw, counts)
	shutdowns, falseShutdowns, bad := leUint64(raw), leUint64(raw[8:]), leUint64(raw[16:])
	t.Logf("%d stops: %d -ESHUTDOWN answers, %d false, %d bad results", stops, shutdowns, falseShutdowns, bad)
	if falseShutdowns != 0 || bad != 0 {
		t.Errorf("%d -ESHUTDOWN answers for served tickets, %d NOPs with a nonzero result", falseShutdowns, bad)
	}
	if shutdowns == 0 {
		t.Error("no wait saw the loop stopped: the test did not exercise the stop check")
	}
	stopWithin(t, h.l, 10*time.Second)
	if st := h.l.Stats(); st.Requests[OpNop] != threads*rounds {
		t.Errorf("%d NOPs served, want %d", st.Requests[OpNop], threads*rounds)
	}
}
