package examples

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/kernels"
)

// run is one run of an example: its flags and the line that says it
// verified what it did.
type run struct {
	example, name string
	args          []string
	gpu           bool   // needs a GPU: skipped, saying why, without one
	want          string // in its output
}

var runs = []run{
	{"checksum", "cpu", []string{"-target", "cpu", "-size", "4194304", "-blocks", "4", "-threads", "64"},
		false, "every block's sum equals the host's"},
	{"checksum", "cpu/odd-shape", []string{"-target", "cpu", "-size", "1060921", "-chunk", "65536", "-blocks", "5",
		"-threads", "48", "-passes", "2"}, false, "every block's sum equals the host's"},
	{"checksum", "gpu", []string{"-target", "gpu"}, true, "every block's sum equals the host's"},
	{"checksum", "gpu/device-memory", []string{"-target", "gpu", "-device"}, true, "every block's sum equals the host's"},
	{"checkpoint", "cpu", []string{"-target", "cpu"}, false, "every byte of the file is what the kernel computed"},
	{"checkpoint", "cpu/odd-shape", []string{"-target", "cpu", "-region", "10007", "-blocks", "3", "-threads", "48",
		"-steps", "5"}, false, "every byte of the file is what the kernel computed"},
	{"checkpoint", "gpu", []string{"-target", "gpu"}, true, "every byte of the file is what the kernel computed"},
	{"warpread", "cpu", []string{"-target", "cpu", "-size", "8388608"}, false, "every warp's sum equals the host's"},
	{"warpread", "cpu/short-warps", []string{"-target", "cpu", "-size", "3000001", "-chunk", "100000", "-blocks", "3",
		"-threads", "48"}, false, "every warp's sum equals the host's"},
	{"warpread", "gpu", []string{"-target", "gpu"}, true, "every warp's sum equals the host's"},
}

// TestExamples builds every example as a user would (go build) and runs
// it; the verification is each program's own, and the test reads its
// report. On CPU threads they need g++ and libcu++: without them the test
// skips, saying why, or fails under MEGAIO_REQUIRE_CPU_KERNELS (set by
// ./build.sh test).
func TestExamples(t *testing.T) {
	dir := t.TempDir()
	if cmds, err := kernels.BuildCommands("k.cu", dir, dir); err != nil {
		t.Fatal(err)
	} else if cmds.CPU == nil {
		if os.Getenv("MEGAIO_REQUIRE_CPU_KERNELS") != "" {
			t.Fatalf("the examples cannot run on CPU threads: %s", cmds.Missing["cpu"])
		}
		t.Skipf("skipping: %s", cmds.Missing["cpu"])
	}
	var noGPU error
	if g, err := megaio.OpenGPU(0); err != nil {
		noGPU = err
	} else {
		g.Close()
	}
	built := map[string]string{}
	for _, r := range runs {
		t.Run(r.example+"/"+r.name, func(t *testing.T) {
			if r.gpu && noGPU != nil {
				t.Skipf("skipping: no GPU: %v", noGPU)
			}
			bin := built[r.example]
			if bin == "" {
				bin = filepath.Join(dir, r.example)
				if out, err := exec.Command("go", "build", "-o", bin, "./"+r.example).CombinedOutput(); err != nil {
					t.Fatalf("go build ./%s: %v\n%s", r.example, err, out)
				}
				built[r.example] = bin
			}
			out, err := exec.Command(bin, r.args...).CombinedOutput()
			t.Logf("%s %s:\n%s", r.example, strings.Join(r.args, " "), out)
			if err != nil {
				t.Fatalf("%s: %v", r.example, err)
			}
			if !strings.Contains(string(out), r.want) {
				t.Errorf("%s did not report %q", r.example, r.want)
			}
		})
	}
}

// TestExampleRefusals: a request an example cannot honour is refused with
// a clear error and a failing exit status.
func TestExampleRefusals(t *testing.T) {
	for _, c := range []struct {
		example string
		args    []string
		want    string
	}{
		{"checksum", []string{"-target", "cpu", "-device", "-size", "4096"}, "device memory needs a GPU"},
		{"checksum", []string{"-blocks", "0"}, "-blocks 1 to 200"},
		{"checkpoint", []string{"-target", "nowhere"}, `kernel target "nowhere"`},
		{"warpread", []string{"-chunk", "0"}, "-chunk 1 to 1 GiB"},
	} {
		out, err := exec.Command("go", append([]string{"run", "./" + c.example}, c.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s %v: %v\n%s\nwant a failure saying %q", c.example, c.args, err, out, c.want)
		}
	}
}

// TestExamplesImportOnlyThePublicPackages: the examples are the proof that
// the public face is enough; none imports an internal package.
func TestExamplesImportOnlyThePublicPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, "./checksum", "./checkpoint",
		"./warpread").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/megaio/megaio/") && p != "github.com/megaio/megaio/kernels" &&
			p != "github.com/megaio/megaio/cpukernel" || strings.Contains(p, "/internal/") {
			t.Errorf("an example imports %s: only github.com/megaio/megaio, .../kernels and .../cpukernel are public", p)
		}
	}
}
