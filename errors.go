package megaio

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Match them with errors.Is; the errors megaio returns wrap
// them with the detail (the failing step, the errno, the limit).
var (
	// ErrIOUringUnavailable: the kernel refused io_uring (no io_uring in the
	// kernel, kernel.io_uring_disabled, or a seccomp profile such as
	// Docker's default since 25.0).
	ErrIOUringUnavailable = errors.New("megaio: io_uring is unavailable")
	// ErrMemlock: RLIMIT_MEMLOCK is too low for the registered buffers.
	ErrMemlock = errors.New("megaio: RLIMIT_MEMLOCK is too low for registered buffers")
	// ErrConfig: a Config, QueueConfig or argument is out of range.
	ErrConfig = errors.New("megaio: bad configuration")
	// ErrBadQueue: memory handed to AttachQueue does not hold a queue of this ABI.
	ErrBadQueue = errors.New("megaio: not a megaio queue of this ABI version")
	// ErrClosed: the Loop or Queue was closed.
	ErrClosed = errors.New("megaio: closed")
	// ErrRunning: the call needs a stopped loop.
	ErrRunning = errors.New("megaio: loop is running")
	// ErrInUse: something the call would take or free is held elsewhere;
	// release it first. Where it comes from:
	//   - NewLoop, Loop.AddQueue: the queue already has a loop;
	//   - Queue.Close: a loop is attached to the queue;
	//   - GPU.Close: host regions are still mapped for the GPU (close the loop);
	//   - Loop.MapForGPU, NewDeviceBuffer, RegisterDeviceMemory: the loop is
	//     already tied to a GPU (one GPU per loop);
	//   - Loop.AddDestination: the buffer is the loop's own (staging).
	// The message names which.
	ErrInUse = errors.New("megaio: in use")
	// ErrTableFull: every file or buffer slot of the loop is taken.
	ErrTableFull = errors.New("megaio: table full")
	// ErrNotRegistered: the file, buffer or destination handle is unknown.
	ErrNotRegistered = errors.New("megaio: not registered")
	// ErrStopped: the queue's loop stopped; the request was not served
	// (HostProducer.Submit took no ticket; Wait's request stays published
	// and is served once a loop starts on the queue again).
	ErrStopped = errors.New("megaio: queue stopped")
	// ErrFull: the queue's ring is full (HostProducer.TrySubmit): the loop
	// has not yet claimed the requests published a lap back.
	ErrFull = errors.New("megaio: queue ring full")
	// ErrCgoRequired: the package was built without cgo (CGO_ENABLED=0 or
	// no C compiler); loops, clients and GPUs need cgo and liburing.
	ErrCgoRequired = errors.New("megaio: built without cgo: loops and GPUs need cgo and liburing " +
		"(CGO_ENABLED=1, a C compiler and liburing-dev)")
	// ErrAppendWriteAt: WriteAt on a file opened with O_APPEND, where the
	// kernel would ignore the offset: refused, as os.File refuses it.
	ErrAppendWriteAt = errors.New("megaio: WriteAt on a file opened with O_APPEND")
	// ErrBusy: every completion id is held by a request not yet collected.
	ErrBusy = errors.New("megaio: no free completion id")
	// ErrUnknownTicket: the ticket is not in flight on this producer
	// (already collected, or from another producer).
	ErrUnknownTicket = errors.New("megaio: ticket not in flight")
	// ErrStopIncomplete: Stop's deadline and grace (Config.StopGrace)
	// passed with requests still in the kernel: IO at the device that no
	// cancel reaches (a deep O_DIRECT queue), or a wait the kernel does not
	// interrupt (a hung network or FUSE file system). The loop has not
	// stopped: those requests may still write into their buffers, which
	// stay mapped; requests published meanwhile complete with -ECANCELED;
	// Start and Close refuse until they are out; Stop again waits for them.
	ErrStopIncomplete = errors.New("megaio: requests still in the kernel after Stop")
	// ErrRingFailed: the loop's ring failed; every claimed request was
	// completed with -EIO. Loop.Err returns the cause.
	ErrRingFailed = errors.New("megaio: io_uring ring failed")
)

// SetupError says which step of ring or buffer set-up failed and why.
// errors.Is matches both its Kind (a sentinel above) and its Errno.
type SetupError struct {
	Step  string     // what was being done, e.g. "io_uring_setup"
	Errno unix.Errno // the kernel's answer
	Kind  error      // ErrIOUringUnavailable, ErrMemlock, ...
	Hint  string     // what to do about it
}

func (e *SetupError) Error() string {
	msg := fmt.Sprintf("%v: %s: %v", e.Kind, e.Step, e.Errno)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

func (e *SetupError) Is(target error) bool { return target == e.Kind }
func (e *SetupError) Unwrap() error        { return e.Errno }

// errPrefix starts every error message of the package, once.
const errPrefix = "megaio: "

// errorf is fmt.Errorf for the package's errors. Call sites write the
// message without the prefix; errorf puts "megaio: " at its start, once,
// and drops the prefixes of the package's errors it wraps from the text
// (errors.Is and errors.As still see them).
func errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &prefixed{msg: errPrefix + strings.ReplaceAll(err.Error(), errPrefix, ""), err: err}
}

// prefixed is an error whose message errorf rewrote.
type prefixed struct {
	msg string
	err error
}

func (e *prefixed) Error() string { return e.msg }
func (e *prefixed) Unwrap() error { return e.err }

func configError(format string, args ...any) error {
	return errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// memlockHint names the limit and how to raise it.
func memlockHint() string {
	var lim unix.Rlimit
	cur := "unknown"
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil {
		if lim.Cur == unix.RLIM_INFINITY {
			cur = "unlimited"
		} else {
			cur = fmt.Sprintf("%d KiB", lim.Cur/1024)
		}
	}
	return "RLIMIT_MEMLOCK is " + cur + "; raise it (ulimit -l unlimited, systemd LimitMEMLOCK=infinity, " +
		"docker run --ulimit memlock=-1) or run with CAP_IPC_LOCK"
}

// CUDA errors. A CUresult matches these with errors.Is.
var (
	// ErrNoDriver: libcuda.so.1 could not be loaded (no NVIDIA driver, or
	// a container started without --gpus).
	ErrNoDriver = errors.New("megaio: the CUDA driver (libcuda.so.1) cannot be loaded; install the NVIDIA driver, " +
		"or start the container with --gpus all")
	// ErrNoDevice: the driver loaded but sees no GPU (CUDA_ERROR_NO_DEVICE),
	// or the ordinal is out of range.
	ErrNoDevice = errors.New("megaio: no CUDA device; check nvidia-smi and CUDA_VISIBLE_DEVICES")
	// ErrAlreadyRegistered: host memory is already registered with CUDA
	// (CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED).
	ErrAlreadyRegistered = errors.New("megaio: host memory is already registered with CUDA")
	// ErrNotRegisteredCUDA: host memory is not registered with CUDA
	// (CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED).
	ErrNotRegisteredCUDA = errors.New("megaio: host memory is not registered with CUDA")
)

// ErrGDSUnavailable: GPUDirect Storage cannot serve a buffer or file: no
// libcufile.so.0, no nvidia-fs driver or platform support, a file system
// cuFile refuses, or a file not opened with O_DIRECT. With DevicePathAuto
// the bounce path serves instead (and says so); with DevicePathGDS it is
// an error.
var ErrGDSUnavailable = errors.New("megaio: GPUDirect Storage (cuFile) is unavailable")
