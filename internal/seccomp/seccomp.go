// Package seccomp installs a seccomp filter that refuses io_uring, the way
// Docker's default profile (since 25.0), Kubernetes' RuntimeDefault and
// kernel.io_uring_disabled do. megaio's tests and demo use it to run the
// refusal for real; it needs no root (it sets no_new_privs first).
package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Classic BPF opcodes and seccomp return values (linux/filter.h,
// linux/seccomp.h).
const (
	bpfLdWAbs  = 0x20 // BPF_LD | BPF_W | BPF_ABS
	bpfJeqK    = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	bpfRetK    = 0x06 // BPF_RET | BPF_K
	retAllow   = 0x7fff0000
	offsetNr   = 0 // offsetof(struct seccomp_data, nr)
	offsetArch = 4 // offsetof(struct seccomp_data, arch)
)

// auditArch is the AUDIT_ARCH_* of the running architecture.
var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}

// DenyIOUring makes io_uring_setup, io_uring_enter and io_uring_register
// fail with EPERM in every thread of the process, now and later. It cannot
// be undone.
func DenyIOUring() error {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		return fmt.Errorf("seccomp: no audit arch known for %s", runtime.GOARCH)
	}
	deny := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	prog := []unix.SockFilter{
		{Code: bpfLdWAbs, K: offsetArch},
		{Code: bpfJeqK, Jt: 1, Jf: 0, K: arch}, // native arch: check the number
		{Code: bpfRetK, K: retAllow},
		{Code: bpfLdWAbs, K: offsetNr},
		{Code: bpfJeqK, Jt: 3, K: unix.SYS_IO_URING_SETUP},
		{Code: bpfJeqK, Jt: 2, K: unix.SYS_IO_URING_ENTER},
		{Code: bpfJeqK, Jt: 1, K: unix.SYS_IO_URING_REGISTER},
		{Code: bpfRetK, K: retAllow},
		{Code: bpfRetK, K: deny},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: setting no_new_privs: %w", err)
	}
	// TSYNC applies the filter to every thread of the process, not only
	// the calling one: the Go runtime runs code on many threads.
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("seccomp: installing the filter: %w", e)
	}
	runtime.KeepAlive(prog)
	return nil
}
