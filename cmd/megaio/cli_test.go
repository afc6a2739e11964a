package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/megaio/megaio"
)

// TestMain runs the command itself when asked (MEGAIO_CLI=1), so the CLI
// tests run the real binary: its exit status, stdout and stderr.
func TestMain(m *testing.M) {
	if os.Getenv("MEGAIO_CLI") == "1" {
		os.Args = append([]string{"megaio"}, strings.Fields(os.Getenv("MEGAIO_CLI_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runCLI runs `megaio args...` and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIIn(t, "", args...)
}

// runCLIIn is runCLI in working directory dir ("": this one).
func runCLIIn(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MEGAIO_CLI=1", "MEGAIO_CLI_ARGS="+strings.Join(args, " "))
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestCLIConventions: help exits 0; no command, an unknown one, stray
// arguments and bad flags or flag values exit 2, reported before any work,
// with "megaio:" said once; version prints the release.
func TestCLIConventions(t *testing.T) {
	for _, c := range []struct {
		args         []string
		code         int
		out, errText string
	}{
		{[]string{"help"}, 0, "usage: megaio", ""},
		{[]string{"-h"}, 0, "usage: megaio", ""},
		{[]string{"--help"}, 0, "usage: megaio", ""},
		{nil, 2, "", "usage: megaio"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"demo", "-h"}, 0, "", "-requests"},
		{[]string{"demo", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"soak", "-duration", "1s", "now"}, 2, "", `unexpected argument "now"`},
		{[]string{"bench", "-rw", "foo"}, 2, "", `-rw "foo"`},
		{[]string{"demo", "-backend", "nope"}, 2, "", `backend "nope"`},
		{[]string{"version"}, 0, "megaio v", ""},
		{[]string{"--version"}, 0, "megaio v", ""},
		{[]string{"-version"}, 0, "megaio v", ""},
		{[]string{"check", "-h"}, 0, "", "-for"},
		{[]string{"check", "-h"}, 0, "", "exit status is 0"},
		{[]string{"check", "now"}, 2, "", `megaio check: unexpected argument "now"`},
		{[]string{"check", "-for", "tpu"}, 2, "", `-for "tpu"`},
		{[]string{"bench", "-compare"}, 2, "", "flag provided but not defined: -compare"},
	} {
		code, out, errText := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errText, c.errText) {
			t.Errorf("megaio %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				c.args, code, out, errText, c.code, c.out, c.errText)
		}
		if n := strings.Count(errText, "megaio:"); n > 1 {
			t.Errorf("megaio %v: %q says megaio: %d times", c.args, errText, n)
		}
		if strings.Contains(out, "generating") {
			t.Errorf("megaio %v did work before refusing its arguments: %q", c.args, out)
		}
	}
}

// TestUnits: sizes accept and print units; latencies print two significant
// digits, the histogram's precision.
func TestUnits(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4K": 4096, "4KiB": 4096, "1MiB": 1 << 20, "256M": 256 << 20, "2GiB": 2 << 30} {
		if got, err := megaio.ParseSize(in); err != nil || got != want {
			t.Errorf("megaio.ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "4X", "-1", "4MB"} {
		if _, err := megaio.ParseSize(bad); err == nil {
			t.Errorf("megaio.ParseSize(%q) accepted it", bad)
		}
	}
	for n, want := range map[int64]string{4096: "4 KiB", 1 << 20: "1 MiB", 3 << 19: "1.5 MiB", 1000: "1000 B", 256 << 20: "256 MiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{1572864 * time.Nanosecond: "1.6ms", 98304 * time.Nanosecond: "98µs",
		2 * time.Second: "2.0s", 131072 * time.Nanosecond: "130µs", 524288 * time.Nanosecond: "520µs", 8 * time.Nanosecond: "8.0ns"} {
		if got := latency(d); got != want {
			t.Errorf("latency(%v) = %q, want %q", d, got, want)
		}
	}
	for in, want := range map[string]string{"1": "1", "0,2": "0,2", "2-4,7": "2,3,4,7"} {
		var cpus []int
		if err := (cpusValue{&cpus}).Set(in); err != nil || formatCPUs(cpus) != want {
			t.Errorf("CPU list %q = %v, %v; want %s", in, cpus, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "3-2", "1,", "1-"} {
		var cpus []int
		if err := (cpusValue{&cpus}).Set(bad); err == nil {
			t.Errorf("CPU list %q accepted: %v", bad, cpus)
		}
	}
	code, out, _ := runCLI(t, "demo", "-requests", "100", "-size", "4KiB", "-block", "1KiB")
	if code != 0 || !strings.Contains(out, "1 KiB READs of a 4 KiB file") || strings.Contains(out, "0 MiB") ||
		strings.Contains(out, "e+") || !strings.Contains(out, "latency, claim to completion") {
		t.Errorf("demo with a 4 KiB file: exit %d\n%s", code, out)
	}
}

// TestBenchOutputs: bench writes its JSON and plot where -out says, or in
// a new temporary directory it prints, never into the working directory.
func TestBenchOutputs(t *testing.T) {
	c := benchConfig{jsonPath: "r.json", plotPath: "p.svg"}
	dir := t.TempDir()
	if err := placeOutputs(&c, dir); err != nil || c.jsonPath != dir+"/r.json" || c.plotPath != dir+"/p.svg" {
		t.Errorf("with -out: %+v, %v", c, err)
	}
	c = benchConfig{jsonPath: "r.json", plotPath: ""}
	if err := placeOutputs(&c, ""); err != nil || !strings.HasPrefix(c.jsonPath, os.TempDir()) || c.plotPath != "" {
		t.Errorf("without -out: %+v, %v", c, err)
	} else {
		os.RemoveAll(strings.TrimSuffix(c.jsonPath, "/r.json"))
	}
	c = benchConfig{jsonPath: "/abs/r.json"}
	if err := placeOutputs(&c, ""); err != nil || c.jsonPath != "/abs/r.json" {
		t.Errorf("an absolute path moved: %+v, %v", c, err)
	}
}

// TestCheck: `megaio check` runs here and prints a line per capability,
// each ok or no, every no with a fix; it exits 0 for the host configuration
// (io_uring and memlock are what this machine has) and 1 for gpu (no GPU
// here), saying what is missing; -json parses and says the same; nothing
// but megaio's own error reaches stderr, and no cufile.log lands in the
// working directory.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	code, out, errText := runCLIIn(t, dir, "check")
	if code != 0 || errText != "" {
		t.Fatalf("megaio check: exit %d, stderr %q\n%s", code, errText, out)
	}
	t.Log(out)
	for _, name := range []string{"io_uring:", "memlock:", "hugepages:", "inline:", "seccomp:", "CUDA:", "device:", "cuFile:", "nvidia-fs:"} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(strings.TrimPrefix(l, "*"))
			if len(f) > 0 && f[0] == name {
				found = true
				if len(f) < 3 || (f[1] != "ok" && f[1] != "no") || (f[1] == "no" && !strings.Contains(l, "(fix: ")) {
					t.Errorf("line %q: want name, ok or no, what was found, and a fix for a no", l)
				}
				if name == "device:" && f[1] == "ok" && strings.Contains(out, "CUDA:      no") {
					t.Errorf("device ok without CUDA: %q", l)
				}
			}
		}
		if !found {
			t.Errorf("no %s line", name)
		}
	}

	code, out, errText = runCLIIn(t, dir, "check", "-for", "gpu")
	if _, err := megaio.OpenGPU(0); err == nil {
		t.Logf("a GPU is here: -for gpu exits %d", code)
	} else if code != 1 || !strings.Contains(errText, "the gpu configuration lacks CUDA, device") ||
		strings.Count(errText, "\n") != 1 {
		t.Errorf("megaio check -for gpu without a GPU: exit %d, stderr %q; want 1 and one line naming CUDA and device", code, errText)
	}

	code, out, errText = runCLIIn(t, dir, "check", "-json", "-for", "gds")
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check -json: %v\n%s", err, out)
	}
	if rep.For != "gds" || rep.Version != megaio.Version || len(rep.Capabilities) != 9 || (code == 0) != rep.OK {
		t.Errorf("check -json -for gds: exit %d, %+v", code, rep)
	}
	for _, c := range rep.Capabilities {
		if c.Required != slices.Contains(checkNeeds["gds"], c.Name) || (!c.OK && c.Fix == "") || c.Found == "" {
			t.Errorf("capability %+v", c)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("megaio check left %v in its working directory", entries)
	}
}
