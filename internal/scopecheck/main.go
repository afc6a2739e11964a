// Command scopecheck checks, in the PTX and SASS that nvcc generated, that
// the device protocol orders its accesses to the mapped queue as
// include/megaio.h argues: publications and completion reads are
// system-scope release stores and acquire loads, the producer side device scope,
// and no step does an atomic read-modify-write at system scope (PCIe does
// not make one atomic for the host).
//
//	scopecheck [-cuobjdump PATH] -protocol protocol_check.fatbin [other.fatbin ...]
//
// -protocol names csrc/gpu/protocol_check.cu compiled to a fatbin with PTX
// and SASS for each target architecture; every kernel in it is checked
// against rules.go, in every architecture's PTX and SASS. Every other fatbin
// (the example kernels) is checked for system-scope read-modify-writes.
// It prints what it checked and exits 1 on the first architecture that
// breaks a rule, after printing every violation.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
)

func main() {
	cuobjdump := flag.String("cuobjdump", "cuobjdump", "the cuobjdump binary")
	protocol := flag.String("protocol", "", "protocol_check.cu compiled to a fatbin (PTX and SASS)")
	flag.Parse()
	if *protocol == "" {
		fmt.Fprintln(os.Stderr, "usage: scopecheck [-cuobjdump PATH] -protocol protocol_check.fatbin [other.fatbin ...]")
		os.Exit(2)
	}
	failed := false
	for i, path := range append([]string{*protocol}, flag.Args()...) {
		var sections []section
		for _, mode := range []string{"-ptx", "-sass"} {
			out, err := exec.Command(*cuobjdump, mode, path).Output()
			if err != nil {
				fmt.Fprintf(os.Stderr, "scopecheck: %s %s %s: %v\n", *cuobjdump, mode, path, err)
				os.Exit(2)
			}
			sections = append(sections, splitSections(string(out))...)
		}
		var problems []string
		if i == 0 {
			problems = checkProtocol(sections)
		} else {
			problems = checkNoSystemRMW(sections)
		}
		for _, s := range sections {
			fmt.Printf("scopecheck: %s: %s %s: %d kernels\n", path, s.arch, s.kind, len(s.kernels))
		}
		for _, p := range problems {
			fmt.Printf("scopecheck: %s: FAIL: %s\n", path, p)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
	fmt.Println("scopecheck: PASS")
}

// section is one architecture's PTX or SASS out of a fatbin: each kernel's
// instructions, in order.
type section struct {
	kind    string // "ptx" or "sass"
	arch    string // "sm_90"
	kernels map[string][]string
}

// splitSections cuts cuobjdump's output ("Fatbin ptx code:" or "Fatbin elf
// code:", then "arch = sm_NN", then the code) into sections and kernels.
func splitSections(out string) []section {
	var secs []section
	var cur *section
	var kernel string
	for _, line := range strings.Split(out, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "Fatbin ptx code:"):
			secs = append(secs, section{kind: "ptx", kernels: map[string][]string{}})
			cur, kernel = &secs[len(secs)-1], ""
		case strings.HasPrefix(t, "Fatbin elf code:"):
			secs = append(secs, section{kind: "sass", kernels: map[string][]string{}})
			cur, kernel = &secs[len(secs)-1], ""
		case cur == nil:
		case strings.HasPrefix(t, "arch = ") && cur.arch == "":
			cur.arch = strings.TrimPrefix(t, "arch = ")
		case cur.kind == "ptx" && strings.Contains(t, ".entry "):
			name := t[strings.Index(t, ".entry ")+len(".entry "):]
			if i := strings.IndexAny(name, "( "); i >= 0 {
				name = name[:i]
			}
			kernel = name
			cur.kernels[kernel] = nil
		case cur.kind == "sass" && strings.HasPrefix(t, "Function : "):
			kernel = strings.TrimPrefix(t, "Function : ")
			cur.kernels[kernel] = nil
		case kernel != "":
			if ins := instruction(cur.kind, t); ins != "" {
				cur.kernels[kernel] = append(cur.kernels[kernel], ins)
			}
		}
	}
	// A fatbin with SASS only for an architecture has an elf section with
	// no kernels for the PTX it lacks; keep only sections with code.
	kept := secs[:0]
	for _, s := range secs {
		if len(s.kernels) > 0 {
			kept = append(kept, s)
		}
	}
	return kept
}

// instruction returns the opcode-and-operands text of one line of PTX or
// SASS, without a predicate, or "" for anything that is not an instruction.
func instruction(kind, t string) string {
	if kind == "sass" {
		// "/*0170*/   LD.E.64.STRONG.SYS R8, [R4.64+0x8] ;  /* 0x... */"
		if !strings.HasPrefix(t, "/*") {
			return ""
		}
		end := strings.Index(t, "*/")
		if end < 0 {
			return ""
		}
		t = strings.TrimSpace(t[end+2:])
		if i := strings.Index(t, ";"); i >= 0 {
			t = strings.TrimSpace(t[:i])
		}
	} else {
		if i := strings.Index(t, "//"); i >= 0 {
			t = t[:i]
		}
		t = strings.TrimSuffix(strings.TrimSpace(t), ";")
	}
	if strings.HasPrefix(t, "@") { // predicate
		if i := strings.IndexByte(t, ' '); i >= 0 {
			t = strings.TrimSpace(t[i:])
		}
	}
	if t == "" || strings.HasPrefix(t, ".") || strings.HasSuffix(t, ":") || strings.Trim(t, "(){}") == "" {
		return ""
	}
	return t
}

// classifyPTX names a PTX memory instruction's class, "op.semantics.scope"
// ("ld.acquire.sys", "st.release.gpu", "st.weak", "ld.volatile",
// "atom.gpu"), or "" for one that is not a global or generic memory access.
func classifyPTX(ins string) string {
	opcode := strings.Fields(ins)[0]
	parts := strings.Split(opcode, ".")
	op := parts[0]
	if op != "ld" && op != "st" && op != "atom" && op != "red" {
		return ""
	}
	sem, scope := "", ""
	for _, p := range parts[1:] {
		switch p {
		case "param", "local", "shared", "const", "tex":
			return "" // not memory the host can see
		case "volatile", "relaxed", "acquire", "release", "acq_rel", "mmio":
			sem = p
		case "cta", "cluster", "gpu", "sys":
			scope = p
		}
	}
	if op == "atom" || op == "red" {
		if scope == "" {
			scope = "gpu" // PTX: an atomic without a scope is .gpu
		}
		return "atom." + scope
	}
	switch sem {
	case "":
		return op + ".weak"
	case "volatile":
		return op + ".volatile"
	}
	if scope == "" {
		scope = "sys" // PTX: .relaxed/.acquire/.release default to .sys
	}
	return op + "." + sem + "." + scope
}

// classifySASS names the SASS instructions that carry ordering: a strong
// system- or device-scope store after a fence of that scope is a release
// ("st.release.sys"), a strong load followed by an L1 invalidation
// (CCTL.IVALL) is an acquire ("ld.acquire.gpu"), an atomic is "atom.gpu" or
// "atom.sys". Other strong accesses are "ld.strong.sys" and the like. It
// returns the classes in order.
func classifySASS(code []string) []string {
	var classes []string
	fence := "" // the widest scope fenced since the last strong store
	for i, ins := range code {
		opcode := strings.Fields(ins)[0]
		parts := strings.Split(opcode, ".")
		has := func(s string) bool {
			for _, p := range parts[1:] {
				if p == s {
					return true
				}
			}
			return false
		}
		scope := ""
		switch {
		case has("SYS"):
			scope = "sys"
		case has("GPU"):
			scope = "gpu"
		}
		switch {
		case strings.HasPrefix(parts[0], "MEMBAR") || strings.HasPrefix(parts[0], "FENCE"):
			if scope == "sys" || (scope == "gpu" && fence == "") {
				fence = scope
			}
		case strings.HasPrefix(parts[0], "ATOM") || strings.HasPrefix(parts[0], "RED"):
			if scope == "" {
				scope = "gpu"
			}
			classes = append(classes, "atom."+scope)
		case (parts[0] == "ST" || parts[0] == "STG") && has("STRONG") && scope != "":
			if fence == "sys" || fence == scope {
				classes = append(classes, "st.release."+scope)
			} else {
				classes = append(classes, "st.strong."+scope)
			}
			fence = ""
		case (parts[0] == "LD" || parts[0] == "LDG") && has("STRONG") && scope != "":
			acquire := invalidatesNext(code[i+1:])
			if acquire {
				classes = append(classes, "ld.acquire."+scope)
			} else {
				classes = append(classes, "ld.strong."+scope)
			}
		}
	}
	return classes
}

// invalidatesNext reports whether the code after a strong load invalidates
// L1 (CCTL.IVALL) before its next memory access or branch: the acquire half
// of ld.acquire, which the scheduler may move a few instructions down.
func invalidatesNext(code []string) bool {
	for _, ins := range code {
		op := strings.Fields(ins)[0]
		switch {
		case strings.HasPrefix(op, "CCTL.IVALL"):
			return true
		case strings.HasPrefix(op, "LD") || strings.HasPrefix(op, "ST") || strings.HasPrefix(op, "ATOM") ||
			strings.HasPrefix(op, "RED") || strings.HasPrefix(op, "BRA") || strings.HasPrefix(op, "EXIT") ||
			strings.HasPrefix(op, "MEMBAR"):
			return false
		}
	}
	return false
}

func counts(classes []string) map[string]int {
	n := map[string]int{}
	for _, c := range classes {
		n[c]++
	}
	return n
}

func kernelClasses(s section, code []string) []string {
	if s.kind == "sass" {
		return classifySASS(code)
	}
	var classes []string
	for _, ins := range code {
		if c := classifyPTX(ins); c != "" {
			classes = append(classes, c)
		}
	}
	return classes
}

// checkProtocol applies protocolRules to every section: in PTX every class
// a kernel holds must be named by its rule and within bounds; in SASS the
// named classes must be within bounds and no atomic may be system scope.
// It needs at least one PTX and one SASS section.
func checkProtocol(secs []section) []string {
	var problems []string
	kinds := map[string]bool{}
	for _, s := range secs {
		kinds[s.kind] = true
		for name, rule := range protocolRules {
			code, ok := s.kernels[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s %s: kernel %s missing", s.arch, s.kind, name))
				continue
			}
			want := rule.ptx
			if s.kind == "sass" {
				want = rule.sass
			}
			got := counts(kernelClasses(s, code))
			for c, n := range got {
				b, named := want[c]
				if !named {
					if s.kind == "ptx" || c == "atom.sys" {
						problems = append(problems, fmt.Sprintf("%s %s %s: %d unexpected %s access(es) (%s)",
							s.arch, s.kind, name, n, c, rule.why))
					}
					continue
				}
				if n < b.min || n > b.max {
					problems = append(problems, fmt.Sprintf("%s %s %s: %d %s, want %s (%s)", s.arch, s.kind, name,
						n, c, b, rule.why))
				}
			}
			for c, b := range want {
				if got[c] == 0 && b.min > 0 {
					problems = append(problems, fmt.Sprintf("%s %s %s: no %s, want %s (%s)", s.arch, s.kind, name,
						c, b, rule.why))
				}
			}
		}
	}
	for _, k := range []string{"ptx", "sass"} {
		if !kinds[k] {
			problems = append(problems, "no "+k+" in the fatbin: compile protocol_check.cu with code=[sm_NN,compute_NN]")
		}
	}
	sort.Strings(problems)
	return problems
}

func (b bound) String() string {
	switch {
	case b.min == b.max:
		return fmt.Sprint(b.min)
	case b.max == many:
		return fmt.Sprintf("at least %d", b.min)
	}
	return fmt.Sprintf("%d to %d", b.min, b.max)
}

// checkNoSystemRMW finds system-scope atomics in every kernel.
func checkNoSystemRMW(secs []section) []string {
	var problems []string
	for _, s := range secs {
		for name, code := range s.kernels {
			if n := counts(kernelClasses(s, code))["atom.sys"]; n > 0 {
				problems = append(problems, fmt.Sprintf("%s %s %s: %d system-scope read-modify-write(s): PCIe does not "+
					"make them atomic for the host", s.arch, s.kind, name, n))
			}
		}
	}
	sort.Strings(problems)
	return problems
}
