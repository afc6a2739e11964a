package megaio_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
	"github.com/megaio/megaio/internal/benchrun"
)

// The IO benchmarks: random 4 KiB READs at depth 1, 32 and 128, 1 MiB
// sequential READs, and WRITEs of 4 KiB and 1 MiB, each on a tmpfs file
// (CPU-bound: these machines evict the disk's page cache within seconds)
// and on a disk file with O_DIRECT. They report IOPS, MB/s, p50 and p99
// latency (publish to result), the loop thread's CPU time per request and
// allocations per request. Side-by-side comparisons with fio and plain Go
// are `megaio bench`'s job.

type ioCase struct {
	name  string
	rw    string
	block int
	depth int
}

var ioCases = []ioCase{
	{"read-4KiB-rand/depth=1", "randread", 4096, 1},
	{"read-4KiB-rand/depth=32", "randread", 4096, 32},
	{"read-4KiB-rand/depth=128", "randread", 4096, 128},
	{"read-1MiB-seq/depth=8", "read", 1 << 20, 8},
	{"write-4KiB-rand/depth=32", "randwrite", 4096, 32},
	{"write-1MiB-seq/depth=8", "write", 1 << 20, 8},
}

func BenchmarkIO(b *testing.B) {
	const size = 256 << 20
	for _, fs := range []struct {
		name   string
		dir    string
		direct bool
	}{{"tmpfs", "/dev/shm", false}, {"direct", os.TempDir(), true}} {
		b.Run(fs.name, func(b *testing.B) {
			var st unix.Statfs_t
			if fs.direct && unix.Statfs(fs.dir, &st) == nil && st.Type == unix.TMPFS_MAGIC {
				b.Skipf("skipping: %s is tmpfs; set TMPDIR to a disk directory for O_DIRECT", fs.dir)
			}
			path, err := benchrun.MakeFile(fs.dir, size)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.Remove(path) })
			for _, c := range ioCases {
				b.Run(c.name, func(b *testing.B) {
					s := benchrun.Spec{Path: path, Size: size, Block: c.block, Depth: c.depth, RW: c.rw, Direct: fs.direct,
						Backend: megaio.BackendIOUring}
					runSpec(b, s)
				})
			}
		})
	}
}

func runSpec(b *testing.B, s benchrun.Spec) {
	b.ReportAllocs()
	s.Requests = int64(b.N)
	r, err := benchrun.RunMegaio(s)
	if errors.Is(err, unix.EINVAL) && s.Direct {
		b.Skipf("skipping: the file system refuses O_DIRECT: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.IOPS, "IOPS")
	b.ReportMetric(r.MBps, "MB/s")
	b.ReportMetric(r.P50us, "p50-µs")
	b.ReportMetric(r.P99us, "p99-µs")
	b.ReportMetric(r.LoopCPUus, "loop-CPU-µs/req")
	b.ReportMetric(0, "ns/op") // wall time per request is 1/IOPS; depth makes ns/op misleading
}

// BenchmarkNOPThroughput: NOPs through one loop at depth 256, from one host
// producer: the loop's own ceiling.
func BenchmarkNOPThroughput(b *testing.B) {
	s := benchrun.Spec{RW: "nop", Block: 1, Depth: 256, Batch: 64, Backend: megaio.BackendIOUring, Duration: time.Second}
	runSpec(b, s)
}
