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
