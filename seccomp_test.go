package megaio

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio/internal/seccomp"
)

// childEnv names the role a re-executed test binary plays.
const childEnv = "MEGAIO_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "deny-io-uring":
		if err := seccomp.DenyIOUring(); err != nil {
			fmt.Fprintln(os.Stderr, "child: installing the seccomp filter:", err)
			os.Exit(3)
		}
	case "default-memlock": // the limit most distributions give a user
		lim := unix.Rlimit{Cur: 8 << 20, Max: 8 << 20}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "child: lowering RLIMIT_MEMLOCK:", err)
			os.Exit(3)
		}
	case "memlock":
		lim := unix.Rlimit{Cur: 64 << 10, Max: 64 << 10}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "child: lowering RLIMIT_MEMLOCK:", err)
			os.Exit(3)
		}
	}
	// cuFile, where the machine has it, logs to cufile.log in the working
	// directory unless told otherwise: into a temporary directory instead.
	logDir := ""
	if _, set := os.LookupEnv("CUFILE_LOGFILE_PATH"); !set {
		if d, err := os.MkdirTemp("", "megaio-cufile-log-"); err == nil {
			logDir = d
			os.Setenv("CUFILE_LOGFILE_PATH", filepath.Join(d, "cufile.log"))
		}
	}
	code := m.Run()
	for _, d := range []string{standIns.dir, cpuKernels.dir, logDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// TestIOUringRefused runs TestRefusedChild in a child process under a
// seccomp filter that refuses io_uring, as Docker's default profile does.
func TestIOUringRefused(t *testing.T) {
	runChild(t, "TestRefusedChild", "deny-io-uring")
}

// TestRefusedChild is TestIOUringRefused's child: io_uring is refused here.
func TestRefusedChild(t *testing.T) {
	if os.Getenv(childEnv) != "deny-io-uring" {
		t.Skip("skipping: runs only as the child of TestIOUringRefused, under its seccomp filter")
	}
	q, err := NewQueue(QueueConfig{Capacity: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	// Forced io_uring fails with the errors.Is-matchable error.
	if l, err := NewLoop(q, Config{Backend: BackendIOUring}); !errors.Is(err, ErrIOUringUnavailable) || !errors.Is(err, unix.EPERM) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("NewLoop(io_uring) under seccomp = %v; want ErrIOUringUnavailable wrapping EPERM", err)
	} else {
		t.Logf("forced io_uring: %v", err)
	}

	// Auto falls back to the pool, says why, and serves verified reads.
	l, err := NewLoop(q, Config{})
	if err != nil {
		t.Fatalf("NewLoop(auto) under seccomp: %v", err)
	}
	defer l.Close()
	info := l.Backend()
	if info.Kind != BackendPool || !strings.Contains(info.Reason, "io_uring refused") || !strings.Contains(l.Stats().BackendReason, "operation not permitted") {
		t.Fatalf("Backend() = %+v; want the pool, with io_uring's refusal as the reason", info)
	}
	t.Logf("auto: %s: %s", info.Description, info.Reason)
	h := &harness{t: t, q: q, l: l}
	h.p, _ = q.HostProducer()
	h.buf, _ = l.NewBuffer(1<<20, BufferOptions{})
	h.dest, _ = l.AddDestination(h.buf, 0, 1<<20)
	path, data := patternFile(t, tmpfsDir(t), 1<<20, 15)
	fh := h.register(path, os.O_RDONLY)
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	rng := newRand(16)
	for i := 0; i < 2000; i++ {
		n := 1 + rng.IntN(64<<10)
		off := rng.IntN(len(data) - n)
		if got := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(off), Length: uint64(n)}); got != Result(n) ||
			!bytes.Equal(h.buf.Bytes()[:n], data[off:off+n]) {
			t.Fatalf("READ %d at %d on the pool = %d (%v)", n, off, got, got.Err())
		}
	}
}
