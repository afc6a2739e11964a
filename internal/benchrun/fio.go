package benchrun

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// FioAvailable reports whether fio is on PATH.
func FioAvailable() bool {
	_, err := exec.LookPath("fio")
	return err == nil
}

// RunFio runs fio on the same file and workload. engine "io_uring" runs at
// iodepth Depth with --fixedbufs --registerfiles and Batch submitted and
// reaped at a time; "psync" runs Depth threads doing pread/pwrite. CPUus is
// fio's own user + system CPU (from wait4) per request.
func RunFio(s Spec, engine string) (Result, error) {
	s = s.withDefaults()
	r := Result{Engine: "fio-" + engine, RW: s.RW, Block: s.Block, Depth: s.Depth, Batch: s.Batch, Direct: s.Direct}
	secs := max(1, int(s.Duration.Round(time.Second)/time.Second))
	args := []string{"--name=megaio-compare", "--filename=" + s.Path, "--size=" + strconv.FormatInt(s.Size, 10),
		"--rw=" + s.RW, "--bs=" + strconv.Itoa(s.Block), "--output-format=json",
		"--time_based", "--runtime=" + strconv.Itoa(secs), "--norandommap", "--randrepeat=0", "--thread",
		"--lat_percentiles=1"}
	if s.Direct {
		args = append(args, "--direct=1")
	}
	if len(s.Loop.CPUs) > 0 { // where megaio's loop runs, fio's job runs
		cpus := make([]string, len(s.Loop.CPUs))
		for i, c := range s.Loop.CPUs {
			cpus[i] = strconv.Itoa(c)
		}
		args = append(args, "--cpus_allowed="+strings.Join(cpus, ","))
	}
	// Engine options follow --ioengine: fio parses them only then.
	switch engine {
	case "io_uring", "io_uring-standin":
		args = append(args, "--ioengine=io_uring", "--iodepth="+strconv.Itoa(s.Depth), "--fixedbufs", "--registerfiles",
			"--iodepth_batch_submit="+strconv.Itoa(s.Batch), "--iodepth_batch_complete_min="+strconv.Itoa(s.Batch))
	case "io_uring-batch": // fio's best line on tmpfs (docs/BENCHMARKS.md)
		args = append(args, "--ioengine=io_uring", "--iodepth="+strconv.Itoa(s.Depth), "--fixedbufs", "--registerfiles",
			"--iodepth_batch_submit="+strconv.Itoa(min(16, s.Depth)), "--iodepth_batch_complete_min=1",
			"--iodepth_batch_complete_max="+strconv.Itoa(min(32, s.Depth)))
	case "psync":
		args = append(args, "--ioengine=psync", "--numjobs="+strconv.Itoa(s.Depth), "--group_reporting")
	default:
		return r, fmt.Errorf("benchrun: fio engine %q", engine)
	}
	if engine == "io_uring-standin" {
		stop, err := standIn()
		if err != nil {
			return r, err
		}
		defer stop()
	}
	disk0, diskOK := disk(s)
	cmd := exec.Command("fio", args...)
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("fio %v: %w\n%s", args, err, out)
	}
	var rep struct {
		Jobs []struct {
			Read, Write fioDir
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Jobs) == 0 {
		return r, fmt.Errorf("fio output: %v\n%s", err, out)
	}
	d := rep.Jobs[0].Read
	if s.write() {
		d = rep.Jobs[0].Write
	}
	r.Requests = d.TotalIOs
	r.Seconds = float64(d.RuntimeMs) / 1e3
	r.IOPS = d.IOPS
	r.MBps = float64(d.BwBytes) / 1e6
	r.P50us = d.Lat.Percentile["50.000000"] / 1e3
	r.P99us = d.Lat.Percentile["99.000000"] / 1e3
	if disk1, ok := disk(s); ok && diskOK {
		r.fillDisk(disk0, disk1, d.RuntimeMs)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && d.TotalIOs > 0 {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.CPUus = perReq(cpu, d.TotalIOs)
	}
	return r, nil
}

type fioDir struct {
	IOPS      float64 `json:"iops"`
	BwBytes   int64   `json:"bw_bytes"`
	TotalIOs  int64   `json:"total_ios"`
	RuntimeMs int64   `json:"runtime"`
	// Lat is submission to completion (fio's slat + clat; percentiles
	// with --lat_percentiles), what megaio's latency measures: from the
	// producer's Submit to its seeing the result. fio's default, clat,
	// leaves out submission (at depth 1 on the virtio disk, half of it:
	// the doorbell's VM exit).
	Lat struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"lat_ns"`
}

// standIn starts what megaio-gpu's GPU stand-in costs the host, without its
// requests: one thread at SCHED_IDLE polling memory until stop is called.
// It runs fio under the same load (fio-io_uring-standin): on the virtual
// machine measured, a busy CPU, even one running only at SCHED_IDLE,
// slowed the disk's own service (docs/BENCHMARKS.md).
func standIn() (stop func(), err error) {
	var quit atomic.Bool
	started, done := make(chan error), make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the SCHED_IDLE thread exits with the goroutine
		if err := setIdlePolicy(true); err != nil {
			started <- fmt.Errorf("the stand-in's thread: SCHED_IDLE: %w", err)
			return
		}
		started <- nil
		for !quit.Load() {
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return func() { quit.Store(true); <-done }, nil
}
