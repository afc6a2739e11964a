#!/usr/bin/env bash
# cuda-checks.sh - every check of megaio's CUDA half that needs a CUDA
# toolkit but no GPU. build.sh runs it wherever nvcc is found (CI installs
# Debian's toolkit first); the GPU bundle's run.sh runs it on the GPU
# machine for that GPU's architecture.
#
#   scripts/cuda-checks.sh [ROOT [OUTDIR]]
#
# ROOT holds include/, csrc/ and scripts/ (default: this repository);
# OUTDIR gets the fatbins (default ROOT/build/gpu). It
#   1. compiles every .cu under ROOT/csrc and ROOT/examples for every target architecture
#      (megaio_gpu_archs; MEGAIO_CUDA_ARCHS="90" narrows it), warnings as
#      errors in nvcc, ptxas and the host compiler;
#   2. checks csrc/cuda_shim.h against cuda.h and csrc/cufile_shim.h against
#      cufile.h (every prototype, struct field and constant the shims use;
#      cuFile's error codes version-aware);
#   3. runs the scope check (internal/scopecheck) on the PTX and SASS of
#      every kernel: $SCOPECHECK, else `go run ./internal/scopecheck`;
#   4. compiles every .cu for the host too, as the CPU launcher
#      (include/megaio_cpu.h) does, with g++ and with clang++ where
#      installed, warnings as errors (the TestCPU* tests run them).
# Prints one line per check and exits 1 if any failed. Missing pieces are
# failures, never silence: no cufile.h is "FAIL ... not found".
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "${1:-$here/..}" && pwd)"
out="${2:-$root/build/gpu}"
# shellcheck source=cuda-env.sh
. "$here/cuda-env.sh"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
failed=0
say() { echo "cuda-checks: $*"; }
fail() {
	say "FAIL $*"
	failed=1
}

nvcc="$(megaio_find_nvcc)"
cuda_inc="$(megaio_find_cuda_include)"
if [ -z "$nvcc" ] || [ -z "$cuda_inc" ]; then
	fail "no CUDA toolkit (nvcc: ${nvcc:-not found}, cuda.h: ${cuda_inc:-not found}); scripts/install-cuda-toolkit.sh installs Debian's"
	exit 1
fi
say "nvcc $nvcc ($("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')), cuda.h in $cuda_inc"

# 2. Declarations.
if gcc -std=c11 -Wall -Werror -fsyntax-only -I"$cuda_inc" -I"$root/csrc" "$root/csrc/cuda_check.c"; then
	say "PASS csrc/cuda_shim.h matches $cuda_inc/cuda.h"
else
	fail "csrc/cuda_shim.h does not match $cuda_inc/cuda.h"
fi
cufile_inc="$(megaio_find_cufile_header)"
if [ -z "$cufile_inc" ]; then
	fail "cufile.h not found (install libcufile-dev, or the nvidia-cufile wheel): csrc/cufile_shim.h unchecked"
else
	if gcc -std=gnu11 -Wall -Werror -fsyntax-only -I"$cufile_inc" -I"$cuda_inc" -I"$root/csrc" "$root/csrc/cufile_check.c"; then
		say "PASS csrc/cufile_shim.h layouts and prototypes match $cufile_inc/cufile.h"
	else
		fail "csrc/cufile_shim.h does not match $cufile_inc/cufile.h"
	fi
	if g++ -std=c++17 -Wall -Werror -fsyntax-only -I"$cufile_inc" -I"$cuda_inc" -I"$root/csrc" "$root/csrc/cufile_codes_check.cc"; then
		say "PASS cuFile error codes (MEGAIO_CUFILE_CODES) agree with $cufile_inc/cufile.h"
	else
		fail "MEGAIO_CUFILE_CODES contradicts $cufile_inc/cufile.h"
	fi
fi

# The kernel sources: csrc/ and the examples (where the tree has them).
kernel_sources() {
	find "$root/csrc" -name '*.cu'
	[ -d "$root/examples" ] && find "$root/examples" -name '*.cu'
	true
}

# 1. Kernels, for every architecture; protocol_check.cu keeps each
# architecture's PTX too, for the scope check.
archs="$(megaio_gpu_archs "$nvcc")"
case " $archs " in
*" 90 "*) ;;
*) [ -z "${MEGAIO_CUDA_ARCHS:-}" ] && fail "this nvcc cannot compile sm_90 (H100, H200): archs '$archs'" ;;
esac
say "architectures: $archs"
fatbins=()
while IFS= read -r cu; do
	name="$(basename "$cu" .cu)"
	gencode=()
	top=""
	for a in $archs; do
		if [ "$name" = protocol_check ]; then
			gencode+=(-gencode "arch=compute_$a,code=[sm_$a,compute_$a]")
		else
			gencode+=(-gencode "arch=compute_$a,code=sm_$a")
		fi
		top=$a
	done
	# The newest architecture's PTX rides along, for GPUs newer than the list.
	[ "$name" = protocol_check ] || gencode+=(-gencode "arch=compute_$top,code=compute_$top")
	if "$nvcc" -std=c++17 -O3 -I"$root/include" -Werror all-warnings -Xptxas -Werror \
		-Xcompiler -Wall,-Wextra,-Werror -fatbin "${gencode[@]}" -o "$out/$name.fatbin" "$cu"; then
		say "PASS ${cu#"$root"/} compiled for $archs with warnings as errors"
		fatbins+=("$out/$name.fatbin")
	else
		fail "${cu#"$root"/} does not compile"
	fi
done < <(kernel_sources)

# 3. The scope check.
if [ -f "$out/protocol_check.fatbin" ]; then
	others=()
	for f in "${fatbins[@]}"; do
		[ "$f" = "$out/protocol_check.fatbin" ] || others+=("$f")
	done
	cuobjdump="$(dirname "$nvcc")/cuobjdump"
	[ -x "$cuobjdump" ] || cuobjdump="$(command -v cuobjdump || echo cuobjdump)"
	if [ -n "${SCOPECHECK:-}" ]; then
		scopecheck=("$SCOPECHECK")
	else
		scopecheck=(go run "$root/internal/scopecheck")
	fi
	(cd "$root" && "${scopecheck[@]}" -cuobjdump "$cuobjdump" -protocol "$out/protocol_check.fatbin" "${others[@]}") \
		>"$out/scopecheck.txt" 2>&1
	case $? in
	0) say "PASS scope check: no violation in $(grep -c 'kernels$' "$out/scopecheck.txt") PTX/SASS sections ($out/scopecheck.txt)" ;;
	1)
		cat "$out/scopecheck.txt"
		fail "scope check (internal/scopecheck): the device protocol's memory ordering is broken"
		;;
	*)
		cat "$out/scopecheck.txt"
		fail "scope check could not run"
		;;
	esac
else
	fail "scope check not run: protocol_check.cu did not compile"
fi

# 4. The host build of the device code (libcu++ is next to cuda.h, or
# under cccl/ from CUDA 13 on).
libcuxx=(-I"$cuda_inc")
[ -d "$cuda_inc/cccl" ] && libcuxx+=(-I"$cuda_inc/cccl")
for cxx in g++ clang++; do
	if ! command -v "$cxx" >/dev/null; then
		[ "$cxx" = g++ ] && fail "no g++: the device code's host build (the CPU launcher) unchecked"
		continue
	fi
	while IFS= read -r cu; do
		if "$cxx" -std=c++17 -O2 -Wall -Wextra -Werror -fsyntax-only -x c++ -I"$root/include" "${libcuxx[@]}" "$cu"; then
			say "PASS ${cu#"$root"/} compiles for CPU threads with $cxx, warnings as errors"
		else
			fail "${cu#"$root"/} does not compile for CPU threads with $cxx"
		fi
	done < <(kernel_sources)
done

if [ "$failed" -ne 0 ]; then
	say "FAILED"
	exit 1
fi
say "all passed"
