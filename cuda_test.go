package megaio

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
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

func weightedSum(data []byte) uint64 {
	var s uint64
	for i, b := range data {
		s += uint64(b) * (uint64(i)%65521 + 1)
	}
	return s
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
