package megaio

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBundleDiscovery runs scripts/cuda-env.sh, which the GPU bundle uses
// to find nvcc and cuFile, against made-up layouts of every place they
// live: the CUDA 13 wheel (nvidia/cu13), the CUDA 12 wheel
// (nvidia/cufile), a toolkit's lib64 and targets/x86_64-linux, and nvcc
// only under $CUDA_HOME/bin.
func TestBundleDiscovery(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatalf("python3 is needed to find the wheels, as on the GPU machine: %v", err)
	}
	touch := func(paths ...string) {
		for _, p := range paths {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("#!/bin/sh\necho 'Cuda compilation tools, release 13.0'\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// find runs fn of cuda-env.sh with env (and an empty CUDA_HOME unless
	// set) and returns what it printed.
	find := func(fn string, env ...string) string {
		cmd := exec.Command("bash", "-c", ". scripts/cuda-env.sh && "+fn)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "CUDA_HOME=" + t.TempDir()}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", fn, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, c := range []struct {
		name  string
		files []string // under the temporary root
		env   []string // $ROOT is replaced
		inc   string
		lib   string
	}{
		{"CUDA 13 wheel", []string{"site/nvidia/cu13/include/cufile.h", "site/nvidia/cu13/lib/libcufile.so.0"},
			[]string{"PYTHONPATH=$ROOT/site"}, "site/nvidia/cu13/include", "site/nvidia/cu13/lib"},
		{"CUDA 12 wheel", []string{"site/nvidia/cufile/include/cufile.h", "site/nvidia/cufile/lib/libcufile.so.0"},
			[]string{"PYTHONPATH=$ROOT/site"}, "site/nvidia/cufile/include", "site/nvidia/cufile/lib"},
		{"toolkit lib64", []string{"cuda/include/cufile.h", "cuda/lib64/libcufile.so.0"},
			[]string{"CUDA_HOME=$ROOT/cuda"}, "cuda/include", "cuda/lib64"},
		{"toolkit targets", []string{"cuda/targets/x86_64-linux/include/cufile.h", "cuda/targets/x86_64-linux/lib/libcufile.so.0"},
			[]string{"CUDA_HOME=$ROOT/cuda"}, "cuda/targets/x86_64-linux/include", "cuda/targets/x86_64-linux/lib"},
		{"CUFILE_HOME beats a wheel", []string{"cf/include/cufile.h", "cf/lib64/libcufile.so.0",
			"site/nvidia/cu13/include/cufile.h", "site/nvidia/cu13/lib/libcufile.so.0"},
			[]string{"CUFILE_HOME=$ROOT/cf", "PYTHONPATH=$ROOT/site"}, "cf/include", "cf/lib64"},
		{"a header without its library is no cuFile", []string{"site/nvidia/cu13/include/cufile.h",
			"cuda/targets/x86_64-linux/include/cufile.h", "cuda/targets/x86_64-linux/lib/libcufile.so.0"},
			[]string{"PYTHONPATH=$ROOT/site", "CUDA_HOME=$ROOT/cuda"}, "cuda/targets/x86_64-linux/include",
			"cuda/targets/x86_64-linux/lib"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range c.files {
				touch(filepath.Join(root, f))
			}
			var env []string
			for _, e := range c.env {
				env = append(env, strings.ReplaceAll(e, "$ROOT", root))
			}
			want := filepath.Join(root, c.inc) + " " + filepath.Join(root, c.lib)
			if got := find("megaio_find_cufile", env...); got != want {
				t.Errorf("megaio_find_cufile = %q, want %q", got, want)
			}
		})
	}
	t.Run("nvcc only under CUDA_HOME", func(t *testing.T) {
		root := t.TempDir()
		touch(filepath.Join(root, "cuda/bin/nvcc"), filepath.Join(root, "cuda/include/cuda.h"))
		got := find("megaio_find_nvcc; megaio_find_cuda_include", "CUDA_HOME="+root+"/cuda", "PATH=/nonexistent")
		if want := root + "/cuda/bin/nvcc\n" + root + "/cuda/include"; got != want {
			t.Errorf("found %q, want %q", got, want)
		}
	})
	t.Run("architectures", func(t *testing.T) {
		root := t.TempDir()
		nvcc := filepath.Join(root, "nvcc")
		os.WriteFile(nvcc, []byte("#!/bin/sh\nprintf 'compute_75\\ncompute_80\\ncompute_90\\ncompute_100\\ncompute_120\\n'\n"), 0o755)
		if got := find("megaio_gpu_archs " + nvcc); got != "75 80 90 100 120" {
			t.Errorf("CUDA 13-like list: archs %q", got)
		}
		os.WriteFile(nvcc, []byte("#!/bin/sh\nprintf 'compute_35\\ncompute_60\\ncompute_70\\ncompute_90\\n'\n"), 0o755)
		if got := find("megaio_gpu_archs " + nvcc); got != "70 90" {
			t.Errorf("CUDA 11-like list: archs %q", got)
		}
		if got := find("megaio_gpu_archs "+nvcc, "MEGAIO_CUDA_ARCHS=90"); got != "90" {
			t.Errorf("MEGAIO_CUDA_ARCHS: archs %q", got)
		}
	})
}

// TestVersionsAgree: go.mod, cmd/go.mod, the README and build.sh name the
// same oldest Go, and the Dockerfile installs that Go or newer; the
// changelog's latest entry is Version, with ABIVersion; the README states
// both.
func TestVersionsAgree(t *testing.T) {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	goLine := func(path string) string {
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)(\.\d+)?$`).FindStringSubmatch(read(path))
		if m == nil {
			t.Fatalf("%s has no go line", path)
		}
		return m[1]
	}
	goVersion := goLine("go.mod")
	if v := goLine("cmd/go.mod"); v != goVersion {
		t.Errorf("cmd/go.mod says go %s, go.mod %s", v, goVersion)
	}
	said := regexp.MustCompile(`Go (\d+\.\d+) or newer`)
	for _, f := range []string{"README.md", "build.sh"} {
		all := said.FindAllStringSubmatch(read(f), -1)
		if len(all) == 0 {
			t.Errorf("%s does not say \"Go %s or newer\", as go.mod does", f, goVersion)
		}
		for _, m := range all {
			if m[1] != goVersion {
				t.Errorf("%s says %q; go.mod says %s", f, m[0], goVersion)
			}
		}
	}
	m := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\d+)\.(\d+)`).FindStringSubmatch(read("Dockerfile"))
	if m == nil {
		t.Fatal("the Dockerfile has no ARG GO_VERSION")
	}
	var major, minor, wantMajor, wantMinor int
	fmt.Sscanf(m[1]+" "+m[2], "%d %d", &major, &minor)
	fmt.Sscanf(strings.Replace(goVersion, ".", " ", 1), "%d %d", &wantMajor, &wantMinor)
	if major < wantMajor || (major == wantMajor && minor < wantMinor) {
		t.Errorf("the Dockerfile installs Go %s.%s, older than go.mod's %s", m[1], m[2], goVersion)
	}
	changelog := read("CHANGELOG.md")
	i := strings.Index(changelog, "\n## ")
	if i < 0 {
		t.Fatal("CHANGELOG.md has no entry")
	}
	latest, _, _ := strings.Cut(changelog[i+4:], "\n")
	if !strings.HasPrefix(latest, Version+" ") || !strings.Contains(latest, fmt.Sprintf("queue ABI version %d", ABIVersion)) {
		t.Errorf("the changelog's latest entry %q does not name %s and queue ABI version %d", latest, Version, ABIVersion)
	}
	readme := read("README.md")
	if !strings.Contains(readme, "megaio "+Version) || !strings.Contains(readme, fmt.Sprintf("queue ABI version %d", ABIVersion)) {
		t.Errorf("the README does not state megaio %s and queue ABI version %d", Version, ABIVersion)
	}
}
