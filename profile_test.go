package megaio

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

// TestSeccompProfile checks deploy/seccomp-io_uring.json: an allowlist that
// admits io_uring and what ordinary programs need, and keeps out what
// Docker's default profile keeps out.
func TestSeccompProfile(t *testing.T) {
	raw, err := os.ReadFile("deploy/seccomp-io_uring.json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		DefaultAction string `json:"defaultAction"`
		Syscalls      []struct {
			Names  []string `json:"names"`
			Action string   `json:"action"`
			Args   []any    `json:"args"`
		} `json:"syscalls"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("the profile is not valid JSON: %v", err)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Errorf("defaultAction = %q, want an allowlist (SCMP_ACT_ERRNO)", p.DefaultAction)
	}
	var allowed []string
	for _, s := range p.Syscalls {
		if s.Action == "SCMP_ACT_ALLOW" && len(s.Args) == 0 {
			allowed = append(allowed, s.Names...)
		}
	}
	for _, name := range []string{"io_uring_setup", "io_uring_enter", "io_uring_register", "read", "pread64",
		"openat", "mmap", "futex", "fdatasync", "epoll_pwait", "rt_sigreturn", "exit_group"} {
		if !slices.Contains(allowed, name) {
			t.Errorf("%s is not allowed", name)
		}
	}
	for _, name := range []string{"mount", "ptrace", "bpf", "kexec_load", "unshare", "setns", "init_module",
		"perf_event_open", "keyctl", "clone", "clone3", "personality"} {
		if slices.Contains(allowed, name) {
			t.Errorf("%s is allowed unconditionally", name)
		}
	}
}
