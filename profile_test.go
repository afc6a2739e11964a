package megaio

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// runtimeProfiles are where the container runtimes' default seccomp profile
// is found, the input of scripts/gen-seccomp-profile.py: where Debian's
// golang-github-containers-common package installs it, or where ./build.sh
// test extracts it from that package.
var runtimeProfiles = []string{"/usr/share/containers/seccomp.json", "build/runtime-seccomp.json"}

// TestSeccompProfile: deploy/seccomp-io_uring.json is the runtime's default
// profile plus one rule allowing the three io_uring calls, and nothing
// else: what a container user can audit with a diff.
func TestSeccompProfile(t *testing.T) {
	read := func(path string) map[string]any {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (./build.sh test extracts it from Debian's golang-github-containers-common)", err)
		}
		var p map[string]any
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatalf("%s is not valid JSON: %v", path, err)
		}
		return p
	}
	runtimeProfile := ""
	for _, p := range runtimeProfiles {
		if _, err := os.Stat(p); err == nil {
			runtimeProfile = p
			break
		}
	}
	if runtimeProfile == "" {
		// A plain `go test ./...` on a fresh clone has neither; ./build.sh
		// test fetches it and sets MEGAIO_REQUIRE_RUNTIME_PROFILE.
		why := fmt.Sprintf("the container runtimes' default seccomp profile is not at %s (./build.sh test extracts "+
			"it from Debian's golang-github-containers-common)", strings.Join(runtimeProfiles, " or "))
		if os.Getenv("MEGAIO_REQUIRE_RUNTIME_PROFILE") != "" {
			t.Fatal(why)
		}
		t.Skip("skipping: " + why)
	}
	t.Logf("the runtime's default profile: %s", runtimeProfile)
	in, out := read(runtimeProfile), read("deploy/seccomp-io_uring.json")
	rules, _ := out["syscalls"].([]any)
	if len(rules) == 0 {
		t.Fatal("the profile has no rules")
	}
	last, _ := rules[len(rules)-1].(map[string]any)
	want := map[string]any{"names": []any{"io_uring_enter", "io_uring_register", "io_uring_setup"}, "action": "SCMP_ACT_ALLOW"}
	if !reflect.DeepEqual(last, want) {
		t.Errorf("the last rule is %v, want %v", last, want)
	}
	out["syscalls"] = rules[:len(rules)-1]
	if !reflect.DeepEqual(in, out) {
		t.Errorf("deploy/seccomp-io_uring.json differs from %s by more than the io_uring rule: run scripts/gen-seccomp-profile.py", runtimeProfile)
	}
	for _, r := range in["syscalls"].([]any) {
		names, _ := r.(map[string]any)["names"].([]any)
		for _, n := range names {
			if slices.Contains([]any{"io_uring_enter", "io_uring_register", "io_uring_setup"}, n) {
				t.Errorf("the runtime's profile already names %v: the io_uring rule would not be what changed", n)
			}
		}
	}
}
