package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/megaio/megaio/internal/benchrun"
	"golang.org/x/sys/unix"
)

// TestBench runs a tiny `megaio bench` and checks that it prints its plan
// and progress, the table with ratios and the notes of the engines that ran
// (no others), and writes the JSON and the plot.
func TestBench(t *testing.T) {
	dir := t.TempDir()
	engines := allEngines
	if why := ioURingRefused(t); why != "" {
		t.Logf("io_uring is refused here, so its engines are left out: %s", why)
		engines = []string{"megaio-pool", "fio-psync", "go"}
	}
	c := benchConfig{dir: defaultDir(), size: 8 << 20, rw: "randread", block: 4096, depth: 4, batch: 1,
		duration: 300 * time.Millisecond, rounds: 1, sweep: []int{1, 4}, sweepDur: 200 * time.Millisecond, sweepRounds: 1,
		engines: engines, jsonPath: filepath.Join(dir, "r.json"), plotPath: filepath.Join(dir, "p.svg"),
		mdPath: filepath.Join(dir, "t.md")}
	var out bytes.Buffer
	if err := bench(c, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	base := "fio-io_uring"
	if !benchrun.FioAvailable() {
		base = "megaio-io_uring"
		t.Log("fio is not installed: its engines were skipped (./build.sh installs it)")
	}
	wants := []string{"megaio-pool", "go"}
	if engines[0] == "megaio-io_uring" {
		wants = append(wants, "megaio-io_uring", "go-io_uring", "ratios to "+base, "1.00x")
	}
	wants = append(wants, "plan: 1 rounds of", "[1/", "about ")
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, n := range engineNotes {
		e, _, _ := strings.Cut(n, ":")
		ran := slices.Contains(engines, e) && (!strings.HasPrefix(e, "fio-") || benchrun.FioAvailable())
		if got := strings.Contains(out.String(), "  "+n); got != ran {
			t.Errorf("the note of %s printed: %v, ran: %v", e, got, ran)
		}
	}
	var doc struct {
		Sweep []benchrun.Result `json:"sweep"`
	}
	raw, err := os.ReadFile(c.jsonPath)
	if err != nil || json.Unmarshal(raw, &doc) != nil || len(doc.Sweep) < 6 {
		t.Errorf("JSON: %v, %d sweep runs", err, len(doc.Sweep))
	}
	for _, r := range doc.Sweep {
		if r.IOPS <= 0 {
			t.Errorf("sweep run %+v has no IOPS", r)
		}
	}
	if st, err := os.Stat(c.plotPath); err != nil || st.Size() < 1000 {
		t.Errorf("plot: %v", err)
	}
}

// TestBenchLoopCPUs: -loop-cpus reaches megaio's loop (a CPU this process
// may not use fails its engine with the configuration error) and fio's job,
// and a -file is synced before direct runs (syncFile).
func TestBenchLoopCPUs(t *testing.T) {
	if why := ioURingRefused(t); why != "" {
		t.Skipf("skipping: io_uring is refused here (%s), and -loop-cpus binds the io_uring loop's thread", why)
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	last, beyond := -1, -1
	for c := 0; c < 1024; c++ {
		if allowed.IsSet(c) {
			last = c
		} else if last >= 0 && beyond < 0 {
			beyond = c
		}
	}
	engines := []string{"megaio-gpu"}
	if benchrun.FioAvailable() {
		engines = append(engines, "fio-io_uring")
	}
	c := benchConfig{dir: defaultDir(), size: 4 << 20, rw: "randread", block: 4096, depth: 2, batch: 1,
		duration: 200 * time.Millisecond, rounds: 1, sweepRounds: 1, engines: engines, loopCPUs: []int{last}}
	var out bytes.Buffer
	if err := bench(c, &out); err != nil {
		t.Fatalf("bench -loop-cpus %d: %v\n%s", last, err, out.String())
	}
	for _, e := range engines {
		if !strings.Contains(out.String(), "  "+e+" ") {
			t.Errorf("bench -loop-cpus %d: no row for %s\n%s", last, e, out.String())
		}
	}
	if beyond >= 0 {
		c.loopCPUs, c.engines = []int{beyond}, []string{"megaio-gpu"}
		out.Reset()
		if err := bench(c, &out); err == nil || !strings.Contains(err.Error(), "sched_setaffinity") {
			t.Errorf("bench -loop-cpus %d (a CPU this process may not use) = %v; want the loop's configuration error", beyond, err)
		}
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syncFile(path); err != nil {
		t.Errorf("syncFile: %v", err)
	}
	if err := syncFile(path + ".missing"); err == nil {
		t.Error("syncFile of a missing file: no error")
	}
}
