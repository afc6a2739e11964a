package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
)

// runCheck is `megaio check`: what this machine offers megaio, one line per
// capability, each "no" with the one thing to do about it.
func runCheck(args []string) error {
	fs := newFlagSet("check")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	check(os.Stdout)
	return nil
}

// check prints a line per capability: name, ok or no, what was found, and
// for a no, how to fix it.
func check(w io.Writer) {
	line := func(name string, ok bool, found, fix string) {
		verdict := "ok"
		if !ok {
			verdict = "no"
		}
		fmt.Fprintf(w, "%-10s %-3s %s", name+":", verdict, found)
		if !ok && fix != "" {
			fmt.Fprintf(w, " (fix: %s)", fix)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "megaio %s (queue ABI version %d)\n", megaio.Version, megaio.ABIVersion)

	l, err := megaio.NewLoop(nil, megaio.Config{Backend: megaio.BackendIOUring})
	if err == nil {
		line("io_uring", true, l.Backend().Description, "")
		l.Close()
	} else {
		fix := "run outside the container's default seccomp profile (README: Allowing io_uring in a container), or use the pool backend"
		var se *megaio.SetupError
		if errors.As(err, &se) && se.Hint != "" {
			fix = se.Hint
		}
		line("io_uring", false, strings.TrimPrefix(err.Error(), "megaio: ")+"; the worker pool serves instead", fix)
	}

	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil {
		cur := "unlimited"
		if lim.Cur != unix.RLIM_INFINITY {
			cur = humanBytes(int64(lim.Cur))
		}
		ok := lim.Cur == unix.RLIM_INFINITY || lim.Cur >= 64<<20
		line("memlock", ok, "RLIMIT_MEMLOCK "+cur+" (registered buffers count against it)",
			"ulimit -l unlimited; systemd LimitMEMLOCK=infinity; docker run --ulimit memlock=-1")
	}

	thp := strings.TrimSpace(readFile("/sys/kernel/mm/transparent_hugepage/enabled"))
	nr := strings.TrimSpace(readFile("/proc/sys/vm/nr_hugepages"))
	line("hugepages", strings.Contains(thp, "[always]") || strings.Contains(thp, "[madvise]"),
		fmt.Sprintf("transparent huge pages %q (buffers of 2 MiB or more ask for them); %s reserved 2 MiB pages (BufferOptions.Hugepages)", thp, nr),
		"echo madvise > /sys/kernel/mm/transparent_hugepage/enabled")

	line("inline", megaio.TmpfsInline(),
		"READs up to Config.InlineMax from ramfs and hugetlbfs files, and from tmpfs files while no swap is on, are copied by the loop instead of an io_uring worker",
		"swap is on: swapoff -a, or keep hot files on ramfs or hugetlbfs; tmpfs READs meanwhile go through io_uring's workers")

	seccomp := "none"
	for _, l := range strings.Split(readFile("/proc/self/status"), "\n") {
		if v, ok := strings.CutPrefix(l, "Seccomp:"); ok {
			seccomp = map[string]string{"0": "none", "1": "strict", "2": "a filter"}[strings.TrimSpace(v)]
		}
	}
	line("seccomp", true, seccomp+" on this process", "")

	g, err := megaio.OpenGPU(0)
	if err == nil {
		line("CUDA", true, fmt.Sprintf("%s, driver %d", g.Name(), g.DriverVersion()), "")
		g.Close()
	} else {
		line("CUDA", false, strings.TrimPrefix(err.Error(), "megaio: "), "install the NVIDIA driver; in a container, run with the NVIDIA runtime (--gpus all)")
	}
	nvfs := readFile("/proc/driver/nvidia-fs/stats") != ""
	gdsErr := megaio.CheckCuFile()
	if gdsErr == nil {
		line("cuFile", true, "cuFile's driver opened; nvidia-fs "+map[bool]string{true: "loaded", false: "not loaded (compatibility mode)"}[nvfs], "")
	} else {
		line("cuFile", false, strings.TrimPrefix(gdsErr.Error(), "megaio: "),
			"install cuFile (libcufile) and load nvidia-fs; device buffers use the bounce path meanwhile")
	}
	path := "bounce (staging chunks in host memory, then a copy to the GPU)"
	if err == nil && gdsErr == nil { // a GPU, and cuFile serves
		path = "GPUDirect Storage for O_DIRECT files and aligned ranges, bounce for the rest"
	}
	line("device", true, "a device buffer would be served by "+path, "")
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
