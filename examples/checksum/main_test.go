package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/megaio/megaio"
)

// requireToolchain skips, saying why, where the kernel cannot be built for
// CPU threads (no g++, no libcu++); under MEGAIO_REQUIRE_CPU_KERNELS (set
// by ./build.sh test) it fails instead.
func requireToolchain(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	cmds, err := megaio.KernelBuildCommands("checksum.cu", dir, dir)
	if err != nil {
		t.Fatal(err)
	}
	if cmds.CPU == nil {
		if os.Getenv("MEGAIO_REQUIRE_CPU_KERNELS") != "" {
			t.Fatalf("the example cannot run on CPU threads: %s", cmds.Missing["cpu"])
		}
		t.Skipf("skipping: %s", cmds.Missing["cpu"])
	}
}

// TestChecksum runs the example as a user would, on CPU threads and, where
// there is a GPU, on it (into mapped host memory and into GPU memory); the
// verification is the program's own, and the test reads its report.
func TestChecksum(t *testing.T) {
	requireToolchain(t)
	cases := []struct {
		name string
		o    options
	}{
		{"cpu", options{target: megaio.TargetCPU}},
		{"cpu/odd-shape", options{target: megaio.TargetCPU, size: 1<<20 + 12345, chunk: 64 << 10, blocks: 5,
			threads: 48, passes: 2}},
		{"gpu", options{target: megaio.TargetGPU}},
		{"gpu/device-memory", options{target: megaio.TargetGPU, device: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			if o.size == 0 {
				o.size, o.chunk, o.blocks, o.threads, o.passes = 4<<20, 256<<10, 4, 64, 3
			}
			o.stall = time.Minute
			if o.target == megaio.TargetGPU {
				if g, err := megaio.OpenGPU(0); err != nil {
					t.Skipf("skipping: no GPU: %v", err)
				} else {
					g.Close()
				}
			}
			var out bytes.Buffer
			err := run(o, &out)
			t.Logf("%s", out.String())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "every block's sum equals the host's") {
				t.Errorf("the report does not say the sums were verified")
			}
		})
	}
}

// TestChecksumDeviceNeedsGPU: -device on CPU threads is refused, clearly.
func TestChecksumDeviceNeedsGPU(t *testing.T) {
	requireToolchain(t)
	err := run(options{target: megaio.TargetCPU, device: true, size: 4096, chunk: 4096, blocks: 1, threads: 32,
		passes: 1, stall: time.Minute}, &bytes.Buffer{})
	if !errors.Is(err, errNeedsGPU) {
		t.Fatalf("-device on CPU threads = %v, want errNeedsGPU", err)
	}
}
