// Package kernels takes one .cu source of persistent kernels to running
// kernels served by a megaio loop: built and run on a GPU where one opens
// (nvcc, the CUDA driver) and on CPU threads otherwise (g++, the CPU
// launcher of package cpukernel), behind one set of calls:
//
//	p, err := kernels.Open(kernels.Config{Source: "reader.cu"})
//	q, _ := megaio.NewQueue(...); l, _ := megaio.NewLoop(q, ...)
//	ref, err := p.Attach(l, q)             // the queue where the kernel sees it
//	run, err := p.Launch("reader", megaio.Dim3{X: 8}, megaio.Dim3{X: 256}, ref.Queue, ref.Side, ...)
//	err = run.Wait(ctx)
//
// GPU and CPU threads differ only here: where memory lives (device memory
// and mapped host memory, or plain host memory), how the source is built
// and how a launch is made. The kernel source, the queue protocol and the
// loop are the same. The README's "Your own persistent kernel" and the
// programs under examples/ show the whole path.
package kernels

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/cpukernel"
)

// ErrRunning: a kernel had not ended when a wait for it did (Run.Wait).
// It is cpukernel.ErrRunning: errors.Is matches either name.
var ErrRunning = cpukernel.ErrRunning

func configError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", megaio.ErrConfig, fmt.Sprintf(format, args...))
}

// asConfig makes the CPU launcher's refusals match megaio.ErrConfig too,
// as the GPU's do.
func asConfig(err error) error {
	if errors.Is(err, cpukernel.ErrConfig) {
		return fmt.Errorf("%w: %w", megaio.ErrConfig, err)
	}
	return err
}

func closedError() error { return fmt.Errorf("%w: the kernels", megaio.ErrClosed) }

// Target says where a Program runs.
type Target int

const (
	// TargetAuto runs on GPU 0 (Config.GPU) where it opens and the
	// source can be built for it, else on CPU threads; Program.Where says
	// which and why.
	TargetAuto Target = iota
	// TargetGPU runs on the GPU or fails.
	TargetGPU
	// TargetCPU runs on CPU threads.
	TargetCPU
)

var targetNames = []string{TargetAuto: "auto", TargetGPU: "gpu", TargetCPU: "cpu"}

func (t Target) String() string {
	if t >= 0 && int(t) < len(targetNames) {
		return targetNames[t]
	}
	return fmt.Sprintf("Target(%d)", int(t))
}

// ParseTarget parses "auto", "gpu" or "cpu".
func ParseTarget(s string) (Target, error) {
	for i, n := range targetNames {
		if s == n {
			return Target(i), nil
		}
	}
	return 0, configError("kernel target %q: want auto, gpu or cpu", s)
}

// Config says what to build and where to run it.
type Config struct {
	// Source is the .cu file of the kernels. It includes
	// "megaio_device.cuh" (Open puts this version's headers on the
	// include path), declares each kernel extern "C" __global__ with only
	// 64-bit arguments (pointers, integers), at most 8 of them (pass more
	// through Program.Args), and names each with MEGAIO_CPU_KERNEL(name)
	// after its definition.
	Source string
	// Code, when set, is the source itself (a //go:embed of the .cu file,
	// say) in place of Source; it is written into Dir as NAME.cu, NAME
	// being Name (default "kernels").
	Code []byte
	Name string
	// GPUImage, when set, is the kernels already built for the GPU (a
	// fatbin or cubin from nvcc): Open does not run nvcc. CPULibrary,
	// when set, is the library already built for CPU threads (the g++ line
	// of BuildCommands). Either may replace Source for its target.
	GPUImage   []byte
	CPULibrary string
	// Target picks where the kernels run (default TargetAuto).
	Target Target
	// GPU is the device ordinal (default 0).
	GPU int
	// Dir is where the headers and built images go (default: a new
	// temporary directory that Close removes).
	Dir string
	// CPUOptions tune the launches on CPU threads.
	CPUOptions cpukernel.LaunchOptions
}

// Program is a kernel source built and loaded, and the memory its kernels
// use: on a GPU (a CUDA module, device memory) or on CPU threads (a library
// for the CPU launcher, host memory). It is safe for concurrent use.
type Program struct {
	where  string
	gpu    *megaio.GPU
	ownGPU bool
	mod    *megaio.Module
	cpu    *cpukernel.Module
	cpuOpt cpukernel.LaunchOptions
	dir    string
	ownDir bool

	mu      sync.Mutex
	closed  bool
	host    map[uint64][]byte // CPU threads: the "device memory" Alloc made, by address
	dev     []uint64          // GPU: device memory Alloc made
	running map[*Run]bool
}

// Open builds cfg.Source for its target (or takes the images given)
// and loads it. With TargetAuto it runs on the GPU when one opens and nvcc
// builds the source for it, and on CPU threads otherwise; Where says which
// and why. It fails with ErrConfig when neither can be built (the error
// says what is missing), and with ErrNoDriver or ErrNoDevice for TargetGPU
// without a GPU.
func Open(cfg Config) (*Program, error) {
	if cfg.Source == "" && cfg.Code == nil && cfg.GPUImage == nil && cfg.CPULibrary == "" {
		return nil, configError("Open: no Source, Code, GPUImage or CPULibrary")
	}
	if cfg.Source != "" && cfg.Code != nil {
		return nil, configError("Open: both Source and Code")
	}
	if cfg.Target < TargetAuto || cfg.Target > TargetCPU {
		return nil, configError("Open: Target %v: want TargetAuto, TargetGPU or TargetCPU", cfg.Target)
	}
	k := &Program{cpuOpt: cfg.CPUOptions, dir: cfg.Dir, host: map[uint64][]byte{}, running: map[*Run]bool{}}
	if k.dir == "" {
		d, err := os.MkdirTemp("", "megaio-kernels-")
		if err != nil {
			return nil, err
		}
		k.dir, k.ownDir = d, true
	}
	if cfg.Code != nil {
		name := cfg.Name
		if name == "" {
			name = "kernels"
		}
		if strings.ContainsAny(name, "/\x00") {
			k.Close()
			return nil, configError("Open: Name %q: want a plain file name", name)
		}
		cfg.Source = filepath.Join(k.dir, name+".cu")
		if err := os.WriteFile(cfg.Source, cfg.Code, 0o644); err != nil {
			k.Close()
			return nil, err
		}
	}
	var gpuWhy error
	if cfg.Target != TargetCPU {
		if gpuWhy = k.openGPU(cfg); gpuWhy == nil {
			return k, nil
		}
		if cfg.Target == TargetGPU {
			k.Close()
			return nil, gpuWhy
		}
	}
	if err := k.openCPU(cfg); err != nil {
		k.Close()
		if gpuWhy != nil {
			return nil, fmt.Errorf("%w (and no GPU: %v)", err, gpuWhy)
		}
		return nil, err
	}
	if gpuWhy != nil {
		k.where += " (no GPU: " + gpuWhy.Error() + ")"
	}
	return k, nil
}

func (k *Program) openGPU(cfg Config) error {
	g, err := megaio.OpenGPU(cfg.GPU)
	if err != nil {
		return err
	}
	img := cfg.GPUImage
	if img == nil {
		if cfg.Source == "" {
			g.Close()
			return configError("Open: no GPUImage and no Source to build one from")
		}
		path, err := k.build(cfg.Source, true)
		if err == nil {
			img, err = os.ReadFile(path)
		}
		if err != nil {
			g.Close()
			return err
		}
	}
	mod, err := g.LoadModule(img)
	if err != nil {
		g.Close()
		return err
	}
	k.gpu, k.ownGPU, k.mod = g, true, mod
	k.where = fmt.Sprintf("GPU %d (%s)", cfg.GPU, g.Name())
	return nil
}

func (k *Program) openCPU(cfg Config) error {
	lib := cfg.CPULibrary
	if lib == "" {
		if cfg.Source == "" {
			return configError("Open: no CPULibrary and no Source to build one from")
		}
		var err error
		if lib, err = k.build(cfg.Source, false); err != nil {
			return err
		}
	}
	m, err := cpukernel.Load(lib)
	if err != nil {
		return asConfig(err)
	}
	k.cpu = m
	k.where = "CPU threads"
	return nil
}

// build writes this version's headers into the kernels' directory and
// compiles src for the GPU (nvcc) or for CPU threads (g++); it returns the
// image's path.
func (k *Program) build(src string, gpu bool) (string, error) {
	inc := filepath.Join(k.dir, "include")
	if err := writeHeaders(inc); err != nil {
		return "", err
	}
	cmds, err := BuildCommands(src, k.dir, inc)
	if err != nil {
		return "", err
	}
	c, out := cmds.CPU, cmds.CPUOut
	if gpu {
		c, out = cmds.GPU, cmds.GPUOut
	}
	if c == nil {
		return "", configError("Open: %s", cmds.Missing[map[bool]string{true: "gpu", false: "cpu"}[gpu]])
	}
	if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
		return "", configError("Open: building %s: %s: %v\n%s", src, strings.Join(c, " "), err, out)
	}
	return out, nil
}

// writeHeaders writes the headers a kernel source includes into dir.
func writeHeaders(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"megaio.h", "megaio_device.cuh", "megaio_cpu.h"} {
		b, err := megaio.Header(name)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Commands are the command lines that build a kernel source: GPU for
// the GPU (nil where no nvcc was found), CPU for CPU threads (nil where no
// C++ compiler or libcu++ was found), each writing the file GPUOut or
// CPUOut; Missing says why one is nil, by "gpu" and "cpu".
type Commands struct {
	GPU, CPU       []string
	GPUOut, CPUOut string
	Missing        map[string]string
}

// BuildCommands returns the nvcc and g++ command lines that build
// src into outDir, with include (a directory holding megaio.h,
// megaio_device.cuh and megaio_cpu.h: see megaio.Header) on the include path:
//
//	nvcc -fatbin -arch=native -std=c++17 -O3 -I include -o out/NAME.fatbin SRC
//	g++ -std=c++17 -O2 -fPIC -shared -pthread -x c++ -I include -I LIBCUXX -o out/NAME.so SRC
//
// -arch=native builds for the GPUs of the machine it runs on; for others,
// name them (-gencode arch=compute_90,code=sm_90). LIBCUXX is a directory
// holding libcu++'s cuda/atomic: $MEGAIO_LIBCUXX, else the CUDA toolkit's
// include (or include/cccl) directory under $CUDA_HOME, /usr/local/cuda or
// /usr (Debian's libcu++-dev). The compilers: $MEGAIO_NVCC or nvcc (on
// PATH, under $CUDA_HOME/bin or /usr/local/cuda/bin), $MEGAIO_CXX or g++.
func BuildCommands(src, outDir, include string) (Commands, error) {
	if src == "" || outDir == "" || include == "" {
		return Commands{}, configError("BuildCommands: src, outDir and include are all needed")
	}
	name := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	c := Commands{Missing: map[string]string{}, GPUOut: filepath.Join(outDir, name+".fatbin"),
		CPUOut: filepath.Join(outDir, name+".so")}
	if nvcc := findNVCC(); nvcc != "" {
		c.GPU = []string{nvcc, "-fatbin", "-arch=native", "-std=c++17", "-O3", "-I", include, "-o", c.GPUOut, src}
	} else {
		c.Missing["gpu"] = "no nvcc (set MEGAIO_NVCC, or install the CUDA toolkit)"
	}
	cxx := os.Getenv("MEGAIO_CXX")
	if cxx == "" {
		cxx = "g++"
	}
	cxxPath, err := exec.LookPath(cxx)
	libcuxx := cpukernel.LibcuxxInclude()
	switch {
	case cpukernel.Available() != nil:
		c.Missing["cpu"] = cpukernel.Available().Error()
	case err != nil:
		c.Missing["cpu"] = fmt.Sprintf("no C++ compiler (%s: %v); install g++", cxx, err)
	case libcuxx == "":
		c.Missing["cpu"] = "no libcu++ (cuda/atomic) under $MEGAIO_LIBCUXX, $CUDA_HOME, /usr/local/cuda or /usr: " +
			"install Debian's libcu++-dev or a CUDA toolkit"
	default:
		c.CPU = []string{cxxPath, "-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-x", "c++", "-I", include,
			"-I", libcuxx, "-o", c.CPUOut, src}
	}
	return c, nil
}

func findNVCC() string {
	if p := os.Getenv("MEGAIO_NVCC"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nvcc"); err == nil {
		return p
	}
	for _, root := range []string{os.Getenv("CUDA_HOME"), "/usr/local/cuda"} {
		if root == "" {
			continue
		}
		if p := filepath.Join(root, "bin", "nvcc"); unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	return ""
}

// Where says where the kernels run: "GPU 0 (NAME)", or "CPU threads" and,
// under TargetAuto, why not on a GPU.
func (k *Program) Where() string { return k.where }

// OnGPU reports whether the kernels run on a GPU.
func (k *Program) OnGPU() bool { return k.gpu != nil }

// GPU is the GPU the kernels run on, or nil on CPU threads (for
// megaio.Loop.NewDeviceBuffer and the like).
func (k *Program) GPU() *megaio.GPU { return k.gpu }

// QueueRef is where the kernels see a queue: pass Queue and Side to
// megaio_dev_attach.
type QueueRef struct {
	Queue uint64 // the queue's memory (header, slots, completions)
	Side  uint64 // the producer side, in the kernels' own memory
}

// Attach makes loop l's queue q reachable from the kernels: on a GPU it
// maps the loop's queues and buffers (Loop.MapForGPU, unless already
// mapped for this GPU); on both it copies q's producer side into the
// kernels' memory. Buffers are then at BufferAddress.
func (k *Program) Attach(l *megaio.Loop, q *megaio.Queue) (QueueRef, error) {
	if l == nil || q == nil {
		return QueueRef{}, configError("Program.Attach: nil loop or queue")
	}
	var kq QueueRef
	if k.gpu != nil {
		if _, err := l.MapForGPU(k.gpu); err != nil && !errors.Is(err, megaio.ErrInUse) {
			return kq, err
		}
		if kq.Queue = l.QueueAddress(q); kq.Queue == 0 {
			return kq, configError("Program.Attach: the loop is mapped for another GPU, or does not serve the queue")
		}
	} else {
		mem := q.Memory()
		if len(mem) == 0 {
			return kq, fmt.Errorf("%w: Program.Attach: the queue", megaio.ErrClosed)
		}
		kq.Queue = uint64(uintptr(unsafe.Pointer(&mem[0])))
	}
	side := q.DeviceProducerSide()
	var err error
	if kq.Side, err = k.Alloc(len(side)); err != nil {
		return kq, err
	}
	return kq, k.CopyIn(kq.Side, side)
}

// BufferAddress is where the kernels see buffer b of an attached loop (0
// before Attach on a GPU).
func (k *Program) BufferAddress(b *megaio.Buffer) uint64 {
	if b == nil {
		return 0
	}
	if k.gpu != nil {
		return b.DevicePointer()
	}
	if mem := b.Bytes(); len(mem) > 0 {
		return uint64(uintptr(unsafe.Pointer(&mem[0])))
	}
	return 0
}

// Alloc is n zeroed bytes of the kernels' own memory (device memory on a
// GPU), freed by Close.
func (k *Program) Alloc(n int) (uint64, error) {
	if n <= 0 {
		return 0, configError("Program.Alloc(%d): want a positive size", n)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return 0, closedError()
	}
	if k.gpu != nil {
		p, err := k.gpu.Alloc(n)
		if err != nil {
			return 0, err
		}
		if err := k.gpu.CopyToDevice(p, make([]byte, n)); err != nil {
			k.gpu.Free(p)
			return 0, err
		}
		k.dev = append(k.dev, p)
		return p, nil
	}
	// Never the Go heap: the kernels' threads keep the address.
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	p := uint64(uintptr(unsafe.Pointer(&b[0])))
	k.host[p] = b
	return p, nil
}

// hostRange is the host memory of [p, p+n) Alloc made, on CPU threads.
func (k *Program) hostRange(p uint64, n int) ([]byte, error) {
	for base, b := range k.host {
		if p >= base && p+uint64(n) <= base+uint64(len(b)) {
			return b[p-base : p-base+uint64(n)], nil
		}
	}
	return nil, configError("Program: [%#x, +%d) is not memory Alloc made", p, n)
}

// CopyIn copies src to the kernels' memory at dst.
func (k *Program) CopyIn(dst uint64, src []byte) error { return k.copy(dst, src, true) }

// CopyOut copies len(dst) bytes of the kernels' memory at src into dst. On
// CPU threads it reads memory the threads may be writing: read what a
// kernel wrote after it ended, or words it publishes with atomics.
func (k *Program) CopyOut(dst []byte, src uint64) error { return k.copy(src, dst, false) }

// copy moves len(b) bytes between b and the kernels' memory at p: into it
// (in) or out of it.
func (k *Program) copy(p uint64, b []byte, in bool) error {
	if len(b) == 0 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.closed:
		return closedError()
	case k.gpu != nil && in:
		return k.gpu.CopyToDevice(p, b)
	case k.gpu != nil:
		return k.gpu.CopyFromDevice(b, p)
	}
	mem, err := k.hostRange(p, len(b))
	if err != nil {
		return err
	}
	if in {
		copy(mem, b)
	} else {
		copy(b, mem)
	}
	return nil
}

// Args puts words into the kernels' memory and returns their address: the
// convention for a kernel that takes more than Launch's 8 arguments. The
// kernel takes one pointer and reads the words as a struct of 64-bit
// fields, in order:
//
//	struct reader_args { unsigned long long queue, side, buf, file_dest, size, chunk, out, errors, stop; };
//	extern "C" __global__ void reader(unsigned long long args) { const reader_args a = *(const reader_args *)args; ... }
func (k *Program) Args(words ...uint64) (uint64, error) {
	b := make([]byte, 8*len(words))
	for i, w := range words {
		*(*uint64)(unsafe.Pointer(&b[8*i])) = w // little-endian on every target megaio runs on
	}
	p, err := k.Alloc(max(len(b), 8))
	if err == nil {
		err = k.CopyIn(p, b)
	}
	return p, err
}

// Run is one launch of a kernel.
type Run struct {
	k      *Program
	kernel string
	done   chan struct{}
	err    error
}

// Launch starts kernel on grid x block threads with up to 8 arguments,
// each 64 bits (pointers, integers); it does not wait. On a GPU it runs on
// a non-blocking stream of its own, never the legacy default stream; on
// CPU threads every block runs at once, one OS thread per CUDA thread.
func (k *Program) Launch(kernel string, grid, block megaio.Dim3, args ...uint64) (*Run, error) {
	if len(args) > 8 {
		return nil, configError("Program.Launch: %d arguments; at most 8 (pass more through Program.Args)", len(args))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, closedError()
	}
	r := &Run{k: k, kernel: kernel, done: make(chan struct{})}
	var wait func() error
	if k.gpu != nil {
		s, err := k.gpu.NewStream()
		if err != nil {
			return nil, err
		}
		if err := k.mod.LaunchOn(s, kernel, grid, block, 0, args...); err != nil {
			s.Close()
			return nil, err
		}
		wait = func() error { return errors.Join(s.Synchronize(), s.Close()) }
	} else {
		l, err := k.cpu.Launch(kernel, cpukernel.Dim3(grid), cpukernel.Dim3(block), k.cpuOpt, args...)
		if err != nil {
			return nil, asConfig(err)
		}
		wait = func() error { return l.Wait(context.Background(), 0) }
	}
	k.running[r] = true
	go func() {
		r.err = wait()
		k.mu.Lock()
		delete(k.running, r)
		k.mu.Unlock()
		close(r.done)
	}()
	return r, nil
}

// Wait waits until the kernel has ended and returns its error (nil; a CUDA
// error; cpukernel.ErrAborted on CPU threads for a broken rule of the
// GPU's model). When ctx ends first it returns an error matching
// ErrRunning and ctx.Err(), and the kernel goes on: a kernel cannot
// be stopped from outside on a GPU, so a persistent kernel is told to stop
// (a word in mapped memory it polls, as the examples do) and waited for
// again. Until it has ended, keep the loop, its queues and buffers, and
// the kernels open: it uses them.
func (r *Run) Wait(ctx context.Context) error {
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("%w: kernel %s on %s: %w", ErrRunning, r.kernel, r.k.where, ctx.Err())
	}
}

// Ended reports whether the kernel has ended.
func (r *Run) Ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Close frees the kernels' memory and unloads them (and releases the GPU
// Open opened: close the loops mapped for it first). It refuses
// with ErrInUse while a launch is running.
func (k *Program) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	if n := len(k.running); n > 0 {
		return fmt.Errorf("%w: %d kernel launch(es) still running; wait for them first", megaio.ErrInUse, n)
	}
	var errs []error
	if k.gpu != nil {
		for _, p := range k.dev {
			errs = append(errs, k.gpu.Free(p))
		}
		if k.mod != nil {
			errs = append(errs, k.mod.Unload())
		}
		k.dev, k.mod = nil, nil
		if k.ownGPU {
			if err := k.gpu.Close(); err != nil {
				return errors.Join(append(errs, err)...) // a loop is still mapped: Close again after closing it
			}
		}
	}
	for p, b := range k.host {
		errs = append(errs, unix.Munmap(b))
		delete(k.host, p)
	}
	k.closed = true
	if k.ownDir {
		errs = append(errs, os.RemoveAll(k.dir))
	}
	return errors.Join(errs...)
}
