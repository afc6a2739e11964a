package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/megaio/megaio"
)

// What `megaio check -for X` needs. Every capability is checked and
// printed; only these decide the exit status.
var checkNeeds = map[string][]string{
	"host": {"io_uring", "memlock"},
	"gpu":  {"io_uring", "memlock", "CUDA", "device"},
	"gds":  {"io_uring", "memlock", "CUDA", "device", "cuFile", "nvidia-fs"},
}

const checkHelp = `usage: megaio check [-for host|gpu|gds] [-json]

Says what this machine offers megaio, a line per capability: ok or no, what
was found, and for a no the fix. The exit status is 0 when everything the
configuration named by -for needs is there, 1 when something is missing, 2
for a bad flag:

  host  io_uring (the pool serves without it, slower) and RLIMIT_MEMLOCK of
        64 MiB or more, or CAP_IPC_LOCK (registered buffers count against it)
  gpu   host, and a CUDA driver with a GPU: device buffers can be made
  gds   gpu, and cuFile's driver with nvidia-fs loaded: GPUDirect Storage

hugepages, inline and seccomp are information only. cuFile's own messages
are kept off the terminal, and its log goes to a temporary file, removed
afterwards, not to the working directory.

flags:`

// capability is one line of the report (and one object of -json).
type capability struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"` // needed by the configuration checked
	Found    string `json:"found"`
	Fix      string `json:"fix,omitempty"`
}

// checkReport is what -json prints: one object.
type checkReport struct {
	Version      string       `json:"version"`
	ABIVersion   int          `json:"abi_version"`
	For          string       `json:"for"`
	OK           bool         `json:"ok"` // every required capability is ok
	Capabilities []capability `json:"capabilities"`
}

// runCheck is `megaio check`.
func runCheck(args []string) error {
	fs := newFlagSet("check")
	target := fs.String("for", "host", "the configuration whose needs decide the exit status: host, gpu or gds")
	asJSON := fs.Bool("json", false, "print one JSON object (version, for, ok, capabilities: name, ok, required, found, fix)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), checkHelp)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	needs, ok := checkNeeds[*target]
	if !ok {
		return usageErrorf("check: -for %q: want host, gpu or gds", *target)
	}
	rep := checkReport{Version: megaio.Version, ABIVersion: megaio.ABIVersion, For: *target, OK: true,
		Capabilities: probe()}
	var missing []string
	for i := range rep.Capabilities {
		c := &rep.Capabilities[i]
		for _, n := range needs {
			if c.Name == n {
				c.Required = true
			}
		}
		if c.Required && !c.OK {
			rep.OK = false
			missing = append(missing, c.Name)
		}
	}
	if *asJSON {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Println(string(data))
	} else {
		printCheck(os.Stdout, rep)
	}
	if !rep.OK {
		return fmt.Errorf("check: the %s configuration lacks %s", *target, strings.Join(missing, ", "))
	}
	return nil
}

// printCheck prints the report a line per capability: name, ok or no, what
// was found, and the fix of a no; a required one is marked.
func printCheck(w io.Writer, rep checkReport) {
	fmt.Fprintf(w, "megaio %s (queue ABI version %d); checking for %s (needs %s)\n", rep.Version, rep.ABIVersion,
		rep.For, strings.Join(checkNeeds[rep.For], ", "))
	for _, c := range rep.Capabilities {
		verdict := "ok"
		if !c.OK {
			verdict = "no"
		}
		mark := " "
		if c.Required {
			mark = "*"
		}
		fmt.Fprintf(w, "%s %-10s %-3s %s", mark, c.Name+":", verdict, c.Found)
		if !c.OK && c.Fix != "" {
			fmt.Fprintf(w, " (fix: %s)", c.Fix)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "(* needed for", rep.For+")")
}

// probe checks every capability.
func probe() []capability {
	var caps []capability
	add := func(name string, ok bool, found, fix string) {
		caps = append(caps, capability{Name: name, OK: ok, Found: found, Fix: fix})
	}

	l, err := megaio.NewLoop(nil, megaio.Config{Backend: megaio.BackendIOUring})
	if err == nil {
		add("io_uring", true, l.Backend().Description, "")
		l.Close()
	} else {
		fix := "run outside the container's default seccomp profile (README: Allowing io_uring in a container), or use the pool backend"
		var se *megaio.SetupError
		if errors.As(err, &se) && se.Hint != "" {
			fix = se.Hint
		}
		add("io_uring", false, strings.TrimPrefix(err.Error(), "megaio: ")+"; the worker pool serves instead", fix)
	}

	lockable, why := lockable()
	add("memlock", lockable >= 64<<20, why,
		"ulimit -l unlimited; systemd LimitMEMLOCK=infinity; docker run --ulimit memlock=-1")

	thp := strings.TrimSpace(readFile("/sys/kernel/mm/transparent_hugepage/enabled"))
	nr := strings.TrimSpace(readFile("/proc/sys/vm/nr_hugepages"))
	add("hugepages", strings.Contains(thp, "[always]") || strings.Contains(thp, "[madvise]"),
		fmt.Sprintf("transparent huge pages %q (buffers of 2 MiB or more ask for them); %s reserved 2 MiB pages (BufferOptions.Hugepages)", thp, nr),
		"echo madvise > /sys/kernel/mm/transparent_hugepage/enabled")

	add("inline", megaio.TmpfsInline(),
		"READs up to Config.InlineMax from ramfs and hugetlbfs files, and from tmpfs files while no swap is on, are copied by the loop instead of an io_uring worker",
		"swap is on: swapoff -a, or keep hot files on ramfs or hugetlbfs; tmpfs READs meanwhile go through io_uring's workers")

	seccomp := "none"
	for _, l := range strings.Split(readFile("/proc/self/status"), "\n") {
		if v, ok := strings.CutPrefix(l, "Seccomp:"); ok {
			seccomp = map[string]string{"0": "none", "1": "strict", "2": "a filter"}[strings.TrimSpace(v)]
		}
	}
	add("seccomp", true, seccomp+" on this process", "")

	var gpuErr, gdsErr error
	quietly(func() {
		var g *megaio.GPU
		if g, gpuErr = megaio.OpenGPU(0); gpuErr == nil {
			add("CUDA", true, fmt.Sprintf("%s, driver %d", g.Name(), g.DriverVersion()), "")
			g.Close()
		}
		gdsErr = megaio.CheckCuFile()
	})
	if gpuErr != nil {
		add("CUDA", false, strings.TrimPrefix(gpuErr.Error(), "megaio: "),
			"install the NVIDIA driver; in a container, run with the NVIDIA runtime (--gpus all)")
	}
	switch {
	case gpuErr != nil:
		add("device", false, "no GPU: device buffers cannot be made", "see CUDA")
	case gdsErr == nil:
		add("device", true, "device buffers: GPUDirect Storage for O_DIRECT files and aligned ranges, the bounce path for the rest", "")
	default:
		add("device", true, "device buffers: the bounce path (staging in host memory, then a copy to the GPU)", "")
	}
	switch {
	case gdsErr == nil:
		add("cuFile", true, "cuFile's driver opened", "")
	case gpuErr != nil: // cuFile needs the CUDA driver first
		add("cuFile", false, strings.TrimPrefix(gdsErr.Error(), "megaio: "), "see CUDA")
	default:
		add("cuFile", false, strings.TrimPrefix(gdsErr.Error(), "megaio: "),
			"install cuFile (libcufile); device buffers use the bounce path meanwhile")
	}
	if readFile("/proc/driver/nvidia-fs/stats") != "" {
		add("nvidia-fs", true, "the nvidia-fs module is loaded", "")
	} else {
		add("nvidia-fs", false, "the nvidia-fs module is not loaded (cuFile runs in compatibility mode without it)",
			"modprobe nvidia-fs (from the GDS packages)")
	}
	return caps
}

// lockable is how much memory this process may lock, and what says so:
// unlimited with CAP_IPC_LOCK or an infinite RLIMIT_MEMLOCK, else the limit.
func lockable() (int64, string) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) == nil && data[0].Effective&(1<<unix.CAP_IPC_LOCK) != 0 {
		return math.MaxInt64, "CAP_IPC_LOCK: no limit on locked memory (registered buffers count against RLIMIT_MEMLOCK otherwise)"
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) != nil || lim.Cur == unix.RLIM_INFINITY || lim.Cur > math.MaxInt64 {
		return math.MaxInt64, "RLIMIT_MEMLOCK unlimited (registered buffers count against it)"
	}
	return int64(lim.Cur), "RLIMIT_MEMLOCK " + humanBytes(int64(lim.Cur)) + " (registered buffers count against it)"
}

// quietly runs probe with what the CUDA driver and cuFile print (cuFile
// writes some of its errors to standard output) discarded, and cuFile's log (cufile.log in the working directory,
// unless CUFILE_LOGFILE_PATH says otherwise) in a temporary file it then
// removes. A log path the user set is left alone.
func quietly(probe func()) {
	if _, set := os.LookupEnv("CUFILE_LOGFILE_PATH"); !set {
		if dir, err := os.MkdirTemp("", "megaio-check-"); err == nil {
			defer os.RemoveAll(dir)
			os.Setenv("CUFILE_LOGFILE_PATH", filepath.Join(dir, "cufile.log"))
			defer os.Unsetenv("CUFILE_LOGFILE_PATH")
		}
	}
	null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		probe()
		return
	}
	defer unix.Close(null)
	os.Stdout.Sync()
	for _, fd := range []int{1, 2} {
		if saved, err := unix.Dup(fd); err == nil {
			unix.Dup3(null, fd, 0)
			defer unix.Close(saved)
			defer unix.Dup3(saved, fd, 0)
		}
	}
	probe()
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
