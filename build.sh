#!/usr/bin/env bash
# build.sh - set up a fresh Debian/Ubuntu machine for megaio, build it, and
# run the demo or the tests.
#
#   ./build.sh          install what is missing, build bin/megaio
#   ./build.sh demo     ... then run the demo (every byte verified)
#   ./build.sh test     ... then go vet, gofmt, the tests with -race (fault
#                       tests and a short soak included) and bounded fuzzing
#
# Needs Go (1.24 or newer) on PATH or in /usr/local/go/bin. Installs
# liburing-dev, pkg-config and fio with apt-get when they are missing:
# liburing is linked statically, so the binaries need no liburing at run
# time; fio is only for `megaio bench -compare`.
set -euo pipefail
cd "$(dirname "$0")"

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build.sh: Go is not installed (https://go.dev/doc/install)" >&2; exit 1; }

need=()
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v fio >/dev/null || need+=(fio) # for `megaio bench -compare`
if [ ${#need[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "build.sh: installing ${need[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

export CGO_ENABLED=1
go mod download
go build -o bin/megaio ./cmd/megaio

# Where CUDA is installed: check our own driver declarations against the
# real cuda.h, and compile the GPU kernels (never needed for the Go package).
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
if [ -f "$cuda_home/include/cuda.h" ]; then
	gcc -std=c11 -Wall -Werror -fsyntax-only -I"$cuda_home/include" -Icsrc csrc/cuda_check.c
	echo "build.sh: csrc/cuda_shim.h matches $cuda_home/include/cuda.h"
	if [ -f "$cuda_home/include/cufile.h" ]; then
		gcc -std=gnu11 -Wall -Werror -fsyntax-only -I"$cuda_home/include" -Icsrc csrc/cufile_check.c
		echo "build.sh: csrc/cufile_shim.h matches $cuda_home/include/cufile.h"
	fi
fi
nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x "$cuda_home/bin/nvcc" ] && nvcc="$cuda_home/bin/nvcc"
if [ -n "$nvcc" ]; then
	mkdir -p build/gpu
	"$nvcc" -std=c++17 -O3 -Iinclude -fatbin ${NVCC_ARCH:-"-gencode arch=compute_70,code=sm_70 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]"} \
		-o build/gpu/megakernel.fatbin csrc/gpu/megakernel.cu
	echo "build.sh: built build/gpu/megakernel.fatbin"
fi

case "${1:-build}" in
build) ;;
demo)
	shift
	./bin/megaio demo "$@"
	;;
test)
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	if [ -n "$unformatted" ]; then
		echo "build.sh: gofmt would change: $unformatted" >&2
		exit 1
	fi
	go vet ./...
	go test -race -count=1 ./...
	# Bounded fuzzing (FUZZTIME=10m ./build.sh test for a longer run); the
	# corpus lives in testdata/fuzz.
	for target in FuzzCheckRange FuzzLiveQueue FuzzNextPiece; do
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-10s}" .
	done
	;;
*)
	echo "usage: $0 [build|demo|test]" >&2
	exit 2
	;;
esac
