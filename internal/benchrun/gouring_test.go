package benchrun

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGoURing runs the Go peer for an exact number of requests and checks
// that it counts them, and that a failing request comes back as its errno.
func TestGoURing(t *testing.T) {
	dir := os.TempDir()
	if _, err := os.Stat("/dev/shm"); err == nil {
		dir = "/dev/shm"
	}
	path, err := MakeFile(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	s := Spec{Path: path, Size: 1 << 20, Block: 4096, Depth: 8, RW: "randread", Requests: 1000}
	r, err := RunGoURing(s)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("io_uring is refused here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 1000 || r.IOPS <= 0 || r.P50us <= 0 {
		t.Errorf("got %d requests, %.0f IOPS, p50 %.1f µs; want 1000 requests and figures", r.Requests, r.IOPS, r.P50us)
	}

	// Reading a directory fails with EISDIR; the run returns that errno.
	s.Path, s.Requests = t.TempDir(), 10
	if _, err := RunGoURing(s); !errors.Is(err, unix.EISDIR) {
		t.Errorf("a run reading a directory returned %v, want EISDIR", err)
	}
}
