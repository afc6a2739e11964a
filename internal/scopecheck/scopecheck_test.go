package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestClassifyPTX(t *testing.T) {
	for ins, want := range map[string]string{
		"st.release.sys.b64 [%rd23], %rd24":        "st.release.sys",
		"st.relaxed.sys.b64 [%rd23], %rd24":        "st.relaxed.sys",
		"st.release.gpu.b64 [%rd1], %rd2":          "st.release.gpu",
		"ld.acquire.sys.b32 %r3,[%rd4]":            "ld.acquire.sys",
		"ld.acquire.b64 %rd3,[%rd4]":               "ld.acquire.sys", // PTX's default scope
		"ld.volatile.global.u64 %rd21, [%rd19]":    "ld.volatile",
		"st.global.u64 [%rd30+24], %rd12":          "st.weak",
		"atom.global.add.u64 %rd5, [%rd4], 1":      "atom.gpu",
		"atom.add.u64 %rd9, [%rd82], 1":            "atom.gpu",
		"atom.sys.global.add.u64 %rd5, [%rd4], 1":  "atom.sys",
		"red.relaxed.sys.global.add.u64 [%rd4], 1": "atom.sys",
		"ld.param.u64 %rd1, [check_poll_param_0]":  "",
		"st.local.u64 [%rd11], %rd12":              "",
		"ld.shared.u64 %rd82, [q+24]":              "",
		"add.s64 %rd8, %rd214, 1":                  "",
	} {
		if got := classifyPTX(ins); got != want {
			t.Errorf("classifyPTX(%q) = %q, want %q", ins, got, want)
		}
	}
}

func TestClassifySASS(t *testing.T) {
	code := []string{
		"MEMBAR.ALL.SYS",
		"ST.E.64.STRONG.SYS [R2.64], R4", // release: fenced at system scope
		"ST.E.64.STRONG.SYS [R2.64], R4", // relaxed: the fence was used up
		"LD.E.64.STRONG.SYS R2, [UR4+0x8]",
		"ISETP.NE.U32.AND P1, PT, R2, UR6, PT",
		"CCTL.IVALL",                    // makes the load above an acquire
		"LDG.E.64.STRONG.SYS R2, [UR4]", // volatile: no invalidation
		"BRA 0x130",
		"CCTL.IVALL",
		"MEMBAR.ALL.GPU",
		"ST.E.64.STRONG.GPU [R6.64], R4",
		"ATOMG.E.ADD.64.STRONG.GPU PT, R2, [R2.64], R4",
		"RED.E.ADD.64.STRONG.SYS [R2.64], R4",
	}
	want := []string{"st.release.sys", "st.strong.sys", "ld.acquire.sys", "ld.strong.sys", "st.release.gpu",
		"atom.gpu", "atom.sys"}
	if got := classifySASS(code); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("classifySASS = %v, want %v", got, want)
	}
}

// ptxSection is a section with one kernel per name in code.
func ptxSection(kernels map[string]string) section {
	s := section{kind: "ptx", arch: "sm_90", kernels: map[string][]string{}}
	for name, body := range kernels {
		for _, line := range strings.Split(body, "\n") {
			if ins := instruction("ptx", strings.TrimSpace(line)); ins != "" {
				s.kernels[name] = append(s.kernels[name], ins)
			}
		}
	}
	return s
}

// goodPTX holds, for each protocol kernel, the memory instructions nvcc
// generates for it (sm_90, CUDA 11.8), without the arithmetic.
var goodPTX = map[string]string{
	"check_take_ticket": "ld.relaxed.gpu.b64 %rd50,[%rd19];\nld.acquire.gpu.b64 %rd51,[%rd29];\nld.acquire.sys.b64 %rd31,[%rd32];\n" +
		"atom.cas.release.gpu.b64 %rd34,[%rd35],%rd51,%rd31;\natom.cas.relaxed.gpu.b64 %rd50,[%rd45],%rd52,%rd47;\n" +
		"ld.relaxed.gpu.b64 %rd50,[%rd40];\nld.acquire.sys.b32 %r3,[%rd41];\nst.global.u64 [%rd1], %rd49;",
	"check_publish":        "st.global.u32 [%rd16+20], %r3;\nst.global.u64 [%rd16+24], %rd8;\nst.release.sys.b64 [%rd1], %rd2;",
	"check_poll":           "ld.acquire.sys.b64 %rd6,[%rd7];\nld.volatile.global.u64 %rd21, [%rd19];\nst.global.u64 [%rd20], %rd21;",
	"check_stopped_before": "ld.acquire.sys.b32 %r3,[%rd4];\nst.local.u64 [%rd11], %rd12;\nld.local.u64 %rd9, [%rd11];\nld.acquire.sys.b64 %rd8,[%rd9];\nst.global.u32 [%rd15], %r6;",
	"check_wait": "ld.acquire.sys.b64 %rd13,[%rd14];\nld.volatile.global.u64 %rd49, [%rd23];\nld.acquire.sys.b32 %r5,[%rd24];\n" +
		"ld.acquire.sys.b64 %rd28,[%rd29];\nld.acquire.sys.b64 %rd35,[%rd36];\nld.volatile.global.u64 %rd49, [%rd45];\n" +
		"st.global.u64 [%rd47], %rd52;",
}

func TestProtocolRulesPTX(t *testing.T) {
	sass := section{kind: "sass", arch: "sm_90", kernels: map[string][]string{
		"check_take_ticket": {"LD.E.64.STRONG.GPU R12, [R2.64]", "LD.E.64.STRONG.GPU R4, [R10.64]", "CCTL.IVALL",
			"LD.E.64.STRONG.SYS R6, [R8.64]", "CCTL.IVALL", "MEMBAR.ALL.GPU", "ATOM.E.CAS.64.STRONG.GPU P0, R4, [R10], R4, R6",
			"LD.E.STRONG.SYS R8, [R8.64+0x8]", "CCTL.IVALL", "ATOM.E.CAS.64.STRONG.GPU P0, R4, [R10+-0x40], R4, R6"},
		"check_publish":        {"STG.E.64 [R2.64+0x8], R14", "MEMBAR.ALL.SYS", "ST.E.64.STRONG.SYS [R2.64], R4"},
		"check_poll":           {"LD.E.64.STRONG.SYS R4, [R2.64+0x8]", "CCTL.IVALL"},
		"check_stopped_before": {"LD.E.STRONG.SYS R2, [R2.64+0x48]", "CCTL.IVALL", "LD.E.64.STRONG.SYS R2, [R4.64]", "CCTL.IVALL"},
		"check_wait": {"LD.E.64.STRONG.SYS R8, [R4.64+0x8]", "CCTL.IVALL", "LD.E.STRONG.SYS R8, [R6.64]", "CCTL.IVALL",
			"LD.E.64.STRONG.SYS R8, [R6.64+0x8]", "CCTL.IVALL", "LD.E.64.STRONG.SYS R6, [R4.64+0x8]", "CCTL.IVALL"},
	}}
	if p := checkProtocol([]section{ptxSection(goodPTX), sass}); len(p) != 0 {
		t.Fatalf("the protocol as generated fails: %v", p)
	}
	for _, c := range []struct{ name, kernel, from, to, want string }{
		{"relaxed seq store", "check_publish", "st.release.sys", "st.relaxed.sys", "no st.release.sys"},
		{"device-scope seq store", "check_publish", "st.release.sys", "st.release.gpu", "no st.release.sys"},
		{"volatile stop check", "check_stopped_before", "ld.acquire.sys.b32", "ld.volatile.global.u32", "1 ld.acquire.sys, want 2"},
		{"done not re-checked", "check_wait", "ld.acquire.sys.b64 %rd35,[%rd36];", "", "3 ld.acquire.sys, want 4 to 8"},
		{"RMW on done", "check_poll", "ld.acquire.sys.b64 %rd6,[%rd7];", "atom.sys.global.add.u64 %rd6, [%rd7], 0;", "atom.sys"},
		{"system-scope ticket", "check_take_ticket", "atom.cas.relaxed.gpu", "atom.cas.relaxed.sys", "atom.sys"},
		{"relaxed claim_head", "check_take_ticket", "ld.acquire.sys.b64", "ld.relaxed.sys.b64", "ld.relaxed.sys"},
		{"publish reads the host", "check_publish", "st.global.u32", "ld.acquire.sys.b64 %rd9,[%rd10];\nst.global.u32", "ld.acquire.sys"},
	} {
		bad := map[string]string{}
		for k, v := range goodPTX {
			bad[k] = v
		}
		bad[c.kernel] = strings.Replace(bad[c.kernel], c.from, c.to, 1)
		if bad[c.kernel] == goodPTX[c.kernel] {
			t.Fatalf("%s: the planted defect changed nothing", c.name)
		}
		p := strings.Join(checkProtocol([]section{ptxSection(bad), sass}), "\n")
		if !strings.Contains(p, c.kernel) || !strings.Contains(p, c.want) {
			t.Errorf("%s: problems %q, want one in %s naming %q", c.name, p, c.kernel, c.want)
		}
	}
	if p := checkProtocol([]section{ptxSection(goodPTX)}); len(p) != 1 || !strings.Contains(p[0], "no sass") {
		t.Errorf("a fatbin without SASS: %v", p)
	}
}

func TestSplitSections(t *testing.T) {
	out := `
Fatbin elf code:
================
arch = sm_90
	code for sm_90
		Function : check_collect
        /*0130*/                   MEMBAR.ALL.GPU ;                             /* 0x0000000000007992 */
        /*0170*/                   ST.E.64.STRONG.GPU [R4.64], R2 ;             /* 0x0000000204007985 */
        /*0180*/               @P0 EXIT ;                                       /* 0x000000000000094d */

Fatbin ptx code:
================
arch = sm_90
.visible .entry check_collect(
	.param .align 8 .b8 check_collect_param_0[48]
)
{
	ld.param.u64 	%rd1, [check_collect_param_0+32];
	// begin inline asm
	st.release.gpu.b64 [%rd1], %rd2;
	// end inline asm
	ret;
}
`
	secs := splitSections(out)
	if len(secs) != 2 || secs[0].kind != "sass" || secs[1].kind != "ptx" || secs[0].arch != "sm_90" {
		t.Fatalf("sections %+v", secs)
	}
	if got := strings.Join(secs[0].kernels["check_collect"], "|"); got != "MEMBAR.ALL.GPU|ST.E.64.STRONG.GPU [R4.64], R2|EXIT" {
		t.Errorf("sass %q", got)
	}
	if got := strings.Join(secs[1].kernels["check_collect"], "|"); got != "ld.param.u64 \t%rd1, [check_collect_param_0+32]|st.release.gpu.b64 [%rd1], %rd2|ret" {
		t.Errorf("ptx %q", got)
	}
}

// TestPlantedDefectsCompiled compiles protocol_check.cu with nvcc against
// the real header and against copies with a defect planted, and runs the
// whole check on each: the real header passes, every defect fails. It
// needs a CUDA toolkit (./build.sh test installs one).
func TestPlantedDefectsCompiled(t *testing.T) {
	nvcc, err := exec.LookPath("nvcc")
	if err != nil {
		if _, err2 := os.Stat("/usr/local/cuda/bin/nvcc"); err2 != nil {
			t.Skipf("skipping: no nvcc (%v); ./build.sh test installs a CUDA toolkit", err)
		}
		nvcc = "/usr/local/cuda/bin/nvcc"
	}
	cuobjdump := filepath.Join(filepath.Dir(nvcc), "cuobjdump")
	root, _ := filepath.Abs("../..")
	header, err := os.ReadFile(filepath.Join(root, "include", "megaio_device.cuh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"as is", "", "", ""},
		{"relaxed seq store", "megaio_sys_u64(slot->seq).store((uint64_t)(t + 1), cuda::memory_order_release)",
			"megaio_sys_u64(slot->seq).store((uint64_t)(t + 1), cuda::memory_order_relaxed)", "check_publish"},
		{"device-scope done load", "megaio_sys_u64(c->done).load(cuda::memory_order_acquire)",
			"megaio_dev_u64(c->done).load(cuda::memory_order_acquire)", "check_poll"},
		{"relaxed claim_head in the stop check", "uint64_t head = megaio_sys_u64(q.header->claim_head).load(cuda::memory_order_acquire);\n\treturn",
			"uint64_t head = megaio_sys_u64(q.header->claim_head).load(cuda::memory_order_relaxed);\n\treturn", "check_stopped_before"},
		{"system-scope ticket CAS", "megaio_dev_u64 next(q.side->next_ticket), seen_ref(q.side->claim_seen);",
			"megaio_sys_u64 next(q.side->next_ticket);\n\tmegaio_dev_u64 seen_ref(q.side->claim_seen);", "check_take_ticket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			h := string(header)
			if c.from != "" {
				if !strings.Contains(h, c.from) {
					t.Fatalf("the header no longer holds %q: update this test", c.from)
				}
				h = strings.Replace(h, c.from, c.to, 1)
			}
			os.WriteFile(filepath.Join(dir, "megaio_device.cuh"), []byte(h), 0o644)
			fatbin := filepath.Join(dir, "p.fatbin")
			out, err := exec.Command(nvcc, "-std=c++17", "-O3", "-I"+dir, "-I"+filepath.Join(root, "include"), "-fatbin",
				"-gencode", "arch=compute_90,code=[sm_90,compute_90]", "-o", fatbin,
				filepath.Join(root, "csrc", "gpu", "protocol_check.cu")).CombinedOutput()
			if err != nil {
				t.Fatalf("nvcc: %v\n%s", err, out)
			}
			var secs []section
			for _, mode := range []string{"-ptx", "-sass"} {
				out, err := exec.Command(cuobjdump, mode, fatbin).Output()
				if err != nil {
					t.Fatalf("cuobjdump %s: %v", mode, err)
				}
				secs = append(secs, splitSections(string(out))...)
			}
			p := strings.Join(checkProtocol(secs), "\n")
			switch {
			case c.want == "" && p != "":
				t.Errorf("the header as it is fails the check:\n%s", p)
			case c.want != "" && !strings.Contains(p, c.want):
				t.Errorf("the planted defect passes the check (problems: %q)", p)
			default:
				t.Logf("problems: %q", p)
			}
		})
	}
}
