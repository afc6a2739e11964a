// Package cpukernel is megaio's CPU launcher: kernels written against
// include/megaio_device.cuh, compiled by a host C++ compiler into a shared
// library (include/megaio_cpu.h says how, and what the model is), run on
// CPU threads, one OS thread per CUDA thread, against a real megaio loop.
// It lets a megakernel's IO logic run in ordinary tests, under
// ThreadSanitizer too, on machines without a GPU. What it cannot show:
// ordering across PCIe, the GPU's memory model beyond C++'s, the real
// driver, and speed.
//
// Kernels see memory by its host address: a queue's Memory(), buffers'
// Bytes(), and memory of the caller's outside the Go heap. The package
// github.com/megaio/megaio/kernels runs one kernel source here or on a GPU
// behind one set of calls; this package is the CPU half of it.
package cpukernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The package's errors; errors.Is matches them.
var (
	// ErrConfig: a library that cannot be loaded, a kernel it lacks, a
	// launch shape or arguments it refuses.
	ErrConfig = errors.New("cpukernel: bad launch")
	// ErrAborted: a kernel broke a rule of the GPU's model (a warp
	// operation's mask, say) and was stopped; the error names the kernel,
	// block, warp and lanes.
	ErrAborted = errors.New("cpukernel: kernel aborted")
	// ErrRunning: a kernel had not ended when a wait for it did. If its
	// threads did not leave when asked either, the memory they use (the
	// queue, buffers, arguments) must stay mapped.
	ErrRunning = errors.New("kernel still running")
	// ErrCgoRequired: built without cgo, there is no launcher.
	ErrCgoRequired = errors.New("cpukernel: the CPU launcher needs cgo (dlopen)")
)

func configError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Dim3 is a grid or block shape; a zero Y or Z counts as 1.
type Dim3 struct{ X, Y, Z int }

// ActiveMask is what __activemask() returns on the CPU launcher.
type ActiveMask int

const (
	// ActiveMaskLive: every lane of the warp that has not returned.
	ActiveMaskLive ActiveMask = 0
	// ActiveMaskCaller: only the calling lane, the least independent
	// thread scheduling (sm_70 and newer) allows even on one code path.
	// Code that elects a leader from __activemask() breaks under it.
	ActiveMaskCaller ActiveMask = 1
)

func (m ActiveMask) String() string {
	if m == ActiveMaskCaller {
		return "caller"
	}
	return "live"
}

// LaunchOptions tune one launch.
type LaunchOptions struct {
	ActiveMask ActiveMask // what __activemask() returns
}

// LibcuxxInclude is a directory holding libcu++'s cuda/atomic, which
// megaio_device.cuh includes: $MEGAIO_LIBCUXX, else include (or
// include/cccl, as CUDA 13 has it) under $CUDA_HOME, /usr/local/cuda or
// /usr; "" where there is none.
func LibcuxxInclude() string {
	var dirs []string
	if d := os.Getenv("MEGAIO_LIBCUXX"); d != "" {
		dirs = append(dirs, d)
	}
	for _, root := range []string{os.Getenv("CUDA_HOME"), "/usr/local/cuda", "/usr"} {
		if root != "" {
			dirs = append(dirs, filepath.Join(root, "include"), filepath.Join(root, "include", "cccl"))
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "cuda", "atomic")); err == nil {
			return d
		}
	}
	return ""
}
