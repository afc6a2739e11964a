package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/internal/benchrun"
)

// allEngines are the engines `megaio bench` runs, in this order
// within each round.
var allEngines = []string{"megaio-io_uring", "megaio-gpu", "megaio-gpu-uring", "megaio-poll", "megaio-pool", "fio-io_uring", "fio-io_uring-standin", "fio-io_uring-batch", "fio-psync", "go", "go-io_uring"}

// engineNotes say what each engine is, under the table (for the engines
// that ran).
var engineNotes = []string{
	"megaio-io_uring: one host producer thread keeps -depth requests in flight; the loop on io_uring",
	"megaio-gpu: -depth independent producers with one request each, refilled in the order they complete, polling without sleeping as GPU threads do (one host thread drives them all, at SCHED_IDLE: it never takes a CPU from the loop or the kernel's workers, as a GPU would not); the loop on io_uring",
	"megaio-gpu-uring: as megaio-gpu, every READ through io_uring (Config.InlineMax -1: no inline copies from memory-backed files)",
	"megaio-poll: as megaio-gpu, the loop polling while requests are in flight (Backoff.Poll: a core to spare)",
	"megaio-pool: as megaio-io_uring, the loop on its worker pool",
	"fio-io_uring: fio --ioengine=io_uring --fixedbufs --registerfiles, -batch submitted and reaped at a time",
	"fio-io_uring-standin: fio-io_uring beside one SCHED_IDLE thread polling memory, the host CPU that megaio-gpu's GPU stand-in takes (on the virtual machine measured, a busy CPU slowed the disk: docs/BENCHMARKS.md)",
	"fio-io_uring-batch: the same with --iodepth_batch_submit=16 --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=32 (fio's best tmpfs line)",
	"fio-psync: -depth fio threads doing pread/pwrite",
	"go: -depth goroutines calling os.File.ReadAt/WriteAt",
	"go-io_uring: the Go peer: one goroutine on its own ring through golang.org/x/sys/unix alone (registered file, fixed buffers, every completion refilled at once)",
}

type benchConfig struct {
	dir, path           string
	size                int64
	rw                  string
	block, depth, batch int
	direct              bool
	duration, sweepDur  time.Duration
	rounds, sweepRounds int
	sweep               []int
	engines             []string
	jsonPath, plotPath  string
	mdPath              string
	huge                bool
	linger              time.Duration
	loopCPUs            []int
}

func runBench(args []string) error {
	var c benchConfig
	fs := newFlagSet("bench")
	fs.StringVar(&c.dir, "dir", defaultDir(), "directory for the generated file (use a disk directory with -direct)")
	fs.StringVar(&c.path, "file", "", "use this file instead of generating one (at least -size bytes)")
	size := int64(256 << 20)
	fs.Var(sizeValue{&size}, "size", "bytes of the file to use (units: 256MiB, 1GiB)")
	fs.StringVar(&c.rw, "rw", "randread", "randread, read (sequential), randwrite or write")
	block := int64(4096)
	fs.Var(sizeValue{&block}, "block", "bytes per request (units: 4KiB, 1MiB)")
	fs.IntVar(&c.depth, "depth", 32, "requests in flight")
	fs.IntVar(&c.batch, "batch", 1, "requests submitted and completions awaited at a time")
	fs.BoolVar(&c.direct, "direct", false, "O_DIRECT")
	fs.BoolVar(&c.huge, "huge", false, "megaio: 2 MiB pages for the destination buffer (needs vm.nr_hugepages)")
	fs.DurationVar(&c.linger, "linger", 0, "the loop's Backoff.Linger, for megaio engines (0: its default; negative: none)")
	fs.Var(cpusValue{&c.loopCPUs}, "loop-cpus", "bind megaio's loop thread (Config.CPUs) and fio's job (--cpus_allowed) to these CPUs, e.g. 1 or 0,2")
	fs.DurationVar(&c.duration, "duration", 2*time.Second, "length of each run in the table")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of the table, each running every engine once (A B C A B C ...)")
	sweep := fs.String("sweep", "1,2,4,8,16,32,64,128,256", "queue depths for the plot (empty: no sweep)")
	fs.DurationVar(&c.sweepDur, "sweep-duration", time.Second, "length of each sweep run")
	fs.IntVar(&c.sweepRounds, "sweep-rounds", 2, "rounds of the sweep (the plot shows their median and range)")
	engines := fs.String("engines", strings.Join(allEngines, ","), "engines to run")
	outDir := fs.String("out", "", "directory for the JSON and the plot (default: a new temporary directory, printed)")
	fs.StringVar(&c.jsonPath, "json", "bench-results.json", "write every run's figures here (a bare name goes in -out; empty: none)")
	fs.StringVar(&c.plotPath, "plot", "bench-iops.svg", "draw IOPS against queue depth here, .svg or .png (a bare name goes in -out; empty: none)")
	fs.StringVar(&c.mdPath, "markdown", "", "also write the table as Markdown here")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c.size = size
	if err := placeOutputs(&c, *outDir); err != nil {
		return err
	}
	if block > 1<<30 {
		return fmt.Errorf("bench: -block at most 1 GiB")
	}
	c.block = int(block)
	switch c.rw {
	case "randread", "read", "randwrite", "write":
	default: // checked before the file is made and any engine runs
		return usageErrorf("bench: -rw %q: want randread, read, randwrite or write", c.rw)
	}
	for _, e := range strings.Split(*engines, ",") {
		if !slices.Contains(allEngines, e) {
			return fmt.Errorf("bench: unknown engine %q (know %v)", e, allEngines)
		}
		c.engines = append(c.engines, e)
	}
	if *sweep != "" {
		for _, d := range strings.Split(*sweep, ",") {
			n, err := strconv.Atoi(d)
			if err != nil || n < 1 {
				return fmt.Errorf("bench: bad sweep depth %q", d)
			}
			c.sweep = append(c.sweep, n)
		}
	}
	if c.block < 1 || c.depth < 1 || c.batch < 1 || c.rounds < 1 || c.sweepRounds < 1 || c.size < int64(c.block) {
		return usageErrorf("bench: want positive -block, -depth, -batch, -rounds and -size >= -block")
	}
	return bench(c, os.Stdout)
}

func bench(c benchConfig, out io.Writer) error {
	hasFio := benchrun.FioAvailable()
	if !hasFio {
		fmt.Fprintln(out, "fio is not installed (./build.sh installs it; apt-get install fio): fio engines are skipped and ratios are to megaio-io_uring")
	}
	path := c.path
	if path == "" {
		fmt.Fprintf(out, "generating a %s file in %s ...\n", humanBytes(c.size), c.dir)
		p, err := benchrun.MakeFile(c.dir, c.size)
		if err != nil {
			return err
		}
		defer os.Remove(p)
		path = p
	}
	if c.path != "" && c.direct {
		// A file written moments before has dirty pages, and an O_DIRECT
		// read of them waits for their writeback: io_uring hands every
		// such read to its io-wq threads (block tracepoints showed 94% of
		// a run's reads issued from io-wq, at a fifth of the IOPS).
		if err := syncFile(c.path); err != nil {
			return err
		}
	}
	spec := benchrun.Spec{Path: path, Size: c.size, Block: c.block, Depth: c.depth, Batch: c.batch, RW: c.rw,
		Direct: c.direct, Duration: c.duration, Huge: c.huge}
	spec.Loop.Backoff.Linger = c.linger
	spec.Loop.CPUs = c.loopCPUs
	fmt.Fprintf(out, "workload: %s, %d-byte blocks, depth %d, batch %d, direct=%v, %v per run, %d rounds, file %s\n",
		c.rw, c.block, c.depth, c.batch, c.direct, c.duration, c.rounds, path)
	engines := c.engines
	if !hasFio {
		engines = slices.DeleteFunc(slices.Clone(engines), func(e string) bool { return strings.HasPrefix(e, "fio-") })
	}
	prog := newProgress(out, c, len(engines))
	fmt.Fprintf(out, "plan: %d rounds of %d engines (%s), %v each", c.rounds, len(engines), strings.Join(engines, ", "), c.duration)
	if len(c.sweep) > 0 {
		fmt.Fprintf(out, "; then a sweep of depths %v, %d rounds, %v each", c.sweep, c.sweepRounds, c.sweepDur)
	}
	fmt.Fprintf(out, ": %d runs, about %v\n", prog.runs, prog.estimate().Round(time.Second))

	var all []benchrun.Result
	for round := 1; round <= c.rounds; round++ {
		for _, e := range engines {
			prog.start(fmt.Sprintf("round %d/%d, %s", round, c.rounds, e), c.duration)
			r, err := runEngine(e, spec, hasFio)
			prog.end()
			if err != nil {
				return fmt.Errorf("%s: %w", e, err)
			}
			if r == nil {
				continue
			}
			r.Round = round
			fmt.Fprintf(out, "  round %d %-16s %10.0f IOPS %9.1f MB/s\n", round, e, r.IOPS, r.MBps)
			all = append(all, *r)
		}
	}
	table := summarize(all, hasFio)
	fmt.Fprintln(out)
	printTable(out, table, hasFio)
	if c.mdPath != "" {
		if err := writeMarkdown(c.mdPath, c, table, hasFio); err != nil {
			return err
		}
	}

	var sweep []benchrun.Result
	for round := 1; round <= max(c.sweepRounds, 1); round++ {
		for _, d := range c.sweep {
			s := spec
			s.Depth, s.Batch, s.Duration = d, min(c.batch, d), c.sweepDur
			for _, e := range engines {
				prog.start(fmt.Sprintf("sweep round %d/%d, depth %d, %s", round, c.sweepRounds, d, e), c.sweepDur)
				r, err := runEngine(e, s, hasFio)
				prog.end()
				if err != nil {
					return fmt.Errorf("sweep depth %d, %s: %w", d, e, err)
				}
				if r != nil {
					r.Round = round
					sweep = append(sweep, *r)
				}
			}
			fmt.Fprintf(out, "sweep round %d: depth %d done\n", round, d)
		}
	}
	if c.jsonPath != "" {
		data, _ := json.MarshalIndent(map[string]any{"workload": spec, "table_runs": all, "summary": table, "sweep": sweep,
			"date": time.Now().UTC().Format(time.RFC3339)}, "", " ")
		if err := os.WriteFile(c.jsonPath, append(data, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", c.jsonPath)
	}
	if len(sweep) > 0 && c.plotPath != "" {
		if err := drawSweep(c.plotPath, sweep, spec); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", c.plotPath)
	}
	return nil
}

// benchProgress says, before each run, which run it is and about how long the
// whole bench has left: one line redrawn in place on a terminal, a plain
// line each otherwise.
type benchProgress struct {
	out         io.Writer
	tty         bool
	runs, done  int
	left        time.Duration // the runs not yet done, at their nominal length
	began       time.Time     // the first run's start
	spent, plan time.Duration // done runs: time taken, and nominal length
}

// runOverhead is a run's cost beyond its duration (set-up, fio's start),
// for the first estimate; later ones scale by what the runs took.
const runOverhead = 300 * time.Millisecond

func newProgress(out io.Writer, c benchConfig, engines int) *benchProgress {
	p := &benchProgress{out: out, tty: isTerminal(out)}
	p.runs = c.rounds*engines + c.sweepRounds*len(c.sweep)*engines
	p.left = time.Duration(c.rounds*engines)*(c.duration+runOverhead) +
		time.Duration(c.sweepRounds*len(c.sweep)*engines)*(c.sweepDur+runOverhead)
	return p
}

// estimate is the time the runs left should take: their nominal length,
// scaled by how the runs so far compared with theirs.
func (p *benchProgress) estimate() time.Duration {
	if p.plan == 0 {
		return p.left
	}
	return time.Duration(float64(p.left) * float64(p.spent) / float64(p.plan))
}

func (p *benchProgress) start(what string, d time.Duration) {
	p.began = time.Now()
	line := fmt.Sprintf("[%d/%d] %s, about %v left", p.done+1, p.runs, what, p.estimate().Round(time.Second))
	if p.tty {
		fmt.Fprintf(p.out, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.out, line)
	}
	p.left -= d + runOverhead
	p.plan += d + runOverhead
}

func (p *benchProgress) end() {
	p.done++
	p.spent += time.Since(p.began)
	if p.tty {
		fmt.Fprint(p.out, "\r\033[K") // the result line takes its place
	}
}

// isTerminal reports whether w is a terminal (then progress redraws one
// line).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// placeOutputs puts the JSON and the plot, when given as bare names, in
// dir: -out, or a new temporary directory (so a run never litters the
// working directory).
func placeOutputs(c *benchConfig, dir string) error {
	bare := func(p string) bool { return p != "" && !strings.Contains(p, "/") }
	if !bare(c.jsonPath) && !bare(c.plotPath) {
		return nil
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "megaio-bench-")
		if err != nil {
			return err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range []*string{&c.jsonPath, &c.plotPath} {
		if bare(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	fmt.Printf("bench: results go to %s\n", dir)
	return nil
}

// runEngine runs one engine on s; nil when it cannot run here (no fio).
func runEngine(e string, s benchrun.Spec, hasFio bool) (*benchrun.Result, error) {
	var r benchrun.Result
	var err error
	switch e {
	case "megaio-io_uring":
		s.Backend = megaio.BackendIOUring
		r, err = benchrun.RunMegaio(s)
	case "megaio-gpu":
		s.Backend, s.Independent = megaio.BackendIOUring, true
		r, err = benchrun.RunMegaio(s)
	case "megaio-gpu-uring":
		s.Backend, s.Independent = megaio.BackendIOUring, true
		s.Loop.InlineMax = -1
		r, err = benchrun.RunMegaio(s)
	case "megaio-poll":
		s.Backend, s.Independent = megaio.BackendIOUring, true
		s.Loop.Backoff.Poll = true
		r, err = benchrun.RunMegaio(s)
	case "megaio-pool":
		s.Backend = megaio.BackendPool
		r, err = benchrun.RunMegaio(s)
	case "fio-io_uring", "fio-io_uring-standin", "fio-io_uring-batch", "fio-psync":
		if !hasFio {
			return nil, nil
		}
		r, err = benchrun.RunFio(s, strings.TrimPrefix(e, "fio-"))
	case "go":
		r, err = benchrun.RunGo(s)
	case "go-io_uring":
		r, err = benchrun.RunGoURing(s)
	}
	r.Engine = e
	return &r, err
}

// row is one engine's median over the rounds.
type row struct {
	Engine                                  string
	IOPS, MBps, P50, P99, CPU, LoopCPU      float64
	ProdCPU, Inflight, DiskBusy, DiskQueue  float64
	RunsMiB                                 float64
	IOPSRatio, P50Ratio, P99Ratio, CPURatio float64 // to the base engine; MB/s shares IOPS's ratio
	IOPSMin, IOPSMax                        float64 // the spread of the rounds
}

func median(v []float64) float64 {
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func summarize(all []benchrun.Result, hasFio bool) []row {
	var rows []row
	var order []string
	by := map[string][]benchrun.Result{}
	for _, r := range all {
		if _, ok := by[r.Engine]; !ok {
			order = append(order, r.Engine)
		}
		by[r.Engine] = append(by[r.Engine], r)
	}
	pick := func(rs []benchrun.Result, f func(benchrun.Result) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	for _, e := range order {
		rs := by[e]
		rows = append(rows, row{Engine: e,
			IOPS:      pick(rs, func(r benchrun.Result) float64 { return r.IOPS }),
			MBps:      pick(rs, func(r benchrun.Result) float64 { return r.MBps }),
			P50:       pick(rs, func(r benchrun.Result) float64 { return r.P50us }),
			P99:       pick(rs, func(r benchrun.Result) float64 { return r.P99us }),
			CPU:       pick(rs, func(r benchrun.Result) float64 { return r.CPUus }),
			LoopCPU:   pick(rs, func(r benchrun.Result) float64 { return r.LoopCPUus }),
			ProdCPU:   pick(rs, func(r benchrun.Result) float64 { return r.ProdCPUus }),
			Inflight:  pick(rs, func(r benchrun.Result) float64 { return r.Inflight }),
			DiskBusy:  pick(rs, func(r benchrun.Result) float64 { return r.DiskBusy }),
			DiskQueue: pick(rs, func(r benchrun.Result) float64 { return r.DiskQueue }),
			RunsMiB:   pick(rs, func(r benchrun.Result) float64 { return r.RunsMiB }),
			IOPSMin:   slices.MinFunc(rs, func(a, b benchrun.Result) int { return cmpFloat(a.IOPS, b.IOPS) }).IOPS,
			IOPSMax:   slices.MaxFunc(rs, func(a, b benchrun.Result) int { return cmpFloat(a.IOPS, b.IOPS) }).IOPS})
	}
	base := "fio-io_uring"
	if !hasFio {
		base = "megaio-io_uring"
	}
	for _, b := range rows {
		if b.Engine != base {
			continue
		}
		ratio := func(v, base float64) float64 {
			if base > 0 {
				return v / base
			}
			return 0
		}
		for i := range rows {
			rows[i].IOPSRatio = ratio(rows[i].IOPS, b.IOPS)
			rows[i].P50Ratio = ratio(rows[i].P50, b.P50)
			rows[i].P99Ratio = ratio(rows[i].P99, b.P99)
			rows[i].CPURatio = ratio(rows[i].CPU, b.CPU)
		}
	}
	return rows
}

func printTable(out io.Writer, rows []row, hasFio bool) {
	base := "fio-io_uring"
	if !hasFio {
		base = "megaio-io_uring"
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "engine\tIOPS\t(rounds)\tMB/s\tp50 µs\tp99 µs\tCPU µs/req\tloop\tproducers\tin flight\tdisk queue\tdisk busy\truns/MiB\t\tIOPS, MB/s\tp50\tp99\tCPU\t\n")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%.1f\t%.1f\t%.1f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t\t%s\t%s\t%s\t%s\t\n", r.Engine, r.IOPS,
			spread(r), r.MBps, r.P50, r.P99, r.CPU, loopCPU(r), opt(r.ProdCPU, "%.2f"), opt(r.Inflight, "%.1f"),
			opt(r.DiskQueue, "%.1f"), opt(100*r.DiskBusy, "%.0f%%"), opt(r.RunsMiB, "%.1f"), opt(r.IOPSRatio, "%.2fx"),
			opt(r.P50Ratio, "%.2fx"), opt(r.P99Ratio, "%.2fx"), opt(r.CPURatio, "%.2fx"))
	}
	w.Flush()
	fmt.Fprintf(out, "(the last four columns are ratios to %s)\n", base)
	fmt.Fprintln(out, "(medians over the rounds, the IOPS range beside them; CPU µs/req is what serving costs: megaio's excludes its producer threads (their own is the producers column), fio's is the whole fio process, go's the whole pool; loop is megaio's loop thread alone; in flight is megaio's mean by Little's law (claim to completion); disk queue is the requests at the file's disk on average and disk busy its busy share (direct runs, /proc/diskstats); runs/MiB are megaio's destination buffer's physically contiguous runs)")
	for _, n := range engineNotes {
		for _, r := range rows {
			if strings.HasPrefix(n, r.Engine+":") {
				fmt.Fprintln(out, "  "+n)
			}
		}
	}
}

func writeMarkdown(path string, c benchConfig, rows []row, hasFio bool) error {
	base := "fio-io_uring"
	if !hasFio {
		base = "megaio-io_uring"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| engine | IOPS | rounds | MB/s | p50 µs | p99 µs | CPU µs/req | loop | producers | in flight | disk queue | disk busy | runs/MiB | IOPS, MB/s vs %s | p50 vs | p99 vs | CPU vs |\n", base)
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.0f | %s | %.1f | %.1f | %.1f | %.2f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Engine,
			r.IOPS, spread(r), r.MBps, r.P50, r.P99, r.CPU, loopCPU(r), opt(r.ProdCPU, "%.2f"), opt(r.Inflight, "%.1f"),
			opt(r.DiskQueue, "%.1f"), opt(100*r.DiskBusy, "%.0f%%"), opt(r.RunsMiB, "%.1f"), opt(r.IOPSRatio, "%.2fx"),
			opt(r.P50Ratio, "%.2fx"), opt(r.P99Ratio, "%.2fx"), opt(r.CPURatio, "%.2fx"))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// opt formats v, or "-" when the engine does not report it (or, for a
// ratio, when its base engine did not run or report it).
func opt(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// spread is the rounds' IOPS range.
func spread(r row) string {
	if r.IOPSMin == r.IOPSMax {
		return "-"
	}
	return fmt.Sprintf("%.0f-%.0f", r.IOPSMin, r.IOPSMax)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func loopCPU(r row) string {
	if strings.HasPrefix(r.Engine, "megaio") {
		return fmt.Sprintf("%.2f", r.LoopCPU)
	}
	return "-"
}

// drawSweep plots IOPS against queue depth, one line per engine: the
// median of the sweep's rounds, with bars from the slowest to the fastest
// round. The x ticks are the depths measured, the y ticks read 10k, 1M;
// the legend sits above the data (the y axis has room for it), and the
// caption names the machine and the date.
func drawSweep(path string, sweep []benchrun.Result, s benchrun.Spec) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s, %d-byte blocks, direct=%v: IOPS by queue depth\n%s, %s (bars: the rounds' range)",
		s.RW, s.Block, s.Direct, machine(), time.Now().UTC().Format("2006-01-02"))
	p.X.Label.Text = "queue depth"
	p.Y.Label.Text = "IOPS"
	p.X.Scale = plot.LogScale{}
	p.Add(plotter.NewGrid())
	var order []string
	byEngine := map[string]map[int][]float64{}
	var depths []int
	for _, r := range sweep {
		if _, ok := byEngine[r.Engine]; !ok {
			order = append(order, r.Engine)
			byEngine[r.Engine] = map[int][]float64{}
		}
		byEngine[r.Engine][r.Depth] = append(byEngine[r.Engine][r.Depth], r.IOPS)
		if !slices.Contains(depths, r.Depth) {
			depths = append(depths, r.Depth)
		}
	}
	sort.Ints(depths)
	var ticks []plot.Tick
	for _, d := range depths {
		ticks = append(ticks, plot.Tick{Value: float64(d), Label: strconv.Itoa(d)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Tick.Marker = siTicks{}
	top := 0.0
	for i, e := range order {
		var pts plotter.XYs
		var errs plotter.YErrors
		for _, d := range depths {
			v := byEngine[e][d]
			if len(v) == 0 {
				continue
			}
			m := median(slices.Clone(v))
			lo, hi := slices.Min(v), slices.Max(v)
			pts = append(pts, plotter.XY{X: float64(d), Y: m})
			errs = append(errs, struct{ Low, High float64 }{m - lo, hi - m})
			top = max(top, hi)
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		k := slices.Index(allEngines, e) // an engine keeps its colour from plot to plot
		if k < 0 {
			k = i
		}
		c := engineColors[k%len(engineColors)]
		line.Color, points.Color = c, c
		points.Shape = plotutil.Shape(k)
		bars, err := plotter.NewYErrorBars(struct {
			plotter.XYer
			plotter.YErrorer
		}{pts, errs})
		if err != nil {
			return err
		}
		bars.Color = c
		p.Add(line, points, bars)
		p.Legend.Add(e, line, points)
	}
	p.Y.Min = 0
	p.Y.Max = top * (1.15 + 0.07*float64(len(order))) // room above the data for the legend
	p.Legend.Top = true
	p.Legend.Left = true
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}

// siTicks labels every tick of the y axis (the default labels only every
// fifth, two or three on a tall axis): 10k, 200k, 1.5M.
type siTicks struct{}

func (siTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		ts[i].Label = si(ts[i].Value)
	}
	return ts
}

// engineColors tell the ten engines apart (plotutil's palette has seven,
// so two engines shared a colour and only the marker told them apart).
var engineColors = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff},
	color.RGBA{0xe3, 0x77, 0xc2, 0xff}, color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, color.RGBA{0xbc, 0xbd, 0x22, 0xff},
	color.RGBA{0x17, 0xbe, 0xcf, 0xff},
}

func si(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// machine describes this machine for captions: CPUs and kernel.
func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	release := strings.SplitN(unix.ByteSliceToString(u.Release[:]), ".", 3) // "6.18": the build's own suffix says nothing useful
	if len(release) > 2 {
		release = release[:2]
	}
	return fmt.Sprintf("%d CPUs, Linux %s", runtime.NumCPU(), strings.Join(release, "."))
}

// syncFile writes back path's dirty pages (fsync works on a read-only
// descriptor).
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("bench: fsync %s: %w", path, err)
	}
	return nil
}
