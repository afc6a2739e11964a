package megaio

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Settings that operators change without recompiling come from the
// environment. A Config (or ClientConfig) field left at its zero value takes
// the variable's value; a field the program sets wins. A value that does
// not parse is an error wrapping ErrConfig that names the variable: a typo
// is never silently ignored.
//
//	variable              field                        values
//	MEGAIO_BACKEND        Config.Backend               auto, io_uring, pool
//	MEGAIO_POOL_WORKERS   Config.PoolWorkers           a count, 1 to 1024
//	MEGAIO_DEVICE_PATH    Config.Device.Path           auto, gds, bounce
//	MEGAIO_GDS_THRESHOLD  Config.Device.GDSThreshold   a size: 0, 4096, 64KiB, 1MiB
//	MEGAIO_INLINE_MAX     Config.InlineMax             a size, or off
//	MEGAIO_LOOP_CPUS      Config.CPUs                  a CPU list: 1, 0,2, 2-3
//	MEGAIO_TASK_SIZE      ClientConfig.TaskSize        a size (Client: the piece of a split request)
//
// NewLoop applies all but the last; NewClient all.
const (
	EnvBackend       = "MEGAIO_BACKEND"
	EnvPoolWorkers   = "MEGAIO_POOL_WORKERS"
	EnvDevicePath    = "MEGAIO_DEVICE_PATH"
	EnvGDSThreshold  = "MEGAIO_GDS_THRESHOLD"
	EnvInlineMax     = "MEGAIO_INLINE_MAX"
	EnvLoopCPUs      = "MEGAIO_LOOP_CPUS"
	EnvTaskSize      = "MEGAIO_TASK_SIZE"
	maxEnvPoolWorker = 1024
)

// withEnv fills the zero fields of c that have a variable set.
func (c Config) withEnv() (Config, error) {
	var err error
	if v, ok := lookupEnv(EnvBackend); ok && c.Backend == BackendAuto {
		if c.Backend, err = ParseBackend(v); err != nil {
			return c, envError(EnvBackend, v, err)
		}
	}
	if v, ok := lookupEnv(EnvPoolWorkers); ok && c.PoolWorkers == 0 {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEnvPoolWorker {
			return c, envError(EnvPoolWorkers, v, fmt.Errorf("want a count from 1 to %d", maxEnvPoolWorker))
		}
		c.PoolWorkers = n
	}
	if v, ok := lookupEnv(EnvDevicePath); ok && c.Device.Path == DevicePathAuto {
		if c.Device.Path, err = ParseDevicePath(v); err != nil {
			return c, envError(EnvDevicePath, v, err)
		}
	}
	if err := envSize(EnvGDSThreshold, &c.Device.GDSThreshold); err != nil {
		return c, err
	}
	if v, ok := lookupEnv(EnvLoopCPUs); ok && c.CPUs == nil {
		if c.CPUs, err = ParseCPUs(v); err != nil {
			return c, envError(EnvLoopCPUs, v, err)
		}
	}
	if v, ok := lookupEnv(EnvInlineMax); ok && strings.EqualFold(v, "off") && c.InlineMax == 0 {
		c.InlineMax = -1
	} else if err := envSize(EnvInlineMax, &c.InlineMax); err != nil {
		return c, err
	}
	return c, nil
}

// envSize sets *field from the size in variable name when *field is zero.
func envSize(name string, field *int) error {
	v, ok := lookupEnv(name)
	if !ok || *field != 0 {
		return nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return envError(name, v, err)
	}
	*field = int(n)
	return nil
}

func lookupEnv(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// envError names the variable; err's own "bad configuration" prefix is
// not repeated.
func envError(name, value string, err error) error {
	return configError("%s=%q: %s", name, value, strings.TrimPrefix(err.Error(), ErrConfig.Error()+": "))
}

// ParseSize reads a byte count with an optional binary unit: 4096, 4K,
// 4KiB, 1M, 1MiB, 2G, 2GiB (K, M and G mean KiB, MiB and GiB, as in fio
// and dd). The error wraps ErrConfig.
func ParseSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	mult := map[string]int64{"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20,
		"G": 1 << 30, "GIB": 1 << 30}[strings.ToUpper(strings.TrimSpace(s[i:]))]
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || mult == 0 || n > (1<<62)/mult {
		return 0, configError("size %q: want a byte count such as 4096, 4KiB, 1MiB or 2GiB", s)
	}
	return n * mult, nil
}

// ParseCPUs reads a CPU list as taskset and fio write it: CPUs and
// ranges, comma-separated ("1", "0,2", "2-3,6"). The error wraps
// ErrConfig.
func ParseCPUs(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= maxCPU {
			return nil, configError("CPU list %q: want CPUs from 0 to %d and ranges, such as 1 or 0,2-3", s, maxCPU-1)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
