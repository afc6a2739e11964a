package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"github.com/megaio/megaio"
)

// TestDemo runs small demos on each backend: each fails unless every byte
// is verified.
func TestDemo(t *testing.T) {
	for _, c := range []demoConfig{
		{requests: 3000, producers: 3, depth: 4, block: 4096, size: 1 << 20, dir: t.TempDir()},
		{requests: 1001, producers: 2, depth: 1, block: 1000, size: 100000, dir: defaultDir()},
		{requests: 3000, producers: 3, depth: 4, block: 4096, size: 1 << 20, dir: defaultDir(), backend: megaio.BackendPool},
		{requests: 4000, producers: 4, depth: 4, block: 4096, size: 1 << 20, dir: defaultDir(), queues: 2},
		{requests: 3000, producers: 3, depth: 4, block: 4096, size: 1 << 20, dir: defaultDir(), queues: 3, backend: megaio.BackendPool},
	} {
		if err := demo(c); err != nil {
			t.Errorf("demo(%+v): %v", c, err)
		}
	}
}

// TestDemoWithoutIOUring runs `megaio demo -deny-io-uring` (this test binary
// re-executed as the command): under a seccomp filter that refuses
// io_uring, the demo must fall back to the pool, say so and verify every
// byte.
func TestDemoWithoutIOUring(t *testing.T) {
	if os.Getenv("MEGAIO_DEMO_CHILD") == "1" {
		os.Args = []string{"megaio", "demo", "-deny-io-uring", "-requests", "20000", "-size", "8388608"}
		main()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDemoWithoutIOUring$")
	cmd.Env = append(os.Environ(), "MEGAIO_DEMO_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("demo output:\n%s", out)
	if err != nil {
		t.Fatalf("demo under seccomp: %v", err)
	}
	for _, want := range []string{"backend: pool", "io_uring refused", "PASS: every byte verified"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}

// TestVersion: `megaio version` names the release and the queue ABI.
func TestVersion(t *testing.T) {
	var out bytes.Buffer
	printVersion(&out)
	if want := "megaio " + megaio.Version + " (queue ABI version 2)\n"; out.String() != want {
		t.Errorf("version prints %q, want %q", out.String(), want)
	}
}
