package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/megaio/megaio"
)

// sizeValue is a flag holding a byte count that accepts units: 4096, 4K,
// 4KiB, 1M, 1MiB, 2G, 2GiB (binary multiples; K, M and G mean KiB, MiB and
// GiB, as in fio and dd).
type sizeValue struct{ p *int64 }

func (v sizeValue) String() string {
	if v.p == nil {
		return ""
	}
	return humanBytes(*v.p)
}

func (v sizeValue) Set(s string) error {
	n, err := megaio.ParseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

// humanBytes prints n in the largest binary unit that keeps it exact, or
// with one decimal beyond 1 MiB: 4 KiB, 1.5 MiB, 256 MiB, 4096 B.
func humanBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			if n%u.size == 0 {
				return fmt.Sprintf("%d %s", n/u.size, u.name)
			}
			if u.size >= 1<<20 {
				return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.name)
			}
		}
	}
	return fmt.Sprintf("%d B", n)
}

// latency prints a histogram percentile with the precision the histogram
// has (buckets a quarter octave wide, about 19%): two significant digits.
func latency(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	units := []struct {
		name string
		size time.Duration
	}{{"s", time.Second}, {"ms", time.Millisecond}, {"µs", time.Microsecond}, {"ns", 1}}
	for _, u := range units {
		if d >= u.size {
			v := float64(d) / float64(u.size)
			e := math.Floor(math.Log10(v)) // v is 1 to 999
			v = math.Round(v/math.Pow(10, e-1)) * math.Pow(10, e-1)
			return strconv.FormatFloat(v, 'f', max(0, 1-int(e)), 64) + u.name
		}
	}
	return d.String()
}

// cpusValue is a flag holding a CPU list (megaio.ParseCPUs): "1", "0,2",
// "2-3,6".
type cpusValue struct{ p *[]int }

func (v cpusValue) String() string {
	if v.p == nil {
		return ""
	}
	return formatCPUs(*v.p)
}

func (v cpusValue) Set(s string) error {
	cpus, err := megaio.ParseCPUs(s)
	if err != nil {
		return err
	}
	*v.p = cpus
	return nil
}

// formatCPUs writes cpus as a comma-separated list.
func formatCPUs(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}
